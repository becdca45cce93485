"""Benchmark: what the fault defences cost, each against a baseline run in the same process.

* queued writes with their checksum (issue 14) vs the same writes with a constant in its place;
* a flush's checksum verification (every queued write of the base hashed before the claim) vs none;
* ``REGEX_MATCH({Full Name}, '(a+)+$')`` with RE2 vs Python's backtracking ``re``, on growing input
  (``re`` doubles its time with every character; RE2 stays flat).

    python benchmarks/bench_faults.py [--writes 2000]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import re2
from timing import best_of

from airtable_cached import Api
from airtable_cached.store import checksum
from airtable_cached.testing import LEADS_SCHEMA, seed_leads

BASE = "appBENCHbase00001"
TABLE = "Leads"




def queued_updates(n: int) -> tuple[float, float]:
    api = Api("unused-token", path=Path(tempfile.mkdtemp()) / "bench.sqlite3", mode="offline", max_age=10**9)
    schema = {"id": "tblBENCH000000001", "name": TABLE,
              "fields": [{**f, "id": f"fld{i:014d}"} for i, f in enumerate(LEADS_SCHEMA)]}
    records = [{"id": f"rec{i:014d}", "createdTime": "2024-01-01T00:00:00.000Z", "fields": f}
               for i, f in enumerate(seed_leads(n, seed=3))]
    api.engine.apply_pull(BASE, TABLE, records, started_at=time.time(), schema=schema)
    table = api.table(BASE, TABLE)

    def write_all() -> None:
        for i, r in enumerate(records):
            table.update(r["id"], {"Score": i % 100})

    real_seal = checksum.seal

    def without_checksums() -> None:
        checksum.seal = lambda row: "0" * 32  # the baseline: the same writes, no hashing
        try:
            write_all()
        finally:
            checksum.seal = real_seal

    # Interleaved rounds: the queue grows by n writes a round, for both alike.
    sealed = unsealed = float("inf")
    for i in range(4):  # alternating which goes first
        first, second = (without_checksums, write_all) if i % 2 else (write_all, without_checksums)
        a, b = best_of(first, 1), best_of(second, 1)
        took = {first: a, second: b}
        unsealed, sealed = min(unsealed, took[without_checksums]), min(sealed, took[write_all])
    conn = api.engine.store.conn
    row = dict(conn.execute("SELECT * FROM outbox LIMIT 1").fetchone())
    seal = best_of(lambda: [real_seal(row) for _ in range(10_000)]) / 10_000
    print(f"one checksum: {seal * 1e6:.1f} us, {seal / (sealed / n) * 100:.2f}% of a queued update ({sealed / n * 1000:.2f} ms)")
    verify = best_of(lambda: api.engine.store.outbox.damaged(BASE))
    print(f"{n} queued updates: with checksums {sealed * 1000:.0f} ms, without {unsealed * 1000:.0f} ms"
          f"  -> {sealed / unsealed:.3f}x ({(sealed / unsealed - 1) * 100:+.1f}%)")
    queued = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    print(f"verifying {queued} queued writes before a claim: {verify * 1000:.1f} ms"
          f" ({verify / queued * 1e6:.2f} us a write)")
    return sealed, unsealed


def regexes() -> None:
    options = re2.Options()
    options.log_errors = False
    pattern = "(a+)+$"
    fast = re2.compile(pattern, options)
    slow = re.compile(pattern)
    for n in (16, 18, 20, 22):
        text = "a" * n + "!"
        backtracking = best_of(lambda: slow.search(text), 1)  # noqa: B023 - called at once
        linear = best_of(lambda: fast.search(text))  # noqa: B023
        print(f"(a+)+$ on {n:2d} a's and a '!': re {backtracking * 1000:9.2f} ms, RE2 {linear * 1000:.4f} ms"
              f"  -> RE2 {backtracking / linear:,.0f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=2000)
    args = parser.parse_args()
    queued_updates(args.writes)
    regexes()


if __name__ == "__main__":
    main()
