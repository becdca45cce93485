"""Decisions, apart from I/O: where a read is answered, what a write does.

Each function takes plain values and returns an answer, so every rule can be tested on its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Read(enum.Enum):
    SERVE = "serve"  # answer from the cache as it is
    PULL_THEN_SERVE = "pull"  # the table is missing or stale: pull it, then answer locally
    REMOTE = "remote"  # only Airtable can answer exactly: send it, cache what comes back
    OFFLINE_STALE = "offline-stale"  # offline and never pulled: nothing to answer with


class Write(enum.Enum):
    ENQUEUE = "enqueue"  # apply to the cache and queue it
    WRITE_THROUGH = "write-through"  # queue it, flush it now, fail the call if Airtable refuses
    PASSTHROUGH = "passthrough"  # plain pyairtable; the answer fills the cache


@dataclass(frozen=True)
class TableState:
    pulled_at: float | None
    max_age: float

    def is_fresh(self, now: float) -> bool:
        return self.pulled_at is not None and now - self.pulled_at <= self.max_age


def decide_read(mode: str, state: TableState, now: float, remote_reason: str | None) -> Read:
    """Where a read is answered.

    ``remote_reason`` is why this particular query cannot be answered exactly from the cache
    (``None`` when it can). Offline mode never touches the network: a query the cache cannot
    answer exactly is an error there, raised by the caller with the reason.
    """
    if mode == "passthrough":
        return Read.REMOTE
    if mode == "offline":
        return Read.OFFLINE_STALE if state.pulled_at is None or remote_reason else Read.SERVE
    if remote_reason:
        return Read.REMOTE
    if not state.is_fresh(now):
        return Read.PULL_THEN_SERVE
    return Read.SERVE


def decide_write(mode: str) -> Write:
    if mode == "passthrough":
        return Write.PASSTHROUGH
    if mode == "write-through":
        return Write.WRITE_THROUGH
    return Write.ENQUEUE


def backoff(attempts: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds before a write that failed ``attempts`` times is tried again by a later flush."""
    return min(cap, base * (2 ** max(0, attempts - 1)))
