"""``airtable-cached`` on a PostgreSQL cache (``--url`` or ``AIRTABLE_CACHED_URL``), against a real
server: the commands work as on SQLite; backup, restore and salvage refuse, naming pg_dump and
pg_restore; check runs the content checks and says which file checks do not apply."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from airtable_cached import Api
from airtable_cached.ops.cli import main
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads

BASE = "appLEADSbase00001"
TABLE = "Leads"


@pytest.fixture
def leads():
    with FakeAirtable(seed=1) as server:
        server.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(30, seed=1))
        yield server


@pytest.fixture
def cached(leads, pg_url):
    """A PostgreSQL cache holding the table and one queued update."""
    api = Api(leads.token, endpoint_url=leads.url, url=pg_url, flush="manual")
    table = api.table(BASE, TABLE)
    first = table.all()[0]
    table.update(first["id"], {"Company": "queued"})
    api.close()
    return first["id"]


def _cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_status_stats_and_queue_list_read_the_postgresql_cache(cached, pg_url):
    status = _cli("status", "--url", pg_url, "--json")
    assert status.exit_code == 0, status.output
    data = json.loads(status.output)
    assert "postgresql://" in data["path"] and data["queue"]["pending"] == 1
    assert data["tables"][0]["records"] == 30
    assert _cli("stats", "--url", pg_url, "--json").exit_code == 0
    listed = json.loads(_cli("queue", "list", "--url", pg_url, "--json").output)
    assert [w["record_id"] for w in listed] == [cached]


def test_the_environment_selects_postgresql_too(cached, pg_url):
    result = _cli("status", "--json", env={"AIRTABLE_CACHED_URL": pg_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["queue"]["pending"] == 1


def test_flush_pull_reset_and_vacuum_work_on_postgresql(cached, leads, pg_url, monkeypatch):
    monkeypatch.setenv("AIRTABLE_CACHED_ENDPOINT_URL", leads.url)
    flushed = _cli("flush", "--url", pg_url, "--token", leads.token, "--json")
    assert flushed.exit_code == 0, flushed.output
    assert json.loads(flushed.output)["sent"], flushed.output
    assert {r["id"]: r["fields"] for r in leads.records(BASE, TABLE)}[cached]["Company"] == "queued"
    assert _cli("reset", "--url", pg_url, "--yes", "--json").exit_code == 0
    pulled = _cli("pull", BASE, TABLE, "--url", pg_url, "--token", leads.token, "--json")
    assert pulled.exit_code == 0, pulled.output
    vacuumed = _cli("vacuum", "--url", pg_url, "--json")
    assert vacuumed.exit_code == 0, vacuumed.output


@pytest.mark.parametrize("args, tool", [
    (["backup"], "pg_dump"),
    (["restore", "__file__"], "pg_restore"),
    (["salvage", "--to", "__dest__"], "pg_restore"),
])
def test_backup_restore_and_salvage_refuse_on_postgresql_naming_the_tool(cached, pg_url, tmp_path, args, tool):
    some_file = tmp_path / "backup.sqlite3"
    some_file.write_bytes(b"")
    args = [str(some_file) if a == "__file__" else str(tmp_path / "new.sqlite3") if a == "__dest__" else a for a in args]
    result = _cli(*args, "--url", pg_url)
    assert result.exit_code == 1
    assert tool in result.output and "PostgreSQL" in result.output
    assert "password" not in result.output
    assert not (tmp_path / "new.sqlite3").exists()


def test_check_runs_the_content_checks_on_postgresql(cached, pg_url):
    result = _cli("check", "--url", pg_url, "--json")
    data = json.loads(result.output)
    assert result.exit_code == 0, result.output
    codes = {f["code"] for f in data["findings"]}
    assert codes == {"not-applicable"}  # healthy: only the SQLite-file checks, said not to apply
    assert any("integrity" in f["message"] for f in data["findings"])


def test_check_reports_a_dead_letter_on_postgresql(cached, pg_url):
    from airtable_cached.runtime import open_store

    store = open_store(pg_url)
    seqs = store.outbox.seqs()
    with store.write() as unit:
        unit.outbox.dead_letter(seqs, error={"status": 422, "body": {}})
    result = _cli("check", "--url", pg_url, "--json")
    assert result.exit_code == 1
    assert "queue-dead" in {f["code"] for f in json.loads(result.output)["findings"]}
