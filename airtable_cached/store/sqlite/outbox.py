"""The write queue in SQLite: all SQL on ``outbox`` and ``id_map`` (see ``schema.py``).

Modelled on huey's SQLite storage: order is in the schema (AUTOINCREMENT ``seq``), a flusher claims
under ``BEGIN IMMEDIATE``, an acknowledged write is deleted, a failure counts attempts.
"""

from __future__ import annotations

import sqlite3


class SqliteOutbox:
    """:class:`airtable_cached.store.contract.Outbox` on one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
