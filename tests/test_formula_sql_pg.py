"""compile_where's PostgreSQL dialect on a real server: the SQL (+ residual) selects exactly the
records the evaluator matches, as tests/test_formula_sql.py shows for SQLite (same cases, same
property test). Records are stored as the PostgreSQL store keeps them
(airtable_cached/store/postgres/schema.py): exact JSON text, and a jsonb copy (NULL where jsonb
cannot hold the text)."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from test_formula_sql import FILTERS, HOSTILE, SAMPLE, _expected, _rec, pred, records_st

from airtable_cached.formula import BinaryOp, Call, Field, Literal, compile_where, matches, parse, to_formula
from airtable_cached.store.postgres.schema import as_jsonb, dumps_exact


@pytest.fixture(scope="module")
def pg(pg_server):
    with psycopg.connect(pg_server.create_database(), autocommit=True) as conn:
        conn.execute("CREATE TABLE records (position integer PRIMARY KEY, id text, created_time text,"
                     " fields_json text, fields jsonb)")
        yield conn


def _load(conn, records):
    conn.execute("TRUNCATE records")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO records VALUES (%s, %s, %s, %s, %s::jsonb)",
                        [(i, r["id"], r["createdTime"], dumps_exact(r["fields"]), as_jsonb(dumps_exact(r["fields"])))
                         for i, r in enumerate(records)])


def _select(conn, records, node):
    cf = compile_where(node, dialect="postgres")
    by_id = {r["id"]: r for r in records}
    if cf.sql is None:
        ids = [r["id"] for r in records]
    else:
        ids = [row[0] for row in conn.execute(f"SELECT id FROM records WHERE {cf.sql} ORDER BY position", cf.params)]
    if cf.residual is not None:
        ids = [i for i in ids if matches(cf.residual, by_id[i])]
    return ids, cf


@pytest.mark.parametrize("formula", FILTERS)
def test_sample_filters(pg, formula):
    _load(pg, SAMPLE)
    node = parse(formula)
    got, cf = _select(pg, SAMPLE, node)
    assert got == _expected(SAMPLE, node), (formula, cf)


def test_selective_filters_compile_to_sql():
    for f in ["AND({Website} != '', {Company Description} = '')", "NOT({Email} = '')",
              "OR(" + ", ".join(f"RECORD_ID()='rec{i:014d}'" for i in range(200)) + ")",
              '{Name}="John Doe"', "{Age}>=21", "LEN({Name})>3", "FIND('x', {Name})"]:
        assert compile_where(parse(f), dialect="postgres").sql is not None, f


def test_what_postgres_cannot_compute_exactly_is_refused():
    # Python's case mapping, JavaScript's Number(text) and the date parser are not the server's.
    for f in ["LOWER({Name})='x'", "UPPER({Name})='X'", "{D}>DATETIME_PARSE('2024-01-01')", "{Name}=5",
              "{Age}<'21'"]:
        cf = compile_where(parse(f), dialect="postgres")
        assert cf.sql is None or "atc_" not in cf.sql, f
        assert cf.residual is not None, f


def test_no_names_or_values_in_sql():
    evil = "'; DROP TABLE records; --"
    cf = compile_where(BinaryOp("=", Field(evil), Literal(evil)), dialect="postgres")
    assert evil not in cf.sql and "DROP" not in cf.sql
    assert evil in cf.params


@pytest.mark.parametrize("evil", HOSTILE + ["\ud800"])
def test_hostile_names_and_values(pg, evil):
    records = [_rec(0, {evil: evil}), _rec(1, {evil: "other"}), _rec(2, {"x": evil}), _rec(3, {}),
               _rec(4, {evil: [evil]}), _rec(5, {evil: 0})]
    _load(pg, records)
    for node in [BinaryOp("=", Field(evil), Literal(evil)), BinaryOp("!=", Field(evil), Literal(evil)),
                 BinaryOp("=", Field("x"), Literal(evil)), Call("NOT", (BinaryOp("=", Field(evil), Literal("")),)),
                 BinaryOp(">", Call("FIND", (Literal(evil), Field(evil))), Literal(0)),
                 BinaryOp("=", Call("LEN", (Field(evil),)), Literal(len(evil))),
                 BinaryOp("=", Call("RECORD_ID", ()), Literal(evil))]:
        got, cf = _select(pg, records, node)
        assert got == _expected(records, node), (node, cf)
    assert pg.execute("SELECT count(*) FROM records").fetchone()[0] == len(records)


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(records_st, pred)
def test_sql_equals_evaluator(pg, fields_list, node):
    records = [_rec(i, f) for i, f in enumerate(fields_list)]
    _load(pg, records)
    got, cf = _select(pg, records, node)
    assert got == _expected(records, node), (to_formula(node), cf.sql, cf.params)
