"""The cache is keyed by endpoint as well as base id: two Airtables (here two fake servers on
loopback, as a staging proxy and Airtable would be) with the same base id share one cache file
without sharing records or queued writes. Compared with the fakes' own state."""

from __future__ import annotations

import sqlite3

import pytest

from airtable_cached import Api
from airtable_cached.store.sqlite.connection import MIGRATIONS, SCHEMA_VERSION, Store, _statements
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads
from tests.conftest import BASE, TABLE


@pytest.fixture
def staging():
    with FakeAirtable(seed=2) as server:
        server.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(40, seed=2))
        yield server


def names(records: list[dict]) -> list[str]:
    return [r["fields"].get("Full Name", "") for r in records]


def test_two_endpoints_with_one_base_id_keep_their_own_records(fake, staging, db_path):
    with Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual") as prod, \
            Api(staging.token, endpoint_url=staging.url, path=db_path, flush="manual") as stage:
        prod_table, stage_table = prod.table(BASE, TABLE), stage.table(BASE, TABLE)
        assert names(prod_table.all()) == names(fake.records(BASE, TABLE))
        assert names(stage_table.all()) == names(staging.records(BASE, TABLE))
        assert len(prod_table.all()) == 250 and len(stage_table.all()) == 40
        # What a token was seen to read is remembered per endpoint too.
        grants = {r[0] for r in prod.engine.store.conn.execute("SELECT base_id FROM token_grants")}
        assert len(grants) == 2 and all(g.endswith(BASE) for g in grants)

        stage_table.create({"Full Name": "Only On Staging"})
        prod_table.update(prod_table.first()["id"], {"Score": 4242})
        assert "Only On Staging" not in names(prod_table.all())
        assert "Only On Staging" in names(stage_table.all())

        # Each flush sends its own endpoint's writes, and only those.
        assert prod.flush().pending == 1  # staging's create is not production's to send
        assert staging.request_count(method="POST") == 0
        assert stage.flush().pending == 0
    assert "Only On Staging" in names(staging.records(BASE, TABLE))
    assert "Only On Staging" not in names(fake.records(BASE, TABLE))
    assert fake.records(BASE, TABLE)[0]["fields"]["Score"] == 4242


def test_a_cache_from_before_the_endpoint_key_is_adopted_by_the_first_sync(fake, db_path):
    """A version-3 file with a table and a queued write: after the upgrade its tables belong
    to the endpoint of the first sync that opens it, and the queued write is still sent."""
    conn = sqlite3.connect(db_path)
    for version in (1, 2, 3):
        for statement in _statements(MIGRATIONS[version]):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO tables (tid, base_id, name, pulled_at) VALUES (1, ?, ?, NULL)", (BASE, TABLE))
    conn.execute("INSERT INTO table_aliases (base_id, alias, tid) VALUES (?, ?, 1)", (BASE, TABLE))
    first = fake.records(BASE, TABLE)[0]
    conn.execute(
        "INSERT INTO records (tid, id, position, created_time, remote, fields) VALUES (1, ?, 0, ?, '{}', '{}')",
        (first["id"], first["createdTime"]),
    )
    conn.execute(
        "INSERT INTO outbox (tid, base_id, table_ref, op, record_id, fields, created_at) VALUES (1, ?, ?, 'update', ?, ?, 0)",
        (BASE, TABLE, first["id"], '{"Score": 777}'),
    )
    conn.commit()
    conn.close()
    assert Store(db_path).version() == SCHEMA_VERSION
    with Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual") as api:
        assert len(api.pending()) == 1
        assert api.flush().pending == 0
        endpoints = {r[0] for r in api.engine.store.conn.execute("SELECT endpoint FROM tables")}
        aliases = api.engine.store.conn.execute("SELECT COUNT(*) FROM table_aliases WHERE endpoint = ?", (fake.url,))
        assert endpoints == {fake.url} and aliases.fetchone()[0] >= 1
        assert api.table(BASE, TABLE).get(first["id"])["fields"]["Score"] == 777
    assert fake.records(BASE, TABLE)[0]["fields"]["Score"] == 777


def test_two_endpoints_with_one_base_id_keep_their_own_change_feed(fake, staging, db_path, monkeypatch):
    """Each endpoint's webhook is its own: made on that server, its cursor kept apart, and a
    deletion on one reaches only that endpoint's records."""
    monkeypatch.setenv("AIRTABLE_CACHED_FEED", "webhooks")  # conftest turns the feed off
    with Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual") as prod, \
            Api(staging.token, endpoint_url=staging.url, path=db_path, flush="manual") as stage:
        prod_table, stage_table = prod.table(BASE, TABLE), stage.table(BASE, TABLE)
        prod_table.all()
        stage_table.all()
        assert len(fake.webhooks.of_base(BASE)) == 1 and len(staging.webhooks.of_base(BASE)) == 1
        rows = prod.engine.store.conn.execute("SELECT endpoint, webhook_id FROM webhooks WHERE base_id = ?", (BASE,))
        kept = dict(rows.fetchall())
        assert kept == {fake.url: fake.webhooks.of_base(BASE)[0]["id"],
                        staging.url: staging.webhooks.of_base(BASE)[0]["id"]}

        gone = staging.records(BASE, TABLE)[0]["id"]
        staging.delete_record(BASE, TABLE, gone)
        assert stage.sync.refresh(BASE, TABLE).kind == "incremental"  # the feed brings the deletion
        assert gone not in {r["id"] for r in stage_table.all()}
        assert len(prod_table.all()) == 250


def test_the_bases_a_file_holds_by_endpoint_and_from_before_the_endpoint_key(fake, staging, db_path, tmp_path):
    """What backup and restore lock (``files.bases_in``): (endpoint, base) of every cached table; in a
    version-3 file, ('', base) of its tables and of its queued writes."""
    from airtable_cached.store.sqlite.files import bases_in

    with Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual") as prod, \
            Api(staging.token, endpoint_url=staging.url, path=db_path, flush="manual") as stage:
        prod.table(BASE, TABLE).all()
        stage.table(BASE, TABLE).all()
    assert bases_in(db_path) == {(fake.url, BASE), (staging.url, BASE)}

    old = tmp_path / "version3.sqlite3"
    conn = sqlite3.connect(old)
    for version in (1, 2, 3):
        for statement in _statements(MIGRATIONS[version]):
            conn.execute(statement)
    conn.execute("INSERT INTO tables (tid, base_id, name, pulled_at) VALUES (1, ?, ?, NULL)", (BASE, TABLE))
    conn.execute("INSERT INTO outbox (tid, base_id, table_ref, op, record_id, fields, created_at)"
                 " VALUES (2, 'appQUEUEDonly0001', 'T', 'update', 'recX', '{}', 0)")
    conn.commit()
    conn.close()
    assert bases_in(old) == {("", BASE), ("", "appQUEUEDonly0001")}
