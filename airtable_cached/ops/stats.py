"""``stats``: cache hits and misses, read latencies, requests sent, bytes stored."""

from __future__ import annotations

from airtable_cached.ops.status import table_label
from airtable_cached.store.sqlite import Store
from airtable_cached.sync.refresh import refresh_counts

LOCAL_KINDS = ("list.local", "list.page", "get.local")
#: A read that pulled its table first counts as remote (``*.pull``): it waited for Airtable.
REMOTE_KINDS = ("list.remote", "get.remote", "list.pull", "get.pull")
#: Which total each kind of read counts in.
_TOTAL_OF = {**{k: "local" for k in LOCAL_KINDS}, **{k: "remote" for k in REMOTE_KINDS},
             "get.miss": "misses", "formula.fallback": "formula_fallbacks"}


def stats(store: Store) -> dict:
    """Cache hits and misses per table and kind, local vs remote reads, formula fallbacks, latency
    percentiles, requests sent (by kind and status), 429s met, bytes stored."""
    samples = store.replica.latency_samples()
    for values in samples.values():
        values.sort()
    tables = _table_stats(store, samples)
    totals = {key: sum(entry[key] for entry in tables.values())
              for key in ("local", "remote", "misses", "formula_fallbacks")}
    reads = totals["local"] + totals["remote"] + totals["misses"]
    return {
        "reads": {**totals, "hit_ratio": round(totals["local"] / reads, 4) if reads else None},
        "tables": list(tables.values()),
        "refresh": refresh_counts(store.replica),
        "latency": _latency_by_kind(samples),
        "requests": _requests(store),
        "bytes": {"file": store.disk_bytes(), **store.page_bytes(), "records_json": store.replica.records_json_bytes()},
    }


def _table_stats(store: Store, samples: dict[tuple[int, str], list[float]]) -> dict[int, dict]:
    """Per table: each kind's count, mean and percentiles, and the table's reads by total."""
    names = {r["tid"]: (r["base_id"], table_label(r)) for r in store.replica.table_rows()}
    tables: dict[int, dict] = {}
    for row in store.replica.read_counts():
        tid, kind, count = row["tid"], row["kind"], row["count"]
        base_id, label = names.get(tid, ("?", f"tid {tid}"))
        entry = tables.setdefault(tid, {"base_id": base_id, "table": label, "kinds": {},
                                        "local": 0, "remote": 0, "misses": 0, "formula_fallbacks": 0})
        values = samples.get((tid, kind), [])
        entry["kinds"][kind] = {
            "count": count,
            "mean_ms": round(row["total_ms"] / count, 3) if count else None,
            "p50_ms": _percentile(values, 0.50),
            "p95_ms": _percentile(values, 0.95),
        }
        if kind in _TOTAL_OF:
            entry[_TOTAL_OF[kind]] += count
    for entry in tables.values():
        reads = entry["local"] + entry["remote"] + entry["misses"]
        entry["hits"] = entry["local"]
        entry["hit_ratio"] = round(entry["local"] / reads, 4) if reads else None
    return tables


def _latency_by_kind(samples: dict[tuple[int, str], list[float]]) -> dict[str, dict]:
    merged: dict[str, list[float]] = {}
    for (_tid, kind), values in samples.items():
        merged.setdefault(kind, []).extend(values)
    by_kind: dict[str, dict] = {}
    for kind, values in merged.items():
        values.sort()
        by_kind[kind] = {"samples": len(values), "p50_ms": _percentile(values, 0.5), "p95_ms": _percentile(values, 0.95)}
    return by_kind


def _requests(store: Store) -> dict:
    by_kind: dict[str, dict[str, int]] = {}
    for kind, status_, n in store.replica.requests_by_kind():
        by_kind.setdefault(kind, {})[str(status_) if status_ is not None else "network-error"] = n
    sent, limited = store.replica.request_totals()
    return {"sent": sent, "rate_limited": limited, "by_kind": by_kind}


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return round(sorted_values[index], 3)
