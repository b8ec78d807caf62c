"""Composing outgoing mail (RFC 5322, MIME): header fields written here, bodies by the ``email`` package.

``compose()`` turns a notification's text into a message ready for SMTP: From, Sender, To,
Subject, Date and Message-ID set; an HTML body sent as multipart/alternative with a plain-text
part. A text that already is a complete mail keeps its own headers and body.

Every header value gwmail sets is written by this module, not by the ``email`` package: before
the CVE-2024-6923 fix (Python 3.6 to 3.12) the package writes an encoded word that decodes to a
line break as a real line break, and 3.6 folds a quoted non-ASCII name so that part of it lands
outside the quotes. So a value is decoded once, made one line (``header_text``), encoded (RFC 2047)
and folded here, and handed to the package raw, which POLICY never refolds. ``to_bytes()`` then
refuses a mail whose written header block holds a field that was not set.
"""

import base64
import binascii
import email.policy
import re
from email.message import EmailMessage
from email.parser import Parser
from email.utils import formatdate, getaddresses, make_msgid

from .errors import MgrNotifyError

# All we generate is 7-bit (base64 or quoted-printable bodies, encoded words in headers): every relay takes it.
# refold_source "none": the email package writes the values set here exactly as they were folded here.
POLICY = email.policy.SMTP.clone(cte_type="7bit", refold_source="none")

# [ours] A text is taken for a complete mail when it opens with a block of header fields ended by an
# empty line and at least two of them are among these; BILLmanager does not say how its mail templates
# look, and a body that merely opens with "Note: ..." must stay a body.
MAIL_FIELDS = frozenset(["from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version",
                         "content-type"])
# Fields holding addresses: a complete mail's own are written anew as addresses, not as text.
ADDRESS_FIELDS = frozenset(["from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender",
                            "resent-to", "resent-cc", "resent-bcc"])
# [ours] Fields of a complete mail that compose() always sets itself (To, Sender) or drops (Bcc): the
# envelope decides who gets the mail, and the headers must agree with it.
SET_BY_US = frozenset(["to", "sender", "bcc"])

_SPECIALS = set('<>()[],;:"\\@')

# A display name longer than this is cut: no mail client shows more.
MAX_NAME = 256
MAX_LINE = 78               # RFC 5322 2.1.1: lines should stay within 78 characters
ENCODED_CHUNK = 45          # bytes per encoded word: 60 base64 characters, 72 with "=?utf-8?b?...?=" (at most 75)

_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+\Z")
# printable ASCII, broken only to fold: each further line opens with white space and holds more than that
_SAFE_RAW = re.compile(r"[\t\x20-\x7e]*(?:\r?\n[\t ]+[\x21-\x7e][\t\x20-\x7e]*)*\Z")
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")


class HeaderError(MgrNotifyError):
    """A mail whose header fields, as written, are not the ones gwmail set: it is not sent."""

    error_type = "value"


# --- header values ------------------------------------------------------------------------------------------

def decode_words(text):
    """``text`` with its RFC 2047 encoded words decoded, once; a word that cannot be decoded stays as it is."""
    out, position, after_word = [], 0, False
    for match in _ENCODED_WORD.finditer(text):
        between = text[position:match.start()]
        decoded = _decode_word(*match.groups())
        if decoded is None:
            out.append(text[position:match.end()])
        else:
            if not (after_word and not between.strip()):   # RFC 2047 6.2: space between two words is dropped
                out.append(between)
            out.append(decoded)
        after_word = decoded is not None
        position = match.end()
    out.append(text[position:])
    return "".join(out)


def _decode_word(charset, encoding, payload):
    """The text of one encoded word, or None when its charset or encoding is unusable."""
    try:
        if encoding in "bB":
            data = base64.b64decode(payload + "=" * (-len(payload) % 4))
        else:
            data = binascii.a2b_qp(payload.encode("ascii"), header=True)
        return data.decode(charset, "replace")
    except (LookupError, ValueError):   # unknown or non-text charset, broken base64, non-ASCII payload
        return None


def header_text(value):
    """``value`` as one line of text: encoded words decoded once, then control characters and line breaks of
    every kind (CR, LF, U+0085, U+2028, ...) made spaces, so nothing in it can become a header of its own."""
    return " ".join("".join(c if c.isprintable() else " " for c in decode_words(value)).split())


def display_name(value):
    """A person's or provider's name for From/To/Sender: ``header_text``, at most MAX_NAME characters."""
    return header_text(value)[:MAX_NAME]


def encoded_words(text):
    """``text`` as RFC 2047 encoded words (UTF-8, base64), each at most 75 characters and of whole characters."""
    chunks, chunk = [], b""
    for c in text:
        data = c.encode("utf-8", "replace")
        if len(chunk) + len(data) > ENCODED_CHUNK:
            chunks.append(chunk)
            chunk = b""
        chunk += data
    chunks.append(chunk)
    return ["=?utf-8?b?%s?=" % base64.b64encode(c).decode("ascii") for c in chunks if c]


def _plain(word):
    """True if ``word`` may stand in a header as it is: printable ASCII, no "=?" a reader would decode, short."""
    return len(word) < MAX_LINE and all(" " < c <= "~" for c in word) and "=?" not in word


def unstructured(text):
    """The words of an unstructured value (Subject) for ``fold``: plain where they can be, else encoded words."""
    tokens, pending = [], []
    for word in text.split():
        if _plain(word):
            tokens += encoded_words(" ".join(pending)) + [word]
            pending = []
        else:
            pending.append(word)   # a run of words is encoded as one text: the spaces inside it are kept
    return tokens + encoded_words(" ".join(pending))


def phrase(name):
    """The words of a display name for ``fold``: atoms as they are, other ASCII quoted, the rest encoded."""
    words = name.split()
    if not words:
        return []
    if "=?" in name or not all(" " <= c <= "~" for c in name):
        return encoded_words(" ".join(words))
    if all(_ATOM.match(word) for word in words):
        return words
    words = [word.replace("\\", "\\\\").replace('"', '\\"') for word in words]
    words[0], words[-1] = '"' + words[0], words[-1] + '"'
    return words


def address(name, addr):
    """The words of one mailbox for ``fold``: ``name <addr>``, or ``addr`` alone; ``addr`` is a mail_address()."""
    words = phrase(display_name(name))
    return words + ["<%s>" % addr] if words else [addr]


def fold(name, words):
    """The value of the field ``name`` made of ``words``, lines broken between words to stay within MAX_LINE."""
    lines, line, width = [], "", len(name) + 2
    for word in words:
        if line and width + len(line) + 1 + len(word) > MAX_LINE:
            lines.append(line)
            line, width = word, 1
        else:
            line = line + " " + word if line else word
    lines.append(line)
    return "\n ".join(lines)


def _set(message, name, words):
    """Set the field ``name`` to ``words`` (see ``fold``), replacing any there was; the email package keeps it raw."""
    del message[name]
    message.set_raw(name, fold(name, words))


# --- addresses and texts --------------------------------------------------------------------------------------

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


def _own_addresses(name, value):
    """The words of a complete mail's own address field, each address written anew (its names decoded once)."""
    words = []
    for person, addr in getaddresses([value]):
        checked = mail_address(addr)
        if not checked:
            raise HeaderError("The mail text's own %s field holds '%s', which is not a mail address gwmail can "
                              "write; correct the %s line of the mail template" % (name, header_text(value)[:200],
                                                                                   name), obj="message")
        if words:
            words[-1] += ","
        words += address(person, checked)
    return words


def _as_written(value):
    """True if a complete mail's own header value may go out as it is: printable ASCII in folded lines, and no
    encoded word in it that decodes to a line break or a control character."""
    if not _SAFE_RAW.match(value):
        return False
    words = (_decode_word(*match.groups()) for match in _ENCODED_WORD.finditer(value))
    return all(word is None or word.isprintable() for word in words)


def _from_complete_mail(text):
    """A complete mail parsed, without the fields compose() sets (SET_BY_US). A value that ``_as_written`` accepts
    is kept as it is; any other is decoded once, made one line and written anew, so that it goes out encoded."""
    message = Parser(policy=POLICY).parsestr(text)
    fields = message.raw_items()
    for name in set(message.keys()):
        del message[name]
    for name, value in fields:
        if name.lower() in SET_BY_US:
            continue
        if _as_written(value):
            message.set_raw(name, value)
        elif name.lower() in ADDRESS_FIELDS:
            message.set_raw(name, fold(name, _own_addresses(name, value)))
        else:
            message.set_raw(name, fold(name, unstructured(header_text(value))))
    if "Content-Type" not in message:
        body = message.get_payload()
        del message["Content-Transfer-Encoding"]
        _set_body(message, body)
    return message


def compose(text, subject, recipient, author, sender=None):
    """The mail of ``text`` to ``recipient`` from ``author``, transmitted by ``sender`` (each a (name, address) pair,
    the address a mail_address()).

    A complete mail keeps its own From, Subject, Date and Message-ID; To and Sender are always set here
    (and any Bcc dropped), so the headers agree with the envelope.
    """
    text = text.lstrip("\r\n")
    complete = looks_like_mail(text)
    message = _from_complete_mail(text) if complete else EmailMessage(policy=POLICY)
    if "From" not in message:
        _set(message, "From", address(*author))
    _set(message, "To", address(*recipient))
    if sender and sender[1] != author[1]:
        _set(message, "Sender", address(*sender))
    subject = header_text(subject)
    if "Subject" not in message and subject:
        _set(message, "Subject", unstructured(subject))
    if "Date" not in message:
        message.set_raw("Date", formatdate(localtime=True))
    if "Message-ID" not in message:
        message.set_raw("Message-ID", make_msgid(domain=(sender or author)[1].rpartition("@")[2]))
    if not complete:
        _set_body(message, text)
    return message


# --- the mail as sent -----------------------------------------------------------------------------------------

def to_bytes(message):
    """The message as SMTP sends it, with CRLF line ends; ASCII unless a complete mail brought an 8-bit body.

    Generated with LF and only then turned into CRLF: Python 3.6 folds encoded words wrongly with CRLF.
    Raises HeaderError (nothing is sent) unless the header block holds exactly the fields set, see ``check``.
    """
    text = message.as_string(policy=message.policy.clone(linesep="\n"))
    data = re.sub(r"\r\n|\r|\n", "\r\n", text).encode("utf-8")
    check(data, list(message.raw_items()))
    return data


def header_lines(data):
    """The header block of a mail (bytes with CRLF line ends) as its lines, folded ones not yet joined."""
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def check(data, fields):
    """Raise HeaderError unless each value of ``fields`` (the message's (name, value) pairs) breaks lines only to
    fold, and the header block of ``data`` is printable ASCII holding exactly these fields in this order: the last
    guard against a value that a Python's email package writes as more lines than one field."""
    names = [name for name, value in fields]
    for name, value in fields:
        # A raw value (one set here, not a header object of the email package) is written line by line as it is:
        # a line that is not a folded continuation would be a field of its own, a blank one would end the block.
        if not hasattr(value, "name") and any(not line.strip() or line[:1] not in " \t"
                                              for line in value.splitlines()[1:]):
            raise HeaderError("The mail was not sent: the value of its %s field holds a line break that would end "
                              "the field; look for line breaks in the subject, the names and the mail template's own "
                              "header lines" % name, obj="message")
    written = []
    for line in header_lines(data):
        odd = re.search(rb"[^\t\x20-\x7e]", line)
        field = _FIELD_NAME.match(line)
        if odd or not (field or written and line[:1] in (b" ", b"\t")):
            raise HeaderError("The mail was not sent: once written, its header block held the line '%s', which is "
                              "not part of a header field gwmail set; look for line breaks or control characters in "
                              "the subject, the names and the mail template's own header lines"
                              % line[:80].decode("ascii", "backslashreplace"), obj="message")
        if field:
            written.append(field.group(1).decode("ascii"))
    expected = [name.lower() for name in names]
    if [name.lower() for name in written] != expected:
        extra = [name for name in written if name.lower() not in expected] or written
        raise HeaderError("The mail was not sent: once written, its header block held the fields %s where gwmail "
                          "set %s (the field '%s' was not set by gwmail); look for line breaks in the subject, the "
                          "names and the mail template's own header lines"
                          % (", ".join(written), ", ".join(names), extra[0]), obj="message")
