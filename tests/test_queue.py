"""The notification queue of a notify module (notify/ntjabber), against the real database, with a gateway
that delivers into a file (tests/stand-ins/gwrecord)."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

import sandbox as sandboxlib

from mgrnotify import notification, xmlio

XSLT = ('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        '<xsl:output method="text"/><xsl:template match="/">'
        '<xsl:value-of select="doc/project/name"/>: сервер <xsl:value-of select="doc/item/name"/> '
        'истекает {user.realname}</xsl:template></xsl:stylesheet>')
EJS = "<%= project.name %>: <% item.forEach(function(i) { %>[<%= i.name %>]<% }) %> {project.name} {user.nope}"


def notice(project, subject="Срок услуги", items=("vds1",)):
    return ("<doc><project><id>%s</id><name>Хостинг &amp; Co</name></project><subject>%s</subject>%s</doc>"
            % (project, subject, "".join("<item><name>%s</name></item>" % i for i in items)))


@pytest.fixture
def queue(sandbox):
    sandbox.install("gwrecord")
    sandbox.project = sandbox.add_project("Хостинг & Co")
    sandbox.gateway = sandbox.add_gateway("gwrecord", "ntjabber", {"jabber": "bot@localhost", "password": "pw-q"},
                                          project=sandbox.project)
    sandbox.user = {"id": "1", "name": "alice", "realname": "Алиса", "jabber": "alice@localhost"}
    return sandbox


def delivered(box):
    return box.json_lines("var", "gwrecord.delivered")


def tasks(box):
    return box.db.query("SELECT id, filename, error_count, err_info FROM notifytask ORDER BY id")


def process(box, timeout=120):
    done = box.run("notify/ntjabber", "--command", "process", timeout=timeout)
    assert b"Traceback" not in done.stdout
    return done


@pytest.mark.smoke
def test_xslt_and_ejs_with_macros_are_delivered_and_removed(queue):
    first = queue.enqueue("ntjabber", XSLT, notice(queue.project), queue.user)
    second = queue.enqueue("ntjabber", EJS, notice(queue.project, items=("a", "b&lt;c")), queue.user, absolute=True)
    files = [queue.path(r["filename"]) if not r["filename"].startswith("/") else r["filename"] for r in tasks(queue)]
    done = process(queue)
    assert done.returncode == 0, done.stdout
    assert delivered(queue)[0]["body"] == "Хостинг & Co: сервер vds1 истекает Алиса"
    assert delivered(queue)[1]["body"] == "Хостинг &amp; Co: [a][b&lt;c] Хостинг & Co {user.nope}"
    assert [d["subject"] for d in delivered(queue)] == ["Срок услуги"] * 2
    assert [d["to"] for d in delivered(queue)] == ["alice@localhost"] * 2
    assert tasks(queue) == []
    assert not any(os.path.exists(f) for f in files)
    assert first < second


@pytest.mark.parametrize("batch", [True, False], ids=["outgoing_batch", "one call per message"])
def test_failures_stay_queued_and_the_rest_of_the_batch_goes(queue, batch):
    if not batch:
        open(queue.path("var", "gwrecord.nobatch"), "w").close()
    user = queue.user
    ok1 = queue.enqueue("ntjabber", "first", notice(queue.project), user)
    refused = queue.enqueue("ntjabber", "fail", notice(queue.project), user)
    crash = queue.enqueue("ntjabber", "crash", notice(queue.project), user)
    no_gateway = queue.enqueue("ntjabber", "x", notice(queue.project + 100), user)
    broken = queue.enqueue("ntjabber", "<% if (x) { %>", notice(queue.project), user)
    missing = queue.enqueue("ntjabber", "x", notice(queue.project), user)
    os.unlink(queue.path(tasks(queue)[-1]["filename"]))
    ok2 = queue.enqueue("ntjabber", "last", notice(queue.project), user)
    done = process(queue)
    assert done.returncode == 0, done.stdout
    assert [d["body"] for d in delivered(queue)] == ["first", "last"]
    left = {int(r["id"]): r for r in tasks(queue)}
    assert sorted(left) == [refused, crash, no_gateway, broken, missing]
    assert all(r["error_count"] == "1" for r in left.values())
    assert left[refused]["err_info"] == "The recorder refused the message to alice@localhost"
    assert "internal error (RuntimeError)" in left[crash]["err_info"] or "internal error" in left[crash]["err_info"]
    assert left[no_gateway]["err_info"] == "No active outgoing gateway of ntjabber for provider %d" % (
        queue.project + 100)
    assert left[broken]["err_info"].startswith("The EJS template does not compile (Unexpected token")
    assert "does not exist" in left[missing]["err_info"]
    assert ok1 not in left and ok2 not in left


def test_priority_order_and_small_batches(queue):
    ids = [queue.enqueue("ntjabber", "p%d" % p, notice(queue.project), queue.user, priority=p) for p in (1, 5, 3)]
    done = process(queue)
    assert done.returncode == 0
    assert [d["body"] for d in delivered(queue)] == ["p5", "p3", "p1"]
    assert ids


def test_empty_contact_or_body_is_done_without_sending(queue):
    queue.enqueue("ntjabber", "text", notice(queue.project), dict(queue.user, jabber=""))
    queue.enqueue("ntjabber", "  ", notice(queue.project), queue.user)
    assert process(queue).returncode == 0
    assert delivered(queue) == [] and tasks(queue) == []


def test_do_nothing_sends_only_forced_tasks(queue):
    open(queue.path("etc", "billmgr.DoNothing"), "w").close()
    queue.enqueue("ntjabber", "held", notice(queue.project), queue.user)
    queue.enqueue("ntjabber", "forced", notice(queue.project), queue.user, forcedonothing="on")
    assert process(queue).returncode == 0
    assert [d["body"] for d in delivered(queue)] == ["forced"]
    assert [r["error_count"] for r in tasks(queue)] == ["0"]


def test_a_task_past_the_error_limit_waits_for_staff(queue):
    task = queue.enqueue("ntjabber", "late", notice(queue.project), queue.user)
    queue.db.execute("UPDATE notifytask SET error_count = 10 WHERE id = ?", (task,))
    assert process(queue).returncode == 0
    assert delivered(queue) == [] and tasks(queue)[0]["error_count"] == "10"


def multi_notice_file(box, *notices):
    """Queue one task whose file holds a <notify> per (template, user) in ``notices``; (task id, file path)."""
    from xml.etree.ElementTree import Element
    task = box.enqueue("ntjabber", notices[0][0], notice(box.project), notices[0][1])
    path = box.path(tasks(box)[-1]["filename"])
    root = Element("doc")
    root.extend(xmlio.parse(sandboxlib.notification_file(template, notice(box.project), user)).find("notify")
                for template, user in notices)
    with open(path, "w", encoding="utf-8") as f:
        f.write(xmlio.serialize(root))
    return task, path


def pending_in(path):
    """The templates of the notices of a file not yet marked delivered."""
    with open(path, encoding="utf-8") as f:
        root = xmlio.parse(f.read())
    return [xmlio.text(n, "tmpl") for n in root.findall("notify") if not n.get(notification.DELIVERED)]


def test_several_notifies_in_one_file_partial_delivery_is_not_repeated(queue):
    task, path = multi_notice_file(queue, ("one", queue.user), ("fail", queue.user), ("three", queue.user))
    assert process(queue).returncode == 0
    assert [d["body"] for d in delivered(queue)] == ["one", "three"]
    assert tasks(queue)[0]["error_count"] == "1"
    assert pending_in(path) == ["fail"]
    assert process(queue).returncode == 0
    assert [d["body"] for d in delivered(queue)] == ["one", "three"]
    assert tasks(queue)[0]["error_count"] == "2" and pending_in(path) == ["fail"]
    assert task


def test_a_partial_delivery_replayed_loses_no_notice(queue):
    """Issue 11, defect 2: the batch's database update fails after a partial delivery, and the journal is applied
    again by the next run; the undelivered notice must stay in the file, and its failure count once."""
    task, path = multi_notice_file(queue, ("one", queue.user), ("fail", queue.user), ("three", queue.user))
    queue.fail_database_after(DB_CALLS_BEFORE_COMMIT)
    done = process(queue)
    assert done.returncode == 1 and b"Lost connection" in done.stdout
    assert [d["body"] for d in delivered(queue)] == ["one", "three"]
    assert os.path.exists(queue.path("var", "ntjabber.journal"))
    queue.fail_database_after(None)
    assert process(queue).returncode == 0
    assert pending_in(path) == ["fail"]
    left = tasks(queue)
    assert [int(t["id"]) for t in left] == [task]
    assert left[0]["err_info"] == "The recorder refused the message to alice@localhost"
    assert left[0]["error_count"] == "2", "one failure from the replayed journal, one from the second run's own try"
    assert [d["body"] for d in delivered(queue)] == ["one", "three"]


def test_a_rewritten_notification_file_keeps_its_mode_and_owner(queue):
    """Issue 11, defect 6: notification files hold personal data; a partial delivery must not open them up."""
    task, path = multi_notice_file(queue, ("one", queue.user), ("fail", queue.user))
    os.chmod(path, 0o600)
    owner = (12345, 12346) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    if os.geteuid() == 0:
        os.chown(path, *owner)
    assert process(queue).returncode == 0
    assert pending_in(path) == ["fail"]
    status = os.stat(path)
    assert oct(status.st_mode & 0o777) == oct(0o600)
    assert (status.st_uid, status.st_gid) == owner
    assert not os.path.exists(path + ".partial") and task


@pytest.mark.parametrize("body, words", [
    ("garbage", "answered with something that is not a result: 'this is not XML'"),
    ("exit", "stopped (exit status 9) before reporting this message"),
])
def test_gateway_misbehaving(queue, body, words):
    queue.enqueue("ntjabber", body, notice(queue.project), queue.user)
    queue.enqueue("ntjabber", "after", notice(queue.project), queue.user)
    assert process(queue).returncode == 0
    left = tasks(queue)
    assert len(left) >= 1 and words in left[0]["err_info"]


def test_missing_gateway_module(queue):
    queue.db.execute("UPDATE gateway SET gateway_module = 'gwnowhere'")
    queue.enqueue("ntjabber", "x", notice(queue.project), queue.user)
    assert process(queue).returncode == 0
    assert "gwnowhere is not installed" in tasks(queue)[0]["err_info"]


def test_two_runs_at_once_never_send_twice(queue):
    queue.enqueue_many([dict(modulename="ntjabber", template="m%d" % i, notice_xml=notice(queue.project),
                             user=queue.user) for i in range(300)])
    runs = [subprocess.Popen(queue.command("notify/ntjabber", "--command", "process"), cwd=queue.root,
                             env=queue.env(), stdout=subprocess.PIPE) for _ in range(3)]
    for run in runs:
        assert run.wait(120) == 0
    bodies = [d["body"] for d in delivered(queue)]
    assert sorted(bodies) == sorted("m%d" % i for i in range(300))
    assert tasks(queue) == []


EMPTY_XSLT = ('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
              '<xsl:output method="text"/><xsl:template match="/"> </xsl:template></xsl:stylesheet>')


def test_nothing_to_send_counts_as_delivered_and_the_log_says_why(queue):
    # README, "Nothing to send": no address, or a text that renders empty, is done without sending
    no_address = queue.enqueue("ntjabber", "Счёт готов", notice(queue.project), dict(queue.user, jabber=" "))
    empty = queue.enqueue("ntjabber", EMPTY_XSLT, notice(queue.project), queue.user)
    files = [queue.path(r["filename"]) for r in tasks(queue)]
    assert process(queue).returncode == 0
    assert tasks(queue) == [] and delivered(queue) == []
    assert not any(os.path.exists(f) for f in files)
    log = queue.logs()["ntjabber.log"]
    assert "INFO Task %d: user alice has no jabber; nothing to send" % no_address in log
    assert "INFO Task %d: the rendered text is empty; nothing to send" % empty in log


# --- getmessage: replies into tickets ------------------------------------------------------------------------

@pytest.fixture
def desk(queue):
    queue.ingoing = queue.add_gateway("gwrecord", "ntjabber", {"jabber": "bot@localhost", "password": "pw-q",
                                                               "ticket_format": "#id"},
                                      project=queue.project, gateway_type=2, active="ON")
    queue.alice, queue.alice_account = queue.add_user("alice", jabber="alice@localhost")
    queue.bob, queue.bob_account = queue.add_user("bob", jabber="bob@localhost")
    queue.ticket = queue.add_ticket(queue.alice_account)
    queue.foreign = queue.add_ticket(queue.bob_account)
    return queue


def inbox(box, *messages):
    with open(box.path("var", "gwrecord.inbox"), "w", encoding="utf-8") as f:
        for sender, text in messages:
            f.write(json.dumps({"from": sender, "text": text}, ensure_ascii=False) + "\n")


@pytest.mark.parametrize("gate", ["all", "own id"])
def test_reply_goes_into_the_ticket(desk, gate):
    inbox(desk, ("Alice@localhost/phone", "#%d  Спасибо, всё работает\nвторая строка" % desk.ticket))
    done = desk.run("notify/ntjabber", "--command", "getmessage", "--gate",
                    "all" if gate == "all" else str(desk.ingoing))
    assert done.returncode == 0, done.stdout
    assert desk.mgrctl_calls() == [{"options": {"-m": "billmgr", "-o": "xml"}, "func": "clientticket.edit",
                                    "params": {"elid": str(desk.ticket), "su": "alice", "sok": "ok",
                                               "message": "Спасибо, всё работает\nвторая строка"}}]
    assert delivered(desk) == []


@pytest.mark.parametrize("sender, text, reply", [
    ("mallory@localhost", "#{ticket} let me in", "is not linked to any account"),
    ("alice@localhost", "{ticket} no prefix", "Start your message with the ticket number, for example: #123"),
    ("alice@localhost", "#{ticket}", "Start your message with the ticket number"),
    ("alice@localhost", "#{foreign} not mine", "is not among your tickets"),
    ("alice@localhost", "#999999 unknown", "Ticket #999999 is not among your tickets"),
    ("alice@localhost", "#{foreign} OR 1=1 --", "is not among your tickets"),
    ("alice@localhost", "#0 OR 1=1", "Ticket #0 is not among your tickets"),
    ("alice@localhost", "#{ticket}abc glued", "Start your message with the ticket number"),
])
def test_bad_replies_get_an_answer_and_touch_no_ticket(desk, sender, text, reply):
    inbox(desk, (sender, text.format(ticket=desk.ticket, foreign=desk.foreign)))
    done = desk.run("notify/ntjabber", "--command", "getmessage", "--gate", "all")
    assert done.returncode == 0, done.stdout
    assert desk.mgrctl_calls() == []
    answers = delivered(desk)
    assert len(answers) == 1 and answers[0]["to"] == sender.split("/")[0].lower()
    assert reply in answers[0]["body"]


@pytest.mark.parametrize("sender", ["", "   "])
def test_a_message_without_a_sender_is_not_filed_as_a_user_with_no_address(desk, sender):
    # A user who never entered a Jabber address has the column empty; a message the gateway hands over with
    # no (or a blank) sender must not match that user and write into their ticket.
    _, nobody_account = desk.add_user("noaddress", jabber="")
    ticket = desk.add_ticket(nobody_account)
    inbox(desk, (sender, "#%d written by nobody" % ticket))
    done = desk.run("notify/ntjabber", "--command", "getmessage", "--gate", "all")
    assert done.returncode == 0, done.stdout
    assert desk.mgrctl_calls() == []
    assert delivered(desk) == []          # no address to answer
    assert "Message from unknown sender" in desk.logs()["ntjabber.log"]


def test_mgrctl_refusal_keeps_the_text_in_the_log(desk):
    desk.set_mgrctl_answer("clientticket.edit", "<doc><error type='access'><msg>Ticket closed</msg></error></doc>")
    inbox(desk, ("alice@localhost", "#%d keep me" % desk.ticket))
    assert desk.run("notify/ntjabber", "--command", "getmessage", "--gate", "all").returncode == 0
    assert "could not be added" in delivered(desk)[0]["body"]
    assert "its text: keep me" in desk.logs()["ntjabber.log"]


def test_unknown_ingoing_gateway_is_an_error(desk):
    done = desk.run("notify/ntjabber", "--command", "getmessage", "--gate", "9999")
    assert done.returncode == 1
    assert b"There is no active ingoing gateway 9999 of ntjabber" in done.stdout


@pytest.mark.parametrize("gate", ["all", "broken id"])
def test_a_gateway_that_fails_is_named_and_the_others_are_still_read(desk, gate):
    # errors.PartialFailure: getmessage's empty answer has no room for a failure, so any makes it exit 1
    broken = desk.add_gateway("gwnone", "ntjabber", {"jabber": "x@localhost"}, project=desk.project, gateway_type=2)
    inbox(desk, ("alice@localhost", "#%d filed all the same" % desk.ticket))
    done = desk.run("notify/ntjabber", "--command", "getmessage", "--gate", "all" if gate == "all" else str(broken))
    assert done.returncode == 1, done.stdout
    node = xmlio.parse(done.stdout).find("error")
    assert node.get("type") == "send"
    sentence = xmlio.text(node, "msg")
    assert sentence.startswith("gateway %d (gwnone): The gateway module gwnone is not installed" % broken)
    if gate == "all":
        assert sentence.endswith("; what went through: gateways read 1 of 2, messages filed or answered 1")
        assert [c["params"]["message"] for c in desk.mgrctl_calls()] == ["filed all the same"]
    else:
        assert sentence.endswith("; what went through: gateways read 0 of 1, messages filed or answered 0")
        assert desk.mgrctl_calls() == []


def test_every_failure_is_named(desk):
    desk.add_gateway("gwnone", "ntjabber", {}, project=desk.project, gateway_type=2)
    desk.add_gateway("gwgone", "ntjabber", {}, project=desk.project, gateway_type=2)
    done = desk.run("notify/ntjabber", "--command", "getmessage", "--gate", "all")
    assert done.returncode == 1
    sentence = xmlio.text(xmlio.parse(done.stdout).find("error"), "msg")
    assert sentence.startswith("2 failures: gateway ")
    assert "(gwnone): The gateway module gwnone" in sentence and "(gwgone): The gateway module gwgone" in sentence


# --- more faults --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [True, False], ids=["outgoing_batch", "one call per message"])
def test_a_hanging_gateway_is_stopped_after_its_timeout_and_the_rest_goes(queue, batch):
    if not batch:
        open(queue.path("var", "gwrecord.nobatch"), "w").close()
    queue.db.execute("UPDATE gateway SET xmlparams = ?",
                     (sandboxlib.xmlio.document(sandboxlib.xmlio.element("timeout", "1")),))
    queue.enqueue("ntjabber", "before", notice(queue.project), queue.user)
    hung = queue.enqueue("ntjabber", "hang", notice(queue.project), queue.user)
    queue.enqueue("ntjabber", "after", notice(queue.project), queue.user)
    done = process(queue)
    assert done.returncode == 0
    assert [d["body"] for d in delivered(queue)] == ["before", "after"]
    left = tasks(queue)
    assert [int(t["id"]) for t in left] == [hung]
    assert "within 1" in left[0]["err_info"] and "was stopped" in left[0]["err_info"]


@pytest.mark.parametrize("body", ["exit", "garbage"])
def test_a_gateway_dying_on_one_message_costs_only_that_message(queue, body):
    queue.enqueue("ntjabber", "first", notice(queue.project), queue.user)
    culprit = queue.enqueue("ntjabber", body, notice(queue.project), queue.user)
    queue.enqueue("ntjabber", "third", notice(queue.project), queue.user)
    assert process(queue).returncode == 0
    assert [d["body"] for d in delivered(queue)] == ["first", "third"]
    assert [int(t["id"]) for t in tasks(queue)] == [culprit]


@pytest.mark.parametrize("content", [b"", b"   ", b"not xml at all", b"<doc><notify>", b"<doc/>",
                                     b"<!DOCTYPE doc [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><doc>&x;</doc>",
                                     b"\xff\xfe<doc/>"])
def test_a_bad_notification_file_is_a_readable_failure(queue, content):
    bad = queue.enqueue("ntjabber", "x", notice(queue.project), queue.user)
    with open(queue.path(tasks(queue)[0]["filename"]), "wb") as f:
        f.write(content)
    queue.enqueue("ntjabber", "good", notice(queue.project), queue.user)
    assert process(queue).returncode == 0
    assert [d["body"] for d in delivered(queue)] == ["good"]
    left = tasks(queue)
    assert [int(t["id"]) for t in left] == [bad]
    assert "notification file" in left[0]["err_info"] and "root:" not in left[0]["err_info"]


def test_the_database_going_away_mid_run_loses_nothing(queue):
    """The mysql client fails from its 4th call on (as when the server goes away); the next run, with the
    database back, finishes the job: every notification delivered exactly once."""
    queue.enqueue_many([dict(modulename="ntjabber", template="d%d" % i, notice_xml=notice(queue.project),
                             user=queue.user) for i in range(250)])
    queue.fail_database_after(4)
    done = process(queue)
    assert done.returncode == 1
    assert b"Lost connection" in done.stdout
    first = [d["body"] for d in delivered(queue)]
    assert 0 < len(first) < 250
    queue.fail_database_after(None)
    assert process(queue).returncode == 0
    bodies = [d["body"] for d in delivered(queue)]
    assert sorted(bodies) == sorted("d%d" % i for i in range(250))
    assert tasks(queue) == []


def test_the_database_down_at_start_is_a_readable_error(queue):
    queue.enqueue("ntjabber", "x", notice(queue.project), queue.user)
    queue.fail_database_after(0)
    done = process(queue)
    assert done.returncode == 1
    assert b"Cannot reach the database server" in done.stdout
    queue.fail_database_after(None)
    assert len(tasks(queue)) == 1 and delivered(queue) == []


# --- issue 11: the corners of the queue -----------------------------------------------------------------------

# The modules' database calls in a run before the batch's update: the gateways, the batch, err_info's column.
DB_CALLS_BEFORE_COMMIT = 3


def test_a_template_printing_to_stdout_never_lends_its_text_to_another_notice(queue):
    """Issue 11, defect 1: EJS templates share one node process per run; one that prints must not shift the
    answers, or bob receives alice's text."""
    users = [dict(queue.user, name=name, jabber="%s@localhost" % name) for name in ("alice", "bob", "carol", "dave")]
    templates = ['<% console.log("debug line") %>for <%= who %>', '<% process.stdout.write("{") %>for <%= who %>',
                 "for <%= who %>", '<% console.error("to stderr") %>for <%= who %>']
    for template, user in zip(templates, users):
        queue.enqueue("ntjabber", template, notice(queue.project).replace("</doc>", "<who>%s</who></doc>"
                                                                          % user["name"]), user)
    assert process(queue).returncode == 0
    assert sorted((d["to"], d["body"]) for d in delivered(queue)) == [
        ("%s@localhost" % u["name"], "for %s" % u["name"]) for u in users]
    assert tasks(queue) == []
    assert "debug line" in queue.logs()["ntjabber.log"]


RUNAWAY_XSLT = ('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
                '<xsl:output method="text"/><xsl:template match="/"><xsl:call-template name="r">'
                '<xsl:with-param name="n" select="60"/></xsl:call-template></xsl:template>'
                '<xsl:template name="r"><xsl:param name="n"/><xsl:if test="$n &gt; 0">'
                '<xsl:call-template name="r"><xsl:with-param name="n" select="$n - 1"/></xsl:call-template>'
                '<xsl:call-template name="r"><xsl:with-param name="n" select="$n - 1"/></xsl:call-template>'
                '</xsl:if></xsl:template></xsl:stylesheet>')
RUNAWAY_EJS = "<% while (true) {} %>"


@pytest.mark.parametrize("template, engine", [(RUNAWAY_XSLT, "XSLT"), (RUNAWAY_EJS, "EJS")])
def test_a_runaway_template_costs_only_its_own_task(queue, template, engine):
    """Issue 11, defect 4: a template that never ends is stopped at its deadline; the rest of the queue goes."""
    queue.enqueue("ntjabber", "before", notice(queue.project), queue.user)
    runaway = queue.enqueue("ntjabber", template, notice(queue.project), queue.user)
    queue.enqueue("ntjabber", "<%= 'after' %>", notice(queue.project), queue.user)
    env = dict(queue.env(), MGRNOTIFY_TEMPLATE_TIMEOUT="1")
    done = subprocess.run(queue.command("notify/ntjabber", "--command", "process"), cwd=queue.root, env=env,
                          stdout=subprocess.PIPE, timeout=60)
    assert done.returncode == 0, done.stdout
    assert [d["body"] for d in delivered(queue)] == ["before", "after"]
    left = tasks(queue)
    assert [int(t["id"]) for t in left] == [runaway]
    assert left[0]["err_info"].startswith("The %s template ran past 1 s and was stopped" % engine)


def children_of(pid):
    """The pids of the processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid):
            found.append(int(entry))
    return found


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("template", [RUNAWAY_XSLT, RUNAWAY_EJS], ids=["XSLT", "EJS"])
def test_a_killed_run_leaves_no_renderer_behind(queue, template):
    """Issue 11, defect 4: a run killed while a template spins takes its renderer with it."""
    queue.enqueue("ntjabber", template, notice(queue.project), queue.user)
    run = subprocess.Popen(queue.command("notify/ntjabber", "--command", "process"), cwd=queue.root,
                           env=queue.env(), stdout=subprocess.DEVNULL)
    renderers = []
    deadline = time.time() + 30
    while not renderers and time.time() < deadline:
        time.sleep(0.1)
        renderers = [pid for pid in children_of(run.pid)
                     if b"node" in _cmdline(pid) or b"xslt" in _cmdline(pid)]
    assert renderers, "the run must have started a renderer"
    time.sleep(0.5)
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.time() + 10
    while any(alive(pid) for pid in renderers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in renderers)


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read()
    except OSError:
        return b""


def narrow_err_info(box, charset, column="TEXT"):
    box.mariadb.admin("ALTER TABLE %s.notifytask CONVERT TO CHARACTER SET %s; ALTER TABLE %s.notifytask MODIFY "
                      "err_info %s NULL" % (box.db_name, charset, box.db_name, column))
    assert "STRICT_TRANS_TABLES" in box.db.query("SELECT @@sql_mode AS m")[0]["m"]


@pytest.mark.parametrize("charset, column, jabber, expected", [
    ("utf8mb4", "TEXT", "алиса😀@localhost", "The recorder refused the message to алиса😀@localhost"),
    ("utf8mb3", "TEXT", "алиса😀@localhost", "The recorder refused the message to алиса\ufffd@localhost"),
    ("latin1", "TEXT", "алиса😀é@localhost", "The recorder refused the message to ??????é@localhost"),
    ("utf8mb4", "VARCHAR(20)", "alice@localhost", "The recorder refu..."),
    ("utf8mb3", "VARCHAR(30)", "😀" * 40 + "@localhost", "The recorder refused the me..."),
])
def test_err_info_fits_the_column_whatever_its_charset(queue, charset, column, jabber, expected):
    """Issue 11, defect 3: a reason the column cannot hold (an emoji in utf8mb3, Cyrillic in latin1, too long)
    is made to fit, so the update goes through and the queue moves on."""
    narrow_err_info(queue, charset, column)
    failing = queue.enqueue("ntjabber", "fail", notice(queue.project), dict(queue.user, jabber=jabber))
    queue.enqueue("ntjabber", "good", notice(queue.project), queue.user)
    for run in (1, 2):
        done = process(queue)
        assert done.returncode == 0, done.stdout
        left = tasks(queue)
        assert [int(t["id"]) for t in left] == [failing]
        assert left[0]["error_count"] == str(run) and left[0]["err_info"] == expected
    assert [d["body"] for d in delivered(queue)] == ["good"]
    assert not os.path.exists(queue.path("var", "ntjabber.journal"))


def refuse_in_trigger(box, statement, task):
    """A trigger that makes the database refuse ``statement`` (UPDATE or DELETE) on one task's row."""
    box.mariadb.admin("USE %s;\nDELIMITER //\nCREATE TRIGGER refuse_%s BEFORE %s ON notifytask FOR EACH ROW "
                      "IF OLD.id = %d THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by a trigger'; "
                      "END IF//\nDELIMITER ;\n" % (box.db_name, statement.lower(), statement, task))


def test_a_refused_update_is_set_aside_and_the_queue_goes_on(queue):
    refused = queue.enqueue("ntjabber", "fail", notice(queue.project), queue.user)
    other = queue.enqueue("ntjabber", "fail", notice(queue.project), queue.user)
    queue.enqueue("ntjabber", "good", notice(queue.project), queue.user)
    refuse_in_trigger(queue, "UPDATE", refused)
    for _ in (1, 2):
        assert process(queue).returncode == 0
    counts = {int(t["id"]): t["error_count"] for t in tasks(queue)}
    assert counts == {refused: "0", other: "2"}
    assert [d["body"] for d in delivered(queue)] == ["good"]
    with open(queue.path("var", "ntjabber.journal.rejected"), encoding="utf-8") as f:
        rejected = [json.loads(line) for line in f]
    assert {r["task"] for r in rejected} == {str(refused)}
    assert "refused by a trigger" in queue.logs()["ntjabber.log"]


def test_a_refused_delete_is_not_sent_again(queue):
    task, path = multi_notice_file(queue, ("one", queue.user), ("two", queue.user))
    queue.enqueue("ntjabber", "good", notice(queue.project), queue.user)
    refuse_in_trigger(queue, "DELETE", task)
    for _ in (1, 2):
        assert process(queue).returncode == 0
    assert sorted(d["body"] for d in delivered(queue)) == ["good", "one", "two"]
    assert [int(t["id"]) for t in tasks(queue)] == [task] and pending_in(path) == []
    queue.mariadb.admin("DROP TRIGGER %s.refuse_delete" % queue.db_name)
    assert process(queue).returncode == 0
    assert tasks(queue) == [] and not os.path.exists(path)
    assert len(delivered(queue)) == 3


def test_a_batch_gateway_gone_mid_batch_costs_at_most_its_message(queue):
    """Issue 11, defect 5: a gateway that stops listening (the acknowledgement pipe closed) is a failed
    gateway, never an internal error of the run."""
    queue.enqueue("ntjabber", "noack", notice(queue.project), queue.user)
    queue.enqueue("ntjabber", "next", notice(queue.project), queue.user)
    queue.enqueue("ntjabber", "last", notice(queue.project), queue.user)
    done = process(queue)
    assert done.returncode == 0, done.stdout
    assert process(queue).returncode == 0
    assert sorted(d["body"] for d in delivered(queue)) == ["last", "next", "noack"]
    assert tasks(queue) == []


def test_queue_queries_stay_small_however_long_the_run(queue):
    """Issue 11, defect 5: each batch query used to carry every task id seen so far."""
    queue.db.execute("UPDATE gateway SET active = 'off'")
    queue.enqueue_many([dict(modulename="ntjabber", template="x", notice_xml=notice(queue.project),
                             user=queue.user) for _ in range(450)])
    queue.mariadb.admin("SET GLOBAL log_output = 'TABLE'; TRUNCATE mysql.general_log; SET GLOBAL general_log = 1")
    try:
        assert process(queue).returncode == 0
    finally:
        queue.mariadb.admin("SET GLOBAL general_log = 0")
    logged = queue.mariadb.admin("SELECT LENGTH(argument) FROM mysql.general_log WHERE user_host LIKE '%s%%' AND "
                                 "argument LIKE 'SELECT id, filename%%'" % queue.db_user).stdout.split()
    lengths = [int(n) for n in logged[1:]]
    assert len(lengths) == 6, "five batches of 100 and the empty one that ends the run"
    assert max(lengths) - min(lengths[1:]) < 10 and max(lengths) < 400, lengths   # the first has no cursor
    assert all(t["error_count"] == "1" for t in tasks(queue))


# --- kills of planted bugs (issue 15): the error count, the batch size, the journal under SIGKILL ----------

def test_each_failed_run_adds_one_to_the_error_count(queue):
    """A task refused on every run counts 1, 2, 3: a count stuck at 1 would retry it forever, never reaching staff."""
    task = queue.enqueue("ntjabber", "fail", notice(queue.project), queue.user)
    for expected in ("1", "2", "3"):
        assert process(queue).returncode == 0
        assert [(int(t["id"]), t["error_count"]) for t in tasks(queue)] == [(task, expected)]


def test_batches_hold_at_most_the_batch_size(queue):
    from mgrnotify.queue import BATCH_SIZE
    queue.enqueue_many([dict(modulename="ntjabber", template="b%d" % i, notice_xml=notice(queue.project),
                             user=queue.user) for i in range(2 * BATCH_SIZE + 5)])
    assert process(queue).returncode == 0
    sizes = [int(n) for n in re.findall(r"Batch of (\d+) tasks", queue.logs()["ntjabber.log"])]
    assert sizes == [BATCH_SIZE, BATCH_SIZE, 5]
    assert len(delivered(queue)) == 2 * BATCH_SIZE + 5 and tasks(queue) == []


def test_a_journal_applied_twice_counts_its_failure_once(queue):
    """A run killed after its journal reached the database but before it removed the journal leaves it for the
    next run, which applies it again: the failure in it must still count once (1, then 2 for that next run's
    own failure), or a task reaches staff after fewer tries than MAX_ERRORS promises."""
    task = queue.enqueue("ntjabber", "fail", notice(queue.project), queue.user)
    assert process(queue).returncode == 0
    row = tasks(queue)[0]
    assert row["error_count"] == "1" and not os.path.exists(queue.path("var", "ntjabber.journal"))
    with open(queue.path("var", "ntjabber.journal"), "w", encoding="utf-8") as f:   # that run's journal, back
        f.write(json.dumps({"task": str(task), "index": 0, "total": 1, "file": row["filename"], "count": 0,
                            "reason": row["err_info"]}) + "\n")
    assert process(queue).returncode == 0
    assert "Applied an interrupted run's journal: 0 delivered, 1 failed" in queue.logs()["ntjabber.log"]
    assert [(int(t["id"]), t["error_count"]) for t in tasks(queue)] == [(task, "2")]


KILL_TASKS = 150   # a batch of 100 and part of the next


def wait_for_pause(box, run, timeout=60):
    """The gwrecord pause marker ({"pid", "body"}), once the gateway has paused; fails if the run ends first."""
    marker = box.path("var", "gwrecord.paused")
    deadline = time.time() + timeout
    while not os.path.exists(marker):
        assert run.poll() is None, "the run ended before the gateway paused"
        assert time.time() < deadline, "the gateway did not pause within %d s" % timeout
        time.sleep(0.01)
    with open(marker, encoding="utf-8") as f:
        return json.loads(f.read())


@pytest.mark.parametrize("paused", [0, 1, 50, 99, 100],
                         ids=["first message", "second message", "mid-batch", "last of a batch", "between batches"])
def test_sigkill_at_a_chosen_message_loses_nothing_and_repeats_only_the_one_in_flight(queue, paused):
    """The run is killed while the gateway holds message ``paused`` delivered but not yet reported: every earlier
    one was acknowledged, so journalled. The next run sends the rest, and only that one message twice."""
    bodies = ["m%03d" % i for i in range(KILL_TASKS)]
    queue.enqueue_many([dict(modulename="ntjabber", template=body, notice_xml=notice(queue.project),
                             user=queue.user) for body in bodies])
    with open(queue.path("var", "gwrecord.faults"), "w", encoding="utf-8") as f:
        f.write(json.dumps({"match": bodies[paused], "do": "pause"}) + "\n")
    run = subprocess.Popen(queue.command("notify/ntjabber", "--command", "process"), cwd=queue.root,
                           env=queue.env(), stdout=subprocess.DEVNULL)
    try:
        marker = wait_for_pause(queue, run)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert marker["body"] == bodies[paused]
    assert [d["body"] for d in delivered(queue)] == bodies[:paused + 1]
    if alive(marker["pid"]):   # it dies with the run (PR_SET_PDEATHSIG); this only makes sure
        os.kill(marker["pid"], signal.SIGKILL)
    os.unlink(queue.path("var", "gwrecord.faults"))
    assert process(queue).returncode == 0
    sent = [d["body"] for d in delivered(queue)]
    assert sorted(set(sent)) == bodies, "no message lost"
    assert {body: sent.count(body) for body in set(sent) if sent.count(body) > 1} == {bodies[paused]: 2}
    assert tasks(queue) == []
    journalled = paused % 100   # the batch before a kill between batches is committed already
    if journalled:
        assert ("Applied an interrupted run's journal: %d delivered, 0 failed" % journalled
                in queue.logs()["ntjabber.log"])


@pytest.mark.parametrize("ticket_format, prefix, filed", [
    (None, "#", True), ("", "#", True), ("#id", "#", True), ("@id", "@", True),
    (None, "@", False), ("", "@", False), ("#id", "@", False), ("@id", "#", False),
], ids=lambda value: "absent" if value is None else repr(value) if isinstance(value, str) else None)
def test_a_reply_is_read_with_its_gateways_ticket_format(desk, ticket_format, prefix, filed):
    """A gateway's ticket_format (empty or absent: #id) decides the prefix a reply must start with."""
    params = {"jabber": "bot@localhost", "password": "pw-q"}
    if ticket_format is not None:
        params["ticket_format"] = ticket_format
    gate = desk.add_gateway("gwrecord", "ntjabber", params, project=desk.project, gateway_type=2, active="ON",
                            name="format")
    inbox(desk, ("alice@localhost", "%s%d thanks" % (prefix, desk.ticket)))
    done = desk.run("notify/ntjabber", "--command", "getmessage", "--gate", str(gate))
    assert done.returncode == 0, done.stdout
    calls = [(c["func"], c["params"]["elid"], c["params"]["message"]) for c in desk.mgrctl_calls()]
    answers = [d["body"] for d in delivered(desk)]
    if filed:
        assert (calls, answers) == ([("clientticket.edit", str(desk.ticket), "thanks")], [])
    else:
        expected = "%s123" % ("@" if ticket_format == "@id" else "#")
        assert calls == [] and len(answers) == 1 and "for example: %s your text" % expected in answers[0], answers
