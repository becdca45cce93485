"""The write queue in PostgreSQL: all SQL on ``outbox`` and ``id_map`` (see ``schema.py``).

Its methods are those of :class:`airtable_cached.store.contract.Outbox`, filled in as the contract
gets them (each with the SQLite store's behaviour, ``airtable_cached/store/sqlite/outbox.py``);
order is the identity ``seq``, and a flusher claims with ``SELECT ... FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airtable_cached.store.postgres.runner import Runner


class PostgresOutbox:
    """:class:`airtable_cached.store.contract.Outbox` on a PostgreSQL unit (or pooled calls)."""

    def __init__(self, runner: Runner):
        self.runner = runner
