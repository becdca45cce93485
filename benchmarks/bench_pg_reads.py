"""Benchmark: reads from a PostgreSQL cache against a SQLite cache and against plain pyairtable (issue 13).

One table of ``--records`` records is pulled into both stores (a throw-away PostgreSQL server started
here, ``airtable_cached/testing/postgres.py``, and a SQLite file). Timed in this one process, so the
ratios compare like with like on a noisy machine:

* ``get()`` of a record by id, and a selective formula read (``{Email} = '...'``: one record, found
  through the field's index), on PostgreSQL vs SQLite (goal: PostgreSQL within 5x);
* the same reads by plain pyairtable against the fake Airtable at Airtable's pace (0.25 s an answer,
  5 requests a second), vs PostgreSQL (goal: PostgreSQL over 50x faster).

Between two reads nothing changes, as between an agent's reads of a quiet table; each PostgreSQL
read still asks the server whether another host changed anything (``change_marker``).

    python benchmarks/bench_pg_reads.py [--records 2000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pyairtable
from timing import best_of

from airtable_cached import Api
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads
from airtable_cached.testing.postgres import running_server

BASE = "appBENCHbase00001"
TABLE = "Leads"


def _reads(table, record: dict, number: int) -> dict[str, float]:
    email = record["fields"]["Email"].replace("'", "\\'")
    formula = f"{{Email}} = '{email}'"
    assert [r["id"] for r in table.all(formula=formula)] == [record["id"]]
    return {"get": best_of(lambda: table.get(record["id"]), number=number),
            "formula": best_of(lambda: table.all(formula=formula), number=number)}


def run(records: int) -> dict[str, dict[str, float]]:
    with running_server() as server, FakeAirtable(seed=1) as fast, FakeAirtable(seed=1, latency=0.25, rate_limit=5) as paced, \
            tempfile.TemporaryDirectory() as tmp:
        if server is None:
            raise SystemExit("no PostgreSQL server binaries: apt-get install postgresql (tests/install_postgres.sh)")
        for fake in (fast, paced):
            fake.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(records, seed=1))
        stores = {"postgresql": {"url": server.create_database()}, "sqlite": {"path": Path(tmp) / "cache.sqlite3"}}
        times = {}
        for name, where in stores.items():
            api = Api(fast.token, endpoint_url=fast.url, flush="manual", max_age=3600, feed="off",
                      index_fields=("Email",), **where)
            table = api.table(BASE, TABLE)
            record = next(r for r in table.all()[records // 2:] if r["fields"].get("Email"))
            times[name] = _reads(table, record, number=200)
            api.close()
        plain = pyairtable.Api(paced.token, endpoint_url=paced.url).table(BASE, TABLE)
        record = plain.all(formula="NOT({Email} = '')", max_records=1)[0]
        times["pyairtable"] = _reads(plain, record, number=1)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    times = run(args.records)
    for read in ("get", "formula"):
        pg, lite, plain = times["postgresql"][read], times["sqlite"][read], times["pyairtable"][read]
        print(f"{read:8} PostgreSQL {pg * 1000:7.3f} ms, SQLite {lite * 1000:7.3f} ms ({pg / lite:4.1f}x, goal <= 5x);"
              f" plain pyairtable at Airtable's pace {plain * 1000:7.1f} ms ({plain / pg:,.0f}x slower, goal > 50x)")


if __name__ == "__main__":
    main()
