"""The fake Airtable's webhooks API (airtable_cached/testing/webhooks.py), read through pyairtable
3.5's own webhook models (unmodified), and the pure refresh decisions in airtable_cached/rules/policy.py.
These compare with the project's fake and with pyairtable's models, not with recorded traffic (no
public recording of the webhooks API exists)."""

from __future__ import annotations

import pyairtable
import pytest
import requests
from conftest import BASE, TABLE

from airtable_cached.config import Settings
from airtable_cached.errors import ConfigurationError
from airtable_cached.rules.policy import plan_refresh, volatile_fields, watermark_formula

SPEC = {"options": {"filters": {"dataTypes": ["tableData", "tableFields"]}}}


def test_webhooks_parse_with_pyairtables_models(fake):
    base = pyairtable.Api(fake.token, endpoint_url=fake.url).base(BASE)
    made = base.add_webhook("https://example.com/hook", SPEC)
    (listed,) = base.webhooks()
    assert listed.id == made.id and listed.is_hook_enabled and listed.cursor_for_next_payload == 1
    record = fake.records(BASE, TABLE)[0]
    fake.set_fields(BASE, TABLE, record["id"], {"Score": 5})
    fake.delete_record(BASE, TABLE, record["id"])
    fake.add_records(BASE, TABLE, [{"Full Name": "New"}])
    payloads = list(listed.payloads(cursor=1))
    assert [p.cursor for p in payloads] == [1, 2, 3]
    table_id = fake.schema(BASE, TABLE)["id"]
    assert record["id"] in payloads[0].changed_tables_by_id[table_id].changed_records_by_id
    assert payloads[1].changed_tables_by_id[table_id].destroyed_record_ids == [record["id"]]
    assert payloads[2].changed_tables_by_id[table_id].created_records_by_id
    listed.extend_expiration()
    listed.delete()
    assert base.webhooks() == []


def test_payloads_come_fifty_at_a_time_with_might_have_more(fake):
    base = pyairtable.Api(fake.token, endpoint_url=fake.url).base(BASE)
    hook = base.add_webhook("https://example.com/hook", SPEC)
    fake.add_records(BASE, TABLE, [{"Full Name": f"N{i}"} for i in range(120)])
    first = requests.get(f"{fake.url}/v0/bases/{BASE}/webhooks/{hook.id}/payloads", params={"cursor": 1},
                         headers={"Authorization": f"Bearer {fake.token}"}).json()
    assert len(first["payloads"]) == 50 and first["cursor"] == 51 and first["mightHaveMore"] is True
    assert len(list(base.webhooks()[0].payloads(cursor=1))) == 120


def test_the_webhook_limit_and_the_scope_are_enforced(fake):
    base = pyairtable.Api(fake.token, endpoint_url=fake.url).base(BASE)
    for _ in range(10):
        base.add_webhook("https://example.com/hook", SPEC)
    with pytest.raises(requests.HTTPError) as full:
        base.add_webhook("https://example.com/hook", SPEC)
    assert full.value.response.status_code == 422
    fake.webhooks.access = False
    with pytest.raises(requests.HTTPError) as refused:
        base.webhooks()
    assert refused.value.response.status_code == 403


def test_an_expired_webhook_is_gone(fake):
    base = pyairtable.Api(fake.token, endpoint_url=fake.url).base(BASE)
    base.add_webhook("https://example.com/hook", SPEC)
    fake.advance_clock(7 * 86400 + 1)
    assert base.webhooks() == []


def test_answers_carry_the_servers_clock_in_a_date_header(fake):
    first = requests.get(f"{fake.url}/v0/{BASE}/{TABLE}", headers={"Authorization": f"Bearer {fake.token}"})
    fake.advance_clock(3600)
    later = requests.get(f"{fake.url}/v0/{BASE}/{TABLE}", headers={"Authorization": f"Bearer {fake.token}"})
    from email.utils import parsedate_to_datetime

    gap = parsedate_to_datetime(later.headers["Date"]) - parsedate_to_datetime(first.headers["Date"])
    assert gap.total_seconds() == 3600


# -- pure decisions --------------------------------------------------------------------------------


def plan(**changes):
    values = dict(now=10_000.0, watermark=5.0, last_full=9_000.0, last_sweep=9_000.0, volatile=[], table_hook="ach1",
                  base_hook="ach1", full_every=3600.0, sweep_every=3600.0)
    values.update(changes)
    return plan_refresh(**values)


def test_plan_refresh():
    assert plan().full is False and plan().sweep is False
    assert plan(watermark=None).full and plan(last_full=None).full and plan(force_full=True).full
    assert plan(table_hook=None).full  # the feed did not cover it since its last full pull
    assert plan(base_hook=None, table_hook=None).sweep is False  # no feed: a sweep only when due
    assert plan(base_hook=None, table_hook=None, last_sweep=6_000.0).sweep
    assert plan(volatile=["Deals"], last_full=6_000.0).full and not plan(volatile=["Deals"]).full
    assert "schema unknown" in plan(volatile=None, last_full=6_000.0).why


def test_volatile_fields():
    schema = {"fields": [
        {"id": "fld1", "name": "Name", "type": "singleLineText"},
        {"id": "fld2", "name": "Deals", "type": "count"},
        {"id": "fld3", "name": "Own", "type": "formula", "options": {"formula": "{Name} & '!'", "referencedFieldIds": ["fld1"]}},
        {"id": "fld4", "name": "Age", "type": "formula", "options": {"formula": "DATETIME_DIFF(NOW(), {Created})"}},
        {"id": "fld5", "name": "Twice", "type": "formula", "options": {"formula": "{Deals}*2", "referencedFieldIds": ["fld2"]}},
    ]}
    assert sorted(volatile_fields(schema)) == ["Age", "Deals", "Twice"]
    assert volatile_fields({"fields": schema["fields"][:1]}) == [] and volatile_fields(None) is None


def test_watermark_formula_reaches_back_by_the_overlap():
    assert watermark_formula(1_704_067_260.0, 60) == "IS_AFTER(LAST_MODIFIED_TIME(), DATETIME_PARSE('2024-01-01T00:00:00.000Z'))"


@pytest.mark.parametrize("name,value", [("stale", "later"), ("feed", "poll"), ("overlap", "-1"), ("sweep_every", "x")])
def test_bad_refresh_settings_are_refused_by_name(tmp_path, name, value):
    with pytest.raises(ConfigurationError) as error:
        Settings.from_env({f"AIRTABLE_CACHED_{name.upper()}": value, "AIRTABLE_CACHED_PATH": str(tmp_path / "x")})
    assert f"AIRTABLE_CACHED_{name.upper()}" in str(error.value)
