"""A BILLmanager stand-in for tests, benchmarks and the demo.

- ``MariaDB``: a private MariaDB server on a socket in a temporary folder (see docs/TESTING.md).
- ``Sandbox``: a temporary MGR5 root laid out like /usr/local/mgr5 -- the project's folders linked
  in, ``etc/billmgr.conf`` pointing at a fresh database loaded with ``billmgr-schema.sql``, and a
  stand-in ``sbin/mgrctl`` that records every call. Modules run as BILLmanager runs them: as
  subprocesses with the MGR5 root as working directory, ``--command`` on the command line, XML on
  stdin. The ``mariadb``, ``mysql`` and ``node`` commands they start are wrapped so that every
  child's argument list is recorded in ``var/child-argv.log``.
"""

import datetime
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "lib", "python"))

from localnet import stop_process  # noqa: E402
from mgrnotify import db as dblib  # noqa: E402
from mgrnotify import redact, xmlio  # noqa: E402

SCHEMA = os.path.join(REPO, "tests", "billmgr-schema.sql")
MGRCTL_STAND_IN = os.path.join(REPO, "tests", "stand-ins", "mgrctl")
LINKED = ("lib", "skins", "etc/xml", "etc/sql")
MODULE_FOLDERS = ("gate", "notify")   # real folders of links, so a test can add a stand-in module
WRAPPED_COMMANDS = ("mariadb", "mysql", "node")
# The interpreter for modules: their own shebang (/usr/bin/python3) unless a test run asks for another.
MODULE_PYTHON = os.environ.get("MGRNOTIFY_TEST_PYTHON")
# Passwords the suite uses, collected so a test can prove none leaked anywhere.
SECRETS_FILE = os.path.join(tempfile.gettempdir(), "mgrnotify-test-secrets.txt")


def project_modules():
    """Every module of the project, as paths like ``gate/gwepochta``."""
    return [folder + "/" + name for folder in MODULE_FOLDERS
            for name in sorted(os.listdir(os.path.join(REPO, folder))) if not name.startswith(".")]


def remember_secret(secret):
    """Record a password the suite uses, for the leak scan."""
    with open(SECRETS_FILE, "a", encoding="utf-8") as f:
        f.write(secret + "\n")


def quoted(text):
    """A plain SQL string literal, for the few places that take no expression (IDENTIFIED BY)."""
    return "'%s'" % text.replace("\\", "\\\\").replace("'", "\\'")


class MariaDB:
    """A throw-away MariaDB server on a Unix socket, administered as root without a password."""

    def __init__(self):
        # A short path: a socket path is limited to about 100 bytes.
        self.dir = tempfile.mkdtemp(prefix="mgrn-db-", dir="/tmp")
        self.socket = os.path.join(self.dir, "sock")
        self.process = None
        self._ids = itertools.count(1)

    def start(self, timeout=60):
        """Initialise the data folder and start the server; wait until it answers."""
        server = shutil.which("mariadbd") or shutil.which("mysqld") or "/usr/sbin/mariadbd"
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        data = os.path.join(self.dir, "data")
        subprocess.run([install, "--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        args = [server, "--no-defaults", "--datadir=" + data, "--socket=" + self.socket, "--skip-networking",
                "--pid-file=" + os.path.join(self.dir, "pid"), "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=2", "--skip-log-bin"]
        if os.geteuid() == 0:
            args.append("--user=root")
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("mariadbd exited; see %s/server.log" % self.dir)
            if os.path.exists(self.socket) and self.admin("SELECT 1", check=False).returncode == 0:
                return self
            time.sleep(0.05)
        raise RuntimeError("mariadbd did not start within %d s" % timeout)

    def admin(self, sql, check=True):
        """Run SQL as the server's root user."""
        client = shutil.which("mariadb") or shutil.which("mysql")
        return subprocess.run([client, "--no-defaults", "--socket=" + self.socket, "--user=root", "--batch"],
                              input=sql.encode("utf-8"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              check=check)

    def create_database(self, password):
        """A new database with the BILLmanager schema and a user of its own; returns (name, user)."""
        number = next(self._ids)
        name, user = "billmgr_%d" % number, "billmgr_%d" % number
        with open(SCHEMA, encoding="utf-8") as f:
            schema = f.read()
        self.admin("CREATE DATABASE %s CHARACTER SET utf8mb4;\n"
                   "CREATE USER '%s'@'localhost' IDENTIFIED BY %s;\n"
                   "GRANT ALL ON %s.* TO '%s'@'localhost';\nUSE %s;\n%s"
                   % (name, user, quoted(password), name, user, name, schema))
        return name, user

    def stop(self):
        """Stop the server and remove its folder."""
        stop_process(self.process, 30)
        shutil.rmtree(self.dir, ignore_errors=True)


class Sandbox:
    """A temporary MGR5 root on a fresh database of ``mariadb``."""

    # Quotes, #, ;, backslash and spaces: the defaults file must carry it intact.
    DB_PASSWORD = "db pa$$ #w0rd;'\"\\x"

    def __init__(self, path, mariadb, log_level=None):
        self.root = os.path.join(path, "mgr5")
        self.mariadb = mariadb
        self.shims = os.path.join(path, "shims")
        self.var = os.path.join(self.root, "var")
        for folder in ("etc", "sbin", "var", "var/notify"):
            os.makedirs(os.path.join(self.root, folder), exist_ok=True)
        for entry in LINKED:
            os.symlink(os.path.join(REPO, entry), os.path.join(self.root, entry))
        for folder in MODULE_FOLDERS:
            os.makedirs(os.path.join(self.root, folder))
            for name in os.listdir(os.path.join(REPO, folder)):
                os.symlink(os.path.join(REPO, folder, name), os.path.join(self.root, folder, name))
        shutil.copy(MGRCTL_STAND_IN, os.path.join(self.root, "sbin", "mgrctl"))
        remember_secret(self.DB_PASSWORD)
        self.db_name, self.db_user = mariadb.create_database(self.DB_PASSWORD)
        self.db_settings = {"DBHost": "localhost", "DBUser": self.db_user, "DBPassword": self.DB_PASSWORD,
                            "DBName": self.db_name, "DBSocket": mariadb.socket}
        with open(os.path.join(self.root, "etc", "billmgr.conf"), "w", encoding="utf-8") as f:
            f.writelines("%s %s\n" % item for item in self.db_settings.items())
        if log_level is not None:
            self.set_log_level(log_level)
        self._make_shims()
        self.db = dblib.Database(self.db_settings)
        self.outputs = []   # (command, stdout + stderr) of every run, for the leak scan

    def _make_shims(self):
        os.makedirs(self.shims, exist_ok=True)
        record = os.path.join(self.var, "child-argv.log")
        for name in WRAPPED_COMMANDS:
            real = shutil.which(name)
            if not real:
                continue
            failing = ""
            if name in ("mariadb", "mysql"):
                # fail_database_after(): the first N calls work, the later ones fail as if the server went away
                failing = ('if [ -f "{limit}" ]; then c=$(( $(cat "{count}" 2>/dev/null || echo 0) + 1 )); '
                           'echo $c > "{count}"; if [ $c -gt $(cat "{limit}") ]; then '
                           'echo "ERROR 2013 (HY000): Lost connection to server during query" >&2; exit 1; fi; fi\n'
                           ).format(limit=os.path.join(self.var, "db-fail-after"),
                                    count=os.path.join(self.var, "db-calls"))
            with open(os.path.join(self.shims, name), "w") as f:
                f.write('#!/bin/sh\nprintf "%%s\\n" "%s $*" >> "%s"\n%sexec "%s" "$@"\n'
                        % (name, record, failing, real))
            os.chmod(os.path.join(self.shims, name), 0o755)

    def fail_database_after(self, calls):
        """Make the modules' database client fail after ``calls`` more calls (None: work again)."""
        limit, count = self.path("var", "db-fail-after"), self.path("var", "db-calls")
        for path in (limit, count):
            if os.path.exists(path):
                os.unlink(path)
        if calls is not None:
            with open(limit, "w") as f:
                f.write("%d\n" % calls)

    def install(self, script, folder="gate"):
        """Put a stand-in module (a script of tests/stand-ins) into the sandbox; its module path."""
        name = os.path.basename(script)
        os.symlink(os.path.join(REPO, "tests", "stand-ins", name), self.path(folder, name))
        return folder + "/" + name

    def modules(self):
        """Every module in the sandbox, as paths like ``gate/gwepochta``."""
        return sorted(folder + "/" + name for folder in MODULE_FOLDERS for name in os.listdir(self.path(folder)))

    def set_log_level(self, level, module="*"):
        """Write etc/debug.conf: ``module level`` (``*`` sets every module in the sandbox)."""
        modules = [module] if module != "*" else [os.path.basename(m) for m in self.modules()]
        with open(os.path.join(self.root, "etc", "debug.conf"), "w") as f:
            f.writelines("%s %d\n" % (m, level) for m in modules)

    def path(self, *parts):
        """A path inside the sandbox's MGR5 root."""
        return os.path.join(self.root, *parts)

    def env(self):
        """The environment modules run with: the shims first on PATH, no MGR5_ROOT."""
        env = dict(os.environ)
        env.pop("MGR5_ROOT", None)
        env["PATH"] = self.shims + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        return env

    def command(self, module, *args):
        """The argument list that runs ``module`` (e.g. ``gate/gwepochta``) from this sandbox."""
        script = self.path(module)
        return ([MODULE_PYTHON, script] if MODULE_PYTHON else [script]) + list(args)

    def run(self, module, *args, input=b"", timeout=120):
        """Run a module as BILLmanager does; return the CompletedProcess (stdout and stderr as bytes)."""
        if isinstance(input, str):
            input = input.encode("utf-8")
        done = subprocess.run(self.command(module, *args), input=input, cwd=self.root, env=self.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        self.outputs.append((" ".join((module,) + args), done.stdout + done.stderr))
        return done

    def leaks(self):
        """Every (place, secret) where a password the suite used appears in what the modules wrote:
        var/ (logs, recorded child arguments, mgrctl calls) and the stdout/stderr of each run."""
        try:
            with open(SECRETS_FILE, encoding="utf-8") as f:
                secrets = {line.rstrip("\n") for line in f if line.strip()}
        except FileNotFoundError:
            return []
        places = list(self.outputs)
        for folder, _, names in os.walk(self.var):
            for name in names:
                if name.endswith((".log", ".jsonl")):
                    with open(os.path.join(folder, name), "rb") as f:
                        places.append((os.path.join(folder, name), f.read()))
        found = []
        for where, content in places:
            for secret in secrets:
                if secret.encode("utf-8") in content or xmlio.escape(secret).encode("utf-8") in content:
                    found.append((where, secret))
        return found

    def json_lines(self, *path):
        """The JSON lines a stand-in wrote under the sandbox, oldest first ([] when there is no file yet)."""
        try:
            with open(self.path(*path), encoding="utf-8") as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def mgrctl_calls(self):
        """The calls the stand-in mgrctl received, oldest first."""
        return self.json_lines("var", "mgrctl-calls.jsonl")

    def mgrctl_contexts(self):
        """How the stand-in mgrctl was started each time, oldest first: func, SSH_CONNECTION and working folder."""
        return self.json_lines("var", "mgrctl-context.jsonl")

    def set_mgrctl_answer(self, func, document, status=0):
        """Make the stand-in mgrctl answer ``func`` with ``document`` and exit ``status``."""
        folder = self.path("var", "mgrctl-answers")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, func), "w", encoding="utf-8") as f:
            f.write(document)
        with open(os.path.join(folder, func + ".status"), "w") as f:
            f.write(str(status))

    def logs(self):
        """Every log file under var/, as {name: text}."""
        found = {}
        for name in os.listdir(self.var):
            if name.endswith(".log"):
                with open(os.path.join(self.var, name), encoding="utf-8", errors="replace") as f:
                    found[name] = f.read()
        return found

    def add_project(self, name="Provider", email="billing@provider.example"):
        """A provider row; its id."""
        return self._insert("INSERT INTO project (name, email) VALUES (?, ?)", (name, email))

    def add_user(self, name, project=None, **fields):
        """An account and its user; returns (user id, account id)."""
        account = self._insert("INSERT INTO account (name, project) VALUES (?, ?)", (name, project))
        columns = ["account", "name"] + sorted(fields)
        values = [account, name] + [fields[c] for c in sorted(fields)]
        user = self._insert("INSERT INTO user (%s) VALUES (%s)" % (", ".join(columns), ", ".join("?" * len(columns))),
                            values)
        return user, account

    def add_ticket(self, account, name="Ticket"):
        """A support ticket of ``account``; its id."""
        return self._insert("INSERT INTO ticket (account_client, name) VALUES (?, ?)", (account, name))

    def add_gateway(self, module, notify_module, params, project=None, gateway_type=1, active="on", name="gw"):
        """A gateway row whose xmlparams hold ``params`` (a dict); its id."""
        xmlparams = xmlio.document(*[xmlio.element(k, v) for k, v in params.items()])
        for key, value in params.items():
            if redact.is_secret(key):
                remember_secret(value)
        return self._insert("INSERT INTO gateway (name, gateway_module, notify_module, gateway_type, active, project,"
                            " xmlparams) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (name, module, notify_module, gateway_type, active, project, xmlparams))

    def _insert(self, sql, params):
        return int(self.db.batch([(sql, params), ("SELECT LAST_INSERT_ID() AS id", ())])[0][0]["id"])

    def enqueue(self, modulename, template, notice_xml, user, templatesubject="", priority=0,
                forcedonothing="off", absolute=False):
        """Queue one notification as BILLmanager does: the file under var/notify/<date>/, then the row.

        ``user`` is a dict of the user's fields; returns the task id.
        """
        return self.enqueue_many([dict(modulename=modulename, template=template, notice_xml=notice_xml, user=user,
                                       templatesubject=templatesubject, priority=priority,
                                       forcedonothing=forcedonothing, absolute=absolute)])[0]

    def enqueue_many(self, tasks):
        """Queue many notifications in one database call; their task ids."""
        day = datetime.date.today().isoformat()
        folder = self.path("var", "notify", day)
        os.makedirs(folder, exist_ok=True)
        statements = []
        for task in tasks:
            fd, filename = tempfile.mkstemp(dir=folder, prefix="n")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(notification_file(task["template"], task["notice_xml"], task["user"],
                                          task.get("templatesubject", "")))
            if not task.get("absolute"):
                filename = os.path.relpath(filename, self.root)
            statements.append(("INSERT INTO notifytask (modulename, filename, priority, forcedonothing)"
                               " VALUES (?, ?, ?, ?)", (task["modulename"], filename, task.get("priority", 0),
                                                        task.get("forcedonothing", "off"))))
            statements.append(("SELECT LAST_INSERT_ID() AS id", ()))
        return [int(rows[0]["id"]) for rows in self.db.batch(statements)]

    def close(self):
        """Drop the database (the folder itself belongs to the caller)."""
        self.mariadb.admin("DROP DATABASE IF EXISTS %s; DROP USER IF EXISTS '%s'@'localhost';"
                           % (self.db_name, self.db_user), check=False)


def notification_file(template, notice_xml, user, templatesubject=""):
    """The text of a notification file in BILLmanager's format (docs/CONTRACT.md)."""
    user_xml = xmlio.element("user", children=[xmlio.element(k, v) for k, v in user.items()])
    notify = xmlio.element("notify", children=[
        xmlio.element("tmpl", template), xmlio.element("notice_xml", notice_xml),
        xmlio.element("templatesubject", templatesubject), user_xml])
    return xmlio.document(notify)


def gateway_request(params, message=None, user=None, project=None, gateway=None, **root):
    """An ``outgoing``/``ingoing`` request as docs/CONTRACT.md gives it: ``<gateway>`` with ``<xmlparams>``
    (``params`` serialised to text), ``<message>``, ``<user>``, ``<project>`` and any extra root fields."""
    xmlparams = xmlio.document(*[xmlio.element(k, v) for k, v in params.items()])
    row = dict(gateway or {})
    gateway_xml = xmlio.element("gateway", children=[xmlio.element(k, v) for k, v in row.items()]
                                + [xmlio.element("xmlparams", xmlparams)])
    children = [gateway_xml]
    if message is not None:
        children.append(xmlio.element("message", message))
    for tag, fields in (("user", user), ("project", project)):
        if fields is not None:
            children.append(xmlio.element(tag, children=[xmlio.element(k, v) for k, v in fields.items()]))
    children += [xmlio.element(k, v) for k, v in root.items()]
    return xmlio.document(*children)


def batch_request(params, messages):
    """An outgoing_batch request: the gateway's settings and (id, to, subject, body) messages."""
    xmlparams = xmlio.document(*[xmlio.element(k, v) for k, v in params.items()])
    items = [xmlio.element("message", attrs={"id": task, "to": to},
                           children=([xmlio.element("subject", subject)] if subject else [])
                           + [xmlio.element("body", body)])
             for task, to, subject, body in messages]
    return xmlio.document(xmlio.element("gateway", children=[xmlio.element("xmlparams", xmlparams)]),
                          xmlio.element("messages", children=items))


def check_connection_request(params, form_fields=("login", "password")):
    """A ``check_connection`` request: the settings form plus ``<xmlparams>`` holding the entered values."""
    xmlparams = xmlio.document(*[xmlio.element(k, v) for k, v in params.items()])
    form = xmlio.element("metadata", children=[xmlio.element("form", children=[
        xmlio.element("field", attrs={"name": f}) for f in form_fields])])
    return xmlio.document(form, xmlio.element("xmlparams", xmlparams))


def error_of(done):
    """(type, sentence) of the error document a failed run printed."""
    assert done.returncode != 0, done.stdout
    node = xmlio.parse(done.stdout).find("error")
    assert node is not None, done.stdout
    return node.get("type"), xmlio.text(node, "msg")


def assert_sent(done):
    """The run answered the empty document of a message sent."""
    assert done.returncode == 0, done.stdout + done.stderr
    root = xmlio.parse(done.stdout)
    assert root.tag == "doc" and len(root) == 0, done.stdout
