"""The records replica in PostgreSQL: all SQL on the replica's tables (see ``schema.py``).

Its methods are those of :class:`airtable_cached.store.contract.Replica`, each with the SQLite
store's behaviour (``airtable_cached/store/sqlite/replica.py``): the same values, in the same order.
Differences that do not show:

* a record's JSON is kept as its exact text (``fields_json``/``remote_json``) beside a ``jsonb``
  copy of what reads see (``fields``, NULL where jsonb cannot hold it: ``schema.as_jsonb``);
* text is ordered by code point (``COLLATE "C"``), as SQLite's binary collation orders it;
* SQLite serialises writers (``BEGIN IMMEDIATE``); here a statement that reads before it writes
  locks what it read (``FOR UPDATE``), the table's row for a table's positions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from airtable_cached.formula.sql import DIALECTS, indexable_field_name
from airtable_cached.rules.records import clean_fields, dumps, loads, now_iso, replace_ids
from airtable_cached.store.contract import PulledRecord, QueryTooComplex, RecordCopies, Selection, TableRow
from airtable_cached.store.postgres.schema import as_jsonb, dumps_exact
from airtable_cached.store.postgres.selection import (
    MAX_PARAMS,
    RECORD_COLUMNS,
    decode_record,
    field_index_name,
    selection_sql,
    table_row,
    too_big,
)

if TYPE_CHECKING:
    from airtable_cached.store.contract import Replica
    from airtable_cached.store.postgres.runner import Connection, Runner

_SET_FIELDS = "fields_json = %s, fields = %s::jsonb"
_MERGE_UPDATE = (
    "UPDATE records SET remote_json = %s, fields_json = %s, fields = %s::jsonb, comment_count = %s, synced_at = %s,"
    " modified_time = CASE WHEN remote_json IS NOT DISTINCT FROM %s THEN modified_time ELSE %s END"
    " WHERE tid = %s AND id = %s AND (synced_at IS NULL OR synced_at <= %s)")
_MERGE_INSERT = (
    "INSERT INTO records (tid, id, position, created_time, modified_time, remote_json, fields_json, fields,"
    " comment_count, synced_at, first_seen) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)"
    " ON CONFLICT DO NOTHING")
_UPSERT_PULLED = (
    "INSERT INTO records (tid, id, position, created_time, modified_time, remote_json, fields_json, fields,"
    " comment_count, synced_at, first_seen) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)"
    " ON CONFLICT (tid, id) DO UPDATE SET position = excluded.position, remote_json = excluded.remote_json,"
    " fields_json = excluded.fields_json, fields = excluded.fields, comment_count = excluded.comment_count,"
    " synced_at = excluded.synced_at, modified_time = CASE WHEN records.remote_json IS NOT DISTINCT FROM"
    " excluded.remote_json THEN records.modified_time ELSE excluded.modified_time END"
    # A flush confirmed this record after the pull began: its state is newer than the page's.
    " WHERE (records.synced_at IS NULL OR records.synced_at <= %s)"
    # A row the pull would leave as it is, is not rewritten (a refresh costs what changed).
    " AND (records.remote_json IS DISTINCT FROM excluded.remote_json OR records.fields_json IS DISTINCT FROM"
    " excluded.fields_json OR records.position IS DISTINCT FROM excluded.position"
    " OR records.comment_count IS DISTINCT FROM excluded.comment_count)")
_REFRESH_PULLED = (
    "UPDATE records SET remote_json = %s, fields_json = %s, fields = %s::jsonb, synced_at = %s, comment_count = %s"
    " WHERE tid = %s AND id = %s AND (synced_at IS NULL OR synced_at <= %s)"
    " AND (remote_json IS DISTINCT FROM %s OR fields_json IS DISTINCT FROM %s OR comment_count IS DISTINCT FROM %s)")
_ABSORB = (
    "INSERT INTO records (tid, id, position, created_time, remote_json, fields_json, fields, synced_at, first_seen)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s) ON CONFLICT (tid, id) DO UPDATE SET"
    " remote_json = excluded.remote_json, fields_json = excluded.fields_json, fields = excluded.fields,"
    " synced_at = excluded.synced_at WHERE records.synced_at IS NULL OR records.synced_at <= %s")


def _text(value: Any) -> str | None:
    """A record's fields as stored text (None stays None)."""
    return None if value is None else dumps_exact(value)


class PostgresReplica:
    """:class:`airtable_cached.store.contract.Replica` on a PostgreSQL unit (or pooled calls)."""

    __slots__ = ("runner",)
    dialect = "postgres"

    def __init__(self, runner: Runner):
        self.runner = runner

    # -- SQL helpers -----------------------------------------------------------------------------
    def _rows(self, query: Any, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self.runner.run(lambda conn: conn.execute(query, params).fetchall())

    def _row(self, query: Any, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        return self.runner.run(lambda conn: conn.execute(query, params).fetchone())

    def _value(self, query: Any, params: Sequence[Any] = ()) -> Any:
        row = self._row(query, params)
        return None if row is None else next(iter(row.values()))

    def _column(self, query: Any, params: Sequence[Any] = ()) -> list[Any]:
        return [next(iter(r.values())) for r in self._rows(query, params)]

    def _change(self, query: Any, params: Sequence[Any] = ()) -> int:
        return self.runner.run(lambda conn: conn.execute(query, params).rowcount)

    def _change_each(self, query: str, params: Iterable[Sequence[Any]]) -> int:
        batch = [tuple(p) for p in params]
        if not batch:
            return 0
        return self.runner.run(lambda conn: sum(conn.execute(query, p).rowcount for p in batch))

    def _many(self, query: str, params: Sequence[Sequence[Any]]) -> None:
        """One statement for each set of parameters, sent together (psycopg's pipeline)."""
        def send(conn: Connection) -> None:
            with conn.cursor() as cursor:
                cursor.executemany(query, params)
        if params:
            self.runner.run(send)

    def _in_unit(self, fn: Callable[[Connection], Any]) -> Any:
        """Several statements that must see one another: in the unit's transaction (or one of their own)."""
        return self.runner.run_atomically(fn)

    # -- tables, table_aliases, schema ---------------------------------------------------------

    def table_by_alias(self, endpoint: str, base_id: str, alias: str) -> TableRow | None:
        """The table an alias (a name or id an agent used) of this Airtable's base stands for."""
        if self.runner.conn is not None:
            # In a write: hold the base's table-list lock until the commit, so that two hosts
            # finding a table missing add it once (SQLite's writes are serialised; these are not).
            self._row("SELECT pg_advisory_xact_lock(hashtext(%s)::bigint) AS locked", (f"tables {endpoint} {base_id}",))
        row = self._row("SELECT t.* FROM table_aliases a JOIN tables t USING (tid)"
                        " WHERE a.endpoint = %s AND a.base_id = %s AND a.alias = %s", (endpoint, base_id, alias))
        return None if row is None else table_row(row)

    def table_by_id_or_name(self, endpoint: str, base_id: str, ref: str) -> TableRow | None:
        """The first table of the base whose id or name is ``ref``."""
        row = self._row("SELECT * FROM tables WHERE endpoint = %s AND base_id = %s AND (table_id = %s OR name = %s)"
                        " ORDER BY tid LIMIT 1", (endpoint, base_id, ref, ref))
        return None if row is None else table_row(row)

    def table(self, tid: int) -> TableRow | None:
        """The cached table ``tid``."""
        row = self._row("SELECT * FROM tables WHERE tid = %s", (tid,))
        return None if row is None else table_row(row)

    def add_table(self, endpoint: str, base_id: str, table_id: str | None, name: str | None) -> int:
        """A new cached table, never pulled; returns its tid."""
        return int(self._value("INSERT INTO tables (endpoint, base_id, table_id, name) VALUES (%s, %s, %s, %s)"
                               " RETURNING tid", (endpoint, base_id, table_id, name)))

    def add_alias(self, endpoint: str, base_id: str, alias: str, tid: int) -> None:
        """From now on ``alias`` in this base stands for table ``tid``."""
        self._change("INSERT INTO table_aliases (endpoint, base_id, alias, tid) VALUES (%s, %s, %s, %s)",
                     (endpoint, base_id, alias, tid))

    def alias_taken(self, endpoint: str, base_id: str, alias: str) -> bool:
        """Whether ``alias`` already stands for a table of this base."""
        return self._row("SELECT 1 FROM table_aliases WHERE endpoint = %s AND base_id = %s AND alias = %s",
                         (endpoint, base_id, alias)) is not None

    def set_schema(self, tid: int, schema: dict) -> None:
        """Keep the table's schema, and its id and name as the schema gives them."""
        self._change("UPDATE tables SET schema_json = %s, table_id = %s, name = %s WHERE tid = %s",
                     (dumps(schema), schema.get("id"), schema.get("name"), tid))

    def set_schema_only(self, tid: int, schema: dict) -> None:
        """Keep the table's schema (its id and name unchanged)."""
        self._change("UPDATE tables SET schema_json = %s WHERE tid = %s", (dumps(schema), tid))

    def has_unkeyed_tables(self) -> bool:
        """Whether tables cached before tables were keyed by endpoint remain."""
        return self._row("SELECT 1 FROM tables WHERE endpoint = '' LIMIT 1") is not None

    def adopt_unkeyed_tables(self, endpoint: str) -> int:
        """Tables (their aliases, change feeds) not keyed by endpoint become ``endpoint``'s; returns how many tables."""
        def adopt(conn: Connection) -> int:
            adopted = conn.execute("UPDATE tables SET endpoint = %s WHERE endpoint = ''", (endpoint,)).rowcount
            # SQLite's UPDATE OR IGNORE: a row whose new key is taken stays as it is (then goes).
            conn.execute("UPDATE table_aliases a SET endpoint = %s WHERE a.endpoint = '' AND NOT EXISTS ("
                         "SELECT 1 FROM table_aliases b WHERE b.endpoint = %s AND b.base_id = a.base_id"
                         " AND b.alias = a.alias)", (endpoint, endpoint))
            conn.execute("DELETE FROM table_aliases WHERE endpoint = ''")
            conn.execute("UPDATE webhooks w SET endpoint = %s WHERE w.endpoint = '' AND NOT EXISTS ("
                         "SELECT 1 FROM webhooks o WHERE o.endpoint = %s AND o.base_id = w.base_id)", (endpoint, endpoint))
            return adopted
        return self._in_unit(adopt)

    def drop_table(self, tid: int) -> None:
        """Forget a table (its aliases and statistics) that holds no records."""
        def drop(conn: Connection) -> None:
            conn.execute("DELETE FROM table_aliases WHERE tid = %s", (tid,))
            conn.execute("DELETE FROM stats WHERE tid = %s", (tid,))
            conn.execute("DELETE FROM tables WHERE tid = %s", (tid,))
        self._in_unit(drop)

    def linked_table(self, endpoint: str, base_id: str, table_id: str) -> TableRow | None:
        """The first cached table of this Airtable's base with Airtable id ``table_id``."""
        row = self._row("SELECT * FROM tables WHERE endpoint = %s AND base_id = %s AND table_id = %s ORDER BY tid LIMIT 1",
                        (endpoint, base_id, table_id))
        return None if row is None else table_row(row)


    def table_rows(self, base_id: str | None = None) -> list[dict]:
        """Every cached table's row (of one base), by base and tid."""
        if base_id is None:
            return self._rows('SELECT * FROM tables ORDER BY base_id COLLATE "C", tid')
        return self._rows("SELECT * FROM tables WHERE base_id = %s ORDER BY tid", (base_id,))

    def base_ids(self) -> list[str]:
        """The bases with a cached table (any endpoint)."""
        return self._column("SELECT base_id FROM tables GROUP BY base_id ORDER BY MIN(tid)")

    def tids_named(self, alias: str, base_id: str | None = None) -> list[int]:
        """The tables a name, id or alias designates (in one base, or in any), sorted."""
        if base_id is None:
            return self._column("SELECT DISTINCT tid FROM table_aliases WHERE alias = %s ORDER BY tid", (alias,))
        return self._column("SELECT DISTINCT tid FROM table_aliases WHERE base_id = %s AND alias = %s ORDER BY tid",
                            (base_id, alias))

    def mark_pulled(self, tid: int, at: float) -> None:
        """The table's records are current as of ``at`` (readers' snapshots of it are outdated)."""
        self._change("UPDATE tables SET pulled_at = %s, generation = generation + 1 WHERE tid = %s", (at, tid))

    def endpoint_tables(self, endpoint: str) -> list[dict]:
        """The rows of the tables cached from one endpoint, by tid."""
        return self._rows("SELECT * FROM tables WHERE endpoint = %s ORDER BY tid", (endpoint,))

    def table_tids(self) -> list[int]:
        """Every cached table's tid, in order."""
        return self._column("SELECT tid FROM tables ORDER BY tid")

    def forget_table_pull(self, tid: int) -> None:
        """The table was never pulled: no pull time, no cached schema (readers' snapshots are outdated)."""
        self._change("UPDATE tables SET pulled_at = NULL, schema_json = NULL, generation = generation + 1"
                     " WHERE tid = %s", (tid,))

    def restore_table(self, tid: int, base_id: str, table_id: str | None, name: str | None,
                      schema_json: str | None = None) -> None:
        """Add a table under a known tid (salvage: the tid the queued writes name)."""
        def restore(conn: Connection) -> None:
            conn.execute("INSERT INTO tables (tid, base_id, table_id, name, schema_json) VALUES (%s, %s, %s, %s, %s)",
                         (tid, base_id, table_id, name, schema_json))
            _move_identity_past(conn, "tables", "tid", tid)
        self._in_unit(restore)

    def add_table_aliases(self, aliases: Iterable[tuple[str, str, int]]) -> None:
        """Names (base id, alias, tid) for tables; a name already taken is left as it is."""
        self._change_each("INSERT INTO table_aliases (base_id, alias, tid) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                          aliases)

    # -- records -------------------------------------------------------------------------------

    def has_records(self, tid: int) -> bool:
        """Whether the table holds any record (visible or not)."""
        return self._row("SELECT 1 FROM records WHERE tid = %s LIMIT 1", (tid,)) is not None

    def count_visible(self, tid: int) -> int:
        """How many records of the table reads see."""
        return int(self._value("SELECT count(*) FROM records WHERE tid = %s AND fields_json IS NOT NULL", (tid,)))

    def visible_records(self, tid: int) -> list[dict]:
        """Every record reads see, decoded (id, createdTime, fields, commentCount, lastModifiedTime), in natural order."""
        return [decode_record(row) for row in self._rows(
            f"SELECT {RECORD_COLUMNS} FROM records r WHERE r.tid = %s AND r.fields_json IS NOT NULL ORDER BY r.position",
            (tid,))]

    def visible_records_by_id(self, tid: int, ids: Sequence[str]) -> dict[str, dict]:
        """The records among ``ids`` reads see, decoded, by id."""
        rows = self._rows(f"SELECT {RECORD_COLUMNS} FROM records r WHERE r.tid = %s AND r.fields_json IS NOT NULL"
                          " AND r.id = ANY(%s)", (tid, list(ids)))
        return {row["id"]: decode_record(row) for row in rows}

    def select_records(self, tid: int, selection: Selection, *, limit: int | None = None) -> list[dict]:
        """The visible records a selection matches, decoded, in its order (the first ``limit``); raises QueryTooComplex."""
        return [decode_record(row) for row in self._select(tid, selection, RECORD_COLUMNS, limit)]

    def select_record_ids(self, tid: int, selection: Selection, *, limit: int | None = None) -> list[str]:
        """The ids :meth:`select_records` would return."""
        return [row["id"] for row in self._select(tid, selection, "r.id", limit)]

    def _select(self, tid: int, selection: Selection, columns: str, limit: int | None) -> list[dict[str, Any]]:
        query, params = selection_sql(tid, selection, columns, limit)
        if len(params) > MAX_PARAMS:
            raise QueryTooComplex(f"{len(params)} parameters: more than PostgreSQL binds in one statement")

        def run(conn: Connection) -> list[dict[str, Any]]:
            if conn.info.transaction_status == 0:
                return conn.execute(query, params).fetchall()
            with conn.transaction():  # a savepoint: a refused statement must not end the unit's transaction
                return conn.execute(query, params).fetchall()
        try:
            return self.runner.run(run)
        except psycopg.Error as exc:
            if selection.where and too_big(exc):
                raise QueryTooComplex(str(exc)) from exc
            raise

    def field_values(self, tid: int, name: str) -> dict[str, Any]:
        """Each visible record's value of field ``name`` (None where it has none), by record id."""
        return {row["id"]: loads(row["fields_json"]).get(name) for row in self._rows(
            "SELECT id, fields_json FROM records WHERE tid = %s AND fields_json IS NOT NULL ORDER BY position", (tid,))}

    def field_ever_seen(self, tid: int, name: str) -> bool:
        """Whether Airtable reported a value of field ``name`` for any record of the table."""
        # As SQLite's json_extract: a JSON null is no value. ``json`` (not jsonb) reads any stored text.
        return self._row("SELECT 1 FROM records WHERE tid = %s AND remote_json IS NOT NULL"
                         " AND json_typeof(remote_json::json -> %s) <> 'null' LIMIT 1", (tid, name)) is not None

    def record_visibility(self, tid: int, record_id: str) -> bool | None:
        """Whether reads see the record (False: deleted locally; None: not in the cache)."""
        row = self._row("SELECT fields_json IS NOT NULL AS visible FROM records WHERE tid = %s AND id = %s", (tid, record_id))
        return None if row is None else bool(row["visible"])

    def remote_state(self, tid: int, record_id: str) -> tuple[dict | None, float | None] | None:
        """The record's fields as Airtable last reported them (None: created locally) and when; None if absent."""
        row = self._row("SELECT remote_json, synced_at FROM records WHERE tid = %s AND id = %s", (tid, record_id))
        if row is None:
            return None
        return (None if row["remote_json"] is None else json.loads(row["remote_json"])), row["synced_at"]

    def record_copies(self, tid: int, record_id: str) -> RecordCopies | None:
        """The record's remote fields and the fields reads see; None if absent."""
        row = self._row("SELECT remote_json, fields_json FROM records WHERE tid = %s AND id = %s", (tid, record_id))
        if row is None:
            return None
        return RecordCopies(remote=None if row["remote_json"] is None else json.loads(row["remote_json"]),
                            fields=None if row["fields_json"] is None else json.loads(row["fields_json"]))

    def record_ids(self, tid: int) -> set[str]:
        """Every record id of the table (visible or not)."""
        return set(self._column("SELECT id FROM records WHERE tid = %s", (tid,)))

    def write_fields(self, tid: int, record_id: str, fields: dict, modified_time: str) -> None:
        """The agent wrote the record: reads see ``fields``, modified at ``modified_time``."""
        text = dumps_exact(fields)
        self._change(f"UPDATE records SET {_SET_FIELDS}, modified_time = %s WHERE tid = %s AND id = %s",
                     (text, as_jsonb(text), modified_time, tid, record_id))

    def hide_record(self, tid: int, record_id: str) -> bool:
        """The agent deleted a visible record: reads no longer see it. Returns whether it was visible."""
        return self._change("UPDATE records SET fields_json = NULL, fields = NULL WHERE tid = %s AND id = %s"
                            " AND fields_json IS NOT NULL", (tid, record_id)) > 0

    def set_visible_fields(self, tid: int, record_id: str, fields: dict | None) -> None:
        """What reads see of the record (None: nothing)."""
        text = _text(fields)
        self._change(f"UPDATE records SET {_SET_FIELDS} WHERE tid = %s AND id = %s", (text, as_jsonb(text), tid, record_id))

    def upsert_pulled(self, tid: int, records: Iterable[PulledRecord], *, now: float, now_text: str, started_at: float) -> None:
        """Keep pulled records (remote and visible state, position), unless a flush confirmed one after ``started_at``."""
        rows = []
        for r in records:
            text = dumps_exact(r["fields"])
            rows.append((tid, r["id"], r["position"], r["created_time"], now_text, text, text, as_jsonb(text),
                         r["comment_count"], now, now, started_at))
        self._many(_UPSERT_PULLED, rows)

    def refresh_pulled(self, tid: int, records: Iterable[PulledRecord], *, now: float, started_at: float) -> None:
        """Keep pulled states of records already cached (positions unchanged), unless confirmed after ``started_at``."""
        rows = []
        for r in records:
            text = dumps_exact(r["fields"])
            rows.append((text, text, as_jsonb(text), now, r["comment_count"], tid, r["id"], started_at,
                         text, text, r["comment_count"]))
        self._many(_REFRESH_PULLED, rows)

    def absorb_records(self, tid: int, records: Iterable[PulledRecord], *, now: float, sent_at: float) -> None:
        """Keep records Airtable answered to a request sent at ``sent_at``, unless confirmed after it."""
        rows = []
        for r in records:
            text = dumps_exact(r["fields"])
            rows.append((tid, r["id"], r["position"], r["created_time"], text, text, as_jsonb(text), now, now, sent_at))
        self._many(_ABSORB, rows)

    def drop_records_not_seen(self, tid: int, seen: Iterable[str], *, started_at: float) -> None:
        """Forget records Airtable reported before ``started_at`` that a whole pull did not see."""
        self._change("DELETE FROM records WHERE tid = %s AND remote_json IS NOT NULL AND (synced_at IS NULL OR synced_at <= %s)"
                     " AND NOT (id = ANY(%s))", (tid, started_at, sorted(seen)))

    def set_remote_fields(self, tid: int, record_id: str, fields: dict, synced_at: float | None = None) -> None:
        """The record's fields as Airtable has them now (``synced_at``: when it confirmed them; None keeps the time)."""
        self._change("UPDATE records SET remote_json = %s, synced_at = COALESCE(%s, synced_at) WHERE tid = %s AND id = %s",
                     (dumps_exact(fields), synced_at, tid, record_id))

    def delete_records(self, tid: int, record_ids: Iterable[str], *, only_local: bool = False) -> None:
        """Forget these cached records of one table (``only_local``: only those Airtable never had)."""
        sql = "DELETE FROM records WHERE tid = %s AND id = ANY(%s)" + (" AND remote_json IS NULL" if only_local else "")
        self._change(sql, (tid, list(record_ids)))

    def adopt_record_id(self, tid: int, provisional: str, real: str, fields: dict, created_time: str,
                        synced_at: float) -> None:
        """A local create reached Airtable: the record takes Airtable's id, fields and creation time."""
        def adopt(conn: Connection) -> None:
            conn.execute("DELETE FROM records WHERE tid = %s AND id = %s", (tid, real))
            conn.execute("UPDATE records SET id = %s, remote_json = %s, created_time = %s, synced_at = %s"
                         " WHERE tid = %s AND id = %s",
                         (real, dumps_exact(fields), created_time, synced_at, tid, provisional))
        self._in_unit(adopt)

    def replace_linked_id(self, provisional: str, real: str) -> None:
        """Every cached record's link values naming ``provisional`` name ``real`` instead."""
        mapping = {provisional: real}

        def replace(conn: Connection) -> None:
            rows = conn.execute("SELECT tid, id, fields_json FROM records WHERE fields_json IS NOT NULL"
                                " AND strpos(fields_json, %s) > 0 FOR UPDATE", (provisional,)).fetchall()
            for row in rows:
                text = dumps_exact(replace_ids(json.loads(row["fields_json"]), mapping))
                conn.execute(f"UPDATE records SET {_SET_FIELDS} WHERE tid = %s AND id = %s",
                             (text, as_jsonb(text), row["tid"], row["id"]))
        self._in_unit(replace)

    def remote_ids_seen_by(self, tid: int, at: float) -> set[str]:
        """Ids of the table's records that the cache knew from Airtable at (or before) ``at``."""
        return set(self._column(
            "SELECT id FROM records WHERE tid = %s AND remote_json IS NOT NULL AND (first_seen IS NULL OR first_seen <= %s)",
            (tid, at)))

    def last_position(self, tid: int) -> int:
        """The highest position of the table's records (-1 when it has none)."""
        def last(conn: Connection) -> int:
            # In a write, the table's row is locked: another host's write places its records after these.
            conn.execute("SELECT 1 FROM tables WHERE tid = %s FOR UPDATE", (tid,))
            row = conn.execute("SELECT COALESCE(MAX(position), -1) AS p FROM records WHERE tid = %s", (tid,)).fetchone()
            assert row is not None
            return int(row["p"])
        return self.runner.run(last)

    def merge_changed_records(self, tid: int, records: list[dict], *, now: float, started_at: float,
                              position: int) -> int:
        """Store changed records (as Airtable lists them) not confirmed since; new ones after ``position``; the last."""
        def merge(conn: Connection) -> int:
            last = position
            for record in records:
                text = dumps_exact(clean_fields(record.get("fields") or {}))
                jsonb, comments = as_jsonb(text), record.get("commentCount", 0)
                changed = conn.execute(_MERGE_UPDATE, (text, text, jsonb, comments, now, text, now_iso(now), tid,
                                                       record["id"], started_at)).rowcount
                if changed:
                    continue
                inserted = conn.execute(_MERGE_INSERT, (
                    tid, record["id"], last + 1, record.get("createdTime") or now_iso(now), now_iso(now),
                    text, text, jsonb, comments, now, now)).rowcount
                last += inserted
            return last
        return self._in_unit(merge)

    def delete_destroyed_records(self, endpoint: str, base_id: str, record_ids: Iterable[str], synced_before: float) -> int:
        """Forget records of a base that Airtable deleted (unless synced after ``synced_before``); how many."""
        return self._change(
            "DELETE FROM records WHERE tid IN (SELECT tid FROM tables WHERE base_id = %s AND endpoint = %s)"
            " AND remote_json IS NOT NULL AND (synced_at IS NULL OR synced_at <= %s) AND id = ANY(%s)",
            (base_id, endpoint, synced_before, sorted(record_ids)))

    def remote_ids_missing_from(self, tid: int, present: Iterable[str], synced_before: float) -> list[str]:
        """Ids of records known from Airtable (synced before ``synced_before``) not among ``present``."""
        return self._column(
            "SELECT id FROM records WHERE tid = %s AND remote_json IS NOT NULL AND (synced_at IS NULL OR synced_at <= %s)"
            ' AND NOT (id = ANY(%s)) ORDER BY id COLLATE "C"',
            (tid, synced_before, sorted(present)))

    def move_local_records_after(self, tid: int, position: int) -> None:
        """The agent's own creates (not on Airtable yet) keep their order, after ``position``."""
        def move(conn: Connection) -> None:
            ids = [r["id"] for r in conn.execute(
                "SELECT id FROM records WHERE tid = %s AND remote_json IS NULL ORDER BY position, id COLLATE \"C\""
                " FOR UPDATE", (tid,)).fetchall()]
            for n, rid in enumerate(ids, start=1):
                conn.execute("UPDATE records SET position = %s WHERE tid = %s AND id = %s", (position + n, tid, rid))
        self._in_unit(move)

    def record_counts(self, tid: int) -> dict[str, int]:
        """The table's records reads see (``visible``) and those only local so far (``local_only``)."""
        row = self._row("SELECT COUNT(fields_json) AS visible, COUNT(*) - COUNT(remote_json) AS local_only"
                        " FROM records WHERE tid = %s", (tid,))
        assert row is not None
        return {"visible": int(row["visible"] or 0), "local_only": int(row["local_only"] or 0)}

    def record_count(self) -> int:
        """Every cached record row, of every table."""
        return int(self._value("SELECT COUNT(*) FROM records"))

    def records_json_bytes(self) -> int:
        """Characters of the cached records' remote and visible fields, as stored."""
        return int(self._value("SELECT COALESCE(SUM(LENGTH(COALESCE(remote_json, '')) + LENGTH(COALESCE(fields_json, ''))),"
                               " 0) FROM records"))

    def delete_table_records(self, tid: int, *, keep_queued: bool) -> int:
        """Forget the table's cached records (``keep_queued``: but those queued writes name); how many."""
        if not keep_queued:
            return self._change("DELETE FROM records WHERE tid = %s", (tid,))
        return self._change("DELETE FROM records WHERE tid = %s AND id NOT IN"
                            " (SELECT record_id FROM outbox WHERE tid = %s)", (tid, tid))

    def insert_local_record(self, tid: int, record_id: str, position: int, created_time: str, fields: dict | None) -> None:
        """A record only the queue knows (not on Airtable yet); kept as it is if already there."""
        text = _text(fields)
        self._change("INSERT INTO records (tid, id, position, created_time, modified_time, remote_json, fields_json, fields)"
                     " VALUES (%s, %s, %s, %s, %s, NULL, %s, %s::jsonb) ON CONFLICT DO NOTHING",
                     (tid, record_id, position, created_time, created_time, text, as_jsonb(text)))

    # -- views, view_members -------------------------------------------------------------------

    def view_pulled_at(self, tid: int, view: str) -> float | None:
        """When the view was last pulled (None: never)."""
        return self._value("SELECT pulled_at FROM views WHERE tid = %s AND view = %s", (tid, view))

    def known_views(self, tid: int) -> list[str]:
        """The names of the table's pulled views, sorted."""
        return self._column('SELECT view FROM views WHERE tid = %s ORDER BY view COLLATE "C"', (tid,))

    def replace_view(self, tid: int, view: str, record_ids: Sequence[str], *, pulled_at: float) -> None:
        """The view's members, in its order, as pulled at ``pulled_at``."""
        def replace(conn: Connection) -> None:
            conn.execute("DELETE FROM view_members WHERE tid = %s AND view = %s", (tid, view))
            conn.execute("INSERT INTO views (tid, view, pulled_at) VALUES (%s, %s, %s)"
                         " ON CONFLICT (tid, view) DO UPDATE SET pulled_at = excluded.pulled_at", (tid, view, pulled_at))
            with conn.cursor() as cursor:
                cursor.executemany("INSERT INTO view_members (tid, view, record_id, position) VALUES (%s, %s, %s, %s)",
                                   [(tid, view, rid, i) for i, rid in enumerate(record_ids)])
        self._in_unit(replace)

    def forget_views(self, tids: Iterable[int]) -> None:
        """Which records these tables' views hold, and in what order, is unknown again."""
        self._change("DELETE FROM views WHERE tid = ANY(%s)", (list(tids),))

    def drop_views(self, tid: int) -> None:
        """Forget the table's views and which records they hold."""
        def drop(conn: Connection) -> None:
            conn.execute("DELETE FROM view_members WHERE tid = %s", (tid,))
            conn.execute("DELETE FROM views WHERE tid = %s", (tid,))
        self._in_unit(drop)

    # -- indexes and full-text search ----------------------------------------------------------

    def field_index(self, field: str) -> str | None:
        """The name of the index on one field's value (None: the field cannot be indexed)."""
        return field_index_name(field) if indexable_field_name(field) else None

    def field_indexes(self) -> set[str]:
        """The names of the field indexes that exist."""
        return set(self._column("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
                                " AND tablename = 'records' AND indexname LIKE 'records\\_by\\_%%'"))

    def add_field_index(self, field: str) -> str | None:
        """Index one field's value (if it can be); returns the index's name."""
        expression = DIALECTS["postgres"].field_value(field, "fields")
        if expression is None:
            return None
        index = field_index_name(field)

        def add(conn: Connection) -> None:
            # Hosts adding the same index at once: one creates it, the others then find it.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (index,))
            conn.execute(f'CREATE INDEX IF NOT EXISTS "{index}" ON records (tid, {expression})')
        self._in_unit(add)
        return index

    def search_records(self, tid: int, words: Sequence[str]) -> list[dict]:
        """Visible records with a word starting with each of ``words`` (any case, accents folded), best first."""
        # Each word is made only of word characters (engine/search.py): a prefix term of tsquery.
        query = " & ".join(f"{w}:*" for w in words)
        return [decode_record(row) for row in self._rows(
            f"SELECT {RECORD_COLUMNS} FROM records r, to_tsquery('simple', unaccent(%s)) q"
            " WHERE r.tid = %s AND r.fields_json IS NOT NULL AND r.body @@ q"
            " ORDER BY ts_rank(r.body, q, 1) DESC, r.position", (query, tid))]


    # -- conflicts -----------------------------------------------------------------------------

    def log_conflicts(self, tid: int, record_id: str, lost: dict[str, tuple[Any, Any]], *, at: float) -> None:
        """Log the local values dropped for Airtable's (``lost``: field -> (local, remote))."""
        self._many("INSERT INTO conflicts (at, tid, record_id, field, local_value, remote_value) VALUES (%s, %s, %s, %s, %s, %s)",
                   [(at, tid, record_id, name, dumps_exact(local), dumps_exact(remote))
                    for name, (local, remote) in sorted(lost.items())])

    def prune_conflicts(self, before: float) -> int:
        """Forget conflicts logged before ``before``; how many."""
        return self._change("DELETE FROM conflicts WHERE at < %s", (before,))

    # -- refresh state, change feeds (webhooks), token grants ----------------------------------

    def token_salt(self) -> bytes:
        """This cache's random salt for token digests."""
        return bytes(self._value("SELECT salt FROM token_salt"))

    def token_granted_at(self, key: str, digest: str) -> float | None:
        """When the token with this digest was last seen to read the base ``key`` (None: never)."""
        return self._value("SELECT granted_at FROM token_grants WHERE base_id = %s AND digest = %s", (key, digest))

    def grant_token(self, key: str, digest: str, *, at: float) -> None:
        """The token with this digest was seen to read the base ``key`` at ``at``."""
        self._change("INSERT INTO token_grants (base_id, digest, granted_at) VALUES (%s, %s, %s)"
                     " ON CONFLICT (base_id, digest) DO UPDATE SET granted_at = excluded.granted_at", (key, digest, at))

    def refresh_state(self, tid: int) -> dict:
        """The table's refresh bookkeeping (watermark, last pulls, counters); empty if none yet."""
        return self._row("SELECT * FROM refresh_state WHERE tid = %s", (tid,)) or {}

    _ENSURE_STATE = "INSERT INTO refresh_state (tid) VALUES (%s) ON CONFLICT (tid) DO NOTHING"

    def count_refresh_requests(self, tid: int, kind: str, requests: int) -> None:
        """Add ``requests`` to what ``kind`` (full or incremental) refreshes of the table cost."""
        column = {"full": "full_requests", "incremental": "incremental_requests"}[kind]
        self._change(f"UPDATE refresh_state SET {column} = {column} + %s WHERE tid = %s", (requests, tid))

    def _update_state(self, tid: int, query: str, params: Sequence[Any]) -> None:
        def update(conn: Connection) -> None:
            conn.execute(self._ENSURE_STATE, (tid,))
            conn.execute(query, params)
        self._in_unit(update)

    def record_full_refresh(self, tid: int, *, watermark: float | None, at: float, hook_id: str | None,
                            source: str, requests: int) -> None:
        """A full pull committed: its watermark, time, the webhook covering it and its cost."""
        self._update_state(tid, (
            "UPDATE refresh_state SET watermark = %s, last_full = %s, last_sweep = %s, hook_id = %s,"
            " source = %s, full_pulls = full_pulls + 1, full_requests = full_requests + %s WHERE tid = %s"),
            (watermark, at, at, hook_id, source, requests, tid))

    def record_incremental_refresh(self, tid: int, *, watermark: float | None, at: float, swept: bool,
                                   source: str, requests: int) -> None:
        """An incremental refresh committed (``watermark`` None keeps the old one)."""
        self._update_state(tid, (
            "UPDATE refresh_state SET watermark = COALESCE(%s, watermark), last_incremental = %s,"
            " last_sweep = CASE WHEN %s THEN %s ELSE last_sweep END, source = %s,"
            " incremental_pulls = incremental_pulls + 1, incremental_requests = incremental_requests + %s WHERE tid = %s"),
            (watermark, at, bool(swept), at, source, requests, tid))

    def count_stale_served(self, tid: int) -> None:
        """One more stale read of the table answered at once."""
        self._update_state(tid, "UPDATE refresh_state SET stale_served = stale_served + 1 WHERE tid = %s", (tid,))

    def forget_feed_coverage(self, endpoint: str, base_id: str) -> None:
        """No table of the base is covered by its change feed any more (each gets a full pull)."""
        self._change("UPDATE refresh_state SET hook_id = NULL WHERE tid IN"
                     " (SELECT tid FROM tables WHERE base_id = %s AND endpoint = %s)", (base_id, endpoint))

    def refresh_counts(self) -> list[dict]:
        """Per table (base, label, refresh_state counters), ordered by base and table."""
        return self._rows(
            "SELECT t.base_id, COALESCE(t.name, t.table_id) AS label, s.* FROM refresh_state s JOIN tables t USING (tid)"
            ' ORDER BY t.base_id COLLATE "C", t.tid')

    def webhook(self, endpoint: str, base_id: str) -> dict | None:
        """This cache's change feed on a base (id, cursor, expiry, refusal), if any."""
        return self._row("SELECT * FROM webhooks WHERE endpoint = %s AND base_id = %s", (endpoint, base_id))

    def usable_webhook_id(self, endpoint: str, base_id: str) -> str | None:
        """The id of the base's webhook unless Airtable refused one."""
        return self._value("SELECT webhook_id FROM webhooks WHERE endpoint = %s AND base_id = %s AND denied_at IS NULL",
                           (endpoint, base_id))

    def save_webhook(self, endpoint: str, base_id: str, webhook_id: str | None, *, cursor: int,
                     expires_at: float | None, now: float, denied_why: str | None) -> None:
        """Keep the base's webhook (a new id restarts its creation time; expiry None keeps the old)."""
        self._change(
            "INSERT INTO webhooks (endpoint, base_id, webhook_id, cursor, expires_at, created_at, denied_at, denied_why)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (endpoint, base_id) DO UPDATE SET"
            " webhook_id = excluded.webhook_id, cursor = excluded.cursor,"
            " expires_at = COALESCE(excluded.expires_at, webhooks.expires_at),"
            " created_at = CASE WHEN webhooks.webhook_id IS NOT DISTINCT FROM excluded.webhook_id"
            " THEN webhooks.created_at ELSE excluded.created_at END,"
            " denied_at = excluded.denied_at, denied_why = excluded.denied_why",
            (endpoint, base_id, webhook_id, cursor, expires_at, now, now if denied_why else None, denied_why))

    def advance_webhook(self, endpoint: str, base_id: str, webhook_id: str, cursor: int, read_at: float) -> None:
        """Payloads were read up to ``cursor`` (the cursor never moves back)."""
        self._change("UPDATE webhooks SET cursor = GREATEST(cursor, %s), read_at = %s"
                     " WHERE endpoint = %s AND base_id = %s AND webhook_id = %s",
                     (cursor, read_at, endpoint, base_id, webhook_id))

    def set_webhook_expiry(self, endpoint: str, base_id: str, expires_at: float | None) -> None:
        """Airtable extended the base's webhook until ``expires_at``."""
        self._change("UPDATE webhooks SET expires_at = %s WHERE endpoint = %s AND base_id = %s",
                     (expires_at, endpoint, base_id))

    def delete_webhook(self, endpoint: str, base_id: str, webhook_id: str) -> None:
        """Forget a webhook removed from Airtable."""
        self._change("DELETE FROM webhooks WHERE endpoint = %s AND base_id = %s AND webhook_id = %s",
                     (endpoint, base_id, webhook_id))

    def webhooks(self) -> list[dict]:
        """Every webhook this cache keeps, by base."""
        return self._rows('SELECT * FROM webhooks ORDER BY base_id COLLATE "C", endpoint COLLATE "C"')

    def webhook_ids(self, endpoint: str) -> dict[str, str | None]:
        """Base id -> this cache's webhook id on it, for one endpoint."""
        return {r["base_id"]: r["webhook_id"] for r in self._rows(
            "SELECT base_id, webhook_id FROM webhooks WHERE endpoint = %s", (endpoint,))}

    # -- sync_log and statistics ---------------------------------------------------------------

    def add_statistics(self, counts: dict[tuple[int, str], tuple[int, float]], latencies: list[tuple[int, str, float]]) -> None:
        """Add read counts and total milliseconds per (tid, kind), and single latencies."""
        def add(conn: Connection) -> None:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO stats (tid, kind, count, total_ms) VALUES (%s, %s, %s, %s)"
                                " ON CONFLICT (tid, kind) DO UPDATE SET count = stats.count + excluded.count,"
                                " total_ms = stats.total_ms + excluded.total_ms",
                                [(tid, kind, c, ms) for (tid, kind), (c, ms) in sorted(counts.items())])
                cur.executemany("INSERT INTO latencies (tid, kind, ms) VALUES (%s, %s, %s)", latencies)
        self._in_unit(add)
    def log_request(self, at: float, base_id: str, kind: str, method: str, status: int | None) -> None:
        """One request sent to Airtable (``status`` None: no answer)."""
        self._change("INSERT INTO sync_log (at, base_id, kind, method, status) VALUES (%s, %s, %s, %s, %s)",
                     (at, base_id, kind, method, status))

    def bases_logged_since(self, since: float) -> set[str]:
        """Bases with a request logged since ``since``."""
        return set(self._column("SELECT DISTINCT base_id FROM sync_log WHERE at >= %s", (since,)))

    def request_counts(self, base_id: str, since: float) -> tuple[int, int]:
        """Requests sent to a base since ``since``, and how many of them Airtable rate-limited (429)."""
        row = self._row("SELECT COUNT(*) AS sent, COUNT(*) FILTER (WHERE status = 429) AS limited FROM sync_log"
                        " WHERE base_id = %s AND at >= %s", (base_id, since))
        assert row is not None
        return int(row["sent"]), int(row["limited"])

    def request_totals(self) -> tuple[int, int]:
        """Every request logged, and how many of them Airtable rate-limited (429)."""
        row = self._row("SELECT COUNT(*) AS sent, COUNT(*) FILTER (WHERE status = 429) AS limited FROM sync_log")
        assert row is not None
        return int(row["sent"]), int(row["limited"])

    def requests_by_kind(self) -> list[tuple[str, int | None, int]]:
        """(kind, status, count) of the requests logged (status None: no answer)."""
        return [(r["kind"], r["status"], int(r["n"])) for r in self._rows(
            'SELECT kind, status, COUNT(*) AS n FROM sync_log GROUP BY kind, status'
            ' ORDER BY kind COLLATE "C", status NULLS FIRST')]

    def prune_request_log(self, before: float) -> int:
        """Forget requests logged before ``before``; how many."""
        return self._change("DELETE FROM sync_log WHERE at < %s", (before,))

    def trim_latency_samples(self, keep: int) -> int:
        """Keep only the newest ``keep`` latency samples per table and kind; how many were dropped."""
        return self._change(
            "DELETE FROM latencies WHERE id IN (SELECT id FROM ("
            " SELECT id, ROW_NUMBER() OVER (PARTITION BY tid, kind ORDER BY id DESC) AS n FROM latencies"
            ") AS ranked WHERE n > %s)", (keep,))

    def latency_samples(self) -> dict[tuple[int, str], list[float]]:
        """The kept latency samples (ms), per table and kind, oldest first."""
        samples: dict[tuple[int, str], list[float]] = {}
        for row in self._rows("SELECT tid, kind, ms FROM latencies ORDER BY id"):
            samples.setdefault((row["tid"], row["kind"]), []).append(row["ms"])
        return samples

    def read_counts(self) -> list[dict]:
        """Per table and kind of read: how many, and their total time (ms), by tid and kind."""
        return self._rows('SELECT tid, kind, count, total_ms FROM stats ORDER BY tid, kind COLLATE "C"')

    def read_count(self, kinds: Iterable[str]) -> int:
        """How many reads of these kinds were counted, over every table."""
        return int(self._value("SELECT COALESCE(SUM(count), 0)::bigint FROM stats WHERE kind = ANY(%s)", (list(kinds),)))

    # -- whole-file checks (``check``) -----------------------------------------------------------

    def garbled_records(self) -> list[dict]:
        """Per table with cached records whose stored JSON no longer parses: tid, label, how many (n)."""
        rows = self._rows(
            "SELECT r.tid, COALESCE(t.name, t.table_id) AS label, COUNT(*) AS n FROM records r"
            " LEFT JOIN tables t ON t.tid = r.tid"
            " WHERE (r.fields_json IS NOT NULL AND NOT atc_json_valid(r.fields_json))"
            " OR (r.remote_json IS NOT NULL AND NOT atc_json_valid(r.remote_json))"
            " GROUP BY r.tid, t.name, t.table_id ORDER BY r.tid")
        return [{"tid": r["tid"], "label": r["tid"] if r["label"] is None else r["label"], "n": int(r["n"])} for r in rows]


def _move_identity_past(conn: Connection, table: str, column: str, value: int) -> None:
    """An explicit key does not move the identity on: the next generated one must come after it."""
    conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), GREATEST(%s, COALESCE("
                 f"pg_sequence_last_value(pg_get_serial_sequence('{table}', '{column}')::regclass), 0)))", (value,))


if TYPE_CHECKING:  # mypy checks that the class keeps the contract

    def _keeps_the_contract(runner: Runner) -> Replica:
        return PostgresReplica(runner)
