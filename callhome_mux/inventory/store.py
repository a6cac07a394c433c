"""
The inventory's SQLite database, used from Twisted without blocking.

One connection in one pool thread (C{adbapi.ConnectionPool}, cp_min =
cp_max = 1): SQLite allows one writer anyway, and a single connection
never waits on its own lock.  Writes are queued and run in batches, one
transaction per batch; every write's Deferred fires only after the commit
of its batch.  With C{journal_mode=WAL} and C{synchronous=FULL} a commit is
on disk (the WAL is fsynced) before the Deferred fires, so a kill -9 — or
a power cut — loses nothing that was reported as saved.  (NORMAL would be
safe against a process crash but not against a power loss, and the write
rate here is low enough that FULL costs nothing that matters.)
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.python.failure import Failure

from callhome_mux.inventory.codec import device_from_json, device_to_json
from callhome_mux.inventory.identity import PendingDevice
from callhome_mux.inventory.model import Device
from callhome_mux.inventory.schema import migrate
from callhome_mux.inventory.state import DeviceState

Operation = Callable[[sqlite3.Cursor], Any]


def _prepare(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    # Another process (a CLI) holding the lock briefly must not fail us.
    connection.execute("PRAGMA busy_timeout=5000")


@dataclass
class Snapshot:
    """Everything the inventory keeps in memory, as read at start."""

    devices: List[Device] = field(default_factory=list)
    pending: List[PendingDevice] = field(default_factory=list)
    states: Dict[str, DeviceState] = field(default_factory=dict)
    #: (device id, why) of stored devices that could not be read.
    unreadable: List[Tuple[str, str]] = field(default_factory=list)


class InventoryStore:
    """
    Durable storage.  Use L{open}; every method that changes something
    returns a Deferred that fires after the commit.
    """

    def __init__(self, path: str, pool: adbapi.ConnectionPool, history_max_events: int = 1000):
        self.path = path
        self._pool = pool
        self.history_max_events = history_max_events
        self._queue: List[Tuple[Operation, defer.Deferred]] = []
        self._busy = False
        self._closed = False

    @classmethod
    def open(cls, path: str, history_max_events: int = 1000, reactor=None) -> defer.Deferred:
        """A Deferred firing with the store, its schema current."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # The file holds device credentials: create it private before SQLite does.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        kwargs = dict(check_same_thread=False, cp_min=1, cp_max=1, cp_openfun=_prepare, cp_noisy=False)
        if reactor is not None:
            kwargs["cp_reactor"] = reactor
        pool = adbapi.ConnectionPool("sqlite3", path, **kwargs)
        store = cls(path, pool, history_max_events)
        d = pool.runWithConnection(migrate)
        d.addCallback(lambda _: store)

        def failed(reason):
            pool.close()
            return reason

        d.addErrback(failed)
        return d

    def close(self) -> defer.Deferred:
        """Wait for queued writes, then close the connection."""
        self._closed = True
        d = self._drained()
        d.addBoth(lambda result: (self._pool.close(), result)[1])
        return d

    # -- reads ------------------------------------------------------------
    # Reads go through the write queue too: they see every write queued
    # before them (read-your-writes), at no cost on one connection.

    def load(self) -> defer.Deferred:
        return self._submit(_load)

    def history(self, device_id: str, limit: int = 100) -> defer.Deferred:
        """Newest first: a list of dicts C{time}, C{event} and the event's fields."""

        def read(cursor):
            cursor.execute(
                "SELECT time, event, data FROM history WHERE device_id = ? ORDER BY id DESC LIMIT ?", (device_id, limit)
            )
            return [dict(json.loads(data), time=time, event=event) for time, event, data in cursor.fetchall()]

        return self._submit(read)

    def count_history(self) -> defer.Deferred:
        return self._submit(lambda c: c.execute("SELECT count(*) FROM history").fetchone()[0])

    def flush(self) -> defer.Deferred:
        """Fires when everything queued so far is committed."""
        return self._drained()

    # -- writes -----------------------------------------------------------

    def save_device(self, device: Device, now: float) -> defer.Deferred:
        data = device_to_json(device)
        return self._submit(
            lambda c: c.execute(
                "INSERT INTO devices (id, data, updated) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET data = excluded.data, updated = excluded.updated",
                (device.id, data, now),
            )
        )

    def delete_device(self, device_id: str) -> defer.Deferred:
        return self._submit(lambda c: c.execute("DELETE FROM devices WHERE id = ?", (device_id,)))

    def save_pending(self, entry: PendingDevice) -> defer.Deferred:
        row = (
            entry.id, entry.kind, entry.fingerprint, entry.subject, entry.claimed_device_id, entry.address,
            entry.first_seen, entry.last_seen, entry.count, entry.status, int(entry.verified),
        )
        return self._submit(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO pending (id, kind, fingerprint, subject, claimed_device_id, address,"
                " first_seen, last_seen, count, status, verified) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    def save_pending_counts(self, rows: List[Tuple[int, int, float, Optional[str]]]) -> defer.Deferred:
        """Batched attempt counters: (id, count, last_seen, address) rows."""
        return self._submit(
            lambda c: c.executemany(
                "UPDATE pending SET count = ?, last_seen = ?, address = ? WHERE id = ?",
                [(count, last_seen, address, pending_id) for pending_id, count, last_seen, address in rows],
            )
        )

    def delete_pending(self, pending_id: int) -> defer.Deferred:
        return self._submit(lambda c: c.execute("DELETE FROM pending WHERE id = ?", (pending_id,)))

    def approve(self, pending_id: int, device: Device, now: float) -> defer.Deferred:
        """The device and the end of its pending entry, in one transaction."""
        data = device_to_json(device)

        def run(cursor):
            cursor.execute("INSERT OR REPLACE INTO devices (id, data, updated) VALUES (?, ?, ?)", (device.id, data, now))
            cursor.execute("DELETE FROM pending WHERE id = ?", (pending_id,))

        return self._submit(run)

    def save_state(self, state: DeviceState) -> defer.Deferred:
        row = (
            state.device_id, state.state, state.reason, state.since, state.last_seen, state.last_address,
            state.transport, json.dumps(state.details, sort_keys=True, default=str),
        )
        return self._submit(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO device_state (device_id, state, reason, since, last_seen, last_address,"
                " transport, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    def delete_state(self, device_id: str) -> defer.Deferred:
        return self._submit(lambda c: c.execute("DELETE FROM device_state WHERE device_id = ?", (device_id,)))

    def append_history(self, device_id: str, time: float, event: str, fields: Dict[str, Any]) -> defer.Deferred:
        data = json.dumps(fields, sort_keys=True, default=str)
        keep = self.history_max_events

        def run(cursor):
            cursor.execute(
                "INSERT INTO history (device_id, time, event, data) VALUES (?, ?, ?, ?)", (device_id, time, event, data)
            )
            # Count retention at insert time: with the (device_id, id) index
            # this touches only the rows that fall off the end.
            cursor.execute(
                "DELETE FROM history WHERE device_id = ? AND id <= ("
                " SELECT id FROM history WHERE device_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (device_id, device_id, keep),
            )

        return self._submit(run)

    def prune_history(self, older_than: float) -> defer.Deferred:
        """Age retention; fires with the number of rows removed."""
        return self._submit(lambda c: c.execute("DELETE FROM history WHERE time < ?", (older_than,)).rowcount)

    def delete_history(self, device_id: str) -> defer.Deferred:
        return self._submit(lambda c: c.execute("DELETE FROM history WHERE device_id = ?", (device_id,)))

    # -- the write queue --------------------------------------------------

    def _submit(self, operation: Operation) -> defer.Deferred:
        if self._closed:
            return defer.fail(RuntimeError("the inventory store is closed"))
        d: defer.Deferred = defer.Deferred()
        self._queue.append((operation, d))
        self._flush()
        return d

    def _flush(self) -> None:
        if self._busy or not self._queue:
            return
        batch, self._queue = self._queue, []
        self._busy = True

        def run(cursor):
            # One transaction for the batch (one fsync), a savepoint per
            # operation: one bad operation fails alone, the rest commit.
            if not cursor.connection.in_transaction:
                cursor.execute("BEGIN")
            results = []
            for operation, _ in batch:
                cursor.execute("SAVEPOINT operation")
                try:
                    results.append((True, operation(cursor)))
                except Exception:
                    cursor.execute("ROLLBACK TO operation")
                    results.append((False, Failure()))
                cursor.execute("RELEASE operation")
            return results

        def done(results):
            self._busy = False
            for (_, d), (ok, result) in zip(batch, results):
                if ok:
                    d.callback(result)
                else:
                    d.errback(result)
            self._flush()

        def failed(reason):
            # One transaction per batch: nothing of it was committed.
            self._busy = False
            for _, d in batch:
                d.errback(reason)
            self._flush()

        self._pool.runInteraction(run).addCallbacks(done, failed)

    def _drained(self) -> defer.Deferred:
        if not self._busy and not self._queue:
            return defer.succeed(None)
        # A no-op write queued last fires once everything before it is committed.
        d: defer.Deferred = defer.Deferred()
        self._queue.append((lambda cursor: None, d))
        self._flush()
        return d


def _load(cursor: sqlite3.Cursor) -> Snapshot:
    snapshot = Snapshot()
    for device_id, data in cursor.execute("SELECT id, data FROM devices ORDER BY id").fetchall():
        try:
            snapshot.devices.append(device_from_json(data))
        except Exception as error:
            # One unreadable row must not keep every other device out;
            # the row stays for an operator (or a later version) to fix.
            snapshot.unreadable.append((device_id, f"{type(error).__name__}: {error}"))
    rows = cursor.execute(
        "SELECT id, kind, fingerprint, subject, claimed_device_id, address, first_seen, last_seen, count, status,"
        " verified FROM pending ORDER BY id"
    ).fetchall()
    for row in rows:
        snapshot.pending.append(PendingDevice(*row[:10], verified=bool(row[10])))
    rows = cursor.execute(
        "SELECT device_id, state, reason, since, last_seen, last_address, transport, details FROM device_state"
    ).fetchall()
    for device_id, state, reason, since, last_seen, last_address, transport, details in rows:
        snapshot.states[device_id] = DeviceState(
            device_id, state, reason, since, last_seen, last_address, transport, json.loads(details)
        )
    return snapshot
