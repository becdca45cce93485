"""The durable write queue.

Modelled on huey's SQLite storage: order is in the schema (AUTOINCREMENT ``seq``), a flusher claims
under ``BEGIN IMMEDIATE``, an acknowledged write is deleted, a failure counts attempts. On disk the
queue always holds what the agent did; coalescing happens only when a batch is planned
(:func:`plan`), so a crash never leaves a half-merged write behind.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from airtable_cached import checksum
from airtable_cached.records import apply_write, dumps, is_provisional, referenced_provisional_ids

MAX_RECORDS_PER_REQUEST = 10


@dataclass(frozen=True)
class Op:
    """One queued write, as stored."""

    seq: int
    tid: int
    base_id: str
    table_ref: str
    op: str
    record_id: str
    fields: dict | None
    typecast: bool
    merge_on: list[str] | None
    state: str
    attempts: int
    last_error: str | None = None
    created_at: float = 0.0
    claimed_until: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Op:
        return cls(
            seq=row["seq"],
            tid=row["tid"],
            base_id=row["base_id"],
            table_ref=row["table_ref"],
            op=row["op"],
            record_id=row["record_id"],
            fields=json.loads(row["fields"]) if row["fields"] is not None else None,
            typecast=bool(row["typecast"]),
            merge_on=json.loads(row["merge_on"]) if row["merge_on"] else None,
            state=row["state"],
            attempts=row["attempts"],
            last_error=row["last_error"],
            created_at=row["created_at"],
            claimed_until=row["claimed_until"],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "base_id": self.base_id,
            "table": self.table_ref,
            "op": self.op,
            "record_id": self.record_id,
            "fields": self.fields,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": json.loads(self.last_error) if self.last_error else None,
            "created_at": self.created_at,
        }


@dataclass
class Send:
    """What one record's claimed writes amount to: at most one record in one request."""

    tid: int
    base_id: str
    table_ref: str
    kind: str  # create | update | replace | delete | none
    record_id: str
    fields: dict | None
    typecast: bool
    merge_on: list[str] | None
    seqs: list[int] = field(default_factory=list)
    #: A create that was sent before and whose answer never came back: reconcile before re-sending.
    uncertain: bool = False
    #: Airtable's time (ISO) before that create was first sent: what it made was created after it.
    created_after: str | None = None


# -- writing ---------------------------------------------------------------------------------------


def append(
    conn: sqlite3.Connection,
    *,
    tid: int,
    base_id: str,
    table_ref: str,
    op: str,
    record_id: str,
    fields: dict | None,
    base: dict | None,
    typecast: bool,
    now: float,
    merge_on: list[str] | None = None,
) -> int:
    sealed = {
        "tid": tid, "base_id": base_id, "table_ref": table_ref, "op": op, "record_id": record_id,
        "fields": None if fields is None else dumps(fields), "typecast": int(bool(typecast)),
        "merge_on": dumps(merge_on) if merge_on else None,
    }
    cur = conn.execute(
        "INSERT INTO outbox (tid, base_id, table_ref, op, record_id, fields, base, typecast, merge_on, created_at,"
        " checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            tid,
            base_id,
            table_ref,
            op,
            record_id,
            sealed["fields"],
            None if base is None else dumps(base),
            sealed["typecast"],
            sealed["merge_on"],
            now,
            checksum.seal(sealed),
        ),
    )
    assert cur.lastrowid is not None  # an INSERT always sets it
    return cur.lastrowid


def live_ops_for_record(conn: sqlite3.Connection, tid: int, record_id: str) -> list[Op]:
    """The writes that shape what reads see (dead letters do not)."""
    rows = conn.execute(
        "SELECT * FROM outbox WHERE tid = ? AND record_id = ? AND state != 'dead' ORDER BY seq",
        (tid, record_id),
    ).fetchall()
    return [Op.from_row(r) for r in rows]


def records_with_live_ops(conn: sqlite3.Connection, tid: int) -> set[str]:
    rows = conn.execute("SELECT DISTINCT record_id FROM outbox WHERE tid = ? AND state != 'dead'", (tid,))
    return {r[0] for r in rows}


def list_ops(conn: sqlite3.Connection, *, base_id: str | None = None, states: Sequence[str] = ("pending", "inflight", "dead")) -> list[Op]:
    marks = ",".join("?" * len(states))
    sql = f"SELECT * FROM outbox WHERE state IN ({marks})"
    params: list[Any] = list(states)
    if base_id:
        sql += " AND base_id = ?"
        params.append(base_id)
    return [Op.from_row(r) for r in conn.execute(sql + " ORDER BY seq", params)]


# -- claiming --------------------------------------------------------------------------------------


def has_ready(conn: sqlite3.Connection, now: float) -> bool:
    """Whether any write may be claimable now: due, or in flight (its flusher may have died; only
    taking the base's flush lock tells, and a live holder keeps it)."""
    return conn.execute(
        "SELECT 1 FROM outbox WHERE (state = 'pending' AND next_attempt_at <= ?) OR state = 'inflight' LIMIT 1",
        (now,),
    ).fetchone() is not None


def next_due(conn: sqlite3.Connection) -> float | None:
    """When the earliest queued write waiting for its retry time is due (``None``: none waits)."""
    row = conn.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'").fetchone()
    return row[0] if row and row[0] is not None else None


def claim(conn: sqlite3.Connection, base_id: str, *, now: float, lease: float, limit: int = 500) -> list[Op]:
    """Claim the writes of ``base_id`` that can be sent now. Call inside ``BEGIN IMMEDIATE``.

    Per record, writes are taken in order and the first one that cannot go stops the rest of that
    record: a write waiting for its retry time, one claimed by another live flusher, one naming a
    provisional id that Airtable has not given a real id yet, or anything after a dead create.
    """
    rows = conn.execute(
        "SELECT * FROM outbox WHERE base_id = ? ORDER BY seq", (base_id,)
    ).fetchall()
    mapped = {r[0] for r in conn.execute("SELECT provisional FROM id_map")}
    blocked: set[tuple[int, str]] = set()
    creates_here: set[str] = set()
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
        ready = (op.state == "pending" and row["next_attempt_at"] <= now) or (
            op.state == "inflight" and (op.claimed_until or 0) < now
        )
        waits_for = {p for p in referenced_provisional_ids(op.fields) if p not in mapped}
        if is_provisional(op.record_id) and op.op != "create" and op.record_id not in creates_here and op.record_id not in mapped:
            ready = False
        if not ready or waits_for:
            blocked.add(key)
            continue
        if op.op == "create":
            creates_here.add(op.record_id)
        claimed.append(op)
        if len(claimed) >= limit:
            break
    if claimed:
        conn.executemany(
            "UPDATE outbox SET state = 'inflight', claimed_until = ?, attempts = attempts + 1 WHERE seq = ?",
            [(now + lease, op.seq) for op in claimed],
        )
    return claimed


def release_claims(conn: sqlite3.Connection, base_id: str) -> int:
    """Make the in-flight writes of a base claimable now (their flusher is gone). They stay
    ``inflight``, so a create among them is looked for before it is sent again. Returns how many."""
    cur = conn.execute(
        "UPDATE outbox SET claimed_until = NULL WHERE base_id = ? AND state = 'inflight'", (base_id,)
    )
    return cur.rowcount


def plan(ops: Iterable[Op]) -> list[Send]:
    """Coalesce each record's claimed writes into one send, in the order records first appear.

    Successive updates merge into one PATCH, a PUT absorbs what came before, a create absorbs later
    updates, and a create followed by a delete sends nothing at all.
    """
    sends: dict[tuple[int, str], Send] = {}
    for op in ops:
        key = (op.tid, op.record_id)
        send = sends.get(key)
        if send is None:
            sends[key] = Send(
                tid=op.tid,
                base_id=op.base_id,
                table_ref=op.table_ref,
                kind=op.op,
                record_id=op.record_id,
                fields=dict(op.fields or {}) if op.op != "delete" else None,
                typecast=op.typecast,
                merge_on=op.merge_on,
                seqs=[op.seq],
                uncertain=op.op == "create" and (op.state == "inflight" or _left_uncertain(op)),
                created_after=_last_error(op).get("created_after") if op.op == "create" else None,
            )
            continue
        send.seqs.append(op.seq)
        send.typecast = send.typecast or op.typecast
        if op.op == "delete":
            if send.kind in ("create", "none"):
                # Nothing to send; the fields stay: a create sent before with its answer lost may
                # have made a record, and finding it (to delete it) needs what it was made of.
                send.kind = "none"
            else:
                send.kind = "delete"
                send.fields = None
        elif send.kind == "none":
            continue  # cannot happen: writes to a deleted record are refused at the call
        elif op.op == "replace":
            send.fields = dict(op.fields or {})
            send.kind = "create" if send.kind == "create" else "replace"
        else:  # update
            merged = dict(send.fields or {})
            merged.update(op.fields or {})
            send.fields = merged
    return list(sends.values())


def _left_uncertain(op: Op) -> bool:
    """A create whose last attempt may have made the record although no answer said so."""
    return bool(_last_error(op).get("uncertain"))


def _last_error(op: Op) -> dict:
    if not op.last_error:
        return {}
    try:
        error = json.loads(op.last_error)
    except ValueError:
        return {}
    return error if isinstance(error, dict) else {}


def chunk_requests(sends: Iterable[Send]) -> list[list[Send]]:
    """Group sends that can share a request (same table, kind, typecast and key), 10 at most."""
    groups: dict[tuple, list[Send]] = {}
    for send in sends:
        if send.kind == "none":
            continue
        key = (send.tid, send.kind, send.typecast, tuple(send.merge_on or ()), send.uncertain)
        groups.setdefault(key, []).append(send)
    batches = []
    for group in groups.values():
        for i in range(0, len(group), MAX_RECORDS_PER_REQUEST):
            batches.append(group[i : i + MAX_RECORDS_PER_REQUEST])
    return batches


# -- finishing -------------------------------------------------------------------------------------


def ack(conn: sqlite3.Connection, seqs: Iterable[int]) -> None:
    conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])


def retry_later(conn: sqlite3.Connection, seqs: Iterable[int], *, error: Any, next_attempt_at: float) -> None:
    conn.executemany(
        "UPDATE outbox SET state = 'pending', claimed_until = NULL, next_attempt_at = ?, last_error = ? WHERE seq = ?",
        [(next_attempt_at, dumps(error), s) for s in seqs],
    )


def dead_letter(conn: sqlite3.Connection, seqs: Iterable[int], *, error: Any) -> None:
    conn.executemany(
        "UPDATE outbox SET state = 'dead', claimed_until = NULL, last_error = ? WHERE seq = ?",
        [(dumps(error), s) for s in seqs],
    )


def requeue(conn: sqlite3.Connection, seqs: Iterable[int] | None = None) -> list[int]:
    """Put dead-lettered writes back in the queue (``None``: all of them). Returns their seqs."""
    if seqs is None:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM outbox WHERE state = 'dead'")]
    seqs = list(seqs)
    conn.executemany(
        "UPDATE outbox SET state = 'pending', next_attempt_at = 0, attempts = 0 WHERE seq = ? AND state = 'dead'",
        [(s,) for s in seqs],
    )
    return seqs


def remap_id(conn: sqlite3.Connection, provisional: str, real: str, tid: int) -> None:
    """Replace a provisional id by Airtable's everywhere: queued writes, link fields, the id map."""
    conn.execute("INSERT OR REPLACE INTO id_map (provisional, real, tid) VALUES (?, ?, ?)", (provisional, real, tid))
    for (seq,) in conn.execute("SELECT seq FROM outbox WHERE record_id = ?", (provisional,)).fetchall():
        checksum.rewrite(conn, seq, record_id=real)
    mapping = {provisional: real}
    from airtable_cached.records import replace_ids

    for seq, fields in conn.execute(
        "SELECT seq, fields FROM outbox WHERE fields IS NOT NULL AND instr(fields, ?) > 0", (provisional,)
    ).fetchall():
        checksum.rewrite(conn, seq, fields=dumps(replace_ids(json.loads(fields), mapping)))


def replay(remote_fields: dict | None, ops: Iterable[Op]) -> dict | None:
    """What reads see: the remote state with the pending writes applied in order (a rebase)."""
    current = remote_fields
    for op in ops:
        if op.op == "create":
            current = apply_write(None, "create", op.fields)
        elif current is None:
            continue  # an update or delete of a record that is gone remotely
        else:
            current = apply_write(current, op.op, op.fields)
    return current
