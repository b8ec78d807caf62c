"""XML in and out, the way BILLmanager exchanges it with modules.

In: every document is parsed with ``defusedxml`` and DTDs refused outright, so entity bombs,
external entities and DTD tricks end as an ``InputError``. Out: documents are written as text
with escaping done here, and characters XML 1.0 forbids are dropped, because one stray control
character in a notification makes the whole answer unreadable to BILLmanager.
"""

from .errors import InputError

_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
_forbidden = []   # the compiled pattern, on first use (re is costly at start-up)


def clean(text):
    """``text`` without the characters XML 1.0 forbids (C0 controls but tab/CR/LF, U+FFFE/FFFF, surrogates)."""
    if text.isprintable():
        return text
    if not _forbidden:
        import re
        _forbidden.append(re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"))
    return _forbidden[0].sub("", text)


def escape(text):
    """Text content: cleaned and escaped."""
    return clean(str(text)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_attr(text):
    """An attribute value for double quotes: cleaned and escaped, CR/LF/tab kept as references."""
    return (escape(text).replace('"', "&quot;").replace("\n", "&#10;")
            .replace("\r", "&#13;").replace("\t", "&#9;"))


def element(tag, text=None, attrs=None, children=()):
    """One element as XML text; ``children`` are already-built element strings."""
    attributes = "".join(' %s="%s"' % (k, escape_attr(v)) for k, v in (attrs or {}).items() if v is not None)
    body = (escape(text) if text is not None else "") + "".join(children)
    if not body:
        return "<%s%s/>" % (tag, attributes)
    return "<%s%s>%s</%s>" % (tag, attributes, body, tag)


def document(*children):
    """A whole ``<doc>`` output document with the XML declaration."""
    return _XML_DECLARATION + element("doc", children=children) + "\n"


def error_document(error):
    """The error document for an ``MgrNotifyError``: type, object, value and the readable sentence."""
    params = [element("param", error.value, {"name": "value"})] if error.value is not None else []
    return document(element("error", attrs={"type": error.error_type, "object": error.object},
                            children=params + [element("msg", error.message)]))


def parse(data, what="the input"):
    """Parse an untrusted document (bytes or str) into an ElementTree element; DTDs and entities refused."""
    from xml.etree.ElementTree import ParseError
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring
    if not data or not data.strip():
        raise _empty(what)
    try:
        return fromstring(data, forbid_dtd=True)
    except (DefusedXmlException, ParseError, ValueError, LookupError) as e:   # the last two: an unusable encoding=
        raise _refusal(e, what)


def _empty(what):
    return InputError("%s is empty; an XML document was expected" % what.capitalize())


def _refusal(error, what):
    """The InputError for a parser's complaint: a refused DTD/entity, or XML that is not well-formed."""
    from defusedxml import DefusedXmlException
    if isinstance(error, DefusedXmlException):
        return InputError("%s was refused: it carries a DTD or entity declarations (%s), which are not "
                          "accepted for safety" % (what.capitalize(), type(error).__name__), value=str(error))
    return InputError("%s is not well-formed XML (%s); check that it is complete and UTF-8 encoded"
                      % (what.capitalize(), error), value=str(error))


def serialize(root):
    """An ElementTree element back to text, with the declaration; forbidden characters dropped."""
    from xml.etree.ElementTree import tostring
    for node in root.iter():
        if node.text:
            node.text = clean(node.text)
        if node.tail:
            node.tail = clean(node.tail)
        for key, value in node.attrib.items():
            node.attrib[key] = clean(value)
    return _XML_DECLARATION + tostring(root, encoding="unicode") + "\n"


def text(root, path, default=""):
    """The text at ``path`` under ``root`` (``''`` for an empty element), or ``default`` if absent."""
    node = root.find(path)
    if node is None:
        return default
    return node.text or ""


def fields(node):
    """The child elements of ``node`` as a dict name -> text (a row of a table, as BILLmanager sends it)."""
    if node is None:
        return {}
    return {child.tag: child.text or "" for child in node if isinstance(child.tag, str)}


def stream_elements(fd, tags, what="the input on stdin", chunk=65536, idle=None):
    """Yield each element named in ``tags`` from the document arriving on file descriptor ``fd``, as soon
    as it is complete (so a caller can feed a long-lived process). Defused like ``parse``.

    ``idle()``, when given, is called before a read that would wait: nothing more has arrived yet, so the
    consumer can finish what it started (a caller may be waiting for it before it sends more)."""
    import os
    import select
    from xml.etree.ElementTree import ParseError, TreeBuilder, XMLPullParser
    from defusedxml.ElementTree import DefusedXMLParser
    from defusedxml import DefusedXmlException
    parser = XMLPullParser(events=("end",), _parser=DefusedXMLParser(target=TreeBuilder(), forbid_dtd=True))
    seen_any = False
    while True:
        if idle is not None and not select.select([fd], [], [], 0)[0]:
            idle()
        data = os.read(fd, chunk)
        try:
            if data:
                parser.feed(data)
                # expat >= 2.6 (Python 3.13, patched 3.8-3.12) may hold back an element split over reads until
                # more bytes come, while the caller waits for its answer before it sends any: flush() where the
                # parser has it (looked up by name: older interpreters have neither it nor the deferral).
                flush = getattr(parser, "flush", None)
                if flush is not None:
                    flush()
                seen_any = seen_any or bool(data.strip())
            else:
                if not seen_any:
                    raise _empty(what)
                parser.close()
            events = list(parser.read_events())
        except (DefusedXmlException, ParseError, ValueError, LookupError) as e:
            raise _refusal(e, what)
        for _, element in events:
            if element.tag in tags:
                yield element
                element.clear()
        if not data:
            return
