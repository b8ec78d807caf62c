"""Wall time of one ``gate/gwepochta --command outgoing`` against the local ePochta stand-in, as a ratio
to a bare ``python3 -c pass``. Run as BILLmanager runs it: a new process per SMS, the request on stdin.

Goal (issue 3): at most 2.5×. Rows: plain HTTP; HTTPS without verification (the TLS handshake);
``--command features`` for the start-up share; the floor set by importing ``http.client`` (with the
``email`` package it pulls in) and the XML parser every request needs. Then, in this process, the cost of a
verifying TLS context: ours (the hashed CA folder, read lazily) against ``ssl.create_default_context()``.
Prints figures, asserts nothing.
"""

import os
import ssl
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import timing  # noqa: E402  (puts tests/ and lib/python on sys.path)

import sandbox as sandboxlib  # noqa: E402
from epochta_server import Account, EpochtaServer  # noqa: E402
from mgrnotify import tls as tlslib  # noqa: E402

GOAL = 2.5
RUNS = 40
LOGIN, PASSWORD = "bench", "bench-password"


def main():
    timing.compile_library()
    with tempfile.TemporaryDirectory() as root:
        module, = timing.mgr5_root(root, "gate/gwepochta")
        plain = EpochtaServer([Account(LOGIN, PASSWORD, credits=10 ** 6)]).start()
        tls = EpochtaServer([Account(LOGIN, PASSWORD, credits=10 ** 6)], tls_folder=root).start()
        try:
            print("| command | median | python3 -c pass | ratio | goal | |")
            print("| --- | --- | --- | --- | --- | --- |")
            for name, server, extra in (("outgoing, http", plain, {}),
                                        ("outgoing, https verify_tls off", tls, {"verify_tls": "off"})):
                settings = dict({"login": LOGIN, "password": PASSWORD, "sender": "Bench", "url": server.url}, **extra)
                request = sandboxlib.gateway_request(settings, "Your invoice #42 is ready",
                                                     user={"phone": "+380 97 292 00 00"}).encode("utf-8")
                value, base = timing.compare([module, "--command", "outgoing"], runs=RUNS, input=request, cwd=root)
                print(timing.row("gwepochta " + name, value, base, GOAL))
            floor = ["/usr/bin/python3", "-c", "import http.client, xml.etree.ElementTree"]
            value, base = timing.compare(floor, runs=RUNS)
            print(timing.row("gwepochta floor: import http.client, xml.etree.ElementTree", value, base, None))
            print("\nSMS accepted by the stand-ins: %d" % sum(len(s.requests) for s in (plain, tls)))
        finally:
            plain.stop()
            tls.stop()
    # SSL_CERT_FILE names a bundle to load, which tls.context() then honours: measure as on a server, without it.
    saved = os.environ.pop("SSL_CERT_FILE", None)
    try:
        print("Verifying TLS context (SSL_CERT_FILE unset), median of 20 in this process: tls.context() "
              "%.1f ms, ssl.create_default_context() %.1f ms"
              % (in_process(tlslib.context), in_process(ssl.create_default_context)))
    finally:
        if saved is not None:
            os.environ["SSL_CERT_FILE"] = saved


def in_process(make, runs=20):
    """Median milliseconds of one call of ``make``."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        make()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


if __name__ == "__main__":
    main()
