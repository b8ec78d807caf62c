"""``notify/ntX --command preview --task ID``: one queued task as ``process`` would send it now, for a person.

The text comes from the code ``process`` uses (``notify.prepare``: recipient, template, macros, subject,
gateway choice), so what this shows is what would go out. Nothing is sent: no lock is taken, nothing is
written to the database or to the notification file. The only processes started are the template
renderers and the chosen gateway's ``--command features`` (``process`` asks it too before sending).
"""

from . import doctor, errors, gatewaycall, notification, redact
from .notify import prepare

INDENT = "    "   # before each line of a message's text


def preview(module, task_id):
    """Write task ``task_id`` of ``module`` (a NotifyModule) as it would go out; the runner's ``Answered``:
    exit 0 when every notice of it would be sent, or count as done."""
    report = doctor.Report(module.log.name, module.log)
    try:
        _preview(module, task_id, report)
    except errors.MgrNotifyError as e:
        report.fail("task " + task_id, e.message)
    report.write()
    return report.answer("Task %s would go out as shown; nothing was sent" % task_id,
                         "Task %s would not go out as shown" % task_id)


def _preview(module, task_id, report):
    from .db import Database
    from .queue import MAX_ERRORS, TaskQueue
    from .template import Renderer
    name, config = module.log.name, module.config
    db = Database.from_config(config)
    rows = db.query("SELECT id, modulename, filename, priority, error_count, forcedonothing, err_info, createdate"
                    " FROM notifytask WHERE id = ?", (task_id,))
    if not rows:
        report.fail("task " + task_id, "there is no such task in notifytask: it was sent and removed, or never "
                    "queued")
        return
    task = rows[0]
    if task["modulename"] != name:
        report.fail("task " + task_id, "it is a task of %s, not of %s" % (task["modulename"], name),
                    "preview it with notify/%s --command preview --task %s" % (task["modulename"], task_id))
        return
    report.write("Task %s of %s, as process would send it now (nothing is sent, nothing changes)" % (task_id, name))
    report.write("  file         %s" % task["filename"])
    report.write("  queued       %s, priority %s, error_count %s%s" % (
        task["createdate"], task["priority"], task["error_count"],
        ", forcedonothing" if task["forcedonothing"] == "on" else ""))
    if task["err_info"]:
        report.write("  last failure %s" % " ".join(redact.redact(task["err_info"]).split()))
    failures = int(task["error_count"] or 0)
    if failures >= MAX_ERRORS:
        report.warn("task " + task_id, "it failed %d times: process no longer takes it" % failures,
                    "fix the cause, then reset its error_count to 0 to send it again")
    if config.do_nothing() and task["forcedonothing"] != "on":
        report.warn("task " + task_id, "etc/billmgr.DoNothing exists and the task is not forced: process leaves it "
                    "waiting", "nothing to do while BILLmanager migrates data")
    notices = notification.read(TaskQueue(config, db, name, module.log).path_of(task["filename"]))
    gateways = gatewaycall.load(db, name)
    features = {}   # gateway module -> its features, or the MgrNotifyError asking gave
    with Renderer(config, module.log) as renderer:
        for notice in notices:
            report.write()
            _notice(module, task_id, notice, len(notices), renderer, gateways, features, report)


def _notice(module, task_id, notice, total, renderer, gateways, features, report):
    """The block of one notice: what ``process`` would send, and whether it would go."""
    subject = "notice %d of %d" % (notice.index + 1, total)
    report.write(subject.capitalize())
    if notice.delivered:
        report.ok(subject, "delivered by an earlier run; process does not send it again")
        return
    prepared = prepare(module, task_id, notice, renderer, lambda project: gatewaycall.outgoing_for(gateways, project))
    if prepared.contact:
        report.write("  recipient    %s (user.%s of user '%s')" % (prepared.contact, module.contact_type,
                                                                   notice.user.get("name", "?")))
    if prepared.gateway is not None:
        report.write("  gateway      %s" % _route(gateways, notice.project_id))
    if prepared.text:
        report.write("  subject      %s" % (prepared.subject or "(none)"))
    if prepared.skipped:
        report.ok(subject, prepared.skipped + "; process counts it as done")
        return
    carried = None
    if prepared.gateway is not None:
        carried = _features(module, prepared.gateway, features)
        if isinstance(carried, errors.MgrNotifyError):
            prepared.failure = carried.message
        elif notice.attachments:
            how = "sent with the message" if gatewaycall.ATTACHMENTS_FEATURE in carried \
                else "left out: the gateway cannot carry them"
            report.write("  attachments  %s (%s)" % (", ".join(notice.attachments), how))
    if prepared.text:
        lines = prepared.text.split("\n")
        report.write("  text         %s, %d characters:" % (doctor._plural(len(lines), "line"), len(prepared.text)))
        for line in lines:
            report.write(INDENT + line)
    if prepared.failure:
        report.fail(subject, prepared.failure)
    else:
        report.ok(subject, "process would send it to %s through %s%s" % (
            prepared.contact, prepared.gateway.describe(),
            " (outgoing_batch)" if gatewaycall.BATCH_FEATURE in carried else " (outgoing)"))


def _features(module, gateway, known):
    """The chosen gateway's features, asked once per module (the MgrNotifyError when it cannot answer)."""
    if gateway.module not in known:
        try:
            known[gateway.module] = gatewaycall.GatewayModule(module.config, gateway.module, module.log).features()
        except errors.MgrNotifyError as e:
            known[gateway.module] = e
    return known[gateway.module]


def _route(gateways, project_id):
    """Which gateway a provider's notices take, and why (the rule of ``gatewaycall.outgoing_candidates``)."""
    candidates = gatewaycall.outgoing_candidates(gateways, project_id)
    chosen = candidates[0]
    name = (chosen.row.get("name") or "").strip()
    if project_id and chosen.project == project_id:
        why = "provider %s's own" % project_id
    elif chosen.all_providers:
        why = "for all providers"
    else:
        why = "the notice names no provider and none serves all"
    others = " (the lowest id of %d candidates: %s)" % (len(candidates), ", ".join(g.id for g in candidates)) \
        if len(candidates) > 1 else ""
    return "%s (%s)%s, %s%s" % (chosen.id, chosen.module, " '%s'" % name if name else "", why, others)
