"""The engine's calls into the write queue that are still functions of ``sync/outbox.py`` on a
SQLite connection (``append``, ``ack``, the live writes of a record, the checksummed rewrite).

Transitional, and the only place the engine touches them: these become methods of the unit's
``outbox`` (``store/contract.py``, Outbox) as the queue's own module is turned into them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airtable_cached.store import checksum
from airtable_cached.store.contract import Unit
from airtable_cached.sync import outbox


def _conn(unit: Unit) -> Any:
    return unit.conn  # type: ignore[attr-defined]  # SqliteUnit's connection, until the queue has methods


def append(unit: Unit, **write: Any) -> int:
    """Queue one write (``sync/outbox.py`` ``append``); returns its seq."""
    return outbox.append(_conn(unit), **write)


def ack(unit: Unit, seqs: Iterable[int]) -> None:
    outbox.ack(_conn(unit), seqs)


def rewrite_fields(unit: Unit, seq: int, fields_json: str) -> None:
    """A queued write sends these fields from now on (its checksum sealed again)."""
    checksum.rewrite(_conn(unit), seq, fields=fields_json)


def records_with_live_writes(unit: Unit, tid: int) -> set[str]:
    return outbox.records_with_live_ops(_conn(unit), tid)


def replayed(unit: Unit, tid: int, record_id: str, remote: dict | None) -> dict | None:
    """What reads see of a record: its remote state with its live queued writes replayed on top."""
    return outbox.replay(remote, outbox.live_ops_for_record(_conn(unit), tid, record_id))
