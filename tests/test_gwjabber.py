"""gate/gwjabber run as BILLmanager runs it (a subprocess in the sandbox), against a real Prosody."""

import itertools
import os
import resource
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sandbox as sandboxlib  # noqa: E402
from sandbox import batch_request  # noqa: E402
from mgrnotify import xmlio, xmpp  # noqa: E402
import prosody as prosodylib  # noqa: E402
from localnet import FaultyServer, free_port  # noqa: E402
from test_xmpp import STREAM_HEADER, FakeServer, StrippedServer  # noqa: E402

prosody = prosodylib.prosody   # the fixture: one Prosody for this file

MODULE = "gate/gwjabber"
_numbers = itertools.count(1)


LIST_IMPORTS = """import sys
sys.argv = sys.argv[1:]
try:
    exec(compile(open(sys.argv[0]).read(), sys.argv[0], "exec"), {"__name__": "__main__", "__file__": sys.argv[0]})
except SystemExit:
    pass
sys.stderr.write(" ".join(sys.modules))
"""


def account(server, prefix="user"):
    """A new account: (jid, password); the password is recorded for the leak scans."""
    number = next(_numbers)
    password = "pw-%s-%d-секрет" % (prefix, number)
    sandboxlib.remember_secret(password)
    return server.register("%s%d" % (prefix, number), password), password


@pytest.fixture
def trusted(monkeypatch, prosody):
    """The modules trust the test server's self-signed certificate (through OpenSSL's SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", prosody.cert)


@pytest.fixture
def gateway(prosody):
    """The gateway's account: (jid, password)."""
    return account(prosody, "gw")


@pytest.fixture
def alice(prosody):
    """A client's account: (jid, password)."""
    return account(prosody, "alice")


def read_messages(server, jid, password, count, window=5):
    """What ``jid`` finds waiting for it (offline messages): [(bare sender, body, subject)]."""
    with xmpp.XMPPClient(jid, host="127.0.0.1", port=server.port, cafile=server.cert, timeout=5) as client:
        client.connect()
        client.login(password)
        return [(xmpp.bare_jid(sender), body, subject) for sender, body, subject in client.receive(window, count)]


def send_messages(server, jid, password, to, messages):
    """Send (body, subject) pairs from ``jid`` to ``to`` and wait until the server has them."""
    with xmpp.XMPPClient(jid, host="127.0.0.1", port=server.port, cafile=server.cert, timeout=5) as client:
        client.connect()
        client.login(password)
        for body, subject in messages:
            client.send(to, body, subject)
        client.ping()


def answer(result):
    """The output document of a run, parsed."""
    return xmlio.parse(result.stdout, "the module's answer")


def error_of(result):
    """(type, sentence) of an error document."""
    error = answer(result).find("error")
    assert error is not None, result.stdout
    return error.get("type"), error.findtext("msg")


def test_features_and_a_light_start(sandbox):
    result = sandbox.run(MODULE, "--command", "features")
    assert result.returncode == 0
    doc = answer(result)
    assert [f.get("name") for f in doc.iter("feature")] == [
        "outgoing", "ingoing", "formtune", "check_connection", "outgoing_batch"]
    assert doc.findtext("notify_module") == "ntjabber"
    # The module run by a wrapper that lists the modules loaded (-X importtime does not exist in 3.6).
    python = sandboxlib.MODULE_PYTHON or "/usr/bin/python3"
    loaded = subprocess.run([python, "-c", LIST_IMPORTS, sandbox.path(MODULE), "--command", "features"],
                            cwd=sandbox.root, env=sandbox.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    imported = set(loaded.stderr.decode().split())
    assert "mgrnotify.gateway" in imported
    assert not imported & {"lxml", "ssl", "http.client", "smtplib", "email", "urllib.request", "re",
                           "mgrnotify.xmpp", "base64"}


@pytest.mark.smoke
def test_formtune(sandbox):
    form = xmlio.document(xmlio.element("metadata", attrs={"name": "gateway.gwjabber"}))
    result = sandbox.run(MODULE, "--command", "formtune", input=form)
    assert result.returncode == 0
    doc = answer(result)
    assert doc.find("metadata") is not None
    assert [v.text for v in doc.findall("slist[@name='ticket_format']/msg")] == ["#id", "@id"]
    assert [v.text for v in doc.findall("slist[@name='tls']/msg")] == ["starttls", "direct", "none"]
    assert (doc.findtext("verify_tls"), doc.findtext("tls"), doc.findtext("ticket_format")) == ("on", "starttls", "#id")


@pytest.mark.smoke
@pytest.mark.parametrize("request_format", ["example", "contract"])
def test_outgoing_arrives(sandbox, prosody, trusted, gateway, alice, request_format):
    settings = prosody.settings(*gateway)
    text = "Счёт №7 оплачен.\nСпасибо! <b>&amp;</b>"
    if request_format == "example":   # ISPsystem's ntjabber: <jabber> and <subject> at the root
        request = sandboxlib.gateway_request(settings, text, jabber=alice[0], subject="Биллинг")
    else:                             # docs/CONTRACT.md: the user's row
        request = sandboxlib.gateway_request(settings, text, user={"id": "5", "jabber": alice[0]},
                                             project={"id": "1", "name": "Provider"}, subject="Биллинг")
    result = sandbox.run(MODULE, "--command", "outgoing", input=request)
    assert (result.returncode, result.stderr) == (0, b"")
    assert len(answer(result)) == 0
    assert read_messages(prosody, alice[0], alice[1], 1) == [(gateway[0], text, "Биллинг")]


@pytest.mark.parametrize("tls", ["direct", "starttls"])
def test_outgoing_without_certificate_check(sandbox, prosody, gateway, alice, tls):
    settings = prosody.settings(gateway[0], gateway[1], tls=tls, verify_tls="off")
    result = sandbox.run(MODULE, "--command", "outgoing", input=sandboxlib.gateway_request(settings, "hi",
                                                                                          jabber=alice[0]))
    assert result.returncode == 0, result.stdout
    assert read_messages(prosody, alice[0], alice[1], 1) == [(gateway[0], "hi", "")]


# (how the settings or the request differ, exit status, error type, words the sentence must hold)
OUTGOING_FAILURES = [
    ({"password": "wrong password"}, {}, 1, "connect", "refused the login for {gw} (not-authorized"),
    ({"port": "{free}"}, {}, 1, "connect", "Cannot connect to the XMPP server for localhost (127.0.0.1:{free}"),
    ({"verify_tls": "on", "untrusted": True}, {}, 1, "connect", "is not trusted for localhost"),
    ({"tls": "direct"}, {}, 1, "connect", "set tls to starttls"),
    ({}, {"jabber": "nobody@localhost"}, 1, "send", "refused the message to nobody@localhost (service-unavailable"),
    ({}, {"jabber": "not a jid"}, 1, "send", "'not a jid' is not a Jabber address"),
    ({}, {"jabber": ""}, 3, "xml", "no recipient"),
    ({}, {"message": " "}, 3, "xml", "is empty; there is nothing to send"),
    ({"tls": "ssl"}, {}, 1, "value", "'tls' must be one of starttls, direct, none, not 'ssl'"),
    ({"jabber": "localhost"}, {}, 1, "value", "'jabber' must be an account like name@example.com"),
    ({"timeout": "0"}, {}, 1, "value", "'timeout' must be between 1 and 300"),
]


@pytest.mark.parametrize("change,request_change,status,error_type,words", OUTGOING_FAILURES)
def test_outgoing_failures(sandbox, prosody, monkeypatch, gateway, alice, change, request_change, status,
                           error_type, words):
    free = str(free_port())
    change = dict(change)
    if not change.pop("untrusted", False):
        monkeypatch.setenv("SSL_CERT_FILE", prosody.cert)
    settings = prosody.settings(*gateway)
    settings.update({k: v.format(free=free) for k, v in change.items()})
    fields = {"message": "hello", "jabber": alice[0]}
    fields.update(request_change)
    request = sandboxlib.gateway_request(settings, fields.pop("message"), **fields)
    result = sandbox.run(MODULE, "--command", "outgoing", input=request)
    assert result.returncode == status
    got_type, sentence = error_of(result)
    assert got_type == error_type
    assert words.format(gw=gateway[0], free=free) in sentence


@pytest.mark.smoke
def test_outgoing_batch(sandbox, prosody, trusted, gateway, alice):
    messages = [("11", alice[0], "Первое", "one"),
                ("12", "nobody@localhost", "", "to no one"),
                ("13", alice[0], "", "two </body><message to='x@localhost'>"),
                ("14", "not a jid", "", "bad address"),
                ("15", "", "", "no address"),
                ("16", alice[0], "", ""),
                ("17", alice[0], "", "three \x07")]
    result = sandbox.run(MODULE, "--command", "outgoing_batch",
                         input=batch_request(prosody.settings(*gateway), messages))
    assert (result.returncode, result.stderr) == (0, b"")
    results = [(r.get("id"), r.get("status"), r.text or "") for r in answer(result).findall("results/result")]
    assert [r[:2] for r in results] == [("11", "ok"), ("12", "error"), ("13", "ok"), ("14", "error"),
                                        ("15", "error"), ("16", "error"), ("17", "ok")]
    assert "refused the message to nobody@localhost (service-unavailable" in results[1][2]
    assert "'not a jid' is not a Jabber address" in results[3][2]
    assert "no recipient" in results[4][2] and "is empty" in results[5][2]
    assert read_messages(prosody, alice[0], alice[1], 3) == [
        (gateway[0], "one", "Первое"), (gateway[0], "two </body><message to='x@localhost'>", ""),
        (gateway[0], "three ", "")]


def test_outgoing_batch_in_chunks(sandbox, prosody, trusted, gateway, alice):
    messages = [(str(n), alice[0] if n % 40 else "nobody@localhost", "", "message %d" % n) for n in range(1, 121)]
    result = sandbox.run(MODULE, "--command", "outgoing_batch",
                         input=batch_request(prosody.settings(*gateway), messages))
    statuses = [r.get("status") for r in answer(result).findall("results/result")]
    assert statuses == ["ok" if n % 40 else "error" for n in range(1, 121)]
    bodies = [body for _, body, _ in read_messages(prosody, alice[0], alice[1], 117)]
    assert bodies == ["message %d" % n for n in range(1, 121) if n % 40]


def test_a_message_that_makes_the_server_end_the_stream_costs_only_itself(sandbox, prosody, trusted, gateway, alice):
    """Message 3 is too big for Prosody, which ends the stream (policy-violation). 1 and 2 were confirmed before;
    3 fails as "may have been delivered"; the server handled nothing after it (RFC 6120: in order), so those on
    their way behind it are sent again after a new login, and every other message arrives once."""
    bodies = ["m%02d" % n for n in range(1, 61)]
    bodies[2] = "x" * (600 * 1024)
    messages = [(str(n), alice[0], "", body) for n, body in enumerate(bodies, 1)]
    result = sandbox.run(MODULE, "--command", "outgoing_batch",
                         input=batch_request(prosody.settings(*gateway), messages))
    assert result.returncode == 0
    results = [(r.get("id"), r.get("status"), r.text or "") for r in answer(result).findall("results/result")]
    assert [r[0] for r in results] == [str(n) for n in range(1, 61)]
    assert [r[0] for r in results if r[1] == "error"] == ["3"]
    assert "may have been delivered" in results[2][2] and "XML stanza is too big" in results[2][2]
    assert sandbox.logs()["gwjabber.log"].count("Logged in to the XMPP server") == 2
    arrived = [body for _, body, _ in read_messages(prosody, alice[0], alice[1], 100)]
    assert arrived == bodies[:2] + bodies[3:]


@pytest.mark.parametrize("change,words", [
    ({"password": "wrong password"}, "refused the login for"),
    ({"port": "{free}"}, "Cannot connect to the XMPP server"),
    ({"tls": "ssl"}, "'tls' must be one of"),
])
def test_outgoing_batch_fails_all_with_one_reason(sandbox, prosody, trusted, gateway, alice, change, words):
    free = str(free_port())
    settings = prosody.settings(*gateway)
    settings.update({k: v.format(free=free) for k, v in change.items()})
    result = sandbox.run(MODULE, "--command", "outgoing_batch",
                         input=batch_request(settings, [("1", alice[0], "", "a"), ("2", alice[0], "", "b")]))
    assert result.returncode == 0
    results = answer(result).findall("results/result")
    assert [r.get("status") for r in results] == ["error", "error"]
    assert results[0].text == results[1].text and words in results[0].text


@pytest.mark.parametrize("messages,words", [
    ("", "has no <messages> element"),
    ("<messages><message to='a@localhost'><body>x</body></message></messages>", "has no id attribute"),
])
def test_outgoing_batch_refuses_a_malformed_request(sandbox, prosody, gateway, messages, words):
    request = batch_request(prosody.settings(*gateway), []).replace("<messages/>", messages)
    result = sandbox.run(MODULE, "--command", "outgoing_batch", input=request)
    assert result.returncode == 3
    assert words in error_of(result)[1]


@pytest.mark.smoke
def test_ingoing_returns_what_was_sent_to_the_gateway(sandbox, prosody, trusted, gateway, alice):
    send_messages(prosody, alice[0], alice[1], gateway[0], [("#12 Спасибо, всё работает", ""),
                                                             ("@12 second", "Re: ticket")])
    request = sandboxlib.gateway_request(prosody.settings(*gateway, receive_window="1"))
    result = sandbox.run(MODULE, "--command", "ingoing", input=request)
    assert (result.returncode, result.stderr) == (0, b"")
    got = [(m.get("from"), m.get("subject"), m.text) for m in answer(result).findall("messages/message")]
    assert got == [(alice[0], None, "#12 Спасибо, всё работает"), (alice[0], "Re: ticket", "@12 second")]
    again = sandbox.run(MODULE, "--command", "ingoing", input=request)
    assert answer(again).find("messages") is not None and answer(again).findall("messages/message") == []


def test_ingoing_login_failure(sandbox, prosody, trusted, gateway):
    request = sandboxlib.gateway_request(prosody.settings(gateway[0], "wrong password", receive_window="1"))
    result = sandbox.run(MODULE, "--command", "ingoing", input=request)
    assert result.returncode == 1
    assert error_of(result)[0] == "connect"


MEMORY_LIMIT = 512 * 1024 * 1024   # address space for the module: far above its needs, far below a gigabyte


def test_a_server_sending_nested_elements_costs_little_memory(sandbox):
    # 8 MB of nested elements took about 1 GB before the size limit tripped; the depth limit refuses them at once.
    server = FakeServer(STREAM_HEADER + b"<a>" * (8 * 1024 * 1024 // 3))
    settings = {"jabber": "gw@localhost", "password": "pw-nested-1", "server": "127.0.0.1",
                "port": str(server.port), "tls": "none", "timeout": "10"}
    sandboxlib.remember_secret(settings["password"])
    try:
        result = subprocess.run(sandbox.command(MODULE, "--command", "outgoing"), cwd=sandbox.root, env=sandbox.env(),
                                input=sandboxlib.gateway_request(settings, "hi", jabber="a@localhost").encode(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT)))
    finally:
        server.close()
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert error_of(result) == ("connect", "The XMPP server 127.0.0.1:%d sent a stanza with elements nested more than "
                                           "32 deep while opening the stream; is it an XMPP server without TLS?"
                                % server.port)


@pytest.mark.smoke
@pytest.mark.parametrize("change,status,words", [
    ({}, 0, None),
    ({"password": "wrong password"}, 1, "refused the login for"),
    ({"port": "{free}"}, 1, "Cannot connect"),
    ({"receive_window": "0"}, 1, "'receive_window' must be between 1 and 300"),
    ({"ticket_format": "$id"}, 1, "'ticket_format' must be one of #id, @id"),
])
def test_check_connection(sandbox, prosody, trusted, gateway, change, status, words):
    free = str(free_port())
    settings = prosody.settings(*gateway, ticket_format="#id")
    settings.update({k: v.format(free=free) for k, v in change.items()})
    request = sandboxlib.check_connection_request(settings, form_fields=("jabber", "password", "server"))
    result = sandbox.run(MODULE, "--command", "check_connection", input=request)
    assert result.returncode == status
    if words is None:
        doc = answer(result)
        assert doc.find("xmlparams") is None and doc.find("metadata/form") is not None
    else:
        assert words in error_of(result)[1]


def test_no_password_anywhere_at_debug_level(sandbox, prosody, trusted, gateway, alice):
    sandbox.set_log_level(9)
    settings = prosody.settings(*gateway, receive_window="1")
    runs = [("outgoing", sandboxlib.gateway_request(settings, "hello", jabber=alice[0])),
            ("outgoing_batch", batch_request(settings, [("1", alice[0], "", "hi"), ("2", "x@localhost", "", "x")])),
            ("ingoing", sandboxlib.gateway_request(settings)),
            ("check_connection", sandboxlib.check_connection_request(settings, ("jabber", "password"))),
            ("outgoing", sandboxlib.gateway_request(dict(settings, password="wrong " + gateway[1]), "x",
                                                    jabber=alice[0]))]
    outputs = []
    for command, request in runs:
        result = sandbox.run(MODULE, "--command", command, input=request)
        outputs += [result.stdout.decode("utf-8", "replace"), result.stderr.decode("utf-8", "replace")]
    logs = sandbox.logs()
    assert "xmpp send: <message" in logs["gwjabber.log"] and "(not logged)" in logs["gwjabber.log"]
    for secret in (gateway[1], "wrong " + gateway[1]):
        for name, text in list(logs.items()) + [("output", "".join(outputs))]:
            assert secret not in text, name


# --- certificate checks through outgoing, against a TLS server that is not Prosody (issue 15) -----------------

def outgoing_to(sandbox, server, **settings):
    """``outgoing`` of gwjabber to the FaultyServer ``server`` (direct TLS): (exit status, the error's msg)."""
    params = dict({"jabber": "gw@localhost", "password": "pw-certificates-1", "server": "127.0.0.1",
                   "port": str(server.port), "tls": "direct", "timeout": "2"}, **settings)
    sandboxlib.remember_secret(params["password"])
    done = sandbox.run(MODULE, "--command", "outgoing", timeout=60,
                       input=sandboxlib.gateway_request(params, "hi", {"jabber": "alice@localhost"}))
    error = xmlio.parse(done.stdout).find("error")
    return done.returncode, xmlio.text(error, "msg") if error is not None else ""


@pytest.mark.parametrize("verify_tls, refused", [(None, True), ("", True), ("on", True), ("off", False)],
                         ids=["absent", "empty", "on", "off"])
def test_an_untrusted_certificate_is_refused_unless_verify_tls_is_off(sandbox, tmp_path, monkeypatch, verify_tls,
                                                                      refused):
    """A gateway whose verify_tls is absent or empty (a row saved before the field existed, or by hand) checks
    certificates; only an explicit off skips the check."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = FaultyServer("other-name", str(tmp_path))
    try:
        status, sentence = outgoing_to(sandbox, server, **({} if verify_tls is None else {"verify_tls": verify_tls}))
    finally:
        server.stop()
    assert status == 1
    assert ("is not trusted for localhost" in sentence) == refused, sentence


def test_a_trusted_certificate_for_another_name_is_refused_by_the_gateway(sandbox, tmp_path, monkeypatch):
    """The system trusts the certificate (SSL_CERT_FILE), but it is issued for other.example, not localhost."""
    server = FaultyServer("other-name", str(tmp_path))
    monkeypatch.setenv("SSL_CERT_FILE", server.cert)
    try:
        status, sentence = outgoing_to(sandbox, server)
        other = outgoing_to(sandbox, server, jabber="gw@other.example")
    finally:
        server.stop()
    assert status == 1 and "is not trusted for localhost" in sentence, sentence
    assert other[0] == 1 and "certificate" not in other[1].lower(), other   # trusted for its own name


@pytest.mark.parametrize("tls", [None, "", "starttls"], ids=["absent", "empty", "starttls"])
def test_a_server_without_starttls_gets_no_password(sandbox, tls):
    """A gateway left at the default (tls absent or empty) or set to starttls, facing a server that offers no
    STARTTLS (or a man in the middle who strips it), fails without logging in: the password never leaves."""
    server = StrippedServer()
    params = {"jabber": "gw@localhost", "password": "pw-stripped-1", "server": "127.0.0.1",
              "port": str(server.port), "timeout": "5"}
    if tls is not None:
        params["tls"] = tls
    sandboxlib.remember_secret(params["password"])
    try:
        done = sandbox.run(MODULE, "--command", "outgoing", timeout=60,
                           input=sandboxlib.gateway_request(params, "hi", {"jabber": "alice@localhost"}))
    finally:
        server.close()
    sentence = xmlio.text(xmlio.parse(done.stdout).find("error"), "msg")
    assert done.returncode == 1 and "offers no STARTTLS" in sentence, sentence
    assert b"<auth" not in server.received and b"pw-stripped-1" not in server.received


@pytest.mark.parametrize("name, value, refused", [
    ("port", "65535", False), ("port", "65536", True), ("port", "0", True),
    ("timeout", "1", False), ("timeout", "0", True), ("timeout", "300", False), ("timeout", "301", True),
])
def test_settings_at_the_ends_of_their_range(sandbox, name, value, refused):
    """The ends of a setting's range are allowed (the gateway goes on to connect, and, most likely, finds nobody
    there); one past either end is refused before any connection, naming the setting and its range."""
    port = "65535" if name == "port" else str(free_port())
    params = dict({"jabber": "gw@localhost", "password": "pw-ranges-1", "server": "127.0.0.1", "port": port,
                   "timeout": "2"}, **{name: value})
    sandboxlib.remember_secret(params["password"])
    done = sandbox.run(MODULE, "--command", "outgoing", timeout=60,
                       input=sandboxlib.gateway_request(params, "hi", {"jabber": "alice@localhost"}))
    sentence = xmlio.text(xmlio.parse(done.stdout).find("error"), "msg")
    assert done.returncode == 1
    if refused:
        high = "65535" if name == "port" else "300"
        assert sentence == "The gateway setting '%s' must be between 1 and %s, not %s" % (name, high, value)
    else:
        assert sentence and "gateway setting" not in sentence, sentence
