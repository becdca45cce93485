"""The airtable-cached CLI, each command through click's runner against a real database file and the
fake Airtable on loopback."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import types

import pytest
from click.testing import CliRunner
from conftest import BASE, TABLE

from airtable_cached import Api
from airtable_cached.ops.cli import main

COMMANDS = [
    ["status"], ["pull"], ["flush"], ["queue"], ["queue", "list"], ["queue", "retry"], ["queue", "drop"],
    ["backup"], ["restore"], ["check"], ["stats"], ["reset"], ["reseed"], ["vacuum"], ["serve-sync"], ["demo"],
]


@pytest.fixture
def env(monkeypatch, fake, db_path):
    monkeypatch.setenv("AIRTABLE_CACHED_PATH", str(db_path))
    monkeypatch.setenv("AIRTABLE_CACHED_ENDPOINT_URL", fake.url)
    monkeypatch.setenv("AIRTABLE_CACHED_RATE_LIMIT", "1000")
    monkeypatch.setenv("AIRTABLE_API_KEY", fake.token)
    return db_path


@pytest.fixture
def agent(env, fake):
    """An agent's Api on the same file, real clock (the CLI uses real time)."""
    api = Api(fake.token, flush="manual")
    table = api.table(BASE, TABLE)
    table.all()
    yield api, table
    api.close()


def run(*args: str, input: str | None = None):
    result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return result


def as_json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c))
def test_every_command_has_help_with_an_example(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output


def test_run_command_is_registered_lazily():
    assert "run" in main.list_commands(None)


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "airtable_cached", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "serve-sync" in done.stdout


def test_status(agent, fake):
    api, table = agent
    table.update(table.first()["id"], {"Score": 3})
    data = as_json(run("status", "--json"))
    (t,) = data["tables"]
    assert t["records"] == 250 and t["pending"] == 1 and t["fresh"]
    assert data["bases"][BASE]["requests_last_hour"] >= 3
    text = run("status")
    assert text.exit_code == 0 and "Leads" in text.output


def test_status_without_a_database_fails(env):
    result = run("status")
    assert result.exit_code == 1 and "no database" in result.output


def test_pull_needs_a_token(env, monkeypatch):
    monkeypatch.delenv("AIRTABLE_API_KEY")
    result = run("pull", BASE, TABLE)
    assert result.exit_code == 2 and "AIRTABLE_API_KEY" in result.output


def test_pull_and_flush(env, fake):
    data = as_json(run("pull", BASE, TABLE, "--json"))
    assert data == [{"base_id": BASE, "table": TABLE, "pulled": True, "records": 250, "kind": "full"}]
    skipped = run("pull")
    assert skipped.exit_code == 0 and "fresh" in skipped.output
    assert as_json(run("pull", "--force", "--json"))[0]["records"] == 250
    assert fake.token not in skipped.output

    api = Api(fake.token, flush="manual")
    table = api.table(BASE, TABLE)
    table.create({"Full Name": "From CLI flush"})
    flushed = as_json(run("flush", "--json", "--base", BASE))
    assert len(flushed["sent"]) == 1 and flushed["pending"] == 0
    assert any(r["fields"].get("Full Name") == "From CLI flush" for r in fake.records(BASE, TABLE))


def test_flush_exits_non_zero_when_a_write_fails(agent, fake):
    api, table = agent
    table.update(table.first()["id"], {"Score": 1})
    fake.fail_next(422, method="PATCH")
    result = run("flush")
    assert result.exit_code == 1 and "dead-lettered" in result.output


def test_pull_error_is_one_line_and_non_zero(env, fake, monkeypatch):
    monkeypatch.setenv("AIRTABLE_API_KEY", "patWRONG.token")
    result = run("pull", BASE, TABLE)
    assert result.exit_code == 1
    assert "patWRONG" not in result.output and "Traceback" not in result.output


def test_queue_list_retry_drop(agent, fake):
    api, table = agent
    first = table.first()
    table.update(first["id"], {"Company": "Retry Co"})
    fake.fail_next(422, method="PATCH", body={"error": {"type": "INVALID_VALUE_FOR_COLUMN", "message": "no"}})
    assert run("flush").exit_code == 1
    (dead,) = as_json(run("queue", "list", "--state", "dead", "--json"))
    assert dead["last_error"]["status"] == 422
    assert "INVALID_VALUE_FOR_COLUMN" in run("queue", "list").output

    # The cause is gone (the fault was one-off): retry sends it again.
    retried = as_json(run("queue", "retry", str(dead["seq"]), "--json"))
    assert retried["requeued"] == [dead["seq"]]
    assert sum(len(r["sent"]) for r in retried["flush"]) == 1
    assert next(r for r in fake.records(BASE, TABLE) if r["id"] == first["id"])["fields"]["Company"] == "Retry Co"
    assert as_json(run("queue", "list", "--json")) == []

    # Drop: asks first, refuses on "n", drops with --yes, and the read view follows.
    table.update(first["id"], {"Company": "Dropped Co"})
    (item,) = as_json(run("queue", "list", "--json"))
    refused = run("queue", "drop", str(item["seq"]), input="n\n")
    assert refused.exit_code == 1 and len(as_json(run("queue", "list", "--json"))) == 1
    dropped = as_json(run("queue", "drop", str(item["seq"]), "--yes", "--json"))
    assert dropped["dropped"] == [item["seq"]]
    assert table.get(first["id"])["fields"]["Company"] == "Retry Co"
    assert run("queue", "drop").exit_code == 2  # neither ids nor --all
    assert run("queue", "retry", "12345").exit_code == 1


def test_queue_retry_without_token_only_requeues(agent, fake, monkeypatch):
    api, table = agent
    table.update(table.first()["id"], {"Score": 2})
    fake.fail_next(422, method="PATCH")
    api.flush()
    monkeypatch.delenv("AIRTABLE_API_KEY")
    result = run("queue", "retry", "--all")
    assert result.exit_code == 0 and "no token" in result.output
    assert [i["state"] for i in as_json(run("queue", "list", "--json"))] == ["pending"]


def test_backup_and_restore(agent, fake, tmp_path):
    api, table = agent
    table.update(table.first()["id"], {"Score": 7})
    made = as_json(run("backup", "--to", str(tmp_path / "b"), "--keep", "2", "--json"))
    path = made["backup"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    table.update(table.first()["id"], {"Score": 8})  # after the backup: restoring would drop it
    refused = run("restore", path, input="n\n")
    assert refused.exit_code == 1
    restored = as_json(run("restore", path, "--yes", "--json"))
    assert restored["pending"] == 1 and len(restored["writes_lost"]) == 1
    assert os.path.exists(restored["replaced_kept_at"])
    assert table.get(table.first()["id"])["fields"]["Score"] == 7
    assert run("check").exit_code == 0


def test_check_exit_codes(agent, fake, tmp_path, db_path):
    api, table = agent
    healthy = run("check")
    assert healthy.exit_code == 0 and "ok" in healthy.output
    os.chmod(db_path, 0o644)
    world = run("check", "--json")
    assert world.exit_code == 2
    assert [f["code"] for f in json.loads(world.stdout)["findings"]] == ["permissions"]
    assert run("check", "--fix").exit_code == 0
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600

    copy = as_json(run("backup", "--to", str(tmp_path / "copy.sqlite3"), "--json"))["backup"]
    conn = sqlite3.connect(copy)
    conn.execute("PRAGMA user_version = 42")
    conn.close()
    wrong = run("check", "--path", copy, "--json")
    assert wrong.exit_code == 2 and "schema-version" in wrong.stdout

    corrupt = as_json(run("backup", "--to", str(tmp_path / "corrupt.sqlite3"), "--json"))["backup"]
    size = os.path.getsize(corrupt)
    with open(corrupt, "r+b") as f:
        f.seek(size // 2 - 8192)
        f.write(b"\xa5" * 16384)
    damaged = run("check", "--path", corrupt)
    assert damaged.exit_code == 2 and "error" in damaged.output
    missing = run("check", "--path", str(tmp_path / "missing.sqlite3"))
    assert missing.exit_code == 1 and "no database at" in missing.output  # as status says it


def test_check_warning_exit_code_and_fail_on(agent, fake):
    api, table = agent
    table.update(table.first()["id"], {"Score": 1})
    fake.fail_next(422, method="PATCH")
    api.flush()
    assert run("check").exit_code == 1  # a dead letter is a warning
    assert run("check", "--quick", "--fail-on", "error").exit_code == 0


def test_stats(agent):
    api, table = agent
    table.get(table.first()["id"])
    api.engine.stats.write()
    data = as_json(run("stats", "--json"))
    assert data["reads"]["local"] >= 2 and data["requests"]["sent"] >= 3
    text = run("stats")
    assert text.exit_code == 0 and "hit ratio" in text.output


def test_reset_reseed_vacuum(agent, fake):
    api, table = agent
    table.create({"Full Name": "Queued"})
    out = as_json(run("reset", "--table", TABLE, "--json"))
    assert out["records"] == 250 and out["writes"] == 0
    assert run("reset", "--include-queue", input="n\n").exit_code == 1
    assert len(as_json(run("queue", "list", "--json"))) == 1
    assert run("reset", "--table", "Nope").exit_code == 1
    reseeded = as_json(run("reseed", "--json"))
    assert reseeded["pulled"][0]["records"] == 250
    vac = as_json(run("vacuum", "--keep-log-days", "0", "--json"))
    assert vac["sync_log_pruned"] >= 1
    assert run("reset", "--include-queue", "--yes").exit_code == 0
    assert as_json(run("queue", "list", "--json")) == []


def test_serve_sync_one_cycle(agent, fake, tmp_path):
    api, table = agent
    table.create({"Full Name": "Served"})
    result = run("serve-sync", "--max-cycles", "1", "--backup-dir", str(tmp_path / "b"), "--log-level", "WARNING")
    assert result.exit_code == 0, result.output
    assert any(r["fields"].get("Full Name") == "Served" for r in fake.records(BASE, TABLE))
    assert len(list((tmp_path / "b").iterdir())) == 1


def test_demo_delegates_to_the_demo_module(monkeypatch):
    seen = {}

    def fake_main(argv=None):
        seen["argv"] = argv
        return 3

    monkeypatch.setitem(sys.modules, "airtable_cached.ops.demo", types.SimpleNamespace(main=fake_main))
    result = run("demo", "--steps", "2")
    assert result.exit_code == 3 and seen["argv"] == ["--steps", "2"]


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the terminal's other end closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def test_pull_shows_a_progress_bar_on_a_terminal_and_stays_quiet_otherwise(env, fake):
    import pty

    command = [sys.executable, "-m", "airtable_cached", "pull", BASE, TABLE, "--force"]
    controller, terminal = pty.openpty()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=terminal, timeout=60)
    os.close(terminal)
    on_terminal = _read_all(controller)
    os.close(controller)
    assert done.returncode == 0
    assert "pulling" in on_terminal
    piped = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and "pulling" not in piped.stderr
    quiet = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and "pulling" not in quiet.stderr
    json.loads(quiet.stdout)
