"""A gateway's settings, as BILLmanager hands them over.

The settings form's values travel inside ``<xmlparams>``, whose *text* is itself an XML document
(``<doc><login>..</login>..</doc>``): under ``<gateway>`` for ``outgoing``/``ingoing``, at the root
for ``check_connection``. A name not found there is looked up in the gateway row itself, and for
``check_connection`` at the root of the form; never at the root of an ``outgoing`` request, where
the recipient's fields (``<jabber>``, ``<email>``) sit. Values of secret-looking names are handed to ``redact`` at once.
"""

from . import redact, xmlio
from .errors import ConfigError

class Settings:
    """Named values with typed getters; a bad value raises ConfigError naming the setting."""

    def __init__(self, values, module=""):
        self.values = values
        self.module = module
        for name, value in values.items():
            if redact.is_secret(name):
                redact.remember(value)

    @classmethod
    def from_request(cls, root, module="", form=False):
        """The settings in a request: ``<xmlparams>`` first, then the gateway row; with ``form`` (the
        check_connection form, where entered values may sit at the root) the root's fields last."""
        values = xmlio.fields(root) if form else {}
        gateway = root.find("gateway")
        values.update(xmlio.fields(gateway))
        for holder in (root, gateway):
            params = holder.find("xmlparams") if holder is not None else None
            if params is not None and (params.text or "").strip():
                values.update(xmlio.fields(xmlio.parse(params.text, "the gateway settings (xmlparams)")))
            elif params is not None and len(params):
                values.update(xmlio.fields(params))
        values.pop("xmlparams", None)
        return cls(values, module)

    def get(self, name, default=""):
        """The value as text, stripped; ``default`` when absent or empty."""
        value = (self.values.get(name) or "").strip()
        return value if value else default

    def require(self, name):
        """The value, or ConfigError if it is empty."""
        value = self.get(name)
        if not value:
            raise ConfigError("The gateway setting '%s' is empty; fill it in the gateway's settings" % name,
                              obj=name)
        return value

    def secret(self, name):
        """A secret value exactly as entered (not stripped: spaces may belong to a password)."""
        value = self.values.get(name) or ""
        if not value:
            raise ConfigError("The gateway setting '%s' is empty; fill it in the gateway's settings" % name,
                              obj=name)
        return value

    def flag(self, name, default):
        """``on``/``off`` (also yes/no, true/false, 1/0) as a bool; ``default`` (a bool or such a word) when the
        value is empty or absent, so only an ``off`` written in the settings turns a check off."""
        value = self.get(name) or default
        if isinstance(value, bool):
            return value
        value = value.lower()
        if value in ("on", "yes", "true", "1"):
            return True
        if value in ("off", "no", "false", "0"):
            return False
        raise ConfigError("The gateway setting '%s' must be on or off, not '%s'" % (name, value), obj=name)

    def number(self, name, default, low=None, high=None):
        """A whole number within [low, high]; ``default`` (a number, its text, or None) when empty or absent."""
        value = self.get(name)
        if not value:
            return None if default is None else int(default)
        try:
            number = int(value)
        except ValueError:
            raise ConfigError("The gateway setting '%s' must be a whole number, not '%s'" % (name, value),
                              obj=name)
        if (low is not None and number < low) or (high is not None and number > high):
            raise ConfigError("The gateway setting '%s' must be between %s and %s, not %s"
                              % (name, low, high, number), obj=name)
        return number

    def choice(self, name, choices, default):
        """One of ``choices``."""
        value = self.get(name, default)
        if value not in choices:
            raise ConfigError("The gateway setting '%s' must be one of %s, not '%s'"
                              % (name, ", ".join(choices), value), obj=name)
        return value
