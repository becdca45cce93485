"""The shapes of the dicts the cache hands to an agent.

Records are pyairtable's own TypedDicts (``pyairtable.api.types``: :class:`RecordDict`,
:class:`RecordDeletedDict`, :class:`UpsertResultDict`), re-exported here; the others are the
cache's own results: a page of a list, a batch written or deleted, a queued write (``Table.pending``,
``queue list``) and the dead letter ``Api(on_dead_letter=...)`` receives.

Every layer may import this module (like ``errors`` and ``config``): it holds shapes, no behaviour.
"""

from __future__ import annotations

from typing import Any, Required, TypedDict

from pyairtable.api.types import RecordDeletedDict, RecordDict, UpsertResultDict

__all__ = [
    "DeadLetterDict", "QueuedWriteDict", "RecordDeletedDict", "RecordDict", "RecordListDict", "RecordsDeletedDict",
    "RecordsDict", "UpsertResultDict",
]


class RecordListDict(TypedDict, total=False):
    """One page of a list, as Airtable sends it: ``offset`` only when more pages follow."""

    records: Required[list[RecordDict]]
    offset: str


class RecordsDict(TypedDict):
    """Records created or updated by one batch call (Airtable's answer to a list of records)."""

    records: list[RecordDict]


class RecordsDeletedDict(TypedDict):
    """Records deleted by one batch call."""

    records: list[RecordDeletedDict]


class QueuedWriteDict(TypedDict):
    """One write in the queue, as ``Table.pending()`` and ``queue list`` show it."""

    seq: int
    base_id: str
    table: str
    op: str  # create | update | replace | delete
    record_id: str
    fields: dict[str, Any] | None
    state: str  # pending | inflight | dead
    attempts: int
    last_error: Any  # Airtable's answer ({"status", "body", ...}) to the last attempt, or None
    created_at: float


class DeadLetterDict(TypedDict):
    """A call Airtable refused, whose writes were dead-lettered together (``Api(on_dead_letter=...)``)."""

    base_id: str
    tables: list[str]
    record_ids: list[str]
    seqs: list[int]
    status: int | None
    error: Any  # Airtable's error body
    writes: list[QueuedWriteDict]
