"""Run every benchmark and print one table: each figure, its baseline measured in the same run, the ratio and
the goal; then why the missed goals were missed, in sentences built from those figures (``explain``). With
--write, also write all of it and this machine's description into BENCHMARKS.md.

    python3 bench/run.py [--write]      (or: make bench)
"""

import datetime
import os
import platform
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HEADER = "| figure | value | baseline (same run) | ratio | goal | |\n| --- | --- | --- | --- | --- | --- |"


class Row:
    """One line of a benchmark's table, as figures: ``figure``, ``value``, ``baseline``, ``goal`` (text),
    ``ratio`` (a float, or None), ``verdict`` (met, missed or ''), and the benchmark that printed it."""

    def __init__(self, line, source):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        cells += [""] * (6 - len(cells))
        self.line, self.source = line, source
        self.figure, self.value, self.baseline, ratio, self.goal, self.verdict = cells[:6]
        self.ratio = number(ratio)

    @property
    def missed(self):
        """True when the row has a goal and this run missed it."""
        return self.verdict == "missed"


def number(text, unit="×"):
    """The first number in ``text`` that ``unit`` follows (``'1.31×'``, ``'8.5 ms'``); None if there is none."""
    found = re.search(r"(\d[\d,]*(?:\.\d+)?)\s*" + re.escape(unit), text)
    return float(found.group(1).replace(",", "")) if found else None


def script_lines(path):
    """The number of lines of a module script: it is compiled on every run, so its length is part of start-up."""
    try:
        with open(os.path.join(REPO, path), encoding="utf-8") as f:
            return sum(1 for _ in f)
    except OSError:
        return None


def explain(rows):
    """Why the goals missed in this run were missed, in sentences built from this run's ``rows``: what each miss
    amounts to, and the measured figures that account for it. The causes named are facts about the code."""
    goals = [r for r in rows if r.verdict in ("met", "missed")]
    missed = [r for r in goals if r.missed]
    lines = ["%d of %d goals were met in this run%s." % (len(goals) - len(missed), len(goals),
                                                         "" if missed else "; nothing below needs explaining")]
    spread = _baseline_spread(rows)
    if spread:
        lines.append(spread)
    explained = set()
    for rule in (_startup, _sms, _gwmail, _process, _distant, _memory, _redact):
        text, covered = rule(rows)
        if text:
            lines.append(text)
        explained.update(covered)
    for row in missed:
        if row.figure not in explained:
            lines.append("**%s**: %s against the goal %s; no cause is known from the figures (see bench/%s)."
                         % (row.figure, row.value if row.ratio is None else "%.2f×" % row.ratio, row.goal, row.source))
    return "".join("- %s\n" % line for line in lines)


# The benchmarks whose baseline is a bare `/usr/bin/python3 -c pass` (bench/timing.py, BASELINE).
INTERPRETER_BASELINE = ("bench_features.py", "bench_sms.py", "bench_gwmail.py")


def _baseline_spread(rows):
    """A warning when the same baseline, measured again and again in this run, varied by more than a fifth: the
    machine was busy, and every ratio is rough."""
    bare = [number(r.baseline, "ms") for r in rows if r.source in INTERPRETER_BASELINE]
    bare = [b for b in bare if b]
    if len(bare) < 2 or max(bare) <= 1.2 * min(bare):
        return None
    return ("**A busy machine:** a bare interpreter's start-up, the same baseline measured beside each figure, took "
            "%.1f to %.1f ms in this run (%.1f×): other work shared the CPU, so every ratio below is rough; run "
            "`make bench` again on an idle machine." % (min(bare), max(bare), max(bare) / min(bare)))


def _missed_in(rows, test):
    """The rows ``test`` selects that carry a ratio, and those of them that missed their goal."""
    group = [r for r in rows if test(r) and r.ratio is not None]
    return group, [r for r in group if r.missed]


def _startup(rows):
    group, missed = _missed_in(rows, lambda r: r.figure.endswith("--command features"))
    if not missed:
        return None, []
    added = sorted(number(r.value, "ms") - number(r.baseline, "ms") for r in group)
    bare = sorted(number(r.baseline, "ms") for r in group)[len(group) // 2]
    script = {r.figure: r.figure.split()[0] for r in group}
    longest = max(group, key=lambda r: script_lines(script[r.figure]) or 0)
    slowest = max(group, key=lambda r: (number(r.value, "ms"), r.ratio))
    text = ("**Start-up (`--command features`, goal %s)**: missed by %s. Each module adds %.1f–%.1f ms to a bare "
            "interpreter's %.1f ms. The library is byte-compiled, but a module script is compiled on every run "
            "(scripts carry no `.py`): " % (missed[0].goal, ", ".join("`%s` (%.2f×)" % (script[r.figure], r.ratio)
                                                                      for r in missed), added[0], added[-1], bare))
    if longest is slowest:
        text += "the longest script, `%s` (%s lines), is also the slowest (%s)." % (
            script[longest.figure], script_lines(script[longest.figure]), longest.value)
    else:
        text += "the longest script is `%s` (%s lines, %s), the slowest `%s` (%s)." % (
            script[longest.figure], script_lines(script[longest.figure]), longest.value, script[slowest.figure],
            slowest.value)
    return text, [r.figure for r in group]


# The SMS gateways bench_sms.py measures against one floor (its row "SMS floor: ...").
SMS_GATEWAYS = ("gwepochta", "gwhttpsms")


def _sms(rows):
    group, missed = _missed_in(rows, lambda r: r.figure.startswith(tuple(g + " outgoing" for g in SMS_GATEWAYS)))
    floor = next((r for r in rows if r.figure.startswith("SMS floor")), None)
    if not missed:
        return None, []
    gateways = [g for g in SMS_GATEWAYS if any(r.figure.startswith(g + " ") for r in missed)]
    text = ("**%s `outgoing` (goal %s)**: %s." % (" and ".join(gateways), missed[0].goal, ", ".join(
        "%s %.2f× (%s)" % (r.figure.replace(" outgoing", "").replace(",", ""), r.ratio, r.value) for r in missed)))
    if floor is not None and floor.ratio is not None:
        goal = number(missed[0].goal)
        slowest = {g: max(number(r.value, "ms") for r in missed if r.figure.startswith(g + " ")) for g in gateways}
        text += (" What one SMS has to import (the floor row: `http.client`, which pulls in the `email` package, and "
                 "the XML parser) comes to %.2f× alone, %s the goal; the exchange itself adds %s at most."
                 % (floor.ratio, "already above" if goal is not None and floor.ratio > goal else "below",
                    ", ".join("%.1f ms (%s)" % (slowest[g] - number(floor.value, "ms"), g) for g in gateways)))
    return text, [r.figure for r in group]


def _gwmail(rows):
    group, missed = _missed_in(rows, lambda r: r.figure.startswith("gwmail outgoing"))
    if not missed:
        return None, []
    by_mode = {r.figure.rsplit(" ", 1)[-1]: number(r.value, "ms") for r in group}
    text = ("**gwmail `outgoing` (goal %s)**: %s." % (missed[0].goal, ", ".join(
        "%s %.2f× (%s)" % (r.figure.rsplit(" ", 1)[-1], r.ratio, r.value) for r in missed)))
    if "none" in by_mode and len(by_mode) > 1:
        text += (" Even without TLS (`none`) one mail takes %.1f ms: `smtplib` and the `email` package, which builds "
                 "the MIME message, and the XML parser are imported for every call; TLS adds %s."
                 % (by_mode["none"], ", ".join("%.1f ms (%s)" % (v - by_mode["none"], mode)
                                               for mode, v in sorted(by_mode.items()) if mode != "none")))
    return text, [r.figure for r in group]


def _process(rows):
    row = next((r for r in rows if r.figure.startswith("ntjabber process, ") and "round trip" not in r.figure), None)
    if row is None or not row.missed:
        return None, []
    rate, elapsed, bare = number(row.value, "/s"), number(row.value, "s,"), number(row.baseline, "s")
    count = number(row.figure, " notifications") or 1000
    text = "**ntjabber `process` (goal %s)**: %.0f notifications a second, %.2f× the bare loop." % (row.goal, rate,
                                                                                                   row.ratio)
    if elapsed is not None and bare is not None:
        text += (" The bare loop only writes the stanzas and waits for one ping (%.2f s); `process` takes %.2f s, "
                 "%.2f ms more a notification, for reading its file, rendering its template, a ping of its own after "
                 "each message (up to 32 on their way, so a killed run re-sends at most 32), the journal, and the "
                 "database once per 100 tasks."
                 % (bare, elapsed, (elapsed - bare) * 1000 / count))
    throughput = number(row.goal, "/s")
    if rate is not None and throughput is not None:
        text += " The throughput goal (≥ %.0f /s) is %s." % (throughput, "met" if rate >= throughput else "missed")
    return text, [row.figure]


def _distant(rows):
    row = next((r for r in rows if r.figure.startswith("ntjabber process, ") and "round trip" in r.figure), None)
    if row is None or not row.missed:
        return None, []
    rate, bare = number(row.value, "/s"), number(row.baseline, "s")
    return ("**ntjabber `process` over a 40 ms round trip (goal %s)**: %.0f notifications a second; the bare loop "
            "over the same proxy took %.2f s for 1,000. A window of 32 messages on their way allows 800 a second "
            "over 40 ms, and each batch of 100 waits one more round trip for its last results: a slower figure "
            "than that is the machine (compare the loopback row), not the link."
            % (row.goal, rate or 0, bare or 0)), [row.figure]


def _memory(rows):
    row = next((r for r in rows if "peak memory" in r.figure), None)
    if row is None or not row.missed:
        return None, []
    return ("**%s**: %s against %s; the queue is taken in batches of 100, so the peak should not grow with "
            "the queue: look for what keeps them." % (row.figure, row.value, row.goal)), [row.figure]


def _redact(rows):
    group, missed = _missed_in(rows, lambda r: r.figure.startswith("redact, "))
    if not missed:
        return None, []
    return ("**The redactor (goal %s)**: %s, for ten times the text. Linear work gives about 10×, a pattern that "
            "searches the rest of the line again from each position about 100× (bench/bench_redact.py)."
            % (missed[0].goal, ", ".join("%s %.2f×" % (r.figure.rsplit(" of ", 1)[-1], r.ratio) for r in missed))), \
        [r.figure for r in group]


def machine():
    """One line describing this machine."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    python = subprocess.run(["/usr/bin/python3", "--version"], stdout=subprocess.PIPE).stdout.decode().strip()
    release = ""
    try:
        with open("/etc/os-release") as f:
            release = next((line.split("=", 1)[1].strip().strip('"') for line in f if line.startswith("PRETTY_NAME")), "")
    except OSError:
        pass
    return "%s; %d cores; %s; %s (/usr/bin/python3, which the modules run under); kernel %s" % (
        model or platform.machine(), os.cpu_count() or 0, release, python, platform.release())


def main(argv):
    rows, notes = [], []
    status = 0
    for name in sorted(os.listdir(HERE)):
        if not (name.startswith("bench_") and name.endswith(".py")):
            continue
        print("running %s ..." % name, file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, os.path.join(HERE, name)], stdout=subprocess.PIPE)
        status |= done.returncode
        for line in done.stdout.decode("utf-8", "replace").splitlines():
            if line.startswith(("| command", "| figure", "| ---")):
                continue
            if line.startswith("| "):
                rows.append(Row(line, name))
            elif line.strip():
                notes.append("%s: %s" % (name, line.strip()))
    table = HEADER + "\n" + "\n".join(r.line for r in rows)
    why = explain(rows)
    print(table)
    for note in notes:
        print(note)
    print(why)
    if "--write" in argv:
        with open(os.path.join(REPO, "BENCHMARKS.md"), "w", encoding="utf-8") as f:
            f.write("# Benchmarks\n\nProduced by `make bench` (`python3 bench/run.py --write`) on %s, on: %s.\n\n"
                    "Each figure is the median of repeated runs, with its baseline measured in the same run, "
                    "interleaved (start-up baseline: a bare `/usr/bin/python3 -c pass`). Modules run as BILLmanager "
                    "runs them: a new process per call, the request on stdin, against servers on loopback.\n\n"
                    % (datetime.date.today().isoformat(), machine()))
            f.write(table + "\n\n")
            if notes:
                f.write("Also printed by the benchmarks:\n\n" + "".join("- %s\n" % n for n in notes) + "\n")
            f.write("## Why, from this run's figures\n\nWritten by `bench/run.py` (`explain`) from the table above: "
                    "the numbers are this run's, the causes are what the code does.\n\n" + why)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
