"""Shared fixtures: a fake Airtable on loopback, and the api -> base -> table chain over a real
SQLite file, next to plain pyairtable pointed at the same server.

Cassettes: a test that takes the ``cassette`` fixture replays its traffic from
``cassettes/<module>/<test>.yaml`` with ``record_mode="none"``. Set ``AIRTABLE_CACHED_RECORD=1`` to
record them again from the fake server. Requests match on method, path, query and body (not host
or port: the fake listens on a random port) and the Authorization header is never written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyairtable
import pytest
import vcr
from pg_server import PgServer, running_server

from airtable_cached import Api
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads

BASE = "appLEADSbase00001"
TABLE = "Leads"
CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"
RECORDING = os.environ.get("AIRTABLE_CACHED_RECORD") == "1"
#: Set by .ci/run: a missing PostgreSQL server fails the PostgreSQL tests instead of skipping them.
PG_REQUIRED = os.environ.get("AIRTABLE_CACHED_TEST_PG") == "require"
#: Real Airtable traffic recorded by public projects, read beside the checkout (never copied here).
AIRTABLE_TRAFFIC = Path(__file__).resolve().parents[2] / "shared" / "airtable-traffic"


def recorded(*parts: str) -> Path:
    """A file or folder of the recorded Airtable traffic; the test is skipped, saying so, on a
    machine that does not have it beside the checkout (CI has it)."""
    path = AIRTABLE_TRAFFIC.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"recorded Airtable traffic not beside the checkout: {'/'.join(parts)}")
    return path


class FakeClock:
    """Time that moves only when the code under test sleeps (or a test advances it)."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the developer's settings or writes to their cache."""
    for name in list(os.environ):
        if name.startswith("AIRTABLE_CACHED_") and name != "AIRTABLE_CACHED_RECORD":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    # The change feed (a webhook per base) adds its own requests to a table's first pull; tests
    # about other things count requests and replay cassettes without them. Tests of the feed turn
    # it on (tests/test_refresh.py).
    monkeypatch.setenv("AIRTABLE_CACHED_FEED", "off")


@pytest.fixture
def fake():
    with FakeAirtable(seed=1) as server:
        server.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(250, seed=1))
        yield server


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "cache.sqlite3"


@pytest.fixture
def api(fake, db_path, clock):
    cached = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual", clock=clock, sleep=clock.sleep)
    yield cached
    cached.close()


@pytest.fixture
def base(api):
    return api.base(BASE)


@pytest.fixture
def table(base):
    return base.table(TABLE)


@pytest.fixture
def plain_api(fake):
    return pyairtable.Api(fake.token, endpoint_url=fake.url)


@pytest.fixture
def plain(plain_api):
    return plain_api.table(BASE, TABLE)


def _cassette_vcr() -> vcr.VCR:
    return vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="all" if RECORDING else "none",
        match_on=["method", "path", "query", "body"],
        filter_headers=["authorization"],
        decode_compressed_response=True,
    )


@pytest.fixture
def cassette(request):
    """Replay (or, with AIRTABLE_CACHED_RECORD=1, record) this test's HTTP traffic."""
    module = request.node.module.__name__.rsplit(".", 1)[-1]
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
    path = f"{module}/{name}.yaml"
    if not RECORDING and not (CASSETTES / path).exists():
        pytest.fail(f"cassette {path} is missing: record it with AIRTABLE_CACHED_RECORD=1")
    with _cassette_vcr().use_cassette(path) as recorded:
        yield recorded


def requests_so_far(cassette, fake: FakeAirtable) -> int:
    """Requests made so far: answered from the cassette when replaying, by the fake when recording."""
    return cassette.play_count if cassette.write_protected else fake.request_count()


# -- the storage contract suite (tests/store/) ----------------------------------------------------
# Every test there runs against every store, as requests-cache runs one suite against every backend.
# A store joins by adding a factory here.
# A factory takes the test's request (for the fixtures it needs).
def _sqlite_store(request):
    from airtable_cached.store.sqlite import Store
    from airtable_cached.store.sqlite.replica import register_sql_functions

    return Store(request.getfixturevalue("tmp_path") / "cache.db", on_connect=register_sql_functions)


def _postgres_store(request):
    """A fresh database on the session's PostgreSQL server (skipped where none is installed)."""
    from airtable_cached.store.postgres import PostgresStore

    return PostgresStore(request.getfixturevalue("pg_server").create_database())


STORES = {"sqlite": _sqlite_store, "postgres": _postgres_store}


@pytest.fixture(params=sorted(STORES))
def contract_store(request):
    """A fresh, empty store of each kind."""
    opened = STORES[request.param](request)
    yield opened
    opened.close_all()


# -- a real PostgreSQL server (tests/pg_server.py) -------------------------------------------------
@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the session, on loopback; skipped where none is installed."""
    with running_server() as server:
        if server is None:
            message = "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin): apt-get install postgresql-15"
            if PG_REQUIRED:
                pytest.fail(message)
            pytest.skip(message)
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer):
    """The URL of a fresh, empty database on the session's server; the stores opened on it in this
    process (``runtime.open_store``) are closed after the test (their pools' threads with them)."""
    url = pg_server.create_database()
    yield url
    close_stores_opened_on(url)


def close_stores_opened_on(url: str) -> None:
    """Close the stores this process opened on ``url`` (``runtime.open_store``), pools and all."""
    from airtable_cached import runtime

    with runtime._registry_lock:
        opened = [runtime._stores.pop(key) for key in [k for k in runtime._stores if k == url]]
    for store in opened:
        store.close_all()
