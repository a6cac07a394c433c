"""
Server CPU per SSH call home, in-process: callhome-mux against the conch floor.

    python bench/setup_cpu.py                        # 300 devices, 5 rounds each, alternating
    python bench/setup_cpu.py --sessions 200 --rounds 7 --experiment no-inventory-events
    python bench/setup_cpu.py --profile /tmp/setup   # cProfile of each side's reactor thread

Both servers run in this process on their own port: callhome-mux's real
CallHomeService (built as bench/_server.py builds it, same devices, same
like-for-like algorithms as bench/storm.py) and the floor's FloorFactory
(bench/floor_conch.py).  One device process (callhome_mux.testing.fleet)
per round dials all its devices at once to one of them; rounds alternate
floor, mux, floor, mux ...  Measured: the *reactor thread's* CPU time
(C{time.thread_time}) from just before "go" to the moment the server has
every session up (and, for callhome-mux, the inventory has committed what
they caused), per session.  The thread CPU is what the server did, not
what the other processes on the machine did (the storm's process CPU also
counts them through cache and scheduler effects).  The inventory's SQLite
writes run in its pool thread and are printed apart (process CPU minus
reactor thread).  Printed: each round, then min and median per side and
the ratio of the minima.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import Child, callgrind_switch as _callgrind, sources  # noqa: E402


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Side:
    """One server in this process: its port, how many sessions it has, how to settle, how to drop all."""

    name = ""
    port = 0

    def sessions(self) -> int:
        raise NotImplementedError

    def settle(self):
        from twisted.internet import defer

        return defer.succeed(None)

    def connections(self) -> int:
        raise NotImplementedError


class MuxSide(Side):
    name = "mux"

    def __init__(self, args):
        from bench import _server

        server_args = argparse.Namespace(
            kind="ssh", devices=args.sessions, port=0, pki=None, ca_fingerprint=None, silence_timeout=0.0,
            set=list(args.set), experiment=args.experiment, show_events=args.events,
        )
        if args.mux_kex == "same-as-floor":
            server_args.set += ['ssh.key_exchanges=["curve25519-sha256", "curve25519-sha256@libssh.org"]',
                                'ssh.macs=["hmac-sha2-512", "hmac-sha2-256"]']
        self._server = _server
        _server.time_calls(args.cpu_of)
        self._args = server_args
        self.service, self._tls_paths, self._devices = _server.build_service(server_args)

    def start(self):
        self.service.startService()

        def listening(ports):
            self._server.ensure_handlers(self.service, self._args, self._tls_paths, self._devices)
            for experiment in self._args.experiment or ():
                if experiment == "no-inventory-events":
                    self._server.detach_inventory(self.service)
                elif experiment == "no-events":  # what every event and its observers cost
                    self.service.events.emit = lambda event, **fields: {}
            self.port = ports[0].getHost().port
            if self._args.show_events:
                # Which events, and why things failed (costs an observer).
                from collections import Counter

                seen = self.events_seen = Counter()

                def count(event):
                    name = event["event"]
                    seen[name] += 1
                    if name.endswith(("failed", "timeout", "rejected", "refused", "error", "closed")):
                        seen[f"{name}: {event.get('reason')}"] += 1

                self.service.events.addObserver(count)

        return self.service.whenListening().addCallback(listening)

    def sessions(self) -> int:
        return len(self.service.registry)

    def settle(self):
        return self.service.inventory.flush()

    def connections(self) -> int:
        handler = self.service.handlers.get(_ssh_kind())
        return len(handler.calls) if handler is not None else 0


def _ssh_kind():
    from callhome_mux.connection import ConnectionKind

    return ConnectionKind.SSH


class FloorSide(Side):
    name = "floor"

    def __init__(self, args):
        from bench.floor_conch import FloorFactory
        from callhome_mux.testing import fleet

        self.factory = FloorFactory(
            [fleet.device_fingerprint_blob(i) for i in range(args.sessions)],
            fleet.USERNAME.encode(),
            fleet.PASSWORD.encode(),
        )
        self._counted = 0

    def start(self):
        from twisted.internet import defer, reactor

        port = reactor.listenTCP(0, self.factory, backlog=4096, interface="127.0.0.1")
        self.port = port.getHost().port
        return defer.succeed(None)

    def sessions(self) -> int:
        return self.factory.hellos - self._counted

    def connections(self) -> int:
        return len(self.factory.connections)

    def reset(self) -> None:
        self._counted = self.factory.hellos


def one_round(side: Side, args, reactor, profile_path=None):
    """Run one storm of args.sessions devices against C{side}; return (thread CPU s, process CPU s, done)."""
    from twisted.internet.threads import blockingCallFromThread

    from bench._server import CPU_OF

    if isinstance(side, FloorSide):
        blockingCallFromThread(reactor, side.reset)
    fleet = Child([sys.executable, "-m", "callhome_mux.testing.fleet", "--kind", "ssh", "--port", str(side.port),
                   "--source", sources(1)[0], "--first", "0", "--count", str(args.sessions),
                   "--capabilities", str(args.capabilities), "--rate", str(args.rate)], f"setup-fleet-{side.name}")
    try:
        fleet.expect("ready", timeout=300)
        profiler = None
        if profile_path:
            import cProfile

            # Thread CPU, not wall time: other processes' load must not show.
            profiler = cProfile.Profile(time.thread_time)
        time.sleep(0.3)

        def mark():
            if profiler is not None:
                profiler.enable()
            return time.thread_time(), _process_cpu()

        def start():
            for counter in CPU_OF.values():
                counter[:] = [0, 0.0]
            if args.gc_objects:
                gc_objects.start()
            return mark()

        if args.callgrind:
            _callgrind("--instr=on")

        thread0, process0 = blockingCallFromThread(reactor, start)
        fleet.send("go")
        result = fleet.expect("done", timeout=300)
        deadline = time.time() + 60
        while blockingCallFromThread(reactor, side.sessions) < result["done"] and time.time() < deadline:
            time.sleep(0.01)

        def settled():
            d = side.settle()
            return d.addCallback(lambda _: (mark(), {name: tuple(c) for name, c in CPU_OF.items()} if side.name == "mux" else {}))

        (thread1, process1), cpu_of = blockingCallFromThread(reactor, settled)
        if args.callgrind:
            _callgrind("--instr=off")
        if args.gc_objects:
            blockingCallFromThread(reactor, gc_objects.stop, result["done"])
        if profiler is not None:
            blockingCallFromThread(reactor, profiler.disable)
            profiler.dump_stats(profile_path)
    finally:
        fleet.stop()
    # Let the server see every connection end before the next round.
    deadline = time.time() + 30
    while blockingCallFromThread(reactor, side.connections) and time.time() < deadline:
        time.sleep(0.05)
    if result["failed"]:
        print(f"    failures: {result['failures']}", flush=True)
    if getattr(side, "events_seen", None):
        for name, count in sorted(blockingCallFromThread(reactor, lambda: dict(side.events_seen)).items()):
            print(f"    event {name}: {count}", flush=True)
        blockingCallFromThread(reactor, side.events_seen.clear)
    return thread1 - thread0, process1 - process0, result["done"], result["failed"], cpu_of


class GCObjects:
    """
    The garbage collector's view of one round, per session (deterministic,
    whatever the machine's load): the collector is off during the round.

    - young growth: how far the young generation's count rose (tracked
      objects allocated minus those freed), what triggers collections;
    - cyclic garbage: what a full collection then finds unreachable;
    - kept: tracked objects still alive afterwards (the sessions' own).
    """

    def start(self) -> None:
        import gc

        gc.collect()
        self._objects = len(gc.get_objects())
        gc.disable()
        self._count = gc.get_count()[0]

    def stop(self, sessions: int) -> None:
        import gc

        growth = gc.get_count()[0] - self._count
        garbage = gc.collect()
        gc.enable()
        kept = len(gc.get_objects()) - self._objects
        n = max(sessions, 1)
        print(f"    gc objects per session: young growth {growth / n:.1f}, cyclic garbage {garbage / n:.1f}, "
              f"kept {kept / n:.1f}", flush=True)


gc_objects = GCObjects()


def orchestrate(args, sides, reactor, report):
    try:
        results = {side.name: [] for side in sides}
        for round_number in range(1, args.rounds + 1):
            for side in sides:
                profile = f"{args.profile}.{side.name}.{round_number}" if args.profile else None
                thread_s, process_s, done, failed, cpu_of = one_round(side, args, reactor, profile)
                per = thread_s * 1e6 / max(done, 1)
                others = (process_s - thread_s) * 1e6 / max(done, 1)
                results[side.name].append(per)
                for name, (calls, seconds) in sorted(cpu_of.items()):
                    print(f"    {name}: {calls / max(done, 1):.2f} calls, {seconds * 1e6 / max(done, 1):.1f} us/session")
                print(f"round {round_number} {side.name:5s}: {done} up, {failed} failed, reactor thread "
                      f"{per:7.1f} us/session (other threads {others:5.1f})", flush=True)
        report(results)
    finally:
        from twisted.internet import reactor as running

        running.callFromThread(running.stop)


def report(results):
    print("\nreactor-thread CPU per session (us): min / median over rounds")
    for name, values in results.items():
        print(f"  {name:5s}: {min(values):7.1f} / {statistics.median(values):7.1f}   {[round(v) for v in values]}")
    if "mux" in results and "floor" in results:
        print(f"  mux/floor (min/min): {min(results['mux']) / min(results['floor']):.3f}x  "
              f"difference {min(results['mux']) - min(results['floor']):.1f} us/session")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.0, help="connections per second (0: all at once, as the storm)")
    parser.add_argument("--capabilities", type=int, default=64)
    parser.add_argument("--only", choices=("mux", "floor"), help="run one side only")
    parser.add_argument("--mux-kex", default="same-as-floor", choices=("same-as-floor", "default"))
    parser.add_argument("--experiment", action="append", default=[], choices=("no-inventory-events", "no-events"),
                        help="take a part away to measure its share (never for the headline figures)")
    parser.add_argument("--events", action="store_true", help="count callhome-mux's events (and failure reasons) per round")
    parser.add_argument("--set", action="append", default=[], help="section.key=value (TOML value), for callhome-mux")
    parser.add_argument("--callgrind", action="store_true",
                        help="under valgrind --tool=callgrind --instr-atstart=no: instrument only the storms "
                             "(instruction counts: deterministic, whatever the machine's load); use --only")
    parser.add_argument("--gc-objects", action="store_true",
                        help="print tracked objects per session (young-generation growth, cyclic garbage, kept); "
                             "the collector is off during each round")
    parser.add_argument("--cpu-of", action="append", default=[],
                        help="module:Class.method of callhome-mux: print its thread CPU per session (as storm.py)")
    parser.add_argument("--profile", help="cProfile each round's reactor thread into PROFILE.<side>.<round>")
    args = parser.parse_args()

    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import defer, reactor
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo([], redirectStandardIO=False)
    sides = []
    if args.only != "mux":
        sides.append(FloorSide(args))
    if args.only != "floor":
        sides.append(MuxSide(args))

    def started(_):
        import gc

        gc.collect()
        print(f"setup_cpu: {args.sessions} sessions per round, {args.rounds} rounds, rate "
              f"{args.rate or 'all at once'}, experiments {args.experiment or 'none'}, mux-kex {args.mux_kex}",
              flush=True)
        threading.Thread(target=orchestrate, args=(args, sides, reactor, report), daemon=True).start()

    def failed(f):
        print(f.getTraceback(), file=sys.stderr)
        reactor.stop()

    defer.gatherResults([side.start() for side in sides]).addCallbacks(started, failed)
    reactor.run()


if __name__ == "__main__":
    main()
