"""The HTTP SMS gateway that ``gate/gwhttpsms`` runs: the providers' rules are ``httpsms``, SMS counting ``sms``;
the script's docstring says what the gateway does. The class lives here, byte-compiled when installed, because the
script itself is compiled on every run.
"""

from .smsgateway import SmsGateway


class HttpSmsGateway(SmsGateway):
    """SMS through SMS.ru, SMSC.ru, SMS Aero, MTS Exolve or a custom HTTP API: outgoing, check_connection, formtune."""

    # Each setting's value when its field is empty or absent (names fixed by the issue and
    # etc/xml/billmgr_mod_gwhttpsms.xml), and what formtune shows a new gateway. Only an explicit "off" turns the
    # certificate check off. An empty url means the preset's own address (mgrnotify.httpsms.PRESETS); an empty
    # max_parts, no limit. method and content_type are the custom mode's.
    defaults = {"preset": "smsru", "timeout": "15", "verify_tls": "on", "method": "POST", "content_type": "form"}
    PRESETS = ("smsru", "smsc", "smsaero", "exolve", "custom")   # the default first, as in every choice list

    def outgoing(self, request):
        """One SMS to ``<user><phone>``, refused before sending if it is longer than ``max_parts``."""
        from mgrnotify import sms
        phone, text, length = self.message(request)
        service = self.service(request.settings)
        sender = request.settings.get("sender") or service.rules.sender_default
        self.log.info("Sending SMS to %s through %s from '%s': %s", phone, service.rules.service,
                      sender or "(the account's default)", sms.describe(length))
        answer = service.send(phone, text, sender)
        self.log.info("%s accepted SMS id=%s to %s", service.rules.service,
                      answer.message_id or "(none in the answer)", phone)

    def check_connection(self, request):
        """The balance with the entered settings, into the log; the settings only sending reads are checked too."""
        settings = request.settings
        self.max_parts(settings)
        service = self.service(settings)
        answer = service.balance()
        if answer is None:
            self.log.info("No balance_url: the settings are checked, %s was not asked", service.rules.service)
        else:
            self.log.info("%s balance: %s", service.rules.service, answer.balance)

    def formtune(self, form):
        """The choice lists (preset, method, content_type), and the defaults of a new gateway."""
        from mgrnotify import form as settings_form
        from mgrnotify import httpsms
        return settings_form.tune(form, {"preset": self.PRESETS, "method": httpsms.METHODS,
                                         "content_type": httpsms.CONTENT_TYPES}, self.defaults)

    def service(self, settings):
        """The ``httpsms.SmsService`` the settings describe: a preset's rules, or the custom mode's."""
        from mgrnotify import httpsms
        preset = settings.choice("preset", self.PRESETS, self.defaults["preset"])
        values = {name: settings.get(name) for name in ("login", "sender")}
        values.update((name, settings.values.get(name) or "") for name in ("password", "api_key"))
        options = self.connection(settings)
        if preset != "custom":
            return httpsms.SmsService(httpsms.PRESETS[preset], values, base=settings.get("url") or None, **options)
        rules = httpsms.custom_rules(
            settings.require("url"), settings.get("method", self.defaults["method"]).upper(),
            settings.get("content_type", self.defaults["content_type"]), settings.get("body"),
            settings.values.get("headers") or "", settings.require("success"), settings.get("message_id"),
            settings.get("error_text"), settings.get("balance_url"))
        return httpsms.SmsService(rules, values, preset=False, **options)
