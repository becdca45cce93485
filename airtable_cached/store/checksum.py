"""Per-write checksums: a queued write whose stored bytes changed on disk is never sent.

Each outbox row carries a checksum of what will be sent (table, operation, record id, fields,
typecast, upsert keys), written with the row. The flusher verifies it before a write is claimed, and
``check`` verifies every row: a write that no longer matches is dead-lettered (kept, visible, with
its stored text) instead of sending a value the agent did not write. Rows written before checksums
existed have none and are not judged.

Rewrites the project itself makes (a provisional id replaced by Airtable's, a field dropped by
Airtable-wins conflict resolution) go through :func:`rewrite`, which re-seals a row only if it was
intact before: damage is never blessed by a later rewrite.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping
from typing import Any

from airtable_cached.rules.records import dumps

#: The columns that decide what reaches Airtable.
SEALED = ("tid", "base_id", "table_ref", "op", "record_id", "fields", "typecast", "merge_on")


def seal(row: Mapping[str, Any] | sqlite3.Row) -> str:
    """The checksum of an outbox row (a mapping with the :data:`SEALED` columns, as stored)."""
    text = dumps([row[name] for name in SEALED])
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def intact(row: sqlite3.Row | Mapping[str, Any]) -> bool:
    """Whether the row still matches its checksum (rows without one are taken as they are)."""
    stored = row["checksum"]
    if stored is None:
        return True
    try:
        return stored == seal(row)
    except (TypeError, ValueError, UnicodeError):
        return False


def rewrite(conn: sqlite3.Connection, seq: int, **changes: Any) -> None:
    """Change sealed columns of one queued write, re-sealing it only if it was intact."""
    row = conn.execute("SELECT * FROM outbox WHERE seq = ?", (seq,)).fetchone()
    if row is None:
        return
    values = {name: row[name] for name in row.keys()}
    was_intact = intact(row)
    values.update(changes)
    checksum = seal(values) if was_intact and row["checksum"] is not None else row["checksum"]
    assignments = ", ".join(f"{name} = ?" for name in changes)
    conn.execute(f"UPDATE outbox SET {assignments}, checksum = ? WHERE seq = ?", (*changes.values(), checksum, seq))


def broken(conn: sqlite3.Connection, base_id: str | None = None, seqs: list[int] | None = None) -> list[sqlite3.Row]:
    """Queued writes (not dead letters; of one base, or these seqs) whose stored content no longer
    matches their checksum."""
    sql = "SELECT * FROM outbox WHERE state != 'dead' AND checksum IS NOT NULL"
    params: list = []
    if base_id is not None:
        sql += " AND base_id = ?"
        params.append(base_id)
    if seqs is not None:
        sql += " AND seq IN (SELECT value FROM json_each(?))"
        params.append(dumps(seqs))
    return [row for row in conn.execute(sql, params) if not intact(row)]


def quarantine_error(row: sqlite3.Row) -> dict:
    return {
        "status": None,
        "body": {"error": {
            "type": "CORRUPTED_WRITE",
            "message": (f"queued {row['op']} of {row['record_id']} no longer matches its checksum: its stored content"
                        " changed on disk, so it is not sent; re-do the write, or restore a backup"),
            "stored_fields": row["fields"],
        }},
    }


def quarantine(conn: sqlite3.Connection, base_id: str | None = None, seqs: list[int] | None = None) -> list[int]:
    """Dead-letter every damaged queued write (inside the caller's transaction); their seqs."""
    rows = broken(conn, base_id, seqs)
    conn.executemany(
        "UPDATE outbox SET state = 'dead', claimed_until = NULL, last_error = ? WHERE seq = ?",
        [(dumps(quarantine_error(row)), row["seq"]) for row in rows],
    )
    return [row["seq"] for row in rows]
