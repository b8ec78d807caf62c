"""``--command doctor``: can this module work on this server? Told to a person at a shell.

Each check writes one line the moment it is done: ``✔`` passed, ``✘`` failed (with what to do),
``!`` a warning that does not stop the module. The exit status is 0 only when no check failed.
Nothing secret is printed: of a gateway's settings only the names of the non-secret fields are
shown, and every line passes through ``redact`` (which knows every password loaded so far).

The checks are here; which ones run, in what order, is each kind's own:
``NotifyModule.command_doctor`` (notify.py) and ``Gateway.command_doctor`` (gateway.py).
"""

import os
import sys

from . import errors, gatewaycall, redact, runner, xmlio

PASS, FAIL, WARN = "\u2714", "\u2718", "!"

# The tables and columns the library's statements use (queue.py, gatewaycall.py, tickets.py, and the doctor's
# own look at the providers), by module kind; docs/CONTRACT.md lists them as the ones known to exist.
GATEWAY = ("gateway", ("id", "name", "gateway_module", "notify_module", "gateway_type", "active", "project",
                       "xmlparams"))
PROJECT = ("project", ("id", "name"))
NOTIFY_TABLES = (
    ("notifytask", ("id", "modulename", "filename", "priority", "error_count", "forcedonothing", "err_info",
                    "createdate")),
    GATEWAY,
    ("user", ("id", "account", "name")),   # and the type's contact column, checked on its own line
    ("ticket", ("id", "account_client")),
    PROJECT,
)
GATEWAY_TABLES = (GATEWAY, PROJECT)
# The text column a notification type writes, what goes into it, and how much of it queue.py keeps.
WRITTEN = ("notifytask", "err_info", "reasons")
ADDON_DIR = ("etc", "sql", "billmgr.user.addon")   # BILLmanager adds a column to `user` for each file here [src]

FEATURES_TIMEOUT = 15   # [ours] seconds for a gateway's --command features: it reads nothing and connects nowhere
NODE_TIMEOUT = 10       # seconds for node --version
SAMPLE_TIMEOUT = 10     # [ours] seconds for each sample render (a process run allows template.RENDER_TIMEOUT)

SAMPLE_NOTICE = ("<doc><project><id>1</id><name>Doctor &amp; Co</name></project>"
                 "<item><name>vds1</name></item><item><name>vds2</name></item></doc>")
SAMPLES = (
    ("EJS", "<%= project.name %>:<% item.forEach(function (i) { %> <%= i.name %><% }) %>",
     "Doctor &amp; Co: vds1 vds2"),
    ("XSLT", '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
             '<xsl:output method="text"/><xsl:template match="/"><xsl:value-of select="doc/project/name"/>:'
             '<xsl:for-each select="doc/item"><xsl:text> </xsl:text><xsl:value-of select="name"/></xsl:for-each>'
             '</xsl:template></xsl:stylesheet>', "Doctor & Co: vds1 vds2"),
)


class Report:
    """The lines of one doctor (or preview) run, written to stdout as they come, and the exit status."""

    def __init__(self, name, log, out=None):
        self.name = name
        self.log = log
        self.out = out or sys.stdout.buffer   # bytes, UTF-8 whatever the locale: cron's is often C
        self.failures = 0
        self.warnings = 0

    def write(self, text=""):
        """One line as it is (a rendered message's text, a heading)."""
        if self.out is None:   # the reader went away (doctor | head): the checks still run, for the exit status
            return
        try:
            self.out.write((text + "\n").encode("utf-8", "replace"))
            self.out.flush()
        except BrokenPipeError:
            self.out = None

    def line(self, mark, subject, text, todo=None):
        """``mark subject: text — todo``, secrets masked, on one line."""
        sentence = "%s %s: %s%s" % (mark, subject, text, " \u2014 " + todo if todo else "")
        self.write(" ".join(redact.redact(sentence).split()))
        if mark == FAIL:
            self.failures += 1
            self.log.warning("doctor: %s: %s", subject, text)
        elif mark == WARN:
            self.warnings += 1

    def ok(self, subject, text):
        """A check that passed."""
        self.line(PASS, subject, text)

    def fail(self, subject, text, todo=None):
        """A check that failed: the module cannot work until it is fixed."""
        self.line(FAIL, subject, text, todo)

    def warn(self, subject, text, todo=None):
        """Worth knowing, but the module works."""
        self.line(WARN, subject, text, todo)

    def guard(self, subject):
        """A context for one check: a failure it raises becomes its ✘ line, and the run goes on."""
        return _Guard(self, subject)

    def heading(self, what, config):
        """The first line: what is checked, where, as whom."""
        import platform
        self.write("%s %s: %s, Python %s, user %s" % (self.name, what, config.root, platform.python_version(),
                                                      _user()))

    def answer(self, verdict, failed_verdict):
        """The closing line -- ``verdict``, or ``failed_verdict`` when a check failed -- and the runner's
        ``Answered``: exit 0 only when no check failed."""
        if self.failures:
            self.write("%s: %s (\u2718 above)" % (failed_verdict, _plural(self.failures, "problem")))
            return runner.Answered(errors.EXIT_FAILURE)
        self.write("%s%s" % (verdict, " (%s, ! above)" % _plural(self.warnings, "warning") if self.warnings else ""))
        return runner.Answered(errors.EXIT_OK)


class _Guard:
    def __init__(self, report, subject):
        self.report = report
        self.subject = subject

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is None or not issubclass(kind, Exception):
            return False
        if isinstance(error, errors.MgrNotifyError):
            self.report.fail(self.subject, error.message)
        else:   # a defect in a check: say so, and go on with the others
            self.report.log.exception("doctor: the check of %s failed", self.subject)
            self.report.fail(self.subject, "the check itself failed (%s: %s); the traceback is in %s"
                             % (type(error).__name__, error, self.report.log.path))
        return True


def _user():
    import pwd
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _plural(count, word):
    return "%d %s%s" % (count, word, "" if count == 1 else "s")


# ---- configuration and database ------------------------------------------------------------------

def begin(module, tables):
    """The opening every doctor shares: heading, config, database, ``tables``' columns checked.

    Returns (report, db or None, {table: columns} or None); db is None when the database cannot be reached.
    """
    report = Report(module.log.name, module.log)
    report.heading("doctor", module.config)
    readable = check_config(report, module.config)
    db = open_database(report, module.config, module.log.name, readable)
    columns = None
    if db is not None:
        with report.guard("tables"):
            columns = table_columns(db, tables)
            check_tables(report, columns, tables)
    return report, db, columns


def check_config(report, config):
    """etc/billmgr.conf there and readable, and whether it names the database itself. False when it is there but
    cannot be read (nor, then, can the database settings)."""
    from . import db
    path = config.path("etc", "billmgr.conf")
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        report.fail("config", "%s does not exist" % path, "run the module from its place in BILLmanager's folder "
                    "(/usr/local/mgr5), or set MGR5_ROOT to that folder")
        return True
    except OSError as e:
        report.fail("config", "%s cannot be read by %s (%s)" % (path, _user(), e.strerror),
                    "run the module as root, as BILLmanager does")
        return False
    named = [key for key in db.SETTINGS if config.get(key)]
    if all(key in named for key in db.REQUIRED):
        report.ok("config", "etc/billmgr.conf names the database (%s)" % ", ".join(named))
    else:
        report.ok("config", "etc/billmgr.conf is readable and names no %s: the database settings come from "
                  "sbin/mgrctl -m billmgr paramlist" % " or ".join(k for k in db.REQUIRED if k not in named))
    return True


def open_database(report, config, caller, config_readable=True):
    """The database, when it answers (its line written); None otherwise."""
    from .db import Database
    if not config_readable:
        report.fail("database", "not tried: its settings are in etc/billmgr.conf, which cannot be read")
        return None
    with report.guard("database"):
        db = Database.from_config(config, caller=caller)
        version = db.query("SELECT VERSION() AS version")[0]["version"]
        report.ok("database", "%s answers (%s)" % (db.describe(), version))
        return db
    return None


def table_columns(db, tables):
    """{table: {column: {'type', 'charset', 'characters'}}} of the named tables in the current database."""
    names = [name for name, _ in tables]
    rows = db.query("SELECT TABLE_NAME AS tbl, COLUMN_NAME AS col, COLUMN_TYPE AS type, CHARACTER_SET_NAME AS"
                    " charset, CHARACTER_MAXIMUM_LENGTH AS characters FROM information_schema.COLUMNS"
                    " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (%s)" % ", ".join("?" * len(names)), names)
    found = {}
    for row in rows:
        found.setdefault(row["tbl"], {})[row["col"]] = row
    return found


def check_tables(report, columns, tables):
    """Each table the module uses, with the columns it uses."""
    for table, needed in tables:
        if table not in columns:
            report.fail("table " + table, "missing from the database",
                        "check DBName: is this BILLmanager's database?")
            continue
        missing = [column for column in needed if column not in columns[table]]
        if missing:
            report.fail("table " + table, "no column %s" % ", ".join(missing),
                        "this BILLmanager's schema is not the one the module was built for; "
                        "report it with BILLmanager's version")
        else:
            report.ok("table " + table, ", ".join(needed))


def check_written(report, columns):
    """The text column the module writes (WRITTEN): can it hold any text? A warning where characters will be lost."""
    from .queue import BMP_ONLY, CHARSET_CODECS, ERR_INFO_LIMIT
    table, column, what = WRITTEN
    info = columns.get(table, {}).get(column)
    if info is None:
        return   # its table's line has said so
    subject = "%s.%s" % (table, column)
    kind = "%s %s" % (info["type"], info.get("charset") or "(no character set)")
    charset = (info.get("charset") or "").lower()
    limit = int(info["characters"]) if (info.get("characters") or "").isdigit() else None
    cut = ", cut to %d characters" % limit if limit is not None and limit < ERR_INFO_LIMIT else ""
    if charset in ("utf8mb4", "utf16", "utf16le", "utf32"):
        if cut:
            report.warn(subject, "%s holds %s in any script%s" % (kind, what, cut), "nothing to do")
        else:
            report.ok(subject, "%s holds %s in any script" % (kind, what))
    elif charset in BMP_ONLY:
        report.warn(subject, "%s: characters beyond the Basic Multilingual Plane (emoji) in %s are stored as "
                    "'\ufffd'%s" % (kind, what, cut), "nothing to do: the rest of the text is kept")
    elif charset in CHARSET_CODECS:
        report.warn(subject, "%s: %s in scripts %s lacks (Cyrillic, say) are stored with '?'%s"
                    % (kind, what, charset, cut), "nothing to do: the failure is still counted")
    else:
        report.warn(subject, "%s, which the module writes as ASCII: every other character in %s becomes '?'%s"
                    % (kind, what, cut), "nothing to do: the failure is still counted")


def check_contact(report, config, columns, contact):
    """The user column holding this type's addresses, added by BILLmanager from etc/sql/billmgr.user.addon."""
    subject = "user." + contact
    addon = os.path.join(*ADDON_DIR + (contact,))
    shipped = os.path.isfile(config.path(addon))
    info = columns.get("user", {}).get(contact)
    if info is not None:
        report.ok(subject, "%s %s, the addresses of this type%s" % (
            info["type"], info.get("charset") or "", " (added from %s)" % addon if shipped else ""))
    elif shipped:
        report.fail(subject, "missing, though %s is installed" % addon,
                    "BILLmanager adds the column when it starts: restart it (sbin/mgrctl -m billmgr -R)")
    elif "user" in columns:
        report.fail(subject, "missing, and %s is not installed either" % addon,
                    "reinstall the package of this module, then restart BILLmanager (sbin/mgrctl -m billmgr -R)")


def providers(db):
    """{id: name} of the providers (``project``)."""
    return {row["id"]: row["name"] or "" for row in db.query("SELECT id, name FROM project ORDER BY id")}


# ---- gateway rows ----------------------------------------------------------------------------------

DIRECTIONS = {gatewaycall.OUTGOING: "outgoing", gatewaycall.INGOING: "ingoing"}
# The features a module needs for a row of each direction: outgoing_batch also sends.
DIRECTION_FEATURES = {gatewaycall.OUTGOING: ("outgoing", gatewaycall.BATCH_FEATURE), gatewaycall.INGOING: ("ingoing",)}


class GatewayCheck:
    """What one gateway row is, and what is wrong with it: facts for its ✔ line, problems for ✘ lines
    (warnings when the gateway is inactive: it is not used)."""

    def __init__(self, row, projects):
        self.row = row
        self.facts = []
        self.problems = []
        self.settings = None
        name = (row.row.get("name") or "").strip()
        self.subject = row.describe() + (" '%s'" % name if name else "")
        direction = DIRECTIONS.get(row.type)
        if direction:
            self.facts.append(direction)
        else:
            self.problem("its direction (gateway_type) is '%s', neither 1 (outgoing) nor 2 (ingoing)" % row.type,
                         "choose the direction in the gateway's settings")
        self.facts.append("active" if row.active else "inactive (not used)")
        if row.all_providers:
            self.facts.append("for all providers")
        elif row.project in projects:
            self.facts.append("for provider %s (%s)" % (row.project, projects[row.project]))
        else:
            self.problem("its provider %s does not exist" % row.project,
                         "choose a provider, or none to serve them all")
        try:
            self.settings = row.settings()
        except errors.MgrNotifyError as e:
            self.problem(e.message, "open the gateway in BILLmanager and save its settings again")
            return
        names = sorted(self.settings.values)
        secret = [n for n in names if redact.is_secret(n)]
        plain = [n for n in names if not redact.is_secret(n)]
        self.facts.append("settings: %s%s" % (", ".join(plain) or "none",
                                              " and %s" % _plural(len(secret), "secret") if secret else ""))

    def problem(self, text, todo=None):
        """Something that keeps this gateway from working."""
        self.problems.append((text, todo))

    def needs(self, features, who):
        """A problem unless ``features`` (what the module does) cover the row's direction."""
        wanted = DIRECTION_FEATURES.get(self.row.type, ())
        if wanted and not any(f in features for f in wanted):
            self.problem("%s cannot work %s: it has no %s" % (who, DIRECTIONS[self.row.type], " or ".join(wanted)),
                         "use it in the other direction, or choose another module")

    def report(self, report):
        """Its lines: one ✔ with the facts, or one per problem."""
        if not self.problems:
            report.ok(self.subject, ", ".join(self.facts))
        for text, todo in self.problems:
            report.line(FAIL if self.row.active else WARN, self.subject, text, todo)


def connection_form(row):
    """The ``check_connection`` request for a stored gateway, as BILLmanager sends it from the gateway's form:
    the row's fields at the root (gateway_type among them) and ``<xmlparams>``, the settings document as text."""
    fields = [xmlio.element(k, v or "") for k, v in row.row.items() if k != "xmlparams" and k.isidentifier()]
    return xmlio.document(*fields + [xmlio.element("xmlparams", row.row.get("xmlparams") or "")])


def gateway_features(module):
    """(features, notify_module) a gateway module answers to ``--command features``; DeliveryError saying why not."""
    what = "gate/%s --command features" % module.name
    stdout, status = module.run("features", "", FEATURES_TIMEOUT)
    reason = gatewaycall.failure_reason(stdout, status, what)
    if reason:
        raise errors.DeliveryError(reason)
    root = xmlio.parse(stdout, "the answer of " + what)
    return [f.get("name") for f in root.findall("features/feature")], xmlio.text(root, "notify_module").strip()


def check_gateway_rows(report, config, log, rows, projects, notify_module, connect):
    """Each gateway row of a notification type, its module asked as the type asks it (a process of its own):
    installed, answering ``features`` for this type, and with ``connect`` its ``check_connection`` on the row's
    settings. The checks, so ``check_providers`` can tell which gateways work."""
    answers = {}   # module name -> (features, notify_module) or the DeliveryError
    checks = []
    for row in rows:
        check = GatewayCheck(row, projects)
        module = gatewaycall.GatewayModule(config, row.module, log)
        if row.module not in answers:
            try:
                answers[row.module] = gateway_features(module)
            except errors.MgrNotifyError as e:
                answers[row.module] = e
        answer = answers[row.module]
        if isinstance(answer, errors.MgrNotifyError):
            check.problem(answer.message, "install the package of %s, or set the gateway inactive" % row.module)
        else:
            features, serves = answer
            check.facts.append("gate/%s answers" % row.module)
            if serves != notify_module:
                check.problem("gate/%s delivers %s, not %s" % (row.module, serves or "no type", notify_module),
                              "choose a gateway module made for %s" % notify_module)
            check.needs(features, "gate/" + row.module)
            if connect:
                _connect_by_process(check, module, features)
        check.report(report)
        checks.append(check)
    return checks


def _connect_by_process(check, module, features):
    def attempt():
        stdout, status = module.run("check_connection", connection_form(check.row), check.row.call_timeout())
        return gatewaycall.failure_reason(stdout, status, "gate/%s --command check_connection" % module.name)
    _try_connection(check, features, module.name, attempt)


def check_gateway_self(report, gateway, rows, projects, connect):
    """Each gateway row of a gateway module, checked from inside it: the type it serves, the direction its
    features allow, and with ``connect`` its own ``check_connection`` on the row's settings."""
    features = gateway.features()
    for row in rows:
        check = GatewayCheck(row, projects)
        serves = (row.row.get("notify_module") or "").strip()
        if serves != gateway.notify_module:
            check.problem("its notification type is %s, and %s delivers %s" % (serves or "empty", gateway.log.name,
                                                                                gateway.notify_module),
                          "choose %s only for %s gateways" % (gateway.log.name, gateway.notify_module))
        check.needs(features, gateway.log.name)
        if connect:
            _connect_in_process(check, gateway, features)
        check.report(report)


def _connect_in_process(check, gateway, features):
    from .gateway import Request
    from .settings import Settings

    def attempt():
        root = xmlio.parse(connection_form(check.row), "the check_connection request")
        try:
            gateway.check_connection(Request(root, Settings.from_request(root, gateway.log.name, form=True)))
        except errors.MgrNotifyError:
            raise
        except Exception as e:   # a defect in the gateway: the doctor still reports the rest
            gateway.log.exception("doctor: check_connection of %s", check.row.describe())
            return "internal error (%s: %s); the traceback is in %s" % (type(e).__name__, e, gateway.log.path)
        return None
    _try_connection(check, features, gateway.log.name, attempt)


def _try_connection(check, features, module_name, attempt):
    """With ``--connect``: ``attempt()``, the module's check_connection on the row's settings, gives the reason it
    failed or None -- for an active row whose module has the command and nothing else wrong with it."""
    if not check.row.active:
        check.facts.append("not connected (inactive)")
    elif "check_connection" not in features:
        check.facts.append("no check_connection to try")
    elif check.settings is not None and not check.problems:
        try:
            reason = attempt()
        except errors.MgrNotifyError as e:
            reason = e.message
        if reason:
            check.problem("check_connection: %s" % reason, "correct the settings; var/%s.log has the exchange"
                          % module_name)
        else:
            check.facts.append("check_connection passed")


def check_providers(report, checks, projects, notify_module):
    """At least one working active outgoing gateway; a warning naming each provider whose notices would find no
    gateway, or one that does not work (chosen as ``process`` chooses: its own first, then one for all)."""
    if not any(c.row.active and c.row.type == gatewaycall.OUTGOING and not c.problems for c in checks):
        report.fail("gateways", "no working active outgoing gateway of %s: nothing can be sent" % notify_module,
                    "add a gateway of this type in BILLmanager, or fix the one above")
        return
    broken = {c.row.id for c in checks if c.problems}
    unserved = []
    for pid, name in projects.items():
        chosen = gatewaycall.outgoing_for([c.row for c in checks], pid)
        if chosen is None:
            unserved.append("%s (%s): none" % (pid, name))
        elif chosen.id in broken:
            unserved.append("%s (%s): %s, which does not work" % (pid, name, chosen.describe()))
    if unserved:
        report.warn("providers", "notices of these providers would fail: %s" % "; ".join(unserved),
                    "add or fix a gateway for them, or one for all providers")
    elif projects:
        report.ok("providers", "every provider (%d) has a working outgoing gateway" % len(projects))


# ---- this server -------------------------------------------------------------------------------------

def check_templates(report, config, log):
    """node, the pinned ejs, and a sample EJS and XSLT template through the renderers ``process`` uses."""
    import subprocess
    from . import template
    with report.guard("node"):
        node = template.require_node()
        try:
            done = subprocess.run([node, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=NODE_TIMEOUT)
            version = done.stdout.decode("utf-8", "replace").strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            done, version = None, str(e)
        if done is None or done.returncode != 0:
            report.fail("node", "%s does not run: %s" % (node, version), "reinstall nodejs")
        else:
            report.ok("node", "%s %s" % (node, version))
    version = _ejs_version(template.EJS_PACKAGE)
    if version:
        report.ok("ejs", "ejs %s, the copy shipped in %s" % (version, _shown(template.EJS_PACKAGE, config)))
    else:
        report.fail("ejs", "the ejs package EJS templates need is missing from %s"
                    % _shown(template.EJS_PACKAGE, config),
                    "reinstall billmanager-plugin-mgrnotify, which ships it")
    previous = os.environ.get(template.TIMEOUT_ENV)
    os.environ.setdefault(template.TIMEOUT_ENV, str(SAMPLE_TIMEOUT))   # read once, by the Renderer
    try:
        renderer = template.Renderer(config, log)
    finally:
        if previous is None:
            del os.environ[template.TIMEOUT_ENV]
    try:
        for kind, source, expected in SAMPLES:
            with report.guard(kind):
                text = renderer.render(source, SAMPLE_NOTICE).strip()
                if text == expected:
                    report.ok(kind, "a sample template renders")
                else:
                    report.fail(kind, "a sample template rendered %r instead of %r" % (text[:200], expected),
                                "the renderer is not the one this module ships: reinstall its package")
    finally:
        renderer.close()


def _shown(path, config):
    """``path`` relative to the MGR5 root when it is below it, as the README names paths."""
    relative = os.path.relpath(path, config.root)
    return path if relative.startswith("..") else relative


def _ejs_version(folder):
    """The version of the ejs package in ``folder``, or None when it is not there."""
    import json
    try:
        with open(os.path.join(folder, "package.json"), encoding="utf-8") as f:
            return str(json.load(f).get("version") or "(no version)")
    except (OSError, ValueError):
        return None


def check_var(report, config):
    """var/ writable: the log, the lock and the journal go there."""
    import tempfile
    folder = config.path("var")
    try:
        fd, path = tempfile.mkstemp(dir=folder, prefix=".doctor-")
        os.close(fd)
        os.unlink(path)
    except OSError as e:
        report.fail("var/", "%s is not writable by %s (%s)" % (folder, _user(), e.strerror),
                    "the module must write its log, lock and journal there: give %s write access" % _user())
        return
    report.ok("var/", "writable by %s (log, lock, journal)" % _user())


def check_lock(report, queue):
    """Whether a process run holds the lock now; a journal left by a stopped run; outcomes set aside."""
    name = queue.module
    held = queue.lock_held()
    waiting = queue.journal_size()
    if held:
        report.ok("lock", "a process run of %s holds var/%s.lock now%s" % (
            name, name, " (its journal: %s so far)" % _plural(waiting, "entry") if waiting else ""))
    else:
        report.ok("lock", "free (no process run now)")
        if waiting:
            report.warn("journal", "var/%s.journal holds %s of a run that was stopped"
                        % (name, _plural(waiting, "outcome")), "nothing to do: the next process run applies them")
    rejected = queue.journal_size(rejected=True)
    if rejected:
        report.warn("journal", "var/%s.journal.rejected holds %s the database refused"
                    % (name, _plural(rejected, "outcome")),
                    "var/%s.log says why; apply them by hand, then remove the file" % name)


def check_queue(report, config, queue):
    """This type's tasks: waiting, failing, left for staff, the oldest, the most failures."""
    stats = queue.stats()
    if not stats["waiting"]:
        report.ok("queue", "no task of %s waiting" % queue.module)
    else:
        report.ok("queue", "%s waiting, %d failing (error_count > 0), %d left for staff; the oldest from %s, the "
                  "highest error_count %d" % (_plural(stats["waiting"], "task"), stats["failing"], stats["for_staff"],
                                             stats["oldest"], stats["highest"] or 0))
    worst = stats["worst"]
    if stats["for_staff"]:
        report.warn("queue", "%s failed %d times and wait%s for staff; task %s's last reason: %s"
                    % (_plural(stats["for_staff"], "task"), queue.max_errors, "s" if stats["for_staff"] == 1 else "",
                       worst["id"], worst["err_info"] or "(none)"),
                    "fix the cause, then reset their error_count to 0 to send them again")
    if config.do_nothing():
        report.warn("queue", "etc/billmgr.DoNothing exists: process sends only tasks with forcedonothing",
                    "nothing to do while BILLmanager migrates data; remove the file when it is done")
