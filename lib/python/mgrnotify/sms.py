"""What every SMS gateway needs to know about a message before paying for it.

``normalize_phone`` turns a number as people write it into the digits SMS services expect
(international format, country code first, no ``+`` and no ``00`` prefix);
``measure`` counts the parts a text will be billed as: GSM-7 (160 characters in one SMS, 153 per
part when split, the extension characters taking two) unless one character is outside GSM-7,
which makes the whole text UCS-2 (70 in one, 67 per part, counted in UTF-16 units).
"""

from .errors import DeliveryError, InputError

# GSM 03.38: the basic character set (without the escape character) and the extension table
# characters a phone sends as escape + character (two septets), the form feed among them.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

# (units in a single SMS, units per part of a split SMS)
GSM7_LIMITS = (160, 153)
UCS2_LIMITS = (70, 67)

# Written between the digits of a phone number by people and forms; everything else is refused.
PHONE_SEPARATORS = "+()-."
DIGITS = frozenset("0123456789")
# Dialled before the country code from most of the world (ITU-T E.164's international prefix); SMS
# services take the country code alone, so 0049... is 49...
INTERNATIONAL_PREFIX = "00"


class Length:
    """How an SMS text is billed: encoding ('GSM-7' or 'UCS-2'), units (septets or UTF-16 units), parts."""

    def __init__(self, encoding, units, parts):
        self.encoding = encoding
        self.units = units
        self.parts = parts


class InvalidPhone(DeliveryError):
    """The recipient's phone number is empty or not a number."""


def normalize_phone(phone):
    """The digits of ``phone`` ('+7 (912) 345-67.89' -> '79123456789', '0049 30 1234' -> '49301234');
    InvalidPhone if none or not a number."""
    digits = "".join(phone.split())
    for separator in PHONE_SEPARATORS:
        digits = digits.replace(separator, "")
    if not digits:
        raise InvalidPhone("The user has no phone number to send the SMS to; fill it in the user's profile",
                           obj="phone")
    if digits.startswith(INTERNATIONAL_PREFIX):
        digits = digits[len(INTERNATIONAL_PREFIX):]
    if not digits or not DIGITS.issuperset(digits):
        raise InvalidPhone("The phone number '%s' is not a number; write it in international format, "
                           "country code first (e.g. +380 97 292 00 00)" % phone, obj="phone", value=phone)
    return digits


def measure(text):
    """The ``Length`` of ``text`` as one SMS or a split one."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        costs = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return Length("GSM-7", sum(costs), _parts(costs, GSM7_LIMITS))
    costs = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return Length("UCS-2", sum(costs), _parts(costs, UCS2_LIMITS))


def _parts(costs, limits):
    """Parts needed for characters of these costs; a character is never split between two parts."""
    single, per_part = limits
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def checked(phone, text, max_parts=None):
    """(the digits of ``phone``, the ``Length`` of ``text``) for an SMS that may go: InputError for an empty text,
    DeliveryError for one longer than ``max_parts`` (None: no limit), before any money is spent."""
    digits = normalize_phone(phone)
    if not text.strip():
        raise InputError("The SMS to send to %s is empty; nothing was sent" % digits, obj="message")
    length = measure(text)
    if max_parts is not None and length.parts > max_parts:
        raise DeliveryError("The SMS to %s is %d parts long (%d %s units) and max_parts allows %d; nothing "
                            "was sent: shorten the template or raise max_parts"
                            % (digits, length.parts, length.units, length.encoding, max_parts), obj="max_parts")
    return digits, length


def describe(length):
    """'1 part (40 UCS-2 units)', for the log."""
    return "%d part%s (%d %s units)" % (length.parts, "" if length.parts == 1 else "s", length.units, length.encoding)
