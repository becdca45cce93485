"""The storage contract: whole-database operations (backup, vacuum, size, schema version)."""

from __future__ import annotations

from airtable_cached.errors import AirtableCachedError


def _log(store, n: int) -> None:
    with store.write() as unit:
        for i in range(n):
            unit.replica.log_request(float(i), "appA", "pull", "GET", 200)


def test_a_backup_is_a_new_private_file_holding_the_data(contract_store, tmp_path):
    _log(contract_store, 3)
    dest = tmp_path / "copy.sqlite3"
    try:
        contract_store.backup(dest)
    except AirtableCachedError as exc:  # a store that cannot names the tool that does (PostgreSQL)
        assert "pg_dump" in str(exc) and not dest.exists()
        return
    assert dest.is_file() and dest.stat().st_mode & 0o077 == 0
    assert not dest.with_name(dest.name + ".partial").exists()


def test_vacuum_keeps_the_data_and_sizes_are_reported(contract_store):
    _log(contract_store, 50)
    with contract_store.write() as unit:
        unit.replica.prune_request_log(25.0)
    contract_store.vacuum()
    assert contract_store.replica.request_totals() == (25, 0)
    sizes = contract_store.page_bytes()
    assert sizes["database"] > 0 and 0 <= sizes["free"] <= sizes["database"]
    assert contract_store.disk_bytes() > 0
    assert contract_store.version() >= 1
