"""A notification file as BILLmanager writes it, and what one ``<notify>`` of it becomes.

The file (CONTRACT.md) holds one or more ``<notify>``, each with the template (``<tmpl>``), the notice
as an XML document serialised to text (``<notice_xml>``), a fallback subject and the user's row.
"""

import os

from . import xmlio
from .errors import InputError


class Notice:
    """One ``<notify>`` of a file: template, notice document, subject, user and provider."""

    def __init__(self, index, template, notice_xml, templatesubject, user):
        self.index = index
        self.template = template
        self.notice_xml = notice_xml
        self.user = user
        notice = xmlio.parse(notice_xml, "the notice XML of notification %d" % (index + 1)) \
            if notice_xml.strip() else None
        self.project = xmlio.fields(notice.find("project")) if notice is not None else {}
        subject = ""
        if notice is not None:
            subject = xmlio.text(notice, "subject") or xmlio.text(notice, "noticeparams/subject")
        self.subject = (subject or templatesubject).strip()

    @property
    def project_id(self):
        """The provider the notice belongs to ('' when the notice names none)."""
        return self.project.get("id", "").strip()


def read(path):
    """The notices of the file at ``path``: InputError if it is missing, unreadable, empty or not XML."""
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
                              xmlio.text(notify, "templatesubject"), xmlio.fields(notify.find("user"))))
    if not notices:
        raise InputError("The notification file %s holds no <notify> element" % path)
    return notices


def rewrite_without(path, delivered):
    """Rewrite the file keeping only the ``<notify>`` elements whose index is not in ``delivered``.

    After a partial delivery the retry must not send the delivered ones again.
    """
    with open(path, "rb") as f:
        root = xmlio.parse(f.read(), "the notification file")
    for index, notify in reversed(list(enumerate(root.findall("notify")))):
        if index in delivered:
            root.remove(notify)
    temporary = path + ".partial"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(xmlio.serialize(root))
    os.replace(temporary, path)
