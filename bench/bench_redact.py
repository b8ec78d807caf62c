"""The redactor on pathological lines: the time for 1 MB as a ratio to the time for 100 KB, and the time itself.

Goals: at most 20× (issue 12): linear work gives 10× (the positions of tags are looked up by bisection, which adds
a little); the old patterns, which searched the rest of the line again from every position, gave 100×. And at
most 1 s for a megabyte of the slowest line (issue 14): the log redacts a whole event before cutting it, up to
log.REDACT_LIMIT characters, so that is the most one line can cost. The lines are the test suite's
(tests/test_library.py, PATHOLOGICAL) and a few more that stress what the suite's do not.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import timing  # noqa: E402  (puts tests/ and lib/python on sys.path)

from mgrnotify import log, redact  # noqa: E402
from test_library import pathological  # noqa: E402

GOAL = 20
BAR = 1.0   # seconds for 1 MB of the slowest line
SMALL, LARGE = 100 * 1024, 1024 * 1024
HUGE = 16 * 1024 * 1024
REMEMBERED = ("aaaa", "b")   # remembered below: "aaaa" overlaps itself, "b" is short (masked where alone)
MORE = {
    "one long word": "z",                  # the key pattern's name run, never ended by a separator
    "many short pairs": "a=b ",            # a key=value match for every four characters
    "a remembered secret, overlapping": "a",
    "a short remembered secret, alone": "b ",
}


def lines(size):
    """Every pathological line of about ``size`` characters, by name."""
    texts = pathological(size)
    for name, unit in MORE.items():
        texts[name] = unit * (size // len(unit)) + " <password>hunter2</password>"
    return texts


def best(function, text, runs=5):
    """The shortest of ``runs`` timings of function(text), in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function(text)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    for secret in REMEMBERED:
        redact.remember(secret)
    small, large = lines(SMALL), lines(LARGE)
    print("| figure | value | baseline (same run) | ratio | goal | |")
    print("| --- | --- | --- | --- | --- | --- |")
    times = {}
    for name in large:
        times[name] = best(redact.redact, large[name])
        print(timing.row("redact, 1 MB against 100 KB of %s" % name, times[name], best(redact.redact, small[name]),
                         GOAL))
    slowest = max(times, key=times.get)
    print(timing.row("redaction of 1 MB of the slowest line (%s), against a 1 s bar" % slowest, times[slowest], BAR,
                     1.0))
    with tempfile.TemporaryDirectory() as folder:
        logger = log.Log("bench", os.path.join(folder, "bench.log"), 9)
        event = large[slowest] * (HUGE // LARGE)
        print(timing.row("Log.write of a 16 MB event of that line (%d MB redacted, the rest dropped), against a 1 s "
                         "bar" % (log.REDACT_LIMIT // LARGE), best(logger.debug, event), BAR, 1.0))


if __name__ == "__main__":
    main()
