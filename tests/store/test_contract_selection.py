"""The storage contract: selecting records by a compiled formula, in the store's own dialect
(``Replica.dialect``), and full-text search. Through the protocol (and the formula compiler) only.

The SQL a store runs may select more than the formula does (PostgreSQL leaves array cells and
values ``jsonb`` cannot hold to the evaluator); with the compiler's residual applied, every store
gives exactly the evaluator's answer, in natural order."""

from __future__ import annotations

import pytest

from airtable_cached.formula import compile_where, matches, parse
from airtable_cached.store.contract import PulledRecord, QueryTooComplex, Selection

ENDPOINT = "https://api.airtable.com"
RECORDS = [
    ("recA", {"Name": "Café crème", "Score": 3, "Tags": ["red", "blue"], "Done": True}),
    ("recB", {"Name": "cafeteria", "Score": 2.5, "Tags": ["blue"]}),
    ("recC", {"Name": "Other\u0000thing", "Score": 10, "Tags": []}),  # jsonb cannot hold it
    ("recD", {"Name": "Zed", "Email": "zed@example.com"}),
    ("recE", {}),
]
FORMULAS = [
    "{Name} = 'Zed'",
    "{Score} > 2.5",
    "AND({Score} >= 2, NOT({Done}))",
    "FIND('blue', ARRAYJOIN({Tags}))",
    "{Tags} = 'red, blue'",
    "OR({Name} = '', {Score} < 3)",
    "SEARCH('thing', {Name})",
    "RECORD_ID() = 'recB'",
    "LEN({Name}) > 4",
]


@pytest.fixture
def table(contract_store):
    with contract_store.write() as unit:
        tid = unit.replica.add_table(ENDPOINT, "appB", None, "Leads")
        unit.replica.upsert_pulled(tid, [
            PulledRecord(id=rid, position=n, created_time="2026-01-01T00:00:00.000Z", fields=fields, comment_count=0)
            for n, (rid, fields) in enumerate(RECORDS)], now=1.0, now_text="2026-01-01T00:00:01.000Z", started_at=0.0)
    return tid


def _evaluated(formula: str) -> list[str]:
    node = parse(formula)
    return [rid for rid, fields in RECORDS
            if matches(node, {"id": rid, "createdTime": "2026-01-01T00:00:00.000Z", "fields": fields})]


@pytest.mark.parametrize("formula", FORMULAS)
def test_a_compiled_formula_and_its_residual_select_what_the_evaluator_does(contract_store, table, formula):
    replica = contract_store.replica
    compiled = compile_where(parse(formula), fields_column="r.fields", id_column="r.id",
                             created_column="r.created_time", dialect=replica.dialect)
    selection = Selection(compiled.sql or "", compiled.params)
    records = replica.select_records(table, selection)
    if compiled.residual is not None:
        records = [r for r in records if matches(compiled.residual, r)]
    assert [r["id"] for r in records] == _evaluated(formula)
    assert replica.select_record_ids(table, selection, limit=1) == [r["id"] for r in replica.select_records(table, selection)][:1]


def test_a_condition_too_big_for_the_store_is_refused_as_too_complex(contract_store, table):
    mark = "?" if contract_store.replica.dialect == "sqlite" else "%s"
    ids = [f"rec{n:014d}" for n in range(70_000)]
    too_many = Selection(" OR ".join([f"r.id = {mark}"] * len(ids)), ids)
    with pytest.raises(QueryTooComplex):
        contract_store.replica.select_records(table, too_many)


def test_a_refused_selection_leaves_the_write_it_ran_in_usable(contract_store, table):
    too_deep = Selection("(" * 20_000 + "r.id = 'recA'" + ")" * 20_000)
    with contract_store.write() as unit:
        with pytest.raises(QueryTooComplex):
            unit.replica.select_record_ids(table, too_deep)
        assert unit.replica.hide_record(table, "recA")
    assert contract_store.replica.record_visibility(table, "recA") is False


def test_search_folds_case_and_accents_and_matches_word_prefixes(contract_store, table):
    replica = contract_store.replica
    assert {r["id"] for r in replica.search_records(table, ["cafe"])} == {"recA", "recB"}
    assert [r["id"] for r in replica.search_records(table, ["CRÈME"])] == ["recA"]
    assert [r["id"] for r in replica.search_records(table, ["caf", "cr"])] == ["recA"]
    assert [r["id"] for r in replica.search_records(table, ["example"])] == ["recD"]  # zed@example.com: three words
    assert replica.search_records(table, ["nothing"]) == []
    with contract_store.write() as unit:
        unit.replica.hide_record(table, "recB")
    assert [r["id"] for r in contract_store.replica.search_records(table, ["cafe"])] == ["recA"]


def test_an_equality_an_index_answers_selects_the_same_records(contract_store, table):
    replica = contract_store.replica
    with contract_store.write() as unit:
        index = unit.replica.add_field_index("Email")
    assert index in contract_store.replica.field_indexes()
    compiled = compile_where(parse("{Email} = 'zed@example.com'"), fields_column="r.fields", id_column="r.id",
                             created_column="r.created_time", dialect=replica.dialect)
    records = replica.select_records(table, Selection(compiled.sql or "", compiled.params, indexed=True))
    assert [r["id"] for r in records if compiled.residual is None or matches(compiled.residual, r)] == ["recD"]
