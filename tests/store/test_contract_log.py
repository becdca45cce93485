"""The storage contract: the request log and read statistics. Through the protocol only."""

from __future__ import annotations


def _log(store, *entries: tuple[float, str, int | None]) -> None:
    with store.write() as unit:
        for at, base_id, status in entries:
            unit.replica.log_request(at, base_id, "pull", "GET", status)


def test_requests_are_counted_per_base_and_since_a_time(contract_store):
    _log(contract_store, (10.0, "appA", 200), (20.0, "appA", 429), (30.0, "appB", None))
    replica = contract_store.replica
    assert replica.request_counts("appA", 0.0) == (2, 1)
    assert replica.request_counts("appA", 15.0) == (1, 1)
    assert replica.bases_logged_since(25.0) == {"appB"}
    assert replica.request_totals() == (3, 1)
    assert sorted(replica.requests_by_kind(), key=str) == sorted(
        [("pull", 200, 1), ("pull", 429, 1), ("pull", None, 1)], key=str)


def test_pruning_the_log_forgets_only_older_requests(contract_store):
    _log(contract_store, (10.0, "appA", 200), (20.0, "appA", 200))
    with contract_store.write() as unit:
        assert unit.replica.prune_request_log(15.0) == 1
    assert contract_store.replica.request_totals() == (1, 0)


def test_an_empty_store_has_no_statistics(contract_store):
    replica = contract_store.replica
    assert replica.read_counts() == [] and replica.latency_samples() == {}
    assert replica.read_count(["list.local"]) == 0
    with contract_store.write() as unit:
        assert unit.replica.trim_latency_samples(10) == 0
        assert unit.replica.prune_conflicts(1e12) == 0
