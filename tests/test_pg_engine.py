"""The engine over the PostgreSQL store, against the fake Airtable: the same reads as over SQLite
(formulas compiled to PostgreSQL's dialect, residuals, formulas the dialect leaves to Python, a
condition too big for the server, search), and local writes. The store is given to the runtime
directly (``AIRTABLE_CACHED_URL`` does not select it yet)."""

from __future__ import annotations

import pytest
from conftest import BASE, TABLE

from airtable_cached.config import Settings
from airtable_cached.rules.query import ListQuery
from airtable_cached.runtime import open_runtime

FORMULAS = [
    None,
    "{Status} = 'Won'",
    "AND({Status} != 'Lost', {Score} > 50)",
    "FIND('a', LOWER({Full Name}))",
    "OR(" + ",".join(f"{{Score}} = {n}" for n in range(0, 2000, 3)) + ")",
    "RECORD_ID() != ''",
    "LEN({Full Name}) > 12",
]


@pytest.fixture
def runtimes(fake, pg_url, tmp_path, clock):
    from airtable_cached.store.postgres import PostgresStore

    opened = {}
    for kind in ("sqlite", "postgres"):
        settings = Settings.from_env(path=tmp_path / kind / "cache.sqlite3", endpoint_url=fake.url, flush="manual")
        store = PostgresStore(pg_url) if kind == "postgres" else None
        opened[kind] = open_runtime(settings, fake.token, store=store, clock=clock, sleep=clock.sleep)
    yield opened
    for runtime in opened.values():
        runtime.close(0)


def _ids(runtime, formula):
    query = ListQuery(formula=formula, page_size=100)
    ids, page = [], runtime.engine.list_records(BASE, TABLE, query)
    ids += [r["id"] for r in page["records"]]
    while page.get("offset"):
        page = runtime.engine.list_records(BASE, TABLE, ListQuery(formula=formula, page_size=100, offset=page["offset"]))
        ids += [r["id"] for r in page["records"]]
    return ids


@pytest.mark.parametrize("formula", FORMULAS)
def test_reads_over_postgresql_answer_as_over_sqlite(runtimes, formula):
    assert _ids(runtimes["postgres"], formula) == _ids(runtimes["sqlite"], formula)


def test_a_formula_too_big_for_postgresql_is_answered_by_the_evaluator(runtimes):
    formula = "OR(" + ",".join(f"RECORD_ID() = 'rec{n:014d}'" for n in range(70_000)) + ")"
    pg = runtimes["postgres"]
    assert _ids(pg, formula) == _ids(runtimes["sqlite"], formula) == []


def test_search_and_local_writes_over_postgresql(runtimes):
    pg, lite = runtimes["postgres"], runtimes["sqlite"]
    name = pg.engine.list_records(BASE, TABLE, ListQuery(page_size=1))["records"][0]["fields"]["Full Name"]
    word = name.split()[0]
    found = [r["id"] for r in pg.engine.search(BASE, TABLE, word)]
    assert set(found) == {r["id"] for r in lite.engine.search(BASE, TABLE, word)} and found
    made = pg.engine.create(BASE, TABLE, {"fields": {"Full Name": "Zoë Ünïcode"}})
    assert made["id"] in {r["id"] for r in pg.engine.search(BASE, TABLE, "zoe")}
    # Flushing over PostgreSQL waits for the sync to pass units, not SQLite connections (sync/core.py).
    assert _ids(pg, "{Full Name} = 'Zoë Ünïcode'") == [made["id"]] and pg.engine.store.outbox.count_queued() == 1
