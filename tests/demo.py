"""The local end-to-end demo: a BILLmanager stand-in and real servers on loopback, the modules run exactly
as BILLmanager runs them.

MariaDB holds the BILLmanager tables; Prosody (XMPP), Dovecot (IMAP), aiosmtpd (SMTP) and stand-ins for
ePochta's XML interface, SMS.ru's API and the MAX Bot API play the outside world over TLS, with self-signed
certificates (Prosody its own, the others one between them) which the modules verify (one bundle in
SSL_CERT_FILE). Every step prints what it did and what it read back from the servers themselves; a failed step
says why and the demo exits non-zero. Everything it starts is stopped at the end.
"""

import os
import shutil
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sandbox as sandboxlib  # noqa: E402
from localnet import make_certificate  # noqa: E402
from mgrnotify import xmlio, xmpp  # noqa: E402

XSLT_TEMPLATE = (
    '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" '
    'xmlns:mgr="http://ispsystem.com/xslplugin"><xsl:output method="text"/><xsl:template match="/">'
    'Здравствуйте, {user.realname}! Сервер <xsl:value-of select="doc/item/name"/> будет остановлен '
    '<xsl:value-of select="mgr:dateformat(doc/item/expiredate, \'%d.%m.%Y\')"/>. Продлите его в {project.name}.'
    '</xsl:template></xsl:stylesheet>')
EJS_TEMPLATE = "<%= project.name %>: счёт №<%= invoice.id %> на <%= invoice.amount %> ₽ оплачен. Спасибо!"
MAIL_SUBJECT = "Счёт №42 оплачен — спасибо!"
SMS_TEXT = "Demo Hosting: сервер vds-7 будет остановлен завтра. Продлите услугу."


class Report:
    """Numbered steps, each ok or failed with its reason."""

    def __init__(self):
        self.failures = 0
        self.number = 0
        self.started = time.time()

    def step(self, title, action):
        """Run ``action()``; it returns lines describing what happened, or raises with the reason."""
        self.number += 1
        print("%2d. %s" % (self.number, title), flush=True)
        try:
            for line in action() or []:
                print("      " + line)
            print("      ok", flush=True)
            return True
        except Exception as e:
            self.failures += 1
            print("      FAILED: %s" % e, flush=True)
            if os.environ.get("DEMO_DEBUG"):
                traceback.print_exc()
            return False


class Demo:
    """The servers, the sandbox and the steps."""

    def __init__(self, folder):
        self.folder = folder
        self.started = []   # what to stop, last first
        self.pids = []

    # --- servers ---------------------------------------------------------------------------------------

    def start_servers(self):
        import dovecot as dovecotlib
        import epochta_server
        import httpsms_servers
        import max_server
        import prosody as prosodylib
        import smtp_server
        self.mariadb = sandboxlib.MariaDB().start()
        self.started.append(self.mariadb.stop)
        self.pids.append(self.mariadb.process.pid)
        self.xmpp = prosodylib.Prosody().start()
        self.started.append(self.xmpp.stop)
        self.pids.append(self.xmpp.process.pid)
        certs = os.path.join(self.folder, "certs")
        os.makedirs(certs)
        cert, key = make_certificate(certs)   # one certificate for Dovecot, SMTP and the SMS stand-ins
        self.imap = dovecotlib.Dovecot(cert, key, "imap-demo-password").start()
        self.started.append(self.imap.stop)
        self.pids.append(self.imap.process.pid)
        self.smtp = smtp_server.SMTPServer(cert, key, "billing", "smtp-demo-password", self.imap.maildir).start()
        self.started.append(self.smtp.stop)
        self.epochta = epochta_server.EpochtaServer([epochta_server.Account("demo", "sms-demo-password")],
                                                    tls_folder=certs).start()
        self.started.append(self.epochta.stop)
        self.smsru = httpsms_servers.SmsRuServer("httpsms-demo-api-key", tls_folder=certs).start()
        self.started.append(self.smsru.stop)
        self.max_bot = max_server.MaxServer("max-demo-bot-token", tls_folder=certs).start()
        self.started.append(self.max_bot.stop)
        bundle = os.path.join(certs, "bundle.pem")
        with open(bundle, "w") as out:
            for path in (self.xmpp.cert, cert):
                with open(path) as f:
                    out.write(f.read())
        os.environ["SSL_CERT_FILE"] = bundle   # the modules verify every server against these certificates
        for secret in ("imap-demo-password", "smtp-demo-password", "sms-demo-password", "httpsms-demo-api-key",
                       "max-demo-bot-token"):
            sandboxlib.remember_secret(secret)
        return ["MariaDB on %s" % self.mariadb.socket,
                "Prosody (XMPP) on 127.0.0.1:%d" % self.xmpp.port,
                "Dovecot (IMAP) on 127.0.0.1:%d, SMTP (aiosmtpd) on 127.0.0.1:%d" % (
                    self.imap.ports[("imap", "ssl")], self.smtp.ports["starttls"]),
                "ePochta stand-in on %s, SMS.ru stand-in on %s" % (self.epochta.url, self.smsru.origin),
                "MAX Bot API stand-in on %s" % self.max_bot.origin]

    def lay_out(self):
        self.box = sandboxlib.Sandbox(self.folder, self.mariadb)
        self.started.insert(1, self.box.close)
        box = self.box
        self.project = box.add_project("Demo Hosting", "billing@demo.example")
        self.accounts = {}
        for name in ("notify", "support", "alice"):
            password = "%s-xmpp-demo-password" % name
            sandboxlib.remember_secret(password)
            self.accounts[name] = (self.xmpp.register("demo" + name, password), password)
        alice_jid = self.accounts["alice"][0]
        self.alice_id, account = box.add_user("alice", project=self.project, realname="Алиса Иванова", email="alice@demo.example",
                                  phone="+7 (900) 123-45-67", jabber=alice_jid)
        self.alice = {"id": "1", "name": "alice", "realname": "Алиса Иванова", "email": "alice@demo.example",
                      "phone": "+7 (900) 123-45-67", "jabber": alice_jid}
        self.ticket = box.add_ticket(account, "Сервер не отвечает")
        notify_jid, notify_password = self.accounts["notify"]
        support_jid, support_password = self.accounts["support"]
        box.add_gateway("gwjabber", "ntjabber", self.xmpp.settings(notify_jid, notify_password),
                        project=self.project, name="Jabber out")
        self.ingoing = box.add_gateway("gwjabber", "ntjabber",
                                       self.xmpp.settings(support_jid, support_password, ticket_format="#id",
                                                          receive_window="2"),
                                       project=self.project, gateway_type=2, name="Jabber in")
        max_settings = {"token": "max-demo-bot-token", "url": self.max_bot.origin, "receive_window": "1",
                        "ticket_format": "#id"}
        box.add_gateway("gwmax", "ntmax", max_settings, project=self.project, name="MAX out")
        box.add_gateway("gwmax", "ntmax", max_settings, project=self.project, gateway_type=2, name="MAX in")
        with open(box.path("var", "mgrctl-user-edit"), "w") as f:
            f.write("max\n")   # the stand-in mgrctl stores user.edit's max, as BILLmanager does
        self.sms_settings = {"login": "demo", "password": "sms-demo-password", "sender": "DemoHost",
                             "url": self.epochta.url}
        self.httpsms_settings = {"preset": "smsru", "api_key": "httpsms-demo-api-key", "sender": "DemoHost",
                                 "url": self.smsru.origin}
        self.mail_settings = {
            "email": "billing@demo.example", "from_name": "Demo Hosting", "smtp_host": "127.0.0.1",
            "smtp_port": str(self.smtp.ports["starttls"]), "smtp_security": "starttls", "smtp_login": "billing",
            "smtp_password": "smtp-demo-password", "in_protocol": "imap", "in_host": "127.0.0.1",
            "in_port": str(self.imap.ports[("imap", "ssl")]), "in_security": "ssl", "in_login": "alice@demo.example",
            "in_password": "imap-demo-password", "timeout": "10"}
        self.imap.maildir("alice@demo.example")
        return ["MGR5 root %s, database %s" % (box.root, box.db_name),
                "provider %d 'Demo Hosting'; user alice (jabber %s, phone %s, email %s); ticket #%d" % (
                    self.project, alice_jid, self.alice["phone"], self.alice["email"], self.ticket),
                "gateways: gwjabber and gwmax, each outgoing and ingoing (#id replies into tickets)"]

    # --- steps -----------------------------------------------------------------------------------------

    def features(self):
        lines = []
        for module in self.box.modules():
            done = self.box.run(module, "--command", "features")
            if done.returncode != 0:
                raise RuntimeError("%s --command features exited %d" % (module, done.returncode))
            root = xmlio.parse(done.stdout)
            kind = xmlio.text(root, "notify_module") or "contact " + xmlio.text(root, "contact_type")
            names = [f.get("name") for f in root.findall("features/feature")]
            lines.append("%-15s %-16s %s" % (module, kind, ", ".join(names) or "-"))
        return lines

    def jabber(self):
        box = self.box
        notice = ("<doc><project><id>%d</id><name>Demo Hosting</name></project><subject>Сервер скоро остановится"
                  "</subject><item><name>vds-7</name><expiredate>2026-12-01</expiredate></item></doc>" % self.project)
        box.enqueue("ntjabber", XSLT_TEMPLATE, notice, self.alice, priority=5)
        invoice = ("<doc><project><id>%d</id><name>Demo Hosting</name></project><invoice><id>42</id>"
                   "<amount>1 500</amount></invoice></doc>" % self.project)
        box.enqueue("ntjabber", EJS_TEMPLATE, invoice, self.alice, templatesubject="Оплата получена")
        queued = box.db.query("SELECT COUNT(*) AS n FROM notifytask")[0]["n"]
        done = box.run("notify/ntjabber", "--command", "process")
        if done.returncode != 0:
            raise RuntimeError("process exited %d: %s" % (done.returncode, done.stdout.decode()))
        left = box.db.query("SELECT id, err_info FROM notifytask")
        jid, password = self.accounts["alice"]
        with xmpp.XMPPClient(jid, host="127.0.0.1", port=self.xmpp.port, timeout=10) as client:
            client.connect()
            client.login(password)
            received = client.receive(2, 2)
        if len(received) != 2 or left:
            raise RuntimeError("alice received %d of 2 messages; the queue holds %s" % (len(received), left))
        lines = ["queued 2 notifications (XSLT and EJS templates) in notifytask: %s rows" % queued,
                 "ran notify/ntjabber --command process: exit 0, %d rows left" % len(left),
                 "alice's Jabber client received:"]
        lines += ["  from %s, subject '%s': %s" % (xmpp.bare_jid(s), subject, body) for s, body, subject in received]
        return lines

    def send_sms(self, module, settings):
        """Run ``module --command outgoing`` with SMS_TEXT to alice's phone, as ntsms does; raises with the reason
        the error document gives."""
        request = sandboxlib.gateway_request(settings, SMS_TEXT, user={"phone": self.alice["phone"]},
                                             project={"id": str(self.project), "name": "Demo Hosting"})
        done = self.box.run(module, "--command", "outgoing", input=request)
        if done.returncode != 0:
            raise RuntimeError(xmlio.text(xmlio.parse(done.stdout), "error/msg"))

    def sms(self):
        self.send_sms("gate/gwepochta", self.sms_settings)
        root = self.epochta.documents()[-1]
        return ["ran gate/gwepochta --command outgoing (as BILLmanager's ntsms does): exit 0",
                "the ePochta stand-in received over HTTPS: operation %s, number %s, sender %s" % (
                    root.findtext("operations/operation"), root.findtext("numbers/number"),
                    root.findtext("message/sender")),
                "text: %s" % root.findtext("message/text")]

    def httpsms(self):
        self.send_sms("gate/gwhttpsms", self.httpsms_settings)
        if not self.smsru.sent:
            raise RuntimeError("the SMS.ru stand-in took no SMS")
        number, text, sender = self.smsru.sent[-1]
        request = self.smsru.requests[-1]
        return ["ran gate/gwhttpsms --command outgoing (preset smsru, as BILLmanager's ntsms does): exit 0",
                "the SMS.ru stand-in received over HTTPS: %s %s, number %s, sender %s" % (
                    request["method"], request["path"], number, sender),
                "text: %s" % text]

    def mail(self):
        request = sandboxlib.gateway_request(self.mail_settings, "Здравствуйте, Алиса!\n\nСчёт №42 на 1 500 ₽ "
                                             "оплачен.\n\n-- \nDemo Hosting", user={"email": self.alice["email"],
                                                                                    "realname": "Алиса Иванова"},
                                             project={"name": "Demo Hosting", "email": "billing@demo.example"},
                                             subject=MAIL_SUBJECT)
        done = self.box.run("gate/gwmail", "--command", "outgoing", input=request)
        if done.returncode != 0:
            raise RuntimeError(xmlio.text(xmlio.parse(done.stdout), "error/msg"))
        fetched = self.box.run("gate/gwmail", "--command", "ingoing",
                               input=sandboxlib.gateway_request(self.mail_settings))
        if fetched.returncode != 0:
            raise RuntimeError(xmlio.text(xmlio.parse(fetched.stdout), "error/msg"))
        import email
        from email.header import decode_header, make_header
        messages = xmlio.parse(fetched.stdout).findall("messages/message")
        if not messages:
            raise RuntimeError("the mailbox was empty after the SMTP delivery")
        node = messages[-1]
        raw = node.text or ""
        mail = email.message_from_bytes(raw.encode("utf-8"))
        subject = str(make_header(decode_header(mail["Subject"])))
        if subject != MAIL_SUBJECT:
            raise RuntimeError("the subject came back as %r" % subject)
        return ["ran gate/gwmail --command outgoing: SMTP with STARTTLS to 127.0.0.1:%d, exit 0"
                % self.smtp.ports["starttls"],
                "ran gate/gwmail --command ingoing: IMAP over TLS, %d message(s) from alice's mailbox" % len(messages),
                "From: %s | Sender: %s" % (mail["From"], mail["Sender"]),
                "Subject (decoded): %s" % subject]

    def reply(self):
        jid, password = self.accounts["alice"]
        support = self.accounts["support"][0]
        text = "#%d Спасибо, сервер снова отвечает!" % self.ticket
        with xmpp.XMPPClient(jid, host="127.0.0.1", port=self.xmpp.port, timeout=10) as client:
            client.connect()
            client.login(password)
            client.send(support, text)
            client.ping()
        done = self.box.run("notify/ntjabber", "--command", "getmessage", "--gate", "all")
        if done.returncode != 0:
            raise RuntimeError(xmlio.text(xmlio.parse(done.stdout), "error/msg"))
        calls = [c for c in self.box.mgrctl_calls() if c["func"] == "clientticket.edit"]
        if not calls:
            raise RuntimeError("no clientticket.edit call reached mgrctl")
        p = calls[-1]["params"]
        return ["alice wrote to %s over Jabber: %s" % (support, text),
                "ran notify/ntjabber --command getmessage --gate all: exit 0",
                "sbin/mgrctl was called: clientticket.edit elid=%s su=%s message=%s" % (
                    p["elid"], p["su"], p["message"])]

    def max(self):
        box, bot = self.box, self.max_bot
        alice_max = 5550001
        bot.add_message(alice_max, "", attachments=[bot.contact(alice_max, "+79001234567", "Алиса Иванова")])
        self._getmessage("ntmax")
        linked = box.db.query("SELECT `max` FROM user WHERE id = ?", (self.alice_id,))[0]["max"]
        if linked != str(alice_max):
            raise RuntimeError("alice was not linked (user.max is %r); the bot answered %r" % (linked, bot.sent))
        lines = ["alice shared her own contact (+7 900 123-45-67) with the bot; ran notify/ntmax --command "
                 "getmessage: user.edit max=%s, and the bot answered: %s" % (alice_max, bot.sent[-1][1].split("\n")[0])]
        box.enqueue("ntmax", EJS_TEMPLATE, "<doc><project><id>%d</id><name>Demo Hosting</name></project>"
                    "<invoice><id>42</id><amount>1 500</amount></invoice></doc>" % self.project,
                    dict(self.alice, max=str(alice_max)), templatesubject="Оплата получена")
        done = box.run("notify/ntmax", "--command", "process")
        if done.returncode != 0 or not bot.sent or bot.sent[-1][0] != alice_max:
            raise RuntimeError("ntmax process exited %d; the bot sent %r" % (done.returncode, bot.sent))
        lines.append("ran notify/ntmax --command process: the MAX stand-in got for user %d: %s"
                     % (alice_max, bot.sent[-1][1].replace("\n", " | ")))
        text = "#%d Вижу счёт, спасибо" % self.ticket
        bot.add_message(alice_max, text)
        self._getmessage("ntmax")
        p = [c for c in box.mgrctl_calls() if c["func"] == "clientticket.edit"][-1]["params"]
        if p["message"] != "Вижу счёт, спасибо":
            raise RuntimeError("the MAX reply was not filed: %r" % p)
        return lines + ["alice wrote to the bot: %s; getmessage called clientticket.edit elid=%s su=%s"
                        % (text, p["elid"], p["su"])]

    def _getmessage(self, module):
        done = self.box.run("notify/" + module, "--command", "getmessage", "--gate", "all")
        if done.returncode != 0:
            raise RuntimeError(xmlio.text(xmlio.parse(done.stdout), "error/msg"))

    def queue_after(self):
        rows = self.box.db.query("SELECT COUNT(*) AS n FROM notifytask")[0]["n"]
        leaks = self.box.leaks()
        if leaks:
            raise RuntimeError("a password appears in what the modules wrote: %s" % leaks)
        logs = sorted(self.box.logs())
        return ["notifytask rows: %s" % rows, "module logs: %s (no password in any of them)" % ", ".join(logs)]

    def stop(self):
        for stop in reversed(self.started):
            try:
                stop()
            except Exception as e:
                print("      (stopping: %s)" % e)
        alive = [pid for pid in self.pids if _alive(pid)]
        return alive


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def main():
    report = Report()
    folder = tempfile.mkdtemp(prefix="mgrnotify-demo-")
    demo = Demo(folder)
    print("BILLmanager notification plugins: the local end-to-end demo (everything on 127.0.0.1, in %s)\n" % folder)
    try:
        if report.step("Start the servers: the BILLmanager database and the outside world", demo.start_servers) \
                and report.step("Lay out a sandbox MGR5 root: provider, user, ticket, gateways", demo.lay_out):
            report.step("Ask every module for its features, as BILLmanager does", demo.features)
            report.step("Jabber: queue two notifications, run ntjabber process, read them as alice", demo.jabber)
            report.step("SMS: gwepochta outgoing, read back from the ePochta stand-in", demo.sms)
            report.step("SMS: gwhttpsms outgoing (SMS.ru preset), read back from the SMS.ru stand-in", demo.httpsms)
            report.step("Mail: gwmail outgoing with a Cyrillic subject, then ingoing over IMAP", demo.mail)
            report.step("Reply: alice answers '#ticket ...' over Jabber, getmessage files it", demo.reply)
            report.step("MAX: alice links her account by her contact, gets a notification, answers a ticket",
                        demo.max)
            report.step("What the queue and the logs hold afterwards", demo.queue_after)
    finally:
        alive = demo.stop()
        shutil.rmtree(folder, ignore_errors=True)
    if alive:
        report.failures += 1
        print("\nStill running after the stop: %s" % alive)
    print("\n%d steps, %d failed, %.1f s. Every server the demo started is stopped; %s is removed."
          % (report.number, report.failures, time.time() - report.started, folder))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
