"""Wall time of one ``gate/gwmail --command outgoing`` to a local SMTP server, as a ratio to ``python3 -c pass``.

Goal (issue 5): at most 3x. The server is aiosmtpd on loopback (tests/smtp_server.py) with a
self-signed certificate the module trusts through SSL_CERT_FILE; one row per security mode. Each
figure is the median of many subprocess runs, measured interleaved with the bare interpreter.
Prints figures and asserts nothing.
"""

import mailbox
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import timing  # noqa: E402
from localnet import make_certificate  # noqa: E402
from mgrnotify import xmlio  # noqa: E402
from sandbox import gateway_request  # noqa: E402
from smtp_server import SMTPServer  # noqa: E402

GOAL = 3.0
RUNS = 40
LOGIN, PASSWORD = "bench", "bench-password"


def request(port, security):
    """An outgoing request with a Cyrillic subject and body, logging in where TLS allows it."""
    settings = {"email": "gw@bench.example", "smtp_host": "127.0.0.1", "smtp_port": str(port),
                "smtp_security": security}
    if security != "none":
        settings.update(smtp_login=LOGIN, smtp_password=PASSWORD)
    return gateway_request(settings, "Здравствуйте!\nВаш счёт оплачен.\n", user={"email": "client@bench.example"},
                           project={"name": "Провайдер", "email": "billing@bench.example"},
                           subject="Счёт оплачен").encode("utf-8")


def main():
    timing.compile_library()
    with tempfile.TemporaryDirectory() as root:
        module, = timing.mgr5_root(root, "gate/gwmail")
        cert, key = make_certificate(root)
        maildir = os.path.join(root, "Maildir")
        mailbox.Maildir(maildir, create=True).close()
        server = SMTPServer(cert, key, LOGIN, PASSWORD, lambda address: maildir).start()
        # "none" talks plain SMTP to the STARTTLS listener, without logging in (it offers AUTH only over TLS).
        ports = {"ssl": server.ports["ssl"], "starttls": server.ports["starttls"], "none": server.ports["starttls"]}
        env = dict(os.environ, SSL_CERT_FILE=cert)
        try:
            print("| command | median | python3 -c pass | ratio | goal | |")
            print("| --- | --- | --- | --- | --- | --- |")
            for security in ("ssl", "starttls", "none"):
                doc = request(ports[security], security)
                check = subprocess.run([module, "--command", "outgoing"], input=doc, cwd=root, env=env,
                                       stdout=subprocess.PIPE)
                if xmlio.parse(check.stdout).find("error") is not None:
                    print("| outgoing, smtp_security %s | failed: %s |" % (security, check.stdout.decode()))
                    continue
                value, base = timing.compare([module, "--command", "outgoing"], runs=RUNS, input=doc, cwd=root,
                                             env=env)
                print(timing.row("gwmail outgoing, smtp_security %s" % security, value, base, GOAL))
            print("\n%d mails delivered during the run" % len(server.handler.envelopes))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
