"""Calling gateway modules from a notification type, as BILLmanager would: ``gate/gwX --command ...``.

A gateway is a separate process. This module finds the gateway rows of a notification type, runs
the gateway's commands with the row (and its ``<xmlparams>``) on stdin, bounds each call with a
deadline (a gateway that hangs is killed) and turns every way a call can fail -- non-zero exit,
garbage on stdout, an error document, a missing module -- into a readable reason.

Batches: a gateway that advertises the ``outgoing_batch`` feature gets one long-lived call per
``process`` run (``BatchChannel``: one server session), fed batch after batch, and answers one
``<result>`` line per message as soon as it is done; each result is acknowledged on a pipe once
recorded, and the gateway sends nothing more until then.
"""

import os
import time

from . import attachments, children, xmlio
from .errors import DeliveryError, InputError, MgrNotifyError
from .gateway import ACK_FD_ENV

BATCH_FEATURE = "outgoing_batch"
ATTACHMENTS_FEATURE = attachments.FEATURE   # the gateway carries a notice's files (<attachments>)
# gateway_type values [ours, from ISPsystem's example form]: 1 outgoing, 2 ingoing.
OUTGOING, INGOING = "1", "2"
# How long one gateway call may take before it is stopped [ours]: the gateway's own network timeout (its
# setting ``timeout``) comes first; this bound catches a gateway that hangs. It allows that timeout for each
# step (connect, TLS, login, answer), the receive window of ``ingoing``, a margin, and a little per message.
DEFAULT_STEP_TIMEOUT = 30
CALL_STEPS = 4
CALL_MARGIN = 5
PER_MESSAGE = 1
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

    def settings(self):
        """The gateway's settings (its ``xmlparams``); DeliveryError when they are not a readable document."""
        from .settings import Settings
        text = self.row.get("xmlparams") or ""
        try:
            values = xmlio.fields(xmlio.parse(text, "the settings of " + self.describe())) if text.strip() else {}
        except InputError as e:
            raise DeliveryError(e.message)
        return Settings(values, self.module)

    def call_timeout(self, messages=1):
        """Seconds one call of this gateway may take before it is stopped (see CALL_STEPS)."""
        try:
            settings = self.settings()
            step = settings.number("timeout", DEFAULT_STEP_TIMEOUT, 1)
            window = settings.number("receive_window", 0, 0)
        except MgrNotifyError:   # the gateway itself will say what is wrong with its settings
            step, window = DEFAULT_STEP_TIMEOUT, 0
        return CALL_MARGIN + CALL_STEPS * step + window + PER_MESSAGE * messages

    @property
    def all_providers(self):
        """True when the row names no provider: empty, NULL or 0 serves every provider [doc]."""
        return self.project in ("", "0")

    def xml(self):
        """The ``<gateway>`` element BILLmanager passes to a gateway: every column of the row, xmlparams as text.

        A column whose name cannot be an XML element name is left out (BILLmanager's own columns all can be).
        """
        return xmlio.element("gateway", children=[xmlio.element(k, v if v is not None else "")
                                                  for k, v in self.row.items() if _is_xml_name(k)])


def _is_xml_name(name):
    return bool(name) and (name[0].isalpha() or name[0] == "_") and all(c.isalnum() or c in "_-." for c in name)


def load(db, notify_module):
    """Every gateway row of ``notify_module``, every column, as ISPsystem's ntjabber reads them [src]."""
    rows = db.query("SELECT * FROM gateway WHERE notify_module = ? ORDER BY id", (notify_module,))
    return [GatewayRow(row) for row in rows]


def outgoing_candidates(gateways, project_id):
    """The active outgoing gateways that may carry a notice of provider ``project_id``, best first.

    The provider's own gateways come first; then those whose provider is left blank, which "is used for all
    providers" [doc]; each group by id. A notice that names no provider goes through a gateway for all providers,
    else through any active outgoing gateway [ours].
    """
    usable = sorted((g for g in gateways if g.active and g.type == OUTGOING), key=_id_order)
    if project_id and project_id != "0":
        own = [g for g in usable if g.project == project_id]
        return own or [g for g in usable if g.all_providers]
    return [g for g in usable if g.all_providers] or usable


def _id_order(gateway):
    return (0, int(gateway.id)) if gateway.id.isdigit() else (1, gateway.id)


def outgoing_for(gateways, project_id, log=None):
    """The gateway a notice of provider ``project_id`` goes through (the first candidate), or None.

    When several could serve, ``log`` is told which was chosen and why.
    """
    candidates = outgoing_candidates(gateways, project_id)
    if not candidates:
        return None
    chosen = candidates[0]
    if len(candidates) > 1 and log is not None:
        log.info("Provider %s: %d active outgoing gateways could serve (%s); using %s, the lowest id%s",
                 project_id or "(none named)", len(candidates), ", ".join(g.id for g in candidates),
                 chosen.describe(), "" if chosen.project == project_id and project_id
                 else " among those for all providers" if chosen.all_providers else "")
    return chosen


def failure_reason(stdout, returncode, what):
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
            reason = failure_reason(stdout, status, "The gateway %s (--command features)" % self.name)
            if reason:
                raise DeliveryError(reason)
            root = xmlio.parse(stdout, "the features of " + self.name)
            self._features = [f.get("name") for f in root.findall("features/feature")]
        return self._features

    def outgoing(self, gateway, request_children):
        """Send one message (``--command outgoing``); None on success, else the reason."""
        document = xmlio.document(gateway.xml(), *request_children)
        try:
            stdout, status = self.run("outgoing", document, gateway.call_timeout())
        except DeliveryError as e:
            return e.message
        return failure_reason(stdout, status, "The gateway " + self.name)

    def ingoing(self, gateway):
        """The messages the gateway fetched: a list of (text, attributes); DeliveryError with the reason."""
        stdout, status = self.run("ingoing", xmlio.document(gateway.xml()), gateway.call_timeout())
        reason = failure_reason(stdout, status, "The gateway " + self.name)
        if reason:
            raise DeliveryError(reason)
        root = xmlio.parse(stdout, "the messages of " + self.name)
        return [(m.text or "", dict(m.attrib)) for m in root.findall("messages/message")]


class BatchChannel:
    """One ``--command outgoing_batch`` process of a gateway, kept for a whole ``process`` run.

    The request is written as the run goes: the ``<gateway>`` first, then each batch's ``<message>``
    elements; the document is closed at the end of the run. So the gateway holds one server session
    for the run, however many batches there are. Each result is acknowledged once recorded. A
    gateway that dies or hangs is stopped; the next batch starts a new one.
    """

    def __init__(self, module, gateway):
        self.module = module
        self.gateway = gateway
        self.process = None
        self.ack = None
        self.buffer = b""
        self.output = b""
        self.stray = []
        self.answered = 0   # results this process gave: did it get anywhere before failing?

    def _start(self):
        import subprocess
        self.module.check()
        ack_read, self.ack = os.pipe()
        env = dict(os.environ)
        env[ACK_FD_ENV] = str(ack_read)
        try:
            self.process = subprocess.Popen([self.module.path, "--command", "outgoing_batch"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, cwd=self.module.config.root,
                                            env=env, pass_fds=(ack_read,))
        except OSError as e:
            os.close(self.ack)
            raise DeliveryError("The gateway %s cannot be run: %s" % (self.module.name, e.strerror))
        finally:
            os.close(ack_read)
        self.buffer, self.output, self.stray, self.answered = b"", b"", [], 0
        return '<?xml version="1.0" encoding="UTF-8"?>\n<doc>%s<messages>\n' % self.gateway.xml()

    def send(self, messages, on_result):
        """Send ``[(id, <message> text)]``; ``on_result(id, reason or None)`` as each is reported.

        Returns {id: reason} for those the gateway did not report. When the gateway dies or hangs, the message
        it was on fails with the reason, and the rest go to a new gateway process -- as long as the last one
        got somewhere; when it got nowhere (a crash at login, say) they all fail with its reason.
        """
        failed = {}
        while messages:
            pending, reason, progressed = self._attempt(messages, on_result)
            if not pending:
                break
            unanswered = [(message_id, text) for message_id, text in messages if message_id in pending]
            if not progressed:
                failed.update((message_id, reason) for message_id, _ in unanswered)
                break
            failed[unanswered[0][0]] = reason   # the one in flight when the gateway failed
            messages = unanswered[1:]
        return failed

    def _attempt(self, messages, on_result):
        """One try through the current (or a new) gateway process: (unanswered ids, reason, whether the process
        had answered anything)."""
        import threading
        timeout = self.gateway.call_timeout(len(messages))
        try:
            head = self._start() if self.process is None else ""
        except DeliveryError as e:
            return {message_id for message_id, _ in messages}, e.message, False
        data = (head + "".join(text + "\n" for _, text in messages)).encode("utf-8")
        threading.Thread(target=_write, args=(self.process.stdin, data), daemon=True).start()
        pending = {message_id for message_id, _ in messages}

        def recorded(message_id, reason):
            on_result(message_id, reason)
            self.answered += 1
            try:
                os.write(self.ack, b"+")   # only now may the gateway send the next message
            except OSError:   # the gateway is gone: its end of the output tells the rest
                pass

        ended, timed_out = self._read_results(pending, recorded, time.time() + timeout)
        if not pending:
            return pending, None, True
        reason = self._failure(timed_out, timeout)
        progressed = self.answered > 0
        self._stop()
        return pending, reason, progressed

    def _failure(self, timed_out, timeout):
        name = self.module.name
        if timed_out:
            return "The gateway %s did not finish the batch within %d seconds and was stopped" % (name, timeout)
        status = self.process.wait()
        if b"<results>" in self.output:
            if self.stray:
                return "The gateway %s answered with something that is not a result: %r" % (
                    name, self.stray[0][:200].decode("utf-8", "replace"))
            return "The gateway %s stopped (exit status %d) before reporting this message" % (name, status)
        # No results began: the gateway failed as a whole, and its error document (if any) says why.
        return (failure_reason(self.output, status, "The gateway " + name)
                or "The gateway %s gave no result for this message" % name)

    def _read_results(self, pending, on_result, deadline):
        """Read result lines until every pending message is reported; (ended, timed out)."""
        import select
        stream = self.process.stdout
        while pending:
            remaining = deadline - time.time()
            if remaining <= 0:
                return False, True
            ready, _, _ = select.select([stream], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                return True, False
            self.output = (self.output + chunk)[-65536:]
            lines = (self.buffer + chunk).split(b"\n")
            self.buffer = lines.pop()
            for line in lines:
                self._result_line(line.strip(), pending, on_result)
        return False, False

    def _result_line(self, line, pending, on_result):
        if not line.startswith(b"<result "):
            if line and not line.startswith((b"<?xml", b"<doc><results>", b"</results></doc>")):
                self.stray.append(line)
            return
        try:
            node = xmlio.parse(line, "a result line of " + self.module.name)
        except InputError as e:
            self.module.log.warning("%s", e.message)
            return
        message_id = node.get("id")
        if message_id in pending:
            pending.discard(message_id)
            on_result(message_id, None if node.get("status") == "ok" else (node.text or "failed").strip())

    def close(self, timeout=30):
        """End the request document and let the gateway close its session."""
        import subprocess
        if self.process is None:
            return
        try:
            self.process.stdin.write(b"</messages></doc>\n")
            self.process.stdin.close()
            self.process.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._stop()

    def _stop(self):
        if self.process is not None:
            children.stop(self.process)
            os.close(self.ack)
        self.process = None


def _write(pipe, data):
    """Write to a gateway's stdin in a thread, so a gateway that never reads cannot block the caller."""
    try:
        pipe.write(data)
        pipe.flush()
    except (OSError, ValueError):
        pass
