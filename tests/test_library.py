"""Unit tests of the library's small pieces: arguments, XML out, redaction, config, settings."""

import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib", "python"))

from mgrnotify import config, errors, log, redact, runner, xmlio  # noqa: E402
from mgrnotify.settings import Settings  # noqa: E402


@pytest.mark.parametrize("argv, expected", [
    (["--command", "features"], {"command": "features"}),
    (["--command=outgoing"], {"command": "outgoing"}),
    (["--command", "getmessage", "--gate", "all"], {"command": "getmessage", "gate": "all"}),
    (["--gate=7", "--command", "getmessage"], {"command": "getmessage", "gate": "7"}),
])
def test_arguments_accepted(argv, expected):
    assert runner.parse_arguments(argv) == expected


@pytest.mark.parametrize("argv, words", [
    ([], "No command given"),
    (["features"], "Unexpected argument 'features'"),
    (["--command"], "--command needs a value"),
    (["--command", "--gate", "1"], "--command needs a value"),
    (["--command", "a", "--command", "b"], "given twice"),
    (["--gate", "1"], "No command given"),
    (["--"], "Unexpected argument '--'"),
])
def test_arguments_refused(argv, words):
    with pytest.raises(errors.UsageError) as caught:
        runner.parse_arguments(argv)
    assert words in caught.value.message


@pytest.mark.parametrize("text, expected", [
    ("plain", "plain"),
    ("tab\tnl\ncr\r", "tab\tnl\ncr\r"),
    ("bell\x07nul\x00esc\x1b", "bellnulesc"),
    ("\ufffe\uffff\ud800ok", "ok"),
    ("кириллица 🎉 \u202eRTL", "кириллица 🎉 \u202eRTL"),
])
def test_clean_drops_what_xml_forbids(text, expected):
    assert xmlio.clean(text) == expected


def test_element_escapes_text_and_attributes():
    out = xmlio.element("m", 'a<b>&"c"\x07', {"from": 'x"y<\n'})
    assert out == '<m from="x&quot;y&lt;&#10;">a&lt;b&gt;&amp;"c"</m>'
    assert xmlio.parse(out).get("from") == 'x"y<\n'


def test_error_document_round_trip():
    error = errors.ConnectError("Cannot reach the server <x>", obj="gwx", value="refused")
    root = xmlio.parse(xmlio.error_document(error))
    node = root.find("error")
    assert (node.get("type"), node.get("object")) == ("connect", "gwx")
    assert xmlio.text(node, "param") == "refused"
    assert xmlio.text(node, "msg") == "Cannot reach the server <x>"


@pytest.mark.parametrize("line, secret", [
    ("<doc><password>hunter2</password></doc>", "hunter2"),
    ("<xmlparams>&lt;doc&gt;&lt;smtp_password&gt;hunter2&lt;/smtp_password&gt;&lt;/doc&gt;</xmlparams>", "hunter2"),
    ("<SMS><authentification><username>u</username><password>hunter2</password></authentification></SMS>", "hunter2"),
    ("<SMS><authentification><username>user77</username></authentification></SMS>", "user77"),
    ('<param name="password">hunter2</param>', "hunter2"),
    ("password=hunter2&login=u", "hunter2"),
    ("private_key: hunter2", "hunter2"),
    ('{"api_key": "hunter2"}', "hunter2"),
    ("<token attr='1'>hunter2</token>", "hunter2"),
    ('<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">AGh1bnRlcjI=</auth>', "AGh1bnRlcjI="),
])
def test_redact_by_name(line, secret):
    out = redact.redact(line)
    assert secret not in out
    assert redact.MASK in out


def test_redact_remembered_value_in_every_form():
    redact.remember("S3cr&t <pw>")
    for form in ("S3cr&t <pw>", "S3cr&amp;t &lt;pw&gt;", "S3cr%26t%20%3Cpw%3E", "S3cr%26t+%3Cpw%3E"):
        assert "S3cr" not in redact.redact("sent " + form + " to server")


def test_redact_keeps_ordinary_text():
    line = "Delivered message 42 to +79001234567 (2 parts) for user 'bob'"
    assert redact.redact(line) == line


# Lines that made the old patterns take time growing with the square of their length: each attempt searched the
# rest of the line for a closing tag or delimiter that never came (20 KB of one of them took seconds).
PATHOLOGICAL = {
    "unclosed tags": "<password>",
    "unclosed escaped tags": "&lt;password&gt;",
    "unclosed named fields": '<param name="password">',
    "tags without an end": "<password",
    "escaped tags without an end": "&lt;password ",
    "orphan closing tags": "</password>",
    "unclosed quotes": 'password="',
    "keys": "password: ",
    "one long tag name": "pass",   # after a "<"
    "one long key": "passwd",
}


def pathological(size):
    """Each of PATHOLOGICAL repeated to ``size`` characters, followed by a secret that must still be masked."""
    texts = {}
    for name, unit in PATHOLOGICAL.items():
        text = unit * (size // len(unit))
        texts[name] = ("<" + text if name == "one long tag name" else text) + " <password>hunter2</password>"
    return texts


REDACT_ALL = """
import json, sys
sys.path.insert(0, sys.argv[1])
from mgrnotify import redact
for name, text in json.load(sys.stdin).items():
    if "hunter2" in redact.redact(text):
        print("leaked in", name)
print("done")
"""


def test_redact_takes_linear_time_on_pathological_lines():
    # No assertion on time: a generous bound on a subprocess, which the old quadratic patterns overran by hours.
    lib = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib", "python")
    done = subprocess.run([sys.executable, "-c", REDACT_ALL, lib], input=json.dumps(pathological(1024 * 1024)).encode(),
                          stdout=subprocess.PIPE, timeout=60)
    assert done.stdout.decode().split("\n")[:-1] == ["done"]


def test_log_line_format_and_control_characters(tmp_path):
    path = str(tmp_path / "var" / "gwx.log")
    logger = log.Log("gwx", path, 9)
    logger.info("hello %s", "мир\nforged line\x1b[31m")
    logger.debug("<password>hunter2</password>")
    lines = open(path, encoding="utf-8").read().splitlines()
    assert len(lines) == 2
    import re
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[\d+\] gwx \x1b\[1;32mINFO hello мир\\nforged line"
                    r"\\x1b\[31m\x1b\[0m$", lines[0])
    assert "hunter2" not in lines[1] and "DEBUG" in lines[1]


def test_log_level_filters(tmp_path):
    path = str(tmp_path / "x.log")
    logger = log.Log("x", path, 4)
    logger.info("not written")
    logger.warning("written")
    assert open(path).read().count("\n") == 1


def test_config_files(tmp_path):
    etc = tmp_path / "etc"
    (etc / "billmgr.conf.d").mkdir(parents=True)
    (etc / "billmgr.conf").write_text("# comment\nDBHost localhost\nDBUser billmgr\nDBPassword  a b#c \n")
    (etc / "billmgr.conf.d" / "20-b.conf").write_text("DBUser second\n")
    (etc / "billmgr.conf.d" / "10-a.conf").write_text("DBUser first\nDBName billmgr\n")
    (etc / "billmgr.conf.d" / "ignored.txt").write_text("DBName nope\n")
    (etc / "debug.conf").write_text("gwa 9\ngwb.* 3\nother 1\n")
    conf = config.Config(str(tmp_path))
    assert conf.get("DBUser") == "second"
    assert conf.get("DBName") == "billmgr"
    assert conf.get("DBPassword") == "a b#c"
    assert (conf.log_level("gwa"), conf.log_level("gwb"), conf.log_level("gwc")) == (9, 3, config.DEFAULT_LOG_LEVEL)
    assert not conf.do_nothing()
    (etc / "billmgr.DoNothing").write_text("")
    assert conf.do_nothing()


def test_root_from_script_and_environment(monkeypatch):
    monkeypatch.delenv("MGR5_ROOT", raising=False)
    assert config.mgr5_root("/usr/local/mgr5/gate/gwx") == "/usr/local/mgr5"
    monkeypatch.setenv("MGR5_ROOT", "/srv/mgr5")
    assert config.mgr5_root("/usr/local/mgr5/gate/gwx") == "/srv/mgr5"


def test_settings_from_request():
    request = xmlio.parse(
        "<doc><gateway><id>3</id><name>row</name><xmlparams>&lt;doc&gt;&lt;login&gt; bob &lt;/login&gt;"
        "&lt;password&gt; pw pw &lt;/password&gt;&lt;timeout&gt;7&lt;/timeout&gt;&lt;verify_tls&gt;off&lt;/verify_tls&gt;"
        "&lt;name&gt;params&lt;/name&gt;&lt;/doc&gt;</xmlparams></gateway><message>m</message></doc>")
    settings = Settings.from_request(request)
    assert settings.get("login") == "bob"
    assert settings.secret("password") == " pw pw "
    assert settings.get("id") == "3"
    assert settings.get("name") == "params"
    assert settings.number("timeout", 15, 1, 60) == 7
    assert settings.flag("verify_tls", True) is False
    assert settings.get("missing", "dflt") == "dflt"
    assert " pw pw " not in redact.redact("logged  pw pw  here")


@pytest.mark.parametrize("call, words", [
    (lambda s: s.require("sender"), "'sender' is empty"),
    (lambda s: s.number("timeout", 1, 1, 60), "between 1 and 60"),
    (lambda s: s.number("login", 1), "whole number"),
    (lambda s: s.flag("login", True), "on or off"),
    (lambda s: s.choice("login", ("a", "b"), "a"), "one of a, b"),
])
def test_settings_errors_name_the_setting(call, words):
    settings = Settings({"login": "bob", "timeout": "600", "sender": " "})
    with pytest.raises(errors.ConfigError) as caught:
        call(settings)
    assert words in caught.value.message


def test_xmlparams_that_is_not_xml_is_an_input_error():
    request = xmlio.parse("<doc><gateway><xmlparams>&lt;doc&gt;&lt;login&gt;</xmlparams></gateway></doc>")
    with pytest.raises(errors.InputError) as caught:
        Settings.from_request(request)
    assert "xmlparams" in caught.value.message


def test_a_streamed_element_split_over_reads_comes_at_once():
    """expat >= 2.6 (Python 3.13) holds back a token split over reads until more bytes come; a request read as
    it arrives (outgoing_batch) must give each element as soon as it is complete, or caller and gateway wait
    for each other."""
    import threading
    read_end, write_end = os.pipe()
    elements = xmlio.stream_elements(read_end, ("message",))
    got = []
    reader = threading.Thread(target=lambda: got.append(next(elements)), daemon=True)
    reader.start()
    # Three reads: an element, then a start tag cut in two (the pauses keep them apart).
    for data in (b"<doc><messages><gateway>" + b"z" * 1000 + b"</gateway>", b"<message id='1' to='" + b"x" * 50,
                 b"'/>"):   # and the document stays open: the caller waits for the answer now
        os.write(write_end, data)
        time.sleep(0.2)
    reader.join(10)
    try:
        assert got and got[0].get("id") == "1", "the complete element must come before the document ends"
    finally:
        os.close(write_end)
        reader.join(10)
        os.close(read_end)
