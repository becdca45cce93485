"""One rate budget and one flush lock per base across hosts, against a real PostgreSQL server.

Each process here stands for a host: it opens its own store on the same database.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from airtable_cached.config import Settings
from airtable_cached.store.postgres import PostgresStore
from airtable_cached.store.postgres.locks import PostgresFlushLocks
from airtable_cached.store.postgres.pacer import PostgresPacer

BASE = "appPACEDbase00001"
CTX = multiprocessing.get_context("spawn")  # a fresh interpreter per host, nothing inherited


def _settings() -> Settings:
    return Settings(path=Path("unused.sqlite3"), rate_limit=5.0, penalty=30.0)


def _pace(url: str, turns: int, start_at: float, out) -> None:
    store = PostgresStore(url)
    pacer = PostgresPacer(store, _settings(), sleep=time.sleep)
    time.sleep(max(0.0, start_at - time.time()))
    for _ in range(turns):
        pacer.wait_turn(BASE)
        out.put(time.time())
    store.close_all()


def test_three_hosts_pacing_one_base_stay_under_the_rate(pg_url):
    PostgresStore(pg_url).close_all()  # migrated before the hosts start
    out = CTX.Queue()
    start_at = time.time() + 3.0
    hosts = [CTX.Process(target=_pace, args=(pg_url, 6, start_at, out)) for _ in range(3)]
    for host in hosts:
        host.start()
    times = sorted(out.get(timeout=60) for _ in range(18))
    for host in hosts:
        host.join(30)
    # 5 requests a second with a 5% margin: any six consecutive requests span 5 * 0.21 s at least
    # (less a little scheduling jitter: a turn is only ever taken later than its slot, never earlier).
    spans = [times[i + 5] - times[i] for i in range(len(times) - 5)]
    assert min(spans) >= 1.0, spans
    assert times[-1] - times[0] >= 17 * 0.21 - 0.1


def test_a_429_stops_every_host(pg_url):
    store = PostgresStore(pg_url)
    other = PostgresStore(pg_url)
    slept: list[float] = []
    PostgresPacer(store, _settings(), sleep=slept.append).penalise(BASE, 5.0)
    PostgresPacer(other, _settings(), sleep=slept.append).wait_turn(BASE)
    assert len(slept) == 1 and 4.0 < slept[0] <= 5.0
    store.close_all()
    other.close_all()


def test_a_fake_clock_far_ahead_does_not_stall_the_base(pg_url):
    store = PostgresStore(pg_url)
    slept: list[float] = []
    ahead = PostgresPacer(store, _settings(), sleep=slept.append, clock=lambda: time.time() + 100_000)
    ahead.penalise(BASE)
    PostgresPacer(store, _settings(), sleep=slept.append).wait_turn(BASE)
    assert slept == []
    store.close_all()


# -- flush locks -----------------------------------------------------------------------------------
def _hold(url: str, ready) -> None:
    store = PostgresStore(url)
    held = PostgresFlushLocks(store, 300.0).try_acquire(BASE)
    ready.put(held is not None)
    time.sleep(120)


def test_the_lock_is_released_when_its_holder_is_killed(pg_url):
    store = PostgresStore(pg_url)
    locks = PostgresFlushLocks(store, 300.0)
    ready = CTX.Queue()
    holder = CTX.Process(target=_hold, args=(pg_url, ready))
    holder.start()
    try:
        assert ready.get(timeout=60) is True
        assert locks.try_acquire(BASE) is None  # held by a live process: nobody waits, nobody takes it
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
        deadline = time.monotonic() + 10
        held = locks.try_acquire(BASE)
        while held is None and time.monotonic() < deadline:
            time.sleep(0.1)
            held = locks.try_acquire(BASE)
        assert held is not None
        assert locks.renew(held)
        locks.release(held)
        assert locks.holder(BASE) is None
    finally:
        if holder.is_alive():
            holder.kill()
        store.close_all()


def test_one_holder_at_a_time_and_release(pg_url):
    store = PostgresStore(pg_url)
    locks = PostgresFlushLocks(store, 300.0)
    held = locks.try_acquire(BASE)
    assert held is not None and locks.try_acquire(BASE) is None
    assert locks.try_acquire("appOTHERbase00001") is not None  # another base: its own lock
    locks.release(held)
    again = locks.try_acquire(BASE)
    assert again is not None
    locks.release(again)
    store.close_all()


def test_a_hung_holder_is_taken_over(pg_url):
    store = PostgresStore(pg_url)
    clock = [1000.0]
    locks = PostgresFlushLocks(store, 30.0, now=lambda: clock[0])
    hung = locks.try_acquire(BASE)
    assert hung is not None
    clock[0] += 10
    assert locks.try_acquire(BASE) is None  # lease still running
    clock[0] += 60
    taker = locks.try_acquire(BASE)
    assert taker is not None and taker.epoch == hung.epoch + 1
    assert not locks.renew(hung)  # it learns it lost the base
    assert locks.renew(taker)
    locks.release(taker)
    store.close_all()


@pytest.fixture(autouse=True)
def _no_leaked_children():
    yield
    for child in CTX.active_children():
        child.kill()
