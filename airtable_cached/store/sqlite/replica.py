"""The records replica in SQLite: all SQL on the replica's tables (see ``schema.py``).

Methods are grouped by the table they own; a statement that reads several tables sits with the one
it is about.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from airtable_cached.formula.sql import DIALECTS, indexable_field_name
from airtable_cached.rules.records import clean_fields, dumps, loads, now_iso, replace_ids
from airtable_cached.store.contract import PulledRecord, QueryTooComplex, RecordCopies, Selection, TableRow

#: Ids bound per statement (SQLite's default limit on variables is far above; this keeps plans small).
_CHUNK = 500
#: A record's columns in the order :func:`decode_record` reads them.
_RECORD_COLUMNS = "r.id, r.created_time, r.modified_time, r.fields, r.comment_count"



def decode_record(row: Sequence[Any]) -> dict:
    """A stored row (id, created_time, modified_time, fields, comment_count) as the engine's record."""
    record = {"id": row[0], "createdTime": row[1], "fields": loads(row[3]), "commentCount": row[4]}
    if row[2]:
        record["lastModifiedTime"] = row[2]
    return record


def register_sql_functions(conn: sqlite3.Connection) -> None:
    """Give a new connection the SQL functions compiled formulas may call (``Store(on_connect=...)``)."""
    from airtable_cached.formula import register_sql_functions as register

    register(conn)


def _too_big_for_sql(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused a compiled formula for its size, not for an error in it."""
    text = str(exc).lower()
    return any(m in text for m in ("too large", "too many sql variables", "parser stack overflow", "too deep"))


def _table_row(row: sqlite3.Row) -> TableRow:
    return TableRow(
        tid=row["tid"], endpoint=row["endpoint"], base_id=row["base_id"], table_id=row["table_id"], name=row["name"],
        schema=json.loads(row["schema_json"]) if row["schema_json"] else None, pulled_at=row["pulled_at"],
    )


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def field_index_name(field: str) -> str:
    return "records_by_" + hashlib.sha1(field.encode()).hexdigest()[:16]


def json_path(name: str) -> str:
    return '$."' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SqliteReplica:
    """:class:`airtable_cached.store.contract.Replica` on one SQLite connection."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    # -- tables, table_aliases, schema ---------------------------------------------------------
    def table_by_alias(self, endpoint: str, base_id: str, alias: str) -> TableRow | None:
        row = self.conn.execute(
            "SELECT t.* FROM table_aliases a JOIN tables t USING (tid) WHERE a.endpoint = ? AND a.base_id = ? AND a.alias = ?",
            (endpoint, base_id, alias),
        ).fetchone()
        return None if row is None else _table_row(row)
    def table_by_id_or_name(self, endpoint: str, base_id: str, ref: str) -> TableRow | None:
        row = self.conn.execute(
            "SELECT * FROM tables WHERE endpoint = ? AND base_id = ? AND (table_id = ? OR name = ?) ORDER BY tid LIMIT 1",
            (endpoint, base_id, ref, ref),
        ).fetchone()
        return None if row is None else _table_row(row)
    def table(self, tid: int) -> TableRow | None:
        row = self.conn.execute("SELECT * FROM tables WHERE tid = ?", (tid,)).fetchone()
        return None if row is None else _table_row(row)
    def add_table(self, endpoint: str, base_id: str, table_id: str | None, name: str | None) -> int:
        cur = self.conn.execute(
            "INSERT INTO tables (endpoint, base_id, table_id, name) VALUES (?, ?, ?, ?)", (endpoint, base_id, table_id, name)
        )
        assert cur.lastrowid is not None
        return cur.lastrowid
    def add_alias(self, endpoint: str, base_id: str, alias: str, tid: int) -> None:
        self.conn.execute(
            "INSERT INTO table_aliases (endpoint, base_id, alias, tid) VALUES (?, ?, ?, ?)", (endpoint, base_id, alias, tid)
        )
    def alias_taken(self, endpoint: str, base_id: str, alias: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM table_aliases WHERE endpoint = ? AND base_id = ? AND alias = ?", (endpoint, base_id, alias)
        ).fetchone() is not None
    def set_schema(self, tid: int, schema: dict) -> None:
        self.conn.execute(
            "UPDATE tables SET schema_json = ?, table_id = ?, name = ? WHERE tid = ?",
            (dumps(schema), schema.get("id"), schema.get("name"), tid),
        )
    def set_schema_only(self, tid: int, schema: dict) -> None:
        self.conn.execute("UPDATE tables SET schema_json = ? WHERE tid = ?", (dumps(schema), tid))
    def has_unkeyed_tables(self) -> bool:
        return self.conn.execute("SELECT 1 FROM tables WHERE endpoint = '' LIMIT 1").fetchone() is not None
    def adopt_unkeyed_tables(self, endpoint: str) -> int:
        adopted = self.conn.execute("UPDATE tables SET endpoint = ? WHERE endpoint = ''", (endpoint,)).rowcount
        self.conn.execute("UPDATE OR IGNORE table_aliases SET endpoint = ? WHERE endpoint = ''", (endpoint,))
        self.conn.execute("DELETE FROM table_aliases WHERE endpoint = ''")
        self.conn.execute("UPDATE OR IGNORE webhooks SET endpoint = ? WHERE endpoint = ''", (endpoint,))
        return adopted
    def drop_table(self, tid: int) -> None:
        self.conn.execute("DELETE FROM table_aliases WHERE tid = ?", (tid,))
        self.conn.execute("DELETE FROM stats WHERE tid = ?", (tid,))
        self.conn.execute("DELETE FROM tables WHERE tid = ?", (tid,))
    def linked_table(self, endpoint: str, base_id: str, table_id: str) -> TableRow | None:
        row = self.conn.execute(
            "SELECT * FROM tables WHERE endpoint = ? AND base_id = ? AND table_id = ? ORDER BY tid LIMIT 1",
            (endpoint, base_id, table_id),
        ).fetchone()
        return None if row is None else _table_row(row)

    def table_rows(self, base_id: str | None = None) -> list[dict]:
        """Every cached table's row (of one base), by base and tid."""
        if base_id is None:
            return [dict(r) for r in self.conn.execute("SELECT * FROM tables ORDER BY base_id, tid")]
        return [dict(r) for r in self.conn.execute("SELECT * FROM tables WHERE base_id = ? ORDER BY base_id, tid", (base_id,))]

    def base_ids(self) -> list[str]:
        """The bases with a cached table (any endpoint)."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT base_id FROM tables")]

    def endpoint_base_ids(self) -> set[tuple[str, str]]:
        """(endpoint, base id) of every cached table (a file from before the cache was keyed by
        endpoint has no such column: ``sqlite3.OperationalError``)."""
        return {(r[0], r[1]) for r in self.conn.execute("SELECT DISTINCT endpoint, base_id FROM tables")}

    def tids_named(self, alias: str, base_id: str | None = None) -> list[int]:
        """The tables a name, id or alias designates (in one base, or in any), sorted."""
        if base_id is None:
            rows = self.conn.execute("SELECT DISTINCT tid FROM table_aliases WHERE alias = ?", (alias,))
        else:
            rows = self.conn.execute("SELECT tid FROM table_aliases WHERE base_id = ? AND alias = ?", (base_id, alias))
        return sorted({r[0] for r in rows})

    def mark_pulled(self, tid: int, at: float) -> None:
        """The table's records are current as of ``at`` (readers' snapshots of it are outdated)."""
        self.conn.execute("UPDATE tables SET pulled_at = ?, generation = generation + 1 WHERE tid = ?", (at, tid))

    def endpoint_tables(self, endpoint: str) -> list[dict]:
        """The rows of the tables cached from one endpoint, by tid."""
        return [dict(r) for r in self.conn.execute("SELECT * FROM tables WHERE endpoint = ? ORDER BY tid", (endpoint,))]

    def table_tids(self) -> list[int]:
        """Every cached table's tid, in order."""
        return [r[0] for r in self.conn.execute("SELECT tid FROM tables ORDER BY tid")]

    def forget_table_pull(self, tid: int) -> None:
        """The table was never pulled: no pull time, no cached schema (readers' snapshots are outdated)."""
        self.conn.execute("UPDATE tables SET pulled_at = NULL, schema_json = NULL, generation = generation + 1 WHERE tid = ?",
                          (tid,))

    def restore_table(self, tid: int, base_id: str, table_id: str | None, name: str | None,
                      schema_json: str | None = None) -> None:
        """Add a table under a known tid (salvage: the tid the queued writes name)."""
        self.conn.execute("INSERT INTO tables (tid, base_id, table_id, name, schema_json) VALUES (?, ?, ?, ?, ?)",
                          (tid, base_id, table_id, name, schema_json))

    def add_table_aliases(self, aliases: Iterable[tuple[str, str, int]]) -> None:
        """Names (base id, alias, tid) for tables; a name already taken is left as it is."""
        self.conn.executemany("INSERT INTO table_aliases (base_id, alias, tid) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                              list(aliases))

    # -- records -------------------------------------------------------------------------------
    def has_records(self, tid: int) -> bool:
        return self.conn.execute("SELECT 1 FROM records WHERE tid = ? LIMIT 1", (tid,)).fetchone() is not None
    def count_visible(self, tid: int) -> int:
        return self.conn.execute("SELECT count(*) FROM records WHERE tid = ? AND fields IS NOT NULL", (tid,)).fetchone()[0]
    def visible_records(self, tid: int) -> list[dict]:
        rows = self.conn.execute(
            "SELECT id, created_time, modified_time, fields, comment_count FROM records"
            " WHERE tid = ? AND fields IS NOT NULL ORDER BY position",
            (tid,),
        ).fetchall()
        return [decode_record(row) for row in rows]
    def visible_records_by_id(self, tid: int, ids: Sequence[str]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            for row in self.conn.execute(
                "SELECT id, created_time, modified_time, fields, comment_count FROM records"
                f" WHERE tid = ? AND fields IS NOT NULL AND id IN ({_marks(chunk)})",
                [tid, *chunk],
            ):
                found[row[0]] = decode_record(row)
        return found
    def select_records(self, tid: int, selection: Selection, *, limit: int | None = None) -> list[dict]:
        return [decode_record(row) for row in self._select(tid, selection, _RECORD_COLUMNS, limit)]
    def select_record_ids(self, tid: int, selection: Selection, *, limit: int | None = None) -> list[str]:
        return [row[0] for row in self._select(tid, selection, "r.id", limit)]
    def _select(self, tid: int, selection: Selection, columns: str, limit: int | None) -> list[sqlite3.Row]:
        sql, args = _selection_sql(tid, selection, columns)
        if limit is not None:
            sql, args = sql + " LIMIT ?", [*args, limit]
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if selection.where and _too_big_for_sql(exc):
                raise QueryTooComplex(str(exc)) from exc
            raise
    def field_values(self, tid: int, name: str) -> dict[str, Any]:
        return {
            row[0]: json.loads(row[1]).get(name)
            for row in self.conn.execute("SELECT id, fields FROM records WHERE tid = ? AND fields IS NOT NULL", (tid,))
        }
    def field_ever_seen(self, tid: int, name: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM records WHERE tid = ? AND json_extract(remote, ?) IS NOT NULL LIMIT 1", (tid, json_path(name))
        ).fetchone() is not None
    def record_visibility(self, tid: int, record_id: str) -> bool | None:
        row = self.conn.execute("SELECT fields IS NOT NULL FROM records WHERE tid = ? AND id = ?", (tid, record_id)).fetchone()
        return None if row is None else bool(row[0])
    def remote_state(self, tid: int, record_id: str) -> tuple[dict | None, float | None] | None:
        row = self.conn.execute("SELECT remote, synced_at FROM records WHERE tid = ? AND id = ?", (tid, record_id)).fetchone()
        if row is None:
            return None
        return (json.loads(row[0]) if row[0] is not None else None), row[1]
    def record_copies(self, tid: int, record_id: str) -> RecordCopies | None:
        row = self.conn.execute("SELECT remote, fields FROM records WHERE tid = ? AND id = ?", (tid, record_id)).fetchone()
        if row is None:
            return None
        return RecordCopies(remote=None if row[0] is None else json.loads(row[0]),
                            fields=None if row[1] is None else json.loads(row[1]))
    def record_ids(self, tid: int) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT id FROM records WHERE tid = ?", (tid,))}
    def last_position(self, tid: int) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(position), -1) FROM records WHERE tid = ?", (tid,)).fetchone()[0]
    def write_fields(self, tid: int, record_id: str, fields: dict, modified_time: str) -> None:
        self.conn.execute(
            "UPDATE records SET fields = ?, modified_time = ? WHERE tid = ? AND id = ?",
            (dumps(fields), modified_time, tid, record_id),
        )
    def hide_record(self, tid: int, record_id: str) -> bool:
        return self.conn.execute(
            "UPDATE records SET fields = NULL WHERE tid = ? AND id = ? AND fields IS NOT NULL", (tid, record_id)
        ).rowcount > 0
    def set_visible_fields(self, tid: int, record_id: str, fields: dict | None) -> None:
        self.conn.execute(
            "UPDATE records SET fields = ? WHERE tid = ? AND id = ?", (None if fields is None else dumps(fields), tid, record_id)
        )
    def upsert_pulled(self, tid: int, records: Iterable[PulledRecord], *, now: float, now_text: str, started_at: float) -> None:
        for r in records:
            fields_json = dumps(r["fields"])
            self.conn.execute(
                "INSERT INTO records (tid, id, position, created_time, modified_time, remote, fields, comment_count, synced_at, first_seen)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (tid, id) DO UPDATE SET position = excluded.position, remote = excluded.remote,"
                " fields = excluded.fields, comment_count = excluded.comment_count, synced_at = excluded.synced_at,"
                " modified_time = CASE WHEN records.remote IS excluded.remote THEN records.modified_time ELSE excluded.modified_time END"
                # A flush confirmed this record after the pull began: its state is newer than the page's.
                " WHERE (records.synced_at IS NULL OR records.synced_at <= ?)"
                # A row the pull would leave as it is, is not rewritten (issue 11: a refresh
                # costs what changed; synced_at is when remote was last *set*).
                " AND (records.remote IS NOT excluded.remote OR records.fields IS NOT excluded.fields"
                " OR records.position IS NOT excluded.position OR records.comment_count IS NOT excluded.comment_count)",
                (tid, r["id"], r["position"], r["created_time"], now_text,
                 fields_json, fields_json, r["comment_count"], now, now, started_at),
            )
    def refresh_pulled(self, tid: int, records: Iterable[PulledRecord], *, now: float, started_at: float) -> None:
        for r in records:
            fields_json = dumps(r["fields"])
            self.conn.execute(
                "UPDATE records SET remote = ?, fields = ?, synced_at = ?, comment_count = ? WHERE tid = ? AND id = ?"
                " AND (synced_at IS NULL OR synced_at <= ?)"
                " AND (remote IS NOT ? OR fields IS NOT ? OR comment_count IS NOT ?)",
                (fields_json, fields_json, now, r["comment_count"], tid, r["id"], started_at,
                 fields_json, fields_json, r["comment_count"]),
            )
    def absorb_records(self, tid: int, records: Iterable[PulledRecord], *, now: float, sent_at: float) -> None:
        for r in records:
            fields_json = dumps(r["fields"])
            self.conn.execute(
                "INSERT INTO records (tid, id, position, created_time, remote, fields, synced_at, first_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (tid, id) DO UPDATE SET remote = excluded.remote, fields = excluded.fields, synced_at = excluded.synced_at"
                " WHERE records.synced_at IS NULL OR records.synced_at <= ?",
                (tid, r["id"], r["position"], r["created_time"], fields_json, fields_json, now, now, sent_at),
            )
    def drop_records_not_seen(self, tid: int, seen: Iterable[str], *, started_at: float) -> None:
        self.conn.execute(
            "DELETE FROM records WHERE tid = ? AND remote IS NOT NULL AND (synced_at IS NULL OR synced_at <= ?)"
            " AND id NOT IN (SELECT value FROM json_each(?))",
            (tid, started_at, dumps(sorted(seen))),
        )

    def set_remote_fields(self, tid: int, record_id: str, fields: dict, synced_at: float | None = None) -> None:
        """The record's fields as Airtable has them now (``synced_at``: when it confirmed them; None keeps the time)."""
        self.conn.execute("UPDATE records SET remote = ?, synced_at = COALESCE(?, synced_at) WHERE tid = ? AND id = ?",
                          (dumps(fields), synced_at, tid, record_id))

    def delete_records(self, tid: int, record_ids: Iterable[str], *, only_local: bool = False) -> None:
        """Forget these cached records of one table (``only_local``: only those Airtable never had)."""
        sql = "DELETE FROM records WHERE tid = ? AND id = ?" + (" AND remote IS NULL" if only_local else "")
        self.conn.executemany(sql, [(tid, rid) for rid in record_ids])

    def adopt_record_id(self, tid: int, provisional: str, real: str, fields: dict, created_time: str,
                        synced_at: float) -> None:
        """A local create reached Airtable: the record takes Airtable's id, fields and creation time."""
        self.conn.execute("DELETE FROM records WHERE tid = ? AND id = ?", (tid, real))
        self.conn.execute(
            "UPDATE records SET id = ?, remote = ?, created_time = ?, synced_at = ? WHERE tid = ? AND id = ?",
            (real, dumps(fields), created_time, synced_at, tid, provisional),
        )

    def replace_linked_id(self, provisional: str, real: str) -> None:
        """Every cached record's link values naming ``provisional`` name ``real`` instead."""
        mapping = {provisional: real}
        rows = self.conn.execute(
            "SELECT tid, id, fields FROM records WHERE fields IS NOT NULL AND instr(fields, ?) > 0", (provisional,)
        ).fetchall()
        self.conn.executemany("UPDATE records SET fields = ? WHERE tid = ? AND id = ?",
                              [(dumps(replace_ids(json.loads(fields), mapping)), tid, rid) for tid, rid, fields in rows])

    def remote_ids_seen_by(self, tid: int, at: float) -> set[str]:
        """Ids of the table's records that the cache knew from Airtable at (or before) ``at``."""
        return {r[0] for r in self.conn.execute(
            "SELECT id FROM records WHERE tid = ? AND remote IS NOT NULL AND (first_seen IS NULL OR first_seen <= ?)",
            (tid, at),
        )}

    def merge_changed_records(self, tid: int, records: list[dict], *, now: float, started_at: float,
                              position: int) -> int:
        """Store changed records (as Airtable lists them) not confirmed since; new ones after ``position``; the last."""
        for record in records:
            fields_json = dumps(clean_fields(record.get("fields") or {}))
            comments = record.get("commentCount", 0)
            changed = self.conn.execute(
                "UPDATE records SET remote = ?, fields = ?, comment_count = ?, synced_at = ?,"
                " modified_time = CASE WHEN remote IS ? THEN modified_time ELSE ? END"
                " WHERE tid = ? AND id = ? AND (synced_at IS NULL OR synced_at <= ?)",
                (fields_json, fields_json, comments, now, fields_json, now_iso(now), tid, record["id"], started_at),
            ).rowcount
            if changed or self.conn.execute("SELECT 1 FROM records WHERE tid = ? AND id = ?", (tid, record["id"])).fetchone():
                continue
            position += 1
            self.conn.execute(
                "INSERT INTO records (tid, id, position, created_time, modified_time, remote, fields, comment_count,"
                " synced_at, first_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (tid, record["id"], position, record.get("createdTime") or now_iso(now), now_iso(now),
                 fields_json, fields_json, comments, now, now),
            )
        return position

    def delete_destroyed_records(self, endpoint: str, base_id: str, record_ids: Iterable[str], synced_before: float) -> int:
        """Forget records of a base that Airtable deleted (unless synced after ``synced_before``); how many."""
        return self.conn.execute(
            "DELETE FROM records WHERE tid IN (SELECT tid FROM tables WHERE base_id = ? AND endpoint = ?)"
            " AND remote IS NOT NULL AND (synced_at IS NULL OR synced_at <= ?) AND id IN (SELECT value FROM json_each(?))",
            (base_id, endpoint, synced_before, dumps(sorted(record_ids))),
        ).rowcount

    def remote_ids_missing_from(self, tid: int, present: Iterable[str], synced_before: float) -> list[str]:
        """Ids of records known from Airtable (synced before ``synced_before``) not among ``present``."""
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM records WHERE tid = ? AND remote IS NOT NULL AND (synced_at IS NULL OR synced_at <= ?)"
            " AND id NOT IN (SELECT value FROM json_each(?))",
            (tid, synced_before, dumps(sorted(present))),
        )]

    def move_local_records_after(self, tid: int, position: int) -> None:
        """The agent's own creates (not on Airtable yet) keep their order, after ``position``."""
        ids = [r[0] for r in self.conn.execute(
            "SELECT id FROM records WHERE tid = ? AND remote IS NULL ORDER BY position", (tid,)).fetchall()]
        self.conn.executemany("UPDATE records SET position = ? WHERE tid = ? AND id = ?",
                              [(position + n, tid, rid) for n, rid in enumerate(ids, start=1)])

    # Asked by the operator commands (status, reset, queue, salvage).

    def record_counts(self, tid: int) -> dict[str, int]:
        """The table's records reads see (``visible``) and those only local so far (``local_only``)."""
        row = self.conn.execute(
            "SELECT COUNT(fields) AS visible, COUNT(*) - COUNT(remote) AS local_only FROM records WHERE tid = ?",
            (tid,),
        ).fetchone()
        return {"visible": row["visible"] or 0, "local_only": row["local_only"] or 0}

    def record_count(self) -> int:
        """Every cached record row, of every table."""
        return self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def records_json_bytes(self) -> int:
        """Characters of the cached records' remote and visible fields, as stored."""
        return self.conn.execute(
            "SELECT COALESCE(SUM(LENGTH(COALESCE(remote, '')) + LENGTH(COALESCE(fields, ''))), 0) FROM records"
        ).fetchone()[0]

    def delete_table_records(self, tid: int, *, keep_queued: bool) -> int:
        """Forget the table's cached records (``keep_queued``: but those queued writes name); how many."""
        if not keep_queued:
            return self.conn.execute("DELETE FROM records WHERE tid = ?", (tid,)).rowcount
        return self.conn.execute(
            "DELETE FROM records WHERE tid = ? AND id NOT IN (SELECT record_id FROM outbox WHERE tid = ?)", (tid, tid)
        ).rowcount

    def insert_local_record(self, tid: int, record_id: str, position: int, created_time: str, fields: dict | None) -> None:
        """A record only the queue knows (not on Airtable yet); kept as it is if already there."""
        self.conn.execute(
            "INSERT INTO records (tid, id, position, created_time, modified_time, remote, fields)"
            " VALUES (?, ?, ?, ?, ?, NULL, ?) ON CONFLICT DO NOTHING",
            (tid, record_id, position, created_time, created_time, None if fields is None else dumps(fields)),
        )

    # -- views, view_members -------------------------------------------------------------------
    def view_pulled_at(self, tid: int, view: str) -> float | None:
        row = self.conn.execute("SELECT pulled_at FROM views WHERE tid = ? AND view = ?", (tid, view)).fetchone()
        return None if row is None else row[0]
    def known_views(self, tid: int) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT view FROM views WHERE tid = ? ORDER BY view", (tid,))]
    def replace_view(self, tid: int, view: str, record_ids: Sequence[str], *, pulled_at: float) -> None:
        self.conn.execute("DELETE FROM view_members WHERE tid = ? AND view = ?", (tid, view))
        self.conn.execute(
            "INSERT INTO views (tid, view, pulled_at) VALUES (?, ?, ?)"
            " ON CONFLICT (tid, view) DO UPDATE SET pulled_at = excluded.pulled_at",
            (tid, view, pulled_at),
        )
        self.conn.executemany(
            "INSERT INTO view_members (tid, view, record_id, position) VALUES (?, ?, ?, ?)",
            [(tid, view, rid, i) for i, rid in enumerate(record_ids)],
        )

    def forget_views(self, tids: Iterable[int]) -> None:
        """Which records these tables' views hold, and in what order, is unknown again."""
        self.conn.executemany("DELETE FROM views WHERE tid = ?", [(t,) for t in tids])

    def drop_views(self, tid: int) -> None:
        """Forget the table's views and which records they hold."""
        self.conn.execute("DELETE FROM view_members WHERE tid = ?", (tid,))
        self.conn.execute("DELETE FROM views WHERE tid = ?", (tid,))

    # -- indexes and full-text search ----------------------------------------------------------
    def field_index(self, field: str) -> str | None:
        return field_index_name(field) if indexable_field_name(field) else None
    def field_indexes(self) -> set[str]:
        rows = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'records_by_%'")
        return {row[0] for row in rows}
    def add_field_index(self, field: str) -> str | None:
        expression = DIALECTS["sqlite"].field_value(field, "fields")
        if expression is None:
            return None
        index = field_index_name(field)
        self.conn.execute(f'CREATE INDEX IF NOT EXISTS "{index}" ON records (tid, {expression})')
        return index
    def search_records(self, tid: int, words: Sequence[str]) -> list[dict]:
        # Each word is made only of word characters, quoted as an FTS5 string, and bound.
        match = " ".join(f'"{w}"*' for w in words)
        rows = self.conn.execute(
            "SELECT r.id, r.created_time, r.modified_time, r.fields, r.comment_count FROM records_fts f"
            " JOIN records r ON r.tid = f.tid AND r.id = f.id"
            " WHERE records_fts MATCH ? AND f.tid = ? AND r.fields IS NOT NULL ORDER BY f.rank",
            (match, tid),
        ).fetchall()
        return [decode_record(row) for row in rows]

    # -- conflicts -----------------------------------------------------------------------------
    def log_conflicts(self, tid: int, record_id: str, lost: dict[str, tuple[Any, Any]], *, at: float) -> None:
        self.conn.executemany(
            "INSERT INTO conflicts (at, tid, record_id, field, local_value, remote_value) VALUES (?, ?, ?, ?, ?, ?)",
            [(at, tid, record_id, name, dumps(local), dumps(remote)) for name, (local, remote) in sorted(lost.items())],
        )

    def prune_conflicts(self, before: float) -> int:
        """Forget conflicts logged before ``before``; how many."""
        return self.conn.execute("DELETE FROM conflicts WHERE at < ?", (before,)).rowcount

    # -- refresh state, change feeds (webhooks), token grants ----------------------------------
    def token_salt(self) -> bytes:
        return self.conn.execute("SELECT salt FROM token_salt").fetchone()[0]
    def token_granted_at(self, key: str, digest: str) -> float | None:
        row = self.conn.execute(
            "SELECT granted_at FROM token_grants WHERE base_id = ? AND digest = ?", (key, digest)
        ).fetchone()
        return None if row is None else row[0]
    def grant_token(self, key: str, digest: str, *, at: float) -> None:
        self.conn.execute(
            "INSERT INTO token_grants (base_id, digest, granted_at) VALUES (?, ?, ?)"
            " ON CONFLICT (base_id, digest) DO UPDATE SET granted_at = excluded.granted_at",
            (key, digest, at),
        )

    def refresh_state(self, tid: int) -> dict:
        """The table's refresh bookkeeping (watermark, last pulls, counters); empty if none yet."""
        row = self.conn.execute("SELECT * FROM refresh_state WHERE tid = ?", (tid,)).fetchone()
        return dict(row) if row is not None else {}

    def _ensure_refresh_state(self, tid: int) -> None:
        self.conn.execute("INSERT INTO refresh_state (tid) VALUES (?) ON CONFLICT (tid) DO NOTHING", (tid,))

    def count_refresh_requests(self, tid: int, kind: str, requests: int) -> None:
        """Add ``requests`` to what ``kind`` (full or incremental) refreshes of the table cost."""
        column = {"full": "full_requests", "incremental": "incremental_requests"}[kind]
        self.conn.execute(f"UPDATE refresh_state SET {column} = {column} + ? WHERE tid = ?", (requests, tid))

    def record_full_refresh(self, tid: int, *, watermark: float | None, at: float, hook_id: str | None,
                            source: str, requests: int) -> None:
        """A full pull committed: its watermark, time, the webhook covering it and its cost."""
        self._ensure_refresh_state(tid)
        self.conn.execute(
            "UPDATE refresh_state SET watermark = ?, last_full = ?, last_sweep = ?, hook_id = ?,"
            " source = ?, full_pulls = full_pulls + 1, full_requests = full_requests + ? WHERE tid = ?",
            (watermark, at, at, hook_id, source, requests, tid),
        )

    def record_incremental_refresh(self, tid: int, *, watermark: float | None, at: float, swept: bool,
                                   source: str, requests: int) -> None:
        """An incremental refresh committed (``watermark`` None keeps the old one)."""
        self._ensure_refresh_state(tid)
        self.conn.execute(
            "UPDATE refresh_state SET watermark = COALESCE(?, watermark), last_incremental = ?,"
            " last_sweep = CASE WHEN ? THEN ? ELSE last_sweep END, source = ?,"
            " incremental_pulls = incremental_pulls + 1, incremental_requests = incremental_requests + ? WHERE tid = ?",
            (watermark, at, swept, at, source, requests, tid),
        )

    def count_stale_served(self, tid: int) -> None:
        """One more stale read of the table answered at once."""
        self._ensure_refresh_state(tid)
        self.conn.execute("UPDATE refresh_state SET stale_served = stale_served + 1 WHERE tid = ?", (tid,))

    def forget_feed_coverage(self, endpoint: str, base_id: str) -> None:
        """No table of the base is covered by its change feed any more (each gets a full pull)."""
        self.conn.execute("UPDATE refresh_state SET hook_id = NULL WHERE tid IN"
                          " (SELECT tid FROM tables WHERE base_id = ? AND endpoint = ?)", (base_id, endpoint))

    def refresh_counts(self) -> list[dict]:
        """Per table (base, label, refresh_state counters), ordered by base and table."""
        return [dict(r) for r in self.conn.execute(
            "SELECT t.base_id, COALESCE(t.name, t.table_id) AS label, s.* FROM refresh_state s JOIN tables t USING (tid)"
            " ORDER BY t.base_id, t.tid"
        )]

    def webhook(self, endpoint: str, base_id: str) -> dict | None:
        """This cache's change feed on a base (id, cursor, expiry, refusal), if any."""
        row = self.conn.execute("SELECT * FROM webhooks WHERE endpoint = ? AND base_id = ?", (endpoint, base_id)).fetchone()
        return dict(row) if row is not None else None

    def usable_webhook_id(self, endpoint: str, base_id: str) -> str | None:
        """The id of the base's webhook unless Airtable refused one."""
        row = self.conn.execute("SELECT webhook_id FROM webhooks WHERE endpoint = ? AND base_id = ? AND denied_at IS NULL",
                                (endpoint, base_id)).fetchone()
        return row[0] if row else None

    def save_webhook(self, endpoint: str, base_id: str, webhook_id: str | None, *, cursor: int,
                     expires_at: float | None, now: float, denied_why: str | None) -> None:
        """Keep the base's webhook (a new id restarts its creation time; expiry None keeps the old)."""
        self.conn.execute(
            "INSERT INTO webhooks (endpoint, base_id, webhook_id, cursor, expires_at, created_at, denied_at, denied_why)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint, base_id) DO UPDATE SET webhook_id = excluded.webhook_id,"
            " cursor = excluded.cursor, expires_at = COALESCE(excluded.expires_at, webhooks.expires_at),"
            " created_at = CASE WHEN webhooks.webhook_id IS excluded.webhook_id THEN webhooks.created_at"
            " ELSE excluded.created_at END, denied_at = excluded.denied_at, denied_why = excluded.denied_why",
            (endpoint, base_id, webhook_id, cursor, expires_at, now, now if denied_why else None, denied_why),
        )

    def advance_webhook(self, endpoint: str, base_id: str, webhook_id: str, cursor: int, read_at: float) -> None:
        """Payloads were read up to ``cursor`` (the cursor never moves back)."""
        self.conn.execute(
            "UPDATE webhooks SET cursor = CASE WHEN cursor > ? THEN cursor ELSE ? END, read_at = ?"
            " WHERE endpoint = ? AND base_id = ? AND webhook_id = ?",
            (cursor, cursor, read_at, endpoint, base_id, webhook_id))

    def set_webhook_expiry(self, endpoint: str, base_id: str, expires_at: float | None) -> None:
        """Airtable extended the base's webhook until ``expires_at``."""
        self.conn.execute("UPDATE webhooks SET expires_at = ? WHERE endpoint = ? AND base_id = ?",
                          (expires_at, endpoint, base_id))

    def delete_webhook(self, endpoint: str, base_id: str, webhook_id: str) -> None:
        """Forget a webhook removed from Airtable."""
        self.conn.execute("DELETE FROM webhooks WHERE endpoint = ? AND base_id = ? AND webhook_id = ?",
                          (endpoint, base_id, webhook_id))

    def webhooks(self) -> list[dict]:
        """Every webhook this cache keeps, by base."""
        return [dict(r) for r in self.conn.execute("SELECT * FROM webhooks ORDER BY base_id")]

    def webhook_ids(self, endpoint: str) -> dict[str, str | None]:
        """Base id -> this cache's webhook id on it, for one endpoint."""
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT base_id, webhook_id FROM webhooks WHERE endpoint = ?", (endpoint,))}

    # -- sync_log and statistics ---------------------------------------------------------------
    def add_statistics(self, counts: dict[tuple[int, str], tuple[int, float]], latencies: list[tuple[int, str, float]]) -> None:
        self.conn.executemany(
            "INSERT INTO stats (tid, kind, count, total_ms) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (tid, kind) DO UPDATE SET count = count + excluded.count, total_ms = total_ms + excluded.total_ms",
            [(tid, kind, c, ms) for (tid, kind), (c, ms) in counts.items()],
        )
        self.conn.executemany("INSERT INTO latencies (tid, kind, ms) VALUES (?, ?, ?)", latencies)

    def log_request(self, at: float, base_id: str, kind: str, method: str, status: int | None) -> None:
        """One request sent to Airtable (``status`` None: no answer)."""
        self.conn.execute("INSERT INTO sync_log (at, base_id, kind, method, status) VALUES (?, ?, ?, ?, ?)",
                          (at, base_id, kind, method, status))

    def bases_logged_since(self, since: float) -> set[str]:
        """Bases with a request logged since ``since``."""
        return {r[0] for r in self.conn.execute("SELECT DISTINCT base_id FROM sync_log WHERE at >= ?", (since,))}

    def request_counts(self, base_id: str, since: float) -> tuple[int, int]:
        """Requests sent to a base since ``since``, and how many of them Airtable rate-limited (429)."""
        sent, limited = self.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status = 429 THEN 1 ELSE 0 END), 0) FROM sync_log WHERE base_id = ? AND at >= ?",
            (base_id, since),
        ).fetchone()
        return sent, limited

    def request_totals(self) -> tuple[int, int]:
        """Every request logged, and how many of them Airtable rate-limited (429)."""
        sent = self.conn.execute("SELECT COUNT(*) FROM sync_log").fetchone()[0]
        limited = self.conn.execute("SELECT COUNT(*) FROM sync_log WHERE status = 429").fetchone()[0]
        return sent, limited

    def requests_by_kind(self) -> list[tuple[str, int | None, int]]:
        """(kind, status, count) of the requests logged (status None: no answer)."""
        return [(r[0], r[1], r[2]) for r in self.conn.execute("SELECT kind, status, COUNT(*) FROM sync_log GROUP BY kind, status")]

    def prune_request_log(self, before: float) -> int:
        """Forget requests logged before ``before``; how many."""
        return self.conn.execute("DELETE FROM sync_log WHERE at < ?", (before,)).rowcount

    def trim_latency_samples(self, keep: int) -> int:
        """Keep only the newest ``keep`` latency samples per table and kind; how many were dropped."""
        return self.conn.execute(
            "DELETE FROM latencies WHERE rowid IN (SELECT rowid FROM ("
            " SELECT rowid, ROW_NUMBER() OVER (PARTITION BY tid, kind ORDER BY rowid DESC) AS n FROM latencies"
            ") WHERE n > ?)", (keep,)
        ).rowcount

    def latency_samples(self) -> dict[tuple[int, str], list[float]]:
        """The kept latency samples (ms), per table and kind, oldest first."""
        samples: dict[tuple[int, str], list[float]] = {}
        for tid, kind, ms in self.conn.execute("SELECT tid, kind, ms FROM latencies"):
            samples.setdefault((tid, kind), []).append(ms)
        return samples

    def read_counts(self) -> list[dict]:
        """Per table and kind of read: how many, and their total time (ms), by tid and kind."""
        return [dict(r) for r in self.conn.execute("SELECT tid, kind, count, total_ms FROM stats ORDER BY tid, kind")]

    def read_count(self, kinds: Iterable[str]) -> int:
        """How many reads of these kinds were counted, over every table."""
        wanted = list(kinds)
        marks = ",".join("?" * len(wanted))
        return self.conn.execute(f"SELECT COALESCE(SUM(count), 0) FROM stats WHERE kind IN ({marks})", wanted).fetchone()[0]

    # -- whole-file checks (``check``) -----------------------------------------------------------
    def garbled_records(self) -> list[dict]:
        """Per table with cached records whose stored JSON no longer parses: tid, label, how many (n)."""
        return [dict(r) for r in self.conn.execute(
            "SELECT r.tid, COALESCE(t.name, t.table_id, r.tid) AS label, COUNT(*) AS n FROM records r"
            " LEFT JOIN tables t ON t.tid = r.tid"
            " WHERE (r.fields IS NOT NULL AND NOT json_valid(r.fields)) OR (r.remote IS NOT NULL AND NOT json_valid(r.remote))"
            " GROUP BY r.tid"
        )]


def _selection_sql(tid: int, s: Selection, columns: str) -> tuple[str, list]:
    """The statement of a selection: the table's visible records, the compiled condition, in order."""
    where = f" AND ({s.where})" if s.where else ""
    if s.view is not None:
        # The view's members in its order, then the agent's own creates not flushed yet (the
        # view's filter cannot be evaluated here; after a flush the view is pulled again).
        order = "r.position" if s.sorted_later else "v.position IS NULL, v.position, r.position"
        sql = (
            f"SELECT {columns} FROM records r"
            " LEFT JOIN view_members v ON v.tid = r.tid AND v.record_id = r.id AND v.view = ?"
            " WHERE r.tid = ? AND r.fields IS NOT NULL AND (v.record_id IS NOT NULL OR r.remote IS NULL)"
            f"{where} ORDER BY {order}"
        )
        return sql, [s.view, tid, *s.params]
    # An index (a field's, or the primary key) finds indexed rows; "+" keeps the planner from
    # walking the natural-order index instead just to skip a sort.
    order = "+r.position" if s.indexed else "r.position"
    return f"SELECT {columns} FROM records r WHERE r.tid = ? AND r.fields IS NOT NULL{where} ORDER BY {order}", [tid, *s.params]
