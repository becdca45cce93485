"""The PostgreSQL store's connection layer against a real server (tests/pg_server.py)."""

from __future__ import annotations

import json
import threading

import psycopg
import pytest

from airtable_cached.store.postgres import SCHEMA_VERSION, PostgresStore, StoreError, is_postgres_url, redact
from airtable_cached.store.postgres.schema import as_jsonb, dumps_exact


@pytest.fixture
def store(pg_url):
    opened = PostgresStore(pg_url)
    yield opened
    opened.close_all()


def test_migrates_to_the_latest_version_once(pg_url):
    first = PostgresStore(pg_url)
    second = PostgresStore(pg_url)  # a second host: nothing left to do
    assert first.version() == second.version() == SCHEMA_VERSION
    first.close_all()
    second.close_all()


def test_hosts_starting_at_once_migrate_once(pg_url):
    errors: list[BaseException] = []

    def start():
        try:
            PostgresStore(pg_url).close_all()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_newer_schema_is_refused(store, pg_url):
    store.call(lambda c: c.execute("INSERT INTO schema_version VALUES (%s, now())", (SCHEMA_VERSION + 1,)))
    with pytest.raises(StoreError, match="newer"):
        PostgresStore(pg_url)


def test_write_commits_or_rolls_back_whole(store):
    with store.write() as unit:
        unit.conn.execute("INSERT INTO tables (base_id) VALUES ('appA')")
    with pytest.raises(RuntimeError), store.write() as unit:
        unit.conn.execute("INSERT INTO tables (base_id) VALUES ('appB')")
        raise RuntimeError("boom")
    rows = store.call(lambda c: c.execute("SELECT base_id FROM tables ORDER BY tid").fetchall())
    assert rows == [{"base_id": "appA"}]


def test_nested_write_joins_the_outer_one(store):
    with pytest.raises(RuntimeError), store.write() as outer:
        with store.write() as inner:
            assert inner.conn is outer.conn
            inner.conn.execute("INSERT INTO tables (base_id) VALUES ('appA')")
        raise RuntimeError("boom")
    assert store.call(lambda c: c.execute("SELECT count(*) AS n FROM tables").fetchone())["n"] == 0


def test_a_commit_is_seen_by_another_host_at_once(store, pg_url):
    other = PostgresStore(pg_url)
    before = other.change_marker()
    with store.write() as unit:
        unit.conn.execute("INSERT INTO tables (base_id) VALUES ('appA')")
    assert other.change_marker() != before
    assert other.call(lambda c: c.execute("SELECT count(*) AS n FROM tables").fetchone())["n"] == 1
    other.close_all()


def test_a_dropped_connection_is_replaced(store, pg_server):
    pids = set()
    for _ in range(3):
        pids.add(store.call(lambda c: c.execute("SELECT pg_backend_pid() AS p").fetchone()["p"]))
    with psycopg.connect(pg_server.url(), autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert store.call(lambda c: c.execute("SELECT 1 AS one").fetchone()) == {"one": 1}
    with store.write() as unit:
        unit.conn.execute("INSERT INTO tables (base_id) VALUES ('appA')")


def _connections(admin, database: str) -> set[int]:
    rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
                         " AND backend_type = 'client backend'",  # not an autovacuum worker on it
                         (database,)).fetchall()
    return {pid for (pid,) in rows}


def test_the_change_marker_connection_is_replaced_when_the_server_drops_it(store, pg_server):
    store.change_marker()
    database = store.call(lambda c: c.execute("SELECT current_database() AS d").fetchone()["d"])
    with psycopg.connect(pg_server.url(), autocommit=True) as admin:
        for pid in _connections(admin, database):
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    before = store.change_marker()  # asked again on a new connection, not raised
    with store.write() as unit:
        unit.conn.execute("INSERT INTO tables (base_id) VALUES ('appA')")
    assert store.change_marker() != before


def test_each_threads_change_marker_connection_is_closed_with_the_store(pg_url, pg_server):
    store = PostgresStore(pg_url)
    threads = [threading.Thread(target=store.change_marker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    database = store.call(lambda c: c.execute("SELECT current_database() AS d").fetchone()["d"])
    with psycopg.connect(pg_server.url(), autocommit=True) as admin:
        assert _connections(admin, database)
        store.close_all()
        for _ in range(100):  # a backend leaves pg_stat_activity a moment after its client closes
            if not _connections(admin, database):
                break
            threading.Event().wait(0.05)
        assert _connections(admin, database) == set()


def test_full_text_is_accent_and_case_folded(store):
    with store.write() as unit:
        tid = unit.conn.execute("INSERT INTO tables (base_id) VALUES ('appA') RETURNING tid").fetchone()["tid"]
        unit.conn.execute(
            "INSERT INTO records (tid, id, position, created_time, fields_json, fields) VALUES (%s, 'rec1', 1, '', %s, %s)",
            (tid, '{"Name":"Zoë Dupré","Tags":["Café"]}', '{"Name":"Zoë Dupré","Tags":["Café"]}'))
    found = store.call(lambda c: c.execute(
        "SELECT id FROM records WHERE body @@ plainto_tsquery('simple', unaccent(%s))", ("ZOE cafe",)).fetchall())
    assert found == [{"id": "rec1"}]


def test_location_has_no_password():
    assert redact("postgresql://u:secret@h:5432/db?sslmode=require&password=x") == \
        "postgresql://u@h:5432/db?sslmode=require"
    assert is_postgres_url("postgresql://h/db") and not is_postgres_url("/tmp/cache.sqlite3")


def test_jsonb_cannot_hold_nul_or_lone_surrogates():
    assert as_jsonb('{"a":"x"}') == '{"a":"x"}'
    assert as_jsonb('{"a":"x\\u0000"}') is None
    assert as_jsonb(dumps_exact({"a": "\ud800"})) is None
    assert json.loads(dumps_exact({"a": "\ud800"})) == {"a": "\ud800"}


def test_compose_postgres_profile_shares_one_database():
    import pathlib

    import yaml

    compose = yaml.safe_load((pathlib.Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text())
    services = {name: s for name, s in compose["services"].items() if "postgres" in s.get("profiles", [])}
    assert {"postgres", "pg-sync", "pg-agent-1", "pg-agent-2"} <= set(services)
    urls = {s["environment"]["AIRTABLE_CACHED_URL"] for name, s in services.items() if name != "postgres"}
    assert len(urls) == 1 and next(iter(urls)).startswith("postgresql://")
    assert services["pg-sync"]["command"][-1] == "serve-sync"
    assert all("profiles" not in s for name, s in compose["services"].items() if name in ("sync", "agent"))


def test_many_reading_threads_share_the_pool_past_the_marker_connections(pg_url, pg_server):
    from airtable_cached.store.postgres.connection import MARKER_CONNECTIONS

    store = PostgresStore(pg_url, max_size=2)
    database = store.call(lambda c: c.execute("SELECT current_database() AS d").fetchone()["d"])
    threads_n = MARKER_CONNECTIONS + 6
    asked, all_asked, done = [], threading.Barrier(threads_n + 1), threading.Event()

    def read():
        asked.append(store.change_marker())
        all_asked.wait()
        done.wait()  # alive, as an agent's worker threads are, while the connections are counted

    threads = [threading.Thread(target=read) for _ in range(threads_n)]
    for t in threads:
        t.start()
    all_asked.wait()
    with psycopg.connect(pg_server.url(), autocommit=True) as admin:
        held = len(_connections(admin, database))
    done.set()
    for t in threads:
        t.join()
    store.close_all()
    assert len(asked) == threads_n and len(set(asked)) == 1
    assert held <= MARKER_CONNECTIONS + 2
