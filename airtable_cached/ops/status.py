"""``status``: per table records, freshness and queue; per base the requests of the last hour."""

from __future__ import annotations

import json
import time

from airtable_cached.config import Settings
from airtable_cached.rules.policy import TableState
from airtable_cached.store.sqlite import Store
from airtable_cached.sync.refresh import refresh_status


def table_label(row: dict) -> str:
    """How a table is named in reports: its name, else its id, else its tid."""
    return row["name"] or row["table_id"] or f"tid {row['tid']}"


def status(store: Store, settings: Settings, *, now: float | None = None) -> dict:
    """Per table: records, last pull, age against max age, queued and dead writes, oldest queued
    write; per base: requests sent in the last hour (and the 429s among them)."""
    now = time.time() if now is None else now
    tables = [_table_status(store, row, settings, now) for row in store.replica.table_rows()]
    return {
        "path": store.location,
        "schema_version": store.version(),
        "bytes": store.disk_bytes(),
        "mode": settings.mode,
        "tables": tables,
        "bases": _bases_status(store, {t["base_id"] for t in tables}, now),
        "queue": {
            "pending": sum(t["pending"] for t in tables),
            "dead": sum(t["dead"] for t in tables),
        },
    }


def _table_status(store: Store, row: dict, settings: Settings, now: float) -> dict:
    tid = row["tid"]
    counts = store.replica.record_counts(tid)
    queue, oldest = _queue_status(store, tid)
    pulled_at = row["pulled_at"]
    schema = json.loads(row["schema_json"]) if row["schema_json"] else None
    return {
        "base_id": row["base_id"],
        "table": table_label(row),
        "table_id": row["table_id"],
        "records": counts["visible"],
        "local_only": counts["local_only"],
        "last_pull": pulled_at,
        "age": None if pulled_at is None else max(0.0, now - pulled_at),
        "max_age": settings.max_age,
        "fresh": TableState(pulled_at, settings.max_age).is_fresh(now),
        "pending": queue["pending"] + queue["inflight"],
        "inflight": queue["inflight"],
        "dead": queue["dead"],
        "oldest_pending": oldest,
        "oldest_pending_age": None if oldest is None else max(0.0, now - oldest),
        **refresh_status(store.replica, tid, schema, settings, now),
    }


def _queue_status(store: Store, tid: int) -> tuple[dict[str, int], float | None]:
    """The table's writes per state, and when the oldest not dead-lettered was queued."""
    queue = store.outbox.counts_by_state(tid)
    oldest = store.outbox.oldest_queued_at(tid)
    return queue, oldest


def _bases_status(store: Store, bases: set[str], now: float) -> dict[str, dict]:
    since = now - 3600
    out = {}
    for base_id in sorted(bases | store.replica.bases_logged_since(since)):
        sent, limited = store.replica.request_counts(base_id, since)
        out[base_id] = {"requests_last_hour": sent, "rate_limited_last_hour": limited}
    return out
