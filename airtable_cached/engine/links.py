"""Both sides of a link, kept locally as Airtable keeps them.

A link field names its inverse in the schema (``options.inverseLinkFieldId``): when record R of
table A links to X of table B, X's inverse field lists R. Airtable does this at once; the cache
must too, before the flush and before the next pull.

What reads see of a record is its remote state with its own queued writes replayed on top
(``replay`` in ``rules/records.py``), and then, for each link field, the list that the queued writes of *both*
sides leave, in queue order (:class:`LinkState`): a record that gains a link to X (queued, not yet
on Airtable) shows in X's inverse field, one that drops it (or is deleted) no longer does, and a
later write of X's own list wins. Those lists are derived from the queue every time a record is
recomputed, so a pull, a flush or a dead letter never leaves them stale. When Airtable confirms a write, it has updated the inverse side too: the cache updates the
linked records' remote state the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airtable_cached.rules.records import RECORD_ID_RE
from airtable_cached.store.contract import Replica, TableRow, Unit


@dataclass(frozen=True)
class LinkPair:
    """A link field of one table and its inverse in the linked table."""

    field: str  # the link field's name in this table
    linked_tid: int  # the cached table it links to
    inverse: str  # the inverse field's name in the linked table


def _linked_table(replica: Replica, row: TableRow, spec: dict) -> TableRow | None:
    """The cached table a link field points to, of the same endpoint (two endpoints may share a base id)."""
    return replica.linked_table(row["endpoint"], row["base_id"], (spec.get("options") or {}).get("linkedTableId") or "")


def link_pairs(replica: Replica, tid: int) -> list[LinkPair]:
    """The link fields of a cached table whose inverse is known (both schemas cached)."""
    row = replica.table(tid)
    if row is None or not row["schema"]:
        return []
    pairs = []
    for spec in row["schema"].get("fields", []):
        options = spec.get("options") or {}
        if spec.get("type") != "multipleRecordLinks" or not options.get("inverseLinkFieldId"):
            continue
        linked = _linked_table(replica, row, spec)
        if linked is None or not linked["schema"]:
            continue
        inverse = next((f["name"] for f in linked["schema"].get("fields", []) if f.get("id") == options["inverseLinkFieldId"]), None)
        if inverse is not None:
            pairs.append(LinkPair(spec["name"], linked["tid"], inverse))
    return pairs


def _ids(value: Any) -> list[str]:
    return [x for x in value if isinstance(x, str) and RECORD_ID_RE.match(x)] if isinstance(value, list) else []


class LinkState:
    """Both sides of one link (field ``pair.field`` of table ``tid``, its inverse in the linked
    table) as reads see them: the remote lists, then every queued write of either side that sets
    one of the two fields, in queue order. A write replaces its record's list and moves the record
    in or out of the other side's lists (appended when added, as Airtable does), so a later write
    of either side wins over an earlier one."""

    def __init__(self, unit: Unit, tid: int, pair: LinkPair):
        self.unit = unit
        self.sides = {(tid, pair.field): (pair.linked_tid, pair.inverse), (pair.linked_tid, pair.inverse): (tid, pair.field)}
        self.lists: dict[tuple[int, str], dict[str, list[str]]] = {side: {} for side in self.sides}
        self.touched: dict[tuple[int, str], set[str]] = {side: set() for side in self.sides}
        self._replay()

    def _list(self, side: tuple[int, str], record_id: str) -> list[str]:
        lists = self.lists[side]
        if record_id not in lists:
            state = self.unit.replica.remote_state(side[0], record_id)
            remote = state[0] if state is not None and state[0] is not None else {}
            lists[record_id] = _ids(remote.get(side[1]))
        return lists[record_id]

    def _replay(self) -> None:
        for write in self.unit.outbox.live_writes_of_tables(sorted({side[0] for side in self.sides})):
            fields = write["fields"] if write["fields"] is not None else {}
            for side in self.sides:
                if side[0] != write["tid"]:
                    continue
                if write["op"] in ("delete", "create", "replace"):
                    value = _ids(fields.get(side[1]))  # a created or replaced record without it: none
                elif side[1] in fields:
                    value = _ids(fields[side[1]])
                else:
                    continue
                self._set(side, write["record_id"], value)

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


def link_views(unit: Unit, tid: int) -> dict[str, dict[str, list[str]]]:
    """For each link field of ``tid`` with a known inverse: the list reads see, for every record
    whose list queued writes (of either side) changed."""
    out: dict[str, dict[str, list[str]]] = {}
    for pair in link_pairs(unit.replica, tid):
        if not unit.outbox.has_live_writes([tid, pair.linked_tid]):
            continue
        state = LinkState(unit, tid, pair)
        side = (tid, pair.field)
        if state.touched[side]:
            out[pair.field] = {rid: state.lists[side][rid] for rid in state.touched[side]}
    return out


def adjust(fields: dict, record_id: str, views: dict[str, dict[str, list[str]]]) -> dict:
    """A record's fields with its link lists as both sides' queued writes leave them."""
    for name, lists in views.items():
        if record_id in lists:
            if lists[record_id]:
                fields[name] = lists[record_id]
            else:
                fields.pop(name, None)
    return fields


def targets(unit: Unit, tid: int, record_ids: list[str] | set[str]) -> dict[int, set[str]]:
    """Records on the other side of these records' links, as Airtable has them, as queued (in any
    state) and as reads see them, and records whose cells name them: every record whose inverse
    field the records may touch."""
    pairs = link_pairs(unit.replica, tid)
    found: dict[int, set[str]] = {}
    if not pairs:
        return found
    for record_id in record_ids:
        values = _known_states(unit, tid, record_id)
        for pair in pairs:
            linked = found.setdefault(pair.linked_tid, set())
            for fields in values:
                linked.update(_ids(fields.get(pair.field)))
            # Records whose own queued writes link to it (only they can name it where it does not).
            linked.update(unit.outbox.records_whose_live_writes_name(pair.linked_tid, record_id))
    return found


def _known_states(unit: Unit, tid: int, record_id: str) -> list[dict]:
    """The record's fields as Airtable has them, as reads see them, and as every queued write sets them."""
    copies = unit.replica.record_copies(tid, record_id)
    values = [] if copies is None else [v for v in (copies["remote"], copies["fields"]) if v is not None]
    return values + unit.outbox.written_fields(tid, record_id)


def pending_targets(unit: Unit, tid: int) -> set[str]:
    """Records of ``tid`` whose link lists queued writes change (recomputed after a pull)."""
    found: set[str] = set()
    for lists in link_views(unit, tid).values():
        found.update(lists)
    return found


def after_confirm(unit: Unit, tid: int, record_id: str, before: dict | None,
                  after: dict | None) -> dict[int, set[str]]:
    """Airtable applied a write of ``record_id`` (``after`` None: deleted): it updated the inverse
    fields of the records linked or unlinked, so their remote state changes the same way. Returns
    those records (per table) for the caller to recompute."""
    touched: dict[int, set[str]] = {}
    for pair in link_pairs(unit.replica, tid):
        old = _ids((before or {}).get(pair.field))
        new = _ids((after or {}).get(pair.field))
        changed = [x for x in old if x not in new] + [x for x in new if x not in old]
        for target in changed:
            _confirm_inverse(unit.replica, pair, target, record_id, linked=target in new)
        if changed:
            touched.setdefault(pair.linked_tid, set()).update(changed)
    return touched


def _confirm_inverse(replica: Replica, pair: LinkPair, target: str, record_id: str, *, linked: bool) -> None:
    state = replica.remote_state(pair.linked_tid, target)
    if state is None or state[0] is None:
        return
    remote = state[0]
    current = [x for x in remote.get(pair.inverse) or [] if x != record_id]
    if linked:
        current.append(record_id)
    if current:
        remote[pair.inverse] = current
    else:
        remote.pop(pair.inverse, None)
    replica.set_remote_fields(pair.linked_tid, target, remote)


# -- formulas over link fields ------------------------------------------------------------------------


def primary_source(replica: Replica, tid: int, spec: dict) -> tuple[int, str] | None:
    """Where a link field of table ``tid`` gets its formula value: the linked table (cached,
    pulled, schema known) and its primary field's name. ``None``: only Airtable can tell."""
    row = replica.table(tid)
    if row is None:
        return None
    linked = _linked_table(replica, row, spec)
    if linked is None or linked["pulled_at"] is None or not linked["schema"]:
        return None
    schema = linked["schema"]
    primary = next((f["name"] for f in schema.get("fields", []) if f.get("id") == schema.get("primaryFieldId")), None)
    return (linked["tid"], primary) if primary else None


class PrimaryValues:
    """Link cells as a formula sees them: the linked records' primary values (as reads see them,
    the agent's queued writes included), read once per linked table per read."""

    def __init__(self, replica: Replica, sources: dict[str, tuple[int, str]]):
        self.replica = replica
        self.sources = sources
        self._values: dict[int, dict[str, Any]] = {}

    def _table(self, tid: int, primary: str) -> dict[str, Any]:
        if tid not in self._values:
            self._values[tid] = self.replica.field_values(tid, primary)
        return self._values[tid]

    def record(self, record: dict) -> dict:
        fields = dict(record["fields"])
        for name, (tid, primary) in self.sources.items():
            if name in fields:
                values = self._table(tid, primary)
                shown = [values.get(x) for x in _ids(fields[name])]
                fields[name] = [v for v in shown if v is not None and v != ""]
        return {**record, "fields": fields}
