"""Airtable frozen or refusing connections: stale reads are served within the network budget,
writes return at once, and the queue drains within seconds of Airtable answering again.

Compared with: the project's fake Airtable (``airtable_cached/testing/``) behind
``tests/fault_proxy.py`` (real HTTP on 127.0.0.1). Real time is used where the network timeout is
what is tested; the waits are short and bounded.
"""

from __future__ import annotations

import logging
import time

import pytest

from airtable_cached import Api
from tests.conftest import BASE, TABLE
from tests.fault_proxy import FaultProxy

TIMEOUT = 1.0  # network_timeout of these tests (seconds)


@pytest.fixture
def proxy(fake):
    p = FaultProxy(fake.url)
    yield p
    p.stop()


@pytest.fixture
def live(proxy, db_path):
    """An agent's Api in real time: background flush, every read of a table older than 0 s pulls."""
    api = Api("patFAKE.token", endpoint_url=proxy.url, path=db_path, max_age=0, network_timeout=TIMEOUT,
              exit_timeout=1)
    yield api
    api.close()


def _timed(call):
    started = time.monotonic()
    value = call()
    return value, time.monotonic() - started


def _wait_for(predicate, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {limit} s")


def _stale_count(api) -> int:
    api.engine.stats.write()
    row = api.engine.store.conn.execute("SELECT SUM(count) FROM stats WHERE kind = 'read.stale'").fetchone()
    return row[0] or 0


@pytest.mark.parametrize("fault", ["frozen", "refused"])
def test_stale_reads_are_served_from_the_cache_within_the_budget(fake, proxy, live, caplog, fault):
    table = live.table(BASE, TABLE)
    cached = table.all()
    getattr(proxy, "freeze" if fault == "frozen" else "refuse")()
    caplog.set_level(logging.WARNING, logger="airtable_cached")
    records, elapsed = _timed(table.all)
    assert records == cached
    assert elapsed < TIMEOUT + 2  # one network timeout at most (it was 5 tries of 60 s)
    again, elapsed = _timed(lambda: table.get(cached[0]["id"]))
    assert again == cached[0] and elapsed < 0.5  # right after a failure, no new wait
    assert "serving table 'Leads'" in caplog.text
    assert _stale_count(live) == 2


def test_a_table_never_pulled_still_raises_when_airtable_cannot_be_reached(proxy, live):
    proxy.refuse()
    with pytest.raises(Exception) as error:  # noqa: PT011 - requests' ConnectionError, as pyairtable raises
        live.table(BASE, TABLE).all()
    assert "ConnectionError" in type(error.value).__name__ or "Connection" in str(error.value)


@pytest.mark.parametrize("fault", ["frozen", "refused"])
def test_writes_return_at_once_and_the_queue_drains_within_seconds_of_airtable_answering(fake, proxy, live, fault):
    table = live.table(BASE, TABLE)
    first = table.all()[0]
    live.engine.authorized.clear()  # as in a new process: this token has not been checked yet
    getattr(proxy, "freeze" if fault == "frozen" else "refuse")()
    _, elapsed = _timed(lambda: table.update(first["id"], {"Score": 77}))
    created, elapsed2 = _timed(lambda: table.create({"Full Name": "During The Outage"}))
    assert elapsed < 0.5 and elapsed2 < 0.5  # neither the access check nor the flush is waited for
    time.sleep(TIMEOUT * 2.5)  # the background flusher meets the outage at least once
    assert fake.records(BASE, TABLE)[0]["fields"]["Score"] != 77
    if fault == "frozen":
        proxy.thaw()
    else:
        proxy.start()
    drained = _wait_for(lambda: not live.pending(), limit=TIMEOUT + 10)
    assert drained < TIMEOUT + 5  # seconds, not minutes (it was 174 s)
    by_id = {r["id"]: r for r in fake.records(BASE, TABLE)}
    assert by_id[first["id"]]["fields"]["Score"] == 77
    assert [r for r in by_id.values() if r["fields"].get("Full Name") == "During The Outage"]
    assert table.get(created["id"])["fields"]["Full Name"] == "During The Outage"


def test_plain_requests_agent_is_served_stale_and_writes_without_waiting(fake, proxy, db_path):
    """The plain-``requests`` front-end: the token check and the pull are each given up after one
    network timeout, and not tried again for every request."""
    import requests

    from airtable_cached import http as cached_http

    filler = Api(fake.token, endpoint_url=proxy.url, path=db_path, flush="manual")
    cached = filler.table(BASE, TABLE).all()
    filler.close()
    cached_http.install(path=str(db_path), flush="manual", endpoint_url=proxy.url, max_age=0,
                        network_timeout=TIMEOUT)
    try:
        proxy.freeze()
        url = f"{proxy.url}/v0/{BASE}/{TABLE}"
        auth = {"Authorization": f"Bearer {fake.token}"}
        first, elapsed = _timed(lambda: requests.get(url, headers=auth, timeout=60))
        assert first.status_code == 200 and first.json()["records"] == cached[:100]
        assert elapsed < 2 * TIMEOUT + 2  # the token check, then the pull: one timeout each at most
        patched, elapsed = _timed(lambda: requests.patch(f"{url}/{cached[0]['id']}", headers=auth,
                                                         json={"fields": {"Score": 5}}, timeout=60))
        assert patched.status_code == 200 and patched.json()["fields"]["Score"] == 5
        assert elapsed < 0.5
    finally:
        cached_http.uninstall()
        proxy.thaw()


@pytest.mark.parametrize("fault", ["frozen", "refused"])
def test_a_stale_view_is_served_as_last_pulled_when_airtable_cannot_be_reached(fake, proxy, live, fault):
    fake.add_view(BASE, TABLE, "Lost leads", formula="{Status} = 'Lost'", sort=[("Score", "desc")])
    table = live.table(BASE, TABLE)
    in_view = table.all(view="Lost leads")
    getattr(proxy, "freeze" if fault == "frozen" else "refuse")()
    again, elapsed = _timed(lambda: table.all(view="Lost leads"))
    assert again == in_view and elapsed < TIMEOUT + 2
    assert _stale_count(live) == 2  # the table (max age 0 here), then its view
