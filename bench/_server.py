"""
The callhome-mux server process of the benchmarks (not run by hand).

Builds the real L{CallHomeService} from a configuration document listing
the fleet's devices (callhome_mux.testing.fleet), listens on 127.0.0.1 and
answers control commands on stdin (see bench/_common.py): C{stats},
C{rpc_all}, C{rpc_seq N}, C{rpc_pipe N DEPTH}, C{rpc_big}.

If the service does not install an SSH or TLS handler itself yet, the
benchmark registers them the way tests/test_ssh_harness.py does and says so
(C{"wiring": "bench"}) in its first line.
"""

from __future__ import annotations

import argparse
import gc
import resource
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import CPU_OF, emit, pipeline_rpcs, process_stats, run_reactor, serve_control, time_calls  # noqa: E402,F401


def build_service(args):
    from callhome_mux import config as config_module
    from callhome_mux.config import config_from_document
    from callhome_mux.connection import ConnectionKind
    from callhome_mux.inventory.config import devices_from_tables
    from callhome_mux.service import CallHomeService
    from callhome_mux.testing import fleet

    state_dir = tempfile.mkdtemp(prefix="callhome-bench-state-")
    devices = []
    for index in range(args.devices):
        table = {"id": fleet.device_id(index), "credentials": {"username": fleet.USERNAME, "password": fleet.PASSWORD}}
        if args.kind == "ssh":
            table["ssh_host_keys"] = [fleet.device_host_key_line(index)]
        devices.append(table)
    document = {
        "listen": [f"tcp:{args.port}:interface=127.0.0.1:backlog=4096"],
        "state_dir": state_dir,
        # A storm comes from a few (NAT) addresses: let them be unclassified
        # together for the few milliseconds it takes to read their banners.
        "demux": {"max_unclassified_per_source": 8192, "max_unclassified": 16384, **_demux_extra(args)},
        "devices": devices,
    }
    for assignment in args.set or ():
        # section.key=value, value in TOML syntax (as twistd's --set).
        import tomllib

        target, _, text = assignment.partition("=")
        section, _, key = target.partition(".")
        document.setdefault(section, {})[key] = tomllib.loads(f"v = {text}")["v"]
    tls_paths = None
    if args.kind == "tls":
        tls_paths = {name: os.path.join(args.pki, name) for name in ("ca.crt", "manager.crt", "manager.key")}
        if "tls" in config_module.SECTIONS:
            # --set tls.KEY=... (storm.py --tls-groups: tls.groups) is kept.
            document["tls"] = {
                "certificate_file": tls_paths["manager.crt"],
                "private_key_file": tls_paths["manager.key"],
                "trust_anchor_files": [tls_paths["ca.crt"]],
                "cert_to_name": [{"fingerprint": args.ca_fingerprint, "map_type": "common-name"}],
                **document.get("tls", {}),
            }
    config = config_from_document(document)
    service = CallHomeService(config)
    return service, tls_paths, devices


def ensure_handlers(service, args, tls_paths, devices):
    """After start: use the service's own handlers; register ours only where it has none."""
    from callhome_mux.connection import ConnectionKind
    from callhome_mux.inventory.config import devices_from_tables

    kind_needed = ConnectionKind.SSH if args.kind == "ssh" else ConnectionKind.TLS_SILENT
    if kind_needed in service.handlers:
        return "service"
    if len(service.directory) == 0:
        service.directory.replace(devices_from_tables(devices))
    if args.kind == "ssh":
        from callhome_mux.ssh.handler import SSHHandler

        service.registerHandler(ConnectionKind.SSH, SSHHandler(service.directory, service.registry, service.events))
    else:
        from callhome_mux.inventory.model import CertToNameRule
        from callhome_mux.netconf.settings import NetconfSettings
        from callhome_mux.tls.handler import TLSHandler
        from callhome_mux.tls.settings import TLSSettings

        settings = TLSSettings(
            certificate_file=tls_paths["manager.crt"],
            private_key_file=tls_paths["manager.key"],
            trust_anchor_files=(tls_paths["ca.crt"],),
            cert_to_name=(CertToNameRule(args.ca_fingerprint, "common-name"),),
        )
        handler = TLSHandler(service.directory, service.registry, service.events, settings, NetconfSettings(),
                             service.state_dir)
        service.registerHandler(ConnectionKind.TLS_SILENT, handler)
        service.registerHandler(ConnectionKind.TLS_CLIENT_HELLO, handler)
    return "bench"


def detach_inventory(service) -> None:
    """
    The experiment no-inventory-events: the inventory no longer follows
    the sessions, neither their events nor the registry (whose connected
    observer would otherwise write each session's details in the state).
    """
    inventory = service.inventory
    if inventory is None:
        return
    service.events.removeObserver(inventory._on_event)
    service.registry.removeConnectedObserver(inventory._session_connected)


class _SyscallCounter:
    """
    Counts the reads and sends of one TCP connection and the SSH packets
    sent (how well RPCs are batched), and the process's user and system CPU.
    A counter is one Python call per read or send: negligible here.
    """

    def __init__(self, tcp, ssh):
        self.tcp, self.ssh = tcp, ssh
        self.reads = self.sends = self.packets_out = 0
        self.usage = resource.getrusage(resource.RUSAGE_SELF)
        for name, counter in (("doRead", "reads"), ("writeSomeData", "sends"), ("sendPacket", "packets_out")):
            target = ssh if name == "sendPacket" else tcp
            original = getattr(target, name)

            def counted(*args, original=original, counter=counter):
                setattr(self, counter, getattr(self, counter) + 1)
                return original(*args)

            setattr(target, name, counted)

    def stop(self):
        for target, name in ((self.tcp, "doRead"), (self.tcp, "writeSomeData"), (self.ssh, "sendPacket")):
            target.__dict__.pop(name, None)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"reads": self.reads, "sends": self.sends, "packets_out": self.packets_out,
                "utime": usage.ru_utime - self.usage.ru_utime, "stime": usage.ru_stime - self.usage.ru_stime}


def _count_syscalls(session):
    channel = getattr(session.protocol.transport, "_channel", None)
    if channel is None:
        return type("NoCounts", (), {"stop": lambda self: {}})()
    ssh = channel.conn.transport
    return _SyscallCounter(ssh.transport, ssh)


def _demux_extra(args):
    return {"silence_timeout": args.silence_timeout} if args.silence_timeout else {}


class Commands:
    def __init__(self, service):
        self.service = service

    def stats(self):
        return {"sessions": len(self.service.registry), "cpu_of": CPU_OF, **process_stats()}

    def settle(self):
        """Fires once the inventory has committed what the sessions so far caused (its writes are batched)."""
        d = self.service.inventory.flush()
        return d.addCallback(lambda _: {"settled": True})

    def _sessions(self):
        return self.service.registry.sessions()

    def rpc_all(self):
        from twisted.internet import defer

        sessions = self._sessions()
        started = time.perf_counter()
        ds = [s.rpc(b"<get-config><source><running/></source></get-config>", timeout=120) for s in sessions]
        done = defer.DeferredList(ds, consumeErrors=True)
        return done.addCallback(
            lambda results: {
                "rpc_ok": sum(1 for ok, _ in results if ok),
                "rpc_failed": sum(1 for ok, _ in results if not ok),
                "seconds": time.perf_counter() - started,
            }
        )

    def rpc_seq(self, count):
        from twisted.internet import defer

        session = self._sessions()[0]
        count = int(count)

        @defer.inlineCallbacks
        def run():
            counts = _count_syscalls(session)
            before = process_stats()["cpu"]
            started = time.perf_counter()
            for _ in range(count):
                yield session.rpc(b"<commit/>")
            elapsed = time.perf_counter() - started
            return {"rpcs": count, "seconds": elapsed, "cpu": process_stats()["cpu"] - before, **counts.stop()}

        return run()

    def rpc_pipe(self, count, depth):
        session = self._sessions()[0]
        count, depth = int(count), int(depth)
        counts = _count_syscalls(session)
        before = process_stats()["cpu"]
        started = time.perf_counter()
        state, finished = pipeline_rpcs(session, count, depth)
        return finished.addCallback(
            lambda _: {"rpcs": count, "failed": state["failed"], "seconds": time.perf_counter() - started,
                       "cpu": process_stats()["cpu"] - before, **counts.stop()}
        )

    def rpc_big(self):
        session = self._sessions()[0]
        protocol = session.protocol
        marks = {"bytes": 0}
        original = protocol.dataReceived

        def timed(data):
            # Bytes as the channel hands them over (received, decrypted);
            # the last read's start is when the whole reply was here.
            marks["last"] = time.perf_counter()
            marks["bytes"] += len(data)
            return original(data)

        protocol.dataReceived = timed
        before = process_stats()["cpu"]
        started = time.perf_counter()
        d = session.rpc(b"<get/>", timeout=120)

        def done(reply):
            elapsed = time.perf_counter() - started
            cpu = process_stats()["cpu"] - before
            del protocol.dataReceived
            return {"bytes": marks["bytes"], "seconds": elapsed, "transfer_seconds": marks["last"] - started,
                    "cpu": cpu}

        return d.addCallback(done)

    def rpc_bigsend(self, size):
        """One <edit-config> of about C{size} bytes to the device; timed until its <ok/>."""
        from callhome_mux.testing.fleet import big_data

        session = self._sessions()[0]
        request = (b"<edit-config><target><running/></target><config>" + big_data(int(size))
                   + b"</config></edit-config>")
        before = process_stats()["cpu"]
        started = time.perf_counter()
        d = session.rpc(request, timeout=300)
        return d.addCallback(lambda _: {"sent_bytes": len(request), "seconds": time.perf_counter() - started,
                                        "cpu": process_stats()["cpu"] - before})

    _snapshot = None

    def snap(self):
        import tracemalloc

        gc.collect()
        self._snapshot = tracemalloc.take_snapshot()
        return {"snap": True}

    def memtop(self, count="30", group="lineno"):
        import tracemalloc

        gc.collect()
        now = tracemalloc.take_snapshot()
        stats = now.compare_to(self._snapshot, group)
        top = [f"{s.size_diff / 1024:10.0f} KiB {s.count_diff:8d} blocks  {s.traceback.format()[-1].strip() if group == 'traceback' else s.traceback}"
               for s in stats[: int(count)]]
        total = sum(s.size_diff for s in stats)
        return {"memtop": top, "total_kib": total / 1024}

    def memgroups(self, sessions="1", count="40", by="owner"):
        """
        Python allocations since C{snap} (needs --tracemalloc FRAMES), per
        session: grouped C{by} "owner" (the innermost frame outside the
        standard library, and the innermost of callhome_mux's when that is
        another) or "ours" (the innermost callhome_mux frame); with glibc's
        heap figures (L{heap}).
        """
        import tracemalloc

        gc.collect()
        sessions = max(int(sessions), 1)
        group_of = _owner_frame if by == "owner" else _our_frame
        groups = {}
        for stat in tracemalloc.take_snapshot().compare_to(self._snapshot, "traceback"):
            where = group_of(stat.traceback)
            size, blocks = groups.get(where, (0, 0))
            groups[where] = (size + stat.size_diff, blocks + stat.count_diff)
        top = sorted(groups.items(), key=lambda item: -item[1][0])[: int(count)]
        return {
            "memgroups": [f"{size / sessions:8.0f} B {blocks / sessions:6.1f} blocks  {where}" for where, (size, blocks) in top],
            "python_bytes": sum(size for size, _ in groups.values()),
            **self.heap(),
        }

    def heap(self):
        """glibc's mallinfo2: bytes in use (brk heap and arenas, and mmapped chunks) and free in the arenas."""
        import ctypes

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in
                        ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                         "fordblks", "keepcost")]

        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
        return {"heap_used": info.uordblks + info.hblkhd, "heap_free": info.fordblks}

    def gc(self):
        gc.collect()
        stats = process_stats()
        # What glibc would give back if asked (freed memory it still holds).
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return {"gc": True, **stats, "rss_trimmed": process_stats()["rss"]}


def _owner_frame(traceback) -> str:
    stdlib = os.path.dirname(os.__file__)
    frames = [frame for frame in reversed(traceback)  # innermost first
              if not frame.filename.startswith("<")
              and (not frame.filename.startswith(stdlib) or "site-packages" in frame.filename)]
    if not frames:
        return f"{_short(traceback[-1].filename)}:{traceback[-1].lineno}"
    where = f"{_short(frames[0].filename)}:{frames[0].lineno}"
    ours = next((frame for frame in frames if "callhome_mux" in frame.filename), None)
    if ours is not None and ours is not frames[0]:
        where += f" <- {_short(ours.filename)}:{ours.lineno}"
    return where


def _our_frame(traceback) -> str:
    for frame in reversed(traceback):
        if "callhome_mux" in frame.filename:
            return f"{_short(frame.filename)}:{frame.lineno}"
    return "(not callhome_mux) " + _owner_frame(traceback)


def _short(filename: str) -> str:
    for marker in ("site-packages" + os.sep, os.sep + "callhome_mux" + os.sep):
        if marker in filename:
            prefix = "callhome_mux/" if "callhome_mux" in marker else ""
            return prefix + filename.split(marker, 1)[1]
    return filename


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("ssh", "tls"), default="ssh")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pki")
    parser.add_argument("--ca-fingerprint")
    parser.add_argument("--log", choices=("none", "text"), default="none")
    parser.add_argument("--silence-timeout", type=float, default=0.0)
    parser.add_argument("--profile", help="write a cProfile of the whole run here")
    parser.add_argument("--experiment", action="append", choices=("no-inventory-events", "no-twisted-log"))
    parser.add_argument("--set", action="append", help="section.key=value (TOML value), as twistd callhome-mux --set")
    parser.add_argument("--cpu-of", action="append", default=[],
                        help="module:Class.method whose thread CPU time to add up (stats cpu_of)")
    parser.add_argument("--tracemalloc", type=int, default=0, help="trace allocations with this many frames (memtop)")
    args = parser.parse_args()

    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import epollreactor

        epollreactor.install()
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    if args.log == "text":
        path = os.path.join(tempfile.gettempdir(), f"callhome-bench-{os.getuid()}", "server.log")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        globalLogBeginner.beginLoggingTo([textFileLogObserver(open(path, "a"))], redirectStandardIO=False)
    else:
        globalLogBeginner.beginLoggingTo([], redirectStandardIO=False)

    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(args.tracemalloc)
    time_calls(args.cpu_of)
    service, tls_paths, devices = build_service(args)
    service.startService()

    def listening(ports):
        wiring = ensure_handlers(service, args, tls_paths, devices)
        for experiment in args.experiment or ():
            # Take one part away to measure its share (never for the headline figures).
            if experiment == "no-inventory-events":
                detach_inventory(service)
            elif experiment == "no-twisted-log":
                from twisted.logger import Logger

                service.events._log = Logger(namespace="callhome_mux", observer=lambda event: None)
            wiring += f"+{experiment}"
        gc.collect()
        emit(port=ports[0].getHost().port, pid=os.getpid(), wiring=wiring, **process_stats())

    service.whenListening().addCallback(listening).addErrback(lambda f: emit(error=f.getTraceback()))
    commands = Commands(service)
    serve_control({name: getattr(commands, name) for name in ("stats", "settle", "rpc_all", "rpc_seq", "rpc_pipe", "rpc_big", "gc", "snap", "memtop", "memgroups", "heap",
                                                                   "rpc_bigsend")})
    run_reactor(reactor, args.profile)


if __name__ == "__main__":
    main()
