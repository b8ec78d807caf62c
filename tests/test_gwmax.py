"""gate/gwmax run as BILLmanager runs it (a subprocess in the sandbox), against the MAX Bot API stand-in
(tests/max_server.py): sending, the batch over one connection, refusals, 429 waits, silence, TLS, and ingoing with
its marker, lock, contacts and bot starts."""

import os
import subprocess
import threading
import time

import pytest

import sandbox as sandboxlib
from max_server import MaxServer
from mgrnotify import maxapi, xmlio
from sandbox import assert_sent, batch_request, error_of

MODULE = "gate/gwmax"
TOKEN = "f9LHodD0cOJ5e1Zq-max-bot-token_7Qw"
WRONG = "wrong-max-token-0000"
USER = 123456789
TEXT = "Счёт №5 оплачен 🙂 & <спасибо> > 100%\nВторая строка"
GATEWAY_ROW = {"id": "7", "name": "max", "gateway_module": "gwmax", "notify_module": "ntmax"}


@pytest.fixture(autouse=True)
def secrets():
    for secret in (TOKEN, WRONG):
        sandboxlib.remember_secret(secret)


@pytest.fixture
def server():
    with MaxServer(TOKEN) as running:
        yield running


def settings_of(server, **changes):
    settings = {"token": TOKEN, "url": server.origin, "timeout": "5", "receive_window": "1"}
    settings.update(changes)
    return {k: v for k, v in settings.items() if v is not None}


def outgoing(sandbox, server, message=TEXT, to=str(USER), subject=None, request_contact=None, **changes):
    """``outgoing`` as ntmax calls it: the user's MAX id at the root as ``<max>``, the text in ``<message>``."""
    root = {"max": to}
    if subject is not None:
        root["subject"] = subject
    if request_contact is not None:
        root["request_contact"] = request_contact
    request = sandboxlib.gateway_request(settings_of(server, **changes), message, user={"id": "5", "name": "client"},
                                         project={"id": "1", "name": "Provider"}, gateway=GATEWAY_ROW, **root)
    return sandbox.run(MODULE, "--command", "outgoing", input=request)


def ingoing_request(server, **changes):
    return sandboxlib.gateway_request(settings_of(server, **changes), gateway=GATEWAY_ROW)


def ingoing(sandbox, server, **changes):
    """The messages of one ``ingoing`` run: [(text, attributes)]."""
    done = sandbox.run(MODULE, "--command", "ingoing", input=ingoing_request(server, **changes))
    assert done.returncode == 0, done.stdout + done.stderr
    return [(m.text or "", dict(m.attrib)) for m in xmlio.parse(done.stdout).findall("messages/message")]


def marker_file(sandbox):
    return sandbox.path("var", "gwmax-7.marker")


def log_of(sandbox):
    return sandbox.logs().get("gwmax.log", "")


# --- sending -----------------------------------------------------------------------------------------------

@pytest.mark.smoke
def test_text_arrives_exactly(sandbox, server):
    assert_sent(outgoing(sandbox, server))
    assert server.sent == [(USER, TEXT, None)]
    request = server.requests[0]
    assert (request["method"], request["path"], request["query"]) == ("POST", "/messages", {"user_id": str(USER)})
    assert request["headers"]["Authorization"] == TOKEN
    assert request["headers"]["Content-Type"].startswith("application/json")
    assert "MAX accepted the message to user %d: mid." % USER in log_of(sandbox)


def test_contact_under_user_is_taken_too(sandbox, server):
    request = sandboxlib.gateway_request(settings_of(server), "hi", user={"id": "5", "max": str(USER)},
                                         gateway=GATEWAY_ROW)
    assert_sent(sandbox.run(MODULE, "--command", "outgoing", input=request))
    assert server.sent == [(USER, "hi", None)]


@pytest.mark.parametrize("message, subject, expected", [
    (TEXT, "Счёт & оплата", (USER, "Счёт & оплата\n\n" + TEXT, None)),
    ("<p>Счёт <b>№5</b> &amp; ok</p>", "A & <B>", (USER, "<b>A &amp; &lt;B&gt;</b>\n<p>Счёт <b>№5</b> &amp; ok</p>",
                                                   "html")),
    ("<p>Без темы</p>", None, (USER, "<p>Без темы</p>", "html")),
    ("a <b> is not html", None, (USER, "a <b> is not html", None)),
])
def test_html_or_plain_with_the_subject_first(sandbox, server, message, subject, expected):
    assert_sent(outgoing(sandbox, server, message, subject=subject))
    assert server.sent == [expected]


def test_a_long_notice_goes_in_numbered_parts(sandbox, server):
    lines = ["Строка %04d: услуга продлена 🙂 & <ok>" % n for n in range(300)]
    text = "\n".join(lines)
    assert_sent(outgoing(sandbox, server, text))
    assert len(server.sent) == 3
    bodies = []
    for number, (user, part, markup) in enumerate(server.sent, 1):
        assert user == USER and markup is None and maxapi.size(part) <= 4000
        assert part.startswith("(%d/3) " % number)
        bodies.append(part[len("(1/3) "):])
    assert "\n".join(bodies).split("\n") == lines   # cut at line ends, nothing lost


@pytest.mark.parametrize("length", [1, 300])
def test_request_contact_puts_the_contact_button_under_the_last_part(sandbox, server, length):
    # ntmax's instructions to link ask for the user's own contact with a request_contact button (inline keyboard).
    text = "\n".join("Строка %04d: поделитесь контактом" % n for n in range(length))
    assert_sent(outgoing(sandbox, server, text, request_contact="Поделиться контактом / Share contact"))
    button = ("request_contact", "Поделиться контактом / Share contact")
    assert server.keyboards == [(USER, server.sent[-1][1], [[button]])]
    assert len(server.sent) == (1 if length == 1 else 3)


def test_no_button_without_request_contact(sandbox, server):
    assert_sent(outgoing(sandbox, server, request_contact=" "))
    assert server.keyboards == [] and len(server.sent) == 1


@pytest.mark.parametrize("to, obj, words", [
    ("", "max", "the user's MAX id (<max>) is empty"),
    ("@ivan", "max", "The recipient '@ivan' is not a MAX user id (digits)"),
])
def test_bad_recipient(sandbox, server, to, obj, words):
    done = outgoing(sandbox, server, to=to)
    node = xmlio.parse(done.stdout).find("error")
    assert (node.get("type"), node.get("object")) == ("xml", obj) and words in xmlio.text(node, "msg")
    assert server.requests == []


def test_empty_token_is_a_setting_error(sandbox, server):
    done = outgoing(sandbox, server, token=None)
    node = xmlio.parse(done.stdout).find("error")
    assert (node.get("type"), node.get("object")) == ("value", "token")
    assert server.requests == []


def test_outgoing_batch_over_one_connection(sandbox, server):
    messages = [(str(n), str(USER + n), "Тема %d" % n if n % 2 else "", "Текст %d & <x>" % n) for n in range(1, 6)]
    messages.append(("6", "not-an-id", "", "x"))
    done = sandbox.run(MODULE, "--command", "outgoing_batch", input=batch_request(settings_of(server), messages))
    assert done.returncode == 0, done.stdout + done.stderr
    results = [(r.get("id"), r.get("status")) for r in xmlio.parse(done.stdout).findall("results/result")]
    assert results == [(str(n), "ok") for n in range(1, 6)] + [("6", "error")]
    assert [(u, t) for u, t, _ in server.sent] == [
        (USER + n, ("Тема %d\n\n" % n if n % 2 else "") + "Текст %d & <x>" % n) for n in range(1, 6)]
    assert server.connections == 1


# --- refusals and waits ------------------------------------------------------------------------------------

def test_wrong_token(sandbox, server):
    done = outgoing(sandbox, server, token=WRONG)
    node = xmlio.parse(done.stdout).find("error")
    assert (node.get("type"), node.get("object")) == ("connect", "token")
    assert "MAX refused the bot token (HTTP 401, Invalid access_token (code verify.token)); check the token" \
        in xmlio.text(node, "msg")
    assert server.sent == []


@pytest.mark.parametrize("retry_after, least", [("1", 1.0), (None, maxapi.DEFAULT_WAIT)])
def test_429_with_a_short_wait_is_waited_out(sandbox, server, retry_after, least):
    server.rate_limit = (1, retry_after)
    started = time.monotonic()
    assert_sent(outgoing(sandbox, server))
    assert time.monotonic() - started >= least
    assert server.sent == [(USER, TEXT, None)] and len(server.requests) == 2
    assert "MAX asked to wait 1 s (HTTP 429) before POST /messages" in log_of(sandbox)


@pytest.mark.parametrize("retry_after", ["0", "-3", "nan", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_429_asking_for_no_wait_is_tried_three_times_at_most(sandbox, server, retry_after):
    server.rate_limit = (300, retry_after)
    kind, sentence = error_of(outgoing(sandbox, server))
    assert kind == "send" and "HTTP 429" in sentence and "(and 3 tries)" in sentence
    assert len(server.requests) == 3 and server.sent == []


def test_429_beyond_the_bound_fails_readably(sandbox, server):
    server.rate_limit = (1, "60")
    started = time.monotonic()
    kind, sentence = error_of(outgoing(sandbox, server))
    assert time.monotonic() - started < 30   # not a timing test: it did not wait the 60 s
    assert kind == "send"
    assert ("MAX refused POST /messages for too many requests (HTTP 429) and asked to wait 60 s, more than the 5 s "
            "(and 3 tries) the gateway waits; nothing was sent, and it is tried again on the next run") in sentence
    assert server.sent == []


def test_a_refusal_carries_maxs_reason(sandbox, server):
    kind, sentence = error_of(outgoing(sandbox, server, url=server.origin + "/v0"))
    assert kind == "send" and "MAX refused POST /messages: Path /v0/messages is not recognized (code not.found)" \
        in sentence


def test_silence_past_the_timeout_may_have_been_delivered(sandbox, server):
    server.behaviour = "hang"
    kind, sentence = error_of(outgoing(sandbox, server, timeout="1"))
    assert kind == "connect"
    assert ("MAX at %s/messages accepted the request but did not answer within 1 s; the message may still have "
            "been delivered: look in the bot's chat with MAX user %d before sending it again"
            % (server.origin, USER)) in sentence


@pytest.mark.parametrize("verify_tls, sent", [(None, False), ("off", True)])
def test_tls_verification(sandbox, tmp_path, monkeypatch, verify_tls, sent):
    """A self-signed stand-in is refused for its certificate unless verify_tls is off."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with MaxServer(TOKEN, tls_folder=str(tmp_path)) as server:
        done = outgoing(sandbox, server, verify_tls=verify_tls)
    if sent:
        assert_sent(done)
        assert server.sent == [(USER, TEXT, None)]
    else:
        kind, sentence = error_of(done)
        assert kind == "connect" and "The TLS certificate of MAX at https://127.0.0.1:" in sentence
        assert server.requests == []


# --- the other commands ------------------------------------------------------------------------------------

def test_check_connection_names_the_bot(sandbox, server):
    done = sandbox.run(MODULE, "--command", "check_connection",
                       input=sandboxlib.check_connection_request(settings_of(server), form_fields=("token", "url")))
    assert done.returncode == 0, done.stdout
    assert TOKEN.encode() not in done.stdout
    assert "The token belongs to the MAX bot 'Provider bot' (@provider_bot, user id 9000)" in log_of(sandbox)
    assert [(r["method"], r["path"]) for r in server.requests] == [("GET", "/me")]


def test_check_connection_wrong_token(sandbox, server):
    done = sandbox.run(MODULE, "--command", "check_connection", input=sandboxlib.check_connection_request(
        settings_of(server, token=WRONG), form_fields=("token", "url")))
    assert error_of(done)[0] == "connect"


def test_the_default_url_is_the_clients():
    from mgrnotify.maxgateway import Max
    assert Max.defaults["url"] == maxapi.DEFAULT_URL


def test_formtune_fills_the_choices_and_defaults(sandbox):
    fields = [xmlio.element("field", attrs={"name": n}) for n in ("token", "ticket_format")]
    form = xmlio.document(xmlio.element("metadata", children=[xmlio.element("form", children=fields)]))
    done = sandbox.run(MODULE, "--command", "formtune", input=form)
    assert done.returncode == 0, done.stdout
    root = xmlio.parse(done.stdout)
    assert [m.text for m in root.findall("slist[@name='ticket_format']/msg")] == ["#id", "@id"]
    assert (root.findtext("timeout"), root.findtext("verify_tls"), root.findtext("receive_window")) == ("15", "on", "5")


# --- ingoing -----------------------------------------------------------------------------------------------

@pytest.mark.smoke
def test_ingoing_hands_over_each_update_once_and_keeps_the_marker(sandbox, server):
    first = server.add_message(USER, "#12 Здравствуйте & <спасибо> 🙂")
    server.add_update({"update_type": "message_edited", "message": {}})   # of a type ingoing does not ask for
    assert ingoing(sandbox, server) == [("#12 Здравствуйте & <спасибо> 🙂", {
        "from": str(USER), "name": "Иван Петров", "event": "message", "id": first})]
    assert server.requests[0]["query"]["types"] == "message_created,bot_started"
    assert "marker" not in server.requests[0]["query"]
    with open(marker_file(sandbox)) as f:
        saved = f.read().strip()
    second = server.add_message(USER + 1, "второе", name="Anna")
    before = len(server.requests)
    assert ingoing(sandbox, server) == [("второе", {"from": str(USER + 1), "name": "Anna", "event": "message",
                                                    "id": second})]
    assert server.requests[before]["query"]["marker"] == saved
    assert ingoing(sandbox, server) == []


def test_a_failed_answer_leaves_the_marker(sandbox, server):
    """Stdout cannot be written (BILLmanager gone): the marker stays, and the next run hands the update over."""
    server.add_message(USER, "#5 ответ")
    assert ingoing(sandbox, server)
    with open(marker_file(sandbox)) as f:
        saved = f.read()
    mid = server.add_message(USER, "#5 ещё")
    assert unanswered_ingoing(sandbox, server) == 1
    assert "Cannot write the answer to stdout" in log_of(sandbox)
    with open(marker_file(sandbox)) as f:
        assert f.read() == saved
    assert [a["id"] for _, a in ingoing(sandbox, server)] == [mid]


def unanswered_ingoing(sandbox, server):
    """One ingoing run whose stdout cannot be written (BILLmanager gone); its exit status."""
    with open(os.devnull, "rb") as unwritable:   # a read-only descriptor: every write to it fails
        return subprocess.run(sandbox.command(MODULE, "--command", "ingoing"), input=ingoing_request(server).encode(),
                              stdout=unwritable, stderr=subprocess.PIPE, cwd=sandbox.root, env=sandbox.env(),
                              timeout=60).returncode


@pytest.mark.parametrize("waiting", [1, 150])
def test_a_first_run_that_fails_loses_nothing(sandbox, server, waiting):
    # No marker saved yet, and more waiting than one answer holds: the failed run must not have told MAX to take
    # any of them as done (the stand-in, like MAX, never gives a committed update again).
    mids = [server.add_message(USER, "#%d сообщение" % n) for n in range(waiting)]
    assert unanswered_ingoing(sandbox, server) == 1
    assert not os.path.exists(marker_file(sandbox))
    got = []
    while len(got) < waiting:
        batch = [a["id"] for _, a in ingoing(sandbox, server)]
        assert batch, "updates lost: %d of %d handed over" % (len(got), waiting)
        got += batch
    assert got == mids


def test_updates_of_odd_shapes_are_passed_over_and_never_hold_back_the_rest(sandbox, server):
    sender = {"user_id": USER, "name": "Иван"}
    for odd in ({"update_type": "message_created", "message": "text"},
                {"update_type": "message_created", "message": {"sender": sender, "recipient": "dialog",
                                                               "body": {"text": "a"}}},
                {"update_type": "message_created", "message": {"sender": sender, "body": {"attachments": 5}}},
                {"update_type": "message_created", "message": {"sender": sender, "body": {
                    "attachments": [{"type": "contact", "payload": "x"}]}}},
                {"update_type": "message_created", "message": {"sender": sender, "body": {
                    "attachments": [{"type": "contact", "payload": {"max_info": "x"}}]}}},
                {"update_type": "message_created", "message": {"sender": {"user_id": "٥"}, "body": {"text": "b"}}},
                {"update_type": "message_created", "message": {"sender": {"user_id": True}, "body": {"text": "c"}}},
                {"update_type": "message_created", "message": {"sender": dict(sender, is_bot=True),
                                                               "body": {"text": "from a bot"}}},
                {"update_type": "bot_started", "user": "x"}):
        server.add_update(odd)
    good = server.add_message(USER, "#5 дошло", attachments=[{"type": "contact", "payload": {
        "vcf_info": ["not", "text"], "max_info": {"user_id": USER}}}])
    got = ingoing(sandbox, server)
    assert [(t, a["id"], a.get("contact_user_id"), a.get("contact_phone")) for t, a in got] == [
        ("#5 дошло", good, str(USER), None)]
    assert ingoing(sandbox, server) == []   # the marker went past them all


def test_a_full_answer_of_long_messages_is_taken(sandbox, server):
    # 100 updates of 4,000 Cyrillic characters each forwarding as many: about 1.6 MB in one answer, which anyone
    # writing to the bot can cause; refusing it would hold every later message back.
    text = "Ж" * 4000
    for n in range(100):
        server.add_update({"update_type": "message_created", "message": {
            "sender": {"user_id": USER + n, "name": "Иван"}, "recipient": {"chat_type": "dialog"},
            "body": {"mid": "mid.%d" % n, "text": text},
            "link": {"type": "forward", "message": {"text": text}}}})
    got = ingoing(sandbox, server)
    assert len(got) == 100 and all(t == text for t, _ in got)


@pytest.mark.parametrize("token", ["abc\nsecret-tail-x1", "abc\tsecret-tail-x1", "токен-secret-tail-x1"])
def test_a_token_no_header_can_carry_is_refused_unechoed(sandbox, server, token):
    sandboxlib.remember_secret("secret-tail-x1")
    for done in (outgoing(sandbox, server, token=token), sandbox.run(
            MODULE, "--command", "ingoing", input=ingoing_request(server, token=token))):
        node = xmlio.parse(done.stdout).find("error")
        assert node.get("object") == "token" and "copy the bot's token again" in xmlio.text(node, "msg")
    assert server.requests == [] and "secret-tail-x1" not in log_of(sandbox)


def test_every_number_of_a_contact_is_handed_over(sandbox, server):
    contact = MaxServer.contact(USER, None)
    contact["payload"]["vcf_info"] = ("BEGIN:VCARD\rVERSION:3.0\rTEL;VALUE=uri:tel:+7-912-000-00-00;ext=1\r"
                                      "item1.TEL;type=CELL:+7 999\r 555 00 00\rEND:VCARD\r")
    server.add_message(USER, "", attachments=[contact])
    [(_, attributes)] = ingoing(sandbox, server)
    assert attributes["contact_phone"] == "+7-912-000-00-00, +7 999555 00 00"   # unfolded as RFC 6350 says


def test_contact_attachments_and_bot_starts(sandbox, server):
    with_both = server.add_message(USER, "", attachments=[MaxServer.contact(555, "+7 (999) 000-00-01")])
    only_vcf = server.add_message(USER, "мой номер", attachments=[MaxServer.contact(None, "+79990000002")])
    only_max = server.add_message(USER, "", attachments=[{"type": "image", "payload": {"url": "x"}},
                                                         MaxServer.contact(556)])
    server.add_bot_started(USER + 2, payload="link-abc", name="Пётр")
    server.add_bot_started(USER + 3)
    got = ingoing(sandbox, server)
    assert got == [
        ("", {"from": str(USER), "name": "Иван Петров", "event": "message", "id": with_both,
              "contact_user_id": "555", "contact_phone": "+7 (999) 000-00-01"}),
        ("мой номер", {"from": str(USER), "name": "Иван Петров", "event": "message", "id": only_vcf,
                       "contact_phone": "+79990000002"}),
        ("", {"from": str(USER), "name": "Иван Петров", "event": "message", "id": only_max,
              "contact_user_id": "556"}),
        ("link-abc", {"from": str(USER + 2), "name": "Пётр", "event": "bot_started", "id": ""}),
        ("", {"from": str(USER + 3), "name": "Иван Петров", "event": "bot_started", "id": ""}),
    ]


def test_messages_in_group_chats_are_not_handed_over(sandbox, server):
    # A group chat the bot is a member of: nothing there is written to the bot, nothing may be filed or answered.
    server.add_message(USER, "#12 в общем чате", chat_type="chat")
    server.add_message(USER, "", attachments=[MaxServer.contact(USER, "+79990000001")], chat_type="chat")
    dialog = server.add_message(USER, "#12 лично")
    assert [(t, a["id"]) for t, a in ingoing(sandbox, server)] == [("#12 лично", dialog)]


def test_ingoing_waits_for_what_comes_within_the_window(sandbox, server):
    threading.Timer(0.5, server.add_message, (USER, "#7 позже")).start()
    started = time.monotonic()
    got = ingoing(sandbox, server, receive_window="60")
    # Not a timing test: the bound only tells "answered once the message came" from "held the whole window".
    assert [t for t, _ in got] == ["#7 позже"] and time.monotonic() - started < 40


def test_two_runs_never_hand_over_the_same_update(sandbox, server):
    threading.Timer(0.8, server.add_message, (USER, "#9 один раз")).start()
    request = ingoing_request(server, receive_window="3").encode()
    runs = [subprocess.Popen(sandbox.command(MODULE, "--command", "ingoing"), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=sandbox.root, env=sandbox.env())]
    time.sleep(0.3)
    runs.append(subprocess.Popen(sandbox.command(MODULE, "--command", "ingoing"), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=sandbox.root, env=sandbox.env()))
    texts = []
    for run in runs:
        out, err = run.communicate(request, timeout=60)
        sandbox.outputs.append(("ingoing", out + err))
        assert run.returncode == 0, out + err
        texts += [m.text for m in xmlio.parse(out).findall("messages/message")]
    assert texts == ["#9 один раз"]


def test_ingoing_wrong_token(sandbox, server):
    done = sandbox.run(MODULE, "--command", "ingoing", input=ingoing_request(server, token=WRONG))
    assert error_of(done)[0] == "connect"
    assert not os.path.exists(marker_file(sandbox))


# --- the token never written, even at debug level 9 ----------------------------------------------------------

def test_token_never_logged_even_at_debug_level(sandbox, server):
    sandbox.set_log_level(9)
    server.add_message(USER, "#1 hi")
    runs = [outgoing(sandbox, server), outgoing(sandbox, server, token=WRONG),
            sandbox.run(MODULE, "--command", "ingoing", input=ingoing_request(server)),
            sandbox.run(MODULE, "--command", "check_connection",
                        input=sandboxlib.check_connection_request(settings_of(server), form_fields=("token",)))]
    server.behaviour = "hang"
    runs.append(outgoing(sandbox, server, timeout="1"))
    log = log_of(sandbox)
    assert "DEBUG POST %s/messages?user_id=%d, headers" % (server.origin, USER) in log and "Authorization" in log
    for text in [r.stdout + r.stderr for r in runs] + [log.encode("utf-8")]:
        for secret in (TOKEN, WRONG):
            assert secret.encode() not in text
