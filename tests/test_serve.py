"""The sync process (serve-sync) and the deployment files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import BASE, TABLE

from airtable_cached import Api
from airtable_cached.ops import maintenance
from airtable_cached.ops.serve import DAY, SyncService

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def service_for(api, clock, tmp_path):
    made = []

    def build(**options) -> SyncService:
        options.setdefault("tables", [f"{BASE}/{TABLE}"])
        options.setdefault("backup_dir", tmp_path / "backups")
        service = SyncService(api.settings, api.api_key, clock=clock, wait=clock.sleep, **options)
        made.append(service)
        return service

    yield build
    for service in made:
        service.close()


def test_pulls_on_schedule_flushes_and_backs_up_daily(fake, api, table, clock, service_for, tmp_path):
    service = service_for(pull_every=60, flush_every=1, backup_keep=2)
    stats = service.run(max_cycles=1)
    assert stats.pulls == 1 and len(stats.backups) == 1
    table.create({"Full Name": "Queued while serving"})
    wait_until(lambda: BASE in api.engine.authorized)  # the write's access check runs in the background
    fake.reset_log()
    service.run(max_cycles=2)  # the table is fresh: no pull, only the flush
    assert service.stats.pulls == 1 and service.stats.sent == 1
    assert fake.request_count(method="GET") == 0
    assert any(r["fields"].get("Full Name") == "Queued while serving" for r in fake.records(BASE, TABLE))
    clock.advance(61)
    service.run(max_cycles=3)
    assert service.stats.pulls == 2
    for _ in range(3):  # three more days: backups rotate to the newest two
        clock.advance(DAY)
        service.run(max_cycles=service.stats.cycles + 1)
    assert len(service.stats.backups) == 4
    assert len(maintenance.list_backups(api.settings.path, tmp_path / "backups")) == 2


def test_pulls_cached_tables_by_default(fake, api, table, clock, service_for):
    table.all()
    clock.advance(api.settings.max_age + 1)
    service = service_for(tables=(), backup_every=None)
    assert [base for base, _table in service.targets()] == [BASE]
    service.run(max_cycles=1)
    assert service.stats.pulls == 1


def test_a_failing_pull_does_not_stop_the_flush(fake, api, table, clock, service_for):
    table.all()
    table.create({"Full Name": "Still sent"})
    service = service_for(tables=[f"{BASE}/NoSuchTable"], backup_every=None)
    stats = service.run(max_cycles=1)
    assert stats.pull_errors == 1 and stats.sent == 1


def test_stop_event_ends_the_loop_with_the_queue_intact(fake, api, table, clock, service_for):
    table.all()
    stop = threading.Event()

    def wait(seconds: float) -> None:
        clock.sleep(seconds)
        stop.set()

    service = SyncService(api.settings, api.api_key, tables=[f"{BASE}/{TABLE}"], backup_every=None,
                          clock=clock, wait=wait, stop_event=stop)
    try:
        stats = service.run()  # no max_cycles: only the stop event ends it
    finally:
        service.close()
    assert stats.cycles == 1


def test_second_signal_abandons_a_waiting_request_without_losing_the_write(fake, api, table, clock, service_for):
    table.all()
    created = table.create({"Full Name": "Survives abandon"})
    service = service_for(backup_every=None, pull_every=1e9)
    fake.fail_next(429, method="POST")  # the retry waits out Airtable's 30 s penalty

    def impatient(seconds: float) -> None:
        service.request_stop()
        service.request_stop()
        clock.sleep(seconds)

    service._wait = impatient
    stats = service.run(max_cycles=1)
    assert stats.abandoned
    (item,) = maintenance.queue_list(api.engine.store)
    assert item["record_id"] == created["id"]
    # Its claim expires and a later flush sends it (reconciling the create first).
    clock.advance(api.settings.claim_timeout + 60)
    assert api.flush().failed == []
    assert [r for r in fake.records(BASE, TABLE) if r["fields"].get("Full Name") == "Survives abandon"]


def test_needs_a_token(api):
    with pytest.raises(Exception, match="token"):
        SyncService(api.settings, "")


def test_serve_sync_survives_sigterm_without_losing_a_write(fake, tmp_path, monkeypatch):
    fake.latency = 0.05
    db = tmp_path / "serve.sqlite3"
    monkeypatch.setenv("AIRTABLE_CACHED_PATH", str(db))
    monkeypatch.setenv("AIRTABLE_CACHED_ENDPOINT_URL", fake.url)
    monkeypatch.setenv("AIRTABLE_CACHED_CLAIM_TIMEOUT", "1")
    env = {**os.environ, "AIRTABLE_API_KEY": fake.token}  # the sync process paces at Airtable's 5/s
    monkeypatch.setenv("AIRTABLE_CACHED_RATE_LIMIT", "200")  # this test's own flush, after it
    api = Api(fake.token, flush="manual")
    table = api.table(BASE, TABLE)
    table.all()
    names = [f"Sigterm {i}" for i in range(40)]
    for i, name in enumerate(names):
        table.create({"Full Name": name, "Score": i})

    def sent() -> list[str]:
        return [r["fields"]["Full Name"] for r in fake.records(BASE, TABLE)
                if r["fields"].get("Full Name", "").startswith("Sigterm")]

    proc = subprocess.Popen(
        [sys.executable, "-m", "airtable_cached", "serve-sync", "--table", f"{BASE}/{TABLE}",
         "--flush-every", "0.05", "--backup-every", "0", "--pull-every", "3600", "--stop-grace", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not sent():
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)  # mid-queue: 10 of 40 sent, the next request paced
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    assert "serve-sync stopped" in err
    assert fake.token not in out + err
    queued = [i["fields"]["Full Name"] for i in api.pending()]
    assert 0 < len(sent()) < len(names) and queued  # it really stopped mid-queue
    # Nothing lost: every write is on Airtable or still queued.
    assert sorted(set(sent()) | set(queued)) == sorted(names)
    # The rest goes out once the claims expire: each record exactly once (creates reconciled).
    time.sleep(1.1)
    assert api.flush().failed == []
    assert sorted(sent()) == sorted(names)
    api.close()


def _docker_answers() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed"
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed: {exc}"
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["docker info failed"])[-1]
    return None


def test_deployment_files_are_consistent():
    dockerfile = (ROOT / "Dockerfile").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "HEALTHCHECK" in dockerfile and "airtable-cached" in dockerfile and "check" in dockerfile
    assert "serve-sync" in compose and "volumes:" in compose and "airtable-cached" in compose
    docs = (ROOT / "docs" / "deployment.md").read_text()
    for word in ("AIRTABLE_CACHED_PATH", "AIRTABLE_API_KEY", "restore", "backup", "Upgrading"):
        assert word in docs


def test_docker_image_builds():
    reason = _docker_answers()
    if reason:
        pytest.skip(f"no Docker engine: {reason}")
    done = subprocess.run(["docker", "build", "-t", "airtable-cached:test", str(ROOT)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    ran = subprocess.run(["docker", "run", "--rm", "airtable-cached:test", "airtable-cached", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and "serve-sync" in ran.stdout


def wait_until(condition, timeout: float = 10.0) -> None:
    """Real time, bounded: for what another thread of the process does."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
