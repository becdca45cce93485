"""The write queue in PostgreSQL: all SQL on ``outbox`` and ``id_map`` (see ``schema.py``).

The same behaviour as the SQLite queue (``airtable_cached/store/sqlite/outbox.py``): order is the
identity ``seq``, an acknowledged write is deleted, a failure counts attempts, JSON is kept as the
text the checksum seals (``airtable_cached/store/checksum.py``). A flusher claims with
``SELECT ... FOR UPDATE SKIP LOCKED``: a row another transaction is changing at that moment is not
waited for; its record counts as held by another flusher, so no later write to it overtakes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from psycopg import sql

from airtable_cached.rules.records import dumps, replace_ids
from airtable_cached.store import checksum
from airtable_cached.store.claims import choose
from airtable_cached.store.types import Op

if TYPE_CHECKING:
    from airtable_cached.store.contract import Outbox
    from airtable_cached.store.postgres.runner import Connection, Runner

#: The states of every write the queue holds.
ALL_STATES = ("pending", "inflight", "dead")
_OF_ENDPOINT = " AND tid IN (SELECT tid FROM tables WHERE endpoint = %s)"
_INSERT = (f"INSERT INTO outbox ({', '.join(checksum.NEW_ROW_COLUMNS)})"
           f" VALUES ({', '.join(['%s'] * len(checksum.NEW_ROW_COLUMNS))}) RETURNING seq")
_RESTORE = ("INSERT INTO outbox (seq, tid, base_id, table_ref, op, record_id, fields, base, typecast, merge_on, state,"
            " attempts, next_attempt_at, claimed_until, last_error, created_at, checksum)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
_CLAIMABLE = "SELECT * FROM outbox WHERE base_id = %s{} ORDER BY seq"


def _of_endpoint(endpoint: str | None) -> tuple[str, tuple]:
    """The clause and parameter narrowing a query to one endpoint (none: every endpoint)."""
    return ("", ()) if endpoint is None else (_OF_ENDPOINT, (endpoint,))


def _is_json(text: str | None) -> bool:
    """Whether stored JSON text parses (strict JSON: no NaN or Infinity)."""
    if text is None:
        return True
    try:
        json.loads(text, parse_constant=_refuse)
    except ValueError:
        return False
    return True


def _refuse(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


class PostgresOutbox:
    """:class:`airtable_cached.store.contract.Outbox` on a PostgreSQL unit (or pooled calls)."""

    __slots__ = ("runner",)

    def __init__(self, runner: Runner):
        self.runner = runner

    # -- SQL helpers -----------------------------------------------------------------------------
    def _rows(self, query: Any, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self.runner.run(lambda conn: conn.execute(query, params).fetchall())

    def _value(self, query: Any, params: Sequence[Any] = ()) -> Any:
        row = self.runner.run(lambda conn: conn.execute(query, params).fetchone())
        return None if row is None else next(iter(row.values()))

    def _change(self, query: Any, params: Sequence[Any] = ()) -> int:
        return self.runner.run(lambda conn: conn.execute(query, params).rowcount)

    def _change_each(self, query: str, params: Iterable[Sequence[Any]]) -> int:
        return self.runner.run(lambda conn: sum(conn.execute(query, p).rowcount for p in params))

    def _in_unit(self, fn: Callable[[Connection], Any]) -> Any:
        """Several statements that must see one another: in the unit's transaction (or one of their own)."""
        return self.runner.run_atomically(fn)

    # -- appending (the engine) ----------------------------------------------------------------

    def append(self, *, tid: int, base_id: str, table_ref: str, op: str, record_id: str, fields: dict | None,
               base: dict | None, typecast: bool, now: float, merge_on: list[str] | None = None,
               call_id: int | None = None) -> int:
        """Queue one write; ``call_id`` is the seq of the first write of the same call (``None``:
        this write starts a call). Returns its seq."""
        params = checksum.new_row(tid=tid, base_id=base_id, table_ref=table_ref, op=op, record_id=record_id,
                                  fields=fields, base=base, typecast=typecast, now=now, merge_on=merge_on)

        def insert(conn: Connection) -> int:
            row = conn.execute(_INSERT, params).fetchone()
            assert row is not None
            seq = int(row["seq"])
            conn.execute("UPDATE outbox SET call_id = %s WHERE seq = %s", (seq if call_id is None else call_id, seq))
            return seq
        return self._in_unit(insert)

    def live_ops_for_record(self, tid: int, record_id: str) -> list[Op]:
        """The writes that shape what reads see of a record (dead letters do not), in order."""
        return [Op.from_row(r) for r in self._rows(
            "SELECT * FROM outbox WHERE tid = %s AND record_id = %s AND state != 'dead' ORDER BY seq",
            (tid, record_id))]

    def records_with_live_ops(self, tid: int) -> set[str]:
        """The records of a table with writes still to send (not dead letters)."""
        return {r["record_id"] for r in self._rows(
            "SELECT DISTINCT record_id FROM outbox WHERE tid = %s AND state != 'dead'", (tid,))}

    # -- asked by the engine -------------------------------------------------------------------

    def has_live_writes(self, tids: Sequence[int]) -> bool:
        """Whether writes to any of these tables are queued (dead letters aside)."""
        return self._value("SELECT 1 FROM outbox WHERE tid = ANY(%s) AND state != 'dead' LIMIT 1",
                           (list(tids),)) is not None

    def has_live_writes_for_base(self, base_id: str) -> bool:
        """Whether writes to any table of the base are queued (dead letters aside)."""
        return self._value("SELECT 1 FROM outbox WHERE base_id = %s AND state != 'dead' LIMIT 1",
                           (base_id,)) is not None

    def write_states(self, seqs: Sequence[int]) -> list[dict]:
        """The queued writes left among ``seqs``: seq, record_id, state, last_error (decoded, or None)."""
        rows = self._rows("SELECT seq, record_id, last_error, state FROM outbox WHERE seq = ANY(%s)", (list(seqs),))
        return [{"seq": r["seq"], "record_id": r["record_id"], "state": r["state"],
                 "last_error": json.loads(r["last_error"]) if r["last_error"] else None} for r in rows]

    def pending_updates(self, tid: int) -> list[dict]:
        """The table's updates waiting to be sent (not being sent): seq, record_id, fields."""
        rows = self._rows("SELECT seq, record_id, fields FROM outbox WHERE tid = %s AND op = 'update'"
                          " AND state = 'pending'", (tid,))
        return [{"seq": r["seq"], "record_id": r["record_id"], "fields": json.loads(r["fields"] or "{}")} for r in rows]

    def live_writes_of_tables(self, tids: Sequence[int]) -> list[dict]:
        """Queued writes of these tables (dead letters aside) in queue order: tid, op, record_id, fields (or None)."""
        rows = self._rows("SELECT tid, op, record_id, fields FROM outbox WHERE state != 'dead' AND tid = ANY(%s)"
                          " ORDER BY seq", (list(tids),))
        return [{"tid": r["tid"], "op": r["op"], "record_id": r["record_id"],
                 "fields": json.loads(r["fields"]) if r["fields"] is not None else None} for r in rows]

    def written_fields(self, tid: int, record_id: str) -> list[dict]:
        """The fields of every write of the record in the queue (any state)."""
        return [json.loads(r["fields"]) for r in self._rows(
            "SELECT fields FROM outbox WHERE tid = %s AND record_id = %s AND fields IS NOT NULL", (tid, record_id))]

    def records_whose_live_writes_name(self, tid: int, record_id: str) -> set[str]:
        """Records of ``tid`` whose queued writes (dead letters aside) name ``record_id`` in a value."""
        return {r["record_id"] for r in self._rows(
            "SELECT DISTINCT record_id FROM outbox WHERE tid = %s AND state != 'dead' AND strpos(fields, %s) > 0",
            (tid, record_id))}

    def real_id(self, provisional: str) -> str | None:
        """The id Airtable gave a record created under a provisional id (None: not flushed yet)."""
        return self._value("SELECT real FROM id_map WHERE provisional = %s", (provisional,))

    # -- claiming and settling (the sync) ------------------------------------------------------

    def has_ready(self, now: float, *, endpoint: str | None = None) -> bool:
        """Whether any write (of the endpoint's tables) may be claimable now: due, or in flight."""
        clause, params = _of_endpoint(endpoint)
        return self._value(
            "SELECT 1 FROM outbox WHERE ((state = 'pending' AND next_attempt_at <= %s) OR state = 'inflight')"
            + clause + " LIMIT 1", (now, *params)) is not None

    def next_due(self, *, endpoint: str | None = None) -> float | None:
        """When the earliest pending write (of the endpoint's tables) is due (``None``: none waits)."""
        clause, params = _of_endpoint(endpoint)
        return self._value("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'" + clause, params)

    def bases_with_queued(self, endpoint: str) -> list[str]:
        """The bases of the endpoint's tables with writes still to send."""
        return [r["base_id"] for r in self._rows(
            "SELECT DISTINCT base_id FROM outbox WHERE state != 'dead'" + _OF_ENDPOINT + " ORDER BY base_id",
            (endpoint,))]

    def count_queued(self) -> int:
        """How many writes are still to send (every endpoint; dead letters not counted)."""
        return int(self._value("SELECT COUNT(*) FROM outbox WHERE state != 'dead'"))

    def tables_with_writes(self, base_id: str) -> set[int]:
        """The tables of a base that have writes in the queue (in any state)."""
        return {r["tid"] for r in self._rows("SELECT DISTINCT tid FROM outbox WHERE base_id = %s", (base_id,))}

    def claim(self, base_id: str, *, now: float, lease: float, limit: int = 500,
              link_fields: Mapping[int, frozenset[str]] | None = None, endpoint: str | None = None) -> list[Op]:
        """Take the writes of a base that can be sent now (``airtable_cached/store/claims.py``) and
        mark them in flight until ``now + lease``, counting an attempt. Returns them as they were
        before. Call inside ``store.write()``."""
        return self._in_unit(lambda conn: self._claim(conn, base_id, now, lease, limit, link_fields or {}, endpoint))

    def _claim(self, conn: Connection, base_id: str, now: float, lease: float, limit: int,
               link_fields: Mapping[int, frozenset[str]], endpoint: str | None) -> list[Op]:
        clause, params = _of_endpoint(endpoint)
        query = _CLAIMABLE.format(clause)
        locked = conn.execute(query + " FOR UPDATE SKIP LOCKED", (base_id, *params)).fetchall()
        rows = _held_elsewhere(conn.execute(query, (base_id, *params)).fetchall(), {r["seq"] for r in locked})
        mapped = {r["provisional"] for r in conn.execute("SELECT provisional FROM id_map").fetchall()}
        claimed = choose(rows, mapped, now=now, limit=limit, link_fields=link_fields)
        if claimed:
            conn.execute("UPDATE outbox SET state = 'inflight', claimed_until = %s, attempts = attempts + 1"
                         " WHERE seq = ANY(%s)", (now + lease, [op.seq for op in claimed]))
        return claimed

    def release_claims(self, base_id: str, *, endpoint: str | None = None) -> int:
        """Make the in-flight writes of a base claimable now (they stay in flight); how many."""
        clause, params = _of_endpoint(endpoint)
        return self._change("UPDATE outbox SET claimed_until = NULL WHERE base_id = %s AND state = 'inflight'"
                            + clause, (base_id, *params))

    def unclaim(self, ops: Iterable[Op]) -> None:
        """Give claimed writes back as they were before ``claim``."""
        self._change_each(
            "UPDATE outbox SET state = %s, claimed_until = %s, attempts = %s WHERE seq = %s AND state = 'inflight'",
            [(op.state, op.claimed_until, op.attempts, op.seq) for op in ops])

    def renew_claims(self, seqs: Iterable[int], until: float) -> None:
        """Extend the lease of these writes, those still in flight, to ``until``."""
        self._change("UPDATE outbox SET claimed_until = %s WHERE seq = ANY(%s) AND state = 'inflight'",
                     (until, list(seqs)))

    def release(self, errors: Mapping[int, Any], *, next_attempt_at: float) -> int:
        """Put back these in-flight writes (seq -> its error) as pending, due at ``next_attempt_at``.
        Returns how many were still in flight."""
        return self._change_each(
            "UPDATE outbox SET state = 'pending', claimed_until = NULL, next_attempt_at = %s, last_error = %s"
            " WHERE seq = %s AND state = 'inflight'",
            [(next_attempt_at, dumps(error), seq) for seq, error in errors.items()])

    def max_attempts(self, seqs: Sequence[int]) -> int | None:
        """The most attempts any of these writes has had (``None``: none of them is queued)."""
        return self._value("SELECT MAX(attempts) FROM outbox WHERE seq = ANY(%s)", (list(seqs),))

    def first_queued_at(self, seqs: Sequence[int]) -> float | None:
        """When the earliest of these writes was queued (``None``: none of them is queued)."""
        return self._value("SELECT MIN(created_at) FROM outbox WHERE seq = ANY(%s)", (list(seqs),))

    def dead_among(self, seqs: Sequence[int]) -> set[int]:
        """Which of these writes are dead letters."""
        return {r["seq"] for r in self._rows("SELECT seq FROM outbox WHERE state = 'dead' AND seq = ANY(%s)",
                                             (list(seqs),))}

    def any_queued(self, seqs: Sequence[int]) -> bool:
        """Whether any of these writes is still to send (queued, not a dead letter)."""
        return self._value("SELECT 1 FROM outbox WHERE seq = ANY(%s) AND state != 'dead' LIMIT 1",
                           (list(seqs),)) is not None

    def ack(self, seqs: Iterable[int]) -> None:
        """Airtable applied these writes: they leave the queue."""
        self._change("DELETE FROM outbox WHERE seq = ANY(%s)", (list(seqs),))

    def retry_later(self, seqs: Iterable[int], *, error: Any, next_attempt_at: float) -> None:
        """These writes failed for now: pending again, due at ``next_attempt_at``, with the error."""
        self._change("UPDATE outbox SET state = 'pending', claimed_until = NULL, next_attempt_at = %s, last_error = %s"
                     " WHERE seq = ANY(%s)", (next_attempt_at, dumps(error), list(seqs)))

    def dead_letter(self, seqs: Iterable[int], *, error: Any) -> None:
        """These writes will not be sent: kept as dead letters with the error."""
        self._change("UPDATE outbox SET state = 'dead', claimed_until = NULL, last_error = %s WHERE seq = ANY(%s)",
                     (dumps(error), list(seqs)))

    def dead_letter_calls(self, calls: Iterable[int], *, error: Any) -> list[Op]:
        """Dead-letter every write still queued from these calls; the writes dead-lettered."""
        wanted = sorted(set(calls))
        if not wanted:
            return []
        ops = [Op.from_row(r) for r in self._rows(
            "SELECT * FROM outbox WHERE state != 'dead' AND COALESCE(call_id, seq) = ANY(%s) ORDER BY seq", (wanted,))]
        self.dead_letter([op.seq for op in ops], error=error)
        return ops

    def real_ids(self, tid: int) -> set[str]:
        """The ids Airtable gave to the table's records created through the queue."""
        return {r["real"] for r in self._rows("SELECT real FROM id_map WHERE tid = %s", (tid,))}

    def remap_id(self, provisional: str, real: str, tid: int) -> None:
        """Replace a provisional id by Airtable's in the queue (record ids and queued fields) and
        remember the pair."""
        self._change("INSERT INTO id_map (provisional, real, tid) VALUES (%s, %s, %s)"
                     " ON CONFLICT (provisional) DO UPDATE SET real = EXCLUDED.real, tid = EXCLUDED.tid",
                     (provisional, real, tid))
        for row in self._rows("SELECT seq FROM outbox WHERE record_id = %s", (provisional,)):
            self.rewrite(row["seq"], record_id=real)
        mapping = {provisional: real}
        for row in self._rows("SELECT seq, fields FROM outbox WHERE fields IS NOT NULL AND strpos(fields, %s) > 0",
                              (provisional,)):
            self.rewrite(row["seq"], fields=dumps(replace_ids(json.loads(row["fields"]), mapping)))

    def rewrite(self, seq: int, **changes: Any) -> None:
        """Change what one queued write sends (columns as stored: ``fields`` as JSON text),
        re-sealing its checksum only if it was intact (damage is never blessed)."""
        rows = self._rows("SELECT * FROM outbox WHERE seq = %s", (seq,))
        if not rows:
            return
        row = rows[0]
        values = {**row, **changes}
        sealed = checksum.seal(values) if checksum.intact(row) and row["checksum"] is not None else row["checksum"]
        assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(name)) for name in changes)
        self._change(sql.SQL("UPDATE outbox SET {}, checksum = %s WHERE seq = %s").format(assignments),
                     (*changes.values(), sealed, seq))

    def damaged(self, base_id: str | None = None, seqs: Sequence[int] | None = None, *,
                endpoint: str | None = None) -> list[dict[str, Any]]:
        """Queued writes (not dead letters; of one base, these seqs, the endpoint's tables) whose
        stored content no longer matches their checksum, as stored (``fields`` as JSON text)."""
        query = "SELECT * FROM outbox WHERE state != 'dead' AND checksum IS NOT NULL"
        params: list[Any] = []
        if base_id is not None:
            query += " AND base_id = %s"
            params.append(base_id)
        if seqs is not None:
            query += " AND seq = ANY(%s)"
            params.append(list(seqs))
        clause, extra = _of_endpoint(endpoint)
        return [row for row in self._rows(query + clause + " ORDER BY seq", [*params, *extra])
                if not checksum.intact(row)]

    def quarantine(self, base_id: str | None = None, seqs: Sequence[int] | None = None, *,
                   endpoint: str | None = None) -> list[dict[str, Any]]:
        """Dead-letter every damaged queued write (as :meth:`damaged` selects them); them."""
        rows = self.damaged(base_id, seqs, endpoint=endpoint)
        self._change_each("UPDATE outbox SET state = 'dead', claimed_until = NULL, last_error = %s WHERE seq = %s",
                          [(dumps(checksum.quarantine_error(row)), row["seq"]) for row in rows])
        return rows

    # -- operating (ops: queue, check, status) -------------------------------------------------

    def list_ops(self, *, base_id: str | None = None, states: Sequence[str] = ALL_STATES) -> list[Op]:
        """The queued writes in these states (of one base), in queue order."""
        query = "SELECT * FROM outbox WHERE state = ANY(%s)"
        params: list[Any] = [list(states)]
        if base_id:
            query += " AND base_id = %s"
            params.append(base_id)
        return [Op.from_row(r) for r in self._rows(query + " ORDER BY seq", params)]

    def seqs(self, states: Sequence[str] = ALL_STATES) -> list[int]:
        """The seqs of the writes in these states, in queue order."""
        return [r["seq"] for r in self._rows("SELECT seq FROM outbox WHERE state = ANY(%s) ORDER BY seq",
                                             (list(states),))]

    def top_seq(self) -> int:
        """The highest seq the queue ever gave (acknowledged writes included; 0: none)."""
        return int(self._value(
            "SELECT GREATEST(COALESCE(MAX(seq), 0), COALESCE(pg_sequence_last_value("
            "pg_get_serial_sequence('outbox', 'seq')::regclass), 0)) FROM outbox"))

    def bases(self) -> set[str]:
        """The bases with writes in the queue (any state)."""
        return {r["base_id"] for r in self._rows("SELECT DISTINCT base_id FROM outbox")}

    def counts_by_state(self, tid: int) -> dict[str, int]:
        """How many of a table's writes are in each state (states with none: 0)."""
        counts = dict.fromkeys(ALL_STATES, 0)
        for row in self._rows("SELECT state, COUNT(*) AS n FROM outbox WHERE tid = %s GROUP BY state", (tid,)):
            counts[row["state"]] = int(row["n"])
        return counts

    def oldest_queued_at(self, tid: int) -> float | None:
        """When a table's oldest write still to send was queued (``None``: none)."""
        return self._value("SELECT MIN(created_at) FROM outbox WHERE tid = %s AND state != 'dead'", (tid,))

    def stored_writes(self) -> list[dict[str, Any]]:
        """Every queued write as stored (JSON as text, undecoded: it may be garbled), in queue order."""
        return self._rows("SELECT * FROM outbox ORDER BY seq")

    def id_map(self) -> dict[str, str]:
        """Every provisional id Airtable replaced, with its id."""
        return {r["provisional"]: r["real"] for r in self._rows("SELECT provisional, real FROM id_map")}

    def garbled(self) -> list[int]:
        """The writes whose stored JSON (fields, base, upsert keys) does not parse."""
        rows = self._rows("SELECT seq, fields, base, merge_on FROM outbox ORDER BY seq")
        return [r["seq"] for r in rows if not all(_is_json(r[k]) for k in ("fields", "base", "merge_on"))]

    def count_without_table(self) -> int:
        """How many writes belong to no known table."""
        return int(self._value("SELECT COUNT(*) FROM outbox WHERE tid NOT IN (SELECT tid FROM tables)"))

    def return_claimed(self, seqs: Iterable[int]) -> None:
        """In-flight writes among these back to pending, due as they were (attempts kept)."""
        self._change("UPDATE outbox SET state = 'pending', claimed_until = NULL WHERE seq = ANY(%s)"
                     " AND state = 'inflight'", (list(seqs),))

    def make_due(self, seqs: Iterable[int]) -> None:
        """Pending writes among these due now."""
        self._change("UPDATE outbox SET next_attempt_at = 0 WHERE seq = ANY(%s) AND state = 'pending'", (list(seqs),))

    def claimed_among(self, seqs: Sequence[int], now: float) -> list[int]:
        """Which of these writes a flusher holds at ``now`` (in flight, lease not over)."""
        return [r["seq"] for r in self._rows(
            "SELECT seq FROM outbox WHERE seq = ANY(%s) AND state = 'inflight' AND claimed_until >= %s ORDER BY seq",
            (list(seqs), now))]

    def records_of(self, seqs: Sequence[int]) -> set[tuple[int, str]]:
        """The (table, record) pairs these writes are to."""
        return {(r["tid"], r["record_id"]) for r in self._rows(
            "SELECT tid, record_id FROM outbox WHERE seq = ANY(%s)", (list(seqs),))}

    def with_later_writes(self, seqs: Sequence[int]) -> set[int]:
        """These writes, and for each create among them the later writes to the same record."""
        return set(seqs) | {r["seq"] for r in self._rows(
            "SELECT later.seq FROM outbox AS c JOIN outbox AS later ON later.tid = c.tid"
            " AND later.record_id = c.record_id AND later.seq > c.seq WHERE c.seq = ANY(%s) AND c.op = 'create'",
            (list(seqs),))}

    def has_writes(self, tid: int, record_id: str) -> bool:
        """Whether the queue holds any write to this record (any state)."""
        return self._value("SELECT 1 FROM outbox WHERE tid = %s AND record_id = %s LIMIT 1",
                           (tid, record_id)) is not None

    def forget_table(self, tid: int) -> int:
        """Drop a table's writes and id pairs for good; how many writes."""
        dropped = self._change("DELETE FROM outbox WHERE tid = %s", (tid,))
        self._change("DELETE FROM id_map WHERE tid = %s", (tid,))
        return dropped

    def requeue(self, seqs: Iterable[int] | None = None) -> list[int]:
        """Put dead letters back in the queue, due now with no attempts (``None``: all of them).
        Returns the seqs given (or found)."""
        if seqs is None:
            seqs = [r["seq"] for r in self._rows("SELECT seq FROM outbox WHERE state = 'dead' ORDER BY seq")]
        seqs = list(seqs)
        self._change("UPDATE outbox SET state = 'pending', next_attempt_at = 0, attempts = 0"
                     " WHERE seq = ANY(%s) AND state = 'dead'", (seqs,))
        return seqs

    def restore_write(self, row: Mapping[str, Any]) -> None:
        """Put back one queued write exactly as stored elsewhere (its seq, state, checksum; salvage)."""
        params = (row["seq"], row["tid"], row["base_id"], row["table_ref"], row["op"], row["record_id"], row["fields"],
                  row["base"], row["typecast"], row["merge_on"], row["state"], row["attempts"], row["next_attempt_at"],
                  row["claimed_until"], row["last_error"], row["created_at"], row.get("checksum"))

        def restore(conn: Connection) -> None:
            conn.execute(_RESTORE, params)
            # An explicit seq does not move the identity on: the next append must come after it.
            conn.execute("SELECT setval(pg_get_serial_sequence('outbox', 'seq'), GREATEST(%s, COALESCE("
                         "pg_sequence_last_value(pg_get_serial_sequence('outbox', 'seq')::regclass), 0)))", (row["seq"],))
        self._in_unit(restore)

    def restore_ids(self, pairs: Mapping[str, tuple[str, int]]) -> None:
        """Remember provisional id -> (Airtable's id, table) pairs, keeping any already known."""
        self._change_each("INSERT INTO id_map (provisional, real, tid) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                          [(provisional, real, tid) for provisional, (real, tid) in pairs.items()])

    def first_creates(self) -> list[dict[str, Any]]:
        """Per record created through the queue (live creates): its ``tid``, ``record_id`` and when
        its first create was queued (``at``)."""
        return self._rows("SELECT tid, record_id, MIN(created_at) AS at FROM outbox WHERE op = 'create'"
                          " AND state != 'dead' GROUP BY tid, record_id")


def _held_elsewhere(rows: list[dict[str, Any]], locked: set[int]) -> list[dict[str, Any]]:
    """The base's rows, those another transaction is changing (not in ``locked``) shown as in flight
    under a live flusher's claim: ``choose`` then holds their records back, in order."""
    return [row if row["seq"] in locked else {**row, "state": "inflight", "claimed_until": float("inf")}
            for row in rows]


if TYPE_CHECKING:  # mypy checks that the class keeps the contract

    def _keeps_the_contract(runner: Runner) -> Outbox:
        return PostgresOutbox(runner)
