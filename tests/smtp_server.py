"""A private SMTP server on loopback for the mail gateway's tests: aiosmtpd in the test process.

Two listeners share one handler: ``starttls`` (plain greeting, STARTTLS offered, AUTH only after it)
and ``ssl`` (implicit TLS). Both accept AUTH PLAIN/LOGIN with one login and password (and those a test
adds with ``authenticator.add``; UTF-8 passwords included), refuse the
recipients named in ``refused``, record every envelope and deliver each recipient's mail into the
maildir ``maildir_of(address)`` gives (the Dovecot test server's), so a test can send with SMTP and
read back with IMAP or POP3.
"""

import logging
import mailbox
import ssl

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from localnet import free_port


class Delivery:
    """The aiosmtpd handler: refuses some recipients, records envelopes, delivers into maildirs."""

    def __init__(self, maildir_of, refused=()):
        self.maildir_of = maildir_of
        self.refused = set(refused)
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refused:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        for address in envelope.rcpt_tos:
            path = self.maildir_of(address)
            box = mailbox.Maildir(path, create=False)
            box.add(envelope.original_content)
            box.close()
        return "250 2.0.0 Message accepted for delivery"


class Authenticator:
    """Accepts its logins, each with its one password (compared as UTF-8 bytes); remembers every attempt's login."""

    def __init__(self, login, password):
        self.accounts = {}
        self.add(login, password)
        self.attempts = []

    def add(self, login, password):
        """Accept ``login`` with ``password`` too."""
        self.accounts[login.encode("utf-8")] = password.encode("utf-8")

    def __call__(self, server, session, envelope, mechanism, auth_data):
        self.attempts.append(auth_data.login)
        ok = self.accounts.get(auth_data.login) == auth_data.password
        return AuthResult(success=ok, handled=False)   # not handled: aiosmtpd answers 535 itself


class SMTPServer:
    """Both listeners; ``ports`` by security mode ("starttls", "ssl"); ``handler.envelopes`` what arrived."""

    def __init__(self, cert, key, login, password, maildir_of, refused=()):
        self.handler = Delivery(maildir_of, refused)
        self.authenticator = Authenticator(login, password)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.ports = {}
        self.controllers = []

    def start(self):
        """Start both listeners (each ready when this returns)."""
        # aiosmtpd 1.4 warns about its own deprecated Session.login_data on every successful AUTH.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        common = dict(hostname="127.0.0.1", authenticator=self.authenticator, server_hostname="localhost")
        self.ports = {"starttls": free_port(), "ssl": free_port()}
        self.controllers = [
            Controller(self.handler, port=self.ports["starttls"], tls_context=self.context, auth_require_tls=True,
                       **common),
            # aiosmtpd counts only STARTTLS as TLS for AUTH; this listener speaks TLS from the first byte.
            Controller(self.handler, port=self.ports["ssl"], ssl_context=self.context, auth_require_tls=False,
                       **common),
        ]
        for controller in self.controllers:
            controller.start()
        return self

    def stop(self):
        """Stop both listeners."""
        for controller in self.controllers:
            controller.stop()
