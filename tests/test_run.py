"""``airtable-cached run``: a raw-requests agent run unchanged in a child process through the cache."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from airtable_cached.errors import ConfigurationError
from airtable_cached.run import run_command, run_program
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads

BASE = "appFAKEbase000001"
TOKEN = "patFAKE.token"

AGENT = textwrap.dedent(
    '''
    """A lead enricher written the way such agents are: one GET without paging, a PATCH per record."""
    import os
    import sys

    import requests

    url = os.environ["AGENT_AIRTABLE_URL"]
    headers = {"Authorization": "Bearer " + os.environ["AGENT_AIRTABLE_TOKEN"]}
    records = requests.get(url, headers=headers, timeout=10).json()["records"]
    patched = 0
    for record in records:
        fields = record["fields"]
        if "Email" not in fields:
            email = fields["Full Name"].lower().replace(" ", ".") + "@example.com"
            r = requests.patch(url + "/" + record["id"], headers=headers, json={"fields": {"Email": email}})
            r.raise_for_status()
            patched += 1
    with requests.Session() as session:
        session.headers.update(headers)
        session.post(url, json={"records": [{"fields": {"Full Name": "Run Lead", "Company": "Run Co"}}]}).raise_for_status()
    print("patched", patched, "intercepted", type(requests.Session.get_adapter).__name__ != "function")
    sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    '''
)


@pytest.fixture
def fake():
    with FakeAirtable(seed=3, token=TOKEN) as f:
        f.add_table(BASE, "Leads", LEADS_SCHEMA, seed_leads(150, seed=3))
        yield f


@pytest.fixture
def agent(tmp_path, fake, monkeypatch):
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    monkeypatch.setenv("AGENT_AIRTABLE_URL", f"{fake.url}/v0/{BASE}/Leads")
    monkeypatch.setenv("AGENT_AIRTABLE_TOKEN", TOKEN)
    monkeypatch.setenv("AIRTABLE_CACHED_RATE_LIMIT", "1000")
    return script


def _missing_emails(fake) -> int:
    return sum("Email" not in r["fields"] for r in fake.records(BASE, "Leads")[:100])


def _expected_patches(fake) -> int:
    return _missing_emails(fake)


def test_run_program_flushes_at_exit_and_keeps_the_exit_code(agent, fake, tmp_path, capfd):
    to_patch = _expected_patches(fake)
    assert to_patch > 10
    fake.reset_log()
    code = run_program([sys.executable, str(agent), "3"], path=tmp_path / "cache.sqlite3",
                       endpoint_url=fake.url, flush="auto", exit_timeout=20)
    assert code == 3
    out = capfd.readouterr().out
    assert f"patched {to_patch} intercepted True" in out
    # The exit waited for the flush: Airtable has every write.
    assert _missing_emails(fake) == 0
    assert any(r["fields"].get("Company") == "Run Co" for r in fake.records(BASE, "Leads"))
    # whoami + schema + 2 pull pages + ceil(to_patch / 10) PATCHes + 1 POST, instead of 1 + to_patch + 1
    assert fake.request_count(method="PATCH") == -(-to_patch // 10)
    assert fake.request_count() <= 5 + -(-to_patch // 10)


def test_manual_flush_leaves_the_writes_queued(agent, fake, tmp_path):
    fake.reset_log()
    assert run_program([sys.executable, str(agent)], path=tmp_path / "cache.sqlite3",
                       endpoint_url=fake.url, flush="manual") == 0
    assert fake.request_count(method="PATCH") == fake.request_count(method="POST") == 0
    assert _missing_emails(fake) > 10
    import airtable_cached

    api = airtable_cached.Api(TOKEN, endpoint_url=fake.url, path=tmp_path / "cache.sqlite3", flush="manual", rate_limit=1000)
    assert len(api.pending()) > 10
    assert api.flush().ok
    assert _missing_emails(fake) == 0


def test_settings_come_from_the_environment_too(agent, fake, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRTABLE_CACHED_PATH", str(tmp_path / "env.sqlite3"))
    monkeypatch.setenv("AIRTABLE_CACHED_ENDPOINT_URL", fake.url)
    monkeypatch.setenv("AIRTABLE_CACHED_FLUSH", "manual")
    assert run_program([sys.executable, str(agent)]) == 0
    assert (tmp_path / "env.sqlite3").exists()
    assert fake.request_count(method="PATCH") == 0


def test_python_dash_m_entry_point(agent, fake, tmp_path):
    env = {**os.environ, "AIRTABLE_CACHED_FLUSH": "auto"}
    proc = subprocess.run(
        [sys.executable, "-m", "airtable_cached.run", "--path", str(tmp_path / "c.sqlite3"),
         "--endpoint-url", fake.url, "--", sys.executable, str(agent), "4"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 4, proc.stderr
    assert "intercepted True" in proc.stdout
    assert _missing_emails(fake) == 0


@pytest.mark.skipif(importlib.util.find_spec("airtable_cached.ops.cli") is None, reason="the CLI is not there yet")
def test_python_dash_m_airtable_cached_run(agent, fake, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "airtable_cached", "run", "--path", str(tmp_path / "c.sqlite3"),
         "--endpoint-url", fake.url, "--", sys.executable, str(agent), "5"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 5, proc.stderr
    assert "intercepted True" in proc.stdout
    assert _missing_emails(fake) == 0


def test_click_command_validates_settings(tmp_path):
    runner = CliRunner()
    result = runner.invoke(run_command, ["--mode", "bogus", "--", sys.executable, "-c", "pass"])
    assert result.exit_code == 2 and "bogus" in result.output
    result = runner.invoke(run_command, [])
    assert result.exit_code == 2
    result = runner.invoke(run_command, ["--path", str(tmp_path / "c.sqlite3"), "--", sys.executable, "-c",
                                         "import sys; sys.exit(9)"])
    assert result.exit_code == 9
    with pytest.raises(ConfigurationError):
        run_program([sys.executable, "-c", "pass"], exit_timeout="soon")
    with pytest.raises(ConfigurationError):
        run_program([sys.executable, "-c", "pass"], nonsense=1)


def test_a_program_that_cannot_start_is_127(tmp_path):
    assert run_program([str(tmp_path / "no-such-program")], path=tmp_path / "c.sqlite3") == 127


def test_the_shadowed_sitecustomize_still_runs_and_sys_path_is_clean(tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import os\nos.environ['OWN_SITECUSTOMIZE'] = 'ran'\n")
    probe = (
        "import os, sys, requests\n"
        "assert os.environ.get('OWN_SITECUSTOMIZE') == 'ran'\n"
        "assert not any('airtable_cached-run-' in p for p in sys.path), sys.path\n"
        "assert type(requests.Session.get_adapter).__name__ != 'function'\n"
    )
    env_before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(own)
    try:
        assert run_program([sys.executable, "-c", probe], path=tmp_path / "c.sqlite3") == 0
    finally:
        if env_before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = env_before
