"""
Shared pieces of the benchmarks: process control, /proc accounting, statistics.

The orchestrating script (storm.py, hold.py, rpc.py) starts one server
process (bench/_server.py: callhome-mux, or bench/floor_conch.py: the bare
conch floor) and several device processes (callhome_mux.testing.fleet), and
talks to each over its stdin/stdout, one JSON object per line.
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- /proc ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of process C{pid} (its own accounting, from /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime is field 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


# -- statistics ----------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summary(values: Sequence[float], fmt: str = "{:.3g}") -> str:
    """median [min-max] over runs."""
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


# -- child processes -------------------------------------------------------------


class Child:
    """A child process speaking JSON lines on stdout, commands on stdin."""

    def __init__(self, argv: List[str], name: str, env: Optional[Dict[str, str]] = None):
        self.name = name
        environment = dict(os.environ)
        environment["PYTHONPATH"] = ROOT + os.pathsep + environment.get("PYTHONPATH", "")
        environment.update(env or {})
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(os.path.join(_logdir(), f"{name}.stderr"), "wb"),
            cwd=ROOT,
            env=environment,
        )
        self.pid = self.process.pid
        self.lines: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.process.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                sys.stderr.write(f"[{self.name}] {raw.decode(errors='replace')}")
        self.lines.put({"eof": True})

    def send(self, command: str) -> None:
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()

    def expect(self, key: str, timeout: float = 120.0) -> Dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no {key!r} within {timeout} s")
            line = self.lines.get(timeout=left)
            if "eof" in line:
                raise RuntimeError(f"{self.name} exited (see {_logdir()}/{self.name}.stderr)")
            if key in line:
                return line
            if "error" in line:
                raise RuntimeError(f"{self.name}: {line['error']}")

    def ask(self, command: str, key: str, timeout: float = 120.0) -> Dict[str, Any]:
        self.send(command)
        return self.expect(key, timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("quit")
            except (BrokenPipeError, OSError):
                pass
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _logdir() -> str:
    path = os.path.join("/tmp", f"callhome-bench-{os.getuid()}")
    os.makedirs(path, exist_ok=True)
    return path


def start_server(impl: str, kind: str, count: int, extra: Sequence[str] = ()) -> Child:
    floor = "floor_tls.py" if kind == "tls" else "floor_conch.py"
    script = os.path.join(HERE, "_server.py" if impl == "mux" else floor)
    child = Child([sys.executable, script, "--kind", kind, "--devices", str(count), *extra], f"server-{impl}")
    first = child.expect("port", timeout=300)
    child.port = first["port"]
    child.wiring = first.get("wiring")
    return child


def start_fleet(kind: str, port: int, sources: Sequence[str], count: int, extra: Sequence[str] = ()) -> List[Child]:
    """Split C{count} devices over one process per source address."""
    children = []
    per = [count // len(sources) + (1 if i < count % len(sources) else 0) for i in range(len(sources))]
    first = 0
    for i, (source, n) in enumerate(zip(sources, per)):
        if n == 0:
            continue
        argv = [sys.executable, "-m", "callhome_mux.testing.fleet", "--kind", kind, "--port", str(port),
                "--source", source, "--first", str(first), "--count", str(n), *extra]
        children.append(Child(argv, f"fleet-{i}"))
        first += n
    for child in children:
        child.expect("ready", timeout=300)
    return children


def sources(n: int) -> List[str]:
    """Loopback source addresses 127.0.0.2 ... (never anything outside 127.0.0.0/8)."""
    return [f"127.0.0.{2 + i}" for i in range(n)]


def stop_all(children) -> None:
    for child in children:
        if child is not None:
            child.stop()


# -- server side: the control loop ------------------------------------------------


def serve_control(handlers: Dict[str, Any]) -> None:
    """Read commands on stdin (in the reactor); each handler returns a dict or a Deferred of one."""
    from twisted.internet import defer, protocol, reactor, stdio

    class Control(protocol.Protocol):
        buffer = b""

        def dataReceived(self, data):
            self.buffer += data
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                words = line.decode().split()
                if not words:
                    continue
                if words[0] == "quit":
                    reactor.callLater(0, reactor.stop)
                    continue
                handler = handlers.get(words[0])
                if handler is None:
                    emit(error=f"unknown command {words[0]}")
                    continue
                d = defer.maybeDeferred(handler, *words[1:])
                d.addCallback(lambda result: emit(**result))
                d.addErrback(lambda f: emit(error=f.getTraceback()))

        def connectionLost(self, reason=None):
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(Control())


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


# The garbage collector's time and collections per generation in this
# process, counted from the first process_stats() (every server calls it as
# it starts): the storm prints the share of its CPU window spent collecting.
_GC_SPENT = {"seconds": 0.0, "collections": [0, 0, 0]}


def _track_gc() -> None:
    import gc

    started = [0.0]

    def collecting(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            _GC_SPENT["seconds"] += time.perf_counter() - started[0]
            _GC_SPENT["collections"][info["generation"]] += 1

    gc.callbacks.append(collecting)


def _thread_role(thread) -> str:
    """What a thread of a bench server does, from its name (Twisted names its pool threads)."""
    if thread is threading.main_thread():
        return "reactor"
    if thread.name.startswith("PoolThread-twisted.internet.reactor-"):
        return "reactor pool"
    if thread.name.startswith("PoolThread-"):
        # The only other pool in a bench server: the inventory's adbapi pool.
        return "database"
    return "other"


def thread_cpu() -> Dict[str, float]:
    """
    CPU seconds (user + system) of each live thread of this process, added
    up by role (L{_thread_role}), from each thread's own CPU clock;
    C{"process"} is the whole process, whose excess over the roles is
    threads that have ended.
    """
    roles: Dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            seconds = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, TypeError):
            continue  # ended between enumerate() and now
        role = _thread_role(thread)
        roles[role] = roles.get(role, 0.0) + seconds
        # Context switches (GIL hand-offs show up here), counted as
        # "ROLE switches" in the same table.
        switches = _context_switches(thread.native_id)
        if switches is not None:
            roles[role + " switches"] = roles.get(role + " switches", 0.0) + switches
    roles["process"] = time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)
    return roles


def _context_switches(tid: int) -> Optional[int]:
    """Voluntary + involuntary context switches of thread C{tid} of this process."""
    try:
        with open(f"/proc/self/task/{tid}/status") as handle:
            return sum(int(line.split()[1]) for line in handle
                       if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")))
    except OSError:
        return None


def thread_cpu_per_session(before: Dict[str, float], after: Dict[str, float], sessions: int) -> Dict[str, float]:
    """Microseconds of CPU per session by role between two L{thread_cpu}; C{"ended threads"} the rest."""
    sessions = max(sessions, 1)
    spent = {role: after[role] - before.get(role, 0.0) for role in after}
    total = spent.pop("process", 0.0)
    per_session = {role: value * (1 if role.endswith(" switches") else 1e6) / sessions
                   for role, value in spent.items()}
    ended = total - sum(value for role, value in spent.items() if not role.endswith(" switches"))
    if ended * 1e6 / sessions >= 1:
        per_session["ended threads"] = ended * 1e6 / sessions
    return per_session


def process_stats() -> Dict[str, Any]:
    import resource

    if not _GC_SPENT.get("tracking"):
        _GC_SPENT["tracking"] = True
        _track_gc()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": usage.ru_utime + usage.ru_stime, "rss": rss_bytes(os.getpid()),
            "gc_s": _GC_SPENT["seconds"], "gc_collections": list(_GC_SPENT["collections"]), "threads": thread_cpu()}


def run_reactor(reactor, profile_path=None) -> None:
    """Run the reactor; with C{profile_path}, under cProfile, stats written there."""
    if not profile_path:
        reactor.run()
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    reactor.run()
    profiler.disable()
    profiler.dump_stats(profile_path)


#: --cpu-of: name -> [calls, thread CPU seconds] (bench/storm.py prints them per session).
CPU_OF = {}


def time_calls(targets):
    """Wrap each C{module:Class.method} (or C{module:function}) to add up its thread CPU time (not wall time)."""
    import importlib

    for target in targets:
        module_name, _, attribute = target.partition(":")
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name)
        counter = CPU_OF.setdefault(attribute, [0, 0.0])

        def timed(*args, _original=original, _counter=counter, **kwargs):
            started = time.thread_time()
            try:
                return _original(*args, **kwargs)
            finally:
                _counter[0] += 1
                _counter[1] += time.thread_time() - started

        setattr(owner, name, timed)


def callgrind_switch(command: str) -> None:
    """Switch callgrind's instrumentation of this process (C{--instr=on|off}; run under valgrind --instr-atstart=no)."""
    subprocess.run(["callgrind_control", command, str(os.getpid())], check=True, stdout=subprocess.DEVNULL)


def pipeline_rpcs(session, count: int, depth: int, rpc: bytes = b"<commit/>"):
    """
    Send C{count} RPCs on a NETCONF C{session}, C{depth} of them outstanding
    (each reply sends the next): C{(state, finished)}, where C{state} counts
    C{sent}, C{done} and C{failed} and C{finished} fires once all are answered.
    """
    from twisted.internet import defer

    finished = defer.Deferred()
    state = {"sent": 0, "done": 0, "failed": 0}

    def send():
        state["sent"] += 1
        session.rpc(rpc).addCallbacks(replied, failed)

    def answered(outcome):
        state[outcome] += 1
        if state["sent"] < count:
            send()
        elif state["done"] + state["failed"] == count:
            finished.callback(state)

    def replied(_):
        answered("done")

    def failed(_):
        answered("failed")

    for _ in range(min(depth, count)):
        send()
    return state, finished
