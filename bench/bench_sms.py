"""Wall time of one SMS through each SMS gateway, ``gate/gwepochta --command outgoing`` against the local
ePochta stand-in and ``gate/gwhttpsms --command outgoing`` (the SMS.ru preset) against the SMS.ru stand-in, as a
ratio to a bare ``python3 -c pass``. Run as BILLmanager runs them: a new process per SMS, the request on stdin.

Goal (issue 3, gwhttpsms held to gwepochta's by issue 17): at most 2.5×. Rows for each gateway: plain HTTP;
HTTPS without verification (the TLS handshake). Then the floor both share, set by importing ``http.client`` (with
the ``email`` package it pulls in) and the XML parser every request needs (bench_features.py gives the start-up
share). Then, in this process, the cost of a verifying TLS context: ours (the hashed CA folder, read lazily)
against ``ssl.create_default_context()``. Prints figures, asserts nothing.
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
from httpsms_servers import SmsRuServer  # noqa: E402
from mgrnotify import tls as tlslib  # noqa: E402

GOAL = 2.5
RUNS = 40
LOGIN, PASSWORD, API_KEY = "bench", "bench-password", "bench-api-key"
# Each gateway: its figure's name, its module, its provider's stand-in (given the TLS folder or None), and its
# settings against that stand-in.
GATEWAYS = (
    ("gwepochta outgoing", "gate/gwepochta",
     lambda tls_folder: EpochtaServer([Account(LOGIN, PASSWORD, credits=10 ** 6)], tls_folder=tls_folder),
     lambda server: {"login": LOGIN, "password": PASSWORD, "sender": "Bench", "url": server.url}),
    ("gwhttpsms outgoing (SMS.ru)", "gate/gwhttpsms",
     lambda tls_folder: SmsRuServer(API_KEY, money=10 ** 6, tls_folder=tls_folder),
     lambda server: {"preset": "smsru", "api_key": API_KEY, "sender": "Bench", "url": server.origin}),
)


def main():
    timing.compile_library()
    with tempfile.TemporaryDirectory() as root:
        modules = timing.mgr5_root(root, *[module for _, module, _, _ in GATEWAYS])
        servers = []
        try:
            print("| command | median | python3 -c pass | ratio | goal | |")
            print("| --- | --- | --- | --- | --- | --- |")
            for (name, _, stand_in, settings_for), module in zip(GATEWAYS, modules):
                for mode, tls_folder, extra in (("http", None, {}),
                                                ("https verify_tls off", root, {"verify_tls": "off"})):
                    servers.append(stand_in(tls_folder).start())
                    settings = dict(settings_for(servers[-1]), **extra)
                    request = sandboxlib.gateway_request(settings, "Your invoice #42 is ready",
                                                         user={"phone": "+380 97 292 00 00"}).encode("utf-8")
                    value, base = timing.compare([module, "--command", "outgoing"], runs=RUNS, input=request, cwd=root)
                    print(timing.row("%s, %s" % (name, mode), value, base, GOAL))
            floor = ["/usr/bin/python3", "-c", "import http.client, xml.etree.ElementTree"]
            value, base = timing.compare(floor, runs=RUNS)
            print(timing.row("SMS floor: import http.client, xml.etree.ElementTree", value, base, None))
            print("\nSMS accepted by the stand-ins: %d" % sum(len(s.requests) for s in servers))
        finally:
            for server in servers:
                server.stop()
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
