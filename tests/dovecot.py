"""A private Dovecot 2.3 (IMAP and POP3) on loopback, for the mail gateway's tests (see docs/TESTING.md).

One server, four ports: IMAP with STARTTLS, IMAPS, POP3 with STARTTLS, POP3S. Any user name logs in
with the one password; each user's mail is the maildir ``home/<user>/Maildir`` under the server's
folder, which the SMTP test server delivers into. ``make_certificate`` makes the self-signed
certificate both servers present (CN and SAN localhost, SAN IP 127.0.0.1).
"""

import mailbox
import os
import shutil
import socket
import subprocess
import tempfile
import time

from localnet import free_port, stop_process






CONFIG = """\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={dir}/home/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
# No growing delay (up to 15 s) for logins from an address after failed ones: tests fail logins on purpose.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s}
    ssl = yes
  }}
}}
"""


class Dovecot:
    """The server: ``start()``, ``maildir(user)``, ``stop()``; ports in ``ports`` by (protocol, security)."""

    def __init__(self, cert, key, password):
        self.dir = tempfile.mkdtemp(prefix="mgrn-dovecot-", dir="/tmp")
        self.cert, self.key, self.password = cert, key, password
        self.ports = {}
        self.process = None

    def start(self, timeout=20):
        """Write the configuration, start dovecot in the foreground and wait until every port answers."""
        os.chmod(self.dir, 0o755)   # mail processes run as nobody and must reach home/
        for folder in ("run", "state", "home"):
            os.makedirs(os.path.join(self.dir, folder))
        names = {"imap": ("imap", "starttls"), "imaps": ("imap", "ssl"), "pop3": ("pop3", "starttls"),
                 "pop3s": ("pop3", "ssl")}
        numbers = {name: free_port() for name in names}
        self.ports = {names[name]: port for name, port in numbers.items()}
        self.config = os.path.join(self.dir, "dovecot.conf")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(dir=self.dir, cert=self.cert, key=self.key, password=self.password, **numbers))
        self.process = subprocess.Popen(["dovecot", "-c", self.config, "-F"], stdout=subprocess.DEVNULL,
                                        stderr=open(os.path.join(self.dir, "stderr.log"), "wb"))
        deadline = time.time() + timeout
        waiting = set(self.ports.values())
        while waiting and time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("dovecot exited; see %s" % self.dir)
            for port in list(waiting):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    waiting.discard(port)
                except OSError:
                    pass
            time.sleep(0.02)
        if waiting:
            raise RuntimeError("dovecot did not listen within %d s; see %s" % (timeout, self.dir))
        return self

    def maildir(self, user):
        """The maildir of ``user`` (created, owned by the user dovecot runs mail processes as)."""
        home = os.path.join(self.dir, "home", user)
        path = os.path.join(home, "Maildir")
        if not os.path.isdir(path):
            os.makedirs(home, exist_ok=True)
            box = mailbox.Maildir(path, create=True)
            box.close()
            for folder, dirs, files in os.walk(home):
                shutil.chown(folder, "nobody", "nogroup")
        return path

    def stop(self):
        """Stop the server (by the process id it was started with) and remove its folder."""
        stop_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)
