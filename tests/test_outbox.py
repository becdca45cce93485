"""Unit tests of the write queue on a real SQLite file: claim, plan, chunk_requests, the finishing
transitions, remap_id and replay."""

from __future__ import annotations

import json

import pytest

from airtable_cached.rules.records import is_provisional, new_provisional_id, replay
from airtable_cached.store.sqlite import Store
from airtable_cached.sync import outbox

BASE = "appOUTBOXbase0001"
NOW = 1_000.0


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "outbox.sqlite3")
    with s.transaction() as conn:
        conn.execute("INSERT INTO tables (tid, base_id, name) VALUES (1, ?, 'Leads')", (BASE,))
        conn.execute("INSERT INTO tables (tid, base_id, name) VALUES (2, ?, 'Deals')", (BASE,))
        conn.execute("INSERT INTO tables (tid, base_id, name) VALUES (3, 'appOTHERbase00001', 'Leads')")
    yield s
    s.close()


def add(store, op, record_id, fields=None, *, tid=1, base_id=BASE, typecast=False, merge_on=None, now=NOW):
    with store.write() as unit:
        return unit.outbox.append(
            tid=tid, base_id=base_id, table_ref={1: "Leads", 2: "Deals", 3: "Leads"}[tid], op=op,
            record_id=record_id, fields=fields, base=None, typecast=typecast, now=now, merge_on=merge_on,
        )


def claim(store, *, now=NOW, lease=60.0, limit=500, base_id=BASE):
    with store.write() as unit:
        return unit.outbox.claim(base_id, now=now, lease=lease, limit=limit)


def row(store, seq):
    return store.conn.execute("SELECT * FROM outbox WHERE seq = ?", (seq,)).fetchone()


# -- claim ---------------------------------------------------------------------------------------------


def test_claim_takes_the_base_in_order_and_marks_inflight(store):
    a = add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 1})
    b = add(store, "update", "recBBBBBBBBBBBBBB", {"Score": 2})
    other = add(store, "update", "recCCCCCCCCCCCCCC", {"Score": 3}, tid=3, base_id="appOTHERbase00001")
    ops = claim(store)
    assert [o.seq for o in ops] == [a, b]
    for seq in (a, b):
        assert row(store, seq)["state"] == "inflight"
        assert row(store, seq)["attempts"] == 1
        assert row(store, seq)["claimed_until"] == NOW + 60
    assert row(store, other)["state"] == "pending"
    assert claim(store) == []  # claimed and the claim is live


def test_expired_claims_are_taken_over(store):
    seq = add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 1})
    assert claim(store, lease=10)
    assert claim(store, now=NOW + 5) == []
    again = claim(store, now=NOW + 11)
    assert [o.seq for o in again] == [seq]
    assert again[0].state == "inflight"  # as it was found: a takeover
    assert row(store, seq)["attempts"] == 2


def test_a_write_waiting_for_its_retry_blocks_the_rest_of_its_record_only(store):
    first = add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 1})
    later = add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 2})
    other = add(store, "update", "recBBBBBBBBBBBBBB", {"Score": 3})
    with store.write() as unit:
        unit.outbox.retry_later([first], error={"status": 503}, next_attempt_at=NOW + 30)
    assert [o.seq for o in claim(store)] == [other]
    assert row(store, later)["state"] == "pending"
    assert [o.seq for o in claim(store, now=NOW + 31)] == [first, later]


def test_writes_naming_an_unsent_provisional_id_wait_for_its_create(store):
    pid = new_provisional_id()
    link_pid = new_provisional_id()
    create = add(store, "create", pid, {"Name": "new"})
    update = add(store, "update", pid, {"Score": 1})
    linker = add(store, "update", "recDEALDEALDEAL01", {"Lead": [link_pid]}, tid=2)
    # The create of pid is claimed with its update; the link to a provisional id whose create is not
    # queued here (not mapped yet) waits.
    assert [o.seq for o in claim(store)] == [create, update]
    assert row(store, linker)["state"] == "pending"
    with store.write() as unit:
        unit.outbox.remap_id(link_pid, "recREALREALREAL01", 1)
    claimed = claim(store)
    assert [o.seq for o in claimed] == [linker]
    assert claimed[0].fields == {"Lead": ["recREALREALREAL01"]}


def test_an_update_of_a_provisional_record_whose_create_is_inflight_waits(store):
    pid = new_provisional_id()
    create = add(store, "create", pid, {"Name": "new"})
    assert [o.seq for o in claim(store)] == [create]
    update = add(store, "update", pid, {"Score": 1})
    assert claim(store) == []
    with store.write() as unit:
        unit.outbox.ack([create])
        unit.outbox.remap_id(pid, "recREALREALREAL02", 1)
    claimed = claim(store)
    assert [o.seq for o in claimed] == [update] and claimed[0].record_id == "recREALREALREAL02"


def test_a_dead_create_blocks_what_follows_for_its_record(store):
    pid = new_provisional_id()
    create = add(store, "create", pid, {"Name": "bad"})
    update = add(store, "update", pid, {"Score": 1})
    other = add(store, "update", "recBBBBBBBBBBBBBB", {"Score": 2})
    with store.write() as unit:
        unit.outbox.dead_letter([create], error={"status": 422})
    assert [o.seq for o in claim(store)] == [other]
    assert row(store, update)["state"] == "pending"


def test_a_dead_update_does_not_block_later_writes_of_its_record(store):
    bad = add(store, "update", "recAAAAAAAAAAAAAA", {"Score": "x"})
    good = add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 2})
    with store.write() as unit:
        unit.outbox.dead_letter([bad], error={"status": 422})
    assert [o.seq for o in claim(store)] == [good]


def test_claim_limit(store):
    seqs = [add(store, "update", f"rec{i:014d}", {"Score": i}) for i in range(30)]
    assert [o.seq for o in claim(store, limit=12)] == seqs[:12]
    assert [o.seq for o in claim(store, limit=100)] == seqs[12:]


# -- plan ------------------------------------------------------------------------------------------------


def ops_of(store):
    return [outbox.Op.from_row(r) for r in store.conn.execute("SELECT * FROM outbox ORDER BY seq")]


def test_plan_merges_successive_updates(store):
    add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 1, "Name": "a"})
    add(store, "update", "recBBBBBBBBBBBBBB", {"Score": 9})
    add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 2})
    add(store, "update", "recAAAAAAAAAAAAAA", {"Company": "c"}, typecast=True)
    sends = outbox.plan(ops_of(store))
    assert [(s.record_id, s.kind) for s in sends] == [("recAAAAAAAAAAAAAA", "update"), ("recBBBBBBBBBBBBBB", "update")]
    assert sends[0].fields == {"Score": 2, "Name": "a", "Company": "c"}
    assert sends[0].typecast is True and len(sends[0].seqs) == 3


def test_plan_replace_absorbs_earlier_and_keeps_later_updates(store):
    add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 1})
    add(store, "replace", "recAAAAAAAAAAAAAA", {"Name": "only"})
    add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 3})
    (send,) = outbox.plan(ops_of(store))
    assert send.kind == "replace" and send.fields == {"Name": "only", "Score": 3}


def test_plan_create_absorbs_updates_and_create_then_delete_is_nothing(store):
    p1, p2 = new_provisional_id(), new_provisional_id()
    add(store, "create", p1, {"Name": "one"})
    add(store, "update", p1, {"Score": 1})
    add(store, "replace", p1, {"Name": "uno"})
    add(store, "create", p2, {"Name": "two"})
    add(store, "update", p2, {"Score": 2})
    add(store, "delete", p2)
    add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 1})
    add(store, "delete", "recAAAAAAAAAAAAAA")
    sends = {s.record_id: s for s in outbox.plan(ops_of(store))}
    assert sends[p1].kind == "create" and sends[p1].fields == {"Name": "uno"}
    assert sends[p2].kind == "none" and len(sends[p2].seqs) == 3
    assert sends["recAAAAAAAAAAAAAA"].kind == "delete" and sends["recAAAAAAAAAAAAAA"].fields is None


def test_plan_marks_creates_of_unknown_outcome_uncertain(store):
    p1, p2, p3 = (new_provisional_id() for _ in range(3))
    a = add(store, "create", p1, {"Name": "taken over"})
    b = add(store, "create", p2, {"Name": "answer lost"})
    add(store, "create", p3, {"Name": "never sent"})
    claim(store, lease=1)
    with store.write() as unit:
        unit.outbox.retry_later([b], error={"status": None, "uncertain": True}, next_attempt_at=0)
        unit.conn.execute("UPDATE outbox SET state = 'pending', claimed_until = NULL WHERE record_id = ?", (p3,))
    sends = {s.record_id: s for s in outbox.plan(claim(store, now=NOW + 2))}
    assert sends[p1].uncertain and sends[p2].uncertain and not sends[p3].uncertain
    assert row(store, a)["attempts"] == 2


# -- chunk_requests ----------------------------------------------------------------------------------------


def test_chunk_requests_ten_records_a_request_grouped_by_what_can_share_one(store):
    for i in range(25):
        add(store, "create", new_provisional_id(), {"Name": str(i)})
    for i in range(12):
        add(store, "update", f"rec{i:014d}", {"Score": i})
    add(store, "update", "recTYPECASTTYPECA", {"Score": "1"}, typecast=True)
    add(store, "update", "recDEALDEALDEAL01", {"Deal": "x"}, tid=2)
    add(store, "create", new_provisional_id(), {"Key": "k"}, merge_on=["Key"])
    p = new_provisional_id()
    add(store, "create", p, {"Name": "gone"})
    add(store, "delete", p)
    batches = outbox.chunk_requests(outbox.plan(ops_of(store)))
    shapes = [(b[0].kind, b[0].tid, b[0].typecast, tuple(b[0].merge_on or ()), len(b)) for b in batches]
    assert shapes == [
        ("create", 1, False, (), 10), ("create", 1, False, (), 10), ("create", 1, False, (), 5),
        ("update", 1, False, (), 10), ("update", 1, False, (), 2),
        ("update", 1, True, (), 1),
        ("update", 2, False, (), 1),
        ("create", 1, False, ("Key",), 1),
    ]
    for batch in batches:
        assert len({(s.tid, s.kind, s.typecast, tuple(s.merge_on or ())) for s in batch}) == 1
    # Order within a group is queue order.
    names = [s.fields["Name"] for b in batches[:3] for s in b]
    assert names == [str(i) for i in range(25)]


# -- finishing -------------------------------------------------------------------------------------------


def test_ack_retry_later_dead_letter_and_requeue(store):
    a = add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 1})
    b = add(store, "update", "recBBBBBBBBBBBBBB", {"Score": 2})
    c = add(store, "update", "recCCCCCCCCCCCCCC", {"Score": 3})
    claim(store)
    with store.write() as unit:
        unit.outbox.ack([a])
        unit.outbox.retry_later([b], error={"status": 503, "body": "busy"}, next_attempt_at=NOW + 8)
        unit.outbox.dead_letter([c], error={"status": 422, "body": {"error": {"type": "INVALID_VALUE_FOR_COLUMN"}}})
    assert row(store, a) is None
    assert row(store, b)["state"] == "pending" and row(store, b)["next_attempt_at"] == NOW + 8
    assert row(store, b)["claimed_until"] is None and json.loads(row(store, b)["last_error"])["status"] == 503
    assert row(store, c)["state"] == "dead"
    listed = [op.as_dict() for op in store.outbox.list_ops()]
    assert [(o["seq"], o["state"], o["attempts"]) for o in listed] == [(b, "pending", 1), (c, "dead", 1)]
    assert listed[1]["last_error"]["body"]["error"]["type"] == "INVALID_VALUE_FOR_COLUMN"
    with store.write() as unit:
        assert unit.outbox.requeue() == [c]
    assert row(store, c)["state"] == "pending" and row(store, c)["attempts"] == 0


def test_remap_id_rewrites_queued_writes_and_links(store):
    pid = new_provisional_id()
    other = new_provisional_id()
    add(store, "create", pid, {"Name": "x"})
    upd = add(store, "update", pid, {"Score": 1})
    link = add(store, "update", "recDEALDEALDEAL01", {"Lead": [other, pid], "Note": f"about {pid}"}, tid=2)
    with store.write() as unit:
        unit.outbox.remap_id(pid, "recREALREALREAL03", 1)
    assert row(store, upd)["record_id"] == "recREALREALREAL03"
    fields = json.loads(row(store, link)["fields"])
    assert fields["Lead"] == [other, "recREALREALREAL03"]
    assert fields["Note"] == f"about {pid}"  # text is not a link: left alone
    assert store.conn.execute("SELECT real FROM id_map WHERE provisional = ?", (pid,)).fetchone()[0] == "recREALREALREAL03"


# -- replay -----------------------------------------------------------------------------------------------


def test_replay_applies_pending_writes_on_top_of_the_remote_state(store):
    rid = "recAAAAAAAAAAAAAA"
    add(store, "update", rid, {"Score": 5, "Tags": []})
    add(store, "update", rid, {"Company": "New"})
    ops = ops_of(store)
    remote = {"Name": "n", "Score": 1, "Tags": ["a"]}
    assert replay(remote, ops) == {"Name": "n", "Score": 5, "Company": "New"}
    assert remote == {"Name": "n", "Score": 1, "Tags": ["a"]}  # not mutated
    add(store, "replace", rid, {"Name": "only"})
    assert replay(remote, ops_of(store)) == {"Name": "only"}
    add(store, "delete", rid)
    assert replay(remote, ops_of(store)) is None


def test_replay_of_a_create_and_of_writes_to_a_record_gone_remotely(store):
    pid = new_provisional_id()
    assert is_provisional(pid)
    add(store, "create", pid, {"Name": "new", "Done": False})
    add(store, "update", pid, {"Score": 2})
    assert replay(None, ops_of(store)) == {"Name": "new", "Score": 2}
    gone = [outbox.Op.from_row(r) for r in store.conn.execute("SELECT * FROM outbox WHERE op = 'update'")]
    assert replay(None, gone) is None  # an update of a record deleted on Airtable shows nothing


# -- the endpoint: one file caches several Airtables (tables.endpoint) --------------------------------


@pytest.fixture
def two_endpoints(store):
    """Table 1 mirrors one Airtable, table 4 another, with the same base id."""
    with store.transaction() as conn:
        conn.execute("UPDATE tables SET endpoint = 'https://api.airtable.com' WHERE tid = 1")
        conn.execute("INSERT INTO tables (tid, base_id, name, endpoint) VALUES (4, ?, 'Leads', 'http://staging')", (BASE,))
    return store


def add_staging(store, record_id, fields, **kw):
    with store.write() as unit:
        return unit.outbox.append(tid=4, base_id=BASE, table_ref="Leads", op="update", record_id=record_id,
                                  fields=fields, base=None, typecast=False, now=NOW, **kw)


def test_has_ready_and_next_due_look_at_the_endpoint_s_writes_only(two_endpoints):
    store = two_endpoints
    seq = add_staging(store, "recSTAGINGSTAGIN1", {"Score": 1})
    queue = store.outbox
    assert queue.has_ready(NOW, endpoint="http://staging")
    assert not queue.has_ready(NOW, endpoint="https://api.airtable.com")  # nothing of its own to send
    assert queue.has_ready(NOW)  # every endpoint
    with store.write() as unit:
        unit.outbox.retry_later([seq], error={"status": 503}, next_attempt_at=NOW + 30)
    assert queue.next_due(endpoint="http://staging") == NOW + 30
    assert queue.next_due(endpoint="https://api.airtable.com") is None
    assert not queue.has_ready(NOW, endpoint="http://staging")
    add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 2}, now=NOW)
    assert queue.next_due(endpoint="https://api.airtable.com") == 0  # due at once
    assert queue.has_ready(NOW, endpoint="https://api.airtable.com")


def test_quarantine_keeps_to_the_endpoint_s_writes(two_endpoints):
    """A flush for one Airtable never dead-letters another endpoint's writes of the same base id."""
    store = two_endpoints
    mine = add(store, "update", "recAAAAAAAAAAAAAA", {"Score": 1})
    theirs = add_staging(store, "recSTAGINGSTAGIN1", {"Score": 2})
    with store.transaction() as conn:
        conn.execute("UPDATE outbox SET fields = replace(fields, '1', '7') WHERE seq = ?", (mine,))
        conn.execute("UPDATE outbox SET fields = replace(fields, '2', '8') WHERE seq = ?", (theirs,))
    with store.write() as unit:
        assert [r["seq"] for r in unit.outbox.quarantine(BASE, endpoint="https://api.airtable.com")] == [mine]
    assert row(store, mine)["state"] == "dead" and row(store, theirs)["state"] == "pending"
    assert [r["seq"] for r in store.outbox.damaged(BASE)] == [theirs]  # every endpoint: still damaged


def test_the_background_flusher_waits_for_its_own_endpoint_s_writes(fake, tmp_path, clock):
    """Another endpoint's write due in the file does not wake this Api's flusher into a busy loop:
    its idle wait is until its own next write is due (at most PERIOD)."""
    from airtable_cached import Api
    from airtable_cached.sync.core import AutoFlusher

    path = tmp_path / "shared.sqlite3"
    with Api(fake.token, endpoint_url=fake.url, path=path, flush="manual", clock=clock, sleep=clock.sleep) as api:
        store = api.engine.store
        with store.transaction() as conn:
            conn.execute("INSERT INTO tables (tid, base_id, name, endpoint) VALUES (9, ?, 'Leads', 'http://staging')",
                         (BASE,))
        with store.write() as unit:
            seq = unit.outbox.append(tid=9, base_id=BASE, table_ref="Leads", op="update", record_id="recSTAGINGSTAGIN1",
                                     fields={"Score": 1}, base=None, typecast=False, now=clock())
            unit.outbox.retry_later([seq], error={"status": 503}, next_attempt_at=clock() + 2)
        flusher = AutoFlusher.__new__(AutoFlusher)
        flusher._sync = lambda: api.sync  # type: ignore[method-assign]
        assert flusher._idle_wait() == AutoFlusher.PERIOD
        assert not store.outbox.has_ready(clock() + 5, endpoint=api.engine.endpoint)
