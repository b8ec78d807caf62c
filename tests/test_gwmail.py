"""gate/gwmail against real servers on loopback: aiosmtpd for SMTP, Dovecot for IMAP and POP3.

Mail sent through ``outgoing`` lands in Dovecot's maildirs and comes back through ``ingoing``. Both
servers present a self-signed certificate; the module trusts it through ``SSL_CERT_FILE`` (set for
every test), except where a test takes that away to see an untrusted server refused.
"""

import base64
import email
import email.header
import email.policy
import errno
import glob
import itertools
import mailbox as maildirs
import os
import re
import signal
import socket
import subprocess
import threading
import time
from xml.etree.ElementTree import fromstring

import pytest

import sandbox as sandboxlib
from dovecot import Dovecot
from localnet import ScriptedServer, free_port, make_certificate
from mgrnotify import attachments, errors, xmlio
from mgrnotify import mail as maillib
from mgrnotify.mail import looks_like_html, looks_like_mail, mail_address
from mgrnotify.mailbox import fetched_messages, imap_folder_name, message_text

MODULE = "gate/gwmail"
GATEWAY_MAILBOX = "gw@mail.example"
SMTP_LOGIN = "gw-login"
SMTP_PASSWORD = 'Smtp pa$$ &<w0rd>"'
IMAP_PASSWORD = "Imap-S3cret&pw"
UTF8_LOGIN = "gw-utf8"
UTF8_PASSWORD = "пароль-✓"   # RFC 4616 PLAIN carries UTF-8; smtplib's and imaplib's own login only ASCII
REFUSED = "refused@mail.example"
PROVIDER = {"id": "1", "name": "Провайдер", "email": "billing@provider.example"}
CYRILLIC_SUBJECT = "Счёт №42 оплачен"
CYRILLIC_BODY = "Здравствуйте, Иван!\nВаш счёт №42 оплачен. Спасибо.\n"


class MailServers:
    """The session's servers and a supply of fresh mailbox users."""

    def __init__(self, folder):
        from smtp_server import SMTPServer   # here: without aiosmtpd (Python 3.6) the unit tables still run
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
    pytest.importorskip("aiosmtpd", reason="the SMTP test server needs aiosmtpd")
    sandboxlib.remember_secret(SMTP_PASSWORD)
    sandboxlib.remember_secret(IMAP_PASSWORD)
    sandboxlib.remember_secret(UTF8_PASSWORD)
    running = MailServers(str(tmp_path_factory.mktemp("mailcert")))
    running.smtp.authenticator.add(UTF8_LOGIN, UTF8_PASSWORD)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def utf8_dovecot(servers):
    """A second Dovecot whose one password is UTF8_PASSWORD."""
    running = Dovecot(servers.cert, servers.key, UTF8_PASSWORD).start()
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def trusted(request, monkeypatch):
    """The test certificate is trusted by the modules (they inherit the environment) wherever servers run."""
    if "servers" in request.fixturenames:
        monkeypatch.setenv("SSL_CERT_FILE", request.getfixturevalue("servers").cert)


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
    """The mails of an ``ingoing`` answer (each ``<message>`` the raw source as text), as bytes with CRLF line ends."""
    root = xmlio.parse(stdout)
    assert root.find("error") is None, stdout
    return [node.text.replace("\n", "\r\n").encode("utf-8") for node in root.findall("messages/message")]


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


def drop_mail(servers, user, raw, dovecot=None):
    """Put ``raw`` straight into ``user``'s maildir, as a local delivery agent would."""
    box = maildirs.Maildir((dovecot or servers.dovecot).maildir(user), create=False)
    box.add(raw)
    box.close()


# A module run with a few lines of Python first, which replace parts of the library to stage a fault.
PATCHED_RUN = r"""
import os, runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(script))), "lib", "python"))
%s
runpy.run_path(script, run_name="__main__")
"""


def patched(sandbox, patch, *args):
    """The argument list that runs gwmail with ``patch`` (Python source) executed first."""
    python = sandboxlib.MODULE_PYTHON or "/usr/bin/python3"
    return [python, "-c", PATCHED_RUN % patch, sandbox.path(MODULE)] + list(args)


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


def same_mail(original, carried):
    """Assert that ``carried`` (bytes, CRLF) is the MIME message ``original`` is, as the email package reads both:
    the same entities, each with the same fields in the same order (Content-Transfer-Encoding, and MIME-Version at
    the top, may be added), a field that was printable ASCII unchanged, and the same decoded body bytes."""
    before = email.message_from_bytes(original, policy=email.policy.compat32)
    after = email.message_from_bytes(carried, policy=email.policy.compat32)
    entities = list(zip(before.walk(), after.walk()))
    assert len(entities) == len(list(before.walk())) == len(list(after.walk()))
    for index, (old, new) in enumerate(entities):
        assert old.get_content_type() == new.get_content_type()
        added = [name for name in ("Content-Transfer-Encoding", "MIME-Version")
                 if name not in old and (index == 0 or name != "MIME-Version")]
        fields = [(name, value) for name, value in new.raw_items() if name not in added]
        assert [name for name, value in old.raw_items()] == [name for name, value in fields]
        for (name, value), (_, written) in zip(old.raw_items(), fields):
            if re.fullmatch(r"[\t\r\n\x20-\x7e]*", value) and name.lower() != "content-transfer-encoding":
                assert written == value, name
        if not old.is_multipart():
            assert new.get_payload(decode=True) == old.get_payload(decode=True), old.get_content_type()


def seven_bit_text(text):
    """True if a ``<message>`` text is 7-bit ASCII an XML document carries as it is."""
    return re.fullmatch(r"[\t\n\x20-\x7e]*", text) is not None


@pytest.mark.parametrize("raw, as_text", [
    (b"Subject: a\r\n\r\nplain ASCII\r\n", "Subject: a\n\nplain ASCII\n"),
    ("Subject: б\r\n\r\nтекст в UTF-8\r\n".encode("utf-8"), "Subject: б\n\nтекст в UTF-8\n"),
    (b"Subject: a\n\nLF only\n", "Subject: a\n\nLF only\n"),
    (b"Subject: a\r\n\r\nmixed\nline ends\r\n", "Subject: a\n\nmixed\nline ends\n"),
])
def test_utf8_mail_is_carried_as_it_is(raw, as_text):
    text, attrs = message_text(raw)
    assert attrs == {"from": ""} and text == as_text
    # what an XML reader gets back is the same text
    assert xmlio.parse(xmlio.document(xmlio.element("message", text))).find("message").text == as_text


@pytest.mark.parametrize("raw, subject", [
    ("Subject: caf\xe9\r\nContent-Type: text/plain; charset=latin-1\r\n\r\nLatin-1: na\xefve\r\n"
     .encode("latin-1"), "café"),
    (b"Subject: broken \xd0 header\r\n\r\nbroken \xd0 UTF-8\r\n", "broken \ufffd header"),
    (b"Subject: bell\r\n\r\nNUL \x00 and bell \x07\r\n", "bell"),
    (b"Subject: a \x07 bell\r\n\r\nbody\r\n", "a \x07 bell"),
    (b"Subject: a\r\n\r\nstray\rCR\r\n", "a"),
    ("Subject: =?utf-8?q?d=C3=A9j=C3=A0?= vu, \xe0 nouveau\r\nMIME-Version: 1.0\r\n"
     "Content-Type: text/plain; charset=\"windows-1252\"\r\n\r\n€ 1\r\n".encode("cp1252"), "déjà vu, à nouveau"),
    ("From: \"Петров, Иван\" <ivan@example.com> (Отдел продаж)\r\nSubject: Счёт\r\n"
     "Content-Type: text/plain; charset=koi8-r\r\n\r\nТекст\r\n".encode("koi8-r"), "Счёт"),
    ("To: Иван <иван@почта.рф>\r\nSubject: Адрес\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n".encode("utf-8")
     + "Тело".encode("koi8-r"), "Адрес"),
])
def test_other_mail_is_carried_as_the_same_mail_in_7_bit(raw, subject):
    """What XML cannot carry exactly is transfer-encoded: the text stays the mail's source, parsed the same."""
    text, attrs = message_text(raw)
    assert "encoding" not in attrs
    assert xmlio.parse(xmlio.document(xmlio.element("message", text))).find("message").text == text
    if "иван@" not in text:   # a UTF-8 address has no 7-bit form: it stays UTF-8
        assert seven_bit_text(text), text
    carried = text.replace("\n", "\r\n").encode("utf-8")
    same_mail(raw, carried)
    assert str(parsed(carried)["Subject"]) == subject


def test_addresses_and_parameters_keep_their_meaning_in_7_bit():
    """A quoted name, a comment, a run of words with its spacing and a file name read the same once re-encoded."""
    raw = ("From: \"Петров, Иван\" <ivan@example.com> (Отдел продаж)\r\nTo: Поддержка <support@example.com>, "
           "x@example.com\r\nSubject: Счёт  оплачен, спасибо\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
           "--b\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\nТекст\r\n"
           "--b\r\nContent-Type: application/pdf; name=\"Акт N1.pdf\"\r\n"
           "Content-Disposition: attachment;\r\n filename=\"Акт N1.pdf\"\r\n\r\n%PDF\r\n--b--\r\n")
    text, _ = message_text(raw.encode("koi8-r"))
    assert seven_bit_text(text)
    mail = parsed(text.replace("\n", "\r\n").encode("ascii"))
    [author] = mail["From"].addresses
    assert (author.display_name, author.addr_spec) == ("Петров, Иван", "ivan@example.com")
    raw_from = email.message_from_string(text, policy=email.policy.compat32)["From"]
    comment = re.search(r"<ivan@example\.com> \((.+)\)$", re.sub(r"\r?\n", "", raw_from)).group(1)
    assert str(email.header.make_header(email.header.decode_header(comment))) == "Отдел продаж"
    assert [(a.display_name, a.addr_spec) for a in mail["To"].addresses] == [
        ("Поддержка", "support@example.com"), ("", "x@example.com")]
    assert str(mail["Subject"]) == "Счёт  оплачен, спасибо", "white space kept"
    [document] = list(mail.iter_attachments())
    assert document.get_filename() == "Акт N1.pdf" and document.get_param("name") == "Акт N1.pdf"
    assert all(len(line) <= 78 for line in text.split("\n\n")[0].split("\n")), "folded"


class ListLog:
    """Stands in for a module's log: keeps the warnings."""

    def __init__(self):
        self.warnings = []

    def warning(self, text, *args):
        self.warnings.append(text % args)


def test_a_mail_nested_too_deep_still_goes():
    """The email package cannot take apart a mail nested thousands deep (RecursionError): it goes as UTF-8 with its
    other bytes replaced, and the log says so; the mailbox is not blocked by it."""
    nested = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
                      for i in range(3000))
    raw = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n" + nested + b"--b3000\r\n\r\n\xff\r\n"
    log = ListLog()
    text, attrs = message_text(raw, log)
    assert attrs == {"from": "a@example.com"} and text.endswith("--b3000\n\n\ufffd\n")
    [warning] = log.warnings
    assert warning.startswith("A mail from 'a@example.com' (%d bytes) could not be re-encoded (RecursionError"
                              % len(raw))


@pytest.mark.parametrize("name, expected", [
    ("INBOX", '"INBOX"'),
    ("~peter/mail/台北/日本語", '"~peter/mail/&U,BTFw-/&ZeVnLIqe-"'),   # RFC 3501 5.1.3
    ("Tom & Jerry", '"Tom &- Jerry"'),
    ('say "hi"', '"say \\"hi\\""'),
])
def test_imap_folder_name(name, expected):
    assert imap_folder_name(name) == expected


# --- outgoing, and back through ingoing ----------------------------------------------------------------------

@pytest.mark.smoke
def test_features(sandbox):
    root = xmlio.parse(sandbox.run(MODULE, "--command", "features").stdout)
    assert [f.get("name") for f in root.findall("features/feature")] == [
        "outgoing", "ingoing", "formtune", "check_connection", "attachments"]
    assert xmlio.text(root, "notify_module") == "ntemail"


@pytest.mark.smoke
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


# --- header injection: encoded line breaks, on every interpreter BILLmanager runs ------------------------------

def q(text):
    """``text`` as one RFC 2047 Q-encoded word, the way an attacker hides a line break from a CR/LF filter."""
    return "=?utf-8?q?%s?=" % "".join(c if c.isalnum() and ord(c) < 128 else "=%02X" % byte
                                      for c in text for byte in c.encode("utf-8")).replace("=20", "_")


def b(text):
    """``text`` as one RFC 2047 B-encoded word."""
    return "=?utf-8?b?%s?=" % base64.b64encode(text.encode("utf-8")).decode("ascii")


@pytest.mark.parametrize("value, expected", [
    ("Счёт №42", "Счёт №42"),
    (q("Ivan\r\nReply-To: x"), "Ivan Reply-To: x"),
    (b("Иван\nBcc: spy@example.com"), "Иван Bcc: spy@example.com"),
    (q("a\u2028X-A: 1") + " " + q("b\x85X-B: 2"), "a X-A: 1b X-B: 2"),   # no space between two encoded words
    (q(q("Ivan\r\nBcc: x")), q("Ivan\r\nBcc: x")),                       # decoded once, never twice
    ("=?unknown-8bit?q?x=0D=0A?= =?utf-8?x?y?=", "=?unknown-8bit?q?x=0D=0A?= =?utf-8?x?y?="),
    ("tab\there\x00NUL\x1cFS", "tab here NUL FS"),
])
def test_header_text_is_one_line(value, expected):
    assert maillib.header_text(value) == expected


@pytest.mark.parametrize("value", [
    "Hi\nBcc: spy@example.com",         # a line break: one field more
    "Hi\x0bBcc: spy@example.com",       # the email package breaks lines at VT, FS, NEL, U+2028 too
    "Hi\u2028Bcc: spy@example.com",
    "Hi\n\nbody",                       # a blank line: what follows falls into the body
    "Hi\n no field, but \x01",          # a control character
])
def test_a_value_that_would_add_a_line_is_refused(value):
    message = maillib.compose("Text\n", "subject", ("", "to@example.com"), ("", "from@example.com"))
    maillib.to_bytes(message)
    message.set_raw("X-Note", value)
    with pytest.raises(maillib.HeaderError) as refused:
        maillib.to_bytes(message)
    assert refused.value.message.startswith("The mail was not sent: ")


@pytest.mark.parametrize("written, fields, words", [
    (b"From: a\r\nBcc: x\r\n\r\nbody", ["From"], "the field 'Bcc' was not set by gwmail"),
    (b"From: a\r\n\r\nTo: b\r\n\r\nbody", ["From", "To"], "held the fields From where gwmail set From, To"),
    (b"From: a\r\nTo b\r\n\r\nbody", ["From"], "held the line 'To b'"),
    (b"From: \xd0\x90\r\n\r\nbody", ["From"], "held the line 'From: \\xd0\\x90'"),
    (b"From: a\r\n b\r\nTo: c\r\n\r\nbody", ["From", "To"], None),
])
def test_the_written_header_block_is_checked(written, fields, words):
    """The final guard reads the bytes as they will be sent: exactly the fields set, in order, printable ASCII."""
    if words is None:
        maillib.check(written, [(name, "") for name in fields])
        return
    with pytest.raises(maillib.HeaderError) as refused:
        maillib.check(written, [(name, "") for name in fields])
    assert refused.value.message.startswith("The mail was not sent: once written, its header block held")
    assert words in refused.value.message


def interpreters():
    """(name, path) of each Python BILLmanager runs on that this machine has: AlmaLinux 8's 3.6, AlmaLinux 9's
    3.9, Ubuntu 24.04's 3.12 and Debian 13's 3.13 from pyenv, and the system's /usr/bin/python3."""
    found = []
    for version in ("3.6", "3.9", "3.12", "3.13"):
        paths = sorted(glob.glob("/root/.pyenv/versions/%s.*/bin/python" % version))
        found.append(("python" + version, paths[0] if paths else None))
    found.append(("system", "/usr/bin/python3"))
    return found


@pytest.fixture(params=interpreters(), ids=[name for name, path in interpreters()])
def module_python(request, monkeypatch):
    """Run the modules of this test with one interpreter after another (skipped where it is missing)."""
    name, path = request.param
    if not path or subprocess.run([path, "-c", "import defusedxml"], stderr=subprocess.DEVNULL).returncode:
        pytest.skip("no %s with defusedxml on this machine" % name)
    monkeypatch.setattr(sandboxlib, "MODULE_PYTHON", path)
    return path


def header_block(raw):
    """The field names of a mail as received, read byte by byte (not by an email package under test)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert re.fullmatch(rb"[\t\x20-\x7e]*(\r\n[\t\x20-\x7e]*)*", head), "printable ASCII lines ended by CRLF"
    names = []
    for line in head.split(b"\r\n"):
        if line[:1] not in (b" ", b"\t"):
            assert re.match(rb"[\x21-\x39\x3b-\x7e]+:", line), line
            names.append(line.partition(b":")[0].decode("ascii").lower())
    return names


OWN_FIELDS = ["from", "to", "sender", "subject", "date", "message-id", "content-type", "content-transfer-encoding",
              "mime-version"]
# ASCII once decoded, as in the attack: a non-ASCII value went out encoded even before the fix
HOSTILE_SUBJECT = q("Invoice\r\nBcc: spy@mail.example") + " and " + q(q("x\r\nX-Twice: 1"))


@pytest.mark.parametrize("case", ["names", "provider", "complete mail"])
def test_encoded_line_breaks_add_no_header(sandbox, servers, user, module_python, case):
    """Encoded line breaks in the subject, from_name, the provider's name, the recipient's name and a complete
    mail's own fields reach the SMTP server as exactly the fields gwmail writes, each one line once decoded."""
    to = user + "@mail.example"
    settings = params(servers, user, from_name=q("Billing\r\nReply-To: evil@example.com"))
    project = dict(PROVIDER, name=b("Provider\nX-Injected: provider"))
    realname = q("Ivan\rX-Injected: recipient")
    message, fields, author = CYRILLIC_BODY, OWN_FIELDS, "Billing Reply-To: evil@example.com"
    if case == "provider":
        settings["from_name"] = ""
        realname = 'Иван "Гроза", <evil@example.com>'   # Python 3.6 used to show the address inside the quotes
        author = "Provider X-Injected: provider"
    elif case == "complete mail":
        message = ("From: %s <support@provider.example>\nSubject: %s\nX-Ticket: %s\nTo: spy@mail.example\n"
                   "Bcc: spy@mail.example\n\nТекст\n" % (b("Support\r\nBcc: spy@mail.example"), HOSTILE_SUBJECT,
                                                        q("42\r\nReply-To: evil@example.com")))
        fields = ["from", "subject", "x-ticket", "content-type", "content-transfer-encoding", "mime-version", "to",
                  "sender", "date", "message-id"]
        author = "Support Bcc: spy@mail.example"
    done = send(sandbox, settings, to, message=message, subject=HOSTILE_SUBJECT, project=project, realname=realname)
    assert done.returncode == 0, done.stdout
    [envelope] = delivered_to(servers, to)
    assert envelope.rcpt_tos == [to]
    assert header_block(envelope.original_content) == fields
    mail = parsed(envelope.original_content)
    for name, value in mail.items():
        assert "\r" not in str(value) and "\n" not in str(value), (name, value)
    [recipient] = mail["To"].addresses
    assert recipient.addr_spec == to
    assert recipient.display_name == ("Ivan X-Injected: recipient" if case != "provider" else realname)
    assert mail["From"].addresses[0].display_name == author
    assert mail["Subject"] == "Invoice Bcc: spy@mail.example and " + q("x\r\nX-Twice: 1"), "decoded once only"


GUARD_ALONE = r"""
from email.headerregistry import Address
from mgrnotify import mail

def the_old_way(message, name, words):
    del message[name]
    message[name] = words[0] if isinstance(words[0], Address) else " ".join(words)

# gwmail's own writing of header values switched off: values go to the email package as they did before
mail._set = the_old_way
mail.header_text = lambda value: " ".join(value.split())
mail.unstructured = lambda text: text.split()
mail.address = lambda name, addr: [Address(mail.header_text(name), addr_spec=addr)]
"""


def test_the_guard_alone_keeps_an_added_field_from_being_sent(sandbox, servers, user, module_python):
    """With the values handed to the email package unchecked, as before: where it writes a decoded line break
    (Python 3.6 to 3.12 without the CVE-2024-6923 fix) the final guard refuses the mail; where it does not, the
    mail goes out with exactly gwmail's fields. Either way no field is added."""
    to = user + "@mail.example"
    request = sandboxlib.gateway_request(
        params(servers, user), CYRILLIC_BODY, user={"email": to, "realname": q("Ivan\r\nX-Injected: recipient")},
        project=PROVIDER, subject=q("Hi\r\nBcc: spy@mail.example"))
    done = subprocess.run(patched(sandbox, GUARD_ALONE, "--command", "outgoing"), input=request.encode("utf-8"),
                          cwd=sandbox.root, env=sandbox.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60)
    if done.returncode == 0:
        [envelope] = delivered_to(servers, to)
        assert header_block(envelope.original_content) == OWN_FIELDS
        assert not module_python.startswith("/root/.pyenv/versions/3.6."), "3.6 writes the line break"
    else:
        assert done.returncode == errors.EXIT_FAILURE, done.stdout
        kind, obj, sentence = error_of(done)
        assert (kind, obj) == ("value", "message")
        assert sentence.startswith("The mail was not sent: once written, its header block held the fields")
        assert "was not set by gwmail" in sentence
        assert delivered_to(servers, to) == []
    assert delivered_to(servers, "spy@mail.example") == []


# --- attachments ----------------------------------------------------------------------------------------------

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
LONG_NAME = "Счёт-фактура " + "с длинным именем " * 5 + "№42.zip"   # 240 bytes: most a Linux name holds


def with_attachments(request, paths, where="root"):
    """``request`` with ``<attachments>`` naming ``paths`` at its root or inside its ``<message>``."""
    block = xmlio.element("attachments", children=[xmlio.element("attachment", path) for path in paths])
    closing = "</doc>" if where == "root" else "</message>"
    head, tag, tail = request.rpartition(closing)
    return head + block + tag + tail


def send_files(sandbox, settings, to, paths, where="root", message=CYRILLIC_BODY):
    """Run ``outgoing`` with attachments; the finished process."""
    request = sandboxlib.gateway_request(settings, message, user={"email": to, "realname": "Иван Петров"},
                                         project=PROVIDER, subject=CYRILLIC_SUBJECT)
    return sandbox.run(MODULE, "--command", "outgoing", input=with_attachments(request, paths, where))


def put_file(sandbox, name, data=b"", folder="docs"):
    """A file under the sandbox's var/``folder``; its path relative to MGR5."""
    os.makedirs(sandbox.path("var", folder), exist_ok=True)
    with open(sandbox.path("var", folder, name), "wb") as f:
        f.write(data)
    return "var/%s/%s" % (folder, name)


@pytest.mark.parametrize("message, body_type", [(CYRILLIC_BODY, "text/plain"),
                                                ("<html><body><p>Счёт во вложении</p></body></html>",
                                                 "multipart/alternative")])
def test_attachments_arrive(sandbox, servers, user, message, body_type):
    to = user + "@mail.example"
    invoice = put_file(sandbox, "invoice 42.pdf", PDF)
    act = put_file(sandbox, "Акт сверки №7 (январь).pdf", b"%PDF-1.4 act\n")
    archive = put_file(sandbox, LONG_NAME, b"PK\x03\x04" + bytes(range(256)))
    notes = put_file(sandbox, "notes", b"plain bytes, no extension")
    request = sandboxlib.gateway_request(params(servers, user), message, user={"email": to}, project=PROVIDER,
                                         subject=CYRILLIC_SUBJECT)
    request = with_attachments(request, [invoice, sandbox.path(act), "var/docs/../docs/invoice 42.pdf"], "root")
    request = with_attachments(request, [archive, notes], "message")
    done = sandbox.run(MODULE, "--command", "outgoing", input=request)
    assert done.returncode == 0, done.stdout
    [envelope] = delivered_to(servers, to)
    raw = envelope.original_content
    assert header_block(raw) == ["from", "to", "sender", "subject", "date", "message-id", "mime-version",
                                 "content-type"]
    assert all(len(line) <= 998 for line in raw.split(b"\r\n")) and all(byte < 128 for byte in raw)
    mail = parsed(raw)
    assert mail.get_content_type() == "multipart/mixed"
    body, *files = mail.iter_parts()
    assert body.get_content_type() == body_type
    assert [(f.get_filename(), f.get_content_type(), f.get_payload(decode=True)) for f in files] == [
        ("invoice 42.pdf", "application/pdf", PDF),   # once, though named twice
        ("Акт сверки №7 (январь).pdf", "application/pdf", b"%PDF-1.4 act\n"),
        (LONG_NAME, "application/zip", b"PK\x03\x04" + bytes(range(256))),
        ("notes", "application/octet-stream", b"plain bytes, no extension")]
    assert [f.get_param("name") for f in files] == [f.get_filename() for f in files]
    assert [f.get_content_disposition() for f in files] == ["attachment"] * 4
    assert "attached invoice 42.pdf (%d bytes)" % len(PDF) in sandbox.logs()["gwmail.log"]


def test_a_file_name_adds_no_header(sandbox, servers, user):
    to = user + "@mail.example"
    name = 'Счёт"; filename="evil.exe\nBcc: spy@mail.example\n.pdf'
    done = send_files(sandbox, params(servers, user), to, [put_file(sandbox, name, b"%PDF")])
    assert done.returncode == 0, done.stdout
    [envelope] = delivered_to(servers, to)
    assert envelope.rcpt_tos == [to] and delivered_to(servers, "spy@mail.example") == []
    [part] = parsed(envelope.original_content).iter_attachments()
    assert [name for name, value in part.items()] == ["Content-Type", "Content-Disposition",
                                                      "Content-Transfer-Encoding"]
    assert part.get_filename() == 'Счёт"; filename="evil.exe_Bcc: spy@mail.example_.pdf'


@pytest.mark.parametrize("case, words", [
    ("missing", ["does not exist"]),
    ("/etc/passwd", ["is outside", "only files below MGR5's var/"]),
    ("../etc/billmgr.conf", ["is outside"]),
    ("var/../etc/billmgr.conf", ["is outside"]),
    ("a link out of var", ["is outside", "(it is /etc/passwd)"]),
    ("a link to the config", ["is outside", "etc/billmgr.conf)"]),
    ("a folder", ["is not a regular file"]),
    ("a FIFO", ["is not a regular file"]),
    ("too big", ["over 20 MB in all, the limit"]),
    ("too big together", ["over 20 MB in all, the limit"]),
])
def test_an_attachment_that_cannot_go_stops_the_mail(sandbox, servers, user, case, words):
    """The error document names the file; the SMTP server is never contacted, so nothing is sent."""
    to = user + "@mail.example"
    good = put_file(sandbox, "good.pdf", PDF)
    if case == "missing":
        bad = "var/docs/gone.pdf"
    elif case == "a link out of var":
        os.symlink("/etc/passwd", sandbox.path("var", "docs", "passwd.pdf"))
        bad = "var/docs/passwd.pdf"
    elif case == "a link to the config":
        os.symlink("../../etc/billmgr.conf", sandbox.path("var", "docs", "conf.pdf"))
        bad = "var/docs/conf.pdf"
    elif case == "a folder":
        bad = "var/docs"
    elif case == "a FIFO":
        os.mkfifo(sandbox.path("var", "docs", "pipe.pdf"))
        bad = "var/docs/pipe.pdf"
    elif case == "too big":
        bad = put_file(sandbox, "huge.pdf")
        os.truncate(sandbox.path(bad), attachments.MAX_TOTAL + 1)
    elif case == "too big together":
        bad = put_file(sandbox, "half.pdf")
        os.truncate(sandbox.path(bad), attachments.MAX_TOTAL - len(PDF) + 1)
    else:
        bad = case
    attempts, envelopes = len(servers.smtp.authenticator.attempts), len(servers.smtp.handler.envelopes)
    started = time.time()
    done = send_files(sandbox, params(servers, user), to, [good, bad])
    assert time.time() - started < 30
    assert done.returncode == errors.EXIT_BAD_INPUT, done.stdout
    kind, obj, sentence = error_of(done)
    assert (kind, obj) == ("attachment", "attachment")
    assert xmlio.parse(done.stdout).find("error/param").text == bad
    assert sentence.startswith("The attachment '%s' " % bad) and sentence.endswith("; the message was not sent")
    for word in words:
        assert word in sentence
    assert len(servers.smtp.authenticator.attempts) == attempts, "the SMTP server was not even logged in to"
    assert len(servers.smtp.handler.envelopes) == envelopes and delivered_to(servers, to) == []


@pytest.mark.parametrize("document, expected", [
    ("<doc><attachments><attachment>var/a.pdf</attachment><attachment> </attachment>"
     "<attachment> /usr/local/mgr5/var/b.pdf </attachment></attachments></doc>",
     ["var/a.pdf", "/usr/local/mgr5/var/b.pdf"]),
    ("<doc><attachments/></doc>", []),
    ("<doc><message>text</message></doc>", []),
])
def test_attachment_paths(document, expected):
    assert attachments.paths(fromstring(document)) == expected
    assert attachments.paths(None) == []


@pytest.mark.parametrize("name, content_type", [
    ("invoice.pdf", "application/pdf"),
    ("INVOICE.PDF", "application/pdf"),
    ("acts.tar.gz", "application/gzip"),
    ("README", "application/octet-stream"),
    ("photo.jpg", "image/jpeg"),
])
def test_attachment_content_type(name, content_type):
    assert attachments.content_type(name) == content_type


def test_an_unreadable_attachment_is_named(tmp_path, monkeypatch):
    os.makedirs(str(tmp_path / "var"))
    (tmp_path / "var" / "secret.pdf").write_bytes(b"x")

    def refuse(path, *args):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(attachments.AttachmentError) as refused:
        attachments.collect(str(tmp_path), ["var/secret.pdf"])
    assert refused.value.message == ("The attachment 'var/secret.pdf' cannot be read (%s: Permission denied); the "
                                     "message was not sent" % (tmp_path / "var" / "secret.pdf"))
    assert refused.value.exit_status == errors.EXIT_BAD_INPUT


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


def test_a_refused_recipient_names_the_smtp_side_and_its_address(sandbox, servers, user):
    # README, "Error documents": an error of a server names its side and host:port, as the others do
    done = send(sandbox, params(servers, user), REFUSED)
    node = xmlio.parse(done.stdout).find("error")
    assert (done.returncode, node.get("type"), node.get("object")) == (errors.EXIT_FAILURE, "send", "smtp")
    assert xmlio.text(node, "param") == "127.0.0.1:%s" % params(servers, user)["smtp_port"]
    assert "refused the recipient '%s'" % REFUSED in xmlio.text(node, "msg")


def test_a_recipient_that_is_no_address_is_bad_input(sandbox, servers, user):
    done = send(sandbox, params(servers, user), "ivan@example.com\r\nRCPT TO:<x@y>")
    assert done.returncode == errors.EXIT_BAD_INPUT
    assert "is not a mail address" in error_of(done)[2]


@pytest.mark.parametrize("side, security", [("smtp", "ssl"), ("smtp", "starttls"), ("imap", "ssl"),
                                            ("imap", "starttls"), ("pop3", "ssl"), ("pop3", "starttls")])
def test_every_tls_connection_checks_the_certificate(sandbox, servers, user, monkeypatch, side, security):
    """Each kind of TLS connection (implicit and STARTTLS, SMTP, IMAP and POP3) refuses the test servers'
    self-signed certificate once the system does not trust it, naming its side; verify_tls off lets it through."""
    monkeypatch.delenv("SSL_CERT_FILE")
    if side == "smtp":
        settings = params(servers, user, smtp=security)
        run = lambda: send(sandbox, settings, user + "@mail.example")   # noqa: E731
    else:
        settings = params(servers, user, inbound=side, in_security=security)
        run = lambda: sandbox.run(MODULE, "--command", "ingoing",   # noqa: E731
                                  input=sandboxlib.gateway_request(settings))
    done = run()
    assert done.returncode == errors.EXIT_FAILURE, done.stdout
    kind, obj, sentence = error_of(done)
    assert kind == "connect" and "%s server" % side.upper() in sentence and "certificate" in sentence, sentence
    settings["verify_tls"] = "off"
    assert run().returncode == 0


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


@pytest.mark.smoke
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


def direction_request(settings, gateway_type, where):
    """A check_connection form whose ``gateway_type`` sits ``where`` BILLmanager may put it: among the entered
    values (``xmlparams``), at the root of the form, or in a ``<gateway>`` row; or nowhere (None)."""
    if where == "xmlparams":
        settings = dict(settings, gateway_type=gateway_type)
    request = sandboxlib.check_connection_request(settings, FORM_FIELDS + ("gateway_type",))
    extra = {"root": xmlio.element("gateway_type", gateway_type),
             "gateway": xmlio.element("gateway", children=[xmlio.element("gateway_type", gateway_type)])}.get(where)
    return request.replace("<doc>", "<doc>" + extra, 1) if extra else request


@pytest.mark.parametrize("gateway_type, where, change, outcome", [
    ("1", "xmlparams", {"in_password": "wrong"}, "SMTP"),            # outgoing: the mailbox is not tried
    ("1", "root", {"in_protocol": "pop3", "in_port": "down"}, "SMTP"),
    ("1", "gateway", {"in_host": None, "in_password": None}, "SMTP"),
    ("1", "xmlparams", {"smtp_password": "wrong"}, "SMTP server"),
    ("2", "xmlparams", {"smtp_password": "wrong"}, "IMAP"),           # ingoing: SMTP is not tried
    ("2", "root", {"smtp_host": None, "smtp_port": None, "smtp_login": None, "smtp_password": None}, "IMAP"),
    ("2", "gateway", {"smtp_port": "down", "in_protocol": "pop3"}, "POP3"),
    ("2", "xmlparams", {"in_password": "wrong"}, "IMAP server"),
    ("2", "root", {"in_protocol": "none"}, "set in_protocol to imap or pop3"),
    ("", "xmlparams", {"smtp_password": "wrong"}, "SMTP server"),    # no direction: both, as before
    ("", "xmlparams", {"in_password": "wrong"}, "IMAP server"),
    (None, None, {}, "SMTP and IMAP"),
    (None, None, {"in_protocol": "none", "in_password": None}, "SMTP"),
    ("3", "root", {"in_password": "wrong"}, "IMAP server"),          # a value we do not know: both
])
def test_check_connection_tests_the_gateways_direction(sandbox, servers, user, gateway_type, where, change, outcome):
    settings = params(servers, user, **change)
    for name in ("in_port", "smtp_port"):
        if settings.get(name) == "down":
            settings[name] = str(free_port())
    if settings.get("in_protocol") == "pop3" and "in_port" not in change:
        settings["in_port"] = str(servers.dovecot.ports[("pop3", "ssl")])
    done = sandbox.run(MODULE, "--command", "check_connection", input=direction_request(settings, gateway_type, where))
    if outcome in ("SMTP", "IMAP", "POP3", "SMTP and IMAP"):
        assert done.returncode == 0, done.stdout
        assert xmlio.parse(done.stdout).find("error") is None
        assert "Connection check passed (%s)" % outcome in sandbox.logs()["gwmail.log"]
    else:
        assert done.returncode == errors.EXIT_FAILURE, done.stdout
        assert outcome in error_of(done)[2]


def test_a_row_of_the_other_direction_still_works(sandbox, servers, user):
    """BILLmanager calls outgoing on outgoing rows and ingoing on ingoing ones; the other way round works too when
    the settings are there."""
    settings = params(servers, user)
    to = user + "@mail.example"
    request = sandboxlib.gateway_request(settings, CYRILLIC_BODY, user={"email": to}, project=PROVIDER, subject="s",
                                         gateway={"id": "7", "gateway_type": "2"})
    assert sandbox.run(MODULE, "--command", "outgoing", input=request).returncode == 0
    done = sandbox.run(MODULE, "--command", "ingoing", input=sandboxlib.gateway_request(
        settings, gateway={"id": "8", "gateway_type": "1"}))
    assert [parsed(raw)["Subject"] for raw in raw_mails(done.stdout)] == ["s"]


# --- ingoing --------------------------------------------------------------------------------------------------

@pytest.mark.smoke
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


# Mail in the charsets Russian mail still comes in, each with what a reader must find in it once parsed.
BINARY = bytes(b for b in range(1, 256) if b not in (10, 13))   # no NUL, no line ends: stored and served as given
KOI8_MAIL = ("From: \"Петров, Иван\" <ivan@example.com>\r\nSubject: Счёт N42 оплачен\r\nMIME-Version: 1.0\r\n"
             "Content-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
             "Здравствуйте!\r\nСчёт оплачен.\r\n").encode("koi8-r")
CP1251_MULTIPART = ("From: Иван <ivan@example.com>\r\nSubject: Документы\r\nMIME-Version: 1.0\r\n"
                    "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
                    "Content-Type: text/plain; charset=windows-1251\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                    "Акт во вложении.\r\n--b1\r\nContent-Type: application/octet-stream; name=\"Акт.bin\"\r\n"
                    "Content-Disposition: attachment; filename=\"Акт.bin\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                    ).encode("cp1251") + BINARY + b"\r\n--b1--\r\n"
BROKEN_MAIL = (b"From: ivan@example.com\r\nSubject: half \xd0 a letter \x01\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: text/plain; charset=utf-8\r\n\r\nhalf a letter: \xd0, a bell \x07 and \x01\r\n")
UTF8_BELL = "From: ivan@example.com\r\nSubject: Звонок\r\n\r\nUTF-8 с колокольчиком \x07\r\n".encode("utf-8")
UTF8_MAIL = "Subject: Привет\r\n\r\nТело в UTF-8 без кодировки\r\n".encode("utf-8")


@pytest.mark.parametrize("inbound", ["imap", "pop3"])
def test_mail_in_other_charsets_comes_back_as_the_same_mail(sandbox, servers, user, inbound):
    """Non-UTF-8 mail fetched from Dovecot is its raw source made 7-bit, and parses into the same message: the
    same fields in order, each meaning the same once decoded, the same decoded bytes in every part."""
    for raw in (KOI8_MAIL, CP1251_MULTIPART, BROKEN_MAIL, UTF8_BELL, UTF8_MAIL):
        drop_mail(servers, user, raw)
    done = sandbox.run(MODULE, "--command", "ingoing", input=sandboxlib.gateway_request(params(servers, user,
                                                                                              inbound=inbound)))
    assert done.returncode == 0, done.stdout
    nodes = xmlio.parse(done.stdout).findall("messages/message")
    assert [sorted(node.attrib) for node in nodes] == [["from"]] * 5, "no encoding attribute: the text is the mail"
    koi8, cp1251, broken, bell, utf8 = [node.text for node in nodes]
    assert all(seven_bit_text(text) for text in (koi8, cp1251, broken, bell))
    assert utf8 == UTF8_MAIL.decode("utf-8").replace("\r\n", "\n"), "valid UTF-8 stays exactly as it is"
    mails = raw_mails(done.stdout)
    for raw, carried in zip((KOI8_MAIL, CP1251_MULTIPART, BROKEN_MAIL, UTF8_BELL, UTF8_MAIL), mails):
        same_mail(raw, carried)
    koi8, cp1251, broken, bell = [parsed(raw) for raw in mails[:4]]
    assert koi8["Subject"] == "Счёт N42 оплачен" and koi8["From"].addresses[0].display_name == "Петров, Иван"
    assert koi8.get_content_charset() == "koi8-r" and content(koi8) == "Здравствуйте!\nСчёт оплачен.\n"
    assert cp1251["Subject"] == "Документы" and str(cp1251["From"]) == "Иван <ivan@example.com>"
    text, document = cp1251.iter_parts()
    assert content(text) == "Акт во вложении."   # the line end before a boundary belongs to the boundary
    assert document.get_filename() == "Акт.bin" and document.get_payload(decode=True) == BINARY
    assert broken["Subject"] == "half \ufffd a letter \x01"
    assert broken.get_payload(decode=True) == b"half a letter: \xd0, a bell \x07 and \x01\r\n"
    assert bell.get_payload(decode=True) == "UTF-8 с колокольчиком \x07\r\n".encode("utf-8")
    assert [m.get("from") for m in nodes] == ["ivan@example.com"] * 4 + [""]


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
import os, signal
from mgrnotify import mailbox

def crash(*args):
    os.kill(os.getpid(), signal.SIGKILL)

for cls in (mailbox.IMAPMailbox, mailbox.POP3Mailbox):
    cls.mark_seen = cls.delete = crash
"""


@pytest.mark.parametrize("inbound, after", [("imap", "seen"), ("imap", "delete"), ("pop3", "seen"),
                                            ("pop3", "delete")])
def test_a_crash_before_marking_loses_no_mail(sandbox, servers, user, inbound, after):
    """The process is killed (SIGKILL) the moment it starts marking: after its answer is out, before the server
    has been told anything. The mail must come again on the next call."""
    settings = params(servers, user, inbound=inbound, in_after=after)
    drop_mail(servers, user, b"Subject: precious\n\nbody\n")
    killed = subprocess.run(patched(sandbox, CRASH_WHEN_MARKING, "--command", "ingoing"),
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

@pytest.mark.parametrize("data, expected", [
    ([(b"1 (UID 7 BODY[] {4}", b"mail"), b")"], [("7", b"mail")]),
    ([(b"1 (BODY[] {4}", b"mail"), b" UID 7)"], [("7", b"mail")]),                    # UID after the message
    ([(b"1 (BODY[] {4}", b"mail"), b" UID 7)", (b"2 (UID 9 BODY[] {5}", b"mail2"), b")"],
     [("7", b"mail"), ("9", b"mail2")]),
    ([(b"1 (BODY[] {14}", b"Subject: UID 5"), b" UID 7)"], [("7", b"Subject: UID 5")]),   # not read in the mail
    ([b"3 (FLAGS (\\Seen) UID 8)", (b"1 (BODY[] {4}", b"mail"), b" UID 7)"], [("7", b"mail")]),   # unsolicited
    ([(b"1 (BODY[] {4}", b"mail"), b")"], []),                                          # no UID at all
])
def test_fetched_messages_in_any_order(data, expected):
    assert fetched_messages(data) == expected


class UIDLastIMAP(ScriptedServer):
    """A scripted IMAP server on loopback whose FETCH answers put the UID after the message, as RFC 3501 allows
    and Dovecot never does: one unread mail, UID 7, until a STORE marks it."""

    def __init__(self, mail):
        self.mail = mail
        self.marked = False
        super().__init__()

    def session(self, connection):
        with connection.makefile("rwb") as stream:
            self.talk(stream)

    def talk(self, stream):
        def say(line):
            stream.write(line + b"\r\n")
            stream.flush()

        say(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted")
        for line in stream:
            tag, _, command = line.rstrip(b"\r\n").partition(b" ")
            words = command.upper().split()
            if words[:1] == [b"CAPABILITY"]:
                say(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN")
            elif words[:1] == [b"SELECT"]:
                say(b"* 1 EXISTS")
            elif words[:2] == [b"UID", b"SEARCH"]:
                say(b"* SEARCH" + (b"" if self.marked else b" 7"))
            elif words[:2] == [b"UID", b"FETCH"]:
                say(b"* 1 FETCH (BODY[] {%d}\r\n%s UID 7)" % (len(self.mail), self.mail))
            elif words[:2] == [b"UID", b"STORE"]:
                self.marked = True
            elif words[:1] == [b"LOGOUT"]:
                say(b"* BYE")
                say(tag + b" OK done")
                return
            say(tag + b" OK done")


def test_imap_uid_after_the_message(sandbox, servers, user):
    raw = b"Subject: uid last\r\n\r\nThe body says UID 99.\r\n"
    server = UIDLastIMAP(raw)
    try:
        settings = params(servers, user, in_security="none", in_port=str(server.port))
        assert fetch(sandbox, settings)[1] == [raw]
        assert server.marked
        assert fetch(sandbox, settings)[1] == []
    finally:
        server.close()


# --- logins and passwords that are not ASCII -------------------------------------------------------------------

@pytest.mark.parametrize("smtp", ["starttls", "ssl"])
def test_a_password_that_is_not_ascii_sends(sandbox, servers, user, smtp):
    to = user + "@mail.example"
    settings = params(servers, user, smtp, smtp_login=UTF8_LOGIN, smtp_password=UTF8_PASSWORD)
    done = send(sandbox, settings, to)
    assert done.returncode == 0, done.stdout
    assert [e.rcpt_tos for e in delivered_to(servers, to)] == [[to]]
    settings["smtp_password"] = UTF8_PASSWORD + "-wrong"
    sandboxlib.remember_secret(settings["smtp_password"])
    kind, obj, sentence = error_of(send(sandbox, settings, to))
    assert kind == "connect" and "refused the login for user 'gw-utf8'" in sentence and "535" in sentence


@pytest.mark.parametrize("inbound, in_security", [("imap", "ssl"), ("imap", "starttls"), ("pop3", "ssl")])
def test_a_password_that_is_not_ascii_fetches(sandbox, servers, utf8_dovecot, user, inbound, in_security):
    drop_mail(servers, user, b"Subject: utf-8 login\n\nbody\n", dovecot=utf8_dovecot)
    settings = params(servers, user, inbound=inbound, in_security=in_security, in_password=UTF8_PASSWORD,
                      in_port=str(utf8_dovecot.ports[(inbound, in_security)]))
    assert [parsed(raw)["Subject"] for raw in fetch(sandbox, settings)[1]] == ["utf-8 login"]
    done = sandbox.run(MODULE, "--command", "check_connection",
                       input=sandboxlib.check_connection_request(settings, FORM_FIELDS))
    assert done.returncode == 0, done.stdout
    settings["in_password"] = UTF8_PASSWORD + "-wrong"
    sandboxlib.remember_secret(settings["in_password"])
    kind, obj, sentence = error_of(sandbox.run(MODULE, "--command", "ingoing",
                                               input=sandboxlib.gateway_request(settings)))
    assert kind == "connect" and "refused the login for user '%s'" % user in sentence


# --- two ingoing runs at once ----------------------------------------------------------------------------------

HOLD_WHEN_MARKING = r"""
import os, time
from mgrnotify import mailbox

def held(mark):
    def hold_then_mark(self, keys):
        open(os.environ["TEST_MARKING"], "w").close()
        while not os.path.exists(os.environ["TEST_RELEASE"]):
            time.sleep(0.02)
        return mark(self, keys)
    return hold_then_mark

for cls in (mailbox.IMAPMailbox, mailbox.POP3Mailbox):
    cls.mark_seen = held(cls.mark_seen)
"""


def wait_for(path, seconds=30):
    deadline = time.time() + seconds
    while not os.path.exists(path):
        assert time.time() < deadline, "%s did not appear within %d s" % (path, seconds)
        time.sleep(0.02)


@pytest.mark.parametrize("inbound", ["imap", "pop3"])
def test_two_ingoing_runs_take_turns(sandbox, servers, user, inbound, tmp_path):
    """The first run is held between its answer and its marking. A second run waits for it (``timeout``
    seconds) and then finds the mail marked; one whose wait runs out hands over nothing. No mail twice."""
    settings = params(servers, user, inbound=inbound)
    drop_mail(servers, user, b"Subject: once\n\nbody\n")
    marking, release = str(tmp_path / "marking"), str(tmp_path / "release")
    env = dict(sandbox.env(), TEST_MARKING=marking, TEST_RELEASE=release)
    request = tmp_path / "request.xml"
    request.write_text(sandboxlib.gateway_request(settings), encoding="utf-8")
    with request.open("rb") as stdin:
        first = subprocess.Popen(patched(sandbox, HOLD_WHEN_MARKING, "--command", "ingoing"), stdin=stdin,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=sandbox.root, env=env)
    try:
        wait_for(marking)

        started = time.time()
        assert fetch(sandbox, dict(settings, timeout="1"))[1] == [], "the wait ran out: nothing handed over"
        assert 1 <= time.time() - started < 10
        assert "Another ingoing run has held the %s mailbox" % inbound.upper() in sandbox.logs()["gwmail.log"]

        threading.Timer(0.5, lambda: open(release, "w").close()).start()
        assert fetch(sandbox, dict(settings, timeout="20"))[1] == [], "waited for the first run's marking"
        stdout, stderr = first.communicate(timeout=60)
    finally:
        open(release, "w").close()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert [parsed(raw)["Subject"] for raw in raw_mails(stdout)] == ["once"]
    drop_mail(servers, user, b"Subject: twice\n\nbody\n")
    assert [parsed(raw)["Subject"] for raw in fetch(sandbox, settings)[1]] == ["twice"], "the lock was released"



# --- the form, and secrets -----------------------------------------------------------------------------------

@pytest.mark.smoke
def test_formtune_fills_the_choice_lists_and_defaults(sandbox):
    form = xmlio.document(xmlio.element("metadata", attrs={"name": "gateway.gwmail"}),
                          xmlio.element("slist", attrs={"name": "in_after"}, children=[xmlio.element("msg", "old")]),
                          xmlio.element("in_limit", "5"), xmlio.element("timeout"))
    done = sandbox.run(MODULE, "--command", "formtune", input=form)
    root = xmlio.parse(done.stdout)
    lists = {s.get("name"): [v.text for v in s.findall("msg")] for s in root.findall("slist")}
    assert lists == {"smtp_security": ["ssl", "starttls", "none"], "in_protocol": ["none", "imap", "pop3"],
                     "in_security": ["ssl", "starttls", "none"], "in_after": ["seen", "delete"]}
    assert root.find("metadata") is not None
    values = {name: xmlio.text(root, name) for name in ("in_limit", "timeout", "smtp_security", "verify_tls")}
    assert values == {"in_limit": "5", "timeout": "30", "smtp_security": "ssl", "verify_tls": "on"}


def test_the_form_shows_the_fields_of_the_gateways_direction():
    """As ISPsystem's gwjabber form does: ``<if>`` rules on the gateway_type select hide every mailbox field of an
    outgoing gateway (1) and every SMTP field of an ingoing one (2); the fields both use stay."""
    with open(os.path.join(sandboxlib.REPO, "etc", "xml", "billmgr_mod_gwmail.xml"), "rb") as f:
        root = xmlio.parse(f.read())
    form = root.find("metadata[@name='gateway.gwmail']/form")
    fields = [field.get("name") for field in form.iter("field")]
    [select] = form.findall(".//field[@name='gateway_type']/select[@name='gateway_type']")
    assert select.get("type") == "radio"
    hidden = {}
    for rule in select.findall("if"):
        assert rule.get("hide") in fields, rule.get("hide")
        hidden.setdefault(rule.get("value"), set()).add(rule.get("hide"))
    assert set(hidden) == {"1", "2"}
    assert hidden["1"] == {name for name in fields if name.startswith("in_")}
    assert hidden["2"] == {name for name in fields if name.startswith("smtp_")} | {"from_name"}
    assert {"email", "verify_tls", "timeout", "gateway_type"}.isdisjoint(hidden["1"] | hidden["2"])
    for lang in ("ru", "en"):
        labels = {m.get("name"): m.text for m in root.findall("lang[@name='%s']/messages[@name='gateway.gwmail']/msg"
                                                               % lang)}
        assert labels.get("gateway_type") and labels.get("hint_gateway_type"), lang


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
