"""The Jabber (XMPP) gateway that ``gate/gwjabber`` runs: the protocol is ``xmpp``; the script's docstring says
what each command does. The class lives here, byte-compiled when installed, because the script itself is
compiled on every run.
"""

from .errors import ConfigError, InputError
from .gateway import Gateway


# Messages on their way at once in outgoing_batch, each confirmed by its own ping: over a 40 ms round trip one at a
# time gives ~22 a second, 32 at a time ~30 times as many. It is also the most a run killed mid-window can have
# delivered without recording it (README, "Killed mid-run" and "Pipelined, within a window").
WINDOW = 32


class Jabber(Gateway):
    """XMPP messages sent and received with the gateway's own account (the ``jabber`` setting)."""

    notify_module = "ntjabber"

    # Each setting's value when its field is empty or absent, and what formtune shows a new gateway; README's
    # table and the form's hints say the same (tests/test_defaults.py). Only an explicit "none" or "off" from
    # the admin turns encryption or the certificate check off.
    defaults = {"tls": "starttls",          # of mgrnotify.xmpp.TLS_MODES: starttls, direct, none
                "verify_tls": "on",
                "timeout": "15",            # seconds, for each step: connect, TLS, login, each answer
                "ticket_format": "#id",     # mgrnotify.tickets.DEFAULT_TICKET_FORMAT, what ntjabber assumes
                "receive_window": "5"}      # seconds ingoing stays online to collect messages
    max_timeout = 300
    max_receive_window = 300
    max_incoming = 100              # messages one ingoing call waits for; more wait for the next call
    ticket_formats = ("#id", "@id")   # the default first, as in every choice list

    def session(self, settings):
        """An XMPPClient logged in with ``settings``; ConfigError for a bad setting, XMPPError if refused."""
        from . import xmpp
        jid = settings.require("jabber")
        try:
            local = xmpp.split_jid(jid)[0]
        except ValueError as e:
            raise ConfigError("The gateway setting 'jabber' is wrong: %s" % e, obj="jabber")
        if not local:
            raise ConfigError("The gateway setting 'jabber' must be an account like name@example.com, not '%s'"
                              % jid, obj="jabber")
        password = settings.secret("password")
        client = xmpp.XMPPClient(jid, host=settings.get("server") or None,
                                 port=settings.number("port", None, 1, 65535),
                                 tls=settings.choice("tls", xmpp.TLS_MODES, self.defaults["tls"]),
                                 verify_tls=settings.flag("verify_tls", self.defaults["verify_tls"]),
                                 timeout=settings.number("timeout", self.defaults["timeout"], 1, self.max_timeout),
                                 log=self.log)
        try:
            client.connect()
            client.login(password)
        except BaseException:
            client.close()
            raise
        self.log.extinfo("Logged in to the XMPP server %s:%d as %s (%s, %s)", client.address[0], client.address[1],
                         client.bound_jid, client.sock.version() if client.encrypted else "no TLS", client.mechanism)
        return client

    @staticmethod
    def problem(to, body):
        """Why a message cannot be sent at all (an InputError), or None."""
        if not to:
            return InputError("The message has no recipient: its Jabber address is empty", obj="jabber")
        if not body.strip():
            return InputError("The message to %s is empty; there is nothing to send" % to, obj="message")
        return None

    def open_batch(self, request):
        """One XMPP session for many messages (the ``outgoing_batch`` command of the base class)."""
        return Session(lambda: self.session(request.settings))

    def outgoing(self, request):
        """One message: to ``<jabber>`` at the root (ISPsystem's format) or ``<user><jabber>``."""
        to = request.contact("jabber")
        session = self.open_batch(request)
        try:
            session.send(to, request.text("subject").strip(), request.text("message"))
        finally:
            session.close()
        self.log.info("Delivered the message to %s", to)

    def ingoing(self, request):
        """What arrives for the gateway's account within ``receive_window`` seconds, offline messages first."""
        from .xmpp import bare_jid
        window = request.settings.number("receive_window", self.defaults["receive_window"], 1,
                                         self.max_receive_window)
        with self.session(request.settings) as client:
            received = client.receive(window, self.max_incoming)
        self.log.info("Received %d message(s)", len(received))
        return [(body, {"from": bare_jid(sender), "subject": subject or None}) for sender, body, subject in received]

    def formtune(self, form):
        """The choice lists (``ticket_format``, ``tls``), and the defaults of a new gateway."""
        from . import form as settings_form
        from .xmpp import TLS_MODES
        return settings_form.tune(form, {"ticket_format": self.ticket_formats, "tls": TLS_MODES}, self.defaults)

    def check_connection(self, request):
        """Log in with the entered settings (and check the others); the error says what is wrong."""
        settings = request.settings
        settings.number("receive_window", self.defaults["receive_window"], 1, self.max_receive_window)
        settings.choice("ticket_format", self.ticket_formats, self.defaults["ticket_format"])
        self.session(settings).close()


class Session:
    """A logged-in client that keeps up to ``window`` messages on their way, each followed by a ping (XEP-0199)
    of its own and delivered once that ping is answered: the server handles a session's stanzas in order, so
    the answer means the message was taken, or its bounce has come first. A bounce fails its own message only.

    When the stream breaks, what was confirmed stays delivered, and the session logs in again for the next
    message. Of the unconfirmed messages: when the server itself ended the stream (a stream error, as for a
    message too big for it: ``xmpp.StreamEnded``), only the first can have been handled, so it fails as "may
    have been delivered" and the others are sent again after the new login; when the connection was lost or
    the server fell silent, any of them may have been delivered, so all fail that way and go again in the
    next run. A caller killed mid-window leaves at most ``window`` messages delivered but not recorded: the
    duplicates the next run can send (README, "Killed mid-run" and "Pipelined, within a window")."""

    window = WINDOW

    def __init__(self, connect):
        import collections
        self.connect = connect
        self.client = connect()
        self.broken = None    # set when logging in again failed: the rest cannot go either
        # the client's message id -> (key, to, subject, body), in the order sent, of the unconfirmed messages
        self.posted = collections.OrderedDict()
        self.again = []       # (key, to, subject, body) to send again, first, after the next login
        self.known = []       # (key, reason) of messages whose fate is known and not yet collected

    def submit(self, key, to, subject, body):
        """Send one message without waiting for it (``collect`` gives its result under ``key``); InputError or
        MessageError (not sent at all), or XMPPError (it could not go: logging in again failed)."""
        problem = Jabber.problem(to, body)
        if problem is not None:
            raise problem
        self._post(key, to, subject, body)

    def collect(self, wait=False):
        """[(key, None or the reason it failed)] of the messages whose fate is now known; with ``wait``, at
        least one when any is on its way."""
        from .xmpp import XMPPError
        while True:
            if self.again and not self.posted:
                self._send_again()
            if not self.posted:
                break
            try:
                confirmed = self.client.confirmed(wait and not self.known)
            except XMPPError as e:
                self._broke(e)
                continue   # those to send again go now, after a new login
            self.known.extend((self.posted.pop(message_id)[0], reason) for message_id, reason in confirmed)
            break
        done, self.known = self.known, []
        return done

    def _post(self, key, to, subject, body, again_first=True):
        from .xmpp import MessageError, XMPPError
        if again_first and self.again:   # messages the server never handled go first, in their order
            self._send_again()
        if self.broken is not None:
            raise self.broken
        if self.client is None:
            try:
                self.client = self.connect()
            except XMPPError as e:
                self.broken = e
                raise
        try:
            message_id = self.client.post(to, body, subject or None)
        except MessageError:
            raise             # an address that is not a JID: nothing was sent
        except XMPPError as e:
            self._broke(e)
            raise
        self.posted[message_id] = (key, to, subject, body)

    def _send_again(self):
        from .xmpp import XMPPError
        while self.again:
            message = self.again.pop(0)
            try:
                self._post(*message, again_first=False)
            except XMPPError as e:   # it could not go (a login refused, the stream broke as it went)
                self.known.append((message[0], e.message))

    def _broke(self, error):
        """The stream broke: keep what was confirmed before it, settle the unconfirmed messages (see the class),
        and drop the client; the next message logs in again."""
        from .xmpp import StreamEnded
        for message_id, reason in getattr(error, "confirmed", ()):
            self.known.append((self.posted.pop(message_id)[0], reason))
        unconfirmed = list(self.posted.values())
        self.posted.clear()
        self.client.close()
        self.client = None
        if not unconfirmed:
            return
        doubt = ("The XMPP stream broke before the server confirmed this message, so it may have been delivered: %s"
                 % error.message)
        if isinstance(error, StreamEnded):
            self.known.append((unconfirmed[0][0], doubt))
            self.again[:0] = unconfirmed[1:]   # before those waiting already: they were sent earlier
        else:
            self.known.extend((message[0], doubt) for message in unconfirmed)

    def send(self, to, subject, body):
        """Deliver one message and wait for its confirmation; InputError, MessageError (bounced) or XMPPError."""
        from .xmpp import MessageError
        self.submit("one", to, subject, body)
        (_, reason), = self.client.confirmed(wait=True)
        if reason is not None:
            raise MessageError(reason)

    def close(self):
        """Leave the session."""
        if self.client is not None:
            self.client.close()
