"""Keep secrets out of everything we write: the logger passes every line through ``redact()``.

Two nets, so a caller cannot leak a secret by mistake:
- by name: the value of any field whose name looks secret (password, passwd, secret, token, key,
  authentification, ...) in XML (raw or escaped inside ``<xmlparams>``), ``name="..."`` attributes,
  ``key=value``, ``key: value`` and JSON;
- by value: every secret the library has seen (``remember()``; gateway settings do it on load) is
  replaced wherever it appears, also XML-escaped and URL-encoded.
"""

MASK = "***"

# A field whose name contains one of these holds a secret (settings, macros and the patterns below agree).
SECRET_WORDS = ("pass", "secret", "token", "key")
# A tag or key whose name contains one of these is masked too: ePochta's whole credential block
# ("authentification"), HTTP and other credentials.
_NAME_WORDS = SECRET_WORDS + ("authentification", "authorization", "credential")
# A name that is secret only as a whole: XMPP's SASL <auth> holds the PLAIN payload ("author" is no secret).
_WHOLE_NAMES = ("auth",)
# Every secret name contains one of these, so a line without any of them needs no regular expression.
_TRIGGERS = SECRET_WORDS + ("auth", "credential")

# The patterns below are linear in the line's length: none of them searches ahead for a closing tag or
# a delimiter that may never come (a lazy ".*?" to a closing tag took minutes on a megabyte of
# unclosed "<password>" tags). Elements are matched to their closing tags on lists of positions
# instead (_mask_elements), in O(n log n).
_patterns = {}   # compiled on first use: importing re costs start-up time
_RAW = {"open": "<", "close": "</", "end": ">", "stops": ("<",)}
_ESCAPED = {"open": "&lt;", "close": "&lt;/", "end": "&gt;", "stops": ("&lt;", "<")}


def _compile():
    import re
    for syntax in (_RAW, _ESCAPED):
        start, close, end = (re.escape(syntax[k]) for k in ("open", "close", "end"))
        syntax["opening"] = re.compile(start + r"([\w.:-]+)")
        syntax["closing"] = re.compile(close + r"([\w.:-]+)\s*" + end)
        syntax["ends"] = re.compile(end)
        syntax["delimiters"] = re.compile("|".join([start, end] if syntax is _RAW else [end]))
        syntax["stopping"] = re.compile("|".join(re.escape(stop) for stop in syntax["stops"]))
    _patterns["secret word"] = re.compile("|".join(_NAME_WORDS))
    _patterns["name attribute"] = re.compile(r"""\bname\s*=\s*["']([\w.:-]+)["']""", re.I)
    # key=value, key: value, "key": "value", key => value: a run of name characters holding a secret
    # word (the lookahead finds it without leaving the run), the separator, then the value. An
    # unclosed quote masks the rest of the line.
    _patterns["key"] = re.compile(
        r"""((?<![\w.-])(?=[\w.-]*?(?:%s)|(?:%s)(?![\w.-]))[\w.-]+["']?\s*(?:=>|[:=])\s*)"""
        r"""("[^"]*"?|'[^']*'?|[^\s&,;'"<>]+)""" % ("|".join(_NAME_WORDS), "|".join(_WHOLE_NAMES)), re.I)


def _secret_name(name):
    """True for a tag or key name whose content is masked."""
    name = name.lower()
    return name in _WHOLE_NAMES or _patterns["secret word"].search(name) is not None


_MIN_REMEMBERED = 4   # shorter values would mask ordinary words and digits everywhere
_remembered = set()


def is_secret(name):
    """True for field names whose values must never be logged or shown."""
    name = name.lower()
    return any(word in name for word in SECRET_WORDS)


def remember(secret):
    """Mask this value (and its escaped forms) in every later line, whatever field it comes in."""
    if not secret or len(secret) < _MIN_REMEMBERED:
        return
    from urllib.parse import quote, quote_plus
    escaped = secret.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for form in (secret, escaped, escaped.replace('"', "&quot;"), quote(secret, safe=""), quote_plus(secret)):
        _remembered.add(form)


def _mask_value(match):
    quote = match.group(2)[:1] if match.group(2)[:1] in "\"'" else ""
    return match.group(1) + quote + MASK + quote


def _after(positions, position):
    """The first of the sorted ``positions`` at or after ``position``, or None."""
    import bisect
    index = bisect.bisect_left(positions, position)
    return positions[index] if index < len(positions) else None


def _positions(pattern, text):
    """Where ``pattern`` matches in ``text``, in order."""
    return [match.start() for match in pattern.finditer(text)]


def _openings(text, syntax, by_attribute):
    """(start, lower-case name, where the content starts) of each secret opening tag, in order; with
    ``by_attribute``, raw tags whose ``name="..."`` attribute is secret count too."""
    attributes = [m.start() for m in _patterns["name attribute"].finditer(text)
                  if _secret_name(m.group(1))] if by_attribute else []
    ends = None
    found = []
    for tag in syntax["opening"].finditer(text):
        secret = _secret_name(tag.group(1))
        if not (secret or attributes):
            continue
        if ends is None:
            ends = _positions(syntax["ends"], text)
        end = _after(ends, tag.end())   # the tag ends at the first ">" after its name
        if end is None or (syntax is _RAW and text[end - 1] == "/"):
            continue   # not a tag, or one that closes itself
        named = _after(attributes, tag.end())
        if secret or (named is not None and named < end):
            found.append((tag.start(), tag.group(1).lower(), end + len(syntax["end"])))
    return found


def _mask(text, spans):
    """``text`` with each (start, stop) span, in order and not overlapping, replaced by ``***``; empty ones kept."""
    out, copied = [], 0   # text[:copied] is in ``out``
    for start, stop in spans:
        if start >= copied and stop > start:
            out += [text[copied:start], MASK]
            copied = stop
    return "".join(out) + text[copied:] if out else text


def _mask_elements(text, syntax):
    """The content of each secret element, up to the first closing tag of its name, masked."""
    openings = _openings(text, syntax, syntax is _RAW)
    closing = {}   # name -> where its closing tags start, in order
    for tag in syntax["closing"].finditer(text) if openings else ():
        closing.setdefault(tag.group(1).lower(), []).append(tag.start())
    spans, copied = [], 0
    for start, name, content in openings:
        stop = _after(closing.get(name, []), content)
        if start >= copied and stop is not None:
            spans.append((content, stop))
            copied = stop
    return _mask(text, spans)


def _mask_unclosed(text, syntax):
    """A truncated or garbled document: the text after each secret opening tag, up to the next tag, masked."""
    openings = _openings(text, syntax, False)
    stops = _positions(syntax["stopping"], text) if openings else []
    spans = []
    for _, _, content in openings:
        stop = _after(stops, content)
        spans.append((content, len(text) if stop is None else stop))
    return _mask(text, spans)


def _mask_unopened(text, syntax):
    """The same, cut at the start: the text before each secret closing tag, back to the previous tag's end."""
    import bisect
    closes = [tag.start() for tag in syntax["closing"].finditer(text) if _secret_name(tag.group(1))]
    delimiters = _positions(syntax["delimiters"], text) if closes else []
    spans = []
    for close in closes:
        index = bisect.bisect_left(delimiters, close) - 1
        if index >= 0 and text.startswith(syntax["end"], delimiters[index]):
            spans.append((delimiters[index] + len(syntax["end"]), close))
    return _mask(text, spans)


def redact(text):
    """``text`` with every secret value replaced by ``***``."""
    for secret in sorted(_remembered, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    lowered = text.lower()
    if not any(word in lowered for word in _TRIGGERS):
        return text
    if not _patterns:
        _compile()
    for mask in (_mask_elements, _mask_unclosed, _mask_unopened):
        for syntax in (_RAW, _ESCAPED):
            text = mask(text, syntax)
    return _patterns["key"].sub(_mask_value, text)
