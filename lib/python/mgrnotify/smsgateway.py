"""The base of the SMS gateways for BILLmanager's built-in ntsms (gwepochta, gwhttpsms): what every SMS passes
before any money is spent, and the settings every SMS gateway reads the same way."""

from .gateway import Gateway


class SmsGateway(Gateway):
    """An ntsms gateway: the recipient's digits, the text and its parts checked against ``max_parts``; ``timeout``."""

    notify_module = "ntsms"
    defaults = {"timeout": "15", "verify_tls": "on"}
    TIMEOUT_RANGE = (1, 300)
    MAX_PARTS_RANGE = (1, 100)

    def message(self, request):
        """(the phone's digits, the text, its ``sms.Length``) of the SMS ``request`` asks for; the errors of
        ``sms.checked`` when it may not go."""
        from mgrnotify import sms   # here, not at the top: --command features stays fast
        text = request.text("message")
        phone, length = sms.checked(request.contact("phone"), text, self.max_parts(request.settings))
        return phone, text, length

    def max_parts(self, settings):
        """The most parts an SMS may have, or None for no limit."""
        return settings.number("max_parts", None, *self.MAX_PARTS_RANGE)

    def connection(self, settings):
        """``timeout`` and ``verify_tls`` as the HTTP clients take them (keyword arguments), with the log."""
        return dict(timeout=settings.number("timeout", self.defaults["timeout"], *self.TIMEOUT_RANGE),
                    verify_tls=settings.flag("verify_tls", self.defaults["verify_tls"]), log=self.log)
