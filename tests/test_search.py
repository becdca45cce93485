"""Full-text search over cached records, and indexes for the fields agents filter on."""

from __future__ import annotations

import pytest

from tests.conftest import BASE, TABLE


def test_search_finds_leads_by_name_company_or_email_any_case(table):
    lead = next(r for r in table.all() if {"Full Name", "Company", "Email"} <= set(r["fields"]))
    name, company, email = (lead["fields"][k] for k in ("Full Name", "Company", "Email"))
    for text in (name.upper(), company.lower(), email, name.split()[0][:3]):
        found = table.search(text)
        assert lead["id"] in [r["id"] for r in found], text
        assert all(set(r) == {"id", "createdTime", "fields"} for r in found)


def test_search_ranks_the_closest_match_first(table):
    table.create({"Full Name": "Quentin Zephyrine", "Company": "Zephyrine Zephyrine Labs"})
    table.create({"Full Name": "Other Person", "Company Description": "Mentions zephyrine once among many other words here"})
    found = table.search("zephyrine")
    assert found[0]["fields"]["Full Name"] == "Quentin Zephyrine"
    assert len(found) == 2


def test_search_limited_to_fields(table):
    table.create({"Full Name": "Ada Nomatch", "Company": "Lovelace Engines"})
    table.create({"Full Name": "Ada Lovelace", "Company": "Analytical"})
    by_name = table.search("lovelace", fields=["Full Name"])
    assert [r["fields"]["Full Name"] for r in by_name] == ["Ada Lovelace"]
    assert len(table.search("lovelace")) == 2


def test_search_sees_queued_writes_and_deletes(table):
    created = table.create({"Full Name": "Brand New Prospect"})
    assert [r["id"] for r in table.search("prospect")] == [created["id"]]
    table.update(created["id"], {"Full Name": "Renamed Person"})
    assert table.search("prospect") == []
    assert [r["id"] for r in table.search("renamed")] == [created["id"]]
    table.delete(created["id"])
    assert table.search("renamed") == []


@pytest.mark.parametrize("text", ['"', "a OR b", "NEAR(", "*", "'; DROP TABLE records; --", "", "   "])
def test_search_with_operators_or_quotes_is_plain_text(table, text):
    table.all()
    assert isinstance(table.search(text), list)
    assert len(table.all()) == 250


def test_repeated_equality_filter_gets_an_index_and_uses_it(api, table, plain):
    formula = "{Status} = 'New'"
    expected = plain.all(formula=formula)
    for _ in range(api.settings.index_after):
        assert table.all(formula=formula) == expected
    conn = api.engine.store.conn
    indexes = [r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND sql LIKE '%Status%'")]
    assert indexes, "no index was created for {Status}"
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT r.id FROM records r WHERE r.tid = ? AND json_extract(r.fields, '$.\"Status\"') = ?",
        (1, "New"),
    ).fetchall()
    assert any("records_by_" in row[3] for row in plan)


def test_configured_index_is_created_at_first_filter(fake, db_path):
    from airtable_cached import Api

    api = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual", index_fields="Email")
    table = api.table(BASE, TABLE)
    email = next(r["fields"]["Email"] for r in table.all() if "Email" in r["fields"])
    assert len(table.all(formula=f"{{Email}} = '{email}'")) == 1
    names = [r[0] for r in api.engine.store.conn.execute("SELECT sql FROM sqlite_master WHERE type='index'") if r[0]]
    assert any("Email" in sql for sql in names)


def test_accents_fold_the_same_with_and_without_fields(table):
    created = table.create({"Full Name": "Zoë Quixotá"})
    assert [r["id"] for r in table.search("quixota")] == [created["id"]]
    assert [r["id"] for r in table.search("zoe quixota", fields=["Full Name"])] == [created["id"]]
    assert [r["id"] for r in table.search("QUIXOTÁ", fields=["Full Name"])] == [created["id"]]
