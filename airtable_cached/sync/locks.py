"""Per-base flush locks: what a lock is taken on (:func:`flush_key`), and the SQLite store's locks.

The locks themselves are the store's (``store.coordination()``): OS file locks beside a SQLite file
(``airtable_cached/store/sqlite/locks.py``), session-level advisory locks in PostgreSQL
(``airtable_cached/store/postgres/locks.py``). Both die with their holder; both keep a lease for the
holder that is alive but hung.
"""

from __future__ import annotations

from airtable_cached.store.sqlite.locks import FlushLocks, HeldLock, private_locks_dir

__all__ = ["FlushLocks", "HeldLock", "flush_key", "private_locks_dir"]


def flush_key(endpoint: str, base_id: str) -> str:
    """What a flush lock is taken on: a base of one Airtable (the cache is keyed by endpoint)."""
    return f"{endpoint} {base_id}" if endpoint else base_id
