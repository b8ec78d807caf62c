"""gate/gwhttpsms against local stand-ins of SMS.ru, SMSC.ru, SMS Aero and MTS Exolve (tests/httpsms_servers.py),
run as BILLmanager runs it: each preset, and custom configurations equal to Exolve's and SMSC.ru's."""

from urllib.parse import quote_plus

import pytest

import sandbox as sandboxlib
from sandbox import assert_sent, error_of
from httpsms_servers import ExolveServer, SmsAeroServer, SmscServer, SmsRuServer
from mgrnotify import errors, httpsms, xmlio

MODULE = "gate/gwhttpsms"
API_KEY = "sk-live-4f9a2b7c1d"
LOGIN = "hoster"
EMAIL = "billing@hoster.example"
PASSWORD = "Pw& =%+ 7q"            # form encoding of credentials exercised too
SENDER = "BILLmgr"
PHONE = "+7 (912) 000-00-00"
DIGITS = "79120000000"
TEXT = "Счёт №5 & оплата = 100% + НДС\nспасибо 🙂"
SECRETS = (API_KEY, PASSWORD, "wrong-key-77")

CUSTOM_EXOLVE = {"preset": "custom", "method": "POST", "content_type": "json",
                 "headers": "Authorization: Bearer {api_key}",
                 "body": '{"number": "{sender}", "destination": "{phone}", "text": "{message}"}',
                 "success": r'"message_id"\s*:', "message_id": "message_id", "error_text": "error.message"}
CUSTOM_SMSC = {"preset": "custom", "method": "POST", "content_type": "form",
               "body": "login={login}&psw={password}&phones={phone}&mes={message}&sender={sender}&fmt=3"
                       "&charset=utf-8",
               "success": r'"cnt"\s*:', "message_id": "id", "error_text": "error"}

# preset -> (the stand-in, the settings naming it)
CASES = {
    "smsru": (lambda **kw: SmsRuServer(API_KEY, **kw),
              lambda s: {"preset": "smsru", "url": s.origin, "api_key": API_KEY, "sender": SENDER}),
    "smsc": (lambda **kw: SmscServer(LOGIN, PASSWORD, **kw),
             lambda s: {"preset": "smsc", "url": s.origin, "login": LOGIN, "password": PASSWORD, "sender": SENDER}),
    "smsaero": (lambda **kw: SmsAeroServer(EMAIL, API_KEY, **kw),
                lambda s: {"preset": "smsaero", "url": s.origin, "login": EMAIL, "api_key": API_KEY,
                           "sender": SENDER}),
    "exolve": (lambda **kw: ExolveServer(API_KEY, **kw),
               lambda s: {"preset": "exolve", "url": s.origin, "api_key": API_KEY, "sender": SENDER}),
    "custom-exolve": (lambda **kw: ExolveServer(API_KEY, **kw),
                      lambda s: dict(CUSTOM_EXOLVE, url=s.origin + "/messaging/v1/SendSMS", api_key=API_KEY,
                                     sender=SENDER)),
    "custom-smsc": (lambda **kw: SmscServer(LOGIN, PASSWORD, **kw),
                    lambda s: dict(CUSTOM_SMSC, url=s.origin + "/sys/send.php", login=LOGIN, password=PASSWORD,
                                   sender=SENDER,
                                   balance_url=s.origin + "/sys/balance.php?login={login}&psw={password}&fmt=3")),
}
SERVICE = {"smsru": "SMS.ru", "smsc": "SMSC.ru", "smsaero": "SMS Aero", "exolve": "MTS Exolve",
           "custom-exolve": "127.0.0.1", "custom-smsc": "127.0.0.1"}


@pytest.fixture(autouse=True)
def secrets():
    for secret in SECRETS:
        sandboxlib.remember_secret(secret)


def stand_in(case, **kwargs):
    """The running stand-in of ``case`` and its settings."""
    server = CASES[case][0](**kwargs).start()
    return server, CASES[case][1](server)


@pytest.fixture
def running():
    """running(case, **stand-in options) -> (server, settings); every server started is stopped at the end."""
    started = []

    def start(case, **kwargs):
        server, settings = stand_in(case, **kwargs)
        started.append(server)
        return server, settings
    yield start
    for server in started:
        server.stop()


def outgoing(sandbox, settings, message=TEXT, phone=PHONE, **changes):
    """Run ``outgoing`` with a request as ntsms builds it; ``changes`` to the settings (None drops one)."""
    settings = {k: v for k, v in dict(dict({"timeout": "5"}, **settings), **changes).items() if v is not None}
    request = sandboxlib.gateway_request(settings, message, user={"id": "5", "name": "client", "phone": phone},
                                         project={"id": "1", "name": "Provider"},
                                         gateway={"id": "4", "name": "sms", "gateway_module": "gwhttpsms",
                                                  "notify_module": "ntsms"})
    return sandbox.run(MODULE, "--command", "outgoing", input=request)


def check_connection(sandbox, settings, **changes):
    settings = {k: v for k, v in dict(dict({"timeout": "5"}, **settings), **changes).items() if v is not None}
    return sandbox.run(MODULE, "--command", "check_connection",
                       input=sandboxlib.check_connection_request(settings, form_fields=("preset", "api_key")))


def log_of(sandbox):
    return sandbox.logs().get("gwhttpsms.log", "")


# --- sending -----------------------------------------------------------------------------------------------

@pytest.mark.smoke
@pytest.mark.parametrize("case", sorted(CASES))
def test_send_reaches_the_provider_intact(sandbox, running, case):
    """The phone as people write it arrives as digits; a Cyrillic text with & = % +, a newline and an emoji
    arrives exactly; the answer's id is logged."""
    server, settings = running(case)
    assert_sent(outgoing(sandbox, settings))
    assert server.sent == [(DIGITS, TEXT, SENDER)]
    assert "accepted SMS id=" in log_of(sandbox)
    assert "Sending SMS to %s through %s from 'BILLmgr': 1 part (40 UCS-2 units)" % (DIGITS, SERVICE[case]) \
        in log_of(sandbox)


@pytest.mark.parametrize("case, method, path, content_type", [
    ("smsru", "POST", "/sms/send", "application/x-www-form-urlencoded"),
    ("smsc", "POST", "/sys/send.php", "application/x-www-form-urlencoded"),
    ("smsaero", "POST", "/v2/sms/send", "application/x-www-form-urlencoded"),
    ("exolve", "POST", "/messaging/v1/SendSMS", "application/json"),
    ("custom-exolve", "POST", "/messaging/v1/SendSMS", "application/json"),
    ("custom-smsc", "POST", "/sys/send.php", "application/x-www-form-urlencoded"),
])
def test_each_request_is_the_documented_one(sandbox, running, case, method, path, content_type):
    server, settings = running(case)
    assert_sent(outgoing(sandbox, settings))
    [request] = server.requests
    assert (request["method"], request["path"], request["content_type"]) == (method, path, content_type)


def test_smsru_fields_and_id(sandbox, running):
    server, settings = running("smsru")
    assert_sent(outgoing(sandbox, settings))
    fields = server.requests[0]["fields"]
    assert (fields["api_id"], fields["to"], fields["msg"], fields["from"], fields["json"]) == (
        API_KEY, DIGITS, TEXT, SENDER, "1")
    assert "SMS.ru accepted SMS id=000000-10000001 to %s" % DIGITS in log_of(sandbox)


def test_smsru_without_a_sender_sends_no_from(sandbox, running):
    server, settings = running("smsru")
    assert_sent(outgoing(sandbox, settings, sender=None))
    assert "from" not in server.requests[0]["fields"]


def test_smsc_names_the_sms_before_sending(sandbox, running):
    server, settings = running("smsc")
    assert_sent(outgoing(sandbox, settings))
    fields = server.requests[0]["fields"]
    assert (fields["fmt"], fields["charset"], fields["psw"]) == ("3", "utf-8", PASSWORD)
    assert "SEND id=%s to %s" % (fields["id"], DIGITS) in log_of(sandbox)
    assert "SMSC.ru accepted SMS id=%s to" % fields["id"] in log_of(sandbox)


def test_smsaero_authenticates_with_basic(sandbox, running):
    server, settings = running("smsaero")
    assert_sent(outgoing(sandbox, settings, sender=None))
    assert server.requests[0]["headers"]["Authorization"].startswith("Basic ")
    assert server.sent[0][2] == "SMS Aero"   # the shared free signature when no sender is set


# --- refusals: the provider's own reason in the error document (ntsms puts it in err_info) ----------------

@pytest.mark.parametrize("case, server_kw, change, phone, error_type, words", [
    ("smsru", {}, {"api_key": "wrong-key-77"}, PHONE, "connect",
     "SMS.ru refused the credentials (Неправильный api_id, code 200); check the api_key setting"),
    ("smsru", {"money": 0}, {}, PHONE, "send",
     "SMS.ru refused the SMS to 79120000000: Не хватает средств на лицевом счету (code 201); top up the SMS.ru"),
    ("smsru", {"senders": {"Other"}}, {}, PHONE, "send", "Имя отправителя не согласовано с администрацией (code 204)"),
    ("smsru", {}, {}, "12345", "send", "Неправильно указан номер телефона получателя, либо на него нет маршрута "
                                       "(code 202); check the user's phone number"),
    ("smsru", {"no_route": {DIGITS}}, {}, PHONE, "send",
     "На этот номер нет маршрута для доставки сообщений (code 207)"),
    ("smsru", {"refuse": 230}, {}, PHONE, "send", "Превышен общий лимит количества сообщений на этот номер в день "
                                                  "(code 230)"),
    ("smsru", {"refuse": 220}, {}, PHONE, "send", "(code 220); try again later"),
    ("smsc", {}, {"password": "wrong-key-77"}, PHONE, "connect",
     "SMSC.ru refused the credentials (authorise error, code 2); check the login and password, and that this "
     "server's IP address is allowed"),
    ("smsc", {"money": 0}, {}, PHONE, "send", "SMSC.ru refused the SMS to 79120000000: no money (code 3); top up"),
    ("smsc", {"senders": {"Other"}}, {}, PHONE, "send", "message is denied (code 6); check the sender setting"),
    ("smsc", {}, {}, "12345", "send", "invalid phone (code 7); check the user's phone number"),
    ("smsc", {"no_route": {DIGITS}}, {}, PHONE, "send", "cannot deliver (code 8)"),
    ("smsc", {"refuse": 9}, {}, PHONE, "send", "duplicate request, wait a minute (code 9); the SMS may already have "
                                               "gone"),
    ("smsc", {"refuse": 4}, {}, PHONE, "connect", "SMSC.ru refused the credentials (ip is blocked, code 4)"),
    ("smsaero", {}, {"api_key": "wrong-key-77"}, PHONE, "connect",
     "SMS Aero refused the credentials (Your request was made with invalid credentials., HTTP 401); check the "
     "login and api_key settings"),
    ("smsaero", {}, {}, "12345", "send", "SMS Aero refused the SMS to 12345: Validation error. (number: incorrect) "
                                         "(HTTP 400)"),
    ("smsaero", {"senders": {"Other"}}, {}, PHONE, "send", "Validation error. (sign: incorrect)"),
    ("smsaero", {"money": 0}, {}, PHONE, "send", "SMS Aero refused the SMS to 79120000000: Not enough money on the "
                                                 "balance."),
    ("exolve", {}, {"api_key": "wrong-key-77"}, PHONE, "connect",
     "MTS Exolve refused the credentials (Unauthorized (invalid API key), code 401); check the api_key setting"),
    ("exolve", {}, {}, "12345", "send", "MTS Exolve refused the SMS to 12345: Bad Request (destination: invalid "
                                        "number) (code 400)"),
    ("exolve", {"senders": {"Other"}}, {}, PHONE, "send", "Bad Request (number: not found) (code 400)"),
    ("exolve", {"money": 0}, {}, PHONE, "send", "Payment Required (insufficient funds) (code 402)"),
    ("custom-exolve", {}, {"api_key": "wrong-key-77"}, PHONE, "connect",
     "127.0.0.1 refused the credentials (Unauthorized, HTTP 401)"),
    ("custom-exolve", {"money": 0}, {}, PHONE, "send", "refused the SMS to 79120000000: Payment Required (HTTP 402)"),
    ("custom-smsc", {"money": 0}, {}, PHONE, "send", "refused the SMS to 79120000000: no money"),
])
def test_refusals_carry_the_providers_reason(sandbox, running, case, server_kw, change, phone, error_type, words):
    refuse = server_kw.pop("refuse", None)
    server, settings = running(case, **server_kw)
    server.refuse = refuse
    done = outgoing(sandbox, settings, phone=phone, **change)
    assert done.returncode == errors.EXIT_FAILURE
    kind, sentence = error_of(done)
    assert (kind, words) == (error_type, words) and words in sentence, sentence
    assert words in log_of(sandbox)
    assert server.sent == [] and len(server.requests) == 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_http_500(sandbox, running, case):
    server, settings = running(case)
    server.behaviour = "http500"
    kind, sentence = error_of(outgoing(sandbox, settings))
    assert kind == "connect" and "answered HTTP 500 Internal Server Error at http://127.0.0.1:" in sentence


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_answer_not_of_the_api_is_unreadable(sandbox, running, case):
    server, settings = running(case)
    server.behaviour = "garbage"
    kind, sentence = error_of(outgoing(sandbox, settings))
    assert kind == "connect"
    assert "answered something other than its API's answer ('<html><body>Welcome to nginx!</body></html>')" \
        in sentence


def test_smsru_answer_without_json_is_unreadable(sandbox, running):
    """Without json=1 SMS.ru answers plain text, which the gateway must not take for a success."""
    server, settings = running("smsru")
    done = outgoing(sandbox, dict(CUSTOM_SMSC, url=server.origin + "/sms/send", login=LOGIN, password=PASSWORD,
                                  body="api_id={api_key}&to={phone}&msg={message}", success="status=OK",
                                  api_key=API_KEY, error_text="status_text"))
    kind, sentence = error_of(done)
    assert kind == "connect" and "answered something other than its API's answer ('100 000000-10000001" in sentence


@pytest.mark.parametrize("case", sorted(CASES))
def test_silence_past_the_timeout_may_have_been_sent(sandbox, running, case):
    server, settings = running(case)
    server.behaviour = "hang"
    done = outgoing(sandbox, dict(settings, timeout="1"))
    kind, sentence = error_of(done)
    assert kind == "connect"
    assert "accepted the request but did not answer within 1 s; the SMS may still have been sent" in sentence
    if case == "smsc":
        assert "look for id %s in SMSC.ru's statistics" % server.requests[0]["fields"]["id"] in sentence
    else:
        assert "for an SMS to %s at 20" % DIGITS in sentence


# --- checked before anything is sent ---------------------------------------------------------------------

@pytest.mark.parametrize("case, change, obj, words", [
    ("smsru", {"api_key": None}, "api_key", "The gateway setting 'api_key' is empty and SMS.ru needs it"),
    ("smsc", {"password": None}, "password", "The gateway setting 'password' is empty and SMSC.ru needs it"),
    ("smsaero", {"login": None}, "login", "The gateway setting 'login' is empty and SMS Aero needs it"),
    ("exolve", {"sender": None}, "sender", "The gateway setting 'sender' is empty and MTS Exolve needs it"),
    ("smsru", {"preset": "twilio"}, "preset", "must be one of smsru, smsc, smsaero, exolve, custom"),
    ("smsru", {"url": "ftp://example.org"}, "url", "is not an http:// or https:// address"),
    ("smsru", {"max_parts": "0"}, "max_parts", "must be between 1 and 100"),
    ("custom-exolve", {"success": None}, "success", "The gateway setting 'success' is empty"),
    ("custom-exolve", {"method": "PUT"}, "method", "must be one of POST, GET"),
    ("custom-exolve", {"content_type": "xml"}, "content_type", "must be one of form, query, json"),
    ("custom-exolve", {"headers": "Authorization Bearer"}, "headers", "is not 'Name: value'"),
    ("custom-exolve", {"success": "re:(unclosed"}, "success", "neither path=value nor a regular expression"),
    ("custom-exolve", {"headers": "X-Text: {message}"}, "headers", "would carry a line break"),
])
def test_refused_before_sending(sandbox, running, case, change, obj, words):
    server, settings = running(case)
    done = outgoing(sandbox, settings, **change)
    node = xmlio.parse(done.stdout).find("error")
    assert node is not None, done.stdout
    assert (node.get("type"), node.get("object")) == ("value", obj)
    assert words in xmlio.text(node, "msg")
    assert server.requests == []


def test_max_parts(sandbox, running):
    server, settings = running("smsru")
    kind, sentence = error_of(outgoing(sandbox, settings, message="я" * 71, max_parts="1"))
    assert kind == "send" and "is 2 parts long (71 UCS-2 units) and max_parts allows 1" in sentence
    assert server.requests == []


# --- escaping in the custom mode ---------------------------------------------------------------------------

def test_custom_query_get_escapes_the_url(sandbox, running):
    server, settings = running("smsc")
    settings = dict(settings, preset="custom", method="GET", content_type="query", success='"cnt"',
                    url=server.origin + "/sys/send.php?login={login}&psw={password}&phones={phone}&mes={message}"
                                        "&fmt=3&charset=utf-8", message_id="id", error_text="error")
    assert_sent(outgoing(sandbox, settings))
    assert server.requests[0]["method"] == "GET" and server.requests[0]["body"] == b""
    assert server.sent == [(DIGITS, TEXT, None)]


def test_custom_json_escapes_quotes_and_backslashes(sandbox, running):
    server, settings = running("custom-exolve")
    text = 'He said "pay" \\ now\t}'
    assert_sent(outgoing(sandbox, settings, message=text))
    assert server.requests[0]["json"]["text"] == text


# --- check_connection and formtune -----------------------------------------------------------------------

@pytest.mark.parametrize("case, logged", [
    ("smsru", "SMS.ru balance: 100.0"),
    ("smsc", "SMSC.ru balance: 100.00"),
    ("smsaero", "SMS Aero balance: 100.0"),
    ("exolve", "MTS Exolve balance: 100.0"),
    ("custom-smsc", "127.0.0.1 balance: '{\"balance\": \"100.00\"}'"),
])
def test_check_connection_logs_the_balance(sandbox, running, case, logged):
    server, settings = running(case)
    done = check_connection(sandbox, settings)
    assert done.returncode == 0, done.stdout + done.stderr
    assert xmlio.parse(done.stdout).find("metadata/form") is not None
    assert logged in log_of(sandbox)
    assert server.sent == []


def test_check_connection_without_a_balance_url(sandbox, running):
    server, settings = running("custom-exolve")
    assert check_connection(sandbox, settings).returncode == 0
    assert "No balance_url: the settings are checked" in log_of(sandbox)
    assert server.requests == []


@pytest.mark.parametrize("case, words", [
    ("smsru", "SMS.ru refused the credentials (Неправильный api_id, code 200)"),
    ("smsc", "SMSC.ru refused the credentials (authorise error, code 2)"),
    ("smsaero", "SMS Aero refused the credentials"),
    ("exolve", "MTS Exolve refused the credentials (Unauthorized"),
])
def test_check_connection_wrong_credentials(sandbox, running, case, words):
    server, settings = running(case)
    change = {"password": "wrong-key-77"} if case == "smsc" else {"api_key": "wrong-key-77"}
    kind, sentence = error_of(check_connection(sandbox, settings, **change))
    assert kind == "connect" and words in sentence


def test_formtune_fills_the_choices_and_defaults(sandbox):
    fields = [xmlio.element("field", attrs={"name": n}) for n in ("preset", "api_key")]
    done = sandbox.run(MODULE, "--command", "formtune",
                       input=xmlio.document(xmlio.element("metadata", children=[xmlio.element("form",
                                                                                               children=fields)])))
    assert done.returncode == 0, done.stdout
    root = xmlio.parse(done.stdout)
    assert [m.text for m in root.findall("slist[@name='preset']/msg")] == ["smsru", "smsc", "smsaero", "exolve",
                                                                          "custom"]
    assert (root.findtext("preset"), root.findtext("timeout"), root.findtext("verify_tls")) == ("smsru", "15", "on")


# --- no credential anywhere, even at debug level 9 ---------------------------------------------------------

def test_credentials_never_logged_even_at_debug_level(sandbox, running):
    sandbox.set_log_level(9)
    runs = []
    for case in sorted(CASES):
        server, settings = running(case)
        runs.append(outgoing(sandbox, settings))
        runs.append(check_connection(sandbox, settings))
        bad = "password" if case in ("smsc", "custom-smsc") else "api_key"
        runs.append(outgoing(sandbox, settings, **{bad: "wrong-key-77"}))
        server.behaviour = "hang"
        runs.append(outgoing(sandbox, dict(settings, timeout="1")))
    log = log_of(sandbox)
    assert "DEBUG POST http://127.0.0.1:" in log and "Authorization" in log
    texts = [str(r.stdout, "utf-8", "replace") + str(r.stderr, "utf-8", "replace") for r in runs] + [log]
    import base64
    basic = base64.b64encode(("%s:%s" % (EMAIL, API_KEY)).encode()).decode()
    for secret in SECRETS + (basic,):
        for form in {secret, xmlio.escape(secret), quote_plus(secret)}:
            assert not [t for t in texts if form in t], "a secret leaked: %r" % form


@pytest.mark.parametrize("case, verify_tls, sent", [("exolve", None, False), ("exolve", "off", True),
                                                    ("smsc", None, False)])
def test_tls_verification(sandbox, tmp_path, monkeypatch, case, verify_tls, sent):
    """A self-signed stand-in is refused for its certificate unless verify_tls is off."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = CASES[case][0](tls_folder=str(tmp_path)).start()
    try:
        done = outgoing(sandbox, CASES[case][1](server), verify_tls=verify_tls)
    finally:
        server.stop()
    if sent:
        assert_sent(done)
        assert server.sent == [(DIGITS, TEXT, SENDER)]
    else:
        kind, sentence = error_of(done)
        assert kind == "connect" and "The TLS certificate of %s at https://127.0.0.1:" % SERVICE[case] in sentence
        assert server.requests == []


# --- the library's pieces --------------------------------------------------------------------------------

@pytest.mark.parametrize("where, expected", [
    ("url", "%D0%AF%20%26%20%3D%20%25%20%2B%0A%22%5C"),
    ("form", "%D0%AF+%26+%3D+%25+%2B%0A%22%5C"),
    ("json", '\\u042f & = % +\\n\\"\\\\'),   # ASCII-only JSON: what the redactor remembers too
    ("header", 'Я & = % +\n"\\'),
])
def test_placeholders_are_escaped_for_where_they_stand(where, expected):
    assert httpsms.fill("{message}", {"message": 'Я & = % +\n"\\'}, where) == expected


def test_unknown_braces_stay():
    assert httpsms.fill('{"to": "{phone}", "x": {other}}', {"phone": "7"}, "json") == '{"to": "7", "x": {other}}'


@pytest.mark.parametrize("rule, expected", [
    ("status=OK", ("status", "OK", None)),
    ("data.0.id=5", ("data.0.id", "5", None)),
    ("success=true", ("success", "true", None)),
    (r'"cnt"\s*:', (None, None, r'"cnt"\s*:')),
    ("re:status=OK", (None, None, "status=OK")),
])
def test_success_rules(rule, expected):
    path, value, pattern = httpsms.parse_success(rule)
    assert (path, value, pattern.pattern if pattern else None) == expected


@pytest.mark.parametrize("path, found", [
    ("a.b", 1), ("list.1.id", "y"), ("a.c", KeyError), ("list.5", KeyError), ("a.b.c", KeyError),
])
def test_json_path(path, found):
    document = {"a": {"b": 1}, "list": [{"id": "x"}, {"id": "y"}]}
    if found is KeyError:
        with pytest.raises(KeyError):
            httpsms.json_path(document, path)
    else:
        assert httpsms.json_path(document, path) == found
