"""EJS templates cannot read BILLmanager's files or reach the network (issue 13).

A template is JavaScript, and node hands JavaScript its modules in more ways than can be taken away
(import() among them), so what keeps a template from etc/billmgr.conf (mode 0600) is the operating system:
as root, node renders in a network namespace of its own as the user nobody. These tests run as root, as
BILLmanager runs modules. The MGR5 roots here sit in folders everyone may enter, so only the config's own
mode stands between a template and its contents; each hostile template must fail with a readable sentence,
and the contents must appear nowhere: not in the text, not in the error, not in the log.
"""

import os
import pwd
import select
import shutil
import socket
import tempfile
import time

import pytest

import sandbox as sandboxlib
from mgrnotify import template
from mgrnotify.config import Config
from mgrnotify.errors import TemplateError
from mgrnotify.log import Log

pytestmark = [pytest.mark.skipif(template._find_node() is None, reason="node is not installed"),
              pytest.mark.skipif(os.geteuid() != 0, reason="isolation is for modules run as root")]

NOTICE = "<doc><project><id>1</id><name>Provider</name></project><cmdhash>abc123</cmdhash></doc>"
INCLUDE_REFUSED = "The EJS template failed at line 1: include() is disabled in notification templates"

# Each way a template could reach the config in the same tick, and the words its failure must hold.
HOSTILE = [
    ("include, absolute", "<%- include('{conf}') %>", INCLUDE_REFUSED),
    ("include, relative", "<%- include('etc/billmgr.conf') %>", INCLUDE_REFUSED),
    ("include, parent", "<%- include('../etc/billmgr.conf') %>", INCLUDE_REFUSED),
    ("include, with data", "<%- include('billmgr.conf', {a: 1}) %>", INCLUDE_REFUSED),
    ("process.mainModule", "<%- process.mainModule.require('fs').readFileSync('{conf}') %>",
     "process.mainModule is not available in notification templates"),
    ("Function('return process')", "<%- Function('return process')().mainModule.require('fs')"
                                   ".readFileSync('{conf}') %>",
     "process.mainModule is not available in notification templates"),
    ("this.constructor", "<%- this.constructor.constructor('return process')().mainModule.require('fs')"
                         ".readFileSync('{conf}') %>", "constructor"),
    ("require", "<%- require('fs').readFileSync('{conf}') %>", "require is not defined"),
    # Node 10's own library needs process.binding, so it stays there: reading as nobody fails instead.
    ("process.binding", "<%- global.process.binding('fs').open('{conf}', 0, 0) %>",
     ("process.binding() is not available in notification templates", "EACCES")),
    ("process.getBuiltinModule", "<%- process.getBuiltinModule('fs').readFileSync('{conf}') %>",
     "process.getBuiltinModule() is not available in notification templates"),
    ("process.dlopen", "<%- process.dlopen({}, '{conf}') %>",
     "process.dlopen() is not available in notification templates"),
    ("fetch", "<%- fetch('file://{conf}') %>", "fetch() is not available in notification templates"),
    ("XMLHttpRequest", "<% var r = new XMLHttpRequest(); r.open('GET', 'file://{conf}', false) %>",
     "XMLHttpRequest() is not available in notification templates"),
]

# Past node's own measures: import() hands a template any module, a moment later. The result is kept for the
# next template, which prints it (or "pending").
STEAL = ("<% import('fs').then(function (fs) { try { global.stolen = String(fs.readFileSync('{path}')) }"
         " catch (e) { global.stolen = e.message } }) %>stealing")
CONNECT = ("<% import('net').then(function (net) { net.connect({port}, '127.0.0.1')"
           ".on('error', function (e) { global.connected = e.code }).on('connect', function () {"
           " global.connected = 'connected' }) }) %>connecting")
HTTP_GET = ("<% import('http').then(function (http) { http.get('http://127.0.0.1:{port}/')"
            ".on('error', function (e) { global.fetched = e.code }) }) %>fetching")


class Root:
    """An MGR5 root in a folder everyone may enter: etc/billmgr.conf (0600) holds a marker, etc/public.txt
    (0644) another, so a test can tell a template that cannot read from one that cannot find."""

    def __init__(self, path):
        self.root = path
        os.chmod(path, 0o755)
        for folder in ("etc", "var"):
            os.makedirs(os.path.join(path, folder), mode=0o755)
        self.marker = "mgrnotify-config-marker-" + os.urandom(8).hex()
        self.public_marker = "mgrnotify-public-marker-" + os.urandom(8).hex()
        self.conf = os.path.join(path, "etc", "billmgr.conf")
        self.public = os.path.join(path, "etc", "public.txt")
        write(self.conf, "DBPassword %s\n" % self.marker, 0o600)
        write(self.public, self.public_marker + "\n", 0o644)
        self.config = Config(path)
        self.log = Log("ntjabber", os.path.join(path, "var", "ntjabber.log"), 9)

    def logs(self):
        """Every log under var/, as one text."""
        found = []
        for name in os.listdir(os.path.join(self.root, "var")):
            if name.endswith(".log"):
                with open(os.path.join(self.root, "var", name), encoding="utf-8", errors="replace") as f:
                    found.append(f.read())
        return "\n".join(found)


def fill(text, **values):
    """``text`` with each ``{name}`` replaced (str.format would take JavaScript's braces for fields)."""
    for name, value in values.items():
        text = text.replace("{%s}" % name, str(value))
    return text


def write(path, text, mode):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def open_folder():
    """A new folder under /tmp that the user nobody may enter (pytest's own are root's alone)."""
    path = tempfile.mkdtemp(prefix="mgrn-ejs-", dir="/tmp")
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def mgr5():
    path = open_folder()
    yield Root(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def renderer(mgr5):
    with template.Renderer(mgr5.config, mgr5.log) as shared:
        yield shared


@pytest.fixture
def unisolated(monkeypatch):
    """The module taken for one that does not run as root: node renders as root, with node's measures only."""
    monkeypatch.setattr(template.os, "geteuid", lambda: 1000)


def outcome(renderer, text):
    """The rendered text, or the TemplateError's sentence and detail."""
    try:
        return renderer.render(text, NOTICE)
    except TemplateError as e:
        return "%s\n%s" % (e.message, e.value or "")


def later(renderer, name, seconds=5):
    """What an earlier template's callback left in global ``name``: its value once set, else "pending"."""
    deadline = time.time() + seconds
    while True:
        value = renderer.render("<%%- typeof global.%s === 'undefined' ? 'pending' : global.%s %%>"
                                % (name, name), NOTICE)
        if value != "pending" or time.time() > deadline:
            return value
        time.sleep(0.1)


@pytest.fixture
def listener():
    """A loopback socket listening for a connection that must never come; its port."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.setblocking(False)
    yield server
    server.close()


def connection_arrived(server, seconds=1.5):
    return bool(select.select([server], [], [], seconds)[0])


# ---- one template at a time, through the library -------------------------------------------------------

@pytest.mark.parametrize("text, words", [row[1:] for row in HOSTILE], ids=[row[0] for row in HOSTILE])
def test_hostile_template_fails_readably_and_leaks_nothing(mgr5, renderer, text, words):
    with pytest.raises(TemplateError) as caught:
        renderer.render(fill(text, conf=mgr5.conf), NOTICE)
    message = caught.value.message
    assert message.startswith("The EJS template failed at line 1: "), message
    assert any(w in message for w in ((words,) if isinstance(words, str) else words)), message
    for place in (message, caught.value.value or "", mgr5.logs()):
        assert mgr5.marker not in place
    assert renderer.render("<%= cmdhash %>", NOTICE) == "abc123"   # and the renderer serves the next one


def test_import_reads_what_nobody_may_read_and_not_the_config(mgr5, renderer):
    assert renderer.render(fill(STEAL, path=mgr5.public), NOTICE) == "stealing"
    assert later(renderer, "stolen").strip() == mgr5.public_marker   # so the attempt below is a real one
    renderer.render("<% delete global.stolen %>", NOTICE)
    assert renderer.render(fill(STEAL, path=mgr5.conf), NOTICE) == "stealing"
    stolen = later(renderer, "stolen")
    assert stolen == "EACCES: permission denied, open '%s'" % mgr5.conf
    assert mgr5.marker not in mgr5.logs()


def test_no_network(mgr5, renderer, listener):
    port = listener.getsockname()[1]
    with pytest.raises(TemplateError) as caught:
        renderer.render("<%%- process.mainModule.require('http').get('http://127.0.0.1:%d/') %%>" % port, NOTICE)
    assert caught.value.message.startswith("The EJS template failed at line 1: ")
    assert renderer.render(fill(CONNECT, port=port), NOTICE) == "connecting"
    assert renderer.render(fill(HTTP_GET, port=port), NOTICE) == "fetching"
    assert later(renderer, "connected") == "ENETUNREACH"   # no interface but a loopback that is down
    assert later(renderer, "fetched") == "ENETUNREACH"
    assert not connection_arrived(listener)


def test_templates_run_as_nobody_in_root_folder_with_an_empty_environment(renderer, monkeypatch):
    nobody = pwd.getpwnam(template.EJS_USER)
    ids = renderer.render("<%= [process.getuid(), process.geteuid(), process.getgid(), process.getegid()]"
                          ".join(':') %>|<%= process.getgroups().join(',') %>", NOTICE)
    user, groups = ids.split("|")
    assert user == "%d:%d:%d:%d" % (nobody.pw_uid, nobody.pw_uid, nobody.pw_gid, nobody.pw_gid)
    assert set(groups.split(",")) <= {str(nobody.pw_gid)}
    assert renderer.render("<%= process.cwd() %>", NOTICE) == "/"
    environment = renderer.render("<%- Object.keys(process.env).sort().join(',') %>", NOTICE)
    assert set(environment.split(",")) - {""} <= {k for k in os.environ if k in template.NODE_ENV_KEPT
                                                  or k.startswith("LC_")}
    with pytest.raises(TemplateError) as caught:
        renderer.render("<% process.setuid(0) %>", NOTICE)
    assert caught.value.message.startswith("The EJS template failed at line 1: ")


def test_node_starts_isolated(mgr5, renderer):
    assert renderer.render("<%= cmdhash %>", NOTICE) == "abc123"
    pid = renderer._ejs.process.pid
    with open("/proc/%d/status" % pid) as f:
        status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    assert status["NoNewPrivs"].strip() == "1"
    assert status["CapEff"].strip() == "0000000000000000"
    assert os.readlink("/proc/%d/ns/net" % pid) != os.readlink("/proc/self/ns/net")


# ---- the same templates, isolation taken away: the tests above can fail ----------------------------------

def test_without_isolation_import_reads_the_config(mgr5, unisolated):
    with template.Renderer(mgr5.config, mgr5.log) as renderer:
        renderer.render(fill(STEAL, path=mgr5.conf), NOTICE)
        assert later(renderer, "stolen").strip() == "DBPassword " + mgr5.marker
        renderer.render("<%= 1 %>", NOTICE)
    warnings = [line for line in mgr5.logs().splitlines() if "without OS isolation" in line]
    assert len(warnings) == 1 and "does not run as root" in warnings[0]


def test_without_isolation_a_connection_arrives(mgr5, unisolated, listener):
    with template.Renderer(mgr5.config, mgr5.log) as renderer:
        renderer.render(fill(CONNECT, port=listener.getsockname()[1]), NOTICE)
        assert later(renderer, "connected") == "connected"
    assert connection_arrived(listener)


# ---- what is missing is named, and nothing is rendered unisolated ----------------------------------------

def test_missing_unshare_and_setpriv(mgr5, renderer, tmp_path, monkeypatch):
    empty = str(tmp_path)
    monkeypatch.setenv("PATH", empty)
    monkeypatch.setattr(template, "TOOL_DIRS", (empty,))
    with pytest.raises(TemplateError) as caught:
        renderer.render("<%= cmdhash %>", NOTICE)
    assert caught.value.message == (
        "EJS templates are not rendered: as root they run only in isolation, which needs unshare and setpriv "
        "(util-linux; before Debian 11 and Ubuntu 22.04, setpriv is a package of its own), not found on PATH or in %s"
        % empty)


def test_missing_user(mgr5, renderer, monkeypatch):
    monkeypatch.setattr(template, "EJS_USER", "mgrnotify-no-such-user")
    with pytest.raises(TemplateError) as caught:
        renderer.render("<%= cmdhash %>", NOTICE)
    assert caught.value.message == ("EJS templates are not rendered: as root they run as the user "
                                    "'mgrnotify-no-such-user', which this system does not have")


def test_a_failed_drop_renders_nothing(mgr5, renderer, monkeypatch):
    # node started as nobody already (setpriv), then asked to become another user: it cannot, and says so.
    setpriv = template._find_program(("setpriv",), template.TOOL_DIRS)
    nobody = pwd.getpwnam(template.EJS_USER)
    folder = open_folder()
    try:
        # A copy of the runner and its ejs where nobody can read them.
        library = os.path.join(folder, "mgrnotify")
        shutil.copytree(os.path.dirname(template.EJS_RUNNER), library, ignore=shutil.ignore_patterns("*.py*"))
        monkeypatch.setattr(template, "EJS_RUNNER", os.path.join(library, "ejs_render.js"))
        monkeypatch.setattr(template, "_isolation_argv", lambda: [setpriv, "--reuid=%d" % nobody.pw_uid,
                                                                  "--regid=%d" % nobody.pw_gid, "--clear-groups",
                                                                  "--"])
        monkeypatch.setattr(template, "_ejs_user", lambda: (nobody.pw_uid - 1, nobody.pw_gid - 1))
        with pytest.raises(TemplateError) as caught:
            renderer.render("<%= cmdhash %>", NOTICE)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert caught.value.message.startswith("EJS templates are not rendered: node could not become uid %d, gid %d ("
                                           % (nobody.pw_uid - 1, nobody.pw_gid - 1)), caught.value.message


# ---- a queue run, as BILLmanager starts it -----------------------------------------------------------------

def test_a_queue_run_fails_hostile_templates_and_delivers_the_rest(mariadb):
    folder = open_folder()
    box = sandboxlib.Sandbox(folder, mariadb)
    try:
        os.chmod(box.root, 0o755)
        conf = box.path("etc", "billmgr.conf")
        os.chmod(conf, 0o600)
        box.install("gwrecord")
        project = box.add_project("Provider")
        box.add_gateway("gwrecord", "ntjabber", {"jabber": "bot@localhost", "password": "pw-ejs"}, project=project)
        user = {"id": "1", "name": "alice", "realname": "Alice", "jabber": "alice@localhost"}
        notice = "<doc><project><id>%s</id><name>Provider</name></project></doc>" % project
        hostile = [fill(text, conf=conf) for _, text, _ in HOSTILE]
        queued = [box.enqueue("ntjabber", text, notice, user, priority=100 - n) for n, text in enumerate(hostile)]
        box.enqueue("ntjabber", fill(STEAL, path=conf), notice, user, priority=10)
        box.enqueue("ntjabber", "<%= project.name %>", notice, user, priority=9)
        box.enqueue("ntjabber", "later: <%- typeof stolen === 'undefined' ? 'pending' : stolen %>", notice, user,
                    priority=8)
        done = box.run("notify/ntjabber", "--command", "process")
        assert done.returncode == 0, done.stdout + done.stderr
        left = {int(row["id"]): row["err_info"] for row in
                box.db.query("SELECT id, err_info FROM notifytask ORDER BY id")}
        assert sorted(left) == queued
        for task in queued:
            assert left[task].startswith("The EJS template failed at line 1: "), left[task]
        bodies = [record["body"] for record in box.json_lines("var", "gwrecord.delivered")]
        assert bodies[:2] == ["stealing", "Provider"]
        assert bodies[2] in ("later: pending", "later: EACCES: permission denied, open '%s'" % conf)
        secret = box.DB_PASSWORD
        for place in list(left.values()) + bodies + [done.stdout.decode(), done.stderr.decode()] + \
                list(box.logs().values()):
            assert secret not in place and xmlio_escape(secret) not in place
        assert not box.leaks()
    finally:
        box.close()
        shutil.rmtree(folder, ignore_errors=True)


def xmlio_escape(text):
    from mgrnotify import xmlio
    return xmlio.escape(text)
