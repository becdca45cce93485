"""The write queue in SQLite: all SQL on ``outbox`` and ``id_map`` (see ``schema.py``).

Modelled on huey's SQLite storage: order is in the schema (AUTOINCREMENT ``seq``), a flusher claims
under ``BEGIN IMMEDIATE``, an acknowledged write is deleted, a failure counts attempts.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence


class SqliteOutbox:
    """:class:`airtable_cached.store.contract.Outbox` on one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    # -- asked by the engine -------------------------------------------------------------------
    def has_live_writes(self, tids: Sequence[int]) -> bool:
        return self.conn.execute(
            f"SELECT 1 FROM outbox WHERE tid IN ({','.join('?' * len(tids))}) AND state != 'dead' LIMIT 1", list(tids)
        ).fetchone() is not None

    def has_live_writes_for_base(self, base_id: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM outbox WHERE base_id = ? AND state != 'dead' LIMIT 1", (base_id,)
        ).fetchone() is not None

    def has_writes(self, tid: int) -> bool:
        return self.conn.execute("SELECT 1 FROM outbox WHERE tid = ? LIMIT 1", (tid,)).fetchone() is not None

    def write_states(self, seqs: Sequence[int]) -> list[dict]:
        rows = self.conn.execute(
            f"SELECT seq, record_id, last_error, state FROM outbox WHERE seq IN ({','.join('?' * len(seqs))})", list(seqs)
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
            f"SELECT tid, op, record_id, fields FROM outbox WHERE state != 'dead' AND tid IN ({','.join('?' * len(tids))})"
            " ORDER BY seq",
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
