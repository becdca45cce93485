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

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from airtable_cached.store.types import Op

if TYPE_CHECKING:
    from airtable_cached.config import Settings

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

    #: The formula compiler's dialect (``airtable_cached/formula/sql.py``) of the conditions this
    #: store runs (``Selection.where``): "sqlite" or "postgres".
    dialect: str

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

    def table_rows(self, base_id: str | None = None) -> list[dict]:
        """Every cached table's row (of one base), by base and tid."""
        ...

    def base_ids(self) -> list[str]:
        """The bases with a cached table (any endpoint)."""
        ...

    def tids_named(self, alias: str, base_id: str | None = None) -> list[int]:
        """The tables a name, id or alias designates (in one base, or in any), sorted."""
        ...

    def mark_pulled(self, tid: int, at: float) -> None:
        """The table's records are current as of ``at`` (readers' snapshots of it are outdated)."""
        ...

    def endpoint_tables(self, endpoint: str) -> list[dict]:
        """The rows of the tables cached from one endpoint, by tid."""
        ...

    def table_tids(self) -> list[int]:
        """Every cached table's tid, in order."""
        ...

    def forget_table_pull(self, tid: int) -> None:
        """The table was never pulled: no pull time, no cached schema (readers' snapshots are outdated)."""
        ...

    def restore_table(self, tid: int, base_id: str, table_id: str | None, name: str | None,
                      schema_json: str | None = None) -> None:
        """Add a table under a known tid (salvage: the tid the queued writes name)."""
        ...

    def add_table_aliases(self, aliases: Iterable[tuple[str, str, int]]) -> None:
        """Names (base id, alias, tid) for tables; a name already taken is left as it is."""
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

    def write_fields(self, tid: int, record_id: str, fields: dict, modified_time: str) -> None:
        """The agent wrote the record: reads see ``fields``, modified at ``modified_time``."""
        ...

    def hide_record(self, tid: int, record_id: str) -> bool:
        """The agent deleted a visible record: reads no longer see it. Returns whether it was visible."""
        ...

    def set_visible_fields(self, tid: int, record_id: str, fields: dict | None) -> None:
        """What reads see of the record (None: nothing)."""
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

    def set_remote_fields(self, tid: int, record_id: str, fields: dict, synced_at: float | None = None) -> None:
        """The record's fields as Airtable has them now (``synced_at``: when it confirmed them; None keeps the time)."""
        ...

    def delete_records(self, tid: int, record_ids: Iterable[str], *, only_local: bool = False) -> None:
        """Forget these cached records of one table (``only_local``: only those Airtable never had)."""
        ...

    def adopt_record_id(self, tid: int, provisional: str, real: str, fields: dict, created_time: str,
                        synced_at: float) -> None:
        """A local create reached Airtable: the record takes Airtable's id, fields and creation time."""
        ...

    def replace_linked_id(self, provisional: str, real: str) -> None:
        """Every cached record's link values naming ``provisional`` name ``real`` instead."""
        ...

    def remote_ids_seen_by(self, tid: int, at: float) -> set[str]:
        """Ids of the table's records that the cache knew from Airtable at (or before) ``at``."""
        ...

    def merge_changed_records(self, tid: int, records: list[dict], *, now: float, started_at: float,
                              position: int) -> int:
        """Store changed records (as Airtable lists them) not confirmed since; new ones after ``position``; the last."""
        ...

    def delete_destroyed_records(self, endpoint: str, base_id: str, record_ids: Iterable[str], synced_before: float) -> int:
        """Forget records of a base that Airtable deleted (unless synced after ``synced_before``); how many."""
        ...

    def remote_ids_missing_from(self, tid: int, present: Iterable[str], synced_before: float) -> list[str]:
        """Ids of records known from Airtable (synced before ``synced_before``) not among ``present``."""
        ...

    def move_local_records_after(self, tid: int, position: int) -> None:
        """The agent's own creates (not on Airtable yet) keep their order, after ``position``."""
        ...

    def record_counts(self, tid: int) -> dict[str, int]:
        """The table's records reads see (``visible``) and those only local so far (``local_only``)."""
        ...

    def record_count(self) -> int:
        """Every cached record row, of every table."""
        ...

    def records_json_bytes(self) -> int:
        """Characters of the cached records' remote and visible fields, as stored."""
        ...

    def delete_table_records(self, tid: int, *, keep_queued: bool) -> int:
        """Forget the table's cached records (``keep_queued``: but those queued writes name); how many."""
        ...

    def insert_local_record(self, tid: int, record_id: str, position: int, created_time: str, fields: dict | None) -> None:
        """A record only the queue knows (not on Airtable yet); kept as it is if already there."""
        ...

    # -- views, view_members -------------------------------------------------------------------
    def view_pulled_at(self, tid: int, view: str) -> float | None:
        """When the view was last pulled (None: never)."""
        ...

    def known_views(self, tid: int) -> list[str]:
        """The names of the table's pulled views, sorted."""
        ...

    def replace_view(self, tid: int, view: str, record_ids: Sequence[str], *, pulled_at: float) -> None:
        """The view's members, in its order, as pulled at ``pulled_at``."""
        ...

    def forget_views(self, tids: Iterable[int]) -> None:
        """Which records these tables' views hold, and in what order, is unknown again."""
        ...

    def drop_views(self, tid: int) -> None:
        """Forget the table's views and which records they hold."""
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

    def prune_conflicts(self, before: float) -> int:
        """Forget conflicts logged before ``before``; how many."""
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

    def refresh_state(self, tid: int) -> dict:
        """The table's refresh bookkeeping (watermark, last pulls, counters); empty if none yet."""
        ...

    def count_refresh_requests(self, tid: int, kind: str, requests: int) -> None:
        """Add ``requests`` to what ``kind`` (full or incremental) refreshes of the table cost."""
        ...

    def record_full_refresh(self, tid: int, *, watermark: float | None, at: float, hook_id: str | None,
                            source: str, requests: int) -> None:
        """A full pull committed: its watermark, time, the webhook covering it and its cost."""
        ...

    def record_incremental_refresh(self, tid: int, *, watermark: float | None, at: float, swept: bool,
                                   source: str, requests: int) -> None:
        """An incremental refresh committed (``watermark`` None keeps the old one)."""
        ...

    def count_stale_served(self, tid: int) -> None:
        """One more stale read of the table answered at once."""
        ...

    def forget_feed_coverage(self, endpoint: str, base_id: str) -> None:
        """No table of the base is covered by its change feed any more (each gets a full pull)."""
        ...

    def refresh_counts(self) -> list[dict]:
        """Per table (base, label, refresh_state counters), ordered by base and table."""
        ...

    def webhook(self, endpoint: str, base_id: str) -> dict | None:
        """This cache's change feed on a base (id, cursor, expiry, refusal), if any."""
        ...

    def usable_webhook_id(self, endpoint: str, base_id: str) -> str | None:
        """The id of the base's webhook unless Airtable refused one."""
        ...

    def save_webhook(self, endpoint: str, base_id: str, webhook_id: str | None, *, cursor: int,
                     expires_at: float | None, now: float, denied_why: str | None) -> None:
        """Keep the base's webhook (a new id restarts its creation time; expiry None keeps the old)."""
        ...

    def advance_webhook(self, endpoint: str, base_id: str, webhook_id: str, cursor: int, read_at: float) -> None:
        """Payloads were read up to ``cursor`` (the cursor never moves back)."""
        ...

    def set_webhook_expiry(self, endpoint: str, base_id: str, expires_at: float | None) -> None:
        """Airtable extended the base's webhook until ``expires_at``."""
        ...

    def delete_webhook(self, endpoint: str, base_id: str, webhook_id: str) -> None:
        """Forget a webhook removed from Airtable."""
        ...

    def webhooks(self) -> list[dict]:
        """Every webhook this cache keeps, by base."""
        ...

    def webhook_ids(self, endpoint: str) -> dict[str, str | None]:
        """Base id -> this cache's webhook id on it, for one endpoint."""
        ...

    # -- sync_log and statistics ---------------------------------------------------------------
    def add_statistics(self, counts: dict[tuple[int, str], tuple[int, float]], latencies: list[tuple[int, str, float]]) -> None:
        """Add read counts and total milliseconds per (tid, kind), and single latencies."""
        ...

    def log_request(self, at: float, base_id: str, kind: str, method: str, status: int | None) -> None:
        """One request sent to Airtable (``status`` None: no answer)."""
        ...

    def bases_logged_since(self, since: float) -> set[str]:
        """Bases with a request logged since ``since``."""
        ...

    def request_counts(self, base_id: str, since: float) -> tuple[int, int]:
        """Requests sent to a base since ``since``, and how many of them Airtable rate-limited (429)."""
        ...

    def request_totals(self) -> tuple[int, int]:
        """Every request logged, and how many of them Airtable rate-limited (429)."""
        ...

    def requests_by_kind(self) -> list[tuple[str, int | None, int]]:
        """(kind, status, count) of the requests logged (status None: no answer)."""
        ...

    def prune_request_log(self, before: float) -> int:
        """Forget requests logged before ``before``; how many."""
        ...

    def trim_latency_samples(self, keep: int) -> int:
        """Keep only the newest ``keep`` latency samples per table and kind; how many were dropped."""
        ...

    def latency_samples(self) -> dict[tuple[int, str], list[float]]:
        """The kept latency samples (ms), per table and kind, oldest first."""
        ...

    def read_counts(self) -> list[dict]:
        """Per table and kind of read: how many, and their total time (ms), by tid and kind."""
        ...

    def read_count(self, kinds: Iterable[str]) -> int:
        """How many reads of these kinds were counted, over every table."""
        ...

    # -- whole-file checks (``check``) -----------------------------------------------------------

    def garbled_records(self) -> list[dict]:
        """Per table with cached records whose stored JSON no longer parses: tid, label, how many (n)."""
        ...


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
    def has_live_writes(self, tids: Sequence[int]) -> bool:
        """Whether writes to any of these tables are queued (dead letters aside)."""
        ...

    def has_live_writes_for_base(self, base_id: str) -> bool:
        """Whether writes to any table of the base are queued (dead letters aside)."""
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


# -- coordination between the processes (hosts) sharing a store ---------------------------------------


class Pacer(Protocol):
    """One rate budget per base for every process using the store."""

    def wait_turn(self, base_id: str) -> None:
        """Sleep until this process's turn to send one request to ``base_id``."""
        ...

    def penalise(self, base_id: str, seconds: float | None = None) -> None:
        """Stop every process sending to ``base_id`` for ``seconds`` (the 429 lock-out by default)."""
        ...

    def close(self) -> None:
        """Close what the calling thread opened for it."""
        ...


class HeldLock(Protocol):
    """A base's flush lock held by this process (each store's locks module has its own)."""

    @property
    def base_id(self) -> str:
        """The flush key the lock is held on."""
        ...


class FlushLocks(Protocol):
    """One flusher at a time per base (a flush key), among every process using the store; a lock
    dies with its holder, and a lease takes it from a holder that is alive but hung."""

    def try_acquire(self, base_id: str) -> Any:
        """The base's lock (a :class:`HeldLock`), taken without waiting; ``None`` when a live flusher holds it."""
        ...

    def renew(self, held: Any) -> bool:
        """Extend the lease; ``False`` if another flusher took the base over."""
        ...

    def release(self, held: Any) -> None:
        """Give the lock back."""
        ...


@dataclass(frozen=True)
class Coordination:
    """What a store gives the sync to share Airtable with the other processes using it:
    ``table_lock(base_id, tid, timeout)`` holds a table's refresh lock for a ``with`` block and
    yields whether it got it within ``timeout`` seconds (one pull per table at a time)."""

    pacer: Pacer
    locks: FlushLocks
    table_lock: Callable[[str, int, float], AbstractContextManager[bool]]


class Store(Protocol):
    """One database holding one cache."""

    def coordination(self, settings: Settings, *, clock: Callable[[], float],
                     sleep: Callable[[float], None]) -> Coordination:
        """The pacer, flush locks and table locks shared by every process (host) using this store."""
        ...

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

    def moved_only_by_own_commit(self, before: tuple, after: tuple) -> bool:
        """Whether the database went from marker ``before`` to ``after`` by exactly one commit through
        this store and nothing else (what this process's read models may patch instead of reload)."""
        ...

    def knows_current(self, marker: tuple) -> bool:
        """Whether ``marker`` is still this process's view without asking the database: nothing was
        committed through this store since, on the same connection (another process may have)."""
        ...

    def in_write(self) -> bool:
        """Whether the calling thread is inside ``write()``."""
        ...

    # -- whole-file operations (a store that cannot do one raises, naming the tool that does: pg_dump) --

    def backup(self, dest: Path) -> None:
        """A consistent copy of the database, taken while others keep writing, into a new 0600 file."""
        ...

    def vacuum(self) -> None:
        """Give the space of deleted rows back to the file system."""
        ...

    def disk_bytes(self) -> int:
        """Bytes the database takes on disk."""
        ...

    def version(self) -> int:
        """The schema version the database is at."""
        ...

    def page_bytes(self) -> dict[str, int]:
        """Bytes the database's data takes (``database``) and, of those, unused (``free``)."""
        ...

    def close(self) -> None:
        """Close the calling thread's connection."""
        ...

    def close_all(self) -> None:
        """Close every connection this process opened."""
        ...
