"""Crash and restart: a flusher killed mid-batch is replaced at once (its flush lock dies with it),
a live flusher is never waited for, a hung one is taken over after its lease. The flushers are
real subprocesses (tests/agents/flusher.py) talking to the project's fake Airtable over loopback;
the results are compared with the fake's state, not with recorded traffic."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from airtable_cached import Api
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads
from tests.conftest import BASE, TABLE
from tests.test_durability import agent_env, read_line, wait_until

FLUSHER = Path(__file__).resolve().parent / "agents" / "flusher.py"
ROOT = Path(__file__).resolve().parent.parent

CREATES = 30
UPDATED = 240


@pytest.fixture
def slow_fake():
    with FakeAirtable(seed=1, latency=0.03) as server:
        server.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(250, seed=1))
        yield server


def start_flusher(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(FLUSHER)], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def writes_sent(fake: FakeAirtable) -> int:
    return fake.request_count(method="POST") + fake.request_count(method="PATCH")


def queue_writes(fake: FakeAirtable, db: Path) -> list[dict]:
    """30 creates and 240 updates queued in the cache file (about 27 requests to send)."""
    with Api(fake.token, endpoint_url=fake.url, path=db, flush="manual", rate_limit=50) as api:
        table = api.table(BASE, TABLE)
        table.batch_create([{"Full Name": f"Restart Create {i:02d}", "Score": i} for i in range(CREATES)])
        records = table.all()[:UPDATED]
        table.batch_update([{"id": r["id"], "fields": {"Score": 5000 + i}} for i, r in enumerate(records)])
        assert len(api.pending()) == CREATES + UPDATED
        return records


def assert_every_write_landed_once(fake: FakeAirtable, updated: list[dict]) -> None:
    remote = fake.records(BASE, TABLE)
    by_id = {r["id"]: r["fields"] for r in remote}
    for i, record in enumerate(updated):
        assert by_id[record["id"]]["Score"] == 5000 + i, record["id"]
    names = Counter(r["fields"].get("Full Name") for r in remote if r["fields"].get("Full Name", "").startswith("Restart"))
    assert names == Counter({f"Restart Create {i:02d}": 1 for i in range(CREATES)})
    assert len(remote) == 250 + CREATES


def test_flusher_killed_mid_batch_ten_times_drains_within_seconds_of_the_restart(slow_fake, tmp_path):
    """The default claim_timeout (300 s) is in force: the restarted flusher must not wait it out."""
    fake = slow_fake
    db = tmp_path / "cache.sqlite3"
    updated = queue_writes(fake, db)
    env = agent_env(fake, db)
    for _kill in range(10):
        before = writes_sent(fake)
        flusher = start_flusher(env)
        try:
            read_line(flusher, "STARTED")
            # Mid-batch: the flusher has sent a write request and is sending the next.
            wait_until(lambda before=before: writes_sent(fake) > before, timeout=10)
            flusher.send_signal(signal.SIGKILL)
            flusher.wait(10)
        finally:
            if flusher.poll() is None:
                flusher.kill()
    with Api(fake.token, endpoint_url=fake.url, path=db, flush="manual") as api:
        assert api.pending(), "ten kills must land before the queue is drained"
        assert any(op["state"] == "inflight" for op in api.pending()), "a killed flusher leaves claims behind"

    started = time.monotonic()
    flusher = start_flusher(env)
    try:
        read_line(flusher, "STARTED")
        done = json.loads(read_line(flusher, "DONE", timeout=30).split(" ", 1)[1])
        drained_in = time.monotonic() - started
        assert flusher.wait(10) == 0
    finally:
        if flusher.poll() is None:
            flusher.kill()
    assert done == {"pending": 0, "failed": [], "busy": []}
    print("drained in", round(drained_in, 2), "s")
    assert drained_in < 10, drained_in
    assert_every_write_landed_once(fake, updated)


def test_a_live_flusher_is_left_its_base_and_a_hung_one_is_taken_over(slow_fake, tmp_path):
    """A flusher stopped (SIGSTOP) while it waits for Airtable's answer is alive and holds the
    base's lock: another flusher does not wait for it; once its lease (claim_timeout) has run out,
    the other one takes over."""
    fake = slow_fake
    db = tmp_path / "cache.sqlite3"
    updated = queue_writes(fake, db)
    env = agent_env(fake, db, claim_timeout="1")
    fake.latency = 1.0
    arrived = threading.Event()
    answer = fake.handle_http

    def spy(method, raw_path, headers, body):
        if method in ("POST", "PATCH"):
            arrived.set()
        return answer(method, raw_path, headers, body)

    fake.handle_http = spy
    hung = start_flusher(env)
    try:
        read_line(hung, "STARTED")
        # Its first write request has reached Airtable: it waits for the answer (not inside SQLite).
        assert arrived.wait(30)
        hung.send_signal(signal.SIGSTOP)
        fake.latency = 0.03
        with Api(fake.token, endpoint_url=fake.url, path=db, flush="manual", claim_timeout=1, rate_limit=50) as api:
            started = time.monotonic()
            result = api.flush()
            assert result.busy == [BASE] and result.sent == []
            assert time.monotonic() - started < 1.0, "a live holder is never waited for"
            time.sleep(1.2)  # the stopped flusher's lease runs out
            result = api.flush()
            assert result.busy == [] and result.pending == 0 and result.failed == []
        hung.send_signal(signal.SIGCONT)
        # It finds its base taken over and stops without sending what it had claimed again.
        hung.wait(30)
    finally:
        if hung.poll() is None:
            hung.send_signal(signal.SIGCONT)
            hung.kill()
    assert_every_write_landed_once(fake, updated)


def test_an_agent_restarted_after_a_kill_sends_what_was_left_without_a_new_write(slow_fake, tmp_path):
    """Its background flusher starts with what the killed run left, not after an idle period."""
    fake = slow_fake
    db = tmp_path / "cache.sqlite3"
    updated = queue_writes(fake, db)
    flusher = start_flusher(agent_env(fake, db))
    try:
        read_line(flusher, "STARTED")
        wait_until(lambda: writes_sent(fake) > 0, timeout=10)
        flusher.send_signal(signal.SIGKILL)
        flusher.wait(10)
    finally:
        if flusher.poll() is None:
            flusher.kill()
    with Api(fake.token, endpoint_url=fake.url, path=db, flush="manual") as look:
        assert look.pending(), "the kill left writes behind"
    started = time.monotonic()
    with Api(fake.token, endpoint_url=fake.url, path=db, flush="auto", rate_limit=50) as api:
        wait_until(lambda: api.pending() == [], timeout=10)
        assert time.monotonic() - started < 10
    assert_every_write_landed_once(fake, updated)


def test_a_flusher_killed_between_the_headers_and_the_body_of_a_create_makes_nothing_twice(slow_fake, tmp_path):
    """urllib3 writes a request's headers and its body separately: a flusher killed in between
    leaves a POST cut short (Content-Length promised, no body). Airtable never carries out such a
    request (its front end waits for the whole body); the restarted flusher looks for the creates
    in doubt, finds nothing, and sends them once. (The fake once answered the cut request as a
    body-less create, a blank record: one record too many after a kill under load.)"""
    fake = slow_fake
    db = tmp_path / "cache.sqlite3"
    updated = queue_writes(fake, db)
    flusher = start_flusher({**agent_env(fake, db), "FLUSHER_DIE_AFTER_HEADERS_OF_POST": "2"})
    try:
        read_line(flusher, "STARTED")
        assert flusher.wait(30) == -signal.SIGKILL
    finally:
        if flusher.poll() is None:
            flusher.kill()
    assert fake.request_count(method="POST") == 1, "only the first create request arrived whole"
    assert len(fake.records(BASE, TABLE)) == 250 + 10
    with Api(fake.token, endpoint_url=fake.url, path=db, flush="manual", rate_limit=50) as api:
        result = api.flush()
        assert result.pending == 0 and result.failed == [], result.as_dict()
    assert_every_write_landed_once(fake, updated)
