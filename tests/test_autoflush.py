"""flush="auto": a background thread sends writes shortly after they are made, and the
interpreter's exit waits (bounded) for the queue."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from airtable_cached import Api
from tests.conftest import BASE, TABLE


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_background_thread_flushes_soon_after_a_write(fake, db_path):
    api = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="auto", batch_delay=0.2)
    table = api.table(BASE, TABLE)
    table.create({"Full Name": "Sent By The Background Thread"})
    assert wait_for(lambda: any(r["fields"].get("Full Name") == "Sent By The Background Thread" for r in fake.records(BASE, TABLE)))
    assert wait_for(lambda: api.pending() == [])
    api.close()


def test_exit_waits_for_the_queue(fake, db_path):
    script = textwrap.dedent(
        f"""
        from airtable_cached import Api
        api = Api({fake.token!r}, endpoint_url={fake.url!r}, path={str(db_path)!r}, flush="auto")
        table = api.table({BASE!r}, {TABLE!r})
        for i in range(12):
            table.create({{"Full Name": f"Written At Exit {{i}}"}})
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRTABLE_CACHED_")}
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, env=env)
    names = [r["fields"].get("Full Name", "") for r in fake.records(BASE, TABLE)]
    assert sorted(n for n in names if n.startswith("Written At Exit")) == sorted(f"Written At Exit {i}" for i in range(12))
    reopened = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual")
    assert reopened.pending() == []


def test_without_schema_access_reads_work_and_refused_writes_are_dead_lettered(fake, db_path, clock):
    fake.schema_access = False
    api = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual", clock=clock, sleep=clock.sleep)
    table = api.table(BASE, TABLE)
    assert len(table.all()) == 250
    record = table.all()[0]
    table.update(record["id"], {"Nickname": "no such field"})  # no schema: only Airtable can refuse it
    table.update(table.all()[1]["id"], {"Status": "Lost"})
    result = api.flush()
    assert [f["status"] for f in result.failed] == [422]
    dead = [op for op in api.pending() if op["state"] == "dead"]
    assert len(dead) == 1 and dead[0]["last_error"]["status"] == 422
    assert "Nickname" not in table.get(record["id"])["fields"]
    assert fake.records(BASE, TABLE)[1]["fields"]["Status"] == "Lost"
