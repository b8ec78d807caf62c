"""Template rendering: XML→JSON for EJS, macros, XSLT with the mgr: functions, EJS under node."""

import os
import re
import shutil
import sys
import xml.etree.ElementTree as ElementTree

import pytest

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib", "python")
if LIB not in sys.path:
    sys.path.insert(0, LIB)

from mgrnotify import template, xslt_render  # noqa: E402
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
    """An empty MGR5 root."""
    return Config(str(tmp_path))


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    """One Renderer for the module's many templates, as a queue run keeps one for its notices."""
    with template.Renderer(Config(str(tmp_path_factory.mktemp("mgr5")))) as shared:
        yield shared


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
def test_xslt_render(renderer, body, output, expected):
    text = xslt(body, output) if output else xslt(body)
    assert renderer.render(text, NOTICE) == expected


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
def test_xslt_mgr_functions(renderer, call, expected):
    assert renderer.render(xslt('<xsl:value-of select="%s"/>' % call), NOTICE) == expected


def test_xslt_mgr_random_range(renderer):
    values = [int(renderer.render(xslt('<xsl:value-of select="mgr:random(3)"/>'), NOTICE))
              for _ in range(30)]
    assert set(values) <= {0, 1, 2} and len(set(values)) > 1
    big = renderer.render(xslt('<xsl:value-of select="mgr:random()"/>'), NOTICE)
    assert re.match(r"^\d+$", big) and 0 <= int(big) <= 2 ** 31 - 1


@pytest.mark.parametrize("function, args, expected", [
    (xslt_render.mgr_strsum, (), "0"),
    (xslt_render.mgr_strsum, (["12 345 678 901 234 567 890,123456789"], "0.000000001"),
     "12345678901234567890.123456790"),
    (xslt_render.mgr_strsum, ("1\u00a0000", 0.5), "1000.5"),
    (xslt_render.mgr_strsum, ("1e3", "1"), "1001"),
    (xslt_render.mgr_replace, (3.0, "3", "three"), "three"),
    (xslt_render.mgr_dateformat, ("2024-03-05", ""), "05.03.2024"),
    (xslt_render.mgr_dateformat, ([], "%Y"), ""),
    (xslt_render.mgr_encodesubject, (True,), "true"),
])
def test_mgr_functions_direct(function, args, expected):
    assert function(None, *args) == expected


def test_mgr_encodesubject_long_subject_stays_on_one_line():
    from email.header import decode_header, make_header
    subject = "Счёт оплачен, спасибо, что вы с нами уже много лет подряд"
    encoded = xslt_render.mgr_encodesubject(None, subject)
    assert "\n" not in encoded and encoded.count("=?utf-8?b?") > 1
    assert str(make_header(decode_header(encoded))) == subject


@pytest.mark.parametrize("call, words", [
    ("mgr:random(0)", "The XSLT template calls mgr:random(n) with '0'; n must be a positive whole number"),
    ("mgr:random('x')", "The XSLT template calls mgr:random(n) with 'x'; n must be a positive whole number"),
    ("mgr:strsum('12', 'abc')", "The XSLT template calls mgr:strsum() with 'abc', which is not a number"),
    ("mgr:strsum('NaN')", "The XSLT template calls mgr:strsum() with 'NaN', which is not a number"),
])
def test_xslt_mgr_function_errors(renderer, call, words):
    with pytest.raises(TemplateError) as caught:
        renderer.render(xslt('<xsl:value-of select="%s"/>' % call), NOTICE)
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
def test_xslt_errors(renderer, text, message):
    with pytest.raises(TemplateError) as caught:
        renderer.render(text, NOTICE)
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
def test_xslt_has_no_file_or_network_access(renderer, tmp_path, text):
    secret = tmp_path / "secret.xml"   # well-formed XML, so only the access control keeps it out
    secret.write_text('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
                      '<xsl:template match="/">TOPSECRET</xsl:template></xsl:stylesheet>')
    with pytest.raises(TemplateError) as caught:
        renderer.render(text.replace("{secret}", str(secret)), NOTICE)
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
def test_xslt_imports_refused(renderer, element, message):
    with pytest.raises(TemplateError) as caught:
        renderer.render(xslt("x").replace("<xsl:output", element + "\n<xsl:output"), NOTICE)
    assert caught.value.message == message


def test_xslt_error_names_only_its_own_failure(monkeypatch):
    # A failed xsl:include is reported with lxml's per-thread log, holding earlier transforms' errors too.
    # In this process, as the XSLT worker does it: a worker's code cannot be patched from here.
    monkeypatch.setattr(xslt_render, "_refuse_imports", lambda stylesheet: None)
    with pytest.raises(TemplateError):
        xslt_render.transform(xslt("<xsl:value-of select=\"document('http://127.0.0.1:9/x')\"/>"), NOTICE)
    with pytest.raises(TemplateError) as caught:
        xslt_render.transform(xslt("x").replace("<xsl:output", '<xsl:include href="/nowhere.xsl"/>\n<xsl:output'),
                              NOTICE)
    assert caught.value.message == ('The XSLT template is not a valid stylesheet: failed to load '
                                    '"string://__STRING__XSLT__/nowhere.xsl": No such file or directory')


def test_xslt_cannot_write_files(renderer, tmp_path):
    target = tmp_path / "written.txt"
    text = xslt('<exsl:document href="%s" method="text">owned</exsl:document>done' % target)
    text = text.replace('xmlns:mgr=', 'xmlns:exsl="http://exslt.org/common" extension-element-prefixes="exsl" '
                                      'xmlns:mgr=')
    with pytest.raises(TemplateError):
        renderer.render(text, NOTICE)
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
def test_bad_notice_refused(renderer, kind, notice, message):
    text = xslt('<xsl:value-of select="."/>') if kind == "xslt" else "<%= JSON.stringify(locals) %>"
    with pytest.raises(TemplateError) as caught:
        renderer.render(text, notice)
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
def test_ejs_render(renderer, text, expected):
    assert renderer.render(text, NOTICE) == expected


@needs_node
@pytest.mark.parametrize("text, message", [
    ("Hello\n<%= x %>", "The EJS template failed at line 2: x is not defined"),
    ("one\ntwo\n<% project.name.nope() %>",
     "The EJS template failed at line 3: project.name.nope is not a function"),
    ("Hello <%", 'The EJS template failed: Could not find matching close tag for "<%".'),
])
def test_ejs_errors(renderer, text, message):
    with pytest.raises(TemplateError) as caught:
        renderer.render(text, NOTICE)
    assert caught.value.message == message


@needs_node
def test_ejs_syntax_error_is_readable(renderer):
    with pytest.raises(TemplateError) as caught:
        renderer.render("<% if (1) { %>", NOTICE)
    assert caught.value.message.startswith("The EJS template does not compile (Unexpected token")
    assert caught.value.message.endswith("check that every <% %> block and brace is closed")
    assert "while compiling ejs" not in caught.value.message and "EJS-Lint" not in caught.value.message


@needs_node
def test_ejs_data_goes_through_stdin_not_arguments(config, monkeypatch):
    import subprocess
    calls = []
    real_popen = subprocess.Popen

    def spy(args, **kwargs):
        calls.append((args, kwargs))
        return real_popen(args, **kwargs)
    monkeypatch.setattr(subprocess, "Popen", spy)
    assert template.render("<%= cmdhash %>", NOTICE, config) == "abc123"
    (args, kwargs), = calls
    assert args[-3:] == [template._find_node(), "--max-old-space-size=%d" % template.NODE_HEAP_MB, template.EJS_RUNNER]
    assert kwargs["stdin"] == subprocess.PIPE and kwargs["cwd"] == "/"
    assert "abc123" not in repr(args) + repr(kwargs)


@needs_node
def test_billmanagers_own_ejs_runner_is_never_run(config, tmp_path):
    # Its input protocol is not public; a guess at it would render nothing right, and outside our isolation.
    scripts = tmp_path / "etc" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "template_ejs.js").write_text("process.stdout.write('billmanager'); while (true) {}\n")
    assert template.render("<%= cmdhash %>", NOTICE, config) == "abc123"


def test_missing_node(config, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(template, "NODE_DIRS", (str(empty),))
    monkeypatch.delenv(template.NODE_ENV, raising=False)
    with pytest.raises(TemplateError) as caught:
        template.render("<%= project.name %>", NOTICE, config)
    assert caught.value.message == "node is not installed; EJS templates need it (the nodejs package)"


def test_node_named_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(template.NODE_ENV, str(tmp_path / "nowhere" / "node"))
    assert template._find_node() is None
    chosen = tmp_path / "node"
    chosen.write_text("#!/bin/sh\n")
    chosen.chmod(0o755)
    monkeypatch.setenv(template.NODE_ENV, str(chosen))
    assert template._find_node() == str(chosen)


@needs_node
@pytest.mark.parametrize("global_ejs", [False, True], ids=["nowhere", "only a global one"])
def test_missing_ejs_package(config, tmp_path, monkeypatch, global_ejs):
    # The runner without the copy beside it; a global ejs (NODE_PATH, node_modules above) must not stand in.
    runner = tmp_path / "lib" / "ejs_render.js"
    runner.parent.mkdir()
    shutil.copy(template.EJS_RUNNER, str(runner))
    if global_ejs:
        (tmp_path / "node_modules").symlink_to(os.path.dirname(template.EJS_PACKAGE))
        monkeypatch.setenv("NODE_PATH", os.path.dirname(template.EJS_PACKAGE))
    monkeypatch.setattr(template, "EJS_RUNNER", str(runner))
    monkeypatch.setattr(template, "EJS_PACKAGE", str(tmp_path / "lib" / "node_modules" / "ejs"))
    with pytest.raises(TemplateError) as caught:
        template.render("<%= project.name %>", NOTICE, config)
    assert caught.value.message == ("The ejs package shipped with mgrnotify is missing from %s/lib/node_modules/ejs; "
                                    "reinstall billmanager-plugin-mgrnotify" % tmp_path)
    assert "Cannot find module" in caught.value.value


def test_node_gets_none_of_the_runs_environment(monkeypatch):
    monkeypatch.setenv("NODE_OPTIONS", "--require /tmp/evil.js")
    monkeypatch.setenv("DB_PASSWORD", "secret")
    monkeypatch.setenv("TZ", "Europe/Moscow")
    monkeypatch.setenv("LC_TIME", "ru_RU.UTF-8")
    environment = template._node_environment()
    assert environment["TZ"] == "Europe/Moscow" and environment["LC_TIME"] == "ru_RU.UTF-8"
    assert "NODE_OPTIONS" not in environment and "DB_PASSWORD" not in environment


# ---- helper processes: isolation, deadlines, output, replacement ----------------------------------

LOOPING_XSLT = xslt('<xsl:call-template name="twice"><xsl:with-param name="depth" select="60"/></xsl:call-template>'
                    ).replace('</xsl:stylesheet>',
                              '<xsl:template name="twice"><xsl:param name="depth"/><xsl:if test="$depth &gt; 0">'
                              '<xsl:call-template name="twice"><xsl:with-param name="depth" select="$depth - 1"/>'
                              '</xsl:call-template><xsl:call-template name="twice">'
                              '<xsl:with-param name="depth" select="$depth - 1"/></xsl:call-template>'
                              '</xsl:if></xsl:template>\n</xsl:stylesheet>')
LOOPING_EJS = "<% while (true) {} %>"


def notice_for(name):
    return "<doc><name>%s</name></doc>" % name


@pytest.fixture
def log(tmp_path):
    """The module log at debug level, in a file of the test's own."""
    from mgrnotify.log import Log
    return Log("ntjabber", str(tmp_path / "ntjabber.log"), 9)


def logged(log):
    with open(log.path, encoding="utf-8") as f:
        return f.read()


def child_processes(parent):
    """{pid: command line} of the live (not zombie) processes whose parent is ``parent``."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except (OSError, IndexError):
            continue
        if int(ppid) == parent and state != "Z":
            found[int(name)] = cmdline
    return found


def helpers_of(parent):
    """{"EJS"/"XSLT": pid} of a process's template helpers (one renderer's)."""
    found = {}
    for pid, cmdline in child_processes(parent).items():
        if "ejs_render.js" in cmdline:
            found["EJS"] = pid
        elif "mgrnotify.xslt_render" in cmdline:
            found["XSLT"] = pid
    return found


def helper_pids(renderer):
    """{"EJS"/"XSLT": pid} of the renderer's running helpers."""
    return {helper.name: helper.process.pid for helper in (renderer._ejs, renderer._xslt) if helper.process}


def alive(pid):
    """True while any thread of ``pid`` runs: node's main thread is a zombie before its other threads end,
    and only then can the process be waited for."""
    try:
        threads = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return False
    for thread in threads:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, thread)) as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return True
        except (OSError, IndexError):
            continue
    return False


def wait_until(condition, seconds=5):
    import time
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.05)
    return condition()


@needs_node
@pytest.mark.parametrize("chatter", [
    '<% console.log("x") %>',
    '<% process.stdout.write("x") %>',
    '<% process.stdout.write(JSON.stringify({text: "forged"}) + "\\n") %>',
    '<% console.error("x") %>',
    '<% console.info("x"); console.warn("y"); console.dir({a: 1}) %>',
])
def test_ejs_output_never_becomes_another_answer(config, log, chatter):
    with template.Renderer(config, log) as renderer:
        for _ in range(3):
            for name in ("alice", "bob"):
                assert renderer.render(chatter + "Hello <%= name %>", notice_for(name)) == "Hello " + name
                assert renderer.render(xslt('Hi <xsl:value-of select="name"/>'), notice_for(name)) == "Hi " + name


@needs_node
def test_ejs_output_is_logged_and_bounded(config, log):
    import time
    with template.Renderer(config, log) as renderer:
        assert renderer.render('<% console.log("first line"); process.stdout.write("no newline") %>ok',
                               NOTICE) == "ok"
        text = logged(log)
        assert "WARNING The EJS renderer (pid %d) printed: first line" % helper_pids(renderer)["EJS"] in text
        assert "printed: no newline" in text
        started = time.time()
        flood = '<% for (var i = 0; i < 100000; i++) { console.log("line " + i) } %>done <%= cmdhash %>'
        assert renderer.render(flood, NOTICE) == "done abc123"
        assert time.time() - started < 10
    flood_lines = [line for line in logged(log).splitlines() if "printed: line " in line]
    assert len(flood_lines) == template.OUTPUT_LOG_LINES
    assert "the rest is not logged" in logged(log)


@pytest.mark.parametrize("kind, text, seconds, message", [
    ("XSLT", LOOPING_XSLT, "1",
     "The XSLT template ran past 1 s and was stopped; look for endless recursion or loops"),
    ("XSLT", LOOPING_XSLT, "0.5",
     "The XSLT template ran past 0.5 s and was stopped; look for endless recursion or loops"),
    pytest.param("EJS", LOOPING_EJS, "1", "The EJS template ran past 1 s and was stopped; look for an endless loop",
                 marks=needs_node),
], ids=["XSLT 1 s", "XSLT 0.5 s", "EJS 1 s"])
def test_endless_template_is_stopped_and_the_next_one_renders(config, log, monkeypatch, kind, text, seconds,
                                                              message):
    import time
    monkeypatch.setenv(template.TIMEOUT_ENV, seconds)
    follow_up = xslt('<xsl:value-of select="cmdhash"/>') if kind == "XSLT" else "<%= cmdhash %>"
    with template.Renderer(config, log) as renderer:
        assert renderer.render(follow_up, NOTICE) == "abc123"
        stuck = helper_pids(renderer)[kind]
        started = time.time()
        with pytest.raises(TemplateError) as caught:
            renderer.render(text, NOTICE)
        assert float(seconds) <= time.time() - started < float(seconds) + 2
        assert caught.value.message == message
        assert not alive(stuck)
        assert renderer.render(follow_up, NOTICE) == "abc123"


def test_bad_timeout_setting_falls_back_to_the_default(config, log, monkeypatch):
    monkeypatch.setenv(template.TIMEOUT_ENV, "soon")
    assert template.Renderer(config, log).timeout == template.RENDER_TIMEOUT
    assert "MGRNOTIFY_TEMPLATE_TIMEOUT='soon' is not a positive number of seconds; templates get 30 s" in logged(log)


@needs_node
def test_helper_killed_between_renders_is_replaced(config, log):
    import signal
    with template.Renderer(config, log) as renderer:
        assert renderer.render("<%= cmdhash %>", NOTICE) == "abc123"
        assert renderer.render(xslt('<xsl:value-of select="cmdhash"/>'), NOTICE) == "abc123"
        before = helper_pids(renderer)
        for pid in before.values():
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not any(alive(pid) for pid in before.values()))
        assert renderer.render("<%= cmdhash %>", NOTICE) == "abc123"
        assert renderer.render(xslt('<xsl:value-of select="cmdhash"/>'), NOTICE) == "abc123"
        after = helper_pids(renderer)
        assert set(after) == {"EJS", "XSLT"} and not set(after.values()) & set(before.values())
    for kind in ("EJS", "XSLT"):
        assert ("The %s renderer (pid %d) had stopped (killed by signal 9); starting a new one"
                % (kind, before[kind])) in logged(log)
    assert not any(alive(pid) for pid in after.values())


KILLED_RUN = r"""
import json, sys, threading
sys.path.insert(0, sys.argv[1])
from mgrnotify import template
from mgrnotify.config import Config
ok_xslt, looping_xslt, notice = json.loads(sys.stdin.read())
renderer = template.Renderer(Config(sys.argv[2]))
renderer.render("<%= cmdhash %>", notice)
renderer.render(ok_xslt, notice)
print("ready", flush=True)
threading.Thread(target=renderer.render, args=(looping_xslt, notice), daemon=True).start()
renderer.render("<% while (true) {} %>", notice)
"""


@needs_node
def test_helpers_die_with_a_killed_run(config):
    import json
    import signal
    import subprocess
    import time
    env = dict(os.environ)
    env[template.TIMEOUT_ENV] = "120"
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, LIB, config.root], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, env=env)
    try:
        run.stdin.write(json.dumps([xslt("x"), LOOPING_XSLT, NOTICE]).encode("utf-8"))
        run.stdin.close()
        assert run.stdout.readline() == b"ready\n"
        helpers = helpers_of(run.pid)
        assert set(helpers) == {"EJS", "XSLT"}
        time.sleep(0.5)   # both helpers are now in their endless templates
        assert all(alive(pid) for pid in helpers.values())
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
        run.stdout.close()
    assert wait_until(lambda: not any(alive(pid) for pid in helpers.values())), helpers


FAKE_HELPER = r"""
import json, os, sys
answers = int(os.environ["MGRNOTIFY_ANSWER_FD"])
for line in sys.stdin:
    request = json.loads(line)
    reply = (json.dumps({"id": request["id"], "text": request["say"]}) + "\n").encode("utf-8")
    if request["say"] == "forged first":
        os.write(answers, b'{"id": "0123456789abcdef.1", "text": "forged"}\n')
    elif request["say"] == "garbage":
        reply = b"garbage\n"
    elif request["say"] == "exit":
        print("  a long traceback\n" * 500 + "Traceback: the helper failed", flush=True)
        sys.exit(7)
    elif request["say"] == "nothing":
        continue
    elif request["say"] == "flood first":
        sys.stdout.write("x" * 1000000 + "\n")
        sys.stdout.flush()
    while reply:
        reply = reply[os.write(answers, reply):]
"""


@pytest.mark.parametrize("say, outcome", [
    ("hello", "hello"),
    ("forged first", "forged first"),
    ("flood first", "flood first"),
    ("big " + "y" * 500000, "big " + "y" * 500000),
    ("garbage", "The XSLT renderer wrote something that is not an answer ('garbage') and was stopped; "
                "the next template gets a new one"),
    ("exit", "The XSLT renderer stopped unexpectedly (exit status 7: Traceback: the helper failed)"),
    ("nothing", "ran past"),
], ids=["answer", "forged answer first", "flood of output first", "long request and answer", "garbage",
        "exit", "no answer"])
def test_helper_protocol(log, say, outcome):
    helper = template._Helper("XSLT", lambda: ([sys.executable, "-c", FAKE_HELPER], dict(os.environ), None),
                              log, 0.5, "ran past")
    try:
        if outcome == say:
            assert helper.ask({"say": say}) == {"id": "%s.1" % helper.nonce, "text": say}
        else:
            with pytest.raises(TemplateError) as caught:
                helper.ask({"say": say})
            assert caught.value.message == outcome
            assert helper.process is None
        assert helper.ask({"say": "next"})["text"] == "next"
    finally:
        helper.stop()
    if say == "forged first":
        assert "gave an answer for another request (id '0123456789abcdef.1'); it is ignored" in logged(log)


def test_render_without_a_renderer_leaves_no_helper(config):
    before = set(child_processes(os.getpid()))
    assert template.render(xslt('<xsl:value-of select="cmdhash"/>'), NOTICE, config) == "abc123"
    if template._find_node() is not None:
        assert template.render("<%= cmdhash %>", NOTICE, config) == "abc123"
    assert set(child_processes(os.getpid())) <= before
