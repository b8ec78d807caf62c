"""The command-line protocol, run the way BILLmanager runs modules: subprocesses in a sandbox MGR5 root."""

import base64
import itertools
import os
import re
import subprocess

import pytest

import prosody as prosodylib
import sandbox as sandboxlib
from localnet import ScriptedServer
from epochta_server import Account, EpochtaServer
from httpsms_servers import SmscServer
from max_server import MaxServer
from fuzzing import load_class
from mgrnotify import errors, gateway, xmlio

prosody = prosodylib.prosody   # the fixture: one Prosody for this file

REPO = sandboxlib.REPO


def repo_modules():
    """Every module of the project, plus the library's own probes."""
    return ["tests/stand-ins/gwprobe", "tests/stand-ins/ntprobe"] + sandboxlib.project_modules()


def in_sandbox(sandbox, module):
    """The module's path inside the sandbox (probes are linked in first)."""
    if module.startswith("tests/stand-ins/"):
        folder = "gate" if os.path.basename(module).startswith("gw") else "notify"
        return sandbox.install(module, folder)
    return module


def error_of(done):
    """The <error> element of a module's answer (which must be a well-formed document)."""
    root = xmlio.parse(done.stdout)
    assert root.tag == "doc"
    node = root.find("error")
    assert node is not None, done.stdout
    assert xmlio.text(node, "msg"), "the error document must carry a readable sentence"
    return node


def assert_no_traceback(done):
    for stream in (done.stdout, done.stderr):
        assert b"Traceback" not in stream


# --- features and dispatch ------------------------------------------------------------------------------

def test_gateway_features(sandbox):
    module = sandbox.install("gwprobe")
    done = sandbox.run(module, "--command", "features")
    assert done.returncode == 0
    root = xmlio.parse(done.stdout)
    assert [f.get("name") for f in root.findall("features/feature")] == [
        "outgoing", "ingoing", "formtune", "check_connection"]
    assert xmlio.text(root, "notify_module") == "ntprobe"


def test_notify_features(sandbox):
    module = sandbox.install("ntprobe", "notify")
    done = sandbox.run(module, "--command", "features")
    root = xmlio.parse(done.stdout)
    assert [f.get("name") for f in root.findall("features/feature")] == ["html"]
    assert xmlio.text(root, "contact_type") == "jabber"


@pytest.mark.parametrize("args, status, words", [
    (["--command", "nope"], errors.EXIT_USAGE, "has no command 'nope'; it answers: check_connection, doctor, features"),
    ([], errors.EXIT_USAGE, "No command given"),
    (["features"], errors.EXIT_USAGE, "Unexpected argument"),
    (["--command"], errors.EXIT_USAGE, "needs a value"),
    (["--command", "__init__"], errors.EXIT_USAGE, "has no command '__init__'"),
    (["--command", "read_input"], errors.EXIT_USAGE, "has no command 'read_input'"),
])
def test_bad_command_lines(sandbox, args, status, words):
    done = sandbox.run(sandbox.install("gwprobe"), *args)
    assert done.returncode == status
    assert words in xmlio.text(error_of(done), "msg")
    assert_no_traceback(done)


@pytest.mark.parametrize("module, args, words", [
    ("ntprobe", ["--command", "process", "--verbose", "1"],
     "ntprobe --command process does not take the option --verbose; it takes no option but --command"),
    ("ntprobe", ["--command", "process", "--gate", "all"], "ntprobe --command process does not take the option --gate"),
    ("ntprobe", ["--command", "getmessage", "--gate", "all", "--task", "1"],
     "ntprobe --command getmessage does not take the option --task; it takes only --gate ID|all"),
    ("ntprobe", ["--command", "preview", "--task", "1", "--connect"],
     "ntprobe --command preview does not take the option --connect; it takes only --task ID"),
    ("ntprobe", ["--command", "doctor", "--gate", "1"],
     "ntprobe --command doctor does not take the option --gate; it takes only --connect"),
    ("gwprobe", ["--command", "features", "--connect"], "gwprobe --command features does not take the option --connect"),
    ("gwprobe", ["--command", "check_connection", "--gate", "1"],
     "gwprobe --command check_connection does not take the option --gate; it takes no option but --command"),
    ("gwprobe", ["--command", "doctor", "--task", "1"],
     "gwprobe --command doctor does not take the option --task; it takes only --connect, --gate ID"),
    ("gwprobe", ["--command", "outgoing", "--gate", "1", "--dry-run", "yes"],
     "gwprobe --command outgoing does not take the option --dry-run; it takes only --gate ID"),
])
def test_an_option_the_command_does_not_take_is_a_usage_error(sandbox, module, args, words):
    done = sandbox.run(sandbox.install(module, "notify" if module.startswith("nt") else "gate"), *args)
    assert done.returncode == errors.EXIT_USAGE, done.stdout
    node = error_of(done)
    assert (node.get("type"), xmlio.text(node, "msg")[:len(words)]) == ("usage", words)
    assert node.get("object") == words.split("the option --")[1].split(";")[0]
    assert_no_traceback(done)


@pytest.mark.parametrize("module", repo_modules())
def test_every_command_refuses_an_unknown_option(sandbox, module):
    module = in_sandbox(sandbox, module)
    commands = re.search(r"it answers: ([a-z_, ]+)", xmlio.text(error_of(sandbox.run(module, "--command", "nope")),
                                                                 "msg")).group(1).split(", ")
    assert "features" in commands
    for command in commands:
        done = sandbox.run(module, "--command", command, "--bogus", "1", input=b"<doc/>")
        assert done.returncode == errors.EXIT_USAGE, (command, done.stdout)
        assert "does not take the option --bogus" in xmlio.text(error_of(done), "msg")


def test_a_gateway_takes_the_gate_billmanager_may_pass(sandbox):
    # COMMAND_OPTIONS [ours]: BILLmanager's own ntsms and ntemail might pass --gate to outgoing and ingoing
    done = sandbox.run(sandbox.install("gwprobe"), "--command", "ingoing", "--gate", "3",
                       input=sandboxlib.gateway_request({"login": "x"}))
    assert done.returncode == 0, done.stdout
    assert len(xmlio.parse(done.stdout).findall("messages/message")) == 2


@pytest.mark.parametrize("gate, status", [("all", 0), ("12", 0), ("", 2), ("1; rm -rf /", 2), ("-1", 2), ("١٢", 2)])
def test_getmessage_gate_argument(sandbox, gate, status):
    done = sandbox.run(sandbox.install("ntprobe", "notify"), "--command", "getmessage", "--gate", gate)
    assert done.returncode == status, done.stdout


def test_a_command_the_gateway_lacks_is_refused(sandbox, tmp_path):
    # gwepochta-like gateways without ingoing must not answer it; the probe has all four, so check the base class
    from mgrnotify.gateway import Gateway

    class OutOnly(Gateway):
        def outgoing(self, request):
            pass

    module = OutOnly(None, None)
    assert module.features() == ["outgoing"]
    assert module.commands() == ["doctor", "features", "outgoing"]


# --- outgoing_batch: the exit status when part of the batch fails (errors.PartialFailure) ---------------------

BATCH_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n<doc><gateway><xmlparams>&lt;doc/&gt;</xmlparams></gateway>'
              '<messages>\n<message id="1" to="alice@localhost"><body>delivered</body></message>\n'
              '<message id="2" to="bob@localhost"><body>fail</body></message>\n')


def test_a_batch_whose_messages_all_have_results_exits_0_even_when_some_failed(sandbox):
    done = sandbox.run(sandbox.install("gwrecord"), "--command", "outgoing_batch",
                       input=BATCH_HEAD + "</messages></doc>\n")
    assert done.returncode == errors.EXIT_OK, done.stdout
    results = xmlio.parse(done.stdout).findall("results/result")
    assert [(r.get("id"), r.get("status")) for r in results] == [("1", "ok"), ("2", "error")]
    assert "The recorder refused the message to bob@localhost" in results[1].text


def test_a_batch_request_that_breaks_off_exits_3_with_the_error_after_the_results(sandbox):
    done = sandbox.run(sandbox.install("gwrecord"), "--command", "outgoing_batch",
                       input=BATCH_HEAD + '<message to="carol@localhost"><body>no id</body></message>')
    assert done.returncode == errors.EXIT_BAD_INPUT, done.stdout
    root = xmlio.parse(done.stdout)   # still one document: the results, then the error
    assert [r.get("status") for r in root.findall("results/result")] == ["ok", "error"]
    node = error_of(done)
    assert (node.get("type"), node.get("object")) == ("xml", "message")
    assert "has no id attribute" in xmlio.text(node, "msg")


# --- each gateway command ----------------------------------------------------------------------------------

def test_formtune_returns_the_changed_form(sandbox):
    done = sandbox.run(sandbox.install("gwprobe"), "--command", "formtune", input="<doc><field name='x'/></doc>")
    assert done.returncode == 0
    root = xmlio.parse(done.stdout)
    assert [v.text for v in root.findall("slist[@name='ticket_format']/val")] == ["@id", "#id"]
    assert root.find("field").get("name") == "x"


@pytest.mark.parametrize("password, status", [("right", 0), ("wr0ng-Pa55", errors.EXIT_FAILURE)])
def test_check_connection(sandbox, password, status):
    sandboxlib.remember_secret("wr0ng-Pa55")
    request = sandboxlib.check_connection_request({"login": "bob", "password": password})
    done = sandbox.run(sandbox.install("gwprobe"), "--command", "check_connection", input=request)
    assert done.returncode == status
    if status:
        node = error_of(done)
        assert node.get("type") == "connect"
        assert "refused the login for user 'bob'" in xmlio.text(node, "msg")
    else:
        root = xmlio.parse(done.stdout)
        assert root.find("metadata/form") is not None
        assert root.find("xmlparams") is None
    assert password.encode() not in done.stdout


def test_outgoing_uses_database_and_mgrctl(sandbox):
    sandbox.add_gateway("gwprobe", "ntprobe", {"login": "a"})
    request = sandboxlib.gateway_request({"login": "bob", "password": "pw-1234"}, "Привет <b>&", {"phone": "1"})
    done = sandbox.run(sandbox.install("gwprobe"), "--command", "outgoing", input=request)
    assert done.returncode == 0, done.stdout
    assert xmlio.parse(done.stdout).tag == "doc" and len(xmlio.parse(done.stdout)) == 0
    assert sandbox.mgrctl_calls() == [{"options": {"-m": "billmgr", "-o": "xml"}, "func": "probe.send",
                                       "params": {"message": "Привет <b>&"}}]
    assert "gateways: 1, message: Привет <b>&" in sandbox.logs()["gwprobe.log"]


def test_mgrctl_error_becomes_an_error_document(sandbox):
    sandbox.set_mgrctl_answer("probe.send", '<doc><error type="access"><msg>Access denied</msg></error></doc>')
    request = sandboxlib.gateway_request({"password": "pw-1234"}, "x")
    done = sandbox.run(sandbox.install("gwprobe"), "--command", "outgoing", input=request)
    assert done.returncode == errors.EXIT_FAILURE
    assert xmlio.text(error_of(done), "msg") == "BILLmanager refused probe.send: Access denied"


def test_ingoing_messages(sandbox):
    done = sandbox.run(sandbox.install("gwprobe"), "--command", "ingoing",
                       input=sandboxlib.gateway_request({"login": "x"}))
    root = xmlio.parse(done.stdout)
    assert [(m.text, m.get("from")) for m in root.findall("messages/message")] == [
        ("first", None), ("second", "alice@localhost")]


def test_a_defect_is_an_internal_error_with_the_traceback_only_in_the_log(sandbox):
    done = sandbox.run(sandbox.install("gwprobe"), "--command", "outgoing",
                       input=sandboxlib.gateway_request({"password": "pw-1234"}, "raise"))
    assert done.returncode == errors.EXIT_INTERNAL
    node = error_of(done)
    assert node.get("type") == "internal"
    assert "internal error (RuntimeError); the traceback is in" in xmlio.text(node, "msg")
    assert_no_traceback(done)
    log_text = sandbox.logs()["gwprobe.log"]
    assert "Traceback (most recent call last)" in log_text and "a defect, on purpose" in log_text


def test_database_down_is_a_readable_error(sandbox):
    with open(sandbox.path("etc", "billmgr.conf"), "a") as f:
        f.write("DBSocket /nonexistent/socket\n")
    module = sandbox.install("ntprobe", "notify")
    done = sandbox.run(module, "--command", "process")
    assert done.returncode == errors.EXIT_FAILURE
    assert "Cannot reach the database server" in xmlio.text(error_of(done), "msg")


def test_log_lines_have_billmanagers_shape(sandbox):
    module = sandbox.install("ntprobe", "notify")
    sandbox.run(module, "--command", "process")
    lines = sandbox.logs()["ntprobe.log"].splitlines()
    assert lines
    for line in lines:
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[\d+\] ntprobe \x1b\[1;3\dm (DEBUG|EXTINFO|INFO|WARNING|ERROR|CRITICAL) .*\x1b\[0m$",
                        line)
    assert any("INFO queued: 0" in line for line in lines)


def test_root_from_environment(sandbox, tmp_path):
    # the script lives in another tree (its library beside it); MGR5_ROOT decides config and log
    other = tmp_path / "other"
    (other / "notify").mkdir(parents=True)
    os.symlink(os.path.join(REPO, "lib"), str(other / "lib"))
    script = str(other / "notify" / "ntprobe")
    os.symlink(os.path.join(REPO, "tests", "stand-ins", "ntprobe"), script)
    command = [sandboxlib.MODULE_PYTHON, script] if sandboxlib.MODULE_PYTHON else [script]
    env = dict(sandbox.env(), MGR5_ROOT=sandbox.root)
    done = subprocess.run(command + ["--command", "process"], env=env, stdout=subprocess.PIPE, timeout=60)
    assert done.returncode == 0
    assert "queued: 0" in sandbox.logs()["ntprobe.log"]
    assert not (other / "var").exists()


# --- hostile stdin, every command of every gateway ----------------------------------------------------------

HOSTILE_INPUTS = {
    "billion laughs": b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                      + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                                 for i in range(1, 10))
                      + b']><doc><message>&lol9;</message></doc>',
    "external entity": b'<?xml version="1.0"?><!DOCTYPE doc [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                       b"<doc><message>&xxe;</message></doc>",
    "parameter entity": b'<!DOCTYPE doc [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><doc/>',
    "bare DTD": b'<!DOCTYPE doc SYSTEM "http://127.0.0.1:9/x.dtd"><doc/>',
    "truncated": b"<doc><gateway><xmlparams>&lt;doc&gt;</xmlparams></gateway><message>hi",
    "not UTF-8": b"<doc><message>\xff\xfe\xc3\x28 caf\xe9</message></doc>",
    "empty": b"",
    "whitespace": b"  \n\t ",
    "not XML": b"login=bob&password=x",
}


def gateway_commands(sandbox, module):
    done = sandbox.run(module, "--command", "features")
    assert done.returncode == 0, (module, done.stdout)
    features = [f.get("name") for f in xmlio.parse(done.stdout).findall("features/feature")]
    return [f for f in features if f in gateway.GATEWAY_COMMANDS + (gateway.BATCH,)]   # not attachments


@pytest.mark.parametrize("module", [m for m in repo_modules() if "/gw" in m])
def test_hostile_stdin_gives_an_error_document(sandbox, module):
    module = in_sandbox(sandbox, module)
    commands = gateway_commands(sandbox, module)
    assert commands
    for command in commands:
        for name, data in HOSTILE_INPUTS.items():
            done = sandbox.run(module, "--command", command, input=data, timeout=60)
            assert done.returncode == errors.EXIT_BAD_INPUT, (module, command, name, done.stdout)
            node = error_of(done)
            assert node.get("type") == "xml", (command, name)
            assert b"root:" not in done.stdout and b"lollol" not in done.stdout
            assert_no_traceback(done)


@pytest.mark.smoke
@pytest.mark.parametrize("module", repo_modules())
def test_features_ignores_stdin_and_answers(sandbox, module):
    module = in_sandbox(sandbox, module)
    for data in (b"", HOSTILE_INPUTS["billion laughs"], b"\xff" * 10000):
        done = sandbox.run(module, "--command", "features", input=data)
        assert done.returncode == 0
        assert xmlio.parse(done.stdout).find("features") is not None


# --- secrets ------------------------------------------------------------------------------------------------

def test_password_at_debug_level_reaches_no_log_and_no_argument(sandbox):
    password = "Pw-at-debug-9 \"<&>'"
    sandboxlib.remember_secret(password)
    module = sandbox.install("gwprobe")
    sandbox.set_log_level(9)
    request = sandboxlib.gateway_request({"login": "bob", "password": password}, "hello",
                                         gateway={"name": "gw", "password": password})
    done = sandbox.run(module, "--command", "outgoing", input=request)
    assert done.returncode == 0, done.stdout
    check = sandboxlib.check_connection_request({"login": "bob", "password": password})
    assert sandbox.run(module, "--command", "check_connection", input=check).returncode == errors.EXIT_FAILURE
    logs = sandbox.logs()
    text = logs["gwprobe.log"]
    assert "DEBUG input:" in text and "settings: password=***" in text, "debug lines must be written"
    escaped = xmlio.escape(password)
    for name, content in logs.items():
        for form in (password, escaped, "Pw-at-debug-9"):
            assert form not in content, (name, form)
    argv_log = logs["child-argv.log"]
    assert "mariadb" in argv_log or "mysql" in argv_log
    assert sandbox.DB_PASSWORD not in argv_log and sandbox.db_user not in argv_log
    assert password.encode() not in done.stdout + done.stderr


# --- check_connection of every gateway echoes no secret, wherever it came in the form ---------------------------

class SMTPLogin(ScriptedServer):
    """Just enough SMTP for gwmail's check_connection, on 127.0.0.1 without TLS: a greeting, EHLO offering
    AUTH PLAIN, one login and password accepted, QUIT. (aiosmtpd, the mail tests' server, is not installed
    for Python 3.6, and this exchange is all check_connection needs.)"""

    def __init__(self, login, password):
        self.expected = base64.b64encode(b"\0" + login.encode() + b"\0" + password.encode())
        super().__init__()

    def session(self, connection):
        connection.settimeout(10)
        self._talk(connection.makefile("rwb", buffering=0))

    def _talk(self, stream):
        stream.write(b"220 localhost ESMTP\r\n")
        for line in stream:
            words = line.split()
            verb = words[0].upper() if words else b""
            if verb in (b"EHLO", b"HELO"):
                stream.write(b"250-localhost\r\n250 AUTH PLAIN\r\n")
            elif verb == b"AUTH":
                accepted = words[1:] == [b"PLAIN", self.expected]
                stream.write(b"235 2.7.0 Accepted\r\n" if accepted else b"535 5.7.8 Refused\r\n")
            elif verb == b"QUIT":
                stream.write(b"221 Bye\r\n")
                return
            else:
                stream.write(b"250 OK\r\n" if verb in (b"RSET", b"NOOP") else b"502 Not here\r\n")


_secret_numbers = itertools.count(1)


def new_secret(where):
    """A password nobody else uses, recorded for the sandbox's leak scan."""
    secret = "Sekret-%s-%d <&\"'>" % (where, next(_secret_numbers))
    sandboxlib.remember_secret(secret)
    return secret


@pytest.fixture
def reachable(prosody, tmp_path, monkeypatch):
    """For each gateway of gate/: settings whose check_connection succeeds against a server on loopback, and
    the names of the settings that hold secrets. A new gateway fails the test until it is added here."""
    monkeypatch.setenv("SSL_CERT_FILE", prosody.cert)
    jabber_password = new_secret("jabber")
    jid = prosody.register("gwcheck%d" % next(_secret_numbers), jabber_password)
    epochta_password, smtp_password = new_secret("epochta"), new_secret("smtp")
    epochta = EpochtaServer([Account("hoster", epochta_password)]).start()
    smsc_password = new_secret("smsc")
    smsc = SmscServer("hoster", smsc_password).start()
    smtp = SMTPLogin("gw", smtp_password)
    max_token = new_secret("max")
    bot = MaxServer(max_token).start()
    yield {
        "gate/gwepochta": ({"login": "hoster", "password": epochta_password, "sender": "BILLmgr", "url": epochta.url,
                            "timeout": "5"}, ["password"]),
        "gate/gwhttpsms": ({"preset": "smsc", "login": "hoster", "password": smsc_password, "url": smsc.origin,
                            "timeout": "5"}, ["password"]),
        "gate/gwjabber": (prosody.settings(jid, jabber_password), ["password"]),
        "gate/gwmax": ({"token": max_token, "url": bot.origin, "timeout": "5"}, ["token"]),
        "gate/gwmail": ({"email": "gw@mail.example", "smtp_host": "127.0.0.1", "smtp_port": str(smtp.port),
                         "smtp_security": "none", "smtp_login": "gw", "smtp_password": smtp_password,
                         "in_protocol": "none", "timeout": "5"}, ["smtp_password"]),
    }
    smtp.close()
    epochta.stop()
    smsc.stop()
    bot.stop()


def check_connection_form(settings, secret_names, where):
    """A check_connection form with the real settings ``where`` it says (the root of the form, ``<xmlparams>``,
    or ``<gateway><xmlparams>``), and decoy secrets everywhere else a secret can sit: the root, the gateway row,
    a nested element, an attribute, a field named by its ``name`` attribute. Returns (form, every secret in it)."""
    decoys = {place: new_secret(place) for place in ("root", "row", "nested", "attribute", "named")}
    secrets = list(decoys.values()) + [settings[name] for name in secret_names]
    as_text = xmlio.document(*[xmlio.element(k, v) for k, v in settings.items()])
    form = [xmlio.element("metadata", attrs={"api_key": decoys["attribute"]}, children=[
        xmlio.element("form", children=[xmlio.element("field", attrs={"name": k}) for k in settings]),
        xmlio.element("extra", children=[xmlio.element("deep", children=[
            xmlio.element("private_key", decoys["nested"])])]),
        xmlio.element("param", decoys["named"], {"name": "secret"})])]
    row = [xmlio.element("session_token", decoys["row"])]   # not a setting's name: gwmax's is "token"
    if where == "root":
        form += [xmlio.element(k, v) for k, v in settings.items()]
    else:
        # A decoy in every secret field at the root: the entered values in xmlparams take precedence.
        form += [xmlio.element(name, decoys["root"]) for name in secret_names]
    if where == "xmlparams":
        form.append(xmlio.element("xmlparams", as_text))
    if where == "gateway":
        row.append(xmlio.element("xmlparams", as_text))
    return xmlio.document(*(form + [xmlio.element("gateway", children=row)])), secrets


GATEWAYS = [m for m in sandboxlib.project_modules() if m.startswith("gate/")]


def test_every_gateway_has_settings_for_the_check_below(reachable):
    assert sorted(reachable) == sorted(GATEWAYS)


@pytest.mark.parametrize("module", GATEWAYS)
@pytest.mark.parametrize("where", ["root", "xmlparams", "gateway", "refused"])
def test_check_connection_echoes_no_secret(sandbox, reachable, module, where):
    settings, secret_names = reachable[module]
    if where == "refused":
        settings = dict(settings, **{name: new_secret("wrong") for name in secret_names})
    sandbox.set_log_level(9)
    form, secrets = check_connection_form(settings, secret_names, "xmlparams" if where == "refused" else where)
    done = sandbox.run(module, "--command", "check_connection", input=form, timeout=60)
    if where == "refused":
        assert done.returncode == errors.EXIT_FAILURE, done.stdout
        assert "refused" in xmlio.text(error_of(done), "msg")
    else:
        assert done.returncode == 0, (done.stdout, sandbox.logs().get(module[5:] + ".log"))
        answer = xmlio.parse(done.stdout)
        assert answer.find("metadata/form/field") is not None and answer.find(".//xmlparams") is None
    places = [("stdout", done.stdout), ("stderr", done.stderr)]
    places += [(name, text.encode("utf-8")) for name, text in sandbox.logs().items()]
    assert "DEBUG input:" in sandbox.logs()[module[5:] + ".log"], "the debug lines must be written"
    for secret in secrets:
        for form_of_it in {secret, xmlio.escape(secret), xmlio.escape_attr(secret)}:
            for name, content in places:
                assert form_of_it.encode("utf-8") not in content, (name, secret)


# --- start-up cost of --command features --------------------------------------------------------------------

HEAVY = ("lxml", "ssl", "http.client", "smtplib", "email", "urllib.request", "xml.etree.ElementTree", "re",
         "logging", "subprocess", "json", "socket", "hashlib", "base64", "datetime")
# The library's modules a project module's --command features may load: the command-line protocol, the base
# classes, what a gateway's features name (attachments), and the module that holds the class the script runs.
# Any other one (gatewaycall, a protocol client, doctor, the queue) belongs to the commands that need it.
LIGHT = {"mgrnotify", "mgrnotify.errors", "mgrnotify.xmlio", "mgrnotify.redact", "mgrnotify.config", "mgrnotify.log",
         "mgrnotify.runner", "mgrnotify.settings", "mgrnotify.gateway", "mgrnotify.smsgateway", "mgrnotify.notify",
         "mgrnotify.attachments"}

WRAPPER = r"""
import runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit:
    pass
sys.stderr.write("MODULES " + " ".join(sorted(sys.modules)) + "\n")
"""


def loaded_modules(command, env, cwd):
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, timeout=60)
    line = [l for l in done.stderr.decode().splitlines() if l.startswith("MODULES ")][-1]
    return set(line.split()[1:])


@pytest.mark.parametrize("module", repo_modules())
def test_features_loads_nothing_heavy(sandbox, module, tmp_path):
    project = module in sandboxlib.project_modules()   # the probes import what their tests need
    own = load_class(os.path.join(REPO, module)).__module__
    module = in_sandbox(sandbox, module)
    python = sandboxlib.MODULE_PYTHON or "/usr/bin/python3"
    env = sandbox.env()
    empty = tmp_path / "empty"
    empty.write_text("")
    baseline = loaded_modules([python, "-c", WRAPPER, str(empty)], env, sandbox.root)   # what runpy itself loads
    loaded = loaded_modules([python, "-c", WRAPPER, sandbox.path(module), "--command", "features"], env, sandbox.root)
    heavy = sorted(m for m in loaded - baseline if m.split(".")[0] in HEAVY or m in HEAVY
                   or project and m.startswith("mgrnotify") and m not in LIGHT and m != own)
    assert heavy == [], "%s --command features imports %s" % (module, ", ".join(heavy))
