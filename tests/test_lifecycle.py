"""Lifecycle of the runtime an ``Api`` shares: close() and the context manager, a new runtime after
close, a forked child's own flusher, the bounded exit drain, one requests.Session per thread, and
the batching delay of the background flusher. Everything runs against the project's fake Airtable
over loopback (no recorded traffic is involved: these are the cache's own mechanics)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from airtable_cached import Api
from airtable_cached.testing import FakeAirtable
from tests.conftest import BASE, TABLE


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def our_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("airtable_cached")]


def names_in(fake: FakeAirtable) -> list[str]:
    return [r["fields"].get("Full Name", "") for r in fake.records(BASE, TABLE)]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc")
def test_twenty_open_close_cycles_leave_no_descriptors_or_threads(fake, db_path):
    def cycle(i: int) -> None:
        api = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="auto", rate_limit=1000)
        table = api.table(BASE, TABLE)
        table.first()
        table.create({"Full Name": f"Cycle {i}"})
        reader = threading.Thread(target=table.first)  # a caller's thread has its own connection
        reader.start()
        reader.join()  # (a read after close() would open the runtime again, by design)
        assert api.close() is True

    cycle(0)  # imports, the fake's first connections, SQLite's first open of the file
    assert wait_for(lambda: not our_threads())
    fds, threads = open_fds(), threading.active_count()
    for i in range(1, 21):
        cycle(i)
    # The fake's handler threads end when the client's sockets are closed.
    assert wait_for(lambda: open_fds() <= fds and threading.active_count() <= threads), (
        open_fds(), fds, threading.enumerate()
    )
    assert our_threads() == []
    assert sorted(n for n in names_in(fake) if n.startswith("Cycle")) == sorted(f"Cycle {i}" for i in range(21))


def test_a_new_api_after_close_gets_a_working_runtime(fake, db_path):
    settings = dict(endpoint_url=fake.url, path=db_path, flush="auto", rate_limit=1000, batch_delay=0)
    with Api(fake.token, **settings) as first:
        first.table(BASE, TABLE).create({"Full Name": "Before Close"})
    assert "Before Close" in names_in(fake), "close() flushes"
    second = Api(fake.token, **settings)
    second.table(BASE, TABLE).create({"Full Name": "After Close"})
    assert wait_for(lambda: "After Close" in names_in(fake)), "the new Api's flusher runs"
    second.close()
    # The closed Api itself, used again, gets a fresh runtime too.
    first.table(BASE, TABLE).create({"Full Name": "Closed Api Used Again"})
    assert wait_for(lambda: "Closed Api Used Again" in names_in(fake))
    assert first.close() is True


def test_apis_sharing_a_runtime_keep_it_until_the_last_closes(fake, db_path):
    settings = dict(endpoint_url=fake.url, path=db_path, flush="manual")
    one, two = Api(fake.token, **settings), Api(fake.token, **settings)
    assert one.engine is two.engine
    one.close()
    two.table(BASE, TABLE).create({"Full Name": "Still Open"})
    assert two.flush().pending == 0
    two.close()
    assert "Still Open" in names_in(fake)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_flusher(fake, db_path):
    api = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="auto", rate_limit=1000, batch_delay=0)
    table = api.table(BASE, TABLE)
    table.create({"Full Name": "From The Parent"})
    assert wait_for(lambda: api.pending() == [])
    pid = os.fork()
    if pid == 0:  # the child: its writes are sent by a flusher thread of its own
        code = 1
        try:
            table.create({"Full Name": "From The Child"})
            code = 0 if wait_for(lambda: api.pending() == []) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "From The Child" in names_in(fake)
    table.create({"Full Name": "Parent After Fork"})
    assert wait_for(lambda: "Parent After Fork" in names_in(fake)), "the parent's flusher still runs"
    api.close()


def test_exit_waits_at_most_exit_timeout_in_all(tmp_path):
    """Three runtimes (three cache files) with writes Airtable answers slowly: the interpreter
    exits after about one exit_timeout, not three."""
    with FakeAirtable(seed=1, latency=2.0) as slow:
        slow.add_table(BASE, TABLE, None, [{"Full Name": "Seed"}])
        script = textwrap.dedent(
            f"""
            import time
            from airtable_cached import Api
            for n in range(3):
                api = Api({slow.token!r}, endpoint_url={slow.url!r}, path={str(tmp_path)!r} + f"/c{{n}}.sqlite3",
                          flush="manual", mode="offline")
                api.table({BASE!r}, {TABLE!r}).create({{"Full Name": f"Exit {{n}}"}})
            for n in range(3):
                api = Api({slow.token!r}, endpoint_url={slow.url!r}, path={str(tmp_path)!r} + f"/c{{n}}.sqlite3",
                          flush="auto", exit_timeout=1.5, batch_delay=0)
                api.sync.notify_write()  # the flusher starts on the queued write
            time.sleep(0.3)
            print("EXITING", time.monotonic(), flush=True)
            """
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRTABLE_CACHED_")}
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
        ended = time.monotonic()
    assert proc.returncode == 0, proc.stderr
    exiting_at = float(proc.stdout.split()[-1])
    assert ended - exiting_at < 3.5, (ended - exiting_at, proc.stderr)  # one budget (1.5 s), not three (4.5 s)
    assert "did not drain within" in proc.stderr


def test_each_thread_has_its_own_session(api):
    remote = api.sync.remote
    here = remote.session
    seen = []
    worker = threading.Thread(target=lambda: seen.append(remote.session))
    worker.start()
    worker.join()
    assert seen[0] is not here and remote.session is here
    assert getattr(seen[0], "_airtable_cached_direct", False) is True


def test_background_flusher_uses_a_session_of_its_own(fake, db_path):
    api = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="auto", batch_delay=0, rate_limit=1000)
    table = api.table(BASE, TABLE)
    mine = api.sync.remote.session
    table.update(table.first()["id"], {"Score": 77})
    assert wait_for(lambda: api.pending() == [])
    sessions = set(api.sync.remote._sessions)
    assert len(sessions) == 2 and mine in sessions
    api.close()


def test_writes_spread_out_in_time_share_one_request(fake, db_path):
    """The flusher, woken by each write, waits up to batch_delay for more: three updates the
    flusher has seen one by one go out in one PATCH (before, one PATCH each once 0.2 s passed)."""
    api = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="auto", batch_delay=60, rate_limit=1000)
    table = api.table(BASE, TABLE)
    ids = [r["id"] for r in table.all()[:3]]
    fake.reset_log()
    flusher = api.sync.flusher
    for n, rid in enumerate(ids, start=1):
        table.update(rid, {"Score": 900 + n})
        assert wait_for(lambda n=n: flusher.waiting_writes == n)
    assert fake.request_count(method="PATCH") == 0
    assert api.close() is True  # close() flushes what waits
    assert fake.request_count(method="PATCH") == 1
    assert [r["fields"]["Score"] for r in fake.records(BASE, TABLE)[:3]] == [901, 902, 903]


def test_a_write_is_sent_within_batch_delay(fake, db_path):
    api = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="auto", batch_delay=0.3, rate_limit=1000)
    table = api.table(BASE, TABLE)
    table.batch_create([{"Full Name": f"Delayed {i}"} for i in range(12)])
    assert wait_for(lambda: api.pending() == [], timeout=5)
    assert fake.request_count(method="POST") == 2
    api.close()


def test_batch_delay_is_validated():
    from airtable_cached.config import Settings
    from airtable_cached.errors import ConfigurationError

    assert Settings.from_env({"AIRTABLE_CACHED_BATCH_DELAY": "7.5"}, path="x").batch_delay == 7.5
    with pytest.raises(ConfigurationError, match="AIRTABLE_CACHED_BATCH_DELAY"):
        Settings.from_env({"AIRTABLE_CACHED_BATCH_DELAY": "soon"}, path="x")


def test_the_shared_runtime_is_a_context_manager_too(fake, db_path):
    from airtable_cached.config import Settings
    from airtable_cached.runtime import shared_runtime

    settings = Settings.from_env(path=db_path, endpoint_url=fake.url, flush="auto", batch_delay=60, rate_limit=1000)
    with shared_runtime(settings, fake.token) as runtime:
        engine, sync = runtime
        engine.create(BASE, TABLE, {"fields": {"Full Name": "Via The Runtime"}})
        assert sync.flusher is not None
    assert runtime.closed and "Via The Runtime" in names_in(fake), "leaving the block flushed"
    with shared_runtime(settings, fake.token) as fresh:
        assert fresh is not runtime and not fresh.closed


def test_a_runtime_whose_sync_was_closed_directly_is_not_handed_out_again(fake, db_path):
    settings = dict(endpoint_url=fake.url, path=db_path, flush="auto", batch_delay=0, rate_limit=1000)
    first = Api(fake.token, **settings)
    first.sync.close()
    with Api(fake.token, **settings) as second:
        second.table(BASE, TABLE).create({"Full Name": "After Sync Close"})
        assert wait_for(lambda: "After Sync Close" in names_in(fake))
    first.close()


def test_close_waits_for_background_threads_before_closing_their_connections(api):
    """A background refresh or probe still running when the Api closes: close() waits for it
    before closing the sessions and SQLite connections it uses (closing a connection under a
    thread that uses it can crash the interpreter)."""
    engine = api.engine
    started, errors = threading.Event(), []

    def work() -> None:
        try:
            started.set()
            for _ in range(20):
                engine.store.conn.execute("SELECT COUNT(*) FROM tables").fetchone()
                time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    engine.start_background(("test", 1), work, "airtable_cached-test")
    assert started.wait(5)
    api.close()
    assert engine.wait_for_refreshes(timeout=0)  # finished before close() returned
    assert not errors, errors
