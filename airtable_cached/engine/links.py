"""Both sides of a link, kept locally as Airtable keeps them.

A link field names its inverse in the schema (``options.inverseLinkFieldId``): when record R of
table A links to X of table B, X's inverse field lists R. Airtable does this at once; the cache
must too, before the flush and before the next pull.

What reads see of a record is its remote state with its own queued writes replayed on top
(``outbox.replay``), and then, for each link field, the list that the queued writes of *both*
sides leave, in queue order (:class:`LinkState`): a record that gains a link to X (queued, not yet
on Airtable) shows in X's inverse field, one that drops it (or is deleted) no longer does, and a
later write of X's own list wins. Those lists are derived from the queue every time a record is
recomputed, so a pull, a flush or a dead letter never leaves them stale. When Airtable confirms a write, it has updated the inverse side too: the cache updates the
linked records' remote state the same way.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airtable_cached.rules.records import RECORD_ID_RE, dumps

if TYPE_CHECKING:
    from airtable_cached.engine.core import Engine, TableInfo


@dataclass(frozen=True)
class LinkPair:
    """A link field of one table and its inverse in the linked table."""

    field: str  # the link field's name in this table
    linked_tid: int  # the cached table it links to
    inverse: str  # the inverse field's name in the linked table


def _table_row(conn: sqlite3.Connection, tid: int) -> sqlite3.Row | None:
    return conn.execute("SELECT tid, endpoint, base_id, table_id, schema_json, pulled_at FROM tables WHERE tid = ?",
                        (tid,)).fetchone()


def _linked_table(conn: sqlite3.Connection, endpoint: str, base_id: str, table_id: str) -> sqlite3.Row | None:
    """The cached table a link field points to, of the same endpoint (two endpoints may share a base id)."""
    return conn.execute(
        "SELECT tid, base_id, table_id, schema_json, pulled_at FROM tables WHERE endpoint = ? AND base_id = ? AND table_id = ?"
        " ORDER BY tid LIMIT 1",
        (endpoint, base_id, table_id),
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
        linked = _linked_table(conn, row["endpoint"], row["base_id"], options.get("linkedTableId") or "")
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
    linked = _linked_table(conn, engine.endpoint, info.base_id, table_id)
    if (linked is None or linked["pulled_at"] is None) and engine.settings.mode != "offline" and engine.sync is not None:
        # Whether the record exists is Airtable's to say: the linked table is read once, then cached.
        engine.sync.pull(info.base_id, table_id)
        linked = _linked_table(conn, engine.endpoint, info.base_id, table_id)
    if linked is None:
        return None
    row = conn.execute("SELECT fields FROM records WHERE tid = ? AND id = ?", (linked["tid"], record_id)).fetchone()
    if row is not None:
        return row["fields"] is not None
    return False if linked["pulled_at"] is not None else None


def _ids(value: Any) -> list[str]:
    return [x for x in value if isinstance(x, str) and RECORD_ID_RE.match(x)] if isinstance(value, list) else []


class LinkState:
    """Both sides of one link (field ``pair.field`` of table ``tid``, its inverse in the linked
    table) as reads see them: the remote lists, then every queued write of either side that sets
    one of the two fields, in queue order. A write replaces its record's list and moves the record
    in or out of the other side's lists (appended when added, as Airtable does), so a later write
    of either side wins over an earlier one."""

    def __init__(self, conn: sqlite3.Connection, tid: int, pair: LinkPair):
        self.conn = conn
        self.sides = {(tid, pair.field): (pair.linked_tid, pair.inverse), (pair.linked_tid, pair.inverse): (tid, pair.field)}
        self.lists: dict[tuple[int, str], dict[str, list[str]]] = {side: {} for side in self.sides}
        self.touched: dict[tuple[int, str], set[str]] = {side: set() for side in self.sides}
        self._replay()

    def _list(self, side: tuple[int, str], record_id: str) -> list[str]:
        lists = self.lists[side]
        if record_id not in lists:
            row = self.conn.execute("SELECT remote FROM records WHERE tid = ? AND id = ?", (side[0], record_id)).fetchone()
            remote = json.loads(row[0]) if row is not None and row[0] is not None else {}
            lists[record_id] = _ids(remote.get(side[1]))
        return lists[record_id]

    def _replay(self) -> None:
        tids = sorted({side[0] for side in self.sides})
        marks = ",".join("?" * len(tids))
        rows = self.conn.execute(
            f"SELECT tid, op, record_id, fields FROM outbox WHERE state != 'dead' AND tid IN ({marks}) ORDER BY seq", tids
        ).fetchall()
        for row in rows:
            fields = json.loads(row["fields"]) if row["fields"] is not None else {}
            for side in self.sides:
                if side[0] != row["tid"]:
                    continue
                if row["op"] in ("delete", "create", "replace"):
                    value = _ids(fields.get(side[1]))  # a created or replaced record without it: none
                elif side[1] in fields:
                    value = _ids(fields[side[1]])
                else:
                    continue
                self._set(side, row["record_id"], value)

    def _set(self, side: tuple[int, str], record_id: str, value: list[str]) -> None:
        other = self.sides[side]
        old = self._list(side, record_id)
        for target in old:
            if target not in value:
                kept = self._list(other, target)
                if record_id in kept:
                    kept.remove(record_id)
                self.touched[other].add(target)
        for target in value:
            if target not in old:
                current = self._list(other, target)
                if record_id not in current:
                    current.append(record_id)
                self.touched[other].add(target)
        self.lists[side][record_id] = list(dict.fromkeys(value))
        self.touched[side].add(record_id)


def link_views(conn: sqlite3.Connection, tid: int) -> dict[str, dict[str, list[str]]]:
    """For each link field of ``tid`` with a known inverse: the list reads see, for every record
    whose list queued writes (of either side) changed."""
    out: dict[str, dict[str, list[str]]] = {}
    for pair in link_pairs(conn, tid):
        if not _has_queued(conn, tid, pair.linked_tid):
            continue
        state = LinkState(conn, tid, pair)
        side = (tid, pair.field)
        if state.touched[side]:
            out[pair.field] = {rid: state.lists[side][rid] for rid in state.touched[side]}
    return out


def _has_queued(conn: sqlite3.Connection, *tids: int) -> bool:
    marks = ",".join("?" * len(tids))
    return conn.execute(f"SELECT 1 FROM outbox WHERE state != 'dead' AND tid IN ({marks}) LIMIT 1", tids).fetchone() is not None


def adjust(fields: dict, record_id: str, views: dict[str, dict[str, list[str]]]) -> dict:
    """A record's fields with its link lists as both sides' queued writes leave them."""
    for name, lists in views.items():
        if record_id in lists:
            if lists[record_id]:
                fields[name] = lists[record_id]
            else:
                fields.pop(name, None)
    return fields


def targets(conn: sqlite3.Connection, tid: int, record_ids: list[str] | set[str]) -> dict[int, set[str]]:
    """Records on the other side of these records' links, as Airtable has them, as queued (in any
    state) and as reads see them, and records whose cells name them: every record whose inverse
    field the records may touch."""
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
            linked = found.setdefault(pair.linked_tid, set())
            for fields in values:
                linked.update(_ids(fields.get(pair.field)))
            # Records whose own queued writes link to it (only they can name it where it does not).
            linked.update(r[0] for r in conn.execute(
                "SELECT DISTINCT record_id FROM outbox WHERE tid = ? AND state != 'dead' AND instr(fields, ?) > 0",
                (pair.linked_tid, record_id),
            ))
    return found


def after_local_write(engine: Engine, conn: sqlite3.Connection, info: TableInfo,
                      record_ids: list[str]) -> dict[int, set[str]]:
    """The agent wrote these records (or deleted them): the linked records show it at once.
    Returns those linked records, per table."""
    touched = targets(conn, info.tid, record_ids)
    for linked_tid, ids in touched.items():
        engine.recompute(conn, linked_tid, ids)
    return touched


def pending_targets(conn: sqlite3.Connection, tid: int) -> set[str]:
    """Records of ``tid`` whose link lists queued writes change (recomputed after a pull)."""
    found: set[str] = set()
    for lists in link_views(conn, tid).values():
        found.update(lists)
    return found


def after_confirm(engine: Engine, conn: sqlite3.Connection, tid: int, record_id: str,
                  before: dict | None, after: dict | None) -> dict[int, set[str]]:
    """Airtable applied a write of ``record_id`` (``after`` None: deleted): it updated the inverse
    fields of the records linked or unlinked, so their remote state changes the same way. Returns
    those records (per table) for the caller to recompute."""
    touched: dict[int, set[str]] = {}
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
            touched.setdefault(pair.linked_tid, set()).update(changed)
    return touched


# -- formulas over link fields ------------------------------------------------------------------------


def primary_source(conn: sqlite3.Connection, tid: int, spec: dict) -> tuple[int, str] | None:
    """Where a link field of table ``tid`` gets its formula value: the linked table (cached,
    pulled, schema known) and its primary field's name. ``None``: only Airtable can tell."""
    row = _table_row(conn, tid)
    if row is None:
        return None
    linked = _linked_table(conn, row["endpoint"], row["base_id"], ((spec.get("options") or {}).get("linkedTableId")) or "")
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
