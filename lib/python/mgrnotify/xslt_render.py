"""The XSLT worker: applies notification stylesheets in a process of its own, with lxml.

``template.Renderer`` starts it as ``python -m mgrnotify.xslt_render`` and keeps it for a queue run, so a
stylesheet that never ends (exponential recursion is easy to write in XSLT) can be killed at its deadline
without touching the queue. Requests come on stdin, one JSON line each: ``{"id", "template", "notice"}``.
Answers go to the file descriptor named by ``$MGRNOTIFY_ANSWER_FD``, one JSON line each: ``{"id", "text"}``
or ``{"id", "error", "value"}``; stdout and stderr are only read by the caller for its log.

Stylesheets run with the mgr: extension functions, no file or network access, and no xsl:import,
xsl:include or DTD entities. Compiled stylesheets are kept by their text, so a run that renders one
template a thousand times compiles it once.
"""

import os
import sys

from .errors import TemplateError
from .template import ANSWER_FD_ENV, XSL_NAMESPACE, parse_notice, parse_stylesheet

MEMORY_LIMIT = 1024 ** 3   # [ours] bytes of address space; a runaway stylesheet fails instead of swapping
CACHE_SIZE = 64            # compiled stylesheets kept: a queue run has a few templates, used many times


def main():
    """Answer requests until stdin ends."""
    import json
    answers = int(os.environ.pop(ANSWER_FD_ENV))
    _limit_memory()
    cache = _Cache(CACHE_SIZE)
    for line in sys.stdin.buffer:
        request = json.loads(line.decode("utf-8"))
        answer = {"id": request["id"]}
        try:
            answer["text"] = transform(request["template"], request["notice"], cache)
        except TemplateError as e:
            answer["error"], answer["value"] = e.message, e.value
        except MemoryError:
            answer["error"] = ("The XSLT template needed more than %d MiB of memory; look for endless recursion "
                               "or loops" % (MEMORY_LIMIT // 1024 ** 2))
        data = (json.dumps(answer) + "\n").encode("utf-8")
        while data:
            data = data[os.write(answers, data):]


def _limit_memory():
    """At most MEMORY_LIMIT of address space, unless a lower hard limit is already set."""
    import resource
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > MEMORY_LIMIT:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, hard))


class _Cache:
    """Compiled stylesheets by template text, the least recently used dropped first."""

    def __init__(self, size):
        from collections import OrderedDict
        self.size = size
        self.items = OrderedDict()

    def get(self, key):
        item = self.items.get(key)
        if item is not None:
            self.items.move_to_end(key)
        return item

    def put(self, key, item):
        self.items[key] = item
        if len(self.items) > self.size:
            self.items.popitem(last=False)


def transform(template_text, notice_xml_text, cache=None):
    """The stylesheet applied to the notice XML, as text, in this process; TemplateError on any failure.

    ``cache``: a ``_Cache`` of compiled stylesheets to use and fill.
    """
    from lxml import etree
    compiled = cache.get(template_text) if cache is not None else None
    if compiled is None:
        compiled = _compile(template_text)
        if cache is not None:
            cache.put(template_text, compiled)
    notice = parse_notice(notice_xml_text)
    try:
        result = compiled(notice)
    except etree.XSLTApplyError as e:
        raise TemplateError("The XSLT template failed%s" % _xslt_detail(e), value=str(e))
    return str(result)   # serialised as the stylesheet's xsl:output says (method, encoding)


def _compile(template_text):
    """The checked and compiled stylesheet, with the mgr: functions and no file or network access."""
    from lxml import etree
    stylesheet = parse_stylesheet(template_text)
    if stylesheet is None:
        raise TemplateError("The template is not an XSLT stylesheet (its root is not xsl:stylesheet or "
                            "xsl:transform)")
    _refuse_entities(stylesheet)
    _refuse_imports(stylesheet)
    # Some compile errors come with lxml's per-thread log, which still holds earlier transforms' errors.
    etree.clear_error_log()
    try:
        return etree.XSLT(stylesheet, extensions=_mgr_extensions(),
                          access_control=etree.XSLTAccessControl.DENY_ALL)
    except etree.XSLTParseError as e:
        raise TemplateError("The XSLT template is not a valid stylesheet%s" % _xslt_detail(e), value=str(e))


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

MGR_NAMESPACE = "http://ispsystem.com/xslplugin"   # old templates' extension functions, prefix mgr: [doc]


def _mgr_extensions():
    """A fresh extensions dict for one stylesheet: nothing is registered globally."""
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


if __name__ == "__main__":
    main()
