"""Per-base flush locks: what a lock is taken on (:func:`flush_key`).

The locks themselves are the store's (``store.coordination()``, ``FlushLocks`` in
``airtable_cached/store/contract.py``): OS file locks beside a SQLite file
(``airtable_cached/store/sqlite/locks.py``), session-level advisory locks in PostgreSQL
(``airtable_cached/store/postgres/locks.py``). Both die with their holder; both keep a lease for the
holder that is alive but hung.
"""

from __future__ import annotations

__all__ = ["flush_key"]


def flush_key(endpoint: str, base_id: str) -> str:
    """What a flush lock is taken on: a base of one Airtable (the cache is keyed by endpoint)."""
    return f"{endpoint} {base_id}" if endpoint else base_id
