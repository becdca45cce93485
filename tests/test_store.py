"""The SQLite store: pragmas, migrations, permissions, transactions, fork safety."""

from __future__ import annotations

import os
import stat

import pytest

from airtable_cached.store.sqlite import SCHEMA_VERSION, Store, StoreError


def test_new_database_is_private_wal_and_migrated(tmp_path):
    store = Store(tmp_path / "sub" / "cache.sqlite3")
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.version() == SCHEMA_VERSION
    tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"records", "outbox", "id_map", "tables", "sync_log"} <= tables


def test_newer_schema_is_refused_with_a_clear_message(tmp_path):
    store = Store(tmp_path / "c.db")
    store.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path / "c.db")


def test_transaction_rolls_back_on_error(tmp_path):
    store = Store(tmp_path / "c.db")
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            conn.execute("INSERT INTO tables (base_id, name) VALUES ('app1', 't')")
            raise RuntimeError("boom")
    assert store.conn.execute("SELECT COUNT(*) FROM tables").fetchone()[0] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_connection_is_reopened_after_fork(tmp_path):
    store = Store(tmp_path / "c.db")
    parent_conn = store.conn
    pid = os.fork()
    if pid == 0:  # child: must get its own connection and be able to write
        ok = store.conn is not parent_conn
        with store.transaction() as conn:
            conn.execute("INSERT INTO tables (base_id, name) VALUES ('app1', 'from-child')")
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert store.conn.execute("SELECT name FROM tables").fetchone()[0] == "from-child"
