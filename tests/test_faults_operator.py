"""Operator mistakes and damaged files: nothing destroys data, and `check` sees what agents would meet.

Everything runs on real SQLite files, the CLI through click's runner, and the project's fake Airtable
(``airtable_cached/testing/``) on loopback. Damage is done to the bytes of the database file
itself, as a failing disk would.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest
from click.testing import CliRunner

from airtable_cached import Api
from airtable_cached.ops.cli import main
from tests.conftest import BASE, TABLE


@pytest.fixture
def env(monkeypatch, fake, db_path):
    monkeypatch.setenv("AIRTABLE_CACHED_PATH", str(db_path))
    monkeypatch.setenv("AIRTABLE_CACHED_ENDPOINT_URL", fake.url)
    monkeypatch.setenv("AIRTABLE_API_KEY", fake.token)
    return db_path


@pytest.fixture
def agent(env, fake):
    api = Api(fake.token, flush="manual")
    table = api.table(BASE, TABLE)
    table.all()
    yield api, table
    api.close()


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _other_app_db(path) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    conn.commit()
    conn.close()
    return path.read_bytes()


def _damage(api, db_path, old: bytes, new: bytes) -> None:
    """Change bytes in the database file itself (after moving the WAL's content into it)."""
    assert len(old) == len(new)
    store = api.engine.store
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = db_path.read_bytes()
    assert data.count(old) == 1, data.count(old)
    db_path.write_bytes(data.replace(old, new))


# -- 5. backup and restore -------------------------------------------------------------------------


def test_backup_to_the_live_database_is_refused_even_forced(agent, env):
    api, table = agent
    rid = table.first()["id"]
    table.update(rid, {"Score": 61})
    before = env.read_bytes()
    for extra in ([], ["--force"]):
        result = run("backup", "--to", str(env), *extra)
        assert result.exit_code == 1
        assert "live database" in result.output
    assert env.read_bytes() == before
    assert [op["fields"] for op in api.pending()] == [{"Score": 61}]
    assert api.flush().ok


def test_backup_over_an_existing_file_needs_force(agent, tmp_path):
    other = tmp_path / "invoices.db"
    original = _other_app_db(other)
    result = run("backup", "--to", str(other))
    assert result.exit_code == 1 and "--force" in result.output and "exists" in result.output
    assert other.read_bytes() == original
    result = run("backup", "--to", str(other), "--force", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["backup"] == str(other)
    assert stat.S_IMODE(other.stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", ["empty", "another application's"])
def test_restore_of_a_file_that_is_not_a_cache_is_refused_clearly(agent, env, tmp_path, kind):
    api, table = agent
    table.update(table.first()["id"], {"Score": 62})
    source = tmp_path / "other.db"
    if kind == "empty":
        source.write_bytes(b"")
    else:
        _other_app_db(source)
    result = run("restore", str(source), "--yes")
    assert result.exit_code == 1
    assert "restore refused" in result.output and "not an airtable_cached database" in result.output \
        or "is empty" in result.output
    assert "no such table" not in result.output
    assert [op["fields"] for op in api.pending()] == [{"Score": 62}]


# -- 6. checksums, check, salvage ------------------------------------------------------------------


def test_a_flipped_byte_in_a_queued_value_is_caught_by_check_and_never_sent(agent, env, fake):
    api, table = agent
    target, other = table.all()[:2]
    table.update(target["id"], {"Score": 4242})
    table.update(other["id"], {"Score": 17})
    _damage(api, env, b'{"Score":4242}', b'{"Score":4243}')
    result = run("check", "--quick", "--fail-on", "error", "--json")  # the health check sees it too
    findings = {f["code"]: f for f in json.loads(result.output)["findings"]}
    assert result.exit_code == 2 and "queue-checksum" in findings
    result = api.flush()
    by_id = {r["id"]: r["fields"].get("Score") for r in fake.records(BASE, TABLE)}
    assert by_id[other["id"]] == 17  # the intact write went out
    assert by_id[target["id"]] not in (4242, 4243)  # the damaged one did not
    [dead] = [op for op in api.pending() if op["state"] == "dead"]
    assert dead["last_error"]["body"]["error"]["type"] == "CORRUPTED_WRITE"
    assert table.get(target["id"])["fields"].get("Score") == by_id[target["id"]]  # no longer shown either


def test_health_check_reads_what_agents_read(agent, env):
    api, table = agent
    fields = table.first()["fields"]
    # Garble one cached record: SQLite's quick_check cannot see it; every all() would fail on it.
    needle = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
    store = api.engine.store
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = env.read_bytes()
    assert needle in data
    env.write_bytes(data.replace(needle, b"[" + needle[1:]))
    raw = sqlite3.connect(env)
    assert raw.execute("PRAGMA quick_check").fetchone()[0] == "ok"  # SQLite alone sees nothing wrong
    raw.close()
    api.engine.model.clear()  # what this process decoded before the damage stays readable to it
    with pytest.raises(ValueError):
        table.all()  # what an agent meets
    result = run("check", "--quick", "--fail-on", "error", "--json")
    assert result.exit_code == 2
    codes = {f["code"] for f in json.loads(result.output)["findings"]}
    assert "unreadable-records" in codes


def test_salvage_copies_every_readable_queued_write_into_a_fresh_file(agent, env, fake, tmp_path):
    api, table = agent
    a, b, c = table.all()[:3]
    table.update(a["id"], {"Score": 1111})
    table.update(b["id"], {"Score": 2222})
    created = table.create({"Full Name": "Salvaged Create"})
    table.update(c["id"], {"Company": "Garbled Inc"})
    _damage(api, env, b'{"Company":"Garbled Inc"}', b'{"Company":"Garbled Inc"]')  # no longer JSON
    saved = tmp_path / "salvaged.sqlite3"
    result = run("salvage", "--to", str(saved), "--json")
    data = json.loads(result.output)
    assert result.exit_code == 1, result.output  # the file is made; one write could not be copied
    assert len(data["copied"]) == 3 and [s["reason"] for s in data["skipped"]] == ["garbled fields"]
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert run("check", "--path", str(saved), "--fail-on", "error").exit_code == 0
    # The agents work on the salvaged file: their own create shows, and the queue reaches Airtable.
    rescued = Api(fake.token, path=saved, flush="manual")
    try:
        rescued_table = rescued.table(BASE, TABLE)
        assert rescued_table.get(created["id"])["fields"] == {"Full Name": "Salvaged Create"}
        assert rescued.flush().ok
    finally:
        rescued.close()
    by_id = {r["id"]: r["fields"] for r in fake.records(BASE, TABLE)}
    assert by_id[a["id"]]["Score"] == 1111 and by_id[b["id"]]["Score"] == 2222
    assert [f for f in by_id.values() if f.get("Full Name") == "Salvaged Create"]
    assert by_id[c["id"]].get("Company") != "Garbled Inc"


def test_salvage_never_writes_over_an_existing_file(agent, env, tmp_path):
    other = tmp_path / "keep.db"
    original = _other_app_db(other)
    result = run("salvage", "--to", str(other))
    assert result.exit_code == 1 and "exists" in result.output
    assert other.read_bytes() == original


def test_salvage_has_help_with_an_example():
    result = run("salvage", "--help")
    assert result.exit_code == 0 and "Example" in result.output


# -- 7. the locks folder ---------------------------------------------------------------------------


def test_locks_folder_is_private_and_check_tightens_a_loose_one(agent, env):
    api, table = agent
    table.update(table.first()["id"], {"Score": 3})
    api.flush()
    locks = env.with_name(env.name + ".locks")
    assert stat.S_IMODE(locks.stat().st_mode) == 0o700
    files = [p for p in locks.iterdir() if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    os.chmod(locks, 0o755)
    os.chmod(files[0], 0o644)
    result = run("check", "--json")
    loose = [f for f in json.loads(result.output)["findings"] if f["code"] == "permissions" and "locks" in f["message"]]
    assert result.exit_code == 2 and len(loose) == 2
    assert run("check", "--fix").exit_code == 0
    assert stat.S_IMODE(locks.stat().st_mode) == 0o700 and stat.S_IMODE(files[0].stat().st_mode) == 0o600


def test_a_write_damaged_after_the_flush_began_is_caught_at_its_claim(agent, env, fake):
    """Verified when claimed, not only when the flush starts: the damaged create is dead-lettered,
    and the update queued behind it for the same record waits with it (never sent to Airtable)."""
    from airtable_cached.store.sqlite.outbox import SqliteOutbox

    api, table = agent
    created = table.create({"Full Name": "Damaged Later"})
    table.update(created["id"], {"Score": 5})
    started = SqliteOutbox.damaged

    def damage_then_check(self, base_id=None, seqs=None, *, endpoint=None):
        if seqs is not None:  # the claim's check: the bytes change just before it
            self.conn.execute("UPDATE outbox SET fields = replace(fields, 'Damaged Later', 'Damaged Latex')"
                              " WHERE op = 'create'")
        return started(self, base_id, seqs, endpoint=endpoint)

    SqliteOutbox.damaged = damage_then_check  # type: ignore[method-assign]
    try:
        result = api.flush()
    finally:
        SqliteOutbox.damaged = started  # type: ignore[method-assign]
    assert [f["error"]["error"]["type"] for f in result.failed] == ["CORRUPTED_WRITE"]
    assert not [r for r in fake.records(BASE, TABLE) if r["fields"].get("Full Name", "").startswith("Damaged")]
    states = {op["op"]: op["state"] for op in api.pending()}
    assert states == {"create": "dead", "update": "pending"}


def test_salvage_reads_row_by_row_past_a_damaged_page(agent, env, fake, tmp_path):
    """A garbled page of the queue's table: reading it whole fails ("database disk image is
    malformed"), as `.recover`-less tools do; salvage still copies every write on the other pages."""
    api, table = agent
    records = table.all()[:60]
    for i, record in enumerate(records):
        table.update(record["id"], {"Company Description": f"MARK-{i:03d}-" + "x" * 900})
    store = api.engine.store
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = store.conn.execute("PRAGMA page_size").fetchone()[0]
    store.close()
    data = bytearray(env.read_bytes())
    page = data.index(b'{"Company Description":"MARK-030-') // page_size
    data[page * page_size] = 0  # the page's type byte: no longer a b-tree page
    env.write_bytes(bytes(data))
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(env).execute("SELECT * FROM outbox").fetchall()
    assert run("check", "--quick").exit_code == 2
    saved = tmp_path / "salvaged.sqlite3"
    result = run("salvage", "--to", str(saved), "--json")
    data_out = json.loads(result.output)
    lost = [s["seq"] for s in data_out["skipped"]]
    assert result.exit_code == 1  # some writes could not be copied, and it says which
    assert lost and all(s["reason"] == "unreadable row" for s in data_out["skipped"])
    assert len(data_out["copied"]) + len(lost) == 60 and len(lost) <= 6
    rescued = Api(fake.token, path=saved, flush="manual", rate_limit=1000)
    try:
        assert rescued.flush().ok
    finally:
        rescued.close()
    marked = [r for r in fake.records(BASE, TABLE) if r["fields"].get("Company Description", "").startswith("MARK-")]
    assert len(marked) == len(data_out["copied"])
