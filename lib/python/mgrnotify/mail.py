"""Composing outgoing mail (RFC 5322, MIME) with the standard library's ``email`` package.

``compose()`` turns a notification's text into a message ready for SMTP: From, Sender, To,
Subject, Date and Message-ID set; names and subjects RFC 2047-encoded when they are not ASCII;
an HTML body sent as multipart/alternative with a plain-text part. A text that already is a
complete mail keeps its own headers and body. Every header value set here is made one line first,
so a CR or LF inside a subject or a name can never start a header of its own.
"""

import email.policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import Parser
from email.utils import formatdate, make_msgid

# All we generate is 7-bit (base64 or quoted-printable bodies, encoded words in headers): every relay takes it.
POLICY = email.policy.SMTP.clone(cte_type="7bit")

# [ours] A text is taken for a complete mail when it opens with a block of header fields ended by an
# empty line and at least two of them are among these; BILLmanager does not say how its mail templates
# look, and a body that merely opens with "Note: ..." must stay a body.
MAIL_FIELDS = frozenset(["from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version",
                         "content-type"])

_SPECIALS = set('<>()[],;:"\\@')


# A display name longer than this is cut: the email package folds long encoded names in time that grows
# faster than their length (seconds for tens of thousands of characters), and no mail client shows more.
MAX_NAME = 256


def header_text(value):
    """``value`` as one header-safe line: control characters and line breaks of any kind become spaces."""
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())


def display_name(value):
    """A person's or provider's name for From/To/Sender: ``header_text``, at most MAX_NAME characters."""
    return header_text(value)[:MAX_NAME]


def mail_address(text):
    """``text`` as a plain ``local@domain`` address SMTP can carry (an IDN domain as punycode), or None."""
    local, at, domain = text.strip().rpartition("@")
    if not at or not local or not domain:
        return None
    if any(ord(c) > 126 or ord(c) < 33 or c in _SPECIALS for c in local):
        return None
    if any(ord(c) > 127 for c in domain):
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = domain.lower().split(".")
    if not all(label and all(c.isalnum() or c == "-" for c in label) for label in labels):
        return None
    return "%s@%s" % (local, ".".join(labels))


def looks_like_mail(text):
    """True if ``text`` is a complete mail: header fields, an empty line, a body (see MAIL_FIELDS)."""
    head, blank, _ = text.replace("\r\n", "\n").partition("\n\n")
    if not blank:
        return False
    names = set()
    for number, line in enumerate(head.split("\n")):
        if number and line[:1] in (" ", "\t"):
            continue   # a folded continuation of the field above
        name, colon, _ = line.partition(":")
        if not colon or not name or any(ord(c) < 33 or ord(c) > 126 for c in name):
            return False
        names.add(name.lower())
    return len(names & MAIL_FIELDS) >= 2


def looks_like_html(text):
    """True if ``text`` is an HTML document or fragment: it opens with a tag and closes with one.

    [ours] BILLmanager hands over the rendered text without saying whether it is HTML.
    """
    text = text.strip()
    return (text[:1] == "<" and text[1:2].isalpha() or text[:9].lower() == "<!doctype") \
        and text[-1:] == ">" and "</" in text


def _set_body(message, text):
    """Make ``text`` the message's content: HTML as multipart/alternative with a text part, else plain text."""
    if looks_like_html(text):
        from .htmltext import html_to_text   # here: html.parser is needed by HTML mail only
        message.set_content(html_to_text(text))
        message.add_alternative(text, subtype="html")
        for part in message.iter_parts():
            del part["MIME-Version"]   # EmailMessage puts one in every part it makes; it belongs at the top only
    else:
        message.set_content(text)


def _from_complete_mail(text):
    """A complete mail parsed; its non-ASCII header values re-set so that they go out RFC 2047-encoded."""
    message = Parser(policy=POLICY).parsestr(text)
    fields = message.raw_items()
    for name in set(message.keys()):
        del message[name]
    for name, value in fields:
        if all(ord(c) < 128 for c in value):
            message.set_raw(name, value)
        else:
            message[name] = header_text(str(POLICY.header_fetch_parse(name, value)))
    if "Content-Type" not in message:
        body = message.get_payload()
        del message["Content-Transfer-Encoding"]
        _set_body(message, body)
    return message


def _put(message, name, value):
    """Set header ``name`` to ``value``, replacing any there was."""
    del message[name]
    message[name] = value


def compose(text, subject, recipient, author, sender=None):
    """The mail of ``text`` to ``recipient`` from ``author``, transmitted by ``sender`` (each a (name, address) pair).

    A complete mail keeps its own From, Subject, Date and Message-ID; To and Sender are always set here
    (and any Bcc dropped), so the headers agree with the envelope.
    """
    text = text.lstrip("\r\n")
    complete = looks_like_mail(text)
    message = _from_complete_mail(text) if complete else EmailMessage(policy=POLICY)
    if "From" not in message:
        message["From"] = Address(display_name(author[0]), addr_spec=author[1])
    _put(message, "To", Address(display_name(recipient[0]), addr_spec=recipient[1]))
    del message["Sender"]
    if sender and sender[1] != author[1]:
        message["Sender"] = Address(display_name(sender[0]), addr_spec=sender[1])
    del message["Bcc"]
    if "Subject" not in message and subject.strip():
        message["Subject"] = header_text(subject)
    if "Date" not in message:
        message["Date"] = formatdate(localtime=True)
    if "Message-ID" not in message:
        message["Message-ID"] = make_msgid(domain=(sender or author)[1].rpartition("@")[2])
    if not complete:
        _set_body(message, text)
    return message


def to_bytes(message):
    """The message as SMTP sends it, with CRLF line ends; ASCII unless a complete mail brought 8-bit text.

    Generated with LF and only then turned into CRLF: Python 3.6 folds encoded words wrongly with CRLF.
    """
    import re
    text = message.as_string(policy=message.policy.clone(linesep="\n"))
    return re.sub(r"\r\n|\r|\n", "\r\n", text).encode("utf-8")
