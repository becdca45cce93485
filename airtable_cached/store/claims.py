"""Which queued writes a flusher may take now: the rule every store's ``Outbox.claim`` applies
(pure: the store reads the rows, this chooses, the store marks the chosen ones in flight)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airtable_cached.rules.records import is_provisional, referenced_provisional_ids
from airtable_cached.store.types import Op


def touches_links(op: Op, links: frozenset[str]) -> bool:
    """Whether a write changes link fields with an inverse (a delete or a PUT clears them too)."""
    if not links:
        return False
    return op.op in ("delete", "replace") or bool(links & set(op.fields or {}))


def choose(rows: Sequence[Mapping[str, Any]], mapped: set[str], *, now: float, limit: int,
           link_fields: Mapping[int, frozenset[str]]) -> list[Op]:
    """The writes of one base (``rows``: all its queued rows, in queue order) that can be sent now.

    Per record, writes are taken in order and the first one that cannot go stops the rest of that
    record: a write waiting for its retry time, one claimed by another live flusher, one naming a
    provisional id that Airtable has not given a real id yet (``mapped``: those it has), or anything
    after a dead create. A create or a link write waiting for another create's real id also holds
    back the creates and link writes queued after it, so that Airtable makes the records and links
    them in the order of the calls (issue 9).
    """
    blocked: set[tuple[int, str]] = set()
    creates_here: set[str] = set()
    live_creates = {r["record_id"] for r in rows if r["op"] == "create" and r["state"] != "dead"}
    creates_held = False
    claimed: list[Op] = []
    for row in rows:
        key = (row["tid"], row["record_id"])
        if key in blocked:
            continue
        if row["state"] == "dead":  # judged by its columns: a dead letter may be unreadable (damaged)
            if row["op"] == "create":
                blocked.add(key)
            continue
        op = Op.from_row(row)
        ordered = op.op == "create" or touches_links(op, link_fields.get(op.tid, frozenset()))
        if creates_held and ordered:
            blocked.add(key)
            continue
        ready = (op.state == "pending" and op.next_attempt_at <= now) or (
            op.state == "inflight" and (op.claimed_until or 0) < now
        )
        waits_for = {p for p in referenced_provisional_ids(op.fields) if p not in mapped}
        if is_provisional(op.record_id) and op.op != "create" and op.record_id not in creates_here and op.record_id not in mapped:
            ready = False
        if not ready or waits_for:
            blocked.add(key)
            if ordered and waits_for and waits_for <= live_creates:
                creates_held = True
            continue
        if op.op == "create":
            creates_here.add(op.record_id)
        claimed.append(op)
        if len(claimed) >= limit:
            break
    return claimed
