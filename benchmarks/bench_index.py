"""Benchmark: an equality filter over 50,000 cached records, with the field's index vs a scan.

The records are put straight into the cache (as a pull would) to keep the run short; the queries
go through the cached Table. Prints the ratio scan time / indexed time, measured in one process.

    python benchmarks/bench_index.py [--records 50000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from timing import best_of

from airtable_cached import Api
from airtable_cached.testing import LEADS_SCHEMA, seed_leads

BASE = "appBENCHbase00001"
TABLE = "Leads"




def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    api = Api("unused-token", path=Path(tempfile.mkdtemp()) / "bench.sqlite3", mode="offline", max_age=10**9,
              index_after=10**9)
    engine = api.engine
    schema = {"id": "tblBENCH000000001", "name": TABLE,
              "fields": [{**f, "id": f"fld{i:014d}"} for i, f in enumerate(LEADS_SCHEMA)]}
    leads = seed_leads(args.records, seed=5)
    records = [{"id": f"rec{i:014d}", "createdTime": "2024-01-01T00:00:00.000Z", "fields": f} for i, f in enumerate(leads)]
    started = time.perf_counter()
    engine.apply_pull(BASE, TABLE, records, started_at=time.time(), schema=schema)
    print(f"loaded {args.records} records into the cache in {time.perf_counter() - started:.1f} s")
    table = api.table(BASE, TABLE)
    target = leads[args.records // 2]["LinkedIn URL"]
    filters = {
        "{LinkedIn URL} = '...'": f"{{LinkedIn URL}} = '{target}'",
        "AND({Status} = 'Lost', {Score} > 90)": "AND({Status} = 'Lost', {Score} > 90)",
    }
    for label, formula in filters.items():
        scan = best_of(lambda: table.all(formula=formula))
        expected = table.all(formula=formula)
        for name in ("LinkedIn URL", "Status"):
            engine.ensure_index(name)
        indexed = best_of(lambda: table.all(formula=formula))
        assert table.all(formula=formula) == expected
        print(f"{label:40s} {len(expected):6d} matches: scan {scan * 1000:8.2f} ms, indexed {indexed * 1000:7.2f} ms"
              f"  -> {scan / indexed:,.0f}x faster with the index")
        with engine.store.transaction() as conn:
            for (index,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND name LIKE 'records_by_%'").fetchall():
                conn.execute(f'DROP INDEX "{index}"')
        engine.indexes.indexed.clear()


if __name__ == "__main__":
    main()
