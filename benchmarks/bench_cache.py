"""Benchmark: airtable_cached against plain pyairtable, on the fake Airtable with Airtable's limits.

Prints ratios measured in this one process (the machines are noisy; compare ratios, not seconds):
  1. repeated all() of a 1,000-record table: plain pyairtable vs airtable_cached;
  2. get() by id: plain vs cached;
  3. flush throughput of 500 queued updates as a fraction of Airtable's ceiling
     (5 requests/s x 10 records = 50 records/s per base);
  4. the cost of keeping read statistics, as a share of a cached read.

The fake answers after 100 ms and enforces 5 requests/s per base. Plain pyairtable is paced to 5
requests/s (as real agents must be; its own retry gives up long before Airtable's 30 s penalty).

    python benchmarks/bench_cache.py [--records 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyairtable

from airtable_cached import Api
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads

BASE = "appBENCHbase00001"
TABLE = "Leads"


class PacedApi(pyairtable.Api):
    """Plain pyairtable, paced under 5 requests/s the way a careful agent paces itself."""

    _last = 0.0

    def request(self, *args, **kwargs):
        wait = self._last + 0.21 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last = time.monotonic()
        return super().request(*args, **kwargs)


def timed(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=500)
    args = parser.parse_args()

    fake = FakeAirtable(latency=0.1, rate_limit=5, penalty_seconds=30).start()
    fake.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(args.records))
    path = Path(tempfile.mkdtemp()) / "bench.sqlite3"
    plain = PacedApi(fake.token, endpoint_url=fake.url).table(BASE, TABLE)
    api = Api(fake.token, endpoint_url=fake.url, path=path, flush="manual", max_age=3600)
    cached = api.table(BASE, TABLE)

    started = time.perf_counter()
    cached.all()
    first_pull = time.perf_counter() - started

    time.sleep(1.1)  # let the base's one-second window empty before the plain client starts
    plain_all = timed(plain.all, args.repeats)
    cached_all = timed(cached.all, args.repeats * 10)
    print(f"all() of {args.records} records: plain {plain_all * 1000:8.1f} ms, cached {cached_all * 1000:8.2f} ms"
          f"  -> cached is {plain_all / cached_all:,.0f}x faster (first pull {first_pull:.2f} s, once)")

    ids = [r["id"] for r in cached.all()][:10]
    plain_get = timed(lambda: [plain.get(i) for i in ids], 1) / len(ids)
    cached_get = timed(lambda: [cached.get(i) for i in ids], 50) / len(ids)
    print(f"get() by id:          plain {plain_get * 1000:8.1f} ms, cached {cached_get * 1000:8.3f} ms"
          f"  -> cached is {plain_get / cached_get:,.0f}x faster")

    time.sleep(1.1)
    records = cached.all()[: args.updates]
    for i, record in enumerate(records):
        cached.update(record["id"], {"Score": i})
    fake.reset_log()
    started = time.perf_counter()
    result = api.flush()
    elapsed = time.perf_counter() - started
    rate = len(result.sent) / elapsed
    throttled = sum(1 for r in fake.requests if r["status"] == 429)
    print(f"flush of {len(result.sent)} updates: {result.requests} requests in {elapsed:.1f} s = {rate:.1f} records/s"
          f"  -> {rate / 50:.0%} of Airtable's ceiling of 50 records/s per base ({throttled} answered 429)")

    # Statistics overhead: the same cached read with and without counting.
    # Alternate the two variants and keep each one's best round, so drift in the machine cancels out.
    engine = api.engine
    original = engine.stats.count
    with_stats, without_stats = [], []
    for _ in range(7):
        engine.stats.count = original
        with_stats.append(timed(lambda: [cached.get(i) for i in ids], 100))
        engine.stats.count = lambda *a, **k: None
        without_stats.append(timed(lambda: [cached.get(i) for i in ids], 100))
    engine.stats.count = original
    with_stats, without_stats = min(with_stats), min(without_stats)
    print(f"statistics overhead on a cached get(): {(with_stats - without_stats) / without_stats:+.1%} (goal: under 5%)")
    api.close()
    fake.stop()


if __name__ == "__main__":
    main()
