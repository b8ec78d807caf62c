"""Redaction (issue 14): no secret of any length, at any position relative to where an event is cut, reaches the
log, and every line break is escaped, so one event is one line. Everything goes through ``Log.write`` into a real
file and is read back. Tables first, then generated cases.

Secrets are drawn from SECRET_ALPHABET, which shares no character with the text around them (lower-case filler,
XML, the log's "… (cut: …)" note), so "the secret is not in the line" is an exact test even for one character.
"""

import base64
import json
import os
import re
import sys
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib", "python"))

from mgrnotify import log, redact  # noqa: E402

SECRET_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%+-?@^_|~"
LENGTHS = range(1, 41)
MAX_LINE = log.MAX_LINE


def secret_of(length, seed=0):
    """A secret of ``length`` characters from SECRET_ALPHABET, different for each seed."""
    return "".join(SECRET_ALPHABET[(i * 7 + length + seed) % len(SECRET_ALPHABET)] for i in range(length))


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


@pytest.fixture(autouse=True)
def nothing_remembered():
    """Each test starts with no remembered secret, and leaves the ones before it as they were."""
    saved = set(redact._remembered)
    redact._remembered.clear()
    yield
    redact._remembered.clear()
    redact._remembered.update(saved)


@pytest.fixture
def logged(tmp_path):
    """logged(text) -> the message part of the one line Log.write wrote for ``text`` (checked to be one line)."""
    path = str(tmp_path / "var" / "gwx.log")

    def write(text):
        if os.path.exists(path):
            os.unlink(path)
        log.Log("gwx", path, 9).debug(text)
        with open(path, encoding="utf-8", newline="") as f:
            content = f.read()
        assert content.count("\n") == 1 and content.endswith("\n")
        line = content[:-1]
        assert line.splitlines() == [line], "an event became more than one line: %r" % line[:200]
        head, message = line.split(" DEBUG ", 1)
        assert message.endswith("\033[0m")
        return message[:-len("\033[0m")]
    return write


def leaked(secret, message):
    """What of ``secret`` shows in ``message``: the whole of it, or (for one of 4 or more characters) any 4 of its
    characters in a row, wherever a cut may have left them."""
    if secret in message:
        return secret
    return next((secret[i:i + 4] for i in range(len(secret) - 3) if secret[i:i + 4] in message), None)


# --- secret-named fields: masked by their name, whatever the value's length ---------------------------------

# name -> (a line holding the secret in a secret-named field, the secret as that line spells it)
FIELDS = {
    "XML element": lambda s: ("<doc><login>u</login><password>%s</password></doc>" % escape(s), escape(s)),
    "xmlparams (escaped XML)": lambda s: ("<gateway><xmlparams>%s</xmlparams></gateway>" % escape(
        "<doc><smtp_password>%s</smtp_password><timeout>5</timeout></doc>" % escape(s)), escape(escape(s))),
    "name attribute": lambda s: ('<param name="password">%s</param>' % escape(s), escape(s)),
    "attribute": lambda s: ('<account login="u" password="%s" port="1"/>' % escape(s), escape(s)),
    "key=value": lambda s: ("login=u&password=%s&port=1" % quote(s, safe=""), quote(s, safe="")),
    "key: value": lambda s: ("private_key: %s" % s, s),
    "JSON": lambda s: (json.dumps({"login": "u", "api_key": s, "port": 1}), json.dumps(s)[1:-1]),
    "ePochta credentials": lambda s: (
        "<SMS><authentification><username>u</username><password>%s</password></authentification></SMS>"
        % escape(s), escape(s)),
    "SASL PLAIN": lambda s: ("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
                             % base64.b64encode(("\0u\0" + s).encode()).decode(),
                             base64.b64encode(("\0u\0" + s).encode()).decode()),
    "SMS.ru api_id": lambda s: ("POST /sms/send?json=1 api_id=%s&to=79120000000" % quote(s, safe=""),
                                quote(s, safe="")),
    "SMSC.ru psw": lambda s: ("login=u&psw=%s&phones=79120000000" % quote(s, safe=""), quote(s, safe="")),
    "Authorization: Basic": lambda s: ("Authorization: Basic %s\nAccept: */*" % base64.b64encode(
        ("u@example.org:" + s).encode()).decode(), base64.b64encode(("u@example.org:" + s).encode()).decode()),
    "Authorization: Bearer": lambda s: ("headers: {'Authorization': 'Bearer %s', 'Accept': '*/*'}" % s, s),
    "Authorization: bare token (MAX)": lambda s: ("headers {'Authorization': '%s', 'Accept': 'application/json'}"
                                                  % s, s),
    "authorization=Bearer": lambda s: ("authorization=Bearer %s&x=1" % quote(s, safe=""), quote(s, safe="")),
    "document cut after the secret": lambda s: ("<doc><password>%s" % escape(s), escape(s)),
    "closing tag garbled": lambda s: ("<doc><password>%s</pass" % escape(s), escape(s)),
    "document starting inside the element": lambda s: ("%s</password></doc>" % escape(s), escape(s)),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_secret_named_fields_are_masked_whatever_the_length(logged, field):
    for length in LENGTHS:
        line, shown = FIELDS[field](secret_of(length))
        message = logged(line)
        assert shown not in message and redact.MASK in message, (field, length, message)


@pytest.mark.parametrize("secret", ["a&b", "<>", '"', "p w", "пароль"])
def test_secret_named_fields_with_characters_that_need_escaping(logged, secret):
    for field in ("XML element", "xmlparams (escaped XML)", "name attribute", "JSON", "key=value"):
        line, shown = FIELDS[field](secret)
        assert shown not in logged(line), field


@pytest.mark.parametrize("line, expected", [
    ("Authorization: Basic dXNlcjprZXk=", "Authorization: ***"),          # the scheme goes with the credential
    ("authorization=Bearer abc&json=1", "authorization=***&json=1"),
    ("Authorization: Bearer", "Authorization: ***"),
    ("Authorization: abc123 then words", "Authorization: *** then words"),   # no scheme word: the value alone
    ("api_id=AB12&to=7&psw=x", "api_id=***&to=7&psw=***"),
    ("rapid_id=3 pswd=4 api_identity=5", "rapid_id=3 pswd=4 api_identity=5"),   # whole names only
])
def test_sms_provider_credentials_are_masked_by_name(logged, line, expected):
    assert logged(line) == expected


# --- remembered secrets in free text -------------------------------------------------------------------------

@pytest.mark.parametrize("length", LENGTHS)
def test_a_remembered_secret_is_masked_in_free_text(logged, length):
    secret = secret_of(length)
    redact.remember(secret)
    for line in ("the server said '%s' is wrong" % secret, secret, "(%s)." % secret, "login u %s" % secret):
        assert secret not in logged(line), line
    if length >= redact.SHORT_SECRET:
        assert secret not in logged("glued%sinside" % secret)


@pytest.mark.parametrize("line, expected", [
    ("the password is ab.", "the password is ***."),
    ("ab", "***"),
    ("login 'u', password 'ab'", "login 'u', password '***'"),
    ("<doc>ab</doc>", "<doc>***</doc>"),
    ("ab, ab and ab", "*** and ***"),   # with only spaces or punctuation between them: one mask
    ("abc and cab and _ab", "abc and cab and _ab"),   # [ours] inside a word: left alone
])
def test_a_short_remembered_secret_is_masked_where_it_stands_alone(logged, line, expected):
    redact.remember("ab")
    assert logged(line) == expected


@pytest.mark.parametrize("secret, masked_inside_a_word", [("ab", False), ("abc", False), ("k3Yq", True),
                                                          ("k3Yq9", True)])
def test_from_four_characters_on_a_secret_is_masked_even_inside_a_word(logged, secret, masked_inside_a_word):
    # [ours] The line is drawn at four characters, written out here rather than read from SHORT_SECRET: a
    # four-character password (an SMS gateway's PIN, say) glued into a URL or a longer token must not show.
    redact.remember(secret)
    line = "GET /send?text=x%sy&to=1" % secret
    assert (secret not in logged(line)) is masked_inside_a_word
    assert secret not in logged("the password %s was refused" % secret)


@pytest.mark.parametrize("secret", ["S3cr&t <pw>", "a&b", "p w", "<"])
def test_a_remembered_secret_is_masked_in_its_escaped_forms(logged, secret):
    from urllib.parse import quote_plus
    redact.remember(secret)
    for form in (secret, escape(secret), quote(secret, safe=""), quote_plus(secret)):
        assert form not in logged("sent %s to the server" % form)


# --- the cut: redact, then cut ------------------------------------------------------------------------------

# name -> (text before the secret, text after it, remembered): the secret's first character at len(before)
PLACES = {
    "remembered, in free text": (" ", " more text", True),
    "remembered, inside a word": ("x", "y more text", True),
    "XML element": ("<password>", "</password> more", False),
    "key=value": ("password=", "&login=u", False),
    "JSON": ('{"token": "', '", "x": 1}', False),
}


@pytest.mark.parametrize("place", sorted(PLACES))
def test_a_secret_straddling_the_cut_never_shows(logged, place):
    # Every length, at every offset: k characters of the secret before the point where the event is cut.
    before, after, remembered = PLACES[place]
    for length in LENGTHS:
        secret = secret_of(length)
        if remembered:
            redact._remembered.clear()
            redact.remember(secret)
        if place.endswith("inside a word") and length < redact.SHORT_SECRET:
            continue   # [ours] left alone inside a word (see the table above)
        for k in range(length + 1):
            text = "f" * (MAX_LINE - k - len(before)) + before + secret + after
            message = logged(text)
            assert leaked(secret, message) is None, (place, length, k, message[-80:])


def test_an_event_is_cut_after_redaction_to_max_line_characters(logged):
    assert logged("f" * MAX_LINE) == "f" * MAX_LINE
    message = logged("f" * (MAX_LINE + 1))
    assert message == "f" * MAX_LINE + " … (cut: the event has %d characters)" % (MAX_LINE + 1)
    # Masks make the event shorter first: 40,000 characters with a long secret masked are written whole.
    text = "<password>%s</password>" % ("Z" * 20000) + "f" * 20000
    assert logged(text) == "<password>***</password>" + "f" * 20000


def test_a_cut_never_splits_a_mask(logged):
    for offset in range(-4, 5):
        text = "f" * (MAX_LINE - offset - len("<password>")) + "<password>SECRET</password>tail"
        body = logged(text).split(" … (cut:")[0]
        assert all(len(run) == 3 for run in re.findall(r"\*+", body)), (offset, body[-20:])
        assert len(body) <= MAX_LINE


def test_a_cut_never_splits_an_escape(logged):
    escapes = re.compile(r"\\(?:u2028|u2029|x[0-9a-f]{2}|n|r)")
    for offset in range(0, 6):
        body = logged("f" * (MAX_LINE - offset) + "\u2028\x85\x0b\n\r" + "tail").split(" … (cut:")[0]
        assert "\\" not in escapes.sub("", body), (offset, body[-30:])
        assert body.count("\\") == offset


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 8, 16, 40])
def test_an_event_longer_than_the_redactor_reads_leaks_nothing_at_that_point(logged, length):
    # Past REDACT_LIMIT the rest is dropped unread: a secret straddling that point must not show, remembered
    # or not. A long masked element first makes what precedes that point short enough to be written.
    limit = log.REDACT_LIMIT
    secret = secret_of(length)
    for remembered in (False, True):
        redact._remembered.clear()
        if remembered:
            redact.remember(secret)
        for k in sorted({0, 1, length // 2, length - 1, length}):
            head = "<token>" + "z" * (limit - 5000) + "</token> free text "
            text = head + "f" * (limit - k - len(head)) + secret + " and the rest of a long event"
            message = logged(text)
            assert leaked(secret, message) is None, (length, k, remembered, message[-80:])
            assert message.endswith(" … (cut: the event has %d characters)" % len(text))
            assert message.startswith("<token>***")


# --- line breaks and controls --------------------------------------------------------------------------------

LINE_BREAKS = "\n\v\f\r\x1c\x1d\x1e\x85\u2028\u2029"   # in code-point order


def test_line_breaks_are_the_ones_python_knows():
    # str.splitlines() is what an admin's tools (and Python's) take for a line break; the list above is all of it.
    found = "".join(chr(c) for c in range(0x110000) if len(("a%sb" % chr(c)).splitlines()) > 1)
    assert found == LINE_BREAKS


@pytest.mark.parametrize("separator", list(LINE_BREAKS) + ["\x1b", "\x00", "\x7f", "\x9b"])
def test_every_line_break_and_control_is_escaped(logged, separator):
    message = logged("one%stwo" % separator)
    assert separator not in message
    assert re.fullmatch(r"one\\(x[0-9a-f]{2}|u20\d\d|n|r)two", message), message


def test_one_event_is_one_line_in_the_file(tmp_path):
    path = str(tmp_path / "x.log")
    logger = log.Log("gwx", path, 9)
    events = ["a%sb" % c for c in LINE_BREAKS] + [LINE_BREAKS * 3, "tab\tstays", "мир \U0001f600 \ud800"]
    for event in events:
        logger.debug(event)
    with open(path, encoding="utf-8", newline="") as f:
        content = f.read()
    assert len(content.splitlines()) == len(events)
    assert "tab\tstays" in content


# --- generated cases ---------------------------------------------------------------------------------------

# Text around the secret: anything but the secret's own characters (so a leak is exact to detect).
AROUND = st.text(st.characters(exclude_characters=SECRET_ALPHABET, exclude_categories=("Cs",)), max_size=60)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(secret=st.text(SECRET_ALPHABET, min_size=1, max_size=40), place=st.sampled_from(sorted(PLACES)),
       noise=AROUND, tail=AROUND, shift=st.integers(-45, 45), pad=st.booleans())
def test_generated_secret_anywhere_near_the_cut(logged, secret, place, noise, tail, shift, pad):
    before, after, remembered = PLACES[place]
    redact._remembered.clear()
    if remembered:
        redact.remember(secret)
    if place.endswith("inside a word") and len(secret) < redact.SHORT_SECRET:
        before, after = PLACES["remembered, in free text"][:2]   # [ours] masked where it stands alone
    start = noise + before
    filler = "f" * max(0, MAX_LINE - shift - len(start)) if pad else ""
    message = logged(filler + start + secret + after + tail)
    assert leaked(secret, message) is None, (message[-120:],)


# --- the modules -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("password", ["Qz!", "§"])
@pytest.mark.parametrize("path", ["gate/gwepochta", "gate/gwjabber", "gate/gwmail"])
def test_a_short_password_stays_out_of_a_gateways_debug_log(sandbox, path, password):
    # Level 9 logs the whole request ("input:"), each exchange and each refusal: the password may be anywhere.
    import fuzzing
    module = fuzzing.ModuleUnderTest(path)
    closed = fuzzing.closed_port()
    try:
        request = fuzzing.Request(module, closed.getsockname()[1])
        values = {name: password if redact.is_secret(name) else value for name, value in request.values.items()}
        fuzzing.set_debug(sandbox, module, True)
        for command in ("outgoing", "check_connection", "ingoing"):
            if command in module.commands:
                sandbox.run(path, "--command", command, input=request.build(command, values))
    finally:
        closed.close()
    text = sandbox.logs()[module.name + ".log"]
    assert "DEBUG input:" in text and password not in text
