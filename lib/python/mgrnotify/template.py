"""Rendering a notification template, XSLT or EJS, against the notice XML.

The type comes from the template's structure [doc]: an XML document whose root is
``xsl:stylesheet`` or ``xsl:transform`` is XSLT, applied by lxml to the notice XML with no file
or network access; anything else is EJS, rendered by node with the notice XML converted to
data by ``xmljson``. Every failure is a ``TemplateError`` with a sentence an admin can act on.

Neither engine runs in the calling process. A ``Renderer`` keeps one helper process per engine for
a queue run: ``xslt_render`` (Python with lxml) and ``ejs_render.js`` (node). It writes each request
with an id on the helper's stdin and reads the answer from a pipe of its own, so nothing a template
prints can pass for an answer; what the helpers print goes to the log. Each render has a deadline,
after which the helper is killed and replaced; helpers die with the process that started them.

EJS templates are JavaScript, so they are kept from BILLmanager's files by the operating system: when the
module runs as root (as BILLmanager runs it), node starts in a network namespace of its own with no way to
gain privileges through exec, loads our runner and the ejs copy shipped beside it, and then becomes the
unprivileged ``EJS_USER`` for good before it reads a template. node drops root itself rather than being
started as that user because the library may sit below folders only root can enter. ``include()`` and the
easy ways to require() are refused inside node too, but that is no boundary: import() is always there.
"""

import os

from . import children
from .errors import TemplateError

XSL_NAMESPACE = "http://www.w3.org/1999/XSL/Transform"
XSL_ROOTS = ("stylesheet", "transform")

RENDER_TIMEOUT = 30   # [ours] seconds per render: a template in an endless loop must not hold the queue's lock
TIMEOUT_ENV = "MGRNOTIFY_TEMPLATE_TIMEOUT"   # overrides RENDER_TIMEOUT (seconds, may be fractional)
ANSWER_FD_ENV = "MGRNOTIFY_ANSWER_FD"   # tells a helper the file descriptor its answers go to
OUTPUT_LOG_BYTES = 2000   # of what a helper prints during one render, logged; a chatty template must not flood
OUTPUT_LOG_LINES = 10
OUTPUT_TAIL_BYTES = 300   # of a dying helper's last words, for the sentence (a traceback's last line says why)
MAX_ANSWER_BYTES = 64 * 1024 ** 2   # an answer line longer than this is garbage, not a message
LIBRARY_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # lib/python, holding mgrnotify

NODE_NAMES = ("node", "nodejs")   # Debian and Ubuntu before 2018 named the binary nodejs
NODE_DIRS = ("/usr/bin", "/usr/local/bin")   # looked at when node is not on PATH (cron's PATH is short)
NODE_ENV = "MGRNOTIFY_NODE"   # names the node binary to use (one outside PATH, say); then no other is looked for
NODE_HEAP_MB = 512   # [ours] node's --max-old-space-size: a runaway template fails instead of swapping
NODE_ENV_KEPT = ("TZ", "LANG", "LANGUAGE")   # with LC_*, all of the run's environment node gets: dates and locale
EJS_RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ejs_render.js")
# ejs 3.1.10, shipped with the library (the runner loads it by path, never a global one): it runs on node 10.
EJS_PACKAGE = os.path.join(os.path.dirname(EJS_RUNNER), "node_modules", "ejs")
EJS_USER = "nobody"   # [ours] the account EJS templates run as when the module runs as root: every EL and Debian has it
EJS_USER_ENV = "MGRNOTIFY_EJS_USER"   # tells ejs_render.js the "uid:gid" to become once it has loaded
TOOL_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")   # unshare and setpriv (util-linux) when not on PATH
# Statuses in ejs_render.js's answers.
EJS_STATUS_TEMPLATE_FAILED = 1
EJS_STATUS_NO_EJS = 3
EJS_STATUS_NOT_ISOLATED = 4

_XML_PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
_LEADING_JUNK = "\ufeff \t\r\n"   # a BOM or a newline before <?xml ...?> makes the declaration illegal


def is_xslt(template_text):
    """True when the template is an XML document whose root is xsl:stylesheet or xsl:transform."""
    from lxml import etree
    if XSL_NAMESPACE not in template_text:
        return False
    try:
        return _is_stylesheet(_parse(template_text))
    except etree.XMLSyntaxError:
        return False


def render(template_text, notice_xml_text, config, renderer=None):
    """The template (XSLT or EJS) rendered against the notice XML document, as text.

    ``renderer``: the ``Renderer`` to use when many templates are rendered in one run; without one,
    a renderer is started for this template and stopped after it.
    """
    if renderer is not None:
        return renderer.render(template_text, notice_xml_text)
    with Renderer(config) as one_off:
        return one_off.render(template_text, notice_xml_text)


class Renderer:
    """Renders templates for one queue run, each engine in a helper process kept for the whole run.

    ``render()`` gives the text or raises ``TemplateError``; ``close()`` stops the helpers. ``log`` gets
    what the helpers print, as warnings (None drops it). Helpers are started from the calling thread
    and die with it (Linux): a killed run leaves no node or XSLT worker behind.
    """

    def __init__(self, config, log=None):
        self.config = config
        self.log = log
        self._warned_unisolated = False
        self.timeout, timeout_text = _render_timeout(log)
        self._xslt = _Helper("XSLT", _xslt_command, log, self.timeout,
                             "The XSLT template ran past %s s and was stopped; look for endless recursion or loops"
                             % timeout_text)
        self._ejs_timed_out = ("The EJS template ran past %s s and was stopped; look for an endless loop"
                               % timeout_text)
        self._ejs = _Helper("EJS", self._ejs_command, log, self.timeout, self._ejs_timed_out)

    def render(self, template_text, notice_xml_text):
        """The template rendered against the notice XML, as text; ``TemplateError`` saying why it cannot be.

        A template that names the XSLT namespace but is not well-formed XML is a broken XSLT
        rather than EJS [ours], so a stylesheet's source never goes out as the message.
        """
        from .xmljson import to_json
        if parse_stylesheet(template_text) is not None:
            answer = self._xslt.ask({"template": template_text, "notice": notice_xml_text})
            if "text" in answer:
                return answer["text"]
            raise TemplateError(answer.get("error") or "The XSLT renderer gave no reason for the failure",
                                value=answer.get("value"))
        answer = self._ejs.ask({"template": template_text, "data": to_json(parse_notice(notice_xml_text))})
        if "text" in answer:
            return answer["text"]
        error = answer.get("error") or ""
        if answer.get("status") == EJS_STATUS_NO_EJS:
            raise _no_ejs(error)
        if answer.get("status") == EJS_STATUS_NOT_ISOLATED:
            raise TemplateError(error, value=error)
        if answer.get("status") == EJS_STATUS_TEMPLATE_FAILED:
            raise TemplateError(_ejs_failure(error), value=error)
        raise TemplateError("The EJS renderer refused the request: %s" % (error or "no message"), value=error)

    def _ejs_command(self):
        """node on our EJS runner, in "/" with none of the run's environment; as root, isolated (module docstring)."""
        argv = [require_node(), "--max-old-space-size=%d" % NODE_HEAP_MB, EJS_RUNNER]
        env = _node_environment()
        if os.geteuid() == 0:
            argv = _isolation_argv() + argv
            env[EJS_USER_ENV] = "%d:%d" % _ejs_user()
        elif not self._warned_unisolated:
            self._warned_unisolated = True
            if self.log is not None:
                self.log.warning("EJS templates run without OS isolation (own network namespace, user %s) because "
                                 "this module does not run as root: a template can read what this user can read",
                                 EJS_USER)
        return argv, env, "/"

    def close(self):
        """Stop the helper processes; a later ``render()`` starts new ones."""
        self._xslt.stop()
        self._ejs.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _render_timeout(log):
    """(seconds, as written for sentences) of one render's deadline: $MGRNOTIFY_TEMPLATE_TIMEOUT or the default."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if text:
        try:
            seconds = float(text)
        except ValueError:
            seconds = 0
        if 0 < seconds < float("inf"):
            return seconds, text
        if log is not None:
            log.warning("%s=%r is not a positive number of seconds; templates get %d s", TIMEOUT_ENV, text,
                        RENDER_TIMEOUT)
    return RENDER_TIMEOUT, str(RENDER_TIMEOUT)


# ---- helper processes ----------------------------------------------------------------------------

class _Helper:
    """One helper process: JSON requests on its stdin, JSON answers on a pipe of their own, its output logged.

    ``command()`` gives (argv, env, cwd) to start it. A helper that misses the deadline, dies or writes
    garbage on the answer pipe is stopped; the next ``ask()`` starts a new one.
    """

    def __init__(self, name, command, log, timeout, timeout_sentence):
        self.name = name
        self.command = command
        self.log = log
        self.timeout = timeout
        self.timeout_sentence = timeout_sentence
        self.process = None
        self.answers = None   # the read end of the answer pipe
        self.lifeline = None   # the write end of the lifeline pipe (children.dies_with_run)
        self.nonce = ""
        self.count = 0
        self.output = bytearray()   # what the helper printed during this render, up to OUTPUT_LOG_BYTES
        self.output_total = 0
        self.output_tail = b""

    def _start(self):
        import subprocess
        argv, env, cwd = self.command()
        answers, child_end = os.pipe()
        lifeline, lifeline_end = os.pipe()
        env[ANSWER_FD_ENV] = str(child_end)
        try:
            # stderr joins stdout: one pipe to read, in one order, and neither can fill up unread.
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                            pass_fds=(child_end, lifeline_end),
                                            preexec_fn=children.dies_with_run(lifeline_end))
        except OSError as e:
            os.close(answers)
            os.close(lifeline)
            raise TemplateError("The %s renderer (%s) could not be started: %s"
                                % (self.name, argv[0], e.strerror or e))
        finally:
            os.close(child_end)
            os.close(lifeline_end)
        self.answers, self.lifeline = answers, lifeline
        os.set_blocking(self.process.stdin.fileno(), False)   # a request is written within the deadline too
        # Ids no template can guess, so nothing it writes can pass for the answer to a request.
        self.nonce = os.urandom(8).hex()
        self.count = 0
        if self.log is not None:
            self.log.debug("Started the %s renderer (pid %d)", self.name, self.process.pid)

    def ask(self, request):
        """The helper's answer (a dict) to ``request`` (a dict, given an id here); TemplateError without one."""
        import json
        import time
        deadline = time.monotonic() + self.timeout
        if self.process is not None and self.process.poll() is not None:
            if self.log is not None:
                self.log.warning("The %s renderer (pid %d) had stopped (%s); starting a new one",
                                 self.name, self.process.pid, children.exit_status(self.process.returncode))
            self.stop()
        if self.process is None:
            self._start()
        self.count += 1
        request_id = "%s.%d" % (self.nonce, self.count)
        request = dict(request, id=request_id)
        outcome, detail = self._exchange((json.dumps(request) + "\n").encode("utf-8"), request_id, deadline)
        if outcome != "answer":
            self.process.kill()   # already gone when it ended by itself; then this changes nothing
            self.process.wait()
        self._read_output_ready()
        last_words = self._flush_output()
        if outcome == "answer":
            return detail
        status = self.process.returncode
        self.stop()
        if outcome == "timeout":
            raise TemplateError(self.timeout_sentence)
        if outcome == "garbage":
            raise TemplateError("The %s renderer wrote something that is not an answer (%r) and was stopped; "
                                "the next template gets a new one" % (self.name, detail[:200]))
        raise TemplateError("The %s renderer stopped unexpectedly (%s%s)"
                            % (self.name, children.exit_status(status), ": " + last_words if last_words else ""))

    def _exchange(self, data, request_id, deadline):
        """Write the request and wait for its answer: ("answer", dict), ("timeout", None), ("ended", None)
        or ("garbage", text)."""
        import select
        import time
        stdin, stdout = self.process.stdin.fileno(), self.process.stdout.fileno()
        parts, size = [], 0
        watched = [self.answers, stdout]
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", None
            readable, writable, _ = select.select(watched, [stdin] if data else [], [], remaining)
            if writable:
                data = _write_some(stdin, data)
            if stdout in readable and not self._read_output(stdout):
                watched.remove(stdout)   # closed: the answer pipe tells whether the helper is still there
            if self.answers not in readable:
                continue
            chunk = os.read(self.answers, 65536)
            if not chunk:
                return "ended", None
            parts.append(chunk)
            size += len(chunk)
            if b"\n" not in chunk:
                if size > MAX_ANSWER_BYTES:
                    return "garbage", b"".join(parts)[:200].decode("utf-8", "replace")
                continue
            lines = b"".join(parts).split(b"\n")
            parts = [lines.pop()]
            size = len(parts[0])
            for line in lines:
                answer = _decode_answer(line)
                if answer is None:
                    return "garbage", line.decode("utf-8", "replace")
                if answer["id"] == request_id:
                    return "answer", answer
                if self.log is not None:
                    self.log.warning("The %s renderer gave an answer for another request (id %r); it is ignored",
                                     self.name, answer["id"][:100])

    def _read_output(self, fd):
        """Take what the helper printed: the first OUTPUT_LOG_BYTES of this render kept, the rest counted."""
        chunk = os.read(fd, 65536)
        room = OUTPUT_LOG_BYTES - len(self.output)
        if room > 0:
            self.output += chunk[:room]
        self.output_total += len(chunk)
        self.output_tail = (self.output_tail + chunk)[-OUTPUT_TAIL_BYTES:]
        return chunk

    def _read_output_ready(self):
        """Read what the helper printed and is already in the pipe, so it is logged with this render."""
        import select
        fd = self.process.stdout.fileno()
        for _ in range(16):   # bounded: a helper printing from a timer would never let an unbounded loop end
            if not select.select([fd], [], [], 0)[0] or not self._read_output(fd):
                return

    def _flush_output(self):
        """Log this render's output as warnings; its last non-blank line ("" when none)."""
        who = "The %s renderer (pid %d)" % (self.name, self.process.pid)
        _log_printed(self.log, who, bytes(self.output), self.output_total - len(self.output))
        lines = [line for line in self.output_tail.decode("utf-8", "replace").splitlines() if line.strip()]
        self.output, self.output_total, self.output_tail = bytearray(), 0, b""
        return lines[-1].strip() if lines else ""

    def stop(self):
        """Kill the helper and close its pipes."""
        if self.process is None:
            return
        children.stop(self.process)
        os.close(self.answers)
        os.close(self.lifeline)
        self.process, self.answers, self.lifeline = None, None, None


def _write_some(fd, data):
    """``data`` less what a non-blocking write took; b"" when the helper is gone (its answer pipe says how)."""
    try:
        return data[os.write(fd, data):]
    except BlockingIOError:
        return data
    except BrokenPipeError:
        return b""


def _decode_answer(line):
    """The JSON object of an answer line with a string id, or None when it is not one."""
    import json
    try:
        answer = json.loads(line.decode("utf-8"))
    except ValueError:   # also UnicodeDecodeError
        return None
    if isinstance(answer, dict) and isinstance(answer.get("id"), str):
        return answer
    return None


def _log_printed(log, who, data, dropped):
    """Log what a helper printed (``data`` and ``dropped`` bytes more), a warning a line, OUTPUT_LOG_LINES at most."""
    if log is None:
        return
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    for line in lines[:OUTPUT_LOG_LINES]:
        log.warning("%s printed: %s", who, line)
    if dropped or len(lines) > OUTPUT_LOG_LINES:
        log.warning("%s printed %d bytes in all; the rest is not logged", who, len(data) + dropped)


def _xslt_command():
    """The XSLT worker: this Python on ``xslt_render``, the library first on its path (its working folder)."""
    import sys
    return [sys.executable, "-m", "mgrnotify.xslt_render"], dict(os.environ), LIBRARY_DIR


# ---- XML -----------------------------------------------------------------------------------------

def parse_stylesheet(template_text):
    """The template's parsed root when it is XSLT, None when it is EJS.

    TemplateError for a template that names the XSLT namespace but is not well-formed XML.
    """
    from lxml import etree
    if XSL_NAMESPACE not in template_text:
        return None
    try:
        root = _parse(template_text)
    except etree.XMLSyntaxError as e:
        raise TemplateError("The XSLT template is not well-formed XML at line %s: %s"
                            % (e.lineno, _syntax_message(e)), value=str(e))
    return root if _is_stylesheet(root) else None


def parse_notice(notice_xml_text):
    """The notice document's root; a DOCTYPE is refused, as everywhere input is read."""
    from lxml import etree
    if not notice_xml_text or not notice_xml_text.strip():
        raise TemplateError("The notice XML is empty; there is nothing to render the template with")
    try:
        root = _parse(notice_xml_text)
    except etree.XMLSyntaxError as e:
        raise TemplateError("The notice XML is not well-formed at line %s: %s"
                            % (e.lineno, _syntax_message(e)), value=str(e))
    if root.getroottree().docinfo.doctype:
        raise TemplateError("The notice XML was refused: it carries a DOCTYPE, and DTDs and entity "
                            "declarations are not accepted for safety")
    return root


def _parse(text):
    """An lxml root element from XML text, entities not expanded, no DTD or network fetched."""
    from lxml import etree
    # We encode the text ourselves, so its <?xml encoding="..."?> no longer applies.
    parser = etree.XMLParser(encoding="utf-8", **_XML_PARSER_OPTIONS)
    return etree.fromstring(text.lstrip(_LEADING_JUNK).encode("utf-8"), parser)


def _is_stylesheet(root):
    """True when ``root`` is xsl:stylesheet or xsl:transform (whatever the prefix)."""
    from lxml import etree
    if not isinstance(root.tag, str):
        return False
    name = etree.QName(root)
    return name.namespace == XSL_NAMESPACE and name.localname in XSL_ROOTS


def _syntax_message(error):
    """lxml's message for a syntax error, without the ", line N, column M" it appends."""
    import re
    return re.sub(r", line \d+, column \d+$", "", error.msg)


# ---- EJS -----------------------------------------------------------------------------------------

def _find_node():
    """The node binary: $MGRNOTIFY_NODE, else on PATH, else in NODE_DIRS; None when there is none."""
    chosen = os.environ.get(NODE_ENV)
    if chosen:
        return chosen if os.path.isfile(chosen) and os.access(chosen, os.X_OK) else None
    return _find_program(NODE_NAMES, NODE_DIRS)


def _find_program(names, folders):
    """The first of ``names`` on PATH, else in ``folders``; None when there is none."""
    import shutil
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for folder in folders:
        for name in names:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return None


def _node_environment():
    """What node gets of the run's environment: the time zone and locale, no NODE_OPTIONS, no secrets."""
    return {key: value for key, value in os.environ.items() if key in NODE_ENV_KEPT or key.startswith("LC_")}


def require_node():
    """The node binary; TemplateError saying what to install when there is none."""
    node = _find_node()
    if node is None:
        raise TemplateError("node is not installed; EJS templates need it (the nodejs package)")
    return node


def _isolation_argv():
    """unshare and setpriv before node: a network namespace of its own, no privileges gained through exec.

    TemplateError when either is missing: as root, a template is never rendered without them.
    """
    tools = {name: _find_program((name,), TOOL_DIRS) for name in ("unshare", "setpriv")}
    missing = [name for name in ("unshare", "setpriv") if tools[name] is None]
    if missing:
        raise TemplateError("EJS templates are not rendered: as root they run only in isolation, which needs %s "
                            "(util-linux; before Debian 11 and Ubuntu 22.04, setpriv is a package of its own), "
                            "not found on PATH or in %s" % (" and ".join(missing), ", ".join(TOOL_DIRS)))
    return [tools["unshare"], "--net", "--", tools["setpriv"], "--no-new-privs", "--"]


def _ejs_user():
    """(uid, gid) of EJS_USER; TemplateError when this system has no such account."""
    import pwd
    try:
        entry = pwd.getpwnam(EJS_USER)
    except KeyError:
        raise TemplateError("EJS templates are not rendered: as root they run as the user '%s', which this "
                            "system does not have" % EJS_USER)
    return entry.pw_uid, entry.pw_gid


def _no_ejs(detail):
    return TemplateError("The ejs package shipped with mgrnotify is missing from %s; reinstall "
                         "billmanager-plugin-mgrnotify" % EJS_PACKAGE, value=detail)


def _ejs_failure(stderr):
    """A sentence from ejs's message: "path:LINE", the lines around it, a blank line, the error."""
    import re
    paragraphs = stderr.split("\n\n")
    where = re.match(r".*:(\d+)$", paragraphs[0].split("\n", 1)[0])
    if where and len(paragraphs) > 1:
        return "The EJS template failed at line %s: %s" % (where.group(1), paragraphs[1].strip())
    compiling = re.match(r"(.*?)(?: in \S+)? while compiling ejs", paragraphs[0].strip(), re.S)
    if compiling:   # ejs gives no line for these: most often an unclosed <% %> block or brace
        return ("The EJS template does not compile (" + compiling.group(1)
                + "); check that every <% %> block and brace is closed")
    return "The EJS template failed: %s" % (paragraphs[0].strip() or "no message from ejs")
