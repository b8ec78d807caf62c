"""Start-up cost: ``--command features`` of every module, as a ratio to a bare ``python3 -c pass``.

Goal (issue 2): at most 1.3×, because BILLmanager asks every module for its features often.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import timing  # noqa: E402  (puts tests/ and lib/python on sys.path)

import sandbox as sandboxlib  # noqa: E402

GOAL = 1.3


def main():
    timing.compile_library()
    modules = sandboxlib.project_modules()
    with tempfile.TemporaryDirectory() as root:
        print("| command | median | python3 -c pass | ratio | goal | |")
        print("| --- | --- | --- | --- | --- | --- |")
        for module, path in zip(modules, timing.mgr5_root(root, *modules)):
            value, base = timing.compare([path, "--command", "features"], runs=60, cwd=root)
            print(timing.row("%s --command features" % module, value, base, GOAL))


if __name__ == "__main__":
    main()
