"""The local end-to-end demo: a BILLmanager stand-in on loopback, the modules run as BILLmanager runs them.

Every step prints what it did and what it read back from the servers themselves; a failed step says why,
and the demo exits non-zero. Everything it starts is stopped at the end, whatever happens.
"""

import os
import shutil
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sandbox as sandboxlib  # noqa: E402
from mgrnotify import xmlio  # noqa: E402


class Report:
    """Numbered steps, each ok or failed with its reason."""

    def __init__(self):
        self.failures = 0
        self.number = 0
        self.started = time.time()

    def step(self, title, action):
        """Run ``action()``; it returns lines describing what happened, or raises with the reason."""
        self.number += 1
        print("%2d. %s" % (self.number, title))
        try:
            for line in action() or []:
                print("      " + line)
            print("      ok")
            return True
        except Exception as e:
            self.failures += 1
            print("      FAILED: %s" % e)
            if os.environ.get("DEMO_DEBUG"):
                traceback.print_exc()
            return False


def features(box):
    lines = []
    for module in box.modules():
        done = box.run(module, "--command", "features")
        if done.returncode != 0:
            raise RuntimeError("%s --command features exited %d: %s" % (module, done.returncode, done.stdout))
        root = xmlio.parse(done.stdout)
        names = [f.get("name") for f in root.findall("features/feature")]
        kind = xmlio.text(root, "notify_module") or xmlio.text(root, "contact_type")
        lines.append("%-16s %-10s %s" % (module, kind, ", ".join(names)))
    return lines or ["(no modules in gate/ or notify/ yet)"]


def main():
    report = Report()
    workdir = tempfile.mkdtemp(prefix="mgrnotify-demo-")
    mariadb = sandboxlib.MariaDB()
    box = None
    try:
        print("BILLmanager notification plugins: local end-to-end demo (everything on loopback, in %s)\n" % workdir)
        if not report.step("Start MariaDB, the BILLmanager database", lambda: [
                "socket %s" % mariadb.start().socket]):
            return 1
        holder = {}

        def lay_out():
            holder["box"] = sandboxlib.Sandbox(workdir, mariadb)
            return ["MGR5 root %s" % holder["box"].root, "etc/billmgr.conf -> database %s" % holder["box"].db_name]

        if not report.step("Lay out a sandbox MGR5 root with the BILLmanager schema", lay_out):
            return 1
        box = holder["box"]
        report.step("Ask every module for its features, as BILLmanager does", lambda: features(box))

        def queue():
            project = box.add_project("Demo Hosting", "billing@demo.example")
            box.add_user("alice", project=project, email="alice@demo.example", phone="+7 (900) 123-45-67",
                         jabber="alice@localhost")
            task = box.enqueue("ntjabber", "<%= project.name %>: your server expires tomorrow",
                               "<doc><project><id>%d</id><name>Demo Hosting</name></project></doc>" % project,
                               {"name": "alice", "jabber": "alice@localhost"})
            rows = box.db.query("SELECT id, modulename, filename FROM notifytask")
            return ["task %s: %s %s" % (r["id"], r["modulename"], r["filename"]) for r in rows if int(r["id"]) == task]

        report.step("Queue a notification (file under var/notify, row in notifytask)", queue)
    finally:
        if box is not None:
            box.close()
        mariadb.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.time() - report.started
    print("\n%d step(s), %d failed, %.1f s. Every process started was stopped; %s removed."
          % (report.number, report.failures, elapsed, workdir))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
