"""A PostgreSQL connection dropped during a COMMIT (issue 13: "a failover mid-flush losing nothing").

The connection runs through ``tests/pg_proxy.py``, which cuts it at the COMMIT of a chosen
transaction: before forwarding it (the server rolls back), after the server committed it (the client
never hears so), or as a network partition (the server's process waits in the transaction until it
is ended). Whatever the cut, the store learns whether the transaction was kept: the flush's
acknowledgement is neither lost nor repeated (each write reaches Airtable once), and an agent's write
is queued exactly once. When the database is out of reach for longer than the store asks, the
outcome stays unknown (``StoreCommitUnknown``) and the flush's next run settles it.
"""

from __future__ import annotations

import json

import pytest
from pg_proxy import MODES, CommitCutter

from airtable_cached import Api
from airtable_cached.engine import writes
from airtable_cached.errors import StoreCommitUnknown, StoreConnectionLost
from airtable_cached.store.postgres import PostgresStore, connection
from airtable_cached.testing import COMPANIES_ID, LEADS_SCHEMA, FakeAirtable, add_linked_tables, seed_leads
from tests.conftest import close_stores_opened_on

BASE = "appLEADSbase00001"
TABLE = "Leads"
#: A statement of the flush's acknowledgement (``PostgresOutbox.ack``) and of a queued write's.
ACK = "DELETE FROM outbox WHERE seq = ANY"
ENQUEUE = "INSERT INTO outbox"


@pytest.fixture
def proxied(pg_server, pg_url):
    """The test's database URL through a proxy that cuts a COMMIT when armed; the stores opened on
    it in this process are closed after the test."""
    with CommitCutter(pg_server.port) as cutter:
        url = cutter.url(pg_url)
        yield cutter, url
        close_stores_opened_on(url)


@pytest.fixture
def leads():
    with FakeAirtable(seed=1) as server:
        server.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(20, seed=1))
        yield server


def _api(fake: FakeAirtable, url: str) -> Api:
    return Api(fake.token, endpoint_url=fake.url, url=url, flush="manual", feed="off")


def _writes_sent(fake: FakeAirtable) -> list[tuple[str, str]]:
    return [(r["method"], json.dumps(r["json"], sort_keys=True)) for r in fake.requests if r["method"] in ("PATCH", "POST")]


def _queue_updates_and_creates(table, label: str) -> tuple[list[str], list[dict]]:
    """An update of every record and 5 creates, queued: the records' ids and the creates' answers."""
    ids = [r["id"] for r in table.all()]
    for n, rid in enumerate(ids):
        table.update(rid, {"Company": f"across {label} {n}"})
    return ids, table.batch_create([{"Full Name": f"created across {label} {n}"} for n in range(5)])


def _assert_each_landed_once(records: dict[str, dict], ids: list[str], label: str) -> None:
    """Airtable's records hold every update and each create exactly once."""
    for n, rid in enumerate(ids):
        assert records[rid]["Company"] == f"across {label} {n}"
    created = sorted(f["Full Name"] for f in records.values() if f.get("Full Name", "").startswith("created across"))
    assert created == sorted(f"created across {label} {n}" for n in range(5))


@pytest.mark.parametrize("mode", MODES)
def test_a_unit_whose_commit_was_cut_is_kept_or_raises_connection_lost_as_the_server_decided(proxied, mode):
    cutter, url = proxied
    store = PostgresStore(url)
    try:
        with store.write() as unit:
            tid = unit.replica.add_table("", BASE, None, TABLE)
        cutter.arm(ENQUEUE, mode)
        try:
            with store.write() as unit:
                unit.outbox.append(tid=tid, base_id=BASE, table_ref=TABLE, op="delete", record_id="recAAAAAAAAAAAAAA",
                                   fields=None, base=None, typecast=False, now=0.0)
            outcome = "kept"
        except StoreConnectionLost:
            outcome = "lost"
        queued = store.outbox.seqs()
    finally:
        store.close_all()
    assert cutter.cuts == [mode]
    assert outcome == ("kept" if mode == "after" else "lost")
    assert len(queued) == (1 if mode == "after" else 0)


@pytest.mark.parametrize("mode", MODES)
def test_a_connection_dropped_during_the_flushs_commit_loses_no_write_and_sends_none_twice(leads, proxied, mode):
    cutter, url = proxied
    api = _api(leads, url)
    table = api.table(BASE, TABLE)
    ids, made = _queue_updates_and_creates(table, "the cut")
    leads.reset_log()
    cutter.arm(ACK, mode)
    result = api.flush()
    left = api.pending()
    records = {r["id"]: r["fields"] for r in leads.records(BASE, TABLE)}
    sent = _writes_sent(leads)
    api.close()
    assert cutter.cuts == [mode]
    assert result.failed == [] and left == []
    _assert_each_landed_once(records, ids, "the cut")
    assert len(sent) == len(set(sent)) == 3  # two PATCHes of 10 updates, one POST of 5 creates: none twice
    assert {r["id"] for r in made}.isdisjoint(records)  # provisional ids were replaced by Airtable's


@pytest.mark.parametrize("mode", MODES)
def test_an_agents_write_whose_commit_was_cut_is_queued_once(leads, proxied, mode):
    cutter, url = proxied
    api = _api(leads, url)
    table = api.table(BASE, TABLE)
    rid = table.all()[0]["id"]
    cutter.arm(ENQUEUE, mode)
    table.update(rid, {"Company": "updated across the cut"})
    cutter.arm(ENQUEUE, mode)
    made = table.create({"Full Name": "made across the cut"})
    queued = [(w["op"], w["record_id"]) for w in api.pending()]
    seen = (table.get(rid)["fields"]["Company"], table.get(made["id"])["fields"]["Full Name"])
    leads.reset_log()
    result = api.flush()
    records = [r["fields"] for r in leads.records(BASE, TABLE)]
    sent = _writes_sent(leads)
    api.close()
    assert cutter.cuts == [mode, mode]
    assert sorted(queued) == sorted([("update", rid), ("create", made["id"])])  # each call queued once
    assert seen == ("updated across the cut", "made across the cut")
    assert result.failed == []
    assert [f.get("Full Name") for f in records].count("made across the cut") == 1
    assert [f.get("Company") for f in records].count("updated across the cut") == 1
    assert len(sent) == 2


@pytest.mark.parametrize("mode", ["before", "after"])
def test_an_acknowledgement_left_unknown_is_settled_by_the_next_flush_without_sending_twice(leads, proxied, mode,
                                                                                             monkeypatch):
    cutter, url = proxied
    monkeypatch.setattr(connection, "SETTLE_SECONDS", 1.0)  # how long the database is asked before giving up
    api = _api(leads, url)
    table = api.table(BASE, TABLE)
    ids, _made = _queue_updates_and_creates(table, "the outage")
    leads.reset_log()
    cutter.arm(ACK, mode, then_down=True)  # the database out of reach from the cut on
    with pytest.raises(StoreCommitUnknown):
        api.flush()
    cutter.up()
    result = api.flush()
    left = api.pending()
    records = {r["id"]: r["fields"] for r in leads.records(BASE, TABLE)}
    sent = _writes_sent(leads)
    api.close()
    assert cutter.cuts == [mode]
    assert result.failed == [] and left == []
    _assert_each_landed_once(records, ids, "the outage")
    assert len(sent) == len(set(sent)) == 3  # the batch whose acknowledgement was in doubt was not sent again


#: Statements of the transactions keeping Airtable's answer to a call sent at once: the select
#: options its typecast added (``Writes._learn_choices``), the records it answered (``apply.absorb``).
KEEP_ANSWER = {"choices": "UPDATE tables SET schema_json", "records": "INSERT INTO records (tid, id, position"}


@pytest.mark.parametrize("kept", sorted(KEEP_ANSWER))
@pytest.mark.parametrize("mode", MODES)
def test_a_call_sent_at_once_whose_answers_commit_was_cut_answers_as_airtable_did_and_is_sent_once(
        leads, proxied, mode, kept):
    cutter, url = proxied
    api = _api(leads, url)
    table = api.table(BASE, TABLE)
    table.all()
    leads.reset_log()
    cutter.arm(KEEP_ANSWER[kept], mode)
    made = table.create({"Full Name": "sent across the cut", "Status": "Brand new stage"}, typecast=True)
    requests = [(r["method"], r["path"]) for r in leads.requests]
    seen = table.get(made["id"])
    table.update(made["id"], {"Status": "Brand new stage"})  # no typecast: the option is known
    queued = [(w["op"], w["record_id"]) for w in api.pending()]
    reads = leads.request_count(method="GET")
    records = [r["fields"] for r in leads.records(BASE, TABLE)]
    api.close()
    assert cutter.cuts == [mode]
    assert made["fields"]["Status"] == "Brand new stage" and made["id"].startswith("rec")
    assert requests == [("POST", f"/v0/{BASE}/{TABLE}")]  # sent once, and nothing else asked of Airtable
    assert seen == made  # read from the cache, as Airtable answered
    assert reads == 0
    assert queued == [("update", made["id"])]
    assert [f.get("Full Name") for f in records].count("sent across the cut") == 1


def test_a_call_sent_at_once_whose_answer_the_cache_cannot_keep_answers_and_says_so(leads, proxied, monkeypatch,
                                                                                     caplog):
    cutter, url = proxied
    monkeypatch.setattr(connection, "SETTLE_SECONDS", 1.0)  # how long the database is asked before giving up
    monkeypatch.setattr(writes, "KEEP_ATTEMPTS", 1)  # the database stays out of reach: not tried again
    api = _api(leads, url)
    table = api.table(BASE, TABLE)
    table.all()
    leads.reset_log()
    cutter.arm(KEEP_ANSWER["records"], "before", then_down=True)
    with caplog.at_level("ERROR", logger="airtable_cached"):
        made = table.create({"Full Name": "sent across the outage", "Status": "Brand new stage"}, typecast=True)
    posts = leads.request_count(method="POST")
    cutter.up()
    before_pull = [r["id"] for r in table.all()]
    table.refresh(force=True)
    after_pull = {r["id"]: r["fields"] for r in table.all()}
    api.close()
    assert cutter.cuts == ["before"]
    assert made["fields"]["Full Name"] == "sent across the outage"
    assert posts == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(made["id"] in e and "after the next pull" in e for e in errors)
    assert made["id"] not in before_pull  # the answer was not kept ...
    assert after_pull[made["id"]] == made["fields"]  # ... and the next pull brings it


@pytest.mark.parametrize("mode", ["before", "after"])
def test_a_write_through_call_whose_acknowledgement_was_left_unknown_answers_from_the_cache_and_is_sent_once(
        leads, proxied, mode, monkeypatch, caplog):
    cutter, url = proxied
    monkeypatch.setattr(connection, "SETTLE_SECONDS", 1.0)  # how long the database is asked before giving up
    api = Api(leads.token, endpoint_url=leads.url, url=url, flush="manual", feed="off", mode="write-through")
    table = api.table(BASE, TABLE)
    table.all()
    leads.reset_log()
    cutter.arm(ACK, mode, then_down=True)  # the database out of reach from the cut on
    with caplog.at_level("ERROR", logger="airtable_cached"):
        made = table.create({"Full Name": "written through the outage"})
    cutter.up()
    result = api.flush()
    left = api.pending()
    seen = table.get(made["id"])["fields"]
    records = [r["fields"] for r in leads.records(BASE, TABLE)]
    sent = _writes_sent(leads)
    api.close()
    assert cutter.cuts == [mode]
    assert made["fields"] == {"Full Name": "written through the outage"}
    assert any("write-through" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert result.failed == [] and left == []
    assert seen["Full Name"] == "written through the outage"
    assert [f.get("Full Name") for f in records].count("written through the outage") == 1
    assert len(sent) == 1  # the create, never sent again


#: A statement of a whole pull's transaction (``Replica.drop_records_not_seen``).
PULL = "AND remote_json IS NOT NULL AND (synced_at IS NULL OR synced_at <="


@pytest.mark.parametrize("mode", MODES)
def test_a_link_sent_at_once_whose_linked_tables_pull_lost_its_commit_is_sent_once_and_cached(proxied, mode):
    cutter, url = proxied
    with FakeAirtable(seed=1) as fake:
        add_linked_tables(fake, BASE)
        api = _api(fake, url)
        people, companies = api.table(BASE, "People"), api.table(BASE, "Companies")
        target = people.all()[0]["id"]
        companies.all()
        fake.reset_log()
        cutter.arm(PULL, mode)
        answer = people.update(target, {"Company": ["Company 2"]}, typecast=True)
        employees = {r["fields"]["Name"]: r["fields"].get("Employees", []) for r in companies.all()}
        sent = _writes_sent(fake)
        company = next(r["id"] for r in fake.records(BASE, COMPANIES_ID) if r["fields"]["Name"] == "Company 2")
        api.close()
    assert cutter.cuts == [mode]
    assert len(sent) == 1  # the PATCH, once
    assert target in employees["Company 2"]  # the inverse link, as the linked table's pull brought it
    assert answer["fields"]["Company"] == [company]  # as Airtable answered
