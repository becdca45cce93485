"""The storage contract: change markers, which tell a process's read models whether the database
changed under them (another process's commit) or only by this process's own commit."""

from __future__ import annotations

import psycopg
import pytest

from airtable_cached.store.postgres import PostgresStore
from airtable_cached.store.postgres.connection import transactions_ended_between
from airtable_cached.store.sqlite import Store


def _log(store, at: float) -> None:
    with store.write() as unit:
        unit.replica.log_request(at, "appA", "pull", "GET", 200)


@pytest.fixture
def other(contract_store):
    """A second store on the same database, as another process (or host) opens it."""
    if isinstance(contract_store, PostgresStore):
        opened = PostgresStore(contract_store.url)
    else:
        opened = Store(contract_store.path)
    yield opened
    opened.close_all()


def test_the_marker_stays_while_nothing_commits(contract_store, other):
    _log(other, 1.0)
    assert contract_store.change_marker() == contract_store.change_marker()


def test_an_own_commit_alone_is_recognised(contract_store, other):
    other.change_marker()
    before = contract_store.change_marker()
    _log(contract_store, 1.0)
    after = contract_store.change_marker()
    assert after != before
    assert contract_store.moved_only_by_own_commit(before, after)


def test_another_processes_commit_is_never_taken_for_an_own_one(contract_store, other):
    before = contract_store.change_marker()
    _log(other, 1.0)
    _log(contract_store, 2.0)
    after = contract_store.change_marker()
    assert not contract_store.moved_only_by_own_commit(before, after)


def test_another_processes_commit_alone_moves_the_marker(contract_store, other):
    before = contract_store.change_marker()
    _log(other, 1.0)
    after = contract_store.change_marker()
    assert after != before
    assert not contract_store.moved_only_by_own_commit(before, after)


def test_two_own_commits_are_not_one(contract_store):
    before = contract_store.change_marker()
    _log(contract_store, 1.0)
    _log(contract_store, 2.0)
    assert not contract_store.moved_only_by_own_commit(before, contract_store.change_marker())


def test_postgresql_snapshots_name_the_transactions_that_ended_between_them():
    assert transactions_ended_between("726:726:", "727:727:") == {726}
    assert transactions_ended_between("727:727:", "727:729:727") == {728}  # 727 still running
    assert transactions_ended_between("727:729:727", "729:729:") == {727}
    assert transactions_ended_between("726:726:", "726:726:") == set()
    assert transactions_ended_between("726:730:", "726:726:") is None  # out of order
    assert transactions_ended_between("1:1:", "20000:20000:") is None  # too many to list


def test_a_transaction_still_running_elsewhere_does_not_hide_an_own_commit(pg_url):
    """PostgreSQL: another host's open transaction (given an id, not committed) changes nothing
    visible, so an own commit meanwhile is still recognised; its commit later moves the marker."""
    store = PostgresStore(pg_url)
    with psycopg.connect(pg_url) as elsewhere:
        elsewhere.execute("INSERT INTO sync_log (at, base_id, kind, method, status) VALUES (0, 'appB', 'pull', 'GET', 200)")
        before = store.change_marker()
        _log(store, 1.0)
        after = store.change_marker()
        assert store.moved_only_by_own_commit(before, after)
        elsewhere.commit()
    assert store.change_marker() != after
    store.close_all()
