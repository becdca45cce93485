"""The engine behind the drop-in: write semantics, read-your-writes, validation, modes, formulas."""

from __future__ import annotations

import datetime

import pytest
import requests

from airtable_cached import Api, OfflineError, WriteRejectedError
from airtable_cached.rules.records import is_provisional
from tests.conftest import BASE, TABLE, requests_so_far


def queued(api) -> list[dict]:
    return [op for op in api.pending() if op["state"] != "dead"]


# -- writes are local, immediate and visible ---------------------------------------------------------


def test_create_returns_airtable_shape_with_provisional_id(fake, table):
    table.all()
    fake.reset_log()
    record = table.create({"Full Name": "Ada", "Email": "", "Score": 3})
    assert set(record) == {"id", "createdTime", "fields"}
    assert is_provisional(record["id"]) and len(record["id"]) == 17 and record["id"].startswith("rec")
    assert record["fields"] == {"Full Name": "Ada", "Score": 3}  # empty values omitted
    assert record["createdTime"].endswith("Z")
    assert fake.request_count() == 0


def test_reads_see_queued_writes(table):
    first = table.all()[0]
    table.update(first["id"], {"Status": "Lost", "Score": 1})
    created = table.create({"Full Name": "Zed Zulu", "Status": "New"})
    table.delete(table.all()[1]["id"])
    everything = table.all()
    assert len(everything) == 250  # one created, one deleted
    assert everything[-1]["id"] == created["id"]  # local creates come last in natural order
    assert table.get(first["id"])["fields"]["Status"] == "Lost"
    assert table.first(formula="{Full Name}='Zed Zulu'")["id"] == created["id"]


def test_update_replace_clears_unnamed_fields(table):
    record = table.all()[0]
    replaced = table.update(record["id"], {"Full Name": "Only Name"}, replace=True)
    assert replaced["fields"] == {"Full Name": "Only Name"}
    assert table.get(record["id"])["fields"] == {"Full Name": "Only Name"}


def test_batch_upsert_matches_on_key_fields_against_the_cache(table):
    existing = next(r for r in table.all() if "Email" in r["fields"])
    result = table.batch_upsert(
        [
            {"fields": {"Email": existing["fields"]["Email"], "Status": "Qualified"}},
            {"fields": {"Email": "new.person@example.com", "Full Name": "New Person"}},
        ],
        key_fields=["Email"],
    )
    assert result["updatedRecords"] == [existing["id"]]
    assert len(result["createdRecords"]) == 1 and is_provisional(result["createdRecords"][0])
    assert [r["id"] for r in result["records"]] == [existing["id"], result["createdRecords"][0]]
    assert table.get(existing["id"])["fields"]["Status"] == "Qualified"


def test_delete_returns_airtable_shapes(table):
    ids = [r["id"] for r in table.all(max_records=3)]
    assert table.delete(ids[0]) == {"id": ids[0], "deleted": True}
    assert table.batch_delete(ids[1:]) == [{"id": i, "deleted": True} for i in ids[1:]]
    with pytest.raises(requests.HTTPError) as error:
        table.get(ids[0])
    assert error.value.response.status_code == 404


def test_write_to_unknown_record_fails_like_airtable(table):
    table.all()
    with pytest.raises(requests.HTTPError) as error:
        table.update("recAAAAAAAAAAAAAA", {"Status": "New"})
    assert error.value.response.status_code == 404
    with pytest.raises(requests.HTTPError) as error:
        table.batch_update([{"id": "recAAAAAAAAAAAAAA", "fields": {"Status": "New"}}])
    assert error.value.response.status_code == 422
    assert "ROW_DOES_NOT_EXIST" in error.value.args[-1]


# -- bad input: a clear error, nothing queued ----------------------------------------------------------


def test_unserialisable_value_fails_at_the_call(api, table):
    table.all()
    with pytest.raises(WriteRejectedError, match="Last Contacted") as error:
        table.create({"Full Name": "X", "Last Contacted": datetime.date(2024, 1, 1)})
    assert isinstance(error.value, TypeError)  # what plain pyairtable raises for it (json encoding)
    assert queued(api) == []


def test_unknown_field_fails_at_the_call_with_airtables_error(api, table):
    record = table.all()[0]
    with pytest.raises(requests.HTTPError) as error:
        table.update(record["id"], {"Nickname": "x"})
    assert error.value.response.status_code == 422
    assert "UNKNOWN_FIELD_NAME" in error.value.args[-1] and "Nickname" in error.value.args[-1]
    assert queued(api) == []
    assert table.get(record["id"]) == record


def test_more_than_ten_records_in_one_request_is_refused(api, table):
    table.all()
    with pytest.raises(requests.HTTPError) as error:
        api.request("POST", table.urls.records, json={"records": [{"fields": {}}] * 11})
    assert error.value.response.status_code == 422
    assert queued(api) == []


# -- formulas ----------------------------------------------------------------------------------------


def assert_answered_locally_as_airtable(cassette, fake, table, plain, formulas: list[str]) -> None:
    """Each formula gives plain pyairtable's records, from the cache (no request after the pull)."""
    expected = {f: plain.all(formula=f) for f in formulas}
    table.all()
    sent = requests_so_far(cassette, fake)
    for formula in formulas:
        assert table.all(formula=formula) == expected[formula], formula
    assert requests_so_far(cassette, fake) == sent


def test_formula_reads_are_answered_locally(cassette, fake, table, plain):
    formulas = [
        "AND({Website} != '', {Company Description} = '')",
        "NOT({Email} = '')",
        "AND(NOT({Full Name} = ''), OR({Company} = '', {Website} = ''))",
        "{Status}='New'",
        "AND({Score}>=50, FIND('Acme', {Company}))",
    ]
    assert_answered_locally_as_airtable(cassette, fake, table, plain, formulas)


def test_formula_with_unknown_field_is_422_like_airtable(fake, table, plain):
    with pytest.raises(requests.HTTPError) as plain_error:
        plain.all(formula="{Nope}='x'")
    table.all()
    fake.reset_log()
    with pytest.raises(requests.HTTPError) as error:
        table.all(formula="{Nope}='x'")
    assert error.value.response.status_code == 422
    assert "INVALID_FILTER_BY_FORMULA" in error.value.args[-1]
    assert plain_error.value.response.status_code == 422
    # Only the schema is read again (the field might have been added since); no records are sent.
    assert [r["path"] for r in fake.requests] == [f"/v0/meta/bases/{BASE}/tables"]


def test_formula_the_cache_cannot_answer_goes_to_airtable(fake, api, table, plain):
    formula = "IS_AFTER(LAST_MODIFIED_TIME(), '2000-01-01')"
    expected = plain.all(formula=formula)
    table.all()
    fake.reset_log()
    assert table.all(formula=formula) == expected
    assert fake.request_count() >= 1
    api.engine.stats.write()
    fallbacks = api.engine.store.conn.execute("SELECT SUM(count) FROM stats WHERE kind = 'formula.fallback'").fetchone()[0]
    assert fallbacks == 1


# -- modes ---------------------------------------------------------------------------------------------


def test_write_through_sends_at_once_and_raises_refusals(fake, db_path, clock):
    api = Api(fake.token, endpoint_url=fake.url, path=db_path, mode="write-through", clock=clock, sleep=clock.sleep)
    table = api.table(BASE, TABLE)
    created = table.create({"Full Name": "Written Through"})
    assert not is_provisional(created["id"])
    assert any(r["id"] == created["id"] for r in fake.records(BASE, TABLE))
    with pytest.raises(requests.HTTPError) as error:
        table.update(created["id"], {"Score": "not a number"})
    assert error.value.response.status_code == 422
    assert api.pending() == []
    assert "Score" not in table.get(created["id"])["fields"]


def test_passthrough_sends_what_pyairtable_sends_and_fills_the_cache(fake, db_path, plain):
    api = Api(fake.token, endpoint_url=fake.url, path=db_path, mode="passthrough")
    table = api.table(BASE, TABLE)
    fake.reset_log()
    plain.all(max_records=5)
    plain_requests = [(r["method"], r["path"], r["query"]) for r in fake.requests]
    fake.reset_log()
    records = table.all(max_records=5)
    assert [(r["method"], r["path"], r["query"]) for r in fake.requests] == plain_requests
    cached = api.engine.store.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    assert cached == len(records) == 5


def test_offline_never_touches_the_network(fake, api, db_path, table):
    table.all()
    offline = Api(fake.token, endpoint_url=fake.url, path=db_path, mode="offline")
    fake.reset_log()
    t = offline.table(BASE, TABLE)
    assert len(t.all()) == 250
    t.create({"Full Name": "Queued Offline"})
    with pytest.raises(OfflineError, match="never been pulled"):
        offline.table(BASE, "Other").all()
    with pytest.raises(OfflineError):
        t.all(cell_format="string", user_locale="en-us", time_zone="UTC")
    with pytest.raises(OfflineError):
        offline.flush()
    assert fake.request_count() == 0
    assert [op["op"] for op in offline.pending()] == ["create"]


def test_update_and_delete_of_a_table_never_read_pull_it_first(fake, table):
    first, second = fake.records(BASE, TABLE)[:2]
    assert table.update(first["id"], {"Status": "Lost"})["fields"]["Status"] == "Lost"
    assert table.delete(second["id"]) == {"id": second["id"], "deleted": True}
    assert len(table.all()) == 249


def test_offline_formula_that_needs_airtable_is_a_clear_error(fake, api, db_path, table):
    table.all()
    offline = Api(fake.token, endpoint_url=fake.url, path=db_path, mode="offline")
    t = offline.table(BASE, TABLE)
    assert len(t.all(formula="{Status}='New'")) == len(table.all(formula="{Status}='New'"))
    with pytest.raises(OfflineError, match="LAST_MODIFIED_TIME"):
        t.all(formula="IS_AFTER(LAST_MODIFIED_TIME(), '2000-01-01')")


def test_formula_naming_fields_by_id_matches_plain_pyairtable(cassette, fake, table, plain):
    email_id = next(f.id for f in plain.schema().fields if f.name == "Email")
    formulas = [f"{{{email_id}}} = ''", f"{{{email_id}}} != ''", f"AND({{{email_id}}} != '', {{Status}} = 'New')"]
    assert_answered_locally_as_airtable(cassette, fake, table, plain, formulas)


def test_a_field_added_in_airtable_is_learnt_before_a_422(fake, table, plain):
    table.all()
    fake.add_field(BASE, TABLE, {"name": "Priority", "type": "singleLineText"})
    record = plain.all(max_records=1)[0]
    plain.update(record["id"], {"Priority": "High"})
    table.refresh(force=True)
    assert table.all(formula="{Priority} = 'High'") == plain.all(formula="{Priority} = 'High'")
    updated = table.update(table.all()[1]["id"], {"Priority": "Low"})
    assert updated["fields"]["Priority"] == "Low"
    with pytest.raises(requests.HTTPError) as error:
        table.all(formula="{Still Missing} = 'x'")
    assert error.value.response.status_code == 422


def test_a_token_airtable_refuses_is_not_served_from_another_tokens_cache(fake, db_path, table):
    table.all()  # the cache file is filled with the good token
    intruder = Api("patSOMEONE.else", endpoint_url=fake.url, path=db_path, flush="manual")
    with pytest.raises(requests.HTTPError) as error:
        intruder.table(BASE, TABLE).all()
    assert error.value.response.status_code == 401
    with pytest.raises(requests.HTTPError):
        intruder.table(BASE, TABLE).create({"Full Name": "Should not be queued"})
    assert [op for op in intruder.pending()] == []


def test_the_same_token_in_another_engine_is_served_locally(fake, db_path, table):
    table.all()
    fake.reset_log()
    colleague = Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual", max_age=600)
    for _ in range(3):
        assert len(colleague.table(BASE, TABLE).all()) == 250
    assert fake.request_count() == 0  # the token was seen to read this base within max_age (issue 11)


def test_a_table_named_by_id_and_by_name_is_one_cached_table(fake, api, table):
    table.first()  # the pull learns the table's id from its schema
    created = table.create({"Full Name": "Seen Both Ways"})
    by_id = api.table(BASE, table.schema().id)
    assert by_id.get(created["id"])["fields"]["Full Name"] == "Seen Both Ways"
    assert api.engine.store.conn.execute("SELECT COUNT(*) FROM tables").fetchone()[0] == 1
