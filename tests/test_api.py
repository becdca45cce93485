"""The drop-in's reads, compared with plain pyairtable against the same fake Airtable.

The traffic of each comparison is replayed from a cassette recorded from the fake (``cassettes/``,
not from Airtable): the answers plain pyairtable got are what the fake said, and the cache must give
exactly the same records from its own copy. The fake filters and sorts with the cache's own formula
engine and sort rule, so where formulas or sorts are compared this checks the cache's plumbing, not
the engine against Airtable (that rests on ``tests/test_recorded_airtable.py``).
"""

from __future__ import annotations

import pyairtable
import pytest
import requests
from pyairtable.exceptions import InvalidParameterError

import airtable_cached
from tests.conftest import BASE, TABLE

READ_OPTIONS = {
    "plain": {},
    "sort": {"sort": ["Status", "-Score", "Full Name"]},
    "sort-blanks": {"sort": ["Last Contacted"]},
    "sort-blanks-desc": {"sort": ["-Email"]},
    "fields": {"fields": ["Full Name", "Email"]},
    "max-records": {"max_records": 42},
    "page-size": {"page_size": 7, "max_records": 30},
    "fields-sort-max": {"fields": ["Company"], "sort": ["-Company"], "max_records": 120},
    "json-format-with-locale": {"cell_format": "json", "user_locale": None, "time_zone": None},
    "count-comments": {"count_comments": True, "max_records": 5},
    "field-ids": {"use_field_ids": True, "max_records": 5},
    "cell-format-string": {"cell_format": "string", "user_locale": "en-us", "time_zone": "UTC", "max_records": 5},
}


@pytest.mark.parametrize("options", READ_OPTIONS.values(), ids=READ_OPTIONS.keys())
def test_all_matches_plain_pyairtable(cassette, table, plain, options):
    assert table.all(**options) == plain.all(**options)


@pytest.mark.parametrize("options", [{"page_size": 30}, {"page_size": 100, "sort": ["Company"]}], ids=["30", "100-sorted"])
def test_iterate_yields_the_same_pages(cassette, table, plain, options):
    assert list(table.iterate(**options)) == list(plain.iterate(**options))


def test_first_and_get_match_plain_pyairtable(cassette, table, plain):
    assert table.first() == plain.first()
    assert table.first(sort=["-Score"]) == plain.first(sort=["-Score"])
    some = plain.all(max_records=3)
    for record in some:
        assert table.get(record["id"]) == plain.get(record["id"])


def test_view_is_pulled_once_then_served_locally(fake, table, plain):
    fake.add_view(BASE, TABLE, "By score", sort=[("Score", "desc")])
    expected = plain.all(view="By score")
    fake.reset_log()
    assert table.all(view="By score") == expected
    projected = plain.all(view="By score", fields=["Score"])
    fake.reset_log()
    assert table.all(view="By score", fields=["Score"]) == projected
    assert fake.request_count() == 0


def test_get_unknown_record_raises_the_same_error(cassette, table, plain):
    with pytest.raises(requests.HTTPError) as plain_error:
        plain.get("recAAAAAAAAAAAAAA")
    with pytest.raises(requests.HTTPError) as cached_error:
        table.get("recAAAAAAAAAAAAAA")
    assert cached_error.value.response.status_code == 404
    assert cached_error.value.args == plain_error.value.args


def test_reads_after_the_first_pull_send_nothing(fake, table):
    table.all()
    fake.reset_log()
    for _ in range(5):
        table.all(sort=["Company"])
        table.first()
    assert fake.request_count() == 0


def test_first_read_pulls_whole_table_in_pages_and_schema(fake, table):
    table.first()
    methods = [(r["method"], r["path"]) for r in fake.requests]
    assert methods.count(("GET", f"/v0/{BASE}/{TABLE}")) == 3  # 250 records, 100 a page
    assert ("GET", f"/v0/meta/bases/{BASE}/tables") in methods


def test_stale_table_is_refreshed_before_serving(fake, api, table, clock):
    table.all()
    fake.set_fields(BASE, TABLE, fake.records(BASE, TABLE)[0]["id"], {"Company": "Changed Elsewhere"})
    assert table.first()["fields"].get("Company") != "Changed Elsewhere"  # fresh: served as cached
    clock.advance(api.settings.max_age + 1)
    assert not table.is_fresh()
    assert table.first()["fields"]["Company"] == "Changed Elsewhere"
    assert table.is_fresh()


def test_refresh_force_pulls_now(fake, table):
    table.all()
    fake.reset_log()
    assert table.refresh() is False
    assert table.refresh(force=True) is True
    assert fake.request_count(path_contains=f"/v0/{BASE}/{TABLE}") == 3


def test_records_deleted_in_airtable_disappear_after_refresh(fake, table):
    table.all()
    gone = fake.records(BASE, TABLE)[5]["id"]
    fake.delete_record(BASE, TABLE, gone)
    table.refresh(force=True)
    assert gone not in {r["id"] for r in table.all()}


def test_classes_are_pyairtable_subclasses_with_the_same_names(api, base, table):
    assert isinstance(api, pyairtable.Api) and type(api).__name__ == "Api"
    assert isinstance(base, pyairtable.Base) and type(base).__name__ == "Base"
    assert isinstance(table, pyairtable.Table) and type(table).__name__ == "Table"
    assert isinstance(api.table(BASE, TABLE), airtable_cached.Table)
    assert all(isinstance(t, airtable_cached.Table) for t in base.tables())
    assert isinstance(base.table(TABLE, validate=True), airtable_cached.Table)


def test_schema_passes_through(base, table):
    assert table.schema().name == TABLE
    assert base.schema().table(TABLE).id == table.schema().id


def test_unknown_option_is_rejected_as_pyairtable_does(table):
    with pytest.raises(InvalidParameterError):
        table.all(colour="blue")


def test_offset_from_another_listing_expires_like_airtable(table):
    with pytest.raises(requests.HTTPError) as error:
        table.api.request("GET", table.urls.records, options={"offset": "itr000/100"})
    assert error.value.response.status_code == 422
    assert "LIST_RECORDS_ITERATOR_NOT_AVAILABLE" in error.value.args[-1]


def test_iterating_while_writing_neither_skips_nor_repeats(table):
    seen = []
    for page in table.iterate(page_size=50):
        for record in page:
            seen.append(record["id"])
            table.update(record["id"], {"Status": "Lost"})
    assert len(seen) == len(set(seen)) == 250


def test_view_read_after_local_writes_sends_them_and_reads_the_view_again(fake, api, table, plain):
    """A view's filter and order are the server's (here the fake's): after a local write to its table
    the view is read again, the write sent first (issue 9), so the answer is plain pyairtable's."""
    fake.add_view(BASE, TABLE, "Newest first", sort=[("Score", "desc")])
    table.all(view="Newest first")
    table.create({"Full Name": "Viewed Vera", "Score": 1000})
    assert table.all(view="Newest first") == plain.all(view="Newest first")
    assert api.pending() == []
    assert table.all(view="Newest first")[0]["fields"]["Full Name"] == "Viewed Vera"
