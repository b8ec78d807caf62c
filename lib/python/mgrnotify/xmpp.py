"""An XMPP (Jabber) client, RFC 6120 / 6121, with the standard library only: socket, ssl and expat.

Reads like smtplib: one ``XMPPClient`` per connection. ``connect()`` finds the server (SRV records,
else the domain on port 5222, or the host and port given) and opens the stream with STARTTLS,
direct TLS (XEP-0368) or no TLS; ``login(password)`` authenticates with SASL SCRAM-SHA-256,
SCRAM-SHA-1 or PLAIN and binds a resource of its own; ``send()`` sends a chat message; ``ping()``
(XEP-0199) waits until the server has handled everything sent before it and raises ``MessageError``
for messages it bounced; ``receive()`` goes online for a while and collects incoming messages
(offline ones included); ``close()`` ends the stream. Every step is bounded by ``timeout``; every
failure is an ``XMPPError`` with a sentence an admin can act on.

    with XMPPClient("gw@example.com", timeout=15) as client:
        client.connect()
        client.login(password)
        client.send("alice@example.com", "Your invoice is ready", subject="Billing")
        client.ping()
"""

import base64
import collections
import hashlib
import hmac
import os
import socket
import ssl
import stringprep
import time
import unicodedata
from xml.etree.ElementTree import Element
from xml.parsers import expat

from . import deadline as deadlines
from . import srv, tls
from .errors import ConnectError, DeliveryError
from .xmlio import escape, escape_attr

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_PING = "urn:xmpp:ping"

PORT = 5222              # RFC 6120's fallback port when the domain has no SRV record
DIRECT_TLS_PORT = 5223   # the customary direct-TLS port, for the same fallback (XEP-0368 names none)
SRV_TIMEOUT = 2.0        # the DNS lookup's share of the connect timeout, at most
CLOSE_TIMEOUT = 2.0      # how long close() waits for the server's end of the stream
MAX_STANZA_BYTES = 8 * 1024 * 1024   # one incoming stanza larger than this is an attack, not a message
# Each parsed element costs a few hundred bytes of memory, 30 times its size on the wire: 8 MB of
# "<a>" would be a gigabyte. No stanza a client receives comes near these (a message with formatted
# XHTML-IM is a dozen levels and a few hundred elements).
MAX_STANZA_DEPTH = 32
MAX_STANZA_ELEMENTS = 10000
MAX_SCRAM_ITERATIONS = 1000000       # a hostile server must not make us hash for minutes
READ_SIZE = 65536

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
TLS_MODES = ("starttls", "direct", "none")

_STREAM_ERRORS = {
    "bad-format": "it could not parse what we sent",
    "conflict": "another session took over this resource",
    "connection-timeout": "the connection was idle for too long",
    "host-gone": "the domain is no longer served there",
    "host-unknown": "it does not serve this domain; check the domain of the JID and the server setting",
    "invalid-namespace": "it did not accept our stream",
    "not-authorized": "it expected us to log in first",
    "not-well-formed": "it could not parse what we sent",
    "policy-violation": "we broke a rule of the server (too much data, too fast or too large)",
    "remote-connection-failed": "it could not reach a server it depends on",
    "reset": "it reset the stream (its security settings changed)",
    "resource-constraint": "it is overloaded; try again later",
    "see-other-host": "it asks clients to connect to another host; set the server setting to it",
    "system-shutdown": "it is shutting down; try again later",
    "unsupported-version": "it does not speak XMPP 1.0",
}

_SASL_FAILURES = {
    "aborted": "the login was aborted",
    "account-disabled": "the account is disabled",
    "credentials-expired": "the password has expired",
    "encryption-required": "it requires an encrypted connection; set tls to starttls or direct",
    "incorrect-encoding": "it could not decode the login request",
    "invalid-authzid": "it refused the identity requested",
    "invalid-mechanism": "it does not offer the login mechanism used",
    "malformed-request": "it could not understand the login request",
    "mechanism-too-weak": "it considers the login mechanism too weak",
    "not-authorized": "the account does not exist or the password is wrong",
    "temporary-auth-failure": "a temporary failure on the server; try again later",
}

_STANZA_ERRORS = {
    "service-unavailable": "the address does not exist or does not accept messages",
    "item-not-found": "the address does not exist",
    "recipient-unavailable": "the recipient is not available",
    "remote-server-not-found": "the recipient's server cannot be found",
    "remote-server-timeout": "the recipient's server does not answer",
    "jid-malformed": "it is not a valid Jabber address",
    "forbidden": "sending to it is forbidden",
    "not-allowed": "sending to it is not allowed",
    "not-authorized": "sending to it is not authorized",
    "policy-violation": "the message breaks a rule of the server",
    "resource-constraint": "the server is overloaded; try again later",
    "internal-server-error": "an internal error of the server",
}


class XMPPError(ConnectError):
    """Base of this module's errors: the server cannot be reached, refused us or broke the stream."""


class XMPPTimeout(XMPPError):
    """The server did not answer within the timeout."""


class TLSError(XMPPError):
    """TLS could not be set up: no STARTTLS offered, a failed handshake, a certificate not trusted."""


class AuthError(XMPPError):
    """The server refused the login, or could not prove it knows the password."""


class StreamError(XMPPError):
    """The server ended the stream with an error, closed it, or sent something that is not XMPP."""


class StreamEnded(StreamError):
    """The server itself ended the stream, with a stream error or its closing tag (not a lost connection). It
    handles a session's stanzas in order (RFC 6120 §10.1) and nothing after the point it stopped at, so of the
    messages sent and not yet confirmed only the first can have been handled: the rest were not."""


class MessageError(XMPPError, DeliveryError):
    """Messages were not accepted; ``failures`` maps each bounced message's id to the reason."""

    error_type = DeliveryError.error_type

    def __init__(self, message, failures=None):
        super().__init__(message)
        self.failures = failures or {}


def split_jid(jid):
    """(local, domain, resource) of a JID (``local`` and ``resource`` may be empty); ValueError if malformed."""
    bare, _, resource = jid.partition("/")
    local, at, domain = bare.rpartition("@")
    if not domain or (at and not local) or any(c.isspace() for c in jid) or any(c in '"&\'<>' for c in bare):
        raise ValueError("'%s' is not a Jabber address (JID) like name@example.com" % jid)
    return local, domain, resource


def _is_jid(text):
    try:
        split_jid(text)
        return True
    except ValueError:
        return False


def bare_jid(jid):
    """``local@domain`` of a full JID."""
    local, domain, _ = split_jid(jid)
    return "%s@%s" % (local, domain) if local else domain


def saslprep(text):
    """RFC 4013 preparation of a password for SCRAM: non-ASCII spaces mapped, invisible characters dropped, NFKC."""
    if all(ord(c) < 128 for c in text):
        return text
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c))
    return unicodedata.normalize("NFKC", mapped)


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _unb64(text):
    """Strict base64 (RFC 4648: the alphabet and padding, nothing else); ValueError otherwise."""
    return base64.b64decode(text, validate=True)


class Scram:
    """The client side of one SCRAM exchange (RFC 5802, RFC 7677), without channel binding."""

    HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}

    def __init__(self, mechanism, username, password, gs2_header="n,,", nonce=None):
        self.hash = self.HASHES[mechanism]
        self.gs2_header = gs2_header
        self.nonce = nonce or _b64(os.urandom(18))
        self.password = saslprep(password)
        self.client_first_bare = "n=%s,r=%s" % (username.replace("=", "=3D").replace(",", "=2C"), self.nonce)
        self.server_signature = None

    def first_message(self):
        """client-first-message."""
        return self.gs2_header + self.client_first_bare

    @staticmethod
    def _attributes(message):
        attrs = {}
        for part in message.split(","):
            key, equals, value = part.partition("=")
            if not equals or len(key) != 1:
                raise ValueError("the server's SCRAM message is malformed")
            attrs[key] = value
        return attrs

    def _hmac(self, key, data):
        return hmac.new(key, data, self.hash).digest()

    def final_message(self, server_first):
        """client-final-message (with the proof) for the server-first-message; ValueError if it is unusable."""
        attrs = self._attributes(server_first)
        if "e" in attrs:
            raise ValueError("the server reports '%s'" % attrs["e"])
        if "m" in attrs:   # RFC 5802 §5.1: a mandatory extension this client cannot know must fail the login
            raise ValueError("the server requires a SCRAM extension this client does not know ('m=%s')"
                             % attrs["m"])
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise ValueError("the server's nonce does not extend ours")
        if not iterations.isdigit() or not 0 < int(iterations) <= MAX_SCRAM_ITERATIONS or not salt:
            raise ValueError("the server asks for %s iterations with salt '%s'" % (iterations, salt))
        try:
            salt_bytes = _unb64(salt)
        except ValueError:
            raise ValueError("the server's salt '%s' is not valid base64" % salt)
        salted = hashlib.pbkdf2_hmac(self.hash, self.password.encode("utf-8"), salt_bytes, int(iterations))
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.hash, client_key).digest()
        without_proof = "c=%s,r=%s" % (_b64(self.gs2_header.encode("utf-8")), nonce)
        auth_message = ("%s,%s,%s" % (self.client_first_bare, server_first, without_proof)).encode("utf-8")
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return "%s,p=%s" % (without_proof, _b64(proof))

    def verify(self, server_final):
        """Check the server-final-message's signature; ValueError if the server does not know the password."""
        attrs = self._attributes(server_final)
        if "e" in attrs:
            raise ValueError("the server reports '%s'" % attrs["e"])
        try:
            signature = _unb64(attrs.get("v", ""))
        except ValueError:
            signature = b""   # not base64: no signature, which the check below refuses
        if not hmac.compare_digest(signature, self.server_signature or b""):
            raise ValueError("the server's signature is wrong: it does not know the password, or someone "
                             "is between us and the server")


def _tag(name):
    """An expat name ``uri local`` as ElementTree's ``{uri}local``."""
    uri, space, local = name.partition(" ")
    return "{%s}%s" % (uri, local) if space else name


class _StreamReader:
    """The bytes of one XML stream as stanzas: the root opens once, each element at depth 1 is a stanza.

    A stanza is refused (ValueError) past MAX_STANZA_BYTES, MAX_STANZA_DEPTH levels or
    MAX_STANZA_ELEMENTS elements, before it can take much memory.
    """

    def __init__(self):
        self.root = None
        self.stanzas = collections.deque()
        self.closed = False
        self._stack = []
        self._bytes = 0
        self._elements = 0   # in the stanza being read
        self._parser = parser = expat.ParserCreate("UTF-8", " ")
        parser.buffer_text = True
        if hasattr(parser, "SetReparseDeferralEnabled"):
            # expat >= 2.6 (Python 3.13, patched 3.8-3.12) may hold back a token split over reads until more
            # bytes come: a stream must give each stanza as soon as it is complete. MAX_STANZA_BYTES bounds the
            # reparsing cost that deferral saves.
            parser.SetReparseDeferralEnabled(False)
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        # RFC 6120 §11.1: a stream carries no DTD, entity declarations or processing instructions.
        parser.StartDoctypeDeclHandler = self._refuse("a DOCTYPE declaration")
        parser.EntityDeclHandler = self._refuse("an entity declaration")
        parser.ProcessingInstructionHandler = self._refuse("a processing instruction")

    @staticmethod
    def _refuse(what):
        def handler(*args):
            raise ValueError("%s, which XMPP forbids" % what)
        return handler

    def feed(self, data):
        """Parse more bytes; ValueError if they are not a well-formed, acceptable stream."""
        if self.closed:
            return
        self._bytes += len(data)
        try:
            self._parser.Parse(data, False)
        except expat.ExpatError as e:
            raise ValueError("XML that is not well-formed (%s)" % expat.ErrorString(e.code))
        if self._bytes > MAX_STANZA_BYTES:
            raise ValueError("a stanza larger than %d bytes" % MAX_STANZA_BYTES)

    def _start(self, name, attrs):
        if self.root is not None:
            # Attributes count as elements: each costs as much memory.
            self._elements += 1 + len(attrs)
            if len(self._stack) >= MAX_STANZA_DEPTH:
                raise ValueError("a stanza with elements nested more than %d deep" % MAX_STANZA_DEPTH)
            if self._elements > MAX_STANZA_ELEMENTS:
                raise ValueError("a stanza of more than %d elements and attributes" % MAX_STANZA_ELEMENTS)
        element = Element(_tag(name), {_tag(k): v for k, v in attrs.items()})
        if self.root is None:
            if element.tag != "{%s}stream" % NS_STREAM:
                raise ValueError("<%s> instead of an XMPP stream" % name.rpartition(" ")[2])
            self.root = element
            return
        if self._stack:
            self._stack[-1].append(element)
        self._stack.append(element)

    def _end(self, name):
        if not self._stack:
            self.closed = True
            return
        element = self._stack.pop()
        if not self._stack:
            # A finished stanza leaves the root at once, or memory grows with every message.
            self.stanzas.append(element)
            self._bytes = 0
            self._elements = 0

    def _text(self, text):
        if not self._stack:
            return
        current = self._stack[-1]
        if len(current):
            current[-1].tail = (current[-1].tail or "") + text
        else:
            current.text = (current.text or "") + text


def _condition(error, namespace):
    """(condition, server's text) of a stream or stanza ``<error>``."""
    condition, text = "undefined-condition", ""
    for child in error if error is not None else ():
        if child.tag == "{%s}text" % namespace:
            text = (child.text or "").strip()
        elif child.tag.startswith("{%s}" % namespace):
            condition = child.tag.partition("}")[2]
    return condition, text


def _explain(condition, text, table):
    """``condition: hint`` (plus the server's own words), for an error sentence."""
    hint = table.get(condition)
    words = "%s: %s" % (condition, hint) if hint else condition
    return words + ('; the server says "%s"' % text if text else "")


class XMPPClient:
    """One client-to-server XMPP connection, logged in as ``jid``.

    ``host``/``port`` override the SRV lookup; ``tls`` is starttls, direct or none; ``cafile`` adds
    trusted certificates; ``allow_plain`` permits PLAIN without TLS; ``mechanisms`` are the SASL
    mechanisms to try, best first; ``log`` is a mgrnotify Log (stanzas at debug level, never SASL).
    """

    def __init__(self, jid, host=None, port=None, tls="starttls", verify_tls=True, cafile=None, timeout=15,
                 allow_plain=False, mechanisms=MECHANISMS, log=None):
        self.jid = jid
        self.local, self.domain, self.resource = split_jid(jid)
        if tls not in TLS_MODES:
            raise ValueError("tls must be one of %s, not '%s'" % (", ".join(TLS_MODES), tls))
        self.host = host
        self.port = port
        self.tls = tls
        self.verify_tls = verify_tls
        self.cafile = cafile
        self.timeout = timeout
        self.allow_plain = allow_plain
        self.mechanisms = mechanisms
        self.log = log
        self.sock = None
        self.address = None        # (host, port) connected to
        self.encrypted = False
        self.features = None       # the last <stream:features>
        self.mechanism = None      # the SASL mechanism that logged us in
        self.bound_jid = None
        self._reader = None
        self._quiet = False        # True during SASL: its payloads are never logged
        self._id_prefix = os.urandom(4).hex()
        self._next_id = 0
        self._sent = {}            # id -> recipient, of messages sent since the last ping
        self._posted = collections.OrderedDict()   # ping id -> message id, of posted messages not yet confirmed
        self._failures = {}        # id -> reason, of those the server bounced
        self._inbox = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the protocol verbs --------------------------------------------------------------------

    def connect(self):
        """Reach the server and open the stream, with TLS as ``tls`` says; XMPPError if that fails."""
        deadline = time.monotonic() + self.timeout
        self._open_socket(deadline)
        if self.tls == "direct":
            self._start_tls(deadline)
        self._open_stream(deadline, "opening the stream")
        starttls = self.features.find("{%s}starttls" % NS_TLS)
        if self.tls == "starttls":
            if starttls is None:
                raise TLSError("The XMPP server %s offers no STARTTLS, so the password would travel in clear; "
                               "set tls to direct if it listens for direct TLS, or to none on a trusted network"
                               % self._where())
            self._send("<starttls xmlns='%s'/>" % NS_TLS)
            answer = self._wait(lambda s: s.tag in ("{%s}proceed" % NS_TLS, "{%s}failure" % NS_TLS),
                                deadline, "starting TLS")
            if answer.tag.endswith("failure"):
                raise TLSError("The XMPP server %s refused to start TLS" % self._where())
            self._start_tls(deadline)
            self._open_stream(deadline, "opening the stream after STARTTLS")
        elif self.tls == "none" and starttls is not None and starttls.find("{%s}required" % NS_TLS) is not None:
            raise TLSError("The XMPP server %s requires an encrypted connection; set tls to starttls or direct"
                           % self._where())

    def login(self, password):
        """Authenticate with the best mechanism both sides know, then bind a resource; AuthError if refused."""
        deadline = time.monotonic() + self.timeout
        mechanism = self._choose_mechanism()
        self._quiet = True
        try:
            if mechanism == "PLAIN":
                payload = "\0%s\0%s" % (self.local, password)
                self._send_auth(mechanism, payload)
                self._sasl_answer(deadline, ("success",))
            else:
                self._scram(mechanism, password, deadline)
        finally:
            self._quiet = False
        self.mechanism = mechanism
        self._open_stream(deadline, "opening the stream after the login")
        self._bind(deadline)
        self._debug("logged in as %s with %s", self.bound_jid, mechanism)

    def send(self, to, body, subject=None):
        """Send a chat message; its id. The server's verdict comes with the next ``ping()``."""
        message_id, stanza = self._message(to, body, subject)
        self._send(stanza)
        self._sent[message_id] = to
        return message_id

    def post(self, to, body, subject=None):
        """Send a chat message and a ping after it, without waiting; its id. ``confirmed()`` tells when the
        server has handled it: the answer to its own ping, which the server sends only after it has handled
        the message (stanzas of a session are handled in order), so a bounce comes first. Many can be on
        their way at once; how many is the caller's choice (its window). Not mixed with ``send``/``ping``."""
        message_id, stanza = self._message(to, body, subject)
        ping_id = self._new_id()
        self._send(stanza + "<iq type='get' id='%s' to='%s'><ping xmlns='%s'/></iq>"
                   % (ping_id, escape_attr(self.domain), NS_PING))
        self._sent[message_id] = to
        self._posted[ping_id] = message_id
        return message_id

    @property
    def unconfirmed(self):
        """How many posted messages the server has not confirmed yet."""
        return len(self._posted)

    def confirmed(self, wait=False):
        """[(id, None, or why the server refused it)] of the posted messages confirmed since the last call,
        oldest first. With ``wait`` it reads until at least one is (when any is unconfirmed), within the
        timeout; without, it takes only what has already arrived. XMPPError when the stream breaks, with the
        list of those confirmed before the break as its ``confirmed``; the fate of the others is unknown, or,
        after a ``StreamEnded``, known for all but the first (see there)."""
        done = []
        deadline = time.monotonic() + self.timeout
        try:
            while self._posted and (self._reader.stanzas or (wait and not done) or self._readable()):
                stanza = self._read(deadline, "waiting for the server to confirm the messages")
                if stanza.tag == "{%s}iq" % NS_CLIENT and stanza.get("id") in self._posted:
                    # The server has handled everything sent before this ping: its message and any earlier one.
                    while self._posted:
                        ping_id, message_id = self._posted.popitem(last=False)
                        self._sent.pop(message_id, None)
                        done.append((message_id, self._failures.pop(message_id, None)))
                        if ping_id == stanza.get("id"):
                            break
                else:
                    self._handle(stanza)
        except XMPPError as e:
            e.confirmed = done   # what was confirmed before the break still counts
            raise
        return done

    def _readable(self):
        """Whether bytes have arrived that ``_read`` can take without waiting (decrypted ones included)."""
        import select
        if self.encrypted and self.sock.pending():
            return True
        return bool(select.select([self.sock], [], [], 0)[0])

    def _message(self, to, body, subject):
        """(id, the <message> stanza) of a chat message; MessageError for an address that is not a JID."""
        try:
            split_jid(to)
        except ValueError as e:
            raise MessageError("Cannot send the message: %s" % e)
        message_id = self._new_id()
        subject_xml = "<subject>%s</subject>" % escape(subject) if subject else ""
        return message_id, ('<message to="%s" type="chat" id="%s">%s<body>%s</body></message>'
                            % (escape_attr(to), message_id, subject_xml, escape(body)))

    def ping(self):
        """XEP-0199 ping: return once the server has handled all sent before; MessageError for any it bounced.

        The server handles a session's stanzas in order, so its answer to the ping follows any error
        it had for an earlier message.
        """
        deadline = time.monotonic() + self.timeout
        ping_id = self._new_id()
        self._send("<iq type='get' id='%s' to='%s'><ping xmlns='%s'/></iq>"
                   % (ping_id, escape_attr(self.domain), NS_PING))
        self._wait(lambda s: s.tag == "{%s}iq" % NS_CLIENT and s.get("id") == ping_id, deadline,
                   "waiting for the server to confirm the messages")
        failures, self._failures, self._sent = self._failures, {}, {}
        if failures:
            reasons = sorted(set(failures.values()))
            raise MessageError("; ".join(reasons[:3]) + ("; and %d more" % (len(reasons) - 3)
                                                         if len(reasons) > 3 else ""), failures)

    def receive(self, window, max_count=100):
        """Go online for ``window`` seconds (or until ``max_count`` arrived); (from, body, subject) tuples.

        Offline messages come right after the initial presence. To lose nothing the server handed
        over, the window ends with an unavailable presence and a ping: what was already on its way
        is returned too, even beyond ``max_count``; later messages stay on the server.
        """
        self._send("<presence/>")
        deadline = time.monotonic() + window
        try:
            while len(self._inbox) < max_count:
                self._handle(self._read(deadline, "waiting for messages"))
        except XMPPTimeout:
            pass
        self._send("<presence type='unavailable'/>")
        self.ping()
        messages, self._inbox = self._inbox, []
        return messages

    def close(self):
        """End the stream and the connection; never raises (there is nothing left to report).

        Once logged in, it waits (briefly) for the server to end its side, so nothing is cut short.
        """
        if self.sock is None:
            return
        try:
            self._send("</stream:stream>")
            deadline = time.monotonic() + min(self.timeout, CLOSE_TIMEOUT)
            while self.bound_jid:
                self._handle(self._read(deadline, "closing the stream"))
        except (XMPPError, OSError):
            pass
        finally:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    # -- connection and stream ------------------------------------------------------------------

    def _where(self):
        return "%s:%d" % self.address if self.address else self.domain

    def _addresses(self, deadline):
        """Where to connect, best first: host/port as given, else SRV targets, else the domain itself."""
        default_port = DIRECT_TLS_PORT if self.tls == "direct" else PORT
        if self.host or self.port:
            return [(self.host or self.domain, self.port or default_port)]
        service = "_xmpps-client._tcp." if self.tls == "direct" else "_xmpp-client._tcp."
        records = srv.lookup(service + self.domain, min(SRV_TIMEOUT, max(deadline - time.monotonic(), 0.1)))
        self._debug("SRV %s%s: %s", service, self.domain, records or "none")
        return [(r.target, r.port) for r in records] or [(self.domain, default_port)]

    def _open_socket(self, deadline):
        problems = []
        for host, port in self._addresses(deadline):
            self.address = (host, port)
            try:
                self.sock = deadlines.connect(host, port, deadline)
                # Stanzas are small and a ping waits for its answer: with Nagle's algorithm on, the ping
                # sits behind the server's delayed ACK for ~40 ms, which is most of a batch's time.
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._debug("connected to %s:%d", host, port)
                return
            except socket.timeout:
                problems.append("%s:%d did not answer within %s s" % (host, port, self.timeout))
            except OSError as e:
                problems.append("%s:%d: %s" % (host, port, e.strerror or e))
            except UnicodeError as e:   # IDNA cannot encode the name ("a..b"): no lookup is possible
                problems.append("%s:%d: not a valid host name (%s)" % (host, port, e))
        raise XMPPError("Cannot connect to the XMPP server for %s (%s); check the server and port settings and "
                        "that the server is running" % (self.domain, "; ".join(problems)))

    def _start_tls(self, deadline):
        context = tls.context(self.verify_tls, self.cafile)
        if self.tls == "direct":
            context.set_alpn_protocols(["xmpp-client"])   # XEP-0368
        self.sock.settimeout(self._remaining(deadline, "starting TLS"))
        try:
            # The certificate must name the JID's domain, not the host we reached (RFC 6120 §13.7.2).
            self.sock = context.wrap_socket(self.sock, server_hostname=self.domain)
        except socket.timeout:
            raise self._timeout("starting TLS")
        except (ssl.CertificateError, ssl.SSLError) as e:
            reason = getattr(e, "verify_message", None) or getattr(e, "reason", None) or str(e)
            if isinstance(e, ssl.CertificateError) or "CERTIFICATE_VERIFY_FAILED" in str(e):
                raise TLSError("The TLS certificate of the XMPP server %s is not trusted for %s (%s); install a "
                               "certificate for that domain from a trusted authority, or set verify_tls to off "
                               "if you accept the risk" % (self._where(), self.domain, reason))
            hint = ("; check that this port speaks direct TLS, or set tls to starttls"
                    if self.tls == "direct" else "")
            raise TLSError("TLS with the XMPP server %s failed (%s)%s" % (self._where(), reason, hint))
        except OSError as e:
            raise TLSError("TLS with the XMPP server %s failed: the connection broke (%s)"
                           % (self._where(), e.strerror or e))
        self.encrypted = True
        self._debug("TLS: %s, %s", self.sock.version(), self.sock.cipher()[0])

    def _open_stream(self, deadline, what):
        """Send a stream header on a fresh parser and read the server's features."""
        self._reader = _StreamReader()
        sender = " from='%s'" % escape_attr(bare_jid(self.jid)) if self.encrypted else ""
        self._send("<?xml version='1.0'?><stream:stream to='%s'%s version='1.0' xml:lang='en' xmlns='%s' "
                   "xmlns:stream='%s'>" % (escape_attr(self.domain), sender, NS_CLIENT, NS_STREAM))
        features = self._read(deadline, what)
        if features.tag != "{%s}features" % NS_STREAM:
            raise StreamError("The XMPP server %s sent <%s> where its stream features belong"
                              % (self._where(), features.tag.rpartition("}")[2]))
        if not self._reader.root.get("version", "").startswith("1."):
            raise StreamError("The XMPP server %s speaks a pre-1.0 XMPP without SASL or TLS" % self._where())
        self.features = features

    def _remaining(self, deadline, what):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout(what)
        return remaining

    def _timeout(self, what):
        return XMPPTimeout("The XMPP server %s did not answer within %s s while %s; check that the server and "
                           "port are those of an XMPP server and that no firewall is in between"
                           % (self._where(), self.timeout, what))

    def _send(self, text, loggable=None):
        self._debug("send: %s", loggable or text)
        try:
            deadlines.sendall(self.sock, text.encode("utf-8"), time.monotonic() + self.timeout)
        except socket.timeout:
            raise self._timeout("sending")
        except OSError as e:
            raise StreamError("The connection to the XMPP server %s broke while sending (%s)"
                              % (self._where(), e.strerror or e))

    def _read(self, deadline, what):
        """The next stanza; XMPPTimeout past ``deadline``, StreamError on a stream error or the stream's end."""
        reader = self._reader
        while not reader.stanzas:
            if reader.closed:
                raise StreamEnded("The XMPP server %s closed the stream while %s" % (self._where(), what))
            self.sock.settimeout(self._remaining(deadline, what))
            try:
                data = self.sock.recv(READ_SIZE)
            except socket.timeout:
                raise self._timeout(what)
            except OSError as e:
                raise StreamError("The connection to the XMPP server %s broke while %s (%s)"
                                  % (self._where(), what, e.strerror or e))
            if not data:
                raise StreamError("The XMPP server %s closed the connection while %s" % (self._where(), what))
            self._debug("recv: %s", "(login exchange, not logged)" if self._quiet
                        else data.decode("utf-8", "replace"))
            try:
                reader.feed(data)
            except ValueError as e:
                raise StreamError("The XMPP server %s sent %s while %s; is it an XMPP server%s?"
                                  % (self._where(), e, what, "" if self.encrypted else " without TLS"))
        stanza = reader.stanzas.popleft()
        if stanza.tag == "{%s}error" % NS_STREAM:
            raise StreamEnded("The XMPP server %s ended the stream (%s)"
                              % (self._where(), _explain(*_condition(stanza, NS_STREAM_ERRORS),
                                                         table=_STREAM_ERRORS)))
        return stanza

    def _wait(self, match, deadline, what):
        """Read until a stanza ``match``es; whatever else arrives meanwhile is handled as it would be anyway."""
        while True:
            stanza = self._read(deadline, what)
            if match(stanza):
                return stanza
            self._handle(stanza)

    def _handle(self, stanza):
        """An unsolicited stanza: a bounce, an incoming message, or a request we must answer."""
        kind = stanza.tag.rpartition("}")[2]
        if kind == "message" and stanza.get("type") == "error":
            message_id = stanza.get("id")
            if message_id in self._sent:
                reason = _explain(*_condition(stanza.find("{%s}error" % NS_CLIENT), NS_STANZA_ERRORS),
                                  table=_STANZA_ERRORS)
                self._failures[message_id] = "The XMPP server refused the message to %s (%s)" % (
                    self._sent[message_id], reason)
        elif kind == "message":
            body = stanza.findtext("{%s}body" % NS_CLIENT)
            if body and stanza.get("type", "normal") in ("chat", "normal") and _is_jid(stanza.get("from", "")):
                self._inbox.append((stanza.get("from", ""), body, stanza.findtext("{%s}subject" % NS_CLIENT) or ""))
        elif kind == "iq" and stanza.get("type") in ("get", "set"):
            # RFC 6120 §8.2.3: every request gets an answer; we only know how to answer a ping.
            to = ' to="%s"' % escape_attr(stanza.get("from")) if stanza.get("from") else ""
            request_id = escape_attr(stanza.get("id", ""))
            if stanza.find("{%s}ping" % NS_PING) is not None:
                self._send('<iq type="result" id="%s"%s/>' % (request_id, to))
            else:
                self._send('<iq type="error" id="%s"%s><error type="cancel"><service-unavailable xmlns="%s"/>'
                           '</error></iq>' % (request_id, to, NS_STANZA_ERRORS))

    def _new_id(self):
        self._next_id += 1
        return "%s-%d" % (self._id_prefix, self._next_id)

    def _debug(self, text, *args):
        if self.log is not None and self.log.enabled(9):
            self.log.debug("xmpp " + text, *args)

    # -- SASL and bind ---------------------------------------------------------------------------

    def _offered(self):
        node = self.features.find("{%s}mechanisms" % NS_SASL)
        return [m.text.strip() for m in node if m.text] if node is not None else []

    def _choose_mechanism(self):
        offered = self._offered()
        for mechanism in self.mechanisms:
            if mechanism in offered and (mechanism != "PLAIN" or self.encrypted or self.allow_plain):
                return mechanism
        if "PLAIN" in offered and "PLAIN" in self.mechanisms:
            raise AuthError("The XMPP server %s offers only PLAIN login on this unencrypted connection, which would "
                            "send the password in clear; set tls to starttls or direct" % self.domain)
        raise AuthError("The XMPP server %s offers no login mechanism this client knows (it offers: %s; we know: %s)"
                        % (self.domain, ", ".join(offered) or "none", ", ".join(self.mechanisms)))

    def _send_auth(self, mechanism, payload):
        self._send("<auth xmlns='%s' mechanism='%s'>%s</auth>" % (NS_SASL, mechanism, _b64(payload.encode("utf-8"))),
                   "<auth mechanism='%s'>(not logged)</auth>" % mechanism)

    def _sasl_answer(self, deadline, expected):
        """The next SASL element, which must be one of ``expected``; AuthError on ``<failure>``."""
        names = ["{%s}%s" % (NS_SASL, name) for name in expected + ("failure",)]
        answer = self._wait(lambda s: s.tag in names, deadline, "logging in")
        if answer.tag.endswith("}failure"):
            raise AuthError("The XMPP server %s refused the login for %s (%s)"
                            % (self.domain, bare_jid(self.jid), _explain(*_condition(answer, NS_SASL),
                                                                         table=_SASL_FAILURES)))
        try:
            return answer, base64.b64decode(answer.text or "").decode("utf-8")
        except ValueError:
            raise AuthError("The XMPP server %s sent a login answer that is not base64 text" % self.domain)

    def _scram(self, mechanism, password, deadline):
        # GS2 flag (RFC 5802 §6): "y" says we could bind the channel but the server offers no -PLUS
        # mechanism; with no TLS there is no channel to bind, so "n" (Prosody rejects a wrong "y").
        plus = any(m.endswith("-PLUS") for m in self._offered())
        scram = Scram(mechanism, self.local, password, "y,," if self.encrypted and not plus else "n,,")
        self._send_auth(mechanism, scram.first_message())
        try:
            _, server_first = self._sasl_answer(deadline, ("challenge",))
            final = scram.final_message(server_first)
            self._send("<response xmlns='%s'>%s</response>" % (NS_SASL, _b64(final.encode("utf-8"))),
                       "<response>(not logged)</response>")
            answer, server_final = self._sasl_answer(deadline, ("success", "challenge"))
            scram.verify(server_final)
            if answer.tag.endswith("}challenge"):   # some servers send v= as a challenge, then success
                self._send("<response xmlns='%s'/>" % NS_SASL)
                self._sasl_answer(deadline, ("success",))
        except ValueError as e:
            raise AuthError("The XMPP server %s failed the %s login for %s: %s"
                            % (self.domain, mechanism, bare_jid(self.jid), e))

    def _bind(self, deadline):
        if self.features.find("{%s}bind" % NS_BIND) is None:
            raise StreamError("The XMPP server %s offers no resource binding after the login" % self.domain)
        # A resource of our own: two runs at once (process and getmessage) must not kick each other off.
        resource = "%s-%s" % (self.resource or "mgrnotify", os.urandom(4).hex())
        answer = self._iq_set("<bind xmlns='%s'><resource>%s</resource></bind>" % (NS_BIND, escape(resource)),
                              deadline, "binding a resource")
        self.bound_jid = answer.findtext("{%s}bind/{%s}jid" % (NS_BIND, NS_BIND)) or bare_jid(self.jid) + "/" + resource
        session = self.features.find("{%s}session" % NS_SESSION)
        if session is not None and session.find("{%s}optional" % NS_SESSION) is None:
            self._iq_set("<session xmlns='%s'/>" % NS_SESSION, deadline, "starting the session")

    def _iq_set(self, payload, deadline, what):
        request_id = self._new_id()
        self._send("<iq type='set' id='%s'>%s</iq>" % (request_id, payload))
        answer = self._wait(lambda s: s.tag == "{%s}iq" % NS_CLIENT and s.get("id") == request_id, deadline, what)
        if answer.get("type") != "result":
            raise AuthError("The XMPP server %s refused %s for %s (%s)"
                            % (self.domain, what, bare_jid(self.jid),
                               _explain(*_condition(answer.find("{%s}error" % NS_CLIENT), NS_STANZA_ERRORS),
                                        table=_STANZA_ERRORS)))
        return answer
