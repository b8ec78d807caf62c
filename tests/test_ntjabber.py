"""notify/ntjabber end to end: queued notifications through gate/gwjabber to a real Prosody, and replies
from Jabber into tickets -- every module run as BILLmanager runs it, in the sandbox."""

import itertools
import os
import signal
import socket
import subprocess
import time

import pytest

import prosody as prosodylib
import sandbox as sandboxlib
from localnet import DelayProxy
from mgrnotify import xmpp

prosody = prosodylib.prosody
_numbers = itertools.count(1)

XSLT = ('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" '
        'xmlns:mgr="http://ispsystem.com/xslplugin"><xsl:output method="text"/>'
        '<xsl:template match="/">Здравствуйте, {user.realname}! Услуга <xsl:value-of select="doc/item/name"/> '
        'истекает <xsl:value-of select="mgr:dateformat(doc/item/expiredate, \'%d.%m.%Y\')"/>.'
        '</xsl:template></xsl:stylesheet>')
EJS = "<%= project.name %>: счёт №<%= invoice.id %> на <%= invoice.amount %> ₽ ({project.name})"


def account(server, prefix):
    number = next(_numbers)
    password = "pw-%s-%d-пароль" % (prefix, number)
    sandboxlib.remember_secret(password)
    return server.register("%s%d" % (prefix, number), password), password


def notice(project, **parts):
    body = "".join("<%s>%s</%s>" % (k, v, k) for k, v in parts.items())
    return "<doc><project><id>%s</id><name>Хостинг Плюс</name></project>%s</doc>" % (project, body)


def read_messages(server, jid, password, window=1, count=100):
    with xmpp.XMPPClient(jid, host="127.0.0.1", port=server.port, cafile=server.cert, timeout=5) as client:
        client.connect()
        client.login(password)
        return [(xmpp.bare_jid(s), body, subject) for s, body, subject in client.receive(window, count)]


@pytest.fixture
def jabber(sandbox, prosody, monkeypatch):
    """A provider with an outgoing gwjabber gateway on Prosody, and a client with a Jabber account."""
    monkeypatch.setenv("SSL_CERT_FILE", prosody.cert)   # the modules trust the test server's certificate
    box = sandbox
    box.prosody = prosody
    box.project = box.add_project("Хостинг Плюс")
    box.gw_jid, box.gw_password = account(prosody, "gw")
    box.alice_jid, box.alice_password = account(prosody, "alice")
    box.gateway = box.add_gateway("gwjabber", "ntjabber", prosody.settings(box.gw_jid, box.gw_password),
                                  project=box.project)
    box.alice = {"id": "1", "name": "alice", "realname": "Алиса", "jabber": box.alice_jid}
    return box


def tasks(box):
    return box.db.query("SELECT id, filename, error_count, err_info FROM notifytask ORDER BY id")


@pytest.mark.smoke
def test_xslt_and_ejs_notifications_arrive_and_leave_the_queue(jabber):
    first = jabber.enqueue("ntjabber", XSLT, notice(jabber.project, subject="Срок услуги",
                                                    item="<name>vds-7</name><expiredate>2026-12-01</expiredate>"),
                           jabber.alice)
    jabber.enqueue("ntjabber", EJS, notice(jabber.project, invoice="<id>42</id><amount>1 500</amount>"),
                   jabber.alice, templatesubject="Новый счёт")
    files = [jabber.path(t["filename"]) for t in tasks(jabber)]
    done = jabber.run("notify/ntjabber", "--command", "process")
    assert done.returncode == 0, done.stdout
    assert tasks(jabber) == [] and not any(os.path.exists(f) for f in files)
    got = read_messages(jabber.prosody, jabber.alice_jid, jabber.alice_password)
    assert got == [
        (jabber.gw_jid, "Здравствуйте, Алиса! Услуга vds-7 истекает 01.12.2026.", "Срок услуги"),
        (jabber.gw_jid, "Хостинг Плюс: счёт №42 на 1 500 ₽ (Хостинг Плюс)", "Новый счёт"),
    ]
    assert first


def _dead_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _broken_gateway(box, kind):
    """Settings for a second provider's gateway that fails in the way ``kind`` names."""
    settings = box.prosody.settings(box.gw_jid, box.gw_password)
    if kind == "wrong password":
        settings["password"] = "wr0ng-pass-word"
        sandboxlib.remember_secret(settings["password"])
    elif kind == "server down":
        settings["port"] = str(_dead_port())
    elif kind == "TLS failure":
        settings["tls"] = "direct"   # a TLS handshake against the plain STARTTLS port
    return settings


@pytest.mark.parametrize("kind, words", [
    ("wrong password", "refused the login"),
    ("server down", "Connection refused"),
    ("TLS failure", "TLS"),
    ("no gateway", "No active outgoing gateway of ntjabber for provider"),
    ("broken template", "The EJS template failed at line 1: nothing is not defined"),
])
def test_failures_leave_the_task_queued_and_the_others_go(jabber, kind, words):
    other = jabber.add_project("Другой провайдер")
    if kind not in ("no gateway", "broken template"):
        jabber.add_gateway("gwjabber", "ntjabber", _broken_gateway(jabber, kind), project=other)
    template = "<%= nothing.here %>" if kind == "broken template" else "Для второго провайдера"
    failing = jabber.enqueue("ntjabber", template,
                             notice(jabber.project if kind == "broken template" else other), jabber.alice)
    good = jabber.enqueue("ntjabber", "Всё хорошо", notice(jabber.project), jabber.alice)
    done = jabber.run("notify/ntjabber", "--command", "process")
    assert done.returncode == 0, done.stdout
    left = tasks(jabber)
    assert [int(t["id"]) for t in left] == [failing] and good != failing
    assert left[0]["error_count"] == "1"
    assert words in left[0]["err_info"], left[0]["err_info"]
    assert [m[1] for m in read_messages(jabber.prosody, jabber.alice_jid, jabber.alice_password)] == ["Всё хорошо"]


def test_a_bounced_recipient_fails_alone(jabber):
    nobody = dict(jabber.alice, jabber="nobody-here@localhost")
    bounced = jabber.enqueue("ntjabber", "в никуда", notice(jabber.project), nobody)
    jabber.enqueue("ntjabber", "дошло", notice(jabber.project), jabber.alice)
    assert jabber.run("notify/ntjabber", "--command", "process").returncode == 0
    left = tasks(jabber)
    assert [int(t["id"]) for t in left] == [bounced]
    assert "nobody-here@localhost" in left[0]["err_info"] or "service-unavailable" in left[0]["err_info"]
    assert [m[1] for m in read_messages(jabber.prosody, jabber.alice_jid, jabber.alice_password)] == ["дошло"]


def test_one_xmpp_session_for_the_whole_run(jabber):
    jabber.enqueue_many([dict(modulename="ntjabber", template="сообщение %d" % i, notice_xml=notice(jabber.project),
                              user=jabber.alice) for i in range(30)])
    assert jabber.run("notify/ntjabber", "--command", "process").returncode == 0
    assert tasks(jabber) == []
    log = jabber.logs()["gwjabber.log"]
    assert log.count("Logged in to the XMPP server") == 1
    assert len(read_messages(jabber.prosody, jabber.alice_jid, jabber.alice_password)) == 30


def gateway_window():
    """gwjabber's WINDOW: the most messages on their way at once."""
    from mgrnotify.jabbergateway import WINDOW
    return WINDOW


def journal_entries(box):
    try:
        with open(box.path("var", "ntjabber.journal"), encoding="utf-8") as f:
            return sum(1 for line in f if line.endswith("\n"))
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("after", [1, 40, 97])
def test_sigkill_mid_window_loses_nothing_and_repeats_at_most_the_window(jabber, after):
    """The server is 40 ms away (a delaying proxy), so a window of messages is always on its way. The run is
    SIGKILLed once ``after`` results are journalled; the next run sends the rest. Every notice arrives, and
    at most a window's worth of them twice (README, "Killed mid-run" and "Pipelined, within a window")."""
    window = gateway_window()
    bodies = ["далеко %03d" % i for i in range(150)]
    with DelayProxy(("127.0.0.1", jabber.prosody.port), 0.020) as proxy:
        far = jabber.add_project("Далёкий провайдер")
        jabber.add_gateway("gwjabber", "ntjabber", jabber.prosody.settings(jabber.gw_jid, jabber.gw_password,
                                                                           port=str(proxy.port), timeout="10"),
                           project=far)
        jabber.enqueue_many([dict(modulename="ntjabber", template=body, notice_xml=notice(far), user=jabber.alice)
                             for body in bodies])
        run = subprocess.Popen(jabber.command("notify/ntjabber", "--command", "process"), cwd=jabber.root,
                               env=jabber.env(), stdout=subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while journal_entries(jabber) < after:
                assert run.poll() is None, "the run ended before %d results were journalled" % after
                assert time.time() < deadline
                time.sleep(0.002)
        finally:
            run.send_signal(signal.SIGKILL)
            run.wait()
        killed_at = journal_entries(jabber)
        assert killed_at < len(bodies), "the kill came after the run had finished"
        time.sleep(0.5)   # what the killed gateway had on the wire reaches the server
        done = jabber.run("notify/ntjabber", "--command", "process", timeout=120)
    assert done.returncode == 0, done.stdout
    assert tasks(jabber) == []
    got = [body for _, body, _ in read_messages(jabber.prosody, jabber.alice_jid, jabber.alice_password, 2, 1000)]
    assert sorted(set(got)) == bodies, "no notice lost"
    twice = {body: got.count(body) for body in set(got) if got.count(body) > 1}
    assert set(twice.values()) <= {2} and len(twice) <= window, (killed_at, twice)


# --- replies into tickets ---------------------------------------------------------------------------------

@pytest.fixture
def desk(jabber):
    box = jabber
    box.in_jid, box.in_password = account(box.prosody, "support")
    box.ingoing = box.add_gateway("gwjabber", "ntjabber",
                                  box.prosody.settings(box.in_jid, box.in_password, ticket_format="#id",
                                                       receive_window="2"),
                                  project=box.project, gateway_type=2)
    box.bob_jid, box.bob_password = account(box.prosody, "bob")
    box.mallory_jid, box.mallory_password = account(box.prosody, "mallory")
    _, alice_account = box.add_user("alice", jabber=box.alice_jid)
    _, bob_account = box.add_user("bob", jabber=box.bob_jid)
    box.ticket = box.add_ticket(alice_account)
    box.foreign = box.add_ticket(bob_account)
    return box


def say(box, jid, password, text):
    with xmpp.XMPPClient(jid, host="127.0.0.1", port=box.prosody.port, cafile=box.prosody.cert, timeout=5) as c:
        c.connect()
        c.login(password)
        c.send(box.in_jid, text)
        c.ping()


@pytest.mark.smoke
def test_replies_go_into_tickets_and_strangers_get_answers(desk):
    say(desk, desk.alice_jid, desk.alice_password, "#%d Спасибо, сервер снова работает" % desk.ticket)
    say(desk, desk.mallory_jid, desk.mallory_password, "#%d дайте доступ" % desk.ticket)
    say(desk, desk.alice_jid, desk.alice_password, "#%d чужой запрос" % desk.foreign)
    done = desk.run("notify/ntjabber", "--command", "getmessage", "--gate", "all")
    assert done.returncode == 0, done.stdout
    assert desk.mgrctl_calls() == [{"options": {"-m": "billmgr", "-o": "xml"}, "func": "clientticket.edit",
                                    "params": {"elid": str(desk.ticket), "su": "alice", "sok": "ok",
                                               "message": "Спасибо, сервер снова работает"}}]
    to_mallory = read_messages(desk.prosody, desk.mallory_jid, desk.mallory_password)
    assert len(to_mallory) == 1 and "not linked to any account" in to_mallory[0][1]
    assert to_mallory[0][0] == desk.in_jid
    to_alice = read_messages(desk.prosody, desk.alice_jid, desk.alice_password)
    assert len(to_alice) == 1 and "Ticket #%d is not among your tickets" % desk.foreign in to_alice[0][1]
