"""One deadline for a whole network exchange: resolving, connecting, TLS, every send and every read.

A socket timeout bounds a single system call, so a server that sends one byte just before each
timeout keeps a client waiting for as long as it likes (a 39-byte answer at a byte every 0.5 s took
19.5 s with a timeout of 2 s). These helpers give each step only the time left until one deadline
(a ``time.monotonic()`` value) and raise ``socket.timeout`` once none is left, so callers report it
as they report any other timeout. ``socket`` and ``threading`` are imported on first use.
"""

import time


def remaining(deadline):
    """Seconds left until ``deadline``; ``socket.timeout`` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        import socket
        raise socket.timeout("timed out")
    return left


def resolve(host, port, deadline):
    """``getaddrinfo`` for a TCP connection to host:port, given up at the deadline.

    The resolver's own timeouts (resolv.conf: 5 s per try and server) know nothing of ours, so the
    lookup runs in a daemon thread that is abandoned when the deadline passes.
    """
    import socket
    import threading
    outcome = []

    def lookup():
        try:
            outcome.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except Exception as e:   # handed to the caller's thread below
            outcome.append(e)

    worker = threading.Thread(target=lookup, name="resolve", daemon=True)
    worker.start()
    worker.join(remaining(deadline))
    if not outcome:
        raise socket.timeout("timed out")
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def connect(host, port, deadline):
    """A TCP socket connected to host:port, each address tried in turn, all of it within the deadline.

    Errors are those of ``socket.create_connection``: the last address's, or ``socket.timeout``.
    """
    import socket
    error = None
    for family, kind, proto, _, address in resolve(host, port, deadline):
        left = remaining(deadline)
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(left)
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error or OSError("no address found for %s" % host)


def sendall(sock, data, deadline):
    """Send all of ``data`` before the deadline (``sock.sendall`` may wait a whole timeout per chunk)."""
    view = memoryview(data)
    while view:
        sock.settimeout(remaining(deadline))
        view = view[sock.send(view):]


class Socket:
    """A connected socket, for ``http.client``, whose every send and read shares one ``deadline``.

    Set ``deadline`` before each exchange. ``http.client`` reads the status line, the headers and
    the body through ``makefile()``; the file returned here gives each of its reads the time left.
    """

    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline

    def sendall(self, data):
        """Send ``data`` before the deadline."""
        sendall(self.sock, data, self.deadline)

    def makefile(self, mode="rb", buffering=None, **_):
        """A buffered binary reader whose reads end at the deadline (only reading is asked of it)."""
        import io
        if "w" in mode:
            raise ValueError("only a reading file is offered")
        # The socket's own unbuffered file keeps its reference count, so closing the connection
        # while an answer is still being read leaves the socket open for the reader, as usual.
        return io.BufferedReader(_Reader(self.sock.makefile("rb", buffering=0), self))

    def close(self):
        """Close the socket (once no reader holds it)."""
        self.sock.close()

    def __getattr__(self, name):
        return getattr(self.sock, name)


class _Reader:
    """The raw file under ``Socket.makefile()``: the socket's own, with the time left set before each read."""

    def __init__(self, raw, owner):
        self.raw = raw
        self.owner = owner

    def readinto(self, buffer):
        """Read what is there, waiting at most until the deadline."""
        self.owner.sock.settimeout(remaining(self.owner.deadline))
        return self.raw.readinto(buffer)

    def __getattr__(self, name):
        return getattr(self.raw, name)
