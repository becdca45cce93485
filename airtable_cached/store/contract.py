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

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from airtable_cached.store.types import Op


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

    def append(self, *, tid: int, base_id: str, table_ref: str, op: str, record_id: str, fields: dict | None,
               base: dict | None, typecast: bool, now: float, merge_on: list[str] | None = None,
               call_id: int | None = None) -> int:
        """Queue one write after every other (``call_id``: the seq of its call's first write); its seq."""
        ...

    def live_ops_for_record(self, tid: int, record_id: str) -> list[Op]:
        """The writes that shape what reads see of a record (dead letters do not), in queue order."""
        ...

    def records_with_live_ops(self, tid: int) -> set[str]:
        """The records of a table with writes still to send (not dead letters)."""
        ...

    # -- asked by the engine -------------------------------------------------------------------

    # -- claiming and settling (the sync) ------------------------------------------------------

    def has_ready(self, now: float, *, endpoint: str | None = None) -> bool:
        """Whether a write (of the endpoint's tables) is due or in flight at ``now``."""
        ...

    def next_due(self, *, endpoint: str | None = None) -> float | None:
        """When the earliest pending write (of the endpoint's tables) is due; ``None``: none pending."""
        ...

    def bases_with_queued(self, endpoint: str) -> list[str]:
        """The bases of the endpoint's tables with writes still to send."""
        ...

    def count_queued(self) -> int:
        """How many writes are still to send (every endpoint; dead letters not counted)."""
        ...

    def tables_with_writes(self, base_id: str) -> set[int]:
        """The tables of a base with writes in the queue (any state)."""
        ...

    def claim(self, base_id: str, *, now: float, lease: float, limit: int = 500,
              link_fields: Mapping[int, frozenset[str]] | None = None, endpoint: str | None = None) -> list[Op]:
        """Mark a base's sendable writes in flight until ``now + lease`` (one attempt more); them, as before."""
        ...

    def release_claims(self, base_id: str, *, endpoint: str | None = None) -> int:
        """Make a base's in-flight writes claimable now (they stay in flight); how many."""
        ...

    def unclaim(self, ops: Iterable[Op]) -> None:
        """Give claimed writes back exactly as ``claim`` returned them."""
        ...

    def renew_claims(self, seqs: Iterable[int], until: float) -> None:
        """Extend the lease of those of these writes still in flight to ``until``."""
        ...

    def release(self, errors: Mapping[int, Any], *, next_attempt_at: float) -> int:
        """In-flight writes (seq -> error) pending again, due at ``next_attempt_at``; how many were in flight."""
        ...

    def max_attempts(self, seqs: Sequence[int]) -> int | None:
        """The most attempts any of these writes has had; ``None``: none is queued."""
        ...

    def first_queued_at(self, seqs: Sequence[int]) -> float | None:
        """When the earliest of these writes was queued; ``None``: none is queued."""
        ...

    def dead_among(self, seqs: Sequence[int]) -> set[int]:
        """Which of these writes are dead letters."""
        ...

    def any_queued(self, seqs: Sequence[int]) -> bool:
        """Whether any of these writes is still to send (queued, not a dead letter)."""
        ...

    def ack(self, seqs: Iterable[int]) -> None:
        """Airtable applied these writes: they leave the queue."""
        ...

    def retry_later(self, seqs: Iterable[int], *, error: Any, next_attempt_at: float) -> None:
        """These writes failed for now: pending, due at ``next_attempt_at``, keeping the error."""
        ...

    def dead_letter(self, seqs: Iterable[int], *, error: Any) -> None:
        """These writes will not be sent: kept as dead letters with the error."""
        ...

    def dead_letter_calls(self, calls: Iterable[int], *, error: Any) -> list[Op]:
        """Dead-letter every write still queued from these calls (whole calls); the writes dead-lettered."""
        ...

    def real_ids(self, tid: int) -> set[str]:
        """The ids Airtable gave a table's records created through the queue."""
        ...

    def remap_id(self, provisional: str, real: str, tid: int) -> None:
        """Replace a provisional id by Airtable's in queued record ids and fields; remember the pair."""
        ...

    def rewrite(self, seq: int, **changes: Any) -> None:
        """Change what one queued write sends, re-sealing its checksum only if it was intact."""
        ...

    def damaged(self, base_id: str | None = None, seqs: Sequence[int] | None = None, *,
                endpoint: str | None = None) -> list[dict[str, Any]]:
        """Queued writes (not dead letters) no longer matching their checksum, as stored."""
        ...

    def quarantine(self, base_id: str | None = None, seqs: Sequence[int] | None = None, *,
                   endpoint: str | None = None) -> list[dict[str, Any]]:
        """Dead-letter the writes ``damaged`` selects; them."""
        ...

    # -- operating (ops: queue, check, status) -------------------------------------------------

    def list_ops(self, *, base_id: str | None = None,
                 states: Sequence[str] = ("pending", "inflight", "dead")) -> list[Op]:
        """The writes in these states (of one base), in queue order."""
        ...

    def requeue(self, seqs: Iterable[int] | None = None) -> list[int]:
        """Dead letters back in the queue, due now, no attempts (``None``: all); the seqs."""
        ...

    def seqs(self, states: Sequence[str] = ("pending", "inflight", "dead")) -> list[int]:
        """The seqs of the writes in these states, in queue order."""
        ...

    def top_seq(self) -> int:
        """The highest seq the queue ever gave, acknowledged writes included (0: none)."""
        ...

    def bases(self) -> set[str]:
        """The bases with writes in the queue (any state)."""
        ...

    def counts_by_state(self, tid: int) -> dict[str, int]:
        """How many of a table's writes are in each state (every state, 0 when none)."""
        ...

    def oldest_queued_at(self, tid: int) -> float | None:
        """When a table's oldest write still to send was queued; ``None``: none."""
        ...

    def stored_writes(self) -> list[dict[str, Any]]:
        """Every write as stored (JSON undecoded: it may be garbled), in queue order."""
        ...

    def id_map(self) -> dict[str, str]:
        """Every provisional id Airtable replaced, with Airtable's id."""
        ...

    def garbled(self) -> list[int]:
        """The writes whose stored JSON (fields, base, upsert keys) does not parse."""
        ...

    def count_without_table(self) -> int:
        """How many writes belong to no known table."""
        ...

    def return_claimed(self, seqs: Iterable[int]) -> None:
        """In-flight writes among these back to pending, due as before, attempts kept."""
        ...

    def make_due(self, seqs: Iterable[int]) -> None:
        """Pending writes among these due now."""
        ...

    def claimed_among(self, seqs: Sequence[int], now: float) -> list[int]:
        """Which of these writes a flusher holds at ``now`` (in flight, lease not over)."""
        ...

    def records_of(self, seqs: Sequence[int]) -> set[tuple[int, str]]:
        """The (table, record) pairs these writes are to."""
        ...

    def with_later_writes(self, seqs: Sequence[int]) -> set[int]:
        """These writes, plus the later writes to the record of each create among them."""
        ...

    def has_writes(self, tid: int, record_id: str) -> bool:
        """Whether the queue holds any write to this record (any state)."""
        ...

    def forget_table(self, tid: int) -> int:
        """Drop a table's writes and id pairs for good; how many writes."""
        ...

    def restore_write(self, row: Mapping[str, Any]) -> None:
        """Put back one write exactly as stored elsewhere (seq, state, checksum: salvage)."""
        ...

    def restore_ids(self, pairs: Mapping[str, tuple[str, int]]) -> None:
        """Remember provisional id -> (Airtable's id, table), keeping pairs already known."""
        ...

    def first_creates(self) -> list[dict[str, Any]]:
        """Per record with a live create: ``tid``, ``record_id``, ``at`` (its first create's time)."""
        ...


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
