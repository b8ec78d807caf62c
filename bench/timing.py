"""Timing helpers for the benchmarks: wall time of whole commands, interleaved with a baseline."""

import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "lib", "python"))

BASELINE = ["/usr/bin/python3", "-c", "pass"]


def compile_library():
    """Byte-compile the library for /usr/bin/python3, as the packages do on install.

    Without it every run compiles the library from source (this machine sets PYTHONDONTWRITEBYTECODE),
    which measures the compiler, not the modules.
    """
    subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", os.path.join(REPO, "lib", "python")], check=True)


def mgr5_root(folder, *modules):
    """A minimal MGR5 root in ``folder`` with ``modules`` (e.g. "gate/gwmail") linked in, so the runs' logs go
    there and not into the checkout; the paths of the modules in it."""
    os.symlink(os.path.join(REPO, "lib"), os.path.join(folder, "lib"))
    paths = []
    for module in modules:
        os.makedirs(os.path.join(folder, os.path.dirname(module)), exist_ok=True)
        paths.append(os.path.join(folder, module))
        os.symlink(os.path.join(REPO, module), paths[-1])
    return paths


def compare(command, runs=40, input=b"", cwd=None, env=None):
    """(median of command, median of the bare interpreter), measured interleaved one run each: command, bare,
    command, bare... (after two warm-up runs of each), so both see the same background load."""
    ours, base = [], []
    for i in range(runs + 2):
        took = _once(command, input, cwd, env), _once(BASELINE)
        if i >= 2:
            ours.append(took[0])
            base.append(took[1])
    return statistics.median(ours), statistics.median(base)


def _once(command, input=b"", cwd=None, env=None):
    """Wall time in seconds of one run of ``command``."""
    start = time.perf_counter()
    subprocess.run(command, input=input, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd, env=env)
    return time.perf_counter() - start


def row(name, value, baseline, goal):
    """One line of a benchmark table: figure, baseline, ratio, goal (None: for information), met or not."""
    ratio = value / baseline
    if goal is None:
        return "| %s | %.1f ms | %.1f ms | %.2f× | | |" % (name, value * 1000, baseline * 1000, ratio)
    return "| %s | %.1f ms | %.1f ms | %.2f× | ≤ %.1f× | %s |" % (
        name, value * 1000, baseline * 1000, ratio, goal, "met" if ratio <= goal else "missed")
