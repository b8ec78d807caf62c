"""Plain-language reasons for failed network calls: timeouts, refused connections, DNS, TLS.

A protocol client catches the exception of a connect, a TLS handshake or a read and asks
``explain()`` for the rest of its sentence ("The SMTP server mail.example.com:465 " + explanation),
so every client names the same causes in the same words and says what to check.
"""

TIMEOUT, REFUSED, UNRESOLVED, CERTIFICATE, TLS, CLOSED, NETWORK = (
    "timeout", "refused", "unresolved", "certificate", "tls", "closed", "network")


def kind(error):
    """Which of the causes above ``error`` is, or None if it is no network failure."""
    import socket
    import ssl
    if isinstance(error, socket.timeout):
        return TIMEOUT
    # ssl.SSLCertVerificationError exists from Python 3.7 only; its reason code names it on every version.
    if isinstance(error, ssl.CertificateError) or getattr(error, "reason", None) == "CERTIFICATE_VERIFY_FAILED":
        return CERTIFICATE
    if isinstance(error, ssl.SSLError):
        return TLS
    # A bare UnicodeError is the IDNA codec refusing a host name ("a..b", a label over 63 characters) before
    # any lookup; its subclasses (encoding a path, a login) are no network failure.
    if isinstance(error, socket.gaierror) or type(error) is UnicodeError:
        return UNRESOLVED
    if isinstance(error, ConnectionRefusedError):
        return REFUSED
    if isinstance(error, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, EOFError)):
        return CLOSED
    if isinstance(error, OSError):
        return NETWORK
    return None


def explain(error, timeout, ports_hint):
    """The end of a sentence about a server that failed with ``error``: what happened, then what to check.

    ``ports_hint`` is the protocol's usual pairing of ports and security modes ("465 is ssl, 587 starttls"),
    because a security mode that does not match the port shows up as a timeout or a failed handshake.
    """
    cause = kind(error)
    detail = getattr(error, "verify_message", None) or getattr(error, "strerror", None) or str(error) \
        or type(error).__name__
    if cause == TIMEOUT:
        return ("did not answer within %s s; check the host, the port and the firewall, and that the security "
                "mode matches the port (%s)" % (timeout, ports_hint))
    if cause == CERTIFICATE:
        return ("presented a TLS certificate that cannot be verified (%s); install a certificate from a trusted "
                "authority for that host name, or set verify_tls to off if you trust the network path to it"
                % detail)
    if cause == TLS:
        return ("failed the TLS handshake (%s); check that the security mode matches the port (%s)"
                % (getattr(error, "reason", None) or detail, ports_hint))
    if cause == UNRESOLVED:
        return "cannot be found: its host name does not resolve (%s); check the host setting and DNS" % detail
    if cause == REFUSED:
        return "refused the connection; check the host and port settings and that the server is running"
    if cause == CLOSED:
        return ("closed the connection unexpectedly (%s); check that the security mode matches the port (%s)"
                % (detail, ports_hint))
    return "cannot be reached (%s); check the host and port settings and the network" % detail
