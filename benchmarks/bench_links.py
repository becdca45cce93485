"""Benchmark: what keeping both sides of a link costs a write call and a flush (issue 9).

Two tables linked both ways on the bundled fake Airtable (no latency, no rate limit). The
baseline is the same number of calls writing a number field of the same records; the measured
calls write the link field (checked against the linked table, the inverse side recomputed). Prints
the ratios, measured in one process.

    python benchmarks/bench_links.py [--people 2000] [--calls 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from airtable_cached import Api
from airtable_cached.testing import PEOPLE_ID, FakeAirtable, add_linked_tables

BASE = "appLINKEDbase0001"


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with FakeAirtable(seed=3) as fake:
        add_linked_tables(fake, BASE, companies=50, people=args.people)
        api = Api(fake.token, endpoint_url=fake.url, path=Path(tempfile.mkdtemp()) / "bench.sqlite3",
                  flush="manual", rate_limit=10_000, max_age=10**9)
        people, companies = api.table(BASE, "People"), api.table(BASE, "Companies")
        ids = [r["id"] for r in people.all()]
        company_ids = [r["id"] for r in companies.all()]
        calls = min(args.calls, len(ids))

        plain_write = timed(lambda: [people.update(ids[i], {"Score": i}) for i in range(calls)])
        plain_flush = timed(api.flush)
        link_write = timed(lambda: [people.update(ids[i], {"Company": [company_ids[i % len(company_ids)]]})
                                    for i in range(calls)])
        assert company_ids[0] and ids[0] in companies.get(company_ids[0])["fields"]["Employees"]
        link_flush = timed(api.flush)
        assert api.pending() == [] and len(fake.records(BASE, PEOPLE_ID)) == args.people
        print(f"{calls} update calls, {args.people} people, {len(company_ids)} companies")
        print(f"  write a number: {plain_write / calls * 1000:6.2f} ms a call, flush {plain_flush:5.2f} s")
        print(f"  write a link:   {link_write / calls * 1000:6.2f} ms a call, flush {link_flush:5.2f} s")
        print(f"  -> a link write costs {link_write / plain_write:.1f}x a number write; its flush {link_flush / plain_flush:.1f}x")
        api.close()


if __name__ == "__main__":
    main()
