"""Local stand-ins for gwhttpsms's presets: SMS.ru, SMSC.ru, SMS Aero v2 and MTS Exolve over HTTP(S).

Each speaks its API as docs/SMS-PROVIDERS.md ("Stand-ins") specifies it, route by route, with the refusals the
provider documents (and, marked there, the few texts that are guesses). The machinery is epochta_server's
(``StandIn``: the server, TLS, ``behaviour``, trickling, ``release``); each request is recorded in ``requests``
with its method, path, headers, raw body, the query and form fields merged and decoded, and the JSON body if any.
``refuse`` forces one refusal class whatever the request says, for classes a test cannot provoke naturally.
"""

import base64
import json
from urllib.parse import parse_qsl

import epochta_server
from epochta_server import StandIn, parts

JSON = "application/json"


def fields_of(text, encoding="utf-8", errors="strict"):
    """Form or query fields of ``text`` (ASCII), their percent-decoded bytes decoded with ``encoding``."""
    return dict(parse_qsl(text, keep_blank_values=True, encoding=encoding, errors=errors))


def number_ok(number, low=10, high=15):
    """An international number: digits only, ``low`` to ``high`` of them."""
    return number.isdigit() and low <= len(number) <= high


class Handler(epochta_server.Handler):
    """One request to a provider's stand-in: recorded, then answered by the owner's ``route``."""

    server_version = "HttpSmsStandIn/1.0"

    def do_GET(self):
        self.serve("GET")

    def do_POST(self):
        self.serve("POST")

    def serve(self, method):
        path, query, body = self.read_request()
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        raw = query + ("&" + body.decode("latin-1") if content_type == "application/x-www-form-urlencoded" else "")
        try:
            document = json.loads(body.decode("utf-8")) if content_type == JSON else None
        except ValueError:
            document = None
        record = {"method": method, "path": path, "headers": dict(self.headers), "body": body, "raw": raw,
                  "json": document, "content_type": content_type}
        owner = self.server.owner
        record["fields"] = fields_of(raw, "utf-8", "replace")
        owner.requests.append(record)
        if self.misbehave():
            return
        status, answer = owner.route(method, path, record)
        if isinstance(answer, (dict, list)):
            self.answer(json.dumps(answer, ensure_ascii=False).encode("utf-8"), status, JSON)
        else:
            self.answer(answer.encode("utf-8"), status, "text/plain; charset=utf-8")


class Provider(StandIn):
    """What the four stand-ins share: one account's money, senders allowed (empty: any), numbers without a route."""

    handler = Handler

    def __init__(self, money=100, senders=(), no_route=(), tls_folder=None):
        super().__init__(tls_folder)
        self.money = money
        self.senders = set(senders)
        self.no_route = set(no_route)
        self.refuse = None
        self.sent = []     # (phone, text, sender) of each SMS taken

    def sender_refused(self, sender):
        return bool(self.senders) and sender not in self.senders

    def take(self, phone, text, sender):
        """Charge and record one SMS; False when the money does not cover it."""
        cost = parts(text)
        if cost > self.money:
            return False
        self.money -= cost
        self.sent.append((phone, text, sender))
        return True


class SmsRuServer(Provider):
    """SMS.ru: ``/sms/send`` (POST only) and ``/my/balance`` with ``api_id``, ``json=1``."""

    TOP = {200: "Неправильный api_id", 201: "Не хватает средств на лицевом счету", 203: "Нет текста сообщения",
           204: "Имя отправителя не согласовано с администрацией", 210: "Используется GET, где необходимо "
           "использовать POST", 211: "Метод не найден", 212: "Текст сообщения необходимо передать в кодировке UTF-8",
           220: "Сервис временно недоступен, попробуйте чуть позже"}
    NUMBER = {202: "Неправильно указан номер телефона получателя, либо на него нет маршрута",
              207: "На этот номер нет маршрута для доставки сообщений",
              230: "Превышен общий лимит количества сообщений на этот номер в день"}

    def __init__(self, api_id, **kwargs):
        super().__init__(**kwargs)
        self.api_id = api_id

    def top(self, code):
        return 200, {"status": "ERROR", "status_code": code, "status_text": self.TOP[code]}

    def number(self, to, code):
        return 200, {"status": "OK", "status_code": 100, "sms": {to: {"status": "ERROR", "status_code": code,
                                                                      "status_text": self.NUMBER[code]}},
                     "balance": float(self.money)}

    def route(self, method, path, record):
        if path not in ("/sms/send", "/my/balance"):
            return self.top(211)
        if method != "POST":
            return self.top(210)
        fields = record["fields"]
        if fields.get("json") != "1":
            return 200, "100\n000000-10000001\nbalance=%s" % self.money
        if fields.get("api_id") != self.api_id or self.refuse == 200:
            return self.top(200)
        if path == "/my/balance":
            return 200, {"status": "OK", "status_code": 100, "balance": float(self.money)}
        try:
            fields = fields_of(record["raw"])
        except UnicodeDecodeError:
            return self.top(212)
        to, text, sender = fields.get("to", ""), fields.get("msg", ""), fields.get("from")
        if self.refuse in self.TOP:
            return self.top(self.refuse)
        if self.refuse in self.NUMBER:
            return self.number(to, self.refuse)
        if not text:
            return self.top(203)
        if sender is not None and self.sender_refused(sender):
            return self.top(204)
        if parts(text) > self.money:
            return self.top(201)
        if not number_ok(to):
            return self.number(to, 202)
        if to in self.no_route:
            return self.number(to, 207)
        self.take(to, text, sender)
        sms_id = "000000-1000000%d" % len(self.sent)
        return 200, {"status": "OK", "status_code": 100,
                     "sms": {to: {"status": "OK", "status_code": 100, "sms_id": sms_id}}, "balance": float(self.money)}


class SmscServer(Provider):
    """SMSC.ru: ``/sys/send.php`` and ``/sys/balance.php``, GET or POST, ``fmt=3`` for JSON."""

    ERRORS = {1: "parameters error", 2: "authorise error", 3: "no money", 4: "ip is blocked",
              6: "message is denied", 7: "invalid phone", 8: "cannot deliver", 9: "duplicate request, wait a minute"}

    def __init__(self, login, psw, api_key=None, **kwargs):
        super().__init__(**kwargs)
        self.login, self.psw, self.api_key = login, psw, api_key
        self.counter = 0

    def error(self, code, message_id=None):
        answer = {"error": self.ERRORS[code], "error_code": code}
        if message_id is not None and code in (3, 6, 7, 8):
            answer["id"] = message_id
        return 200, answer

    def route(self, method, path, record):
        charset = record["fields"].get("charset", "windows-1251")
        fields = fields_of(record["raw"], {"utf-8": "utf-8", "koi8-r": "koi8-r"}.get(charset, "windows-1251"),
                           "replace")
        if fields.get("fmt") != "3":
            return 200, "ERROR = 2 (authorise error)" if fields.get("psw") != self.psw else "OK - 1 SMS, ID - 1"
        login, psw = fields.get("login", ""), fields.get("psw", "")
        credentials = (login == self.login and psw == self.psw) or (not login and self.api_key and psw == self.api_key)
        if path == "/sys/balance.php":
            return (200, {"balance": "%.2f" % self.money}) if credentials else self.error(2)
        if path != "/sys/send.php":
            return 404, {"error": "not found"}
        phone, text, sender = fields.get("phones", ""), fields.get("mes", ""), fields.get("sender")
        if not phone or not text:
            return self.error(1)
        if not credentials:
            return self.error(2)
        self.counter += 1
        message_id = fields.get("id") or self.counter
        if self.refuse is not None:
            return self.error(self.refuse, message_id)
        if sender is not None and self.sender_refused(sender):
            return self.error(6, message_id)
        if not number_ok(phone):
            return self.error(7, message_id)
        if phone in self.no_route:
            return self.error(8, message_id)
        if not self.take(phone, text, sender):
            return self.error(3, message_id)
        return 200, {"id": message_id, "cnt": parts(text)}


class SmsAeroServer(Provider):
    """SMS Aero v2: ``/v2/sms/send``, ``/v2/balance``, ``/v2/auth``, HTTP Basic with the account's e-mail and key."""

    CREDENTIALS = (401, {"success": False, "data": None, "message": "Your request was made with invalid credentials."})

    def __init__(self, email, key, **kwargs):
        super().__init__(**kwargs)
        self.email, self.key = email, key

    def authorised(self, record):
        scheme, _, token = record["headers"].get("Authorization", "").partition(" ")
        try:
            given = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except ValueError:
            return False
        return scheme == "Basic" and given == "%s:%s" % (self.email, self.key)

    def route(self, method, path, record):
        if not self.authorised(record) or self.refuse == "credentials":
            return self.CREDENTIALS
        if path == "/v2/auth":
            return 200, {"success": True, "data": None, "message": "Successful authorization."}
        if path == "/v2/balance":
            return 200, {"success": True, "data": {"balance": float(self.money)}, "message": None}
        if path != "/v2/sms/send":
            return 404, {"success": False, "data": None, "message": "Not found."}
        fields = record["json"] if isinstance(record["json"], dict) else record["fields"]
        number, text, sign = str(fields.get("number", "")), fields.get("text", ""), fields.get("sign", "")
        if not number_ok(number):
            return 400, {"success": False, "data": {"number": ["incorrect"]}, "message": "Validation error."}
        if not text:
            return 400, {"success": False, "data": {"text": ["empty"]}, "message": "Validation error."}
        if self.sender_refused(sign):
            return 400, {"success": False, "data": {"sign": ["incorrect"]}, "message": "Validation error."}
        if self.refuse == "money" or not self.take(number, text, sign):
            return 200, {"success": False, "data": None, "message": "Not enough money on the balance."}
        return 200, {"success": True, "data": {"id": len(self.sent), "from": sign, "number": number, "text": text,
                                               "status": 0, "extendStatus": "queue", "channel": "DIRECT",
                                               "cost": parts(text), "dateCreate": 1719119523,
                                               "dateSend": 1719119523}, "message": None}


class ExolveServer(Provider):
    """MTS Exolve: ``POST /messaging/v1/SendSMS`` and ``/finance/v1/GetBalance``, a Bearer key, JSON bodies."""

    def __init__(self, key, **kwargs):
        super().__init__(**kwargs)
        self.key = key

    @staticmethod
    def error(status, message, details):
        return status, {"error": {"code": status, "message": message, "details": details}}

    def route(self, method, path, record):
        if record["headers"].get("Authorization", "") != "Bearer %s" % self.key or self.refuse == "credentials":
            return self.error(401, "Unauthorized", "invalid API key")
        if method != "POST":
            return self.error(405, "Method Not Allowed", "POST only")
        if path == "/finance/v1/GetBalance":
            return 200, {"balance": float(self.money)}
        if path != "/messaging/v1/SendSMS":
            return self.error(404, "Not Found", path)
        body = record["json"]
        if not isinstance(body, dict):
            return self.error(400, "Bad Request", "body: JSON required")
        for name in ("number", "destination", "text"):
            if not body.get(name):
                return self.error(400, "Bad Request", "%s: required" % name)
        if not number_ok(str(body["destination"]), 11, 11):
            return self.error(400, "Bad Request", "destination: invalid number")
        if self.sender_refused(body["number"]):
            return self.error(400, "Bad Request", "number: not found")
        if self.refuse == "money" or not self.take(body["destination"], body["text"], body["number"]):
            return self.error(402, "Payment Required", "insufficient funds")
        return 200, {"message_id": "5394084152781%d" % len(self.sent)}
