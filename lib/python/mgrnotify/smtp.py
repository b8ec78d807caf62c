"""Sending mail over SMTP (RFC 5321), on the standard library's ``smtplib``.

``SMTPSession`` is one connection with one of the three security modes admins pick from: ``ssl``
(implicit TLS, port 465), ``starttls`` (port 587, TLS after the greeting) or ``none`` (port 25, for
local relays). It logs in when given credentials (as UTF-8 where they are not ASCII) and sends
ready-made message bytes. Every failure becomes an ``SMTPError`` whose sentence names the server,
what went wrong and what to check.
"""

import smtplib

from . import netfail, tls
from .errors import ConnectError, DeliveryError, MgrNotifyError

SECURITY_MODES = ("ssl", "starttls", "none")
PORTS = {"ssl": 465, "starttls": 587, "none": 25}
PORTS_HINT = "465 is ssl, 587 starttls, 25 none"


class SMTPError(MgrNotifyError):
    """Anything that kept a mail from being accepted by the SMTP server."""


class SMTPConnectError(SMTPError, ConnectError):
    """The server cannot be reached, TLS with it failed, it refused the login or dropped the connection."""


class SMTPRefused(SMTPError, DeliveryError):
    """The server refused the sender, the recipient or the message itself."""


class SMTPSession:
    """One SMTP connection: ``connect``, ``login``, ``send``, ``quit`` (or use it with ``with``)."""

    def __init__(self, host, port=None, security="ssl", timeout=30, verify_tls=True):
        self.host = host
        self.port = port or PORTS[security]
        self.security = security
        self.timeout = timeout
        self.verify_tls = verify_tls
        self.address = "%s:%d" % (host, self.port)
        self.smtp = None

    def connect(self):
        """Open the connection and secure it as the security mode says."""
        try:
            if self.security == "ssl":
                self.smtp = smtplib.SMTP_SSL(self.host, self.port, local_hostname=ehlo_name(), timeout=self.timeout,
                                             context=tls.context(self.verify_tls))
                return
            self.smtp = smtplib.SMTP(self.host, self.port, local_hostname=ehlo_name(), timeout=self.timeout)
            if self.security == "starttls":
                self.smtp.ehlo()
                if not self.smtp.has_extn("starttls"):
                    raise SMTPConnectError(
                        "The SMTP server %s does not offer STARTTLS; set the security mode to ssl if the port "
                        "expects TLS from the start (%s), or to none for a relay without TLS"
                        % (self.address, PORTS_HINT), obj="smtp", value=self.address)
                self.smtp.starttls(context=tls.context(self.verify_tls))
                self.smtp.ehlo()
        except Exception as e:
            self.close()
            raise self._failure(e, "connecting")

    def login(self, user, password):
        """Authenticate as ``user``; a login or password with characters other than ASCII goes as UTF-8."""
        try:
            if _ascii(user) and _ascii(password):
                self.smtp.login(user, password)
            else:
                self._login_utf8(user, password)
        except smtplib.SMTPAuthenticationError as e:
            raise SMTPConnectError("The SMTP server %s refused the login for user '%s' (%s); check the SMTP login "
                                   "and password" % (self.address, user, _reply(e)), obj="smtp", value=self.address)
        except smtplib.SMTPNotSupportedError:
            raise SMTPConnectError(
                "The SMTP server %s offers no login (AUTH) on this connection; many servers offer it only over "
                "TLS, so pick ssl or starttls, or leave the login and password empty for a relay that needs none"
                % self.address, obj="smtp", value=self.address)
        except Exception as e:
            raise self._failure(e, "logging in")

    def _login_utf8(self, user, password):
        """AUTH PLAIN, else AUTH LOGIN, with the credentials in UTF-8 (RFC 4616 PLAIN carries UTF-8; LOGIN is
        the same by convention): smtplib's own login encodes them as ASCII and fails on anything else."""
        import base64

        def encoded(*texts):
            return base64.b64encode(b"\0".join(text.encode("utf-8") for text in texts)).decode("ascii")

        self.smtp.ehlo_or_helo_if_needed()
        if not self.smtp.has_extn("auth"):
            raise smtplib.SMTPNotSupportedError("no AUTH")
        offered = self.smtp.esmtp_features["auth"].upper().split()
        if "PLAIN" in offered:
            code, reply = self.smtp.docmd("AUTH", "PLAIN " + encoded("", user, password))
        elif "LOGIN" in offered:
            code, reply = self.smtp.docmd("AUTH", "LOGIN " + encoded(user))
            if code == 334:
                code, reply = self.smtp.docmd(encoded(password))
        else:
            raise SMTPConnectError(
                "The SMTP server %s offers only the login methods %s, none of which can carry a login or password "
                "with characters other than ASCII (PLAIN and LOGIN can); use an ASCII password"
                % (self.address, ", ".join(offered)), obj="smtp", value=self.address)
        if code not in (235, 503):   # 503: already logged in, which smtplib's login counts as success too
            raise smtplib.SMTPAuthenticationError(code, reply)

    def send(self, sender, recipients, message):
        """Send ``message`` (bytes) from the envelope ``sender`` to every one of ``recipients``."""
        options = []
        if any(byte > 127 for byte in message) and self.smtp.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        try:
            refused = self.smtp.sendmail(sender, recipients, message, mail_options=options)
        except smtplib.SMTPRecipientsRefused as e:
            raise self._recipient_refused(e.recipients)
        except smtplib.SMTPSenderRefused as e:
            raise SMTPRefused("The SMTP server %s refused the sender '%s' (%s); check the gateway's email setting: "
                              "many servers accept only the mailbox the login belongs to"
                              % (self.address, sender, _reply(e)), obj="smtp", value=self.address)
        except smtplib.SMTPDataError as e:
            raise SMTPRefused("The SMTP server %s refused the message (%s)" % (self.address, _reply(e)),
                              obj="smtp", value=self.address)
        except Exception as e:
            raise self._failure(e, "sending")
        if refused:
            raise self._recipient_refused(refused)

    def _recipient_refused(self, refused):
        """The SMTPRefused for ``{address: (code, text)}``: like every failure of a server, it names the side
        (``smtp``) and the server's host:port; the sentence names the address."""
        address, (code, text) = sorted(refused.items())[0]
        return SMTPRefused("The SMTP server %s refused the recipient '%s' (%d %s)"
                           % (self.address, address, code, _text(text)), obj="smtp", value=self.address)

    def quit(self):
        """End the session politely; a server that already hung up is no failure once the mail is accepted."""
        if self.smtp is None:
            return
        try:
            self.smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass
        self.close()

    def close(self):
        """Drop the connection without a goodbye."""
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.quit()

    def _failure(self, error, doing):
        """The SMTPError for an exception raised while ``doing`` something; other errors pass unchanged."""
        if isinstance(error, MgrNotifyError):
            return error
        where = "The SMTP server %s" % self.address
        # smtplib reports a read that timed out or failed as "Connection unexpectedly closed"; the cause is kept.
        if isinstance(error, smtplib.SMTPServerDisconnected) and netfail.kind(error.__context__):
            error = error.__context__
        if isinstance(error, smtplib.SMTPServerDisconnected):
            text = ("%s closed the connection while %s; check that the security mode matches the port (%s)"
                    % (where, doing, PORTS_HINT))
        elif isinstance(error, smtplib.SMTPResponseException) and error.smtp_code < 0:   # smtplib: not a reply
            text = ("%s answered something that is not SMTP while %s (%r); check the host and port, and that the "
                    "security mode matches the port (%s)" % (where, doing, _text(error.smtp_error)[:80], PORTS_HINT))
        elif isinstance(error, smtplib.SMTPResponseException):
            text = "%s answered %s while %s" % (where, _reply(error), doing)
        elif netfail.kind(error):
            text = "%s %s" % (where, netfail.explain(error, self.timeout, PORTS_HINT))
        elif isinstance(error, smtplib.SMTPException):
            text = "%s could not be used while %s: %s" % (where, doing, error)
        else:
            return error
        return SMTPConnectError(text, obj="smtp", value=self.address)


def ehlo_name():
    """The name to greet the server with: the host name when it is fully qualified.

    Otherwise None, and smtplib asks DNS for the FQDN (which can take seconds on a host with broken DNS).
    """
    import socket
    name = socket.gethostname()
    return name if "." in name else None


def _ascii(text):
    """True if ``text`` is ASCII, which is all smtplib's login can send."""
    return all(ord(c) < 128 for c in text)


def _text(text):
    """A server's reply text (bytes) as one readable line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(text.split())


def _reply(error):
    """'code text' of an smtplib response exception."""
    return "%d %s" % (error.smtp_code, _text(error.smtp_error))
