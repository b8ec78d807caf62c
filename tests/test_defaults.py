"""Each gateway's defaults agree wherever an admin meets them (issue 14).

A gateway declares its ``defaults`` once, at the top of its class. These tests hold the rest to them: what
its code assumes for an empty setting, README's settings table, the form's hints, placeholders and choice
lists, and what ``formtune`` writes into an empty form. A gateway created from an empty form verifies
certificates, and only an explicit ``off`` turns that off.
"""

import os
import re

import pytest

import prosody as prosodylib
import sandbox as sandboxlib
from fuzzing import load_class
from localnet import FaultyServer
from mgrnotify import tickets, xmlio
from mgrnotify.config import Config
from mgrnotify.errors import ConfigError
from mgrnotify.gateway import Request
from mgrnotify.settings import Settings

prosody = prosodylib.prosody   # the fixture: one Prosody for this file

GATEWAYS = [path for path in sandboxlib.project_modules() if path.startswith("gate/")]
README = os.path.join(sandboxlib.REPO, "README.md")
LANGS = ("en", "ru")
# How a hint states its field's default: its last sentence, "Default: 15" / "По умолчанию: 15"; a dot inside a
# word ("SMS.ru") does not end a sentence.
HINT_DEFAULT = re.compile(r"(?:^|\. )(?:Default|По умолчанию): ([^.]+(?:\.[^.\s][^.]*)*)$")
DEFAULT_WORD = re.compile(r"default|умолчани", re.IGNORECASE)


def name_of(module):
    return os.path.basename(module)


def gateway_class(module):
    return load_class(os.path.join(sandboxlib.REPO, module))


def readme_defaults(name):
    """{setting: default} as README's table under "### gate/NAME" states them. A row states a default for each
    setting it names when its default cell holds one value per setting (`value`, or a number with its unit);
    a cell in prose (derived defaults such as ports) states none."""
    with open(README, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = [i for i, line in enumerate(lines) if re.match(r"### gate/%s\b" % name, line)]
    assert len(start) == 1, "README has no one section '### gate/%s'" % name
    found = {}
    for line in lines[start[0] + 1:]:
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        names = re.findall(r"`([a-z0-9_]+)`", cells[0])
        parts = [part.strip() for part in cells[1].split(",")] if len(cells) > 1 else []
        if not names or len(parts) != len(names):
            continue
        for setting, part in zip(names, parts):
            value = re.fullmatch(r"`([^`]+)`|(\d+)(?: s)?", part)
            if value:
                found[setting] = value.group(1) or value.group(2)
    return found


def module_xml(name):
    with open(os.path.join(sandboxlib.REPO, "etc", "xml", "billmgr_mod_%s.xml" % name), "rb") as f:
        return xmlio.parse(f.read())


def form_controls(name):
    """{field: its control element} of the module's settings form."""
    form = module_xml(name).find("metadata[@name='gateway.%s']/form" % name)
    return {field.get("name"): [c for c in field if c.get("name") == field.get("name")][0]
            for field in form.iter("field")}


def form_messages(name, lang):
    node = module_xml(name).find("lang[@name='%s']/messages[@name='gateway.%s']" % (lang, name))
    return {m.get("name"): (m.text or "").strip() for m in node.findall("msg")}


def empty_form(name, values=None, extra=()):
    """The document formtune gets for a new gateway: the module's form, the field values (none by default) and
    ``extra`` elements (text)."""
    from xml.etree.ElementTree import tostring
    form = tostring(module_xml(name).find("metadata[@name='gateway.%s']" % name), encoding="unicode")
    return xmlio.document(form, *[xmlio.element(k, v) for k, v in (values or {}).items()], *extra)


def formtune(sandbox, module, document):
    done = sandbox.run(module, "--command", "formtune", input=document)
    assert done.returncode == 0, done.stdout
    return xmlio.parse(done.stdout)


def choice_lists(root):
    """{select: [its values]} of a formtuned form; every list filled one way, with <msg> items."""
    lists = {}
    for select in root.findall("slist"):
        assert select.get("name") not in lists, "two lists for %s" % select.get("name")
        assert [item.tag for item in select] == ["msg"] * len(select), "%s: not only <msg> items" % select.get("name")
        lists[select.get("name")] = [item.text for item in select]
    return lists


# --- README, the form, formtune -----------------------------------------------------------------------------

@pytest.mark.parametrize("module", GATEWAYS)
def test_readme_states_the_declared_defaults(module):
    declared, stated = gateway_class(module).defaults, readme_defaults(name_of(module))
    wrong = {setting: (stated.get(setting), declared.get(setting)) for setting in set(stated) | set(declared)
             if stated.get(setting) != declared.get(setting)}
    assert not wrong, "README's table of gate/%s (setting: (README, code)): %s" % (name_of(module), wrong)


@pytest.mark.parametrize("module", GATEWAYS)
def test_the_form_says_the_declared_defaults(module):
    """Each defaulted setting is a field of the form whose control can hold the default; each hint that states
    a default (its last sentence) states this one, as the panel shows it; placeholders show it too."""
    name, declared = name_of(module), gateway_class(module).defaults
    controls = form_controls(name)
    for setting, value in declared.items():
        assert setting in controls, "%s's form has no field %s" % (name, setting)
        control = controls[setting]
        if control.get("type") == "checkbox":
            assert value in ("on", "off"), setting
        elif control.get("check") == "int":
            low, high = (int(bound) for bound in control.get("checkargs").split(","))
            assert low <= int(value) <= high, setting
    for lang in LANGS:
        messages = form_messages(name, lang)
        for hint, text in messages.items():
            if hint.startswith("hint_") and DEFAULT_WORD.search(text):
                setting = hint[len("hint_"):]
                assert setting in declared, "%s %s states a default the code does not declare" % (lang, hint)
        for setting, value in declared.items():
            if controls[setting].get("type") == "checkbox":
                continue   # a ticked box shows its default itself
            shown = messages[value] if controls[setting].tag == "select" else value
            text = messages["hint_" + setting]
            stated = HINT_DEFAULT.search(text)
            assert stated and len(DEFAULT_WORD.findall(text)) == 1, "%s hint_%s: %s" % (lang, setting, text)
            assert stated.group(1) == shown, "%s hint_%s: %s" % (lang, setting, text)
            assert messages.get("placeholder_" + setting, value) == value, (lang, setting)


@pytest.mark.parametrize("module", GATEWAYS)
@pytest.mark.parametrize("values", ["absent", "empty"])
def test_formtune_gives_an_empty_form_the_declared_defaults(sandbox, module, values):
    """A field BILLmanager leaves out, or passes empty, gets its default; each select's first choice is it."""
    name, declared = name_of(module), gateway_class(module).defaults
    fields = {field: "" for field in form_controls(name)} if values == "empty" else {}
    root = formtune(sandbox, module, empty_form(name, fields))
    assert root.find("metadata/form") is not None
    assert {setting: root.findtext(setting) for setting in declared} == declared
    lists = choice_lists(root)
    for setting, choices in lists.items():
        assert form_controls(name)[setting].tag == "select", setting
        if setting in declared:
            assert choices[0] == declared[setting], "%s: the default must be the first choice" % setting


@pytest.mark.parametrize("module", GATEWAYS)
def test_formtune_keeps_explicit_values_and_replaces_old_lists(sandbox, module):
    """An admin's ``off`` (or any other value) stays; a list already in the form is replaced, not doubled."""
    name, declared = name_of(module), gateway_class(module).defaults
    once = formtune(sandbox, module, empty_form(name))
    other = {}
    for setting, value in declared.items():
        choices = choice_lists(once).get(setting)
        if choices:
            other[setting] = choices[-1]
        elif value in ("on", "off"):
            other[setting] = "off" if value == "on" else "on"
        else:
            other[setting] = value + "1"
    old_lists = [xmlio.element("slist", attrs={"name": s}, children=[xmlio.element("val", "old")])
                 for s in choice_lists(once)]
    root = formtune(sandbox, module, empty_form(name, other, old_lists))
    assert {setting: root.findtext(setting) for setting in declared} == other
    assert choice_lists(root) == choice_lists(once)
    again = formtune(sandbox, module, xmlio.serialize(root))
    assert xmlio.serialize(again) == xmlio.serialize(root)


# --- the code's own fallbacks ----------------------------------------------------------------------------------

class QuietLog:
    """A log that writes nowhere."""

    name = "test"

    def __getattr__(self, level):
        return lambda *args, **kwargs: None


class FakeXMPP:
    """Stands in for mgrnotify.xmpp.XMPPClient: records how it was made and what it was asked; connects nowhere."""

    address, bound_jid, encrypted, mechanism = ("127.0.0.1", 5222), "gw@localhost/r", False, "SCRAM-SHA-1"
    made = []

    def __init__(self, jid, **options):
        self.options = options
        FakeXMPP.made.append(self)

    def connect(self):
        pass

    def login(self, password):
        pass

    def receive(self, window, most):
        self.window = window
        return []

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FakeInbox:
    """Stands in for an IMAP mailbox: records how many mails it was asked for."""

    protocol, address, folder = "IMAP", "127.0.0.1:993", "INBOX"

    def connect(self):
        pass

    def login(self, user, password):
        pass

    def fetch(self, limit):
        self.limit = limit
        return []

    def close(self):
        pass


def on_off(flag):
    return "on" if flag else "off"


def jabber_assumes(gateway, monkeypatch, tmp_path):
    from mgrnotify import xmpp
    monkeypatch.setattr(xmpp, "XMPPClient", FakeXMPP)
    gateway.ingoing(Request(None, Settings({"jabber": "gw@localhost", "password": "pw"})))
    client = FakeXMPP.made[-1]
    replies = [f for f in gateway.ticket_formats if tickets.parse(f.replace("id", "7") + " text", "")]
    return {"tls": client.options["tls"], "verify_tls": on_off(client.options["verify_tls"]),
            "timeout": str(client.options["timeout"]), "receive_window": str(client.window),
            "ticket_format": replies[0]}


def epochta_assumes(gateway, monkeypatch, tmp_path):
    from mgrnotify import epochta
    client = gateway.client(Settings({"login": "u", "password": "pw", "sender": "Test"}))
    return {"api": "xml" if isinstance(client, epochta.EpochtaXML) else "v3", "timeout": str(client.web.timeout),
            "verify_tls": on_off(client.web.verify_tls)}


def mail_assumes(gateway, monkeypatch, tmp_path):
    base = {"email": "gw@example.com", "smtp_host": "smtp.example.com", "in_host": "imap.example.com",
            "in_password": "pw"}
    smtp = gateway.smtp_session(Settings(base))
    try:
        gateway.mailbox(Settings(base))
        in_protocol = "fetching"
    except ConfigError as e:
        in_protocol = "none" if e.object == "in_protocol" else str(e)
    imap = gateway.mailbox(Settings(dict(base, in_protocol="imap")))
    inbox = FakeInbox()
    gateway.config = Config(str(tmp_path))
    monkeypatch.setattr(gateway, "mailbox", lambda settings: inbox)
    gateway.ingoing(Request(None, Settings(base)))
    gateway.finish(False)
    return {"smtp_security": smtp.security, "verify_tls": on_off(smtp.verify_tls), "timeout": str(smtp.timeout),
            "in_protocol": in_protocol, "in_security": imap.security, "in_folder": imap.folder,
            "in_after": gateway.in_after, "in_limit": str(inbox.limit)}


def httpsms_assumes(gateway, monkeypatch, tmp_path):
    from mgrnotify import httpsms
    service = gateway.service(Settings({"api_key": "k"}))
    custom = gateway.service(Settings({"preset": "custom", "url": "https://sms.example/send", "success": "ok=1"}))
    return {"preset": [name for name, rules in httpsms.PRESETS.items() if rules is service.rules][0],
            "timeout": str(service.timeout), "verify_tls": on_off(service.verify_tls),
            "method": custom.rules.send.method, "content_type": custom.rules.send.content_type}


def max_assumes(gateway, monkeypatch, tmp_path):
    settings = Settings({"token": "t"})
    api = gateway.api(settings)
    windows = []
    gateway.config = Config(str(tmp_path))
    monkeypatch.setattr(gateway, "poll", lambda api, marker, window: windows.append(window) or ([], None))
    gateway.ingoing(Request(xmlio.parse("<doc/>"), settings))
    gateway.finish(False)
    replies = [f for f in gateway.ticket_formats if tickets.parse(f.replace("id", "7") + " text", "")]
    return {"url": api.web.origin, "timeout": str(api.timeout), "verify_tls": on_off(api.web.verify_tls),
            "receive_window": str(windows[0]), "ticket_format": replies[0]}


ASSUMES = {"gwjabber": jabber_assumes, "gwepochta": epochta_assumes, "gwmail": mail_assumes,
           "gwhttpsms": httpsms_assumes, "gwmax": max_assumes}


@pytest.mark.parametrize("module", GATEWAYS)
def test_the_code_assumes_the_declared_defaults_for_empty_settings(module, monkeypatch, tmp_path):
    """What the gateway's code does with settings that hold only the required values: the declared defaults
    (for ticket_format, what ntjabber's ticket desk reads a reply with)."""
    cls = gateway_class(module)
    assert name_of(module) in ASSUMES, "add how %s uses its settings to ASSUMES" % module
    assert ASSUMES[name_of(module)](cls(None, QuietLog()), monkeypatch, tmp_path) == cls.defaults


def test_settings_read_an_explicit_off_and_default_the_rest():
    settings = Settings({"verify_tls": "off", "blank": " ", "timeout": ""})
    assert settings.flag("verify_tls", "on") is False
    assert settings.flag("blank", "on") is True and settings.flag("absent", True) is True
    assert settings.number("timeout", "15", 1, 300) == 15 and settings.number("absent", None) is None


# --- a gateway created from an empty form -----------------------------------------------------------------

def new_gateway(sandbox, module, **connection):
    """The settings of a gateway created from an empty form, as the panel would save them, plus ``connection``:
    what formtune filled in; a checkbox it left empty saved unticked (``off``), a select with no value as its
    first choice (see mgrnotify.form.set_defaults)."""
    name = name_of(module)
    root = formtune(sandbox, module, empty_form(name))
    lists = choice_lists(root)
    settings = {}
    for field, control in form_controls(name).items():
        value = root.findtext(field)
        if not value and control.get("type") == "checkbox":
            value = "off"
        elif not value and lists.get(field):
            value = lists[field][0]
        if value:
            settings[field] = value
    settings.update(connection)
    for setting, value in connection.items():
        if "password" in setting:
            sandboxlib.remember_secret(value)
    return settings


def outgoing(sandbox, module, settings, **user):
    done = sandbox.run(module, "--command", "outgoing", input=sandboxlib.gateway_request(settings, "hi", user),
                       timeout=60)
    error = xmlio.parse(done.stdout).find("error")
    return done.returncode, xmlio.text(error, "msg") if error is not None else ""


@pytest.mark.parametrize("verify_tls, refused", [(None, True), ("off", False)])
def test_a_new_jabber_gateway_verifies_certificates(sandbox, prosody, monkeypatch, verify_tls, refused):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)   # Prosody's self-signed certificate is not trusted
    password = "pw-defaults-%s" % verify_tls
    jid = prosody.register("defaults%s" % (verify_tls or ""), password)
    settings = new_gateway(sandbox, "gate/gwjabber", jabber=jid, password=password, server="127.0.0.1",
                           port=str(prosody.port))
    if verify_tls:
        settings["verify_tls"] = verify_tls
    status, sentence = outgoing(sandbox, "gate/gwjabber", settings, jabber=jid)
    if refused:
        assert status == 1 and "is not trusted for localhost" in sentence, sentence
    else:
        assert (status, sentence) == (0, "")


def epochta_gateway(port):
    return {"login": "u", "password": "pw-defaults-epochta", "sender": "Test",
            "url": "https://localhost:%d/members/sms/xml.php" % port, "timeout": "5"}, {"phone": "+1 555 0100"}


def mail_gateway(port):
    return {"email": "gw@example.com", "smtp_host": "localhost", "smtp_port": str(port), "smtp_login": "gw",
            "smtp_password": "pw-defaults-mail", "timeout": "5"}, {"email": "a@example.com"}


@pytest.mark.parametrize("module, connection", [("gate/gwepochta", epochta_gateway), ("gate/gwmail", mail_gateway)])
@pytest.mark.parametrize("verify_tls, refused", [(None, True), ("off", False)])
def test_a_new_gateway_verifies_certificates(sandbox, tmp_path, monkeypatch, module, connection, verify_tls,
                                             refused):
    """Against a TLS server whose certificate nobody trusts: refused for the certificate, unless turned off."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = FaultyServer("other-name", str(tmp_path))
    try:
        values, user = connection(server.port)
        settings = new_gateway(sandbox, module, **values)
        if verify_tls:
            settings["verify_tls"] = verify_tls
        status, sentence = outgoing(sandbox, module, settings, **user)
    finally:
        server.stop()
    assert status == 1
    assert ("certificate" in sentence.lower()) == refused, sentence
