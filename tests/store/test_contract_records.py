"""The replica's tables, records, views and statistics as the engine uses them, through the contract only."""

from __future__ import annotations

import pytest

from airtable_cached.store.contract import PulledRecord, Selection

ENDPOINT = "https://api.airtable.com"


def _table(store, name="Leads"):
    with store.write() as unit:
        tid = unit.replica.add_table(ENDPOINT, "appB", None, name)
        unit.replica.add_alias(ENDPOINT, "appB", name, tid)
    return tid


def _pulled(rid, position, **fields):
    return PulledRecord(id=rid, position=position, created_time="2026-01-01T00:00:00.000Z", fields=fields, comment_count=0)


def test_a_table_is_found_by_any_alias_and_learns_its_schema(contract_store):
    tid = _table(contract_store)
    assert contract_store.replica.table_by_alias(ENDPOINT, "appB", "Leads")["tid"] == tid
    assert contract_store.replica.table_by_alias("https://other", "appB", "Leads") is None
    with contract_store.write() as unit:
        unit.replica.set_schema(tid, {"id": "tblAAAAAAAAAAAAAA", "name": "Leads", "fields": []})
    row = contract_store.replica.table_by_id_or_name(ENDPOINT, "appB", "tblAAAAAAAAAAAAAA")
    assert row["tid"] == tid and row["schema"]["fields"] == [] and row["pulled_at"] is None
    assert contract_store.replica.alias_taken(ENDPOINT, "appB", "Leads")


def test_pulled_records_are_read_in_natural_order_and_selected(contract_store):
    tid = _table(contract_store)
    with contract_store.write() as unit:
        unit.replica.upsert_pulled(tid, [_pulled("recB", 1, Name="b"), _pulled("recA", 0, Name="a")],
                                   now=10.0, now_text="t", started_at=5.0)
        unit.replica.mark_pulled(tid, 11.0)
    replica = contract_store.replica
    assert [r["id"] for r in replica.visible_records(tid)] == ["recA", "recB"]
    assert replica.count_visible(tid) == 2 and replica.last_position(tid) == 1
    assert replica.visible_records_by_id(tid, ["recB", "recX"])["recB"]["fields"] == {"Name": "b"}
    assert replica.select_record_ids(tid, Selection(), limit=1) == ["recA"]
    assert replica.remote_state(tid, "recA") == ({"Name": "a"}, 10.0)
    assert replica.field_values(tid, "Name") == {"recA": "a", "recB": "b"}
    assert replica.field_ever_seen(tid, "Name") and not replica.field_ever_seen(tid, "Other")


def test_local_writes_hide_and_rewrite_what_reads_see(contract_store):
    tid = _table(contract_store)
    with contract_store.write() as unit:
        unit.replica.insert_local_record(tid, "recLOCAL000000001", 0, "t", {"Name": "new"})
        unit.replica.write_fields(tid, "recLOCAL000000001", {"Name": "newer"}, "t2")
    assert contract_store.replica.record_copies(tid, "recLOCAL000000001") == {"remote": None, "fields": {"Name": "newer"}}
    with contract_store.write() as unit:
        assert unit.replica.hide_record(tid, "recLOCAL000000001")
        assert not unit.replica.hide_record(tid, "recLOCAL000000001")
    assert contract_store.replica.record_visibility(tid, "recLOCAL000000001") is False
    assert contract_store.replica.record_visibility(tid, "recNOPE") is None


def test_a_pull_drops_records_gone_and_keeps_local_creates_after(contract_store):
    tid = _table(contract_store)
    with contract_store.write() as unit:
        unit.replica.upsert_pulled(tid, [_pulled("recA", 0), _pulled("recB", 1)], now=1.0, now_text="t", started_at=0.0)
        unit.replica.insert_local_record(tid, "recLOCAL000000001", 2, "t", {})
        unit.replica.drop_records_not_seen(tid, {"recB"}, started_at=2.0)
        unit.replica.move_local_records_after(tid, 0)
    assert [r["id"] for r in contract_store.replica.visible_records(tid)] == ["recB", "recLOCAL000000001"]


def test_views_grants_and_statistics(contract_store):
    tid = _table(contract_store)
    with contract_store.write() as unit:
        unit.replica.upsert_pulled(tid, [_pulled("recA", 0)], now=1.0, now_text="t", started_at=0.0)
        unit.replica.replace_view(tid, "Grid", ["recA"], pulled_at=3.0)
        unit.replica.grant_token("key", "digest", at=4.0)
        unit.replica.add_statistics({(tid, "list.local"): (2, 1.5)}, [(tid, "list.local", 0.5)])
    replica = contract_store.replica
    assert replica.known_views(tid) == ["Grid"] and replica.view_pulled_at(tid, "Grid") == 3.0
    assert replica.select_record_ids(tid, Selection(view="Grid")) == ["recA"]
    assert replica.token_granted_at("key", "digest") == 4.0 and replica.token_granted_at("key", "other") is None
    assert isinstance(replica.token_salt(), bytes)
    with contract_store.write() as unit:
        unit.replica.forget_views([tid])
    assert contract_store.replica.known_views(tid) == []


@pytest.mark.parametrize("field, indexable", [("Email", True), ('Na"me', False)])
def test_field_indexes(contract_store, field, indexable):
    with contract_store.write() as unit:
        name = unit.replica.add_field_index(field)
    assert (name is not None) == indexable
    assert (name in contract_store.replica.field_indexes()) == indexable
