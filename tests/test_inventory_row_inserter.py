"""The store's multi-row INSERT statements (a batch's rows in few statements)."""

from __future__ import annotations

import sqlite3

from twisted.trial import unittest

from callhome_mux.inventory.store import ROWS_PER_STATEMENT, RowInserter


class RowInserterTests(unittest.TestCase):
    def setUp(self):
        self.connection = sqlite3.connect(":memory:")
        self.connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT NOT NULL, b, UNIQUE (a))")
        self.statements = []
        self.connection.set_trace_callback(self.statements.append)
        self.inserter = RowInserter("t (a, b)", 2, rows_per_statement=4)

    def insert(self, rows):
        flat = [value for row in rows for value in row]
        self.inserter.insert(self.connection.cursor(), flat)
        return self.connection.execute("SELECT a, b FROM t ORDER BY id").fetchall()

    def test_every_row_in_order(self):
        for count in (0, 1, 3, 4, 5, 8, 11):
            self.connection.execute("DELETE FROM t")
            rows = [(f"r{n}", n if n % 2 else None) for n in range(count)]
            self.assertEqual(self.insert(rows), rows, count)

    def test_full_statements_then_one_row_per_execution(self):
        self.insert([(f"r{n}", n) for n in range(11)])
        executed = [s for s in self.statements if s.startswith("INSERT")]
        # Two statements of four rows, then three of one row: not eleven.
        self.assertEqual([s.count("VALUES (") + s.count("), (") for s in executed], [4, 4, 1, 1, 1])

    def test_tail_applies_to_every_row(self):
        inserter = RowInserter("t (a, b)", 2, " ON CONFLICT (a) DO UPDATE SET b = excluded.b", rows_per_statement=2)
        inserter.insert(self.connection.cursor(), ["x", 1, "y", 2, "z", 3])
        inserter.insert(self.connection.cursor(), ["y", 20, "x", 10, "z", 30])
        self.assertEqual(self.connection.execute("SELECT a, b FROM t ORDER BY id").fetchall(),
                         [("x", 10), ("y", 20), ("z", 30)])

    def test_a_bad_row_fails_the_statement(self):
        with self.assertRaises(sqlite3.IntegrityError):
            self.insert([("r0", 0), (None, 1)])

    def test_default_statement_within_old_sqlite_parameter_limit(self):
        # SQLite before 3.32 allowed 999 parameters; the widest table has 9 columns.
        self.assertLessEqual(ROWS_PER_STATEMENT * 9, 999)
