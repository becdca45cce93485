"""Durability of the write queue across processes: SIGKILL mid-flush and before any flush, and two
processes writing to one cache file at once. The agents are subprocesses (tests/agents/flush_agent.py)
talking to a fake Airtable over loopback HTTP; settings reach them through the environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from airtable_cached import Api
from airtable_cached.rules.records import is_provisional
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads
from tests.conftest import BASE, TABLE, FakeClock

AGENT = Path(__file__).resolve().parent / "agents" / "flush_agent.py"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def slow_fake():
    with FakeAirtable(seed=1, latency=0.05) as server:
        server.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(250, seed=1))
        yield server


def agent_env(fake: FakeAirtable, db: Path, **settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRTABLE_CACHED_")}
    env.update({
        "AIRTABLE_CACHED_ENDPOINT_URL": fake.url,
        "AIRTABLE_CACHED_PATH": str(db),
        "AIRTABLE_CACHED_FLUSH": "manual",
        "AIRTABLE_CACHED_RATE_LIMIT": "50",
        "AIRTABLE_CACHED_FEED": "off",  # these tests count POSTs of records, not the feed's webhook
        "FAKE_AIRTABLE_TOKEN": fake.token,
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    env.update({"AIRTABLE_CACHED_" + k.upper(): v for k, v in settings.items()})
    return env


def start_agent(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(AGENT), *args], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def read_line(proc: subprocess.Popen, expected: str, timeout: float = 30.0) -> str:
    """The agent's next line, which must start with ``expected``."""
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
        proc.kill()
        pytest.fail(f"agent said nothing for {timeout}s; stderr: {proc.stderr.read()}")
    line = proc.stdout.readline()
    if not line.startswith(expected):
        proc.kill()
        pytest.fail(f"agent said {line!r}, expected {expected}; stderr: {proc.stderr.read()}")
    return line


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.005)


def resume(fake: FakeAirtable, db: Path) -> Api:
    """A new process's Api on the same cache file. Its clock is far past every claim of the killed
    process, so those claims have expired."""
    clock = FakeClock(start=time.time() + 3600)
    return Api(fake.token, endpoint_url=fake.url, path=db, flush="manual", clock=clock, sleep=clock.sleep)


def expected_scores(seeded: list[dict]) -> dict[str, int]:
    scores = {r["id"]: 1000 + i for i, r in enumerate(seeded[:200])}
    scores.update({r["id"]: 2000 + i for i, r in enumerate(seeded[:50])})
    return scores


def assert_every_write_landed_once(fake: FakeAirtable, seeded: list[dict]) -> None:
    remote = fake.records(BASE, TABLE)
    by_id = {r["id"]: r["fields"] for r in remote}
    for rid, score in expected_scores(seeded).items():
        assert by_id[rid]["Score"] == score, rid
    for i, r in enumerate(seeded[:50]):
        assert by_id[r["id"]]["Company"] == f"Second {i}"
    names = Counter(r["fields"].get("Full Name") for r in remote[250:])
    assert names == Counter({f"Kill Create {i:02d}": 1 for i in range(20)}), (
        remote[250:], [(r["method"], r["status"], r["query"], r["json"]) for r in fake.requests if r["method"] != "GET"]
    )
    assert len(remote) == 270


# -- 7. kill -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kill_after", [1, 6, 15], ids=["in-creates", "early-updates", "late-updates"])
def test_flush_killed_mid_way_resumes_with_nothing_lost(slow_fake, tmp_path, kill_after):
    fake = slow_fake
    db = tmp_path / "cache.sqlite3"
    seeded = fake.records(BASE, TABLE)
    agent = start_agent(agent_env(fake, db, claim_timeout="1"), "queue-and-flush")
    try:
        read_line(agent, "QUEUED")
        wait_until(lambda: fake.request_count(method="POST") + fake.request_count(method="PATCH") >= kill_after)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
    finally:
        if agent.poll() is None:
            agent.kill()
    sent_before = fake.request_count(method="POST") + fake.request_count(method="PATCH")
    assert kill_after <= sent_before < 27, "the kill must land mid-flush"

    api = resume(fake, db)
    try:
        assert api.pending(), "the killed flush left writes queued"
        result = api.flush()
        assert result.pending == 0 and result.failed == [], result.as_dict()
        assert api.pending() == []
        assert_every_write_landed_once(fake, seeded)
        table = api.table(BASE, TABLE)
        local = table.all()
        assert not any(is_provisional(r["id"]) for r in local)
        assert Counter(r["fields"].get("Full Name") for r in local)["Kill Create 07"] == 1
    finally:
        api.close()


def test_process_killed_right_after_writes_loses_nothing(fake, tmp_path):
    db = tmp_path / "cache.sqlite3"
    seeded = fake.records(BASE, TABLE)
    agent = start_agent(agent_env(fake, db), "queue-only")
    try:
        read_line(agent, "QUEUED")
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert fake.request_count(method="POST") + fake.request_count(method="PATCH") == 0

    api = resume(fake, db)
    try:
        assert len(api.pending()) == 20 + 200 + 50
        assert api.flush().pending == 0
        assert api.pending() == []
        assert_every_write_landed_once(fake, seeded)
    finally:
        api.close()


# -- 8. two processes, one cache file -------------------------------------------------------------------


@pytest.mark.parametrize("flush_modes", [("manual", "manual"), ("auto", "manual")], ids=["manual", "auto+manual"])
def test_two_processes_write_to_one_cache_file(fake, tmp_path, flush_modes):
    db = tmp_path / "cache.sqlite3"
    signals = tmp_path / "signals"
    signals.mkdir()
    agents = [
        start_agent(agent_env(fake, db, flush=mode), "create", f"Proc{n}", "50", str(signals))
        for n, mode in zip("AB", flush_modes)
    ]
    try:
        for agent in agents:
            read_line(agent, "WRITTEN")
        # Both have written (at the same time); read-your-writes across processes before any flush
        # of the manual ones.
        (signals / "read").touch()
        for agent in agents:
            seen = json.loads(read_line(agent, "SEEN").split(" ", 1)[1])
            assert seen == {"ProcA": 50, "ProcB": 50}
        (signals / "flush").touch()
        for agent in agents:
            done = json.loads(read_line(agent, "DONE").split(" ", 1)[1])
            assert not done.get("failed")
        for agent in agents:
            assert agent.wait(60) == 0, agent.stderr.read()
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
    names = Counter(r["fields"].get("Full Name") for r in fake.records(BASE, TABLE)[250:])
    assert names == Counter({f"Proc{p} {i:02d}": 1 for p in "AB" for i in range(50)})
    api = resume(fake, db)
    try:
        assert api.pending() == []
        assert api.flush().requests == 0
    finally:
        api.close()
