"""Many hosts on one PostgreSQL cache: separate processes (each its own host as far as the cache
can tell: its own pool, pacer turns, locks) sharing one database and one fake Airtable.

* read-your-writes between hosts: a write committed by one is read by another at once;
* one pull per table across hosts: two processes finding a table stale send one pull;
* three hosts writing and flushing at once, against an Airtable answering 429 above 5 requests a
  second: every write lands exactly once, no 429, never more than 5 requests in a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from airtable_cached import Api
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads

BASE = "appLEADSbase00001"
TABLE = "Leads"

#: A host: waits for ``go`` (so that hosts start together), runs ``body`` with ``api`` and ``table``,
#: prints what ``body`` leaves in ``out`` as JSON.
HOST = """
import json, os, sys, time
from pathlib import Path
from airtable_cached import Api
go = Path({go!r})
while not go.exists():
    time.sleep(0.01)
api = Api({token!r}, endpoint_url={endpoint!r}, url={url!r}, flush={flush!r}, batch_delay=0.2, feed="off")
table = api.table({base!r}, {table!r})
out = {{}}
{body}
api.close()
print(json.dumps(out))
"""


def _start_host(tmp_path: Path, fake: FakeAirtable, url: str, body: str, *, flush: str = "manual") -> subprocess.Popen:
    code = HOST.format(go=str(tmp_path / "go"), token=fake.token, endpoint=fake.url, url=url, flush=flush,
                       base=BASE, table=TABLE, body=textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRTABLE_CACHED_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _run_hosts(tmp_path: Path, fake: FakeAirtable, url: str, bodies: list[str], **kw) -> list[dict]:
    hosts = [_start_host(tmp_path, fake, url, body, **kw) for body in bodies]
    time.sleep(1.0)  # every interpreter started and importing: then they go together
    (tmp_path / "go").touch()
    results = []
    for host in hosts:
        stdout, stderr = host.communicate(timeout=240)
        assert host.returncode == 0, stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


@pytest.fixture
def leads():
    with FakeAirtable(seed=1) as server:
        server.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(250, seed=1))
        yield server


def _api(fake: FakeAirtable, url: str, **kw) -> Api:
    return Api(fake.token, endpoint_url=fake.url, url=url, flush="manual", **kw)


def test_a_write_committed_on_one_host_is_read_on_another_at_once(leads, pg_url, tmp_path):
    here = _api(leads, pg_url)
    table = here.table(BASE, TABLE)
    record = table.all()[0]
    assert table.get(record["id"])["fields"].get("Company") != "from the other host"
    _run_hosts(tmp_path, leads, pg_url, [f"""
        table.update({record['id']!r}, {{"Company": "from the other host"}})
        out["queued"] = len(api.pending())
    """])
    before = leads.request_count()
    assert table.get(record["id"])["fields"]["Company"] == "from the other host"
    found = table.all(formula="{Company} = 'from the other host'")
    assert [r["id"] for r in found] == [record["id"]]
    assert leads.request_count() == before  # answered from the shared cache
    here.close()


def test_two_hosts_finding_a_table_stale_send_one_pull(pg_url, tmp_path):
    with FakeAirtable(seed=1, latency=0.2) as fake:
        fake.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(250, seed=1))
        counts = _run_hosts(tmp_path, fake, pg_url, ["out['records'] = len(table.all())"] * 2)
        pages = fake.request_count(method="GET", path_contains=f"/v0/{BASE}/{TABLE}")
    assert [c["records"] for c in counts] == [250, 250]
    assert pages == 3  # one pull of 250 records, 100 a page, for both hosts


WRITER = """
ids = {ids!r}
for n, rid in enumerate(ids):
    table.update(rid, {{"Company": "host {host} write " + str(n)}})
made = table.batch_create([{{"Full Name": "host {host} new " + str(n)}} for n in range(15)])
out["created"] = [r["id"] for r in made]
deadline = time.time() + 180
while time.time() < deadline:
    api.flush()
    if not [w for w in api.pending() if w.get("state") != "dead"]:
        break
    time.sleep(0.2)
out["left"] = api.pending()
"""


def test_three_hosts_writing_and_flushing_at_once_land_every_write_once_within_the_rate_limit(pg_url, tmp_path):
    with FakeAirtable(seed=1, rate_limit=5) as fake:
        fake.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(90, seed=1))
        setup = _api(fake, pg_url)
        ids = [r["id"] for r in setup.table(BASE, TABLE).all()]
        setup.close()
        fake.reset_log()
        bodies = [WRITER.format(ids=ids[h * 30:(h + 1) * 30], host=h) for h in range(3)]
        results = _run_hosts(tmp_path, fake, pg_url, bodies)
        records = {r["id"]: r["fields"] for r in fake.records(BASE, TABLE)}
        statuses = [r["status"] for r in fake.requests]
        peak = fake.peak_rate(BASE)
    assert [r["left"] for r in results] == [[], [], []]
    for h in range(3):
        for n, rid in enumerate(ids[h * 30:(h + 1) * 30]):
            assert records[rid]["Company"] == f"host {h} write {n}"
    names = [f.get("Full Name", "") for f in records.values()]
    for h in range(3):
        assert sorted(n for n in names if n.startswith(f"host {h} new ")) == sorted(f"host {h} new {n}" for n in range(15))
    assert len(records) == 90 + 45  # each create exactly once
    assert 429 not in statuses
    assert peak <= 5


def _terminate_other_connections(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
    return len(rows)


def test_a_connection_dropped_mid_flush_loses_no_write_and_sends_none_twice(pg_url):
    import threading

    with FakeAirtable(seed=1, latency=0.5) as fake:
        fake.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(20, seed=1))
        api = _api(fake, pg_url)
        table = api.table(BASE, TABLE)
        ids = [r["id"] for r in table.all()]
        for n, rid in enumerate(ids):
            table.update(rid, {"Company": f"after the drop {n}"})
        made = table.batch_create([{"Full Name": f"created across the drop {n}"} for n in range(5)])
        fake.reset_log()
        terminated: list[int] = []

        def drop_when_sending() -> None:
            deadline = time.time() + 30
            while time.time() < deadline and not fake.request_count(method="PATCH") + fake.request_count(method="POST"):
                time.sleep(0.01)
            terminated.append(_terminate_other_connections(pg_url))  # while Airtable is answering

        dropper = threading.Thread(target=drop_when_sending)
        dropper.start()
        try:
            api.flush()
        except Exception:  # noqa: BLE001 - the flush may fail with its connection: the queue keeps the writes
            pass
        dropper.join()
        deadline = time.time() + 60
        while [w for w in api.pending() if w["state"] != "dead"] and time.time() < deadline:
            api.flush()
            time.sleep(0.2)
        left = api.pending()
        records = {r["id"]: r["fields"] for r in fake.records(BASE, TABLE)}
        sent = [(r["method"], json.dumps(r["json"], sort_keys=True)) for r in fake.requests if r["method"] in ("PATCH", "POST")]
        api.close()
    assert terminated and terminated[0] >= 1
    assert left == []
    for n, rid in enumerate(ids):
        assert records[rid]["Company"] == f"after the drop {n}"
    created = sorted(f.get("Full Name", "") for f in records.values() if f.get("Full Name", "").startswith("created across"))
    assert created == sorted(f"created across the drop {n}" for n in range(5))  # each exactly once
    assert len(sent) == len(set(sent)), [(m, b[:90]) for m, b in sent]  # no request sent twice
    assert {r["id"] for r in made}.isdisjoint(records)  # provisional ids were replaced by Airtable's
