"""
The TLS layer's server CPU per call-home session, measured in-process.

This process is the manager side: a ``TLSHandler`` (with an ``EventBus``
that nobody observes, a ``SessionRegistry`` and a directory of the fleet's
devices, cert-to-name ``common-name`` on the fleet CA, as in
``bench/storm.py --kind tls``) behind ``HandoffListener`` (the
demultiplexer's stand-in) on 127.0.0.1.  A child process
(``python -m callhome_mux.testing.fleet --kind tls``) plays the devices:
each run a fresh fleet of ``--devices`` silent TLS devices, every one with
its own new certificate, dials at once and waits for the manager's <hello>.

Per run it prints the thread CPU time (``time.thread_time``) of this
process's reactor thread from the fleet's "go" until every session is
registered, divided by the devices: the server side of a TLS call home
(handshake, verification, handler, NETCONF hello, registration, socket
calls), with nothing of the devices' CPU and little of the machine's load.
Then min and median over ``--runs``.  ``--cpu-of module:Class.method``
adds the thread CPU per session of single functions.

``--root DIR`` imports callhome_mux from another checkout (e.g. the main
worktree) for old/new comparisons; the fleet child always runs the device
code of this checkout::

    python bench/tls_calls.py --devices 300 --runs 7
    python bench/tls_calls.py --root /work/main --devices 300 --runs 7

``--floor`` runs bench/floor_tls.py's manager in the same harness (silent
direction).  ``--callgrind`` switches callgrind's instrumentation on for
the measured windows only (deterministic instruction counts, whatever the
machine's load), with ``--rate`` pacing the devices so that no handshake
waits long under valgrind::

    valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
        python bench/tls_calls.py --devices 100 --runs 1 --rate 20 --callgrind
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time

HERE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE_ROOT)

from bench._common import CPU_OF, callgrind_switch as _callgrind, time_calls  # noqa: E402


class FloorSessions:
    """
    bench/floor_tls.py's manager (Twisted's TLS client, OpenSSL verifying,
    <hello> sent, the device's awaited) as the factory to listen with, and
    as much of a C{SessionRegistry} as the harness uses.
    """

    def __init__(self, pki: str, groups: str = ""):
        from twisted.internet import defer
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from bench.floor_tls import Creator, FloorFactory, FloorNetconf, floor_context

        sessions = self

        class Counted(FloorNetconf):
            def dataReceived(self, data):
                done = self.hello_done
                super().dataReceived(data)
                if self.hello_done and not done:
                    sessions._up(self)

            def connectionLost(self, reason=None):
                super().connectionLost(reason)
                sessions._up_now.discard(self)
                self.lost.callback(None)

            def whenLost(self):
                return self.lost

        inner = FloorFactory()
        inner.protocol = Counted
        self._inner = inner
        self._factory = TLSMemoryBIOFactory(Creator(floor_context(pki, groups)), True, inner)
        self._observers = []
        self._up_now = set()
        self._defer = defer
        self.handoffs = []

    def _up(self, session) -> None:
        session.lost = self._defer.Deferred()
        self._up_now.add(session)
        for observer in list(self._observers):
            observer(session)

    # What the harness asks of a listening factory and of a registry.
    def doStart(self):
        self._factory.doStart()

    def doStop(self):
        self._factory.doStop()

    def buildProtocol(self, addr):
        return self._factory.buildProtocol(addr)

    def __len__(self):
        return self._inner.hellos

    def addConnectedObserver(self, observer):
        self._observers.append(observer)

    def removeConnectedObserver(self, observer):
        self._observers.remove(observer)

    def sessions(self):
        return list(self._up_now)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", default=HERE_ROOT, help="checkout whose callhome_mux the manager side runs")
    parser.add_argument("--direction", choices=("silent", "client-hello"), default="silent")
    parser.add_argument("--groups", default="", help="tls.groups for the manager, e.g. X25519 (default: OpenSSL's)")
    parser.add_argument("--cpu-of", action="append", default=[], help="module:Class.method to time per session")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the measured windows into FILE (distorts the figures)")
    parser.add_argument("--floor", action="store_true",
                        help="run bench/floor_tls.py's manager instead (silent direction only): the same harness's floor")
    parser.add_argument("--rate", type=float, default=0.0, help="connections per second (0: all at once, as the storm)")
    parser.add_argument("--callgrind", action="store_true",
                        help="under valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes: instrument "
                             "only the measured windows (instruction counts, whatever the machine's load); use "
                             "--rate so that no handshake waits long under valgrind")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.root))
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import defer, protocol, reactor
    from twisted.logger import globalLogBeginner

    # As the storm's server: no log observer (events are not rendered).
    globalLogBeginner.beginLoggingTo([], redirectStandardIO=False)

    from callhome_mux.connection import ConnectionKind
    from callhome_mux.events import EventBus
    from callhome_mux.inventory.model import CertToNameRule, DeviceDirectory
    from callhome_mux.inventory.config import devices_from_tables
    from callhome_mux.netconf.settings import NetconfSettings
    from callhome_mux.sessions import SessionRegistry
    from callhome_mux.testing import fleet
    from callhome_mux.testing.tls_device import HandoffListener
    from callhome_mux.tls.handler import TLSHandler
    from callhome_mux.tls.settings import TLSSettings

    import callhome_mux

    print(f"# manager code: {os.path.dirname(callhome_mux.__file__)}", flush=True)
    time_calls(args.cpu_of)
    work = tempfile.mkdtemp(prefix="tls-calls-")
    pki = fleet.write_pki(os.path.join(work, "pki"))
    total = args.devices * args.runs
    tables = [
        {"id": fleet.device_id(i), "credentials": {"username": fleet.USERNAME, "password": fleet.PASSWORD}}
        for i in range(total)
    ]
    directory = DeviceDirectory(devices_from_tables(tables))
    events = EventBus()
    registry = SessionRegistry(events)
    options = dict(
        certificate_file=pki["manager.crt"],
        private_key_file=pki["manager.key"],
        trust_anchor_files=(pki["ca.crt"],),
        cert_to_name=(CertToNameRule(pki["ca_fingerprint"], "common-name"),),
    )
    if args.groups:
        options["groups"] = tuple(args.groups.split(":"))
    if args.floor:
        registry = listener = FloorSessions(os.path.join(work, "pki"), args.groups)
    else:
        handler = TLSHandler(directory, registry, events, TLSSettings(**options), NetconfSettings(), work)
        kind = ConnectionKind.TLS_SILENT if args.direction == "silent" else ConnectionKind.TLS_CLIENT_HELLO
        listener = HandoffListener(handler, kind)
    port = reactor.listenTCP(0, listener, backlog=4096, interface="127.0.0.1")

    class Fleet(protocol.ProcessProtocol):
        def __init__(self):
            self.buffer = b""
            self.lines = []
            self.waiting = None
            self.ended = defer.Deferred()

        def outReceived(self, data):
            self.buffer += data
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                if line.startswith(b"{"):
                    self.lines.append(json.loads(line))
                    if self.waiting is not None:
                        waiting, self.waiting = self.waiting, None
                        waiting.callback(self.lines[-1])

        def errReceived(self, data):
            sys.stderr.write(data.decode(errors="replace"))

        def next_line(self):
            self.waiting = defer.Deferred()
            return self.waiting

        def processEnded(self, reason):
            self.ended.callback(None)

    profiler = None
    if args.profile:
        import cProfile

        # Thread CPU, not wall time: other processes' load must not show.
        profiler = cProfile.Profile(time.thread_time)

    @defer.inlineCallbacks
    def run_all():
        per_session = []
        best_of = {}
        try:
            for run in range(args.runs):
                child = Fleet()
                ready = child.next_line()
                argv = [sys.executable, "-m", "callhome_mux.testing.fleet", "--kind", "tls", "--direction",
                        args.direction, "--port", str(port.getHost().port), "--pki", os.path.join(work, "pki"),
                        "--first", str(run * args.devices), "--count", str(args.devices), "--rate", str(args.rate)]
                env = dict(os.environ, PYTHONPATH=HERE_ROOT)
                process = reactor.spawnProcess(child, sys.executable, argv, env=env)
                yield ready
                gc.collect()
                before_sessions = len(registry)
                all_up = defer.Deferred()

                def connected(session, all_up=all_up, target=before_sessions + args.devices):
                    if len(registry) >= target and not all_up.called:
                        all_up.callback((time.thread_time(), resource.getrusage(resource.RUSAGE_THREAD)))

                registry.addConnectedObserver(connected)
                for counter in CPU_OF.values():
                    counter[:] = [0, 0.0]
                done = child.next_line()
                if args.callgrind:
                    _callgrind("--instr=on")
                if profiler is not None:
                    profiler.enable()
                started = time.thread_time()
                usage_before = resource.getrusage(resource.RUSAGE_THREAD)
                process.writeToChild(0, b"go\n")
                finished, usage_after = yield all_up
                if profiler is not None:
                    profiler.disable()
                if args.callgrind:
                    _callgrind("--instr=off")
                registry.removeConnectedObserver(connected)
                report = yield done
                cpu_us = (finished - started) / args.devices * 1e6
                per_session.append(cpu_us)
                for name, (calls, spent) in CPU_OF.items():
                    best_of.setdefault(name, []).append(spent / args.devices * 1e6)
                extra = "  ".join(f"{name} {spent / args.devices * 1e6:.1f}us ({calls} calls)"
                                  for name, (calls, spent) in CPU_OF.items())
                extra += (f" user {(usage_after.ru_utime - usage_before.ru_utime) / args.devices * 1e6:.0f}us"
                          f" sys {(usage_after.ru_stime - usage_before.ru_stime) / args.devices * 1e6:.0f}us"
                          f" minflt {(usage_after.ru_minflt - usage_before.ru_minflt) / args.devices:.1f}")
                print(f"run {run + 1}: {cpu_us:.1f} us/session (devices done {report.get('done')}, "
                      f"failed {report.get('failed')})  {extra}", flush=True)
                lost = [session.whenLost() for session in registry.sessions()]
                process.writeToChild(0, b"quit\n")
                yield defer.DeferredList(lost)
                yield child.ended
                listener.handoffs.clear()
            print(f"per session: min {min(per_session):.1f} us, median {statistics.median(per_session):.1f} us "
                  f"over {len(per_session)} runs of {args.devices} devices", flush=True)
            for name, values in best_of.items():
                print(f"  {name}: min {min(values):.1f} us, median {statistics.median(values):.1f} us per session", flush=True)
        finally:
            if profiler is not None:
                profiler.dump_stats(args.profile)
            reactor.stop()

    reactor.callWhenRunning(run_all)
    reactor.run()


if __name__ == "__main__":
    main()
