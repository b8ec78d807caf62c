"""A notification file as BILLmanager writes it, and what one ``<notify>`` of it becomes.

The file (docs/CONTRACT.md) holds one or more ``<notify>``, each with the template (``<tmpl>``), the notice
as an XML document serialised to text (``<notice_xml>``), a fallback subject and the user's row.

After a partial delivery the delivered ``<notify>`` elements are marked, not removed: a notice keeps
its position for good, so a journal replayed twice marks the same notices and nothing else.
"""

import os

from . import attachments, xmlio
from .errors import InputError

# [ours] The attribute that marks a <notify> as delivered; BILLmanager writes no attributes on <notify>.
DELIVERED = "mgrnotify_delivered"


class Notice:
    """One ``<notify>`` of a file: template, notice document, subject, user, provider and attached files."""

    def __init__(self, index, template, notice_xml, templatesubject, user, delivered=False):
        self.index = index
        self.delivered = delivered
        self.template = template
        self.notice_xml = notice_xml
        self.user = user
        notice = xmlio.parse(notice_xml, "the notice XML of notification %d" % (index + 1)) \
            if notice_xml.strip() and not delivered else None
        self.project = xmlio.fields(notice.find("project")) if notice is not None else {}
        # The files BILLmanager attaches (invoices, acts), as paths relative to MGR5 or absolute [doc].
        self.attachments = attachments.paths(notice)
        subject = ""
        if notice is not None:
            subject = xmlio.text(notice, "subject") or xmlio.text(notice, "noticeparams/subject")
        self.subject = (subject or templatesubject).strip()

    @property
    def project_id(self):
        """The provider the notice belongs to ('' when the notice names none)."""
        return self.project.get("id", "").strip()


def read(path):
    """Every notice of the file at ``path``, delivered ones included (``Notice.delivered``), in file order.

    InputError if the file is missing, unreadable, empty or not XML, or holds no ``<notify>``.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError("The notification file %s does not exist" % path)
    except OSError as e:
        raise InputError("The notification file %s cannot be read: %s" % (path, e.strerror))
    root = xmlio.parse(data, "the notification file %s" % os.path.basename(path))
    notices = []
    for index, notify in enumerate(root.findall("notify")):
        notices.append(Notice(index, xmlio.text(notify, "tmpl"), xmlio.text(notify, "notice_xml"),
                              xmlio.text(notify, "templatesubject"), xmlio.fields(notify.find("user")),
                              delivered=bool(notify.get(DELIVERED))))
    if not notices:
        raise InputError("The notification file %s holds no <notify> element" % path)
    return notices


def mark_delivered(path, indexes):
    """Mark the ``<notify>`` elements at ``indexes`` (positions in the file) as delivered, so no retry sends
    them again. Marking twice changes nothing; the file keeps its mode and owner (it holds personal data).
    """
    with open(path, "rb") as f:
        root = xmlio.parse(f.read(), "the notification file %s" % os.path.basename(path))
    changed = False
    for index, notify in enumerate(root.findall("notify")):
        if index in indexes and not notify.get(DELIVERED):
            notify.set(DELIVERED, "1")
            changed = True
    if changed:
        _replace(path, xmlio.serialize(root).encode("utf-8"))


def _replace(path, data):
    """Write ``data`` over the file at ``path`` atomically, with the old file's mode and owner."""
    status = os.stat(path)
    temporary = path + ".partial"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, status.st_mode & 0o7777)
        if (status.st_uid, status.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.fchown(fd, status.st_uid, status.st_gid)
            except PermissionError:   # not root: the file stays ours, with the old mode
                pass
        with os.fdopen(fd, "wb") as f:
            fd = None
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
