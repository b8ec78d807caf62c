"""The notification queue of a notify module (notify/ntjabber), against the real database, with a gateway
that delivers into a file (tests/stand-ins/gwrecord)."""

import json
import os
import signal
import subprocess
import time

import pytest

import sandbox as sandboxlib

from mgrnotify import xmlio

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


def test_several_notifies_in_one_file_partial_delivery_is_not_repeated(queue):
    from sandbox import notification_file
    task = queue.enqueue("ntjabber", "one", notice(queue.project), queue.user)
    path = queue.path(tasks(queue)[0]["filename"])
    first = notification_file("one", notice(queue.project), queue.user)
    second = notification_file("fail", notice(queue.project), queue.user)
    third = notification_file("three", notice(queue.project), queue.user)
    notifies = [xmlio.parse(d).find("notify") for d in (first, second, third)]
    from xml.etree.ElementTree import Element
    root = Element("doc")
    root.extend(notifies)
    with open(path, "w", encoding="utf-8") as f:
        f.write(xmlio.serialize(root))
    assert process(queue).returncode == 0
    assert [d["body"] for d in delivered(queue)] == ["one", "three"]
    assert tasks(queue)[0]["error_count"] == "1"
    with open(path, encoding="utf-8") as f:
        kept = xmlio.parse(f.read())
    assert [xmlio.text(n, "tmpl") for n in kept.findall("notify")] == ["fail"]
    assert task


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


def test_sigkill_mid_batch_loses_nothing_and_repeats_at_most_one(queue):
    queue.enqueue_many([dict(modulename="ntjabber", template="k%d" % i, notice_xml=notice(queue.project),
                             user=queue.user) for i in range(400)])
    run = subprocess.Popen(queue.command("notify/ntjabber", "--command", "process"), cwd=queue.root,
                           env=queue.env(), stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(delivered(queue)) < 150 and time.time() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    sent_before = len(delivered(queue))
    assert 0 < sent_before < 400, "the kill must land mid-run"
    assert process(queue).returncode == 0
    bodies = [d["body"] for d in delivered(queue)]
    assert set(bodies) == {"k%d" % i for i in range(400)}
    assert len(bodies) - 400 <= 1, "at most the message in flight is sent twice"
    assert tasks(queue) == []


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
