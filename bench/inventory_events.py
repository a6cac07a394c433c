"""
The inventory's CPU per SSH call home, in-process.

Feeds an L{EventBus} the exact events the server emits for one NETCONF
call home over SSH during C{bench/storm.py} (connection.accepted ...
ssh.hostkey.accepted, ssh.auth.succeeded ... session.up, with the session
registered in a real L{SessionRegistry}), for C{--sessions} devices that
each call home once, with the inventory attached the way
C{callhome_mux/service.py} wires it (its own database in a temporary
directory, its write-behind buffer flushed every C{--batch} sessions as
the 0.5 s timer would in a storm).  C{--close} adds the end of each
session (netconf.session.lost, session.lost ... connection.closed).

Printed, per session, thread CPU (C{time.thread_time}), min over
C{--repeat} runs, each run on a fresh database:

* C{observer}: the emitting loop with the inventory attached, minus the
  same loop without it (the bus and registry cost alone);
* C{sqlite}: the inventory's database thread (every batch: encoding, the
  SQL, the commit);
* C{with} / C{without}: the two loops themselves.

The garbage collector is off while the loops run: its passes depend on
everything alive in the process, not on what is measured (the server
tunes them, see C{callhome_mux.gc_tuning}).

    python bench/inventory_events.py [--sessions 3000] [--repeat 5] [--batch 250] [--close] [--storm]

Instructions instead of CPU time (the same counts whatever the machine's
load), one part at a time::

    valgrind --tool=callgrind --instr-atstart=no python bench/inventory_events.py \\
        --sessions 1000 --storm --callgrind database      # or: observer [--without]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import callgrind_switch  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.logger import Logger, LogPublisher  # noqa: E402

from callhome_mux.events import EventBus  # noqa: E402
from callhome_mux.frozen import FrozenDict  # noqa: E402
from callhome_mux.inventory.inventory import Inventory  # noqa: E402
from callhome_mux.inventory.model import Credentials, Device, DeviceDirectory, ssh_fingerprint  # noqa: E402
from callhome_mux.inventory.settings import InventorySettings  # noqa: E402
from callhome_mux.sessions import SessionRegistry  # noqa: E402
from callhome_mux.testing.fleet import default_capabilities  # noqa: E402

LISTENER = "tcp:0:interface=127.0.0.1:backlog=4096"
#: One capability tuple shared by every session, as the hello templates share it.
CAPABILITIES = tuple(sorted(default_capabilities(64)))
#: One dict of negotiated algorithms shared by every session, as the SSH
#: layer shares one (frozen) per combination (callhome_mux/ssh/client.py negotiated()).
ALGORITHMS = FrozenDict({"kex": "curve25519-sha256", "host_key": "ssh-ed25519", "cipher_out": "aes256-ctr",
                         "cipher_in": "aes256-ctr", "mac_out": "hmac-sha2-512", "mac_in": "hmac-sha2-512",
                         "server_version": "SSH-2.0-Twisted_26.10.0"})


class Session:
    """A registered NETCONF session's face to the registry."""

    def __init__(self, details):
        self.device_id = details["device_id"]
        self.details = details
        self._lost = defer.Deferred()

    def whenLost(self):
        return self._lost

    def close(self, reason="closed"):
        self.lose(reason)

    def lose(self, reason):
        if not self._lost.called:
            self._lost.errback(ConnectionError(reason))


def device_id(index: int) -> str:
    return f"fleet-{index:05d}"


def fingerprint(index: int) -> str:
    return ssh_fingerprint(b"device-%d" % index)


def session_script(index: int):
    """(event, fields) of one call home up to session.up, then the session's details."""
    peer = f"127.0.0.2:{20000 + index % 40000}"
    cid = f"c{index + 1}"
    did = device_id(index)
    fp = fingerprint(index)
    up = [
        ("connection.accepted", dict(connection_id=cid, peer=peer, listener=LISTENER)),
        ("connection.classified", dict(connection_id=cid, peer=peer, kind="ssh", bytes=561, ms=1.2,
                                       reason="SSH identification string")),
        ("ssh.connection.started", dict(connection_id=cid, peer=peer)),
        ("ssh.hostkey.accepted", dict(connection_id=cid, peer=peer, device_id=did, source="directory",
                                      fingerprint=fp, algorithm="ssh-ed25519",
                                      host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINjGODubMo3WsxZor0ftXRofv6"
                                               "LDt9iKCRdeP+LhXSHM")),
        ("ssh.auth.succeeded", dict(connection_id=cid, peer=peer, device_id=did, method="password",
                                    username="netconf")),
        ("ssh.subsystem.started", dict(connection_id=cid, peer=peer, device_id=did, subsystem="netconf")),
        ("netconf.hello.done", dict(connection_id=cid, device_id=did, peer=peer, session_id=1, base="1.1",
                                    capability_count=len(CAPABILITIES))),
    ]
    details = {
        "transport": "netconf-ssh", "peer": peer, "connection_id": cid, "listener": LISTENER, "device_id": did,
        "host_key_fingerprint": fp, "host_key_algorithm": "ssh-ed25519",
        "algorithms": ALGORITHMS,
        "username": "netconf", "auth_method": "password", "session_id": 1, "netconf_base": "1.1",
        "capability_count": len(CAPABILITIES), "capabilities": CAPABILITIES,
    }
    reason = "connection lost: Connection to the other side was lost in a non-clean fashion."
    # session.lost comes from the registry when the session is lost.
    down_before = [("netconf.session.lost", dict(connection_id=cid, device_id=did, peer=peer, reason=reason))]
    down_after = [
        ("ssh.connection.closed", dict(connection_id=cid, peer=peer, device_id=did, stage="session", reason=reason)),
        ("connection.closed", dict(connection_id=cid, peer=peer, kind="ssh", seconds=1.02)),
    ]
    return up, details, (down_before, reason, down_after)


class Instruments:
    """
    Where the measured parts start and stop: with C{--callgrind PART},
    callgrind's instrumentation is switched on for that part only
    (C{observer}: the emitting loops; C{database}: every interaction in
    the store's pool thread), so the instructions it reports are that
    part's.
    """

    def __init__(self, part):
        self.part = part

    def switch(self, part, on):
        if part == self.part:
            callgrind_switch("--instr=on" if on else "--instr=off")


class SQLiteTimer:
    """Adds up the thread CPU of every interaction (SQL, commit) in the store's pool thread."""

    def __init__(self, pool, instruments):
        self.seconds = 0.0
        original = pool._runInteraction

        def timed(*args, **kwargs):
            instruments.switch("database", True)
            start = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.thread_time() - start
                instruments.switch("database", False)

        pool._runInteraction = timed


@defer.inlineCallbacks
def one_run(count: int, batch: int, close: bool, attach: bool, storm: bool = False, instruments=Instruments(None)):
    clock = task.Clock()
    clock.advance(1_800_000_000)
    # No log observer, as in the storm's server (beginLoggingTo([])).
    bus = EventBus(clock=clock, log=Logger(namespace="callhome_mux", observer=LogPublisher()))
    registry = SessionRegistry(bus)
    devices = [
        Device(id=device_id(i), ssh_host_keys=(fingerprint(i),), credentials=Credentials("netconf", "secret"))
        for i in range(count)
    ]
    state_dir = tempfile.mkdtemp(prefix="inventory-events-")
    try:
        inventory = yield Inventory.open(
            InventorySettings(), state_dir, bus, DeviceDirectory(), clock, devices, observe=attach
        )
        if attach:
            inventory.watch_sessions(registry)
        sqlite = SQLiteTimer(inventory.store._pool, instruments)
        yield inventory.flush()
        sqlite.seconds = 0.0
        scripts = [session_script(i) for i in range(count)]
        emit = bus.emit
        cpu = 0.0
        gc.collect()
        # With storm: a session's first events (to ssh.auth.succeeded) in
        # one batch and the rest in the next, as in a storm whose
        # handshakes outlast the write-behind delay: two state rows per
        # session (authenticating, then connected) instead of one.
        late = []
        for first in range(0, count + (batch if storm else 0), batch):
            chunk = scripts[first:first + batch]
            sessions = []
            # The collector's passes depend on everything alive, not on
            # what is measured (the server tunes them, callhome_mux.gc_tuning).
            gc.disable()
            instruments.switch("observer", True)
            start = time.thread_time()
            if storm:
                for up, _, _ in chunk:
                    for name, fields in up[:5]:
                        emit(name, **fields)
                chunk, late = late, chunk
            for up, details, _ in chunk:
                for name, fields in (up[5:] if storm else up):
                    emit(name, **fields)
                session = Session(details)
                registry.register(session)
                sessions.append(session)
            if close:
                for session, (_, _, (before, reason, after)) in zip(sessions, chunk):
                    for name, fields in before:
                        emit(name, **fields)
                    session.lose(reason)
                    for name, fields in after:
                        emit(name, **fields)
            cpu += time.thread_time() - start
            instruments.switch("observer", False)
            gc.enable()
            clock.advance(0.5)  # the write-behind timer
            yield inventory.store.flush()
        yield inventory.close()
        return cpu / count, sqlite.seconds / count
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


@defer.inlineCallbacks
def main(reactor, argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=250, help="sessions between two flushes of the write buffer")
    parser.add_argument("--close", action="store_true", help="end each session too")
    parser.add_argument("--storm", action="store_true",
                        help="each session's events split over two batches, as in bench/storm.py (two state rows)")
    parser.add_argument("--callgrind", choices=("observer", "database"),
                        help="under valgrind --tool=callgrind --instr-atstart=no, instrument only this part;"
                             " with observer, --without runs the loops without the inventory")
    parser.add_argument("--without", action="store_true", help="with --callgrind observer: the inventory detached")
    args = parser.parse_args(argv)
    if args.callgrind:
        # One run of the part asked for; callgrind prints its instructions.
        instruments = Instruments(args.callgrind)
        yield one_run(args.sessions, args.batch, args.close, attach=not args.without, storm=args.storm,
                      instruments=instruments)
        print(f"instrumented: {args.callgrind}{' without the inventory' if args.without else ''},"
              f" {args.sessions} sessions: divide callgrind's 'Collected' by them")
        return
    with_ = []
    without = []
    sqlite = []
    for _ in range(args.repeat):
        cpu, _ = yield one_run(args.sessions, args.batch, args.close, attach=False, storm=args.storm)
        without.append(cpu)
        cpu, db = yield one_run(args.sessions, args.batch, args.close, attach=True, storm=args.storm)
        with_.append(cpu)
        sqlite.append(db)
    us = 1e6
    print(f"inventory per SSH call home ({args.sessions} sessions, batches of {args.batch},"
          f" {'with' if args.close else 'without'} the close; thread CPU, min of {args.repeat}):")
    print(f"  observer {(min(with_) - min(without)) * us:6.1f} us"
          f"   (with {min(with_) * us:.1f}, without {min(without) * us:.1f})")
    print(f"  sqlite   {min(sqlite) * us:6.1f} us   (runs: {', '.join(f'{s * us:.1f}' for s in sqlite)})")


if __name__ == "__main__":
    task.react(main, (sys.argv[1:],))
