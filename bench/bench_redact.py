"""The redactor on pathological lines: the time for 1 MB as a ratio to the time for 100 KB.

Goal (issue 12): at most 20×. Linear work gives 10× (the positions of tags are looked up by bisection, which
adds a little); the old patterns, which searched the rest of the line again from every position, gave 100×.
The lines are the test suite's (tests/test_library.py, PATHOLOGICAL).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import timing  # noqa: E402  (puts tests/ and lib/python on sys.path)

from mgrnotify import redact  # noqa: E402
from test_library import pathological  # noqa: E402

GOAL = 20
SMALL, LARGE = 100 * 1024, 1024 * 1024


def best(text, runs=3):
    """The shortest of ``runs`` timings of redact(text), in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        redact.redact(text)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    small, large = pathological(SMALL), pathological(LARGE)
    print("| figure | value | baseline (same run) | ratio | goal | |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in large:
        print(timing.row("redact, 1 MB against 100 KB of %s" % name, best(large[name]), best(small[name]), GOAL))


if __name__ == "__main__":
    main()
