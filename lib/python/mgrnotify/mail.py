"""Mail as gwmail writes it (RFC 5322, MIME): header fields written here, bodies by the ``email`` package.

``compose()`` turns a notification's text into a message ready for SMTP: From, Sender, To,
Subject, Date and Message-ID set; an HTML body sent as multipart/alternative with a plain-text
part. A text that already is a complete mail keeps its own headers and body. ``attach()`` adds
files to it. ``seven_bit()`` turns a fetched mail in another charset into the same MIME message
in 7-bit ASCII, which an XML document can carry.

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
MAX_WORD = 75               # RFC 2047 2: an encoded word is at most 75 characters, "=?utf-8?b?" and "?=" included
UNKNOWN_8BIT = "unknown-8bit"   # RFC 1428: the charset of 8-bit text whose charset is not known
# RFC 2231 attribute-char besides letters, digits and "_.-~" (which quote() never encodes)
_ATTRIBUTE_CHARS = "!#$&+^`{|}"

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


def encoded_words(text, charset="utf-8"):
    """``text`` as RFC 2047 encoded words (base64) in ``charset``, each at most MAX_WORD characters and of whole
    characters. For UNKNOWN_8BIT, ``text`` holds the bytes one character each (as latin-1 decodes them)."""
    codec = "latin-1" if charset == UNKNOWN_8BIT else charset
    room = (MAX_WORD - len("=??b??=") - len(charset)) // 4 * 3   # bytes: 45 for utf-8
    chunks, chunk = [], b""
    for c in text:
        data = c.encode(codec, "replace")
        if len(chunk) + len(data) > room:
            chunks.append(chunk)
            chunk = b""
        chunk += data
    chunks.append(chunk)
    return ["=?%s?b?%s?=" % (charset, base64.b64encode(c).decode("ascii")) for c in chunks if c]


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


def parameter(name, value):
    """One MIME parameter (``filename``, ``name``) for a header written here: ``name="value"`` when the value is
    printable ASCII, else RFC 2231 (``name*=utf-8''%D0%A1...``); either way one word no value can break out of."""
    if all(" " <= c <= "~" for c in value) and not set('"\\') & set(value) and "=?" not in value:
        return '%s="%s"' % (name, value)
    return extended_parameter(name, value.encode("utf-8"), "utf-8")


def extended_parameter(name, data, charset):
    """The RFC 2231 parameter ``name*=charset''value``, the bytes ``data`` percent-encoded."""
    from urllib.parse import quote
    return "%s*=%s''%s" % (name, charset, quote(data, safe=_ATTRIBUTE_CHARS))


def attach(message, files):
    """Add ``files`` (``attachments.Attachment``) to a composed message as parts of a multipart/mixed, each
    base64-encoded, its name written here (``parameter``) as file name and as the legacy Content-Type name."""
    if not files:
        return
    if message.get_content_type() != "multipart/mixed":
        message.make_mixed()
    for file in files:
        part = EmailMessage(policy=POLICY)
        part.set_raw("Content-Type", fold("Content-Type", [file.content_type + ";", parameter("name", file.name)]))
        part.set_raw("Content-Disposition", fold("Content-Disposition",
                                                 ["attachment;", parameter("filename", file.name)]))
        part.set_raw("Content-Transfer-Encoding", "base64")
        part.set_payload(base64.encodebytes(file.data).decode("ascii"))
        message.attach(part)


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


# --- fetched mail, made 7-bit ---------------------------------------------------------------------------------

# What must not stay as it is in a mail an XML document carries: 8-bit bytes, the C0 controls XML 1.0
# forbids (and NUL), and a CR that does not end a line (an XML reader turns it into LF).
_NOT_CARRIED = re.compile("[^\t\r\n\x20-\x7e]|\r(?!\n)")
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))
_CHARSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,39}\Z")
_STRUCTURED_TOKEN = re.compile(rb'[ \t]+|"(?:[^"\\]|\\.)*"?|\((?:[^()\\]|\\.)*\)?|<[^>]*>?|[^ \t"(<]+', re.S)
_PARAMETER_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"?|;|[^";]+', re.S)


def seven_bit(raw):
    """A fetched mail (bytes) as the same MIME message in 7-bit ASCII with CRLF line ends.

    [ours] Whatever an XML document could not carry exactly (8-bit bytes, control characters XML forbids, a lone
    CR) is transfer-encoded, so the message means the same to a MIME reader: a leaf part holding any is
    base64-encoded (its decoded bytes unchanged); a header field holding any is written anew with RFC 2047 encoded
    words (RFC 2231 for Content-Type and Content-Disposition parameters) in the first charset that decodes the
    field: UTF-8, the part's declared charset, the first charset the mail declares, else unknown-8bit. Everything
    else stays as it came. A UTF-8 mail address (RFC 6532) has no 7-bit form: it stays UTF-8.
    """
    import io
    from email import message_from_bytes
    from email.generator import BytesGenerator
    from email.policy import compat32
    message = message_from_bytes(raw, policy=compat32)   # compat32: header values and bodies just as they came
    declared = [charset for charset in (part.get_content_charset() for part in message.walk()) if charset]
    encoded = False
    for entity in message.walk():
        _seven_bit_fields(entity, ["utf-8", entity.get_content_charset()] + declared[:1])
        if entity.is_multipart():
            entity.preamble, entity.epilogue = _placeholders(entity.preamble), _placeholders(entity.epilogue)
        elif not _body_carried(entity):
            _to_base64(entity)
            encoded = True
    if encoded and "MIME-Version" not in message:
        message["MIME-Version"] = "1.0"
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=compat32.clone(linesep="\r\n")).flatten(message)
    return out.getvalue()


def _raw(value):
    """The bytes of a header value as the email package (compat32) holds it: 8-bit bytes as surrogates."""
    return value.encode("ascii", "surrogateescape")


def _body_carried(entity):
    """True if a leaf part's body may stay as it is. (compat32 hands an 8-bit body over decoded by its charset
    parameter, so never as ASCII; or fails to, when that parameter is unusable.)"""
    try:
        body = entity.get_payload()
    except (LookupError, TypeError, ValueError):
        return False
    return not _NOT_CARRIED.search(body or "")


def _placeholders(text):
    """A preamble or epilogue (text no reader shows) with what a 7-bit mail cannot hold made ``?``."""
    return None if text is None else re.sub("[^\t\r\n\x20-\x7e]", "?", text)


def _to_base64(entity):
    """Re-encode a leaf part's body as base64: the same decoded bytes, in 7-bit."""
    entity.set_payload(base64.encodebytes(entity.get_payload(decode=True) or b"").decode("ascii"))
    if "Content-Transfer-Encoding" in entity:
        entity.replace_header("Content-Transfer-Encoding", "base64")
    else:
        entity["Content-Transfer-Encoding"] = "base64"


def _seven_bit_fields(entity, charsets):
    """Write anew, in place and order, each header field of ``entity`` that a 7-bit mail cannot hold as it is."""
    fields = list(entity.raw_items())
    if not any(_NOT_CARRIED.search(value) for name, value in fields):
        return
    for name in set(entity.keys()):
        del entity[name]
    for name, value in fields:
        entity.set_raw(name, _seven_bit_field(name, _raw(value), charsets) if _NOT_CARRIED.search(value) else value)


def _seven_bit_field(name, data, charsets):
    """The value ``data`` (bytes) of the field ``name`` with its 8-bit and control bytes encoded, folded."""
    data = re.sub(rb"(?:\r\n|\r|\n)(?=[ \t])", b"", data)   # unfolded (RFC 5322 2.2.3; a lone CR or LF too)
    charset = _charset_of(data, charsets)
    if name.lower() in ("content-type", "content-disposition"):
        pieces = _parameter_pieces(data, charset)
    elif name.lower() in ADDRESS_FIELDS:
        pieces = _structured_pieces(data, charset)
    else:
        pieces = _text_pieces(data, charset)
    return _fold_pieces(name, pieces)


def _charset_of(data, charsets):
    """The first of ``charsets`` (names, None skipped) that Python knows, keeps ASCII as ASCII and decodes
    ``data``; UNKNOWN_8BIT when none does."""
    for charset in charsets:
        if not charset or not _CHARSET_NAME.match(charset):
            continue
        try:
            if _PRINTABLE_ASCII.decode(charset) == _PRINTABLE_ASCII.decode("ascii"):
                data.decode(charset)
                return charset.lower()
        except (LookupError, ValueError):   # unknown or non-text codec; bytes that are not of this charset
            continue
    return UNKNOWN_8BIT


def _needs_encoding(data):
    """True if ``data`` (part of a header field) holds 8-bit bytes or control characters other than tab."""
    return re.search(rb"[^\t\x20-\x7e]", data) is not None


def _words(data, charset):
    """Encoded words of the bytes ``data`` in ``charset`` (UNKNOWN_8BIT where they are not of it)."""
    try:
        return encoded_words(data.decode("latin-1" if charset == UNKNOWN_8BIT else charset), charset)
    except ValueError:
        return encoded_words(data.decode("latin-1"), UNKNOWN_8BIT)


def _text_pieces(data, charset):
    """The (white space, word) pieces of unstructured text: plain words as they are, each run of other words
    (with the white space inside it) as encoded words."""
    pieces, run, run_space = [], None, ""
    parts = re.split(rb"([ \t]+)", data)
    for index in range(0, len(parts), 2):
        space, word = parts[index - 1] if index else b"", parts[index]
        if word and _needs_encoding(word):
            if run is None:
                run, run_space = word, space.decode("ascii")
            else:
                run += space + word
            continue
        if run is not None:
            pieces += _encoded_pieces(run_space, _words(run, charset))
            run = None
        pieces.append((space.decode("ascii"), word.decode("ascii")))
    if run is not None:
        pieces += _encoded_pieces(run_space, _words(run, charset))
    return pieces


def _encoded_pieces(space, words):
    """Pieces for a run of encoded words: the first after ``space``, the others after one space (which a reader
    drops between two encoded words)."""
    return [(space if index == 0 else " ", word) for index, word in enumerate(words)]


def _structured_pieces(data, charset):
    """The pieces of an address field: a quoted string, comment or atom that needs it becomes encoded words (a
    quoted string's quotes dropped, as RFC 2047 5(3) wants of a phrase); a UTF-8 address stays as it is."""
    pieces, space, after_encoded = [], "", False
    for token in _STRUCTURED_TOKEN.findall(data):
        if token[:1] in (b" ", b"\t"):
            space += token.decode("ascii")
            continue
        encoded = _needs_encoding(token) and not (token[:1] == b"<" and _is_utf8_address(token))
        if not encoded:
            words = [token.decode("ascii", "surrogateescape")]   # a UTF-8 address is written back as its bytes
        elif token[:1] == b'"':
            words = _words(re.sub(rb"\\(.)", rb"\1", token[1:-1] if token[-1:] == b'"' and len(token) > 1
                                  else token[1:], flags=re.S), charset)
        elif token[:1] == b"(":
            words = _words(token[1:-1] if token[-1:] == b")" else token[1:], charset)
            words[0] = "(" + words[0]
            words[-1] += ")"
        else:
            words = _words(token, charset)
        if pieces and not space and (encoded or after_encoded):
            space = " "   # an encoded word stands apart from its neighbours (RFC 2047 5)
        pieces += _encoded_pieces(space, words)
        space, after_encoded = "", encoded
    if space:
        pieces.append((space, ""))
    return pieces


def _is_utf8_address(token):
    """True if ``<...>`` is UTF-8 without control characters: an address RFC 6532 allows, with no 7-bit form."""
    try:
        return token.decode("utf-8").isprintable()
    except UnicodeDecodeError:
        return False


def _parameter_pieces(data, charset):
    """The pieces of Content-Type or Content-Disposition: each parameter that needs it in RFC 2231 form. The type
    and the boundary, on which the message's structure hangs, are tokens, not text: what they cannot hold becomes
    ``?``, as does a segment that is no parameter."""
    segments, current = [], b""
    for token in _PARAMETER_TOKEN.findall(data):
        if token == b";":
            segments.append(current)
            current = b""
        else:
            current += token
    segments.append(current)
    pieces = []
    for index, segment in enumerate(segments):
        segment = segment.strip(b" \t")
        if not _needs_encoding(segment):
            text = segment.decode("ascii")
        elif index:
            text = _extended_segment(segment, charset)
        else:   # stripped as the email package strips the type it reads, so it reads the same type
            text = _token(segment.decode("ascii", "surrogateescape").strip().encode("ascii", "surrogateescape"))
        pieces.append((" " if index else "", text + (";" if index < len(segments) - 1 else "")))
    return pieces


def _extended_segment(segment, charset):
    """``key=value`` with 8-bit or control bytes as the RFC 2231 parameter ``key*=charset''%XX``; a value already
    in RFC 2231 form (``key*=``) gets those bytes percent-encoded where they are."""
    from urllib.parse import quote
    key, equals, value = segment.partition(b"=")
    key, value = key.strip(b" \t"), value.strip(b" \t")
    if not equals or not key or _needs_encoding(key) or key.lower() == b"boundary":
        return _token(segment)
    if value[:1] == b'"':
        value = re.sub(rb"\\(.)", rb"\1", value[1:-1] if value[-1:] == b'"' and len(value) > 1 else value[1:],
                       flags=re.S)
    key = key.decode("ascii")
    if key.endswith("*"):
        return "%s=%s" % (key, quote(value, safe=_ATTRIBUTE_CHARS + "'%"))
    return extended_parameter(key, value, charset)


def _token(data):
    """Bytes that must stay a token: printable ASCII, anything else made ``?``."""
    return re.sub(rb"[^\t\x20-\x7e]", b"?", data).decode("ascii")


def _fold_pieces(name, pieces):
    """A field value of (white space, word) pieces, lines broken only at white space, which is kept."""
    out, width = [], len(name) + 2
    for space, word in pieces:
        if out and space and word and width + len(space) + len(word) > MAX_LINE:
            out.append("\r\n" + space + word)
            width = len(space) + len(word)
        else:
            out.append(space + word)
            width += len(space) + len(word)
    return "".join(out)
