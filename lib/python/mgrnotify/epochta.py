"""ePochta (AtomPark) SMS clients: the XML interface, and the signed JSON "API 3.0".

The XML interface: one HTTPS POST per request, the form field ``XML`` holding a document such as

    <SMS><operations><operation>SEND</operation></operations>
    <authentification><username>..</username><password>..</password></authentification>
    <message><sender>..</sender><text><![CDATA[..]]></text></message>
    <numbers><number messageID="..">380972920000</number></numbers></SMS>

answered by ``<RESPONSE><status>N</status><credits>..</credits>..</RESPONSE>``: for SEND the number
of messages accepted, for BALANCE 0, and a negative status for a refusal. API 3.0 posts named
values signed with an md5 ``sum`` to ``.../sms/3.0/<action>`` and answers JSON: ``{"result": ..}``
or ``{"error": .., "code": ..}``.

``EpochtaXML`` and ``EpochtaV3`` offer the same verbs, ``send`` and ``balance``; ePochta's refusals
and unreadable answers raise ``EpochtaError`` subclasses, network failures ``httppost.PostError``.
Neither the password nor the private key is ever logged: the logged request carries ``***``.
"""

import os
import time

from . import httppost, redact, xmlio
from .errors import ConnectError, DeliveryError, MgrNotifyError

XML_URL = "https://api.myatompark.com/members/sms/xml.php"
V3_URL = "https://api.atompark.com/sms/3.0/"
V3_VERSION = "3.0"
DEFAULT_TIMEOUT = 15
SERVICE = "ePochta"
MASK = "***"


class Answer:
    """What ePochta answered: status, the message's id (send), credits, amount and currency, as it gave them."""

    def __init__(self, status, message_id=None, credits=None, amount=None, currency=None):
        self.status = status
        self.message_id = message_id
        self.credits = credits
        self.amount = amount
        self.currency = currency

    def __str__(self):
        """The figures ePochta gave, for the log: 'status 1, credits 0.24'."""
        figures = [("status", self.status), ("credits", self.credits),
                   ("amount", " ".join(str(v) for v in (self.amount, self.currency) if v is not None) or None)]
        return ", ".join("%s %s" % (name, value) for name, value in figures if value is not None)


# ePochta's negative statuses as sentences, the five its XML interface documents (docs/PROTOCOLS.md);
# {login}, {sender}, {numbers} are filled in. Any other negative status gets OTHER_STATUS, which names the request and the status.
STATUS_MESSAGES = {
    -1: "ePochta refused the login for user '{login}' (status -1); check the login and password, and that "
        "the XML interface is switched on in the ePochta account",
    -2: "ePochta could not read the request (status -2, malformed XML); this is a defect of the gateway "
        "module: report it with the module's log at debug level 9",
    -3: "ePochta refused the SMS: not enough credits on account '{login}' (status -3); top up the ePochta "
        "balance",
    -4: "ePochta found no valid recipient in '{numbers}' (status -4); check the user's phone number: "
        "international format, country code first",
    -7: "ePochta rejected the sender '{sender}' (status -7); a sender is up to 11 Latin letters and digits "
        "or up to 14 digits, and some countries need it registered in the ePochta account",
}
OTHER_STATUS = ("ePochta refused the {operation} request with status {status}; look the status up in "
                "ePochta's XML interface documentation")

# API 3.0 error codes (docs/PROTOCOLS.md) as sentences; other codes show ePochta's own text.
V3_CODE_MESSAGES = {
    300: "ePochta API 3.0 got no sender (code 300); fill the sender setting",
    301: "ePochta API 3.0 got no text (code 301); the message was empty",
    303: "ePochta found no valid recipient in '{numbers}' (code 303); check the user's phone number: "
         "international format, country code first",
    304: "ePochta refused the SMS: not enough money on the account (code 304); top up the ePochta balance",
    305: "ePochta refused the SMS: not enough money on the account (code 305); top up the ePochta balance",
    306: "ePochta API 3.0 could not send the SMS (code 306: {error})",
}
OTHER_CODE = "ePochta API 3.0 refused the {operation} request: {error} (code {code})"


class EpochtaError(MgrNotifyError):
    """Base of ePochta's refusals and unreadable answers."""


class AnswerError(EpochtaError, ConnectError):
    """ePochta's answer cannot be read: not XML/JSON, or no status in it (often a wrong url)."""


class StatusError(EpochtaError):
    """ePochta refused a request; ``status`` holds its status (XML) or error code (API 3.0)."""

    def __init__(self, message, status, **kwargs):
        super().__init__(message, value=str(status), **kwargs)
        self.status = status


class LoginRefused(StatusError, ConnectError):
    """ePochta refused the login and password (status -1)."""


class Refused(StatusError, DeliveryError):
    """ePochta refused the SMS: no credits, bad sender, no valid recipient, ..."""


def new_message_id():
    """A messageID unique per message: the time to the second and 8 random hex digits.

    [ours] ePochta lets the client choose it and documents no format; 22 letters and digits is a guess
    at what every account accepts.
    """
    return time.strftime("%Y%m%d%H%M%S") + os.urandom(4).hex()


def cdata(text):
    """``text`` as CDATA, split around any ``]]>`` inside it; characters XML forbids dropped."""
    return "<![CDATA[" + xmlio.clean(text).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def xml_document(operation, login, password, body=""):
    """The XML interface's request document for ``operation``; ``body`` is the part after authentication."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<SMS>\n'
            "<operations><operation>%s</operation></operations>\n"
            "<authentification><username>%s</username><password>%s</password></authentification>\n"
            "%s</SMS>\n" % (operation, xmlio.escape(login), xmlio.escape(password), body))


def send_body(sender, text, phone, message_id):
    """The ``<message>`` and ``<numbers>`` of a SEND request for one number."""
    return ("<message><sender>%s</sender><text>%s</text></message>\n"
            '<numbers><number messageID="%s">%s</number></numbers>\n'
            % (xmlio.escape(sender), cdata(text), xmlio.escape_attr(message_id), xmlio.escape(phone)))


def parse_xml_answer(data, address):
    """The ``Answer`` in a ``<RESPONSE>`` document; AnswerError if there is none."""
    try:
        root = xmlio.parse(data, "ePochta's answer")
    except MgrNotifyError:
        root = None
    status = None
    if root is not None and root.tag == "RESPONSE":
        try:
            status = int(xmlio.text(root, "status").strip())
        except ValueError:
            pass
    if status is None:
        raise AnswerError("ePochta at %s answered something other than its XML status (%s); check the url "
                          "setting" % (address, httppost.excerpt(data)))
    return Answer(status, credits=xmlio.text(root, "credits", None), amount=xmlio.text(root, "amount", None),
                  currency=xmlio.text(root, "currency", None))


def signature(params, private_key):
    """API 3.0's ``sum``: md5 of the values sorted by name (action and version included), then the private key."""
    import hashlib
    joined = "".join(str(params[name]) for name in sorted(params)) + private_key
    return hashlib.md5(joined.encode("utf-8")).hexdigest()


class _Client:
    """What both interfaces share: the connection, its log and ``with`` support."""

    def __init__(self, url, timeout, verify_tls, log, secret):
        redact.remember(secret)
        self.web = httppost.WebService(url, timeout, verify_tls, service=SERVICE)
        self.log = log
        if self.web.scheme == "http":
            self._log(4, "The url setting is plain http: the credentials travel unencrypted to %s", self.web.address)

    def _log(self, level, text, *args):
        if self.log is not None:
            self.log.write(level, text, *args)

    def _post(self, fields, path=None, trace=None):
        """POST ``fields``; for an SMS (``trace`` says how to find it) a timeout after the request went out
        warns that it may be sent already."""
        try:
            return self.web.post(fields, path)
        except httppost.Timeout as e:
            if not (e.request_sent and trace):
                raise
            raise httppost.Timeout("%s; the SMS may still have been sent: %s before sending it again"
                                   % (e.message, trace), request_sent=True) from None

    def close(self):
        """Close the connection."""
        self.web.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EpochtaXML(_Client):
    """One connection to ePochta's XML interface (at ``XML_URL`` unless ``url`` is given), as user ``login``."""

    def __init__(self, login, password, url=None, timeout=DEFAULT_TIMEOUT, verify_tls=True, log=None):
        super().__init__(url or XML_URL, timeout, verify_tls, log, password)
        self.login = login
        self._password = password

    def send(self, sender, text, phone, message_id=None):
        """SEND ``text`` from ``sender`` to ``phone`` (digits only) as ``message_id`` (new if None); the ``Answer``."""
        message_id = message_id or new_message_id()
        self._log(5, "SEND messageID=%s to %s", message_id, phone)
        answer = self._request("SEND", send_body(sender, text, phone, message_id),
                               "look for messageID %s in ePochta's statistics" % message_id,
                               sender=sender, numbers=phone)
        if answer.status <= 0:
            raise Refused("ePochta accepted no message for '%s' (status %d); check the number and the ePochta "
                          "account" % (phone, answer.status), answer.status)
        answer.message_id = message_id
        return answer

    def balance(self):
        """BALANCE: the ``Answer`` with the account's credits."""
        return self._request("BALANCE")

    def _request(self, operation, body="", trace=None, **context):
        """Post one request document; its ``Answer`` if the status is not negative, else StatusError."""
        self._log(9, "%s request to %s:\n%s", operation, self.web.address,
                  xml_document(operation, self.login, MASK, body))
        data = self._post([("XML", xml_document(operation, self.login, self._password, body))], trace=trace)
        self._log(9, "ePochta answered: %s", data.decode("utf-8", "replace"))
        answer = parse_xml_answer(data, self.web.address)
        if answer.status < 0:
            values = dict({"sender": "", "numbers": ""}, login=self.login, operation=operation, status=answer.status)
            values.update(context)
            error = LoginRefused if answer.status == -1 else Refused
            raise error(STATUS_MESSAGES.get(answer.status, OTHER_STATUS).format(**values), answer.status)
        return answer


class EpochtaV3(_Client):
    """One connection to ePochta's API 3.0 (at ``V3_URL`` unless ``url`` is given), signing with the account's keys."""

    def __init__(self, public_key, private_key, url=None, timeout=DEFAULT_TIMEOUT, verify_tls=True, log=None):
        super().__init__(url or V3_URL, timeout, verify_tls, log, private_key)
        self.public_key = public_key
        self._private_key = private_key

    def send(self, sender, text, phone):
        """sendSMS ``text`` from ``sender`` to ``phone``; the ``Answer`` with the id ePochta gave the message (None
        when its answer has none). Unlike the XML interface's messageID, ePochta chooses it: a timeout cannot name it."""
        trace = "look in ePochta's statistics for an SMS to %s at %s" % (phone, time.strftime("%Y-%m-%d %H:%M:%S"))
        result = self.call("sendSMS", [("sender", sender), ("text", text), ("phone", phone),
                                       ("datetime", ""), ("sms_lifetime", "0")],
                           trace=trace, sender=sender, numbers=phone)
        given = str(result.get("id", "")).strip()
        return Answer(1, given or None, credits=result.get("price"), currency=result.get("currency"))

    def balance(self):
        """getUserBalance: the ``Answer`` with the amount and its currency."""
        result = self.call("getUserBalance", [])
        return Answer(0, amount=result.get("balance_currency"), currency=result.get("currency"))

    def call(self, action, params, trace=None, **context):
        """Post ``action`` with ``params`` (name, value pairs), signed; the ``result`` object of the answer.

        [ours] ``action`` and ``version`` enter the sum but are not posted, as ePochta's PHP client does.
        """
        import json
        fields = list(params) + [("key", self.public_key)]
        signed = dict(fields, action=action, version=V3_VERSION)
        fields.append(("sum", signature(signed, self._private_key)))
        path = self.web.path.split("?")[0].rstrip("/") + "/" + action
        self._log(9, "%s request to %s: %s", action, self.web.origin + path, dict(params))
        data = self._post(fields, path, trace=trace)
        self._log(9, "ePochta answered: %s", data.decode("utf-8", "replace"))
        try:
            answer = json.loads(data.decode("utf-8"))
        except ValueError:
            answer = None
        if isinstance(answer, dict) and "error" in answer:
            code = str(answer.get("code", "")).strip()
            code = int(code) if code.lstrip("-").isdigit() else code
            values = {"sender": "", "numbers": "", "operation": action, "error": answer.get("error"), "code": code}
            values.update(context)
            raise Refused(V3_CODE_MESSAGES.get(code, OTHER_CODE).format(**values), code)
        if not isinstance(answer, dict) or not isinstance(answer.get("result"), dict):
            raise AnswerError("ePochta at %s answered something other than its JSON result (%s); check the url "
                              "setting" % (self.web.address, httppost.excerpt(data)))
        return answer["result"]
