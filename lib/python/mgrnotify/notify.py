"""Base class of notification-type modules (``notify/ntX``): ISPsystem's notify-module API in Python.

A notification type subclasses ``NotifyModule``, names its ``contact_type`` (the ``user`` column
holding the address) and its ``notify_features``, and implements ``process()`` and
``getmessage(gate)``.
"""

from . import errors, xmlio
from .runner import Module


class NotifyModule(Module):
    """Base of notification-type modules: features, process, getmessage."""

    #: the user column that holds this type's address (email, phone, jabber, ...)
    contact_type = None
    #: features BILLmanager knows for notification types: html, sms, call
    notify_features = ()

    def command_features(self):
        """``<features>`` and ``<contact_type>``."""
        features = [xmlio.element("feature", attrs={"name": f}) for f in self.notify_features]
        return xmlio.document(xmlio.element("features", children=features),
                              xmlio.element("contact_type", self.contact_type))

    def command_process(self):
        """Send what is queued; an empty document when the run went through."""
        self.process()
        return xmlio.document()

    def command_getmessage(self):
        """Fetch incoming messages through ``--gate ID`` or ``--gate all``."""
        gate = self.options.get("gate", "")
        if gate != "all" and not (gate and all(c in "0123456789" for c in gate)):
            raise errors.UsageError("getmessage needs --gate with a gateway id or 'all', not '%s'" % gate)
        self.getmessage(gate)
        return xmlio.document()

    def process(self):
        """Send the queued notifications of this type."""
        raise NotImplementedError

    def getmessage(self, gate):
        """Fetch and act on incoming messages of gateway ``gate`` (an id, or ``all``)."""
        raise NotImplementedError
