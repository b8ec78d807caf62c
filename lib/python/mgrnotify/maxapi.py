"""MAX (VK's messenger) Bot API: a bot's messages to users, and the updates users send it.

The API is JSON over HTTPS (docs/MAX-BOT-API.md, from MAX's own OpenAPI schema and clients): the bot's token in
the ``Authorization`` header, bare; ``POST /messages?user_id=ID`` with ``{"text", "format"}`` sends, ``GET /updates``
long-polls for what users did, ``GET /me`` names the bot. A refusal is an HTTP status with ``{"code", "message"}``.

``BotAPI`` offers the verbs ``me``, ``send`` and ``updates`` over one keep-alive connection (``httppost``): one
timeout bounds each request, certificates are verified unless turned off. A text longer than MAX takes is sent as
numbered parts, cut at line or word ends. Errors: ``TokenRefused`` (401), ``RateLimited`` (429 asking for a longer
wait than we give it), ``Refused`` (any other refusal, with MAX's reason), ``AnswerError`` (not the API's JSON), and
``httppost.PostError`` for the network; a send whose answer never came says the message may have been sent.
"""

import time

from . import httppost
from .errors import ConfigError, ConnectError, DeliveryError

DEFAULT_URL = "https://platform-api2.max.ru"   # MAX's host since July 2026 (docs/MAX-BOT-API.md, "Base URL")
SERVICE = "MAX"
TEXT_LIMIT = 4000        # NewMessageBody.text maxLength in MAX's schema
BUTTON_LIMIT = 128       # Button.text maxLength
POLL_LIMIT = 90          # the most seconds GET /updates may be asked to hold a poll (schema: timeout 0-90)
# [ours] The schema says nothing of how a 429 tells the wait: Retry-After is honoured when present, else one second
# (MAX's documented limit is requests per second); never longer than MAX_WAIT, nor than the request's timeout.
DEFAULT_WAIT = 1
MAX_WAIT = 10
RATE_TRIES = 3           # requests a 429 may make in all: a Retry-After of 0 does not make the waits endless
UPDATES_ANSWER_BYTES = 16 * 1024 * 1024   # 100 updates of long texts with forwarded ones: far more than 1 MiB
JSON = "application/json"


class TokenRefused(ConnectError):
    """MAX refused the bot's token (HTTP 401)."""


class RateLimited(DeliveryError):
    """MAX asked for a longer pause (HTTP 429) than the gateway may wait; nothing was sent."""


class Refused(DeliveryError):
    """MAX refused the request with its own reason: ``code`` (``chat.denied``, ...) and ``status``."""

    def __init__(self, message, code=None, status=None, **kwargs):
        super().__init__(message, **kwargs)
        self.code = code
        self.status = status


class AnswerError(ConnectError):
    """The answer is not MAX's JSON: the url setting points at something else."""


def size(text):
    """The length of ``text`` in UTF-16 units, as a JavaScript or Java server counts it [ours: the schema's
    maxLength does not say; an emoji then counts two, so a part never comes out too long]."""
    return len(text.encode("utf-16-le")) // 2


def split(text, limit=TEXT_LIMIT, html=False):
    """``text`` as parts of at most ``limit`` units, each but a single one starting "(i/n) "; cut after a line
    end when one is in the second half of a part, else after a space, else anywhere (never inside an HTML tag or
    character reference when ``html``)."""
    if size(text) <= limit:
        return [text]
    digits = 1
    while True:
        widest = len("(%s/%s) " % ("9" * digits, "9" * digits))
        chunks = _chunks(text, limit - widest, html)
        if len(chunks) < 10 ** digits:
            return ["(%d/%d) %s" % (number, len(chunks), chunk) for number, chunk in enumerate(chunks, 1)]
        digits += 1


def _chunks(text, width, html):
    chunks = []
    while text:
        end = _fitting(text, width)
        if end < len(text):
            end = _cut(text, end, html)
        chunk, text = text[:end].rstrip(" "), text[end:]
        text = text.lstrip(" \n") if chunk.strip() else text
        if chunk.strip():
            chunks.append(chunk.rstrip("\n"))
    return chunks


def _fitting(text, width):
    """How many characters of ``text`` fit in ``width`` UTF-16 units."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > width:
            return index
    return len(text)


def _cut(text, end, html):
    """Where to cut ``text`` at or before ``end``: after a line end, else a space, else at ``end``."""
    half = end // 2
    for mark in ("\n", " "):
        at = text.rfind(mark, half, end)
        if at > 0:
            end = at + 1
            break
    if html:   # not inside "<b ...>" or "&amp;": back to where it starts
        for opening, closing in (("<", ">"), ("&", ";")):
            start = text.rfind(opening, 0, end)
            if start > 0 and text.find(closing, start, end) < 0 and (closing == ">" or end - start < 12):
                end = start
    return end


class BotAPI:
    """One bot's session with MAX: ``me``, ``send``, ``updates`` over one connection; ``close`` it, or use ``with``."""

    def __init__(self, token, url=DEFAULT_URL, timeout=15, verify_tls=True, log=None):
        from urllib.parse import urlsplit
        if not token:
            raise ConfigError("The token setting is empty: copy the bot's token from MAX's partner platform "
                              "(business.max.ru, Chat bots, Integration)", obj="token")
        if any(c < " " or c > "~" for c in token):   # a header cannot carry it; and never echo it
            raise ConfigError("The token setting holds a line break, a control character or a character that is "
                              "not ASCII, which no MAX token has: copy the bot's token again", obj="token")
        self.web = httppost.WebService(url, timeout, verify_tls, service=SERVICE)
        self.web.max_answer = UPDATES_ANSWER_BYTES
        self.prefix = urlsplit(url.strip()).path.rstrip("/")   # a proxy's path before MAX's methods, if any
        self.token = token
        self.timeout = timeout
        self.log = log

    def _log(self, level, text, *args):
        if self.log is not None:
            self.log.write(level, text, *args)

    def call(self, method, path, query=(), body=None, timeout=None):
        """One API call; its JSON answer (a dict). A 429 is waited out and the call repeated while the waits add
        up to no more than MAX_WAIT seconds (and the timeout); then RateLimited."""
        import json
        from urllib.parse import urlencode
        target = self.prefix + path + ("?" + urlencode(list(query)) if query else "")
        headers = {"Authorization": self.token, "Accept": JSON}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = JSON + "; charset=utf-8"
        waited, tries = 0.0, 0
        while True:
            tries += 1
            self._log(9, "%s %s%s, headers %s, body: %s", method, self.web.origin, target, headers,
                      data and data.decode("utf-8"))
            try:
                answer = self.web.request(method, target, data, headers, timeout=timeout)
                break
            except httppost.BadStatus as e:
                wait = max(DEFAULT_WAIT, self._refusal(e, method, path))   # raises, unless MAX asked to wait
                bound = min(MAX_WAIT, self.timeout)
                if waited + wait > bound or tries >= RATE_TRIES:
                    raise RateLimited("MAX refused %s %s for too many requests (HTTP 429) and asked to wait %s s, "
                                      "more than the %s s (and %d tries) the gateway waits; nothing was sent, "
                                      "and it is tried again on the next run (MAX allows about 30 requests a "
                                      "second per bot)" % (method, path, _seconds(wait), _seconds(bound),
                                                           RATE_TRIES), value="429")
                self._log(5, "MAX asked to wait %s s (HTTP 429) before %s %s", _seconds(wait), method, path)
                time.sleep(wait)
                waited += wait
        self._log(9, "MAX answered: %s", answer.decode("utf-8", "replace"))
        try:
            document = json.loads(answer.decode("utf-8"))
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise AnswerError("MAX at %s answered %s %s with %s, which is not its API's answer; check the url "
                              "setting" % (self.web.origin, method, path, httppost.excerpt(answer)))
        return document

    def _refusal(self, error, method, path):
        """The seconds to wait for a 429; for any other status the error it means, raised."""
        reason, code = _reason(error.body)
        if error.status == 429:
            return _wait_of(error.headers.get("Retry-After"))
        if error.status == 401:
            raise TokenRefused("MAX refused the bot token (HTTP 401%s); check the token setting: copy the bot's "
                               "token again from MAX's partner platform (business.max.ru, Chat bots, Integration)"
                               % (", " + reason if reason else ""), obj="token")
        if reason:
            raise Refused("MAX refused %s %s: %s (HTTP %d)" % (method, path, reason, error.status), code=code,
                          status=error.status, value=str(error.status))
        raise error

    def me(self):
        """The bot's own user: ``{"user_id", "name", "username", ...}``."""
        return self.call("GET", "/me")

    def send(self, user_id, text, markup=None, contact_button=None):
        """Send ``text`` to the user ``user_id`` (``markup``: None for plain text, "html" or "markdown"), in
        numbered parts when it is longer than MAX takes; the message ids (``mid``) MAX gave, in order. With
        ``contact_button`` (its label), the last part has a button under it that sends the user's own contact
        (an inline keyboard with a ``request_contact`` button).

        A part whose answer never came may have been delivered: the error says so, and which parts went before it.
        """
        if markup == "html" and size(text) > TEXT_LIMIT:
            # Parts of HTML would each hold tags opened in one and closed in another, which MAX may refuse after
            # the first went out; and every retry would send that one again. Its readable text splits cleanly.
            from .htmltext import html_to_text
            text, markup = html_to_text(text), None
            self._log(5, "The HTML message to MAX user %s is longer than one message: sent as plain text in parts",
                      user_id)
        parts = split(text, TEXT_LIMIT, markup == "html")
        ids = []
        for number, part in enumerate(parts, 1):
            body = {"text": part}
            if markup:
                body["format"] = markup
            if contact_button and number == len(parts):
                body["attachments"] = [{"type": "inline_keyboard", "payload": {"buttons": [[
                    {"type": "request_contact", "text": contact_button[:BUTTON_LIMIT]}]]}}]
            try:
                answer = self.call("POST", "/messages", [("user_id", user_id)], body)
            except httppost.Timeout as e:
                if not e.request_sent:
                    raise
                what = "the message" if len(parts) == 1 else "part %d of %d of the message" % (number, len(parts))
                raise httppost.Timeout("%s; %s may still have been delivered: look in the bot's chat with MAX user "
                                       "%s before sending it again" % (e.message, what, user_id),
                                       request_sent=True) from None
            except (Refused, RateLimited) as e:
                if number > 1:
                    e.message = "%s; parts 1 to %d of %d were delivered" % (e.message, number - 1, len(parts))
                raise
            ids.append(_path(answer, "message", "body", "mid"))
        return ids

    def updates(self, marker=None, timeout=0, limit=100, types=()):
        """(the updates, the next marker) from one long poll held up to ``timeout`` seconds. With ``marker``, the
        updates from it on; without, those not yet taken (MAX takes every update before a marker passed as done)."""
        query = [("limit", limit), ("timeout", timeout)]
        if marker is not None:
            query.append(("marker", marker))
        if types:
            query.append(("types", ",".join(types)))
        answer = self.call("GET", "/updates", query, timeout=self.timeout + timeout)
        updates = answer.get("updates")
        if not isinstance(updates, list):
            raise AnswerError("MAX answered GET /updates without a list of updates (%s); check the url setting"
                              % httppost.excerpt(str(answer).encode("utf-8")))
        return [u for u in updates if isinstance(u, dict)], answer.get("marker")

    def close(self):
        """Close the connection."""
        self.web.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _reason(body):
    """(MAX's sentence with its code, the code) of an error answer ``{"code", "message"}``; ("", None) if none."""
    import json
    try:
        document = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "", None
    if not isinstance(document, dict):
        return "", None
    code, message = document.get("code"), document.get("message") or document.get("error")
    if not message:
        return ("code %s" % code if code else ""), code
    return ("%s (code %s)" % (message, code) if code else str(message)), code


def _wait_of(retry_after):
    """Seconds to wait by a Retry-After value (seconds, or an HTTP date); DEFAULT_WAIT without one."""
    if not retry_after:
        return DEFAULT_WAIT
    retry_after = retry_after.strip()
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime
    try:
        when = parsedate_to_datetime(retry_after)
    except (TypeError, ValueError, IndexError):
        return DEFAULT_WAIT
    if when is None:
        return DEFAULT_WAIT
    return max(0.0, when.timestamp() - time.time())


def _path(document, *keys):
    """The value at ``keys`` in nested dicts, or None where one is missing or not a dict."""
    for key in keys:
        document = document.get(key) if isinstance(document, dict) else None
    return document


def _seconds(value):
    return ("%.1f" % value).rstrip("0").rstrip(".")


def vcard_phones(vcf):
    """Every TEL of a vCard, as written there but for a ``tel:`` URI's scheme and parameters (``tel:+7-912;ext=5``
    is ``+7-912``), in order; [] without one."""
    phones = []
    for value in _tel_values(vcf if isinstance(vcf, str) else ""):
        if value[:4].lower() == "tel:":
            value = value[4:].split(";", 1)[0]
        if value.strip():
            phones.append(value.strip())
    return phones


def _tel_values(vcf):
    lines = []
    for line in vcf.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line[:1] in (" ", "\t") and lines:   # a folded continuation (RFC 6350 3.2)
            lines[-1] += line[1:]
        else:
            lines.append(line)
    for line in lines:
        name, colon, value = line.partition(":")
        if colon and name.split(";")[0].split(".")[-1].strip().upper() == "TEL" and value.strip():
            yield value.strip()
