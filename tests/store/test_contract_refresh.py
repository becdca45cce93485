"""The storage contract: refresh state, change feeds (webhooks). Through the protocol only."""

from __future__ import annotations

BASE = "appBASE0000000001"


def _table(store, tid: int = 1, base_id: str = BASE) -> int:
    with store.write() as unit:
        unit.replica.restore_table(tid, base_id, f"tbl{tid:014d}", f"Table {tid}")
    return tid


def test_a_table_without_refreshes_has_an_empty_state(contract_store):
    tid = _table(contract_store)
    assert contract_store.replica.refresh_state(tid) == {}
    assert contract_store.replica.refresh_counts() == []


def test_a_full_refresh_records_its_watermark_time_source_and_cost(contract_store):
    tid = _table(contract_store)
    with contract_store.write() as unit:
        unit.replica.record_full_refresh(tid, watermark=100.0, at=200.0, hook_id="achHOOK", source="feed", requests=3)
        unit.replica.count_refresh_requests(tid, "full", 2)
    state = contract_store.replica.refresh_state(tid)
    assert (state["watermark"], state["last_full"], state["last_sweep"]) == (100.0, 200.0, 200.0)
    assert (state["hook_id"], state["source"], state["full_pulls"], state["full_requests"]) == ("achHOOK", "feed", 1, 5)


def test_an_incremental_refresh_keeps_the_watermark_when_airtable_gave_none(contract_store):
    tid = _table(contract_store)
    with contract_store.write() as unit:
        unit.replica.record_full_refresh(tid, watermark=100.0, at=200.0, hook_id=None, source="sweep", requests=1)
        unit.replica.record_incremental_refresh(tid, watermark=None, at=300.0, swept=False, source="sweep", requests=2)
    state = contract_store.replica.refresh_state(tid)
    assert (state["watermark"], state["last_incremental"], state["last_sweep"]) == (100.0, 300.0, 200.0)
    with contract_store.write() as unit:
        unit.replica.record_incremental_refresh(tid, watermark=250.0, at=400.0, swept=True, source="sweep", requests=1)
    state = contract_store.replica.refresh_state(tid)
    assert (state["watermark"], state["last_sweep"], state["incremental_pulls"], state["incremental_requests"]) == (
        250.0, 400.0, 2, 3)


def test_stale_reads_served_are_counted_per_table(contract_store):
    tid = _table(contract_store)
    with contract_store.write() as unit:
        unit.replica.count_stale_served(tid)
        unit.replica.count_stale_served(tid)
    [row] = contract_store.replica.refresh_counts()
    assert (row["base_id"], row["label"], row["stale_served"]) == (BASE, "Table 1", 2)


def test_forgetting_feed_coverage_touches_only_that_base(contract_store):
    mine, other = _table(contract_store, 1), _table(contract_store, 2, "appOTHER000000001")
    with contract_store.write() as unit:
        for tid in (mine, other):
            unit.replica.record_full_refresh(tid, watermark=1.0, at=1.0, hook_id="achHOOK", source="feed", requests=1)
        unit.replica.forget_feed_coverage("", BASE)
    assert contract_store.replica.refresh_state(mine)["hook_id"] is None
    assert contract_store.replica.refresh_state(other)["hook_id"] == "achHOOK"


def test_a_webhook_is_kept_per_endpoint_and_base(contract_store):
    replica = contract_store.replica
    assert replica.webhook("", BASE) is None and replica.webhooks() == []
    with contract_store.write() as unit:
        unit.replica.save_webhook("", BASE, "achONE", cursor=1, expires_at=500.0, now=10.0, denied_why=None)
        unit.replica.save_webhook("https://proxy", BASE, "achTWO", cursor=1, expires_at=None, now=10.0, denied_why=None)
    assert contract_store.replica.webhook("", BASE)["webhook_id"] == "achONE"
    assert contract_store.replica.webhook_ids("https://proxy") == {BASE: "achTWO"}
    assert contract_store.replica.usable_webhook_id("", BASE) == "achONE"
    assert len(contract_store.replica.webhooks()) == 2


def test_the_cursor_only_moves_forward_and_the_expiry_is_kept_unless_given(contract_store):
    with contract_store.write() as unit:
        unit.replica.save_webhook("", BASE, "achONE", cursor=1, expires_at=500.0, now=10.0, denied_why=None)
        unit.replica.advance_webhook("", BASE, "achONE", 7, 20.0)
        unit.replica.advance_webhook("", BASE, "achONE", 3, 30.0)
    hook = contract_store.replica.webhook("", BASE)
    assert (hook["cursor"], hook["read_at"], hook["expires_at"]) == (7, 30.0, 500.0)
    with contract_store.write() as unit:
        unit.replica.save_webhook("", BASE, "achONE", cursor=7, expires_at=None, now=40.0, denied_why=None)
        unit.replica.set_webhook_expiry("", BASE, 900.0)
    hook = contract_store.replica.webhook("", BASE)
    assert (hook["created_at"], hook["expires_at"]) == (10.0, 900.0)  # the same webhook: made at 10


def test_a_refused_webhook_is_not_usable(contract_store):
    with contract_store.write() as unit:
        unit.replica.save_webhook("", BASE, None, cursor=1, expires_at=None, now=10.0, denied_why="no scope")
    hook = contract_store.replica.webhook("", BASE)
    assert (hook["denied_at"], hook["denied_why"]) == (10.0, "no scope")
    assert contract_store.replica.usable_webhook_id("", BASE) is None


def test_a_deleted_webhook_is_forgotten(contract_store):
    with contract_store.write() as unit:
        unit.replica.save_webhook("", BASE, "achONE", cursor=1, expires_at=None, now=10.0, denied_why=None)
        unit.replica.delete_webhook("", BASE, "achOTHER")
    assert contract_store.replica.webhook("", BASE) is not None
    with contract_store.write() as unit:
        unit.replica.delete_webhook("", BASE, "achONE")
    assert contract_store.replica.webhook("", BASE) is None
