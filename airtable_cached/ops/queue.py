"""``queue list``, ``queue retry`` and ``queue drop``: the writes waiting for Airtable, and the
dead letters it refused."""

from __future__ import annotations

import time
from collections.abc import Iterable

from airtable_cached.engine import Engine
from airtable_cached.ops.errors import MaintenanceError
from airtable_cached.runtime import local_engine
from airtable_cached.store.contract import Outbox
from airtable_cached.store.sqlite import Store


def queue_list(store: Store, *, base: str | None = None, state: str | None = None) -> list[dict]:
    """Queued and dead-lettered writes, oldest first, with attempts, last error and claim."""
    states = (state,) if state else ("pending", "inflight", "dead")
    items = []
    for op in store.outbox.list_ops(base_id=base, states=states):
        items.append({**op.as_dict(), "next_attempt_at": op.next_attempt_at, "claimed_until": op.claimed_until})
    return items


def _engine(store: Store) -> Engine:
    return local_engine(store)


def _existing_seqs(queue: Outbox, ids: Iterable[int]) -> list[int]:
    """The given queue ids, sorted; an error naming any that is not in the queue."""
    wanted = sorted(set(int(i) for i in ids))
    known = set(queue.seqs())
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise MaintenanceError(f"no queued write with id {', '.join(map(str, unknown))}")
    return wanted


def queue_retry(store: Store, ids: Iterable[int] | None = None) -> dict:
    """Put dead-lettered writes back in the queue (``None``: all of them) and make waiting ones
    due now. Reads see the retried writes again at once. Returns the seqs touched."""
    engine = _engine(store)
    with store.write() as unit:
        queue = unit.outbox
        wanted = queue.seqs(("dead",)) if ids is None else _existing_seqs(queue, ids)
        dead = sorted(queue.dead_among(wanted))
        queue.requeue(dead)
        waiting = [s for s in wanted if s not in dead]
        queue.make_due(waiting)
        for tid, rid in queue.records_of(dead):
            engine.recompute(unit, tid, [rid])
    return {"requeued": dead, "due_now": waiting}


def queue_drop(store: Store, ids: Iterable[int] | None = None, *, include_pending: bool = False,
               now: float | None = None) -> dict:
    """Remove writes from the queue for good (``None``: every dead-lettered write, and with
    ``include_pending`` every write). Dropping a create drops the later writes to the same record.
    Writes a live flusher has claimed are refused. The affected records' views are recomputed in
    the same transaction, so reads stop seeing the dropped writes at once."""
    now = time.time() if now is None else now
    engine = _engine(store)
    with store.write() as unit:
        queue = unit.outbox
        if ids is None:
            wanted = queue.seqs() if include_pending else queue.seqs(("dead",))
        else:
            wanted = _existing_seqs(queue, ids)
        if not wanted:
            return {"dropped": [], "records": []}
        busy = queue.claimed_among(wanted, now)
        if busy:
            raise MaintenanceError(
                f"write(s) {', '.join(map(str, busy))} are being sent by a flusher right now; try again later")
        # A dropped create takes the later writes to the same record with it.
        drop_list = sorted(queue.with_later_writes(wanted))
        affected = queue.records_of(drop_list)
        queue.ack(drop_list)
        for tid, rid in affected:
            if not queue.has_writes(tid, rid):
                # A record that was only ever local and has no write left: nothing will create it.
                unit.replica.delete_records(tid, [rid], only_local=True)
            engine.recompute(unit, tid, [rid])
    return {"dropped": drop_list, "records": sorted(rid for _tid, rid in affected)}
