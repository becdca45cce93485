"""``queue list``, ``queue retry`` and ``queue drop``: the writes waiting for Airtable, and the
dead letters it refused."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from airtable_cached.config import Settings
from airtable_cached.ops.errors import MaintenanceError
from airtable_cached.store.sqlite import Store
from airtable_cached.sync import outbox


def queue_list(store: Store, *, base: str | None = None, state: str | None = None) -> list[dict]:
    """Queued and dead-lettered writes, oldest first, with attempts, last error and claim."""
    states = (state,) if state else ("pending", "inflight", "dead")
    conn = store.conn
    extra = {r["seq"]: r for r in conn.execute("SELECT seq, next_attempt_at, claimed_until FROM outbox")}
    items = []
    for op in outbox.list_ops(conn, base_id=base, states=states):
        item = op.as_dict()
        item["next_attempt_at"] = extra[op.seq]["next_attempt_at"] if op.seq in extra else None
        item["claimed_until"] = op.claimed_until
        items.append(item)
    return items


def _affected(conn: sqlite3.Connection, seqs: list[int]) -> set[tuple[int, str]]:
    if not seqs:
        return set()
    marks = ",".join("?" * len(seqs))
    return {(r[0], r[1]) for r in conn.execute(f"SELECT tid, record_id FROM outbox WHERE seq IN ({marks})", seqs)}


def _engine(store: Store):
    from airtable_cached.engine.core import Engine

    return Engine(store, Settings.from_env(path=store.path))


def _existing_seqs(conn: sqlite3.Connection, ids: Iterable[int]) -> list[int]:
    """The given queue ids, sorted; an error naming any that is not in the queue."""
    wanted = sorted(set(int(i) for i in ids))
    known = {r[0] for r in conn.execute("SELECT seq FROM outbox")}
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise MaintenanceError(f"no queued write with id {', '.join(map(str, unknown))}")
    return wanted


def queue_retry(store: Store, ids: Iterable[int] | None = None) -> dict:
    """Put dead-lettered writes back in the queue (``None``: all of them) and make waiting ones
    due now. Reads see the retried writes again at once. Returns the seqs touched."""
    engine = _engine(store)
    with store.write() as unit:
        conn = unit.conn  # for the engine and queue calls that still take a connection
        if ids is None:
            wanted = [r[0] for r in conn.execute("SELECT seq FROM outbox WHERE state = 'dead' ORDER BY seq")]
        else:
            wanted = _existing_seqs(conn, ids)
        dead = [r[0] for r in conn.execute(
            f"SELECT seq FROM outbox WHERE state = 'dead' AND seq IN ({','.join('?' * len(wanted))})", wanted)] if wanted else []
        outbox.requeue(conn, dead)
        waiting = [s for s in wanted if s not in dead]
        conn.executemany("UPDATE outbox SET next_attempt_at = 0 WHERE seq = ? AND state = 'pending'",
                         [(s,) for s in waiting])
        for tid, rid in _affected(conn, dead):
            engine.recompute(conn, tid, [rid])
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
        conn = unit.conn  # for the engine and queue calls that still take a connection
        if ids is None:
            sql = "SELECT seq FROM outbox" + ("" if include_pending else " WHERE state = 'dead'")
            wanted = [r[0] for r in conn.execute(sql)]
        else:
            wanted = _existing_seqs(conn, ids)
        if not wanted:
            return {"dropped": [], "records": []}
        marks = ",".join("?" * len(wanted))
        busy = [r[0] for r in conn.execute(
            f"SELECT seq FROM outbox WHERE seq IN ({marks}) AND state = 'inflight' AND claimed_until >= ?", [*wanted, now])]
        if busy:
            raise MaintenanceError(
                f"write(s) {', '.join(map(str, busy))} are being sent by a flusher right now; try again later")
        # A dropped create takes the later writes to the same record with it.
        creates = conn.execute(f"SELECT tid, record_id, seq FROM outbox WHERE seq IN ({marks}) AND op = 'create'",
                               wanted).fetchall()
        drop = set(wanted)
        for tid, rid, seq in creates:
            drop |= {r[0] for r in conn.execute(
                "SELECT seq FROM outbox WHERE tid = ? AND record_id = ? AND seq > ?", (tid, rid, seq))}
        drop_list = sorted(drop)
        affected = _affected(conn, drop_list)
        outbox.ack(conn, drop_list)
        for tid, rid in affected:
            left = conn.execute("SELECT 1 FROM outbox WHERE tid = ? AND record_id = ? LIMIT 1", (tid, rid)).fetchone()
            if left is None:
                # A record that was only ever local and has no write left: nothing will create it.
                unit.replica.delete_record(tid, rid, only_local=True)
            engine.recompute(conn, tid, [rid])
    return {"dropped": drop_list, "records": sorted(rid for _tid, rid in affected)}
