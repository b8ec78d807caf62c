"""Run every benchmark and print one table (see README.md, Benchmarks)."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    status = 0
    for name in sorted(os.listdir(HERE)):
        if name.startswith("bench_") and name.endswith(".py"):
            print("\n## %s\n" % name[len("bench_"):-3], flush=True)
            status |= subprocess.call([sys.executable, os.path.join(HERE, name)])
    return status


if __name__ == "__main__":
    sys.exit(main())
