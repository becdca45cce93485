"""The state transitions of the cache the sync (and the engine's own writes) call: a pull swapped
in, records Airtable answered absorbed, records forgotten, what reads see recomputed from the
remote state and the queue, conflicts resolved Airtable-wins.

Functions of a store or of a unit of work (``store/contract.py``) and the pure rules: nothing here
holds state, so the sync calls them without an engine."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from airtable_cached.engine import links
from airtable_cached.engine.tables import TableInfo, learn_schema
from airtable_cached.rules.records import clean_fields, dumps, now_iso, replay
from airtable_cached.store.contract import PulledRecord, Store, Unit

log = logging.getLogger("airtable_cached")

#: Where a view's records never seen in the table's natural order go (after every pulled one).
_VIEW_ONLY_POSITION = 1_000_000_000


def recompute(unit: Unit, tid: int, record_ids: Iterable[str]) -> None:
    """Rebuild what reads see for these records: remote state + live queued writes (their own,
    and those of linked records, on link fields: see links.py)."""
    link_lists = links.link_views(unit, tid)
    for record_id in record_ids:
        state = unit.replica.remote_state(tid, record_id)
        if state is None:
            continue
        view = replay(state[0], unit.outbox.live_ops_for_record(tid, record_id))
        if view is not None and link_lists:
            view = links.adjust(dict(view), record_id, link_lists)
        unit.replica.set_visible_fields(tid, record_id, view)


def after_local_write(unit: Unit, tid: int, record_ids: list[str]) -> dict[int, set[str]]:
    """The agent wrote these records (or deleted them): the linked records show it at once.
    Returns those linked records, per table."""
    touched = links.targets(unit, tid, record_ids)
    for linked_tid, ids in touched.items():
        recompute(unit, linked_tid, ids)
    return touched


def recompute_after_pull(unit: Unit, tid: int, record_ids: set[str] | None = None) -> None:
    """After Airtable's state came in: records with live queued writes (among ``record_ids``, if
    given), and those whose link lists queued writes change, are recomputed."""
    live = unit.outbox.records_with_live_ops(tid)
    recompute(unit, tid, (live if record_ids is None else record_ids & live) | links.pending_targets(unit, tid))


def apply_pull(store: Store, info: TableInfo, records: list[dict], *, endpoint: str, clock: Callable[[], float],
               started_at: float, schema: dict | None = None, view: str | None = None, complete: bool = True) -> None:
    """Swap in a pulled table (or view) in one transaction, then replay the queue on top."""
    now = clock()
    with store.write() as unit:
        if schema is not None:
            learn_schema(unit, endpoint, info, schema)
        existing = unit.replica.record_ids(info.tid)
        resolve_conflicts(unit, info.tid, records, now, started_at)
        _store_pulled(unit, info.tid, records, existing, view=view, now=now, started_at=started_at)
        if view is not None:
            unit.replica.replace_view(info.tid, view, [r["id"] for r in records], pulled_at=now)
        elif complete:
            _drop_gone(unit, info.tid, records, started_at)
        recompute_after_pull(unit, info.tid)
        if view is None and complete:
            # Stamped when the apply ends, not when it began: a long apply must not leave the
            # table already stale for the next read (issue 11).
            unit.replica.mark_pulled(info.tid, clock())


def _pulled(record: dict, position: int, now: float) -> PulledRecord:
    return PulledRecord(id=record["id"], position=position, created_time=record.get("createdTime") or now_iso(now),
                        fields=clean_fields(record.get("fields") or {}), comment_count=record.get("commentCount", 0))


def _store_pulled(unit: Unit, tid: int, records: list[dict], existing: set[str], *, view: str | None,
                  now: float, started_at: float) -> None:
    """A table's pull places every record; a view's places only records the table lacks (after
    them all) and refreshes the others' state, their natural order unchanged."""
    offset = 0 if view is None else _VIEW_ONLY_POSITION
    placed = [_pulled(r, i + offset, now) for i, r in enumerate(records) if view is None or r["id"] not in existing]
    refreshed = [] if view is None else [_pulled(r, 0, now) for r in records if r["id"] in existing]
    unit.replica.upsert_pulled(tid, placed, now=now, now_text=now_iso(now), started_at=started_at)
    unit.replica.refresh_pulled(tid, refreshed, now=now, started_at=started_at)


def _drop_gone(unit: Unit, tid: int, records: list[dict], started_at: float) -> None:
    # Gone from Airtable: drop what was seen before this pull began (a record confirmed by a
    # flush during the pull is newer than the pull and stays).
    unit.replica.drop_records_not_seen(tid, {r["id"] for r in records}, started_at=started_at)
    # Local creates keep their place after the pulled records.
    unit.replica.move_local_records_after(tid, len(records) - 1)


def resolve_conflicts(unit: Unit, tid: int, pulled: list[dict], now: float, started_at: float) -> None:
    """Airtable wins: a field that changed in Airtable since the cache last saw it,
    to a value other than the agent's, and that a queued update also writes, keeps Airtable's
    value. The update no longer sends that field; the dropped local value goes to the
    ``conflicts`` log. Left alone: writes a flusher is sending right now, PUTs (the agent
    replaced the whole record), and records a flush confirmed after this pull began (the
    pulled copy is older than what the cache knows)."""
    queued: dict[str, list[dict]] = {}
    for write in unit.outbox.pending_updates(tid):
        queued.setdefault(write["record_id"], []).append(write)
    if not queued:
        return
    for record in pulled:
        if queued.get(record["id"]):
            _resolve_record(unit, tid, record, queued[record["id"]], now, started_at)


def _resolve_record(unit: Unit, tid: int, record: dict, writes: list[dict], now: float, started_at: float) -> None:
    state = unit.replica.remote_state(tid, record["id"])
    if state is None or state[0] is None or (state[1] is not None and state[1] > started_at):
        return
    before, after = state[0], clean_fields(record.get("fields") or {})
    changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
    for write in writes:
        written = write["fields"]
        lost = {name for name in changed & set(written) if after.get(name) != written[name]}
        if lost:
            _drop_lost(unit, tid, record["id"], write, lost, after, now)


def _drop_lost(unit: Unit, tid: int, record_id: str, write: dict, lost: set[str], after: dict, now: float) -> None:
    written = write["fields"]
    unit.replica.log_conflicts(tid, record_id, {name: (written[name], after.get(name)) for name in lost}, at=now)
    kept = {name: value for name, value in written.items() if name not in lost}
    if kept:
        unit.outbox.rewrite(write["seq"], fields=dumps(kept))
    else:
        unit.outbox.ack([write["seq"]])
    log.warning("conflict on %s: Airtable changed %s meanwhile; its value wins", record_id, ", ".join(sorted(lost)))


def absorb(store: Store, info: TableInfo, records: list[dict], *, now: float, sent_at: float) -> None:
    """Records Airtable returned to a request sent on the agent's behalf (at ``sent_at``): keep
    them, unless a flush confirmed a newer state of the record meanwhile."""
    with store.write() as unit:
        position = unit.replica.last_position(info.tid)
        last = {r.get("id"): i for i, r in enumerate(records)}  # a record answered twice: its final state
        kept = [r for i, r in enumerate(records) if "createdTime" in r and "fields" in r and last[r.get("id")] == i]
        unit.replica.absorb_records(info.tid, [
            PulledRecord(id=r["id"], position=position + 1 + i, created_time=r["createdTime"],
                         fields=clean_fields(r["fields"]), comment_count=0)
            for i, r in enumerate(kept)
        ], now=now, sent_at=sent_at)
        recompute_after_pull(unit, info.tid, {r["id"] for r in records})


def forget(store: Store, info: TableInfo, record_ids: list[str]) -> None:
    """Airtable says these records are deleted."""
    with store.write() as unit:
        unit.replica.delete_records(info.tid, record_ids)
