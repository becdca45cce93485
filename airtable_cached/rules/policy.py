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


# -- refresh (incremental pulls) -------------------------------------------------------------------

#: Field types fed by other tables: their values change without the record's LAST_MODIFIED_TIME().
CROSS_TABLE_TYPES = frozenset({"rollup", "multipleLookupValues", "lookup", "count"})
_CLOCK_FUNCTIONS = ("NOW(", "TODAY(")


def volatile_fields(schema: dict | None) -> list[str] | None:
    """Fields whose value can change while LAST_MODIFIED_TIME() stays put: lookups, rollups and
    counts (fed by another table) and formulas over NOW()/TODAY() or over such fields. ``None``
    when the schema is unknown (a token without schema.bases:read): nobody can tell."""
    if schema is None:
        return None
    fields = schema.get("fields", [])
    volatile_ids = {f.get("id") for f in fields if f.get("type") in CROSS_TABLE_TYPES}
    names = [f["name"] for f in fields if f.get("type") in CROSS_TABLE_TYPES]
    changed = True
    while changed:  # a formula over a volatile field is volatile too
        changed = False
        for f in fields:
            if f.get("type") != "formula" or f.get("id") in volatile_ids:
                continue
            options = f.get("options") or {}
            text = str(options.get("formula") or "").upper().replace(" ", "")
            refs = set(options.get("referencedFieldIds") or [])
            if any(fn in text for fn in _CLOCK_FUNCTIONS) or refs & volatile_ids:
                volatile_ids.add(f.get("id"))
                names.append(f["name"])
                changed = True
    return names


@dataclass(frozen=True)
class RefreshPlan:
    full: bool
    sweep: bool
    why: str


def plan_refresh(*, now: float, watermark: float | None, last_full: float | None, last_sweep: float | None,
                 volatile: list[str] | None, table_hook: str | None, base_hook: str | None,
                 full_every: float, sweep_every: float, force_full: bool = False) -> RefreshPlan:
    """Whether a refresh pulls the table whole or only what changed since its watermark, and
    whether it lists the table's ids to find deletions (when no change feed reports them)."""
    if force_full:
        return RefreshPlan(True, False, "forced")
    if watermark is None or last_full is None:
        return RefreshPlan(True, False, "never pulled whole")
    if base_hook is not None and table_hook != base_hook:
        return RefreshPlan(True, False, "the change feed does not cover it since its last full pull")
    if (volatile is None or volatile) and now - last_full >= full_every:
        why = "schema unknown" if volatile is None else "computed fields " + ", ".join(volatile)
        return RefreshPlan(True, False, f"{why}: LAST_MODIFIED_TIME() misses their changes")
    swept = last_sweep if last_sweep is not None else last_full
    sweep = base_hook is None and now - swept >= sweep_every
    return RefreshPlan(False, sweep, "incremental")


def watermark_formula(watermark: float, overlap: float) -> str:
    """``filterByFormula`` selecting the records changed after ``watermark - overlap`` (epoch s)."""
    import datetime as _dt

    since = _dt.datetime.fromtimestamp(watermark - overlap, tz=_dt.UTC)
    text = since.strftime("%Y-%m-%dT%H:%M:%S.") + f"{since.microsecond // 1000:03d}Z"
    return f"IS_AFTER(LAST_MODIFIED_TIME(), DATETIME_PARSE('{text}'))"
