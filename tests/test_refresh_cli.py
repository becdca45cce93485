"""The operator's view of refreshes: ``status``, ``stats`` and ``webhooks list/remove``, through
click's runner against a real database file and the project's fake Airtable on loopback (not
recorded Airtable traffic: the webhook answers are the fake's model of them)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import BASE, TABLE

from airtable_cached import Api
from airtable_cached.ops.cli import main


@pytest.fixture
def env(monkeypatch, fake, db_path):
    monkeypatch.setenv("AIRTABLE_CACHED_PATH", str(db_path))
    monkeypatch.setenv("AIRTABLE_CACHED_ENDPOINT_URL", fake.url)
    monkeypatch.setenv("AIRTABLE_CACHED_RATE_LIMIT", "1000")
    monkeypatch.setenv("AIRTABLE_CACHED_FEED", "webhooks")
    monkeypatch.setenv("AIRTABLE_API_KEY", fake.token)
    return db_path


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def as_json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("command", [["webhooks"], ["webhooks", "list"], ["webhooks", "remove"]])
def test_webhook_commands_have_help_with_an_example(command):
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Example" in result.output


def test_status_and_stats_show_incremental_and_full_pulls(env, fake):
    api = Api(fake.token, flush="manual", max_age=0)
    table = api.table(BASE, TABLE)
    table.all()  # full pull (max_age 0: every read refreshes)
    fake.set_fields(BASE, TABLE, fake.records(BASE, TABLE)[0]["id"], {"Score": 77})
    table.all()  # incremental
    api.close()
    (row,) = as_json(run("status", "--json"))["tables"]
    assert row["deletions"] == "feed" and row["webhook_id"] == fake.webhooks.of_base(BASE)[0]["id"]
    assert row["last_full"] and row["last_incremental"] and row["watermark"].startswith("2024-")
    assert row["full_pull_reason"] is None  # no lookups, rollups, counts or clock formulas
    text = run("status").output
    assert "last incremental" in text and "feed" in text
    (counted,) = as_json(run("stats", "--json"))["refresh"]
    assert counted["full_pulls"] == 1 and counted["full_requests"] == 6  # schema, 3 pages, webhook list+create
    assert counted["incremental_pulls"] == 1 and counted["incremental_requests"] == 2  # payloads, changes
    assert "incremental" in run("stats").output


def test_webhooks_list_and_remove(env, fake):
    api = Api(fake.token, flush="manual")
    api.table(BASE, TABLE).all()
    api.close()
    other = fake.webhooks._create(BASE, {"notificationUrl": None, "specification":
                                         {"options": {"filters": {"dataTypes": ["tableData"]}}}})["id"]
    listed = as_json(run("webhooks", "list", "--json"))
    assert sorted((h["id"], h["ours"]) for h in listed) == sorted(
        [(other, False), (next(h["id"] for h in listed if h["id"] != other), True)])
    assert "(polled)" in run("webhooks", "list").output
    assert as_json(run("webhooks", "remove", BASE, other, "--json")) == {"removed": [other]}
    assert [h["id"] for h in fake.webhooks.of_base(BASE)] != [other] and len(fake.webhooks.of_base(BASE)) == 1
    unknown = run("webhooks", "remove", BASE, "achNOSUCHHOOK0000")
    assert unknown.exit_code == 1
