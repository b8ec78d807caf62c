"""The module descriptions in etc/xml: well-formed, and every form field labelled and hinted in Russian and English."""

import os

import pytest

import sandbox as sandboxlib
from mgrnotify import xmlio

XML_DIR = os.path.join(sandboxlib.REPO, "etc", "xml")
LANGS = ("ru", "en")


def modules():
    return [os.path.basename(m) for m in sandboxlib.project_modules()]


def load(module):
    with open(os.path.join(XML_DIR, "billmgr_mod_%s.xml" % module), "rb") as f:
        return xmlio.parse(f.read(), "billmgr_mod_%s.xml" % module)


def messages(root, lang, name):
    node = root.find("lang[@name='%s']/messages[@name='%s']" % (lang, name))
    return {m.get("name"): (m.text or "").strip() for m in node.findall("msg")} if node is not None else {}


@pytest.mark.parametrize("module", modules())
def test_every_module_has_its_description(module):
    assert load(module).tag == "mgrdata"


@pytest.mark.parametrize("module", [m for m in modules() if m.startswith("gw")])
def test_gateway_form_fields_are_labelled_and_hinted(module):
    root = load(module)
    assert root.find("plugin[@name='%s']/group" % module).text == "gateway"
    field_nodes = root.findall("metadata[@name='gateway.%s']/form//field" % module)
    fields = [f.get("name") for f in field_nodes]
    assert fields
    for field in field_nodes:
        assert field.get("name") in [c.get("name") for c in field], "field %s has no control" % field.get("name")
    for lang in LANGS:
        labels = messages(root, lang, "gateway." + module)
        missing = [f for f in fields if not labels.get(f) or not labels.get("hint_" + f)]
        assert not missing, "%s: fields without a %s label or hint: %s" % (module, lang, missing)
        plugin = messages(root, lang, "plugin")
        for key in ("desc_short_", "desc_full_", "price_"):
            assert plugin.get(key + module), "%s: no %s%s in %s" % (module, key, module, lang)
        include = messages(root, lang, "gateway_include")
        for key in ("module_", "", "desc_"):
            assert include.get(key + module), "%s: no %s%s in %s" % (module, key, module, lang)


@pytest.mark.parametrize("module", [m for m in modules() if m.startswith("nt")])
def test_notify_type_names_and_contact_field(module):
    root = load(module)
    fields = [f.get("name") for f in root.findall("metadata[@name='user_include']/form/page/field")]
    assert fields
    for lang in LANGS:
        names = messages(root, lang, "include.notify")
        for key in ("type_", "modulename_", ""):
            assert names.get(key + module)
        labels = messages(root, lang, "user.edit")
        for field in fields:
            assert labels.get(field) and labels.get("hint_" + field)
        for field in fields:
            addon = os.path.join(sandboxlib.REPO, "etc", "sql", "billmgr.user.addon", field)
            assert "type=string" in open(addon).read()


@pytest.mark.parametrize("module", [m for m in modules() if m.startswith("gw")])
def test_gateway_logo(module):
    path = os.path.join(sandboxlib.REPO, "skins", "common", "plugin-logo", "billmanager-plugin-%s.png" % module)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
