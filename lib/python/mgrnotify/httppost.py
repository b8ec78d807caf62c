"""HTTP(S) requests to a web service, for the gateways that speak to one (ePochta, the SMS presets, ...).

Built on ``http.client``, which starts far faster than ``urllib.request``; both it and ``ssl`` are
imported on first use only. One timeout bounds each whole exchange (``deadline``): resolving the
host, connecting, the TLS handshake, sending the request and every read of the answer share it, so
a service that answers a byte at a time cannot hold a gateway past it. Certificates are verified against the system's CA store unless the caller
turns that off. Every failure becomes a ``PostError`` (a ``ConnectError``) whose sentence names the
service, the address and what to check; the address is shown without any user:password part.
"""

import time

from . import deadline as deadlines
from . import netfail, redact, tls
from .errors import ConfigError, ConnectError

FORM = "application/x-www-form-urlencoded"
MAX_ANSWER_BYTES = 1024 * 1024   # far above any API answer; more means the url points at something else
USER_AGENT = "mgrnotify"


class PostError(ConnectError):
    """No usable HTTP answer: the base of this module's errors."""


class Unreachable(PostError):
    """The host cannot be resolved, refused the connection, or the network failed."""


class TLSFailure(PostError):
    """The TLS handshake failed, or the certificate could not be verified."""


class Timeout(PostError):
    """No connection or no complete answer within the timeout; ``request_sent`` tells which."""

    def __init__(self, message, request_sent, **kwargs):
        super().__init__(message, **kwargs)
        self.request_sent = request_sent


class TooBig(PostError):
    """The answer was longer than the service's ``max_answer`` bytes."""


class BadStatus(PostError):
    """The service answered with an HTTP status other than 2xx; ``status`` holds it, ``body`` the answer's body
    (some APIs put their refusal there: SMS Aero, MTS Exolve), ``headers`` its header fields (MAX's 429 may say
    how long to wait)."""

    def __init__(self, message, status, body=b"", headers=None, **kwargs):
        super().__init__(message, **kwargs)
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else {}


ANSWER_TIMEOUT, NOT_HTTP = "answer timeout", "not http"   # causes beyond netfail's, particular to HTTP

# Each cause (netfail.kind, plus the two above): the error class, and the sentence saying what to check;
# a sentence that starts with %(where)s starts with the service's name as it is spelled (ePochta).
FAILURES = {
    netfail.TIMEOUT: (Timeout, "Cannot connect to %(where)s within %(timeout)s s; check the url setting and that "
                               "this server can reach it (firewall, DNS, proxy)"),
    ANSWER_TIMEOUT: (Timeout, "%(where)s accepted the request but did not answer within %(timeout)s s"),
    netfail.CERTIFICATE: (TLSFailure, "The TLS certificate of %(where)s could not be verified (%(detail)s); check "
                                      "the url setting, or turn verify_tls off only if you trust the network to "
                                      "this host"),
    netfail.TLS: (TLSFailure, "The TLS handshake with %(where)s failed (%(detail)s); check that the url really is "
                              "https on that port"),
    netfail.UNRESOLVED: (Unreachable, "Cannot resolve the host name of %(where)s (%(detail)s); check the url "
                                      "setting and this server's DNS"),
    netfail.REFUSED: (Unreachable, "The connection to %(where)s was refused; check the host and port in the url "
                                   "setting"),
    netfail.CLOSED: (Unreachable, "%(where)s closed the connection without answering (%(detail)s); the service "
                                  "may be down, or the url setting may be wrong"),
    NOT_HTTP: (PostError, "%(where)s did not answer in HTTP (%(detail)s); check the url setting (http or https, "
                          "port)"),
    netfail.NETWORK: (Unreachable, "Cannot reach %(where)s (%(detail)s); check the url setting and the network"),
}


def excerpt(data, limit=80):
    """The start of an answer, for an error message; secrets masked, in case the answer echoes the request."""
    text = redact.redact(" ".join(data.decode("utf-8", "replace").split()))
    return "'%s'" % (text[:limit] + "..." if len(text) > limit else text) if text else "an empty answer"


class WebService:
    """One HTTP(S) connection to a service, opened on the first ``post``; close it, or use ``with``."""

    def __init__(self, url, timeout, verify_tls=True, service="the service", setting="url"):
        from urllib.parse import urlsplit
        try:
            parts = urlsplit(url.strip())
            port = parts.port   # both raise ValueError for a malformed address: "http://[::1", a port of letters
        except ValueError:
            parts, port = None, -1
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise ConfigError("The %s setting '%s' is not an http:// or https:// address" % (setting, url),
                              obj=setting)
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = port or (443 if self.scheme == "https" else 80)
        self.path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        host = "[%s]" % self.host if ":" in self.host else self.host
        self.origin = "%s://%s%s" % (self.scheme, host, ":%d" % port if port else "")
        self.address = self.origin + (parts.path or "/")   # for messages: no user:password, no query
        self.timeout = timeout
        self.verify_tls = verify_tls
        self.service = service
        self.max_answer = MAX_ANSWER_BYTES   # a service whose answers may be longer raises it (MAX's updates)
        self._connection = None

    def post(self, fields, path=None):
        """POST ``fields`` (name, value pairs) form-encoded to the URL (or ``path`` on its host); the answer's body.

        Everything from resolving the host to the answer's last byte happens within one timeout.
        """
        from urllib.parse import urlencode
        return self.request("POST", path, urlencode(list(fields)).encode("ascii"), {"Content-Type": FORM})

    def request(self, method, path=None, body=None, headers=None, timeout=None):
        """``method`` (GET, POST) to the URL (or ``path``, with its query, on its host) with ``body`` (bytes) and
        ``headers`` (a dict) added to ours; the body of a 2xx answer, else BadStatus carrying the answer's body.

        Everything from resolving the host to the answer's last byte happens within one timeout: the service's,
        or ``timeout`` for this request (a long poll that the service holds open on purpose).
        """
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        sent = {"User-Agent": USER_AGENT, "Accept": "*/*"}
        sent.update(headers or {})
        address = self.address if path is None else self.origin + path.split("?")[0]
        connection = self._connect(deadline, timeout)
        try:
            connection.request(method, path or self.path, body, sent)
        except Exception as e:
            self.close()
            raise self._failure(e, address, request_sent=False, timeout=timeout)
        try:
            return self._answer(connection, address)
        except Exception as e:
            self.close()
            if isinstance(e, PostError):
                raise
            raise self._failure(e, address, request_sent=True, timeout=timeout)

    def _connect(self, deadline, timeout):
        """The open connection, its reads and sends now bound to ``deadline``; connecting (and shaking
        hands) first if there is none."""
        if self._connection is not None:
            self._connection.sock.deadline = deadline
            return self._connection
        import http.client
        context = None
        if self.scheme == "https":
            context = tls.context(self.verify_tls)
            connection = http.client.HTTPSConnection(self.host, self.port, context=context)
        else:
            connection = http.client.HTTPConnection(self.host, self.port)
        sock = None
        try:
            # Connected here, not by http.client's connect(), which gives each address and the handshake
            # a whole timeout of their own.
            sock = deadlines.connect(self.host, self.port, deadline)
            if context is not None:
                sock.settimeout(deadlines.remaining(deadline))   # the handshake is one call, bounded as a whole
                sock = context.wrap_socket(sock, server_hostname=self.host)
        except Exception as e:
            if sock is not None:
                sock.close()
            raise self._failure(e, self.address, request_sent=False, timeout=timeout)
        connection.sock = deadlines.Socket(sock, deadline)
        self._connection = connection
        return connection

    def _answer(self, connection, address):
        """Read the whole answer (within the connection's deadline); its body if the status is 2xx."""
        response = connection.getresponse()
        chunks, size = [], 0
        while not response.isclosed():   # it closes itself once the whole body is read
            chunk = response.read(64 * 1024)
            if not chunk:
                break
            size += len(chunk)
            if size > self.max_answer:
                raise TooBig("%s at %s answered with more than %d bytes, which is no answer of its API; "
                             "check the url setting" % (self.service, address, self.max_answer))
            chunks.append(chunk)
        if response.will_close:
            self.close()
        if not 200 <= response.status < 300:
            location = response.getheader("Location") if 300 <= response.status < 400 else None
            advice = ("it redirects to %s: put that address in the url setting" % location if location else
                      "the service may be down, or the url setting may be wrong")
            raise BadStatus("%s answered HTTP %d %s at %s; %s" % (self.service, response.status, response.reason,
                                                                  address, advice),
                            response.status, b"".join(chunks), response.msg, value=str(response.status))
        return b"".join(chunks)

    def _failure(self, error, address, request_sent, timeout):
        """The readable PostError for an exception of connecting, sending or reading within ``timeout`` seconds."""
        import http.client
        cause = netfail.kind(error)
        if cause == netfail.TIMEOUT and request_sent:
            cause = ANSWER_TIMEOUT
        elif cause is None and isinstance(error, http.client.HTTPException):
            cause = NOT_HTTP
        if cause not in FAILURES:
            return error   # not a network failure: a defect, raised as it is
        kind, template = FAILURES[cause]
        detail = (getattr(error, "verify_message", None) or getattr(error, "reason", None)
                  or getattr(error, "strerror", None) or str(error) or type(error).__name__)
        if cause == netfail.CERTIFICATE and detail == "CERTIFICATE_VERIFY_FAILED":   # Python 3.6 says no more
            detail = "certificate verify failed"
        message = template % {"where": "%s at %s" % (self.service, address), "timeout": timeout,
                              "detail": detail}
        if kind is Timeout:
            return Timeout(message, request_sent=request_sent)
        return kind(message)

    def close(self):
        """Close the connection, if open."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
