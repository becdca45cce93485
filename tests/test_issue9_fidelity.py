"""Issue 9: the cache never answers differently from plain pyairtable against the fake Airtable (ids,
links, typecast, whole calls).

Unless a docstring says otherwise, a test compares the cache with plain pyairtable against the
project's fake Airtable (``airtable_cached/testing/``): the same fake, or a twin made with the
same seed when both sides write. The fake evaluates formulas with the cache's own engine, so a
formula compared here checks which side answers it, not the engine against Airtable. Tests that
rest on recorded Airtable traffic say so.
"""

from __future__ import annotations

import json
import logging

import pyairtable
import pytest
import requests

from airtable_cached import Api
from airtable_cached.testing import COMPANIES_ID, PEOPLE_ID, FakeAirtable, add_linked_tables
from tests.conftest import recorded

LBASE = "appLINKEDbase0001"


def _fake(seed: int = 9) -> FakeAirtable:
    server = FakeAirtable(seed=seed).start()
    add_linked_tables(server, LBASE)
    return server


@pytest.fixture
def lfake():
    server = _fake()
    yield server
    server.stop()


@pytest.fixture
def twin():
    """A second fake with the same seed: plain pyairtable writes there."""
    server = _fake()
    yield server
    server.stop()


@pytest.fixture
def lapi(lfake, db_path, clock):
    cached = Api(lfake.token, endpoint_url=lfake.url, path=db_path, flush="manual", clock=clock, sleep=clock.sleep)
    yield cached
    cached.close()


@pytest.fixture
def people(lapi):
    return lapi.table(LBASE, "People")


@pytest.fixture
def companies(lapi):
    return lapi.table(LBASE, "Companies")


@pytest.fixture
def plain_people(twin):
    return pyairtable.Api(twin.token, endpoint_url=twin.url).table(LBASE, "People")


@pytest.fixture
def plain_companies(twin):
    return pyairtable.Api(twin.token, endpoint_url=twin.url).table(LBASE, "Companies")


def _error(call) -> tuple[int, dict]:
    with pytest.raises(requests.HTTPError) as info:
        call()
    return info.value.response.status_code, info.value.response.json()


def _by_name(records: list[dict]) -> dict[str, dict]:
    return {r["fields"]["Name"]: r for r in records}


# -- 1. provisional ids --------------------------------------------------------------------------


@pytest.mark.parametrize("typecast", [False, True])
def test_provisional_id_held_after_its_flush_is_translated_in_link_cells(lfake, lapi, people, companies, typecast):
    new = people.create({"Name": "Newcomer"})
    lapi.flush()
    company = companies.first(formula="{Name} = 'Company 0'")
    companies.update(company["id"], {"Employees": [new["id"]]}, typecast=typecast)
    result = lapi.flush()
    assert result.ok and lapi.pending() == []
    real = people.get(new["id"])["id"]
    remote = {r["fields"]["Name"]: r for r in lfake.records(LBASE, PEOPLE_ID)}
    assert remote["Newcomer"]["id"] == real and remote["Newcomer"]["fields"]["Company"] == [company["id"]]
    assert not any(r["fields"]["Name"].startswith("recLOCAL") for r in lfake.records(LBASE, PEOPLE_ID))  # no junk record
    assert lfake.records(LBASE, COMPANIES_ID)[0]["fields"]["Employees"] == [real]


def test_provisional_id_in_a_formula_finds_the_record_before_and_after_the_flush(lapi, people):
    new = people.create({"Name": "Findable"})
    formula = f"RECORD_ID() = '{new['id']}'"
    assert [r["fields"]["Name"] for r in people.all(formula=formula)] == ["Findable"]
    lapi.flush()
    found = people.all(formula=formula)
    assert [r["fields"]["Name"] for r in found] == ["Findable"] and not found[0]["id"].startswith("recLOCAL")


def test_provisional_ids_in_deletes_and_upsert_bodies_after_the_flush(lfake, lapi, people):
    a = people.create({"Name": "Upserted"})
    b = people.create({"Name": "Deleted"})
    lapi.flush()
    answer = people.batch_upsert([{"id": a["id"], "fields": {"Score": 7}}], key_fields=["Name"])
    assert answer["updatedRecords"] == [people.get(a["id"])["id"]]
    people.delete(b["id"])
    assert lapi.flush().ok and lapi.pending() == []
    remote = _by_name(lfake.records(LBASE, PEOPLE_ID))
    assert remote["Upserted"]["fields"]["Score"] == 7 and "Deleted" not in remote


# -- 2. refused at the call, or dead-lettered whole ---------------------------------------------------


REFUSED = {
    "unknown select option": lambda t, ids: t.batch_update(
        [{"id": ids[0], "fields": {"Stage": "Won"}}, {"id": ids[1], "fields": {"Stage": "Lost"}}]),
    "number as text": lambda t, ids: t.update(ids[0], {"Score": "42"}),
    "boolean in a number": lambda t, ids: t.update(ids[0], {"Score": True}),
    "text in a date": lambda t, ids: t.update(ids[0], {"Met": "next tuesday"}),
    "link to a missing record": lambda t, ids: t.update(ids[0], {"Company": ["recMISSING0000000"]}),
    "link that is no id": lambda t, ids: t.update(ids[0], {"Company": ["Company 0"]}),
    "unknown field": lambda t, ids: t.create({"Name": "x", "Nope": 1}),
    "new option in a create": lambda t, ids: t.batch_create([{"Name": "ok"}, {"Name": "bad", "Stage": "Lost"}]),
    "upsert on a blank key": lambda t, ids: t.batch_upsert([{"fields": {"Name": "", "Score": 1}}], key_fields=["Name"]),
    "upsert on a checkbox key": lambda t, ids: t.batch_upsert([{"fields": {"Name": "k", "Active": True}}], key_fields=["Active"]),
    "update of a missing record": lambda t, ids: t.batch_update(
        [{"id": ids[0], "fields": {"Stage": "Lost"}}, {"id": "recMISSING0000000", "fields": {"Name": "x"}}]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_airtable_refuses_is_refused_at_the_call_with_its_answer(lfake, twin, lapi, people, plain_people, case):
    ids = [r["id"] for r in people.all()]
    before = lfake.records(LBASE, PEOPLE_ID)
    expected = _error(lambda: REFUSED[case](plain_people, ids))
    assert _error(lambda: REFUSED[case](people, ids)) == expected
    assert lapi.pending() == [] and people.all() == plain_people.all()  # nothing applied, nothing queued
    lapi.flush()
    assert lfake.records(LBASE, PEOPLE_ID) == before


def test_a_call_refused_at_flush_is_dead_lettered_whole_logged_and_reported(lfake, db_path, clock, caplog):
    events = []
    api = Api(lfake.token, endpoint_url=lfake.url, path=db_path, flush="manual", clock=clock, sleep=clock.sleep,
              on_dead_letter=events.append)
    people = api.table(LBASE, "People")
    before = {r["id"]: r for r in people.all()}
    first, second, third = list(before)[:3]
    people.batch_update([{"id": first, "fields": {"Score": 100}}, {"id": second, "fields": {"Score": 200}}])
    people.update(third, {"Score": 300})
    lfake.delete_record(LBASE, PEOPLE_ID, second)  # someone deletes it in Airtable meanwhile
    with caplog.at_level(logging.WARNING, logger="airtable_cached"):
        result = api.flush()
    remote = {r["id"]: r for r in lfake.records(LBASE, PEOPLE_ID)}
    assert remote[first]["fields"]["Score"] == before[first]["fields"]["Score"]  # not half applied
    assert remote[third]["fields"]["Score"] == 300  # another call goes on
    dead = api.pending()
    assert {w["record_id"] for w in dead} == {first, second} and {w["state"] for w in dead} == {"dead"}
    assert people.get(first) == before[first]  # Airtable's values again
    assert {f["record_id"] for f in result.failed} >= {first, second}
    assert len(events) == 1 and events[0]["record_ids"] == sorted([first, second])
    assert events[0]["status"] == 422 and events[0]["error"]["error"]["type"] == "ROW_DOES_NOT_EXIST"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(first in w and second in w and "ROW_DOES_NOT_EXIST" in w for w in warnings)
    assert not any(lfake.token in w for w in warnings)
    api.close()


def test_an_upsert_that_creates_and_updates_is_sent_whole(lfake, lapi, people):
    """An upsert call's creates and matched records go in one upsert request: refused at flush
    (its matched record was deleted in Airtable meanwhile), it makes nothing."""
    before = lfake.records(LBASE, PEOPLE_ID)
    answer = people.batch_upsert([{"fields": {"Name": "Person 0", "Score": 50}}, {"fields": {"Name": "Brand new"}}],
                                 key_fields=["Name"])
    matched = answer["updatedRecords"][0]
    lfake.reset_log()
    lfake.delete_record(LBASE, PEOPLE_ID, matched)
    result = lapi.flush()
    assert [r["method"] for r in lfake.requests] == ["PATCH"]  # one request for the whole call
    assert not result.ok and {w["state"] for w in lapi.pending()} == {"dead"} and len(lapi.pending()) == 2
    assert lfake.records(LBASE, PEOPLE_ID) == [r for r in before if r["id"] != matched]  # nothing made


# -- 3. typecast applied locally ---------------------------------------------------------------------


TYPECASTS = [
    {"Score": "42"},
    {"Score": "1,234.5"},
    {"Active": "yes"},
    {"Stage": "Lost"},
    {"Met": "2024-03-05T10:00:00.000Z"},
    {"Email": 12},
    {"Company": "recMISSING"},
]


@pytest.mark.parametrize("fields", TYPECASTS, ids=[json.dumps(f) for f in TYPECASTS])
def test_typecast_answers_and_reads_as_airtable_stores_it(lapi, people, plain_people, fields):
    target = people.all()[0]["id"]
    if "Company" in fields:  # a link by primary value: only Airtable knows; sent at once
        fields = {"Company": "Company 1"}
    expected = plain_people.update(target, fields, typecast=True)
    answer = people.update(target, fields, typecast=True)
    assert answer["fields"] == expected["fields"]
    assert people.get(target)["fields"] == plain_people.get(target)["fields"]


def test_an_option_typecast_added_is_accepted_afterwards(lapi, people, plain_people):
    ids = [r["id"] for r in people.all()]
    people.update(ids[0], {"Stage": "Lost"}, typecast=True)
    plain_people.update(ids[0], {"Stage": "Lost"}, typecast=True)
    assert people.update(ids[1], {"Stage": "Lost"}) == plain_people.update(ids[1], {"Stage": "Lost"})
    assert lapi.flush().ok and lapi.pending() == []


def test_a_link_by_primary_value_is_sent_at_once_and_cached_as_airtable_answers(lfake, lapi, people):
    target = people.all()[0]["id"]
    answer = people.update(target, {"Company": ["Company 2"]}, typecast=True)
    assert lapi.pending() == []  # sent, not queued
    company = _by_name(lfake.records(LBASE, COMPANIES_ID))["Company 2"]
    assert answer["fields"]["Company"] == [company["id"]] == people.get(target)["fields"]["Company"]


# -- 4. both sides of a link -----------------------------------------------------------------------


def test_setting_and_deleting_links_updates_the_other_side_before_the_flush(lfake, twin, lapi, people, companies,
                                                                             plain_people, plain_companies):
    for p, c in ((people, companies), (plain_people, plain_companies)):
        company = {r["fields"]["Name"]: r["id"] for r in c.all()}["Company 0"]
        person = {r["fields"]["Name"]: r["id"] for r in p.all()}
        p.update(person["Person 0"], {"Company": [company]})
        p.delete(person["Person 1"])  # was an employee of Company 1
        new = p.create({"Name": "Hire", "Company": [company]})
        c.update(company, {"Employees": [person["Person 0"], new["id"], person["Person 3"]]})
    local = {r["fields"]["Name"]: r["fields"] for r in companies.all()}
    plain = {r["fields"]["Name"]: r["fields"] for r in plain_companies.all()}
    assert local["Company 1"] == plain["Company 1"]
    assert len(local["Company 0"]["Employees"]) == 3
    people_local = {r["fields"]["Name"]: r["fields"].get("Company") for r in people.all()}
    assert people_local == {r["fields"]["Name"]: r["fields"].get("Company") for r in plain_people.all()} | {
        "Hire": people_local["Hire"]}
    lapi.flush()
    companies.refresh(force=True)
    people.refresh(force=True)
    assert [r["fields"] for r in companies.all()] == [r["fields"] for r in plain_companies.all()]


def _gatsby(name: str) -> list[dict]:
    path = recorded("gatsby-source-airtable", "recipes-with-multi-type", name)
    return json.loads(path.read_text())["records"]


def test_inverse_links_kept_as_recorded_airtable_keeps_them(db_path, clock):
    """Rests on recorded Airtable traffic (gatsby-source-airtable, recipes and cooking methods):
    there, every link has its inverse. Loaded into the fake, the cache keeps that true through
    local writes, before any flush."""
    recipes, methods = _gatsby("recipes.json"), _gatsby("cooking_method.json")
    links_out = {(r["id"], m) for r in recipes for m in r["fields"].get("Cooking Method", [])}
    links_in = {(r, m["id"]) for m in methods for r in m["fields"].get("Recipes", [])}
    listed = {r["id"] for r in recipes}
    # What Airtable answered: both sides agree (the recording lists one method's recipe that its
    # recipes page does not hold; that one link is left out).
    assert links_out == {(r, m) for r, m in links_in if r in listed}
    methods = [{**m, "fields": {**m["fields"], "Recipes": [r for r in m["fields"].get("Recipes", []) if r in listed]}}
               for m in methods]
    base = "appGATSBYrecipes1"
    with FakeAirtable(seed=2) as server:
        server.add_table(base, "Cooking Method", [
            {"id": "fldMethodName001", "name": "Name", "type": "singleLineText"},
            {"id": "fldMethodRecipes", "name": "Recipes", "type": "multipleRecordLinks",
             "options": {"linkedTableId": "tblRecipes0000001", "inverseLinkFieldId": "fldRecipeMethods"}},
        ], [{"id": m["id"], "createdTime": m["createdTime"], "fields": m["fields"]} for m in methods], table_id="tblMethods0000001")
        server.add_table(base, "Recipes", [
            {"id": "fldRecipeName001", "name": "Name", "type": "singleLineText"},
            {"id": "fldRecipeMethods", "name": "Cooking Method", "type": "multipleRecordLinks",
             "options": {"linkedTableId": "tblMethods0000001", "inverseLinkFieldId": "fldMethodRecipes"}},
        ], [{"id": r["id"], "createdTime": r["createdTime"], "fields": {"Name": r["fields"]["Name"],
             "Cooking Method": r["fields"].get("Cooking Method", [])}} for r in recipes], table_id="tblRecipes0000001")
        api = Api(server.token, endpoint_url=server.url, path=db_path, flush="manual", clock=clock, sleep=clock.sleep)
        cached_recipes, cached_methods = api.table(base, "Recipes"), api.table(base, "Cooking Method")
        cached_methods.all()
        rows = cached_recipes.all()
        by_method = {m["fields"]["Name"]: m["id"] for m in cached_methods.all()}
        cached_recipes.update(rows[0]["id"], {"Cooking Method": [by_method["Crock Pot"]]})
        cached_recipes.delete(rows[1]["id"])
        made = cached_recipes.create({"Name": "New dish", "Cooking Method": [by_method["Stovetop"]]})
        out = {(r["id"], m) for r in cached_recipes.all() for m in r["fields"].get("Cooking Method", [])}
        back = {(r, m["id"]) for m in cached_methods.all() for r in m["fields"].get("Recipes", [])}
        assert out == back and (made["id"], by_method["Stovetop"]) in back
        api.flush()
        cached_methods.refresh(force=True)
        assert {(r, m["id"]) for m in cached_methods.all() for r in m["fields"].get("Recipes", [])} == {
            (r["id"], m) for r in server.records(base, "Recipes") for m in r["fields"].get("Cooking Method", [])}
        api.close()


# -- 5. formulas over links ------------------------------------------------------------------------


def test_formula_over_a_link_is_answered_locally_with_queued_writes(lfake, twin, lapi, people, companies, plain_people):
    companies.all()
    people.all()
    target = people.all()[0]["id"]
    company = {r["fields"]["Name"]: r["id"] for r in companies.all()}["Company 2"]
    people.update(target, {"Company": [company]})
    plain_people.update(target, {"Company": [company]})
    lfake.reset_log()
    for formula in ("{Company} = 'Company 2'", "FIND('Company 1', {Company})", "{Company} = ''"):
        assert people.all(formula=formula) == plain_people.all(formula=formula)
    assert lfake.request_count() == 0  # no request: both tables are cached


def test_formula_sent_to_airtable_gets_the_queued_writes_first(lfake, lapi, people, plain_people):
    target = people.all()[0]["id"]
    people.update(target, {"Name": "Renamed"})
    formula = "AND({Name} = 'Renamed', {Company} = '')"  # Companies never read: the server (the fake) answers
    assert [r["id"] for r in people.all(formula=formula)] == [target]
    assert lapi.pending() == []


# -- 6. views --------------------------------------------------------------------------------------


def test_a_view_is_evaluated_again_after_local_writes(lfake, lapi, people):
    plain = pyairtable.Api(lfake.token, endpoint_url=lfake.url).table(LBASE, "People")
    listed = people.all(view="No email")
    people.update(listed[0]["id"], {"Email": "found@example.com"})
    assert people.all(view="No email") == plain.all(view="No email")
    assert listed[0]["id"] not in {r["id"] for r in people.all(view="No email")}


def test_refresh_force_refreshes_the_views_read(lfake, lapi, people):
    plain = pyairtable.Api(lfake.token, endpoint_url=lfake.url).table(LBASE, "People")
    listed = people.all(view="No email")
    lfake.set_fields(LBASE, PEOPLE_ID, listed[0]["id"], {"Email": "someone@example.com"})
    people.refresh(force=True)
    assert people.all(view="No email") == plain.all(view="No email")


# -- 7. unknown names in fields and sort -------------------------------------------------------------


@pytest.mark.parametrize("options", [{"fields": ["Name", "Nope"]}, {"sort": ["-Nope"]}])
def test_unknown_names_in_fields_or_sort_are_refused(lfake, people, options):
    plain = pyairtable.Api(lfake.token, endpoint_url=lfake.url).table(LBASE, "People")
    people.all()
    assert _error(lambda: people.all(**options)) == _error(lambda: plain.all(**options))


# -- 8. creates keep call order ----------------------------------------------------------------------


def test_creates_keep_the_order_of_the_calls(lfake, twin, lapi, people, plain_people):
    for p in (people, plain_people):
        p.create({"Name": "one"})
        p.create({"Name": "two", "Score": "2"}, typecast=True)
        p.batch_create([{"Name": "three"}, {"Name": "four"}])
        p.batch_upsert([{"fields": {"Name": "five"}}], key_fields=["Name"])
        p.create({"Name": "six"})
    lapi.flush()
    assert [r["fields"]["Name"] for r in lfake.records(LBASE, PEOPLE_ID)] == [
        r["fields"]["Name"] for r in twin.records(LBASE, PEOPLE_ID)]
    assert [r["createdTime"] for r in lfake.records(LBASE, PEOPLE_ID)] == sorted(
        r["createdTime"] for r in lfake.records(LBASE, PEOPLE_ID))


# -- 9. smaller ones ---------------------------------------------------------------------------------


def test_an_offset_of_another_table_or_query_is_refused(lfake, people):
    plain = pyairtable.Api(lfake.token, endpoint_url=lfake.url)
    for table in (people, plain.table(LBASE, "People")):
        offset = table.api.request("GET", table.urls.records, params={"pageSize": 2})["offset"]
        other_table = table.api.table(LBASE, "Companies").urls.records
        for url, extra in ((other_table, {}), (table.urls.records, {"filterByFormula": "1"})):
            params = {"pageSize": 2, "offset": offset, **extra}
            status, body = _error(lambda t=table, u=url, p=params: t.api.request("GET", u, params=p))
            assert status == 422 and body["error"]["type"] == "LIST_RECORDS_ITERATOR_NOT_AVAILABLE"


@pytest.mark.parametrize("body", [["a"], "text", 3])
def test_a_list_records_body_that_is_not_an_object_is_a_422(lfake, lapi, people, body):
    plain = pyairtable.Api(lfake.token, endpoint_url=lfake.url).table(LBASE, "People")
    people.all()
    url = people.urls.records_post
    assert _error(lambda: lapi.request("POST", url, json=body)) == _error(
        lambda: plain.api.request("POST", plain.urls.records_post, json=body))


def test_an_unknown_field_in_a_formula_has_airtables_prefix(lfake, people):
    plain = pyairtable.Api(lfake.token, endpoint_url=lfake.url).table(LBASE, "People")
    people.all()
    status, body = _error(lambda: people.all(formula="{Nope} = 1"))
    assert (status, body) == _error(lambda: plain.all(formula="{Nope} = 1"))
    assert body["error"]["message"].startswith("The formula for filtering records is invalid: ")


def test_a_table_that_does_not_exist_leaves_no_phantom(lapi):
    missing = lapi.table(LBASE, "Nope")
    assert _error(missing.all)[0] == 404
    assert _error(lambda: missing.update("recAAAAAAAAAAAAAA", {"Name": "x"}))[0] == 404
    assert lapi.engine.table_info(LBASE, "Nope", create=False) is None
    assert lapi.engine.store.conn.execute("SELECT COUNT(*) FROM tables WHERE name = 'Nope'").fetchone()[0] == 0
