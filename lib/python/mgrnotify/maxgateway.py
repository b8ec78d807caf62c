"""The MAX messenger gateway that ``gate/gwmax`` runs: the protocol is ``maxapi``; the script's docstring says what
each command does. The class lives here, byte-compiled when installed, because the script itself is compiled on
every run.
"""

from .errors import InputError
from .gateway import Gateway
from .runner import is_id

# The updates ingoing asks for; every other kind is skipped (and logged at level 9).
UPDATE_TYPES = ("message_created", "bot_started")


class Max(Gateway):
    """Messages to MAX users from the provider's bot (the ``token`` setting), and their replies back."""

    notify_module = "ntmax"

    # Each setting's value when its field is empty or absent, and what formtune shows a new gateway; README's
    # table and the form's hints say the same (tests/test_defaults.py). Only an explicit "off" turns the
    # certificate check off.
    defaults = {"url": "https://platform-api2.max.ru",   # maxapi.DEFAULT_URL (tests/test_gwmax.py holds them equal)
                "verify_tls": "on",
                "timeout": "15",            # seconds, for each request (a long poll gets receive_window more)
                "ticket_format": "#id",     # mgrnotify.tickets.DEFAULT_TICKET_FORMAT, what ntmax assumes
                "receive_window": "5"}      # seconds ingoing long-polls for updates
    max_timeout = 300
    max_receive_window = 300
    max_incoming = 100              # updates one ingoing call hands over; more wait for the next call
    ticket_formats = ("#id", "@id")   # the default first, as in every choice list

    lock = None      # ingoing's lock on this gateway's updates, held until the marker is saved
    marker = None    # (the marker file, the marker to save once the answer is out)

    def api(self, settings):
        """A ``maxapi.BotAPI`` with the gateway's token, url, timeout and verify_tls."""
        from . import maxapi
        return maxapi.BotAPI(settings.secret("token").strip(), settings.get("url") or self.defaults["url"],
                             timeout=settings.number("timeout", self.defaults["timeout"], 1, self.max_timeout),
                             verify_tls=settings.flag("verify_tls", self.defaults["verify_tls"]), log=self.log)

    def open_batch(self, request):
        """One connection to MAX for many messages (the ``outgoing_batch`` command of the base class)."""
        return Session(self, self.api(request.settings))

    def outgoing(self, request):
        """One message to the MAX user ``<max>`` (at the root, ISPsystem's format, or ``<user><max>``)."""
        with self.open_batch(request) as session:
            session.send(request.contact("max"), request.text("subject").strip(), request.text("message"),
                         request.text("request_contact").strip() or None)

    def ingoing(self, request):
        """What users sent the bot, for up to ``receive_window`` seconds: messages and bot starts, from the marker
        the last answered run saved (saved anew by ``finish``, once this answer is out)."""
        from . import statefile
        settings = request.settings
        window = settings.number("receive_window", self.defaults["receive_window"], 1, self.max_receive_window)
        api = self.api(settings)
        name = self.state_name(request)
        self.lock = statefile.FileLock(self.config.path("var", name + ".lock"))
        if not self.lock.acquire(api.timeout):
            self.log.warning("Another ingoing run of this gateway has held %s for over %d s; this run hands over "
                             "nothing, and the updates come with the next call", self.lock.path, api.timeout)
            return []
        path = self.config.path("var", name + ".marker")
        marker = read_marker(path, self.log)
        with api:
            updates, marker = self.poll(api, marker, window)
        self.marker = (path, marker)
        messages = [m for m in (self.incoming(u) for u in updates) if m is not None]
        self.log.info("Received %d update(s), %d handed over", len(updates), len(messages))
        return messages

    def poll(self, api, marker, window):
        """(the updates, the marker after them) of long polls for up to ``window`` seconds, each from the saved
        ``marker``: MAX takes every update before a marker passed as done, so no other marker is ever passed before
        the answer is out (``finish`` saves it). An answer too big for the client is asked for again with half the
        limit."""
        import math
        import time
        from .httppost import TooBig
        from .maxapi import POLL_LIMIT
        deadline = time.monotonic() + window
        limit = self.max_incoming
        while True:
            remaining = deadline - time.monotonic()
            try:
                updates, after = api.updates(marker, max(0, min(POLL_LIMIT, int(math.ceil(remaining)))), limit,
                                             UPDATE_TYPES)
            except TooBig:
                if limit == 1:
                    raise
                limit = max(1, limit // 2)
                self.log.warning("MAX's updates did not fit in one answer; asking for %d at a time", limit)
                continue
            if updates or remaining < 1:
                return updates, (after if updates else marker)

    def incoming(self, update):
        """(text, attributes) of one update for the answer (README, "gate/gwmax"), or None to skip it: an update of
        another kind, from a group chat or a bot, or of a shape MAX's schema does not give (logged, and passed over
        with the marker, so that one odd update never holds back the others)."""
        try:
            return self._incoming(update)
        except (AttributeError, TypeError, ValueError, KeyError) as e:
            self.log.warning("Skipped an update MAX gave in a shape gwmax does not know (%s: %s): %s",
                             type(e).__name__, e, str(update)[:500])
            return None

    def _incoming(self, update):
        from .maxapi import vcard_phones
        kind = update.get("update_type")
        if kind == "bot_started":
            user = update.get("user") or {}
            return self.message(user, "bot_started", "", update.get("payload") or "")
        if kind != "message_created":
            self.log.debug("Skipped an update of type %s", kind)
            return None
        message = update.get("message") or {}
        body = message.get("body") or {}
        sender = message.get("sender")
        if not isinstance(sender, dict) or not isinstance(body, dict):
            self.log.debug("Skipped a message without a sender (a channel's post)")
            return None
        chat_type = (message.get("recipient") or {}).get("chat_type")
        if chat_type not in (None, "dialog"):
            # A group chat the bot is in: its messages are not written to the bot, and must not be filed or answered.
            self.log.debug("Skipped a message in a %s, not in a dialog with the bot", chat_type)
            return None
        if sender.get("is_bot") is True:
            self.log.debug("Skipped a message from a bot (%s)", sender.get("user_id"))
            return None
        found = self.message(sender, "message", body.get("mid") or "", body.get("text") or "")
        if found is None:
            return None
        for attachment in body.get("attachments") or ():
            if isinstance(attachment, dict) and attachment.get("type") == "contact":
                payload = attachment.get("payload") or {}
                found[1]["contact_user_id"] = _text((payload.get("max_info") or {}).get("user_id"))
                # Every number the contact holds: ntmax links only a contact whose numbers are all one.
                found[1]["contact_phone"] = ", ".join(vcard_phones(payload.get("vcf_info"))) or None
                break
        return found

    def message(self, user, event, mid, text):
        """(text, attributes) from a MAX user object, or None (logged) when it has no user id."""
        user_id = _text(user.get("user_id")) if isinstance(user, dict) else None
        if user_id is None or not is_id(user_id):
            self.log.warning("Skipped a %s update without a sender's user id", event)
            return None
        name = user.get("name") or " ".join(filter(None, (user.get("first_name"), user.get("last_name"))))
        return str(text), {"from": user_id, "name": str(name) if name else None, "event": event, "id": str(mid)}

    def finish(self, answered):
        """Once the answer is out, save the marker after what it handed over; then let the next run in."""
        try:
            if answered and self.marker is not None and self.marker[1] is not None:
                from . import statefile   # here: --command features stays light
                path, marker = self.marker
                try:
                    statefile.replace_file(path, "%d\n" % int(marker))
                except (OSError, ValueError) as e:
                    # The answer is out already: a second document would corrupt it. The updates come again.
                    self.log.error("The updates were handed over, but the marker %s could not be saved in %s (%s); "
                                   "they will be handed over again", marker, path, e)
        finally:
            if self.lock is not None:
                self.lock.release()

    def state_name(self, request):
        """gwmax-<gateway id>: the name of the gateway's marker and lock in var/ [ours]; without an id (a request
        not from BILLmanager), a digest of the token, which names the bot."""
        gateway = request.text("gateway/id").strip()
        if gateway.isdigit():
            return "gwmax-" + gateway
        import hashlib
        return "gwmax-" + hashlib.sha1(request.settings.secret("token").strip().encode("utf-8")).hexdigest()[:16]

    def formtune(self, form):
        """The ``ticket_format`` choice list, and the defaults of a new gateway."""
        from . import form as settings_form
        return settings_form.tune(form, {"ticket_format": self.ticket_formats}, self.defaults)

    def check_connection(self, request):
        """Ask MAX who the bot is with the entered settings (and check the others); the error says what is wrong."""
        settings = request.settings
        settings.number("receive_window", self.defaults["receive_window"], 1, self.max_receive_window)
        settings.choice("ticket_format", self.ticket_formats, self.defaults["ticket_format"])
        with self.api(settings) as api:
            bot = api.me()
        self.log.info("The token belongs to the MAX bot '%s' (@%s, user id %s)", bot.get("name") or "",
                      bot.get("username") or "", bot.get("user_id"))


class Session:
    """One connection to MAX that sends many messages (``outgoing_batch``) and one (``outgoing``)."""

    def __init__(self, gateway, api):
        self.gateway = gateway
        self.api = api

    def send(self, to, subject, body, contact_button=None):
        """Send one message: HTML when the template made HTML (the subject a bold first line), else plain text; with
        ``contact_button`` (ntmax's ``<request_contact>``), the button that shares the user's contact under it."""
        from html import escape
        from .mail import looks_like_html
        to = to.strip()
        if not to:
            raise InputError("The message has no recipient: the user's MAX id (<max>) is empty", obj="max")
        if not is_id(to):
            raise InputError("The recipient '%s' is not a MAX user id (digits)" % to, obj="max", value=to)
        if not body.strip():
            raise InputError("The message to MAX user %s is empty; there is nothing to send" % to, obj="message")
        markup = "html" if looks_like_html(body) else None
        if subject:
            body = ("<b>%s</b>\n%s" % (escape(subject, quote=False), body) if markup else
                    "%s\n\n%s" % (subject, body))
        ids = self.api.send(to, body, markup, contact_button)
        self.gateway.log.info("MAX accepted the message to user %s%s: %s", to, " (HTML)" if markup else "",
                              ", ".join(mid or "(no id in the answer)" for mid in ids))

    def close(self):
        """Close the connection."""
        self.api.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_marker(path, log):
    """The saved marker (a number), or None when there is none yet or it is unreadable (then logged)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    log.warning("The marker file %s holds '%s', not a number; MAX hands over what it has not handed over yet",
                path, text[:40])
    return None


def _text(value):
    """An id from JSON as text (MAX's ids are numbers), or None."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    return str(value)
