"""Rendering a notification template, XSLT or EJS, against the notice XML.

The type comes from the template's structure [doc]: an XML document whose root is
``xsl:stylesheet`` or ``xsl:transform`` is XSLT, applied by lxml to the notice XML with no file
or network access; anything else is EJS, rendered by node with the notice XML converted to
data by ``xmljson``. Every failure is a ``TemplateError`` with a sentence an admin can act on.
"""

import os

from .errors import TemplateError

XSL_NAMESPACE = "http://www.w3.org/1999/XSL/Transform"
XSL_ROOTS = ("stylesheet", "transform")
MGR_NAMESPACE = "http://ispsystem.com/xslplugin"   # old templates' extension functions, prefix mgr: [doc]

EJS_TIMEOUT = 30   # seconds; a template in an endless loop must not hold up the queue
NODE_NAMES = ("node", "nodejs")   # Debian and Ubuntu before 2018 named the binary nodejs
NODE_DIRS = ("/usr/bin", "/usr/local/bin")   # looked at when node is not on PATH (cron's PATH is short)
NODE_MODULE_DIRS = ("/usr/share/nodejs", "/usr/lib/node_modules", "/usr/local/lib/node_modules")
EJS_RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ejs_render.js")
EJS_EXIT_TEMPLATE_FAILED = 1   # exit statuses of ejs_render.js
EJS_EXIT_NO_EJS = 3
# The name ejs gives the template, in its messages and to resolve include() relative to the MGR5 root.
EJS_FILENAME = "notification.ejs"

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


def render(template_text, notice_xml_text, config, ejs=None):
    """The template (XSLT or EJS) rendered against the notice XML document, as text.

    ``ejs``: an ``EjsSession`` to render EJS in, when many templates are rendered in one run.
    A template that names the XSLT namespace but is not well-formed XML is a broken XSLT
    rather than EJS [ours], so a stylesheet's source never goes out as the message.
    """
    from lxml import etree
    if XSL_NAMESPACE in template_text:
        try:
            root = _parse(template_text)
        except etree.XMLSyntaxError as e:
            raise TemplateError("The XSLT template is not well-formed XML at line %s: %s"
                                % (e.lineno, _syntax_message(e)), value=str(e))
        if _is_stylesheet(root):
            return _render_xslt(root, notice_xml_text)
    if ejs is not None and ejs.usable():
        return ejs.render(template_text, notice_xml_text)
    return _render_ejs(template_text, notice_xml_text, config)


# ---- XML -----------------------------------------------------------------------------------------

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


def _parse_notice(notice_xml_text):
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


def _syntax_message(error):
    """lxml's message for a syntax error, without the ", line N, column M" it appends."""
    import re
    return re.sub(r", line \d+, column \d+$", "", error.msg)


# ---- XSLT ----------------------------------------------------------------------------------------

def _render_xslt(stylesheet, notice_xml_text):
    """The parsed stylesheet applied to the notice, with the mgr: functions and no file or network access."""
    from lxml import etree
    _refuse_entities(stylesheet)
    _refuse_imports(stylesheet)
    notice = _parse_notice(notice_xml_text)
    # Some compile errors come with lxml's per-thread log, which still holds earlier transforms' errors.
    etree.clear_error_log()
    try:
        transform = etree.XSLT(stylesheet, extensions=_mgr_extensions(),
                               access_control=etree.XSLTAccessControl.DENY_ALL)
    except etree.XSLTParseError as e:
        raise TemplateError("The XSLT template is not a valid stylesheet%s" % _xslt_detail(e), value=str(e))
    try:
        result = transform(notice)
    except etree.XSLTApplyError as e:
        raise TemplateError("The XSLT template failed%s" % _xslt_detail(e), value=str(e))
    return str(result)   # serialised as the stylesheet's xsl:output says (method, encoding)


def _refuse_entities(stylesheet):
    """Entity declarations are refused: they are not expanded, and silently losing &nbsp; is worse."""
    dtd = stylesheet.getroottree().docinfo.internalDTD
    names = [entity.name for entity in dtd.iterentities()] if dtd is not None else []
    if names:
        raise TemplateError("The XSLT template declares DTD entities (%s), which are not expanded for "
                            "safety; write character references instead, such as &#160; for &nbsp;"
                            % ", ".join("&%s;" % name for name in names))


def _refuse_imports(stylesheet):
    """xsl:import and xsl:include are refused: lxml's access control does not cover them (they load at compile)."""
    for element in stylesheet.iter("{%s}import" % XSL_NAMESPACE, "{%s}include" % XSL_NAMESPACE):
        raise TemplateError("The XSLT template uses xsl:%s at line %d (href \"%s\"), which is not allowed: "
                            "a template must be self-contained, without file or network access"
                            % (element.tag.split("}")[1], element.sourceline, element.get("href", "")))


def _xslt_detail(error):
    """' at line N (what failed there): why' from an XSLT error's log, as much as it tells."""
    entries = [entry for entry in error.error_log if entry.message]
    located = [entry for entry in entries if entry.line > 0]
    reasons = []
    for entry in entries:
        reason = entry.message.rstrip(".")
        if entry.line <= 0 and reason not in reasons:
            reasons.append(reason)
    why = "; ".join(reasons) or str(error)
    if located:
        return " at line %d (%s): %s" % (located[0].line, located[0].message, why)
    return ": " + why


# ---- mgr: extension functions [ours: their exact semantics in BILLmanager are not public] --------

def _mgr_extensions():
    """A fresh extensions dict for one transform: nothing is registered globally."""
    functions = {
        "replace": mgr_replace,
        "random": mgr_random,
        "strsum": mgr_strsum,
        "dateformat": mgr_dateformat,
        "encodesubject": mgr_encodesubject,
    }
    return {(MGR_NAMESPACE, name): function for name, function in functions.items()}


def _string(value):
    """An XPath argument as a string: a node list gives its first node's string value ("" if empty)."""
    if isinstance(value, list):
        if not value:
            return ""
        value = value[0]
    if hasattr(value, "xpath"):   # an element or a comment: its XPath string value
        return value.xpath("string()")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def mgr_replace(_context, text, search, replacement):
    """mgr:replace(str, search, replacement): every occurrence of search replaced, no patterns.

    An empty search string leaves the text unchanged.
    """
    text, search = _string(text), _string(search)
    return text.replace(search, _string(replacement)) if search else text


def mgr_random(_context, *limit):
    """mgr:random() → a random integer 0 .. 2^31-1; mgr:random(n) → an integer in [0, n).

    Returned as a string, because libxml2 writes numbers of 10^9 and more in exponent form.
    """
    import random
    if not limit:
        return str(random.randint(0, 2 ** 31 - 1))
    text = _string(limit[0])
    try:
        n = int(float(text))
    except (ValueError, OverflowError):
        n = 0
    if n < 1:
        raise TemplateError("The XSLT template calls mgr:random(n) with '%s'; n must be a positive "
                            "whole number" % text)
    return str(random.randrange(n))


def mgr_strsum(_context, *numbers):
    """mgr:strsum(a, b, ...): the decimal sum of numeric strings, e.g. ("1 200,5", "0.25") → "1200.75".

    Spaces are ignored and a comma is a decimal separator; an empty argument counts as 0. The sum has
    as many decimals as the most precise input and a point as separator.
    """
    from decimal import Decimal, InvalidOperation, localcontext
    total, decimals = Decimal(0), 0
    with localcontext() as context:
        context.prec = 100   # money amounts must never be rounded by the default 28 digits
        for number in numbers:
            text = _string(number)
            try:
                value = Decimal("".join(text.split()).replace(",", ".") or "0")
            except InvalidOperation:
                value = None
            if value is None or not value.is_finite():
                raise TemplateError("The XSLT template calls mgr:strsum() with '%s', which is not a number"
                                    % text)
            total += value
            decimals = max(decimals, -value.as_tuple().exponent)
        return format(total.quantize(Decimal(1).scaleb(-decimals)), "f")


DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d")   # how BILLmanager writes dates and times in notices
DEFAULT_DATE_FORMAT = "%d.%m.%Y"


def mgr_dateformat(_context, date, date_format=None):
    """mgr:dateformat(date, format): "YYYY-MM-DD[ HH:MM:SS]" formatted with a strftime format.

    The format defaults to "%d.%m.%Y" (also when empty); a date that does not parse
    (including "0000-00-00") is returned unchanged.
    """
    from datetime import datetime
    text = _string(date)
    date_format = _string(date_format) if date_format is not None else ""
    for pattern in DATE_FORMATS:
        try:
            parsed = datetime.strptime(text.strip(), pattern)
        except ValueError:
            continue
        return parsed.strftime(date_format or DEFAULT_DATE_FORMAT)
    return text


def mgr_encodesubject(_context, text):
    """mgr:encodesubject(text): RFC 2047 "=?utf-8?b?...?=" words when non-ASCII, else unchanged.

    Long subjects give several encoded words, separated by a space rather than a folded line.
    """
    from email.charset import BASE64, Charset
    from email.header import Header
    text = _string(text)
    try:
        text.encode("ascii")
        return text
    except UnicodeEncodeError:
        pass
    charset = Charset("utf-8")
    charset.header_encoding = BASE64
    return " ".join(Header(text, charset).encode().split())


# ---- EJS -----------------------------------------------------------------------------------------

def _ejs_runner(config):
    """The node script to run: BILLmanager's etc/scripts/template_ejs.js when installed, else ours.

    [ours] guess: BILLmanager's script is assumed to take our stdin JSON / stdout text convention.
    """
    billmanager_runner = config.path("etc", "scripts", "template_ejs.js")
    return billmanager_runner if os.path.isfile(billmanager_runner) else EJS_RUNNER


def _find_node():
    """The node binary: on PATH, else in NODE_DIRS; None when there is none."""
    import shutil
    for name in NODE_NAMES:
        found = shutil.which(name)
        if found:
            return found
    for folder in NODE_DIRS:
        for name in NODE_NAMES:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return None


def _node_environment():
    """The environment for node, with global module folders added to NODE_PATH for require('ejs')."""
    env = dict(os.environ)
    folders = [folder for folder in env.get("NODE_PATH", "").split(os.pathsep) if folder]
    folders += [folder for folder in NODE_MODULE_DIRS if folder not in folders]
    env["NODE_PATH"] = os.pathsep.join(folders)
    return env


def _require_node():
    node = _find_node()
    if node is None:
        raise TemplateError("node is not installed; EJS templates need node and the ejs package "
                            "(apt install nodejs node-ejs, or npm install -g ejs)")
    return node


def _timed_out():
    return TemplateError("The EJS template did not finish within %d seconds; look for an endless loop" % EJS_TIMEOUT)


def _no_ejs(stderr):
    return TemplateError("node cannot find the ejs package, which EJS templates need "
                         "(apt install node-ejs, or npm install -g ejs)", value=stderr)


class EjsSession:
    """One node process rendering many EJS templates, one JSON job per line (``ejs_render.js --lines``).

    Starting node costs tens of milliseconds; a queue run renders hundreds of templates. Only our own
    runner speaks this protocol: with BILLmanager's ``template_ejs.js`` installed, each template gets
    its own node process as usual.
    """

    def __init__(self, config):
        self.config = config
        self.process = None

    def usable(self):
        """True when our runner is the one in use."""
        return _ejs_runner(self.config) == EJS_RUNNER

    def _start(self):
        import subprocess
        try:
            self.process = subprocess.Popen([_require_node(), EJS_RUNNER, "--lines"], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                            env=_node_environment())
        except OSError as e:
            raise TemplateError("node could not be started: %s" % (e.strerror or e))

    def render(self, template_text, notice_xml_text):
        """The template rendered against the notice, as ``render`` does it."""
        import json
        import select
        from .xmljson import to_json
        data = to_json(_parse_notice(notice_xml_text))
        if self.process is None or self.process.poll() is not None:
            self._start()
        job = json.dumps({"template": template_text, "data": data, "filename": self.config.path(EJS_FILENAME)})
        try:
            self.process.stdin.write(job.encode("utf-8") + b"\n")
            self.process.stdin.flush()
            ready, _, _ = select.select([self.process.stdout], [], [], EJS_TIMEOUT)
            line = self.process.stdout.readline() if ready else None
        except OSError as e:
            self.close()
            raise TemplateError("The EJS renderer stopped: %s" % (e.strerror or e))
        if line is None:
            self.close()
            raise _timed_out()
        if not line:
            self.close()
            raise TemplateError("The EJS renderer (node) stopped unexpectedly")
        answer = json.loads(line.decode("utf-8"))
        if "text" in answer:
            return answer["text"]
        if answer.get("status") == EJS_EXIT_NO_EJS:
            raise _no_ejs(answer.get("error", ""))
        raise TemplateError(_ejs_failure(answer.get("error", "")), value=answer.get("error"))

    def close(self):
        """Stop the node process."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout):
                pipe.close()
            self.process = None


def _render_ejs(template_text, notice_xml_text, config):
    """The template rendered by node and ejs, the notice's data passed as JSON on stdin."""
    import json
    import subprocess
    from .xmljson import to_json
    data = to_json(_parse_notice(notice_xml_text))
    node = _require_node()
    runner = _ejs_runner(config)
    job = json.dumps({"template": template_text, "data": data, "filename": config.path(EJS_FILENAME)})
    try:
        finished = subprocess.run([node, runner], input=job.encode("utf-8"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=EJS_TIMEOUT, env=_node_environment())
    except subprocess.TimeoutExpired:
        raise _timed_out()
    except OSError as e:
        raise TemplateError("node (%s) could not be started: %s" % (node, e.strerror or e))
    stderr = finished.stderr.decode("utf-8", "replace").strip()
    if finished.returncode == 0:
        return finished.stdout.decode("utf-8", "replace")
    if finished.returncode == EJS_EXIT_NO_EJS:
        raise _no_ejs(stderr)
    if finished.returncode == EJS_EXIT_TEMPLATE_FAILED:
        raise TemplateError(_ejs_failure(stderr), value=stderr)
    raise TemplateError("The EJS renderer %s ended with status %d: %s"
                        % (runner, finished.returncode, stderr or "no message"), value=stderr)


def _ejs_failure(stderr):
    """A sentence from ejs's message: "path:LINE", the lines around it, a blank line, the error."""
    import re
    paragraphs = stderr.split("\n\n")
    where = re.match(r".*:(\d+)$", paragraphs[0].split("\n", 1)[0])
    if where and len(paragraphs) > 1:
        return "The EJS template failed at line %s: %s" % (where.group(1), paragraphs[1].strip())
    compiling = re.match(r"(.*?) in \S+ while compiling ejs", paragraphs[0].strip(), re.S)
    if compiling:   # ejs gives no line for these: most often an unclosed <% %> block or brace
        return ("The EJS template does not compile (" + compiling.group(1)
                + "); check that every <% %> block and brace is closed")
    return "The EJS template failed: %s" % (paragraphs[0].strip() or "no message from ejs")
