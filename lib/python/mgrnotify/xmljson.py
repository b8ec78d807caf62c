"""The notice XML as plain data for EJS templates, the way node's xml2js does it (explicitArray: false).

The rule [ours: BILLmanager's own conversion is not public; xml2js is what node developers know]:

- the document root becomes an object of its children, so a template writes ``project.name``,
  ``billurl``, ``cmdhash``; its attributes, if any, go under ``$``;
- an element with neither attributes nor child elements becomes its text ("" when empty);
- any other element becomes an object: attributes under ``$`` (name → value), child elements
  by tag name, and its text, when not whitespace only, under ``_``;
- a tag repeated among siblings becomes a list in document order; a single one is the value itself.

Comments and processing instructions are skipped. ElementTree and lxml elements both work.
"""

ATTRIBUTES_KEY = "$"   # xml2js's attrkey
TEXT_KEY = "_"         # xml2js's charkey


def to_json(element):
    """The document root ``element`` (or a whole tree) as a dict of plain Python data for EJS."""
    if hasattr(element, "getroot"):
        element = element.getroot()
    return _as_object(element)


def _children(element):
    """The child elements, without comments and processing instructions (their tag is not a str)."""
    return [child for child in element if isinstance(child.tag, str)]


def _text(element):
    """The element's own text: its text plus the tails of all its children, comments included."""
    return (element.text or "") + "".join(child.tail or "" for child in element)


def _convert(element):
    """One element below the root: its text when it is a leaf without attributes, else an object."""
    if not element.attrib and not _children(element):
        return _text(element)
    return _as_object(element)


def _as_object(element):
    """An element as a dict: ``$`` attributes, children by tag (lists when repeated), ``_`` text."""
    data = {}
    if element.attrib:
        data[ATTRIBUTES_KEY] = dict(element.attrib)
    for child in _children(element):
        value = _convert(child)
        if child.tag not in data:
            data[child.tag] = value
        elif isinstance(data[child.tag], list):   # a converted element is never a list itself
            data[child.tag].append(value)
        else:
            data[child.tag] = [data[child.tag], value]
    text = _text(element)
    if text.strip():
        data[TEXT_KEY] = text
    return data

