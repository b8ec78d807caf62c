"""``--command doctor`` (issue 13): passing on a healthy sandbox, and for each piece that can be broken, failing
with a line that names it -- run as an admin runs it, against the real database, secrets never printed."""

import fcntl
import os
import shutil

import pytest

import sandbox as sandboxlib

from mgrnotify import xmlio

PASS, FAIL, WARN = "\u2714", "\u2718", "!"
BOT_PASSWORD = "pw-doctor-7Qx"
BOT_ADDRESS = "bot-7Qx@example.com"   # a setting's value, not secret, and still never printed


@pytest.fixture
def box(sandbox):
    """A sandbox where ntjabber can work: a provider, a Jabber gateway for all providers (outgoing and ingoing)."""
    sandbox.project = sandbox.add_project("Хостинг & Co")
    sandbox.gateway = sandbox.add_gateway("gwjabber", "ntjabber", {"jabber": BOT_ADDRESS, "password": BOT_PASSWORD,
                                                                   "tls": "starttls"}, name="Jabber")
    sandbox.add_gateway("gwjabber", "ntjabber", {"jabber": BOT_ADDRESS, "password": BOT_PASSWORD,
                                                 "ticket_format": "#id"}, gateway_type=2, name="Replies")
    return sandbox


class Doctor:
    """One doctor run: its exit status and lines."""

    def __init__(self, done):
        self.status = done.returncode
        self.stdout = done.stdout
        self.text = done.stdout.decode("utf-8")
        self.lines = self.text.splitlines()

    def marked(self, mark):
        return [line for line in self.lines if line.startswith(mark + " ")]

    def line(self, subject):
        """The lines about ``subject`` (``✔ subject: ...``, any mark)."""
        return [line for line in self.lines if line[2:].startswith(subject + ":")]


def doctor(box, module="notify/ntjabber", *args):
    return Doctor(box.run(module, "--command", "doctor", *args))


def test_the_healthy_sandbox_passes_every_check(box):
    done = doctor(box)
    print("\n" + done.text)   # the README's sample: pytest -s tests/test_doctor.py -k healthy
    assert done.status == 0, done.text
    assert done.marked(FAIL) == []
    for subject in ("config", "database", "table notifytask", "table gateway", "table user", "table ticket",
                    "table project", "user.jabber", "notifytask.err_info",
                    "gateway %d (gwjabber) 'Jabber'" % box.gateway,
                    "providers", "node", "ejs", "EJS", "XSLT", "var/", "lock", "queue"):
        assert [line[0] for line in done.line(subject)] == [PASS], (subject, done.text)
    assert done.lines[-1] == "ntjabber can work here"
    assert "outgoing, active, for all providers, settings: jabber, tls and 1 secret, gate/gwjabber answers" \
        in done.line("gateway %d (gwjabber) 'Jabber'" % box.gateway)[0]
    assert BOT_PASSWORD.encode() not in done.stdout and BOT_ADDRESS.encode() not in done.stdout


def drop_column(table, column):
    return lambda box: box.db.execute("ALTER TABLE %s DROP COLUMN %s" % (table, column))


def add_gateway(*args, **kwargs):
    return lambda box: box.add_gateway(*args, **kwargs)


def without_config(box):
    os.unlink(box.path("etc", "billmgr.conf"))


def wrong_password(box):
    sandboxlib.remember_secret("not-the-db-password")
    with open(box.path("etc", "billmgr.conf"), "a", encoding="utf-8") as f:
        f.write("DBPassword not-the-db-password\n")


def without_node(box, monkeypatch):
    monkeypatch.setenv("MGRNOTIFY_NODE", "/nonexistent/node")   # template._find_node then tries that path only


def without_ejs(box):
    """The sandbox's lib, linked to the repository's, replaced by a copy without the pinned ejs."""
    lib = box.path("lib")
    os.unlink(lib)
    shutil.copytree(os.path.join(sandboxlib.REPO, "lib"), lib, symlinks=True,
                    ignore=lambda folder, names: ["ejs"] if folder.endswith("node_modules") else [])


def gateways_inactive(box):
    box.db.execute("UPDATE gateway SET active = 'off'")


def gateway_settings_broken(box):
    box.db.execute("UPDATE gateway SET xmlparams = '<doc><jabber>x' WHERE id = ?", (box.gateway,))


@pytest.mark.parametrize("breaks, subject, words", [
    (drop_column("user", "jabber"), "user.jabber", "missing, though etc/sql/billmgr.user.addon/jabber is installed"),
    (drop_column("notifytask", "err_info"), "table notifytask", "no column err_info"),
    (drop_column("gateway", "gateway_type"), "table gateway", "no column gateway_type"),
    (add_gateway("gwmissing", "ntjabber", {"jabber": "x@example.com"}), "gateway 3 (gwmissing) 'gw'",
     "The gateway module gwmissing is not installed"),
    (add_gateway("gwmail", "ntjabber", {"email": "x@example.com"}), "gateway 3 (gwmail) 'gw'",
     "gate/gwmail delivers ntemail, not ntjabber"),
    (add_gateway("gwjabber", "ntjabber", {"jabber": "x@example.com"}, gateway_type=7), "gateway 3 (gwjabber) 'gw'",
     "its direction (gateway_type) is '7', neither 1 (outgoing) nor 2 (ingoing)"),
    (add_gateway("gwjabber", "ntjabber", {"jabber": "x@example.com"}, project=99), "gateway 3 (gwjabber) 'gw'",
     "its provider 99 does not exist"),
    (gateway_settings_broken, "gateway 1 (gwjabber) 'Jabber'", "is not well-formed XML"),
    (gateways_inactive, "gateways", "no working active outgoing gateway of ntjabber"),
    (without_node, "node", "node is not installed"),
    (without_ejs, "ejs", "the ejs package EJS templates need is missing"),
    (without_config, "config", "etc/billmgr.conf does not exist"),
    (lambda box: box.fail_database_after(0), "database", "Lost connection to server"),
    (wrong_password, "database", "The database refused the login of user 'billmgr_"),
], ids=["contact column", "err_info column", "gateway column", "gateway module", "module of another type",
        "direction", "provider", "gateway settings", "no active gateway", "node", "ejs", "config", "database down",
        "database password"])
def test_each_broken_piece_fails_with_its_name(box, monkeypatch, breaks, subject, words):
    if breaks is without_node:
        breaks(box, monkeypatch)
    else:
        breaks(box)
    done = doctor(box)
    assert done.status == 1, done.text
    named = [line for line in done.line(subject) if line.startswith(FAIL)]
    assert named and any(words in line for line in named), (subject, words, done.text)
    assert done.lines[-1].startswith("ntjabber cannot work here: ")
    assert "Traceback" not in done.text and BOT_PASSWORD.encode() not in done.stdout


def test_a_gateway_problem_is_only_a_warning_when_the_gateway_is_inactive(box):
    box.add_gateway("gwmissing", "ntjabber", {"jabber": "x@example.com"}, active="off")
    done = doctor(box)
    assert done.status == 0, done.text
    [line] = done.line("gateway 3 (gwmissing) 'gw'")
    assert line.startswith(WARN + " ") and "not installed" in line


def test_a_providers_own_broken_gateway_is_named_for_its_provider(box):
    """process takes a provider's own gateway before the one for all providers, working or not."""
    second = box.add_project("Second")
    broken = box.add_gateway("gwmissing", "ntjabber", {"jabber": "x@example.com"}, project=second)
    done = doctor(box)
    assert done.status == 1
    assert done.line("providers") == [
        WARN + " providers: notices of these providers would fail: %d (Second): gateway %d (gwmissing), which does "
        "not work \u2014 add or fix a gateway for them, or one for all providers" % (second, broken)]


def latin1(box):
    box.db.execute("ALTER TABLE notifytask MODIFY err_info TEXT CHARACTER SET latin1")


def utf8mb3(box):
    box.db.execute("ALTER TABLE notifytask MODIFY err_info VARCHAR(200) CHARACTER SET utf8mb3")


def short_err_info(box):
    box.db.execute("ALTER TABLE notifytask MODIFY err_info VARCHAR(200) CHARACTER SET utf8mb4")


def second_provider(box):
    box.db.execute("UPDATE gateway SET project = ?", (box.project,))
    box.add_project("Second")


def stopped_run(box):
    with open(box.path("var", "ntjabber.journal"), "w") as f:
        f.write('{"task": "1", "index": 0, "total": 1, "file": "x", "count": 0}\n' * 2)


def do_nothing(box):
    open(box.path("etc", "billmgr.DoNothing"), "w").close()


@pytest.mark.parametrize("changes, subject, words", [
    (latin1, "notifytask.err_info", "text latin1: reasons in scripts latin1 lacks (Cyrillic, say) are stored with '?'"),
    (utf8mb3, "notifytask.err_info", "(emoji) in reasons are stored as '\ufffd', cut to 200 characters"),
    (short_err_info, "notifytask.err_info", "varchar(200) utf8mb4 holds reasons in any script, cut to 200 characters"),
    (second_provider, "providers", "notices of these providers would fail: 2 (Second): none"),
    (stopped_run, "journal", "var/ntjabber.journal holds 2 outcomes of a run that was stopped"),
    (do_nothing, "queue", "etc/billmgr.DoNothing exists"),
], ids=["latin1", "utf8mb3", "short", "provider without gateway", "journal", "DoNothing"])
def test_warnings_name_the_piece_and_let_the_module_work(box, changes, subject, words):
    changes(box)
    done = doctor(box)
    assert done.status == 0, done.text
    assert any(line.startswith(WARN) and words in line for line in done.line(subject)), done.text
    assert done.lines[-1].startswith("ntjabber can work here (")


def test_the_queue_and_the_lock_as_they_are_now(box):
    user = {"name": "alice", "jabber": "alice@example.com"}
    tasks = [box.enqueue("ntjabber", "t%d" % i, "<doc/>", user) for i in range(3)]
    box.db.execute("UPDATE notifytask SET error_count = 2 WHERE id = ?", (tasks[1],))
    box.db.execute("UPDATE notifytask SET error_count = 10, err_info = 'The server said no' WHERE id = ?", (tasks[2],))
    before = box.db.query("SELECT * FROM notifytask ORDER BY id")
    with open(box.path("var", "ntjabber.lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)   # a process run at work
        done = doctor(box)
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)   # still ours: the doctor took nothing
    assert done.status == 0, done.text
    assert done.line("lock") == [PASS + " lock: a process run of ntjabber holds var/ntjabber.lock now"]
    [counts, staff] = done.line("queue")
    assert counts.startswith(PASS + " queue: 3 tasks waiting, 2 failing (error_count > 0), 1 left for staff; the "
                             "oldest from 20") and counts.endswith("the highest error_count 10")
    assert staff.startswith(WARN + " queue: 1 task failed 10 times and waits for staff; task %d's last reason: The "
                            "server said no" % tasks[2])
    assert box.db.query("SELECT * FROM notifytask ORDER BY id") == before
    assert not os.path.exists(box.path("var", "ntjabber.journal"))


@pytest.fixture
def probes(sandbox):
    """ntprobe with gwprobe gateways, whose check_connection accepts only the password 'right'."""
    sandbox.install("ntprobe", "notify")
    sandbox.install("gwprobe")
    sandboxlib.remember_secret("wr0ng-Pa55")
    sandbox.good = sandbox.add_gateway("gwprobe", "ntprobe", {"login": "bob", "password": "right"}, name="good")
    sandbox.bad = sandbox.add_gateway("gwprobe", "ntprobe", {"login": "eve", "password": "wr0ng-Pa55"}, name="bad")
    return sandbox


def test_connect_runs_each_active_gateways_check_connection(probes):
    without = doctor(probes, "notify/ntprobe")
    assert "check_connection" not in without.text and without.marked(FAIL) == [], without.text
    done = doctor(probes, "notify/ntprobe", "--connect")
    assert done.status == 1
    [good] = done.line("gateway %d (gwprobe) 'good'" % probes.good)
    assert good.startswith(PASS) and good.endswith("check_connection passed")
    assert done.line("gateway %d (gwprobe) 'bad'" % probes.bad) == [
        FAIL + " gateway %d (gwprobe) 'bad': check_connection: The probe refused the login for user 'eve' \u2014 "
        "correct the settings; var/gwprobe.log has the exchange" % probes.bad]
    assert b"wr0ng-Pa55" not in done.stdout


@pytest.mark.parametrize("args, status, words", [
    ([], 1, ["gateway 1 (gwprobe) 'good': outgoing, active, for all providers, settings: login and 1 secret",
             "%s gateway 2 (gwprobe) 'bad'" % PASS]),
    (["--gate", "1", "--connect"], 0, ["gateway 1 (gwprobe) 'good'", "check_connection passed"]),
    (["--connect", "--gate", "2"], 1, ["%s gateway 2 (gwprobe) 'bad': check_connection: The probe refused the "
                                       "login for user 'eve'" % FAIL]),
    (["--gate", "3"], 1, ["%s gateway 3 (gwmail): it is a gateway of gwmail, not gwprobe \u2014 run gate/gwmail "
                          "--command doctor --gate 3" % FAIL]),
    (["--gate", "4"], 1, ["%s gateway 4: there is no such gateway" % FAIL]),
], ids=["every row", "one row", "refused", "another module's", "absent"])
def test_a_gateway_module_checks_its_own_rows(probes, args, status, words):
    probes.add_gateway("gwmail", "ntemail", {"email": "x@example.com"})
    probes.db.execute("UPDATE gateway SET gateway_type = 2, notify_module = 'ntjabber' WHERE id = ?", (probes.bad,))
    if not args:   # the bad row, now of another type and ingoing, which gwprobe does
        words[1] = ("%s gateway 2 (gwprobe) 'bad': its notification type is ntjabber, and gwprobe delivers ntprobe"
                    % FAIL)
    else:
        probes.db.execute("UPDATE gateway SET gateway_type = 1, notify_module = 'ntprobe' WHERE id = ?", (probes.bad,))
    done = doctor(probes, "gate/gwprobe", *args)
    assert done.status == status, done.text
    for expected in words:
        assert expected in done.text, (expected, done.text)
    assert b"wr0ng-Pa55" not in done.stdout and b"right" not in done.stdout


@pytest.mark.parametrize("module, args, words", [
    ("gate/gwprobe", ["--gate", "x1"], "doctor takes --gate with a gateway id (digits), not 'x1'"),
    ("gate/gwprobe", ["--connect=yes"], "The option --connect takes no value"),
    ("notify/ntprobe", ["--connect", "now"], "Unexpected argument 'now'"),
])
def test_bad_arguments_are_an_error_document(probes, module, args, words):
    done = probes.run(module, "--command", "doctor", *args)
    assert done.returncode == 2
    assert words in xmlio.text(xmlio.parse(done.stdout).find("error"), "msg")
