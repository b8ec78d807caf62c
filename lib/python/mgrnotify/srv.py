"""DNS SRV records (RFC 2782) with the standard library only: one UDP query, type 33.

The standard library resolves addresses but not SRV records, which XMPP uses to find a domain's
server (``_xmpp-client._tcp.example.com``). ``lookup()`` asks the first name servers of
``/etc/resolv.conf`` and returns the targets best first; any failure (no resolver, timeout, a
truncated or malformed answer, no such record) gives an empty list, so the caller falls back to
the domain itself (RFC 6120 §3.2.2).
"""

import os
import socket
import struct
import time

RESOLV_CONF = "/etc/resolv.conf"
DNS_PORT = 53
TYPE_SRV = 33
CLASS_IN = 1
MAX_SERVERS = 3          # as the C resolver: at most three "nameserver" lines are used
MAX_ANSWER_BYTES = 4096


class Record:
    """One SRV record: where the service runs and how much to prefer it."""

    def __init__(self, priority, weight, port, target):
        self.priority = priority
        self.weight = weight
        self.port = port
        self.target = target

    def __repr__(self):
        return "Record(%d, %d, %d, %r)" % (self.priority, self.weight, self.port, self.target)


def nameservers(path=RESOLV_CONF):
    """The name servers of ``resolv.conf`` as (address, port) pairs; [] if it cannot be read."""
    servers = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    servers.append((words[1].split("%")[0], DNS_PORT))
    except OSError:
        return []
    return servers[:MAX_SERVERS]


def build_query(name, ident, qtype=TYPE_SRV):
    """A DNS query packet for ``name`` (recursion desired)."""
    header = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    labels = b"".join(struct.pack("B", len(label)) + label
                      for label in name.rstrip(".").encode("idna").split(b".") if label)
    return header + labels + b"\0" + struct.pack(">HH", qtype, CLASS_IN)


def _read_name(packet, offset):
    """A possibly compressed domain name at ``offset``; (name, offset after it)."""
    labels = []
    end = None
    for _ in range(128):   # a bound on pointer chains, so a looping packet cannot hang us
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = struct.unpack(">H", packet[offset:offset + 2])[0] & 0x3FFF
        elif length == 0:
            return ".".join(labels), (end if end is not None else offset + 1)
        else:
            labels.append(packet[offset + 1:offset + 1 + length].decode("ascii", "replace"))
            offset += 1 + length
    raise ValueError("DNS name compression loops")


def parse_response(packet, ident):
    """The SRV records of an answer to query ``ident``; ValueError if it is not a usable answer."""
    if len(packet) < 12:
        raise ValueError("DNS answer shorter than its header")
    got_ident, flags, questions, answers = struct.unpack(">HHHH", packet[:8])
    if got_ident != ident or not flags & 0x8000:
        raise ValueError("not the answer to our query")
    if flags & 0x0200:
        raise ValueError("DNS answer truncated")
    rcode = flags & 0x000F
    if rcode == 3:        # NXDOMAIN: no such name, a normal "no records"
        return []
    if rcode:
        raise ValueError("DNS server answered with error code %d" % rcode)
    offset = 12
    try:
        for _ in range(questions):
            offset = _read_name(packet, offset)[1] + 4
        records = []
        for _ in range(answers):
            offset = _read_name(packet, offset)[1]
            rtype, rclass, _ttl, length = struct.unpack(">HHIH", packet[offset:offset + 10])
            offset += 10
            if rtype == TYPE_SRV and rclass == CLASS_IN:
                priority, weight, port = struct.unpack(">HHH", packet[offset:offset + 6])
                target = _read_name(packet, offset + 6)[0]
                # A target of "." means "no such service here" (RFC 2782).
                if target:
                    records.append(Record(priority, weight, port, target))
            offset += length
    except (IndexError, struct.error):
        raise ValueError("DNS answer is malformed")
    return sorted(records, key=lambda r: (r.priority, -r.weight))


def _is_answer(packet, ident):
    """True if ``packet`` is a DNS answer to query ``ident`` (anything else is a stray datagram)."""
    return len(packet) >= 12 and struct.unpack(">H", packet[:2])[0] == ident and bool(packet[2] & 0x80)


def lookup(name, timeout=2.0, servers=None):
    """The SRV records for ``name`` (e.g. ``_xmpp-client._tcp.example.com``), best first; [] on any failure.

    ``servers`` overrides resolv.conf's name servers: a list of (address, port). The time is shared
    between the servers, so a dead first server leaves the others their turn.
    """
    servers = nameservers() if servers is None else servers
    for address, port in servers:
        deadline = time.monotonic() + timeout / len(servers)
        ident = struct.unpack(">H", os.urandom(2))[0]
        try:
            with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.connect((address, port))
                sock.sendall(build_query(name, ident))
                packet = b""
                while not _is_answer(packet, ident):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise socket.timeout("no answer")
                    sock.settimeout(remaining)
                    packet = sock.recv(MAX_ANSWER_BYTES)
            return parse_response(packet, ident)
        except (OSError, ValueError):
            continue
    return []
