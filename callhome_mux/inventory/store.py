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

from callhome_mux.inventory import detail_sets
from callhome_mux.inventory.detail_sets import DetailSets
from callhome_mux.inventory.codec import device_from_json, device_to_json
from callhome_mux.inventory.identity import PendingDevice
from callhome_mux.inventory.jsontext import encode as _encode, encode_row as _encode_row
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

    def __init__(self, path: str, pool: adbapi.ConnectionPool, history_max_events: int = 1000, clock=None,
                 write_behind: float = 0.0):
        self.path = path
        self._pool = pool
        self.history_max_events = history_max_events
        self._queue: List[Tuple[Operation, defer.Deferred]] = []
        self._busy = False
        self._closed = False
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        self.write_behind = write_behind
        #: Called with a Failure when buffered rows could not be written
        #: (nobody waits on them; the inventory reports it as an event).
        self.on_buffered_failure: Optional[Callable[[Failure], None]] = None
        # Rows waiting for the next batch: the latest state per device, and
        # history rows in order.  See buffer_state.
        self._buffered_states: Dict[str, DeviceState] = {}
        self._buffered_history: List[Tuple[str, float, str, Any]] = []
        self._buffered_waiters: List[defer.Deferred] = []
        self._buffer_due = False
        self._buffer_timer = None
        # Count retention: rows added per device since its last trim.
        self._added_since_trim: Dict[str, int] = {}
        # Trim a device's rows once it added a tenth of the limit (see buffer_history).
        self._trim_every = max(1, history_max_events // 10)
        self._to_trim: set = set()
        # Used in the database thread only (batches never overlap).
        self._detail_sets = DetailSets()

    @classmethod
    def open(cls, path: str, history_max_events: int = 1000, reactor=None, clock=None,
             write_behind: float = 0.0) -> defer.Deferred:
        """
        A Deferred firing with the store, its schema current.

        C{write_behind}: seconds that state and history rows reported by
        events (L{buffer_state}, L{buffer_history}) may wait to be written
        together (see L{buffer_state}); C{clock} times that wait.
        """
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # The file holds device credentials: create it private before SQLite does.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        kwargs = dict(check_same_thread=False, cp_min=1, cp_max=1, cp_openfun=_prepare, cp_noisy=False)
        if reactor is not None:
            kwargs["cp_reactor"] = reactor
        pool = adbapi.ConnectionPool("sqlite3", path, **kwargs)
        store = cls(path, pool, history_max_events, clock=clock if clock is not None else reactor, write_behind=write_behind)
        d = pool.runWithConnection(migrate)
        d.addCallback(lambda _: store)

        def failed(reason):
            pool.close()
            return reason

        d.addErrback(failed)
        return d

    def close(self) -> defer.Deferred:
        """Wait for queued (and buffered) writes, then close the connection."""
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

        # The table may hold a few rows past the count retention until the
        # next trim (see buffer_history); never show them.
        limit = min(limit, self.history_max_events)

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
        """Write C{state} now; fires after the commit."""
        if self._closed:
            return defer.fail(RuntimeError("the inventory store is closed"))
        self.buffer_state(state)
        return self._write_buffer_now()

    def buffer_state(self, state: DeviceState) -> None:
        """
        Write C{state} with the next batch, within C{write_behind} seconds.

        Group commit for what events report: a device's state changes a few
        times per call home, and a storm of call homes would otherwise cost
        a transaction (an fsync) and a JSON encoding per change.  Only the
        latest state of a device is written; nothing waits on it, and a
        failure goes to C{on_buffered_failure}.  Devices, pending entries
        and everything the API changes are never buffered like this.
        """
        if self._closed:
            return
        self._buffered_states[state.device_id] = state
        if self._buffer_timer is None and not self._buffer_due:
            self._buffer_soon()

    def delete_state(self, device_id: str) -> defer.Deferred:
        self._buffered_states.pop(device_id, None)
        return self._submit(lambda c: c.execute("DELETE FROM device_state WHERE device_id = ?", (device_id,)))

    def append_history(self, device_id: str, time: float, event: str, fields: Dict[str, Any]) -> defer.Deferred:
        """Append one history row now; fires after the commit."""
        if self._closed:
            return defer.fail(RuntimeError("the inventory store is closed"))
        self.buffer_history(device_id, time, event, fields)
        return self._write_buffer_now()

    def buffer_history(self, device_id: str, time: float, event: str, fields: Dict[str, Any]) -> None:
        """
        Append one history row with the next batch (see L{buffer_state}).

        C{fields} must be JSON-able and not changed afterwards: it is
        encoded when the batch is written.  Count retention: a device's
        rows beyond C{history_max_events} are deleted once it has added a
        tenth of that many since its last trim (one DELETE per many rows,
        not one per row); L{history} never shows more than the limit.
        """
        if self._closed:
            return
        self._buffered_history.append((device_id, time, event, fields))
        added = self._added_since_trim.get(device_id, 0) + 1
        if added >= self._trim_every:
            self._to_trim.add(device_id)
            added = 0
        self._added_since_trim[device_id] = added
        if self._buffer_timer is None and not self._buffer_due:
            self._buffer_soon()

    def prune_history(self, older_than: float) -> defer.Deferred:
        """Age retention; fires with the number of rows removed."""
        return self._submit(lambda c: c.execute("DELETE FROM history WHERE time < ?", (older_than,)).rowcount)

    def collect_capability_sets(self) -> defer.Deferred:
        """Delete the capability sets no state names any more; fires with how many."""
        return self._submit(self._detail_sets.capabilities.collect)

    def collect_algorithm_sets(self) -> defer.Deferred:
        """Delete the algorithm sets no state names any more; fires with how many."""
        return self._submit(self._detail_sets.algorithms.collect)

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

    def _has_buffered(self) -> bool:
        return bool(self._buffered_states or self._buffered_history)

    def _buffer_soon(self) -> None:
        if self._buffer_due or self._buffer_timer is not None:
            return
        if self.write_behind <= 0:
            self._buffer_due = True
            self._flush()
        else:
            self._buffer_timer = self._clock.callLater(self.write_behind, self._buffer_timer_fired)

    def _buffer_timer_fired(self) -> None:
        self._buffer_timer = None
        self._buffer_due = True
        self._flush()

    def _write_buffer_now(self) -> defer.Deferred:
        if self._closed:
            return defer.fail(RuntimeError("the inventory store is closed"))
        d: defer.Deferred = defer.Deferred()
        self._buffered_waiters.append(d)
        self._buffer_due = True
        self._flush()
        return d

    def _take_buffer(self):
        """The buffered rows (and who waits on them) for the batch about to run."""
        if self._buffer_timer is not None:
            self._buffer_timer.cancel()
            self._buffer_timer = None
        self._buffer_due = False
        taken = (list(self._buffered_states.values()), self._buffered_history, sorted(self._to_trim),
                 self._buffered_waiters)
        self._buffered_states, self._buffered_history, self._to_trim, self._buffered_waiters = {}, [], set(), []
        return taken

    def _flush(self) -> None:
        if self._busy:
            return
        # Buffered rows ride with any batch; alone, they wait until due.
        buffered = None
        if self._queue or self._buffer_due:
            if self._has_buffered() or self._buffered_waiters:
                buffered = self._take_buffer()
            else:
                self._buffer_due = False
        if not self._queue and buffered is None:
            return
        batch, self._queue = self._queue, []
        self._busy = True
        keep = self.history_max_events
        sets = self._detail_sets

        def run(cursor):
            # One transaction for the batch (one fsync), a savepoint per
            # operation: one bad operation fails alone, the rest commit.
            if not cursor.connection.in_transaction:
                cursor.execute("BEGIN")
            buffered_result = None
            if buffered is not None:
                cursor.execute("SAVEPOINT buffered")
                try:
                    _write_buffered(cursor, sets, buffered[0], buffered[1], buffered[2], keep)
                except Exception:
                    cursor.execute("ROLLBACK TO buffered")
                    sets.forget_written()
                    buffered_result = Failure()
                cursor.execute("RELEASE buffered")
            results = []
            for operation, _ in batch:
                cursor.execute("SAVEPOINT operation")
                try:
                    results.append((True, operation(cursor)))
                except Exception:
                    cursor.execute("ROLLBACK TO operation")
                    results.append((False, Failure()))
                cursor.execute("RELEASE operation")
            return buffered_result, results

        def done(outcome):
            buffered_result, results = outcome
            self._busy = False
            if buffered is not None:
                self._buffered_done(buffered[3], buffered_result)
            for (_, d), (ok, result) in zip(batch, results):
                if ok:
                    d.callback(result)
                else:
                    d.errback(result)
            self._flush()

        def failed(reason):
            # One transaction per batch: nothing of it was committed.
            self._busy = False
            sets.forget_written()
            if buffered is not None:
                self._buffered_done(buffered[3], reason)
            for _, d in batch:
                d.errback(reason)
            self._flush()

        self._pool.runInteraction(run).addCallbacks(done, failed)

    def _buffered_done(self, waiters: List[defer.Deferred], failure: Optional[Failure]) -> None:
        if failure is not None and self.on_buffered_failure is not None:
            self.on_buffered_failure(failure)
        for waiter in waiters:
            if failure is None:
                waiter.callback(None)
            else:
                waiter.errback(failure)

    def _drained(self) -> defer.Deferred:
        if not self._busy and not self._queue and not self._has_buffered():
            return defer.succeed(None)
        # A no-op write queued last fires once everything before it is
        # committed; buffered rows are written with it.
        d: defer.Deferred = defer.Deferred()
        self._queue.append((lambda cursor: None, d))
        self._buffer_due = True
        self._flush()
        return d




#: Rows per INSERT statement of a batch.  One statement of many rows
#: instead of one execution per row (what C{executemany} does: bind,
#: step, reset and halt for every row) writes a storm's history rows with
#: ~20% fewer instructions; 32 rows of the widest table (10 columns) stay
#: far below any SQLite build's limit on parameters (999 before 3.32).
ROWS_PER_STATEMENT = 32

_UPSERT_STATE = (
    " ON CONFLICT (device_id) DO UPDATE SET"
    " state = excluded.state, reason = excluded.reason, since = excluded.since,"
    " last_seen = excluded.last_seen, last_address = excluded.last_address, transport = excluded.transport,"
    " details = excluded.details, capability_set = excluded.capability_set, algorithm_set = excluded.algorithm_set"
)


class RowInserter:
    """
    C{INSERT INTO table (columns) VALUES (...), (...), ... [tail]}, for
    many rows: full statements of L{ROWS_PER_STATEMENT} rows, the rest one
    row per execution.  Two statement texts in all, so both stay in the
    connection's statement cache.  Rows are inserted in the order given.
    """

    def __init__(self, table_and_columns: str, width: int, tail: str = "", rows_per_statement: int = ROWS_PER_STATEMENT,
                 placeholders: Optional[Tuple[str, ...]] = None):
        """C{placeholders}: the SQL of each column's value (default C{?} for every one)."""
        row = "(" + ", ".join(placeholders or ("?",) * width) + ")"
        head = f"INSERT INTO {table_and_columns} VALUES "
        self.width = width
        self.rows_per_statement = rows_per_statement
        self.one = head + row + tail
        self.many = head + ", ".join([row] * rows_per_statement) + tail

    def insert(self, cursor: sqlite3.Cursor, flat: List[Any]) -> None:
        """Insert the rows whose values are C{flat}, one row after the other (C{width} values each)."""
        width = self.width
        step = self.rows_per_statement * width
        full = len(flat) // step * step
        many = self.many
        for start in range(0, full, step):
            cursor.execute(many, flat[start:start + step])
        if full < len(flat):
            cursor.executemany(self.one, [flat[start:start + width] for start in range(full, len(flat), width)])


# An upsert updates the row in place: ~3x cheaper than INSERT OR REPLACE
# (a delete and an insert) for a device seen before.
#: The text columns of a state row that may be NULL are bound as 0 for
#: None and made NULL again by C{nullif(?, 0)}: Python's sqlite3 sends
#: None through its adapter look-up (a failed one, with an exception
#: formatted and cleared: ~0.45 us per value, against ~0.15 for a number),
#: a storm's state rows hold two or three each.  Exact: those columns hold
#: only text or None, and SQLite never finds a text equal to an integer.
_NULLABLE = "nullif(?, 0)"
_STATES = RowInserter(
    "device_state (device_id, state, reason, since, last_seen, last_address, transport, details, capability_set,"
    " algorithm_set)",
    10, _UPSERT_STATE,
    placeholders=("?", "?", _NULLABLE, "?", "?", _NULLABLE, _NULLABLE, "?", _NULLABLE, _NULLABLE),
)
_HISTORY = RowInserter("history (device_id, time, event, data)", 4)


def _write_buffered(cursor: sqlite3.Cursor, sets: DetailSets, states: List[DeviceState], history,
                    trim: List[str], keep: int) -> None:
    if states:
        flat: List[Any] = []
        capability_lists: Dict[str, str] = {}
        algorithm_sets: Dict[str, str] = {}
        split = sets.split
        for s in states:
            details, capability_set, algorithm_set = split(s.details, capability_lists, algorithm_sets)
            reason, address, transport = s.reason, s.last_address, s.transport
            flat += (s.device_id, s.state, 0 if reason is None else reason, s.since, s.last_seen,
                     0 if address is None else address, 0 if transport is None else transport, details,
                     0 if capability_set is None else capability_set, 0 if algorithm_set is None else algorithm_set)
        # The sets first: a state row never names a set that is not there.
        if capability_lists:
            sets.capabilities.write(cursor, capability_lists)
        if algorithm_sets:
            sets.algorithms.write(cursor, algorithm_sets)
        _STATES.insert(cursor, flat)
    if history:
        encode = _encode_row
        flat = []
        for device_id, time, event, fields in history:
            flat += (device_id, time, event, encode(fields))
        _HISTORY.insert(cursor, flat)
    for device_id in trim:
        # With the (device_id, id) index this touches only the rows that
        # fall off the end.
        cursor.execute(
            "DELETE FROM history WHERE device_id = ? AND id <= ("
            " SELECT id FROM history WHERE device_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (device_id, device_id, keep),
        )


def details_json(details: Dict[str, Any]) -> str:
    """C{details} as JSON, whole (as schema version 2 stored it; later versions keep some values apart)."""
    return _encode(details)


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
    sets = DetailSets()
    capability_lists = sets.capabilities.read_all(cursor)
    algorithm_sets = sets.algorithms.read_all(cursor)
    rows = cursor.execute(
        "SELECT device_id, state, reason, since, last_seen, last_address, transport, details, capability_set,"
        " algorithm_set FROM device_state"
    ).fetchall()
    join = detail_sets.join
    for device_id, state, reason, since, last_seen, last_address, transport, details, capability_set, algorithm_set in rows:
        snapshot.states[device_id] = DeviceState(
            device_id, state, reason, since, last_seen, last_address, transport,
            join(
                json.loads(details),
                capability_lists.get(capability_set) if capability_set is not None else None,
                algorithm_sets.get(algorithm_set) if algorithm_set is not None else None,
            ),
        )
    return snapshot
