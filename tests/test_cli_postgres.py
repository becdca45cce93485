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


def test_check_quick_on_postgresql_runs_the_same_checks_and_says_what_it_cannot_shorten(cached, pg_url):
    quick = _cli("check", "--quick", "--fail-on", "error", "--url", pg_url, "--json")  # a container's health check
    whole = _cli("check", "--url", pg_url, "--json")
    assert quick.exit_code == whole.exit_code == 0, quick.output
    found = json.loads(quick.output)["findings"]
    assert [f["code"] for f in found] == [f["code"] for f in json.loads(whole.output)["findings"]]
    assert any("--quick" in f["message"] and "integrity" in f["message"] for f in found)


def _dead_letter_an_update(leads, pg_url, company: str) -> int:
    """Send what is queued, then queue an update and have Airtable refuse it: its seq, now a dead letter."""
    api = Api(leads.token, endpoint_url=leads.url, url=pg_url, flush="manual")
    table = api.table(BASE, TABLE)
    assert api.flush().ok
    table.update(table.all()[1]["id"], {"Company": company})
    leads.fail_next(422, method="PATCH", body={"error": {"type": "INVALID_VALUE_FOR_COLUMN", "message": "no"}})
    assert api.flush().failed
    api.close()
    (dead,) = json.loads(_cli("queue", "list", "--state", "dead", "--url", pg_url, "--json").output)
    return dead["seq"]


def test_queue_retry_sends_a_dead_letter_again_on_postgresql(cached, leads, pg_url, monkeypatch):
    monkeypatch.setenv("AIRTABLE_CACHED_ENDPOINT_URL", leads.url)
    seq = _dead_letter_an_update(leads, pg_url, "retried")
    retried = _cli("queue", "retry", str(seq), "--url", pg_url, "--token", leads.token, "--json")
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.output)["requeued"] == [seq]
    companies = [r["fields"].get("Company") for r in leads.records(BASE, TABLE)]
    assert companies.count("retried") == 1 and companies.count("queued") == 1  # each sent once
    assert json.loads(_cli("queue", "list", "--url", pg_url, "--json").output) == []


def test_queue_drop_forgets_dead_letters_on_postgresql(cached, leads, pg_url):
    seq = _dead_letter_an_update(leads, pg_url, "dropped")
    api = Api(leads.token, endpoint_url=leads.url, url=pg_url, flush="manual")
    table = api.table(BASE, TABLE)
    table.update(cached, {"Company": "still pending"})
    dropped = _cli("queue", "drop", "--all", "--yes", "--url", pg_url, "--json")
    assert dropped.exit_code == 0, dropped.output
    assert json.loads(dropped.output)["dropped"] == [seq]
    left = json.loads(_cli("queue", "list", "--url", pg_url, "--json").output)
    assert [(w["record_id"], w["state"]) for w in left] == [(cached, "pending")]  # not a dead letter: it stays
    read = table.all(formula="{Company} = 'dropped'")
    api.close()
    assert read == []  # reads stopped seeing the dropped write


def test_reseed_pulls_again_and_keeps_the_queue_on_postgresql(cached, leads, pg_url, monkeypatch):
    monkeypatch.setenv("AIRTABLE_CACHED_ENDPOINT_URL", leads.url)
    leads.reset_log()
    reseeded = _cli("reseed", "--url", pg_url, "--token", leads.token, "--json")
    assert reseeded.exit_code == 0, reseeded.output
    data = json.loads(reseeded.output)
    assert data["reset"]["records"] == 29  # the record with a queued write keeps its row
    assert [p["records"] for p in data["pulled"]] == [30]
    assert leads.request_count(method="GET") >= 1  # pulled from Airtable again
    listed = json.loads(_cli("queue", "list", "--url", pg_url, "--json").output)
    assert [w["record_id"] for w in listed] == [cached]


def test_webhooks_list_and_remove_on_postgresql(leads, pg_url, monkeypatch):
    monkeypatch.setenv("AIRTABLE_CACHED_ENDPOINT_URL", leads.url)
    api = Api(leads.token, endpoint_url=leads.url, url=pg_url, flush="manual", feed="webhooks")
    api.table(BASE, TABLE).all()  # the change feed's webhook, remembered in the database
    api.close()
    listed = _cli("webhooks", "list", "--url", pg_url, "--token", leads.token, "--json")
    assert listed.exit_code == 0, listed.output
    (hook,) = json.loads(listed.output)
    assert hook["ours"] and hook["base_id"] == BASE
    removed = _cli("webhooks", "remove", BASE, hook["id"], "--url", pg_url, "--token", leads.token, "--json")
    assert removed.exit_code == 0 and json.loads(removed.output) == {"removed": [hook["id"]]}
    assert leads.webhooks.of_base(BASE) == []
    from airtable_cached.runtime import open_store

    assert open_store(pg_url).replica.webhook_ids(leads.url) == {}  # no longer the database's


RUN_AGENT = """
import os, requests
url = os.environ["AGENT_AIRTABLE_URL"]
headers = {"Authorization": "Bearer " + os.environ["AGENT_AIRTABLE_TOKEN"]}
first = requests.get(url, headers=headers, timeout=10).json()["records"][0]
requests.patch(url + "/" + first["id"], headers=headers, json={"fields": {"Company": "run on postgresql"}}).raise_for_status()
requests.post(url, headers=headers, json={"records": [{"fields": {"Full Name": "Run Lead"}}]}).raise_for_status()
"""


@pytest.mark.parametrize("how", ["--url", "AIRTABLE_CACHED_URL"])
def test_run_answers_a_plain_requests_agent_from_the_postgresql_cache(leads, pg_url, tmp_path, monkeypatch, how):
    import subprocess
    import sys

    script = tmp_path / "agent.py"
    script.write_text(RUN_AGENT)
    monkeypatch.setenv("AGENT_AIRTABLE_URL", f"{leads.url}/v0/{BASE}/{TABLE}")
    monkeypatch.setenv("AGENT_AIRTABLE_TOKEN", leads.token)
    selects = ["--url", pg_url] if how == "--url" else []
    if how == "AIRTABLE_CACHED_URL":
        monkeypatch.setenv("AIRTABLE_CACHED_URL", pg_url)
    done = subprocess.run([sys.executable, "-m", "airtable_cached", "run", *selects, "--endpoint-url", leads.url,
                           "--flush", "auto", "--", sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    records = [r["fields"] for r in leads.records(BASE, TABLE)]
    assert [f.get("Company") for f in records].count("run on postgresql") == 1  # flushed at the agent's exit
    assert [f.get("Full Name") for f in records].count("Run Lead") == 1
    status = json.loads(_cli("status", "--url", pg_url, "--json").output)
    assert [t["records"] for t in status["tables"]] == [31] and status["queue"]["pending"] == 0
    assert not list((tmp_path / "xdg-cache").rglob("*.sqlite3"))  # no SQLite cache made beside


def test_run_with_a_path_uses_that_sqlite_file_whatever_the_environment_says(pg_url, tmp_path):
    from airtable_cached.run import child_environment

    env = child_environment({"path": tmp_path / "c.sqlite3"}, str(tmp_path), base={"AIRTABLE_CACHED_URL": pg_url})
    assert "AIRTABLE_CACHED_URL" not in env and env["AIRTABLE_CACHED_PATH"] == str(tmp_path / "c.sqlite3")
    both = child_environment({"path": tmp_path / "c.sqlite3", "url": pg_url}, str(tmp_path), base={})
    assert both["AIRTABLE_CACHED_URL"] == pg_url


def test_demo_runs_its_cache_on_postgresql_only_when_given_url(pg_url, monkeypatch, capsys):
    from airtable_cached.ops import demo
    from airtable_cached.runtime import open_store

    monkeypatch.setenv("AIRTABLE_CACHED_URL", pg_url)  # not the demo's: it never writes into a shared cache
    assert demo.main(["--steps", "1", "--latency", "0"]) == 0
    assert open_store(pg_url).replica.base_ids() == []
    assert "temporary, removed now" in capsys.readouterr().out
    monkeypatch.delenv("AIRTABLE_CACHED_URL")
    assert demo.main(["--steps", "1", "--latency", "0", "--url", pg_url]) == 0
    assert open_store(pg_url).replica.base_ids() == [demo.BASE]
    assert "postgresql://" in capsys.readouterr().out


QUEUE_WRITES = f"""
import json, sys
from airtable_cached import Api
token, endpoint, url = sys.argv[1:4]
api = Api(token, endpoint_url=endpoint, url=url, flush="manual", feed="off")
table = api.table({BASE!r}, {TABLE!r})
ids = [r["id"] for r in table.all()[:3]]
for n, rid in enumerate(ids):
    table.update(rid, {{"Company": "via serve-sync " + str(n)}})
table.batch_create([{{"Full Name": "made via serve-sync " + str(n)}} for n in range(2)])
queued = len(api.pending())
api.close()  # manual flush: nothing sent by this process
print(json.dumps({{"ids": ids, "queued": queued}}))
"""


def test_serve_sync_flushes_what_another_process_queues_in_the_postgresql_cache(leads, pg_url, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    secret_url = pg_url.replace("postgres@", "postgres:pw-never-printed@")  # trust auth: any password connects
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRTABLE_CACHED_")}
    env.update(AIRTABLE_API_KEY=leads.token, AIRTABLE_CACHED_ENDPOINT_URL=leads.url, AIRTABLE_CACHED_FEED="off",
               XDG_CACHE_HOME=str(tmp_path / "xdg"))
    serving = subprocess.Popen(
        [sys.executable, "-m", "airtable_cached", "serve-sync", "--url", secret_url, "--table", f"{BASE}/{TABLE}",
         "--flush-every", "0.05", "--pull-every", "3600", "--stop-grace", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        writer = subprocess.run([sys.executable, "-c", QUEUE_WRITES, leads.token, leads.url, pg_url], env=env,
                                capture_output=True, text=True, timeout=120)
        assert writer.returncode == 0, writer.stderr
        written = json.loads(writer.stdout.strip().splitlines()[-1])

        def landed() -> list[dict]:
            return [r["fields"] for r in leads.records(BASE, TABLE)
                    if "via serve-sync" in r["fields"].get("Company", "") + r["fields"].get("Full Name", "")]

        deadline = time.monotonic() + 60  # real time, bounded: another process is at work
        while len(landed()) < 5 and time.monotonic() < deadline and serving.poll() is None:
            time.sleep(0.05)
        serving.send_signal(signal.SIGTERM)
        out, err = serving.communicate(timeout=60)
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.wait()
    assert serving.returncode == 0, err[-3000:]
    assert written["queued"] == 5
    assert sorted(f.get("Company") or f.get("Full Name") for f in landed()) == sorted(
        [f"via serve-sync {n}" for n in range(3)] + [f"made via serve-sync {n}" for n in range(2)])  # each once
    assert json.loads(_cli("queue", "list", "--url", pg_url, "--json").output) == []
    assert "serve-sync stopped: 5 sent" in err
    assert "postgresql://postgres@127.0.0.1" in err and "pg_dump" in err  # where it works, and who backs it up
    assert "pw-never-printed" not in out + err and leads.token not in out + err
