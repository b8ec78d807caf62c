"""The mail gateway that ``gate/gwmail`` runs: SMTP out (``smtp``), IMAP or POP3 in (``mailbox``), the mail composed
and read by ``mail``; the script's docstring says what each command does. The class lives here, byte-compiled when
installed, because the script itself is compiled on every run.
"""

from . import attachments
from .errors import ConfigError, InputError
from .gateway import Gateway


class MailGateway(Gateway):
    """SMTP, IMAP and POP3 with the security modes admins choose from: ssl, starttls, none."""

    notify_module = "ntemail"
    extra_features = (attachments.FEATURE,)

    # Each setting's value when its field is empty or absent, and what formtune shows a new gateway; README's
    # table and the form's hints say the same (tests/test_defaults.py). Only an explicit "none" or "off" from
    # the admin turns encryption or the certificate check off.
    defaults = {"smtp_security": "ssl",   # implicit TLS, as RFC 8314 recommends for mail submission and access
                "in_protocol": "none",    # fetching mail is for gateways that are told where to fetch it
                "in_security": "ssl",
                "in_folder": "INBOX",
                "in_after": "seen",
                "in_limit": "20",         # mails per ingoing call
                "verify_tls": "on",
                "timeout": "30"}          # seconds, for each network step
    MAX_IN_LIMIT = 1000
    MAX_TIMEOUT = 300
    SECURITY_MODES = ("ssl", "starttls", "none")
    IN_PROTOCOLS = ("none", "imap", "pop3")
    IN_AFTER = ("seen", "delete")
    # the settings form's choice lists, each with the default first
    CHOICES = {"smtp_security": SECURITY_MODES, "in_protocol": IN_PROTOCOLS, "in_security": SECURITY_MODES,
               "in_after": IN_AFTER}

    inbox = None     # the mailbox ingoing fetched from, kept open until ingoing_written has marked the mail
    lock = None      # the mailbox's lock, held from fetching until the mail is marked
    fetched = ()     # what ingoing fetched: (key, raw bytes) pairs
    in_after = defaults["in_after"]

    def outgoing(self, request):
        """One mail to ``<email>`` over one SMTP session, with the files ``<attachments>`` names (at the root or
        under ``<message>``), all of which are read before the server is contacted."""
        from mgrnotify import mail
        settings = request.settings
        gateway_mailbox = self.own_mailbox(settings)
        recipient = request.contact("email")
        if not recipient:
            raise InputError("The request names no recipient: <email> (at the root or under <user>) is empty",
                             obj="email")
        address = mail.mail_address(recipient)
        if not address:
            raise InputError("The recipient '%s' is not a mail address this gateway can send to" % recipient,
                             obj="email", value=recipient)
        sender = (settings.get("from_name"), gateway_mailbox)
        author = sender
        provider = request.text("project/email").strip()
        if provider:
            if not mail.mail_address(provider):
                raise ConfigError("The provider's mailbox '%s' is not a valid mail address; correct it in the "
                                  "provider's settings" % provider, obj="project", value=provider)
            author = (settings.get("from_name") or request.text("project/name"), mail.mail_address(provider))
        files = attachments.collect(self.config.root, attachments.paths(request.root)
                                    + attachments.paths(request.root.find("message")))
        message = mail.compose(request.text("message"), request.text("subject"),
                               (request.text("user/realname"), address), author, sender)
        mail.attach(message, files)
        if self.log.enabled(9):
            self.log.debug("message headers: %s", " | ".join("%s: %s" % (name, mail.header_text(str(value)))
                                                             for name, value in message.items()))
        data = mail.to_bytes(message)
        with self.smtp_session(settings) as smtp:
            self.log_in(smtp, settings, "smtp")
            smtp.send(gateway_mailbox, [address], data)
        self.log.info("Mail %s to %s accepted by the SMTP server %s%s", message["Message-ID"], address, smtp.address,
                      "".join(", attached %s (%d bytes)" % (f.name, len(f.data)) for f in files))

    def ingoing(self, request):
        """Up to in_limit unread mails, raw; nothing is marked yet (see ingoing_written).

        Another run on the same mailbox may hold its lock: this one waits up to ``timeout`` seconds for it to
        mark what it handed over, else hands over nothing (the mail comes with the next call).
        """
        from mgrnotify.mailbox import message_text
        from mgrnotify.statefile import FileLock
        settings = request.settings
        limit = settings.number("in_limit", self.defaults["in_limit"], 1, self.MAX_IN_LIMIT)
        self.in_after = settings.choice("in_after", self.IN_AFTER, self.defaults["in_after"])
        self.inbox = self.mailbox(settings)
        self.lock = FileLock(self.lock_path(self.inbox, settings))
        wait = settings.number("timeout", self.defaults["timeout"], 1, self.MAX_TIMEOUT)
        if not self.lock.acquire(wait):
            self.log.warning("Another ingoing run has held the %s mailbox %s for over %d s (lock %s); this run "
                             "hands over no mail, which stays for the next call", self.inbox.protocol,
                             self.inbox.address, wait, self.lock.path)
            return []
        self.inbox.connect()
        self.log_in(self.inbox, settings, "in")
        self.fetched = self.inbox.fetch(limit)
        self.log.info("Fetched %d mail(s) from the %s server %s", len(self.fetched), self.inbox.protocol,
                      self.inbox.address)
        return [message_text(raw, self.log) for key, raw in self.fetched]

    def finish(self, answered):
        """Once the answer with the fetched mail is out: mark it read, or delete it; then log out."""
        try:
            if answered:
                self.ingoing_written()
        finally:
            try:
                if self.inbox is not None:
                    self.inbox.close()
            finally:
                if self.lock is not None:
                    self.lock.release()

    def ingoing_written(self):
        """Mark the fetched mail read, or delete it, now that BILLmanager has it."""
        keys = [key for key, raw in self.fetched]
        if not keys:
            return
        try:
            if self.in_after == "delete":
                self.inbox.delete(keys)
            else:
                self.inbox.mark_seen(keys)
        except Exception as e:
            # The answer is out already: a second document would corrupt it. The mail stays unread and comes again.
            self.log.exception("%d mail(s) were handed over but could not be marked (%s); they will be fetched "
                               "again next time", len(keys), e)

    def formtune(self, form):
        """The choice lists, and the defaults of a new gateway."""
        from mgrnotify import form as settings_form
        return settings_form.tune(form, self.CHOICES, self.defaults)

    def check_connection(self, request):
        """Log in to what the gateway's direction uses (``sides``); the error names the side that failed."""
        settings = request.settings
        self.own_mailbox(settings)
        smtp, inbox = self.sides(settings)
        checked = []
        if smtp:
            with self.smtp_session(settings) as session:
                self.log_in(session, settings, "smtp")
            checked.append("SMTP")
        if inbox:
            with self.mailbox(settings) as session:
                self.log_in(session, settings, "in")
            checked.append(session.protocol)
        self.log.info("Connection check passed (%s)", " and ".join(checked))

    def sides(self, settings):
        """(SMTP?, mailbox?): what check_connection tests for the row's ``gateway_type``.

        [ours] 1 (outgoing) SMTP only; 2 (ingoing) only the mailbox, which in_protocol must then name; none or
        another value both, the mailbox when in_protocol is set, as for a gateway saved before it had a direction.
        """
        from mgrnotify.gatewaycall import INGOING, OUTGOING
        direction = settings.get("gateway_type")
        if direction == OUTGOING:
            return True, False
        if direction == INGOING:
            return False, True
        return True, settings.choice("in_protocol", self.IN_PROTOCOLS, self.defaults["in_protocol"]) != "none"

    # --- from settings to sessions ----------------------------------------------------------------------------

    def own_mailbox(self, settings):
        """The gateway's own mailbox (``email``): Sender, envelope sender, and the default login."""
        from mgrnotify import mail
        value = settings.require("email")
        address = mail.mail_address(value)
        if not address:
            raise ConfigError("The gateway setting 'email' ('%s') is not a valid mail address" % value, obj="email",
                              value=value)
        return address

    def connection(self, settings, prefix, ports):
        """(host, port, security, timeout, verify_tls) from ``prefix``_host, ``prefix``_port and so on."""
        security = settings.choice(prefix + "_security", self.SECURITY_MODES, self.defaults[prefix + "_security"])
        return (settings.require(prefix + "_host"), settings.number(prefix + "_port", ports[security], 1, 65535),
                security, settings.number("timeout", self.defaults["timeout"], 1, self.MAX_TIMEOUT),
                settings.flag("verify_tls", self.defaults["verify_tls"]))

    def login_name(self, settings, prefix):
        """``prefix``_login, else the gateway's mailbox (most providers' logins are the address)."""
        return settings.get(prefix + "_login") or self.own_mailbox(settings)

    def log_in(self, session, settings, prefix):
        """Log ``session`` in with ``prefix``_login and ``prefix``_password; an SMTP relay with both empty gets none."""
        if prefix == "smtp" and not settings.get("smtp_login") and not settings.get("smtp_password"):
            return
        session.login(self.login_name(settings, prefix), settings.secret(prefix + "_password"))

    def smtp_session(self, settings):
        """The SMTP session of the settings; it connects when entered with ``with``."""
        from mgrnotify.smtp import PORTS, SMTPSession
        return SMTPSession(*self.connection(settings, "smtp", PORTS))

    def mailbox(self, settings):
        """The IMAP or POP3 mailbox of ``in_protocol``; it connects when entered with ``with``."""
        from mgrnotify.mailbox import IMAPMailbox, POP3Mailbox, SeenList
        protocol = settings.choice("in_protocol", self.IN_PROTOCOLS, self.defaults["in_protocol"])
        if protocol == "none":
            raise ConfigError("Incoming mail is switched off: set in_protocol to imap or pop3 to fetch mail",
                              obj="in_protocol")
        if protocol == "imap":
            return IMAPMailbox(*self.connection(settings, "in", IMAPMailbox.PORTS),
                               folder=settings.get("in_folder", self.defaults["in_folder"]))
        inbox = POP3Mailbox(*self.connection(settings, "in", POP3Mailbox.PORTS))
        if settings.choice("in_after", self.IN_AFTER, self.defaults["in_after"]) == "seen":
            inbox.seen = SeenList(self.seen_list_path(inbox.address, self.login_name(settings, "in")))
        return inbox

    def seen_list_path(self, address, login):
        """var/gwmail-pop3-<digest>.seen: the POP3 mail already handed over, per server and login [ours]."""
        return self.config.path("var", "gwmail-pop3-%s.seen" % _digest("%s %s" % (address.lower(), login)))

    def lock_path(self, inbox, settings):
        """var/gwmail-<digest>.lock: one ingoing run at a time per server, login and folder [ours]."""
        folder = getattr(inbox, "folder", "")
        if folder.upper() == "INBOX":
            folder = "INBOX"   # RFC 3501 5.1: INBOX is the same folder however it is spelled
        return self.config.path("var", "gwmail-%s.lock" % _digest(
            "%s %s %s" % (inbox.address.lower(), self.login_name(settings, "in"), folder)))


def _digest(text):
    """A short hex digest of ``text``, to name a mailbox's files without putting a login into a file name."""
    import hashlib
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
