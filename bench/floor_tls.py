"""
The TLS floor: the least a NETCONF-over-TLS call-home manager can do on Twisted.

It accepts TCP connections and runs Twisted's C{TLSMemoryBIOFactory} as
TLS client on each accepted socket (RFC 8071: the device waits silently),
with our certificate and key (no chain built for it per handshake), the
device's certificate verified by OpenSSL against the benchmark CA during
the handshake (C{VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT}, no Python
callback), sends a NETCONF <hello>
and waits for the device's <hello> (its end-of-message delimiter); then it
holds the session and does nothing else.  No demultiplexer, no events, no
identification of the device, no NETCONF parsing, OpenSSL's default
groups and cipher suites.  callhome-mux is measured against this.

Run by bench/storm.py and bench/hold.py as the server process (same control
protocol as bench/_server.py).  By hand::

    python bench/floor_tls.py --pki DIR      # DIR from callhome_mux.testing.fleet.write_pki
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from OpenSSL import SSL  # noqa: E402
from twisted.internet import protocol  # noqa: E402
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator  # noqa: E402
from twisted.protocols.tls import TLSMemoryBIOFactory  # noqa: E402
from zope.interface import implementer  # noqa: E402

from bench._common import emit, process_stats, run_reactor, serve_control  # noqa: E402
from bench.floor_conch import HELLO  # noqa: E402


#: SSL_MODE_NO_AUTO_CHAIN (ssl.h).
NO_AUTO_CHAIN = 0x00000008


def floor_context(pki: str, groups: str = "") -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.use_certificate_chain_file(os.path.join(pki, "manager.crt"))
    context.use_privatekey_file(os.path.join(pki, "manager.key"))
    context.load_verify_locations(os.path.join(pki, "ca.crt"))
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    # SSL_MODE_NO_AUTO_CHAIN (pyOpenSSL has no name for it), as
    # callhome-mux's contexts have: without it OpenSSL builds a chain for
    # our own certificate from the CA store at every handshake (an
    # X509_verify_cert with an ECDSA verify, ~0.88 million instructions)
    # and sends the CA along.  A manager need not do that per connection.
    context.set_mode(NO_AUTO_CHAIN)
    if groups:
        from OpenSSL._util import lib

        if lib.SSL_CTX_set1_curves_list(context._context, groups.encode()) != 1:
            raise SystemExit(f"OpenSSL refuses the groups {groups!r}")
    return context


@implementer(IOpenSSLClientConnectionCreator)
class Creator:
    def __init__(self, context: SSL.Context):
        self.context = context

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        return SSL.Connection(self.context, None)


class FloorNetconf(protocol.Protocol):
    buffer = b""
    hello_done = False

    def connectionMade(self):
        self.factory.connections.add(self)
        self.transport.write(HELLO)

    def dataReceived(self, data):
        if self.hello_done:
            return
        self.buffer += data
        if b"]]>]]>" in self.buffer:
            self.hello_done = True
            self.buffer = b""
            self.factory.hellos += 1

    def connectionLost(self, reason=None):
        self.factory.connections.discard(self)


class FloorFactory(protocol.Factory):
    protocol = FloorNetconf
    noisy = False

    def __init__(self):
        self.hellos = 0
        self.connections = set()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("tls",), default="tls")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pki", required=True)
    parser.add_argument("--groups", default="", help="TLS key-exchange groups (OpenSSL list); empty: its defaults")
    parser.add_argument("--profile")
    parser.add_argument("--cpu-of", action="append", default=[],
                        help="module:Class.method whose thread CPU time to add up (stats cpu_of), as bench/_server.py")
    args, _ = parser.parse_known_args()
    from bench._server import CPU_OF, time_calls

    time_calls(args.cpu_of)

    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import epollreactor

        epollreactor.install()
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo([], redirectStandardIO=False)

    inner = FloorFactory()
    factory = TLSMemoryBIOFactory(Creator(floor_context(args.pki, args.groups)), True, inner)
    port = reactor.listenTCP(args.port, factory, backlog=4096, interface="127.0.0.1")
    gc.collect()

    def gc_command():
        gc.collect()
        stats = process_stats()
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return {"gc": True, **stats, "rss_trimmed": process_stats()["rss"]}

    serve_control({
        "settle": lambda: {"settled": True},  # nothing is written behind
        "stats": lambda: {"sessions": inner.hellos, "connections": len(inner.connections), "cpu_of": CPU_OF,
                          **process_stats()},
        "gc": gc_command,
    })
    emit(port=port.getHost().port, pid=os.getpid(), wiring="floor", **process_stats())
    run_reactor(reactor, args.profile)


if __name__ == "__main__":
    main()
