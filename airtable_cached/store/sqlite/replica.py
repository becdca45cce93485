"""The records replica in SQLite: all SQL on the replica's tables (see ``schema.py``).

Methods are grouped by the table they own; a statement that reads several tables sits with the one
it is about.
"""

from __future__ import annotations

import sqlite3


class SqliteReplica:
    """:class:`airtable_cached.store.contract.Replica` on one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    # -- tables, table_aliases, schema ---------------------------------------------------------

    # -- records -------------------------------------------------------------------------------

    # -- views, view_members -------------------------------------------------------------------

    # -- indexes and full-text search ----------------------------------------------------------

    # -- conflicts -----------------------------------------------------------------------------

    # -- refresh state, change feeds (webhooks), token grants ----------------------------------

    # -- sync_log and statistics ---------------------------------------------------------------

    # -- whole-file checks (``check``) -----------------------------------------------------------
