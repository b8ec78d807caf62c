"""What ntmax does with an incoming MAX message: linking a MAX account to a BILLmanager user, replies into tickets.

A client links their MAX account by sharing their own contact with the bot: the button under the bot's instructions
(MAX's ``request_contact``) sends it. MAX has verified the phone number
in that contact (its vCard) and names the contact's own MAX user in it: the gateway hands both over as the
message's ``contact_phone`` and ``contact_user_id``. The account is linked -- the sender's ``user_id`` written
into the user's ``max`` column through ``mgrctl user.edit`` -- only when all of these hold:

- the contact is the sender's own (``contact_user_id`` is the sender): a forwarded contact links nothing;
- the contact holds one phone number (every number in its vCard the same digits);
- exactly one BILLmanager user has a phone with the same digits (``sms.normalize_phone`` on both sides), among
  the clients of the gateway's provider when the gateway names one;
- that user's ``max`` is empty or already this sender, and no other user is linked to this sender.

Anything else gets a reply saying why, and changes nothing. The contact's ``hash`` is not used: MAX does not
publish how it is computed. ``/start``, the bot's start event and any message from a sender no user is linked to
get the instructions; a linked user's ``#123 text`` goes into ticket 123 (``tickets.TicketDesk``).

Replies are in Russian, then English: MAX's users are mostly Russian-speaking, and nothing tells their language.
"""

from . import mgrctl, xmlio
from .errors import MgrctlError
from .runner import is_id

COLUMN = "max"   # the user column (etc/sql/billmgr.user.addon/max) holding the linked MAX user_id

HOW_TO_LINK = ("Чтобы получать уведомления и отвечать на запросы здесь, поделитесь с ботом своим контактом: "
               "нажмите кнопку «Поделиться контактом» под этим сообщением. Номер вашего MAX должен совпадать с "
               "телефоном в вашей учётной записи.\n\n"
               "To get notifications and answer tickets here, share your own contact with this bot: press the "
               "button \"Share contact\" below this message. Your MAX phone number must match the phone in your "
               "account.")
# The label of the button under HOW_TO_LINK that sends the client's own contact (gwmax: a request_contact button).
SHARE_CONTACT = "Поделиться контактом / Share contact"
LINKED = ("Готово: этот аккаунт MAX связан с учётной записью %(name)s. Чтобы ответить на запрос, напишите "
          "«%(prefix)s123 текст».\n\n"
          "Done: this MAX account is linked to the account %(name)s. To answer a ticket, write "
          "\"%(prefix)s123 your text\".")
ALREADY_LINKED = ("Этот аккаунт MAX уже связан с учётной записью %(name)s. Чтобы ответить на запрос, напишите "
                  "«%(prefix)s123 текст».\n\n"
                  "This MAX account is already linked to the account %(name)s. To answer a ticket, write "
                  "\"%(prefix)s123 your text\".")
NOT_YOURS = ("Этот контакт не ваш: привязать можно только свой собственный контакт.\n\n"
             "This contact is not yours: only your own contact can be linked.")
NO_PHONE = ("В контакте нет номера телефона.\n\nThe contact has no phone number.")
SEVERAL_PHONES = ("В контакте несколько номеров телефона: поделитесь своим контактом кнопкой ниже.\n\n"
                  "The contact holds several phone numbers: share your own contact with the button below.")
NO_USER = ("Ни у одной учётной записи нет телефона %(phone)s. Укажите этот номер в профиле и поделитесь "
           "контактом ещё раз.\n\n"
           "No account has the phone %(phone)s. Enter this number in your profile and share the contact again.")
SEVERAL_USERS = ("Телефон %(phone)s указан у нескольких учётных записей, поэтому привязка не выполнена. "
                 "Обратитесь в поддержку.\n\n"
                 "Several accounts have the phone %(phone)s, so nothing was linked. Please contact support.")
TAKEN = ("Учётная запись с телефоном %(phone)s уже связана с другим аккаунтом MAX. Обратитесь в поддержку.\n\n"
         "The account with the phone %(phone)s is already linked to another MAX account. Please contact support.")
LINKED_ELSEWHERE = ("Этот аккаунт MAX уже связан с другой учётной записью. Обратитесь в поддержку.\n\n"
                    "This MAX account is already linked to another account. Please contact support.")
NOT_NOW = ("Не удалось привязать аккаунт, попробуйте позже.\n\nThe account could not be linked; please try again "
           "later.")


def asking(text):
    """``text`` as a reply with the button that shares the client's own contact under it (``NotifyModule.incoming``:
    gwmax's ``outgoing`` reads ``<request_contact>``, the button's label)."""
    return text, [xmlio.element("request_contact", SHARE_CONTACT)]


class Linker:
    """Handles one ntmax message: a shared contact, the start, or a reply for a ticket. ``desk`` is the
    ``tickets.TicketDesk`` of the run (its database, configuration and log are used too)."""

    def __init__(self, desk, provider=None):
        self.desk = desk
        self.provider = provider   # the gateway's provider (project id): only its clients are linked; None: any
        self.db = desk.db
        self.log = desk.log

    def handle(self, sender, text, attrs, ticket_format):
        """The reply for ``sender`` (a MAX user_id), or None when the message went into a ticket."""
        from .tickets import DEFAULT_TICKET_FORMAT
        prefix = (ticket_format or DEFAULT_TICKET_FORMAT)[0]
        if not is_id(sender):
            self.log.info("Message from a sender without a MAX user id (%r) ignored", sender)
            return None
        if "contact_phone" in attrs or "contact_user_id" in attrs:
            return self.link(sender, attrs.get("contact_user_id", ""), attrs.get("contact_phone", ""), prefix)
        linked = self.users_linked_to(sender)
        if attrs.get("event") == "bot_started" or text.split()[:1] == ["/start"] or not linked:
            if linked:
                return ALREADY_LINKED % {"name": linked[0]["name"], "prefix": prefix}
            self.log.info("Message from MAX user %s, who is linked to no user: answered with how to link", sender)
            return asking(HOW_TO_LINK)
        return self.desk.file(sender, text, ticket_format)

    def users_linked_to(self, sender):
        return self.db.query("SELECT id, name FROM user WHERE `%s` = ? ORDER BY id" % COLUMN, (sender,))

    def users_with_phone(self, digits):
        """The users whose phone has exactly ``digits``: the database finds those holding them in order, with
        anything between (LIKE, on every charset and server), and the normaliser keeps the exact ones."""
        from .sms import InvalidPhone, normalize_phone
        pattern = "%" + "%".join(digits) + "%"
        sql, params = "SELECT id, name, phone, `%s` AS linked FROM user WHERE phone LIKE ?" % COLUMN, [pattern]
        if self.provider is not None:
            sql += " AND account IN (SELECT id FROM account WHERE project = ?)"
            params.append(self.provider)
        found = []
        for user in self.db.query(sql + " ORDER BY id", params):
            try:
                if normalize_phone(user["phone"] or "") == digits:
                    found.append(user)
            except InvalidPhone:
                continue
        return found

    def link(self, sender, contact_user, phone, prefix):
        """Link ``sender`` to the one user with ``phone``, when the contact is the sender's own."""
        from .sms import InvalidPhone, normalize_phone
        if contact_user != sender:
            self.log.warning("MAX user %s shared a contact that is not their own (%s): nothing linked", sender,
                             contact_user or "no MAX user in it")
            return asking(NOT_YOURS)
        numbers = set()
        for written in phone.split(","):   # gwmax hands over every number of the contact, comma-separated
            try:
                numbers.add(normalize_phone(written))
            except InvalidPhone:
                continue
        if not numbers:
            self.log.info("MAX user %s shared a contact without a phone number (%r): nothing linked", sender, phone)
            return asking(NO_PHONE)
        if len(numbers) > 1:
            self.log.warning("MAX user %s shared a contact with several phone numbers (%s): nothing linked", sender,
                             ", ".join("+" + n for n in sorted(numbers)))
            return asking(SEVERAL_PHONES)
        digits = numbers.pop()
        shown = "+" + digits
        users = self.users_with_phone(digits)
        if not users:
            self.log.info("MAX user %s shared the phone %s, which no user has: nothing linked", sender, shown)
            return asking(NO_USER % {"phone": shown})
        if len(users) > 1:
            self.log.warning("MAX user %s shared the phone %s, which users %s all have: nothing linked", sender,
                             shown, ", ".join(u["name"] for u in users))
            return SEVERAL_USERS % {"phone": shown}
        user = users[0]
        if user["linked"] == sender:
            return ALREADY_LINKED % {"name": user["name"], "prefix": prefix}
        if user["linked"]:
            self.log.warning("MAX user %s shared the phone %s of user %s, who is linked to MAX user %s: nothing "
                             "changed", sender, shown, user["name"], user["linked"])
            return TAKEN % {"phone": shown}
        others = self.users_linked_to(sender)
        if others:
            self.log.warning("MAX user %s shared the phone %s of user %s, but is linked to user %s: nothing "
                             "changed", sender, shown, user["name"], others[0]["name"])
            return LINKED_ELSEWHERE
        try:
            mgrctl.call(self.desk.config, "user.edit", caller=self.log.name, elid=user["id"],
                        **{COLUMN: sender, "sok": "ok"})
        except MgrctlError as e:
            self.log.error("MAX user %s not linked to user %s: %s", sender, user["name"], e.message)
            return NOT_NOW
        if [u["id"] for u in self.users_linked_to(sender)] != [user["id"]]:
            self.log.error("MAX user %s not linked to user %s: BILLmanager took user.edit, but the user's %s column "
                           "does not hold it (is etc/xml/billmgr_mod_ntmax.xml loaded?)", sender, user["name"],
                           COLUMN)
            return NOT_NOW
        self.log.info("MAX user %s linked to user %s by the phone %s", sender, user["name"], shown)
        return LINKED % {"name": user["name"], "prefix": prefix}
