"""``vacuum``: prune the logs, keep the newest latency samples, compact the file."""

from __future__ import annotations

import time

from airtable_cached.store.contract import Store

#: Latency samples kept per table and kind by ``vacuum`` (percentiles need no more).
KEEP_LATENCY_SAMPLES = 10_000


def vacuum(store: Store, keep_log_days: float = 30.0, *, now: float | None = None) -> dict:
    """Prune the sync log and the conflict log older than ``keep_log_days``, keep the newest latency
    samples, then compact the file (``VACUUM``) and truncate the WAL."""
    now = time.time() if now is None else now
    cutoff = now - keep_log_days * 86400
    before = store.disk_bytes()
    with store.write() as unit:
        log_rows = unit.replica.prune_request_log(cutoff)
        conflict_rows = unit.replica.prune_conflicts(cutoff)
        latency_rows = unit.replica.trim_latency_samples(KEEP_LATENCY_SAMPLES)
    store.vacuum()
    return {"sync_log_pruned": log_rows, "conflicts_pruned": conflict_rows, "latencies_pruned": latency_rows,
            "bytes_before": before, "bytes_after": store.disk_bytes()}


def prune_logs(store: Store, keep_log_days: float, *, now: float | None = None) -> int:
    """Only the pruning part of :func:`vacuum` (cheap enough to run daily from the sync process)."""
    cutoff = (time.time() if now is None else now) - keep_log_days * 86400
    with store.write() as unit:
        pruned = unit.replica.prune_request_log(cutoff)
        unit.replica.trim_latency_samples(KEEP_LATENCY_SAMPLES)
        return pruned
