"""The storage contract of the write queue (``Outbox`` in airtable_cached/store/contract.py), run
against every store (the ``contract_store`` fixture, tests/conftest.py). Only the protocol is used:
``store.write()`` units to change the queue, ``store.outbox`` to read it."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airtable_cached.rules.records import new_provisional_id

BASE = "appCONTRACTbase01"
OTHER = "appCONTRACTbase02"
NOW = 1_000.0
_tids = itertools.count(1)


def make_table(store, base_id: str = BASE, endpoint: str = "") -> int:
    """A table for writes to belong to."""
    with store.write() as unit:
        return unit.replica.add_table(endpoint, base_id, None, f"T{next(_tids)}")


def append(store, tid, record_id, fields=None, *, op="update", base_id=BASE, now=NOW, call_id=None):
    with store.write() as unit:
        return unit.outbox.append(tid=tid, base_id=base_id, table_ref=f"T{tid}", op=op, record_id=record_id,
                                  fields=fields, base=None, typecast=False, now=now, call_id=call_id)


def claim(store, base_id=BASE, *, now=NOW, lease=60.0, limit=500, endpoint=None):
    with store.write() as unit:
        return unit.outbox.claim(base_id, now=now, lease=lease, limit=limit, endpoint=endpoint)


def by_seq(store, base_id=None):
    return {op.seq: op for op in store.outbox.list_ops(base_id=base_id)}


def rec(n: int) -> str:
    return f"rec{n:014d}"


@pytest.fixture
def table(contract_store):
    return make_table(contract_store)


# -- appending -------------------------------------------------------------------------------------


def test_append_keeps_the_order_of_the_calls(contract_store, table):
    seqs = [append(contract_store, table, rec(i % 3), {"n": i}) for i in range(7)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 7
    listed = contract_store.outbox.list_ops()
    assert [op.seq for op in listed] == seqs
    assert [op.fields for op in listed] == [{"n": i} for i in range(7)]
    assert all(op.state == "pending" and op.attempts == 0 for op in listed)
    assert [op.fields for op in contract_store.outbox.live_ops_for_record(table, rec(1))] == [{"n": 1}, {"n": 4}]
    assert contract_store.outbox.records_with_live_ops(table) == {rec(0), rec(1), rec(2)}


def test_a_write_belongs_to_its_call(contract_store, table):
    first = append(contract_store, table, rec(1))
    second = append(contract_store, table, rec(2), call_id=first)
    alone = append(contract_store, table, rec(3))
    ops = by_seq(contract_store)
    assert (ops[first].call_id, ops[second].call_id, ops[alone].call_id) == (first, first, alone)


def test_a_write_that_is_not_committed_is_not_queued(contract_store, table):
    with pytest.raises(RuntimeError), contract_store.write() as unit:
        unit.outbox.append(tid=table, base_id=BASE, table_ref="T", op="update", record_id=rec(1), fields={},
                           base=None, typecast=False, now=NOW)
        raise RuntimeError("the call fails after queueing")
    assert contract_store.outbox.list_ops() == []


# -- asked by the engine ---------------------------------------------------------------------------


def test_what_the_engine_asks_of_the_queue(contract_store, table):
    other = make_table(contract_store, OTHER)
    outbox = contract_store.outbox
    assert not outbox.has_live_writes([table]) and not outbox.has_live_writes_for_base(BASE)
    first = append(contract_store, table, rec(1), {"Link": [rec(2)]})
    second = append(contract_store, table, rec(3), {"n": 3})
    dead = append(contract_store, other, rec(4), None, op="delete", base_id=OTHER)
    with contract_store.write() as unit:
        unit.outbox.dead_letter([dead], error={"type": "X"})
    assert outbox.has_live_writes([table, other]) and not outbox.has_live_writes([other])
    assert outbox.has_live_writes_for_base(BASE) and not outbox.has_live_writes_for_base(OTHER)
    states = {w["seq"]: w for w in outbox.write_states([first, dead, 999_999])}
    assert set(states) == {first, dead} and states[dead]["state"] == "dead" and states[dead]["last_error"] == {"type": "X"}
    assert states[first]["last_error"] is None and states[first]["record_id"] == rec(1)
    assert [w["seq"] for w in outbox.pending_updates(table)] == [first, second]
    assert [(w["record_id"], w["fields"]) for w in outbox.live_writes_of_tables([table, other])] == [
        (rec(1), {"Link": [rec(2)]}), (rec(3), {"n": 3})]
    assert outbox.written_fields(table, rec(3)) == [{"n": 3}] and outbox.written_fields(other, rec(4)) == []
    assert outbox.records_whose_live_writes_name(table, rec(2)) == {rec(1)}
    assert outbox.real_id(rec(1)) is None
    with contract_store.write() as unit:
        unit.outbox.remap_id(rec(1), rec(11), table)
    assert outbox.real_id(rec(1)) == rec(11)


# -- claiming --------------------------------------------------------------------------------------


def test_claim_takes_the_ready_writes_of_one_base_and_marks_them_inflight(contract_store, table):
    other = make_table(contract_store, OTHER)
    mine = [append(contract_store, table, rec(i)) for i in range(3)]
    theirs = append(contract_store, other, rec(9), base_id=OTHER)
    claimed = claim(contract_store, lease=60)
    assert [op.seq for op in claimed] == mine
    assert all(op.state == "pending" and op.attempts == 0 for op in claimed)  # as they were before
    ops = by_seq(contract_store)
    for seq in mine:
        assert (ops[seq].state, ops[seq].attempts, ops[seq].claimed_until) == ("inflight", 1, NOW + 60)
    assert ops[theirs].state == "pending"
    assert contract_store.outbox.tables_with_writes(BASE) == {table}


def test_a_claim_does_not_take_inflight_writes_before_their_lease_ends(contract_store, table):
    seq = append(contract_store, table, rec(1))
    assert [op.seq for op in claim(contract_store, lease=10)] == [seq]
    assert claim(contract_store, now=NOW + 5) == []
    assert contract_store.outbox.claimed_among([seq], NOW + 5) == [seq]
    taken = claim(contract_store, now=NOW + 11)  # the first flusher is gone: taken over
    assert [op.seq for op in taken] == [seq] and taken[0].state == "inflight"
    assert by_seq(contract_store)[seq].attempts == 2


def test_claim_respects_its_limit_and_the_order_within_a_record(contract_store, table):
    first = append(contract_store, table, rec(1), {"a": 1})
    append(contract_store, table, rec(1), {"a": 2})
    append(contract_store, table, rec(2), {"a": 3})
    assert [op.seq for op in claim(contract_store, limit=1)] == [first]
    with contract_store.write() as unit:
        unit.outbox.retry_later([first], error={"status": 503}, next_attempt_at=NOW + 100)
    # rec(1)'s first write waits: its second waits behind it; rec(2) goes.
    assert [op.record_id for op in claim(contract_store, now=NOW + 1)] == [rec(2)]


def test_unclaim_gives_writes_back_as_they_were(contract_store, table):
    seq = append(contract_store, table, rec(1))
    with contract_store.write() as unit:
        unit.outbox.unclaim(unit.outbox.claim(BASE, now=NOW, lease=60))
    op = by_seq(contract_store)[seq]
    assert (op.state, op.attempts, op.claimed_until) == ("pending", 0, None)


def test_released_claims_are_claimable_at_once_and_stay_inflight(contract_store, table):
    seq = append(contract_store, table, rec(1))
    claim(contract_store, lease=60)
    with contract_store.write() as unit:
        assert unit.outbox.release_claims(BASE) == 1
    assert by_seq(contract_store)[seq].state == "inflight"
    assert [op.seq for op in claim(contract_store, now=NOW + 1)] == [seq]


def test_renewed_claims_outlive_their_first_lease(contract_store, table):
    seq = append(contract_store, table, rec(1))
    claim(contract_store, lease=10)
    with contract_store.write() as unit:
        unit.outbox.renew_claims([seq], NOW + 100)
    assert claim(contract_store, now=NOW + 50) == []


def test_release_puts_inflight_writes_back_with_their_errors(contract_store, table):
    a, b = append(contract_store, table, rec(1)), append(contract_store, table, rec(2))
    claim(contract_store)
    with contract_store.write() as unit:
        assert unit.outbox.release({a: {"status": 503}, b: {"status": None}}, next_attempt_at=NOW + 5) == 2
        assert unit.outbox.release({a: {"status": 503}}, next_attempt_at=NOW + 5) == 0  # no longer in flight
    ops = by_seq(contract_store)
    assert ops[a].state == "pending" and ops[a].next_attempt_at == NOW + 5 and ops[a].last_error == '{"status":503}'
    assert contract_store.outbox.max_attempts([a, b]) == 1


# -- settling --------------------------------------------------------------------------------------


def test_ack_deletes(contract_store, table):
    a, b = append(contract_store, table, rec(1)), append(contract_store, table, rec(2))
    claim(contract_store)
    with contract_store.write() as unit:
        unit.outbox.ack([a])
    assert list(by_seq(contract_store)) == [b]
    assert contract_store.outbox.any_queued([a, b]) and not contract_store.outbox.any_queued([a])
    assert contract_store.outbox.count_queued() == 1


def test_retry_later_counts_attempts_and_sets_the_next_attempt(contract_store, table):
    seq = append(contract_store, table, rec(1))
    for attempt in (1, 2):
        now = NOW + 100 * attempt
        assert [op.seq for op in claim(contract_store, now=now)] == [seq]
        with contract_store.write() as unit:
            unit.outbox.retry_later([seq], error={"status": 429, "attempt": attempt}, next_attempt_at=now + 30)
        op = by_seq(contract_store)[seq]
        assert (op.state, op.attempts, op.next_attempt_at, op.claimed_until) == ("pending", attempt, now + 30, None)
        assert op.as_dict()["last_error"] == {"status": 429, "attempt": attempt}
        assert claim(contract_store, now=now + 29) == []
    assert contract_store.outbox.next_due() == NOW + 230


def test_dead_letters_are_kept_and_requeued(contract_store, table):
    dead, live = append(contract_store, table, rec(1)), append(contract_store, table, rec(2))
    claim(contract_store)
    with contract_store.write() as unit:
        unit.outbox.dead_letter([dead], error={"status": 422})
    queue = contract_store.outbox
    assert by_seq(contract_store)[dead].state == "dead"
    assert queue.live_ops_for_record(table, rec(1)) == [] and queue.records_with_live_ops(table) == {rec(2)}
    assert queue.dead_among([dead, live]) == {dead} and queue.seqs(("dead",)) == [dead]
    assert [op.seq for op in claim(contract_store, now=NOW + 1000)] == [live]  # a dead letter is never claimed
    with contract_store.write() as unit:
        assert unit.outbox.requeue() == [dead]
    op = by_seq(contract_store)[dead]
    assert (op.state, op.attempts, op.next_attempt_at) == ("pending", 0, 0)


def test_dead_letter_calls_takes_whole_calls(contract_store, table):
    first = append(contract_store, table, rec(1))
    second = append(contract_store, table, rec(2), call_id=first)
    other = append(contract_store, table, rec(3))
    with contract_store.write() as unit:
        dead = unit.outbox.dead_letter_calls({first}, error={"status": 422})
    assert [op.seq for op in dead] == [first, second]
    states = {seq: op.state for seq, op in by_seq(contract_store).items()}
    assert states == {first: "dead", second: "dead", other: "pending"}
    with contract_store.write() as unit:
        assert unit.outbox.dead_letter_calls(set(), error={}) == []


def test_remap_id_rewrites_provisional_ids_in_queued_writes(contract_store, table):
    pid = new_provisional_id()
    create = append(contract_store, table, pid, {"Name": "new"}, op="create")
    update = append(contract_store, table, pid, {"Score": 1})
    link = append(contract_store, table, rec(2), {"Link": [pid, rec(3)]})
    with contract_store.write() as unit:
        unit.outbox.ack([create])
        unit.outbox.remap_id(pid, "recREALREALREAL01", table)
    ops = by_seq(contract_store)
    assert ops[update].record_id == "recREALREALREAL01"
    assert ops[link].fields == {"Link": ["recREALREALREAL01", rec(3)]}
    assert contract_store.outbox.id_map() == {pid: "recREALREALREAL01"}
    assert contract_store.outbox.real_ids(table) == {"recREALREALREAL01"}
    assert contract_store.outbox.damaged() == []  # rewritten and sealed again


def test_a_write_naming_an_unmapped_provisional_id_waits_for_its_create(contract_store, table):
    pid = new_provisional_id()
    create = append(contract_store, table, pid, {"Name": "new"}, op="create")
    link = append(contract_store, table, rec(2), {"Link": [pid]})
    assert [op.seq for op in claim(contract_store)] == [create]
    with contract_store.write() as unit:
        unit.outbox.ack([create])
        unit.outbox.remap_id(pid, "recREALREALREAL02", table)
    assert [op.seq for op in claim(contract_store)] == [link]


# -- reading ---------------------------------------------------------------------------------------


def test_list_by_base_and_state(contract_store, table):
    other = make_table(contract_store, OTHER)
    a, b, c = (append(contract_store, table, rec(i)) for i in range(3))
    d = append(contract_store, other, rec(4), base_id=OTHER)
    claim(contract_store, limit=1)
    with contract_store.write() as unit:
        unit.outbox.dead_letter([b], error={"status": 422})
    queue = contract_store.outbox
    assert [op.seq for op in queue.list_ops()] == [a, b, c, d]
    assert [op.seq for op in queue.list_ops(base_id=OTHER)] == [d]
    assert [op.seq for op in queue.list_ops(base_id=BASE, states=("pending",))] == [c]
    assert [op.seq for op in queue.list_ops(states=("inflight", "dead"))] == [a, b]
    assert queue.counts_by_state(table) == {"pending": 1, "inflight": 1, "dead": 1}
    assert queue.bases() == {BASE, OTHER} and queue.seqs() == [a, b, c, d] and queue.top_seq() == d
    assert queue.records_of([a, d]) == {(table, rec(0)), (other, rec(4))}
    assert queue.has_writes(table, rec(1)) and not queue.has_writes(table, rec(9))


def test_next_due_and_has_ready(contract_store, table):
    queue = contract_store.outbox
    assert queue.next_due() is None and not queue.has_ready(NOW)
    seq = append(contract_store, table, rec(1))
    assert queue.next_due() == 0 and queue.has_ready(NOW)
    claim(contract_store)
    assert queue.next_due() is None and queue.has_ready(NOW)  # in flight: its flusher may be gone
    with contract_store.write() as unit:
        unit.outbox.retry_later([seq], error={}, next_attempt_at=NOW + 30)
    assert queue.next_due() == NOW + 30 and not queue.has_ready(NOW) and queue.has_ready(NOW + 30)
    with contract_store.write() as unit:
        unit.outbox.make_due([seq])
    assert queue.next_due() == 0


def test_the_queue_of_one_endpoint(contract_store):
    """One store may cache several Airtables (endpoints) with the same base ids."""
    prod, staging = make_table(contract_store, endpoint="prod"), make_table(contract_store, endpoint="staging")
    mine, theirs = append(contract_store, prod, rec(1)), append(contract_store, staging, rec(2))
    queue = contract_store.outbox
    assert queue.bases_with_queued("prod") == [BASE] and queue.bases_with_queued("elsewhere") == []
    assert [op.seq for op in claim(contract_store, endpoint="staging")] == [theirs]
    assert queue.has_ready(NOW, endpoint="prod") and queue.next_due(endpoint="prod") == 0
    assert queue.next_due(endpoint="staging") is None
    with contract_store.write() as unit:
        assert unit.outbox.release_claims(BASE, endpoint="prod") == 0
        unit.outbox.ack([mine])
    assert not queue.has_ready(NOW, endpoint="prod") and queue.has_ready(NOW, endpoint="staging")


def test_forget_table_drops_its_writes_and_ids(contract_store, table):
    other = make_table(contract_store)
    append(contract_store, table, rec(1))
    kept = append(contract_store, other, rec(2))
    pid = new_provisional_id()
    with contract_store.write() as unit:
        unit.outbox.remap_id(pid, "recREALREALREAL03", table)
        assert unit.outbox.forget_table(table) == 1
    assert list(by_seq(contract_store)) == [kept] and contract_store.outbox.id_map() == {}


def test_dropping_a_create_takes_the_later_writes_to_its_record(contract_store, table):
    pid = new_provisional_id()
    before = append(contract_store, table, pid, {"x": 0}, op="create")
    after = append(contract_store, table, pid, {"x": 1})
    elsewhere = append(contract_store, table, rec(1))
    assert contract_store.outbox.with_later_writes([before]) == {before, after}
    assert contract_store.outbox.with_later_writes([elsewhere]) == {elsewhere}
    assert contract_store.outbox.first_queued_at([before, after]) == NOW


# -- concurrency -----------------------------------------------------------------------------------


def test_concurrent_claims_take_each_write_exactly_once(contract_store, table):
    """Flushers on separate connections (threads) claim at once: every write is claimed by exactly
    one of them (the claim is one serialised unit of work)."""
    seqs = {append(contract_store, table, rec(i)) for i in range(120)}
    taken: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def flusher(mine: list[int]) -> None:
        start.wait()
        try:
            while True:
                with contract_store.write() as unit:
                    ops = unit.outbox.claim(BASE, now=NOW, lease=3600, limit=7)
                if not ops:
                    return
                mine.extend(op.seq for op in ops)
        finally:
            contract_store.close()

    threads = [threading.Thread(target=flusher, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    everything = [seq for mine in taken for seq in mine]
    assert sorted(everything) == sorted(seqs)  # none lost, none twice


# -- a property: the queue never loses or duplicates a write ---------------------------------------

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 4)),
        st.tuples(st.just("claim"), st.integers(1, 4)),
        st.tuples(st.sampled_from(["ack", "retry", "dead", "requeue"]), st.integers(0, 30)),
        st.tuples(st.just("time"), st.integers(1, 100)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_random_sequences_never_lose_or_duplicate_a_write(contract_store, actions):
    """Whatever the order of appends, claims, acks, retries, dead letters and requeues: the queue
    holds exactly the writes appended and not acknowledged, in order, and no write is held by two
    live claims at once."""
    base = f"appPROP{next(_tids):010d}"
    tid = make_table(contract_store, base)
    model: dict[int, str] = {}  # seq -> state the queue must report
    held: dict[int, float] = {}  # seq -> lease end of its live claim
    now = NOW
    for action, n in actions:
        with contract_store.write() as unit:
            queue = unit.outbox
            if action == "append":
                seq = queue.append(tid=tid, base_id=base, table_ref="T", op="update", record_id=rec(n),
                                   fields={"n": n}, base=None, typecast=False, now=now)
                assert seq not in model and all(seq > s for s in model)
                model[seq] = "pending"
            elif action == "claim":
                for op in queue.claim(base, now=now, lease=50, limit=n):
                    assert held.get(op.seq, 0) < now, "claimed while another claim holds it"
                    assert model[op.seq] in ("pending", "inflight")
                    model[op.seq], held[op.seq] = "inflight", now + 50
            elif action == "time":
                now += n
            elif model:
                seq = sorted(model)[n % len(model)]
                if action == "ack" and model[seq] == "inflight":
                    queue.ack([seq])
                    del model[seq]
                    held.pop(seq, None)
                elif action == "retry" and model[seq] == "inflight":
                    queue.retry_later([seq], error={"status": 503}, next_attempt_at=now)
                    model[seq] = "pending"
                    held.pop(seq, None)
                elif action == "dead" and model[seq] != "dead":
                    queue.dead_letter([seq], error={"status": 422})
                    model[seq] = "dead"
                    held.pop(seq, None)
                elif action == "requeue" and model[seq] == "dead":
                    queue.requeue([seq])
                    model[seq] = "pending"
        listed = contract_store.outbox.list_ops(base_id=base)
        assert {op.seq: op.state for op in listed} == model
        assert [op.seq for op in listed] == sorted(model)
