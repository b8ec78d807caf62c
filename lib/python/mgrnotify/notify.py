"""Base class of notification-type modules (``notify/ntX``): ISPsystem's notify-module API in Python.

A notification type subclasses ``NotifyModule`` and declares its ``contact_type`` (the ``user`` column
holding the address) and ``notify_features``; the base does the rest, for every type alike:

- ``process``: the queue (``queue.TaskQueue``) in batches; each ``<notify>`` of a file rendered
  (``template``), macros replaced, sent through the active outgoing gateway of the notice's provider
  -- through one long-lived ``outgoing_batch`` call per gateway for the whole run when the gateway
  advertises it (one server session), else one ``outgoing`` call per message.
- ``getmessage --gate ID|all``: each active ingoing gateway's ``ingoing``; every message filed into
  its ticket (``tickets.TicketDesk``), the sender answered through the same gateway otherwise.
"""

from . import errors, gatewaycall, xmlio
from .runner import Module


class Outgoing:
    """One rendered notice on its way: the journal needs its task, index and total; the gateway the rest."""

    __slots__ = ("id", "task", "index", "total", "notice", "contact", "subject", "text")

    def __init__(self, *values):
        for name, value in zip(self.__slots__, values):
            setattr(self, name, value)


class NotifyModule(Module):
    """Base of notification-type modules: features, process, getmessage."""

    #: the user column that holds this type's address (email, phone, jabber, ...)
    contact_type = None
    #: features BILLmanager knows for notification types: html, sms, call
    notify_features = ()

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
        """Fetch incoming messages through ``--gate ID`` or ``--gate all``."""
        gate = self.options.get("gate", "")
        if gate != "all" and not (gate and all(c in "0123456789" for c in gate)):
            raise errors.UsageError("getmessage needs --gate with a gateway id or 'all', not '%s'" % gate)
        self.getmessage(gate)
        return xmlio.document()

    def normalize_contact(self, address):
        """A sender's address as the user column stores it (Jabber drops the resource, for one)."""
        return address.strip()

    def _database(self):
        from .db import Database
        return Database.from_config(self.config)

    # --- process -----------------------------------------------------------------------------------------

    def process(self):
        """Send the queued notifications of this type, batch after batch."""
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
        """Fetch and file the incoming messages of gateway ``gate`` (an id, or ``all``)."""
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
        for gateway in gateways:
            module = gatewaycall.GatewayModule(self.config, gateway.module, self.log)
            try:
                settings = gateway.settings()
                messages = module.ingoing(gateway)
            except errors.MgrNotifyError as e:
                self.log.error("%s: %s", gateway.describe(), e.message)
                failures.append(e.message)
                continue
            for text, attrs in messages:
                contact = self.normalize_contact(attrs.get("from", ""))
                try:
                    reply = desk.file(contact, text, settings.get("ticket_format"))
                except Exception as e:   # the message is off the server already: keep it in the log
                    self.log.exception("The message from %s could not be filed (%s); its text: %s",
                                       contact, e, text)
                    failures.append("A message from %s could not be filed: %s" % (contact, e))
                    continue
                if reply and contact:
                    self._reply(module, gateway, contact, reply)
        if failures and gate != "all":
            raise errors.DeliveryError(failures[0], obj=gate)

    def _reply(self, module, gateway, contact, text):
        reason = module.outgoing(gateway, [xmlio.element("message", text), xmlio.element(self.contact_type, contact)])
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
        from .macros import replace_macros
        contact = (notice.user.get(self.module.contact_type) or "").strip()
        if not contact:
            self.log.info("Task %s: user %s has no %s; nothing to send", task["id"], notice.user.get("name", "?"),
                          self.module.contact_type)
            self.queue.record(task, notice.index, total)
            return
        try:
            text = replace_macros(self.renderer.render(notice.template, notice.notice_xml),
                                  notice.user, notice.project).strip()
        except errors.MgrNotifyError as e:
            self.queue.record(task, notice.index, total, e.message)
            return
        except Exception as e:   # a defect must not stop the batch
            self.log.exception("Task %s: rendering failed", task["id"])
            self.queue.record(task, notice.index, total, "Internal error while rendering: %s" % e)
            return
        if not text:
            self.log.info("Task %s: the rendered text is empty; nothing to send", task["id"])
            self.queue.record(task, notice.index, total)
            return
        if notice.project_id not in self.routes:
            self.routes[notice.project_id] = gatewaycall.outgoing_for(self.gateways, notice.project_id, self.log)
        gateway = self.routes[notice.project_id]
        if gateway is None:
            self.queue.record(task, notice.index, total, "No active outgoing gateway of %s for provider %s"
                              % (self.log.name, notice.project_id or "(none named)"))
            return
        subject = replace_macros(notice.subject, notice.user, notice.project)
        outbox.setdefault(gateway.id, (gateway, []))[1].append(Outgoing(
            "%s.%d" % (task["id"], notice.index), task, notice.index, total, notice, contact, subject, text))

    def _deliver(self, gateway, messages):
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
