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

import msgspec

from airtable_cached.rules.records import dumps
from airtable_cached.store.contract import PulledRecord, QueryTooComplex, RecordCopies, Selection, TableRow

#: Ids bound per statement (SQLite's default limit on variables is far above; this keeps plans small).
_CHUNK = 500
#: A record's columns in the order :func:`decode_record` reads them.
_RECORD_COLUMNS = "r.id, r.created_time, r.modified_time, r.fields, r.comment_count"

_decoder = msgspec.json.Decoder()


def loads(text: str) -> Any:
    """``json.loads``, four times quicker (msgspec) for what the cache stores; anything msgspec
    refuses (numbers out of a float's range, lone surrogates) is decoded by ``json.loads``."""
    try:
        return _decoder.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


def decode_record(row: Sequence[Any]) -> dict:
    """A stored row (id, created_time, modified_time, fields, comment_count) as the engine's record."""
    record = {"id": row[0], "createdTime": row[1], "fields": loads(row[3]), "commentCount": row[4]}
    if row[2]:
        record["lastModifiedTime"] = row[2]
    return record


def register_sql_functions(conn: sqlite3.Connection) -> None:
    """Give a new connection the SQL functions compiled formulas may call (``Store(on_connect=...)``)."""
    try:
        from airtable_cached.formula import register_sql_functions as register
    except (ImportError, AttributeError):
        return
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


def literal_path(name: str) -> str | None:
    """The JSON path of a field as SQL literal text, or ``None`` where it cannot be exact.

    Expression indexes only match expressions written identically, so this path is spliced into
    the SQL as a quoted literal (never an identifier). SQLite compares path labels with the raw
    JSON key, so names needing JSON escapes (quotes, backslashes, control or non-ASCII characters)
    are left to the full scan.
    """
    if not name or not all(32 <= ord(ch) < 127 for ch in name) or '"' in name or "\\" in name:
        return None
    return "'" + ('$."' + name + '"').replace("'", "''") + "'"


def json_path(name: str) -> str:
    return '$."' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SqliteReplica:
    """:class:`airtable_cached.store.contract.Replica` on one SQLite connection."""

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

    def mark_pulled(self, tid: int, at: float) -> None:
        self.conn.execute("UPDATE tables SET pulled_at = ?, generation = generation + 1 WHERE tid = ?", (at, tid))

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

    def add_local_record(self, tid: int, record_id: str, position: int, created_time: str, fields: dict) -> None:
        self.conn.execute(
            "INSERT INTO records (tid, id, position, created_time, modified_time, remote, fields) VALUES (?, ?, ?, ?, ?, NULL, ?)",
            (tid, record_id, position, created_time, created_time, dumps(fields)),
        )

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

    def set_remote_fields(self, tid: int, record_id: str, remote: dict) -> None:
        self.conn.execute("UPDATE records SET remote = ? WHERE tid = ? AND id = ?", (dumps(remote), tid, record_id))

    def delete_records(self, tid: int, record_ids: Iterable[str]) -> None:
        self.conn.executemany("DELETE FROM records WHERE tid = ? AND id = ?", [(tid, i) for i in record_ids])

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

    def place_local_records_after(self, tid: int, offset: int) -> None:
        local = self.conn.execute("SELECT id FROM records WHERE tid = ? AND remote IS NULL ORDER BY position", (tid,)).fetchall()
        for i, (rid,) in enumerate(local):
            self.conn.execute("UPDATE records SET position = ? WHERE tid = ? AND id = ?", (offset + i, tid, rid))

    # -- views, view_members -------------------------------------------------------------------
    def view_pulled_at(self, tid: int, view: str) -> float | None:
        row = self.conn.execute("SELECT pulled_at FROM views WHERE tid = ? AND view = ?", (tid, view)).fetchone()
        return None if row is None else row[0]

    def known_views(self, tid: int) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT view FROM views WHERE tid = ? ORDER BY view", (tid,))]

    def forget_views(self, tid: int) -> None:
        self.conn.execute("DELETE FROM views WHERE tid = ?", (tid,))

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

    # -- indexes and full-text search ----------------------------------------------------------
    def field_index(self, field: str) -> str | None:
        return None if literal_path(field) is None else field_index_name(field)

    def field_indexes(self) -> set[str]:
        rows = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'records_by_%'")
        return {row[0] for row in rows}

    def add_field_index(self, field: str) -> str | None:
        path = literal_path(field)
        if path is None:
            return None
        index = field_index_name(field)
        self.conn.execute(f'CREATE INDEX IF NOT EXISTS "{index}" ON records (tid, json_extract(fields, {path}))')
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

    # -- sync_log and statistics ---------------------------------------------------------------
    def add_statistics(self, counts: dict[tuple[int, str], tuple[int, float]], latencies: list[tuple[int, str, float]]) -> None:
        self.conn.executemany(
            "INSERT INTO stats (tid, kind, count, total_ms) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (tid, kind) DO UPDATE SET count = count + excluded.count, total_ms = total_ms + excluded.total_ms",
            [(tid, kind, c, ms) for (tid, kind), (c, ms) in counts.items()],
        )
        self.conn.executemany("INSERT INTO latencies (tid, kind, ms) VALUES (?, ?, ?)", latencies)

    # -- whole-file checks (``check``) -----------------------------------------------------------


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
