"""Plain values a store returns (the same for every store): what the contract's methods promise."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airtable_cached.types import QueuedWriteDict


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
    #: When a pending write may be sent (again).
    next_attempt_at: float = 0.0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Op:
        """From a stored row (its columns by name; ``fields`` and ``merge_on`` as JSON text)."""
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
            next_attempt_at=row["next_attempt_at"],
        )

    def as_dict(self) -> QueuedWriteDict:
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
