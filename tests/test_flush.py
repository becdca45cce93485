"""Writes through the cache, then flush: what reaches the fake Airtable (real HTTP on loopback, a real
SQLite file). Time is a FakeClock: every retry/backoff/pacing sleep is recorded, nothing sleeps."""

from __future__ import annotations

import json
import time
from collections import Counter

import pyairtable
import pytest
import requests

from airtable_cached import Api
from airtable_cached.rules.records import RECORD_ID_RE, is_provisional
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads
from tests.conftest import BASE, TABLE

# -- helpers ---------------------------------------------------------------------------------------


def write_requests(fake, path_contains=f"/v0/{BASE}/{TABLE}"):
    return [
        r for r in fake.requests
        if r["method"] in ("POST", "PATCH", "PUT", "DELETE") and path_contains in r["path"]
    ]


def content(records, known_ids):
    """Records compared by content: fields as a multiset, plus the id when it existed before."""
    return Counter(
        json.dumps({"id": r["id"] if r["id"] in known_ids else None, "fields": r["fields"]}, sort_keys=True)
        for r in records
    )


def agent_run(table, seeded):
    """The same pyairtable calls, against plain pyairtable or the cache. Returns their answers."""
    ids = [r["id"] for r in seeded]
    by_url = {r["fields"]["LinkedIn URL"]: r for r in seeded}
    out = {}
    out["create"] = table.create({"Full Name": "Solo Create", "Score": 7, "Status": seeded[0]["fields"]["Status"]})
    out["batch_create"] = table.batch_create(
        [{"Full Name": f"Batch {i:02d}", "Score": i, "Tags": []} for i in range(25)]
    )
    out["update"] = table.update(ids[0], {"Score": 99, "Company": "Updated Co"})
    out["replace"] = table.update(ids[1], {"Full Name": "Replaced", "Score": 1}, replace=True)
    out["batch_update"] = table.batch_update(
        [{"id": ids[i], "fields": {"Score": 1000 + i, "Email": ""}} for i in range(2, 14)]
    )
    upsert_rows = [
        {"fields": {"LinkedIn URL": seeded[20]["fields"]["LinkedIn URL"], "Company": "Upserted Existing A"}},
        {"fields": {"LinkedIn URL": seeded[21]["fields"]["LinkedIn URL"], "Company": "Upserted Existing B", "Score": 5}},
        {"fields": {"LinkedIn URL": "https://www.linkedin.com/in/new-person-1", "Full Name": "New One"}},
        {"fields": {"LinkedIn URL": "https://www.linkedin.com/in/new-person-2", "Full Name": "New Two"}},
    ]
    assert upsert_rows[0]["fields"]["LinkedIn URL"] in by_url
    out["batch_upsert"] = table.batch_upsert(upsert_rows, key_fields=["LinkedIn URL"])
    out["delete"] = table.delete(ids[30])
    out["batch_delete"] = table.batch_delete(ids[31:45])
    # A write to a record created in this run, and a delete of one.
    created_id = out["batch_create"][3]["id"]
    out["update_created"] = table.update(created_id, {"Company": "Made Here"})
    out["delete_created"] = table.delete(out["batch_create"][4]["id"])
    return out


def assert_same_shape(cached, plain):
    """Same keys, same types, same kinds of answers as the fake Airtable's."""
    if isinstance(plain, dict):
        assert isinstance(cached, dict)
        assert set(cached) == set(plain), (cached, plain)
        for key in plain:
            if key in ("id", "createdTime"):
                assert isinstance(cached[key], str)
                continue
            if key == "fields":
                assert cached[key] == plain[key]
                continue
            assert_same_shape(cached[key], plain[key])
    elif isinstance(plain, list):
        assert isinstance(cached, list) and len(cached) == len(plain)
        for c, p in zip(cached, plain):
            assert_same_shape(c, p)
    elif isinstance(plain, str) and RECORD_ID_RE.match(plain):
        assert isinstance(cached, str) and RECORD_ID_RE.match(cached)
    else:
        assert cached == plain


def make_fake(**kwargs):
    server = FakeAirtable(seed=1, **kwargs)
    server.start()
    server.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(250, seed=1))
    return server


# -- 1. writes then flush ----------------------------------------------------------------------------


def test_writes_then_flush_reach_the_same_state_as_plain_pyairtable(tmp_path, clock):
    plain_fake, cached_fake = make_fake(), make_fake()
    try:
        seeded = plain_fake.records(BASE, TABLE)
        assert seeded == cached_fake.records(BASE, TABLE)
        plain_table = pyairtable.Api(plain_fake.token, endpoint_url=plain_fake.url).table(BASE, TABLE)
        plain_out = agent_run(plain_table, seeded)

        api = Api(cached_fake.token, endpoint_url=cached_fake.url, path=tmp_path / "c.sqlite3", flush="manual",
                  clock=clock, sleep=clock.sleep)
        table = api.table(BASE, TABLE)
        table.all()  # the agent's first read pulls the table
        cached_fake.reset_log()
        cached_out = agent_run(table, seeded)
        assert write_requests(cached_fake) == []  # queued, nothing sent yet

        for key in plain_out:
            assert_same_shape(cached_out[key], plain_out[key])
        assert set(cached_out["batch_upsert"]) == {"records", "createdRecords", "updatedRecords"}
        assert cached_out["batch_upsert"]["updatedRecords"] == plain_out["batch_upsert"]["updatedRecords"]
        assert len(cached_out["batch_upsert"]["createdRecords"]) == 2
        assert cached_out["delete"] == {"id": seeded[30]["id"], "deleted": True}
        assert cached_out["batch_delete"] == [{"id": r["id"], "deleted": True} for r in seeded[31:45]]
        assert all(is_provisional(r["id"]) for r in cached_out["batch_create"])

        # Reads see the queued writes, as plain pyairtable reads see Airtable's state.
        known = {r["id"] for r in seeded}
        assert content(table.all(), known) == content(plain_table.all(), known)

        result = api.flush()
        assert result.ok and result.pending == 0, result.as_dict()
        assert api.pending() == []
        assert content(cached_fake.records(BASE, TABLE), known) == content(plain_fake.records(BASE, TABLE), known)
        # And the cache agrees with the fake Airtable, with real ids now.
        assert content(table.all(), known) == content(cached_fake.records(BASE, TABLE), known)
        assert not any(is_provisional(r["id"]) for r in table.all())
        api.close()
    finally:
        plain_fake.stop()
        cached_fake.stop()


# -- 2. coalescing -----------------------------------------------------------------------------------


def test_five_updates_of_one_record_become_one_patch(fake, api, table):
    rid = table.first()["id"]
    fake.reset_log()
    for i in range(5):
        table.update(rid, {"Score": i, f"{'Company' if i % 2 else 'Full Name'}": f"v{i}"})
    api.flush()
    sent = write_requests(fake)
    assert [r["method"] for r in sent] == ["PATCH"]
    assert sent[0]["json"]["records"] == [{"id": rid, "fields": {"Score": 4, "Full Name": "v4", "Company": "v3"}}]
    assert fake.records(BASE, TABLE)[0]["fields"]["Score"] == 4


def test_create_then_delete_before_flush_sends_nothing(fake, api, table):
    table.all()
    fake.reset_log()
    made = table.create({"Full Name": "Ephemeral"})
    table.update(made["id"], {"Score": 3})
    table.delete(made["id"])
    result = api.flush()
    assert fake.request_count() == 0
    assert result.ok and result.pending == 0 and api.pending() == []
    with pytest.raises(requests.HTTPError):
        table.get(made["id"])


def test_25_creates_take_3_posts(fake, api, table):
    """Calls are never split across requests (Airtable applies a request whole, issue 9), but
    single creates share one: 5 single creates and one batch of 20 take 3 POSTs."""
    for i in range(5):
        table.create({"Full Name": "first" if i == 0 else f"s{i}"})
    table.batch_create([{"Full Name": f"n{i}"} for i in range(20)])
    api.flush()
    sent = write_requests(fake)
    assert [r["method"] for r in sent] == ["POST"] * 3
    assert [len(r["json"]["records"]) for r in sent] == [5, 10, 10]
    names = [r["fields"]["Full Name"] for r in fake.records(BASE, TABLE)[250:]]
    assert names == ["first"] + [f"s{i}" for i in range(1, 5)] + [f"n{i}" for i in range(20)]  # order kept


def test_updates_of_30_records_take_3_patches(fake, api, table):
    records = table.all()[:30]
    fake.reset_log()
    for r in records:
        table.update(r["id"], {"Score": 5})
    for r in records[:10]:
        table.update(r["id"], {"Company": "Twice"})
    api.flush()
    sent = write_requests(fake)
    assert [r["method"] for r in sent] == ["PATCH"] * 3
    assert all(len(r["json"]["records"]) <= 10 for r in sent)
    assert sum(len(r["json"]["records"]) for r in sent) == 30
    remote = {r["id"]: r["fields"] for r in fake.records(BASE, TABLE)}
    assert all(remote[r["id"]]["Score"] == 5 for r in records)
    assert all(remote[r["id"]]["Company"] == "Twice" for r in records[:10])


# -- 3. provisional ids ------------------------------------------------------------------------------


def test_provisional_id_is_remapped_after_flush(fake, api, table):
    table.all()
    made = table.create({"Full Name": "Provisional Pat", "Score": 1})
    pid = made["id"]
    assert RECORD_ID_RE.match(pid) and is_provisional(pid)
    assert table.get(pid)["fields"]["Full Name"] == "Provisional Pat"
    api.flush()
    remote = [r for r in fake.records(BASE, TABLE) if r["fields"].get("Full Name") == "Provisional Pat"]
    assert len(remote) == 1
    real = remote[0]["id"]
    assert not is_provisional(real)
    got = table.get(pid)
    assert got["id"] == real and got["fields"] == remote[0]["fields"]
    assert table.get(real) == got
    # A write naming the provisional id after the flush still reaches the real record.
    table.update(pid, {"Score": 2})
    fake.reset_log()
    api.flush()
    assert write_requests(fake)[0]["json"]["records"] == [{"id": real, "fields": {"Score": 2}}]
    assert fake.records(BASE, TABLE)[-1]["fields"]["Score"] == 2


def test_queued_update_and_delete_naming_a_provisional_id_use_the_real_id(fake, api, table):
    table.all()
    keep = table.create({"Full Name": "Keeper"})["id"]
    gone = table.create({"Full Name": "Goner"})["id"]
    table.update(keep, {"Score": 10})
    api.flush()  # the create of "Goner" is on Airtable now; queue an update and a delete by provisional id
    table.update(gone, {"Score": 11})
    table.update(keep, {"Score": 12}, replace=False)
    table.delete(gone)
    fake.reset_log()
    api.flush()
    remote = {r["fields"].get("Full Name"): r for r in fake.records(BASE, TABLE)}
    assert "Goner" not in remote
    assert remote["Keeper"]["fields"]["Score"] == 12
    for r in write_requests(fake):
        ids = r["query"].get("records[]", []) + [x.get("id") for x in (r["json"] or {}).get("records", [])]
        assert not any(is_provisional(i) for i in ids if i)


def test_queued_writes_to_an_unflushed_create_reach_airtable_with_the_real_id(fake, api, table, monkeypatch):
    table.all()
    pid = table.create({"Full Name": "Later"})["id"]
    # Updates of the record queued before its create was flushed: they ride along with the create.
    table.update(pid, {"Score": 3})
    table.batch_update([{"id": pid, "fields": {"Company": "Linked Co"}}])
    api.flush()
    remote = [r for r in fake.records(BASE, TABLE) if r["fields"].get("Full Name") == "Later"]
    assert len(remote) == 1
    assert remote[0]["fields"] == {"Full Name": "Later", "Score": 3, "Company": "Linked Co"}
    for r in write_requests(fake):
        for rec in (r["json"] or {}).get("records", []):
            assert not is_provisional(rec.get("id", "recX"))


def test_link_fields_naming_a_provisional_record_get_the_real_id(fake, api, base, table):
    fake.add_table(BASE, "Deals", [
        {"name": "Deal", "type": "singleLineText"},
        {"name": "Lead", "type": "multipleRecordLinks", "options": {"linkedTableId": fake.schema(BASE, TABLE)["id"]}},
    ], [{"Deal": "Existing deal"}])
    deals = base.table("Deals")
    existing_deal = deals.all()[0]["id"]
    table.all()
    lead = table.create({"Full Name": "Linked Lead"})["id"]
    other = table.create({"Full Name": "Other Lead"})["id"]
    new_deal = deals.create({"Deal": "New deal", "Lead": [lead]})
    deals.update(existing_deal, {"Lead": [other, lead]})
    assert deals.get(new_deal["id"])["fields"]["Lead"] == [lead]
    api.flush()
    real = {r["fields"]["Full Name"]: r["id"] for r in fake.records(BASE, TABLE)[250:]}
    remote_deals = {r["fields"]["Deal"]: r["fields"] for r in fake.records(BASE, "Deals")}
    assert remote_deals["New deal"]["Lead"] == [real["Linked Lead"]]
    assert remote_deals["Existing deal"]["Lead"] == [real["Other Lead"], real["Linked Lead"]]
    # The cache shows the real ids too.
    assert deals.get(new_deal["id"])["fields"]["Lead"] == [real["Linked Lead"]]
    assert api.pending() == []


# -- 4. transient failures ---------------------------------------------------------------------------


def test_503s_are_ridden_out_with_exponential_backoff(fake, api, table, clock):
    rid = table.first()["id"]
    table.update(rid, {"Score": 42})
    fake.reset_log()
    clock.sleeps.clear()
    fake.fail_next(503, count=3, method="PATCH")
    result = api.flush()
    assert result.ok and result.pending == 0
    assert [r["status"] for r in fake.requests] == [503, 503, 503, 200]
    backoffs = [s for s in clock.sleeps if s >= 0.5]
    assert len(backoffs) == 3 and backoffs == sorted(backoffs) and backoffs[2] >= 2 * backoffs[0]
    assert fake.records(BASE, TABLE)[0]["fields"]["Score"] == 42


def test_429_stops_the_base_for_the_penalty_then_succeeds(fake, api, table, clock):
    records = table.all()[:2]
    table.update(records[0]["id"], {"Score": 1})
    fake.reset_log()
    clock.sleeps.clear()
    fake.fail_next(429, method="PATCH")
    result = api.flush()
    assert result.ok
    assert [r["status"] for r in fake.requests] == [429, 200]
    assert any(29 <= s <= 31 for s in clock.sleeps), clock.sleeps
    # The penalty holds every request to the base, not only the one that met the 429.
    table.update(records[1]["id"], {"Score": 2})
    assert api.flush().ok


def test_429_penalty_is_shared_with_other_requests_to_the_base(fake, api, table, clock):
    table.all()
    api.sync.remote.pacer.penalise(BASE)  # as if another process met a 429 just now
    clock.sleeps.clear()
    table.refresh(force=True)
    assert clock.sleeps and 29 <= clock.sleeps[0] <= 31


def test_dropped_connection_is_retried(fake, api, table):
    rid = table.first()["id"]
    table.update(rid, {"Score": 8})
    fake.reset_log()
    fake.fail_next(drop_connection=True, method="PATCH")
    assert api.flush().ok
    assert [r["status"] for r in fake.requests] == [None, 200]
    assert fake.records(BASE, TABLE)[0]["fields"]["Score"] == 8


def test_sync_session_has_no_urllib3_retry(api):
    session = api.sync.remote.session
    assert type(session) is requests.Session
    for prefix in ("https://", "http://"):
        adapter = session.get_adapter(prefix + "api.airtable.com")
        assert adapter.max_retries.total == 0 and not adapter.max_retries.read
        assert adapter.max_retries.status_forcelist in (None, set(), frozenset())


# -- 5. permanent failures -----------------------------------------------------------------------------


def test_422_is_dead_lettered_while_the_rest_flushes(fake, api, table):
    """A write Airtable refuses at flush (here: its record was deleted in Airtable meanwhile; values
    it would refuse are refused at the call, see test_issue9_fidelity.py)."""
    records = table.all()[:12]
    bad = records[4]["id"]
    old_fields = records[4]["fields"]
    for r in records:
        table.update(r["id"], {"Company": "Fine"})
    table.update(bad, {"Score": 99})
    assert table.get(bad)["fields"]["Score"] == 99  # read-your-writes until refused
    fake.delete_record(BASE, TABLE, bad)
    made = table.create({"Full Name": "Fine Create"})
    result = api.flush()
    assert not result.ok
    assert [f["record_id"] for f in result.failed] == [bad]
    assert result.failed[0]["status"] == 422 and result.failed[0]["dead"]
    remote = {r["id"]: r["fields"] for r in fake.records(BASE, TABLE)}
    assert all(remote[r["id"]]["Company"] == "Fine" for r in records if r["id"] != bad)
    assert any(f.get("Full Name") == "Fine Create" for f in remote.values())
    pending = api.pending()
    assert len(pending) == 2 and {p["state"] for p in pending} == {"dead"}
    assert {p["record_id"] for p in pending} == {bad}
    assert all(p["attempts"] >= 1 for p in pending)
    error = pending[-1]["last_error"]
    assert error["status"] == 422 and error["body"]["error"]["type"] == "ROW_DOES_NOT_EXIST"
    # Reads stop showing the refused values (the record is as Airtable last had it).
    assert table.get(bad)["fields"] == old_fields
    assert table.get(made["id"])["fields"]["Full Name"] == "Fine Create"
    # The dead letters do not block later flushes.
    table.update(records[0]["id"], {"Score": 77})
    assert api.flush().failed == []
    assert {r["id"]: r["fields"] for r in fake.records(BASE, TABLE)}[records[0]["id"]]["Score"] == 77


def test_injected_422_on_one_table_does_not_block_another(fake, api, base, table):
    fake.add_table(BASE, "Notes", [{"name": "Note", "type": "singleLineText"}], [])
    notes = base.table("Notes")
    notes.all()
    rid = table.first()["id"]
    notes.create({"Note": "refused"})
    table.update(rid, {"Score": 3})
    fake.fail_next(422, path_contains="/Notes", body={"error": {"type": "INVALID_REQUEST_UNKNOWN", "message": "nope"}})
    result = api.flush()
    assert [f["op"] for f in result.failed] == ["create"]
    assert fake.records(BASE, TABLE)[0]["fields"]["Score"] == 3
    assert fake.records(BASE, "Notes") == []
    dead = api.pending()
    assert dead[0]["state"] == "dead" and dead[0]["last_error"]["body"]["error"]["message"] == "nope"
    assert notes.all() == []  # the refused create is no longer shown


# -- 6. lost response to a create ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [None, 503])
def test_lost_create_response_does_not_duplicate(fake, api, table, clock, status):
    table.all()
    table.create({"Full Name": "Exactly Once", "Score": 5})
    table.batch_create([{"Full Name": f"Once {i}", "Score": i} for i in range(3)])
    if status is None:
        fake.fail_next(drop_connection=True, apply=True, method="POST")
    else:
        fake.fail_next(503, apply=True, method="POST")
    result = api.flush()
    # The same flush looks for the records the lost answer would have named before re-sending.
    assert result.ok and result.pending == 0, result.as_dict()
    assert fake.request_count(method="POST") == 1  # the lost one made all four: none is sent again
    for _ in range(5):  # (later flushes, were the uncertain create left for its retry time)
        if not api.pending():
            break
        clock.advance(600)
        api.flush()
    assert api.pending() == []
    names = Counter(r["fields"].get("Full Name") for r in fake.records(BASE, TABLE))
    assert names["Exactly Once"] == 1
    assert all(names[f"Once {i}"] == 1 for i in range(3))
    local = [r for r in table.all() if r["fields"].get("Full Name") == "Exactly Once"]
    assert len(local) == 1 and not is_provisional(local[0]["id"])


# -- 9. pacing ----------------------------------------------------------------------------------------


def test_flush_is_paced_under_the_rate_limit_fake_clock(fake, api, table, clock):
    records = table.all()[:100]
    for r in records:
        table.update(r["id"], {"Score": 1})
    clock.sleeps.clear()
    fake.reset_log()
    api.flush()
    assert fake.request_count() == 10
    # Ten requests at 5 a second: each waits its slot, 0.2 s apart (plus a small safety margin).
    assert len(clock.sleeps) >= 9
    assert all(0.2 <= s <= 0.25 for s in clock.sleeps[-9:]), clock.sleeps


def test_flush_meets_no_429_against_a_rate_limited_fake_in_real_time(tmp_path):
    server = make_fake(rate_limit=5, penalty_seconds=1.0)
    try:
        api = Api(server.token, endpoint_url=server.url, path=tmp_path / "c.sqlite3", flush="manual")
        table = api.table(BASE, TABLE)
        records = table.all()[:100]
        time.sleep(1.0)  # the pull used up this second's budget
        for r in records:
            table.update(r["id"], {"Score": 3})
        server.reset_log()
        started = time.monotonic()
        result = api.flush()
        elapsed = time.monotonic() - started
        assert result.ok and result.pending == 0
        assert [r["status"] for r in server.requests] == [200] * 10
        assert elapsed < 5
        api.close()
    finally:
        server.stop()


# -- flush housekeeping -------------------------------------------------------------------------------


def test_delete_of_a_record_already_gone_from_airtable_counts_as_done(fake, api, table):
    records = table.all()[:3]
    fake.delete_record(BASE, TABLE, records[1]["id"])  # another user deleted it meanwhile
    table.batch_delete([r["id"] for r in records])
    result = api.flush()
    assert result.ok and result.pending == 0 and api.pending() == []
    remaining = {r["id"] for r in fake.records(BASE, TABLE)}
    assert not remaining & {r["id"] for r in records}


def test_a_long_flush_keeps_its_claims(fake, tmp_path, clock):
    """Claims (and the flush lock) are renewed while a flush outlives its lease, e.g. after a 429
    penalty, so that no other flusher takes the remaining writes over and sends them twice."""
    from airtable_cached.store.sqlite import Store

    api = Api(fake.token, endpoint_url=fake.url, path=tmp_path / "c.sqlite3", flush="manual",
              clock=clock, sleep=clock.sleep, claim_timeout=10)
    table = api.table(BASE, TABLE)
    for r in table.all()[:60]:
        table.update(r["id"], {"Score": 3})
    other = Store(tmp_path / "c.sqlite3")
    stolen = []
    real_send = api.sync._send_batch

    def send_watching(batch, result):
        with other.write() as unit:
            stolen.extend(unit.outbox.claim(BASE, now=clock(), lease=10))
        return real_send(batch, result)

    api.sync._send_batch = send_watching
    fake.fail_next(429, method="PATCH")
    fake.fail_next(429, method="PATCH")
    result = api.flush()
    assert result.ok and result.pending == 0
    assert clock.now - 1_800_000_000 > 60  # two penalties: far longer than the lease
    assert stolen == []
    other.close()
    api.close()


def test_airtable_wins_a_conflict_and_the_dropped_value_is_logged(fake, api, table):
    from tests.conftest import BASE as base_id
    from tests.conftest import TABLE as table_name

    record = next(r for r in table.all() if r["fields"].get("Status") not in ("Lost", "Contacted"))
    table.update(record["id"], {"Status": "Lost", "Score": 7})
    fake.set_fields(base_id, table_name, record["id"], {"Status": "Contacted"})  # a person, meanwhile
    table.refresh(force=True)
    seen = table.get(record["id"])["fields"]
    assert seen["Status"] == "Contacted" and seen["Score"] == 7  # Airtable's value; the rest of the write
    conflicts = api.engine.store.conn.execute("SELECT record_id, field, local_value, remote_value FROM conflicts").fetchall()
    assert [tuple(c) for c in conflicts] == [(record["id"], "Status", '"Lost"', '"Contacted"')]
    api.flush()
    at_airtable = next(r for r in fake.records(base_id, table_name) if r["id"] == record["id"])["fields"]
    assert at_airtable["Status"] == "Contacted" and at_airtable["Score"] == 7


def test_a_field_airtable_did_not_change_keeps_the_local_write(fake, api, table):
    from tests.conftest import BASE as base_id
    from tests.conftest import TABLE as table_name

    record = table.all()[0]
    table.update(record["id"], {"Status": "Lost"})
    fake.set_fields(base_id, table_name, record["id"], {"Company": "Renamed Co"})
    table.refresh(force=True)
    assert table.get(record["id"])["fields"]["Status"] == "Lost"
    assert table.get(record["id"])["fields"]["Company"] == "Renamed Co"
    assert api.engine.store.conn.execute("SELECT COUNT(*) FROM conflicts").fetchone()[0] == 0
