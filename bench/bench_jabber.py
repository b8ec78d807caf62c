"""Jabber notifications through the queue: ``notify/ntjabber --command process`` against a local Prosody.

Figures (issue 4 and 7): notifications per second through ``process`` for 1,000 queued notifications, as a
ratio to the same XMPP client sending 1,000 messages over one session in a bare loop (goals: at least 300 per
second, at most 2× the bare loop's time); the peak memory of ``process`` over a 10,000-task queue (goal: under
64 MiB); the ``mysql`` client calls per 1,000 tasks. Issue 16: the same 1,000 through a proxy on loopback that
adds 20 ms each way (tests/localnet.py DelayProxy), a server 40 ms away (goal: at least 200 a second), beside the
bare loop over that proxy. Prints figures, asserts nothing.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import timing  # noqa: E402  (puts tests/ and lib/python on sys.path)

import prosody as prosodylib  # noqa: E402
import sandbox as sandboxlib  # noqa: E402
from localnet import DelayProxy  # noqa: E402
from mgrnotify import xmpp  # noqa: E402

TEMPLATE = "<%= project.name %>: услуга <%= item.name %> истекает завтра, {user.realname}"
NOTICE = "<doc><project><id>%d</id><name>Bench Hosting</name></project><item><name>vds-%d</name></item></doc>"

# Runs the module in this interpreter and reports its own peak resident memory (children excluded).
PEAK_RSS = r"""
import resource, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
sys.stderr.write("PEAK_KIB %d\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


RECIPIENTS = 20   # Prosody keeps at most 10,000 offline messages per account; real queues have many users
DELAY = 0.020     # seconds each way through the proxy: a 40 ms round trip


def queue(box, project, users, count):
    for start in range(0, count, 1000):
        box.enqueue_many([dict(modulename="ntjabber", template=TEMPLATE, notice_xml=NOTICE % (project, i),
                               user=users[i % len(users)]) for i in range(start, min(count, start + 1000))])


def mysql_calls(box):
    try:
        with open(box.path("var", "child-argv.log")) as f:
            return sum(1 for line in f if line.startswith(("mariadb ", "mysql ")))
    except FileNotFoundError:
        return 0


def bare_loop(server, jid, password, to, count, port=None):
    """The same client, one session, ``count`` messages and one ping: the floor for the queue's figure (through
    ``port``, a proxy's, when given)."""
    start = time.perf_counter()
    with xmpp.XMPPClient(jid, host="127.0.0.1", port=port or server.port, cafile=server.cert, timeout=30) as client:
        client.connect()
        client.login(password)
        for i in range(count):
            client.send(to, "bare loop message %d" % i)
        client.ping()
    return time.perf_counter() - start


def received_once(server, users, password):
    """(distinct bodies, duplicates) among what ``users`` find waiting for them (their offline messages)."""
    bodies = []
    for user in users:
        with xmpp.XMPPClient(user["jabber"], host="127.0.0.1", port=server.port, cafile=server.cert,
                             timeout=30) as client:
            client.connect()
            client.login(password)
            bodies += [body for _, body, _ in client.receive(1, 5000)]
    return len(set(bodies)), len(bodies) - len(set(bodies))


def main():
    timing.compile_library()
    server = prosodylib.Prosody().start()
    mariadb = sandboxlib.MariaDB().start()
    os.environ["SSL_CERT_FILE"] = server.cert
    try:
        gw = server.register("benchgw", "bench-gw-password"), "bench-gw-password"
        users = [{"id": str(n), "name": "user%d" % n, "realname": "Алиса",
                  "jabber": server.register("benchuser%d" % n, "bench-user-password")} for n in range(RECIPIENTS)]
        rows = []
        with tempfile.TemporaryDirectory() as folder:
            box = sandboxlib.Sandbox(folder, mariadb)
            project = box.add_project("Bench Hosting")
            box.add_gateway("gwjabber", "ntjabber", server.settings(gw[0], gw[1], timeout="30"), project=project)
            queue(box, project, users, 1000)
            calls_before = mysql_calls(box)
            start = time.perf_counter()
            done = box.run("notify/ntjabber", "--command", "process", timeout=600)
            elapsed = time.perf_counter() - start
            left = box.db.query("SELECT COUNT(*) AS n FROM notifytask")[0]["n"]
            calls = mysql_calls(box) - calls_before
            bare = bare_loop(server, gw[0], gw[1], users[0]["jabber"], 1000)
            rows.append("| ntjabber process, 1,000 notifications | %.0f /s (%.2f s, exit %d, %s left) | "
                        "bare loop %.2f s | %.2f× | ≥ 300 /s, ≤ 2× | %s |" % (
                            1000 / elapsed, elapsed, done.returncode, left, bare, elapsed / bare,
                            "met" if 1000 / elapsed >= 300 and elapsed / bare <= 2 else "missed"))
            rows.append("| mysql client calls per 1,000 tasks | %d | | | | |" % calls)
            box.close()
        # Recipients of their own, so what they find waiting is this run's alone: each notice exactly once?
        far_users = [{"id": str(n), "name": "user%d" % n, "realname": "Алиса",
                      "jabber": server.register("faruser%d" % n, "bench-user-password")} for n in range(RECIPIENTS)]
        with tempfile.TemporaryDirectory() as folder, DelayProxy(("127.0.0.1", server.port), DELAY) as proxy:
            box = sandboxlib.Sandbox(folder, mariadb)
            project = box.add_project("Bench Hosting")
            box.add_gateway("gwjabber", "ntjabber", server.settings(gw[0], gw[1], timeout="30", port=str(proxy.port)),
                            project=project)
            queue(box, project, far_users, 1000)
            start = time.perf_counter()
            done = box.run("notify/ntjabber", "--command", "process", timeout=600)
            elapsed = time.perf_counter() - start
            left = box.db.query("SELECT COUNT(*) AS n FROM notifytask")[0]["n"]
            distinct, twice = received_once(server, far_users, "bench-user-password")
            bare = bare_loop(server, gw[0], gw[1], users[0]["jabber"], 1000, proxy.port)
            rows.append("| ntjabber process, 1,000 notifications over a 40 ms round trip | %.0f /s (%.2f s, exit %d, "
                        "%s left; received %d distinct, %d twice) | bare loop over the same proxy %.2f s | %.2f× | "
                        "≥ 200 /s | %s |" % (
                            1000 / elapsed, elapsed, done.returncode, left, distinct, twice, bare, elapsed / bare,
                            "met" if 1000 / elapsed >= 200 and distinct == 1000 and twice == 0 else "missed"))
            box.close()
        with tempfile.TemporaryDirectory() as folder:
            box = sandboxlib.Sandbox(folder, mariadb)
            project = box.add_project("Bench Hosting")
            box.add_gateway("gwjabber", "ntjabber", server.settings(gw[0], gw[1], timeout="30"), project=project)
            queue(box, project, users, 10000)
            import subprocess
            start = time.perf_counter()
            run = subprocess.run(["/usr/bin/python3", "-c", PEAK_RSS, box.path("notify", "ntjabber"), "--command",
                                  "process"], cwd=box.root, env=box.env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, timeout=1800)
            elapsed = time.perf_counter() - start
            peak = [int(line.split()[1]) for line in run.stderr.decode().splitlines() if line.startswith("PEAK_KIB")]
            left = box.db.query("SELECT COUNT(*) AS n FROM notifytask")[0]["n"]
            for row in box.db.query("SELECT error_count, err_info, COUNT(*) AS n FROM notifytask"
                                    " GROUP BY error_count, err_info"):
                print("left in the queue: %(n)s tasks, error_count %(error_count)s: %(err_info)s" % row)
            mib = peak[0] / 1024.0 if peak else float("nan")
            rows.append("| ntjabber process peak memory, 10,000 tasks | %.1f MiB (%.1f s, %s left) | | | < 64 MiB | %s |"
                        % (mib, elapsed, left, "met" if mib < 64 else "missed"))
            box.close()
        print("| figure | value | baseline | ratio | goal | |")
        print("| --- | --- | --- | --- | --- | --- |")
        for row in rows:
            print(row)
    finally:
        mariadb.stop()
        server.stop()


if __name__ == "__main__":
    main()
