"""gate/gwepochta against a local ePochta stand-in (tests/epochta_server.py), run as BILLmanager runs it."""

import os
import ssl
import subprocess
import xml.etree.ElementTree as ET
from urllib.parse import quote_plus

import pytest

import sandbox as sandboxlib
from sandbox import assert_sent, error_of
from epochta_server import TRICKLE_BYTES, Account, EpochtaServer
from localnet import free_port
from mgrnotify import epochta, errors, sms, tls, xmlio

MODULE = "gate/gwepochta"
LOGIN = "hoster"
PASSWORD = "Ep0chta-pw&<x>]]>+7 q"
PUBLIC_KEY = "pub4f1e2d"
PRIVATE_KEY = "priv-9a8b7c6d5e"
SENDER = "BILLmgr"
PHONE = "+380 (97) 292-00.00"
DIGITS = "380972920000"


@pytest.fixture(scope="module")
def tls_folder(tmp_path_factory):
    """One self-signed certificate for the module's HTTPS servers."""
    return str(tmp_path_factory.mktemp("epochta-tls"))


@pytest.fixture
def accounts():
    for secret in (PASSWORD, PRIVATE_KEY):
        sandboxlib.remember_secret(secret)
    return [Account(LOGIN, PASSWORD, credits=100, public_key=PUBLIC_KEY, private_key=PRIVATE_KEY),
            Account("broke", PASSWORD, credits=0)]


@pytest.fixture
def server(accounts):
    with EpochtaServer(accounts) as running:
        yield running


@pytest.fixture
def tls_server(accounts, tls_folder):
    with EpochtaServer(accounts, tls_folder=tls_folder) as running:
        yield running


def params(server, **changes):
    """Gateway settings pointing at ``server``; a value of None drops the setting."""
    values = {"login": LOGIN, "password": PASSWORD, "sender": SENDER, "url": server.url, "timeout": "5"}
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def outgoing(sandbox, settings, message="Your invoice is ready", phone=PHONE):
    """Run ``outgoing`` with a request as ntsms builds it."""
    request = sandboxlib.gateway_request(settings, message, user={"id": "5", "name": "client", "phone": phone},
                                         project={"id": "1", "name": "Provider"},
                                         gateway={"id": "3", "name": "sms", "gateway_module": "gwepochta",
                                                  "notify_module": "ntsms"})
    return sandbox.run(MODULE, "--command", "outgoing", input=request)


def log_of(sandbox):
    return sandbox.logs().get("gwepochta.log", "")


# --- sending ---------------------------------------------------------------------------------------------

@pytest.mark.smoke
def test_send_posts_the_documented_request(sandbox, server):
    done = outgoing(sandbox, params(server))
    assert_sent(done)
    [request] = server.requests
    assert request["path"] == "/members/sms/xml.php"
    assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert request["body"].startswith(b"XML=") and b"<" not in request["body"]
    [doc] = server.documents()
    assert [child.tag for child in doc] == ["operations", "authentification", "message", "numbers"]
    assert doc.findtext("operations/operation") == "SEND"
    assert doc.findtext("authentification/username") == LOGIN
    assert doc.findtext("authentification/password") == PASSWORD
    assert doc.findtext("message/sender") == SENDER
    assert doc.findtext("message/text") == "Your invoice is ready"
    [number] = doc.findall("numbers/number")
    assert number.text == DIGITS
    message_id = number.get("messageID")
    assert message_id and "messageID=%s" % message_id in log_of(sandbox)
    assert "accepted SMS messageID=%s to %s (status 1, credits 1.00)" % (message_id, DIGITS) in log_of(sandbox)
    assert server.accounts[LOGIN].credits == 99


def test_message_ids_are_unique(sandbox, server):
    for _ in range(2):
        assert_sent(outgoing(sandbox, params(server)))
    ids = [doc.find("numbers/number").get("messageID") for doc in server.documents()]
    assert len(set(ids)) == 2


@pytest.mark.parametrize("text", [
    "a]]>b ]]]]> & + %26 <tag/> \"quotes\" 'x'",
    "Line one\nline two\ttab",
    "]]>",
])
def test_text_arrives_exactly(sandbox, server, text):
    assert_sent(outgoing(sandbox, params(server), message=text))
    assert server.documents()[0].findtext("message/text") == text


def test_cyrillic_message_counts_as_ucs2(sandbox, server):
    text = "Счёт №42 оплачен. Спасибо, что вы с нами! " * 2   # 84 characters: two UCS-2 parts
    assert_sent(outgoing(sandbox, params(server), message=text))
    assert server.documents()[0].findtext("message/text") == text
    assert "2 parts (84 UCS-2 units)" in log_of(sandbox)


@pytest.mark.parametrize("wrap", [xmlio.escape, lambda text: "<![CDATA[%s]]>" % text])
def test_seed_input_format(sandbox, server, wrap):
    """The document BILLmanager's ntsms gives the seed's Go gateway: the settings as XML text in xmlparams."""
    settings = "".join("<%s>%s</%s>" % (k, xmlio.escape(v), k) for k, v in params(server).items())
    request = ('<?xml version="1.0" encoding="UTF-8"?>\n<doc><gateway><id>1</id><name>ePochta</name>'
               '<gateway_module>gwepochta</gateway_module><notify_module>ntsms</notify_module>'
               '<gateway_type>1</gateway_type><active>on</active>'
               '<xmlparams>%s</xmlparams></gateway><message>Code 1234</message>'
               '<user><id>7</id><name>client</name><phone>+7 912 345-67-89</phone></user>'
               '<project><id>1</id><name>Provider</name></project></doc>'
               % wrap('<?xml version="1.0" encoding="UTF-8"?>\n<doc>%s</doc>' % settings))
    assert_sent(sandbox.run(MODULE, "--command", "outgoing", input=request))
    doc = server.documents()[0]
    assert (doc.findtext("numbers/number"), doc.findtext("message/text")) == ("79123456789", "Code 1234")


def test_phone_at_the_root_as_in_the_example(sandbox, server):
    request = sandboxlib.gateway_request(params(server), "Hi", user={"id": "5"}, phone="+44 20 7946 0958")
    assert_sent(sandbox.run(MODULE, "--command", "outgoing", input=request))
    assert server.documents()[0].findtext("numbers/number") == "442079460958"


# --- refusals and failures -------------------------------------------------------------------------------

@pytest.mark.parametrize("change, forced, message_kw, error_type, words", [
    ({"password": "wrong-pw-1"}, None, {}, "connect", "ePochta refused the login for user 'hoster' (status -1)"),
    ({}, -2, {}, "send", "could not read the request (status -2, malformed XML)"),
    ({"login": "broke"}, None, {}, "send", "not enough credits on account 'broke' (status -3)"),
    ({}, None, {"phone": "12345"}, "send", "no valid recipient in '12345' (status -4)"),
    ({"sender": "Far Too Long Name"}, None, {}, "send", "rejected the sender 'Far Too Long Name' (status -7)"),
    ({}, -9, {}, "send", "refused the SEND request with status -9"),
    ({}, 0, {}, "send", "accepted no message for '380972920000' (status 0)"),
])
def test_refusals_are_explained(sandbox, server, change, forced, message_kw, error_type, words):
    sandboxlib.remember_secret("wrong-pw-1")
    server.forced_status = forced
    done = outgoing(sandbox, params(server, **change), **message_kw)
    assert done.returncode == errors.EXIT_FAILURE
    kind, sentence = error_of(done)
    assert kind == error_type and words in sentence
    assert words in log_of(sandbox)
    assert len(server.requests) == 1


@pytest.mark.parametrize("behaviour, words", [
    ("http500", "answered HTTP 500 Internal Server Error at http://127.0.0.1:"),
    ("redirect", "answered HTTP 301 Moved Permanently at http://127.0.0.1:"),
    ("redirect", "it redirects to https://api.example.org/members/sms/xml.php: put that address in the url setting"),
    ("garbage", "answered something other than its XML status ('<html><body>Welcome to nginx!</body></html>')"),
])
def test_broken_answers(sandbox, server, behaviour, words):
    server.behaviour = behaviour
    done = outgoing(sandbox, params(server))
    assert error_of(done)[0] == "connect"
    assert words in error_of(done)[1]


def test_timeout_when_the_server_never_answers(sandbox, server):
    server.behaviour = "hang"
    done = outgoing(sandbox, params(server, timeout="1"))
    kind, sentence = error_of(done)
    message_id = server.documents()[0].find("numbers/number").get("messageID")
    assert kind == "connect"
    assert "accepted the request but did not answer within 1 s" in sentence
    assert "look for messageID %s" % message_id in sentence


@pytest.mark.parametrize("behaviour", ["trickle", "trickle-body"])
def test_timeout_bounds_the_whole_answer(sandbox, server, behaviour):
    # Every byte comes well within the timeout (one each 0.25 s), from the status line on or from the body on:
    # only a deadline on the whole exchange ends the wait (a 39-byte answer used to take 19.5 s with timeout=2).
    server.behaviour = behaviour
    done = outgoing(sandbox, params(server, timeout="1"))
    kind, sentence = error_of(done)
    assert kind == "connect"
    assert "accepted the request but did not answer within 1 s" in sentence
    assert server.trickled < TRICKLE_BYTES, "the gateway left before the answer was complete"


@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1:{free}/members/sms/xml.php", "The connection to ePochta at {url} was refused"),
    ("https://127.0.0.1:{plain}/members/sms/xml.php", "The TLS handshake with ePochta at {url} failed"),
    ("http://127.0.0.1:{tls}/members/sms/xml.php", "ePochta at {url} closed the connection without answering"),
])
def test_connection_failures(sandbox, server, tls_server, url, words):
    url = url.format(free=free_port(), plain=server.port, tls=tls_server.port)
    kind, sentence = error_of(outgoing(sandbox, params(server, url=url)))
    assert kind == "connect"
    assert words.format(url=url) in sentence
    assert server.requests == [] and tls_server.requests == []


def trust_stores(tls_folder):
    """CA store environments: the system's own; the stand-in's certificate as a bundle file (loaded whole);
    as a hashed folder (looked up lazily, the way tls.context prefers)."""
    cert = os.path.join(tls_folder, "localhost.crt")
    hashed = os.path.join(tls_folder, "hashed")
    if not os.path.isdir(hashed):
        os.mkdir(hashed)
        name = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", cert], stdout=subprocess.PIPE,
                              check=True).stdout.decode().strip()
        os.symlink(cert, os.path.join(hashed, name + ".0"))
    return {"system": {"SSL_CERT_FILE": None, "SSL_CERT_DIR": None},
            "bundle": {"SSL_CERT_FILE": cert, "SSL_CERT_DIR": None},
            "folder": {"SSL_CERT_FILE": None, "SSL_CERT_DIR": hashed}}


def run_with(sandbox, request, changes):
    """Run ``outgoing`` as ``sandbox.run`` does, with environment ``changes`` (None unsets a variable)."""
    env = sandbox.env()
    for name, value in changes.items():
        env.pop(name, None)
        if value is not None:
            env[name] = value
    done = subprocess.run(sandbox.command(MODULE, "--command", "outgoing"), input=request.encode(), cwd=sandbox.root,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    sandbox.outputs.append((MODULE + " --command outgoing", done.stdout + done.stderr))   # for the leak scan
    return done


@pytest.mark.parametrize("store, verify_tls, accepted", [
    ("system", None, False),
    ("system", "on", False),
    ("bundle", "on", True),
    ("folder", "on", True),
    ("system", "off", True),
])
def test_tls_verification(sandbox, tls_server, tls_folder, store, verify_tls, accepted):
    """The self-signed stand-in passes only where it is trusted (hostname checked too), or unverified when off."""
    request = sandboxlib.gateway_request(params(tls_server, verify_tls=verify_tls), "Hi", user={"phone": PHONE})
    done = run_with(sandbox, request, trust_stores(tls_folder)[store])
    if accepted:
        assert_sent(done)
        assert tls_server.documents()[0].findtext("numbers/number") == DIGITS
    else:
        kind, sentence = error_of(done)
        assert kind == "connect"
        assert "The TLS certificate of ePochta at %s could not be verified" % tls_server.url in sentence
        assert "(self-signed certificate)" in sentence or "(certificate verify failed)" in sentence   # 3.7+, 3.6
        assert tls_server.requests == []


@pytest.mark.parametrize("store, loaded_at_once", [("folder", False), ("bundle", True)])
def test_tls_context_reads_a_hashed_folder_lazily(monkeypatch, tls_folder, store, loaded_at_once):
    """A hashed CA folder costs nothing up front (a bundle file is read whole, ~20 ms for the system's)."""
    for name, value in trust_stores(tls_folder)[store].items():
        monkeypatch.delenv(name, raising=False)
        if value is not None:
            monkeypatch.setenv(name, value)
    context = tls.context()
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert (context.cert_store_stats()["x509"] > 0) == loaded_at_once


def test_plain_http_is_logged_as_a_warning(sandbox, server):
    assert_sent(outgoing(sandbox, params(server)))
    assert "plain http: the credentials travel unencrypted" in log_of(sandbox)


# --- checked before anything is sent ---------------------------------------------------------------------

@pytest.mark.parametrize("change, message_kw, error_type, obj, words", [
    ({"max_parts": "1"}, {"message": "x" * 161}, "send", "max_parts",
     "is 2 parts long (161 GSM-7 units) and max_parts allows 1; nothing was sent"),
    ({"max_parts": "2"}, {"message": "я" * 135}, "send", "max_parts", "is 3 parts long (135 UCS-2 units)"),
    ({}, {"phone": ""}, "send", "phone", "The user has no phone number"),
    ({}, {"phone": "+7 (912) CALL-ME"}, "send", "phone", "The phone number '+7 (912) CALL-ME' is not a number"),
    ({}, {"phone": "٣٨٠٩٧٢٩٢٠٠٠٠"}, "send", "phone", "is not a number"),
    ({}, {"message": "  "}, "xml", "message", "is empty; nothing was sent"),
    ({"sender": None}, {}, "value", "sender", "The gateway setting 'sender' is empty"),
    ({"password": None}, {}, "value", "password", "The gateway setting 'password' is empty"),
    ({"timeout": "0"}, {}, "value", "timeout", "must be between 1 and 300"),
    ({"max_parts": "many"}, {}, "value", "max_parts", "must be a whole number"),
    ({"verify_tls": "maybe"}, {}, "value", "verify_tls", "must be on or off"),
    ({"api": "soap"}, {}, "value", "api", "must be one of xml, v3"),
    ({"url": "ftp://example.org/"}, {}, "value", "url", "is not an http:// or https:// address"),
])
def test_refused_before_sending(sandbox, server, change, message_kw, error_type, obj, words):
    done = outgoing(sandbox, params(server, **change), **message_kw)
    node = xmlio.parse(done.stdout).find("error")
    assert (node.get("type"), node.get("object")) == (error_type, obj)
    assert words in xmlio.text(node, "msg")
    assert server.requests == []


def test_max_parts_allows_what_fits(sandbox, server):
    assert_sent(outgoing(sandbox, params(server, max_parts="2"), message="x" * 306))
    assert "2 parts (306 GSM-7 units)" in log_of(sandbox)


# --- check_connection and formtune -----------------------------------------------------------------------

@pytest.mark.smoke
def test_check_connection_reads_the_balance(sandbox, server):
    request = sandboxlib.check_connection_request(params(server), form_fields=("login", "password", "sender"))
    done = sandbox.run(MODULE, "--command", "check_connection", input=request)
    assert done.returncode == 0, done.stdout
    root = xmlio.parse(done.stdout)
    assert root.find("metadata/form") is not None and root.find("xmlparams") is None
    assert server.documents()[0].findtext("operations/operation") == "BALANCE"
    assert server.documents()[0].find("message") is None
    assert "ePochta balance: status 0, credits 100.00\x1b" in log_of(sandbox)


@pytest.mark.parametrize("change, words", [
    ({"sender": ""}, "The gateway setting 'sender' is empty"),
    ({"max_parts": "0"}, "The gateway setting 'max_parts' must be between 1 and 100"),
])
def test_check_connection_checks_the_sending_settings(sandbox, server, change, words):
    request = sandboxlib.check_connection_request(params(server, **change))
    kind, sentence = error_of(sandbox.run(MODULE, "--command", "check_connection", input=request))
    assert kind == "value" and words in sentence
    assert server.requests == []


def test_check_connection_bad_login(sandbox, server):
    sandboxlib.remember_secret("not-the-pw")
    request = sandboxlib.check_connection_request(params(server, password="not-the-pw"))
    kind, sentence = error_of(sandbox.run(MODULE, "--command", "check_connection", input=request))
    assert kind == "connect"
    assert "ePochta refused the login for user 'hoster' (status -1)" in sentence


def form(*values):
    fields = [xmlio.element("field", attrs={"name": n}) for n in ("login", "api", "verify_tls")]
    return xmlio.document(xmlio.element("metadata", children=[xmlio.element("form", children=fields)]), *values)


@pytest.mark.parametrize("values, expected", [
    ((), {"api": "xml", "verify_tls": "on"}),
    ((xmlio.element("verify_tls", "off"), xmlio.element("api", "v3")), {"api": "v3", "verify_tls": "off"}),
    ((xmlio.element("verify_tls", ""),), {"api": "xml", "verify_tls": "on"}),
])
def test_formtune_fills_the_api_choice_and_defaults(sandbox, values, expected):
    done = sandbox.run(MODULE, "--command", "formtune", input=form(*values))
    assert done.returncode == 0, done.stdout
    root = xmlio.parse(done.stdout)
    assert [m.text for m in root.findall("slist[@name='api']/msg")] == ["xml", "v3"]
    assert {name: root.findtext(name) for name in expected} == expected
    assert root.find("metadata/form/field[@name='login']") is not None


@pytest.mark.smoke
def test_formtune_twice_keeps_one_list(sandbox):
    once = sandbox.run(MODULE, "--command", "formtune", input=form()).stdout
    twice = xmlio.parse(sandbox.run(MODULE, "--command", "formtune", input=once).stdout)
    assert len(twice.findall("slist[@name='api']")) == 1


# --- API 3.0 ---------------------------------------------------------------------------------------------

def v3_params(server, **changes):
    values = dict(api="v3", url=server.v3_url, public_key=PUBLIC_KEY, private_key=PRIVATE_KEY, login=None,
                  password=None)
    values.update(changes)
    return params(server, **values)


def test_signature_matches_the_public_test_vector():
    params = {"action": "some_call", "foo": "bar", "key": "X", "version": "3.0"}
    assert epochta.signature(params, "Y") == "72c28714005950deb5ed6ed80d20a9ad"


def test_v3_send(sandbox, server):
    assert_sent(outgoing(sandbox, v3_params(server), message="Привет"))
    [request] = server.requests
    assert request["path"] == "/sms/3.0/sendSMS"
    assert (request["form"]["phone"], request["form"]["text"], request["form"]["key"]) == (DIGITS, "Привет", PUBLIC_KEY)
    assert PRIVATE_KEY not in str(request["body"], "ascii")
    assert "accepted SMS messageID=1001" in log_of(sandbox)


def test_v3_check_connection(sandbox, server):
    request = sandboxlib.check_connection_request(v3_params(server))
    assert sandbox.run(MODULE, "--command", "check_connection", input=request).returncode == 0
    assert server.requests[0]["path"] == "/sms/3.0/getUserBalance"
    assert "ePochta balance: status 0, amount 100 UAH\x1b" in log_of(sandbox)


def test_v3_timeout_says_where_to_look_without_an_id(sandbox, server):
    # API 3.0's id is ePochta's, in its answer: a timeout names the number and the time instead (README)
    server.behaviour = "hang"
    kind, sentence = error_of(outgoing(sandbox, v3_params(server, timeout="1")))
    assert kind == "connect" and "the SMS may still have been sent" in sentence
    assert "look in ePochta's statistics for an SMS to %s at 20" % DIGITS in sentence


def test_v3_answer_without_an_id_is_logged_as_such(monkeypatch):
    client = epochta.EpochtaV3(PUBLIC_KEY, PRIVATE_KEY, url="http://127.0.0.1:9/sms/3.0/")
    monkeypatch.setattr(client, "call", lambda *args, **kwargs: {"price": "0.2", "currency": "UAH"})
    assert client.send(SENDER, "hi", DIGITS).message_id is None


@pytest.mark.parametrize("change, message_kw, words", [
    ({"private_key": "priv-wrong-key"}, {}, "refused the sendSMS request: Wrong key or control sum (code -1)"),
    ({}, {"phone": "12345"}, "no valid recipient in '12345' (code 303)"),
])
def test_v3_refusals(sandbox, server, change, message_kw, words):
    sandboxlib.remember_secret("priv-wrong-key")
    kind, sentence = error_of(outgoing(sandbox, v3_params(server, **change), **message_kw))
    assert kind == "send" and words in sentence


# --- no secret anywhere ----------------------------------------------------------------------------------

def test_secrets_never_leak_even_at_debug_level(sandbox, server):
    sandbox.set_log_level(9)
    sandboxlib.remember_secret("bad-pass-123")
    runs = [outgoing(sandbox, params(server)),
            outgoing(sandbox, params(server, password="bad-pass-123")),
            outgoing(sandbox, v3_params(server)),
            sandbox.run(MODULE, "--command", "check_connection",
                        input=sandboxlib.check_connection_request(params(server))),
            sandbox.run(MODULE, "--command", "check_connection",
                        input=sandboxlib.check_connection_request(v3_params(server)))]
    server.behaviour = "hang"
    runs.append(outgoing(sandbox, params(server, timeout="1")))
    assert "DEBUG SEND request to" in log_of(sandbox) and "DEBUG sendSMS request to" in log_of(sandbox)
    texts = [str(r.stdout, "utf-8", "replace") for r in runs] + [str(r.stderr, "utf-8", "replace") for r in runs]
    texts += list(sandbox.logs().values())
    for secret in (PASSWORD, PRIVATE_KEY, "bad-pass-123"):
        for form_ in {secret, xmlio.escape(secret), quote_plus(secret)}:
            assert not [t for t in texts if form_ in t], "a secret leaked"


# --- the library's pieces --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("", ("GSM-7", 0, 1)),
    ("x" * 160, ("GSM-7", 160, 1)),
    ("x" * 161, ("GSM-7", 161, 2)),
    ("x" * 306, ("GSM-7", 306, 2)),
    ("x" * 307, ("GSM-7", 307, 3)),
    ("€" * 80, ("GSM-7", 160, 1)),
    ("{" * 81, ("GSM-7", 162, 2)),
    ("x" * 152 + "~" + "x" * 152, ("GSM-7", 306, 3)),   # an escaped character is never split
    ("Ünøcødé? Ñö: è é ù ì ò", ("GSM-7", 22, 1)),
    ("я" * 70, ("UCS-2", 70, 1)),
    ("я" * 71, ("UCS-2", 71, 2)),
    ("x" * 133 + "ы", ("UCS-2", 134, 2)),
    ("я" * 135, ("UCS-2", 135, 3)),
    ("🎉" * 35, ("UCS-2", 70, 1)),
    ("🎉" * 36, ("UCS-2", 72, 2)),
    ("x" * 66 + "🎉" + "x" * 66, ("UCS-2", 134, 3)),   # a surrogate pair is never split
    ("page\fbreak", ("GSM-7", 11, 1)),                   # a form feed is in GSM-7's extension table: 2 septets
    ("\f" * 80, ("GSM-7", 160, 1)),
    ("\f" * 81, ("GSM-7", 162, 2)),
])
def test_sms_measure(text, expected):
    length = sms.measure(text)
    assert (length.encoding, length.units, length.parts) == expected


@pytest.mark.parametrize("phone, expected", [
    ("+380 (97) 292-00.00", "380972920000"),
    ("79123456789", "79123456789"),
    ("\u00a0+7\t912 345 67 89 ", "79123456789"),
    ("0049 30 1234567", "49301234567"),      # the international prefix 00 is dialled, not sent
    ("+0049 (30) 123-45-67", "49301234567"),
    ("00380972920000", "380972920000"),
])
def test_normalize_phone(phone, expected):
    assert sms.normalize_phone(phone) == expected


@pytest.mark.parametrize("phone", ["", " + ( ) ", "+7 912 x", "7912²", "+7/912", "00", "+00"])
def test_normalize_phone_refuses(phone):
    with pytest.raises(sms.InvalidPhone):
        sms.normalize_phone(phone)


@pytest.mark.parametrize("text", ["plain", "a]]>b", "]]>]]>", "]]", "x]]]>y", "bell\x07 kept out"])
def test_cdata_round_trip(text):
    parsed = ET.fromstring("<text>%s</text>" % epochta.cdata(text)).text
    assert parsed == text.replace("\x07", "")


# --- the module description ------------------------------------------------------------------------------

def test_module_xml_describes_every_setting_in_both_languages():
    root = xmlio.parse(open(os.path.join(sandboxlib.REPO, "etc", "xml", "billmgr_mod_gwepochta.xml"), "rb").read())
    fields = [f.get("name") for f in root.findall("metadata[@name='gateway.gwepochta']/form/field")]
    assert fields == ["login", "password", "sender", "api", "public_key", "private_key", "url", "timeout",
                      "verify_tls", "max_parts"]
    assert root.find(".//field[@name='api']/select") is not None
    assert root.find(".//field[@name='verify_tls']/input").get("type") == "checkbox"
    for lang in ("ru", "en"):
        path = "lang[@name='%s']/messages[@name='gateway.gwepochta']/msg" % lang
        messages = {m.get("name"): m.text for m in root.findall(path)}
        for name in fields + ["hint_" + f for f in fields] + ["xml", "v3"]:
            assert messages.get(name), "%s: no message %s" % (lang, name)
        assert messages["placeholder_url"] == epochta.XML_URL
        for group, names in (("plugin", ("desc_short_gwepochta", "desc_full_gwepochta", "price_gwepochta")),
                             ("gateway_include", ("module_gwepochta", "gwepochta", "desc_gwepochta"))):
            found = {m.get("name") for m in root.findall("lang[@name='%s']/messages[@name='%s']/msg" % (lang, group))}
            assert set(names) <= found, (lang, group)


def test_logo_is_a_png():
    path = os.path.join(sandboxlib.REPO, "skins", "common", "plugin-logo", "billmanager-plugin-gwepochta.png")
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
