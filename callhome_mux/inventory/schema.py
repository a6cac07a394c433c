"""
The inventory database schema and its migrations.

C{MIGRATIONS[n]} takes a database from version C{n} to C{n + 1}; a new
database runs them all.  A released migration is never edited: a change is
a new entry at the end, so every old file upgrades along the same path.
Each migration runs in one transaction with the version bump, so a crash
mid-migration leaves the previous version intact.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Callable, List, Tuple, Union

#: A migration step: an SQL statement, or a function of the connection
#: (for what SQL alone cannot do), run inside the migration's transaction.
Step = Union[str, Callable[[sqlite3.Connection], None]]


def _v3_capability_sets(connection: sqlite3.Connection) -> None:
    """
    Version 3: each state's capability list goes to C{capability_sets}
    (once per distinct list, under the SHA-256 of its JSON text) and the
    state row names it.  Self-contained on purpose: a released migration
    must not change when the code it once called does.
    """
    rows = connection.execute("SELECT device_id, details FROM device_state").fetchall()
    for device_id, text in rows:
        try:
            details = json.loads(text)
        except ValueError:
            continue  # left as it is: the loader reads what it can
        if not isinstance(details, dict) or not isinstance(details.get("capabilities"), list):
            continue
        capabilities = json.dumps(details.pop("capabilities"), sort_keys=True, default=str)
        digest = hashlib.sha256(capabilities.encode("utf-8")).hexdigest()
        connection.execute(
            "INSERT OR IGNORE INTO capability_sets (digest, capabilities) VALUES (?, ?)", (digest, capabilities)
        )
        connection.execute(
            "UPDATE device_state SET details = ?, capability_set = ? WHERE device_id = ?",
            (json.dumps(details, sort_keys=True, default=str), digest, device_id),
        )


MIGRATIONS: List[Tuple[Step, ...]] = [
    # 0 -> 1: devices added at runtime, pending identities, per-device history.
    (
        "CREATE TABLE schema_version (version INTEGER NOT NULL)",
        "INSERT INTO schema_version (version) VALUES (0)",
        "CREATE TABLE devices (id TEXT PRIMARY KEY, data TEXT NOT NULL, updated REAL NOT NULL)",
        "CREATE TABLE pending ("
        " id INTEGER PRIMARY KEY, kind TEXT NOT NULL, fingerprint TEXT NOT NULL,"
        " subject TEXT, claimed_device_id TEXT, address TEXT,"
        " first_seen REAL NOT NULL, last_seen REAL NOT NULL, count INTEGER NOT NULL,"
        " status TEXT NOT NULL, UNIQUE (kind, fingerprint))",
        "CREATE TABLE history ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL,"
        " time REAL NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL)",
    ),
    # 1 -> 2: device state survives restarts; history pruning uses indexes
    # instead of scanning; pending entries say whether the handshake proved
    # the identity (rows from version 1 were all proven ones).
    (
        "CREATE TABLE device_state ("
        " device_id TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT, since REAL,"
        " last_seen REAL, last_address TEXT, transport TEXT, details TEXT NOT NULL DEFAULT '{}')",
        "CREATE INDEX history_by_device ON history (device_id, id)",
        "CREATE INDEX history_by_time ON history (time)",
        "ALTER TABLE pending ADD COLUMN verified INTEGER NOT NULL DEFAULT 1",
    ),
    # 2 -> 3: capability lists stored once and named by the state rows
    # (a state write no longer rewrites ~3.4 KB); history without
    # AUTOINCREMENT (nothing needs ids never reused: rows are ordered by id
    # within a device, and a new row's id is still above every row in the
    # table; AUTOINCREMENT cost an sqlite_sequence update per insert).
    # The history is copied with its ids.
    (
        "CREATE TABLE capability_sets (digest TEXT PRIMARY KEY, capabilities TEXT NOT NULL)",
        "ALTER TABLE device_state ADD COLUMN capability_set TEXT",
        _v3_capability_sets,
        "CREATE TABLE history_v3 ("
        " id INTEGER PRIMARY KEY, device_id TEXT NOT NULL,"
        " time REAL NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL)",
        "INSERT INTO history_v3 (id, device_id, time, event, data) SELECT id, device_id, time, event, data FROM history",
        "DROP TABLE history",
        "DELETE FROM sqlite_sequence WHERE name = 'history'",
        "ALTER TABLE history_v3 RENAME TO history",
        "CREATE INDEX history_by_device ON history (device_id, id)",
        "CREATE INDEX history_by_time ON history (time)",
    ),
    # 3 -> 4: negotiated algorithms stored once too (devices of one fleet
    # negotiate the same; a call home no longer encodes and writes them).
    # Existing states keep theirs in their details, where the loader reads
    # them as before, until their next write.
    (
        "CREATE TABLE algorithm_sets (digest TEXT PRIMARY KEY, algorithms TEXT NOT NULL)",
        "ALTER TABLE device_state ADD COLUMN algorithm_set TEXT",
    ),
]

CURRENT_VERSION = len(MIGRATIONS)


class SchemaError(Exception):
    """The database cannot be used by this version of callhome-mux."""


def schema_version(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if row is None:
        return 0
    return connection.execute("SELECT version FROM schema_version").fetchone()[0]


def migrate(connection: sqlite3.Connection, target: int = CURRENT_VERSION) -> Tuple[int, int]:
    """Bring the database to C{target}; return (version before, version after)."""
    before = schema_version(connection)
    if before > CURRENT_VERSION:
        raise SchemaError(
            f"database schema version {before} is newer than this callhome-mux understands ({CURRENT_VERSION})"
        )
    for version in range(before, target):
        # BEGIN IMMEDIATE: take the write lock up front, so the check of
        # the version and the migration are one atomic step.
        connection.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(connection) != version:
                raise SchemaError("schema changed under us during migration")
            for step in MIGRATIONS[version]:
                if callable(step):
                    step(connection)
                else:
                    connection.execute(step)
            connection.execute("UPDATE schema_version SET version = ?", (version + 1,))
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
    return before, max(before, target)
