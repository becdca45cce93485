"""The records replica in SQLite: all SQL on the replica's tables (see ``schema.py``)."""

from __future__ import annotations

import sqlite3


class SqliteReplica:
    """:class:`airtable_cached.store.contract.Replica` on one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
