"""Defects found in the crash/restart review (issue 10), each shown against the project's fake
Airtable over loopback and a real cache file: `check --fix` of an orphaned write, read statistics
of a short-lived agent, the token check in the request log, one answer for a missing database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import requests
from click.testing import CliRunner

from airtable_cached import Api
from airtable_cached import http as cached_http
from airtable_cached.ops import maintenance
from airtable_cached.ops.cli import main
from tests.conftest import BASE, TABLE

ROOT = Path(__file__).resolve().parent.parent


def cli_env(db: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRTABLE_CACHED_")}
    env.update({"AIRTABLE_CACHED_PATH": str(db), "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
    env.update(extra)
    return env


def test_check_fix_of_an_orphaned_write_in_a_fresh_process(fake, db_path):
    """The CLI opens the file itself: the fix used to hold BEGIN IMMEDIATE on one connection and
    open (and migrate) another in the same thread, "database is locked" after 30 s."""
    with Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual") as api:
        table = api.table(BASE, TABLE)
        created = table.create({"Full Name": "Ghost"})
        table.update(created["id"], {"Score": 3})
        with api.engine.store.transaction() as conn:  # the create vanished: the update is stuck
            conn.execute("DELETE FROM outbox WHERE op = 'create'")
    proc = subprocess.run(
        [sys.executable, "-m", "airtable_cached", "check", "--fix", "--json"],
        env=cli_env(db_path), cwd=ROOT, capture_output=True, text=True, timeout=20,
    )
    report = json.loads(proc.stdout)
    orphan = [f for f in report["findings"] if f["code"] == "queue-orphan"]
    assert orphan and orphan[0]["fixed"] is True, proc.stdout + proc.stderr
    with Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual") as api:
        assert [op["state"] for op in api.pending()] == ["dead"]


def test_check_and_status_without_a_database_say_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRTABLE_CACHED_PATH", str(tmp_path / "nothing-here.sqlite3"))
    status = CliRunner().invoke(main, ["status"])
    check = CliRunner().invoke(main, ["check"])
    assert status.exit_code == check.exit_code == 1
    assert check.output == status.output
    assert "no database at" in check.output and "pull a table first" in check.output


def test_a_short_lived_agents_reads_are_counted(fake, db_path):
    """20 reads in a process that lives a second: all are written at exit; the first one, which
    pulled the table, is not counted as a local read."""
    script = textwrap.dedent(
        f"""
        from airtable_cached import Api
        table = Api({fake.token!r}, endpoint_url={fake.url!r}, path={str(db_path)!r}, flush="manual").table({BASE!r}, {TABLE!r})
        for _ in range(20):
            table.first()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, env=cli_env(db_path))
    with Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual") as api:
        data = maintenance.stats(api.engine.store)
    assert data["reads"]["local"] == 19 and data["reads"]["remote"] == 1
    kinds = data["tables"][0]["kinds"]
    assert kinds["list.local"]["count"] == 19 and kinds["list.pull"]["count"] == 1
    # The pull's wait is not in the local reads' latency any more.
    assert kinds["list.local"]["mean_ms"] < kinds["list.pull"]["mean_ms"]
    assert kinds["list.local"]["p95_ms"] < kinds["list.pull"]["p95_ms"]


def test_a_closed_api_writes_its_read_statistics(fake, db_path):
    api = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual")
    table = api.table(BASE, TABLE)
    for _ in range(3):
        table.first()
    api.close()
    with Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual") as again:
        assert maintenance.stats(again.engine.store)["reads"]["local"] == 2


def test_the_token_check_is_in_the_request_log(fake, db_path):
    """What status counts for the base is what Airtable was sent, the token check (whoami) included."""
    cached_http.install(path=str(db_path), flush="manual", endpoint_url=fake.url, rate_limit=1000)
    try:
        fake.reset_log()
        answer = requests.get(f"{fake.url}/v0/{BASE}/{TABLE}", headers={"Authorization": f"Bearer {fake.token}"},
                              params={"maxRecords": 3}, timeout=10)
        assert answer.status_code == 200
    finally:
        cached_http.uninstall()
    assert fake.request_count(path_contains="whoami") == 1
    with Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual") as api:
        status = maintenance.status(api.engine.store, api.settings)
        by_kind = maintenance.stats(api.engine.store)["requests"]["by_kind"]
    assert status["bases"][BASE]["requests_last_hour"] == fake.request_count()
    assert by_kind["whoami"] == {"200": 1}


def test_a_demo_run_leaves_no_folder_behind(tmp_path, monkeypatch, capsys):
    """The demo's scratch cache lives in a temporary folder that is removed when it ends."""
    from airtable_cached.ops import demo

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("AIRTABLE_CACHED_FEED", "webhooks")  # the demo as users run it (conftest turns it off)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again
    assert demo.main(["--steps", "1", "--latency", "0"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert "temporary, removed now" in capsys.readouterr().out
