"""Benchmark: the filters real lead agents use, answered by the cached Table over 10,000 records.

For each filter: the time of ``table.all(formula=...)`` through airtable_cached (served from the
SQLite cache: compiled to SQL where exact, the rest evaluated in Python) against a hand-written
Python filter over the same records already loaded as dicts, printed as a ratio (>1: the cache is
faster). Also shown: the formula evaluator alone over the loaded dicts (all three must agree), and
the floor: the time pyairtable's ``Table.all()`` spends validating the returned records, which any
answer to ``all()`` pays.

    python benchmarks/bench_formula.py [--records 10000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pyairtable.api.types import RecordDict, assert_typed_dicts

from airtable_cached import Api
from airtable_cached.formula import matches, parse
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads

BASE = "appBENCHbase00001"
TABLE = "Leads"


def best_of(fn, repeats: int = 5) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args()

    fake = FakeAirtable().start()
    fake.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(args.records, seed=3))
    api = Api(fake.token, endpoint_url=fake.url, path=Path(tempfile.mkdtemp()) / "bench.sqlite3",
              flush="manual", max_age=3600)
    table = api.table(BASE, TABLE)
    records = table.all()  # the pull; and the dicts the hand-written filter gets for free
    some = records[:: max(1, len(records) // 200)][:200]
    ids = {r["id"] for r in some}
    url = records[777]["fields"].get("LinkedIn URL", "")

    def g(r, k):
        return r["fields"].get(k, "")

    cases = [
        ("AND({Website} != '', {Company Description} = '')",
         lambda r: g(r, "Website") != "" and g(r, "Company Description") == ""),
        ("NOT({Email} = '')", lambda r: g(r, "Email") != ""),
        ("AND(NOT({Full Name} = ''), OR({Company} = '', {Website} = ''))",
         lambda r: g(r, "Full Name") != "" and (g(r, "Company") == "" or g(r, "Website") == "")),
        (f"{{LinkedIn URL}} = '{url}'", lambda r: g(r, "LinkedIn URL") == url),
        ("OR(" + ", ".join(f"RECORD_ID()='{i}'" for i in sorted(ids)) + ")", lambda r: r["id"] in ids),
    ]
    fake.reset_log()
    print(f"{'filter':64s} {'matches':>7s} {'cached all()':>13s} {'hand-written':>13s} {'ratio':>7s}"
          f" {'evaluator':>10s} {'pyairtable floor':>17s}")
    ratios = []
    for formula, hand in cases:
        t_cached, got = best_of(lambda: table.all(formula=formula))
        t_hand, expected = best_of(lambda: [r for r in records if hand(r)])
        node = parse(formula)
        t_eval, evaluated = best_of(lambda: [r for r in records if matches(node, r)])
        assert [r["id"] for r in got] == [r["id"] for r in expected] == [r["id"] for r in evaluated], formula
        # What Table.all() itself spends validating the records it returns (pyairtable's pydantic
        # check), whatever answers the request: no cache can return these records faster.
        t_floor, _ = best_of(lambda: assert_typed_dicts(RecordDict, [dict(r) for r in expected]))
        ratios.append(t_hand / t_cached)
        print(f"{formula[:62]:64s} {len(got):7d} {t_cached * 1000:10.2f} ms {t_hand * 1000:10.2f} ms"
              f" {t_hand / t_cached:6.2f}x {t_eval * 1000:7.2f} ms {t_floor * 1000:14.2f} ms")
    assert fake.request_count() == 0, "every filter must be answered from the cache"
    print(f"geometric mean ratio (hand-written time / cached time): {statistics.geometric_mean(ratios):.2f}x")
    api.close()
    fake.stop()


if __name__ == "__main__":
    main()
