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

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

# -- values the replica hands out (tables, records) -------------------------------------------------


class TableRow(TypedDict):
    """A cached table: its key (endpoint, base, id or name), schema once known, last pull."""

    tid: int
    endpoint: str
    base_id: str
    table_id: str | None
    name: str | None
    schema: dict | None
    pulled_at: float | None


class PulledRecord(TypedDict):
    """A record as Airtable reported it, about to be stored (``fields`` already cleaned)."""

    id: str
    position: int
    created_time: str
    fields: dict
    comment_count: int


class RecordCopies(TypedDict):
    """A record's two states: as Airtable last reported it, and as reads see it (None: absent)."""

    remote: dict | None
    fields: dict | None


@dataclass(frozen=True)
class Selection:
    """Which visible records of a table a listing reads, in which order: a compiled formula
    condition (the store's dialect, over the record's ``r.fields``, ``r.id`` and ``r.created_time``;
    empty: every record) and its parameters, optionally a view's members in the view's order."""

    where: str = ""
    params: list = field(default_factory=list)
    view: str | None = None
    #: An index (a field's, or the primary key) finds the rows: order without the natural-order index.
    indexed: bool = False
    #: The caller sorts the records itself: a view's own order is not needed.
    sorted_later: bool = False


class QueryTooComplex(Exception):
    """The store cannot run a selection's condition for its size (too deep, too many parameters)."""



class Replica(Protocol):
    """The records replica: tables, schema, aliases, records, views, indexes, search, conflicts,
    refresh state, change feeds and statistics. Every method runs in the unit it was taken from."""

    # -- tables, table_aliases, schema ---------------------------------------------------------
    def table_by_alias(self, endpoint: str, base_id: str, alias: str) -> TableRow | None:
        """The table an alias (a name or id an agent used) of this Airtable's base stands for."""
        ...

    def table_by_id_or_name(self, endpoint: str, base_id: str, ref: str) -> TableRow | None:
        """The first table of the base whose id or name is ``ref``."""
        ...

    def table(self, tid: int) -> TableRow | None:
        """The cached table ``tid``."""
        ...

    def add_table(self, endpoint: str, base_id: str, table_id: str | None, name: str | None) -> int:
        """A new cached table, never pulled; returns its tid."""
        ...

    def add_alias(self, endpoint: str, base_id: str, alias: str, tid: int) -> None:
        """From now on ``alias`` in this base stands for table ``tid``."""
        ...

    def alias_taken(self, endpoint: str, base_id: str, alias: str) -> bool:
        """Whether ``alias`` already stands for a table of this base."""
        ...

    def set_schema(self, tid: int, schema: dict) -> None:
        """Keep the table's schema, and its id and name as the schema gives them."""
        ...

    def set_schema_only(self, tid: int, schema: dict) -> None:
        """Keep the table's schema (its id and name unchanged)."""
        ...

    def mark_pulled(self, tid: int, at: float) -> None:
        """The table was pulled whole at ``at`` (a new generation of it)."""
        ...

    def has_unkeyed_tables(self) -> bool:
        """Whether tables cached before tables were keyed by endpoint remain."""
        ...

    def adopt_unkeyed_tables(self, endpoint: str) -> int:
        """Tables (their aliases, change feeds) not keyed by endpoint become ``endpoint``'s; returns how many tables."""
        ...

    def drop_table(self, tid: int) -> None:
        """Forget a table (its aliases and statistics) that holds no records."""
        ...

    def linked_table(self, endpoint: str, base_id: str, table_id: str) -> TableRow | None:
        """The first cached table of this Airtable's base with Airtable id ``table_id``."""
        ...

    # -- records -------------------------------------------------------------------------------
    def has_records(self, tid: int) -> bool:
        """Whether the table holds any record (visible or not)."""
        ...

    def count_visible(self, tid: int) -> int:
        """How many records of the table reads see."""
        ...

    def visible_records(self, tid: int) -> list[dict]:
        """Every record reads see, decoded (id, createdTime, fields, commentCount, lastModifiedTime), in natural order."""
        ...

    def visible_records_by_id(self, tid: int, ids: Sequence[str]) -> dict[str, dict]:
        """The records among ``ids`` reads see, decoded, by id."""
        ...

    def select_records(self, tid: int, selection: Selection, *, limit: int | None = None) -> list[dict]:
        """The visible records a selection matches, decoded, in its order (the first ``limit``); raises QueryTooComplex."""
        ...

    def select_record_ids(self, tid: int, selection: Selection, *, limit: int | None = None) -> list[str]:
        """The ids :meth:`select_records` would return."""
        ...

    def field_values(self, tid: int, name: str) -> dict[str, Any]:
        """Each visible record's value of field ``name`` (None where it has none), by record id."""
        ...

    def field_ever_seen(self, tid: int, name: str) -> bool:
        """Whether Airtable reported a value of field ``name`` for any record of the table."""
        ...

    def record_visibility(self, tid: int, record_id: str) -> bool | None:
        """Whether reads see the record (False: deleted locally; None: not in the cache)."""
        ...

    def remote_state(self, tid: int, record_id: str) -> tuple[dict | None, float | None] | None:
        """The record's fields as Airtable last reported them (None: created locally) and when; None if absent."""
        ...

    def record_copies(self, tid: int, record_id: str) -> RecordCopies | None:
        """The record's remote fields and the fields reads see; None if absent."""
        ...

    def record_ids(self, tid: int) -> set[str]:
        """Every record id of the table (visible or not)."""
        ...

    def last_position(self, tid: int) -> int:
        """The highest position of the table's records (-1 when empty)."""
        ...

    def add_local_record(self, tid: int, record_id: str, position: int, created_time: str, fields: dict) -> None:
        """A record created locally (not on Airtable yet)."""
        ...

    def write_fields(self, tid: int, record_id: str, fields: dict, modified_time: str) -> None:
        """The agent wrote the record: reads see ``fields``, modified at ``modified_time``."""
        ...

    def hide_record(self, tid: int, record_id: str) -> bool:
        """The agent deleted a visible record: reads no longer see it. Returns whether it was visible."""
        ...

    def set_visible_fields(self, tid: int, record_id: str, fields: dict | None) -> None:
        """What reads see of the record (None: nothing)."""
        ...

    def set_remote_fields(self, tid: int, record_id: str, remote: dict) -> None:
        """The record's fields as Airtable has them now."""
        ...

    def delete_records(self, tid: int, record_ids: Iterable[str]) -> None:
        """Forget these records."""
        ...

    def upsert_pulled(self, tid: int, records: Iterable[PulledRecord], *, now: float, now_text: str, started_at: float) -> None:
        """Keep pulled records (remote and visible state, position), unless a flush confirmed one after ``started_at``."""
        ...

    def refresh_pulled(self, tid: int, records: Iterable[PulledRecord], *, now: float, started_at: float) -> None:
        """Keep pulled states of records already cached (positions unchanged), unless confirmed after ``started_at``."""
        ...

    def absorb_records(self, tid: int, records: Iterable[PulledRecord], *, now: float, sent_at: float) -> None:
        """Keep records Airtable answered to a request sent at ``sent_at``, unless confirmed after it."""
        ...

    def drop_records_not_seen(self, tid: int, seen: Iterable[str], *, started_at: float) -> None:
        """Forget records Airtable reported before ``started_at`` that a whole pull did not see."""
        ...

    def place_local_records_after(self, tid: int, offset: int) -> None:
        """Records created locally keep their order, from position ``offset`` on."""
        ...

    # -- views, view_members -------------------------------------------------------------------
    def view_pulled_at(self, tid: int, view: str) -> float | None:
        """When the view was last pulled (None: never)."""
        ...

    def known_views(self, tid: int) -> list[str]:
        """The names of the table's pulled views, sorted."""
        ...

    def forget_views(self, tid: int) -> None:
        """The table's views must be pulled again."""
        ...

    def replace_view(self, tid: int, view: str, record_ids: Sequence[str], *, pulled_at: float) -> None:
        """The view's members, in its order, as pulled at ``pulled_at``."""
        ...

    # -- indexes and full-text search ----------------------------------------------------------
    def field_index(self, field: str) -> str | None:
        """The name of the index on one field's value (None: the field cannot be indexed)."""
        ...

    def field_indexes(self) -> set[str]:
        """The names of the field indexes that exist."""
        ...

    def add_field_index(self, field: str) -> str | None:
        """Index one field's value (if it can be); returns the index's name."""
        ...

    def search_records(self, tid: int, words: Sequence[str]) -> list[dict]:
        """Visible records with a word starting with each of ``words`` (any case, accents folded), best first."""
        ...

    # -- conflicts -----------------------------------------------------------------------------
    def log_conflicts(self, tid: int, record_id: str, lost: dict[str, tuple[Any, Any]], *, at: float) -> None:
        """Log the local values dropped for Airtable's (``lost``: field -> (local, remote))."""
        ...

    # -- refresh state, change feeds (webhooks), token grants ----------------------------------
    def token_salt(self) -> bytes:
        """This cache's random salt for token digests."""
        ...

    def token_granted_at(self, key: str, digest: str) -> float | None:
        """When the token with this digest was last seen to read the base ``key`` (None: never)."""
        ...

    def grant_token(self, key: str, digest: str, *, at: float) -> None:
        """The token with this digest was seen to read the base ``key`` at ``at``."""
        ...

    # -- sync_log and statistics ---------------------------------------------------------------
    def add_statistics(self, counts: dict[tuple[int, str], tuple[int, float]], latencies: list[tuple[int, str, float]]) -> None:
        """Add read counts and total milliseconds per (tid, kind), and single latencies."""
        ...

    # -- whole-file checks (``check``) -----------------------------------------------------------


class Outbox(Protocol):
    """The durable write queue: append, claim, ack, retry, dead-letter, list, id remapping."""

    # -- appending (the engine) ----------------------------------------------------------------

    # -- asked by the engine -------------------------------------------------------------------
    def has_live_writes(self, tids: Sequence[int]) -> bool:
        """Whether writes to any of these tables are queued (dead letters aside)."""
        ...

    def has_live_writes_for_base(self, base_id: str) -> bool:
        """Whether writes to any table of the base are queued (dead letters aside)."""
        ...

    def has_writes(self, tid: int) -> bool:
        """Whether any write to the table is in the queue (dead letters too)."""
        ...

    def write_states(self, seqs: Sequence[int]) -> list[dict]:
        """The queued writes left among ``seqs``: seq, record_id, state, last_error (decoded, or None)."""
        ...

    def pending_updates(self, tid: int) -> list[dict]:
        """The table's updates waiting to be sent (not being sent): seq, record_id, fields."""
        ...

    def live_writes_of_tables(self, tids: Sequence[int]) -> list[dict]:
        """Queued writes of these tables (dead letters aside) in queue order: tid, op, record_id, fields (or None)."""
        ...

    def written_fields(self, tid: int, record_id: str) -> list[dict]:
        """The fields of every write of the record in the queue (any state)."""
        ...

    def records_whose_live_writes_name(self, tid: int, record_id: str) -> set[str]:
        """Records of ``tid`` whose queued writes (dead letters aside) name ``record_id`` in a value."""
        ...

    def real_id(self, provisional: str) -> str | None:
        """The id Airtable gave a record created under a provisional id (None: not flushed yet)."""
        ...

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

    @property
    def location(self) -> str:
        """Where the store lives, for messages (a path, or a URL without its password)."""
        ...

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

    def knows_current(self, marker: tuple) -> bool:
        """Whether ``marker`` is still this process's view without asking the database: nothing was
        committed through this store since, on the same connection (another process may have)."""
        ...

    def in_write(self) -> bool:
        """Whether the calling thread is inside ``write()``."""
        ...

    def close(self) -> None:
        """Close the calling thread's connection."""
        ...

    def close_all(self) -> None:
        """Close every connection this process opened."""
        ...
