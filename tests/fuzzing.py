"""Generated bad input for every module (issue 8): the modules found, an in-process runner, the network
guard, the checks every run must pass, and the hypothesis strategies that make the inputs.

Most cases run a module's class in this process (``InProcess``): the script is loaded without running
its ``main``, ``Cls.run(argv)`` is called with stdin, stdout and stderr replaced and file descriptor 0
fed through a real pipe (``outgoing_batch`` reads it with ``os.read``). That is a few milliseconds a
case instead of a Python start-up, so thousands of cases fit in CI. ``NetworkGuard`` makes sure a
mutated host cannot reach past loopback from here; subprocess runs go into a network namespace of
their own instead (``netns_prefix``).
"""

import collections
import copy
import errno
import importlib.machinery
import importlib.util
import io
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

from hypothesis import strategies as st

import sandbox as sandboxlib
from mgrnotify import errors, redact, xmlio
from mgrnotify.redact import is_secret

REPO = sandboxlib.REPO
COUNTS_FILE = os.path.join(REPO, "build", "fuzz-counts.json")

# Long local runs: MGRNOTIFY_FUZZ_SCALE=10 runs ten times the cases (it only raises them: CI's counts are
# the floor); MGRNOTIFY_FUZZ_RANDOM=1 draws new inputs each run instead of CI's fixed sequence.
SCALE = max(1.0, float(os.environ.get("MGRNOTIFY_FUZZ_SCALE") or 1))
RANDOM = os.environ.get("MGRNOTIFY_FUZZ_RANDOM", "") not in ("", "0")

DOCUMENTED_STATUSES = (errors.EXIT_OK, errors.EXIT_FAILURE, errors.EXIT_USAGE, errors.EXIT_BAD_INPUT)
# The error type each non-zero status must carry (status 1 carries any other type).
TYPE_OF_STATUS = {errors.EXIT_USAGE: "usage", errors.EXIT_BAD_INPUT: "xml"}
# Gateway commands that can only succeed by reaching a server: every server here is a closed port.
NEEDS_A_SERVER = ("outgoing", "ingoing", "check_connection")
CASE_SECONDS = 60   # an in-process case taking longer than this is a hang (each network step has 1 s)
INTERNAL_MARKS = (b"failed with an internal error", b"Internal error while")
HUMAN_COMMANDS = ("doctor", "preview")   # their answer is text for a person, exit 0 or 1

# The password of every valid request the fuzzer starts from; it must not come back on stdout.
SECRET = "fuzz-Pa55-w0rd-секрет"


def scaled(count):
    """``count`` times MGRNOTIFY_FUZZ_SCALE."""
    return int(count * SCALE)


# --- the modules ----------------------------------------------------------------------------------------

class ModuleUnderTest:
    """One module of the repository: its path, class, commands and (for a gateway) its settings' names."""

    def __init__(self, path):
        self.path = path                      # e.g. "gate/gwepochta"
        self.name = os.path.basename(path)
        self.is_gateway = path.startswith("gate/")
        self.cls = load_class(os.path.join(REPO, path))
        # doctor and preview answer a person at a shell in plain text, not BILLmanager: tests/test_doctor.py and
        # tests/test_preview.py cover them, and a random command line that reaches one is checked by check().
        self.commands = [c for c in self.cls(None, None).commands() if c not in HUMAN_COMMANDS]
        self.settings, self.form = module_form(self.name)

    def __repr__(self):
        return self.path


def discover():
    """Every module under gate/ and notify/ of the repository, as paths like ``gate/gwepochta``."""
    return sandboxlib.project_modules()


def load_class(script):
    """The module class a script runs, loaded without running its ``main``: the one it declares, or imports from
    the library (a short script), i.e. the module class in its namespace that no other one there derives from."""
    from mgrnotify.runner import Module
    name = "fuzzed_" + os.path.basename(script)
    loader = importlib.machinery.SourceFileLoader(name, script)
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    found = [obj for obj in vars(module).values() if isinstance(obj, type) and issubclass(obj, Module)]
    classes = [cls for cls in found if not any(other is not cls and issubclass(other, cls) for other in found)]
    assert len(classes) == 1, "%s must run exactly one module class, not %s" % (script, classes)
    return classes[0]


def module_form(name):
    """(setting names, ``<form>`` text) of the module's etc/xml/billmgr_mod_NAME.xml; ([], '') if none."""
    path = os.path.join(REPO, "etc", "xml", "billmgr_mod_%s.xml" % name)
    if not os.path.exists(path):
        return [], ""
    form = ET.parse(path).getroot().find("metadata/form")
    if form is None:
        return [], ""
    return [f.get("name") for f in form.iter("field")], ET.tostring(form, encoding="unicode")


# --- the network ----------------------------------------------------------------------------------------

def closed_port():
    """A loopback port bound but never listening, kept for the session: connecting to it is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def _loopback(host):
    if host in (None, "", "localhost", "localhost.", b"localhost"):
        return True
    try:
        return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkGuard:
    """While active, this process reaches loopback only: name lookups and connections elsewhere fail as
    an unreachable network would, so a mutated host or url cannot reach out (or wait for DNS)."""

    LOOKUPS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr")

    def __init__(self):
        self._saved = []

    def __enter__(self):
        real_getaddrinfo = socket.getaddrinfo

        def refuse(host, port=None):
            # The real lookup of a numeric address only: it raises what a real one raises for a host or port
            # it cannot take (UnicodeError for "a..b", gaierror for any name), never asks DNS.
            real_getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
            raise OSError(errno.ENETUNREACH, "blocked by the fuzz tests: %r is not loopback" % (host,))

        def lookup(real, with_port):
            def guarded(host, *args, **kwargs):
                if not _loopback(host):
                    refuse(host, args[0] if with_port and args else None)
                return real(host, *args, **kwargs)
            return guarded

        def connect(real):
            def guarded(sock, address):
                if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
                    if isinstance(address[1], int) and not 0 <= address[1] <= 65535:
                        raise OverflowError("connect(): port must be 0-65535.")   # as the real one says
                    refuse(*address[:2])
                return real(sock, address)
            return guarded

        replacements = [(socket, name, lookup(getattr(socket, name), name == "getaddrinfo")) for name in self.LOOKUPS]
        replacements += [(socket.socket, name, connect(getattr(socket.socket, name)))
                         for name in ("connect", "connect_ex")]
        for owner, name, value in replacements:
            self._saved.append((owner, name, owner.__dict__.get(name)))
            setattr(owner, name, value)
        return self

    def __exit__(self, *exc):
        for owner, name, value in reversed(self._saved):
            if value is None:   # inherited from _socket.socket: removing ours uncovers it
                delattr(owner, name)
            else:
                setattr(owner, name, value)
        self._saved = []


def netns_prefix():
    """The command prefix that runs a process in a network namespace of its own with only loopback up
    (``unshare -n``, as root; ``unshare -rn`` otherwise), or None where namespaces are not allowed."""
    inner = ["sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "netns"]
    for unshare in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            done = subprocess.run(unshare + inner + ["sh", "-c", "! ip route get 192.0.2.1 >/dev/null 2>&1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return unshare + inner
    return None


# --- running a module in this process -------------------------------------------------------------------

class Hang(BaseException):
    """A case ran past CASE_SECONDS (a BaseException, so the runner's own handler cannot swallow it)."""


class Outcome:
    """What one run of a module gave: exit status, stdout and stderr bytes, and its new log lines."""

    def __init__(self, status, stdout, stderr, log=""):
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        self.log = log


def set_debug(sandbox, module, on):
    """Make ``module`` log at level 9 (documents in and out, every exchange), or at the default level."""
    path = sandbox.path("etc", "debug.conf")
    if on:
        with open(path, "w") as f:
            f.write("%s 9\n" % module.name)
    elif os.path.exists(path):
        os.unlink(path)


class InProcess:
    """Runs a module's class here as the script would run, rooted in a sandbox."""

    def __init__(self, sandbox, module):
        self.sandbox = sandbox
        self.module = module
        self.log_path = sandbox.path("var", module.name + ".log")

    def __call__(self, argv, stdin=b"", debug=False):
        """Run ``argv`` with ``stdin`` (bytes); the Outcome."""
        set_debug(self.sandbox, self.module, debug)
        log_start = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        remembered = set(redact._remembered)   # a real run starts with none; keep later lookups fast
        saved = dict(argv0=sys.argv[0], stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr,
                     root=os.environ.get("MGR5_ROOT"), ack=os.environ.pop("MGRNOTIFY_BATCH_ACK_FD", None))
        out, err = _Capture(), _Capture()
        fd0 = os.dup(0)
        read_end, write_end = os.pipe()
        os.dup2(read_end, 0)
        os.close(read_end)
        feeder = threading.Thread(target=_feed, args=(write_end, stdin), daemon=True)
        feeder.start()
        previous_alarm = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
        try:
            sys.argv[0] = self.sandbox.path(self.module.path)
            os.environ["MGR5_ROOT"] = self.sandbox.root
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
            sys.stdout = io.TextIOWrapper(out, encoding="utf-8")
            sys.stderr = io.TextIOWrapper(err, encoding="utf-8")
            try:
                status = self.module.cls.run(list(argv))
            except Hang:   # out of the module now: an ordinary failure, which hypothesis shrinks and shows
                raise AssertionError("%s %s did not end within %d s: a hang" % (self.module.path, argv, CASE_SECONDS))
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_alarm)
            sys.argv[0], sys.stdin, sys.stdout, sys.stderr = (saved["argv0"], saved["stdin"], saved["stdout"],
                                                              saved["stderr"])
            if saved["root"] is None:
                os.environ.pop("MGR5_ROOT", None)
            else:
                os.environ["MGR5_ROOT"] = saved["root"]
            if saved["ack"] is not None:
                os.environ["MGRNOTIFY_BATCH_ACK_FD"] = saved["ack"]
            os.dup2(fd0, 0)   # the pipe's last reader goes: a feeder still writing gets EPIPE and ends
            os.close(fd0)
            feeder.join()
            redact._remembered.clear()
            redact._remembered.update(remembered)
        log = ""
        if status == errors.EXIT_INTERNAL:   # only then can the log hold the traceback the defect left
            with open(self.log_path, "rb") as f:
                f.seek(log_start)
                log = f.read().decode("utf-8", "replace")
        return Outcome(status, out.getvalue(), err.getvalue(), log)


class _Capture(io.BytesIO):
    """A byte buffer that keeps its content when the text stream around it is closed or collected."""

    def close(self):
        pass


def _feed(fd, data):
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:65536]):]
    except OSError:
        pass
    finally:
        os.close(fd)


def _alarm(signum, frame):
    raise Hang("the case ran longer than %d seconds" % CASE_SECONDS)


# --- what every run must give ---------------------------------------------------------------------------

def command_of(argv):
    """The ``--command`` a command line names (as the runner parses it), or None."""
    from mgrnotify.runner import parse_arguments
    try:
        return parse_arguments(argv).get("command")
    except errors.UsageError:
        return None


def refused_option(module, argv):
    """The first option of a well-formed command line that its command does not take (the module's
    ``COMMAND_OPTIONS``), or None."""
    from mgrnotify.runner import parse_arguments
    try:
        options = parse_arguments(argv)
    except errors.UsageError:
        return None
    takes = module.cls.COMMAND_OPTIONS.get(options["command"], {})
    return next((name for name in sorted(options) if name not in takes and name != "command"), None)


def check(module, argv, outcome, stdin=b""):
    """Assert what every run must give: a documented status, one well-formed document that agrees with it,
    no traceback anywhere, no defect, no password; an option the command does not take refused as a bad
    command line (status 2); and no claim of success a closed port cannot give."""
    where = "%s %s: status %s\nstdout: %r\nstderr: %r" % (module.path, argv, outcome.status,
                                                          outcome.stdout[:3000], outcome.stderr[:2000])
    assert outcome.status != errors.EXIT_INTERNAL, "a defect (status 70); its log:\n%s\n%s" % (outcome.log[-6000:],
                                                                                                where)
    assert outcome.status in DOCUMENTED_STATUSES, where
    if refused_option(module, argv) is not None:
        assert outcome.status == errors.EXIT_USAGE, "an option the command does not take was not refused; " + where
    for stream in (outcome.stdout, outcome.stderr):
        assert b"Traceback" not in stream, where
    command = command_of(argv)
    if command in HUMAN_COMMANDS and outcome.status in (errors.EXIT_OK, errors.EXIT_FAILURE):
        outcome.stdout.decode("utf-8")   # text for a person, whole UTF-8
        assert SECRET.encode("utf-8") not in outcome.stdout + outcome.stderr, "the password came back; " + where
        return None
    root = xmlio.parse(outcome.stdout, "the answer")   # raises on anything but one well-formed document
    if command == "formtune" and outcome.status == errors.EXIT_OK:
        # formtune answers the form it was given, whatever its root and content (see _formtune_without_secret)
        assert root.tag == xmlio.parse(stdin).tag, where
        return root
    assert root.tag == "doc", where
    error = root.find("error")
    if outcome.status == errors.EXIT_OK:
        assert error is None, where
    else:
        assert error is not None and xmlio.text(error, "msg").strip(), where
        expected = TYPE_OF_STATUS.get(outcome.status)
        if expected:
            assert error.get("type") == expected, where
        else:
            assert error.get("type") not in ("usage", "xml", "internal"), where
    for mark in INTERNAL_MARKS:
        assert mark not in outcome.stdout, "a defect reported as a result; " + where
    assert SECRET.encode("utf-8") not in outcome.stdout + outcome.stderr, "the password came back; " + where
    if module.is_gateway and command in NEEDS_A_SERVER:
        assert outcome.status != errors.EXIT_OK, "success claimed with every server down; " + where
    if command == "outgoing_batch" and outcome.status == errors.EXIT_OK:
        for result in root.findall("results/result"):
            assert result.get("id") and result.get("status") == "error" and (result.text or "").strip(), where
    return root


# --- inputs ---------------------------------------------------------------------------------------------

class Request:
    """The valid requests a module takes, built with the sandbox's helpers, aimed at closed loopback ports."""

    USER = {"name": "alice", "realname": "Алиса Fuzz", "email": "alice@localhost", "phone": "+79001234567",
            "jabber": "alice@localhost"}
    PROJECT = {"id": "1", "name": "Хостинг", "email": "billing@localhost"}

    def __init__(self, module, port):
        self.module = module
        self.port = port
        sandboxlib.remember_secret(SECRET)
        self.values = {name: self.value(name) for name in module.settings if name != "gateway_type"}

    def value(self, name):
        """A valid value for a setting, by its name: hosts are loopback, ports closed, timeouts 1 s."""
        port = str(self.port)
        table = {"url": "http://127.0.0.1:%s/api" % port, "server": "127.0.0.1", "port": port, "timeout": "1",
                 "tls": "none", "api": "xml", "verify_tls": "on", "sender": "Billing", "max_parts": "3",
                 "jabber": "gw@localhost", "email": "gw@localhost", "from_name": "Billing", "smtp_host": "127.0.0.1",
                 "smtp_port": port, "smtp_security": "none", "in_host": "127.0.0.1", "in_port": port,
                 "in_protocol": "imap", "in_security": "none", "in_folder": "INBOX", "in_after": "seen",
                 "in_limit": "5", "receive_window": "1", "ticket_format": "#id", "login": "fuzz",
                 "smtp_login": "fuzz", "in_login": "fuzz", "public_key": "fuzz-public", "preset": "smsru",
                 "method": "POST", "content_type": "form"}
        if is_secret(name):
            return SECRET
        return table.get(name, "fuzz")

    def build(self, command, values=None):
        """The valid stdin of ``command``, as text."""
        values = self.values if values is None else values
        if command == "check_connection":
            return sandboxlib.check_connection_request(values, tuple(values) or ("login", "password"))
        if command == "formtune":
            return '<?xml version="1.0" encoding="UTF-8"?>\n<doc>%s</doc>\n' % self.module.form
        if command == "outgoing_batch":
            xmlparams = xmlio.document(*[xmlio.element(k, v) for k, v in values.items()])
            gateway = xmlio.element("gateway", children=[xmlio.element("id", "1"), xmlio.element("xmlparams",
                                                                                                 xmlparams)])
            messages = [xmlio.element("message", attrs={"id": "%d.0" % i, "to": to}, children=[
                xmlio.element("subject", "Тема %d" % i), xmlio.element("body", "Текст <b>%d</b> &" % i)])
                for i, to in enumerate(("alice@localhost", "+79001234567", "bob@localhost"))]
            return xmlio.document(gateway, xmlio.element("messages", children=messages))
        if command == "ingoing":
            return sandboxlib.gateway_request(values, gateway={"id": "2", "gateway_type": "2"})
        return sandboxlib.gateway_request(values, "Счёт №42 готов <b>&amp;</b>", self.USER, self.PROJECT,
                                          gateway={"id": "1", "name": "gw"}, subject="Тема",
                                          jabber="alice@localhost", email="alice@localhost",
                                          phone="+79001234567", max="123456789")


TAGS = ("doc", "gateway", "xmlparams", "message", "messages", "user", "project", "subject", "body", "jabber",
        "email", "phone", "max", "id", "name", "metadata", "form", "field", "results", "result", "error", "msg",
        "password", "login", "notify", "tmpl", "notice_xml", "x", "a-b", "_", "ns:tag", "ÿ")
NASTY_TEXT = ("", " ", "\t\n", "\x00", "\x01\x02\x1f", "\x7f", "\ufffe", "\ud800", "\U0001f600 эмодзи",
              "\u202eRTL\u202c עברית", "&", "&amp;", "&lol;", "&#0;", "&#xD800;", "<", "]]>", "<![CDATA[x]]>",
              "</body><message to='x'>", "'; DROP TABLE gateway; --", "1 OR 1=1", "%s%n%x", "{user.name}",
              "<%= process.exit(1) %>", "\r\nBcc: x@localhost", "../../etc/passwd", "-1", "0", "1",
              "99999999999999999999999", "1e3", "0x10", " 5 ", "on", "off", "maybe", "None", "null",
              "a@", "@localhost", "a@b@c", "user@[::1]", "gw@localhost/resource", "http://[::1", "https://",
              "http://127.0.0.1:0/", "ftp://127.0.0.1/", "http://user:pw@127.0.0.1:1/", "xml", "v3", "imap",
              "pop3", "none", "ssl", "starttls", "direct", "delete", "seen", "#id", "@id")
NASTY_BYTES = (b"\x00", b"\x01", b"\xff", b"\xfe\xff", b"\xef\xbb\xbf", b"\xc3", b"\xed\xa0\x80", b"&", b"<",
               b">", b"]]>", b"<![CDATA[", b"<!-- ", b"<?pi x?>", b"&lol;", b"&#0;", b"&#x110000;",
               b'<!DOCTYPE doc [<!ENTITY a "b">]>', b'<?xml version="1.0" encoding="latin-1"?>',
               b'<?xml version="1.1"?>', b"</doc>", b"<doc>", b"</messages></doc>", b"\r\n", b"\n" * 3)
HUGE = (1000, 70000, 300000)   # past the 64 KiB a pipe and a read hold
ENCODINGS = ("utf-16", "utf-16-be", "utf-32", "latin-1", "cp1251", "koi8-r")


def text_values():
    """Text for an element or a setting: nasty fixed strings, random text, or a huge run of one character."""
    return weighted((4, st.sampled_from(NASTY_TEXT)), (3, st.text(max_size=40)),
                    (1, st.builds(lambda c, n: c * n, st.sampled_from(("A", "я", "&", "<", "\x01", "9")),
                                  st.sampled_from(HUGE))),
                    (1, st.integers(min_value=-2 ** 70, max_value=2 ** 70).map(str)))


def random_bytes():
    """(a) Random bytes."""
    return st.binary(max_size=3000)


@st.composite
def xmlish(draw):
    """(b) XML-looking text: a soup of tags, text, references, CDATA and declarations, mostly malformed."""
    tokens = st.one_of(
        st.sampled_from(TAGS).map(lambda t: "<%s>" % t), st.sampled_from(TAGS).map(lambda t: "</%s>" % t),
        st.sampled_from(TAGS).map(lambda t: "<%s/>" % t), st.sampled_from(TAGS).map(lambda t: '<%s a="1">' % t),
        st.sampled_from(NASTY_TEXT), st.text(max_size=12),
        st.sampled_from([b.decode("latin-1") for b in NASTY_BYTES]))
    text = "".join(draw(st.lists(tokens, max_size=40)))
    return text.encode(draw(st.sampled_from(("utf-8",) + ENCODINGS)), "replace") \
        if draw(st.booleans()) else text.encode("utf-8", "surrogatepass")


@st.composite
def random_tree(draw):
    """(b) A well-formed document of random elements from the requests' vocabulary."""
    def build(depth):
        tag = draw(st.sampled_from(TAGS[:-2]))
        element = ET.Element(tag.replace(":", "_"))
        if draw(st.booleans()):
            element.text = draw(st.text(max_size=20))
        if depth < 4:
            for _ in range(draw(st.integers(0, 3))):
                element.append(build(depth + 1))
        return element
    root = build(0)
    root.tag = "doc"
    return xmlio.serialize(_clean_tree(root)).encode("utf-8")


def _clean_tree(root):
    for node in root.iter():
        if node.text:
            node.text = xmlio.clean(node.text)
    return root


MUTATIONS = ("drop", "duplicate", "text", "setting", "rename", "attribute", "child", "move")
BYTE_MUTATIONS = ("truncate", "insert", "replace", "encode", "nothing")


@st.composite
def mutated_request(draw, request, command):
    """(c) A valid request of ``command``, mutated: its elements and settings first, then its bytes."""
    values = dict(request.values)
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(sorted(values) + ["url", "port", "timeout", "unknown_setting"]))
        if draw(st.integers(0, 5)) == 0:
            values.pop(name, None)
        elif not is_secret(name):
            values[name] = draw(text_values())
        else:
            values[name] = draw(st.sampled_from(("", " ", SECRET + " ", "\x00" + SECRET)))
    root = ET.fromstring(request.build(command, values).encode("utf-8"))
    for _ in range(draw(st.integers(0, 5))):
        _mutate_tree(draw, root, draw(st.sampled_from(MUTATIONS)))
    data = ET.tostring(root, encoding="unicode")
    if draw(st.booleans()):
        data = '<?xml version="1.0" encoding="UTF-8"?>\n' + data
    data = data.encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 3))):
        data = _mutate_bytes(draw, data, draw(st.sampled_from(BYTE_MUTATIONS)))
    return data


def _mutate_tree(draw, root, kind):
    nodes = list(root.iter())
    node = nodes[draw(st.integers(0, len(nodes) - 1))]
    parents = {child: parent for parent in root.iter() for child in parent}
    if kind in ("drop", "duplicate", "move") and node is root:
        return
    if kind == "drop":
        parents[node].remove(node)
    elif kind == "duplicate":
        parents[node].append(copy.deepcopy(node))
    elif kind == "text":
        node.text = draw(text_values())
    elif kind == "setting" and node.tag == "xmlparams":
        node.text = draw(st.one_of(text_values(), xmlish().map(lambda b: b.decode("utf-8", "replace"))))
    elif kind == "rename" and not is_secret(node.tag) and node.tag != "xmlparams":
        node.tag = draw(st.sampled_from(TAGS[:-2])).replace(":", "_")
    elif kind == "attribute":
        node.set(draw(st.sampled_from(("id", "to", "name", "status", "type", "x"))), draw(text_values()))
    elif kind == "child":
        child = ET.SubElement(node, draw(st.sampled_from(TAGS[:-2])).replace(":", "_"))
        child.text = draw(text_values())
    elif kind == "move":
        target = nodes[draw(st.integers(0, len(nodes) - 1))]
        if target not in list(node.iter()):   # not into itself
            parents[node].remove(node)
            target.append(node)


def _mutate_bytes(draw, data, kind):
    position = draw(st.integers(0, len(data)))
    if kind == "truncate":
        return data[:position]
    if kind == "insert":
        return data[:position] + draw(st.one_of(st.sampled_from(NASTY_BYTES), st.binary(min_size=1, max_size=8))) \
            + data[position:]
    if kind == "replace":
        end = min(len(data), position + draw(st.integers(1, 16)))
        return data[:position] + draw(st.binary(max_size=8)) + data[end:]
    if kind == "encode":
        encoding = draw(st.sampled_from(ENCODINGS))
        text = data.decode("utf-8", "replace")
        if draw(st.booleans()):
            text = re.sub(r'encoding="[^"]*"', 'encoding="%s"' % encoding, text, count=1)
        return text.encode(encoding, "replace")
    return data


COMMAND_WORDS = ("--command", "--gate", "--", "-c", "--command=", "--gate=", "--=x", "---", "--command=features",
                 "--connect", "--connect=1", "--task", "--task=1", "--gate=all", "--verbose", "--GATE", "--g",
                 "features", "process", "getmessage", "outgoing", "outgoing_batch", "ingoing", "formtune",
                 "check_connection", "__init__", "run", "main", "dispatch", "read_input", "command_features",
                 "all", "1", "0", "-1", "1; rm -rf /", "١٢", "", " ", "\x00", "\n")


@st.composite
def command_line(draw, module):
    """(d) A random argument list: unknown options, missing values, random commands and gates."""
    shaped = draw(st.integers(0, 2))
    if shaped == 0:
        return draw(st.lists(st.one_of(st.sampled_from(COMMAND_WORDS), st.text(max_size=10)), max_size=6))
    command = draw(st.one_of(st.sampled_from(module.commands), st.sampled_from(COMMAND_WORDS), st.text(max_size=12)))
    argv = ["--command", command] if draw(st.booleans()) else ["--command=" + command]
    if shaped == 2 or command == "getmessage":
        gate = draw(st.one_of(st.sampled_from(("all", "1", "2", "999999999999999999999", "-1", "", " 1", "1 ",
                                               "all all", "ALL", "0x1", "1.5")), st.text(max_size=8)))
        argv += draw(st.sampled_from((["--gate", gate], ["--gate=" + gate], ["--gate"], [])))
    if draw(st.integers(0, 3)) == 0:
        argv += draw(st.lists(st.sampled_from(COMMAND_WORDS), max_size=3))
    return argv


def weighted(*choices):
    """One of the strategies, each drawn in proportion to its weight: ``weighted((3, a), (1, b))``."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


def gateway_case(module, request):
    """A case for a gateway: (input kind, argv, stdin bytes, debug log on)."""
    def stdin_of(command):
        own = command if command != "features" else "outgoing"
        any_request = st.sampled_from(module.commands).flatmap(
            lambda c: mutated_request(request, c if c != "features" else "outgoing"))
        return weighted((1, st.tuples(st.just("bytes"), random_bytes())),
                        (1, st.tuples(st.just("xmlish"), st.one_of(xmlish(), random_tree()))),
                        (3, st.tuples(st.just("mutated"), mutated_request(request, own))),
                        (1, st.tuples(st.just("mutated"), any_request))
                        ).map(lambda pair: (pair[0], ["--command", command], pair[1]))
    on_stdin = st.sampled_from(module.commands).flatmap(stdin_of)
    on_args = st.tuples(command_line(module), st.sampled_from(module.commands)).map(
        lambda pair: ("argv", pair[0], request.build(pair[1] if pair[1] != "features" else "outgoing")
                      .encode("utf-8")))
    return st.tuples(weighted((4, on_stdin), (1, on_args)), st.integers(0, 7).map(lambda n: n == 0)).map(
        lambda pair: _formtune_without_secret(pair[0] + (pair[1],)))


def _formtune_without_secret(case):
    """formtune answers the form it is given: a password in it would come back by design, not as a leak."""
    kind, argv, stdin, debug = case
    if command_of(argv) == "formtune":
        stdin = stdin.replace(SECRET.encode("utf-8"), b"not-a-password")
    return kind, argv, stdin, debug


def notify_case(module):
    """A case for a notification type, whose commands read no stdin: mostly command lines, some stdin."""
    stdin = st.one_of(st.just(b""), random_bytes(), xmlish())
    on_args = st.tuples(command_line(module), stdin).map(lambda pair: ("argv", pair[0], pair[1]))
    on_stdin = st.tuples(st.sampled_from(module.commands), stdin).map(
        lambda pair: ("bytes", ["--command", pair[0]] + (["--gate", "all"] if pair[0] == "getmessage" else []),
                      pair[1]))
    return st.tuples(weighted((2, on_args), (1, on_stdin)), st.integers(0, 7).map(lambda n: n == 0)).map(
        lambda pair: pair[0] + (pair[1],))


# --- the queue of a notification type, fuzzed in the database --------------------------------------------

XSLT = ('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"><xsl:output method="text"/>'
        '<xsl:template match="/">Услуга <xsl:value-of select="doc/item/name"/> {user.realname}</xsl:template>'
        '</xsl:stylesheet>')
GOOD_TEMPLATES = ("Счёт готов, {user.realname}", "<%= project.name %>: <%= item.name %>", XSLT)
BAD_TEMPLATES = ("<%= nothing.here %>", "<%= 1 + %>", XSLT.replace("</xsl:stylesheet>", ""),
                 XSLT.replace('select="doc/item/name"', 'select="mgr:nope(1)"'), "", "   \n", "{user.realname}",
                 "<xsl:stylesheet xmlns:xsl='http://www.w3.org/1999/XSL/Transform'>", "<%- include('/etc/passwd') %>")
# gateway_module values: the real gateway, and names that must never run (a path, the stand-in mgrctl).
GATEWAY_MODULES = ("../../bin/sh", "../sbin/mgrctl", "/bin/sh", "gwnone", "", " ", "GWJABBER", "gw jabber",
                   "gwjabber\n", "gwjabber/../gwjabber", "..", "-", "gw;touch x")


class QueueCase:
    """One generated state of the database and notification files for a notification type's ``process``."""

    def __init__(self, gateways, tasks):
        self.gateways = gateways   # dicts: module, notify_module, gateway_type, active, project, xmlparams
        self.tasks = tasks         # dicts: modulename, file ('write', bytes) or ('name', text), priority, errors

    def __repr__(self):
        return "QueueCase(gateways=%r, tasks=%r)" % (self.gateways, self.tasks)


@st.composite
def queue_case(draw, notify, gateway, port, projects):
    """Random gateway rows of ``notify``'s type (its gateway ``gateway`` aimed at a closed port, or names that
    must never run) and random tasks: notification files valid, mutated or garbage, and odd file names."""
    request = Request(gateway, port)
    def settings_text():
        values = dict(request.values)
        for _ in range(draw(st.integers(0, 2))):
            values[draw(st.sampled_from(sorted(values)))] = draw(text_values())
        return _fits_text_column(draw(weighted(
            (4, st.just(xmlio.document(*[xmlio.element(k, v) for k, v in values.items()]))),
            (1, st.one_of(st.just(None), st.just(""), st.sampled_from(NASTY_TEXT))),
            (1, xmlish().map(lambda b: b.decode("utf-8", "replace"))))))

    # Mostly one working outgoing gateway per provider (so messages reach a gateway), then odd rows.
    gateways = [dict(module=gateway.name, notify_module=notify.name, gateway_type=1, active="on", project=project,
                     xmlparams=settings_text()) for project in projects if draw(st.integers(0, 4))]
    for _ in range(draw(st.integers(0, 2))):
        gateways.append(dict(
            module=draw(weighted((1, st.just(gateway.name)), (1, st.sampled_from(GATEWAY_MODULES)))),
            notify_module=draw(weighted((6, st.just(notify.name)), (1, st.sampled_from(("ntsms", "", "NTJABBER"))))),
            gateway_type=draw(st.sampled_from((1, 2, 2, 0, -1, 3))),
            active=draw(st.sampled_from(("on", "on", "ON", "off", "", "yes"))),
            project=draw(st.sampled_from(projects + [None])),
            xmlparams=settings_text()))
    tasks = []
    for _ in range(draw(st.integers(1, 5))):
        contact = draw(weighted((4, st.just("alice@localhost")), (1, st.sampled_from(NASTY_TEXT))))
        user = {"id": "1", "name": "alice", "realname": draw(st.sampled_from(("Алиса", "", "</user>", "\x01"))),
                notify.cls.contact_type: contact}
        notice_xml = draw(weighted(
            (6, st.sampled_from(projects + ["", "x", "-1"]).map(
                lambda p: "<doc><project><id>%s</id><name>Хостинг</name></project><subject>Тема</subject>"
                          "<item><name>vds-1</name></item></doc>" % p)),
            (1, st.sampled_from(NASTY_TEXT)), (1, xmlish().map(lambda b: b.decode("utf-8", "replace")))))
        template = draw(weighted((4, st.sampled_from(GOOD_TEMPLATES)), (2, st.sampled_from(BAD_TEMPLATES)),
                                 (1, text_values())))
        valid = sandboxlib.notification_file(template, notice_xml, user, draw(st.sampled_from(("", "Тема"))))
        content = draw(weighted((4, st.just(valid.encode("utf-8"))),
                                (3, _mutated_document(valid)),
                                (1, st.one_of(random_bytes(), xmlish()))))
        where = draw(weighted((8, st.just(("write", content))),
                              (1, st.sampled_from((("name", "var/notify/missing"), ("name", "var"),
                                                   ("name", "etc/billmgr.conf"), ("name", ""),
                                                   ("name", "var/notify/../../etc/billmgr.conf"))))))
        tasks.append(dict(modulename=draw(weighted((10, st.just(notify.name)), (1, st.sampled_from(("ntsms", ""))))),
                          file=where, priority=draw(st.integers(-2 ** 31, 2 ** 31 - 1)),
                          errors=draw(st.sampled_from((0,) * 8 + (9, 10, 50)))))
    return QueueCase(gateways, tasks)


def _fits_text_column(text):
    """``text`` cut to the 64 KiB a TEXT column holds."""
    return text if text is None else text.encode("utf-8", "replace")[:60000].decode("utf-8", "ignore")


@st.composite
def _mutated_document(draw, text):
    root = ET.fromstring(text.encode("utf-8"))
    for _ in range(draw(st.integers(1, 4))):
        _mutate_tree(draw, root, draw(st.sampled_from(MUTATIONS)))
    data = ET.tostring(root, encoding="unicode").encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 2))):
        data = _mutate_bytes(draw, data, draw(st.sampled_from(BYTE_MUTATIONS)))
    return data


class QueueBench:
    """Puts a QueueCase into a sandbox's database and files, and checks what ``process`` left of it."""

    MAX_ERRORS = 10   # mgrnotify.queue.MAX_ERRORS: a task with this many failures is left for staff

    def __init__(self, sandbox, notify):
        self.sandbox = sandbox
        self.notify = notify
        self.folder = sandbox.path("var", "notify", "fuzz")
        os.makedirs(self.folder, exist_ok=True)
        self.log_path = sandbox.path("var", notify.name + ".log")
        self.protected = {p: _read(sandbox.path(p)) for p in ("etc/billmgr.conf",)}
        self.tasks_loaded = self.gateways_loaded = 0
        self.outcomes = collections.Counter()   # what became of the tasks, in words, for the counts file

    def load(self, case):
        """Empty the tables and the folder, then write the case; the task rows as inserted."""
        for name in os.listdir(self.folder):
            os.unlink(os.path.join(self.folder, name))
        statements = [("DELETE FROM notifytask", ()), ("DELETE FROM gateway", ())]
        for g in case.gateways:
            statements.append(("INSERT INTO gateway (name, gateway_module, notify_module, gateway_type, active, "
                               "project, xmlparams) VALUES ('fuzz', ?, ?, ?, ?, ?, ?)",
                               (g["module"], g["notify_module"], g["gateway_type"], g["active"], g["project"],
                                g["xmlparams"])))
        for number, task in enumerate(case.tasks):
            kind, value = task["file"]
            if kind == "write":
                value = os.path.relpath(os.path.join(self.folder, "n%d" % number), self.sandbox.root)
                with open(self.sandbox.path(value), "wb") as f:
                    f.write(task["file"][1])
            statements.append(("INSERT INTO notifytask (modulename, filename, priority, error_count, err_info)"
                               " VALUES (?, ?, ?, ?, 'before')",
                               (task["modulename"], value, task["priority"], task["errors"])))
        statements.append(("SELECT id, modulename, filename, error_count, err_info FROM notifytask ORDER BY id", ()))
        statements.append(("SELECT id FROM gateway ORDER BY id", ()))
        results = self.sandbox.db.batch(statements, transaction=True)
        self.tasks_loaded += len(case.tasks)
        self.gateways_loaded += len(case.gateways)
        self.log_start = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.files = {row["id"]: _read(self.sandbox.path(row["filename"])) for row in results[0]}
        return results[0], [row["id"] for row in results[1]]

    def check_process(self, before):
        """Every task of this type ends gone with nothing to send (no gateway can deliver) or queued with a
        readable reason; tasks of other types, or past the error limit, are untouched; no stray file."""
        after = {row["id"]: row for row in self.sandbox.db.query(
            "SELECT id, modulename, filename, error_count, err_info FROM notifytask ORDER BY id")}
        log = self.log_since()
        for row in before:
            now = after.get(row["id"])
            where = "task %s %r\nnow %r\nlog:\n%s" % (row["id"], row, now, log[-4000:])
            if row["modulename"] != self.notify.name or int(row["error_count"]) >= self.MAX_ERRORS:
                assert now == row, "a task process must not take was changed; " + where
                self.outcomes["not taken (other type or past the error limit)"] += 1
                continue
            if now is None:
                assert re.search(r"Task %s: .*nothing to send" % row["id"], log), "gone, but not delivered; " + where
                self.outcomes["done: nothing to send"] += 1
                continue
            assert int(now["error_count"]) == int(row["error_count"]) + 1, where
            reason = now["err_info"] or ""
            assert reason.strip() and reason != "before", "queued without a reason; " + where
            assert "internal error" not in reason.lower() and "Traceback" not in reason, "a defect; " + where
            self.outcomes["queued: " + re.sub(r"\S*\d\S*|'[^']*'", "_", reason)[:70]] += 1
            if self.files[row["id"]] is not None:
                assert os.path.exists(self.sandbox.path(row["filename"])), "the file of a queued task went; " + where
        assert not os.path.exists(self.sandbox.path("var", self.notify.name + ".journal")), "journal left behind"
        for path, content in self.protected.items():
            assert _read(self.sandbox.path(path)) == content, "%s was changed" % path

    def check_nothing_ran(self):
        """No gateway name outside gate/ ran (the stand-in mgrctl records any call) and no ticket moved."""
        assert self.sandbox.mgrctl_calls() == [], self.sandbox.mgrctl_calls()
        assert os.path.exists(self.sandbox.path("etc", "billmgr.conf"))

    def log_since(self):
        """The lines the module logged since the case was loaded."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode("utf-8", "replace")


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


# --- the counts -----------------------------------------------------------------------------------------

def record_counts(module, part, count, seconds, **details):
    """Add one part's case count, its time and ``details`` for ``module`` to build/fuzz-counts.json."""
    os.makedirs(os.path.dirname(COUNTS_FILE), exist_ok=True)
    try:
        with open(COUNTS_FILE, encoding="utf-8") as f:
            counts = json.load(f)
    except (OSError, ValueError):
        counts = {}
    counts.setdefault(module, {})[part] = dict(details, cases=count, seconds=round(seconds, 1))
    with open(COUNTS_FILE, "w", encoding="utf-8") as f:
        json.dump(counts, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")
