"""The write queue in SQLite: all SQL on ``outbox`` and ``id_map`` (see ``schema.py``).

Modelled on huey's SQLite storage: order is in the schema (AUTOINCREMENT ``seq``), a flusher claims
under ``BEGIN IMMEDIATE`` (the caller's ``store.write()``), an acknowledged write is deleted, a
failure counts attempts. On disk the queue always holds what the agent did; coalescing happens only
when a batch is planned (``airtable_cached/sync/outbox.py``), so a crash never leaves a half-merged
write behind.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airtable_cached.rules.records import dumps, replace_ids
from airtable_cached.store import checksum
from airtable_cached.store.claims import choose
from airtable_cached.store.types import Op

if TYPE_CHECKING:
    from airtable_cached.store.contract import Outbox

#: Narrows an outbox query to the tables of one endpoint (the cache is keyed by endpoint).
_OF_ENDPOINT = " AND tid IN (SELECT tid FROM tables WHERE endpoint = ?)"
#: The states of every write the queue holds.
ALL_STATES = ("pending", "inflight", "dead")


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _of_endpoint(endpoint: str | None) -> tuple[str, tuple]:
    """The clause and parameter narrowing a query to one endpoint (none: every endpoint)."""
    return ("", ()) if endpoint is None else (_OF_ENDPOINT, (endpoint,))


class SqliteOutbox:
    """:class:`airtable_cached.store.contract.Outbox` on one SQLite connection."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    # -- appending (the engine) ----------------------------------------------------------------

    def append(self, *, tid: int, base_id: str, table_ref: str, op: str, record_id: str, fields: dict | None,
               base: dict | None, typecast: bool, now: float, merge_on: list[str] | None = None,
               call_id: int | None = None) -> int:
        """Queue one write; ``call_id`` is the seq of the first write of the same call (``None``:
        this write starts a call). Returns its seq."""
        row = checksum.new_row(tid=tid, base_id=base_id, table_ref=table_ref, op=op, record_id=record_id,
                               fields=fields, base=base, typecast=typecast, now=now, merge_on=merge_on)
        cur = self.conn.execute(f"INSERT INTO outbox ({', '.join(checksum.NEW_ROW_COLUMNS)})"
                                f" VALUES ({', '.join('?' * len(row))})", row)
        assert cur.lastrowid is not None  # an INSERT always sets it
        seq = cur.lastrowid
        self.conn.execute("UPDATE outbox SET call_id = ? WHERE seq = ?", (seq if call_id is None else call_id, seq))
        return seq

    def live_ops_for_record(self, tid: int, record_id: str) -> list[Op]:
        """The writes that shape what reads see of a record (dead letters do not), in order."""
        rows = self.conn.execute(
            "SELECT * FROM outbox WHERE tid = ? AND record_id = ? AND state != 'dead' ORDER BY seq",
            (tid, record_id),
        ).fetchall()
        return [Op.from_row(r) for r in rows]

    def records_with_live_ops(self, tid: int) -> set[str]:
        """The records of a table with writes still to send (not dead letters)."""
        rows = self.conn.execute("SELECT DISTINCT record_id FROM outbox WHERE tid = ? AND state != 'dead'", (tid,))
        return {r[0] for r in rows}

    # -- asked by the engine -------------------------------------------------------------------
    def has_live_writes(self, tids: Sequence[int]) -> bool:
        return self.conn.execute(
            f"SELECT 1 FROM outbox WHERE tid IN ({_marks(tids)}) AND state != 'dead' LIMIT 1", list(tids)
        ).fetchone() is not None

    def has_live_writes_for_base(self, base_id: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM outbox WHERE base_id = ? AND state != 'dead' LIMIT 1", (base_id,)
        ).fetchone() is not None

    def write_states(self, seqs: Sequence[int]) -> list[dict]:
        rows = self.conn.execute(
            f"SELECT seq, record_id, last_error, state FROM outbox WHERE seq IN ({_marks(seqs)})", list(seqs)
        ).fetchall()
        return [{"seq": r["seq"], "record_id": r["record_id"], "state": r["state"],
                 "last_error": json.loads(r["last_error"]) if r["last_error"] else None} for r in rows]

    def pending_updates(self, tid: int) -> list[dict]:
        rows = self.conn.execute(
            "SELECT seq, record_id, fields FROM outbox WHERE tid = ? AND op = 'update' AND state = 'pending'", (tid,)
        ).fetchall()
        return [{"seq": r["seq"], "record_id": r["record_id"], "fields": json.loads(r["fields"] or "{}")} for r in rows]

    def live_writes_of_tables(self, tids: Sequence[int]) -> list[dict]:
        rows = self.conn.execute(
            f"SELECT tid, op, record_id, fields FROM outbox WHERE state != 'dead' AND tid IN ({_marks(tids)}) ORDER BY seq",
            list(tids),
        ).fetchall()
        return [{"tid": r["tid"], "op": r["op"], "record_id": r["record_id"],
                 "fields": json.loads(r["fields"]) if r["fields"] is not None else None} for r in rows]

    def written_fields(self, tid: int, record_id: str) -> list[dict]:
        rows = self.conn.execute(
            "SELECT fields FROM outbox WHERE tid = ? AND record_id = ? AND fields IS NOT NULL", (tid, record_id)
        )
        return [json.loads(r[0]) for r in rows]

    def records_whose_live_writes_name(self, tid: int, record_id: str) -> set[str]:
        rows = self.conn.execute(
            "SELECT DISTINCT record_id FROM outbox WHERE tid = ? AND state != 'dead' AND instr(fields, ?) > 0", (tid, record_id)
        )
        return {r[0] for r in rows}

    def real_id(self, provisional: str) -> str | None:
        row = self.conn.execute("SELECT real FROM id_map WHERE provisional = ?", (provisional,)).fetchone()
        return None if row is None else row[0]

    # -- claiming and settling (the sync) ------------------------------------------------------

    def has_ready(self, now: float, *, endpoint: str | None = None) -> bool:
        """Whether any write (of the endpoint's tables) may be claimable now: due, or in flight (its
        flusher may have died; only taking the base's flush lock tells, and a live holder keeps it)."""
        clause, params = _of_endpoint(endpoint)
        return self.conn.execute(
            "SELECT 1 FROM outbox WHERE ((state = 'pending' AND next_attempt_at <= ?) OR state = 'inflight')"
            + clause + " LIMIT 1",
            (now, *params),
        ).fetchone() is not None

    def next_due(self, *, endpoint: str | None = None) -> float | None:
        """When the earliest pending write (of the endpoint's tables) is due (``None``: none waits)."""
        clause, params = _of_endpoint(endpoint)
        row = self.conn.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'" + clause,
                                params).fetchone()
        return row[0] if row and row[0] is not None else None

    def bases_with_queued(self, endpoint: str) -> list[str]:
        """The bases of the endpoint's tables with writes still to send."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT base_id FROM outbox WHERE state != 'dead'" + _OF_ENDPOINT, (endpoint,)
        )]

    def count_queued(self) -> int:
        """How many writes are still to send (every endpoint; dead letters not counted)."""
        return self.conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'dead'").fetchone()[0]

    def tables_with_writes(self, base_id: str) -> set[int]:
        """The tables of a base that have writes in the queue (in any state)."""
        return {r[0] for r in self.conn.execute("SELECT DISTINCT tid FROM outbox WHERE base_id = ?", (base_id,))}

    def claim(self, base_id: str, *, now: float, lease: float, limit: int = 500,
              link_fields: Mapping[int, frozenset[str]] | None = None, endpoint: str | None = None) -> list[Op]:
        """Take the writes of a base that can be sent now (see ``airtable_cached/store/claims.py``)
        and mark them in flight until ``now + lease``, counting an attempt. Returns them as they were
        before (``unclaim`` gives them back so). Call inside ``store.write()``."""
        clause, params = _of_endpoint(endpoint)
        rows = self.conn.execute("SELECT * FROM outbox WHERE base_id = ?" + clause + " ORDER BY seq",
                                 (base_id, *params)).fetchall()
        mapped = {r[0] for r in self.conn.execute("SELECT provisional FROM id_map")}
        claimed = choose(rows, mapped, now=now, limit=limit, link_fields=link_fields or {})
        if claimed:
            self.conn.executemany(
                "UPDATE outbox SET state = 'inflight', claimed_until = ?, attempts = attempts + 1 WHERE seq = ?",
                [(now + lease, op.seq) for op in claimed],
            )
        return claimed

    def release_claims(self, base_id: str, *, endpoint: str | None = None) -> int:
        """Make the in-flight writes of a base claimable now (their flusher is gone). They stay in
        flight, so a create among them is looked for before it is sent again. Returns how many."""
        clause, params = _of_endpoint(endpoint)
        cur = self.conn.execute("UPDATE outbox SET claimed_until = NULL WHERE base_id = ? AND state = 'inflight'"
                                + clause, (base_id, *params))
        return cur.rowcount

    def unclaim(self, ops: Iterable[Op]) -> None:
        """Give claimed writes back as they were before ``claim`` (a create that was in flight stays
        in flight, so it is still looked for before it is sent again)."""
        self.conn.executemany(
            "UPDATE outbox SET state = ?, claimed_until = ?, attempts = ? WHERE seq = ? AND state = 'inflight'",
            [(op.state, op.claimed_until, op.attempts, op.seq) for op in ops],
        )

    def renew_claims(self, seqs: Iterable[int], until: float) -> None:
        """Extend the lease of these writes, those still in flight, to ``until``."""
        self.conn.executemany("UPDATE outbox SET claimed_until = ? WHERE seq = ? AND state = 'inflight'",
                              [(until, seq) for seq in seqs])

    def release(self, errors: Mapping[int, Any], *, next_attempt_at: float) -> int:
        """Put back these in-flight writes (seq -> its error) as pending, due at ``next_attempt_at``.
        Returns how many were still in flight."""
        return sum(self.conn.execute(
            "UPDATE outbox SET state = 'pending', claimed_until = NULL, next_attempt_at = ?, last_error = ?"
            " WHERE seq = ? AND state = 'inflight'", (next_attempt_at, dumps(error), seq),
        ).rowcount for seq, error in errors.items())

    def max_attempts(self, seqs: Sequence[int]) -> int | None:
        """The most attempts any of these writes has had (``None``: none of them is queued)."""
        if not seqs:
            return None
        return self.conn.execute(f"SELECT MAX(attempts) FROM outbox WHERE seq IN ({_marks(seqs)})", seqs).fetchone()[0]

    def first_queued_at(self, seqs: Sequence[int]) -> float | None:
        """When the earliest of these writes was queued (``None``: none of them is queued)."""
        if not seqs:
            return None
        return self.conn.execute(f"SELECT MIN(created_at) FROM outbox WHERE seq IN ({_marks(seqs)})", seqs).fetchone()[0]

    def dead_among(self, seqs: Sequence[int]) -> set[int]:
        """Which of these writes are dead letters."""
        if not seqs:
            return set()
        return {r[0] for r in self.conn.execute(
            f"SELECT seq FROM outbox WHERE state = 'dead' AND seq IN ({_marks(seqs)})", seqs)}

    def any_queued(self, seqs: Sequence[int]) -> bool:
        """Whether any of these writes is still to send (queued, not a dead letter)."""
        if not seqs:
            return False
        return self.conn.execute(
            f"SELECT 1 FROM outbox WHERE seq IN ({_marks(seqs)}) AND state != 'dead' LIMIT 1", seqs
        ).fetchone() is not None

    def ack(self, seqs: Iterable[int]) -> None:
        """Airtable applied these writes: they leave the queue."""
        self.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def retry_later(self, seqs: Iterable[int], *, error: Any, next_attempt_at: float) -> None:
        """These writes failed for now: pending again, due at ``next_attempt_at``, with the error."""
        self.conn.executemany(
            "UPDATE outbox SET state = 'pending', claimed_until = NULL, next_attempt_at = ?, last_error = ? WHERE seq = ?",
            [(next_attempt_at, dumps(error), s) for s in seqs],
        )

    def dead_letter(self, seqs: Iterable[int], *, error: Any) -> None:
        """These writes will not be sent: kept as dead letters with the error."""
        self.conn.executemany(
            "UPDATE outbox SET state = 'dead', claimed_until = NULL, last_error = ? WHERE seq = ?",
            [(dumps(error), s) for s in seqs],
        )

    def dead_letter_calls(self, calls: Iterable[int], *, error: Any) -> list[Op]:
        """Dead-letter every write still queued from these calls (Airtable refused one of them, so
        none of them happen). Returns the writes dead-lettered."""
        wanted = sorted(set(calls))
        if not wanted:
            return []
        rows = self.conn.execute(
            f"SELECT * FROM outbox WHERE state != 'dead' AND COALESCE(call_id, seq) IN ({_marks(wanted)}) ORDER BY seq",
            wanted,
        ).fetchall()
        ops = [Op.from_row(r) for r in rows]
        self.dead_letter([op.seq for op in ops], error=error)
        return ops

    def real_ids(self, tid: int) -> set[str]:
        """The ids Airtable gave to the table's records created through the queue."""
        return {r[0] for r in self.conn.execute("SELECT real FROM id_map WHERE tid = ?", (tid,))}

    def remap_id(self, provisional: str, real: str, tid: int) -> None:
        """Replace a provisional id by Airtable's in the queue (record ids and queued fields) and
        remember the pair."""
        self.conn.execute(
            "INSERT INTO id_map (provisional, real, tid) VALUES (?, ?, ?)"
            " ON CONFLICT (provisional) DO UPDATE SET real = excluded.real, tid = excluded.tid",
            (provisional, real, tid),
        )
        for (seq,) in self.conn.execute("SELECT seq FROM outbox WHERE record_id = ?", (provisional,)).fetchall():
            self.rewrite(seq, record_id=real)
        mapping = {provisional: real}
        for seq, fields in self.conn.execute(
            "SELECT seq, fields FROM outbox WHERE fields IS NOT NULL AND instr(fields, ?) > 0", (provisional,)
        ).fetchall():
            self.rewrite(seq, fields=dumps(replace_ids(json.loads(fields), mapping)))

    def rewrite(self, seq: int, **changes: Any) -> None:
        """Change what one queued write sends (columns as stored: ``fields`` as JSON text),
        re-sealing its checksum only if it was intact (damage is never blessed)."""
        row = self.conn.execute("SELECT * FROM outbox WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return
        values = {name: row[name] for name in row.keys()}
        was_intact = checksum.intact(row)
        values.update(changes)
        sealed = checksum.seal(values) if was_intact and row["checksum"] is not None else row["checksum"]
        assignments = ", ".join(f"{name} = ?" for name in changes)
        self.conn.execute(f"UPDATE outbox SET {assignments}, checksum = ? WHERE seq = ?",
                          (*changes.values(), sealed, seq))

    def damaged(self, base_id: str | None = None, seqs: Sequence[int] | None = None, *,
                endpoint: str | None = None) -> list[dict[str, Any]]:
        """Queued writes (not dead letters; of one base, these seqs, the endpoint's tables) whose
        stored content no longer matches their checksum, as stored (``fields`` as JSON text)."""
        sql = "SELECT * FROM outbox WHERE state != 'dead' AND checksum IS NOT NULL"
        params: list = []
        if base_id is not None:
            sql += " AND base_id = ?"
            params.append(base_id)
        if seqs is not None:
            sql += " AND seq IN (SELECT value FROM json_each(?))"
            params.append(dumps(list(seqs)))
        clause, extra = _of_endpoint(endpoint)
        return [dict(row) for row in self.conn.execute(sql + clause, [*params, *extra]) if not checksum.intact(row)]

    def quarantine(self, base_id: str | None = None, seqs: Sequence[int] | None = None, *,
                   endpoint: str | None = None) -> list[dict[str, Any]]:
        """Dead-letter every damaged queued write (as :meth:`damaged` selects); returns them."""
        rows = self.damaged(base_id, seqs, endpoint=endpoint)
        self.conn.executemany(
            "UPDATE outbox SET state = 'dead', claimed_until = NULL, last_error = ? WHERE seq = ?",
            [(dumps(checksum.quarantine_error(row)), row["seq"]) for row in rows],
        )
        return rows

    # -- operating (ops: queue, check, status) -------------------------------------------------

    def list_ops(self, *, base_id: str | None = None, states: Sequence[str] = ALL_STATES) -> list[Op]:
        """The queued writes in these states (of one base), in queue order."""
        sql = f"SELECT * FROM outbox WHERE state IN ({_marks(states)})"
        params: list[Any] = list(states)
        if base_id:
            sql += " AND base_id = ?"
            params.append(base_id)
        return [Op.from_row(r) for r in self.conn.execute(sql + " ORDER BY seq", params)]

    def seqs(self, states: Sequence[str] = ALL_STATES) -> list[int]:
        """The seqs of the writes in these states, in queue order."""
        return [r[0] for r in self.conn.execute(
            f"SELECT seq FROM outbox WHERE state IN ({_marks(states)}) ORDER BY seq", list(states))]

    def top_seq(self) -> int:
        """The highest seq the queue ever gave (acknowledged writes included; 0: none)."""
        top = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        with contextlib.suppress(sqlite3.Error):
            row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            if row:
                top = max(top, row[0])
        return top

    def bases(self) -> set[str]:
        """The bases with writes in the queue (any state)."""
        return {r[0] for r in self.conn.execute("SELECT DISTINCT base_id FROM outbox")}

    def counts_by_state(self, tid: int) -> dict[str, int]:
        """How many of a table's writes are in each state (states with none: 0)."""
        counts = dict.fromkeys(ALL_STATES, 0)
        for state, n in self.conn.execute("SELECT state, COUNT(*) FROM outbox WHERE tid = ? GROUP BY state", (tid,)):
            counts[state] = n
        return counts

    def oldest_queued_at(self, tid: int) -> float | None:
        """When a table's oldest write still to send was queued (``None``: none)."""
        return self.conn.execute(
            "SELECT MIN(created_at) FROM outbox WHERE tid = ? AND state != 'dead'", (tid,)).fetchone()[0]

    def stored_writes(self) -> list[dict[str, Any]]:
        """Every queued write as stored (JSON as text, undecoded: it may be garbled), in queue order."""
        return [dict(r) for r in self.conn.execute("SELECT * FROM outbox ORDER BY seq")]

    def id_map(self) -> dict[str, str]:
        """Every provisional id Airtable replaced, with its id."""
        return {r[0]: r[1] for r in self.conn.execute("SELECT provisional, real FROM id_map")}

    def garbled(self) -> list[int]:
        """The writes whose stored JSON (fields, base, upsert keys) does not parse."""
        return [r[0] for r in self.conn.execute(
            "SELECT seq FROM outbox WHERE (fields IS NOT NULL AND NOT json_valid(fields))"
            " OR (base IS NOT NULL AND NOT json_valid(base)) OR (merge_on IS NOT NULL AND NOT json_valid(merge_on))"
        )]

    def count_without_table(self) -> int:
        """How many writes belong to no known table."""
        return self.conn.execute("SELECT COUNT(*) FROM outbox WHERE tid NOT IN (SELECT tid FROM tables)").fetchone()[0]

    def return_claimed(self, seqs: Iterable[int]) -> None:
        """In-flight writes among these back to pending, due as they were (attempts kept)."""
        self.conn.executemany("UPDATE outbox SET state = 'pending', claimed_until = NULL WHERE seq = ? AND state = 'inflight'",
                              [(s,) for s in seqs])

    def make_due(self, seqs: Iterable[int]) -> None:
        """Pending writes among these due now."""
        self.conn.executemany("UPDATE outbox SET next_attempt_at = 0 WHERE seq = ? AND state = 'pending'",
                              [(s,) for s in seqs])

    def claimed_among(self, seqs: Sequence[int], now: float) -> list[int]:
        """Which of these writes a flusher holds at ``now`` (in flight, lease not over)."""
        if not seqs:
            return []
        return [r[0] for r in self.conn.execute(
            f"SELECT seq FROM outbox WHERE seq IN ({_marks(seqs)}) AND state = 'inflight' AND claimed_until >= ?",
            [*seqs, now])]

    def records_of(self, seqs: Sequence[int]) -> set[tuple[int, str]]:
        """The (table, record) pairs these writes are to."""
        if not seqs:
            return set()
        return {(r[0], r[1]) for r in self.conn.execute(
            f"SELECT tid, record_id FROM outbox WHERE seq IN ({_marks(seqs)})", seqs)}

    def with_later_writes(self, seqs: Sequence[int]) -> set[int]:
        """These writes, and for each create among them the later writes to the same record."""
        found = set(seqs)
        if not seqs:
            return found
        creates = self.conn.execute(
            f"SELECT tid, record_id, seq FROM outbox WHERE seq IN ({_marks(seqs)}) AND op = 'create'", seqs).fetchall()
        for tid, rid, seq in creates:
            found |= {r[0] for r in self.conn.execute(
                "SELECT seq FROM outbox WHERE tid = ? AND record_id = ? AND seq > ?", (tid, rid, seq))}
        return found

    def has_writes(self, tid: int, record_id: str) -> bool:
        """Whether the queue holds any write to this record (any state)."""
        return self.conn.execute(
            "SELECT 1 FROM outbox WHERE tid = ? AND record_id = ? LIMIT 1", (tid, record_id)).fetchone() is not None

    def forget_table(self, tid: int) -> int:
        """Drop a table's writes and id pairs for good; how many writes."""
        dropped = self.conn.execute("DELETE FROM outbox WHERE tid = ?", (tid,)).rowcount
        self.conn.execute("DELETE FROM id_map WHERE tid = ?", (tid,))
        return dropped

    def requeue(self, seqs: Iterable[int] | None = None) -> list[int]:
        """Put dead letters back in the queue, due now with no attempts (``None``: all of them).
        Returns the seqs given (or found)."""
        if seqs is None:
            seqs = [r[0] for r in self.conn.execute("SELECT seq FROM outbox WHERE state = 'dead'")]
        seqs = list(seqs)
        self.conn.executemany(
            "UPDATE outbox SET state = 'pending', next_attempt_at = 0, attempts = 0 WHERE seq = ? AND state = 'dead'",
            [(s,) for s in seqs],
        )
        return seqs

    def restore_write(self, row: Mapping[str, Any]) -> None:
        """Put back one queued write exactly as stored elsewhere (its seq, state, checksum; salvage)."""
        self.conn.execute(
            "INSERT INTO outbox (seq, tid, base_id, table_ref, op, record_id, fields, base, typecast, merge_on, state,"
            " attempts, next_attempt_at, claimed_until, last_error, created_at, checksum)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row["seq"], row["tid"], row["base_id"], row["table_ref"], row["op"], row["record_id"], row["fields"],
             row["base"], row["typecast"], row["merge_on"], row["state"], row["attempts"], row["next_attempt_at"],
             row["claimed_until"], row["last_error"], row["created_at"], row.get("checksum")),
        )

    def restore_ids(self, pairs: Mapping[str, tuple[str, int]]) -> None:
        """Remember provisional id -> (Airtable's id, table) pairs, keeping any already known and
        skipping incomplete ones (salvage)."""
        self.conn.executemany(
            "INSERT OR IGNORE INTO id_map (provisional, real, tid) VALUES (?, ?, ?)",
            [(provisional, real, tid) for provisional, (real, tid) in pairs.items()],
        )

    def first_creates(self) -> list[dict[str, Any]]:
        """Per record created through the queue (live creates): its ``tid``, ``record_id`` and when
        its first create was queued (``at``)."""
        return [dict(r) for r in self.conn.execute(
            "SELECT tid, record_id, MIN(created_at) AS at FROM outbox WHERE op = 'create' AND state != 'dead'"
            " GROUP BY tid, record_id"
        )]


if TYPE_CHECKING:  # mypy checks that the class keeps the contract

    def _keeps_the_contract(conn: sqlite3.Connection) -> Outbox:
        return SqliteOutbox(conn)
