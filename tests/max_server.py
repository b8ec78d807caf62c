"""A local stand-in for the MAX Bot API, for gwmax's tests: the routes gwmax uses, as docs/MAX-BOT-API.md describes.

- the token in ``Authorization`` (bare); a wrong or missing one is answered 401 ``{"code": "verify.token", ...}``;
- ``GET /me``: the bot; ``POST /messages?user_id=ID`` with ``{"text", "format"}``: a text over 4000 UTF-16 units,
  a format other than html/markdown, or no user_id is answered 400 ``{"code", "message"}``; a taken message is
  recorded in ``sent`` and answered ``{"message": {... "body": {"mid", "text"}}}``;
- ``GET /updates?limit&timeout&marker&types``: the queued updates from ``marker`` on (without one, those not yet
  taken), at most ``limit``, only of ``types``; waits up to ``timeout`` seconds for one; answers ``{updates, marker}``.
  Passing a marker takes every update before it, as MAX documents, for good: an older marker passed later does
  not bring them back. A test queues updates with ``add_message``
  (text, a contact attachment) and ``add_bot_started``;
- ``rate_limit``: (how many requests to answer 429 first, the Retry-After value or None);
- HTTP/1.1 keep-alive, each TCP connection counted in ``connections``; the machinery (TLS, ``behaviour`` "hang" for
  a server that never answers, ``requests``) is epochta_server's ``StandIn``.
"""

import itertools
import json
import threading
import time
from urllib.parse import parse_qsl

import httpsms_servers
from epochta_server import StandIn

JSON = "application/json"
LIMIT = 4000
POLL_STEP = 0.05


def units(text):
    """Length in UTF-16 units, independently of the library's."""
    return sum(2 if ord(c) > 0xFFFF else 1 for c in text)


class Handler(httpsms_servers.Handler):
    """One request: recorded, then answered by the owner's ``route``; the connection is kept open (HTTP/1.1)."""

    server_version = "MaxStandIn/1.0"
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with self.server.owner.lock:
            self.server.owner.connections += 1

    def serve(self, method):
        path, query, body = self.read_request()
        try:
            document = json.loads(body.decode("utf-8")) if body else None
        except ValueError:
            document = None
        record = {"method": method, "path": path, "query": dict(parse_qsl(query, keep_blank_values=True)),
                  "headers": dict(self.headers), "body": body, "json": document}
        owner = self.server.owner
        owner.requests.append(record)
        if self.misbehave():
            return
        status, answer, headers = owner.route(method, path, record)
        data = json.dumps(answer, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", JSON + "; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class MaxServer(StandIn):
    """The MAX Bot API stand-in (see the module's docstring)."""

    handler = Handler
    redirect_to = "https://platform-api2.max.ru/messages"

    def __init__(self, token, bot=None, tls_folder=None):
        super().__init__(tls_folder)
        self.token = token
        self.bot = bot or {"user_id": 9000, "name": "Provider bot", "username": "provider_bot", "is_bot": True}
        self.sent = []             # (user_id, text, format) of each message taken
        self.keyboards = []        # (user_id, text, [[(button type, label)]]) of each message with buttons
        self.updates = []          # (sequence number, update), in order
        self.committed = 0         # updates before this sequence number were taken (a marker was passed)
        self.connections = 0
        self.rate_limit = (0, None)
        self.lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._mids = itertools.count(1)

    # --- what a test queues ---------------------------------------------------------------------------------

    def add_update(self, update):
        """Queue one update (a dict); its sequence number."""
        with self.lock:
            number = next(self._sequence)
            self.updates.append((number, dict(update, timestamp=int(time.time() * 1000))))
        return number

    def add_message(self, user_id, text, name="Иван Петров", attachments=None, chat_type="dialog"):
        """A ``message_created`` update from ``user_id``; its mid."""
        mid = "mid.%016x" % (0xabc000 + next(self._mids))
        body = {"mid": mid, "seq": 1, "text": text}
        if attachments is not None:
            body["attachments"] = attachments
        first, _, last = name.partition(" ")
        self.add_update({"update_type": "message_created", "user_locale": "ru", "message": {
            "sender": {"user_id": user_id, "first_name": first, "last_name": last or None, "name": name,
                       "is_bot": False},
            "recipient": {"chat_id": 70000 + user_id, "chat_type": chat_type}, "timestamp": 1, "body": body}})
        return mid

    def add_bot_started(self, user_id, payload=None, name="Иван Петров"):
        """A ``bot_started`` update (the user pressed Start, perhaps by a deep link with ``payload``)."""
        update = {"update_type": "bot_started", "chat_id": 70000 + user_id,
                  "user": {"user_id": user_id, "first_name": name, "name": name, "is_bot": False}}
        if payload is not None:
            update["payload"] = payload
        self.add_update(update)

    @staticmethod
    def contact(user_id=None, phone=None, name="Иван Петров"):
        """A contact attachment as MAX sends one (a request_contact button's answer)."""
        payload = {"hash": "h%d" % (user_id or 0)}
        if phone is not None:
            payload["vcf_info"] = ("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:%s\r\nTEL;TYPE=cell:%s\r\nEND:VCARD\r\n"
                                   % (name, phone))
        if user_id is not None:
            payload["max_info"] = {"user_id": user_id, "first_name": name, "name": name, "is_bot": False}
        return {"type": "contact", "payload": payload}

    # --- answers ---------------------------------------------------------------------------------------------

    @staticmethod
    def error(status, code, message):
        return status, {"code": code, "message": message}, {}

    def route(self, method, path, record):
        if record["headers"].get("Authorization") != self.token:
            return self.error(401, "verify.token", "Invalid access_token")
        with self.lock:
            count, retry_after = self.rate_limit
            if count > 0:
                self.rate_limit = (count - 1, retry_after)
                return 429, {"code": "too.many.requests", "message": "Too many requests"}, (
                    {"Retry-After": retry_after} if retry_after is not None else {})
        if (method, path) == ("GET", "/me"):
            return 200, self.bot, {}
        if (method, path) == ("POST", "/messages"):
            return self.message(record)
        if (method, path) == ("GET", "/updates"):
            return self.poll(record["query"])
        return self.error(404, "not.found", "Path %s is not recognized" % path)

    def message(self, record):
        user_id, body = record["query"].get("user_id", ""), record["json"]
        if not user_id.isdigit():
            return self.error(400, "proto.payload", "user_id or chat_id is required")
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return self.error(400, "proto.payload", "Invalid request body")
        if units(body["text"]) > LIMIT:
            return self.error(400, "proto.payload", "text: size must be between 0 and 4000")
        if body.get("format") not in (None, "html", "markdown"):
            return self.error(400, "proto.payload", "format: unknown value")
        keyboard = self.keyboard(body.get("attachments"))
        if keyboard is False:
            return self.error(400, "proto.payload", "attachments: invalid inline keyboard")
        mid = "mid.%016x" % next(self._mids)
        self.sent.append((int(user_id), body["text"], body.get("format")))
        if keyboard:
            self.keyboards.append((int(user_id), body["text"], keyboard))
        return 200, {"message": {"sender": self.bot, "recipient": {"user_id": int(user_id), "chat_type": "dialog"},
                                 "timestamp": int(time.time() * 1000),
                                 "body": {"mid": mid, "seq": len(self.sent), "text": body["text"]}}}, {}

    @staticmethod
    def keyboard(attachments):
        """The buttons of an ``inline_keyboard`` attachment as [[(type, text)]] (None without attachments); False
        when the attachments are not what the schema's InlineKeyboardAttachmentRequest allows."""
        if attachments is None:
            return None
        try:
            [attachment] = attachments
            rows = attachment["payload"]["buttons"]
            buttons = [[(b["type"], b["text"]) for b in row] for row in rows]
        except (ValueError, TypeError, KeyError):
            return False
        if attachment.get("type") != "inline_keyboard" or not buttons or not all(buttons) or not all(
                isinstance(text, str) and 1 <= len(text) <= 128 for row in buttons for _, text in row):
            return False
        return buttons

    def poll(self, query):
        limit = int(query.get("limit") or 100)
        timeout = min(int(query.get("timeout") or 30), 90)
        types = set(filter(None, query.get("types", "").split(",")))
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if query.get("marker"):
                    self.committed = max(self.committed, int(query["marker"]))
                # Strict: an update once committed never comes again, even for an older marker (MAX's schema does
                # not promise it does), so a client that passes a marker it has not saved loses updates here.
                start = self.committed
                waiting = [(n, u) for n, u in self.updates if n >= start and (not types or u["update_type"] in types)]
                if waiting or time.monotonic() >= deadline or self.release.is_set():
                    taken = waiting[:limit]
                    after = taken[-1][0] + 1 if taken else max(start, self.committed)
                    return 200, {"updates": [u for _, u in taken], "marker": after}, {}
            time.sleep(POLL_STEP)
