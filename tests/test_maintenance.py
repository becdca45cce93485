"""airtable_cached.ops.maintenance: backups and restore, check, stats, reset, vacuum, the queue."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time

import pytest
import requests
from conftest import BASE, TABLE

from airtable_cached import Api
from airtable_cached.ops import maintenance
from airtable_cached.sync.locks import flush_key


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _seqs(path) -> set[int]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT seq FROM outbox")}
    finally:
        conn.close()


def _codes(findings) -> set[str]:
    return {f.code for f in findings if not f.fixed}


@pytest.fixture
def pulled(table):
    table.all()
    return table


# -- backup and restore ------------------------------------------------------------------------------


def test_backup_during_concurrent_writes_restores_without_losing_a_queued_write(fake, db_path, tmp_path):
    api = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual")
    table = api.table(BASE, TABLE)
    ids = [r["id"] for r in table.all()]
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        i = 0
        try:
            while not stop.is_set() and i < 2000:
                if i % 2:
                    table.create({"Full Name": f"Writer {i}", "Score": i})
                else:
                    table.update(ids[i % len(ids)], {"Score": i})
                i += 1
        except BaseException as exc:  # noqa: BLE001 - surfaced below  # pragma: no cover
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(_seqs(db_path)) < 20:
            time.sleep(0.005)
        made = []
        for _ in range(3):
            before = _seqs(db_path)
            path = maintenance.backup(api.engine.store, tmp_path / "backups", keep=2)
            after = _seqs(db_path)
            in_backup = _seqs(path)
            # Consistent: every write committed before the backup began is in it, nothing invented.
            assert before <= in_backup <= after
            made.append(path)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == sorted(p.name for p in made[-2:])
    chosen = made[-1]
    assert _mode(chosen) == 0o600
    assert [f for f in maintenance.check(chosen, backup_dir=tmp_path / "backups") if f.severity == "error"] == []

    queued_at_backup = _seqs(chosen)
    live_before = _seqs(db_path)
    result = maintenance.restore(chosen, api.settings)
    assert _seqs(db_path) == queued_at_backup
    assert result.writes_lost == sorted(live_before - queued_at_backup)
    assert result.replaced_kept_at and _seqs(result.replaced_kept_at) == live_before
    assert _mode(result.replaced_kept_at) == 0o600
    assert [f for f in maintenance.check(db_path) if f.severity == "error"] == []

    # Every write in the backup reaches Airtable, through the very Api that was open during restore.
    creates = sqlite3.connect(chosen).execute("SELECT COUNT(*) FROM outbox WHERE op = 'create'").fetchone()[0]
    flushed = api.flush()
    assert flushed.failed == [] and flushed.pending == 0
    assert len(fake.records(BASE, TABLE)) == 250 + creates
    api.close()


def test_backup_rotation_and_naming(pulled, api, tmp_path):
    store = api.engine.store
    made = [maintenance.backup(store, tmp_path / "b", keep=3, now=1_700_000_000 + i) for i in range(5)]
    left = maintenance.list_backups(store.path, tmp_path / "b")
    assert left == made[-3:]
    assert made[0].name.startswith("cache-20231114T2213")
    assert all(_mode(p) == 0o600 for p in left)
    exact = maintenance.backup(store, tmp_path / "exact.sqlite3")
    assert exact == tmp_path / "exact.sqlite3" and _mode(exact) == 0o600


def test_restore_refuses_while_a_flush_holds_the_database(pulled, api, tmp_path):
    pulled.update(pulled.all()[0]["id"], {"Score": 1})
    copy = maintenance.backup(api.engine.store, tmp_path / "b")
    locks = api.sync.remote.locks
    held = locks.try_acquire(flush_key(api.settings.endpoint_url, BASE))
    assert held is not None
    try:
        with pytest.raises(maintenance.RestoreRefused, match="flush"):
            maintenance.restore(copy, api.settings)
    finally:
        locks.release(held)
    maintenance.restore(copy, api.settings)  # free again: goes through


def test_restore_refuses_a_damaged_backup(pulled, api, tmp_path):
    copy = maintenance.backup(api.engine.store, tmp_path / "b")
    _corrupt(copy)
    with pytest.raises(maintenance.RestoreRefused):
        maintenance.restore(copy, api.settings)
    assert [f for f in maintenance.check(api.engine.store) if f.severity == "error"] == []


# -- check -------------------------------------------------------------------------------------------


def _corrupt(path) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2 - 8192)
        f.write(os.urandom(3) + b"\xff" * 16384)


def test_check_healthy(pulled, api):
    assert maintenance.check(api.engine.store) == []
    assert maintenance.exit_code([]) == 0


def test_check_detects_a_corrupted_file(pulled, api, tmp_path):
    copy = maintenance.backup(api.engine.store, tmp_path / "b")
    _corrupt(copy)
    findings = maintenance.check(copy)
    assert "corrupt" in _codes(findings)
    assert maintenance.exit_code(findings) == 2


def test_check_detects_garbage_that_is_not_a_database(tmp_path):
    path = tmp_path / "x.sqlite3"
    path.write_bytes(b"not a database at all" * 500)
    os.chmod(path, 0o600)
    findings = maintenance.check(path)
    assert _codes(findings) & {"not-a-database", "corrupt"}


def test_check_detects_a_wrong_schema_version(pulled, api, tmp_path):
    copy = maintenance.backup(api.engine.store, tmp_path / "b")
    conn = sqlite3.connect(copy)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    findings = maintenance.check(copy)
    assert "schema-version" in _codes(findings)
    assert maintenance.exit_code(findings) == 2


def test_check_detects_and_fixes_a_world_readable_database(pulled, api):
    path = api.engine.store.path
    os.chmod(path, 0o644)
    findings = maintenance.check(path)
    assert [f.code for f in findings if f.severity == "error"] == ["permissions"]
    fixed = maintenance.check(path, fix=True)
    assert all(f.fixed for f in fixed)
    assert _mode(path) == 0o600
    assert maintenance.check(path) == []


def test_check_group_readable_backup_is_a_warning(pulled, api):
    copy = maintenance.backup(api.engine.store)
    os.chmod(copy, 0o640)
    findings = maintenance.check(api.engine.store)
    assert [(f.severity, f.code) for f in findings] == [("warning", "permissions")]
    assert maintenance.exit_code(findings) == 1
    assert maintenance.exit_code(findings, fail_on="error") == 0


def test_check_finds_a_write_naming_a_missing_provisional_id(pulled, api):
    created = pulled.create({"Full Name": "Ghost"})
    pulled.update(created["id"], {"Score": 3})
    store = api.engine.store
    with store.transaction() as conn:  # the create vanished (say, a hand edit): the update is stuck
        conn.execute("DELETE FROM outbox WHERE op = 'create'")
    findings = maintenance.check(store)
    assert "queue-orphan" in _codes(findings)
    fixed = maintenance.check(store, fix=True)
    assert [f.fixed for f in fixed if f.code == "queue-orphan"] == [True]
    assert [i["state"] for i in maintenance.queue_list(store)] == ["dead"]
    assert _codes(maintenance.check(store)) == {"queue-dead"}


def test_check_releases_long_expired_claims(pulled, api):
    record = pulled.all()[0]
    pulled.update(record["id"], {"Score": 5})
    store = api.engine.store
    with store.transaction() as conn:
        conn.execute("UPDATE outbox SET state = 'inflight', claimed_until = 1")
    assert "queue-stale-claim" in _codes(maintenance.check(store))
    maintenance.check(store, fix=True)
    assert [i["state"] for i in maintenance.queue_list(store)] == ["pending"]


# -- stats, status -----------------------------------------------------------------------------------


def test_stats_counts_hits_misses_fallbacks_requests_and_429s(fake, api, table, clock):
    records = table.all()
    table.get(records[0]["id"])
    table.all(formula="REGEX_MATCH({Email}, 'x')")  # something the local evaluator may not do
    with pytest.raises(requests.HTTPError):
        table.get("recAAAAAAAAAAAAAA")
    table.update(records[0]["id"], {"Score": 9})
    fake.fail_next(429, method="PATCH")
    assert api.flush().failed == []
    api.engine.stats.write()
    data = maintenance.stats(api.engine.store)
    (t,) = data["tables"]
    assert t["kinds"]["list.local"]["count"] >= 1
    assert t["kinds"]["get.local"]["count"] == 1
    assert data["reads"]["local"] >= 2
    assert data["reads"]["misses"] + data["reads"]["remote"] >= 1
    assert t["kinds"]["list.local"]["p50_ms"] is not None and t["kinds"]["list.local"]["p95_ms"] is not None
    assert data["requests"]["rate_limited"] == 1
    assert data["requests"]["sent"] >= 4  # schema, 3 pages, 429, PATCH
    assert data["bytes"]["file"] > 0 and data["bytes"]["records_json"] > 0


def test_status_per_table_and_base(pulled, api, clock):
    pulled.update(pulled.all()[0]["id"], {"Score": 1})
    data = maintenance.status(api.engine.store, api.settings, now=clock() + 10)
    (t,) = data["tables"]
    assert t["records"] == 250 and t["pending"] == 1 and t["dead"] == 0
    assert t["fresh"] and t["age"] == pytest.approx(10)
    assert t["oldest_pending_age"] == pytest.approx(10)
    assert data["queue"] == {"pending": 1, "dead": 0}


# -- reset, vacuum -----------------------------------------------------------------------------------


def test_reset_keeps_the_queue_and_the_agents_view(pulled, api, fake):
    rec = pulled.all()[0]
    pulled.update(rec["id"], {"Company": "Kept Co"})
    new = pulled.create({"Full Name": "Local only"})
    out = maintenance.reset(api.engine.store, f"{BASE}/{TABLE}")
    assert out["records"] == 249 and out["writes"] == 0
    assert not pulled.is_fresh()
    assert pulled.get(rec["id"])["fields"]["Company"] == "Kept Co"  # pulls again, rebases the write
    assert pulled.get(new["id"])["fields"]["Full Name"] == "Local only"
    assert len(maintenance.queue_list(api.engine.store)) == 2
    everything = maintenance.reset(api.engine.store, include_queue=True)
    assert everything["writes"] == 2 and maintenance.queue_list(api.engine.store) == []
    with pytest.raises(maintenance.MaintenanceError):
        maintenance.reset(api.engine.store, "NoSuchTable")


def test_reseed_pulls_again(pulled, api, fake, clock):
    out = maintenance.reseed(api.engine.store, api.settings, fake.token, clock=clock, sleep=clock.sleep)
    assert out["pulled"][0]["records"] == 250
    assert api.engine.store.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 250


def test_vacuum_prunes_old_log_entries(pulled, api):
    store = api.engine.store
    with store.transaction() as conn:
        conn.execute("INSERT INTO sync_log (at, base_id, kind, method, status) VALUES (1, 'appX', 'pull', 'GET', 200)")
    out = maintenance.vacuum(store, keep_log_days=30)
    assert out["sync_log_pruned"] == 1
    assert store.conn.execute("SELECT COUNT(*) FROM sync_log WHERE at = 1").fetchone()[0] == 0


# -- the queue ---------------------------------------------------------------------------------------


def test_queue_drop_recomputes_the_view(pulled, api):
    rec = pulled.all()[0]
    pulled.update(rec["id"], {"Company": "Dropped Co"})
    (item,) = maintenance.queue_list(api.engine.store)
    maintenance.queue_drop(api.engine.store, [item["seq"]])
    assert pulled.get(rec["id"])["fields"].get("Company") == rec["fields"].get("Company")
    # A dropped create takes its later writes along, and the record disappears from reads.
    new = pulled.create({"Full Name": "Never"})
    pulled.update(new["id"], {"Score": 1})
    first = maintenance.queue_list(api.engine.store)[0]
    done = maintenance.queue_drop(api.engine.store, [first["seq"]])
    assert len(done["dropped"]) == 2
    assert new["id"] not in {r["id"] for r in pulled.all()}
    with pytest.raises(maintenance.MaintenanceError):
        maintenance.queue_drop(api.engine.store, [9999])


def test_queue_retry_sends_a_dead_letter_again_after_the_cause_is_fixed(pulled, api, fake):
    rec = pulled.all()[0]
    pulled.update(rec["id"], {"Company": "Retry Co"})
    fake.fail_next(422, method="PATCH", body={"error": {"type": "INVALID_VALUE_FOR_COLUMN", "message": "nope"}})
    result = api.flush()
    assert result.failed and result.failed[0]["dead"]
    # Dead letters stop shaping reads; a retry brings the write back into view and into the queue.
    assert pulled.get(rec["id"])["fields"].get("Company") == rec["fields"].get("Company")
    done = maintenance.queue_retry(api.engine.store)
    assert len(done["requeued"]) == 1
    assert pulled.get(rec["id"])["fields"]["Company"] == "Retry Co"
    assert api.flush().failed == []
    assert next(r for r in fake.records(BASE, TABLE) if r["id"] == rec["id"])["fields"]["Company"] == "Retry Co"


def test_pull_skips_fresh_tables_unless_forced(pulled, api, fake, clock):
    out = maintenance.pull(api.engine.store, api.settings, fake.token, clock=clock, sleep=clock.sleep)
    assert out == [{"base_id": BASE, "table": TABLE, "pulled": False, "records": None}]
    pages = []
    out = maintenance.pull(api.engine.store, api.settings, fake.token, BASE, force=True,
                           on_page=lambda t, n: pages.append(n), clock=clock, sleep=clock.sleep)
    assert out[0]["pulled"] and out[0]["records"] == 250 and sum(pages) == 250
