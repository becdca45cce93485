"""Per-base flush locks (airtable_cached/store/sqlite/locks.py): never waited on, released by the kernel with
their holder, taken over on the lease only when the holder is alive but hung. Two FlushLocks over
one folder stand for two processes (file locks conflict between open files, in one process too);
wall time is injected."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import diskcache
import pytest

from airtable_cached.store.sqlite.locks import FlushLocks
from airtable_cached.sync.locks import flush_key


class Wall:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pair(tmp_path):
    wall = Wall()
    caches = [diskcache.Cache(str(tmp_path / "locks")) for _ in range(2)]
    yield [FlushLocks(tmp_path / "locks", c, 60.0, now=wall) for c in caches], wall
    for cache in caches:
        cache.close()


def test_a_held_lock_is_not_waited_for_and_is_free_once_released(pair):
    (one, two), _wall = pair
    held = one.try_acquire("appA")
    assert held is not None
    assert two.try_acquire("appA") is None
    assert two.try_acquire("appB") is not None  # another base is another lock
    one.release(held)
    assert two.try_acquire("appA") is not None


def test_a_hung_holder_is_taken_over_after_its_lease_and_learns_it(pair):
    (one, two), wall = pair
    held = one.try_acquire("appA")
    wall.now += 30
    assert one.renew(held) is True
    wall.now += 59
    assert two.try_acquire("appA") is None  # renewed 59 s ago: alive
    wall.now += 2
    taken = two.try_acquire("appA")
    assert taken is not None and taken.epoch == held.epoch + 1
    assert one.renew(held) is False  # the hung one stops at its next renewal
    assert one.try_acquire("appA") is None  # and the new holder keeps the base
    one.release(held)
    two.release(taken)
    assert one.try_acquire("appA") is not None


def test_the_lock_of_a_killed_process_is_free_at_once(tmp_path):
    script = textwrap.dedent(
        f"""
        import time, diskcache
        from pathlib import Path
        from airtable_cached.store.sqlite.locks import FlushLocks
        locks = FlushLocks(Path({str(tmp_path / "locks")!r}), diskcache.Cache({str(tmp_path / "locks")!r}), 300.0)
        held = locks.try_acquire("appA")
        assert held is not None
        print("HELD", flush=True)
        time.sleep(60)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        cache = diskcache.Cache(str(tmp_path / "locks"))
        locks = FlushLocks(tmp_path / "locks", cache, 300.0)
        assert locks.try_acquire("appA") is None
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert locks.try_acquire("appA") is not None  # no lease to wait out
        cache.close()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_flush_keys_tell_endpoints_apart():
    assert flush_key("https://api.airtable.com", "appA") != flush_key("http://127.0.0.1:8080", "appA")
    assert flush_key("", "appA") == "appA"


def test_write_through_waits_for_its_answer_while_another_flusher_holds_the_base(fake, db_path):
    """Write-through promises Airtable's verdict on the call: with the base held by another
    flusher, the call waits (polling, no lease) until it can flush, then raises the refusal."""
    import threading

    import requests

    from airtable_cached import Api
    from tests.conftest import BASE, TABLE

    api = Api(fake.token, endpoint_url=fake.url, path=db_path, mode="write-through", rate_limit=1000)
    table = api.table(BASE, TABLE)
    rid = table.first()["id"]
    other_cache = diskcache.Cache(str(api.settings.locks_dir))
    other = FlushLocks(api.settings.locks_dir, other_cache, 300.0)
    held = other.try_acquire(flush_key(api.settings.endpoint_url, BASE))
    assert held is not None
    releaser = threading.Timer(0.3, other.release, args=(held,))
    releaser.start()
    try:
        with pytest.raises(requests.HTTPError) as error:
            table.update(rid, {"Score": "not a number"})
        assert error.value.response.status_code == 422
        assert api.pending() == []
    finally:
        releaser.join()
        other_cache.close()
        api.close()


def test_cli_flush_leaves_a_held_base_and_says_so(fake, db_path, monkeypatch):
    import time

    from click.testing import CliRunner

    from airtable_cached import Api
    from airtable_cached.ops.cli import main
    from tests.conftest import BASE, TABLE

    monkeypatch.setenv("AIRTABLE_CACHED_PATH", str(db_path))
    monkeypatch.setenv("AIRTABLE_CACHED_ENDPOINT_URL", fake.url)
    monkeypatch.setenv("AIRTABLE_API_KEY", fake.token)
    with Api(fake.token, flush="manual") as api:
        table = api.table(BASE, TABLE)
        table.update(table.first()["id"], {"Score": 5})
        cache = diskcache.Cache(str(api.settings.locks_dir))
        other = FlushLocks(api.settings.locks_dir, cache, 300.0)
        held = other.try_acquire(flush_key(api.settings.endpoint_url, BASE))
        try:
            started = time.monotonic()
            result = CliRunner().invoke(main, ["flush"])
            assert time.monotonic() - started < 5
            assert result.exit_code == 0, result.output
            assert f"base {BASE}: another process is flushing it" in result.output
            assert "1 still queued" in result.output
        finally:
            other.release(held)
            cache.close()
