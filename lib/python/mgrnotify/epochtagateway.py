"""The ePochta SMS gateway that ``gate/gwepochta`` runs: the ePochta client is ``epochta``, SMS counting ``sms``;
the script's docstring says what the gateway does. The class lives here, byte-compiled when installed, because the
script itself is compiled on every run.
"""

from .smsgateway import SmsGateway


class EpochtaGateway(SmsGateway):
    """ePochta SMS: send (outgoing), test the settings (check_connection), fill the form (formtune)."""

    # Each setting's value when its field is empty or absent (names fixed by etc/xml/billmgr_mod_gwepochta.xml),
    # and what formtune shows a new gateway; README's table and the form's hints say the same
    # (tests/test_defaults.py). Only an explicit "off" turns the certificate check off. An empty url means the
    # chosen interface's own address (mgrnotify.epochta.XML_URL or V3_URL); an empty max_parts, no limit.
    defaults = {"api": "xml", "timeout": "15", "verify_tls": "on"}
    APIS = ("xml", "v3")   # the default first, as in every choice list

    def outgoing(self, request):
        """One SMS to ``<user><phone>``, refused before sending if it is longer than ``max_parts``."""
        from mgrnotify import sms
        phone, text, length = self.message(request)
        settings = request.settings
        sender = settings.require("sender")
        with self.client(settings) as client:
            self.log.info("Sending SMS to %s from '%s': %s", phone, sender, sms.describe(length))
            answer = client.send(sender, text, phone)
        self.log.info("ePochta accepted SMS messageID=%s to %s (%s)",
                      answer.message_id or "(none in ePochta's answer)", phone, answer)

    def check_connection(self, request):
        """BALANCE with the entered settings; the balance goes to the log."""
        # The settings only sending reads are checked too, so a typo shows now and not at the first SMS.
        request.settings.require("sender")
        self.max_parts(request.settings)
        with self.client(request.settings) as client:
            answer = client.balance()
        self.log.info("ePochta balance: %s", answer)

    def formtune(self, form):
        """The ``api`` choice list, and the defaults of a new gateway."""
        from mgrnotify import form as settings_form
        return settings_form.tune(form, {"api": self.APIS}, self.defaults)

    def client(self, settings):
        """The ePochta client the settings ask for: the XML interface, or API 3.0 when ``api`` is v3."""
        from mgrnotify import epochta
        api = settings.choice("api", self.APIS, self.defaults["api"])
        options = dict(self.connection(settings), url=settings.get("url"))
        if api == "v3":
            return epochta.EpochtaV3(settings.require("public_key"), settings.secret("private_key"), **options)
        return epochta.EpochtaXML(settings.require("login"), settings.secret("password"), **options)
