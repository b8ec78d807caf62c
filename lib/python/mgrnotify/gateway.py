"""Base class of gateway modules (``gate/gwX``): ISPsystem's gateway API in Python.

A gateway subclasses ``Gateway``, names its ``notify_module`` and overrides what it supports:
``outgoing(request)``, ``ingoing(request)``, ``formtune(form)``, ``check_connection(request)``.
``--command features`` lists exactly the methods overridden, so the two can never disagree.
A gateway that can send many messages over one session also overrides ``open_batch(request)``,
which adds the ``outgoing_batch`` feature and command. ``doctor [--gate ID] [--connect]`` is for the
admin at a shell: plain text lines on this module's gateway rows (``doctor.py``).
"""

import os
import sys

from . import redact, xmlio
from .errors import EXIT_FAILURE, InputError, MgrNotifyError, UsageError
from .runner import Answered, Module, is_id

GATEWAY_COMMANDS = ("outgoing", "ingoing", "formtune", "check_connection")
# Our own feature and command: many messages over one server session (see gatewaycall and README).
BATCH = "outgoing_batch"


class Request:
    """A parsed request on stdin: the document, and the gateway's settings from it."""

    def __init__(self, root, settings):
        self.root = root
        self.settings = settings

    def text(self, path, default=""):
        """The text at ``path`` in the request (``''`` if empty, ``default`` if absent)."""
        return xmlio.text(self.root, path, default)

    def contact(self, name):
        """A recipient field: ``<name>`` at the root (the example's format), else ``<user><name>``."""
        return (self.text(name) or self.text("user/" + name)).strip()


class Gateway(Module):
    """Base of gateway modules: the command protocol, features, settings and the output documents."""

    #: the notification type this gateway delivers (ntsms, ntemail, ntjabber, ...)
    notify_module = None
    #: features beyond the four standard commands, for modules of our own that call this gateway
    extra_features = ()
    #: doctor's options are the admin's. [ours] BILLmanager's own ntsms and ntemail call outgoing and ingoing with
    #: command lines that are not public, and ISPsystem's example passes ``--gate ID`` to a gateway's own command:
    #: those two accept it (the gateway's row comes on stdin all the same) rather than fail a real installation.
    COMMAND_OPTIONS = {"doctor": {"gate": "ID", "connect": None}, "outgoing": {"gate": "ID"}, "ingoing": {"gate": "ID"}}

    def features(self):
        """Names of the standard commands this gateway overrides, then its extra features."""
        own = [c for c in GATEWAY_COMMANDS if getattr(type(self), c) is not getattr(Gateway, c)]
        if type(self).open_batch is not Gateway.open_batch:
            own.append(BATCH)
        return own + list(self.extra_features)

    def commands(self):
        """Only the standard commands (and the batch) this gateway implements are answered."""
        optional = GATEWAY_COMMANDS + (BATCH,)
        base = [c for c in super().commands() if c not in optional]
        return sorted(base + [c for c in self.features() if c in optional])

    def read_request(self):
        """Stdin parsed, with the settings it carries."""
        root = self.read_input()
        from .settings import Settings
        return Request(root, Settings.from_request(root, self.log.name))

    def command_features(self):
        """``<features>`` and ``<notify_module>``; reads no stdin and imports no XML parser."""
        features = [xmlio.element("feature", attrs={"name": f}) for f in self.features()]
        return xmlio.document(xmlio.element("features", children=features),
                              xmlio.element("notify_module", self.notify_module))

    def command_formtune(self):
        """The settings form, as ``formtune`` leaves it."""
        form = self.read_input("the settings form")
        return xmlio.serialize(self.formtune(form))

    def command_check_connection(self):
        """The form back, with every secret in it blanked, if ``check_connection`` raised nothing."""
        root = self.read_input("the settings form")
        from .settings import Settings
        self.check_connection(Request(root, Settings.from_request(root, self.log.name, form=True)))
        return xmlio.serialize(without_secrets(root))

    def command_outgoing(self):
        """An empty document once ``outgoing`` returned."""
        self.outgoing(self.read_request())
        return xmlio.document()

    def command_ingoing(self):
        """``<messages>`` with what ``ingoing`` fetched."""
        messages = []
        for message in self.ingoing(self.read_request()):
            text, attrs = message if isinstance(message, tuple) else (message, None)
            messages.append(xmlio.element("message", text, attrs))
        return xmlio.document(xmlio.element("messages", children=messages))

    def command_outgoing_batch(self):
        """Send ``<messages><message id to><subject/><body/></message>...`` over one session, answering one
        ``<result>`` line per message as it is done; a message that fails does not stop the others.

        The request is read as it arrives: a caller may keep this process for many batches and end the
        document when it has no more (gatewaycall.BatchChannel), so one session serves a whole run.
        Exit status 0 once every message has its result, failed or not (the rule: ``errors.PartialFailure``);
        1 when the caller stopped reading, 3 when the request broke off after the results began.
        """
        batch = _Batch(self)
        broken = None
        try:
            for element in xmlio.stream_elements(0, ("gateway", "messages", "message"), "the outgoing_batch request",
                                                 idle=batch.finish):
                batch.take(element)
        except CallerGone:
            self.log.warning("The caller stopped reading results; the rest of the batch is left for its next run")
            return Answered(EXIT_FAILURE)
        except InputError as e:
            if batch.stream is None:
                raise
            self.log.error("%s", e.message)   # results already went out: end them, the error after them
            broken = e
            broken.object = broken.object or self.log.name
        finally:
            batch.close(broken)
        if batch.stream is None:
            raise InputError("The outgoing_batch request has no <messages> element", obj="messages")
        return None if broken is None else Answered(broken.exit_status)

    def command_doctor(self):
        """Can this gateway work here? One line per check, for a person (README, "doctor"); exit 0 when it can.
        ``--gate ID`` checks that gateway row only; ``--connect`` runs ``check_connection`` on each active row."""
        from . import doctor
        from .gatewaycall import GatewayRow
        gate = self.options.get("gate")
        if gate is not None and not is_id(gate):
            raise UsageError("doctor takes --gate with a gateway id (digits), not '%s'" % gate, obj="gate")
        report, db, _ = doctor.begin(self, doctor.GATEWAY_TABLES)
        if db is not None:
            with report.guard("gateways"):
                if gate is None:
                    rows = db.query("SELECT * FROM gateway WHERE gateway_module = ? ORDER BY id", (self.log.name,))
                else:
                    rows = db.query("SELECT * FROM gateway WHERE id = ?", (gate,))
                rows = [GatewayRow(row) for row in rows]
                if gate is not None and not rows:
                    report.fail("gateway " + gate, "there is no such gateway", "see the ids in BILLmanager's list "
                                "of gateways")
                elif gate is not None and rows[0].module != self.log.name:
                    report.fail(rows[0].describe(), "it is a gateway of %s, not %s" % (rows[0].module, self.log.name),
                                "run gate/%s --command doctor --gate %s" % (rows[0].module, gate))
                elif not rows:
                    report.warn("gateways", "no gateway uses %s yet" % self.log.name,
                                "add one in BILLmanager to send through it")
                else:
                    doctor.check_gateway_self(report, self, rows, doctor.providers(db),
                                              self.options.get("connect", False))
        doctor.check_var(report, self.config)
        return report.answer("%s can work here" % self.log.name, "%s cannot work here" % self.log.name)

    def _send_one(self, session, message):
        """Send one ``<message>`` through ``session``: None when sent, else the reason it failed. A session that
        keeps messages on their way (``submit``) is only handed it: None then means "handed over"."""
        try:
            files = [a.text for a in message.findall("attachments/attachment") if a.text]
            # Only a gateway advertising the attachments feature is sent files; its session takes them.
            extra = {"attachments": files} if files else {}
            if hasattr(session, "submit"):
                session.submit(message.get("id"), message.get("to", ""), xmlio.text(message, "subject"),
                               xmlio.text(message, "body"), **extra)
            else:
                session.send(message.get("to", ""), xmlio.text(message, "subject"), xmlio.text(message, "body"),
                             **extra)
            return None
        except MgrNotifyError as e:
            self.log.error("Message %s to %s: %s", message.get("id"), message.get("to"), e.message)
            return e.message
        except Exception as e:   # a defect costs this message, not the batch
            self.log.exception("Message %s: internal error", message.get("id"))
            return "%s failed with an internal error (%s); the traceback is in %s" % (
                self.log.name, type(e).__name__, self.log.path)

    def open_batch(self, request):
        """Open one session for many messages: an object with ``send(to, subject, body)`` and ``close()``.

        A gateway with the ``attachments`` feature gets ``send(..., attachments=[path, ...])`` when a message has files.
        A session that keeps several messages on their way at once has, instead of ``send``, ``window`` (how
        many at most), ``submit(key, to, subject, body)`` (send without waiting; raise as ``send`` would for a
        message that cannot go) and ``collect(wait)`` ([(key, None or the reason)] of the messages whose fate
        is known; with ``wait``, at least one while any is on its way).
        """
        raise NotImplementedError

    def outgoing(self, request):
        """Send ``request``'s message; raise an MgrNotifyError subclass if it was not accepted."""
        raise NotImplementedError

    def ingoing(self, request):
        """Fetch incoming messages: a list of texts, or of (text, attributes) pairs."""
        raise NotImplementedError

    def formtune(self, form):
        """Adjust the settings form (an ElementTree element) and return it."""
        raise NotImplementedError

    def check_connection(self, request):
        """Log in with the entered settings; raise an MgrNotifyError subclass saying why not."""
        raise NotImplementedError


def without_secrets(root):
    """``root`` with no entered secret left in it, wherever it sat: every ``<xmlparams>`` removed (it holds all
    the entered values), and every secret-named field blanked -- an element's content (``<password>``), an
    attribute's value, the text of an element named by its ``name`` attribute (``<field name="password">``)."""
    for parent in list(root.iter()):
        for params in parent.findall("xmlparams"):
            parent.remove(params)
    for element in list(root.iter()):
        for name in element.attrib:
            if redact.is_secret(name):
                element.set(name, "")
        if redact.is_secret(element.tag):
            element.text = None
            del element[:]
        elif redact.is_secret(element.get("name", "")):
            element.text = None
    return root


# Set by a caller that acknowledges each result (gatewaycall): the descriptor its acknowledgements come on.
ACK_FD_ENV = "MGRNOTIFY_BATCH_ACK_FD"


class CallerGone(Exception):
    """The process that asked for the batch no longer reads its results."""


class _Batch:
    """The state of one ``outgoing_batch`` call: settings, the session (opened for the first message),
    and the result stream (opened once the request has shown it is one)."""

    def __init__(self, gateway):
        self.gateway = gateway
        self.request = None
        self.stream = None
        self.session = None
        self.failure = None   # why no message can go (a refused login, a bad setting)
        # id -> None (on its way) or (its reason or None,): the messages taken and not yet reported, in order
        import collections
        self.on_the_way = collections.OrderedDict()

    def take(self, element):
        """Handle one complete element of the request."""
        from xml.etree.ElementTree import Element
        if element.tag == "gateway":
            import copy
            root = Element("doc")
            root.append(copy.deepcopy(element))   # the stream clears each element once handled
            from .settings import Settings
            self.request = Request(root, Settings.from_request(root, self.gateway.log.name))
            return
        if element.tag == "message" and not element.get("id"):
            raise InputError("A <message> of the outgoing_batch request has no id attribute", obj="message")
        if self.stream is None:
            self.stream = ResultStream()
        if element.tag == "message":
            self.send(element)

    def send(self, message):
        """Send one ``<message>`` through the session (opened on first use) and report it: at once, or, through
        a windowed session, once its fate is known and every earlier message's has been reported (results keep
        the request's order), first waiting while the window is full."""
        message_id = message.get("id")
        if self.failure is None and self.session is None:
            try:
                if self.request is None:
                    raise InputError("The outgoing_batch request has no <gateway> before its messages")
                self.session = self.gateway.open_batch(self.request)
            except MgrNotifyError as e:
                self.gateway.log.error("%s", e.message)
                self.failure = e.message
        if self.failure is not None:
            self._report([(message_id, self.failure)], add=True)
            return
        windowed = hasattr(self.session, "submit")
        while windowed and len(self.on_the_way) >= max(1, self.session.window):
            self._wait()
        reason = self.gateway._send_one(self.session, message)
        if windowed and reason is None:
            self.on_the_way[message_id] = None
            self._report(self.session.collect(wait=False))
        else:
            self._report([(message_id, reason)], add=True)

    def finish(self):
        """Wait for every message on its way and report it (``idle``: the caller may be waiting for these results
        before it writes more)."""
        while self.on_the_way:
            self._wait()

    def _wait(self):
        outcomes = self.session.collect(wait=True)
        if not outcomes:   # a session that lost track of them must not keep the batch waiting forever
            outcomes = [(message_id, "%s lost track of this message; it may have been delivered"
                         % self.gateway.log.name) for message_id, known in self.on_the_way.items() if known is None]
        self._report(outcomes)

    def _report(self, outcomes, add=False):
        """Take the outcomes [(id, None or reason)] (``add``: of messages not on the way, known at once) and
        write the results that are now next in order."""
        for message_id, reason in outcomes:
            if add or self.on_the_way.get(message_id, ()) is None:
                self.on_the_way[message_id] = (reason,)
        while self.on_the_way:
            message_id, known = next(iter(self.on_the_way.items()))
            if known is None:
                return
            del self.on_the_way[message_id]
            self.stream.result(message_id, known[0])

    def close(self, error=None):
        """Close the session and end the results (with ``error`` after them, when the request broke off)."""
        if self.on_the_way and self.stream is not None and not self.stream.gone:
            try:
                self.finish()
            except CallerGone:
                pass
            except Exception as e:   # a defect while waiting: what is still on its way is reported failed
                self.gateway.log.exception("Waiting for the messages on their way: internal error")
                reason = ("%s failed with an internal error (%s) while waiting for the server; the message may "
                          "have been delivered" % (self.gateway.log.name, type(e).__name__))
                try:
                    self._report([(message_id, reason) for message_id in list(self.on_the_way)])
                except CallerGone:
                    pass
        if self.session is not None:
            self.session.close()
            self.session = None
        if self.stream is not None:
            try:
                self.stream.close(error)
            except CallerGone:
                pass


class ResultStream:
    """The answer of a batch command, one ``<result>`` line per message written as soon as it is done.

    When the caller acknowledges results (``$MGRNOTIFY_BATCH_ACK_FD``), nothing more is sent until the
    caller has recorded this one: a caller killed mid-batch then has at most one message delivered that
    it did not record, or, through a session that keeps several on their way, at most its ``window``.
    Without it, results are only streamed.
    """

    def __init__(self, out=None):
        self.out = out or sys.stdout.buffer
        self.gone = False   # the caller stopped reading (CallerGone was raised)
        ack = os.environ.get(ACK_FD_ENV, "")
        self.ack_fd = int(ack) if ack.isdigit() else None
        self._write('<?xml version="1.0" encoding="UTF-8"?>\n<doc><results>\n')

    def _write(self, text):
        try:
            self.out.write(text.encode("utf-8"))
            self.out.flush()
        except BrokenPipeError:
            self.gone = True
            raise CallerGone()

    def result(self, message_id, error=None):
        """Report one message: delivered (no ``error``) or not, with the reason on the same line."""
        attrs = {"id": message_id, "status": "error" if error else "ok"}
        text = " ".join(str(error).split()) if error else None
        self._write(xmlio.element("result", text, attrs) + "\n")
        if self.ack_fd is not None:
            try:
                acknowledged = os.read(self.ack_fd, 1)
            except OSError:
                acknowledged = b""
            if not acknowledged:
                self.gone = True
                raise CallerGone()

    def close(self, error=None):
        """End the document; ``error`` (an MgrNotifyError) goes after the results as the runner would write it."""
        tail = ""
        if error is not None:   # the <error> of the runner's own error document, so the two never differ
            document = xmlio.error_document(error)
            tail = document[document.index("<doc>") + len("<doc>"):document.rindex("</doc>")]
        self._write("</results>%s</doc>\n" % tail)
