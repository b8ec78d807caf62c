"""Incoming messages into support tickets, as ISPsystem's Jabber example does it [src].

A message must start with the ticket id in the gateway's ``ticket_format`` (``#123`` or ``@123``);
its sender must be a user whose contact column holds the sender's address, and the ticket must
belong to that user's account. Then the text is appended as that user through
``mgrctl clientticket.edit``. Anything else gets a short reply and touches no ticket.
"""

from . import mgrctl
from .errors import MgrctlError

DEFAULT_TICKET_FORMAT = "#id"

# Replies to the sender [ours: the example's replies are not public].
REPLY_UNKNOWN_SENDER = ("This address (%(contact)s) is not linked to any account. Add it to your profile "
                        "to answer tickets by message.")
REPLY_BAD_FORMAT = "Start your message with the ticket number, for example: %(prefix)s123 your text"
REPLY_UNKNOWN_TICKET = "Ticket %(prefix)s%(ticket)s is not among your tickets."
REPLY_NOT_ADDED = "Your message to ticket %(prefix)s%(ticket)s could not be added; please try again later."


def parse(text, ticket_format):
    """(ticket id, message) from ``#123 text``, or None when the text does not start that way."""
    prefix = (ticket_format or DEFAULT_TICKET_FORMAT)[0]
    text = text.strip()
    if not text.startswith(prefix):
        return None
    digits = ""
    for char in text[1:]:
        if char not in "0123456789":
            break
        digits += char
    rest = text[1 + len(digits):]
    if not digits or (rest and not rest[0].isspace()) or not rest.strip():
        return None
    return digits, rest.strip()


class TicketDesk:
    """Files incoming messages of one notification type into tickets; returns the reply to send, if any."""

    def __init__(self, config, db, log, contact_column):
        if not contact_column.isidentifier():
            raise ValueError("bad contact column %r" % contact_column)
        self.config = config
        self.db = db
        self.log = log
        self.contact_column = contact_column

    def file(self, contact, text, ticket_format):
        """Append ``text`` from ``contact`` to its ticket; the reply for the sender, or None when added."""
        prefix = (ticket_format or DEFAULT_TICKET_FORMAT)[0]
        users = self.db.query("SELECT id, account, name FROM user WHERE `%s` = ? ORDER BY id" % self.contact_column,
                              (contact,))
        if not contact or not users:
            self.log.info("Message from unknown sender %s ignored", contact)
            return REPLY_UNKNOWN_SENDER % {"contact": contact}
        parsed = parse(text, ticket_format)
        if parsed is None:
            self.log.info("Message from %s does not start with a ticket number (%sID)", contact, prefix)
            return REPLY_BAD_FORMAT % {"prefix": prefix}
        ticket, message = parsed
        for user in users:
            if self.db.query("SELECT id FROM ticket WHERE id = ? AND account_client = ?", (ticket, user["account"])):
                try:
                    mgrctl.call(self.config, "clientticket.edit", caller=self.log.name, elid=ticket, su=user["name"],
                                message=message, sok="ok")
                except MgrctlError as e:
                    # The message has been taken from the server: keep it in the log for staff.
                    self.log.error("Message from %s to ticket %s not added (%s); its text: %s",
                                   contact, ticket, e.message, message)
                    return REPLY_NOT_ADDED % {"prefix": prefix, "ticket": ticket}
                self.log.info("Message from %s added to ticket %s as user %s", contact, ticket, user["name"])
                return None
        self.log.info("Message from %s names ticket %s, which is not theirs", contact, ticket)
        return REPLY_UNKNOWN_TICKET % {"prefix": prefix, "ticket": ticket}
