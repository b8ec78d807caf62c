"""Base class of notification-type modules (``notify/ntX``): ISPsystem's notify-module API in Python.

A notification type subclasses ``NotifyModule`` and declares its ``contact_type`` (the ``user`` column
holding the address) and ``notify_features``; the base does the rest, for every type alike:

- ``process``: the queue (``queue.TaskQueue``) in batches; each ``<notify>`` of a file rendered
  (``template``), macros replaced, sent through the active outgoing gateway of the notice's provider
  -- through one long-lived ``outgoing_batch`` call per gateway for the whole run when the gateway
  advertises it (one server session), else one ``outgoing`` call per message.
- ``getmessage --gate ID|all``: each active ingoing gateway's ``ingoing``; every message filed into
  its ticket (``tickets.TicketDesk``), the sender answered through the same gateway otherwise.
- for the admin at a shell, in plain text: ``doctor [--connect]`` (can this type work here? ``doctor.py``)
  and ``preview --task ID`` (a task as ``process`` would send it, sending nothing: ``preview.py``).
"""

from . import errors, xmlio
from .runner import Module, is_id


class Outgoing:
    """One rendered notice on its way: the journal needs its task, index and total; the gateway the rest."""

    __slots__ = ("id", "task", "index", "total", "notice", "contact", "subject", "text")

    def __init__(self, *values):
        for name, value in zip(self.__slots__, values):
            setattr(self, name, value)


class Prepared:
    """What ``process`` makes of one notice: recipient, subject, text and gateway, ready to send; or, when
    nothing goes, ``skipped`` (done without sending: no address, an empty text) or ``failure`` (the reason)."""

    __slots__ = ("contact", "subject", "text", "gateway", "skipped", "failure")

    def __init__(self, contact="", subject="", text="", gateway=None, skipped=None, failure=None):
        self.contact, self.subject, self.text, self.gateway = contact, subject, text, gateway
        self.skipped, self.failure = skipped, failure


def prepare(module, task_id, notice, renderer, route):
    """``notice`` as ``process`` sends it, and ``preview`` shows it: the recipient from the user's contact column,
    the template rendered by ``renderer``, macros replaced in text and subject, the gateway ``route(provider id)``."""
    from .macros import replace_macros
    contact = (notice.user.get(module.contact_type) or "").strip()
    if not contact:
        return Prepared(skipped="user %s has no %s; nothing to send" % (notice.user.get("name", "?"),
                                                                        module.contact_type))
    try:
        text = replace_macros(renderer.render(notice.template, notice.notice_xml), notice.user, notice.project).strip()
    except errors.MgrNotifyError as e:
        return Prepared(contact, failure=e.message)
    except Exception as e:   # a defect must not stop the batch
        module.log.exception("Task %s: rendering failed", task_id)
        return Prepared(contact, failure="Internal error while rendering: %s" % e)
    if not text:
        return Prepared(contact, skipped="the rendered text is empty; nothing to send")
    subject = replace_macros(notice.subject, notice.user, notice.project)
    gateway = route(notice.project_id)
    if gateway is None:
        return Prepared(contact, subject, text, failure="No active outgoing gateway of %s for provider %s"
                        % (module.log.name, notice.project_id or "(none named)"))
    return Prepared(contact, subject, text, gateway)


class NotifyModule(Module):
    """Base of notification-type modules: features, process, getmessage."""

    #: the user column that holds this type's address (email, phone, jabber, ...)
    contact_type = None
    #: features BILLmanager knows for notification types: html, sms, call
    notify_features = ()
    #: getmessage's --gate is BILLmanager's (its documentation); doctor's and preview's are the admin's
    COMMAND_OPTIONS = {"getmessage": {"gate": "ID|all"}, "doctor": {"connect": None}, "preview": {"task": "ID"}}

    def command_features(self):
        """``<features>`` and ``<contact_type>``."""
        features = [xmlio.element("feature", attrs={"name": f}) for f in self.notify_features]
        return xmlio.document(xmlio.element("features", children=features),
                              xmlio.element("contact_type", self.contact_type))

    def command_process(self):
        """Send what is queued; an empty document when the run went through."""
        self.process()
        return xmlio.document()

    def command_getmessage(self):
        """Fetch incoming messages through ``--gate ID`` or ``--gate all``; an error naming each failure when part of
        it failed, after the rest is done (``errors.PartialFailure``)."""
        gate = self.options.get("gate", "")
        if gate != "all" and not is_id(gate):
            raise errors.UsageError("getmessage needs --gate with a gateway id or 'all', not '%s'" % gate)
        self.getmessage(gate)
        return xmlio.document()

    def command_doctor(self):
        """Can this type work here? One line per check, for a person (README, "doctor"); exit 0 when it can.
        ``--connect`` also has every active gateway log in with its settings."""
        from . import doctor, gatewaycall
        from .queue import TaskQueue
        report, db, columns = doctor.begin(self, doctor.NOTIFY_TABLES)
        if db is not None:
            if columns is not None:
                with report.guard("tables"):
                    doctor.check_contact(report, self.config, columns, self.contact_type)
                    doctor.check_written(report, columns)
            with report.guard("gateways"):
                projects = doctor.providers(db)
                checks = doctor.check_gateway_rows(report, self.config, self.log, gatewaycall.load(db, self.log.name),
                                                   projects, self.log.name, self.options.get("connect", False))
                doctor.check_providers(report, checks, projects, self.log.name)
        doctor.check_templates(report, self.config, self.log)
        doctor.check_var(report, self.config)
        queue = TaskQueue(self.config, db, self.log.name, self.log)
        with report.guard("lock"):
            doctor.check_lock(report, queue)
        if db is not None:
            with report.guard("queue"):
                doctor.check_queue(report, self.config, queue)
        return report.answer("%s can work here" % self.log.name, "%s cannot work here" % self.log.name)

    def command_preview(self):
        """Task ``--task ID`` as ``process`` would send it now, for a person (README, "preview"); sends nothing
        and changes nothing. Exit 0 when every notice of it would go (or count as done)."""
        task = self.options.get("task", "")
        if not is_id(task):
            raise errors.UsageError("preview needs --task with a task id (digits), not '%s'" % task)
        from .preview import preview
        return preview(self, task)

    def normalize_contact(self, address):
        """A sender's address as the user column stores it (Jabber drops the resource, for one)."""
        return address.strip()

    def _database(self):
        from .db import Database
        return Database.from_config(self.config)

    # --- process -----------------------------------------------------------------------------------------

    def process(self):
        """Send the queued notifications of this type, batch after batch."""
        from . import gatewaycall   # here, not at the top: --command features stays fast
        from .queue import TaskQueue
        db = self._database()
        queue = TaskQueue(self.config, db, self.log.name, self.log)
        if not queue.lock():
            self.log.info("Another process run of %s is working on the queue; this one leaves", self.log.name)
            return
        delivered, failed = queue.commit()   # what a killed run left in the journal
        if delivered or failed:
            self.log.info("Applied an interrupted run's journal: %d delivered, %d failed", delivered, failed)
        forced_only = self.config.do_nothing()
        if forced_only:
            self.log.info("etc/billmgr.DoNothing exists: only tasks with forcedonothing are sent")
        sender = _Sender(self, queue, gatewaycall.load(db, self.log.name))
        try:
            while True:
                tasks = queue.take(forced_only)
                if not tasks:
                    break
                sender.send(tasks)
                done, failed = queue.commit()
                self.log.info("Batch of %d tasks: %d delivered, %d failed", len(tasks), done, failed)
        finally:
            sender.close()

    # --- getmessage --------------------------------------------------------------------------------------

    def getmessage(self, gate):
        """Fetch and file the incoming messages of gateway ``gate`` (an id, or ``all``); PartialFailure naming every
        gateway that could not be read and every message that could not be filed, once the rest is done."""
        from . import gatewaycall
        from .tickets import TicketDesk
        if self.config.do_nothing():
            self.log.info("etc/billmgr.DoNothing exists: no incoming messages are fetched while data is migrated")
            return
        db = self._database()
        gateways = [g for g in gatewaycall.load(db, self.log.name)
                    if g.active and g.type == gatewaycall.INGOING and gate in ("all", g.id)]
        if gate != "all" and not gateways:
            raise errors.ConfigError("There is no active ingoing gateway %s of %s" % (gate, self.log.name),
                                     obj=gate)
        desk = TicketDesk(self.config, db, self.log, self.contact_type)
        failures = []
        read = handled = 0
        for gateway in gateways:
            module = gatewaycall.GatewayModule(self.config, gateway.module, self.log)
            try:
                settings = gateway.settings()
                messages = module.ingoing(gateway)
            except errors.MgrNotifyError as e:
                self.log.error("%s: %s", gateway.describe(), e.message)
                failures.append("%s: %s" % (gateway.describe(), e.message))
                continue
            read += 1
            for text, attrs in messages:
                contact = self.normalize_contact(attrs.get("from", ""))
                try:
                    reply = self.incoming(desk, contact, text, attrs, settings, gateway)
                except Exception as e:   # the message is off the server already: keep it in the log
                    self.log.exception("The message from %s could not be filed (%s); its text: %s",
                                       contact, e, text)
                    failures.append("%s: a message from %s could not be filed (%s); its text is in %s"
                                    % (gateway.describe(), contact, e, self.log.path))
                    continue
                handled += 1
                if reply and contact:
                    self._reply(module, gateway, contact, reply)
        if failures:
            raise errors.PartialFailure(failures, "gateways read %d of %d, messages filed or answered %d"
                                        % (read, len(gateways), handled), obj=gate)

    def incoming(self, desk, contact, text, attrs, settings, gateway):
        """What one incoming message does: filed into its ticket (``tickets.TicketDesk``); the reply for its sender,
        or None. ``attrs`` are the gateway's attributes of the message (``from`` and any others a type reads),
        ``settings`` and ``gateway`` (a ``gatewaycall.GatewayRow``) those of the gateway that fetched it. A
        reply is a text, or (text, more elements of the gateway's ``outgoing`` request) for a type whose gateway
        reads more (ntmax's request for the sender's contact)."""
        return desk.file(contact, text, settings.get("ticket_format"))

    def _reply(self, module, gateway, contact, reply):
        text, more = reply if isinstance(reply, tuple) else (reply, [])
        reason = module.outgoing(gateway, [xmlio.element("message", text), xmlio.element(self.contact_type, contact)]
                                 + list(more))
        if reason:
            self.log.warning("Reply to %s not sent: %s", contact, reason)


class _Sender:
    """Turns one batch of tasks into messages and sends them, journalling each outcome."""

    def __init__(self, module, queue, gateways):
        self.module = module
        self.queue = queue
        self.gateways = gateways
        self.log = module.log
        self.gateway_modules = {}
        self.routes = {}     # provider id -> the gateway its notices go through this run (chosen once, logged once)
        self.channels = {}   # gateway id -> BatchChannel: one gateway process, one session per run
        from .template import Renderer
        self.renderer = Renderer(module.config, module.log)   # isolated renderers, kept for the whole run

    def close(self):
        """End the gateway sessions and the template renderers of this run."""
        for channel in self.channels.values():
            channel.close()
        self.renderer.close()

    def send(self, tasks):
        """Render every notice of ``tasks`` and send them, grouped by gateway."""
        from . import notification
        outbox = {}   # gateway id -> (gateway, [Outgoing])
        for task in tasks:
            try:
                notices = notification.read(self.queue.path_of(task["filename"]))
            except errors.MgrNotifyError as e:
                self.queue.record(task, None, 0, e.message)
                continue
            for notice in notices:
                if notice.delivered:   # by an earlier run: counts as sent, goes nowhere
                    self.queue.record(task, notice.index, len(notices))
                else:
                    self._prepare(task, notice, len(notices), outbox)
        for gateway, messages in outbox.values():
            self._deliver(gateway, messages)

    def _prepare(self, task, notice, total, outbox):
        prepared = prepare(self.module, task["id"], notice, self.renderer, self._route)
        if prepared.skipped:
            self.log.info("Task %s: %s", task["id"], prepared.skipped)
            self.queue.record(task, notice.index, total)
        elif prepared.failure:
            self.queue.record(task, notice.index, total, prepared.failure)
        else:
            outbox.setdefault(prepared.gateway.id, (prepared.gateway, []))[1].append(Outgoing(
                "%s.%d" % (task["id"], notice.index), task, notice.index, total, notice, prepared.contact,
                prepared.subject, prepared.text))

    def _route(self, project_id):
        """The gateway of a provider's notices: chosen once per run, and logged once."""
        from . import gatewaycall
        if project_id not in self.routes:
            self.routes[project_id] = gatewaycall.outgoing_for(self.gateways, project_id, self.log)
        return self.routes[project_id]

    def _deliver(self, gateway, messages):
        from . import gatewaycall
        module = self.gateway_modules.get(gateway.module)
        if module is None:
            module = self.gateway_modules[gateway.module] = gatewaycall.GatewayModule(
                self.module.config, gateway.module, self.log)
        by_id = {m.id: m for m in messages}

        def record(message_id, reason):
            m = by_id[message_id]
            self.queue.record(m.task, m.index, m.total, reason)
            if reason:
                self.log.warning("Task %s: %s", m.task["id"], reason)

        try:
            features = module.features()
        except errors.MgrNotifyError as e:
            for message_id in by_id:
                record(message_id, e.message)
            return
        carries_files = gatewaycall.ATTACHMENTS_FEATURE in features
        for m in messages:
            if m.notice.attachments and not carries_files:
                self.log.warning("Task %s: %s cannot carry attachments; sent without %s", m.task["id"],
                                 gateway.describe(), ", ".join(m.notice.attachments))
        if gatewaycall.BATCH_FEATURE in features:
            items = [(m.id, xmlio.element("message", attrs={"id": m.id, "to": m.contact}, children=[
                xmlio.element("subject", m.subject), xmlio.element("body", m.text)]
                + _attachments(m, carries_files))) for m in messages]
            channel = self.channels.get(gateway.id)
            if channel is None:
                channel = self.channels[gateway.id] = gatewaycall.BatchChannel(module, gateway)
            for message_id, reason in channel.send(items, record).items():
                record(message_id, reason)
            return
        for m in messages:
            children = [xmlio.element("message", m.text), xmlio.element("subject", m.subject),
                        xmlio.element(self.module.contact_type, m.contact),
                        xmlio.element("user", children=[xmlio.element(k, v) for k, v in m.notice.user.items()]),
                        xmlio.element("project", children=[xmlio.element(k, v) for k, v in m.notice.project.items()])]
            record(m.id, module.outgoing(gateway, children + _attachments(m, carries_files)))


def _attachments(message, carried):
    """The ``<attachments>`` element of a request, as BILLmanager's notice names them; none when not carried."""
    if not (carried and message.notice.attachments):
        return []
    return [xmlio.element("attachments", children=[xmlio.element("attachment", path)
                                                   for path in message.notice.attachments])]
