"""Base class of gateway modules (``gate/gwX``): ISPsystem's gateway API in Python.

A gateway subclasses ``Gateway``, names its ``notify_module`` and overrides what it supports:
``outgoing(request)``, ``ingoing(request)``, ``formtune(form)``, ``check_connection(request)``.
``--command features`` lists exactly the methods overridden, so the two can never disagree.
"""

from . import xmlio
from .runner import Module
from .settings import Settings

GATEWAY_COMMANDS = ("outgoing", "ingoing", "formtune", "check_connection")


class Request:
    """A parsed request on stdin: the document, and the gateway's settings from it."""

    def __init__(self, root, settings):
        self.root = root
        self.settings = settings

    def text(self, path, default=""):
        """The text at ``path`` in the request (``''`` if empty, ``default`` if absent)."""
        return xmlio.text(self.root, path, default)

    def contact(self, name):
        """A recipient field: ``<name>`` at the root (the example's format), else ``<user><name>``."""
        return (self.text(name) or self.text("user/" + name)).strip()


class Gateway(Module):
    """Base of gateway modules: the command protocol, features, settings and the output documents."""

    #: the notification type this gateway delivers (ntsms, ntemail, ntjabber, ...)
    notify_module = None
    #: features beyond the four standard commands, for modules of our own that call this gateway
    extra_features = ()

    def features(self):
        """Names of the standard commands this gateway overrides, then its extra features."""
        own = [c for c in GATEWAY_COMMANDS if getattr(type(self), c) is not getattr(Gateway, c)]
        return own + list(self.extra_features)

    def commands(self):
        """Only the standard commands this gateway implements are answered."""
        base = [c for c in super().commands() if c not in GATEWAY_COMMANDS]
        return sorted(base + [c for c in self.features() if c in GATEWAY_COMMANDS])

    def read_request(self):
        """Stdin parsed, with the settings it carries."""
        root = self.read_input()
        return Request(root, Settings.from_request(root, self.log.name))

    def command_features(self):
        """``<features>`` and ``<notify_module>``; reads no stdin and imports no XML parser."""
        features = [xmlio.element("feature", attrs={"name": f}) for f in self.features()]
        return xmlio.document(xmlio.element("features", children=features),
                              xmlio.element("notify_module", self.notify_module))

    def command_formtune(self):
        """The settings form, as ``formtune`` leaves it."""
        form = self.read_input("the settings form")
        return xmlio.serialize(self.formtune(form))

    def command_check_connection(self):
        """The form back (without the entered values, which hold secrets) if ``check_connection`` raised nothing."""
        root = self.read_input("the settings form")
        self.check_connection(Request(root, Settings.from_request(root, self.log.name)))
        for params in root.findall("xmlparams"):
            root.remove(params)
        return xmlio.serialize(root)

    def command_outgoing(self):
        """An empty document once ``outgoing`` returned."""
        self.outgoing(self.read_request())
        return xmlio.document()

    def command_ingoing(self):
        """``<messages>`` with what ``ingoing`` fetched."""
        messages = []
        for message in self.ingoing(self.read_request()):
            text, attrs = message if isinstance(message, tuple) else (message, None)
            messages.append(xmlio.element("message", text, attrs))
        return xmlio.document(xmlio.element("messages", children=messages))

    def outgoing(self, request):
        """Send ``request``'s message; raise an MgrNotifyError subclass if it was not accepted."""
        raise NotImplementedError

    def ingoing(self, request):
        """Fetch incoming messages: a list of texts, or of (text, attributes) pairs."""
        raise NotImplementedError

    def formtune(self, form):
        """Adjust the settings form (an ElementTree element) and return it."""
        raise NotImplementedError

    def check_connection(self, request):
        """Log in with the entered settings; raise an MgrNotifyError subclass saying why not."""
        raise NotImplementedError
