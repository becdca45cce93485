"""How the PostgreSQL replica reads records: decoding stored rows, a listing's statement, and which
of the server's refusals mean a condition too big to run (the engine then evaluates the formula in
Python, as it does for SQLite: ``airtable_cached/engine/reads.py``).

A compiled condition (``Selection.where``) is written by the formula compiler's PostgreSQL dialect
(``airtable_cached/formula/sql.py``) over ``r.fields`` (``jsonb``), ``r.id`` and
``r.created_time``; a record is visible where its exact text ``r.fields_json`` is not NULL (its
``jsonb`` may be NULL: the dialect then lets the row through to the evaluator).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from airtable_cached.rules.records import loads
from airtable_cached.store.contract import Selection, TableRow

#: A record's columns in the order :func:`decode_record` reads them.
RECORD_COLUMNS = "r.id, r.created_time, r.modified_time, r.fields_json, r.comment_count"
#: The most parameters one statement may bind (the protocol's limit: libpq refuses more).
MAX_PARAMS = 65535
#: Server errors that mean a statement too big or too deep, not wrong: stack depth, program limits,
#: and the parser running out of memory on deep nesting (reported as a syntax error).
_TOO_BIG_STATES = {"54000", "54001"}

def decode_record(row: dict[str, Any]) -> dict:
    """A stored row (id, created_time, modified_time, fields_json, comment_count) as the engine's record."""
    record = {"id": row["id"], "createdTime": row["created_time"], "fields": loads(row["fields_json"]),
              "commentCount": row["comment_count"]}
    if row["modified_time"]:
        record["lastModifiedTime"] = row["modified_time"]
    return record


def table_row(row: dict[str, Any]) -> TableRow:
    return TableRow(
        tid=row["tid"], endpoint=row["endpoint"], base_id=row["base_id"], table_id=row["table_id"], name=row["name"],
        schema=json.loads(row["schema_json"]) if row["schema_json"] else None, pulled_at=row["pulled_at"],
    )


def selection_sql(tid: int, s: Selection, columns: str, limit: int | None) -> tuple[str, list]:
    """The statement of a selection: the table's visible records, the compiled condition, in order."""
    where = f" AND ({s.where})" if s.where else ""
    tail, tail_params = (" LIMIT %s", [limit]) if limit is not None else ("", [])
    if s.view is not None:
        # The view's members in its order, then the agent's own creates not flushed yet (as
        # airtable_cached/store/sqlite/replica.py reads them).
        order = "r.position" if s.sorted_later else "v.position IS NULL, v.position, r.position"
        sql = (f"SELECT {columns} FROM records r"
               " LEFT JOIN view_members v ON v.tid = r.tid AND v.record_id = r.id AND v.view = %s"
               " WHERE r.tid = %s AND r.fields_json IS NOT NULL AND (v.record_id IS NOT NULL OR r.remote_json IS NULL)"
               f"{where} ORDER BY {order}{tail}")
        return sql, [s.view, tid, *s.params, *tail_params]
    sql = f"SELECT {columns} FROM records r WHERE r.tid = %s AND r.fields_json IS NOT NULL{where} ORDER BY r.position{tail}"
    return sql, [tid, *s.params, *tail_params]


def too_big(exc: Exception) -> bool:
    """Whether the server refused a compiled condition for its size, not for an error in it."""
    state = getattr(exc, "sqlstate", None)
    return state in _TOO_BIG_STATES or (state == "42601" and "memory exhausted" in str(exc))


def field_index_name(field: str) -> str:
    """The index on one field's value: the same name as the SQLite store gives it."""
    return "records_by_" + hashlib.sha1(field.encode()).hexdigest()[:16]
