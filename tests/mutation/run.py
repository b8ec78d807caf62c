#!/usr/bin/env python3
"""The mutation run (``make mutate``): each mutant of tests/mutation/mutants.py planted alone in a copy of the
repository, and its tests run there; a mutant is killed when they fail.

    python3 tests/mutation/run.py [-j N] [--only ID,ID] [--timeout S]
    python3 tests/mutation/run.py --check        (every mutant still applies; no tests run)

A kept list, not mutmut or cosmic-ray: those mutate the package where the test process imports it, while our
tests run the modules as subprocesses from a sandbox that links the repository's folders (tests/sandbox.py), so
the mutated code must be on disk in a whole tree. Each worker copies the working tree once (every file git
knows or would add, uncommitted changes included) into a temporary folder; tests/sandbox.py finds the
repository from its own place, so the copy's tests run the copy's modules. Per mutant: the file is changed,
the selection run with ``pytest -x``, the file restored. No bytecode is written (a mutant the size of the
original, written within the same second, would otherwise be run from a stale cache).

Fates: killed (pytest exit status 1: a test failed, and that test passes again once the file is restored),
survived (0), timeout, error (any other status, e.g. a selection that names no test; or a failing test that
fails without the mutant too, which proves nothing). The score is killed / all. The run exits 1 when the score is below
REQUIRED_SCORE or a mutant marked ``issue`` is not killed. A run of the whole list writes its result to
tests/mutation/last-run.md, which tests/reliability.py puts into RELIABILITY.md; this run puts it there too.
"""

import argparse
import concurrent.futures
import datetime
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from mutants import MUTANTS  # noqa: E402

REQUIRED_SCORE = 95.0       # percent (issue 15)
DEFAULT_TIMEOUT = 900       # seconds per mutant; a hang past it is reported as a timeout
LAST_RUN = os.path.join(HERE, "last-run.md")
RELIABILITY = os.path.join(REPO, "RELIABILITY.md")
# RELIABILITY.md's mutation section lies between these lines; tests/reliability.py copies it whole from LAST_RUN.
BEGIN, END = "<!-- mutation run: tests/mutation/run.py -->", "<!-- end of mutation run -->"


def problems(mutant, root=REPO):
    """Why ``mutant`` cannot be planted as written (a stale row), or [] when it can."""
    path = os.path.join(root, mutant.path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        return ["%s: cannot read %s (%s)" % (mutant.id, mutant.path, e.strerror or e)]
    found = []
    count = text.count(mutant.old)
    if count != 1:
        found.append("%s: its old text occurs %d times in %s, not once; update tests/mutation/mutants.py to the "
                     "code as it is now" % (mutant.id, count, mutant.path))
    elif mutant.old == mutant.new:
        found.append("%s: its new text is its old text" % mutant.id)
    elif _is_python(mutant.path, text):
        try:
            compile(text.replace(mutant.old, mutant.new), mutant.path, "exec")
        except SyntaxError as e:
            found.append("%s: the mutated %s does not compile (%s); a mutant must be a bug, not a syntax error"
                         % (mutant.id, mutant.path, e))
    for selection in mutant.tests:
        if not selection.startswith("-") and not os.path.exists(os.path.join(root, selection.split("::")[0])):
            found.append("%s: its tests name %s, which does not exist" % (mutant.id, selection))
    return found


def _is_python(path, text):
    return path.endswith(".py") or text.startswith("#!/usr/bin/python3")


def check(mutants):
    """Every stale row, as sentences; ids must be unique."""
    found = []
    seen = set()
    for mutant in mutants:
        if mutant.id in seen:
            found.append("%s: the id is used twice" % mutant.id)
        seen.add(mutant.id)
        found += problems(mutant)
    return found


def copy_tree(destination):
    """The working tree as git sees it (tracked and untracked files, none ignored) copied to ``destination``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            stdout=subprocess.PIPE, check=True).stdout.decode("utf-8", "surrogateescape")
    for name in sorted(set(filter(None, listed.split("\0")))):
        source = os.path.join(REPO, name)
        if not os.path.lexists(source):   # deleted in the working tree
            continue
        target = os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def _drop_bytecode(root):
    for folder, subfolders, _ in os.walk(root):
        if "__pycache__" in subfolders:
            shutil.rmtree(os.path.join(folder, "__pycache__"), ignore_errors=True)
            subfolders.remove("__pycache__")


class Result:
    """What became of one mutant: fate, seconds, and the first failing test (killed) or the reason (error)."""

    def __init__(self, mutant, fate, seconds, detail=""):
        self.mutant, self.fate, self.seconds, self.detail = mutant, fate, seconds, detail


def _first_failure(output):
    """The node id of the first failing test in pytest's summary, or ''."""
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0].split(" ", 1)[1]
    return ""


def _short(test):
    """A test's node id with its parameters shortened to fit a table."""
    name, bracket, parameters = test.partition("[")
    return name + (bracket + parameters[:30] + ("…]" if len(parameters) > 30 else "") if bracket else "")


RUNNING = set()   # the pytest processes running now, stopped if the run is interrupted


def _stop(process, grace=30):
    """Stop a pytest run: interrupted first, so its fixtures stop their servers and remove their folders
    (tests/sandbox.py's MariaDB lives in /tmp, outside the copy); then its whole session killed."""
    try:
        process.send_signal(signal.SIGINT)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _pytest(python, selection, copy, timeout):
    """Run pytest on ``selection`` in the copy: (exit status, or None after ``timeout`` seconds; its output)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TMPDIR=os.path.join(copy, ".tmp"))
    shutil.rmtree(env["TMPDIR"], ignore_errors=True)   # also the secrets file of tests/sandbox.py: one per copy
    os.makedirs(env["TMPDIR"])
    _drop_bytecode(copy)
    args = [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=-rfE"] + selection
    # A session of its own, so a timeout or an interrupted run stops the servers the tests started too.
    process = subprocess.Popen(args, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    RUNNING.add(process)
    try:
        output = process.communicate(timeout=timeout)[0]
        return process.returncode, output.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        _stop(process)
        process.communicate()
        return None, ""
    finally:
        RUNNING.discard(process)


def run_one(mutant, copy, timeout, python):
    """Plant ``mutant`` in the copy at ``copy``, run its tests there, restore the file; a Result.

    A kill is confirmed: the failing test must pass once the file is restored, or the mutant counts as an error
    (a test that fails anyway proves nothing)."""
    stale = problems(mutant, copy)
    if stale:
        return Result(mutant, "error", 0, "; ".join(stale))
    path = os.path.join(copy, mutant.path)
    with open(path, encoding="utf-8") as f:
        original = f.read()
    mode = os.stat(path).st_mode
    started = time.monotonic()
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original.replace(mutant.old, mutant.new))
        os.chmod(path, mode)
        status, output = _pytest(python, mutant.tests, copy, timeout)
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original)
        os.chmod(path, mode)
    seconds = time.monotonic() - started
    if status is None:
        return Result(mutant, "timeout", seconds, "no answer within %d s" % timeout)
    if status == 0:
        return Result(mutant, "survived", seconds)
    if status != 1:
        tail = " | ".join(output.strip().splitlines()[-3:])
        return Result(mutant, "error", seconds, "pytest exit status %d: %s" % (status, tail[:300]))
    test = _first_failure(output)
    again, _ = _pytest(python, [test], copy, timeout) if test else (1, "")
    if again != 0:
        return Result(mutant, "error", seconds, "%s fails without the mutant too (exit status %s)"
                      % (_short(test) or "a test", again))
    return Result(mutant, "killed", seconds, _short(test))


def run_all(mutants, jobs, timeout, python, report):
    """Run ``mutants`` on ``jobs`` copies at once; the Results in list order. ``report`` gets each as it ends."""
    base = tempfile.mkdtemp(prefix="mgrn-mutate-")
    copies = queue.Queue()
    try:
        for n in range(jobs):
            copy = os.path.join(base, "w%d" % n)
            copy_tree(copy)
            copies.put(copy)
        lock = threading.Lock()
        interrupted = threading.Event()

        def work(mutant):
            if interrupted.is_set():
                return None
            copy = copies.get()
            try:
                result = run_one(mutant, copy, timeout, python)
            finally:
                copies.put(copy)
            with lock:
                report(result)
            return result

        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            try:
                return list(pool.map(work, mutants))
            except KeyboardInterrupt:
                interrupted.set()   # the mutants not started yet are not started
                for process in list(RUNNING):
                    _stop(process, grace=10)
                raise
    finally:
        shutil.rmtree(base, ignore_errors=True)


def score(results):
    """(killed, total, percent)."""
    killed = sum(1 for r in results if r.fate == "killed")
    return killed, len(results), 100.0 * killed / len(results) if results else 0.0


def markdown(results, started, seconds):
    """The result as RELIABILITY.md's mutation section."""
    killed, total, percent = score(results)
    fates = {}
    for r in results:
        fates[r.fate] = fates.get(r.fate, 0) + 1
    lines = [BEGIN, "## Mutation run (make mutate)", "",
             "The last run of `make mutate` (`tests/mutation/run.py`), on %s, %d minutes: %d small bugs from "
             "`tests/mutation/mutants.py` planted one at a time in a copy of the repository, each against the "
             "tests listed with it. Score: **%d of %d killed (%.1f%%)**; %s. Rows marked issue 15 once survived "
             "the suite." % (started, round(seconds / 60), total, killed, total, percent,
                             ", ".join("%s %d" % (fate, n) for fate, n in sorted(fates.items()))), "",
             "| mutant | file | what the bug would mean | fate | seconds | killed by (or why not) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        m = r.mutant
        lines.append("| %s%s | `%s` | %s | %s | %d | %s |" % (
            m.id, " (issue 15)" if m.issue else "", m.path, m.meaning.replace("|", "\\|"), r.fate, r.seconds,
            ("`%s`" % r.detail if r.fate == "killed" and r.detail else r.detail).replace("|", "\\|")))
    return "\n".join(lines + ["", END, ""])


def write_section(section):
    """Keep ``section`` in tests/mutation/last-run.md and put it in RELIABILITY.md in place of the last one."""
    with open(LAST_RUN, "w", encoding="utf-8") as f:
        f.write(section)
    try:
        with open(RELIABILITY, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    if BEGIN in text and END in text:
        before, _, rest = text.partition(BEGIN)
        text = before + section.rstrip("\n") + rest.partition(END)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(RELIABILITY, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv):
    parser = argparse.ArgumentParser(description="Plant each mutant of tests/mutation/mutants.py in a copy of "
                                                 "the repository and run its tests there.")
    parser.add_argument("--check", action="store_true", help="only check that every mutant applies exactly once")
    parser.add_argument("--only", default="", help="comma-separated mutant ids to run (the result is not written)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="copies working at once (default 2)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per mutant")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs pytest")
    options = parser.parse_args(argv)
    mutants = MUTANTS
    if options.only:
        wanted = [name.strip() for name in options.only.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in {m.id for m in MUTANTS}]
        if unknown:
            parser.error("no mutant is called %s" % ", ".join(unknown))
        mutants = [m for m in MUTANTS if m.id in wanted]
    stale = check(mutants)
    if stale:
        print("The mutant list does not match the code:\n  " + "\n  ".join(stale), file=sys.stderr)
        return 2
    if options.check:
        print("%d mutants, each applies exactly once and compiles." % len(mutants))
        return 0

    width = max(len(m.id) for m in mutants)
    print("%d mutants, %d at a time, up to %d s each" % (len(mutants), options.jobs, options.timeout), flush=True)

    def report(result):
        print("%-*s  %-8s %5d s  %s" % (width, result.mutant.id, result.fate, result.seconds, result.detail),
              flush=True)

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    begun = time.monotonic()
    results = run_all(mutants, max(1, options.jobs), options.timeout, options.python, report)
    killed, total, percent = score(results)
    print("\nscore: %d/%d (%.1f%%)" % (killed, total, percent))
    alive = [r.mutant.id for r in results if r.fate != "killed"]
    if alive:
        print("not killed: " + ", ".join(alive))
    if not options.only:
        write_section(markdown(results, started, time.monotonic() - begun))
        print("written to %s and RELIABILITY.md" % os.path.relpath(LAST_RUN, REPO))
    issue_alive = [r.mutant.id for r in results if r.mutant.issue and r.fate != "killed"]
    if issue_alive:
        print("issue 15's mutants not killed: " + ", ".join(issue_alive))
    return 1 if percent < REQUIRED_SCORE or issue_alive else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
