"""The plain-HTTP front-end: raw ``requests`` agents answered by the cache (airtable_cached.http).

Two fake Airtables start from the same data: ``plain`` is called directly, ``cached`` is the one the
cache syncs with (``endpoint_url``), so the interception catches calls to ``cached.url`` and lets the
calls to ``plain.url`` through untouched. The same raw call made to both must answer the same.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyairtable
import pytest
import requests

import airtable_cached
from airtable_cached import http as cached_http
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads

BASE = "appFAKEbase000001"
TOKEN = "patFAKE.token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECORD_ID = re.compile(r"^rec[A-Za-z0-9]{14}$")


def _fake() -> FakeAirtable:
    fake = FakeAirtable(seed=7, token=TOKEN).start()
    fake.add_table(BASE, "Leads", LEADS_SCHEMA, seed_leads(250, seed=7))
    return fake


@pytest.fixture
def plain():
    fake = _fake()
    yield fake
    fake.stop()


@pytest.fixture
def cached():
    fake = _fake()
    yield fake
    fake.stop()


@pytest.fixture
def settings(tmp_path, cached):
    return {"path": str(tmp_path / "cache.sqlite3"), "flush": "manual", "endpoint_url": cached.url, "rate_limit": 1000}


@pytest.fixture
def installed(settings):
    cached_http.install(**settings)
    yield settings
    cached_http.uninstall()


class Pair:
    """The same raw call to the plain fake (directly) and to the cached one (through the cache)."""

    def __init__(self, plain: FakeAirtable, cached: FakeAirtable):
        self.plain, self.cached = plain, cached

    def call(self, method: str, path: str, **kw):
        kw.setdefault("headers", AUTH)
        kw.setdefault("timeout", 10)
        a = requests.request(method, self.plain.url + path, **kw)
        b = requests.request(method, self.cached.url + path, **kw)
        return a, b

    def same(self, method: str, path: str, **kw):
        a, b = self.call(method, path, **kw)
        assert b.status_code == a.status_code, (a.text, b.text)
        assert _strip(b.json()) == _strip(a.json())
        return a.json(), b.json()


def _strip(body):
    """Offsets are opaque: compare only whether there is one."""
    if isinstance(body, dict) and "offset" in body:
        return {**body, "offset": "<offset>"}
    return body


@pytest.fixture
def pair(plain, cached, installed):
    return Pair(plain, cached)


def _all_pages(url: str, params: dict, *, via=requests) -> tuple[list[dict], int]:
    records, pages = [], 0
    params = dict(params)
    while True:
        page = via.get(url, headers=AUTH, params=params, timeout=10)
        assert page.status_code == 200, page.text
        pages += 1
        body = page.json()
        records += body["records"]
        if "offset" not in body:
            return records, pages
        params["offset"] = body["offset"]


def _state(fake: FakeAirtable) -> tuple[dict, list]:
    """Airtable's state: seeded records by id, created ones by content (their ids are Airtable's)."""
    seeded, created = {}, []
    for r in fake.records(BASE, "Leads"):
        if r["fields"].get("Company") == "Created Co":
            created.append(json.dumps(r["fields"], sort_keys=True))
        else:
            seeded[r["id"]] = r["fields"]
    return seeded, sorted(created)


# -- reads ---------------------------------------------------------------------------------------


def test_list_without_paging_gives_the_first_100_as_airtable(pair, cached):
    a, b = pair.same("GET", f"/v0/{BASE}/Leads")
    assert len(b["records"]) == 100 and "offset" in b
    assert b["records"][0]["createdTime"] == a["records"][0]["createdTime"]


def test_response_is_a_real_requests_response(pair, cached):
    r = requests.get(f"{cached.url}/v0/{BASE}/Leads", headers=AUTH, params={"maxRecords": 3}, stream=True)
    assert r.status_code == 200 and r.ok and r.reason == "OK"
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert int(r.headers["content-length"]) == len(r.content)
    assert r.url.startswith(cached.url) and r.request.method == "GET"
    assert r.elapsed.total_seconds() >= 0
    assert len(json.loads(b"".join(r.iter_content(7)))["records"]) == 3
    missing = requests.get(f"{cached.url}/v0/{BASE}/Leads/recAAAAAAAAAAAAAA", headers=AUTH)
    with pytest.raises(requests.HTTPError, match="404 Client Error"):
        missing.raise_for_status()


@pytest.mark.parametrize(
    "params",
    [
        {"pageSize": "7", "maxRecords": "30"},
        {"sort[0][field]": "Score", "sort[0][direction]": "desc", "sort[1][field]": "Full Name", "pageSize": "50"},
        {"fields[]": ["Email", "Score"], "sort[0][field]": "Company"},
        {"filterByFormula": "AND({Website} != '', {Company Description} = '')"},
        {"filterByFormula": "NOT({Email} = '')", "fields[]": "Full Name", "pageSize": "30"},
        {"filterByFormula": "{Status} = 'New'", "sort[0][field]": "Score", "maxRecords": "12", "pageSize": "5"},
    ],
)
def test_paging_sorting_filtering_projection_match_airtable(pair, plain, cached, params):
    a, a_pages = _all_pages(f"{plain.url}/v0/{BASE}/Leads", params)
    b, b_pages = _all_pages(f"{cached.url}/v0/{BASE}/Leads", params)
    assert b == a and b_pages == a_pages


def test_first_page_of_each_query_matches_exactly(pair):
    pair.same("GET", f"/v0/{BASE}/Leads", params={"pageSize": 5, "sort[0][field]": "Score", "fields[]": ["Score", "Email"]})
    pair.same("GET", f"/v0/{BASE}/Leads", params={"maxRecords": 1})


def test_list_records_by_post(pair):
    body = {"pageSize": 20, "sort": [{"field": "Company", "direction": "asc"}], "fields": ["Company", "Email"],
            "filterByFormula": "{Email} != ''"}
    pair.same("POST", f"/v0/{BASE}/Leads/listRecords", json=body)


def test_get_one_record_and_its_fields(pair, plain):
    rid = plain.records(BASE, "Leads")[17]["id"]
    pair.same("GET", f"/v0/{BASE}/Leads/{rid}")


def test_table_by_id_and_by_quoted_name(pair, plain):
    table_id = plain.schema(BASE, "Leads")["id"]
    pair.same("GET", f"/v0/{BASE}/{table_id}", params={"maxRecords": 4})


def test_read_errors_match_airtable(pair):
    _, b = pair.same("GET", f"/v0/{BASE}/Leads/recAAAAAAAAAAAAAA")
    assert b["error"]["type"] == "MODEL_ID_NOT_FOUND"
    _, b = pair.same("GET", f"/v0/{BASE}/Nope", params={"maxRecords": 1})
    assert b["error"]["type"] == "TABLE_NOT_FOUND"
    a, b = pair.call("GET", f"/v0/{BASE}/Leads", params={"pageSize": 500})
    assert a.status_code == b.status_code == 422
    assert a.json()["error"]["type"] == b.json()["error"]["type"] == "INVALID_REQUEST_UNKNOWN"
    a, b = pair.call("GET", f"/v0/{BASE}/Leads", params={"offset": "itr00000000000099/recAAAAAAAAAAAAAA"})
    assert a.status_code == b.status_code == 422
    assert b.json()["error"]["type"] == "LIST_RECORDS_ITERATOR_NOT_AVAILABLE"


# -- writes --------------------------------------------------------------------------------------


def test_patch_put_create_upsert_delete_answer_as_airtable(pair, plain, cached, installed):
    ids = [r["id"] for r in plain.records(BASE, "Leads")]
    url = f"/v0/{BASE}/Leads"
    # PATCH one record, PATCH a batch, PUT one
    pair.same("PATCH", f"{url}/{ids[0]}", json={"fields": {"Status": "Lost", "Score": 1}})
    pair.same("PATCH", url, json={"records": [{"id": i, "fields": {"Score": 50}} for i in ids[1:4]]})
    pair.same("PUT", f"{url}/{ids[4]}", json={"fields": {"Full Name": "Only Name"}})
    # DELETE one, DELETE a batch
    pair.same("DELETE", f"{url}/{ids[5]}")
    pair.same("DELETE", url, params={"records[]": ids[6:9]})
    # POST create: one, then a batch (ids and createdTime are new on both sides)
    a, b = pair.call("POST", url, json={"fields": {"Full Name": "New One", "Company": "Created Co"}})
    assert a.status_code == b.status_code == 200
    assert RECORD_ID.match(b.json()["id"]) and b.json()["fields"] == a.json()["fields"]
    assert set(b.json()) == set(a.json()) == {"id", "createdTime", "fields"}
    batch = {"records": [{"fields": {"Full Name": f"N{i}", "Company": "Created Co"}} for i in range(3)]}
    a, b = pair.call("POST", url, json=batch)
    assert [r["fields"] for r in b.json()["records"]] == [r["fields"] for r in a.json()["records"]]
    # upsert: one existing match (updated), one new (created)
    email = plain.records(BASE, "Leads")[20]["fields"].get("Email") or "x@y.z"
    upsert = {"performUpsert": {"fieldsToMergeOn": ["Full Name"]}, "records": [
        {"fields": {"Full Name": "N0", "Score": 99}},
        {"fields": {"Full Name": "Brand New", "Company": "Created Co", "Email": email}},
    ]}
    a, b = pair.call("PATCH", url, json=upsert)
    assert a.status_code == b.status_code == 200, b.text
    assert len(b.json()["createdRecords"]) == len(a.json()["createdRecords"]) == 1
    assert len(b.json()["updatedRecords"]) == len(a.json()["updatedRecords"]) == 1
    assert [r["fields"] for r in b.json()["records"]] == [r["fields"] for r in a.json()["records"]]
    # reads see the writes at once, as on Airtable (created records differ only by id and createdTime)
    a, b = pair.call("GET", url, params={"sort[0][field]": "Full Name", "fields[]": ["Full Name", "Score", "Status"]})
    assert a.status_code == b.status_code == 200
    seeded = set(ids)
    assert [r["fields"] for r in b.json()["records"]] == [r["fields"] for r in a.json()["records"]]
    assert [r["id"] for r in b.json()["records"] if r["id"] in seeded] == [
        r["id"] for r in a.json()["records"] if r["id"] in seeded
    ]
    # and after a flush, Airtable holds what the plain agent produced
    result = airtable_cached.Api(TOKEN, **installed).flush()
    assert result.ok and result.pending == 0
    assert _state(cached) == _state(plain)


def test_write_errors_match_airtable(pair, plain):
    rid = plain.records(BASE, "Leads")[0]["id"]
    url = f"/v0/{BASE}/Leads"
    _, b = pair.same("PATCH", f"{url}/{rid}", json={"fields": {"Nope": 1}})
    assert b["error"]["type"] == "UNKNOWN_FIELD_NAME"
    a, b = pair.call("PATCH", f"{url}/recAAAAAAAAAAAAAA", json={"fields": {"Score": 1}})
    assert a.status_code == b.status_code == 404
    a, b = pair.call("POST", url, json={"records": [{"fields": {"Score": i}} for i in range(11)]})
    assert a.status_code == b.status_code == 422
    assert a.json()["error"]["type"] == b.json()["error"]["type"] == "INVALID_RECORDS"
    # (the fake itself drops the connection on a body that is not JSON: a bug in airtable_cached/testing/)
    b = requests.post(pair.cached.url + url, data="{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert b.status_code == 422
    assert b.json() == {"error": {"type": "INVALID_REQUEST_UNKNOWN", "message": "Could not parse request body as JSON"}}
    a, b = pair.call("DELETE", f"{url}/recAAAAAAAAAAAAAA")
    assert a.status_code == b.status_code == 404


# -- tokens --------------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_401_as_on_airtable(pair, cached):
    url = f"/v0/{BASE}/Leads"
    a, b = pair.call("GET", url, headers={})
    assert a.status_code == b.status_code == 401 and b.json() == a.json()
    assert b.json() == {"error": {"type": "AUTHENTICATION_REQUIRED", "message": "Authentication required"}}
    a, b = pair.call("PATCH", f"{url}/recAAAAAAAAAAAAAA", headers={"Authorization": "Bearer patWRONG"}, json={"fields": {}})
    assert a.status_code == b.status_code == 401 and b.json() == a.json()
    a, b = pair.call("GET", url, headers={"Authorization": "Basic abc"})
    assert a.status_code == b.status_code == 401
    # the verdict is kept: a wrong token is checked with Airtable once
    cached.reset_log()
    for _ in range(3):
        assert requests.get(cached.url + url, headers={"Authorization": "Bearer patWRONG"}).status_code == 401
    assert cached.request_count() == 0
    # and the right one still works
    assert requests.get(cached.url + url, headers=AUTH, params={"maxRecords": 1}).status_code == 200


def test_token_is_never_written_to_disk(pair, cached, tmp_path):
    requests.patch(f"{cached.url}/v0/{BASE}/Leads/{cached.records(BASE, 'Leads')[0]['id']}", headers=AUTH,
                   json={"fields": {"Score": 3}})
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


# -- what passes through -------------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *args):
        pass

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization"), body))
        data = json.dumps({"echo": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo", "yes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = _serve


@pytest.fixture
def echo():
    _Echo.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_other_hosts_pass_through_untouched(installed, echo):
    # Even an Airtable-shaped path on another host goes out as sent.
    r = requests.patch(f"{echo}/v0/{BASE}/Leads/recAAAAAAAAAAAAAA", headers=AUTH, json={"fields": {"A": 1}})
    assert r.status_code == 200 and r.headers["X-Echo"] == "yes"
    assert _Echo.seen == [("PATCH", f"/v0/{BASE}/Leads/recAAAAAAAAAAAAAA", f"Bearer {TOKEN}", b'{"fields": {"A": 1}}')]
    with requests.Session() as s:
        assert s.get(f"{echo}/anything?x=1").json() == {"echo": "/anything?x=1"}


def test_airtable_non_record_endpoints_pass_through(pair, cached):
    cached.reset_log()
    r = requests.get(f"{cached.url}/v0/meta/whoami", headers=AUTH)
    assert r.status_code == 200 and r.json()["id"].startswith("usr")
    r = requests.get(f"{cached.url}/v0/meta/bases/{BASE}/tables", headers=AUTH)
    assert r.status_code == 200 and r.json()["tables"][0]["name"] == "Leads"
    assert cached.request_count(path_contains="/v0/meta") == 2


def test_reads_are_served_locally_after_the_first(pair, cached):
    url = f"{cached.url}/v0/{BASE}/Leads"
    requests.get(url, headers=AUTH)  # the first read pulls the table
    cached.reset_log()
    for _ in range(5):
        _all_pages(url, {"pageSize": 100})
        requests.get(url, headers=AUTH, params={"filterByFormula": "{Status} = 'New'"})
    assert cached.request_count() == 0


# -- sessions, install and uninstall ---------------------------------------------------------------


def test_existing_and_new_sessions_and_pyairtable_are_intercepted(settings, cached, plain):
    before = requests.Session()  # made before install()
    before.headers.update(AUTH)
    cached_http.install(**settings)
    try:
        cached.reset_log()
        rid = cached.records(BASE, "Leads")[0]["id"]
        assert before.patch(f"{cached.url}/v0/{BASE}/Leads/{rid}", json={"fields": {"Score": 77}}).status_code == 200
        assert requests.get(f"{cached.url}/v0/{BASE}/Leads/{rid}", headers=AUTH).json()["fields"]["Score"] == 77
        # a plain pyairtable agent goes through its own Session: it is served by the cache too
        table = pyairtable.Api(TOKEN, endpoint_url=cached.url).table(BASE, "Leads")
        assert table.get(rid)["fields"]["Score"] == 77
        assert len(table.all(formula="{Score} = 77")) >= 1
        assert cached.request_count(method="PATCH") == 0  # queued, not sent (flush=manual)
        # same answers as plain pyairtable against the other fake (``plain``), called directly
        plain_table = pyairtable.Api(TOKEN, endpoint_url=plain.url).table(BASE, "Leads")
        assert table.all(sort=["-Score", "Full Name"], max_records=40) != []
        assert [r["id"] for r in table.all(sort=["Company"])] == [r["id"] for r in plain_table.all(sort=["Company"])]
    finally:
        cached_http.uninstall()
    # after uninstall, requests go to the server (the fake) for real again, on every session
    cached.reset_log()
    r = before.get(f"{cached.url}/v0/{BASE}/Leads/{rid}")
    assert r.json()["fields"]["Score"] != 77 and cached.request_count() == 1


def test_install_is_idempotent_and_uninstall_restores(settings):
    original = requests.Session.__dict__["get_adapter"]
    cached_http.install(**settings)
    cached_http.install(**settings)
    assert cached_http.is_installed()
    assert requests.Session.__dict__["get_adapter"].__wrapped__ is original
    cached_http.uninstall()
    cached_http.uninstall()
    assert requests.Session.__dict__["get_adapter"] is original
    assert not cached_http.is_installed()


def test_install_is_reexported_or_reachable():
    install = getattr(airtable_cached, "install", cached_http.install)
    uninstall = getattr(airtable_cached, "uninstall", cached_http.uninstall)
    assert install is cached_http.install and uninstall is cached_http.uninstall


def test_api_airtable_com_urls_are_answered_by_the_cache(settings, cached):
    """An agent hard-coding https://api.airtable.com works against the endpoint the cache syncs with."""
    cached_http.install(**settings)
    try:
        url = f"https://api.airtable.com/v0/{BASE}/Leads"
        records = requests.get(url, headers=AUTH).json()["records"]
        assert len(records) == 100
        rid = records[0]["id"]
        assert requests.patch(f"{url}/{rid}", headers=AUTH, json={"fields": {"Score": 5}}).json()["fields"]["Score"] == 5
    finally:
        cached_http.uninstall()
    airtable_cached.Api(TOKEN, **settings).flush()
    assert next(r for r in cached.records(BASE, "Leads") if r["id"] == rid)["fields"]["Score"] == 5


def test_passthrough_mode_sends_to_airtable(settings, cached):
    cached_http.install(**{**settings, "mode": "passthrough"})
    try:
        cached.reset_log()
        rid = cached.records(BASE, "Leads")[0]["id"]
        r = requests.patch(f"{cached.url}/v0/{BASE}/Leads/{rid}", headers=AUTH, json={"fields": {"Score": 4}})
        assert r.status_code == 200 and r.json()["fields"]["Score"] == 4
        assert cached.request_count(method="PATCH") == 1
    finally:
        cached_http.uninstall()


# -- the point of it all --------------------------------------------------------------------------


def raw_agent(url: str) -> int:
    """A lead enricher as such agents are written: one GET without paging, a PATCH per record."""
    records = requests.get(url, headers=AUTH, timeout=10).json()["records"]
    patched = 0
    for record in records:
        fields = record["fields"]
        if "Email" not in fields:
            email = fields["Full Name"].lower().replace(" ", ".") + "@example.com"
            r = requests.patch(f"{url}/{record['id']}", headers=AUTH, json={"fields": {"Email": email, "Status": "Contacted"}})
            r.raise_for_status()
            patched += 1
    for i in range(3):
        r = requests.post(url, headers=AUTH, json={"fields": {"Full Name": f"Lead {i}", "Company": "Created Co"}})
        r.raise_for_status()
    r = requests.delete(f"{url}/{records[-1]['id']}", headers=AUTH)
    r.raise_for_status()
    return patched


def test_raw_agent_final_state_equals_plain_run_with_far_fewer_requests(settings, plain, cached):
    plain.reset_log()
    patched = raw_agent(f"{plain.url}/v0/{BASE}/Leads")
    plain_requests = plain.request_count()
    assert patched > 20 and plain_requests == patched + 5

    cached_http.install(**settings)
    try:
        cached.reset_log()
        assert raw_agent(f"{cached.url}/v0/{BASE}/Leads") == patched
        assert cached.request_count(method="PATCH") == cached.request_count(method="POST") == 0
    finally:
        cached_http.uninstall()
    result = airtable_cached.Api(TOKEN, **settings).flush()
    assert result.ok and result.pending == 0
    assert _state(cached) == _state(plain)
    cached_requests = cached.request_count()
    assert cached_requests <= plain_requests / 3, (cached_requests, plain_requests)


def test_the_syncs_own_sessions_are_never_intercepted(installed, cached):
    from airtable_cached.config import Settings
    from airtable_cached.runtime import shared_runtime

    _engine, sync = shared_runtime(Settings.from_env(**installed), "patOTHER")
    assert getattr(sync.remote.session, cached_http.DIRECT_ATTR) is True
    cached.reset_log()
    requests.get(f"{cached.url}/v0/{BASE}/Leads", headers=AUTH, params={"maxRecords": 1})
    # the pull went out to Airtable for real (3 pages of 100), not back into the cache
    assert cached.request_count(path_contains=f"/v0/{BASE}/Leads", method="GET") == 3


def test_token_check_when_airtable_cannot_answer_is_not_kept(installed, cached):
    cached.fail_next(503, path_contains="/v0/meta/whoami")
    url = f"{cached.url}/v0/{BASE}/Leads"
    assert requests.get(url, headers=AUTH, params={"maxRecords": 1}).status_code == 200
    cached.reset_log()
    assert requests.get(url, headers=AUTH, params={"maxRecords": 1}).status_code == 200
    assert cached.request_count(path_contains="whoami") == 1  # asked again, then kept
    assert requests.get(url, headers=AUTH, params={"maxRecords": 1}).status_code == 200
    assert cached.request_count(path_contains="whoami") == 1


def test_concurrent_raw_writers(installed, cached):
    from concurrent.futures import ThreadPoolExecutor

    url = f"{cached.url}/v0/{BASE}/Leads"
    ids = [r["id"] for r in cached.records(BASE, "Leads")[:40]]

    def patch(i):
        with requests.Session() as s:
            r = s.patch(f"{url}/{ids[i]}", headers=AUTH, json={"fields": {"Score": 1000 + i}})
            return r.status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(patch, range(len(ids)))) == {200}
    records, _ = _all_pages(url, {"filterByFormula": "{Score} >= 1000"})
    assert sorted(r["fields"]["Score"] for r in records) == [1000 + i for i in range(len(ids))]
    assert airtable_cached.Api(TOKEN, **installed).flush().ok
    assert sorted(r["fields"]["Score"] for r in cached.records(BASE, "Leads") if r["fields"].get("Score", 0) >= 1000) == [
        1000 + i for i in range(len(ids))
    ]
