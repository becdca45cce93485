"""Benchmark: three hosts on one PostgreSQL cache, flushing at once (issue 13).

Three processes (each a host as far as the cache can tell: its own pool, pacer turns and locks)
share one PostgreSQL database (a throw-away server started here, ``airtable_cached/testing/postgres.py``)
and one fake Airtable that answers 429 above ``--limit`` requests a second per base, as Airtable
does. Each queues ``--updates`` updates of distinct records, then all three flush at once. Printed:

* the busiest second Airtable saw (goal: at most 5 requests) and the 429s (goal: none);
* the flush throughput, records a second from the first request to the last, against the best
  possible at 5 requests of 10 records a second, 50 records/s (goal: at least 90%);
* whether every update landed.

    python benchmarks/bench_hosts.py [--updates 500] [--hosts 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from airtable_cached import Api
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads
from airtable_cached.testing.postgres import running_server

BASE = "appBENCHbase00001"
TABLE = "Leads"

HOST = """
import json, time
from pathlib import Path
from airtable_cached import Api
api = Api({token!r}, endpoint_url={endpoint!r}, url={url!r}, flush="manual", feed="off")
table = api.table({base!r}, {table!r})
for n, rid in enumerate({ids!r}):
    table.update(rid, {{"Company": "host {host} update " + str(n)}})
Path({ready!r}).touch()
go = Path({go!r})
while not go.exists():
    time.sleep(0.005)
while [w for w in api.pending() if w["state"] != "dead"]:
    api.flush()
    time.sleep(0.05)
api.close()
print(json.dumps({{"done": time.time()}}))
"""


def _host(fake: FakeAirtable, url: str, ids: list[str], host: int, folder: Path) -> subprocess.Popen:
    code = HOST.format(token=fake.token, endpoint=fake.url, url=url, base=BASE, table=TABLE, ids=ids, host=host,
                       ready=str(folder / f"ready-{host}"), go=str(folder / "go"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRTABLE_CACHED_")}
    env["XDG_CACHE_HOME"] = str(folder / "xdg")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)


def run(updates: int, hosts: int, limit: float) -> dict:
    with running_server() as server, FakeAirtable(seed=1, rate_limit=limit) as fake, \
            tempfile.TemporaryDirectory() as tmp:
        if server is None:
            raise SystemExit("no PostgreSQL server binaries: apt-get install postgresql (tests/install_postgres.sh)")
        url = server.create_database()
        folder = Path(tmp)
        fake.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(updates * hosts, seed=1))
        setup = Api(fake.token, endpoint_url=fake.url, url=url, flush="manual", feed="off")
        ids = [r["id"] for r in setup.table(BASE, TABLE).all()]
        setup.close()
        procs = [_host(fake, url, ids[h * updates:(h + 1) * updates], h, folder) for h in range(hosts)]
        while not all((folder / f"ready-{h}").exists() for h in range(hosts)):
            time.sleep(0.05)
        fake.reset_log()
        (folder / "go").touch()
        for proc in procs:
            proc.communicate(timeout=3600)
        pushes = [r for r in fake.requests if r["method"] == "PATCH"]
        records = {r["id"]: r["fields"] for r in fake.records(BASE, TABLE)}
        landed = all(records[rid]["Company"] == f"host {h} update {n}"
                     for h in range(hosts) for n, rid in enumerate(ids[h * updates:(h + 1) * updates]))
        span = max(r["at"] for r in pushes) - min(r["at"] for r in pushes)
        sent = sum(len(r["json"]["records"]) for r in pushes)
        # n requests at 5/s take (n - 1) / 5 s from the first to the last: the rate over that span.
        throughput = sent * (len(pushes) - 1) / len(pushes) / span if span else float("inf")
        return {"hosts": hosts, "updates": updates * hosts, "requests": len(pushes), "peak_rate": fake.peak_rate(BASE),
                "429s": sum(1 for r in fake.requests if r["status"] == 429), "seconds": round(span, 2),
                "records_per_second": round(throughput, 1), "of_best": round(throughput / (limit * 10), 3),
                "all_landed": landed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=500, help="updates queued by each host")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--limit", type=float, default=5.0, help="requests a second Airtable allows per base")
    args = parser.parse_args()
    result = run(args.updates, args.hosts, args.limit)
    print(json.dumps(result, indent=2))
    print(f"peak {result['peak_rate']} requests/s (goal <= {args.limit:g}), {result['429s']} x 429 (goal 0); "
          f"flush {result['records_per_second']} records/s = {result['of_best']:.0%} of {args.limit * 10:g}/s "
          f"(goal >= 90%); every update landed: {result['all_landed']}")


if __name__ == "__main__":
    main()
