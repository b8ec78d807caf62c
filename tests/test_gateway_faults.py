"""Faults on the gateways' side of the wire: a server that closes at once, never answers, answers junk, drops
the conversation after the first request, or presents a certificate for another name. Every gateway ends each
of them with an error document and exit status 1, within its configured timeout (the subprocess is given a
hard bound far above it, so a hang fails the test instead of blocking it)."""

import pytest

import sandbox as sandboxlib
from localnet import FaultyServer
from mgrnotify import xmlio

TIMEOUT = "2"   # the gateways' own timeout setting, in seconds
HARD_BOUND = 60


def epochta(port, tls):
    scheme = "https" if tls else "http"
    return ("gate/gwepochta", {"login": "u", "password": "pw-faults-1", "sender": "Test", "timeout": TIMEOUT,
                               "url": "%s://localhost:%d/members/sms/xml.php" % (scheme, port)},
            {"phone": "+1 555 0100"})


def mail(port, tls):
    return ("gate/gwmail", {"email": "gw@example.com", "smtp_host": "localhost", "smtp_port": str(port),
                            "smtp_security": "ssl" if tls else "none", "smtp_login": "gw",
                            "smtp_password": "pw-faults-2", "timeout": TIMEOUT}, {"email": "a@example.com"})


def jabber(port, tls):
    return ("gate/gwjabber", {"jabber": "gw@localhost", "password": "pw-faults-3", "server": "127.0.0.1",
                              "port": str(port), "tls": "direct" if tls else "starttls", "timeout": TIMEOUT},
            {"jabber": "a@localhost"})


@pytest.mark.parametrize("gateway", [epochta, mail, jabber], ids=["gwepochta", "gwmail", "gwjabber"])
@pytest.mark.parametrize("mode", ["close", "silent", "garbage", "drop", "other-name"])
def test_every_fault_is_an_error_document(sandbox, tmp_path, monkeypatch, gateway, mode):
    server = FaultyServer(mode, str(tmp_path))
    try:
        if server.cert:
            monkeypatch.setenv("SSL_CERT_FILE", server.cert)   # trusted, but for the wrong name
        module, settings, user = gateway(server.port, tls=(mode == "other-name"))
        for key, value in settings.items():
            if "password" in key:
                sandboxlib.remember_secret(value)
        request = sandboxlib.gateway_request(settings, "hello", user, subject="s")
        done = sandbox.run(module, "--command", "outgoing", input=request, timeout=HARD_BOUND)
    finally:
        server.stop()
    assert done.returncode == 1, (done.returncode, done.stdout)
    error = xmlio.parse(done.stdout).find("error")
    assert error.get("type") in ("connect", "send")
    message = xmlio.text(error, "msg")
    assert message and "Traceback" not in message
    if mode == "other-name":
        assert "certificate" in message.lower() or "tls" in message.lower(), message
