"""Run every benchmark and print one table: each figure, its baseline measured in the same run, the ratio and
the goal. With --write, also write the table and this machine's description into BENCHMARKS.md.

    python3 bench/run.py [--write]      (or: make bench)
"""

import datetime
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HEADER = "| figure | value | baseline (same run) | ratio | goal | |\n| --- | --- | --- | --- | --- | --- |"

# What limits the figures that miss their goals (measured while writing them; see each bench_*.py).
NOTES = """\
- **Start-up (`--command features`)**: the library adds about 1.5–2.5 ms to a bare interpreter's 8 ms, when it is
  byte-compiled as the packages install it. The module script itself is compiled on every run (scripts carry no
  `.py`), so the longest script, `gate/gwmail`, sits at the goal's edge.
- **gwepochta `outgoing` (goal 2.5×)**: the floor is what one SMS has to import. `http.client` pulls in the `email`
  package, and the defused XML parser pulls in `xml.etree` and `re`. Together that is already about 4× a bare
  interpreter on this machine (the row "floor" above), before a byte is sent. Only an HTTP client written on raw
  sockets would get closer, and it would still need `ssl` for HTTPS.
- **gwmail `outgoing` (goal 3×)**: `ssl` plus the XML parser alone come to about 3.3×. `smtplib` and the `email`
  package, which builds a correct MIME message, add about 13 ms more.
- **ntjabber `process` against a bare loop (goal 2×)**: the bare loop only writes 1,000 stanzas and waits for one
  ping. `process` also reads each notification file, renders its template (EJS, in one node process per run),
  updates the database once per 100 tasks, and records every delivery. It confirms each message with a ping
  before the next one goes, so a killed run re-sends at most one message. The throughput goal (≥ 300/s) is met.
"""


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
                rows.append(line)
            elif line.strip():
                notes.append("%s: %s" % (name, line.strip()))
    table = HEADER + "\n" + "\n".join(rows)
    print(table)
    for note in notes:
        print(note)
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
            f.write("## What limits the figures that miss\n\n" + NOTES)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
