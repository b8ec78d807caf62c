"""Fetching incoming mail over IMAP4rev1 (RFC 3501) or POP3 (RFC 1939), on ``imaplib`` and ``poplib``.

``IMAPMailbox`` and ``POP3Mailbox`` share one interface: ``fetch(limit)`` returns the raw bytes of up
to ``limit`` unread messages and changes nothing on the server; ``mark_seen(keys)`` or
``delete(keys)`` then lets the server forget them. A caller hands the messages on first and marks
them after, so a crash in between means the same mail again next time, never a lost one. POP3 has
no "seen" flag: the UIDs already handed on are kept in a small file (``SeenList``) instead.
``MailboxLock`` keeps a second run off a mailbox until the first has marked what it handed on.
"""

import base64
import imaplib
import poplib
import re
import socket

from . import netfail, tls, xmlio
from .errors import ConfigError, ConnectError, MgrNotifyError

SECURITY_MODES = ("ssl", "starttls", "none")

# A mail with one overlong line (common in real HTML mail) must not block the mailbox for good:
# poplib refuses lines over 2048 bytes, imaplib lines over 1 MB.
poplib._MAXLINE = max(poplib._MAXLINE, 1024 * 1024)


class MailboxError(MgrNotifyError):
    """Anything that kept incoming mail from being fetched or marked."""


class MailboxConnectError(MailboxError, ConnectError):
    """The server cannot be reached, TLS with it failed, it refused the login or a command."""


class MailboxFolderError(MailboxError, ConfigError):
    """The IMAP folder to read does not exist or cannot be opened."""


class Mailbox:
    """The shared part of the IMAP and POP3 mailboxes: address, failures, ``with``."""

    #: the protocol's name in sentences; its usual ports by security mode; its library's error classes
    protocol = None
    PORTS = {}
    PROTOCOL_ERRORS = ()

    def __init__(self, host, port=None, security="ssl", timeout=30, verify_tls=True):
        self.host = host
        self.port = port or self.PORTS[security]
        self.security = security
        self.timeout = timeout
        self.verify_tls = verify_tls
        self.address = "%s:%d" % (host, self.port)

    def ports_hint(self):
        """The usual pairing of ports and security modes, for sentences about a mismatch."""
        return "%d is ssl, %d starttls or none" % (self.PORTS["ssl"], self.PORTS["starttls"])

    def failure(self, error, doing):
        """The MailboxError for an exception raised while ``doing`` something; other errors pass unchanged."""
        if isinstance(error, MgrNotifyError):
            return error
        where = "The %s server %s" % (self.protocol, self.address)
        if isinstance(error, self.PROTOCOL_ERRORS) and doing == "connecting":
            text = ("%s did not greet like a %s server (%s); check the port and the security mode (%s)"
                    % (where, self.protocol, _text(error), self.ports_hint()))
        elif isinstance(error, self.PROTOCOL_ERRORS):
            text = "%s failed while %s: %s" % (where, doing, _text(error))
        elif netfail.kind(error):
            text = "%s %s" % (where, netfail.explain(error, self.timeout, self.ports_hint()))
        else:
            return error
        return MailboxConnectError(text, obj=self.protocol.lower(), value=self.address)

    def refused_login(self, user, error):
        """The error for credentials the server turned down."""
        return MailboxConnectError("The %s server %s refused the login for user '%s' (%s); check the incoming "
                                   "mail login and password" % (self.protocol, self.address, user, _text(error)),
                                   obj=self.protocol.lower(), value=self.address)

    def _call(self, doing, method, *args):
        """``method(*args)`` (a call of imaplib or poplib) with its failures turned into MailboxErrors."""
        try:
            return method(*args)
        except Exception as e:
            raise self.failure(e, doing)

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()


class IMAPMailbox(Mailbox):
    """One IMAP connection to one folder: ``connect``, ``login``, ``fetch``, ``mark_seen`` or ``delete``, ``close``."""

    protocol = "IMAP"
    PORTS = {"ssl": 993, "starttls": 143, "none": 143}
    PROTOCOL_ERRORS = (imaplib.IMAP4.error,)

    def __init__(self, host, port=None, security="ssl", timeout=30, verify_tls=True, folder="INBOX"):
        super().__init__(host, port, security, timeout, verify_tls)
        self.folder = folder
        self.imap = None

    def connect(self):
        """Open the connection and secure it as the security mode says."""
        # imaplib takes a timeout argument only from Python 3.9; a socket made while this default is set keeps it.
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(self.timeout)
        try:
            if self.security == "ssl":
                self.imap = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=tls.context(self.verify_tls))
            else:
                self.imap = imaplib.IMAP4(self.host, self.port)
                if self.security == "starttls":
                    self.imap.starttls(ssl_context=tls.context(self.verify_tls))
        except Exception as e:
            self.close()
            raise self.failure(e, "connecting")
        finally:
            socket.setdefaulttimeout(previous)

    def login(self, user, password):
        """Authenticate as ``user`` and open the folder; a login or password that is not ASCII goes as UTF-8."""
        try:
            if _ascii(user) and _ascii(password):
                self.imap.login(user, password)
            else:
                self._login_utf8(user, password)
        except imaplib.IMAP4.abort as e:
            raise self.failure(e, "logging in")
        except imaplib.IMAP4.error as e:
            raise self.refused_login(user, e)
        except Exception as e:
            raise self.failure(e, "logging in")
        status, data = self._call("opening the folder", self.imap.select, imap_folder_name(self.folder))
        if status != "OK":
            raise MailboxFolderError("The IMAP server %s cannot open the folder '%s' (%s); check the folder setting "
                                     "(INBOX is the usual one)" % (self.address, self.folder, _text(data)),
                                     obj="in_folder", value=self.folder)

    def _login_utf8(self, user, password):
        """AUTHENTICATE PLAIN, whose RFC 4616 credentials are UTF-8: imaplib's LOGIN sends them as ASCII only."""
        if "AUTH=PLAIN" not in self.imap.capabilities:
            raise MailboxConnectError(
                "The IMAP server %s does not offer AUTHENTICATE PLAIN, which this gateway needs to send a login or "
                "password with characters other than ASCII; use an ASCII password" % self.address,
                obj="imap", value=self.address)
        credentials = b"\0".join(text.encode("utf-8") for text in ("", user, password))
        self.imap.authenticate("PLAIN", lambda challenge: credentials)

    def fetch(self, limit):
        """Up to ``limit`` unread messages, oldest first, as (uid, raw bytes); nothing is marked."""
        uids = self._ok("searching for unread mail", self.imap.uid, "SEARCH", "UNSEEN", "UNDELETED")[0].split()
        uids = sorted(uids, key=int)[:limit]
        if not uids:
            return []
        # BODY.PEEK leaves the \Seen flag alone: the mail stays unread until mark_seen.
        data = self._ok("fetching mail", self.imap.uid, "FETCH", _uid_set(uids), "(UID BODY.PEEK[])")
        wanted = set(_uid_set([uid]) for uid in uids)
        found = dict((uid, body) for uid, body in fetched_messages(data) if uid in wanted)
        return sorted(found.items(), key=lambda message: int(message[0]))

    def mark_seen(self, uids):
        """Flag the messages ``uids`` as read."""
        if uids:
            self._ok("marking mail as read", self.imap.uid, "STORE", _uid_set(uids), "+FLAGS.SILENT", r"(\Seen)")

    def delete(self, uids):
        """Delete the messages ``uids`` (only these where the server has UID EXPUNGE)."""
        if not uids:
            return
        self._ok("deleting mail", self.imap.uid, "STORE", _uid_set(uids), "+FLAGS.SILENT", r"(\Deleted)")
        capabilities = self._ok("asking for capabilities", self.imap.capability)[0].upper().split()
        if b"UIDPLUS" in capabilities:
            self._ok("deleting mail", self.imap.uid, "EXPUNGE", _uid_set(uids))
        else:
            self._ok("deleting mail", self.imap.expunge)

    def close(self):
        """Leave the folder and log out; a connection that is already broken is just dropped."""
        if self.imap is None:
            return
        imap, self.imap = self.imap, None
        try:
            if imap.state == "SELECTED":
                imap.close()
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            try:
                imap.shutdown()
            except OSError:   # the socket is gone already (a TLS handshake that failed closed it)
                pass

    def _ok(self, doing, method, *args):
        """The data of a command that must answer OK."""
        status, data = self._call(doing, method, *args)
        if status != "OK":
            raise MailboxConnectError("The IMAP server %s answered %s while %s: %s"
                                      % (self.address, status, doing, _text(data)), obj="imap", value=self.address)
        return data


class POP3Mailbox(Mailbox):
    """One POP3 connection: ``connect``, ``login``, ``fetch``, ``mark_seen`` or ``delete``, ``close``.

    With ``seen`` (a SeenList) the messages already handed on are skipped and left on the server.
    """

    protocol = "POP3"
    PORTS = {"ssl": 995, "starttls": 110, "none": 110}
    PROTOCOL_ERRORS = (poplib.error_proto,)

    def __init__(self, host, port=None, security="ssl", timeout=30, verify_tls=True, seen=None):
        super().__init__(host, port, security, timeout, verify_tls)
        self.seen = seen
        self.pop = None
        self.listed = set()

    def connect(self):
        """Open the connection and secure it as the security mode says."""
        try:
            if self.security == "ssl":
                self.pop = poplib.POP3_SSL(self.host, self.port, timeout=self.timeout,
                                           context=tls.context(self.verify_tls))
            else:
                self.pop = poplib.POP3(self.host, self.port, timeout=self.timeout)
                if self.security == "starttls":
                    self.pop.stls(context=tls.context(self.verify_tls))
        except Exception as e:
            self.close()
            raise self.failure(e, "connecting")

    def login(self, user, password):
        """Authenticate as ``user`` (USER and PASS)."""
        try:
            self.pop.user(user)
            self.pop.pass_(password)   # poplib sends commands as UTF-8, so any password goes as it is
        except poplib.error_proto as e:
            raise self.refused_login(user, e)
        except Exception as e:
            raise self.failure(e, "logging in")

    def fetch(self, limit):
        """Up to ``limit`` messages not handed on before, oldest first, as ((number, uid), raw bytes)."""
        listing = self._list()
        self.listed = set(uid for number, uid in listing)
        known = self.seen.load() if self.seen else set()
        found = []
        for number, uid in [entry for entry in listing if entry[1] not in known][:limit]:
            lines = self._call("fetching message %s" % number, self.pop.retr, number)[1]
            found.append(((number, uid), b"\r\n".join(lines) + b"\r\n"))
        return found

    def mark_seen(self, keys):
        """Remember the messages ``keys`` as handed on; forget those no longer on the server."""
        if keys:
            self.seen.save((self.seen.load() & self.listed) | set(uid for number, uid in keys))

    def delete(self, keys):
        """Delete the messages ``keys``; QUIT is what makes the server commit it, so the session ends here."""
        if not keys:
            return
        for number, uid in keys:
            self._call("deleting message %s" % number, self.pop.dele, number)
        self._call("committing the deletion (QUIT)", self.pop.quit)
        self.pop = None

    def close(self):
        """End the session; a connection that is already broken is just dropped."""
        if self.pop is None:
            return
        pop, self.pop = self.pop, None
        try:
            pop.quit()
        except (OSError, AttributeError, poplib.error_proto):   # AttributeError: poplib after a failed STLS
            try:
                pop.close()
            except OSError:   # the socket is gone already (a TLS handshake that failed closed it)
                pass

    def _list(self):
        """(message number, uid) of every message; without UIDL (only usable when deleting) the number is the uid."""
        try:
            lines = self.pop.uidl()[1]
        except poplib.error_proto as e:
            if self.seen:
                raise MailboxConnectError(
                    "The POP3 server %s does not support UIDL (%s), which is needed to tell new mail from mail "
                    "already fetched; set the gateway to delete fetched mail instead" % (self.address, _text(e)),
                    obj="in_after", value=self.address)
            lines = self._call("listing the mailbox", self.pop.list)[1]
        except Exception as e:
            raise self.failure(e, "listing the mailbox")
        listing = []
        for line in lines:
            fields = line.decode("ascii", "replace").split()
            listing.append((fields[0], fields[1] if len(fields) > 1 else fields[0]))
        return listing


class SeenList:
    """The UIDs of POP3 messages already handed on, one per line in a file (POP3 has no "seen" flag)."""

    def __init__(self, path):
        self.path = path

    def load(self):
        """The remembered UIDs (none if the file does not exist yet)."""
        try:
            with open(self.path, encoding="ascii", errors="replace") as f:
                return set(line.strip() for line in f if line.strip())
        except FileNotFoundError:
            return set()

    def save(self, uids):
        """Replace the remembered UIDs, atomically: a crash leaves the old list or the new, never half of one."""
        from .statefile import replace_file
        replace_file(self.path, "".join(uid + "\n" for uid in sorted(uids)))


def imap_folder_name(name):
    """A folder name as IMAP wants it: modified UTF-7 (RFC 3501 5.1.3), quoted."""
    out, pending = [], []

    def flush():
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            del pending[:]

    for c in name:
        if 0x20 <= ord(c) <= 0x7E:
            flush()
            out.append("&-" if c == "&" else c)
        else:
            pending.append(c)
    flush()
    return '"%s"' % "".join(out).replace("\\", "\\\\").replace('"', '\\"')


def message_text(raw, log=None):
    """How one fetched mail travels in ``<message>``: (text, attributes), ``from`` being its sender's address.

    The message's raw source, as ntemail expects [doc], its line ends as LF (an XML reader makes CRLF
    LF anyway). A mail that is UTF-8 (ASCII included) and that XML carries exactly goes as it is; any
    other -- 8-bit text in another charset, broken bytes, characters XML 1.0 forbids, a lone CR -- as
    the same MIME message made 7-bit by ``mail.seven_bit`` [ours]. A mail the email package cannot
    take apart (nested too deep) goes as UTF-8 with its other bytes replaced, and ``log`` is told.
    """
    attrs = {"from": sender_address(raw)}
    if b"\r" not in raw.replace(b"\r\n", b""):
        try:
            text = raw.replace(b"\r\n", b"\n").decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and xmlio.clean(text) == text:
            return text, attrs
    from .mail import seven_bit
    try:
        raw = seven_bit(raw)   # 7-bit but for a UTF-8 address, which has no 7-bit form
    except Exception as e:   # RecursionError for a mail nested a thousand deep; a defect must not block the mailbox
        if log is not None:
            log.warning("A mail from '%s' (%d bytes) could not be re-encoded (%s: %s); it is handed over with the "
                        "bytes that are not UTF-8 replaced", attrs["from"], len(raw), type(e).__name__, e)
    return re.sub(b"\r\n?", b"\n", raw).decode("utf-8", "replace"), attrs


def sender_address(raw):
    """The address in a raw mail's From header ('' if there is none), for consumers that file mail by sender."""
    from email.parser import BytesHeaderParser
    from email.utils import parseaddr
    return parseaddr(str(BytesHeaderParser().parsebytes(raw).get("From", "")))[1]


# One FETCH response's opening ("12 (") and the data items fetch() asks for, as imaplib hands them over.
_FETCH_START = re.compile(rb"\d+ \(")
_UID_ITEM = re.compile(rb"(?:^|[ (])UID (\d+)")
_BODY_ITEM = re.compile(rb"(?:^|[ (])BODY\[\](?:<\d+>)? ?\{\d+\}$")


def fetched_messages(data):
    """(uid, raw bytes) of each FETCH response in ``data`` as imaplib returns it, whatever the order of the items.

    RFC 3501 7.4.2 lets a server send UID after the message: imaplib then gives ``(b'1 (BODY[] {n}', mail)``
    followed by ``b' UID 7)'``. A response starts at "N ("; what follows a literal belongs to the same response.
    A response without both a UID and a body (an unsolicited flag change) is left out.
    """
    responses = []   # [uid, body] per response
    for item in data:
        text, literal = item if isinstance(item, tuple) else (item, None)
        if not isinstance(text, bytes):
            continue
        if _FETCH_START.match(text) or not responses:
            responses.append([None, None])
        uid = _UID_ITEM.search(text)   # searched outside the literal: a mail may say "UID 5" itself
        if uid:
            responses[-1][0] = uid.group(1).decode("ascii")
        if literal is not None and _BODY_ITEM.search(text):
            responses[-1][1] = literal
    return [(uid, body) for uid, body in responses if uid is not None and body is not None]


def _ascii(text):
    """True if ``text`` is ASCII, which is all imaplib's LOGIN can send."""
    return all(ord(c) < 128 for c in text)


def _uid_set(uids):
    """A UID list for an IMAP command: ``1,5,7``."""
    return ",".join(uid.decode("ascii") if isinstance(uid, bytes) else uid for uid in uids)


def _text(what):
    """A server's answer (bytes, a list of them, or an exception holding them) as one readable line."""
    if isinstance(what, Exception):
        what = what.args[0] if what.args else type(what).__name__
    if isinstance(what, (list, tuple)):
        what = b" ".join(w for w in what if isinstance(w, bytes))
    if isinstance(what, bytes):
        what = what.decode("utf-8", "replace")
    return " ".join(str(what).split())
