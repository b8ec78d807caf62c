"""Keep secrets out of everything we write: the logger passes every line through ``redact()``.

Two nets, so a caller cannot leak a secret by mistake:
- by name: the value of any field whose name looks secret (password, passwd, secret, token, key,
  authentification, ...) in XML (raw or escaped inside ``<xmlparams>``), ``name="..."`` attributes,
  ``key=value``, ``key: value`` and JSON;
- by value: every secret the library has seen (``remember()``; gateway settings do it on load) is
  replaced wherever it appears, also XML-escaped and URL-encoded.
"""

MASK = "***"

# Field names whose values are secret; "authentification" is ePochta's whole credential block and
# "auth" XMPP's SASL PLAIN payload.
_NAME = r"[\w.:-]*?(?:pass(?:word|wd|phrase)?|secret|token|key|authentification|authorization|credential)[\w.-]*|auth"

# A field whose name contains one of these holds a secret (settings, macros and the patterns below agree).
SECRET_WORDS = ("pass", "secret", "token", "key")
# Every name pattern contains one of these, so a line without any of them needs no regular expression.
_TRIGGERS = SECRET_WORDS + ("auth", "credential")
_patterns = []   # compiled on first use: importing re costs start-up time


def _compile():
    import re
    element = (r"(<(" + _NAME + r")\b[^>]*?(?<!/)>)(.*?)(</\2\s*>)",
               r"(&lt;(" + _NAME + r")\b(?:(?!&gt;).)*?&gt;)(.*?)(&lt;/\2\s*&gt;)",
               r"(<(\w+)\b[^>]*?\bname\s*=\s*[\"'](?:" + _NAME + r")[\"'][^>]*?(?<!/)>)(.*?)(</\2\s*>)")
    # The same elements in a truncated or garbled document: the text after the opening tag up to the next
    # tag, and the text before the closing tag back to the previous one.
    broken = (r"(<(" + _NAME + r")\b[^>]*?(?<!/)>)([^<]+)()",
              r"(&lt;(" + _NAME + r")\b(?:(?!&gt;).)*?&gt;)((?:(?!&lt;)[^<])+)()",
              r"(>)()([^<>]*)(</(?:" + _NAME + r")\s*>)",
              r"(&gt;)()((?:(?!&gt;).)*)(&lt;/(?:" + _NAME + r")\s*&gt;)")
    _patterns.extend(re.compile(p, re.I | re.S) for p in element + broken)
    _patterns.append(re.compile(
        r"""((?<![\w.-])(?:""" + _NAME + r""")["']?\s*(?:=>|[:=])\s*)("[^"]*"|'[^']*'|[^\s&,;'"<>]+)""", re.I))

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
    for pattern in _patterns[:-1]:
        text = pattern.sub(lambda m: m.group(1) + MASK + m.group(4), text)
    return _patterns[-1].sub(_mask_value, text)
