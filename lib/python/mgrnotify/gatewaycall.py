"""Calling gateway modules from a notification type, as BILLmanager would: ``gate/gwX --command ...``.

A gateway is a separate process. This module finds the gateway rows of a notification type, runs
the gateway's commands with the row (and its ``<xmlparams>``) on stdin, bounds each call with a
deadline (a gateway that hangs is killed) and turns every way a call can fail -- non-zero exit,
garbage on stdout, an error document, a missing module -- into a readable reason.

Batches: a gateway that advertises the ``outgoing_batch`` feature takes many messages in one call
(one server session) and answers one ``<result>`` line per message as soon as it is done; each
result is acknowledged on a pipe once recorded, and the gateway sends nothing more until then.
"""

import os
import time

from . import xmlio
from .errors import DeliveryError, InputError
from .gateway import ACK_FD_ENV

BATCH_FEATURE = "outgoing_batch"
# gateway_type values [ours, from ISPsystem's example form]: 1 outgoing, 2 ingoing.
OUTGOING, INGOING = "1", "2"
# A bound on one gateway call [ours]: the gateway's own network timeouts come first; this one catches a hang.
CALL_TIMEOUT = 120
BATCH_TIMEOUT_PER_MESSAGE = 2
_VALID_NAME = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


class GatewayRow:
    """One row of the ``gateway`` table."""

    def __init__(self, row):
        self.row = row
        self.id = row.get("id") or ""
        self.module = (row.get("gateway_module") or "").strip()
        self.project = (row.get("project") or "").strip()
        self.type = (row.get("gateway_type") or "").strip()
        self.active = (row.get("active") or "").strip().lower() == "on"   # the example mixes 'ON' and 'on'

    def describe(self):
        """``gateway 3 (gwjabber)``, for messages."""
        return "gateway %s (%s)" % (self.id, self.module or "no module")

    def xml(self):
        """The ``<gateway>`` element BILLmanager passes to a gateway: the row, xmlparams as text."""
        return xmlio.element("gateway", children=[xmlio.element(k, v if v is not None else "")
                                                  for k, v in self.row.items()])


def load(db, notify_module):
    """Every gateway row of ``notify_module`` (only the columns CONTRACT.md lists)."""
    rows = db.query("SELECT id, name, gateway_module, notify_module, gateway_type, active, project, xmlparams"
                    " FROM gateway WHERE notify_module = ? ORDER BY id", (notify_module,))
    return [GatewayRow(row) for row in rows]


def outgoing_for(gateways, project_id):
    """The active outgoing gateway of the provider ``project_id`` (the lowest id), or None.

    A notice naming no provider may go through any active outgoing gateway [ours].
    """
    for gateway in gateways:
        if gateway.active and gateway.type == OUTGOING and (gateway.project == project_id or not project_id):
            return gateway
    return None


def _reason(stdout, returncode, what):
    """Why a gateway call failed, from its output and exit status."""
    try:
        root = xmlio.parse(stdout, "the answer of " + what)
    except InputError:
        snippet = stdout[:200].decode("utf-8", "replace").strip()
        if returncode:
            return "%s exited with status %d%s" % (what, returncode, ": " + snippet if snippet else "")
        return "%s answered with something that is not XML: %r" % (what, snippet)
    error = root.find("error")
    if error is not None:
        return xmlio.text(error, "msg") or "%s reported an error of type %s" % (what, error.get("type"))
    if returncode:
        return "%s exited with status %d" % (what, returncode)
    return None


class GatewayModule:
    """The executable ``gate/<module>`` of one MGR5 root."""

    def __init__(self, config, name, log):
        self.config = config
        self.name = name
        self.log = log
        self.path = config.path("gate", name)
        self._features = None
        self._stray = []   # lines of a batch answer that are not results

    def check(self):
        """Raise DeliveryError unless the module name is sane and its executable exists."""
        if not self.name or not set(self.name) <= _VALID_NAME:
            raise DeliveryError("The gateway module name %r is not valid" % self.name)
        if not os.access(self.path, os.X_OK):
            raise DeliveryError("The gateway module %s is not installed (no executable %s)" % (self.name, self.path))

    def run(self, command, document, timeout):
        """Run ``--command command`` with ``document`` on stdin; (stdout, returncode) or a timeout reason."""
        import subprocess
        self.check()
        try:
            done = subprocess.run([self.path, "--command", command], input=document.encode("utf-8"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                                  cwd=self.config.root)
        except subprocess.TimeoutExpired:
            raise DeliveryError("The gateway %s did not answer --command %s within %d seconds and was stopped"
                             % (self.name, command, timeout))
        except OSError as e:
            raise DeliveryError("The gateway %s cannot be run: %s" % (self.name, e.strerror))
        return done.stdout, done.returncode

    def features(self):
        """The features the gateway advertises (asked once)."""
        if self._features is None:
            stdout, status = self.run("features", "", 30)
            reason = _reason(stdout, status, "The gateway %s (--command features)" % self.name)
            if reason:
                raise DeliveryError(reason)
            root = xmlio.parse(stdout, "the features of " + self.name)
            self._features = [f.get("name") for f in root.findall("features/feature")]
        return self._features

    def outgoing(self, gateway, request_children, timeout=CALL_TIMEOUT):
        """Send one message (``--command outgoing``); None on success, else the reason."""
        document = xmlio.document(gateway.xml(), *request_children)
        try:
            stdout, status = self.run("outgoing", document, timeout)
        except DeliveryError as e:
            return e.message
        return _reason(stdout, status, "The gateway " + self.name)

    def outgoing_batch(self, gateway, messages, on_result, timeout=None):
        """Send ``[(task id, <message> element text)]`` in one call; ``on_result(id, reason or None)``
        is called for each message as soon as the gateway reports it. Returns the ids left unanswered
        with the reason (the gateway died, hung, or failed as a whole)."""
        import subprocess
        import threading
        self.check()
        timeout = timeout or CALL_TIMEOUT + BATCH_TIMEOUT_PER_MESSAGE * len(messages)
        document = xmlio.document(gateway.xml(), xmlio.element("messages", children=[m for _, m in messages]))
        ack_read, ack_write = os.pipe()
        env = dict(os.environ)
        env[ACK_FD_ENV] = str(ack_read)
        try:
            process = subprocess.Popen([self.path, "--command", "outgoing_batch"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=self.config.root,
                                       env=env, pass_fds=(ack_read,))
        finally:
            os.close(ack_read)
        writer = threading.Thread(target=_feed, args=(process.stdin, document.encode("utf-8")), daemon=True)
        writer.start()
        pending = {task_id for task_id, _ in messages}
        self._stray = []

        def recorded(task_id, reason):
            on_result(task_id, reason)
            os.write(ack_write, b"+")   # only now may the gateway send the next message

        try:
            output, timed_out = self._read_results(process, pending, recorded, time.time() + timeout)
        finally:
            os.close(ack_write)
        if timed_out:
            process.kill()
        status = process.wait()
        process.stdout.close()
        if not pending:
            return {}
        if timed_out:
            reason = ("The gateway %s did not finish the batch within %d seconds and was stopped"
                      % (self.name, timeout))
        elif self._stray:
            reason = "The gateway %s answered with something that is not a result: %r" % (
                self.name, self._stray[0][:200].decode("utf-8", "replace"))
        elif b"<results>" in output:
            reason = "The gateway %s stopped (exit status %d) before reporting this message" % (self.name, status)
        else:
            reason = (_reason(output, status, "The gateway " + self.name)
                      or "The gateway %s gave no result for this message" % self.name)
        return {task_id: reason for task_id in pending}

    def _read_results(self, process, pending, on_result, deadline):
        import select
        output = b""
        buffered = b""
        stream = process.stdout
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                return output, True
            ready, _, _ = select.select([stream], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                return output, False
            output += chunk
            buffered += chunk
            lines = buffered.split(b"\n")
            buffered = lines.pop()
            for line in lines:
                self._result_line(line.strip(), pending, on_result)

    def _result_line(self, line, pending, on_result):
        if not line.startswith(b"<result "):
            if line and not line.startswith((b"<?xml", b"<doc><results>", b"</results></doc>")):
                self._stray.append(line)
            return
        try:
            node = xmlio.parse(line, "a result line of " + self.name)
        except InputError as e:
            self.log.warning("%s", e.message)
            return
        task_id = node.get("id")
        if task_id in pending:
            pending.discard(task_id)
            on_result(task_id, None if node.get("status") == "ok" else (node.text or "failed").strip())

    def ingoing(self, gateway, timeout=CALL_TIMEOUT):
        """The messages the gateway fetched: a list of (text, attributes); DeliveryError with the reason."""
        stdout, status = self.run("ingoing", xmlio.document(gateway.xml()), timeout)
        reason = _reason(stdout, status, "The gateway " + self.name)
        if reason:
            raise DeliveryError(reason)
        root = xmlio.parse(stdout, "the messages of " + self.name)
        return [(m.text or "", dict(m.attrib)) for m in root.findall("messages/message")]


def _feed(pipe, data):
    """Write a gateway's stdin in a thread, so a gateway that never reads cannot block the caller."""
    try:
        pipe.write(data)
        pipe.close()
    except OSError:
        pass
