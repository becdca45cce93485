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
from pathlib import Path
from typing import Any, Protocol

from airtable_cached.store.types import Op


class Replica(Protocol):
    """The records replica: tables, schema, aliases, records, views, indexes, search, conflicts,
    refresh state, change feeds and statistics. Every method runs in the unit it was taken from."""

    # -- tables, table_aliases, schema ---------------------------------------------------------

    def table_row(self, tid: int) -> dict | None:
        """A cached table's row (tid, endpoint, base_id, table_id, name, schema_json, pulled_at...)."""
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

    def remote_fields(self, tid: int, record_id: str) -> dict | None:
        """Airtable's last known fields of a record (``None``: unknown, or only local)."""
        ...

    def set_remote_fields(self, tid: int, record_id: str, fields: dict, synced_at: float) -> None:
        """Airtable confirmed a write: its answer becomes the record's known remote state."""
        ...

    def delete_record(self, tid: int, record_id: str, *, only_local: bool = False) -> None:
        """Forget a cached record (``only_local``: only if Airtable never had it)."""
        ...

    def delete_records(self, tid: int, record_ids: Iterable[str]) -> None:
        """Forget these cached records of one table."""
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

    def last_position(self, tid: int) -> int:
        """The highest position of the table's records (-1 when it has none)."""
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

    def forget_views(self, tids: Iterable[int]) -> None:
        """Which records these tables' views hold, and in what order, is unknown again."""
        ...

    def drop_views(self, tid: int) -> None:
        """Forget the table's views and which records they hold."""
        ...

    # -- indexes and full-text search ----------------------------------------------------------

    # -- conflicts -----------------------------------------------------------------------------

    def prune_conflicts(self, before: float) -> int:
        """Forget conflicts logged before ``before``; how many."""
        ...

    # -- refresh state, change feeds (webhooks), token grants ----------------------------------

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
