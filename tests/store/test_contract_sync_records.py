"""The storage contract: tables and records as the sync and the operator commands write them.
Through the protocol only."""

from __future__ import annotations

BASE = "appBASE0000000001"
TID = 1


def _store_with_table(store):
    with store.write() as unit:
        unit.replica.restore_table(TID, BASE, "tblLEADS000000001", "Leads")
        unit.replica.add_table_aliases([(BASE, "Leads", TID), (BASE, "tblLEADS000000001", TID), (BASE, "Leads", TID)])
    return store


def _airtable(rid: str, **fields) -> dict:
    return {"id": rid, "createdTime": "2026-01-01T00:00:00.000Z", "fields": fields}


def test_tables_are_found_by_any_of_their_names(contract_store):
    replica = _store_with_table(contract_store).replica
    assert replica.table_tids() == [TID] and replica.base_ids() == [BASE]
    assert replica.tids_named("Leads") == [TID] == replica.tids_named("tblLEADS000000001", BASE)
    assert replica.tids_named("Leads", "appOTHER000000001") == []
    assert replica.table(TID)["name"] == "Leads" and replica.table(99) is None
    assert [r["tid"] for r in replica.table_rows(BASE)] == [TID] == [r["tid"] for r in replica.endpoint_tables("")]


def test_a_pull_time_is_set_and_forgotten(contract_store):
    store = _store_with_table(contract_store)
    with store.write() as unit:
        unit.replica.mark_pulled(TID, 123.0)
    assert store.replica.table(TID)["pulled_at"] == 123.0
    with store.write() as unit:
        unit.replica.forget_table_pull(TID)
    row = store.replica.table(TID)
    assert row is not None and (row["pulled_at"], row["schema"]) == (None, None)


def test_changed_records_are_added_after_the_last_position_and_updated_in_place(contract_store):
    store = _store_with_table(contract_store)
    with store.write() as unit:
        last = unit.replica.merge_changed_records(TID, [_airtable("recA", Name="a"), _airtable("recB", Name="b")],
                                                  now=10.0, started_at=5.0, position=unit.replica.last_position(TID))
        assert last == 1
        assert unit.replica.merge_changed_records(TID, [_airtable("recA", Name="A")], now=20.0, started_at=15.0,
                                                  position=last) == last
    assert store.replica.remote_state(TID, "recA")[0] == {"Name": "A"}
    assert store.replica.last_position(TID) == 1
    assert store.replica.record_counts(TID) == {"visible": 2, "local_only": 0}
    assert store.replica.record_count() == 2 and store.replica.records_json_bytes() > 0


def test_a_change_older_than_a_confirmed_write_does_not_undo_it(contract_store):
    store = _store_with_table(contract_store)
    with store.write() as unit:
        unit.replica.merge_changed_records(TID, [_airtable("recA", Name="a")], now=10.0, started_at=5.0, position=-1)
        unit.replica.set_remote_fields(TID, "recA", {"Name": "confirmed"}, 30.0)
        unit.replica.merge_changed_records(TID, [_airtable("recA", Name="stale")], now=40.0, started_at=25.0, position=0)
    assert store.replica.remote_state(TID, "recA")[0] == {"Name": "confirmed"}


def test_deletions_found_by_the_feed_or_a_sweep(contract_store):
    store = _store_with_table(contract_store)
    with store.write() as unit:
        unit.replica.merge_changed_records(TID, [_airtable(f"rec{c}") for c in "ABC"], now=10.0, started_at=5.0, position=-1)
        assert unit.replica.delete_destroyed_records("", BASE, ["recA", "recZ"], 20.0) == 1
        assert unit.replica.remote_ids_missing_from(TID, ["recB"], 20.0) == ["recC"]
        unit.replica.delete_records(TID, ["recC"])
    assert store.replica.remote_ids_seen_by(TID, 10.0) == {"recB"}
    assert store.replica.remote_ids_seen_by(TID, 9.0) == set()


def test_a_local_create_is_adopted_under_airtables_id_and_links_follow(contract_store):
    store = _store_with_table(contract_store)
    with store.write() as unit:
        unit.replica.insert_local_record(TID, "recLOCAL", 5, "2026-01-01T00:00:00.000Z", {"Name": "new"})
        unit.replica.insert_local_record(TID, "recLINK", 6, "2026-01-01T00:00:00.000Z", {"Link": ["recLOCAL"]})
    assert store.replica.record_counts(TID) == {"visible": 2, "local_only": 2}
    with store.write() as unit:
        unit.replica.move_local_records_after(TID, 10)
        unit.replica.adopt_record_id(TID, "recLOCAL", "recREAL", {"Name": "new"}, "2026-01-02T00:00:00.000Z", 50.0)
        unit.replica.replace_linked_id("recLOCAL", "recREAL")
    assert store.replica.remote_state(TID, "recREAL")[0] == {"Name": "new"}
    assert store.replica.remote_state(TID, "recLOCAL") is None  # it became recREAL
    assert store.replica.last_position(TID) == 12
    with store.write() as unit:
        unit.replica.delete_records(TID, ["recREAL", "recLINK"], only_local=True)  # Airtable has recREAL: kept
    assert store.replica.record_counts(TID) == {"visible": 1, "local_only": 0}


def test_reset_drops_records_and_views(contract_store):
    store = _store_with_table(contract_store)
    with store.write() as unit:
        unit.replica.merge_changed_records(TID, [_airtable("recA"), _airtable("recB")], now=10.0, started_at=5.0, position=-1)
        unit.replica.drop_views(TID)
        unit.replica.forget_views([TID])
        assert unit.replica.delete_table_records(TID, keep_queued=True) == 2  # nothing queued
    assert store.replica.record_count() == 0


def test_garbled_records_none_in_a_sound_store(contract_store):
    store = _store_with_table(contract_store)
    with store.write() as unit:
        unit.replica.merge_changed_records(TID, [_airtable("recA", Name="a")], now=10.0, started_at=5.0, position=-1)
    assert store.replica.garbled_records() == []
