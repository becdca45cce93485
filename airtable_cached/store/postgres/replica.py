"""The records replica in PostgreSQL: all SQL on the replica's tables (see ``schema.py``).

Its methods are those of :class:`airtable_cached.store.contract.Replica`, filled in as the contract
gets them (each with the SQLite store's behaviour, ``airtable_cached/store/sqlite/replica.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airtable_cached.store.postgres.runner import Runner


class PostgresReplica:
    """:class:`airtable_cached.store.contract.Replica` on a PostgreSQL unit (or pooled calls)."""

    def __init__(self, runner: Runner):
        self.runner = runner

    # -- tables, table_aliases, schema ---------------------------------------------------------

    # -- records -------------------------------------------------------------------------------

    # -- views, view_members -------------------------------------------------------------------

    # -- indexes and full-text search ----------------------------------------------------------

    # -- conflicts -----------------------------------------------------------------------------

    # -- refresh state, change feeds (webhooks), token grants ----------------------------------

    # -- sync_log and statistics ---------------------------------------------------------------
