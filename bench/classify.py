"""
The demultiplexer's CPU cost per connection, per kind (target: <= 40 us).

    python bench/classify.py                 # 5 runs of 20,000 connections per kind and path
    python bench/classify.py --runs 3 --connections 50000

Three measurements per kind (an SSH banner followed by a KEXINIT-like
packet in the same read, a real OpenSSL ClientHello, a silent connection):

 - C{classifier}: the sans-IO L{Classifier} alone (build, feed, decision);
 - C{protocol}: the whole L{DemuxProtocol} path, connectionMade -> timers ->
   feed -> decision -> ClassifiedConnection -> handler -> the handler's
   protocol gets makeConnection and the replayed bytes, then the connection
   is lost; on a fake transport (no sockets), with the real reactor's
   timers (callLater/cancel, the heap compacted every 1,000 connections as
   the running reactor would), events to an L{EventBus} whose log has no
   observer;
 - C{protocol+log}: the same with one text log observer (twistd's text
   format, written to a file).

CPU time (time.process_time) per connection; median [min-max] over runs.
The silent kind runs the silence timer's callback directly (the timer's own
firing is not counted).  Accepting the socket is not counted either.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from OpenSSL import SSL  # noqa: E402
from twisted.internet import protocol, reactor  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.logger import globalLogBeginner, globalLogPublisher, textFileLogObserver  # noqa: E402

from bench._common import summary  # noqa: E402
from callhome_mux.connection import ConnectionKind  # noqa: E402
from callhome_mux.demux.classifier import Classifier  # noqa: E402
from callhome_mux.demux.protocol import Admission, DemuxFactory  # noqa: E402
from callhome_mux.demux.settings import DemuxSettings  # noqa: E402
from callhome_mux.events import EventBus  # noqa: E402

SSH_FIRST_READ = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n" + b"\x00\x00\x04\x5c\x0a\x14" + bytes(range(256)) * 4


def client_hello() -> bytes:
    context = SSL.Context(SSL.TLS_METHOD)
    connection = SSL.Connection(context, None)
    connection.set_tlsext_host_name(b"manager.example")
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


class _Transport:
    """The least a transport must do for the demultiplexer and a handler."""

    disconnecting = False
    _peer = IPv4Address("TCP", "127.0.0.2", 40000)
    _host = IPv4Address("TCP", "127.0.0.1", 4334)

    def getPeer(self):
        return self._peer

    def getHost(self):
        return self._host

    def write(self, data):
        pass

    def loseConnection(self):
        pass

    def abortConnection(self):
        pass


class _Sink(protocol.Protocol):
    def dataReceived(self, data):
        pass


class _Handler:
    def protocolFor(self, connection):
        return _Sink()


def run_classifier(kind: str, data: bytes, count: int, settings: DemuxSettings) -> float:
    start = time.process_time()
    if kind == "silent":
        for _ in range(count):
            Classifier(settings).silence()
    else:
        for _ in range(count):
            decision = Classifier(settings).feed(data)
    elapsed = time.process_time() - start
    if kind != "silent":
        assert decision is not None and decision.accepted, decision
    return elapsed * 1e6 / count


def run_protocol(kind: str, data: bytes, count: int, settings: DemuxSettings, events: EventBus) -> float:
    handlers = {k: _Handler() for k in ConnectionKind}
    factory = DemuxFactory(settings, events, handlers, admission=Admission(settings), clock=reactor, listener_name="tcp:4334")
    addr = _Transport._peer
    lost = None
    start = time.process_time()
    for i in range(count):
        p = factory.buildProtocol(addr)
        p.makeConnection(_Transport())
        if kind == "silent":
            # The silence timer "fires" (its firing and the reactor turn
            # after it are not counted): the decision.
            p._timer.cancel()
            p._silence_confirmed()
        else:
            p.dataReceived(data)
        p.connectionLost(lost)
        if i % 1000 == 999:
            reactor.runUntilCurrent()
    elapsed = time.process_time() - start
    assert p.kind is not None
    return elapsed * 1e6 / count


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--connections", type=int, default=20000)
    args = parser.parse_args()

    globalLogBeginner.beginLoggingTo([], redirectStandardIO=False, discardBuffer=True)
    settings = DemuxSettings(max_unclassified_per_source=10**6, max_unclassified=10**6)
    kinds = {"ssh": SSH_FIRST_READ, "clienthello": client_hello(), "silent": b""}
    log_path = os.path.join(tempfile.mkdtemp(prefix="callhome-bench-"), "classify.log")
    text_observer = textFileLogObserver(open(log_path, "w"))
    results = {}
    for run in range(args.runs):
        for kind, data in kinds.items():
            gc.collect()
            results.setdefault((kind, "classifier"), []).append(run_classifier(kind, data, args.connections, settings))
            events = EventBus(clock=reactor)
            results.setdefault((kind, "protocol"), []).append(run_protocol(kind, data, args.connections, settings, events))
            globalLogPublisher.addObserver(text_observer)
            try:
                results.setdefault((kind, "protocol+log"), []).append(
                    run_protocol(kind, data, args.connections, settings, EventBus(clock=reactor))
                )
            finally:
                globalLogPublisher.removeObserver(text_observer)
    print(f"classify: CPU microseconds per connection, median [min-max] of {args.runs} runs x {args.connections} connections")
    print(f"  first read: ssh {len(SSH_FIRST_READ)} bytes (banner + binary), clienthello {len(kinds['clienthello'])} bytes")
    for kind in kinds:
        line = "  ".join(f"{path} {summary(results[(kind, path)], '{:.1f}')}" for path in ("classifier", "protocol", "protocol+log"))
        worst = statistics.median(results[(kind, "protocol+log")])
        print(f"  {kind:12s} {line}   target <= 40: {'met' if statistics.median(results[(kind, 'protocol')]) <= 40 else 'NOT met'}"
              f" (with text log: {'met' if worst <= 40 else 'NOT met'})")


if __name__ == "__main__":
    main()
