"""Tests of the fake Airtable server (airtable_cached.testing), driven by plain pyairtable and requests."""

from __future__ import annotations

import socket
import time

import pytest
import requests
from pyairtable import Api

from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads

BASE = "appFAKEbase000001"
TOKEN = "patFAKE.token"




@pytest.fixture
def fake():
    with FakeAirtable(seed=7) as f:
        f.add_table(BASE, "Leads", LEADS_SCHEMA, seed_leads(250, seed=7))
        yield f


@pytest.fixture
def api(fake):
    return Api(TOKEN, endpoint_url=fake.url)


@pytest.fixture
def table(api):
    return api.table(BASE, "Leads")


def raw(fake, method, path, **kw):
    headers = kw.pop("headers", {"Authorization": f"Bearer {TOKEN}"})
    return requests.request(method, fake.url + path, headers=headers, timeout=5, **kw)


def ids(records):
    return [r["id"] for r in records]


# -- listing ----------------------------------------------------------------------------------


def test_paging_through_250_records_with_offsets(fake, table):
    pages, offset = [], None
    while True:
        params = {"offset": offset} if offset else {}
        body = raw(fake, "GET", f"/v0/{BASE}/Leads", params=params).json()
        pages.append(body["records"])
        offset = body.get("offset")
        if not offset:
            break
        assert offset.startswith("itr") and "/rec" in offset
    assert [len(p) for p in pages] == [100, 100, 50]
    natural = ids(fake.records(BASE, "Leads"))
    assert ids(sum(pages, [])) == natural
    assert ids(table.all()) == natural
    assert len(list(table.iterate(page_size=30))) == 9


def test_offsets_snapshot_the_result(fake):
    first = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"pageSize": 100}).json()
    natural = ids(fake.records(BASE, "Leads"))
    # another user edits a record on a later page and adds one; the listing neither skips nor repeats
    fake.set_fields(BASE, "Leads", natural[150], {"Full Name": "Changed Meanwhile"})
    fake.add_records(BASE, "Leads", [{"Full Name": "Added Meanwhile"}])
    seen = ids(first["records"])
    offset = first["offset"]
    while offset:
        body = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"offset": offset}).json()
        seen += ids(body["records"])
        offset = body.get("offset")
    assert seen == natural
    changed = [r for r in fake.records(BASE, "Leads") if r["id"] == natural[150]][0]
    assert changed["fields"]["Full Name"] == "Changed Meanwhile"


def test_unknown_and_expired_offsets(fake):
    r = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"offset": "itrBogus/recBogus"})
    assert r.status_code == 422
    assert r.json()["error"]["type"] == "LIST_RECORDS_ITERATOR_NOT_AVAILABLE"
    offset = raw(fake, "GET", f"/v0/{BASE}/Leads").json()["offset"]
    fake.expire_offsets()
    r = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"offset": offset})
    assert r.status_code == 422
    assert r.json()["error"]["type"] == "LIST_RECORDS_ITERATOR_NOT_AVAILABLE"


def test_max_records_and_page_size(fake, table):
    assert len(table.all(max_records=150)) == 150
    assert fake.request_count(method="GET", path_contains="/Leads") == 2
    assert ids(table.all(max_records=5)) == ids(fake.records(BASE, "Leads"))[:5]
    first = table.first()
    assert first["id"] == fake.records(BASE, "Leads")[0]["id"]
    assert fake.requests[-1]["query"] == {"pageSize": ["1"], "maxRecords": ["1"]}
    body = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"maxRecords": 3, "pageSize": 2}).json()
    assert len(body["records"]) == 2 and "offset" in body
    for bad in (0, 101, "x"):
        r = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"pageSize": bad})
        assert r.status_code == 422
        assert r.json()["error"]["type"] == "INVALID_REQUEST_UNKNOWN"


def test_fields_projection(fake, table):
    recs = table.all(fields=["Full Name", "Score"], max_records=10)
    assert all(set(r["fields"]) <= {"Full Name", "Score"} for r in recs)
    assert all("createdTime" in r for r in recs)
    # percent-encoded brackets, as requests sends them, and a raw query string
    r = requests.get(f"{fake.url}/v0/{BASE}/Leads?fields%5B%5D=Email&maxRecords=5",
                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert all(set(x["fields"]) <= {"Email"} for x in r.json()["records"])
    r = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"fields[]": ["Nope"]})
    assert r.status_code == 422
    assert r.json() == {"error": {"type": "UNKNOWN_FIELD_NAME", "message": 'Unknown field name: "Nope"'}}


def test_multi_key_sort_with_blanks(fake, table):
    asc = table.all(sort=["Last Contacted"])
    dates = [r["fields"].get("Last Contacted") for r in asc]
    n_blank = dates.count(None)
    assert 0 < n_blank < len(dates)
    assert dates[:n_blank] == [None] * n_blank  # blanks first ascending
    assert dates[n_blank:] == sorted(dates[n_blank:])
    desc = [r["fields"].get("Last Contacted") for r in table.all(sort=["-Last Contacted"])]
    assert desc[-n_blank:] == [None] * n_blank  # blanks last descending
    assert desc[:-n_blank] == sorted(dates[n_blank:], reverse=True)

    multi = table.all(sort=["Status", "-Score"])
    order = ["New", "Contacted", "Qualified", "Lost"]  # single select: order of the choices
    keys = [(order.index(r["fields"]["Status"]), -r["fields"]["Score"]) for r in multi]
    assert keys == sorted(keys)
    # ties keep natural order (stable sort)
    natural = ids(fake.records(BASE, "Leads"))
    for a, b in zip(multi, multi[1:]):
        if keys[multi.index(a)] == keys[multi.index(b)]:
            assert natural.index(a["id"]) < natural.index(b["id"])

    names = [r["fields"]["Full Name"] for r in table.all(sort=["Full Name"])]
    assert names == sorted(names, key=str.casefold)

    r = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"sort[0][field]": "Nope"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "UNKNOWN_FIELD_NAME"


def test_views_order_and_are_found_by_name_or_id(fake, table):
    vid = fake.add_view(BASE, "Leads", "By score", sort=[("Score", "desc")])
    by_name = table.all(view="By score")
    by_id = table.all(view=vid)
    assert ids(by_name) == ids(by_id)
    scores = [r["fields"]["Score"] for r in by_name]
    assert scores == sorted(scores, reverse=True)
    # an explicit sort overrides the view's
    assert [r["fields"]["Score"] for r in table.all(view=vid, sort=["Score"])] == sorted(scores)
    r = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"view": "Nope"})
    assert r.status_code == 422
    views = raw(fake, "GET", f"/v0/meta/bases/{BASE}/tables").json()["tables"][0]["views"]
    assert {"id": vid, "name": "By score", "type": "grid"} in views


def test_view_with_formula_filters(fake, table):
    fake.add_view(BASE, "Leads", "With email", formula="NOT({Email} = '')")
    recs = table.all(view="With email")
    assert recs and all(r["fields"].get("Email") for r in recs)
    assert len(recs) == sum(1 for r in fake.records(BASE, "Leads") if r["fields"].get("Email"))


def test_list_records_post_fallback_for_long_urls(fake, table):
    fields = ["Full Name", "Company"] * 500  # pushes the GET URL over 16,000 characters
    recs = table.all(fields=fields, sort=["-Score"], max_records=120)
    assert fake.request_count(method="POST", path_contains="listRecords") == 2
    assert fake.request_count(method="GET", path_contains="/Leads") == 0
    posts = [r for r in fake.requests if r["path"].endswith("/listRecords")]
    assert posts[0]["json"]["sort"] == [{"field": "Score", "direction": "desc"}]
    assert "offset" in posts[1]["json"]
    assert ids(recs) == ids(table.all(fields=["Full Name", "Company"], sort=["-Score"], max_records=120))
    assert all(set(r["fields"]) <= {"Full Name", "Company"} for r in recs)
    # raw: options in the body, timeZone/userLocale in the query string
    r = raw(fake, "POST", f"/v0/{BASE}/Leads/listRecords",
            params={"timeZone": "Europe/Berlin", "userLocale": "en-us"},
            json={"pageSize": 3, "cellFormat": "string", "fields": ["Score"], "returnFieldsByFieldId": False})
    body = r.json()
    assert r.status_code == 200 and len(body["records"]) == 3 and "offset" in body
    assert all(isinstance(v, str) for x in body["records"] for v in x["fields"].values())


def test_filter_by_formula(fake, table):
    with_email = table.all(formula="NOT({Email} = '')")
    assert with_email and all(r["fields"].get("Email") for r in with_email)
    todo = table.all(formula="AND({Website} != '', {Company Description} = '')")
    assert all(r["fields"].get("Website") and not r["fields"].get("Company Description") for r in todo)
    some = ids(fake.records(BASE, "Leads"))[:300:3]
    long_formula = "OR(" + ", ".join(f"RECORD_ID()='{i}'" for i in some) + ")"
    fake.reset_log()
    got = table.all(formula=long_formula + " " * 16000)  # padded: the URL goes over 16,000 characters
    assert sorted(ids(got)) == sorted(some)
    assert fake.request_count(method="POST", path_contains="listRecords") >= 1


def test_formula_errors(fake):
    r = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"filterByFormula": "{Nope} = 'x'"})
    assert r.status_code == 422
    assert r.json() == {"error": {"type": "INVALID_FILTER_BY_FORMULA", "message": "The formula for filtering records is invalid: Unknown field names: nope"}}
    r = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"filterByFormula": "AND({Email} = "})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["type"] == "INVALID_FILTER_BY_FORMULA"
    assert err["message"].startswith("The formula for filtering records is invalid")


def test_formula_wiring(fake, table):
    """Field ids, views, the POST fallback for a long formula and the 422s, on the real formula engine."""
    status_id = next(f["id"] for f in fake.schema(BASE, "Leads")["fields"] if f["name"] == "Status")
    lost = table.all(formula="{Status} = 'Lost'")
    assert lost and all(r["fields"]["Status"] == "Lost" for r in lost)
    assert ids(table.all(formula=f"{{{status_id}}} = 'Lost'")) == ids(lost)  # field ids resolve
    fake.add_view(BASE, "Leads", "Lost ones", formula="{Status} = 'Lost'", sort=[("Score", "asc")])
    in_view = table.all(view="Lost ones")
    assert sorted(ids(in_view)) == sorted(ids(lost))
    assert [r["fields"]["Score"] for r in in_view] == sorted(r["fields"]["Score"] for r in lost)
    some = ids(fake.records(BASE, "Leads"))[5:40]
    fake.reset_log()
    got = table.all(formula="OR(" + ", ".join(f"RECORD_ID()='{i}'" for i in some) + ")" + " " * 16000)
    assert ids(got) == some
    assert fake.request_count(method="POST", path_contains="listRecords") == 1
    r = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"filterByFormula": "{Nope} = 'x'"})
    assert r.status_code == 422
    assert r.json() == {"error": {"type": "INVALID_FILTER_BY_FORMULA", "message": "The formula for filtering records is invalid: Unknown field names: nope"}}
    r = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"filterByFormula": "AND({Email} = ''"})
    assert r.status_code == 422
    assert r.json()["error"] == {
        "type": "INVALID_FILTER_BY_FORMULA",
        "message": "The formula for filtering records is invalid: formula syntax error at position 16: expected ')', found end of formula",
    }


# -- writes -----------------------------------------------------------------------------------


def test_create_update_replace_delete_single(fake, table):
    rec = table.create({"Full Name": "Jane Roe", "Score": 5, "Tags": ["Warm"]})
    assert rec["id"].startswith("rec") and len(rec["id"]) == 17
    assert rec["fields"] == {"Full Name": "Jane Roe", "Score": 5, "Tags": ["Warm"]}
    assert rec["createdTime"].endswith(".000Z")
    assert fake.records(BASE, "Leads")[-1] == rec  # natural order: appended
    upd = table.update(rec["id"], {"Email": "jane@example.com", "Score": 6})
    assert upd["fields"] == {"Full Name": "Jane Roe", "Email": "jane@example.com", "Score": 6, "Tags": ["Warm"]}
    rep = table.update(rec["id"], {"Company": "Roe Ltd"}, replace=True)
    assert rep["fields"] == {"Company": "Roe Ltd"}
    assert table.get(rec["id"]) == rep
    assert table.delete(rec["id"]) == {"id": rec["id"], "deleted": True}
    r = raw(fake, "GET", f"/v0/{BASE}/Leads/{rec['id']}")
    assert r.status_code == 404
    assert r.json() == {"error": {"type": "MODEL_ID_NOT_FOUND", "message": "Record not found"}}


def test_batch_create_update_delete(fake, table):
    made = table.batch_create([{"Full Name": f"P{i}", "Score": i} for i in range(23)])
    assert len(made) == 23
    assert fake.request_count(method="POST") == 3  # chunks of 10
    upd = table.batch_update([{"id": r["id"], "fields": {"Status": "Lost"}} for r in made])
    assert all(r["fields"]["Status"] == "Lost" and r["fields"]["Full Name"].startswith("P") for r in upd)
    put = table.batch_update([{"id": made[0]["id"], "fields": {"Score": 1}}], replace=True)
    assert put[0]["fields"] == {"Score": 1}
    deleted = table.batch_delete(ids(made))
    assert deleted == [{"id": i, "deleted": True} for i in ids(made)]
    assert len(fake.records(BASE, "Leads")) == 250
    delete_reqs = [r for r in fake.requests if r["method"] == "DELETE"]
    assert len(delete_reqs) == 3 and len(delete_reqs[0]["query"]["records[]"]) == 10


def test_ten_record_limit(fake):
    r = raw(fake, "POST", f"/v0/{BASE}/Leads", json={"records": [{"fields": {"Full Name": str(i)}} for i in range(11)]})
    assert r.status_code == 422 and r.json()["error"]["type"] == "INVALID_RECORDS"
    some = ids(fake.records(BASE, "Leads"))[:11]
    r = raw(fake, "PATCH", f"/v0/{BASE}/Leads", json={"records": [{"id": i, "fields": {}} for i in some]})
    assert r.status_code == 422 and r.json()["error"]["type"] == "INVALID_RECORDS"
    r = raw(fake, "DELETE", f"/v0/{BASE}/Leads", params={"records[]": some})
    assert r.status_code == 422 and r.json()["error"]["type"] == "INVALID_RECORDS"
    assert len(fake.records(BASE, "Leads")) == 250


def test_upsert(fake, table):
    existing = fake.records(BASE, "Leads")[0]
    email = existing["fields"].get("LinkedIn URL")
    res = table.batch_upsert(
        [{"fields": {"LinkedIn URL": email, "Score": 77}}, {"fields": {"LinkedIn URL": "https://x/new", "Full Name": "New"}}],
        key_fields=["LinkedIn URL"],
    )
    assert res["updatedRecords"] == [existing["id"]]
    assert len(res["createdRecords"]) == 1
    assert res["records"][0]["fields"]["Score"] == 77
    assert res["records"][0]["fields"]["Full Name"] == existing["fields"]["Full Name"]  # PATCH merges
    assert res["records"][1]["id"] == res["createdRecords"][0]
    # several matches fail the whole request
    table.create({"Full Name": "Dup", "Company": "Same"})
    table.create({"Full Name": "Dup2", "Company": "Same"})
    before = fake.records(BASE, "Leads")
    r = raw(fake, "PATCH", f"/v0/{BASE}/Leads", json={
        "performUpsert": {"fieldsToMergeOn": ["Company"]},
        "records": [{"fields": {"Company": "Brand new", "Score": 1}}, {"fields": {"Company": "Same", "Score": 1}}]})
    assert r.status_code == 422
    assert fake.records(BASE, "Leads") == before
    r = raw(fake, "PATCH", f"/v0/{BASE}/Leads", json={"performUpsert": {"fieldsToMergeOn": []}, "records": [{"fields": {}}]})
    assert r.status_code == 422


def test_write_errors_are_atomic(fake, table):
    before = fake.records(BASE, "Leads")
    target = before[0]["id"]
    cases = [
        ("POST", {"records": [{"fields": {"Full Name": "ok"}}, {"fields": {"Nope": 1}}]}, "UNKNOWN_FIELD_NAME", 'Unknown field name: "Nope"'),
        ("PATCH", {"records": [{"id": target, "fields": {"Score": "high"}}]}, "INVALID_VALUE_FOR_COLUMN", None),
        ("POST", {"fields": {"Opted Out": "yes"}}, "INVALID_VALUE_FOR_COLUMN", None),
        ("POST", {"fields": {"Status": "Unheard"}}, "INVALID_MULTIPLE_CHOICE_OPTIONS", None),
        ("PATCH", {"records": [{"id": target, "fields": {"Score": 1}}, {"id": "recAAAAAAAAAAAAAA", "fields": {"Score": 2}}]}, "ROW_DOES_NOT_EXIST", None),
    ]
    for method, body, type_, message in cases:
        r = raw(fake, method, f"/v0/{BASE}/Leads", json=body)
        assert r.status_code in (404, 422), body
        assert r.json()["error"]["type"] == type_
        if message:
            assert r.json()["error"]["message"] == message
    r = raw(fake, "DELETE", f"/v0/{BASE}/Leads", params={"records[]": [target, "recAAAAAAAAAAAAAA"]})
    assert r.status_code == 422
    assert fake.records(BASE, "Leads") == before


def test_computed_field_write_is_rejected_like_airtable():
    with FakeAirtable() as fake:
        fake.add_table(BASE, "T", [{"name": "Name", "type": "singleLineText"}, {"name": "f_autoNumber", "type": "autoNumber"}])
        r = raw(fake, "POST", f"/v0/{BASE}/T", json={"records": [{"fields": {"Name": "Jane"}}, {"fields": {"Name": "S", "f_autoNumber": 40}}]})
        assert r.status_code == 422
        assert r.json() == {"error": {"type": "INVALID_VALUE_FOR_COLUMN",
                                      "message": 'Field "f_autoNumber" cannot accept a value because the field is computed'}}
        assert fake.records(BASE, "T") == []


def test_typecast(fake, table):
    rec = table.create({"Score": "42", "Opted Out": "true", "Tags": "Warm, Shiny", "Status": "Brand New"}, typecast=True)
    assert rec["fields"] == {"Status": "Brand New", "Score": 42, "Tags": ["Warm", "Shiny"], "Opted Out": True}
    schema = raw(fake, "GET", f"/v0/meta/bases/{BASE}/tables").json()["tables"][0]
    status = next(f for f in schema["fields"] if f["name"] == "Status")
    assert "Brand New" in [c["name"] for c in status["options"]["choices"]]


def test_empty_values_are_omitted(fake, table):
    rec = table.create({"Full Name": "Blanky", "Email": "", "Opted Out": False, "Tags": [], "Score": 0, "Website": None})
    assert rec["fields"] == {"Full Name": "Blanky", "Score": 0}
    upd = table.update(rec["id"], {"Full Name": ""})
    assert upd["fields"] == {"Score": 0}
    assert fake.records(BASE, "Leads")[-1]["fields"] == {"Score": 0}
    listed = [r for r in table.all() if r["id"] == rec["id"]][0]
    assert listed["fields"] == {"Score": 0}


def test_return_fields_by_field_id(fake, api):
    table = api.table(BASE, "Leads")
    schema = raw(fake, "GET", f"/v0/meta/bases/{BASE}/tables").json()["tables"][0]
    name_of = {f["id"]: f["name"] for f in schema["fields"]}
    id_of = {v: k for k, v in name_of.items()}
    by_id = table.all(use_field_ids=True, max_records=5)
    by_name = table.all(max_records=5)
    for a, b in zip(by_id, by_name):
        assert {name_of[k]: v for k, v in a["fields"].items()} == b["fields"]
    made = table.create({id_of["Full Name"]: "By Id"}, use_field_ids=True)
    assert made["fields"] == {id_of["Full Name"]: "By Id"}
    assert table.get(made["id"])["fields"] == {"Full Name": "By Id"}
    r = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"returnFieldsByFieldId": "true", "maxRecords": 1})
    assert set(r.json()["records"][0]["fields"]) <= set(name_of)


def test_cell_format_string(fake, table):
    r = raw(fake, "GET", f"/v0/{BASE}/Leads", params={"cellFormat": "string"})
    assert r.status_code == 422
    recs = table.all(cell_format="string", time_zone="America/New_York", user_locale="en-us", max_records=50)
    for rec in recs:
        assert all(isinstance(v, str) for v in rec["fields"].values())
    with_tags = next(r for r in recs if "Tags" in r["fields"] and "," in r["fields"]["Tags"])
    assert ", " in with_tags["fields"]["Tags"]
    plain = {r["id"]: r for r in table.all(max_records=50)}
    some = next(r for r in recs if "Last Contacted" in r["fields"])
    y, m, d = plain[some["id"]]["fields"]["Last Contacted"].split("-")
    assert some["fields"]["Last Contacted"] == f"{int(m)}/{int(d)}/{y}"
    assert recs[0]["fields"]["Score"] == str(plain[recs[0]["id"]]["fields"]["Score"])


def test_record_metadata_comment_count(fake, table):
    recs = table.all(count_comments=True, max_records=2)
    assert all(r["commentCount"] == 0 for r in recs)


# -- errors, auth, meta -----------------------------------------------------------------------


def test_auth_and_not_found_shapes(fake):
    r = raw(fake, "GET", f"/v0/{BASE}/Leads", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert r.json() == {"error": {"type": "AUTHENTICATION_REQUIRED", "message": "Authentication required"}}
    assert raw(fake, "GET", f"/v0/{BASE}/Leads", headers={}).status_code == 401
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    r = raw(fake, "GET", f"/v0/{BASE}/Unknown%20Table")
    assert r.status_code == 404
    assert r.json() == {"error": {"type": "TABLE_NOT_FOUND", "message": f"Could not find table Unknown Table in application {BASE}"}}
    r = raw(fake, "GET", "/v0/appNOPE/Leads")
    assert r.status_code == 404 and r.json() == {"error": "NOT_FOUND"}
    r = raw(fake, "GET", "/v0/meta/bases/junk/tables")
    assert r.status_code == 404 and r.json() == {"error": "NOT_FOUND"}
    # table by id, trailing slash as some clients send
    tid = raw(fake, "GET", f"/v0/meta/bases/{BASE}/tables").json()["tables"][0]["id"]
    r = raw(fake, "POST", f"/v0/{BASE}/{tid}/", json={"fields": {"Full Name": "Slash"}})
    assert r.status_code == 200


def test_pyairtable_errors(fake, api):
    bad = Api("wrong", endpoint_url=fake.url)
    with pytest.raises(requests.HTTPError) as info:
        bad.table(BASE, "Leads").first()
    assert info.value.response.status_code == 401
    assert "AUTHENTICATION_REQUIRED" in str(info.value.args)


def test_meta_endpoints(fake, api):
    assert api.whoami()["id"].startswith("usr")
    bases = raw(fake, "GET", "/v0/meta/bases").json()
    assert bases == {"bases": [{"id": BASE, "name": f"Base {BASE}", "permissionLevel": "create"}]}
    schema = api.base(BASE).schema()
    leads = schema.table("Leads")
    assert leads.primary_field_id == leads.fields[0].id
    assert [f.name for f in leads.fields] == [f["name"] for f in LEADS_SCHEMA]
    assert leads.views[0].name == "Grid view"
    with FakeAirtable(schema_access=False) as locked:
        locked.add_table(BASE, "T", records=[{"Name": "a"}])
        r = raw(locked, "GET", f"/v0/meta/bases/{BASE}/tables")
        assert r.status_code == 403
        assert r.json()["error"]["type"] == "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND"
        assert raw(locked, "GET", f"/v0/{BASE}/T").status_code == 200


def test_rate_limit_and_penalty():
    with FakeAirtable(rate_limit=5, penalty_seconds=0.4) as fake:
        fake.add_table(BASE, "T", records=[{"Name": "a"}])
        fake.add_table("appOTHERbase00001", "T", records=[{"Name": "b"}])
        codes = [raw(fake, "GET", f"/v0/{BASE}/T").status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3
        r = raw(fake, "GET", f"/v0/{BASE}/T")
        assert r.json() == {"error": {"type": "RATE_LIMIT_REACHED", "message": "Rate limit exceeded. Please try again later"}}
        assert raw(fake, "GET", "/v0/appOTHERbase00001/T").status_code == 200  # per base
        time.sleep(0.45)
        assert raw(fake, "GET", f"/v0/{BASE}/T").status_code == 200
        assert fake.request_count(base_id=BASE) == 10
        api = Api(TOKEN, endpoint_url=fake.url, retry_strategy=None)
        for _ in range(6):
            try:
                api.table(BASE, "T").first()
            except requests.HTTPError as exc:
                assert exc.response.status_code == 429
                break
        else:
            pytest.fail("no 429")


def test_fail_next_faults(fake, table):
    fake.fail_next(503, retry_after=2)
    r = raw(fake, "GET", f"/v0/{BASE}/Leads")
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    assert r.json()["error"]["type"] == "RETRIABLE_ERROR"
    assert raw(fake, "GET", f"/v0/{BASE}/Leads").status_code == 200

    fake.fail_next(500, count=2, method="PATCH")
    assert raw(fake, "GET", f"/v0/{BASE}/Leads").status_code == 200  # not matching
    for _ in range(2):
        assert raw(fake, "PATCH", f"/v0/{BASE}/Leads", json={"records": []}).status_code == 500
    fake.fail_next(422, path_contains="listRecords", body={"error": {"type": "CUSTOM", "message": "x"}})
    r = raw(fake, "POST", f"/v0/{BASE}/Leads/listRecords", json={})
    assert r.status_code == 422 and r.json()["error"]["type"] == "CUSTOM"

    fake.fail_next(0, drop_connection=True)
    with pytest.raises(requests.ConnectionError):
        raw(fake, "GET", f"/v0/{BASE}/Leads")
    assert fake.requests[-1]["status"] is None


def test_lost_response_to_a_create_makes_a_duplicate_with_default_retries(fake, table):
    # the create is applied, its response lost; pyairtable's default urllib3 retry re-sends the POST
    fake.fail_next(0, method="POST", drop_connection=True, apply=True)
    table.create({"Full Name": "Twice"})
    assert [r["fields"].get("Full Name") for r in fake.records(BASE, "Leads")].count("Twice") == 2
    no_retry = Api(TOKEN, endpoint_url=fake.url, retry_strategy=None).table(BASE, "Leads")
    fake.fail_next(0, method="POST", drop_connection=True, apply=True)
    with pytest.raises(requests.ConnectionError):
        no_retry.create({"Full Name": "Once"})
    assert [r["fields"].get("Full Name") for r in fake.records(BASE, "Leads")].count("Once") == 1


def test_request_log(fake, table):
    fake.reset_log()
    table.all(fields=["Email"], max_records=3)
    entry = fake.requests[0]
    assert entry["method"] == "GET" and entry["path"] == f"/v0/{BASE}/Leads"
    assert entry["query"]["fields[]"] == ["Email"] and entry["status"] == 200 and entry["base_id"] == BASE
    table.create({"Full Name": "Logged"})
    assert fake.requests[-1]["json"]["fields"] == {"Full Name": "Logged"}
    assert fake.request_count(method="post") == 1
    assert fake.request_count(base_id="appOther") == 0



@pytest.mark.parametrize("sent", [b"", b'{"records": [{"fields": {"Full Name": "Cut'], ids=["headers-only", "half-a-body"])
def test_a_request_cut_short_is_never_carried_out(fake, sent):
    """A client gone before its whole body arrived (a process killed between the headers and the
    body of a POST): Airtable never sees the request; the fake neither answers nor logs it."""
    fake.reset_log()
    before = len(fake.records(BASE, "Leads"))
    body = b'{"records": [{"fields": {"Full Name": "Cut short"}}]}'
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as conn:
        conn.sendall(
            f"POST /v0/{BASE}/Leads HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + sent
        )
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(1024) == b""  # closed without an answer
    assert len(fake.records(BASE, "Leads")) == before
    assert fake.requests == []


# -- determinism and seed data ----------------------------------------------------------------


def test_deterministic_given_seed():
    def run(seed):
        with FakeAirtable(seed=seed) as f:
            f.add_table(BASE, "Leads", LEADS_SCHEMA, seed_leads(20, seed=seed))
            api = Api(TOKEN, endpoint_url=f.url)
            t = api.table(BASE, "Leads")
            t.create({"Full Name": "X"})
            return t.all(page_size=7), api.base(BASE).schema().tables[0].id
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_add_table_shapes():
    with FakeAirtable() as fake:
        tid = fake.add_table(BASE, "Mixed", records=[
            {"id": "recKEEPMYID000001", "createdTime": "2021-06-15T11:25:58.000Z", "fields": {"Name": "kept", "N": 3}},
            {"Name": "plain", "Done": True, "Labels": ["a", "b"]},
        ], table_id="tblMIXED000000001", primary_field="Name")
        assert tid == "tblMIXED000000001"
        recs = fake.records(BASE, tid)
        assert recs[0] == {"id": "recKEEPMYID000001", "fields": {"Name": "kept", "N": 3}, "createdTime": "2021-06-15T11:25:58.000Z"}
        schema = {f["name"]: f["type"] for f in fake.schema(BASE, "Mixed")["fields"]}
        assert schema == {"Name": "singleLineText", "N": "number", "Done": "checkbox", "Labels": "multipleSelects"}


def test_seed_leads_shape():
    leads = seed_leads(500, seed=1)
    assert leads == seed_leads(500, seed=1) and leads != seed_leads(500, seed=2)
    names = {f["name"] for f in LEADS_SCHEMA}
    assert all(set(r) <= names for r in leads)
    blank_email = sum("Email" not in r for r in leads) / len(leads)
    assert 0.3 < blank_email < 0.5
    assert any("Website" not in r for r in leads) and any("Company Description" not in r for r in leads)
    assert {r["Status"] for r in leads} == {"New", "Contacted", "Qualified", "Lost"}
    assert all(r.get("Opted Out", True) is True for r in leads)
    assert all(isinstance(r["Score"], int) for r in leads)


def test_concurrent_writes_and_latency():
    from concurrent.futures import ThreadPoolExecutor

    with FakeAirtable(latency=0.05) as fake:
        fake.add_table(BASE, "T", [{"name": "Name", "type": "singleLineText"}])
        table = Api(TOKEN, endpoint_url=fake.url).table(BASE, "T")
        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            made = list(pool.map(lambda i: table.create({"Name": str(i)}), range(16)))
        assert time.monotonic() - start < 16 * 0.05  # requests overlap: the sleep is outside the lock
        assert len(set(ids(made))) == 16
        assert sorted(r["fields"]["Name"] for r in fake.records(BASE, "T")) == sorted(str(i) for i in range(16))


def test_peak_rate_counts_the_busiest_second_per_base():
    with FakeAirtable(rate_limit=None) as fake:
        fake.add_table(BASE, "Leads", [{"name": "Name", "type": "singleLineText"}])
        api = Api(fake.token, endpoint_url=fake.url)
        for _ in range(4):
            api.table(BASE, "Leads").all()
        assert fake.peak_rate(BASE) == 4 and fake.peak_rate("appOTHER000000000") == 0
