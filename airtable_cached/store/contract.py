"""What a store promises: the records replica and the write queue, each behind one interface.

Everything above the store (the engine, the sync, the operator commands) reaches the database only
through these protocols. A store is one database (a SQLite file, a PostgreSQL database); it hands out
units of work:

* ``store.write()`` is one atomic transaction, serialised against every other writer: every call on
  its ``replica`` and ``outbox`` commits together or not at all (a call is applied whole, as
  Airtable applies a request);
* ``store.replica`` and ``store.outbox`` outside ``write()`` read the latest committed state (each
  call on its own).

The contract suite ``tests/store/`` runs the same tests against every store.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol


class Replica(Protocol):
    """The records replica: tables, schema, aliases, records, views, indexes, search, conflicts,
    refresh state, change feeds and statistics. Every method runs in the unit it was taken from."""

    # -- tables, table_aliases, schema ---------------------------------------------------------

    # -- records -------------------------------------------------------------------------------

    # -- views, view_members -------------------------------------------------------------------

    # -- indexes and full-text search ----------------------------------------------------------

    # -- conflicts -----------------------------------------------------------------------------

    # -- refresh state, change feeds (webhooks), token grants ----------------------------------

    # -- sync_log and statistics ---------------------------------------------------------------

    # -- whole-file checks (``check``) -----------------------------------------------------------


class Outbox(Protocol):
    """The durable write queue: append, claim, ack, retry, dead-letter, list, id remapping."""

    # -- appending (the engine) ----------------------------------------------------------------

    # -- asked by the engine -------------------------------------------------------------------

    # -- claiming and settling (the sync) ------------------------------------------------------

    # -- operating (ops: queue, check, status) -------------------------------------------------


class Unit(Protocol):
    """One unit of work: a write transaction, or autocommit reads."""

    @property
    def replica(self) -> Replica: ...

    @property
    def outbox(self) -> Outbox: ...


class Store(Protocol):
    """One database holding one cache."""

    #: Where the store lives, for messages (a path, or a URL without its password).
    location: str

    def write(self) -> AbstractContextManager[Unit]:
        """One atomic write transaction; nested use joins the outer one."""
        ...

    @property
    def replica(self) -> Replica:
        """The replica, reading the latest committed state."""
        ...

    @property
    def outbox(self) -> Outbox:
        """The queue, reading the latest committed state."""
        ...

    def change_marker(self) -> tuple:
        """A value that changes whenever the database may have changed (any process)."""
        ...

    def close(self) -> None:
        """Close the calling thread's connection."""
        ...

    def close_all(self) -> None:
        """Close every connection this process opened."""
        ...
