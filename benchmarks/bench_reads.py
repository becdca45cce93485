"""Benchmark: cached reads against their floors, and memory over many listings (issue 11).

Every figure is a ratio to a baseline timed in this same process (the machines are noisy):
  1. ``all()`` of N cached records against ``json.loads`` of the same records (goal: within 1.5x);
  2. ``get()`` against ``copy.deepcopy`` of one record (goal: within 3x);
  3. ``first(formula=...)`` and ``all(max_records=10)`` against ``all(formula=...)`` and ``all()``,
     with the decoded model cold (a new process, or another process just wrote) and warm;
  4. memory: the process's resident size after the first ``all()`` and after ``--calls`` more
     (goal: within 2x);
  5. with ``--profile``, where a cached ``all()`` spends its time (cProfile, top functions).

The fake Airtable answers at once here: only the pull before the timings talks to it.

    python benchmarks/bench_reads.py [--records 10000] [--calls 1000] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import json
import pstats
import resource
import tempfile
import time
from pathlib import Path

from timing import best_of as best

from airtable_cached import Api
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads

BASE = "appBENCHbase00001"
TABLE = "Leads"




def rss_mb() -> float:
    """The resident set size now (Linux), else the peak."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cold(api: Api) -> None:
    """Forget the decoded model, as a new process would start (no-op on versions without it)."""
    model = getattr(api.engine, "model", None)
    if model is not None:
        model.clear()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    fake = FakeAirtable().start()
    fake.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(args.records, seed=3))
    api = Api(fake.token, endpoint_url=fake.url, path=Path(tempfile.mkdtemp()) / "bench.sqlite3",
              flush="manual", max_age=1e9)
    table = api.table(BASE, TABLE)
    records = table.all()
    raw = [json.dumps(r) for r in records]
    n = len(records)

    t_all = best(table.all)
    t_loads = best(lambda: [json.loads(x) for x in raw])
    print(f"all() of {n} records: {t_all * 1000:.1f} ms; json.loads of them: {t_loads * 1000:.1f} ms"
          f" -> {t_all / t_loads:.2f}x json.loads (goal: at most 1.5x)")

    some = records[n // 2]
    t_get = best(lambda: table.get(some["id"]), number=500)
    t_copy = best(lambda: copy.deepcopy(some), number=500)
    print(f"get(): {t_get * 1e6:.1f} us; copy.deepcopy of a record: {t_copy * 1e6:.1f} us"
          f" -> {t_get / t_copy:.2f}x deepcopy (goal: at most 3x)")

    formula = "{Score} >= 3"  # broad: no index answers it
    for state in ("cold", "warm"):
        prepare = (lambda: cold(api)) if state == "cold" else (lambda: None)

        def timed(fn, prepare=prepare):
            def run():
                prepare()
                fn()
            return best(run)

        t_first = timed(lambda: table.first(formula=formula))
        t_all_f = timed(lambda: table.all(formula=formula))
        t_ten = timed(lambda: table.all(max_records=10))
        t_every = timed(table.all)
        print(f"{state} model: first(formula) {t_first * 1000:.2f} ms vs all(formula) {t_all_f * 1000:.2f} ms"
              f" ({t_all_f / t_first:.1f}x); all(max_records=10) {t_ten * 1000:.2f} ms vs all() {t_every * 1000:.1f} ms"
              f" ({t_every / t_ten:.0f}x)")

    gc.collect()
    table.all()
    after_first = rss_mb()
    started = time.perf_counter()
    for _ in range(args.calls):
        table.all()
    elapsed = time.perf_counter() - started
    gc.collect()
    after_many = rss_mb()
    print(f"memory: {after_first:.0f} MB after the first all(), {after_many:.0f} MB after {args.calls} more"
          f" ({elapsed / args.calls * 1000:.1f} ms each) -> {after_many / after_first:.2f}x (goal: at most 2x)")

    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        table.all()
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(10)
    api.close()
    fake.stop()


if __name__ == "__main__":
    main()
