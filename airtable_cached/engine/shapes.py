"""Records as Airtable returns them: always fresh copies (never what the cache keeps)."""

from __future__ import annotations

from airtable_cached.engine.readmodel import MUTABLE, copy_fields, copy_kept_fields, copy_record_fields
from airtable_cached.engine.tables import TableInfo, field_name
from airtable_cached.rules.query import ListQuery
from airtable_cached.rules.records import project, rename_to_ids


def shape(info: TableInfo, record: dict, query: ListQuery) -> dict:
    """A stored record as Airtable returns it for this query."""
    # A copy: the record may be the read model's own (issue 11: never hand out what the cache keeps).
    out = {"id": record["id"], "createdTime": record["createdTime"], "fields": copy_record_fields(record)}
    if query.fields is not None:
        out = project(out, [field_name(info, f) for f in query.fields])
    if query.by_field_ids:
        out = rename_to_ids(out, info.id_for_name)
    if query.comment_count:
        out["commentCount"] = record.get("commentCount", 0)
    return out


def shape_page(info: TableInfo, records: list[dict], query: ListQuery) -> list[dict]:
    """``shape`` of each record; the plain query (every field, by name) inlined, as the
    per-record cost of a listing is mostly this copy."""
    if query.fields is not None or query.by_field_ids or query.comment_count:
        return [shape(info, r, query) for r in records]
    out = []
    for record in records:
        mutable = record.get(MUTABLE)
        fields = copy_fields(record["fields"]) if mutable is None else copy_kept_fields(record["fields"], mutable)
        out.append({"id": record["id"], "createdTime": record["createdTime"], "fields": fields})
    return out


def shape_write(info: TableInfo, record: dict, body: dict) -> dict:
    """A written record as Airtable answers the write."""
    out = {"id": record["id"], "createdTime": record["createdTime"], "fields": copy_record_fields(record)}
    if body.get("returnFieldsByFieldId"):
        out = rename_to_ids(out, info.id_for_name)
    return out
