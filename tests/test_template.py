"""Template rendering: XML→JSON for EJS, macros, XSLT with the mgr: functions, EJS under node."""

import os
import re
import sys
import xml.etree.ElementTree as ElementTree

import pytest

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib", "python")
if LIB not in sys.path:
    sys.path.insert(0, LIB)

from mgrnotify import template  # noqa: E402
from mgrnotify.config import Config  # noqa: E402
from mgrnotify.errors import TemplateError  # noqa: E402
from mgrnotify.macros import replace_macros  # noqa: E402
from mgrnotify.xmljson import to_json  # noqa: E402

needs_node = pytest.mark.skipif(template._find_node() is None, reason="node is not installed")

NOTICE = """<?xml version="1.0" encoding="UTF-8"?>
<doc>
  <project><id>1</id><name>Хостинг &amp; Ко</name></project>
  <billurl>https://my.example.com/billmgr</billurl>
  <cmdhash>abc123</cmdhash>
  <date>2024-03-05 14:07:09</date>
  <amount>1 200,50</amount>
  <item id="1"><name>VPS</name></item>
  <item id="2"><name>Домен</name></item>
</doc>
"""


def xslt(body, output='<xsl:output method="text" encoding="UTF-8"/>'):
    """A stylesheet whose only template, for the root, holds ``body``."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"\n'
            '    xmlns:mgr="http://ispsystem.com/xslplugin" exclude-result-prefixes="mgr">\n'
            '%s\n<xsl:template match="/doc">%s</xsl:template>\n</xsl:stylesheet>\n' % (output, body))


@pytest.fixture
def config(tmp_path):
    """An empty MGR5 root: no BILLmanager EJS runner, so ours is used."""
    return Config(str(tmp_path))


# ---- xmljson ------------------------------------------------------------------------------------

@pytest.mark.parametrize("xml, expected", [
    ("<doc/>", {}),
    ("<doc><a>1</a></doc>", {"a": "1"}),
    ("<doc><a/></doc>", {"a": ""}),
    ("<doc><a>  </a></doc>", {"a": "  "}),
    ('<doc v="2"><a>1</a></doc>', {"$": {"v": "2"}, "a": "1"}),
    ('<doc><a x="1"/></doc>', {"a": {"$": {"x": "1"}}}),
    ('<doc><a x="1">text</a></doc>', {"a": {"$": {"x": "1"}, "_": "text"}}),
    ("<doc><a>1</a><a>2</a><b>3</b><a>4</a></doc>", {"a": ["1", "2", "4"], "b": "3"}),
    ('<doc><i id="1"><n>x</n></i><i id="2"/></doc>',
     {"i": [{"$": {"id": "1"}, "n": "x"}, {"$": {"id": "2"}}]}),
    ("<doc><a><b><c>deep</c></b></a></doc>", {"a": {"b": {"c": "deep"}}}),
    ("<doc><a>\n  <b>1</b>\n</a></doc>", {"a": {"b": "1"}}),
    ("<doc><p>one <b>two</b> three</p></doc>", {"p": {"b": "two", "_": "one  three"}}),
    ("<doc><a>x<!-- note -->y</a></doc>", {"a": "xy"}),
    ('<doc><проект имя="Хостинг">Привет</проект></doc>',
     {"проект": {"$": {"имя": "Хостинг"}, "_": "Привет"}}),
    ("<doc>loose<a>1</a></doc>", {"a": "1", "_": "loose"}),
])
def test_to_json(xml, expected):
    assert to_json(ElementTree.fromstring(xml)) == expected


def test_to_json_accepts_lxml_elements_and_trees():
    from lxml import etree
    root = etree.fromstring(NOTICE.encode("utf-8"))
    data = to_json(root)
    assert data == to_json(etree.ElementTree(root))
    assert data["project"] == {"id": "1", "name": "Хостинг & Ко"}
    assert data["billurl"] == "https://my.example.com/billmgr"
    assert data["item"] == [{"$": {"id": "1"}, "name": "VPS"}, {"$": {"id": "2"}, "name": "Домен"}]


# ---- macros -------------------------------------------------------------------------------------

USER = {"name": "ivan", "realname": "Иван Петров", "email": "ivan@example.com", "id": 7,
        "phone": None, "note": "{user.name}"}
PROJECT = {"name": "Хостинг", "id": "1"}


@pytest.mark.parametrize("text, expected", [
    ("Hello {user.name}", "Hello ivan"),
    ("{user.realname}, {project.name} ждёт", "Иван Петров, Хостинг ждёт"),
    ("id {user.id}/{project.id}", "id 7/1"),
    ("phone [{user.phone}]", "phone []"),
    ("{user.unknown} stays", "{user.unknown} stays"),
    ("{account.name} stays", "{account.name} stays"),
    ("{name} {user.} {user.na-me} { user.name }", "{name} {user.} {user.na-me} { user.name }"),
    ("no braces at all", "no braces at all"),
    ("note: {user.note}", "note: {user.name}"),
    ("{{user.name}}", "{ivan}"),
    ("", ""),
])
def test_replace_macros(text, expected):
    assert replace_macros(text, USER, PROJECT) == expected


def test_replace_macros_without_rows():
    assert replace_macros("{user.name} {project.name}", None, {}) == "{user.name} {project.name}"


# ---- is_xslt ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (xslt("x"), True),
    (xslt("x").replace("xsl:stylesheet", "xsl:transform"), True),
    ("\n\ufeff" + xslt("x"), True),
    ('<t:transform version="1.0" xmlns:t="http://www.w3.org/1999/XSL/Transform"/>', True),
    ('<stylesheet version="1.0" xmlns="http://www.w3.org/1999/XSL/Transform"/>', True),
    ('<xsl:stylesheet version="1.0" xmlns:xsl="http://example.com/not-xslt"/>', False),
    ('<html xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xsl:version="1.0"/>', False),
    ("<html><body><p>Hello <%= user.name %></p></body></html>", False),
    ("<p>Hello</p>", False),
    ("Plain text, {user.name}", False),
    ("", False),
    (xslt("x").replace("</xsl:template>", ""), False),
])
def test_is_xslt(text, expected):
    assert template.is_xslt(text) is expected


# ---- XSLT ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, output, expected", [
    ('Привет, <xsl:value-of select="project/name"/>!', None, "Привет, Хостинг & Ко!"),
    ('<p>Счёт <xsl:value-of select="cmdhash"/></p>', '<xsl:output method="html" encoding="UTF-8"/>',
     "<p>Счёт abc123</p>\n"),
    ('<p>Счёт</p>', '<xsl:output method="xml" encoding="windows-1251" omit-xml-declaration="yes"/>',
     "<p>Счёт</p>\n"),
    ('<p>Счёт</p>', '<xsl:output method="xml" encoding="UTF-8"/>',
     '<?xml version="1.0"?>\n<p>Счёт</p>\n'),
    ('<xsl:for-each select="item"><xsl:value-of select="name"/>;</xsl:for-each>', None, "VPS;Домен;"),
])
def test_xslt_render(config, body, output, expected):
    text = xslt(body, output) if output else xslt(body)
    assert template.render(text, NOTICE, config) == expected


@pytest.mark.parametrize("call, expected", [
    ("mgr:replace(project/name, 'Ко', 'Co')", "Хостинг & Co"),
    ("mgr:replace('a.b.c', '.', '')", "abc"),
    ("mgr:replace('a*b', '*', '.*')", "a.*b"),
    ("mgr:replace('abc', '', 'x')", "abc"),
    ("mgr:replace(nothing, 'a', 'b')", ""),
    ("mgr:random(1)", "0"),
    ("mgr:strsum(amount, '0.25')", "1200.75"),
    ("mgr:strsum('1', '2')", "3"),
    ("mgr:strsum('1.5', 2, '0,125')", "3.625"),
    ("mgr:strsum('0.10', '0.20')", "0.30"),
    ("mgr:strsum('-5', '2.5')", "-2.5"),
    ("mgr:strsum(nothing, '7')", "7"),
    ("mgr:dateformat(date)", "05.03.2024"),
    ("mgr:dateformat(date, '%Y/%m/%d %H:%M')", "2024/03/05 14:07"),
    ("mgr:dateformat('2024-12-31', '%d.%m.%y')", "31.12.24"),
    ("mgr:dateformat('0000-00-00')", "0000-00-00"),
    ("mgr:dateformat('завтра', '%Y')", "завтра"),
    ("mgr:encodesubject('Счёт оплачен')", "=?utf-8?b?0KHRh9GR0YIg0L7Qv9C70LDRh9C10L0=?="),
    ("mgr:encodesubject('Invoice paid')", "Invoice paid"),
    ("mgr:encodesubject(nothing)", ""),
])
def test_xslt_mgr_functions(config, call, expected):
    assert template.render(xslt('<xsl:value-of select="%s"/>' % call), NOTICE, config) == expected


def test_xslt_mgr_random_range(config):
    values = [int(template.render(xslt('<xsl:value-of select="mgr:random(3)"/>'), NOTICE, config))
              for _ in range(30)]
    assert set(values) <= {0, 1, 2} and len(set(values)) > 1
    big = template.render(xslt('<xsl:value-of select="mgr:random()"/>'), NOTICE, config)
    assert re.match(r"^\d+$", big) and 0 <= int(big) <= 2 ** 31 - 1


@pytest.mark.parametrize("function, args, expected", [
    (template.mgr_strsum, (), "0"),
    (template.mgr_strsum, (["12 345 678 901 234 567 890,123456789"], "0.000000001"),
     "12345678901234567890.123456790"),
    (template.mgr_strsum, ("1\u00a0000", 0.5), "1000.5"),
    (template.mgr_strsum, ("1e3", "1"), "1001"),
    (template.mgr_replace, (3.0, "3", "three"), "three"),
    (template.mgr_dateformat, ("2024-03-05", ""), "05.03.2024"),
    (template.mgr_dateformat, ([], "%Y"), ""),
    (template.mgr_encodesubject, (True,), "true"),
])
def test_mgr_functions_direct(function, args, expected):
    assert function(None, *args) == expected


def test_mgr_encodesubject_long_subject_stays_on_one_line():
    from email.header import decode_header, make_header
    subject = "Счёт оплачен, спасибо, что вы с нами уже много лет подряд"
    encoded = template.mgr_encodesubject(None, subject)
    assert "\n" not in encoded and encoded.count("=?utf-8?b?") > 1
    assert str(make_header(decode_header(encoded))) == subject


@pytest.mark.parametrize("call, words", [
    ("mgr:random(0)", "The XSLT template calls mgr:random(n) with '0'; n must be a positive whole number"),
    ("mgr:random('x')", "The XSLT template calls mgr:random(n) with 'x'; n must be a positive whole number"),
    ("mgr:strsum('12', 'abc')", "The XSLT template calls mgr:strsum() with 'abc', which is not a number"),
    ("mgr:strsum('NaN')", "The XSLT template calls mgr:strsum() with 'NaN', which is not a number"),
])
def test_xslt_mgr_function_errors(config, call, words):
    with pytest.raises(TemplateError) as caught:
        template.render(xslt('<xsl:value-of select="%s"/>' % call), NOTICE, config)
    assert caught.value.message == words


def test_mgr_functions_are_not_registered_globally():
    from lxml import etree
    stylesheet = etree.XSLT(etree.fromstring(xslt('<xsl:value-of select="mgr:random(1)"/>').encode("utf-8")))
    with pytest.raises(etree.XSLTApplyError):
        stylesheet(etree.fromstring(b"<doc/>"))


@pytest.mark.parametrize("text, message", [
    (xslt("x").replace("</xsl:template>", ""),
     "The XSLT template is not well-formed XML at line 6: "
     "Opening and ending tag mismatch: template line 5 and stylesheet"),
    (xslt('\n<xsl:value-of select="concat(1"/>'),
     "The XSLT template is not a valid stylesheet at line 6 (compilation error, element 'value-of'): "
     "Invalid expression; xsl:value-of : could not compile select expression 'concat(1'"),
    (xslt('\n\n<xsl:value-of select="$nothing"/>'),
     "The XSLT template failed at line 7 (runtime error, element 'value-of'): "
     "Variable 'nothing' has not been declared; Undefined variable; XPath evaluation returned no result"),
    (xslt('<xsl:message terminate="yes">Stop here</xsl:message>'), "The XSLT template failed: Stop here"),
    ('<!DOCTYPE xsl:stylesheet [<!ENTITY nbsp "&#160;">]>\n' + xslt("a&nbsp;b").split("\n", 1)[1],
     "The XSLT template declares DTD entities (&nbsp;), which are not expanded for safety; "
     "write character references instead, such as &#160; for &nbsp;"),
])
def test_xslt_errors(config, text, message):
    with pytest.raises(TemplateError) as caught:
        template.render(text, NOTICE, config)
    assert caught.value.message == message


@pytest.mark.parametrize("text", [
    xslt("<xsl:value-of select=\"document('/etc/passwd')\"/>"),
    xslt("<xsl:value-of select=\"document('file:///etc/passwd')\"/>"),
    xslt("<xsl:value-of select=\"document('{secret}')\"/>"),
    xslt("<xsl:copy-of select=\"document('file://{secret}')\"/>"),
    xslt("<xsl:value-of select=\"document('http://127.0.0.1:9/x')\"/>"),
    xslt("x").replace("<xsl:template", '<xsl:include href="/etc/passwd"/>\n<xsl:template'),
    xslt("x").replace("<xsl:output", '<xsl:import href="file://{secret}"/>\n<xsl:output'),
])
def test_xslt_has_no_file_or_network_access(config, tmp_path, text):
    secret = tmp_path / "secret.xml"   # well-formed XML, so only the access control keeps it out
    secret.write_text('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
                      '<xsl:template match="/">TOPSECRET</xsl:template></xsl:stylesheet>')
    with pytest.raises(TemplateError) as caught:
        template.render(text.replace("{secret}", str(secret)), NOTICE, config)
    for leaked in ("root:", "TOPSECRET"):
        assert leaked not in caught.value.message and leaked not in (caught.value.value or "")


@pytest.mark.parametrize("element, message", [
    ('<xsl:include href="/etc/passwd"/>',
     'The XSLT template uses xsl:include at line 4 (href "/etc/passwd"), which is not allowed: '
     'a template must be self-contained, without file or network access'),
    ('<xsl:import href="http://example.com/x.xsl"/>',
     'The XSLT template uses xsl:import at line 4 (href "http://example.com/x.xsl"), which is not allowed: '
     'a template must be self-contained, without file or network access'),
])
def test_xslt_imports_refused(config, element, message):
    with pytest.raises(TemplateError) as caught:
        template.render(xslt("x").replace("<xsl:output", element + "\n<xsl:output"), NOTICE, config)
    assert caught.value.message == message


def test_xslt_error_names_only_its_own_failure(config, monkeypatch):
    # A failed xsl:include is reported with lxml's per-thread log, holding earlier transforms' errors too.
    monkeypatch.setattr(template, "_refuse_imports", lambda stylesheet: None)
    with pytest.raises(TemplateError):
        template.render(xslt("<xsl:value-of select=\"document('http://127.0.0.1:9/x')\"/>"), NOTICE, config)
    with pytest.raises(TemplateError) as caught:
        template.render(xslt("x").replace("<xsl:output", '<xsl:include href="/nowhere.xsl"/>\n<xsl:output'),
                        NOTICE, config)
    assert caught.value.message == ('The XSLT template is not a valid stylesheet: failed to load '
                                    '"string://__STRING__XSLT__/nowhere.xsl": No such file or directory')


def test_xslt_cannot_write_files(config, tmp_path):
    target = tmp_path / "written.txt"
    text = xslt('<exsl:document href="%s" method="text">owned</exsl:document>done' % target)
    text = text.replace('xmlns:mgr=', 'xmlns:exsl="http://exslt.org/common" extension-element-prefixes="exsl" '
                                      'xmlns:mgr=')
    with pytest.raises(TemplateError):
        template.render(text, NOTICE, config)
    assert not target.exists()


@pytest.mark.parametrize("notice, message", [
    ('<!DOCTYPE doc [<!ENTITY x "XXX">]><doc>&x;</doc>',
     "The notice XML was refused: it carries a DOCTYPE, and DTDs and entity declarations are not "
     "accepted for safety"),
    ('<!DOCTYPE doc [<!ENTITY x SYSTEM "file:///etc/passwd">]><doc>&x;</doc>',
     "The notice XML was refused: it carries a DOCTYPE, and DTDs and entity declarations are not "
     "accepted for safety"),
    ('<!DOCTYPE doc [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
     '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><doc>&c;</doc>',
     "The notice XML was refused: it carries a DOCTYPE, and DTDs and entity declarations are not "
     "accepted for safety"),
    ("<doc>&x;</doc>", "The notice XML is not well-formed at line 1: Entity 'x' not defined"),
    ("<doc>\n<a></b>\n</doc>",
     "The notice XML is not well-formed at line 2: Opening and ending tag mismatch: a line 2 and b"),
    ("  \n", "The notice XML is empty; there is nothing to render the template with"),
])
@pytest.mark.parametrize("kind", ["xslt", pytest.param("ejs", marks=needs_node)])
def test_bad_notice_refused(config, kind, notice, message):
    text = xslt('<xsl:value-of select="."/>') if kind == "xslt" else "<%= JSON.stringify(locals) %>"
    with pytest.raises(TemplateError) as caught:
        template.render(text, notice, config)
    assert caught.value.message == message


# ---- EJS ----------------------------------------------------------------------------------------

@needs_node
@pytest.mark.parametrize("text, expected", [
    ("<%= project.name %>", "Хостинг &amp; Ко"),
    ("<%- project.name %>", "Хостинг & Ко"),
    ("a<%# a comment %>b", "ab"),
    ("<%= '<b>\"x\"</b>' %>", "&lt;b&gt;&#34;x&#34;&lt;/b&gt;"),
    ("<% item.forEach(function (i) { %>[<%= i.$.id %>:<%= i.name %>]<% }) %>", "[1:VPS][2:Домен]"),
    ("<a href=\"<%= billurl %>?func=x&amp;hash=<%= cmdhash %>\">Оплатить</a>",
     "<a href=\"https://my.example.com/billmgr?func=x&amp;hash=abc123\">Оплатить</a>"),
    ("Дата: <%= date.split(' ')[0] %>\n", "Дата: 2024-03-05\n"),
    ("plain text, {user.name}", "plain text, {user.name}"),
    ("", ""),
])
def test_ejs_render(config, text, expected):
    assert template.render(text, NOTICE, config) == expected


@needs_node
@pytest.mark.parametrize("text, message", [
    ("Hello\n<%= x %>", "The EJS template failed at line 2: x is not defined"),
    ("one\ntwo\n<% project.name.nope() %>",
     "The EJS template failed at line 3: project.name.nope is not a function"),
    ("Hello <%", 'The EJS template failed: Could not find matching close tag for "<%".'),
])
def test_ejs_errors(config, text, message):
    with pytest.raises(TemplateError) as caught:
        template.render(text, NOTICE, config)
    assert caught.value.message == message


@needs_node
def test_ejs_syntax_error_is_readable(config):
    with pytest.raises(TemplateError) as caught:
        template.render("<% if (1) { %>", NOTICE, config)
    assert caught.value.message.startswith("The EJS template does not compile (Unexpected token")
    assert caught.value.message.endswith("check that every <% %> block and brace is closed")
    assert "while compiling ejs" not in caught.value.message and "EJS-Lint" not in caught.value.message


@needs_node
def test_ejs_data_goes_through_stdin_not_arguments(config, monkeypatch):
    import subprocess
    calls = []
    real_run = subprocess.run

    def spy(args, **kwargs):
        calls.append((args, kwargs))
        return real_run(args, **kwargs)
    monkeypatch.setattr(subprocess, "run", spy)
    assert template.render("<%= cmdhash %>", NOTICE, config) == "abc123"
    (args, kwargs), = calls
    assert args[1:] == [template.EJS_RUNNER]
    assert b"abc123" in kwargs["input"] and kwargs["timeout"] == template.EJS_TIMEOUT


@needs_node
def test_ejs_timeout(config, monkeypatch):
    monkeypatch.setattr(template, "EJS_TIMEOUT", 1)
    with pytest.raises(TemplateError) as caught:
        template.render("<% while (true) {} %>", NOTICE, config)
    assert caught.value.message == "The EJS template did not finish within 1 seconds; look for an endless loop"


@needs_node
def test_billmanager_ejs_runner_preferred(config, tmp_path):
    scripts = tmp_path / "etc" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "template_ejs.js").write_text(
        "var s = ''; process.stdin.on('data', function (c) { s += c; });\n"
        "process.stdin.on('end', function () { var j = JSON.parse(s);\n"
        "  process.stdout.write('billmanager:' + j.data.cmdhash + ':' + j.template); });\n")
    assert template.render("<%= x %>", NOTICE, config) == "billmanager:abc123:<%= x %>"


def test_missing_node(config, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(template, "NODE_DIRS", (str(empty),))
    with pytest.raises(TemplateError) as caught:
        template.render("<%= project.name %>", NOTICE, config)
    assert caught.value.message == ("node is not installed; EJS templates need node and the ejs package "
                                    "(apt install nodejs node-ejs, or npm install -g ejs)")


@needs_node
def test_missing_ejs_package(config, monkeypatch):
    monkeypatch.delenv("NODE_PATH", raising=False)
    monkeypatch.setattr(template, "NODE_MODULE_DIRS", ())
    with pytest.raises(TemplateError) as caught:
        template.render("<%= project.name %>", NOTICE, config)
    assert caught.value.message == ("node cannot find the ejs package, which EJS templates need "
                                    "(apt install node-ejs, or npm install -g ejs)")
    assert "Cannot find module 'ejs'" in caught.value.value


def test_node_path_keeps_the_existing_one(monkeypatch):
    monkeypatch.setenv("NODE_PATH", "/opt/mine")
    assert template._node_environment()["NODE_PATH"] == os.pathsep.join(
        ["/opt/mine", "/usr/share/nodejs", "/usr/lib/node_modules", "/usr/local/lib/node_modules"])
