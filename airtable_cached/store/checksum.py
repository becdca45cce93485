"""Per-write checksums: a queued write whose stored bytes changed on disk is never sent.

Each outbox row carries a checksum of what will be sent (table, operation, record id, fields,
typecast, upsert keys), written with the row. The flusher verifies it before a write is claimed, and
``check`` verifies every row: a write that no longer matches is dead-lettered (kept, visible, with
its stored text) instead of sending a value the agent did not write. Rows written before checksums
existed have none and are not judged.

Rewrites the project itself makes (a provisional id replaced by Airtable's, a field dropped by
Airtable-wins conflict resolution) go through ``Outbox.rewrite`` (``store/sqlite/outbox.py``), which
re-seals a row only if it was intact before: damage is never blessed by a later rewrite. Finding and
dead-lettering damaged writes is ``Outbox.damaged`` / ``Outbox.quarantine``.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping
from typing import Any

from airtable_cached.rules.records import dumps

#: The columns that decide what reaches Airtable.
SEALED = ("tid", "base_id", "table_ref", "op", "record_id", "fields", "typecast", "merge_on")


#: The columns a new outbox row is written with, in the order of :func:`new_row`'s values.
NEW_ROW_COLUMNS = ("tid", "base_id", "table_ref", "op", "record_id", "fields", "base", "typecast", "merge_on",
                   "created_at", "checksum")


def new_row(*, tid: int, base_id: str, table_ref: str, op: str, record_id: str, fields: dict | None,
            base: dict | None, typecast: bool, now: float, merge_on: list[str] | None) -> tuple:
    """A queued write's column values as stored (:data:`NEW_ROW_COLUMNS`), sealed: the same in
    every store, so that a checksum written by one is verified by any."""
    sealed = {
        "tid": tid, "base_id": base_id, "table_ref": table_ref, "op": op, "record_id": record_id,
        "fields": None if fields is None else dumps(fields), "typecast": int(bool(typecast)),
        "merge_on": dumps(merge_on) if merge_on else None,
    }
    return (tid, base_id, table_ref, op, record_id, sealed["fields"], None if base is None else dumps(base),
            sealed["typecast"], sealed["merge_on"], now, seal(sealed))


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


def quarantine_error(row: Mapping[str, Any]) -> dict:
    """The error a damaged write is dead-lettered with (``row``: as stored)."""
    return {
        "status": None,
        "body": {"error": {
            "type": "CORRUPTED_WRITE",
            "message": (f"queued {row['op']} of {row['record_id']} no longer matches its checksum: its stored content"
                        " changed on disk, so it is not sent; re-do the write, or restore a backup"),
            "stored_fields": row["fields"],
        }},
    }
