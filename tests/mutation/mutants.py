"""The mutants ``make mutate`` plants, one at a time, in a copy of the repository (tests/mutation/run.py).

A row is one small, realistic bug in the delivery and security core: the file, the exact text it replaces (which
must occur exactly once in that file, so a row that no longer matches the code is refused, never silently
skipped), the text put in its place, what the bug would mean for a BILLmanager installation, and the tests that
must fail because of it. ``issue`` marks the bugs issue 15 names (its table of survivors, and the journal's
flush the SIGKILL test must catch on every run): the run fails if any of them lives.

A new module adds its rows here (its TLS, its login, its refusals), with its own test files as the selection.
"""

QUEUE = "lib/python/mgrnotify/queue.py"
NOTIFY = "lib/python/mgrnotify/notify.py"
TICKETS = "lib/python/mgrnotify/tickets.py"
REDACT = "lib/python/mgrnotify/redact.py"
LOG = "lib/python/mgrnotify/log.py"
SETTINGS = "lib/python/mgrnotify/settings.py"
XMPP = "lib/python/mgrnotify/xmpp.py"
SMTP = "lib/python/mgrnotify/smtp.py"
MAILBOX = "lib/python/mgrnotify/mailbox.py"
HTTPPOST = "lib/python/mgrnotify/httppost.py"
EPOCHTA = "lib/python/mgrnotify/epochta.py"
SMS = "lib/python/mgrnotify/sms.py"
MAIL = "lib/python/mgrnotify/mail.py"
DB = "lib/python/mgrnotify/db.py"
EPOCHTA_GATEWAY = "lib/python/mgrnotify/epochtagateway.py"
MAIL_GATEWAY = "lib/python/mgrnotify/mailgateway.py"
HTTPSMS = "lib/python/mgrnotify/httpsms.py"
MAXLINK = "lib/python/mgrnotify/maxlink.py"


class Mutant:
    """One planted bug: ``old`` in ``path`` becomes ``new``; ``tests`` (pytest arguments) must fail."""

    def __init__(self, id, path, old, new, meaning, tests, issue=False):
        self.id, self.path, self.old, self.new = id, path, old, new
        self.meaning, self.tests, self.issue = meaning, list(tests), issue


MUTANTS = [
    # --- the eight that survived once (issue 15's table) ---------------------------------------------------
    Mutant("xmpp-scram-unverified", XMPP,
           "            scram.verify(server_final)\n", "",
           "a server that does not know the password is accepted (SCRAM server signature never checked)",
           ["tests/test_xmpp.py", "tests/test_gwjabber.py"], issue=True),
    Mutant("xmpp-no-hostname-check", XMPP,
           "context = tls.context(self.verify_tls, self.cafile)\n",
           "context = tls.context(self.verify_tls, self.cafile)\n        context.check_hostname = False\n",
           "any trusted certificate is accepted for any XMPP domain",
           ["tests/test_xmpp.py", "tests/test_gwjabber.py"], issue=True),
    Mutant("gwjabber-verify-default-off", "lib/python/mgrnotify/jabbergateway.py",
           '"verify_tls": "on",', '"verify_tls": "off",',
           "certificate checks silently off for a Jabber gateway whose verify_tls field is empty",
           ["tests/test_gwjabber.py", "tests/test_defaults.py"], issue=True),
    Mutant("tickets-format-ignored", TICKETS,
           "prefix = (ticket_format or DEFAULT_TICKET_FORMAT)[0]\n    text = text.strip()",
           'prefix = "#"\n    text = text.strip()',
           "a provider who chose @id has every reply rejected",
           ["tests/test_ntjabber.py", "tests/test_queue.py", "tests/test_library.py"], issue=True),
    Mutant("tickets-default-format", TICKETS,
           'DEFAULT_TICKET_FORMAT = "#id"', 'DEFAULT_TICKET_FORMAT = "@id"',
           "replies rejected when the gateway's ticket_format field is empty",
           ["tests/test_ntjabber.py", "tests/test_queue.py", "tests/test_library.py"], issue=True),
    Mutant("queue-error-count-reset", QUEUE,
           "SET error_count = error_count + 1,", "SET error_count = 1,",
           "a failing task is retried forever and never reaches staff",
           ["tests/test_queue.py"], issue=True),
    Mutant("settings-range-high-exclusive", SETTINGS,
           "(high is not None and number > high)", "(high is not None and number >= high)",
           "the largest allowed value (port 65535, the longest timeout) refused",
           ["tests/test_library.py", "tests/test_defaults.py"], issue=True),
    Mutant("queue-batch-limit-plus-one", QUEUE,
           "tasks = self.db.query(sql, params + [self.batch_size])",
           "tasks = self.db.query(sql, params + [self.batch_size + 1])",
           "batches of 101 tasks, not the documented 100",
           ["tests/test_queue.py"], issue=True),

    # --- queue and journal ---------------------------------------------------------------------------------
    Mutant("queue-journal-not-flushed", QUEUE,
           '        self._journal.write(json.dumps(entry) + "\\n")\n        self._journal.flush()\n',
           '        self._journal.write(json.dumps(entry) + "\\n")\n',
           "a killed run loses the outcomes still in its buffer: delivered notifications are sent again",
           ["tests/test_queue.py"], issue=True),
    Mutant("queue-killed-journal-not-applied-first", NOTIFY,
           "        delivered, failed = queue.commit()   # what a killed run left in the journal\n"
           "        if delivered or failed:\n"
           '            self.log.info("Applied an interrupted run\'s journal: %d delivered, %d failed", delivered, '
           "failed)\n",
           "",
           "what a killed run delivered is taken and sent again before its journal is applied",
           ["tests/test_queue.py"]),
    Mutant("queue-failure-counted-twice", QUEUE,
           "        if task.count is not None:\n            sql += \" AND error_count = ?\"",
           "        if task.count is None:\n            sql += \" AND error_count = ?\"",
           "a journal applied twice (a kill, a failed update) counts one failure twice",
           ["tests/test_queue.py"]),
    Mutant("queue-cursor-retakes-last", QUEUE,
           "(COALESCE(priority, 0) = ? AND id > ?)", "(COALESCE(priority, 0) = ? AND id >= ?)",
           "the last task of a batch is taken again in the same run: a failing one is tried twice per run",
           ["tests/test_queue.py"]),

    # --- partial delivery ----------------------------------------------------------------------------------
    Mutant("partial-delivery-not-marked", QUEUE,
           "            if task.sent and task.total is not None:\n"
           "                self._keep_undelivered(task.file, task.sent)\n",
           "",
           "a file partly delivered is sent whole on the retry: its delivered notices go twice",
           ["tests/test_queue.py"]),
    Mutant("partial-delivery-marks-shifted", "lib/python/mgrnotify/notification.py",
           'for index, notify in enumerate(root.findall("notify")):\n        if index in indexes',
           'for index, notify in enumerate(root.findall("notify"), 1):\n        if index in indexes',
           "the notice after the delivered one is marked: one notice goes twice, another never",
           ["tests/test_queue.py"]),

    # --- lock ----------------------------------------------------------------------------------------------
    Mutant("lock-shared", QUEUE,
           "fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)",
           "fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)",
           "two process runs work on the queue at once and send the same notifications",
           ["tests/test_queue.py", "tests/test_doctor.py"]),

    # --- DoNothing and forcedonothing ----------------------------------------------------------------------
    Mutant("donothing-ignored-by-process", NOTIFY,
           "        forced_only = self.config.do_nothing()\n", "        forced_only = False\n",
           "notifications go out while BILLmanager migrates data (etc/billmgr.DoNothing)",
           ["tests/test_queue.py", "tests/test_gateway_choice.py"]),
    Mutant("forcedonothing-ignored", NOTIFY,
           '            self.log.info("etc/billmgr.DoNothing exists: only tasks with forcedonothing are sent")\n',
           '            self.log.info("etc/billmgr.DoNothing exists: only tasks with forcedonothing are sent")\n'
           "            return\n",
           "under DoNothing even the tasks BILLmanager forces are held back",
           ["tests/test_queue.py"]),
    Mutant("donothing-ignored-by-getmessage", NOTIFY,
           "no incoming messages are fetched while data is migrated\")\n            return\n",
           "no incoming messages are fetched while data is migrated\")\n",
           "incoming messages are filed into tickets while BILLmanager migrates data",
           ["tests/test_gateway_choice.py", "tests/test_ntjabber.py"]),

    # --- gateway choice ------------------------------------------------------------------------------------
    Mutant("gateway-all-providers-first", "lib/python/mgrnotify/gatewaycall.py",
           "return own or [g for g in usable if g.all_providers]",
           "return [g for g in usable if g.all_providers] or own",
           "a provider's own gateway is passed over for the one meant for all providers",
           ["tests/test_gateway_choice.py"]),
    Mutant("gateway-inactive-used", "lib/python/mgrnotify/gatewaycall.py",
           "usable = sorted((g for g in gateways if g.active and g.type == OUTGOING), key=_id_order)",
           "usable = sorted((g for g in gateways if g.type == OUTGOING), key=_id_order)",
           "notifications go through a gateway the admin switched off",
           ["tests/test_gateway_choice.py", "tests/test_queue.py"]),
    Mutant("gateway-highest-id", "lib/python/mgrnotify/gatewaycall.py",
           "g.type == OUTGOING), key=_id_order)", "g.type == OUTGOING), key=_id_order, reverse=True)",
           "of several gateways the newest is used, not the lowest id the log and README promise",
           ["tests/test_gateway_choice.py"]),

    # --- tickets and their authorisation -------------------------------------------------------------------
    Mutant("tickets-any-account", TICKETS,
           '"SELECT id FROM ticket WHERE id = ? AND account_client = ?", (ticket, user["account"])',
           '"SELECT id FROM ticket WHERE id = ?", (ticket,)',
           "anyone with a linked address writes into any client's ticket",
           ["tests/test_ntjabber.py", "tests/test_queue.py", "tests/test_hostile_values.py"]),
    Mutant("tickets-empty-sender", TICKETS,
           "        if not contact or not users:\n", "        if not users:\n",
           "a message with no sender address is filed as a user whose contact field is empty",
           ["tests/test_ntjabber.py", "tests/test_queue.py", "tests/test_hostile_values.py"]),

    # --- redaction and the logger --------------------------------------------------------------------------
    Mutant("redact-authentification-dropped", REDACT,
           '("authentification", "authorization", "credential")', '("authorization", "credential")',
           "ePochta's credential block is written to the debug log",
           ["tests/test_redact.py", "tests/test_library.py", "tests/test_gwepochta.py"]),
    Mutant("redact-short-secret-limit", REDACT,
           "SHORT_SECRET = 4\n", "SHORT_SECRET = 5\n",
           "a four-character password is masked only where it stands alone: inside a longer word it is logged",
           ["tests/test_redact.py", "tests/test_library.py"]),
    Mutant("redact-escaped-forms-dropped", REDACT,
           'for form in (secret, escaped, escaped.replace(\'"\', "&quot;"), quote(secret, safe=""), '
           "quote_plus(secret)):",
           "for form in (secret, escaped):",
           "a remembered secret shows in the log URL-encoded or attribute-escaped",
           ["tests/test_redact.py", "tests/test_library.py"]),
    Mutant("log-redacts-format-not-line", LOG,
           "        if args:\n            text = text % args\n        text = _redacted_and_cut(str(text))\n",
           "        text = _redacted_and_cut(str(text))\n        if args:\n            text = text % args\n",
           "the logger redacts the format string, not the line: every value passed as an argument is written raw",
           ["tests/test_redact.py", "tests/test_library.py", "tests/test_runner.py"]),
    Mutant("settings-secrets-not-remembered", SETTINGS,
           "            if redact.is_secret(name):\n                redact.remember(value)\n",
           "            if redact.is_secret(name):\n                pass\n",
           "a gateway password echoed by a server (an error, a debug exchange) is logged",
           ["tests/test_redact.py", "tests/test_library.py", "tests/test_runner.py"]),

    # --- settings defaults and ranges ----------------------------------------------------------------------
    Mutant("settings-range-low-exclusive", SETTINGS,
           "(low is not None and number < low)", "(low is not None and number <= low)",
           "the smallest allowed value (a timeout of 1 s, port 1) refused",
           ["tests/test_library.py", "tests/test_defaults.py"]),
    Mutant("gwepochta-verify-default-off", EPOCHTA_GATEWAY,
           '"verify_tls": "on"}', '"verify_tls": "off"}',
           "SMS credentials go to any server posing as ePochta when verify_tls is empty",
           ["tests/test_gwepochta.py", "tests/test_defaults.py"]),
    Mutant("gwmail-verify-default-off", MAIL_GATEWAY,
           '                "verify_tls": "on",\n', '                "verify_tls": "off",\n',
           "mail passwords go to any server when verify_tls is empty",
           ["tests/test_gwmail.py", "tests/test_defaults.py"]),

    # --- TLS and SASL in every client ----------------------------------------------------------------------
    Mutant("xmpp-plain-in-clear", XMPP,
           '(mechanism != "PLAIN" or self.encrypted or self.allow_plain)',
           '(mechanism != "PLAIN" or self.encrypted or not self.allow_plain)',
           "the XMPP password is sent in clear (PLAIN without TLS)",
           ["tests/test_xmpp.py", "tests/test_gwjabber.py"]),
    Mutant("xmpp-missing-starttls-accepted", XMPP,
           "            if starttls is None:\n                raise TLSError(",
           "            if starttls is None and self.allow_plain:\n                raise TLSError(",
           "a server (or a man in the middle) that offers no STARTTLS gets the password in clear",
           ["tests/test_xmpp.py", "tests/test_gwjabber.py"]),
    Mutant("smtp-ssl-unverified", SMTP,
           "local_hostname=ehlo_name(), timeout=self.timeout,\n"
           "                                             context=tls.context(self.verify_tls))",
           "local_hostname=ehlo_name(), timeout=self.timeout,\n"
           "                                             context=tls.context(False))",
           "SMTP over implicit TLS accepts any certificate",
           ["tests/test_gwmail.py", "tests/test_gateway_faults.py"]),
    Mutant("smtp-starttls-unverified", SMTP,
           "self.smtp.starttls(context=tls.context(self.verify_tls))",
           "self.smtp.starttls(context=tls.context(False))",
           "SMTP with STARTTLS accepts any certificate",
           ["tests/test_gwmail.py", "tests/test_gateway_faults.py"]),
    Mutant("smtp-auth-plain-fields", SMTP,
           'self.smtp.docmd("AUTH", "PLAIN " + encoded("", user, password))',
           'self.smtp.docmd("AUTH", "PLAIN " + encoded(user, "", password))',
           "SMTP AUTH PLAIN sends the login as the authorisation identity: every server refuses it",
           ["tests/test_gwmail.py"]),
    Mutant("imap-ssl-unverified", MAILBOX,
           "imaplib.IMAP4_SSL(self.host, self.port, ssl_context=tls.context(self.verify_tls))",
           "imaplib.IMAP4_SSL(self.host, self.port, ssl_context=tls.context(False))",
           "IMAP over TLS accepts any certificate",
           ["tests/test_gwmail.py"]),
    Mutant("imap-authenticate-plain-fields", MAILBOX,
           'credentials = b"\\0".join(text.encode("utf-8") for text in ("", user, password))',
           'credentials = b"\\0".join(text.encode("utf-8") for text in (user, "", password))',
           "IMAP AUTHENTICATE PLAIN sends a malformed message: a password that is not ASCII never logs in",
           ["tests/test_gwmail.py"]),
    Mutant("pop3-ssl-unverified", MAILBOX,
           "timeout=self.timeout,\n                                           context=tls.context(self.verify_tls))",
           "timeout=self.timeout,\n                                           context=tls.context(False))",
           "POP3 over TLS accepts any certificate",
           ["tests/test_gwmail.py"]),
    Mutant("https-unverified", HTTPPOST,
           "            context = tls.context(self.verify_tls)\n",
           "            context = tls.context(False)\n",
           "ePochta's (and every HTTPS API's) certificate never checked",
           ["tests/test_gwepochta.py", "tests/test_gateway_faults.py"]),
    Mutant("tls-cafile-skips-hostname", "lib/python/mgrnotify/tls.py",
           "        return ssl.create_default_context(cafile=cafile)\n",
           "        trusted = ssl.create_default_context(cafile=cafile)\n"
           "        trusted.check_hostname = False\n"
           "        return trusted\n",
           "with a CA file configured, a certificate for any name is accepted",
           ["tests/test_xmpp.py", "tests/test_gwjabber.py", "tests/test_gateway_faults.py"]),

    # --- ePochta statuses and SMS counting -----------------------------------------------------------------
    Mutant("epochta-login-refusal-accepted", EPOCHTA,
           "        if answer.status < 0:\n            values = dict(",
           "        if answer.status < -1:\n            values = dict(",
           "a refused login (status -1) counts as success: check_connection says the settings work",
           ["tests/test_gwepochta.py"]),
    Mutant("epochta-zero-accepted", EPOCHTA,
           "        if answer.status <= 0:\n", "        if answer.status < 0:\n",
           "an SMS ePochta accepted for no recipient (status 0) counts as delivered",
           ["tests/test_gwepochta.py"]),
    Mutant("sms-extension-one-septet", SMS,
           "costs = [2 if c in GSM7_EXTENSION else 1 for c in text]", "costs = [1 for c in text]",
           "texts with [ ] { } € are billed as more parts than max_parts allows",
           ["tests/test_gwepochta.py"]),
    Mutant("sms-single-limit-exclusive", SMS,
           "    if sum(costs) <= single:\n", "    if sum(costs) < single:\n",
           "a 160-character SMS is counted as two parts and refused by max_parts 1",
           ["tests/test_gwepochta.py"]),

    # --- header building -----------------------------------------------------------------------------------
    Mutant("mail-header-keeps-line-breaks", MAIL,
           '" ".join("".join(c if c.isprintable() else " " for c in decode_words(value)).split())',
           'decode_words(value).replace("\\r\\n", " ")',
           "only CRLF is taken out of a subject or name: a lone LF, CR or U+2028 starts a header of its own",
           ["tests/test_gwmail.py"]),
    Mutant("mail-plain-encoded-word", MAIL,
           'all(" " < c <= "~" for c in word) and "=?" not in word', 'all(" " < c <= "~" for c in word)',
           "'=?...?=' typed in a subject goes out raw and a mail reader decodes it",
           ["tests/test_gwmail.py"]),
    Mutant("mail-guard-not-called", MAIL,
           "    check(data, list(message.raw_items()))\n", "",
           "a header block holding a line gwmail did not write is sent",
           ["tests/test_gwmail.py"]),

    # --- value binding in the database layer ---------------------------------------------------------------
    Mutant("db-literal-quoted", DB,
           """return "_utf8mb4 X'%s'" % text.encode("utf-8", "replace").hex() if text else "''\"""",
           """return "'%s'" % text.replace("'", "''") if text else "''\"""",
           "a backslash in any value breaks the statement or changes another column (SQL injection)",
           ["tests/test_db.py"]),
    Mutant("db-bind-ignores-quotes", DB,
           """re.compile(r\"\"\"'(?:[^'\\\\]|\\\\.|'')*'|\"(?:""",
           """re.compile(r\"\"\"\"(?:""",
           "a '?' inside a quoted string takes a parameter meant for a placeholder",
           ["tests/test_db.py"]),
    Mutant("db-infinity-stored", DB,
           "        if not math.isfinite(value):\n", "        if math.isnan(value):\n",
           "infinity is written into the statement as 'inf', which MariaDB reads as a column name",
           ["tests/test_db.py"]),

    # --- pipelined delivery (issue 16) ------------------------------------------------------------------
    Mutant("batch-window-unbounded", "lib/python/mgrnotify/gateway.py",
           "        while windowed and len(self.on_the_way) >= max(1, self.session.window):\n",
           "        while windowed and len(self.on_the_way) >= 1000:\n",
           "a run killed mid-batch leaves a whole batch delivered and unrecorded: up to 100 duplicates, not 32",
           ["tests/test_ntjabber.py::test_sigkill_mid_window_loses_nothing_and_repeats_at_most_the_window"]),
    Mutant("jabber-stream-end-fails-the-window", "lib/python/mgrnotify/jabbergateway.py",
           "        if isinstance(error, StreamEnded):\n", "        if False:\n",
           "one message too big for the server fails every message on its way with it, in every run, until all "
           "of them are left for staff",
           ["tests/test_gwjabber.py", "tests/test_hostile_values.py"]),
    Mutant("xmpp-confirm-ignores-bounce", XMPP,
           "done.append((message_id, self._failures.pop(message_id, None)))",
           "done.append((message_id, None))",
           "a message the server bounced (no such user) counts as delivered and leaves the queue",
           ["tests/test_gwjabber.py", "tests/test_ntjabber.py"]),
    Mutant("xmpp-confirm-takes-later-pings", XMPP,
           "                        if ping_id == stanza.get(\"id\"):\n                            break\n",
           "",
           "one ping's answer confirms every message on its way, those the server has not handled yet included",
           ["tests/test_gwjabber.py", "tests/test_ntjabber.py", "tests/test_xmpp.py"]),
    # --- gwhttpsms (issue 17) --------------------------------------------------------------------------
    Mutant("httpsms-smsru-number-unread", HTTPSMS,
           '("sms.{phone}.status", "OK"),\n                 ("sms.{phone}.status_code", "100")],',
           '],',
           "an SMS that SMS.ru refused for the number (code 207, HTTP 200) counts as sent and leaves the queue",
           ["tests/test_gwhttpsms.py"]),
    Mutant("httpsms-4xx-body-ignored", HTTPSMS,
           "            data, status = e.body, e.status\n",
           "            raise\n",
           "SMS Aero's and Exolve's refusals lose their reason: the admin reads 'HTTP 400' instead of the cause",
           ["tests/test_gwhttpsms.py"]),
    Mutant("httpsms-form-unescaped", HTTPSMS,
           "        return quote_plus(value)\n", "        return value\n",
           "a custom form body cuts the text at its first '&' and turns '+' into a space",
           ["tests/test_gwhttpsms.py"]),
    Mutant("httpsms-401-not-credentials", HTTPSMS,
           "        if status in CREDENTIAL_STATUSES or code in self.rules.credential_codes:\n",
           "        if code in self.rules.credential_codes:\n",
           "SMS Aero's refusal of the credentials (HTTP 401) reads as a refused SMS, not as settings to fix",
           ["tests/test_gwhttpsms.py"]),
    Mutant("httpsms-smsc-charset-dropped", HTTPSMS,
           '("fmt", "3", False), ("charset", "utf-8", False)]),', '("fmt", "3", False)]),',
           "SMSC.ru reads the UTF-8 text as windows-1251: every Cyrillic SMS arrives as mojibake",
           ["tests/test_gwhttpsms.py"]),
    Mutant("httpsms-exolve-bearer-dropped", HTTPSMS,
           '("text", "{message}", False)],\n                [("Authorization", "Bearer {api_key}")]),',
           '("text", "{message}", False)],\n                [("Authorization", "{api_key}")]),',
           "Exolve gets the key without its Bearer scheme and refuses every SMS as unauthorised",
           ["tests/test_gwhttpsms.py"]),
    Mutant("httpsms-json-unescaped", HTTPSMS,
           "        return json.dumps(value)[1:-1]\n", "        return value\n",
           "a custom JSON body with a quote or a newline in the text is not JSON: the provider refuses every such SMS",
           ["tests/test_gwhttpsms.py"]),
    Mutant("redact-api-id-dropped", REDACT,
           '_WHOLE_NAMES = ("auth", "api_id", "psw")', '_WHOLE_NAMES = ("auth", "psw")',
           "SMS.ru's api_id in a request is logged when it is not a remembered setting",
           ["tests/test_redact.py"]),
    Mutant("redact-authorization-scheme-only", REDACT,
           "            stop = credential.end() if credential else stop\n", "",
           "an Authorization header is masked up to its scheme and the credential after it is logged",
           ["tests/test_redact.py"]),
    # --- ntmax's linking (issue 18) -------------------------------------------------------------------------
    Mutant("maxlink-forwarded-contact-links", MAXLINK,
           "        if contact_user != sender:\n", "        if not contact_user:\n",
           "a forwarded contact links the forwarder to the victim's account: the victim's notices go to a stranger",
           ["tests/test_ntmax.py"]),
    Mutant("maxlink-contact-without-user-links", MAXLINK,
           "        if contact_user != sender:\n", "        if contact_user and contact_user != sender:\n",
           "a contact with no MAX user in it (any phone typed into an address book) links whoever sends it",
           ["tests/test_ntmax.py"]),
    Mutant("maxlink-ambiguous-phone-links-first", MAXLINK,
           "        if len(users) > 1:\n", "        if len(users) > 99:\n",
           "a phone several users share links the first of them: notices of one go to another's MAX",
           ["tests/test_ntmax.py"]),
    Mutant("maxlink-link-taken-over", MAXLINK,
           '        if user["linked"]:\n', '        if user["linked"] and False:\n',
           "anyone with the phone in a contact takes over an account already linked to another MAX user",
           ["tests/test_ntmax.py"]),
    Mutant("maxlink-link-not-read-back", MAXLINK,
           '        if [u["id"] for u in self.users_linked_to(sender)] != [user["id"]]:\n',
           "        if False:\n",
           "the client is told 'linked' when BILLmanager stored nothing, and never gets a notice",
           ["tests/test_ntmax.py"]),
    Mutant("maxlink-phone-suffix-match", MAXLINK,
           "                if normalize_phone(user[\"phone\"] or \"\") == digits:\n",
           "                if normalize_phone(user[\"phone\"] or \"\").endswith(digits[-7:]):\n",
           "a phone with the same last digits in another country links another user's account",
           ["tests/test_ntmax.py"]),
    Mutant("ntmax-strangers-filed", MAXLINK,
           "        if attrs.get(\"event\") == \"bot_started\" or text.split()[:1] == [\"/start\"] or not linked:\n",
           "        if attrs.get(\"event\") == \"bot_started\" or text.split()[:1] == [\"/start\"]:\n",
           "a sender linked to nobody gets TicketDesk's generic answer, not the instructions to link",
           ["tests/test_ntmax.py"]),
]
