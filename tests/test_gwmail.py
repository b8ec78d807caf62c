"""gate/gwmail against real servers on loopback: aiosmtpd for SMTP, Dovecot for IMAP and POP3.

Mail sent through ``outgoing`` lands in Dovecot's maildirs and comes back through ``ingoing``. Both
servers present a self-signed certificate; the module trusts it through ``SSL_CERT_FILE`` (set for
every test), except where a test takes that away to see an untrusted server refused.
"""

import base64
import email
import email.policy
import itertools
import mailbox as maildirs
import signal
import socket
import subprocess

import pytest

import sandbox as sandboxlib
from dovecot import Dovecot
from localnet import free_port, make_certificate
from mgrnotify import errors, xmlio
from mgrnotify.mail import looks_like_html, looks_like_mail, mail_address
from mgrnotify.mailbox import imap_folder_name, message_text
from smtp_server import SMTPServer

MODULE = "gate/gwmail"
GATEWAY_MAILBOX = "gw@mail.example"
SMTP_LOGIN = "gw-login"
SMTP_PASSWORD = 'Smtp pa$$ &<w0rd>"'
IMAP_PASSWORD = "Imap-S3cret&pw"
REFUSED = "refused@mail.example"
PROVIDER = {"id": "1", "name": "Провайдер", "email": "billing@provider.example"}
CYRILLIC_SUBJECT = "Счёт №42 оплачен"
CYRILLIC_BODY = "Здравствуйте, Иван!\nВаш счёт №42 оплачен. Спасибо.\n"


class MailServers:
    """The session's servers and a supply of fresh mailbox users."""

    def __init__(self, folder):
        self.cert, self.key = make_certificate(folder)
        self.dovecot = Dovecot(self.cert, self.key, IMAP_PASSWORD).start()
        self.smtp = SMTPServer(self.cert, self.key, SMTP_LOGIN, SMTP_PASSWORD,
                               lambda address: self.dovecot.maildir(address.partition("@")[0]),
                               refused=[REFUSED]).start()
        self.numbers = itertools.count(1)

    def new_user(self):
        """A user name nobody has used yet in this session (its maildir is created)."""
        user = "user%d" % next(self.numbers)
        self.dovecot.maildir(user)
        return user

    def stop(self):
        self.smtp.stop()
        self.dovecot.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    sandboxlib.remember_secret(SMTP_PASSWORD)
    sandboxlib.remember_secret(IMAP_PASSWORD)
    running = MailServers(str(tmp_path_factory.mktemp("mailcert")))
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def trusted(servers, monkeypatch):
    """The test certificate is trusted by the modules (they inherit the environment)."""
    monkeypatch.setenv("SSL_CERT_FILE", servers.cert)


@pytest.fixture
def user(servers):
    return servers.new_user()


def params(servers, user, smtp="starttls", inbound="imap", in_security="ssl", **changes):
    """Gateway settings for ``user``'s mailbox; ``changes`` override (None removes a setting)."""
    values = {
        "email": GATEWAY_MAILBOX, "from_name": "Биллинг", "smtp_host": "127.0.0.1",
        "smtp_port": str(servers.smtp.ports[smtp]), "smtp_security": smtp, "smtp_login": SMTP_LOGIN,
        "smtp_password": SMTP_PASSWORD, "in_protocol": inbound, "in_host": "127.0.0.1",
        "in_port": str(servers.dovecot.ports.get((inbound, in_security), "")), "in_security": in_security,
        "in_login": user, "in_password": IMAP_PASSWORD, "timeout": "5",
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def send(sandbox, settings, to, message=CYRILLIC_BODY, subject=CYRILLIC_SUBJECT, project=PROVIDER,
         realname="Иван Петров"):
    """Run ``outgoing``; the finished process."""
    request = sandboxlib.gateway_request(settings, message, user={"email": to, "realname": realname},
                                         project=project, subject=subject)
    return sandbox.run(MODULE, "--command", "outgoing", input=request)


def fetch(sandbox, settings):
    """Run ``ingoing``; (finished process, the raw mails it returned as bytes)."""
    done = sandbox.run(MODULE, "--command", "ingoing", input=sandboxlib.gateway_request(settings))
    return done, raw_mails(done.stdout)


def raw_mails(stdout):
    """The mails of an ``ingoing`` answer, as bytes with CRLF line ends."""
    root = xmlio.parse(stdout)
    assert root.find("error") is None, stdout
    mails = []
    for node in root.findall("messages/message"):
        if node.get("encoding") == "base64":
            mails.append(base64.b64decode(node.text))
        else:
            mails.append(node.text.replace("\n", "\r\n").encode("utf-8"))
    return mails


def parsed(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def content(part):
    """A text part's content with the CRLF line ends of MIME's canonical form read as LF."""
    return part.get_content().replace("\r\n", "\n")


def error_of(done):
    """(type, object, sentence) of an error document."""
    node = xmlio.parse(done.stdout).find("error")
    assert node is not None, done.stdout
    return node.get("type"), node.get("object"), xmlio.text(node, "msg")


def delivered_to(servers, address):
    """The envelopes the SMTP server accepted for ``address``."""
    return [e for e in servers.smtp.handler.envelopes if address in e.rcpt_tos]


def stored(servers, user):
    """How many mails ``user``'s maildir holds, read or not."""
    box = maildirs.Maildir(servers.dovecot.maildir(user), create=False)
    try:
        return len(box.keys())
    finally:
        box.close()


def drop_mail(servers, user, raw):
    """Put ``raw`` straight into ``user``'s maildir, as a local delivery agent would."""
    box = maildirs.Maildir(servers.dovecot.maildir(user), create=False)
    box.add(raw)
    box.close()


# --- unit tables: how texts are recognised and carried -----------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("ivan@example.com", "ivan@example.com"),
    ("  Ivan@Example.COM ", "Ivan@example.com"),
    ("ivan@почта.рф", "ivan@xn--80a1acny.xn--p1ai"),
    ("root@localhost", "root@localhost"),
    ("ivan example.com", None),
    ("ivan@exa mple.com", None),
    ("a<b@example.com", None),
    ("x@y\r\nBcc: z@w", None),
    ("иван@example.com", None),
    ("@example.com", None),
    ("ivan@", None),
    ("ivan@example..com", None),
])
def test_mail_address(text, expected):
    assert mail_address(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Subject: Hi\nFrom: a@b.c\n\nBody", True),
    ("MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nBody", True),
    ("Subject: folded\n  on two lines\nTo: a@b.c\n\nBody", True),
    ("Note: your invoice is ready\n\nThanks", False),
    ("Subject: only one field\n\nBody", False),
    ("Hello\nSubject: x\nTo: y\n\nBody", False),
    ("Subject: x\nTo: y\nno blank line after", False),
])
def test_looks_like_mail(text, expected):
    assert looks_like_mail(text) is expected


@pytest.mark.parametrize("text, expected", [
    ("<html><body><p>Hi</p></body></html>", True),
    ("<!DOCTYPE html>\n<html><body>Hi</body></html>\n", True),
    ("<p>Hi <b>there</b></p>", True),
    ("Hi <b>there</b>", False),
    ("<3 you, see you at 5 > 4", False),
])
def test_looks_like_html(text, expected):
    assert looks_like_html(text) is expected


@pytest.mark.parametrize("raw, as_text", [
    (b"Subject: a\r\n\r\nplain ASCII\r\n", "Subject: a\n\nplain ASCII\n"),
    ("Subject: б\r\n\r\nтекст в UTF-8\r\n".encode("utf-8"), "Subject: б\n\nтекст в UTF-8\n"),
    (b"Subject: a\n\nLF only\n", "Subject: a\n\nLF only\n"),
    ("Subject: a\r\n\r\nLatin-1: caf\xe9\r\n".encode("latin-1"), None),
    (b"Subject: a\r\n\r\nbroken \xd0 UTF-8\r\n", None),
    (b"Subject: a\r\n\r\nNUL \x00 and bell \x07\r\n", None),
    (b"Subject: a\r\n\r\nstray\rCR\r\n", None),
    (b"Subject: a\r\n\r\nmixed\nline ends\r\n", None),
])
def test_message_text_is_exact(raw, as_text):
    text, attrs = message_text(raw)
    if as_text is None:
        assert attrs.get("encoding") == "base64" and base64.b64decode(text) == raw
    else:
        assert "encoding" not in attrs and text == as_text
        # what an XML reader gets back is the same text
        assert xmlio.parse(xmlio.document(xmlio.element("message", text))).find("message").text == as_text


@pytest.mark.parametrize("name, expected", [
    ("INBOX", '"INBOX"'),
    ("~peter/mail/台北/日本語", '"~peter/mail/&U,BTFw-/&ZeVnLIqe-"'),   # RFC 3501 5.1.3
    ("Tom & Jerry", '"Tom &- Jerry"'),
    ('say "hi"', '"say \\"hi\\""'),
])
def test_imap_folder_name(name, expected):
    assert imap_folder_name(name) == expected


# --- outgoing, and back through ingoing ----------------------------------------------------------------------

def test_features(sandbox):
    root = xmlio.parse(sandbox.run(MODULE, "--command", "features").stdout)
    assert [f.get("name") for f in root.findall("features/feature")] == [
        "outgoing", "ingoing", "formtune", "check_connection"]
    assert xmlio.text(root, "notify_module") == "ntemail"


@pytest.mark.parametrize("smtp, inbound, in_security", [
    ("starttls", "imap", "ssl"),
    ("ssl", "imap", "starttls"),
    ("starttls", "pop3", "ssl"),
    ("ssl", "pop3", "starttls"),
])
def test_round_trip(sandbox, servers, user, smtp, inbound, in_security):
    settings = params(servers, user, smtp, inbound, in_security)
    to = user + "@mail.example"
    done = send(sandbox, settings, to)
    assert done.returncode == 0, done.stdout
    assert xmlio.parse(done.stdout).find("error") is None
    [envelope] = delivered_to(servers, to)
    assert envelope.mail_from == GATEWAY_MAILBOX and envelope.rcpt_tos == [to]

    done, mails = fetch(sandbox, settings)
    assert done.returncode == 0, done.stdout
    [mail] = [parsed(raw) for raw in mails]
    assert mail["Subject"] == CYRILLIC_SUBJECT
    assert content(mail) == CYRILLIC_BODY
    assert mail["From"].addresses[0].display_name == "Биллинг"
    assert mail["From"].addresses[0].addr_spec == PROVIDER["email"]
    assert mail["Sender"].addresses[0].addr_spec == GATEWAY_MAILBOX
    assert str(mail["To"]) == "Иван Петров <%s>" % to
    assert mail["Message-ID"].endswith("@mail.example>") and mail["Date"]
    assert mail["Message-ID"] in sandbox.logs()["gwmail.log"], "the log names each mail sent"
    assert all(byte < 128 for byte in mails[0]), "what gwmail sends is 7-bit: encoded words and base64"

    assert fetch(sandbox, settings)[1] == [], "fetched mail is not fetched again"


def test_from_is_the_gateway_without_a_provider_mailbox(sandbox, servers, user):
    settings = params(servers, user, from_name=None)
    assert send(sandbox, settings, user + "@mail.example", project={"id": "1", "name": "P"}).returncode == 0
    [mail] = [parsed(raw) for raw in fetch(sandbox, settings)[1]]
    assert str(mail["From"]) == GATEWAY_MAILBOX
    assert mail["Sender"] is None, "Sender is left out when it would repeat From"


def test_html_goes_out_with_a_text_part(sandbox, servers, user):
    html = ('<html><head><style>p {color: red}</style></head><body><h1>Счёт</h1>'
            '<p>Оплатите <a href="https://billing.example/pay?id=42&amp;x=1">здесь</a>.</p></body></html>')
    settings = params(servers, user)
    assert send(sandbox, settings, user + "@mail.example", message=html).returncode == 0
    [mail] = [parsed(raw) for raw in fetch(sandbox, settings)[1]]
    assert mail.get_content_type() == "multipart/alternative"
    plain, rich = mail.iter_parts()
    assert rich.get_content_type() == "text/html" and content(rich) == html + "\n"
    assert plain.get_content_type() == "text/plain"
    assert content(plain) == "Счёт\n\nОплатите здесь <https://billing.example/pay?id=42&x=1>.\n"


@pytest.mark.parametrize("mime, options", [
    ("", []),   # no MIME header: the body is encoded like any other (base64)
    ("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n", ["BODY=8BITMIME"]),
])
def test_a_complete_mail_keeps_its_headers(sandbox, servers, user, mime, options):
    hidden = servers.new_user()
    complete = ("From: Поддержка <support@provider.example>\nSubject: Своя тема\nX-Ticket: 42\n"
                "To: someone-else@mail.example\nBcc: %s@mail.example\n%s\nТекст письма\n" % (hidden, mime))
    settings = params(servers, user)
    to = user + "@mail.example"
    assert send(sandbox, settings, to, message=complete, subject="ignored").returncode == 0
    [mail] = [parsed(raw) for raw in fetch(sandbox, settings)[1]]
    assert str(mail["From"]) == "Поддержка <support@provider.example>"
    assert mail["Subject"] == "Своя тема" and mail["X-Ticket"] == "42"
    assert mail["Bcc"] is None and str(mail["To"]) == "Иван Петров <%s>" % to
    assert mail["Sender"].addresses[0].addr_spec == GATEWAY_MAILBOX
    assert content(mail) == "Текст письма\n"
    [envelope] = delivered_to(servers, to)
    assert envelope.rcpt_tos == [to]
    assert [option for option in envelope.mail_options if option.startswith("BODY=")] == options
    assert stored(servers, hidden) == 0, "a Bcc inside the text is not a recipient"


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r", "\u2028", "\x85"])
def test_line_breaks_in_subject_or_names_add_no_header(sandbox, servers, user, newline):
    to = user + "@mail.example"
    spy = servers.new_user()
    settings = params(servers, user, from_name="Биллинг%sReply-To: evil@example.com" % newline)
    done = send(sandbox, settings, to, subject="Счёт%sBcc: %s@mail.example" % (newline, spy),
                realname="Иван%sX-Injected: yes" % newline)
    assert done.returncode == 0, done.stdout
    [raw] = fetch(sandbox, settings)[1]
    mail = parsed(raw)
    assert mail["Bcc"] is None and mail["Reply-To"] is None and mail["X-Injected"] is None
    assert mail["Subject"] == "Счёт Bcc: %s@mail.example" % spy
    assert [e.rcpt_tos for e in delivered_to(servers, to)] == [[to]]
    assert stored(servers, spy) == 0


# --- failures -----------------------------------------------------------------------------------------------

@pytest.fixture
def silent_port():
    """A port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("case, error_type, words", [
    ("wrong password", "connect", ["SMTP server 127.0.0.1:", "refused the login for user 'gw-login'", "535"]),
    ("refused recipient", "send", ["SMTP server", "refused the recipient '%s'" % REFUSED, "550"]),
    ("server down", "connect", ["SMTP server 127.0.0.1:", "refused the connection"]),
    ("untrusted certificate", "connect", ["SMTP server", "certificate that cannot be verified", "verify_tls"]),
    ("starttls on the ssl port", "connect", ["SMTP server", "did not answer within 1 s", "465 is ssl"]),
    ("ssl on the starttls port", "connect", ["SMTP server", "TLS handshake", "465 is ssl, 587 starttls"]),
    ("silent server", "connect", ["SMTP server", "did not answer within 1 s"]),
    ("bad security mode", "value", ["'smtp_security' must be one of ssl, starttls, none, not 'tls'"]),
    ("bad gateway mailbox", "value", ["'email' ('not an address') is not a valid mail address"]),
])
def test_outgoing_failures(sandbox, servers, user, monkeypatch, silent_port, case, error_type, words):
    settings = params(servers, user, timeout="1")
    to = user + "@mail.example"
    if case == "wrong password":
        settings["smtp_password"] = "wrong-" + SMTP_PASSWORD
    elif case == "refused recipient":
        to = REFUSED
    elif case == "server down":
        settings["smtp_port"] = str(free_port())
    elif case == "untrusted certificate":
        monkeypatch.delenv("SSL_CERT_FILE")
    elif case == "starttls on the ssl port":
        settings["smtp_port"] = str(servers.smtp.ports["ssl"])
    elif case == "ssl on the starttls port":
        settings["smtp_security"] = "ssl"
    elif case == "silent server":
        settings["smtp_port"] = str(silent_port)
    elif case == "bad security mode":
        settings["smtp_security"] = "tls"
    elif case == "bad gateway mailbox":
        settings["email"] = "not an address"
    done = send(sandbox, settings, to)
    assert done.returncode == errors.EXIT_FAILURE, done.stdout
    kind, obj, sentence = error_of(done)
    assert kind == error_type
    for word in words:
        assert word in sentence
    assert b"Traceback" not in done.stdout + done.stderr
    assert delivered_to(servers, to) == []


def test_a_recipient_that_is_no_address_is_bad_input(sandbox, servers, user):
    done = send(sandbox, params(servers, user), "ivan@example.com\r\nRCPT TO:<x@y>")
    assert done.returncode == errors.EXIT_BAD_INPUT
    assert "is not a mail address" in error_of(done)[2]


def test_verify_tls_off_accepts_the_self_signed_servers(sandbox, servers, user, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE")
    settings = params(servers, user, verify_tls="off")
    assert send(sandbox, settings, user + "@mail.example").returncode == 0
    done, mails = fetch(sandbox, settings)
    assert len(mails) == 1
    settings["verify_tls"] = "on"
    kind, obj, sentence = error_of(sandbox.run(MODULE, "--command", "ingoing",
                                               input=sandboxlib.gateway_request(settings)))
    assert kind == "connect" and obj == "imap" and "IMAP server" in sentence and "certificate" in sentence


# --- check_connection ---------------------------------------------------------------------------------------

FORM_FIELDS = ("email", "smtp_host", "smtp_password", "in_protocol", "in_password")


@pytest.mark.parametrize("inbound, change, side", [
    ("imap", {}, None),
    ("pop3", {}, None),
    ("none", {"in_port": "1", "in_password": None}, None),
    ("imap", {"smtp_password": "wrong"}, "SMTP server"),
    ("imap", {"in_password": "wrong"}, "IMAP server"),
    ("pop3", {"in_password": "wrong"}, "POP3 server"),
    ("pop3", {"in_port": "down"}, "POP3 server"),
    ("pop3", {"in_port": "imap"}, "did not greet like a POP3 server"),
    ("imap", {"in_folder": "Нет такой"}, "IMAP server"),
])
def test_check_connection(sandbox, servers, user, inbound, change, side):
    settings = params(servers, user, inbound=inbound, **change)
    if settings.get("in_port") == "down":
        settings["in_port"] = str(free_port())
    elif settings.get("in_port") == "imap":
        settings["in_port"] = str(servers.dovecot.ports[("imap", "ssl")])
    done = sandbox.run(MODULE, "--command", "check_connection",
                       input=sandboxlib.check_connection_request(settings, FORM_FIELDS))
    if side is None:
        assert done.returncode == 0, done.stdout
        root = xmlio.parse(done.stdout)
        assert root.find("error") is None and root.find("xmlparams") is None
        assert root.find("metadata/form/field") is not None
    else:
        assert done.returncode == errors.EXIT_FAILURE
        assert side in error_of(done)[2]


# --- ingoing --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("inbound", ["imap", "pop3"])
def test_ingoing_limit_order_and_seen(sandbox, servers, user, inbound):
    settings = params(servers, user, inbound=inbound, in_limit="2")
    for number in range(3):
        drop_mail(servers, user, b"Subject: mail %d\n\nbody\n" % number)
    subjects = []
    for expected in (2, 1, 0):
        done, mails = fetch(sandbox, settings)
        assert len(mails) == expected
        subjects += [parsed(raw)["Subject"] for raw in mails]
    assert subjects == ["mail 0", "mail 1", "mail 2"]
    assert stored(servers, user) == 3, "seen mail stays on the server"
    drop_mail(servers, user, b"Subject: late\n\nbody\n")
    assert [parsed(raw)["Subject"] for raw in fetch(sandbox, settings)[1]] == ["late"]


@pytest.mark.parametrize("inbound", ["imap", "pop3"])
def test_ingoing_delete(sandbox, servers, user, inbound):
    settings = params(servers, user, inbound=inbound, in_after="delete")
    drop_mail(servers, user, b"Subject: one\n\nbody\n")
    drop_mail(servers, user, b"Subject: two\n\nbody\n")
    assert len(fetch(sandbox, settings)[1]) == 2
    assert stored(servers, user) == 0
    assert fetch(sandbox, settings)[1] == []


@pytest.mark.parametrize("inbound", ["imap", "pop3"])
def test_eight_bit_and_broken_mail_survive(sandbox, servers, user, inbound):
    utf8 = "Subject: Привет\n\nТело в UTF-8 без кодировки\n".encode("utf-8")
    latin1 = "Subject: caf\xe9\n\nLatin-1 body: na\xefve\n".encode("latin-1")
    broken = b"Subject: broken\n\nhalf a letter: \xd0 and \x01\n"
    for raw in (utf8, latin1, broken):
        drop_mail(servers, user, raw)
    done, mails = fetch(sandbox, params(servers, user, inbound=inbound))
    assert done.returncode == 0
    assert mails == [raw.replace(b"\n", b"\r\n") for raw in (utf8, latin1, broken)]
    encodings = [m.get("encoding") for m in xmlio.parse(done.stdout).findall("messages/message")]
    assert encodings == [None, "base64", "base64"]


@pytest.mark.parametrize("header, sender", [
    ("From: =?utf-8?b?0JjQstCw0L0=?= <ivan@example.com>", "ivan@example.com"),
    ("From: ivan@example.com (Ivan)", "ivan@example.com"),
    ("From: \"Петров, Иван\" <Ivan.Petrov@example.com>", "Ivan.Petrov@example.com"),
    ("X-No-From: yes", ""),
])
def test_ingoing_names_each_sender(sandbox, servers, user, header, sender):
    drop_mail(servers, user, ("%s\nSubject: hi\n\nbody\n" % header).encode("utf-8"))
    done = sandbox.run(MODULE, "--command", "ingoing", input=sandboxlib.gateway_request(params(servers, user)))
    assert [m.get("from") for m in xmlio.parse(done.stdout).findall("messages/message")] == [sender]


def test_missing_folder_is_named(sandbox, servers, user):
    done, _ = sandbox.run(MODULE, "--command", "ingoing", input=sandboxlib.gateway_request(
        params(servers, user, in_folder="Архив"))), None
    assert done.returncode == errors.EXIT_FAILURE
    kind, obj, sentence = error_of(done)
    assert (kind, obj) == ("value", "in_folder") and "cannot open the folder 'Архив'" in sentence


CRASH_WHEN_MARKING = r"""
import os, runpy, signal, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(script))), "lib", "python"))
from mgrnotify import mailbox

def crash(*args):
    os.kill(os.getpid(), signal.SIGKILL)

for cls in (mailbox.IMAPMailbox, mailbox.POP3Mailbox):
    cls.mark_seen = cls.delete = crash
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.parametrize("inbound, after", [("imap", "seen"), ("imap", "delete"), ("pop3", "seen"),
                                            ("pop3", "delete")])
def test_a_crash_before_marking_loses_no_mail(sandbox, servers, user, inbound, after):
    """The process is killed (SIGKILL) the moment it starts marking: after its answer is out, before the server
    has been told anything. The mail must come again on the next call."""
    settings = params(servers, user, inbound=inbound, in_after=after)
    drop_mail(servers, user, b"Subject: precious\n\nbody\n")
    python = sandboxlib.MODULE_PYTHON or "/usr/bin/python3"
    killed = subprocess.run([python, "-c", CRASH_WHEN_MARKING, sandbox.path(MODULE), "--command", "ingoing"],
                            input=sandboxlib.gateway_request(settings).encode("utf-8"), cwd=sandbox.root,
                            env=sandbox.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [parsed(raw)["Subject"] for raw in raw_mails(killed.stdout)] == ["precious"], "the answer was out"
    assert [parsed(raw)["Subject"] for raw in fetch(sandbox, settings)[1]] == ["precious"]
    assert fetch(sandbox, settings)[1] == []


def test_ingoing_needs_a_protocol(sandbox, servers, user):
    done, _ = sandbox.run(MODULE, "--command", "ingoing", input=sandboxlib.gateway_request(
        params(servers, user, inbound="none"))), None
    kind, obj, sentence = error_of(done)
    assert (kind, obj) == ("value", "in_protocol") and "set in_protocol to imap or pop3" in sentence


# --- the form, and secrets -----------------------------------------------------------------------------------

def test_formtune_fills_the_choice_lists_and_defaults(sandbox):
    form = xmlio.document(xmlio.element("metadata", attrs={"name": "gateway.gwmail"}),
                          xmlio.element("slist", attrs={"name": "in_after"}, children=[xmlio.element("msg", "old")]),
                          xmlio.element("in_limit", "5"), xmlio.element("timeout"))
    done = sandbox.run(MODULE, "--command", "formtune", input=form)
    root = xmlio.parse(done.stdout)
    lists = {s.get("name"): [v.text for v in s.findall("msg")] for s in root.findall("slist")}
    assert lists == {"smtp_security": ["ssl", "starttls", "none"], "in_protocol": ["imap", "pop3", "none"],
                     "in_security": ["ssl", "starttls", "none"], "in_after": ["seen", "delete"]}
    assert root.find("metadata") is not None
    values = {name: xmlio.text(root, name) for name in ("in_limit", "timeout", "smtp_security", "verify_tls")}
    assert values == {"in_limit": "5", "timeout": "30", "smtp_security": "ssl", "verify_tls": "on"}


def test_passwords_never_leak_at_debug_level(sandbox, servers, user):
    sandbox.set_log_level(9)
    runs = []
    for inbound in ("imap", "pop3"):
        settings = params(servers, user, inbound=inbound)
        runs.append(send(sandbox, settings, user + "@mail.example"))
        runs.append(fetch(sandbox, settings)[0])
        runs.append(sandbox.run(MODULE, "--command", "check_connection",
                                input=sandboxlib.check_connection_request(settings, FORM_FIELDS)))
    wrong = params(servers, user, smtp_password="Wrong-" + SMTP_PASSWORD, in_password="Wrong-" + IMAP_PASSWORD)
    runs.append(send(sandbox, wrong, user + "@mail.example"))
    runs.append(sandbox.run(MODULE, "--command", "ingoing", input=sandboxlib.gateway_request(wrong)))
    assert [r.returncode for r in runs] == [0] * 6 + [1, 1]
    logs = sandbox.logs()
    assert "DEBUG input:" in logs["gwmail.log"] and "message headers:" in logs["gwmail.log"]
    for password in (SMTP_PASSWORD, IMAP_PASSWORD, "Wrong-" + SMTP_PASSWORD, "Wrong-" + IMAP_PASSWORD):
        for form in (password, xmlio.escape(password), xmlio.escape(xmlio.escape(password))):
            for name, text in logs.items():
                assert form not in text, (name, form)
            for run in runs:
                assert form.encode("utf-8") not in run.stdout + run.stderr
