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
