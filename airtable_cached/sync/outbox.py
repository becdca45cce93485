"""The durable write queue.

Modelled on huey's SQLite storage: order is in the schema (AUTOINCREMENT ``seq``), a flusher claims
under ``BEGIN IMMEDIATE``, an acknowledged write is deleted, a failure counts attempts. On disk the
queue always holds what the agent did; coalescing happens only when a batch is planned
(:func:`plan`), so a crash never leaves a half-merged write behind.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airtable_cached.rules.records import apply_write, dumps, is_provisional, referenced_provisional_ids
from airtable_cached.store import checksum

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
    #: The agent's call this write came from (writes queued before calls were recorded: their own).
    call_id: int = 0

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
            call_id=row["call_id"] or row["seq"],
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
    #: The agent's calls whose writes this send carries.
    calls: set[int] = field(default_factory=set)
    #: Link writes planned before this send's last one (see :func:`plan`).
    epoch: int = 0
    #: It changes links: it keeps its place in the queue order (see :func:`chunk_requests`).
    ordered: bool = False


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
    call_id: int | None = None,
) -> int:
    """Queue one write; ``call_id`` is the seq of the first write of the same call (``None``: this
    write starts a call)."""
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
    seq = cur.lastrowid
    conn.execute("UPDATE outbox SET call_id = ? WHERE seq = ?", (seq if call_id is None else call_id, seq))
    return seq


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


def claim(conn: sqlite3.Connection, base_id: str, *, now: float, lease: float, limit: int = 500,
          link_fields: Mapping[int, frozenset[str]] | None = None, endpoint: str | None = None) -> list[Op]:
    """Claim the writes of ``base_id`` that can be sent now. Call inside ``BEGIN IMMEDIATE``.

    Per record, writes are taken in order and the first one that cannot go stops the rest of that
    record: a write waiting for its retry time, one claimed by another live flusher, one naming a
    provisional id that Airtable has not given a real id yet, or anything after a dead create.
    A create or a link write (``link_fields``, see :func:`plan`) waiting for another create's real
    id also holds back the creates and link writes queued after it, so that Airtable makes the
    records and links them in the order of the calls (issue 9).
    """
    link_fields = link_fields or {}
    rows = conn.execute(
        "SELECT * FROM outbox WHERE base_id = ?" + _OF_ENDPOINT * (endpoint is not None) + " ORDER BY seq",
        (base_id,) if endpoint is None else (base_id, endpoint),
    ).fetchall()
    mapped = {r[0] for r in conn.execute("SELECT provisional FROM id_map")}
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
        ordered = op.op == "create" or _touches_links(op, link_fields.get(op.tid, frozenset()))
        if creates_held and ordered:
            blocked.add(key)
            continue
        ready = (op.state == "pending" and row["next_attempt_at"] <= now) or (
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
    if claimed:
        conn.executemany(
            "UPDATE outbox SET state = 'inflight', claimed_until = ?, attempts = attempts + 1 WHERE seq = ?",
            [(now + lease, op.seq) for op in claimed],
        )
    return claimed


def release_claims(conn: sqlite3.Connection, base_id: str, *, endpoint: str | None = None) -> int:
    """Make the in-flight writes of a base claimable now (their flusher is gone). They stay
    ``inflight``, so a create among them is looked for before it is sent again. Returns how many."""
    cur = conn.execute(
        "UPDATE outbox SET claimed_until = NULL WHERE base_id = ? AND state = 'inflight'" + _OF_ENDPOINT * (endpoint is not None),
        (base_id,) if endpoint is None else (base_id, endpoint),
    )
    return cur.rowcount


#: Narrows an outbox query to the tables of one endpoint (the cache is keyed by endpoint).
_OF_ENDPOINT = " AND tid IN (SELECT tid FROM tables WHERE endpoint = ?)"


def unclaim(conn: sqlite3.Connection, ops: Iterable[Op]) -> None:
    """Give claimed writes back as they were before :func:`claim` (a create that was in flight
    stays in flight, so it is still looked for before it is sent again)."""
    conn.executemany(
        "UPDATE outbox SET state = ?, claimed_until = ?, attempts = ? WHERE seq = ? AND state = 'inflight'",
        [(op.state, op.claimed_until, op.attempts, op.seq) for op in ops],
    )


def plan(ops: Iterable[Op], link_fields: Mapping[int, frozenset[str]] | None = None) -> list[Send]:
    """Coalesce each record's claimed writes into one send, in the order records first appear.

    Successive updates merge into one PATCH, a PUT absorbs what came before, a create absorbs later
    updates, and a create followed by a delete sends nothing at all (unless the create asked for
    ``typecast``, whose side effects, new select options, records made for links, stay in Airtable).

    Writes that change links (``link_fields``: per table, its link fields with an inverse; a
    delete or a PUT clears them too) change the other side's records as well, so their order
    across records matters: a record's link write made after another record's link write is not
    merged into its earlier send, and such sends are marked ``ordered`` (``chunk_requests`` keeps
    them in queue order).
    """
    link_fields = link_fields or {}
    sends: dict[tuple[int, str], Send] = {}
    out: list[Send] = []
    epoch = 0  # link writes so far: a send made at another epoch has seen other records' link writes
    for op in ops:
        key = (op.tid, op.record_id)
        touches = _touches_links(op, link_fields.get(op.tid, frozenset()))
        send = sends.get(key)
        if send is not None and touches and send.epoch != epoch:
            send = None  # another record's link write came between: this one goes after it
        elif send is not None and op.op == "delete" and send.kind == "create" and send.typecast:
            send = None  # made, then deleted: a typecast may add select options or linked records
        elif send is not None and send.merge_on and op.op in ("update", "replace") and (
                op.op == "replace" or set(send.merge_on) & set(op.fields or {})):
            send = None  # an upsert's key changed later: the upsert is sent on the key it was made with
        if send is None:
            send = sends[key] = Send(
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
                calls={op.call_id},
                epoch=epoch,
                created_after=_last_error(op).get("created_after") if op.op == "create" else None,
            )
            out.append(send)
        else:
            _merge(send, op)
        if touches:
            epoch += 1
            send.epoch = epoch
            send.ordered = True
    return out


def _touches_links(op: Op, links: frozenset[str]) -> bool:
    if not links:
        return False
    return op.op in ("delete", "replace") or bool(links & set(op.fields or {}))


def _merge(send: Send, op: Op) -> None:
    send.seqs.append(op.seq)
    send.calls.add(op.call_id)
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
        return  # cannot happen: writes to a deleted record are refused at the call
    elif op.op == "replace":
        send.fields = dict(op.fields or {})
        send.kind = "create" if send.kind == "create" else "replace"
    else:  # update
        merged = dict(send.fields or {})
        merged.update(op.fields or {})
        send.fields = merged


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
    """Group sends that can share a request (same table, kind, typecast and key), 10 at most, in
    requests sent in order.

    Rules that keep Airtable's answers what they would have been without the cache:
    - creates keep the order of the calls (Airtable's natural order and ``createdTime`` follow
      the requests), and ``ordered`` sends (link writes, see :func:`plan`) keep queue order: both
      only join the latest request;
    - a record's later send goes in a later request than its earlier one (a created record's id
      is known only once that request is answered);
    - the sends of one call (or of calls coalesced together, see :func:`components`) go in one
      request whenever they fit, so that Airtable applies or refuses the call whole.
    """
    live = [s for s in sends if s.kind != "none"]
    remaining: dict[tuple, int] = {}  # (component, request key) -> its sends not placed yet
    slot_of: dict[int, tuple] = {}
    for number, component in enumerate(components(live)):
        for send in component:
            slot = (number, _request_key(send))
            slot_of[id(send)] = slot
            remaining[slot] = remaining.get(slot, 0) + 1
    batches: list[list[Send]] = []
    open_batch: dict[tuple, int] = {}  # request key -> index of the batch that key may still join
    floor: dict[tuple[int, str], int] = {}  # record -> index of the batch holding its last send
    started: set[tuple] = set()
    for send in live:
        key = _request_key(send)
        slot = slot_of[id(send)]
        tail = len(batches) - 1
        index = open_batch.get(key)
        if send.kind == "create" or send.ordered:
            index = tail if index == tail else None
        if index is not None and index <= floor.get((send.tid, send.record_id), -1):
            index = None  # a record's later send goes in a later request (its id may come from the earlier)
        # A call starts in a request only if all of it fits there.
        needed = remaining[slot] if slot not in started else 1
        if index is None or len(batches[index]) + needed > MAX_RECORDS_PER_REQUEST:
            batches.append([])
            index = len(batches) - 1
            open_batch[key] = index
        batches[index].append(send)
        started.add(slot)
        remaining[slot] -= 1
        floor[(send.tid, send.record_id)] = index
    return batches


def _request_key(send: Send) -> tuple:
    # An upsert's creates and its updates (records it matched) share one request.
    kind = "upsert" if send.merge_on and send.kind in ("create", "update") else send.kind
    return (send.tid, kind, send.typecast, tuple(send.merge_on or ()), send.uncertain)


def components(sends: list[Send]) -> list[list[Send]]:
    """Sends grouped by the calls they carry: two sends share a group when some call wrote both
    (directly, or through a send that coalesced writes of several calls). In order of first send."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for send in sends:
        calls = sorted(send.calls) or [-id(send)]
        for other in calls[1:]:
            parent[find(other)] = find(calls[0])
    groups: dict[int, list[Send]] = {}
    for send in sends:
        root = find(min(send.calls) if send.calls else -id(send))
        groups.setdefault(root, []).append(send)
    return list(groups.values())


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


def dead_letter_calls(conn: sqlite3.Connection, calls: Iterable[int], *, error: Any) -> list[Op]:
    """Dead-letter every write still queued from these calls (Airtable refused one of them, so none
    of them happen). Returns the writes dead-lettered."""
    calls = sorted(set(calls))
    if not calls:
        return []
    marks = ",".join("?" * len(calls))
    rows = conn.execute(
        f"SELECT * FROM outbox WHERE state != 'dead' AND COALESCE(call_id, seq) IN ({marks}) ORDER BY seq", calls
    ).fetchall()
    ops = [Op.from_row(r) for r in rows]
    dead_letter(conn, [op.seq for op in ops], error=error)
    return ops


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
    from airtable_cached.rules.records import replace_ids

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
