"""Both sides of a link, kept locally as Airtable keeps them.

A link field names its inverse in the schema (``options.inverseLinkFieldId``): when record R of
table A links to X of table B, X's inverse field lists R. Airtable does this at once; the cache
must too, before the flush and before the next pull.

What reads see of a record is its remote state with its own queued writes replayed on top
(``outbox.replay``), and then, for each link field, the effect of the queued writes of *other*
records that link to it: a record that gains a link to X (queued, not yet on Airtable) shows in
X's inverse field, one that drops it (or is deleted) no longer does. Those effects are derived from
the queue every time a record is recomputed, so a pull, a flush or a dead letter never leaves them
stale. When Airtable confirms a write, it has updated the inverse side too: the cache updates the
linked records' remote state the same way.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airtable_cached import outbox
from airtable_cached.records import RECORD_ID_RE, dumps

if TYPE_CHECKING:
    from airtable_cached.engine import Engine, TableInfo


@dataclass(frozen=True)
class LinkPair:
    """A link field of one table and its inverse in the linked table."""

    field: str  # the link field's name in this table
    linked_tid: int  # the cached table it links to
    inverse: str  # the inverse field's name in the linked table


def _table_row(conn: sqlite3.Connection, tid: int) -> sqlite3.Row | None:
    return conn.execute("SELECT tid, base_id, table_id, schema_json, pulled_at FROM tables WHERE tid = ?", (tid,)).fetchone()


def _linked_table(conn: sqlite3.Connection, base_id: str, table_id: str) -> sqlite3.Row | None:
    return conn.execute(
        "SELECT tid, base_id, table_id, schema_json, pulled_at FROM tables WHERE base_id = ? AND table_id = ?"
        " ORDER BY tid LIMIT 1",
        (base_id, table_id),
    ).fetchone()


def link_pairs(conn: sqlite3.Connection, tid: int) -> list[LinkPair]:
    """The link fields of a cached table whose inverse is known (both schemas cached)."""
    row = _table_row(conn, tid)
    if row is None or not row["schema_json"]:
        return []
    pairs = []
    for spec in json.loads(row["schema_json"]).get("fields", []):
        options = spec.get("options") or {}
        if spec.get("type") != "multipleRecordLinks" or not options.get("inverseLinkFieldId"):
            continue
        linked = _linked_table(conn, row["base_id"], options.get("linkedTableId") or "")
        if linked is None or not linked["schema_json"]:
            continue
        inverse = next(
            (f["name"] for f in json.loads(linked["schema_json"]).get("fields", []) if f.get("id") == options["inverseLinkFieldId"]),
            None,
        )
        if inverse is not None:
            pairs.append(LinkPair(spec["name"], linked["tid"], inverse))
    return pairs


def record_state(engine: Engine, info: TableInfo, table_id: str, record_id: str) -> bool | None:
    """Whether a record of the linked table exists: True, False, or None when the cache cannot tell
    (offline, and the linked table was never pulled). A linked table never read is pulled first."""
    conn = engine.store.conn
    linked = _linked_table(conn, info.base_id, table_id)
    if (linked is None or linked["pulled_at"] is None) and engine.settings.mode != "offline" and engine.sync is not None:
        # Whether the record exists is Airtable's to say: the linked table is read once, then cached.
        engine.sync.pull(info.base_id, table_id)
        linked = _linked_table(conn, info.base_id, table_id)
    if linked is None:
        return None
    row = conn.execute("SELECT fields FROM records WHERE tid = ? AND id = ?", (linked["tid"], record_id)).fetchone()
    if row is not None:
        return row["fields"] is not None
    return False if linked["pulled_at"] is not None else None


def _ids(value: Any) -> list[str]:
    return [x for x in value if isinstance(x, str) and RECORD_ID_RE.match(x)] if isinstance(value, list) else []


def inverse_deltas(conn: sqlite3.Connection, tid: int) -> dict[str, dict[str, list[tuple[bool, str]]]]:
    """For each link field of table ``tid``: per record of this table, the queued link changes of
    the linked table's records, as (added, linking record id) in queue order."""
    out: dict[str, dict[str, list[tuple[bool, str]]]] = {}
    for pair in link_pairs(conn, tid):
        changes: dict[str, list[tuple[bool, str]]] = {}
        for other_id in sorted(outbox.records_with_live_ops(conn, pair.linked_tid)):
            row = conn.execute("SELECT remote FROM records WHERE tid = ? AND id = ?", (pair.linked_tid, other_id)).fetchone()
            if row is None:
                continue
            remote = json.loads(row["remote"]) if row["remote"] is not None else None
            own = outbox.replay(remote, outbox.live_ops_for_record(conn, pair.linked_tid, other_id))
            old = _ids((remote or {}).get(pair.inverse))
            new = _ids((own or {}).get(pair.inverse))
            for target in new:
                if target not in old:
                    changes.setdefault(target, []).append((True, other_id))
            for target in old:
                if target not in new:
                    changes.setdefault(target, []).append((False, other_id))
        if changes:
            out[pair.field] = changes
    return out


def adjust(fields: dict, record_id: str, deltas: dict[str, dict[str, list[tuple[bool, str]]]]) -> dict:
    """A record's fields with the other side's queued link changes applied."""
    for name, changes in deltas.items():
        for added, other in changes.get(record_id, ()):
            current = list(fields.get(name) or [])
            if added and other not in current:
                current.append(other)
            elif not added and other in current:
                current.remove(other)
            if current:
                fields[name] = current
            else:
                fields.pop(name, None)
    return fields


def targets(conn: sqlite3.Connection, tid: int, record_ids: list[str] | set[str]) -> dict[int, set[str]]:
    """Records on the other side of these records' links, as Airtable has them, as queued (in any
    state) and as reads see them: every record whose inverse field the records may touch."""
    pairs = link_pairs(conn, tid)
    found: dict[int, set[str]] = {}
    if not pairs:
        return found
    for record_id in record_ids:
        row = conn.execute("SELECT remote, fields FROM records WHERE tid = ? AND id = ?", (tid, record_id)).fetchone()
        values: list[dict] = []
        if row is not None:
            values += [json.loads(v) for v in (row["remote"], row["fields"]) if v is not None]
        values += [json.loads(r[0]) for r in conn.execute(
            "SELECT fields FROM outbox WHERE tid = ? AND record_id = ? AND fields IS NOT NULL", (tid, record_id)
        )]
        for pair in pairs:
            for fields in values:
                found.setdefault(pair.linked_tid, set()).update(_ids(fields.get(pair.field)))
    return found


def after_local_write(engine: Engine, conn: sqlite3.Connection, info: TableInfo, record_ids: list[str]) -> None:
    """The agent wrote these records (or deleted them): the linked records show it at once."""
    for linked_tid, ids in targets(conn, info.tid, record_ids).items():
        engine.recompute(conn, linked_tid, ids)


def pending_targets(conn: sqlite3.Connection, tid: int) -> set[str]:
    """Records of ``tid`` that queued writes of linked tables touch (recomputed after a pull)."""
    found: set[str] = set()
    for changes in inverse_deltas(conn, tid).values():
        found.update(changes)
    return found


def after_confirm(engine: Engine, conn: sqlite3.Connection, tid: int, record_id: str,
                  before: dict | None, after: dict | None) -> None:
    """Airtable applied a write of ``record_id`` (``after`` None: deleted): it updated the inverse
    fields of the records linked or unlinked, so their remote state changes the same way."""
    for pair in link_pairs(conn, tid):
        old = _ids((before or {}).get(pair.field))
        new = _ids((after or {}).get(pair.field))
        changed = [x for x in old if x not in new] + [x for x in new if x not in old]
        for target in changed:
            row = conn.execute("SELECT remote FROM records WHERE tid = ? AND id = ?", (pair.linked_tid, target)).fetchone()
            if row is None or row["remote"] is None:
                continue
            remote = json.loads(row["remote"])
            current = [x for x in remote.get(pair.inverse) or [] if x != record_id]
            if target in new:
                current.append(record_id)
            if current:
                remote[pair.inverse] = current
            else:
                remote.pop(pair.inverse, None)
            conn.execute("UPDATE records SET remote = ? WHERE tid = ? AND id = ?", (dumps(remote), pair.linked_tid, target))
        if changed:
            engine.recompute(conn, pair.linked_tid, changed)


# -- formulas over link fields ------------------------------------------------------------------------


def primary_source(conn: sqlite3.Connection, base_id: str, spec: dict) -> tuple[int, str] | None:
    """Where a link field's formula value comes from: the linked table (cached, pulled, schema known)
    and its primary field's name. ``None``: only Airtable can tell."""
    linked = _linked_table(conn, base_id, ((spec.get("options") or {}).get("linkedTableId")) or "")
    if linked is None or linked["pulled_at"] is None or not linked["schema_json"]:
        return None
    schema = json.loads(linked["schema_json"])
    primary = next((f["name"] for f in schema.get("fields", []) if f.get("id") == schema.get("primaryFieldId")), None)
    return (linked["tid"], primary) if primary else None


class PrimaryValues:
    """Link cells as a formula sees them: the linked records' primary values (as reads see them,
    the agent's queued writes included), read once per linked table per read."""

    def __init__(self, conn: sqlite3.Connection, sources: dict[str, tuple[int, str]]):
        self.conn = conn
        self.sources = sources
        self._values: dict[int, dict[str, Any]] = {}

    def _table(self, tid: int, primary: str) -> dict[str, Any]:
        if tid not in self._values:
            self._values[tid] = {
                row[0]: json.loads(row[1]).get(primary)
                for row in self.conn.execute("SELECT id, fields FROM records WHERE tid = ? AND fields IS NOT NULL", (tid,))
            }
        return self._values[tid]

    def record(self, record: dict) -> dict:
        fields = dict(record["fields"])
        for name, (tid, primary) in self.sources.items():
            if name in fields:
                values = self._table(tid, primary)
                shown = [values.get(x) for x in _ids(fields[name])]
                fields[name] = [v for v in shown if v is not None and v != ""]
        return {**record, "fields": fields}
