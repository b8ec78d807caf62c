"""What every test server on loopback needs: a free port, and a self-signed certificate."""

import os
import socket
import subprocess


def free_port():
    """A TCP port of 127.0.0.1 nobody listens on right now (connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_certificate(folder, names=("localhost",)):
    """A self-signed certificate for ``names`` and 127.0.0.1, made once per folder; (certificate, key) paths."""
    cert, key = os.path.join(folder, "localhost.crt"), os.path.join(folder, "localhost.key")
    if not os.path.exists(cert):
        alt = ",".join(["DNS:%s" % name for name in names] + ["IP:127.0.0.1"])
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                        "-subj", "/CN=" + names[0], "-addext", "subjectAltName=" + alt, "-keyout", key, "-out", cert],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return cert, key


def stop_process(process, timeout=10):
    """Stop a server started by the tests: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class FaultyServer:
    """A TCP server on 127.0.0.1 that misbehaves in one way, for the gateways' fault tests.

    ``close``: accepts and closes at once; ``silent``: accepts and never says a word; ``garbage``: answers
    junk; ``drop``: reads the first request, then closes mid-conversation; ``other-name``: speaks TLS with a
    certificate for another host name (``cert`` is trusted through SSL_CERT_FILE by the test).
    """

    def __init__(self, mode, folder=None):
        import threading
        self.mode = mode
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.cert = None
        self.context = None
        if mode == "other-name":
            import ssl
            self.cert, key = make_certificate(folder, ("other.example",))
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(self.cert, key)
        self.connections = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            try:
                if self.mode == "close":
                    conn.close()
                elif self.mode == "garbage":
                    conn.sendall(b"\x00\xff garbage that no protocol speaks\r\n" * 4)
                    conn.close()
                elif self.mode == "drop":
                    conn.settimeout(5)
                    conn.recv(65536)
                    conn.close()
                elif self.mode == "other-name":
                    conn.settimeout(5)
                    self.context.wrap_socket(conn, server_side=True)
            except OSError:
                pass

    def stop(self):
        """Close the listener and every connection."""
        close_all(self.listener, self.connections)


class ScriptedServer:
    """A loopback TCP server whose subclass speaks a scripted protocol: ``session(connection)`` per client, each
    connection closed after it; ``port`` to connect to, ``close()`` to stop accepting."""

    def __init__(self):
        import threading
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(5)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                try:
                    self.session(connection)
                except OSError:
                    pass

    def session(self, connection):
        """Talk to one client."""
        raise NotImplementedError

    def close(self):
        self.listener.close()


class DelayProxy:
    """A TCP proxy on 127.0.0.1 to ``target`` (host, port) that delays every byte by ``delay`` seconds each way
    (so a round trip takes 2 × ``delay`` longer), without limiting throughput: what a server elsewhere looks
    like. Each direction of each connection is a reader that stamps what it reads and a writer that sends it
    when its time comes. ``port`` to connect to; ``stop()`` closes everything."""

    def __init__(self, target, delay):
        import threading
        self.target, self.delay = target, delay
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.sockets = []
        threading.Thread(target=self._serve, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets += [client, server]
            self._pipe(client, server)
            self._pipe(server, client)

    def _pipe(self, source, sink):
        import collections
        import threading
        import time
        chunks = collections.deque()
        ready = threading.Condition()

        def read():
            while True:
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""
                with ready:
                    chunks.append((time.monotonic() + self.delay, data))
                    ready.notify()
                if not data:
                    return

        def write():
            while True:
                with ready:
                    while not chunks:
                        ready.wait()
                    due, data = chunks.popleft()
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                try:
                    if not data:
                        sink.shutdown(socket.SHUT_WR)
                        return
                    sink.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

    def stop(self):
        """Close the listener and every connection through it."""
        close_all(self.listener, self.sockets)


def close_all(listener, sockets):
    """Close a test server's listener and its sockets, whatever state they are in."""
    for sock in [listener] + list(sockets):
        try:
            sock.close()
        except OSError:
            pass
