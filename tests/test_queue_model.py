"""A stateful model of the whole ``notify/ntjabber --command process`` queue (issue 11).

Hypothesis interleaves, in one sandbox per ``notifytask`` character set (utf8mb4 as created, utf8mb3 and
latin1 in strict mode):

- enqueues: files with one or several ``<notify>`` for different users, XSLT and EJS templates; every
  rendered text says whom it is for and which notice it is ("… for bob [n17]"), so a misdelivery shows;
- gateway faults planned through ``var/gwrecord.faults`` (tests/stand-ins/gwrecord): refusals that last
  until cleared, a gateway that hangs (bounded by its ``timeout`` setting of 1 s), dies or prints garbage;
  some reasons carry Cyrillic and emoji, which utf8mb3 and latin1 columns cannot hold;
- notices that fail for good: a refusal never cleared, an EJS that throws, an XSLT that stops, an EJS in an
  endless loop (bounded by MGRNOTIFY_TEMPLATE_TIMEOUT=1), no gateway for the provider;
- a template that prints to stdout before its text (it must still be delivered, to its own recipient);
- the database failing from its (n+1)th statement (``Sandbox.fail_database_after``);
- SIGKILL of the run after k delivered messages, after its k-th database statement started, or part way
  through, of the run alone or of its whole process group.

The invariants, checked against var/gwrecord.delivered and the database after every step:

- a message goes only to the recipient of the notice it renders, with that notice's text and subject;
- a notice is sent at most once per run, never again once a clean run (exit 0, not killed) has followed its
  delivery, and duplicates overall are at most one per SIGKILL (the one message in flight);
- nothing is lost: a task's row goes only when each of its notices was delivered;
- each failure is counted once: over any stretch of runs a task's error_count grows by at most the number
  of runs in it (plus one, when the run before was cut short and left its journal), and err_info is
  readable (words, no traceback, no mojibake) once error_count is above 0;
- a run exits 0 unless it lost its database (then 1, saying so) or was killed, and leaves no journal when it
  ends well; after a clean run with no gateway fault planned, every deliverable notice has gone out, a task
  of deliverable notices only is gone, and any other task's err_info is the failure of one of its notices
  that fail for good.

At the end, with every fault cleared, one more run must leave only the tasks that fail for good (each with
error_count >= 1) and those left for staff after queue.MAX_ERRORS failures.

CI runs a fixed sequence (EXAMPLES x STEPS per schema); MGRNOTIFY_FUZZ_SCALE multiplies the examples and
MGRNOTIFY_FUZZ_RANDOM=1 draws new ones. The counts go to build/fuzz-counts.json as "queue model (charset)".
"""

import collections
import json
import os
import re
import signal
import subprocess
import time
import warnings
from xml.etree.ElementTree import Element

import pytest
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

import fuzzing
from fuzzing import RANDOM, scaled
from mgrnotify import xmlio
from mgrnotify.queue import MAX_ERRORS
from sandbox import notification_file

MODULE = "notify/ntjabber"
# notifytask's character set -> the seed of CI's fixed sequence on it (each schema gets a sequence of its own).
SCHEMAS = {"utf8mb4": 1, "utf8mb3": 2, "latin1": 3}
EXAMPLES = scaled(5)   # per schema
STEPS = 7              # per example, each a process run (plus one more at the end)
RUN_TIMEOUT = 120      # a process run longer than this is a hang of the queue itself
# Both bounds the model relies on for its hangs and runaways: the gateway's own setting, and the template
# engine's deadline from the environment.
GATEWAY_TIMEOUT = 1
TEMPLATE_TIMEOUT = 1
# The schema that also gets the slow faults: a hanging gateway costs its whole deadline (about 10 s with a
# timeout of 1 s), a runaway template 1 s on every run that takes it. Their reasons are ASCII, so the other
# character sets would add time and nothing else.
SLOW_FAULTS_SCHEMA = "utf8mb4"

PROVIDER = "Хостинг"
USERS = {name: {"id": str(number), "name": name, "realname": realname, "jabber": name + "@localhost"}
         for number, (name, realname) in enumerate((("alice", "Алиса"), ("bob", "Борис"), ("carol", "Кэрол 🌸"),
                                                    ("dave", "Dave")), 1)}
# What every good template renders: provider, real name (a macro), recipient (a macro) and the notice's serial.
MARK = re.compile(r"for (\w+) \[n(\d+)\]$")
XSLT_OK = ('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"><xsl:output method="text"/>'
           '<xsl:template match="/"><xsl:value-of select="doc/project/name"/>: {user.realname}, for {user.name} '
           '[n<xsl:value-of select="doc/serial"/>]</xsl:template></xsl:stylesheet>')
EJS_OK = "<%= project.name %>: {user.realname}, for {user.name} [n<%= serial %>]"
NOISE = "noise"


class Kind:
    """One kind of notice: how often it is drawn, its template, the provider it names, and whether it can ever
    be delivered.

    ``refusal``: the gateway refuses it for good (a planned fault never cleared). ``because``: a word its
    task's err_info must hold once it failed.
    """

    def __init__(self, weight, template, deliverable=True, because=None, refusal=False, provider="served"):
        self.weight = weight
        self.template = template
        self.deliverable = deliverable
        self.because = because
        self.refusal = refusal
        self.provider = provider


KINDS = {
    "xslt": Kind(8, XSLT_OK),
    "ejs": Kind(8, EJS_OK),
    "ejs printing to stdout": Kind(2, '<%% console.log("%s") %%>' % NOISE + EJS_OK),
    "ejs that throws": Kind(2, '<% throw new Error("template broken: Шаблон сломан 💥") %>', False, "template"),
    "xslt that stops": Kind(2, XSLT_OK.replace('<xsl:value-of select="doc/project/name"/>',
                                               '<xsl:message terminate="yes">template broken: Шаблон сломан 💥'
                                               '</xsl:message>'), False, "template"),
    # rare: it costs MGRNOTIFY_TEMPLATE_TIMEOUT on every run until its task is left for staff
    "ejs in an endless loop": Kind(1, "<% while (true) {} %>" + EJS_OK, False, "template"),
    "refused for good": Kind(2, EJS_OK, False, "refused", refusal=True),
    "no gateway for its provider": Kind(2, XSLT_OK, False, "gateway", provider="unserved"),
}
KIND_DRAW = tuple(name for name, kind in KINDS.items() for _ in range(kind.weight))
RUNAWAY = "ejs in an endless loop"
# Reasons the gateway gives: ASCII, Cyrillic (not in latin1), emoji and other astral characters (not in utf8mb3).
REASONS = ("refused: the server is busy", "refused: Сервер занят, попробуйте позже",
           "refused: Сервер занят 🚦 попробуйте позже", "refused: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ✉️ refusé")
# Temporary gateway faults, in these proportions. A hang costs the gateway's whole deadline: it lasts one run,
# and comes at most once an example, on SLOW_FAULTS_SCHEMA only (elsewhere the gateway dies instead).
FAULT_DRAW = ("fail",) * 6 + ("exit",) * 2 + ("garbage",) * 2 + ("hang",)
# One planned fault: which pending message (counted round them), what the gateway does, the refusal's reason.
FAULT_PLAN = st.tuples(st.integers(0, 10 ** 6), st.sampled_from(FAULT_DRAW), st.sampled_from(REASONS))
# A file to queue: one to three notices (user, kind), and the task's priority.
FILE = st.tuples(st.lists(st.tuples(st.sampled_from(sorted(USERS)), st.sampled_from(KIND_DRAW)), min_size=1,
                          max_size=3), st.integers(-1, 2))
# How the run reaches the gateway: one outgoing_batch process for the run, or one outgoing call per message
# (the recorder hides its batch feature while var/gwrecord.nobatch exists).
GATEWAY_PATHS = st.sampled_from(("outgoing_batch", "outgoing"))
# When to kill a run: once it has delivered k messages; after a fraction of the time the last whole run took
# (anywhere, however fast runs are here); or once it has started the database statement k before the last
# one the last whole run made: its last statements apply the journal, and the client finishes the statement
# it was given unless the whole group is killed, so the kill lands between a commit and what follows it.
KILL_TRIGGERS = st.one_of(st.tuples(st.just("messages"), st.integers(1, 3)),
                          st.tuples(st.just("of a run"), st.sampled_from((0.0, 0.2, 0.4, 0.6, 0.8, 0.95))),
                          st.tuples(st.just("statements before the end"), st.integers(1, 2)))
FIRST_RUN_SECONDS = 0.4   # the guesses for those before a run has ended by itself
FIRST_RUN_STATEMENTS = 5
# How a run ends: by itself, killed (when, and with its children or not), or losing the database after n calls.
ENDINGS = st.one_of(st.just(("by itself",)), st.tuples(st.just("killed"), KILL_TRIGGERS, st.booleans()),
                    st.tuples(st.just("losing the database"), st.integers(0, 7)))
# err_info must say something (every reason here has English words, whatever the column drops) and not be
# UTF-8 read as latin1.
READABLE = re.compile(r"[A-Za-z]{3,}")
MOJIBAKE = re.compile("Ð.|Ñ.|ðŸ|â€")


def marker(serial):
    """The text that names notice ``serial`` in its message, and that a planned fault matches."""
    return "[n%d]" % serial


class Notice:
    """One ``<notify>`` the model queued, and what its message must look like."""

    def __init__(self, serial, user, kind):
        self.serial = serial
        self.user = user
        self.kind = kind
        self.body = "%s: %s, for %s %s" % (PROVIDER, USERS[user]["realname"], user, marker(serial))
        self.subject = "Уведомление n%d для %s" % (serial, user)

    @property
    def deliverable(self):
        """Whether a message of it can ever go out."""
        return KINDS[self.kind].deliverable

    def notice_xml(self, provider_id):
        """The notice document: the provider, a subject with a macro, the serial."""
        return ("<doc><project><id>%s</id><name>%s</name></project><subject>Уведомление n%d для {user.name}"
                "</subject><serial>%d</serial></doc>" % (provider_id, PROVIDER, self.serial, self.serial))


class Task:
    """One queued file: its notices in file order, and its error_count after each run since it was queued."""

    def __init__(self, task_id, serials, runs_before):
        self.id = task_id
        self.serials = serials
        self.runs_before = runs_before
        self.error_counts = {runs_before: 0}   # run number (0: before any) -> error_count after it


class Run:
    """One ``process`` run: how it ended and what it was given."""

    def __init__(self, number, how, before, faults, database_fault=None):
        self.number = number
        self.how = how
        self.before = before   # notifytask's rows when it started
        self.faults = faults   # the temporary gateway faults planned for it
        self.database_fault = database_fault
        self.returncode = None
        self.output = b""
        self.killed = False    # SIGKILLed while it ran

    @property
    def clean(self):
        """It ended by itself with success: whatever it delivered is recorded in the database."""
        return not self.killed and self.returncode == 0


class Bench:
    """The sandbox of one schema: its provider rows, gateway, environment and the counts of everything run."""

    def __init__(self, box, charset):
        self.box = box
        self.charset = charset
        box.install("gwrecord")
        self.served = str(box.add_project(PROVIDER))
        self.unserved = str(box.add_project("Без шлюза"))   # no gateway: its notices fail for good
        box.add_gateway("gwrecord", "ntjabber", {"jabber": "bot@localhost", "password": "pw-model",
                                                 "timeout": str(GATEWAY_TIMEOUT)}, project=self.served)
        if charset != "utf8mb4":
            box.db.execute("ALTER TABLE notifytask CONVERT TO CHARACTER SET %s" % charset)
        mode = box.db.query("SELECT @@sql_mode AS mode")[0]["mode"]
        assert "STRICT_TRANS_TABLES" in mode, "the model needs strict mode, as BILLmanager's servers have: " + mode
        column = box.db.query("SELECT CHARACTER_SET_NAME AS cs FROM information_schema.COLUMNS WHERE TABLE_SCHEMA"
                              " = DATABASE() AND TABLE_NAME = 'notifytask' AND COLUMN_NAME = 'err_info'")[0]["cs"]
        assert column == charset, column
        self.env = dict(box.env(), MGRNOTIFY_TEMPLATE_TIMEOUT=str(TEMPLATE_TIMEOUT))
        self.counts = collections.Counter()
        self.slow_faults = charset == SLOW_FAULTS_SCHEMA
        self.runaway_bounded = self.slow_faults and runaway_is_bounded(self)
        self.reset()

    def reset(self):
        """An empty queue: no rows, no files, no faults, no deliveries, no journal."""
        self.box.db.execute("DELETE FROM notifytask")
        for name in os.listdir(self.box.var):
            if name.startswith(("gwrecord.", "ntjabber.journal", "db-")):
                os.unlink(self.box.path("var", name))
        for folder, _, names in os.walk(self.box.path("var", "notify")):
            for name in names:
                os.unlink(os.path.join(folder, name))

    def start(self):
        """``process`` started as BILLmanager starts it, in a process group of its own (so it can be killed
        with its children)."""
        return subprocess.Popen(self.box.command(MODULE, "--command", "process"), cwd=self.box.root, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def finish(self, run, timeout=RUN_TIMEOUT):
        """Wait for a run; (exit status, stdout + stderr), kept for the sandbox's leak scan."""
        try:
            out, err = run.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(run)
            raise AssertionError("process did not end within %d s: the queue itself hangs" % timeout)
        self.box.outputs.append(("ntjabber --command process", out + err))
        return run.returncode, out + err

    def delivered(self):
        """Every line of var/gwrecord.delivered so far."""
        return self.box.json_lines("var", "gwrecord.delivered")

    def delivered_count(self):
        """How many messages were delivered so far (read often while a run is watched, so cheaply)."""
        try:
            with open(self.box.path("var", "gwrecord.delivered"), "rb") as f:
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0

    def database_calls(self):
        """How many times the modules started the database client so far (the sandbox's shim records each)."""
        try:
            with open(self.box.path("var", "child-argv.log"), "rb") as f:
                return sum(1 for line in f if line.startswith((b"mariadb ", b"mysql ")))
        except FileNotFoundError:
            return 0

    def rows(self):
        """{task id: row} of notifytask."""
        return {int(r["id"]): r for r in self.box.db.query(
            "SELECT id, filename, error_count, err_info FROM notifytask ORDER BY id")}

    def log_tail(self, size=4000):
        """The end of ntjabber's log, for failure messages."""
        return self.box.logs().get("ntjabber.log", "")[-size:]


def runaway_is_bounded(bench):
    """Whether an EJS template in an endless loop costs about MGRNOTIFY_TEMPLATE_TIMEOUT: one run on one such
    notice, stopped after a few seconds. Where it is not (the variable is not read), such notices would cost
    the template engine's default deadline on every run, and the model leaves them out."""
    notice = Notice(0, "alice", RUNAWAY)
    bench.box.enqueue("ntjabber", KINDS[RUNAWAY].template, notice.notice_xml(bench.served), USERS["alice"])
    started = time.monotonic()
    run = bench.start()
    try:
        bench.finish(run, timeout=TEMPLATE_TIMEOUT + 5)
    except AssertionError:
        pass
    bounded = time.monotonic() - started < TEMPLATE_TIMEOUT + 4
    if not bounded:
        warnings.warn("MGRNOTIFY_TEMPLATE_TIMEOUT does not bound a runaway EJS template here; "
                      "the queue model leaves runaway templates out")
    return bounded


def live_members(group):
    """The processes of a process group that are still running (zombies excluded)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            found.append(int(pid))
    return found


def stop_group(run, grace=0.0):
    """SIGKILL whatever is left of a run's process group, after ``grace`` seconds for orphans to end by
    themselves; returns once none runs, so nothing writes after the model has looked."""
    deadline = time.monotonic() + grace
    while live_members(run.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        os.killpg(run.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while live_members(run.pid):
        assert time.monotonic() < deadline, "processes of a killed run survive SIGKILL"
        time.sleep(0.01)


def machine_for(bench):
    """The state machine class over ``bench``'s sandbox (hypothesis builds one instance per example)."""

    class QueueModel(RuleBasedStateMachine):
        """What the queue holds and what it delivered, as the model expects it; the rules change it."""

        def __init__(self):
            super().__init__()
            bench.reset()
            self.notices = {}          # serial -> Notice
            self.tasks = {}            # task id -> Task
            self.faults = {}           # serial -> temporary fault planned for it
            self.runs = []             # Run, in order
            self.kills = 0             # SIGKILLs that found the run still running
            self.deliveries = collections.Counter()   # serial -> times delivered
            self.first_run = {}        # serial -> number of the run that first delivered it
            self.lines_seen = 0
            self.hung = False          # a hang was planned in this example
            self.run_seconds = FIRST_RUN_SECONDS   # how long the last whole run took
            self.run_statements = FIRST_RUN_STATEMENTS   # and how many database statements it made
            self.consistent = True     # False from the start of a step until its checks passed

        # --- steps --------------------------------------------------------------------------------------

        @initialize(files=st.lists(FILE, min_size=1, max_size=4))
        def start_with(self, files):
            """Every example starts with something queued."""
            self.consistent = False
            self._enqueue(files)

        @rule(files=st.lists(FILE, max_size=4), clear=st.booleans(), plans=st.lists(FAULT_PLAN, max_size=2),
              path=GATEWAY_PATHS, ending=ENDINGS)
        def step(self, files, clear, plans, path, ending):
            """What may happen between two runs -- BILLmanager queues more ``files``, the gateway recovers
            (``clear``: every temporary fault ends) or starts failing on some messages (``plans``) -- then one
            run through the gateway ``path``, which ends as ``ending`` says.

            Every step is a run: runs are what the model checks, and what its time goes on.
            """
            self.consistent = False
            bench.counts["steps"] += 1
            if files:
                self._enqueue(files)
            if clear and self.faults:
                self.faults.clear()
                self._write_faults()
            if plans and self._pending():
                self._plan_faults(plans)
            self._process(path, ending)

        def _enqueue(self, files):
            """Queue files of one or several notices (each for its own user and kind), as BILLmanager does."""
            planned = []
            for specs, priority in files:
                notices = [self._new_notice(user, kind) for user, kind in specs]
                planned.append((notices, priority))
            ids = bench.box.enqueue_many([dict(modulename="ntjabber", template=KINDS[n[0].kind].template,
                                               notice_xml=self._notice_xml(n[0]), user=USERS[n[0].user],
                                               priority=priority) for n, priority in planned])
            rows = bench.rows()
            for task_id, (notices, _) in zip(ids, planned):
                if len(notices) > 1:
                    self._write_file(bench.box.path(rows[task_id]["filename"]), notices)
                self.tasks[task_id] = Task(task_id, [n.serial for n in notices], len(self.runs))
            if any(KINDS[n.kind].refusal for notices, _ in planned for n in notices):
                self._write_faults()
            bench.counts["tasks"] += len(ids)

        def _plan_faults(self, plans):
            """Make the gateway refuse (until cleared), hang (one run), die or print garbage on some messages not
            delivered yet."""
            pending = self._pending()
            for pick, how, reason in plans:
                if how == "hang" and (self.hung or not bench.slow_faults):
                    how = "exit"
                self.hung = self.hung or how == "hang"
                serial = pending[pick % len(pending)]
                self.faults[serial] = {"match": marker(serial), "do": how, "reason": reason}
            self._write_faults()

        def _process(self, path, ending):
            """A run: left alone, SIGKILLed (after some messages went out, part of a run's time or at one of its
            last database statements; the run alone, whose children finish what they were doing, or its whole
            process group), or with the database client failing from its (n+1)th call on."""
            bench.counts["runs " + ending[0]] += 1
            if ending[0] == "killed":
                _, trigger, whole_group = ending
                self._run("process killed after %s %s%s" % (trigger[1], trigger[0], " with its children"
                                                            if whole_group else ""), path, kill=(trigger, whole_group))
            elif ending[0] == "losing the database":
                self._run("process, database lost after %d calls" % ending[1], path, database_fault=ending[1])
            else:
                self._run("process", path)

        # --- the checks after every step -----------------------------------------------------------------

        @invariant()
        def check(self):
            """Nothing delivered to the wrong user or more often than kills explain; nothing lost; error counts
            and reasons as promised."""
            self._check_deliveries()
            self._check_tasks()
            self.consistent = True

        def teardown(self):
            """With every fault cleared, one run delivers everything deliverable (``_check_run``); what fails
            for good stays queued with error_count >= 1 and its reason. Skipped when a step already failed (its
            own failure is the one to see)."""
            if not self.consistent:
                return
            self.faults.clear()
            self._write_faults()
            run = self._run("final process, no fault", "outgoing_batch")
            self._check_deliveries()
            self._check_tasks()
            rows = bench.rows()
            for task in self.tasks.values():
                if not all(self.notices[s].deliverable for s in task.serials):
                    row = rows.get(task.id)
                    assert row is not None and int(row["error_count"]) >= 1, self._explain(
                        "task %d, which fails for good, is gone or has no failure counted: %r" % (task.id, row), run)
            bench.counts["examples"] += 1
            bench.counts["duplicate deliveries"] += sum(c - 1 for c in self.deliveries.values() if c > 1)

        # --- the model's own helpers ---------------------------------------------------------------------

        def _new_notice(self, user, kind):
            """A new notice for ``user`` with the next serial."""
            if kind == RUNAWAY and (not bench.runaway_bounded or any(n.kind == RUNAWAY
                                                                     for n in self.notices.values())):
                kind = "ejs that throws"   # at most one runaway per example, on SLOW_FAULTS_SCHEMA only
            notice = Notice(len(self.notices) + 1, user, kind)
            self.notices[notice.serial] = notice
            bench.counts["notices: " + kind] += 1
            return notice

        def _notice_xml(self, notice):
            """The notice document, naming the provider with a gateway unless its kind is to have none."""
            provider = bench.served if KINDS[notice.kind].provider == "served" else bench.unserved
            return notice.notice_xml(provider)

        def _write_file(self, path, notices):
            """A file of several <notify>, each with its own user (as test_queue.py builds them)."""
            root = Element("doc")
            for notice in notices:
                root.append(xmlio.parse(notification_file(KINDS[notice.kind].template, self._notice_xml(notice),
                                                          USERS[notice.user])).find("notify"))
            with open(path, "w", encoding="utf-8") as f:
                f.write(xmlio.serialize(root))

        def _write_faults(self):
            """var/gwrecord.faults: the temporary faults, then the refusals for good."""
            faults = list(self.faults.values()) + [
                {"match": marker(n.serial), "do": "fail", "reason": "refused for good: " + REASONS[n.serial % 4]}
                for n in self.notices.values() if KINDS[n.kind].refusal]
            with open(bench.box.path("var", "gwrecord.faults"), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(fault, ensure_ascii=False) + "\n" for fault in faults)

        def _pending(self):
            """Deliverable notices not delivered yet, by serial."""
            return [s for s, n in sorted(self.notices.items()) if n.deliverable and not self.deliveries[s]]

        def _run(self, how, path, kill=None, database_fault=None):
            """One process run through the gateway ``path``, watched and perhaps killed; its deliveries taken in
            and its outcome checked."""
            result = Run(len(self.runs) + 1, "%s (%s)" % (how, path), bench.rows(), dict(self.faults), database_fault)
            nobatch = bench.box.path("var", "gwrecord.nobatch")
            if path == "outgoing_batch" and os.path.exists(nobatch):
                os.unlink(nobatch)
            elif path == "outgoing":
                open(nobatch, "w").close()
            bench.box.fail_database_after(database_fault)
            try:
                started = time.monotonic()
                marks = (started, bench.delivered_count(), bench.database_calls())
                run = bench.start()
                killed = kill is not None and self._kill_when(run, marks, *kill)
                result.returncode, result.output = bench.finish(run)
                stop_group(run, grace=2 if killed and not kill[1] else 0)
            finally:
                bench.box.fail_database_after(None)
                if any(f["do"] == "hang" for f in self.faults.values()):   # a hang lasts one run: it costs seconds
                    self.faults = {s: f for s, f in self.faults.items() if f["do"] != "hang"}
                    self._write_faults()
            result.killed = killed and result.returncode == -signal.SIGKILL
            if not result.killed and database_fault is None:
                self.run_seconds = time.monotonic() - started
                self.run_statements = bench.database_calls() - marks[2]
            self.runs.append(result)
            self.kills += result.killed
            bench.counts["runs"] += 1
            bench.counts["kills that landed"] += result.killed
            bench.counts["run seconds"] += time.monotonic() - started
            for fault in result.faults.values():
                bench.counts["gateway faults: " + fault["do"]] += 1
            self._take_deliveries(result)
            self._check_run(result)
            return result

        def _kill_when(self, run, marks, trigger, whole_group):
            """SIGKILL ``run`` (its whole group, or the run alone) once ``trigger`` is met, counting from ``marks``
            (its start time, messages delivered and database calls before it); False if it ended first."""
            started, messages, statements = marks
            unit, amount = trigger
            while run.poll() is None:
                if unit == "messages":
                    due = bench.delivered_count() >= messages + amount
                elif unit == "of a run":
                    due = time.monotonic() >= started + amount * self.run_seconds
                else:   # statements before the end
                    due = bench.database_calls() >= statements + max(1, self.run_statements - amount)
                if due:
                    if whole_group:
                        os.killpg(run.pid, signal.SIGKILL)
                    else:
                        run.send_signal(signal.SIGKILL)
                    return True
                time.sleep(0.003)
            return False

        def _take_deliveries(self, run):
            """Attribute the lines the run added to it, checking each: right recipient, right text, once."""
            lines = bench.delivered()
            in_this_run = collections.Counter()
            for line in lines[self.lines_seen:]:
                match = MARK.search(line["body"])
                assert match, self._explain("a message no notice of the model renders: %r" % line, run)
                user, serial = match.group(1), int(match.group(2))
                notice = self.notices.get(serial)
                assert notice is not None, self._explain("a message for unknown notice %d: %r" % (serial, line), run)
                assert user == notice.user and line["to"] == USERS[notice.user]["jabber"], self._explain(
                    "notice %d for %s was delivered to %s with the text %r" % (serial, notice.user, line["to"],
                                                                             line["body"]), run)
                assert notice.deliverable, self._explain("notice %d (%s) must never be delivered: %r"
                                                         % (serial, notice.kind, line), run)
                noise = line["body"][:-len(notice.body)].split() if line["body"].endswith(notice.body) else None
                assert noise is not None and set(noise) <= {NOISE}, self._explain(
                    "notice %d: the text %r, expected %r" % (serial, line["body"], notice.body), run)
                assert line["subject"] == notice.subject, self._explain(
                    "notice %d: the subject %r, expected %r" % (serial, line["subject"], notice.subject), run)
                in_this_run[serial] += 1
                assert in_this_run[serial] == 1, self._explain("notice %d was delivered twice in one run"
                                                               % serial, run)
                if serial in self.first_run:
                    settled = [r.number for r in self.runs if r.clean and self.first_run[serial] < r.number
                               < run.number]
                    assert not settled, self._explain("notice %d, delivered in run %d, was sent again after clean"
                                                      " run %d" % (serial, self.first_run[serial], settled[0]), run)
                else:
                    self.first_run[serial] = run.number
                self.deliveries[serial] += 1
                bench.counts["deliveries"] += 1
            self.lines_seen = len(lines)

        def _check_run(self, run):
            """The run's own outcome: a documented status; after a clean run no journal is left; and when no
            fault was planned at all, every deliverable notice has gone out and its task is gone."""
            text = run.output.decode("utf-8", "replace")
            assert "Traceback" not in text and run.returncode != 70, self._explain("a defect", run)
            if run.killed:
                return
            if run.database_fault is None:
                assert run.returncode == 0, self._explain("a run with the database up failed", run)
            else:
                assert run.returncode in (0, 1), self._explain("status %s" % run.returncode, run)
                assert run.returncode == 0 or "database" in text, self._explain("an error not about the database",
                                                                                run)
                assert run.returncode == 1 or run.database_fault > 0, self._explain("no database, no error", run)
            if not run.clean:
                return
            assert not os.path.exists(bench.box.path("var", "ntjabber.journal")), self._explain(
                "a run that ended well left its journal", run)
            if run.faults:
                return
            rows = bench.rows()
            for task in self.tasks.values():
                if task.id in run.before and int(run.before[task.id]["error_count"]) >= MAX_ERRORS:
                    continue   # left for staff: not taken
                notices = [self.notices[s] for s in task.serials]
                for notice in notices:
                    assert not notice.deliverable or self.deliveries[notice.serial], self._explain(
                        "stuck: notice %d (%s, task %d) is still not delivered after a run without faults"
                        % (notice.serial, notice.kind, task.id), run)
                if all(n.deliverable for n in notices):
                    assert task.id not in rows, self._explain("stuck: task %d was delivered but is still queued"
                                                              % task.id, run)
                elif task.id in rows:   # it failed in this run, and only its notices that fail for good can fail
                    reason, words = rows[task.id]["err_info"] or "", [KINDS[n.kind].because for n in notices
                                                                      if not n.deliverable]
                    assert any(word in reason for word in words), self._explain(
                        "task %d: err_info %r names no failure of its notices that fail for good, %s (%s)"
                        % (task.id, reason, [n.serial for n in notices if not n.deliverable], words), run)

        def _check_deliveries(self):
            """Each kill explains at most one duplicate: the one message in flight when it landed."""
            duplicates = sum(count - 1 for count in self.deliveries.values() if count > 1)
            assert duplicates <= self.kills, self._explain(
                "%d duplicate deliveries but only %d kills: %s" % (duplicates, self.kills, sorted(
                    s for s, c in self.deliveries.items() if c > 1)))

        def _check_tasks(self):
            """Rows: none lost (a row goes only when each of its notices went out), each failure counted once,
            and a readable err_info once error_count is above 0."""
            rows = bench.rows()
            assert set(rows) <= set(self.tasks), self._explain("rows the model never queued: %s"
                                                               % sorted(set(rows) - set(self.tasks)))
            for task in self.tasks.values():
                row = rows.get(task.id)
                if row is None:
                    missing = [s for s in task.serials if not self.deliveries[s]]
                    assert not missing, self._explain("task %d is gone but its notices %s were never delivered"
                                                      % (task.id, missing))
                    continue
                count, reason = int(row["error_count"]), row["err_info"]
                self._check_error_count(task, count)
                if count:
                    assert reason and READABLE.search(reason), self._explain("task %d failed without a readable "
                                                                             "err_info: %r" % (task.id, reason))
                    assert "Traceback" not in reason and "internal error" not in reason.lower(), self._explain(
                        "task %d: a defect as err_info: %r" % (task.id, reason))
                    assert not MOJIBAKE.search(reason), self._explain("task %d: err_info is mojibake: %r"
                                                                      % (task.id, reason))

        def _check_error_count(self, task, count):
            """A run counts a task's failure at most once, and a run cut short leaves at most that one count to
            the next: over any stretch of runs since the task was queued, error_count grows by at most the
            number of runs in it, plus one when the run just before the stretch was cut short."""
            last = len(self.runs)
            task.error_counts[last] = count
            for start, earlier in task.error_counts.items():
                cut_short = start > task.runs_before and not self.runs[start - 1].clean
                allowed = last - start + cut_short
                assert count - earlier <= allowed, self._explain(
                    "task %d: error_count went from %d after run %d to %d after run %d (at most %d)"
                    % (task.id, earlier, start, count, last, earlier + allowed))

        def _explain(self, what, run=None):
            """A failure message: what broke, the runs so far, and the failing run's output and log."""
            lines = [what, "charset %s; runs so far:" % bench.charset]
            lines += ["  %d %s: status %s%s%s" % (r.number, r.how, r.returncode, ", killed" if r.killed else "",
                                                  ", faults %s" % sorted(r.faults) if r.faults else "")
                      for r in self.runs]
            if run is not None:
                lines += ["output of run %d:" % run.number, run.output.decode("utf-8", "replace")[-3000:]]
            lines += ["rows: %s" % list(bench.rows().values()), "ntjabber.log (end):", bench.log_tail()]
            return "\n".join(lines)

    return QueueModel


@pytest.mark.parametrize("charset", sorted(SCHEMAS))
def test_queue_model(sandbox, charset):
    bench = Bench(sandbox, charset)
    started = time.monotonic()
    machine = machine_for(bench)
    if not RANDOM:
        machine = seed(SCHEMAS[charset])(machine)
    run_state_machine_as_test(machine, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
        suppress_health_check=list(HealthCheck), print_blob=False))
    counts = dict(bench.counts, **{"run seconds": round(bench.counts["run seconds"], 1)})
    fuzzing.record_counts(MODULE, "queue model (%s)" % charset, counts.pop("steps", 0), time.monotonic() - started,
                          **counts)
    if not RANDOM:   # CI's fixed sequence must keep exercising every class of fault
        missing = {"kills that landed", "runs losing the database", "deliveries", "gateway faults"}
        missing -= {kind for kind in missing for name, count in counts.items() if name.startswith(kind) and count}
        assert not missing, "the fixed sequence on %s has no %s any more; pick another seed" % (charset, missing)
