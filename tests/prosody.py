"""A private Prosody XMPP server on loopback for tests (docs/TESTING.md), and its pytest fixture.

``Prosody().start()`` writes a config and a self-signed certificate into a temporary folder, listens
on free ports of 127.0.0.1 (``port`` for STARTTLS, ``tls_port`` for direct TLS) and serves three
virtual hosts, so one server covers every login path:

- ``localhost`` (``DOMAIN``): passwords stored for SCRAM-SHA-1; encryption required;
- ``sha256.localhost`` (``DOMAIN_SHA256``): passwords stored for SCRAM-SHA-256; encryption required;
- ``plain.localhost`` (``DOMAIN_PLAIN``): encryption optional, PLAIN allowed without TLS.

Accounts: ``register("alice", "pw")`` (any host: ``register("bob", "pw", DOMAIN_SHA256)``) returns the
JID. ``settings(jid, password)`` gives gateway settings that reach this server. ``stop()`` stops it by
the process id it started and removes the folder. The ``prosody`` fixture below is one server per test
module; a test file takes it with ``import prosody as prosodylib`` and ``prosody = prosodylib.prosody``.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from localnet import free_port, make_certificate, stop_process

DOMAIN = "localhost"
DOMAIN_SHA256 = "sha256.localhost"
DOMAIN_PLAIN = "plain.localhost"

_CONFIG = """\
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{dir}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}; local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}; c2s_direct_tls_ports = {{ {tls_port} }}; s2s_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; "presence"; "message"; "offline" }}
modules_disabled = {{ "s2s" }}
authentication = "internal_hashed"
c2s_require_encryption = true
ssl = {{ key = "{dir}/localhost.key"; certificate = "{dir}/localhost.crt" }}
VirtualHost "{domain}"
VirtualHost "{domain_sha256}"
    password_hash = "SHA-256"
VirtualHost "{domain_plain}"
    c2s_require_encryption = false
    allow_unencrypted_plain_auth = true
"""




class Prosody:
    """One Prosody server in a temporary folder, started and stopped by the test suite."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mgrn-xmpp-", dir="/tmp")
        self.config = os.path.join(self.dir, "prosody.cfg.lua")
        self.cert = os.path.join(self.dir, "localhost.crt")
        self.port = free_port()
        self.tls_port = free_port()
        self.process = None

    def start(self, timeout=20):
        """Write the config and certificate, start the server, wait until both ports accept."""
        make_certificate(self.dir, (DOMAIN, DOMAIN_SHA256, DOMAIN_PLAIN))
        os.makedirs(os.path.join(self.dir, "data"))
        with open(self.config, "w") as f:
            f.write(_CONFIG.format(dir=self.dir, port=self.port, tls_port=self.tls_port, domain=DOMAIN,
                                   domain_sha256=DOMAIN_SHA256, domain_plain=DOMAIN_PLAIN))
        self.output = open(os.path.join(self.dir, "stdout.log"), "wb")
        self.process = subprocess.Popen(["prosody", "-F", "--config", self.config],
                                        stdout=self.output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("prosody exited; see %s" % self.dir)
            if all(self._accepts(port) for port in (self.port, self.tls_port)):
                return self
            time.sleep(0.05)
        raise RuntimeError("prosody did not start within %d s; see %s" % (timeout, self.dir))

    @staticmethod
    def _accepts(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def register(self, user, password, domain=DOMAIN):
        """Create (or reset) an account; its bare JID."""
        subprocess.run(["prosodyctl", "--config", self.config, "register", user, domain, password],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        return "%s@%s" % (user, domain)

    def settings(self, jid, password, tls="starttls", **more):
        """gwjabber settings that reach this server (server 127.0.0.1, the port for ``tls``), plus ``more``."""
        values = {"jabber": jid, "password": password, "server": "127.0.0.1",
                  "port": str(self.tls_port if tls == "direct" else self.port), "tls": tls, "timeout": "5"}
        values.update(more)
        return values

    def log(self):
        """The server's log, for a failing test's message."""
        try:
            with open(os.path.join(self.dir, "prosody.log"), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        """Stop the server it started and remove its folder."""
        stop_process(self.process)
        if self.process:
            self.output.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def prosody():
    """A running Prosody for the tests of one module."""
    server = Prosody().start()
    yield server
    server.stop()
