"""Benchmark: per-record cost of the cache's own work as the table grows (issue 11).

For each table size it prints, per record of the table, the cost of:
  - apply: applying a full pull to an empty cache (the first pull, network excluded);
  - refresh: applying the same pull again (nothing changed), one where 1% of records changed and
    one where every record changed;
  - update / delete: one cached ``update()`` / ``delete()`` (per call; it must not grow with the table);
and, with ``--legacy``, the same apply, refresh and update under the full-text triggers of schema version 3
(the index searched by a table scan per row), in this same process: the "before" figures.

"Linear" means the per-record columns stay flat (within 2x) from the smallest size to the largest.
Everything runs against a real SQLite file; no network is involved (the pulled pages are built in
memory with the fake's seed data, so only the cache's work is measured).

    python benchmarks/bench_scale.py [--sizes 1000,10000,100000] [--legacy]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from airtable_cached.config import Settings
from airtable_cached.engine import Engine
from airtable_cached.runtime import local_engine
from airtable_cached.store.sqlite.connection import MIGRATIONS, Store, _statements
from airtable_cached.testing import seed_leads

BASE = "appBENCHbase00001"
TABLE = "Leads"


def pulled(size: int) -> list[dict]:
    """A page set as a pull returns it: ids, createdTime and fields."""
    return [
        {"id": f"rec{i:014d}"[-17:], "createdTime": "2024-01-01T00:00:00.000Z", "fields": fields}
        for i, fields in enumerate(seed_leads(size, seed=7))
    ]


def legacy_fts(store: Store) -> None:
    """Put back schema 3's full-text triggers (DELETE ... WHERE tid AND id: a scan per row)."""
    with store.transaction() as conn:
        for name in ("records_fts_insert", "records_fts_update", "records_fts_delete"):
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE records_fts")
        for statement in _statements(MIGRATIONS[2]):
            conn.execute(statement)


def engine_for(directory: Path, name: str, *, legacy: bool) -> Engine:
    """An engine without a sync on a new file, built as the commands build theirs (runtime.py)."""
    engine = local_engine(Settings(path=directory / f"{name}.sqlite3", mode="offline", flush="manual", max_age=1e9))
    if legacy:
        assert isinstance(engine.store, Store)
        legacy_fts(engine.store)
    return engine


def measure(size: int, directory: Path, *, legacy: bool, quick: bool) -> dict[str, float]:
    engine = engine_for(directory, f"{'legacy' if legacy else 'now'}-{size}", legacy=legacy)
    records = pulled(size)
    out: dict[str, float] = {}
    started = time.perf_counter()
    engine.apply_pull(BASE, TABLE, records, started_at=time.time())
    out["apply"] = (time.perf_counter() - started) / size
    ids = [r["id"] for r in records]
    calls = 50
    started = time.perf_counter()
    for i in range(calls):
        engine.update(BASE, TABLE, ids[i * (size // calls)], {"fields": {"Score": i}}, replace=False)
    out["update"] = (time.perf_counter() - started) / calls
    every = copy.deepcopy(records)
    for r in every:
        r["fields"]["Company Description"] = r["fields"].get("Company Description", "") + " Now hiring."
    started = time.perf_counter()
    engine.apply_pull(BASE, TABLE, every, started_at=time.time())
    out["refresh all"] = (time.perf_counter() - started) / size
    if quick:
        return out
    started = time.perf_counter()
    engine.apply_pull(BASE, TABLE, every, started_at=time.time())
    out["refresh"] = (time.perf_counter() - started) / size
    changed = copy.deepcopy(every)
    for r in changed[:: 100]:
        r["fields"]["Status"] = "Won"
    started = time.perf_counter()
    engine.apply_pull(BASE, TABLE, changed, started_at=time.time())
    out["refresh 1%"] = (time.perf_counter() - started) / size
    started = time.perf_counter()
    for i in range(calls):
        engine.delete(BASE, TABLE, [ids[i * (size // calls) + 1]], single=True)
    out["delete"] = (time.perf_counter() - started) / calls
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--legacy", action="store_true", help="also time schema 3's full-text triggers (slow: quadratic)")
    parser.add_argument("--legacy-max", type=int, default=10_000, help="largest size timed with --legacy")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    directory = Path(tempfile.mkdtemp())
    results = {size: measure(size, directory, legacy=False, quick=False) for size in sizes}
    columns = ["apply", "refresh", "refresh 1%", "refresh all", "update", "delete"]
    print("per record of the table (apply, refresh) and per call (update, delete), in microseconds:")
    print(f"{'records':>8} " + " ".join(f"{c:>11}" for c in columns))
    for size, row in results.items():
        print(f"{size:>8} " + " ".join(f"{row[c] * 1e6:>11.1f}" for c in columns))
    small, large = results[sizes[0]], results[sizes[-1]]
    print("growth smallest -> largest (goal: under 2x): "
          + ", ".join(f"{c} {large[c] / small[c]:.2f}x" for c in columns))
    if args.legacy:
        print("\nschema 3's full-text triggers, same process (before):")
        for size in [s for s in sizes if s <= args.legacy_max]:
            before = measure(size, directory, legacy=True, quick=True)
            now = results[size]
            print(f"{size:>8} apply {before['apply'] * 1e6:7.1f} us/record ({before['apply'] / now['apply']:.1f}x now),"
                  f" refresh all {before['refresh all'] * 1e6:9.1f} us/record ({before['refresh all'] / now['refresh all']:.1f}x now),"
                  f" update {before['update'] * 1e3:7.2f} ms ({before['update'] / now['update']:.1f}x now)")


if __name__ == "__main__":
    main()
