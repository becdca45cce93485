"""The queue's contract suite (tests/store/test_contract_outbox.py) run against the PostgreSQL store
on a real server, until the contract suite's ``STORES`` (tests/conftest.py) takes PostgreSQL for
every area: the replica's tests would fail on its empty repository today.

The suite's one store-specific step (``make_table``: the Replica protocol does not register tables
yet) is done here in PostgreSQL's SQL."""

from __future__ import annotations

import pytest
import test_contract_outbox as suite
from test_contract_outbox import *  # noqa: F403 - the same tests, collected again with the fixture below

from airtable_cached.store.postgres import PostgresStore


def _make_table(store, base_id: str = suite.BASE, endpoint: str = "") -> int:
    tid = next(suite._tids)
    with store.write() as unit:
        unit.conn.execute("INSERT INTO tables (tid, base_id, name, endpoint) VALUES (%s, %s, %s, %s)",
                          (tid, base_id, f"T{tid}", endpoint))
    return tid


@pytest.fixture
def contract_store(pg_url, monkeypatch):
    """A fresh, empty PostgreSQL store (this module's tests only)."""
    monkeypatch.setattr(suite, "make_table", _make_table)
    opened = PostgresStore(pg_url)
    yield opened
    opened.close_all()
