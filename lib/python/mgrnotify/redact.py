"""Keep secrets out of everything we write: the logger passes every line through ``redact()``.

Two nets, so a caller cannot leak a secret by mistake:
- by name: the value of any field whose name looks secret (password, passwd, secret, token, key,
  authentification, ...) in XML (raw or escaped inside ``<xmlparams>``), ``name="..."`` attributes,
  ``key=value``, ``key: value`` and JSON, whatever the value's length;
- by value: every secret the library has seen (``remember()``; gateway settings do it on load) is
  replaced wherever it appears, also XML-escaped and URL-encoded (a short one only as a whole word,
  see SHORT_SECRET).
Every rule finds its spans in the same, unchanged text and the union of them is masked, so one rule's
mask can neither hide a field name from another rule nor leave part of a secret beside it.
"""

MASK = "***"

# A field whose name contains one of these holds a secret (settings, macros and the patterns below agree).
SECRET_WORDS = ("pass", "secret", "token", "key")
# A tag or key whose name contains one of these is masked too: ePochta's whole credential block
# ("authentification"), HTTP and other credentials.
_NAME_WORDS = SECRET_WORDS + ("authentification", "authorization", "credential")
# A name that is secret only as a whole: XMPP's SASL <auth> holds the PLAIN payload ("author" is no secret);
# SMS.ru's key "api_id" and SMSC.ru's password "psw" (docs/SMS-PROVIDERS.md; "rapid_id", "pswd_hint" are no secret).
_WHOLE_NAMES = ("auth", "api_id", "psw")
# Every secret name contains one of these, so a line without any of them needs no regular expression.
_TRIGGERS = SECRET_WORDS + ("auth", "credential", "api_id", "psw")
# A value of a name holding this is a scheme word and the credential after it ("Authorization: Basic dXNl..."):
# both are masked, not the scheme alone.
_SCHEMED = "authoriz"

# [ours] A remembered secret shorter than this is masked in free text only where it stands alone, with no
# letter, digit or "_" touching it ("abc" in "refused 'abc'", not in "abcde"): masking every "a" or "12" inside
# words would shred the log, while a short password standing alone is worth hiding. Longer ones are masked
# everywhere. In a secret-named field (above) a value is masked whatever its length.
SHORT_SECRET = 4
# [ours] The most characters a secret can have when a caller passes only the start of a longer text
# (``redact(text, cut=True)``): that many characters before the cut are masked, since whatever follows the cut
# (a closing tag, the rest of a remembered value) cannot be seen. The longest real secret, a PEM private key, has
# a few thousand.
CUT_MARGIN = 64 * 1024

# The patterns below are linear in the line's length: none of them searches ahead for a closing tag or
# a delimiter that may never come (a lazy ".*?" to a closing tag took minutes on a megabyte of
# unclosed "<password>" tags). Elements are matched to their closing tags on lists of positions
# instead (_element_spans), each list walked once.
_patterns = {}   # compiled on first use: importing re costs start-up time
# "inside": what a tag may hold after its name, up to its end, without meeting another tag's start or end.
_RAW = {"open": "<", "close": "</", "end": ">", "stops": ("<",), "inside": r"[^<>]*"}
_ESCAPED = {"open": "&lt;", "close": "&lt;/", "end": "&gt;", "stops": ("&lt;", "<"),
            "inside": r"[^&<]*(?:&(?!lt;|gt;)[^&<]*)*"}


def _compile():
    import re
    for syntax in (_RAW, _ESCAPED):
        start, close, end = (re.escape(syntax[k]) for k in ("open", "close", "end"))
        syntax["opening"] = re.compile(start + r"([\w.:-]+)(%s)(%s)?" % (syntax["inside"], end))
        syntax["closing"] = re.compile(close + r"([\w.:-]+)\s*" + end)
        syntax["ends"] = re.compile(end)
        syntax["delimiters"] = re.compile("|".join([start, end] if syntax is _RAW else [end]))
        syntax["stopping"] = re.compile("|".join(re.escape(stop) for stop in syntax["stops"]))
    _patterns["secret word"] = re.compile("|".join(_NAME_WORDS))
    _patterns["name attribute"] = re.compile(r"""\bname\s*=\s*["']([\w.:-]+)["']""", re.I)
    # key=value, key: value, "key": "value", key => value: a whole run of name characters, then the
    # separator, then the value; an unclosed quote masks the rest of the line. Whether the name is secret
    # is asked of each match: a pattern looking for the secret words inside the run took 300 ms on a
    # megabyte of letters. "(?=(run))\1" takes the run whole, never giving it back a character at a time.
    _patterns["key"] = re.compile(r"""(?<![\w.-])(?=([\w.-]+))\1["']?\s*(?:=>|[:=])\s*""")
    _patterns["value"] = re.compile(r"""("[^"]*"?|'[^']*'?|[^\s&,;'"<>]+)""")
    _patterns["credential"] = re.compile(r"""[ \t]+[^\s&,;'"<>]+""")


_secret_names = {}   # name -> whether it is secret: a megabyte of one repeated tag asks the same question often


def _secret_name(name):
    """True for a tag or key name whose content is masked."""
    secret = _secret_names.get(name)
    if secret is None:
        lowered = name.lower()
        secret = lowered in _WHOLE_NAMES or _patterns["secret word"].search(lowered) is not None
        if len(name) <= 64 and len(_secret_names) < 1024:   # a name run can be a megabyte long
            _secret_names[name] = secret
    return secret


# (form, alone): each form of each remembered secret; ``alone`` for the forms of a short secret (SHORT_SECRET).
_remembered = set()


def is_secret(name):
    """True for field names whose values must never be logged or shown."""
    name = name.lower()
    return any(word in name for word in SECRET_WORDS)


def remember(secret):
    """Mask this value (and its escaped forms) in every later line, whatever field it comes in."""
    if not secret:
        return
    from urllib.parse import quote, quote_plus
    escaped = secret.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    alone = len(secret) < SHORT_SECRET
    for form in (secret, escaped, escaped.replace('"', "&quot;"), quote(secret, safe=""), quote_plus(secret)):
        _remembered.add((form, alone))


def _positions(pattern, text):
    """Where ``pattern`` matches in ``text``, in order."""
    return [match.start() for match in pattern.finditer(text)]


def _openings(text, syntax):
    """(start, lower-case name, where the content starts) of each secret opening tag, in order; raw tags
    whose ``name="..."`` attribute is secret count too."""
    raw = syntax is _RAW
    ends, e = None, 0   # ends[e]: the first end at or after the current tag's name
    found = []
    for tag in syntax["opening"].finditer(text):
        name, inside = tag.group(1, 2)
        if not (_secret_name(name) or raw and "=" in inside and any(
                _secret_name(value) for value in _patterns["name attribute"].findall(inside))):
            continue
        end = tag.start(3)
        if end < 0:   # another tag starts first, or the text ends: this one ends at the next end, if any
            if ends is None:
                ends = _positions(syntax["ends"], text) + [len(text)]
            while ends[e] < tag.end(1):
                e += 1
            end = ends[e]
            if end == len(text):
                break   # no tag from here on has an end
        if raw and text[end - 1] == "/":
            continue   # a tag that closes itself
        found.append((tag.start(), name.lower(), end + len(syntax["end"])))
    return found


def _element_spans(text, syntax):
    """The content of each secret element: up to the first closing tag of its name; in a truncated or
    garbled document, up to the next tag (or the end); and, cut at the start, back to the previous tag
    (or the start). Each list of positions is walked once, in order: linear however many tags there are."""
    openings = _openings(text, syntax)
    closings = [(tag.start(), tag.group(1).lower()) for tag in syntax["closing"].finditer(text)]
    spans = []
    if openings:
        closing = {}   # name -> where its closing tags start, in order
        for start, name in closings:
            closing.setdefault(name, []).append(start)
        passed = {}   # name -> how many of its closing tags lie before the current content
        stops, s = _positions(syntax["stopping"], text) + [len(text)], 0
        for _, name, content in openings:
            tags = closing.get(name)
            if tags:
                i = passed.get(name, 0)
                while i < len(tags) and tags[i] < content:
                    i += 1
                passed[name] = i
                if i < len(tags):
                    spans.append((content, tags[i]))
                    continue
            while stops[s] < content:
                s += 1
            spans.append((content, stops[s]))
    closes = [start for start, name in closings if _secret_name(name)]
    delimiters, d = _positions(syntax["delimiters"], text) if closes else [], 0
    for close in closes:
        while d < len(delimiters) and delimiters[d] < close:
            d += 1
        if d == 0:   # the text starts inside the element
            spans.append((0, close))
        elif text.startswith(syntax["end"], delimiters[d - 1]):
            spans.append((delimiters[d - 1] + len(syntax["end"]), close))
    return spans


def _key_spans(text):
    """The value of each secret-named key=value, key: value or JSON pair; inside its quotes if quoted."""
    spans = []
    for key in _patterns["key"].finditer(text):
        match = _secret_name(key.group(1)) and _patterns["value"].match(text, key.end())
        if not match:
            continue
        start, stop = match.span()
        value = match.group()
        if value[0] in "\"'":
            start += 1
            if len(value) > 1 and value[-1] == value[0]:
                stop -= 1
        elif value.isalpha() and _SCHEMED in key.group(1).lower():
            credential = _patterns["credential"].match(text, stop)
            stop = credential.end() if credential else stop
        spans.append((start, stop))
    return spans


def _remembered_spans(text):
    """Spans covering every place a remembered secret appears in ``text``, overlapping ones included."""
    spans, short = [], []
    for form, alone in _remembered:
        if alone:
            if form in text:
                short.append(form)
            continue
        size = len(form)
        at = text.find(form)
        while at >= 0:
            spans.append((at, at + size))
            # Of the occurrences overlapping or touching this one, the last covers all the others do.
            last = text.rfind(form, at + 1, at + 2 * size)
            at = last if last >= 0 else text.find(form, at + size + 1)
    if short:   # where they stand alone; a run of them with only spaces or punctuation between is one span
        import re
        alternatives = "|".join(re.escape(form) for form in sorted(short, key=len, reverse=True))
        pattern = r"(?<!\w)(?:{0})(?:\W+(?:{0}))*(?!\w)".format(alternatives)
        spans += [match.span() for match in re.finditer(pattern, text)]
    return spans


def _mask(text, spans):
    """``text`` with each span, or each run of overlapping or touching spans, replaced by one ``***``."""
    out, copied = [], 0   # text[:copied] is in ``out``
    for start, stop in sorted(spans):
        if stop <= copied or stop <= start:
            continue
        if start > copied or not out:
            out += [text[copied:start], MASK]
        copied = stop
    return "".join(out) + text[copied:] if out else text


def redact(text, cut=False):
    """``text`` with every secret value replaced by ``***``. With ``cut``, ``text`` is the start of a longer text:
    the last CUT_MARGIN characters are masked too, as they may be the start of a secret."""
    spans = _remembered_spans(text) if _remembered else []
    if cut:
        spans.append((max(0, len(text) - CUT_MARGIN), len(text)))
    lowered = text.lower()
    if any(word in lowered for word in _TRIGGERS):
        if not _patterns:
            _compile()
        for syntax in (_RAW, _ESCAPED):
            spans += _element_spans(text, syntax)
        spans += _key_spans(text)
    return _mask(text, spans) if spans else text
