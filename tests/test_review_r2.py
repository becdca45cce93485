"""Review round 2: bugs where features meet (found by review, each test failed before its fix)."""

from __future__ import annotations

import pyairtable
import pytest
from test_issue9_fidelity import LBASE, _fake

from airtable_cached import Api
from airtable_cached.testing import COMPANIES_ID, FakeAirtable


def test_offset_of_a_formula_naming_a_provisional_id_survives_the_flush_between_pages(api, table, plain):
    table.all()  # pull
    created = table.create({"Full Name": "Fresh one"})
    assert created["id"].startswith("recLOCAL")
    formula = f"OR(RECORD_ID() = '{created['id']}', {{Full Name}} != '')"
    pages = table.iterate(page_size=100, formula=formula)
    first = next(pages)
    api.flush()
    rest = [r for page in pages for r in page]
    names = sorted(r["fields"]["Full Name"] for r in first + rest)
    assert names == sorted(r["fields"]["Full Name"] for r in plain.all(formula="{Full Name} != ''"))


def test_an_incremental_refresh_of_a_linked_table_keeps_the_inverse_of_a_queued_link(db_path, clock):
    lfake, twin = _fake(), _fake()
    api = Api(lfake.token, endpoint_url=lfake.url, path=db_path, flush="manual", clock=clock, sleep=clock.sleep,
              feed="off", sweep_every=10**9)
    try:
        people, companies = api.table(LBASE, "People"), api.table(LBASE, "Companies")
        plain_people = pyairtable.Api(twin.token, endpoint_url=twin.url).table(LBASE, "People")
        plain_companies = pyairtable.Api(twin.token, endpoint_url=twin.url).table(LBASE, "Companies")
        loner = next(r for r in people.all() if "Company" not in r["fields"])["id"]
        company = companies.all()[1]["id"]
        for table, server in ((people, lfake), (plain_people, twin)):
            table.update(loner, {"Company": [company]})
            server.set_fields(LBASE, COMPANIES_ID, company, {"Name": "Renamed elsewhere"})
        clock.advance(10**6)  # stale: the next read refreshes Companies incrementally
        assert companies.get(company)["fields"] == plain_companies.get(company)["fields"]
    finally:
        api.close()
        lfake.stop()
        twin.stop()


def test_rich_text_written_locally_reads_back_as_airtable_stores_it(db_path, clock):
    with FakeAirtable(seed=1) as server:
        server.add_table("appRICHbase000001", "Notes", [{"name": "Title", "type": "singleLineText"},
                                                        {"name": "Body", "type": "richText"}], [{"Title": "a"}])
        api = Api(server.token, endpoint_url=server.url, path=db_path, flush="manual", clock=clock, sleep=clock.sleep)
        try:
            table = api.table("appRICHbase000001", "Notes")
            plain = pyairtable.Api(server.token, endpoint_url=server.url).table("appRICHbase000001", "Notes")
            first = table.all()[0]["id"]
            assert table.create({"Title": "b", "Body": "bar"})["fields"] == plain.create({"Title": "b", "Body": "bar"})["fields"]
            assert table.update(first, {"Body": "baz"})["fields"] == plain.update(first, {"Body": "baz"})["fields"]
        finally:
            api.close()




@pytest.fixture
def queued_link(db_path, clock):
    """Companies gain an attachment field (a formula on it only the server answers, here the fake); a person is
    linked to a company, queued in the cache and made on a twin fake through plain pyairtable.
    Yields the cache's fake, the cache's Companies, the twin's Companies and the company's id."""
    lfake, twin = _fake(), _fake()
    for server in (lfake, twin):
        server.add_field(LBASE, COMPANIES_ID, {"name": "Logo", "type": "multipleAttachments"})
    api = Api(lfake.token, endpoint_url=lfake.url, path=db_path, flush="manual", clock=clock, sleep=clock.sleep)
    try:
        people, companies = api.table(LBASE, "People"), api.table(LBASE, "Companies")
        plain_people = pyairtable.Api(twin.token, endpoint_url=twin.url).table(LBASE, "People")
        plain_companies = pyairtable.Api(twin.token, endpoint_url=twin.url).table(LBASE, "Companies")
        loner = next(r for r in people.all() if "Company" not in r["fields"])["id"]
        company = companies.all()[1]["id"]
        for table in (people, plain_people):
            table.update(loner, {"Company": [company]})
        yield lfake, companies, plain_companies, company
    finally:
        api.close()
        lfake.stop()
        twin.stop()


def test_a_read_only_airtable_can_answer_sends_the_linked_tables_queued_writes_first(queued_link):
    _lfake, companies, plain_companies, company = queued_link
    formula = "{Logo} = ''"  # an attachment field: only the server (the fake) answers it
    assert [r["fields"] for r in companies.all(formula=formula)] == [r["fields"] for r in plain_companies.all(formula=formula)]
    assert companies.get(company)["fields"] == plain_companies.get(company)["fields"]


def test_records_airtable_answers_keep_the_inverse_of_a_queued_link_it_could_not_take_yet(queued_link):
    lfake, companies, plain_companies, company = queued_link
    lfake.fail_next(503, count=1000, method="PATCH")  # the update stays queued
    companies.all(formula="{Logo} = ''")  # answered by Airtable, without the update
    assert companies.get(company)["fields"] == plain_companies.get(company)["fields"]


def test_a_formula_over_links_reads_the_linked_tables_primary_values_as_fresh_as_the_table(db_path, clock):
    lfake = _fake()
    api = Api(lfake.token, endpoint_url=lfake.url, path=db_path, flush="manual", clock=clock, sleep=clock.sleep)
    try:
        people, companies = api.table(LBASE, "People"), api.table(LBASE, "Companies")
        plain_people = pyairtable.Api(lfake.token, endpoint_url=lfake.url).table(LBASE, "People")
        people.all()
        company = companies.all()[1]["id"]
        lfake.set_fields(LBASE, COMPANIES_ID, company, {"Name": "Renamed elsewhere"})
        clock.advance(10**6)  # both tables stale
        formula = "FIND('Renamed', {Company})"
        assert [r["id"] for r in people.all(formula=formula)] == [r["id"] for r in plain_people.all(formula=formula)]
    finally:
        api.close()
        lfake.stop()
