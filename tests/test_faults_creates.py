"""Creates reach Airtable exactly once when their answers are lost after Airtable committed them.

Compared with: the project's fake Airtable (``airtable_cached/testing/``) behind a proxy that
closes the connection after the fake carried the request out (``tests/fault_proxy.py``); what
reached "Airtable" is read from the fake's own state.
"""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from airtable_cached import Api
from airtable_cached.rules.records import is_provisional
from tests.conftest import BASE, TABLE, recorded
from tests.fault_proxy import FaultProxy


@pytest.fixture
def proxy(fake):
    p = FaultProxy(fake.url)
    yield p
    p.stop()


def _api(proxy, db_path, clock, **settings) -> Api:
    return Api("patFAKE.token", endpoint_url=proxy.url, path=db_path, flush="manual", clock=clock,
               sleep=clock.sleep, **settings)


def _flush_until_empty(api, clock, rounds: int = 40) -> None:
    for _ in range(rounds):
        api.flush()
        if not [op for op in api.pending() if op["state"] != "dead"]:
            return
        clock.advance(600)  # past any retry time
    raise AssertionError(f"queue did not drain: {api.pending()}")


def _key(fields: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in fields.items()))


def test_half_the_create_answers_lost_airtable_ends_with_exactly_the_records_queued(fake, proxy, db_path, clock):
    rng = random.Random(14)
    proxy.drop_answer = lambda method, path: method == "POST" and rng.random() < 0.5
    api = _api(proxy, db_path, clock)
    table = api.table(BASE, TABLE)
    table.all()
    before = Counter(_key(r["fields"]) for r in fake.records(BASE, TABLE))
    queued = (
        [{"Full Name": f"Ordinary {i}", "Score": i} for i in range(12)]
        + [{"Full Name": "Twin", "Status": "New"}] * 8  # identical creates
        + [{"Tags": ["SMB", "Warm"]}] * 6  # list-only and identical
        + [{"Tags": ["Referral"]}] * 2
        + [{"Opted Out": True}] * 3  # nothing a text or list comparison could use
    )
    rng.shuffle(queued)
    for i in range(0, len(queued), 10):
        table.batch_create(queued[i : i + 10])
    table.create({"Full Name": "Single"})
    queued.append({"Full Name": "Single"})

    _flush_until_empty(api, clock)

    assert proxy.dropped >= 2, "the test must lose some answers"
    assert [op for op in api.pending() if op["state"] == "dead"] == []
    after = Counter(_key(r["fields"]) for r in fake.records(BASE, TABLE))
    assert after - before == Counter(_key(f) for f in queued)
    assert sum(after.values()) - sum(before.values()) == len(queued)
    # The cache knows each of them, by the id Airtable gave it.
    local = table.all()
    assert not [r for r in local if is_provisional(r["id"])]
    assert sorted(r["id"] for r in local) == sorted(r["id"] for r in fake.records(BASE, TABLE))


def test_lost_answers_then_local_deletes_leave_exactly_the_creates_kept(fake, proxy, db_path, clock):
    """Creates in doubt (identical, list-only, ordinary), some deleted by the agent before the
    next flush: Airtable ends with exactly the creates the agent kept."""
    rng = random.Random(10)
    proxy.drop_answer = lambda method, path: method == "POST" and rng.random() < 0.6
    api = _api(proxy, db_path, clock, retries=1)  # answers lost stay in doubt until the next flush
    table = api.table(BASE, TABLE)
    table.all()
    before = Counter(_key(r["fields"]) for r in fake.records(BASE, TABLE))
    fields = ([{"Full Name": f"Kept or not {i}"} for i in range(6)] + [{"Full Name": "Same", "Score": 2}] * 6
              + [{"Tags": ["Inbound"]}] * 6)
    made = [table.create(f) for f in fields]
    api.flush()
    assert proxy.dropped >= 1
    gone = set(rng.sample(range(len(made)), 7))
    for i in sorted(gone):
        table.delete(made[i]["id"])
    clock.advance(600)
    _flush_until_empty(api, clock)
    assert [op for op in api.pending() if op["state"] == "dead"] == []
    after = Counter(_key(r["fields"]) for r in fake.records(BASE, TABLE))
    assert after - before == Counter(_key(f) for i, f in enumerate(fields) if i not in gone)


def test_identical_record_made_by_someone_else_meanwhile_dead_letters_the_create_as_uncertain(
        fake, proxy, db_path, clock):
    """Two identical records where one create was in doubt: nothing tells which is this queue's."""
    api = _api(proxy, db_path, clock, retries=1)
    table = api.table(BASE, TABLE)
    table.all()
    table.create({"Tags": ["Cold"], "Opted Out": True})
    fake.fail_next(drop_connection=True, apply=True, method="POST")
    api.flush()  # the answer is lost; retries=1 leaves the create in doubt for the next flush
    fake.add_records(BASE, TABLE, [{"Tags": ["Cold"], "Opted Out": True}])  # another user's identical record
    clock.advance(600)
    result = api.flush()
    assert fake.request_count(method="POST") == 1  # never sent again
    made = [r for r in fake.records(BASE, TABLE) if r["fields"] == {"Tags": ["Cold"], "Opted Out": True}]
    assert len(made) == 2
    [dead] = api.pending()
    assert dead["state"] == "dead" and dead["last_error"]["uncertain"]
    assert dead["last_error"]["body"]["error"]["type"] == "UNCERTAIN_CREATE"
    assert sorted(dead["last_error"]["body"]["error"]["candidates"]) == sorted(r["id"] for r in made)
    assert result.failed and result.failed[0]["dead"]


def test_lost_create_deleted_locally_before_next_flush_leaves_nothing_in_airtable(fake, proxy, db_path, clock):
    """Issue 10's defect: the record a lost create made is found (by its fields) and deleted."""
    api = _api(proxy, db_path, clock, retries=1)
    table = api.table(BASE, TABLE)
    table.all()
    created = table.create({"Full Name": "Regretted", "Score": 7})
    fake.fail_next(drop_connection=True, apply=True, method="POST")
    api.flush()
    assert [r for r in fake.records(BASE, TABLE) if r["fields"].get("Full Name") == "Regretted"]
    table.delete(created["id"])
    clock.advance(600)
    result = api.flush()
    assert result.ok and api.pending() == []
    assert not [r for r in fake.records(BASE, TABLE) if r["fields"].get("Full Name") == "Regretted"]


def test_lost_list_only_create_deleted_locally_deletes_only_what_it_made(fake, proxy, db_path, clock):
    api = _api(proxy, db_path, clock, retries=1)
    table = api.table(BASE, TABLE)
    table.all()
    older = Counter(tuple(r["fields"].get("Tags", ())) for r in fake.records(BASE, TABLE))
    created = table.create({"Tags": ["SMB"]})
    fake.fail_next(drop_connection=True, apply=True, method="POST")
    api.flush()
    table.delete(created["id"])
    clock.advance(600)
    assert api.flush().ok and api.pending() == []
    assert Counter(tuple(r["fields"].get("Tags", ())) for r in fake.records(BASE, TABLE)) == older


def _send(record_id: str, fields: dict, kind: str = "create"):
    from airtable_cached.sync.outbox import Send

    return Send(tid=1, base_id=BASE, table_ref=TABLE, kind=kind, record_id=record_id, fields=fields,
                typecast=False, merge_on=None, seqs=[int(record_id[-1])], uncertain=True)


def test_settle_adopts_what_was_made_resends_the_rest_and_refuses_to_guess():
    from airtable_cached.sync.reconcile import settle

    sends = [_send("recLOCAL00000001", {"A": 1}), _send("recLOCAL00000002", {"A": 1}),
             _send("recLOCAL00000003", {"A": 1}, kind="none")]
    made = [{"id": "recB", "createdTime": "2024-01-01T00:00:02.000Z"},
            {"id": "recA", "createdTime": "2024-01-01T00:00:01.000Z"}]
    one = settle(sends, made[:1], 3)
    assert [(s.record_id, r["id"]) for s, r in one.adopt] == [("recLOCAL00000001", "recB")]
    assert [s.record_id for s in one.resend] == ["recLOCAL00000002"] and one.delete == []
    both = settle(sends, made, 3)
    assert [r["id"] for _, r in both.adopt] == ["recA", "recB"] and both.resend == []
    cancelled_made = settle(sends, [*made, {"id": "recC", "createdTime": "2024-01-01T00:00:03.000Z"}], 3)
    assert [r["id"] for r in cancelled_made.delete] == ["recC"] and len(cancelled_made.drop) == 1
    too_many = settle(sends, [*made, {"id": "recC"}, {"id": "recD"}], 3)
    assert too_many.uncertain == sends and not too_many.adopt and not too_many.resend


def test_lookup_formula_compares_only_what_airtable_stores_as_sent():
    from airtable_cached.sync.reconcile import lookup_formula

    schema = {"Tags": {"type": "multipleSelects"}, "Lead": {"type": "multipleRecordLinks"},
              "Due": {"type": "date"}, "Score": {"type": "number"}}
    formula = lookup_formula(
        {"Name": "O'Brien", "Tags": ["SMB", "Warm"], "Lead": ["recAAAAAAAAAAAAAA"], "Due": "2024-01-02",
         "Score": 2.5, "Done": False, "Ok": True},
        schema, typecast=False, after="2024-01-01T00:00:00.000Z",
    )
    assert formula == (
        "AND(IS_AFTER(CREATED_TIME(), DATETIME_PARSE('2024-01-01T00:00:00.000Z')),"
        " OR({Name}='O\\'Brien', {Name}='O\\'Brien\\n'), ARRAYJOIN({Tags}, ', ')='SMB, Warm', {Ok}=TRUE())"
    )
    assert lookup_formula({"Lead": ["recAAAAAAAAAAAAAA"]}, {}, typecast=False, after=None) == ""


def test_settle_never_leaves_airtable_with_more_or_fewer_records_than_creates():
    """Whatever subset of identical creates made a record (and whichever were cancelled since),
    adopting, deleting and re-sending as settled ends with one record per create kept."""
    from hypothesis import given
    from hypothesis import strategies as st

    from airtable_cached.sync.reconcile import settle

    @given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=12))
    def check(items):  # (cancelled since, made a record before its answer was lost)
        sends = [_send(f"recLOCAL0000000{i % 10}", {"A": 1}, kind="none" if cancelled else "create")
                 for i, (cancelled, _made) in enumerate(items)]
        made = [{"id": f"rec{i}", "createdTime": f"2024-01-01T00:00:{i:02d}.000Z"}
                for i, (_c, did) in enumerate(items) if did]
        outcome = settle(sends, made, len(sends))
        in_airtable = len(made) - len(outcome.delete) + len(outcome.resend)
        assert in_airtable == sum(1 for cancelled, _ in items if not cancelled)
        assert len(outcome.adopt) + len(outcome.resend) == sum(1 for s in sends if s.kind == "create")
        assert not outcome.uncertain

    check()


def test_lookup_finds_the_record_airtable_really_made_for_a_recorded_create():
    """Compared with real Airtable traffic (``shared/airtable-traffic/refine``): a create of
    ``{"content": "bar", ...}`` came back as ``"bar\\n"`` and the ``Date`` header reads the clock
    ``createdTime`` is on. The lookup for that create, bounded by that ``Date``, matches the record
    (as the project's own formula engine evaluates it: the record is Airtable's, the evaluation is
    not; no recording shows Airtable evaluating such a lookup)."""
    import yaml

    from airtable_cached.formula import matches, parse
    from airtable_cached.sync.reconcile import created_after, lookup_formula, server_time

    path = recorded("refine", "create__index.mock.ts.yaml")
    [interaction] = yaml.safe_load(path.read_text())["interactions"]
    sent = json.loads(interaction["request"]["body"])["fields"]
    made = json.loads(interaction["response"]["body"]["string"])
    date = interaction["response"]["headers"]["Date"][0]
    assert made["fields"]["content"] != sent["content"]  # what makes plain equality miss it
    formula = lookup_formula(sent, {}, typecast=False, after=created_after(server_time(date)))
    assert "CREATED_TIME()" in formula and "{category}" not in formula  # links are left out
    assert matches(parse(formula), {**made, "lastModifiedTime": made["createdTime"]})


def test_a_lookup_lost_midway_does_not_resend_the_creates_already_found(fake, proxy, db_path, clock):
    """Two creates in doubt are looked for one after the other; the second lookup's answer is lost.
    The first, already found and adopted, is not sent again when the batch is retried."""
    from urllib.parse import unquote

    lost = {"POST": 1, "GET": 4}  # the lookup fails through all of its own retries

    def drop(method: str, path: str) -> bool:
        wanted = method == "POST" or (method == "GET" and "Second" in unquote(path))
        if wanted and lost.get(method):
            lost[method] -= 1
            return True
        return False

    api = _api(proxy, db_path, clock, retries=4)
    table = api.table(BASE, TABLE)
    table.all()
    table.batch_create([{"Full Name": "First Of Two"}, {"Full Name": "Second Of Two"}])
    proxy.drop_answer = drop
    _flush_until_empty(api, clock)
    assert lost == {"POST": 0, "GET": 0}
    names = Counter(r["fields"].get("Full Name") for r in fake.records(BASE, TABLE))
    assert names["First Of Two"] == 1 and names["Second Of Two"] == 1


def test_a_failed_lookup_does_not_narrow_an_unbounded_create_in_doubt(fake, proxy, db_path, clock):
    """A create left in flight by a flusher that died (no clock bound: it may have been made at any
    time) whose lookup then fails with a 5xx must not get a bound from that later attempt: the
    record it made is older than the bound, and a narrowed lookup would miss it and send it again."""
    api = _api(proxy, db_path, clock, retries=1)
    table = api.table(BASE, TABLE)
    table.all()
    fields = {"Full Name": "Crashed Create", "Score": 7}
    table.create(fields)
    fake.fail_next(drop_connection=True, apply=True, method="POST")
    api.flush()  # Airtable made the record; its answer was lost
    # The state a flusher killed while waiting for that answer leaves: in flight, no error, no bound.
    with api.engine.store.transaction() as conn:
        conn.execute("UPDATE outbox SET state = 'inflight', claimed_until = NULL, last_error = NULL")
    fake.advance_clock(120)
    clock.advance(600)
    table.all()  # the restarted agent reads: Airtable's clock as of now
    fake.fail_next(500, method="GET")  # the lookup fails once
    api.flush()
    assert fake.request_count(method="GET") >= 2, "the lookup must have been tried and failed"
    clock.advance(600)
    _flush_until_empty(api, clock)
    made = [r for r in fake.records(BASE, TABLE) if r["fields"].get("Full Name") == "Crashed Create"]
    assert len(made) == 1


def test_creates_in_doubt_failing_together_keep_each_its_own_clock_bound(fake, proxy, db_path, clock):
    """Two creates in doubt in one batch, one unbounded (left in flight by a dead flusher), one
    bounded by a later lost answer: when their lookup fails, the unbounded one must not take the
    other's bound (its record is older, a narrowed lookup would miss it and send it again)."""
    api = _api(proxy, db_path, clock, retries=1)
    table = api.table(BASE, TABLE)
    table.all()
    table.create({"Full Name": "Old Crash", "Score": 1})
    fake.fail_next(drop_connection=True, apply=True, method="POST")
    api.flush()  # made; answer lost
    fake.advance_clock(120)
    table.refresh(force=True)  # Airtable's clock as of now
    table.create({"Full Name": "Later Loss", "Score": 2})
    fake.fail_next(drop_connection=True, apply=True, method="POST")
    api.flush()  # only the new create is due: made, answer lost, bounded by the clock just read
    with api.engine.store.transaction() as conn:  # the first one as a killed flusher leaves it
        conn.execute("UPDATE outbox SET state = 'inflight', claimed_until = NULL, last_error = NULL"
                     " WHERE fields LIKE '%Old Crash%'")
    clock.advance(600)
    fake.fail_next(500, method="GET")  # their lookup fails once
    api.flush()
    clock.advance(600)
    _flush_until_empty(api, clock)
    names = Counter(r["fields"].get("Full Name") for r in fake.records(BASE, TABLE))
    assert names["Old Crash"] == 1 and names["Later Loss"] == 1
