"""mgrnotify.xmpp and mgrnotify.srv: SCRAM vectors, DNS packets, the stream parser, then a real Prosody."""

import itertools
import os
import socket
import struct
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib", "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mgrnotify import srv, xmpp  # noqa: E402
import prosody as prosodylib  # noqa: E402
from localnet import FaultyServer, ScriptedServer, free_port  # noqa: E402
from prosody import DOMAIN, DOMAIN_PLAIN, DOMAIN_SHA256  # noqa: E402

prosody = prosodylib.prosody   # the fixture: one Prosody for this file

# --- SCRAM (RFC 5802 §5, RFC 7677 §3) --------------------------------------------------------------

SCRAM_VECTORS = [
    # mechanism, client nonce, server-first, expected client-final, server-final
    ("SCRAM-SHA-1", "fyko+d2lbbFgONRv9qkxdawL",
     "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
     "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
     "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="),
    ("SCRAM-SHA-256", "rOprNGfwEbeRWgbNEkqO",
     "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
]


@pytest.mark.parametrize("mechanism,nonce,server_first,client_final,server_final", SCRAM_VECTORS)
def test_scram_rfc_vectors(mechanism, nonce, server_first, client_final, server_final):
    scram = xmpp.Scram(mechanism, "user", "pencil", "n,,", nonce)
    assert scram.first_message() == "n,,n=user,r=" + nonce
    assert scram.final_message(server_first) == client_final
    scram.verify(server_final)


@pytest.mark.parametrize("server_final", ["v=smF9pqV8S7suAoZWja4dJRkFsKQ=", "e=invalid-proof", "x", "v="])
def test_scram_rejects_a_server_that_cannot_prove_the_password(server_final):
    mechanism, nonce, server_first = SCRAM_VECTORS[0][:3]
    scram = xmpp.Scram(mechanism, "user", "pencil", "n,,", nonce)
    scram.final_message(server_first)
    with pytest.raises(ValueError):
        scram.verify(server_final)


@pytest.mark.parametrize("server_first", [
    "r=someone-elses-nonce,s=QSXCR+Q6sek8bf92,i=4096",     # nonce does not extend ours
    "r=fyko+d2lbbFgONRv9qkxdawL,s=QSXCR+Q6sek8bf92,i=4096",  # nonce not extended at all
    "r=fyko+d2lbbFgONRv9qkxdawLX,s=QSXCR+Q6sek8bf92,i=0",
    "r=fyko+d2lbbFgONRv9qkxdawLX,s=QSXCR+Q6sek8bf92,i=999999999",
    "r=fyko+d2lbbFgONRv9qkxdawLX,s=,i=4096",
    "e=other-error",
    "garbage",
])
def test_scram_rejects_unusable_server_first(server_first):
    scram = xmpp.Scram("SCRAM-SHA-1", "user", "pencil", "n,,", "fyko+d2lbbFgONRv9qkxdawL")
    with pytest.raises(ValueError):
        scram.final_message(server_first)


@pytest.mark.parametrize("server_first, words", [
    # RFC 5802 §5.1: an "m" attribute is a mandatory extension; a client that does not know it must fail
    ("m=ext,r=fyko+d2lbbFgONRv9qkxdawLX,s=QSXCR+Q6sek8bf92,i=4096", "requires a SCRAM extension"),
    ("r=fyko+d2lbbFgONRv9qkxdawLX,m=ext,s=QSXCR+Q6sek8bf92,i=4096", "requires a SCRAM extension"),
    ("r=fyko+d2lbbFgONRv9qkxdawLX,s=QSX*CR+Q6sek8bf92,i=4096", "salt 'QSX\\*CR\\+Q6sek8bf92' is not valid base64"),
    ("r=fyko+d2lbbFgONRv9qkxdawLX,s=QSXCR+Q6sek8bf9,i=4096", "is not valid base64"),          # bad padding
    ("r=fyko+d2lbbFgONRv9qkxdawLX,s=QSXCR Q6sek8bf92,i=4096", "is not valid base64"),
])
def test_scram_refuses_what_rfc_5802_makes_a_failure(server_first, words):
    scram = xmpp.Scram("SCRAM-SHA-1", "user", "pencil", "n,,", "fyko+d2lbbFgONRv9qkxdawL")
    with pytest.raises(ValueError, match=words):
        scram.final_message(server_first)


def test_scram_escapes_the_user_name_and_binds_the_gs2_header():
    scram = xmpp.Scram("SCRAM-SHA-1", "a=b,c", "pencil", "y,,", "abc")
    assert scram.first_message() == "y,,n=a=3Db=2Cc,r=abc"
    assert scram.final_message("r=abcdef,s=QSXCR+Q6sek8bf92,i=1").startswith("c=eSws,r=abcdef,p=")


@pytest.mark.parametrize("password,prepared", [
    ("pencil", "pencil"),
    ("pen\u00a0cil", "pen cil"),            # non-ASCII space -> space
    ("pen\u00adcil", "pencil"),             # soft hyphen mapped to nothing
    ("\u2168", "IX"),                        # NFKC
    ("пароль", "пароль"),
])
def test_saslprep(password, prepared):
    assert xmpp.saslprep(password) == prepared


@pytest.mark.parametrize("jid,parts", [
    ("gw@example.com", ("gw", "example.com", "")),
    ("gw@example.com/bot", ("gw", "example.com", "bot")),
    ("gw@example.com/a@b/c", ("gw", "example.com", "a@b/c")),
    ("example.com", ("", "example.com", "")),
    ("", None), ("@example.com", None), ("gw@", None), ("g w@example.com", None), ("a<b@example.com", None),
])
def test_split_jid(jid, parts):
    if parts is None:
        with pytest.raises(ValueError):
            xmpp.split_jid(jid)
    else:
        assert xmpp.split_jid(jid) == parts


# --- DNS SRV ----------------------------------------------------------------------------------------

QUESTION = b"\x0c_xmpp-client\x04_tcp\x07example\x03com\x00"
EXAMPLE_COM_AT = 12 + 1 + 12 + 1 + 4   # offset of "example.com" inside the question, for compression


def encode_name(name):
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def srv_answer(query, records, flags=0x8180):
    """A DNS answer to ``query`` holding ``records`` (priority, weight, port, encoded target)."""
    answers = b""
    for priority, weight, port, target in records:
        rdata = struct.pack(">HHH", priority, weight, port) + target
        answers += b"\xc0\x0c" + struct.pack(">HHIH", 33, 1, 300, len(rdata)) + rdata
    return query[:2] + struct.pack(">HHHHH", flags, 1, len(records), 0, 0) + query[12:] + answers


def test_build_query():
    assert srv.build_query("_xmpp-client._tcp.example.com", 0x1234) == (
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + QUESTION + b"\x00\x21\x00\x01")


def test_parse_response_orders_records_and_follows_compression():
    query = srv.build_query("_xmpp-client._tcp.example.com", 7)
    answer = srv_answer(query, [(20, 0, 5222, encode_name("backup.example.net")),
                                (10, 5, 5222, b"\x04xmpp" + struct.pack(">H", 0xC000 | EXAMPLE_COM_AT)),
                                (10, 50, 5269, encode_name("xmpp2.example.com")),
                                (30, 0, 0, b"\0")])   # target "." means no service there: skipped
    records = srv.parse_response(answer, 7)
    assert [(r.priority, r.port, r.target) for r in records] == [
        (10, 5269, "xmpp2.example.com"), (10, 5222, "xmpp.example.com"), (20, 5222, "backup.example.net")]


@pytest.mark.parametrize("mangle,outcome", [
    (lambda a: a, "records"),
    (lambda a: a[:2] + b"\x81\x83" + a[4:], []),                      # NXDOMAIN: no records
    (lambda a: a[:2] + b"\x83\x80" + a[4:], ValueError),              # truncated
    (lambda a: a[:2] + b"\x81\x82" + a[4:], ValueError),              # SERVFAIL
    (lambda a: b"\x00\x08" + a[2:], ValueError),                      # another query's answer
    (lambda a: a[:-5], ValueError),                                   # cut short
    (lambda a: a[:8], ValueError),
])
def test_parse_response_table(mangle, outcome):
    query = srv.build_query("_xmpp-client._tcp.example.com", 7)
    answer = mangle(srv_answer(query, [(0, 0, 5222, encode_name("xmpp.example.com"))]))
    if outcome is ValueError:
        with pytest.raises(ValueError):
            srv.parse_response(answer, 7)
    elif outcome == "records":
        assert [(r.target, r.port) for r in srv.parse_response(answer, 7)] == [("xmpp.example.com", 5222)]
    else:
        assert srv.parse_response(answer, 7) == outcome


def test_parse_response_survives_a_compression_loop():
    looping = struct.pack(">HHHHHH", 7, 0x8180, 0, 1, 0, 0) + b"\xc0\x0c" + struct.pack(">HHIH", 33, 1, 0, 0)
    with pytest.raises(ValueError):
        srv.parse_response(looping, 7)


def test_nameservers(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.com\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\n"
                    "nameserver 10.0.0.3\nnameserver 10.0.0.4\n")
    assert srv.nameservers(str(conf)) == [("10.0.0.1", 53), ("fe80::1", 53), ("10.0.0.3", 53)]
    assert srv.nameservers(str(tmp_path / "missing")) == []


class FakeDNS:
    """A UDP name server on loopback: first a stray datagram, then the answer ``records``."""

    def __init__(self, records):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.questions = []
        self.thread = threading.Thread(target=self._serve, args=(records,), daemon=True)
        self.thread.start()

    def _serve(self, records):
        query, peer = self.sock.recvfrom(512)
        self.questions.append(query[12:-4])
        self.sock.sendto(b"\xff\xff" + query[2:], peer)   # not an answer: must be ignored
        self.sock.sendto(srv_answer(query, records), peer)

    def close(self):
        self.sock.close()


def test_lookup_against_a_name_server():
    dns = FakeDNS([(5, 0, 5333, encode_name("chat.example.com"))])
    try:
        records = srv.lookup("_xmpp-client._tcp.example.com", 2, servers=[dns.address])
    finally:
        dns.close()
    assert dns.questions == [QUESTION]
    assert [(r.target, r.port) for r in records] == [("chat.example.com", 5333)]


def test_lookup_gives_up_on_silent_servers():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        assert srv.lookup("_xmpp-client._tcp.example.com", 0.3, servers=[silent.getsockname()]) == []
    finally:
        silent.close()


# --- the stream parser ------------------------------------------------------------------------------

STREAM_HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' version='1.0' "
                 b"xmlns:stream='http://etherx.jabber.org/streams' from='localhost'>")


def test_reader_splits_stanzas_across_reads_and_drops_them_from_the_root():
    reader = xmpp._StreamReader()
    data = STREAM_HEADER + b"<message from='a@b'><body>one &amp; two</body></message> <iq type='result' id='1'/>"
    for i in range(0, len(data), 7):
        reader.feed(data[i:i + 7])
    assert [s.tag for s in reader.stanzas] == ["{jabber:client}message", "{jabber:client}iq"]
    assert reader.stanzas[0].findtext("{jabber:client}body") == "one & two"
    assert len(reader.root) == 0
    reader.feed(b"</stream:stream>")
    assert reader.closed


@pytest.mark.parametrize("data", [
    b"<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY lol 'lol'>]>" + STREAM_HEADER[21:],
    STREAM_HEADER + b"<?evil instruction?>",
    STREAM_HEADER + b"<message>&undefined;</message>",
    STREAM_HEADER + b"<message><body>unclosed</message>",
    b"HTTP/1.1 400 Bad Request\r\n\r\n",
    b"<html><body>not xmpp</body></html>",
])
def test_reader_refuses(data):
    with pytest.raises(ValueError):
        xmpp._StreamReader().feed(data)


MEGABYTE = 1024 * 1024


@pytest.mark.parametrize("stanza, words", [
    (b"<message>" + b"<a>" * (8 * MEGABYTE // 3), "nested more than 32 deep"),
    (b"<message>" + b"<a/>" * (8 * MEGABYTE // 4), "more than 10000 elements"),
    (b"<message" + b"".join(b" a%d=''" % i for i in range(20000)) + b">", "more than 10000 elements and attributes"),
], ids=["nested", "wide", "attributes"])
def test_reader_refuses_a_stanza_before_it_takes_memory(stanza, words):
    # Each element costs ~30 times its size in memory: 8 MB of them was a gigabyte before the size limit.
    reader = xmpp._StreamReader()
    reader.feed(STREAM_HEADER)
    fed = 0
    with pytest.raises(ValueError, match=words):
        while fed < len(stanza):
            reader.feed(stanza[fed:fed + xmpp.READ_SIZE])
            fed += xmpp.READ_SIZE
    assert fed <= 4 * xmpp.READ_SIZE, "refused within the first reads, far below MAX_STANZA_BYTES"


def test_reader_takes_a_deep_and_wide_stanza_within_the_limits():
    depth = xmpp.MAX_STANZA_DEPTH - 2   # between the stanza element and the innermost ones
    wide = b"".join(b"<i n='%d'/>" % i for i in range(xmpp.MAX_STANZA_ELEMENTS // 2 - depth - 1))
    reader = xmpp._StreamReader()
    reader.feed(STREAM_HEADER + b"<message>" + b"<x>" * depth + wide + b"</x>" * depth + b"</message>")
    assert len(reader.stanzas) == 1


# --- against a real Prosody --------------------------------------------------------------------------

_numbers = itertools.count(1)


def account(server, password="secret-%d", domain=DOMAIN):
    """A new account on ``server``: (jid, password)."""
    number = next(_numbers)
    password = password % number if "%d" in password else password
    return server.register("user%d" % number, password, domain), password


def client(server, jid, tls="starttls", **options):
    """An XMPPClient for ``server`` that trusts its certificate."""
    options.setdefault("cafile", server.cert)
    options.setdefault("timeout", 5)
    port = server.tls_port if tls == "direct" else server.port
    return xmpp.XMPPClient(jid, host="127.0.0.1", port=port, tls=tls, **options)


def logged_in(server, jid, password, **options):
    session = client(server, jid, **options)
    session.connect()
    session.login(password)
    return session


@pytest.mark.parametrize("domain,tls,mechanisms,expected", [
    (DOMAIN, "starttls", xmpp.MECHANISMS, "SCRAM-SHA-1"),
    (DOMAIN_SHA256, "starttls", xmpp.MECHANISMS, "SCRAM-SHA-256"),
    (DOMAIN, "starttls", ("PLAIN",), "PLAIN"),
    (DOMAIN, "direct", xmpp.MECHANISMS, "SCRAM-SHA-1"),
    (DOMAIN_SHA256, "direct", xmpp.MECHANISMS, "SCRAM-SHA-256"),
    (DOMAIN_PLAIN, "none", xmpp.MECHANISMS, "SCRAM-SHA-1"),
])
def test_login(prosody, domain, tls, mechanisms, expected):
    jid, password = account(prosody, domain=domain)
    with logged_in(prosody, jid, password, tls=tls, mechanisms=mechanisms) as session:
        assert session.mechanism == expected
        assert session.encrypted == (tls != "none")
        assert session.bound_jid.startswith(jid + "/mgrnotify-")


def test_each_session_binds_its_own_resource(prosody):
    jid, password = account(prosody)
    with logged_in(prosody, jid, password) as one, logged_in(prosody, jid + "/bot", password) as two:
        assert one.bound_jid != two.bound_jid
        assert two.bound_jid.startswith(jid + "/bot-")
        one.ping()   # the second login did not kick the first one off


def test_plain_without_tls_only_when_allowed(prosody):
    jid, password = account(prosody, domain=DOMAIN_PLAIN)
    with client(prosody, jid, tls="none", mechanisms=("PLAIN",)) as session:
        session.connect()
        with pytest.raises(xmpp.AuthError, match="in clear; set tls to starttls or direct"):
            session.login(password)
    with logged_in(prosody, jid, password, tls="none", mechanisms=("PLAIN",), allow_plain=True) as session:
        assert session.mechanism == "PLAIN" and not session.encrypted


def test_no_tls_where_the_server_requires_it(prosody):
    jid, password = account(prosody)
    with client(prosody, jid, tls="none") as session:
        with pytest.raises(xmpp.TLSError, match="requires an encrypted connection"):
            session.connect()


@pytest.mark.parametrize("mechanisms", [("SCRAM-SHA-1",), ("PLAIN",)])
def test_wrong_password(prosody, mechanisms):
    jid, _ = account(prosody)
    with client(prosody, jid, mechanisms=mechanisms) as session:
        session.connect()
        with pytest.raises(xmpp.AuthError) as caught:
            session.login("not the password")
    assert str(caught.value).startswith("The XMPP server localhost refused the login for %s (not-authorized: the "
                                        "account does not exist or the password is wrong" % jid)
    assert caught.value.error_type == "connect"


@pytest.mark.parametrize("tls", ["starttls", "direct"])
def test_self_signed_certificate_is_refused_unless_trusted(prosody, tls):
    jid, password = account(prosody)
    with client(prosody, jid, tls=tls, cafile=None) as session:
        with pytest.raises(xmpp.TLSError, match="is not trusted for localhost.*set verify_tls to off"):
            session.connect()
    with logged_in(prosody, jid, password, tls=tls, cafile=None, verify_tls=False) as session:
        assert session.encrypted


def test_direct_tls_on_a_starttls_port(prosody):
    jid, _ = account(prosody)
    session = xmpp.XMPPClient(jid, host="127.0.0.1", port=prosody.port, tls="direct", timeout=5)
    with session, pytest.raises(xmpp.TLSError, match="set tls to starttls"):
        session.connect()


def test_server_down():
    session = xmpp.XMPPClient("gw@localhost", host="127.0.0.1", port=free_port(), timeout=5)
    with session, pytest.raises(xmpp.XMPPError, match=r"Cannot connect to the XMPP server for localhost "
                                                       r"\(127\.0\.0\.1:\d+: Connection refused\)"):
        session.connect()


def test_server_that_never_answers():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)   # the kernel accepts the connection; nobody ever reads or writes
    try:
        session = xmpp.XMPPClient("gw@localhost", host="127.0.0.1", port=silent.getsockname()[1], timeout=0.3)
        with session, pytest.raises(xmpp.XMPPTimeout, match="did not answer within 0.3 s while opening the stream"):
            session.connect()
    finally:
        silent.close()


def test_unknown_domain_is_a_readable_stream_error(prosody):
    session = xmpp.XMPPClient("gw@unknown.example", host="127.0.0.1", port=prosody.port, timeout=5)
    with session, pytest.raises(xmpp.StreamError, match="host-unknown: it does not serve this domain"):
        session.connect()


class FakeServer:
    """A TCP server on loopback that sends ``reply`` to whoever connects, then waits."""

    def __init__(self, reply):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.connections = []
        threading.Thread(target=self._serve, args=(reply,), daemon=True).start()

    def _serve(self, reply):
        connection, _ = self.listener.accept()
        self.connections.append(connection)
        try:
            connection.recv(4096)
            connection.sendall(reply)
        except OSError:
            pass   # the client hung up before the whole reply: what a client under attack should do

    def close(self):
        for connection in self.connections:
            connection.close()
        self.listener.close()


@pytest.mark.parametrize("reply,error", [
    # a stream error and the stream's end in one read: the error is what counts
    (STREAM_HEADER + b"<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
     b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>maintenance</text></stream:error></stream:stream>",
     "ended the stream \\(system-shutdown: it is shutting down; try again later; the server says \"maintenance\"\\)"),
    (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><stream:stream/>", "a DOCTYPE declaration"),
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "not well-formed.*is it an XMPP server"),
    (STREAM_HEADER + b"</stream:stream>", "closed the stream while opening the stream"),
    (STREAM_HEADER.replace(b"version='1.0' ", b"") + b"<stream:features/>", "pre-1.0"),
    pytest.param(STREAM_HEADER + b"<a>" * (8 * MEGABYTE // 3),
                 "sent a stanza with elements nested more than 32 deep while opening the stream", id="8 MB nested"),
])
def test_server_misbehaving(reply, error):
    server = FakeServer(reply)
    try:
        session = xmpp.XMPPClient("gw@localhost", host="127.0.0.1", port=server.port, tls="none", timeout=5)
        with session, pytest.raises(xmpp.StreamError, match=error):
            session.connect()
    finally:
        server.close()


def test_message_to_an_online_client(prosody):
    sender, sender_password = account(prosody)
    recipient, recipient_password = account(prosody)
    with logged_in(prosody, recipient, recipient_password) as reader:
        with logged_in(prosody, sender, sender_password) as writer:
            writer.send(reader.bound_jid, "Счёт оплачен", subject="Биллинг")
            writer.ping()
        messages = reader.receive(5, max_count=1)
    assert [(xmpp.bare_jid(f), b, s) for f, b, s in messages] == [(sender, "Счёт оплачен", "Биллинг")]


def test_offline_messages_and_hostile_bodies(prosody):
    sender, sender_password = account(prosody)
    recipient, recipient_password = account(prosody, password="пароль с пробелом %d")
    bodies = ["plain", "bell\x07 nul\x00 esc\x1b end", "</body><message to='x@localhost'><body>forged",
              "a & b < c > d \" ' ]]>"]
    with logged_in(prosody, sender, sender_password) as writer:
        for body in bodies:
            writer.send(recipient, body)
        writer.ping()   # the stream survived every body
    with logged_in(prosody, recipient, recipient_password) as reader:
        messages = reader.receive(5, max_count=len(bodies))
    assert [body for _, body, _ in messages] == [
        "plain", "bell nul esc end", "</body><message to='x@localhost'><body>forged", "a & b < c > d \" ' ]]>"]


def test_receive_window_ends_when_nothing_comes(prosody):
    jid, password = account(prosody)
    with logged_in(prosody, jid, password) as session:
        assert session.receive(0.3) == []
        session.ping()   # still usable after the window


def test_bounce_is_an_error_for_that_message_only(prosody):
    sender, password = account(prosody)
    recipient, _ = account(prosody)
    with logged_in(prosody, sender, password) as session:
        good = session.send(recipient, "for you")
        bad = session.send("nobody-here@localhost", "for no one")
        with pytest.raises(xmpp.MessageError) as caught:
            session.ping()
        assert set(caught.value.failures) == {bad} and good not in caught.value.failures
        assert caught.value.error_type == "send"
        assert "refused the message to nobody-here@localhost (service-unavailable" in str(caught.value)
        session.send(recipient, "after the bounce")
        session.ping()   # the bounce is reported once, and the session goes on
        with pytest.raises(xmpp.MessageError, match="not a Jabber address"):
            session.send("not a jid", "x")


def test_posted_messages_are_confirmed_each_by_its_own_ping(prosody):
    """Three posted at once, their pings' answers and the bounce all arrived before the first is read: each
    message is confirmed by its own ping, so the bounce between them stays with the second."""
    sender, password = account(prosody)
    recipient, _ = account(prosody)
    with logged_in(prosody, sender, password) as session:
        ids = [session.post(recipient, "first"), session.post("nobody-here@localhost", "second"),
               session.post(recipient, "third")]
        assert session.unconfirmed == 3
        time.sleep(0.5)
        got = session.confirmed()
        while len(got) < 3:
            got += session.confirmed(wait=True)
        assert [message_id for message_id, _ in got] == ids and session.unconfirmed == 0
        assert got[0][1] is None and got[2][1] is None
        assert "refused the message to nobody-here@localhost (service-unavailable" in got[1][1]
        assert session.confirmed(wait=True) == []   # nothing on its way: no wait


class Lines:
    """A stand-in for mgrnotify's Log at debug level that keeps its lines."""

    def __init__(self):
        self.lines = []

    def enabled(self, level):
        return True

    def debug(self, text, *args):
        self.lines.append(text % args)


@pytest.mark.parametrize("mechanisms", [("SCRAM-SHA-1",), ("PLAIN",)])
def test_debug_log_holds_stanzas_but_no_secret(prosody, mechanisms):
    import base64
    jid, password = account(prosody, password="very-secret-%d")
    log = Lines()
    with logged_in(prosody, jid, password, mechanisms=mechanisms, log=log) as session:
        session.send(jid, "hello")
        session.ping()
    text = "\n".join(log.lines)
    assert "<body>hello</body>" in text and "<auth mechanism='%s'>(not logged)</auth>" % mechanisms[0] in text
    plain = base64.b64encode(("\0%s\0%s" % (jid.split("@")[0], password)).encode()).decode()
    for secret in (password, plain[:-4], "<response xmlns", "<challenge", "<success"):
        assert secret not in text


# --- a scripted server that completes SCRAM with a signature of its choosing (issue 15) -----------------------

class ScramServer(ScriptedServer):
    """An XMPP server on loopback (no TLS) that logs ``password`` in with SCRAM-SHA-1 and binds a resource,
    whatever the client's proof, and ends the exchange with the server signature ``signature`` says: ``right``
    (computed here, independently of mgrnotify), ``wrong`` (another key's), ``absent`` (no v=), or
    ``wrong, as a challenge`` (v= in a <challenge>, then <success>, as some servers do)."""

    SALT, ITERATIONS = b"salt of the scripted server", 4096

    def __init__(self, password, signature):
        self.password = password
        self.signature = signature
        super().__init__()

    def session(self, connection):
        import base64
        import hashlib
        import hmac
        import re
        connection.settimeout(5)
        received = b""

        def expect(pattern):
            nonlocal received
            while True:
                found = re.search(pattern, received, re.S)
                if found:
                    received = received[found.end():]
                    return found
                data = connection.recv(65536)
                if not data:
                    raise OSError("the client hung up")
                received += data

        def features(inner):
            connection.sendall(STREAM_HEADER + b"<stream:features>" + inner + b"</stream:features>")

        expect(rb"<stream:stream[^>]*>")
        features(b"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism>"
                 b"</mechanisms>")
        client_first = base64.b64decode(expect(rb"<auth [^>]*>([^<]*)</auth>").group(1)).decode()
        client_first_bare = client_first.split(",", 2)[2]
        nonce = dict(part.split("=", 1) for part in client_first_bare.split(","))["r"] + "scripted"
        server_first = "r=%s,s=%s,i=%d" % (nonce, base64.b64encode(self.SALT).decode(), self.ITERATIONS)
        connection.sendall(b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</challenge>"
                           % base64.b64encode(server_first.encode()))
        client_final = base64.b64decode(expect(rb"<response [^>]*>([^<]*)</response>").group(1)).decode()
        auth_message = "%s,%s,%s" % (client_first_bare, server_first, client_final.rsplit(",p=", 1)[0])
        salted = hashlib.pbkdf2_hmac("sha1", self.password.encode(), self.SALT, self.ITERATIONS)
        key = hmac.new(salted, b"Server Key", "sha1").digest() if self.signature == "right" else b"another key"
        verifier = b"v=" + base64.b64encode(hmac.new(key, auth_message.encode(), "sha1").digest())
        if self.signature == "absent":
            verifier = b""
        if self.signature.endswith("as a challenge"):
            connection.sendall(b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</challenge>"
                               % base64.b64encode(verifier))
            expect(rb"<response[^>]*/>|<response[^>]*>[^<]*</response>")
            verifier = b""
        connection.sendall(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</success>"
                           % base64.b64encode(verifier))
        expect(rb"<stream:stream[^>]*>")
        features(b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>")
        request = expect(rb"<iq [^>]*id='([^']*)'").group(1)
        connection.sendall(b"<iq type='result' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                           b"<jid>gw@localhost/scripted</jid></bind></iq>" % request)
        while connection.recv(65536):
            pass


WRONG_SIGNATURE = ("the server's signature is wrong: it does not know the password, or someone is between us and "
                   "the server")


@pytest.mark.parametrize("signature, refusal", [
    ("right", None),
    ("wrong", WRONG_SIGNATURE),
    ("wrong, as a challenge", WRONG_SIGNATURE),
    ("absent", "the server's SCRAM message is malformed"),
], ids=["right", "wrong", "wrong as a challenge", "absent"])
def test_a_login_is_refused_unless_the_server_proves_it_knows_the_password(signature, refusal):
    """The server lets any proof in; only its signature (RFC 5802 §3) tells a real server from an impostor."""
    server = ScramServer("pencil", signature)
    session = xmpp.XMPPClient("gw@localhost", host="127.0.0.1", port=server.port, tls="none",
                              mechanisms=("SCRAM-SHA-1",), timeout=5)
    try:
        with session:
            session.connect()
            if signature == "right":
                session.login("pencil")
                assert session.bound_jid == "gw@localhost/scripted"
            else:
                with pytest.raises(xmpp.AuthError) as caught:
                    session.login("pencil")
                assert str(caught.value) == ("The XMPP server localhost failed the SCRAM-SHA-1 login for "
                                             "gw@localhost: " + refusal)
                assert session.bound_jid is None
    finally:
        server.close()


@pytest.mark.parametrize("jid", ["gw@localhost", "gw@other.example"])
def test_a_trusted_certificate_for_another_name_is_refused(tmp_path, jid):
    """The certificate is trusted (cafile) but issued for other.example: refused for localhost, naming the
    certificate and the domain; for other.example TLS is set up (and the silent server fails what follows)."""
    server = FaultyServer("other-name", str(tmp_path))
    session = xmpp.XMPPClient(jid, host="127.0.0.1", port=server.port, tls="direct", cafile=server.cert, timeout=2)
    try:
        with session, pytest.raises(xmpp.XMPPError) as caught:
            session.connect()
    finally:
        server.stop()
    if jid == "gw@localhost":
        assert isinstance(caught.value, xmpp.TLSError) and not session.encrypted
        assert str(caught.value).startswith("The TLS certificate of the XMPP server 127.0.0.1:%d is not trusted for "
                                            "localhost (" % server.port), str(caught.value)
        assert "localhost" in str(caught.value).split("(", 1)[1].lower()   # the reason names the mismatch
    else:
        assert not isinstance(caught.value, xmpp.TLSError) and session.encrypted, str(caught.value)


# --- a server that offers no STARTTLS: a stripping man in the middle (issue 15) -------------------------------

class StrippedServer(ScriptedServer):
    """An XMPP server on loopback whose features leave STARTTLS out (as a man in the middle who strips it would)
    and offer SCRAM and PLAIN; ``received`` is everything a client sent it."""

    def __init__(self):
        self.received = b""
        super().__init__()

    def session(self, connection):
        connection.settimeout(5)
        while b"<stream:stream" not in self.received:
            data = connection.recv(65536)
            if not data:
                return
            self.received += data
        connection.sendall(STREAM_HEADER + b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                           b"<mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms>"
                           b"</stream:features>")
        while True:
            data = connection.recv(65536)
            if not data:
                return
            self.received += data


def test_tls_starttls_refuses_a_server_that_offers_no_starttls():
    """With tls=starttls (the default) a server without STARTTLS is refused before any login: no <auth>, so
    neither the password (PLAIN) nor a SCRAM exchange open to an offline guess goes out in clear."""
    server = StrippedServer()
    session = xmpp.XMPPClient("gw@localhost", host="127.0.0.1", port=server.port, timeout=5)
    try:
        with session, pytest.raises(xmpp.TLSError) as caught:
            session.connect()
            session.login("pencil")
    finally:
        server.close()
    assert str(caught.value).startswith("The XMPP server 127.0.0.1:%d offers no STARTTLS, so the password would "
                                        "travel in clear" % server.port), str(caught.value)
    assert b"<auth" not in server.received and b"pencil" not in server.received


class EndingServer(ScriptedServer):
    """Logs anyone in (PLAIN, no TLS), then answers the first two pings and ends the stream, all in one write."""

    def session(self, connection):
        import re
        connection.settimeout(5)
        received = b""

        def expect(pattern, count=1):
            nonlocal received
            while len(re.findall(pattern, received)) < count:
                data = connection.recv(65536)
                if not data:
                    raise OSError("the client hung up")
                received += data
            found = re.findall(pattern, received)
            received = b""
            return found

        expect(rb"<stream:stream[^>]*>")
        connection.sendall(STREAM_HEADER + b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                           b"<mechanism>PLAIN</mechanism></mechanisms></stream:features>")
        expect(rb"</auth>")
        connection.sendall(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        expect(rb"<stream:stream[^>]*>")
        connection.sendall(STREAM_HEADER + b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                           b"</stream:features>")
        request = expect(rb"<iq [^>]*id='([^']*)'")[0]
        connection.sendall(b"<iq type='result' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                           b"<jid>gw@localhost/ending</jid></bind></iq>" % request)
        pings = expect(rb"<iq type='get' id='([^']*)'", 3)
        connection.sendall(b"".join(b"<iq type='result' id='%s'/>" % ping for ping in pings[:2])
                           + b"<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                             b"</stream:error></stream:stream>")
        while connection.recv(65536):
            pass


def test_what_was_confirmed_before_the_stream_ended_stays_confirmed():
    """Two pings answered and the stream's end arrive in one read: the error carries the two confirmations, so a
    caller does not count those messages as "may have been delivered" and send them again."""
    server = EndingServer()
    session = xmpp.XMPPClient("gw@localhost", host="127.0.0.1", port=server.port, tls="none", allow_plain=True,
                              mechanisms=("PLAIN",), timeout=5)
    try:
        with session:
            session.connect()
            session.login("pencil")
            ids = [session.post("alice@localhost", "m%d" % n) for n in range(3)]
            with pytest.raises(xmpp.StreamEnded) as caught:
                while True:
                    session.confirmed(wait=True)
    finally:
        server.close()
    assert caught.value.confirmed == [(ids[0], None), (ids[1], None)]
