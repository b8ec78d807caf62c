"""HTTP SMS APIs described as data: the presets SMS.ru, SMSC.ru, SMS Aero (v2) and MTS Exolve, and a custom mode.

Every one of them is one HTTP request per SMS whose answer says, in its body, whether the SMS was taken: SMS.ru
and SMSC.ru answer a refusal with HTTP 200 and an error in the JSON, SMS Aero with 200 or 4xx and ``success``
false, Exolve with 4xx and ``{"error": {...}}``. So the answer is never judged by its HTTP status alone: a
``Rules`` object says how to build the request (method, fields, headers, where each placeholder goes) and how to
read the answer (the success rule, where the message id, the error text and the error code are). ``PRESETS`` holds
the four providers' rules; ``custom_rules`` builds them from the admin's templates.

What each provider expects and answers, with the pages it was read from, is in docs/SMS-PROVIDERS.md:
SMS.ru https://sms.ru/api/send, SMSC.ru https://smsc.ru/api/http/ and
https://smscentre.com/api/http/send/sms/sms_answer/, SMS Aero v2 (SMS Aero's own client libraries,
github.com/smsaero), MTS Exolve https://docs.exolve.ru/docs/ru/api-reference/sms-api/sending-sms.

``SmsService`` offers the verbs ``send`` and ``balance``; refusals raise ``Refused`` (``CredentialsRefused`` for
credentials), unreadable answers ``AnswerError``, network failures ``httppost.PostError``. Credentials are
never logged: the redactor masks them by name (api_id, psw, Authorization) and by value.
"""

import time

from . import httppost, redact
from .errors import ConfigError, ConnectError, DeliveryError, MgrNotifyError

PLACEHOLDERS = ("phone", "message", "sender", "login", "password", "api_key")
# [ours] Besides the six: {id}, the message id the gateway chooses (SMSC.ru takes one), and {basic},
# base64 of "login:api_key" (or "login:password" without a key) for HTTP Basic authentication (SMS Aero).
EXTRA_PLACEHOLDERS = ("id", "basic")
CONTENT_TYPES = ("form", "query", "json")   # the default first, as in every choice list
METHODS = ("POST", "GET")
JSON = "application/json"
PRESENT = object()   # a success rule's value meaning "the path exists, whatever its value"
CREDENTIAL_STATUSES = (401, 403)   # HTTP statuses that mean "not these credentials" for every API here


class Rules:
    """How to speak one SMS API: the requests (send, balance) and how to read their answers."""

    def __init__(self, service, url, send, balance=None, success=(), message_id=(), error_text=(), details=(),
                 error_code=(), credential_codes=(), accepted_codes=(), advice=None, balance_value=None,
                 sender_default="", pattern=None, credentials=()):
        self.service = service                  # the provider's name, as it spells it, for every sentence
        self.url = url                          # the default base address (a preset) or the URL template (custom)
        self.send = send                        # Request for one SMS
        self.balance = balance                  # Request for the balance, or None
        self.success = list(success)            # (JSON path, value or PRESENT): all must hold
        self.pattern = pattern                  # or a regular expression searched in the answer's text
        self.message_id = list(message_id)      # JSON paths, the first present wins
        self.error_text = list(error_text)
        self.details = list(details)            # more of the reason: field errors (SMS Aero), details (Exolve)
        self.error_code = list(error_code)
        self.credential_codes = set(credential_codes)   # error codes meaning the credentials were refused
        self.accepted_codes = set(accepted_codes)       # codes that are no error (SMS.ru's 100)
        self.advice = advice or {}              # error code -> what the admin should do
        self.balance_value = balance_value      # JSON path of the balance in the balance answer
        self.sender_default = sender_default
        self.credentials = credentials          # the settings holding the credentials, for the advice


class Request:
    """One request: method, path (or URL template), how its fields travel, the fields and the headers.

    ``fields`` are (name, template, optional) triples; an optional field whose value comes out empty is left out
    (SMS.ru's and SMSC.ru's ``from``/``sender``: empty would mean "no sender" rather than the account's default).
    ``body`` is the custom mode's body template, filled with each value escaped for where it stands.
    """

    def __init__(self, method, path, content_type, fields=(), headers=(), body=None):
        self.method = method
        self.path = path
        self.content_type = content_type
        self.fields = list(fields)
        self.headers = list(headers)
        self.body = body

    def templates(self):
        """Every template of this request, to find the placeholders it uses."""
        return ([self.path] + [t for _, t, optional in self.fields if not optional] + [t for _, t in self.headers]
                + ([self.body] if self.body else []))


# Advice by class of refusal; {service} filled in.
MONEY = "top up the {service} balance"
PHONE = "check the user's phone number: international format, country code first"
SENDER = "check the sender setting: the name must be approved in the {service} account"
LATER = "try again later"
TOO_SOON = ("the SMS may already have gone: look in {service}'s statistics before sending it again")
IP_LIST = "check the login and password, and that this server's IP address is allowed in the {service} account"

PRESETS = {
    # https://sms.ru/api/send: form POST, json=1; success only when the request and the number are both OK (100).
    "smsru": Rules(
        "SMS.ru", "https://sms.ru",
        Request("POST", "/sms/send", "form", [("api_id", "{api_key}", False), ("to", "{phone}", False),
                                              ("msg", "{message}", False), ("from", "{sender}", True),
                                              ("json", "1", False)]),
        balance=Request("POST", "/my/balance", "form", [("api_id", "{api_key}", False), ("json", "1", False)]),
        success=[("status", "OK"), ("status_code", "100"), ("sms.{phone}.status", "OK"),
                 ("sms.{phone}.status_code", "100")],
        message_id=["sms.{phone}.sms_id"], error_text=["sms.{phone}.status_text", "status_text"],
        error_code=["sms.{phone}.status_code", "status_code"], accepted_codes=["100"],
        credential_codes=["200", "300", "301", "302"], balance_value="balance", credentials=("api_key",),
        advice={"201": MONEY, "202": PHONE, "207": PHONE, "204": SENDER, "220": LATER, "500": LATER}),
    # https://smsc.ru/api/http/: fmt=3 for JSON, charset=utf-8 (else windows-1251); the client may name the SMS.
    "smsc": Rules(
        "SMSC.ru", "https://smsc.ru",
        Request("POST", "/sys/send.php", "form", [("login", "{login}", False), ("psw", "{password}", False),
                                                  ("phones", "{phone}", False), ("mes", "{message}", False),
                                                  ("sender", "{sender}", True), ("id", "{id}", False),
                                                  ("fmt", "3", False), ("charset", "utf-8", False)]),
        balance=Request("POST", "/sys/balance.php", "form", [("login", "{login}", False),
                                                             ("psw", "{password}", False), ("fmt", "3", False)]),
        success=[("cnt", PRESENT)], message_id=["id"], error_text=["error"], error_code=["error_code"],
        credential_codes=["2", "4"], balance_value="balance", credentials=("login", "password"),
        advice={"2": IP_LIST, "3": MONEY, "6": SENDER, "7": PHONE, "8": PHONE, "9": TOO_SOON}),
    # SMS Aero v2 (its client libraries): HTTP Basic e-mail:key, form fields; success true, else message (and data).
    "smsaero": Rules(
        "SMS Aero", "https://gate.smsaero.ru",
        Request("POST", "/v2/sms/send", "form", [("number", "{phone}", False), ("text", "{message}", False),
                                                 ("sign", "{sender}", False)],
                [("Authorization", "Basic {basic}")]),
        balance=Request("POST", "/v2/balance", "form", [], [("Authorization", "Basic {basic}")]),
        success=[("success", "true")], message_id=["data.id"], error_text=["message"], details=["data"],
        balance_value="data.balance", sender_default="SMS Aero", credentials=("login", "api_key")),
    # https://docs.exolve.ru/docs/ru/api-reference/sms-api/sending-sms: Bearer key, JSON; number is the sender.
    "exolve": Rules(
        "MTS Exolve", "https://api.exolve.ru",
        Request("POST", "/messaging/v1/SendSMS", "json", [("number", "{sender}", False),
                                                          ("destination", "{phone}", False),
                                                          ("text", "{message}", False)],
                [("Authorization", "Bearer {api_key}")]),
        balance=Request("POST", "/finance/v1/GetBalance", "json", [], [("Authorization", "Bearer {api_key}")]),
        success=[("message_id", PRESENT)], message_id=["message_id"], error_text=["error.message"],
        details=["error.details"], error_code=["error.code"], balance_value="balance", credentials=("api_key",)),
}


class HttpSmsError(MgrNotifyError):
    """Base of the providers' refusals and unreadable answers."""


class AnswerError(HttpSmsError, ConnectError):
    """The answer is not the API's (an HTML page, JSON without the expected keys): often a wrong url."""


class Refused(HttpSmsError, DeliveryError):
    """The provider refused this SMS (money, number, sender, text, limits); ``code`` holds its code, if any."""

    def __init__(self, message, code=None, **kwargs):
        super().__init__(message, value=code, **kwargs)
        self.code = code


class CredentialsRefused(Refused, ConnectError):
    """The provider refused the credentials."""

    error_type = "connect"


def custom_rules(url, method, content_type, body, headers, success, message_id, error_text, balance_url):
    """``Rules`` from the custom mode's settings (ConfigError naming the setting that cannot be used)."""
    if method not in METHODS:
        raise ConfigError("The gateway setting 'method' must be one of %s, not '%s'" % (", ".join(METHODS), method),
                          obj="method")
    if content_type not in CONTENT_TYPES:
        raise ConfigError("The gateway setting 'content_type' must be one of %s, not '%s'"
                          % (", ".join(CONTENT_TYPES), content_type), obj="content_type")
    header_pairs = []
    for line in headers.splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
            raise ConfigError("The gateway setting 'headers' has the line '%s', which is not 'Name: value'"
                              % redact.redact(line), obj="headers")
        header_pairs.append((name.strip(), value.strip()))
    path, value, pattern = parse_success(success)
    send = Request(method, url, content_type, headers=header_pairs, body=body if content_type != "query" else None)
    balance = Request("GET", balance_url, "query", headers=header_pairs) if balance_url else None
    from urllib.parse import urlsplit
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None   # WebService says what is wrong with the url when it is used
    return Rules(host or "the SMS service", url, send, balance,
                 success=[(path, value)] if path else (), pattern=pattern,
                 message_id=[message_id] if message_id else (), error_text=[error_text] if error_text else (),
                 credentials=("login", "password", "api_key"))


def parse_success(rule):
    """(path, value, None) for a JSON rule ``path=value``, else (None, None, compiled pattern); ``re:`` forces a
    pattern. [ours] A rule is JSON when it starts with a path (letters, digits, ``_ . -``) and ``=``."""
    import re
    if not rule.startswith("re:"):
        match = re.match(r"([\w.-]+)=(.*)$", rule, re.S)
        if match:
            return match.group(1), match.group(2), None
    try:
        return None, None, re.compile(rule[3:] if rule.startswith("re:") else rule)
    except re.error as e:
        raise ConfigError("The gateway setting 'success' is neither path=value nor a regular expression (%s)" % e,
                          obj="success")


def json_path(document, path):
    """The value at a dotted ``path`` (keys, or indexes into lists) in ``document``; KeyError if absent."""
    value = document
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            raise KeyError(path)
    return value


def as_text(value):
    """A JSON value as the text a rule compares: strings as they are, numbers and true/false/null as JSON writes
    them (so a rule ``success=true`` matches the JSON ``true``)."""
    import json
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def escape_for(where, value):
    """``value`` escaped for where its placeholder stands: a URL, a form body, a JSON string, or a header."""
    if where == "url":
        from urllib.parse import quote
        return quote(value, safe="")
    if where == "form":
        from urllib.parse import quote_plus
        return quote_plus(value)
    if where == "json":
        import json
        return json.dumps(value)[1:-1]
    return value


def fill(template, values, where):
    """``template`` with each known placeholder replaced by its value escaped for ``where``; others left as they are
    (a JSON body's own braces)."""
    import re
    names = "|".join(PLACEHOLDERS + EXTRA_PLACEHOLDERS)
    return re.sub(r"\{(%s)\}" % names, lambda m: escape_for(where, values[m.group(1)]), template)


def used(templates):
    """The placeholders ``templates`` use, in PLACEHOLDERS' order."""
    joined = "".join(templates)
    return [name for name in PLACEHOLDERS + EXTRA_PLACEHOLDERS if "{%s}" % name in joined]


class Answer:
    """What the provider answered: the message id (send) or the balance, as it gave them."""

    def __init__(self, message_id=None, balance=None, parts=None):
        self.message_id = message_id
        self.balance = balance
        self.parts = parts


class SmsService:
    """An SMS API spoken by ``rules``, at ``base`` (a preset's ``scheme://host[:port]``, or None for the preset's own
    address; the custom mode's URL template is in its rules), with the account's credentials."""

    def __init__(self, rules, values, base=None, timeout=15, verify_tls=True, log=None, preset=True):
        self.rules = rules
        self.values = dict(values)
        self.preset = preset
        self.base = (base or rules.url).rstrip("/") if preset else None
        self.timeout = timeout
        self.verify_tls = verify_tls
        self.log = log
        import json
        for name in ("password", "api_key"):   # also JSON-escaped, as a custom JSON body carries it
            for form in (self.values.get(name, ""), json.dumps(self.values.get(name, ""))[1:-1]):
                redact.remember(form)
        if "basic" not in self.values:
            import base64
            secret = self.values.get("api_key") or self.values.get("password", "")
            pair = "%s:%s" % (self.values.get("login", ""), secret)
            self.values["basic"] = base64.b64encode(pair.encode("utf-8")).decode("ascii")
        redact.remember(self.values["basic"])

    def _log(self, level, text, *args):
        if self.log is not None:
            self.log.write(level, text, *args)

    def missing(self, request, values):
        """ConfigError for the first setting ``request`` uses that is empty ({basic} uses the login and the key)."""
        names = used(request.templates())
        if "basic" in names:
            names += ["login"] + ([] if values.get("password") else ["api_key"])
        for name in names:
            if name in PLACEHOLDERS and not values.get(name):
                raise ConfigError("The gateway setting '%s' is empty and %s needs it; fill it in the gateway's "
                                  "settings" % (name, self.rules.service), obj=name)

    def build(self, request, values):
        """(URL, body bytes or None, headers) of ``request`` filled with ``values``."""
        if self.preset:
            url = self.base + request.path
        else:
            url = fill(request.path, values, "url")
        headers = {}
        for name, template in request.headers:
            value = fill(template, values, "header")
            if any(c in value for c in "\r\n\0"):
                raise ConfigError("The header %s would carry a line break from its placeholders; a header cannot "
                                  "hold the message text" % name, obj="headers")
            headers[name] = value
        body = None
        if request.body is not None:
            body = fill(request.body, values, request.content_type).encode("utf-8")
        elif request.fields:
            pairs = [(name, fill(template, values, "raw")) for name, template, _ in request.fields]
            pairs = [(name, value) for (name, value), (_, _, optional) in zip(pairs, request.fields)
                     if value or not optional]
            if request.content_type == "json":
                import json
                body = json.dumps(dict(pairs), ensure_ascii=False).encode("utf-8")
            else:
                from urllib.parse import urlencode
                encoded = urlencode(pairs)
                if request.content_type == "query":
                    url += ("&" if "?" in url else "?") + encoded
                else:
                    body = encoded.encode("ascii")
        elif request.content_type == "json" and request.method == "POST":
            body = b"{}"
        if body is not None and not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = JSON if request.content_type == "json" else httppost.FORM
        return url, body, headers

    def exchange(self, request, values, trace=None):
        """Send ``request``; (HTTP status, answer body, the BadStatus of a non-2xx answer or None, the address).

        A 4xx/5xx answer is returned too: its body may hold the refusal. For an SMS (``trace`` says how to find it)
        a timeout after the request went out says it may have been sent.
        """
        url, body, headers = self.build(request, values)
        web = httppost.WebService(url, self.timeout, self.verify_tls, service=self.rules.service,
                                  setting="url")
        if web.scheme == "http":
            self._log(4, "The url setting is plain http: the credentials travel unencrypted to %s", web.address)
        self._log(9, "%s %s, headers %s, body: %s", request.method, url, headers,
                  (body or b"").decode("utf-8", "replace"))
        try:
            with web:
                data, status = web.request(request.method, None, body, headers), 200
        except httppost.BadStatus as e:
            data, status = e.body, e.status
            self._log(9, "%s answered HTTP %d: %s", self.rules.service, status, data.decode("utf-8", "replace"))
            return status, data, e, web.address
        except httppost.Timeout as e:
            if not (e.request_sent and trace):
                raise
            raise httppost.Timeout("%s; the SMS may still have been sent: %s before sending it again"
                                   % (e.message, trace), request_sent=True) from None
        self._log(9, "%s answered: %s", self.rules.service, data.decode("utf-8", "replace"))
        return status, data, None, web.address

    def send(self, phone, text, sender, message_id=None):
        """Send ``text`` to ``phone`` (digits only) from ``sender``; the ``Answer`` with the provider's message id
        (or ours, where the gateway chooses it)."""
        values = dict(self.values, phone=phone, message=text, sender=sender or self.rules.sender_default)
        self.missing(self.rules.send, values)
        if "id" in used(self.rules.send.templates()):   # the gateway names the SMS (SMSC.ru): logged first
            from .epochta import new_message_id
            values["id"] = message_id or new_message_id()
            self._log(5, "SEND id=%s to %s", values["id"], phone)
            trace = "look for id %s in %s's statistics" % (values["id"], self.rules.service)
        else:
            values["id"] = ""
            trace = "look in %s's statistics for an SMS to %s at %s" % (self.rules.service, phone,
                                                                         time.strftime("%Y-%m-%d %H:%M:%S"))
        status, data, failure, address = self.exchange(self.rules.send, values, trace)
        document = self.judge(status, data, failure, address, values, "the SMS to %s" % phone)
        given = values["id"] or None
        if document is not None:
            given = self.first(document, self.rules.message_id, values) or given
        return Answer(message_id=None if given is None else as_text(given))

    def balance(self):
        """The account's balance as the provider gives it (an ``Answer``); None when there is no balance request."""
        if self.rules.balance is None:
            return None
        values = dict(self.values, phone="", message="", sender="", id="")
        self.missing(self.rules.balance, values)
        status, data, failure, address = self.exchange(self.rules.balance, values)
        if self.rules.balance_value is None:   # custom: any 2xx answer is the balance, shown as it came
            if failure is not None:
                self.judge(status, data, failure, address, values, "the balance request")
            return Answer(balance=httppost.excerpt(data))
        document = self.judge(status, data, failure, address, values, "the balance request",
                              success=[(self.rules.balance_value, PRESENT)])
        return Answer(balance=as_text(json_path(document, self.rules.balance_value)))

    def first(self, document, paths, values):
        """The value at the first of ``paths`` present in ``document`` ({phone} in a path filled), or None."""
        for path in paths:
            try:
                value = json_path(document, fill(path, values, "raw"))
            except KeyError:
                continue
            if value is not None and value != "":
                return value
        return None

    def judge(self, status, data, failure, address, values, what, success=None):
        """The answer's JSON document (None if it is none) when it says the request was taken; else the refusal,
        HTTP error or unreadable answer it is, raised."""
        import json
        try:
            document = json.loads(data.decode("utf-8"))
        except ValueError:
            document = None
        rules = success if success is not None else self.rules.success
        if failure is None:
            if document is not None and rules and all(self.holds(document, path, value, values)
                                                      for path, value in rules):
                return document
            if success is None and self.rules.pattern is not None and self.rules.pattern.search(
                    data.decode("utf-8", "replace")):
                return document if isinstance(document, (dict, list)) else None
        reason = code = None
        if isinstance(document, (dict, list)):
            reason = self.first(document, self.rules.error_text, values)
            details = self.first(document, self.rules.details, values)
            code = self.first(document, self.rules.error_code, values)
            if code is not None and as_text(code) in self.rules.accepted_codes:
                code = None
            if reason is not None and details is not None:
                reason = "%s (%s)" % (as_text(reason), describe(details))
        if reason is None and code is None:
            if failure is not None:
                raise failure
            raise AnswerError("%s at %s answered something other than its API's answer (%s); check the url "
                              "setting" % (self.rules.service, address, httppost.excerpt(data)))
        return self.refuse(status, reason, code, what)

    def holds(self, document, path, value, values):
        """True when ``path`` in ``document`` is present (``value`` PRESENT) or reads ``value``."""
        try:
            found = json_path(document, fill(path, values, "raw"))
        except KeyError:
            return False
        return value is PRESENT or as_text(found) == value

    def refuse(self, status, reason, code, what):
        """Raise the refusal: CredentialsRefused for credentials, Refused for the rest, with the provider's reason."""
        service = self.rules.service
        code = None if code is None else as_text(code)
        reason = as_text(reason) if reason is not None else "no reason given"
        number = "code %s" % code if code is not None else "HTTP %d" % status if status >= 300 else None
        if status in CREDENTIAL_STATUSES or code in self.rules.credential_codes:
            names = self.rules.credentials
            names = "%s setting" % names[0] if len(names) == 1 else "%s and %s settings" % (", ".join(names[:-1]),
                                                                                          names[-1])
            advice = self.rules.advice.get(code, "check the " + names)
            # No colon after "credentials": the redactor would take the reason for their value.
            raise CredentialsRefused("%s refused the credentials (%s%s); %s"
                                     % (service, reason, ", " + number if number else "",
                                        advice.format(service=service)), code)
        advice = self.rules.advice.get(code)
        raise Refused("%s refused %s: %s%s%s" % (service, what, reason, " (%s)" % number if number else "",
                                                 "; " + advice.format(service=service) if advice else ""), code)


def describe(details):
    """Field errors as a short text: {"number": ["incorrect"]} -> 'number: incorrect'."""
    if isinstance(details, dict):
        return "; ".join("%s: %s" % (name, ", ".join(as_text(v) for v in value) if isinstance(value, list)
                                     else as_text(value)) for name, value in details.items())
    return as_text(details)
