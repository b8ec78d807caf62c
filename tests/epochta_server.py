"""A local stand-in for ePochta, for tests and benchmarks: its XML interface and API 3.0 over HTTP(S).

It speaks the interface as docs/PROTOCOLS.md describes it: a form POST whose field ``XML`` holds the
``<SMS>`` document; the login checked; SEND answered with the number of messages accepted and
BALANCE with status 0, or a negative status (-1 bad login, -2 malformed XML, -3 not enough credits,
-4 no valid recipient, -7 sender rejected). API 3.0 (``/sms/3.0/<action>``) checks the md5 ``sum``.
A test can make it misbehave (``behaviour``): answer HTTP 500, a redirect, a non-XML page, accept the
request and never answer, or answer a byte at a time (from the status line, or from the body on);
or answer every XML request with one status (``forced_status``).
Every request is recorded in ``requests``.
"""

import hashlib
import json
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs

from localnet import make_certificate

CREDITS_PER_PART = 1
SENDER_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
HANG_LIMIT = 30   # seconds a hanging answer waits at most, so a forgotten server never blocks a test run
# A trickled answer: its first TRICKLE_BYTES bytes one at a time, TRICKLE_STEP s apart (each well within
# any timeout), then the rest at once.
TRICKLE_BYTES = 40
TRICKLE_STEP = 0.25






def sender_ok(sender):
    """ePochta's rule: up to 11 Latin letters and digits, or up to 14 digits."""
    if sender.isdigit():
        return len(sender) <= 14
    return 0 < len(sender) <= 11 and SENDER_LETTERS.issuperset(sender)


def number_ok(number):
    """An international number: digits only, 10 to 15 of them."""
    return number.isdigit() and 10 <= len(number) <= 15


def parts(text):
    """SMS parts of ``text``, counted simply (the gateway's own counting is tested elsewhere)."""
    single, per_part = (160, 153) if all(ord(c) < 128 for c in text) else (70, 67)
    return 1 if len(text) <= single else -(-len(text) // per_part)


def v3_sum(params, private_key):
    """API 3.0's signature, written independently of the library's."""
    return hashlib.md5(("".join(params[k] for k in sorted(params)) + private_key).encode("utf-8")).hexdigest()


class Account:
    """An ePochta account: login, password, credits, the API 3.0 key pair."""

    def __init__(self, login, password, credits=100, public_key=None, private_key=None, currency="UAH"):
        self.login, self.password, self.credits = login, password, credits
        self.public_key, self.private_key, self.currency = public_key, private_key, currency


class Handler(BaseHTTPRequestHandler):
    """One request to the stand-in."""

    server_version = "EpochtaStandIn/1.0"

    def log_message(self, *args):
        """Quiet: the tests read ``requests``, not stderr."""

    def read_request(self):
        """(path, query, body) of the request: the path split at its "?", the body as sent."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        return path, query, body

    def do_POST(self):
        _, _, body = self.read_request()
        record = {"path": self.path, "headers": dict(self.headers), "body": body,
                  "form": {k: v[0] for k, v in parse_qs(body.decode("ascii", "replace"),
                                                         keep_blank_values=True).items()}}
        self.server.owner.requests.append(record)
        if self.misbehave():
            return
        if self.path.startswith("/sms/3.0/"):
            return self.answer(json.dumps(self.server.owner.v3(self.path[len("/sms/3.0/"):], record["form"])).encode(),
                               200, "application/json")
        if self.headers.get("Content-Type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return self.answer(self.response(-2))
        status, extra = self.server.owner.xml(record)
        self.answer(self.response(status, **extra))

    def misbehave(self):
        """Answer as the owner's ``behaviour`` says, if it says anything; True when it did."""
        behaviour = self.server.owner.behaviour
        if behaviour == "hang":
            self.server.owner.release.wait(HANG_LIMIT)
        elif behaviour == "http500":
            self.answer(b"<html>Internal Server Error</html>", 500, "text/html")
        elif behaviour == "redirect":
            self.send_response(301)
            self.send_header("Location", self.server.owner.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif behaviour == "garbage":
            self.answer(b"<html><body>Welcome to nginx!</body></html>", 200, "text/html")
        else:
            return False
        return True

    def response(self, status, **fields):
        """A ``<RESPONSE>`` document."""
        items = "".join("<%s>%s</%s>" % (k, v, k) for k, v in fields.items())
        return ('<?xml version="1.0" encoding="UTF-8"?><RESPONSE><status>%d</status>%s</RESPONSE>'
                % (status, items)).encode("utf-8")

    def answer(self, data, status=200, content_type="text/xml; charset=UTF-8"):
        head = ("HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                % (status, self.responses[status][0], content_type, len(data))).encode("ascii")
        behaviour = self.server.owner.behaviour
        if behaviour in ("trickle", "trickle-body"):
            if behaviour == "trickle-body":
                self.wfile.write(head)
                head = b""
            return self.trickle(head + data)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def trickle(self, data):
        """Send ``data`` slowly (TRICKLE_BYTES one at a time); ``trickled`` records how far it got before
        the client left."""
        owner = self.server.owner
        try:
            for i in range(min(TRICKLE_BYTES, len(data))):
                self.wfile.write(data[i:i + 1])
                owner.trickled = i + 1
                time.sleep(TRICKLE_STEP)
            self.wfile.write(data[TRICKLE_BYTES:])
            owner.trickled = len(data)
        except OSError:
            pass


class _HTTPServer(ThreadingMixIn, HTTPServer):
    daemon_threads = True

    def __init__(self, owner, address, tls_context, handler):
        self.owner = owner
        self.tls_context = tls_context
        HTTPServer.__init__(self, address, handler)

    def get_request(self):
        sock, address = self.socket.accept()
        if self.tls_context is not None:
            # The handshake happens in the request's thread (finish_request), so a client that
            # rejects the certificate never blocks the accepting thread.
            sock = self.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def finish_request(self, request, client_address):
        if self.tls_context is not None:
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                self.owner.tls_errors.append(str(e))
                return
        HTTPServer.finish_request(self, request, client_address)

    def handle_error(self, request, client_address):
        """A client that went away (the tests' timeouts) is no error worth printing."""


class StandIn:
    """A stand-in HTTP service on 127.0.0.1, plain HTTP or (``tls_folder`` given) HTTPS with a self-signed
    certificate, answering with ``handler``; the machinery every HTTP stand-in shares (tests/httpsms_servers.py)."""

    handler = None
    redirect_to = "https://api.example.org/"

    def __init__(self, tls_folder=None):
        self.requests = []
        self.tls_errors = []
        self.behaviour = None      # None, "hang", "http500", "redirect", "garbage", "trickle", "trickle-body"
        self.trickled = 0          # bytes of a trickled answer sent before the client left
        self.release = threading.Event()
        context = None
        if tls_folder:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*make_certificate(tls_folder))
        self.scheme = "https" if context else "http"
        self.httpd = _HTTPServer(self, ("127.0.0.1", 0), context, self.handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def origin(self):
        """scheme://127.0.0.1:port"""
        return "%s://127.0.0.1:%d" % (self.scheme, self.port)

    def start(self):
        """Serve in a thread; returns self."""
        self.thread.start()
        return self

    def stop(self):
        """Stop serving and release any hanging answer."""
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class EpochtaServer(StandIn):
    """The ePochta stand-in (see the module's docstring)."""

    handler = Handler
    redirect_to = "https://api.example.org/members/sms/xml.php"

    def __init__(self, accounts=(), tls_folder=None):
        super().__init__(tls_folder)
        self.accounts = {a.login: a for a in accounts}
        self.forced_status = None  # answer every XML request with this status

    @property
    def url(self):
        """The XML interface's address."""
        return self.origin + "/members/sms/xml.php"

    @property
    def v3_url(self):
        """API 3.0's base address."""
        return self.origin + "/sms/3.0/"

    def documents(self):
        """The ``XML`` documents received, parsed."""
        return [ET.fromstring(r["form"]["XML"].encode("utf-8")) for r in self.requests if "XML" in r["form"]]

    def xml(self, record):
        """(status, extra response fields) for one XML interface request."""
        if "XML" not in record["form"]:
            return -2, {}
        try:
            root = ET.fromstring(record["form"]["XML"].encode("utf-8"))
        except ET.ParseError:
            return -2, {}
        if root.tag != "SMS":
            return -2, {}
        account = self.accounts.get(root.findtext("authentification/username"))
        if account is None or account.password != root.findtext("authentification/password"):
            return -1, {}
        if self.forced_status is not None:
            return self.forced_status, {}
        operation = root.findtext("operations/operation")
        if operation == "BALANCE":
            return 0, {"credits": "%.2f" % account.credits}
        if operation != "SEND":
            return -2, {}
        text, sender = root.findtext("message/text"), root.findtext("message/sender")
        numbers = [n for n in root.findall("numbers/number") if n.get("messageID")]
        if text is None or sender is None or not numbers:
            return -2, {}
        if not sender_ok(sender):
            return -7, {}
        valid = [n for n in numbers if number_ok(n.text or "")]
        if not valid:
            return -4, {}
        cost = CREDITS_PER_PART * parts(text) * len(valid)
        if cost > account.credits:
            return -3, {}
        account.credits -= cost
        return len(valid), {"credits": "%.2f" % cost}

    def v3(self, action, form):
        """The JSON answer to one API 3.0 request."""
        account = [a for a in self.accounts.values() if a.public_key and a.public_key == form.get("key")]
        signed = {k: v for k, v in form.items() if k != "sum"}
        signed.update(action=action, version="3.0")
        if not account or v3_sum(signed, account[0].private_key) != form.get("sum"):
            return {"error": "Wrong key or control sum", "code": "-1"}
        account = account[0]
        if action == "getUserBalance":
            return {"result": {"balance_currency": account.credits, "currency": account.currency}}
        if action != "sendSMS":
            return {"error": "Unknown action", "code": "-2"}
        if not form.get("sender"):
            return {"error": "Sender is empty", "code": 300}
        if not form.get("text"):
            return {"error": "Text is empty", "code": 301}
        if not number_ok(form.get("phone", "")):
            return {"error": "No valid phones", "code": 303}
        cost = CREDITS_PER_PART * parts(form["text"])
        if cost > account.credits:
            return {"error": "Not enough money", "code": 304}
        account.credits -= cost
        return {"result": {"id": 1000 + len(self.requests), "price": cost, "currency": account.currency}}
