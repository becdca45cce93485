"""compile_where: the SQL (+ residual) selects exactly the records the evaluator matches."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airtable_cached.formula import (
    BinaryOp,
    Call,
    Field,
    Literal,
    compile_where,
    matches,
    parse,
    register_sql_functions,
    to_formula,
)


def _db(records):
    conn = sqlite3.connect(":memory:")
    register_sql_functions(conn)
    conn.execute("CREATE TABLE records (id TEXT PRIMARY KEY, created_time TEXT, fields TEXT)")
    conn.executemany("INSERT INTO records VALUES (?, ?, ?)",
                     [(r["id"], r["createdTime"], json.dumps(r["fields"])) for r in records])
    return conn


def _select(conn, records, node):
    cf = compile_where(node)
    by_id = {r["id"]: r for r in records}
    if cf.sql is None:
        ids = [r["id"] for r in records]
    else:
        ids = [row[0] for row in conn.execute(f"SELECT id FROM records WHERE {cf.sql} ORDER BY rowid", cf.params)]
    if cf.residual is not None:
        ids = [i for i in ids if matches(cf.residual, by_id[i])]
    return ids, cf


def _expected(records, node):
    return [r["id"] for r in records if matches(node, r)]


def _rec(i, fields, created="2024-01-02T03:04:05.000Z"):
    return {"id": f"rec{i:014d}", "createdTime": created, "fields": fields}


SAMPLE = [
    _rec(0, {}),
    _rec(1, {"Name": "Jane", "Email": "jane@x.com", "Age": 30, "Done": True, "Tags": ["a", "b"]}),
    _rec(2, {"Name": "jane", "Email": "", "Age": 0, "Website": "https://x", "Tags": []}),
    _rec(3, {"Name": "John Doe", "Age": 21.5, "Website": "", "Company Description": "desc",
             "Full Name": "John Doe", "Company": "ACME"}),
    _rec(4, {"Name": "Zoë", "Age": "21", "Website": "w", "Full Name": "Z", "Date": "2024-03-01"}),
    _rec(5, {"Name": "a\x00b", "Age": -1, "Date": "2024-03-01T10:00:00.000Z", "Collab": {"name": "Jane"}}),
    _rec(6, {"Name": 5, "Age": None, "Date": "garbage", "Done": False, "Tags": ["Jane"]}),
    _rec(7, {"Name": ["Jane"], "Café": "x", 'q"uote': "y", "b\\s": 3}),
]

FILTERS = [
    '{Name}="Jane"', "{Name}='John Doe'", "{Name}!='Jane'", "{Name}=''", "{Name}=BLANK()", "{Name}",
    "NOT({Name}='')", "{Name}>'J'", "{Name}<='jane'", "{Age}>=21", "{Age}=0", "{Age}=''", "{Age}<'21'",
    "{Age}='abc'", "{Age}!='abc'", "{Age}", "NOT({Age})", "{Done}", "{Done}=TRUE()", "{Done}=FALSE()",
    "{Done}=1", "AND({Website} != '', {Company Description} = '')", "NOT({Email} = '')",
    "AND(NOT({Full Name} = ''), OR({Company} = '', {Website} = ''))", "{Website} = 'https://x'",
    "OR(RECORD_ID()='rec00000000000001', RECORD_ID()='rec00000000000003')", "RECORD_ID()='rec00000000000002'",
    "OR(RECORD_ID()='rec00000000000001')", "LEN({Name})=4", "LEN({Name})>3", "FIND('an', {Name})",
    "FIND('an', {Name})>0", "SEARCH('Doe', {Name})", "SEARCH('x', {Name})=0", "LOWER({Name})='jane'",
    "UPPER({Name})='ZOË'", "{Name}&''=''", "{Tags}='a, b'", "{Tags}", "{Tags}='Jane'", "{Collab}='Jane'",
    "{Date}>DATETIME_PARSE('2024-02-01')", "{Date}=DATETIME_PARSE('2024-03-01')",
    "IS_AFTER({Date}, DATETIME_PARSE('2024-01-01'))", "{Date}!=DATETIME_PARSE('2024-03-01')",
    "{Café}='x'", "{q\"uote}='y'", "{b\\\\s}=3", "AND({Age}>=21, {Age}*2>10)", "OR({Age}>=21, {Age}*2>10)",
    "AND({Name}='Jane', RECORD_ID()!='')", "TRUE()", "FALSE()", "1=1", "NOT(ERROR())", "{Missing}=''",
    "{Name}='Jane' & ''", "-{Age}<0", "{Name}=5", "{Name}='5'", "{Name}='5.0'",
]


@pytest.mark.parametrize("formula", FILTERS)
def test_sample_filters(formula):
    conn = _db(SAMPLE)
    node = parse(formula)
    got, cf = _select(conn, SAMPLE, node)
    assert got == _expected(SAMPLE, node), (formula, cf)


def test_lead_filters_compile_fully():
    for f in ["AND({Website} != '', {Company Description} = '')", "NOT({Email} = '')",
              "AND(NOT({Full Name} = ''), OR({Company} = '', {Website} = ''))",
              "{LinkedIn URL} = 'https://www.linkedin.com/in/x'",
              "OR(" + ", ".join(f"RECORD_ID()='rec{i:014d}'" for i in range(200)) + ")",
              '{Name}="John Doe"', "{Age}>=21", "LOWER({Name})='x'", "{D}>DATETIME_PARSE('2024-01-01')"]:
        cf = compile_where(parse(f))
        assert cf.sql is not None and cf.residual is None, f


def test_split_and_residual():
    cf = compile_where(parse("AND({a}='x', {b}*2>3, {c}=1)"))
    assert cf.sql is not None
    assert cf.residual == parse("{b}*2>3")
    cf = compile_where(parse("OR({a}='x', {b}*2>3)"))
    assert cf.sql is None and cf.residual == parse("OR({a}='x', {b}*2>3)")
    cf = compile_where(parse("NOT({b}*2>3)"))
    assert cf.sql is None


def test_no_names_or_values_in_sql():
    evil = "'; DROP TABLE records; --"
    node = BinaryOp("=", Field(evil), Literal(evil))
    cf = compile_where(node)
    assert evil not in cf.sql and "DROP" not in cf.sql
    assert evil in cf.params


def test_field_ids_are_left_to_evaluator():
    cf = compile_where(parse("{fldAAAAAAAAAAAAAA}='x'"), field_ids={"fldAAAAAAAAAAAAAA": "Name"})
    assert cf.sql is None


HOSTILE = ["'; DROP TABLE records; --", 'a"b', "a\\b", "a}b", "x\x00y", "\x00", "SELECT * FROM records",
           "$.x", "a.b[0]", "é😀", "", " ", "\n", "0", "1e3", "Robert'); DROP TABLE records;--"]


@pytest.mark.parametrize("evil", HOSTILE)
def test_hostile_names_and_values(evil):
    records = [_rec(0, {evil: evil}), _rec(1, {evil: "other"}), _rec(2, {"x": evil}), _rec(3, {}),
               _rec(4, {evil: [evil]}), _rec(5, {evil: 0})]
    conn = _db(records)
    for node in [BinaryOp("=", Field(evil), Literal(evil)), BinaryOp("!=", Field(evil), Literal(evil)),
                 BinaryOp("=", Field("x"), Literal(evil)), Call("NOT", (BinaryOp("=", Field(evil), Literal("")),)),
                 BinaryOp(">", Call("FIND", (Literal(evil), Field(evil))), Literal(0)),
                 BinaryOp("=", Call("LEN", (Field(evil),)), Literal(len(evil))),
                 BinaryOp("=", Call("RECORD_ID", ()), Literal(evil))]:
        got, cf = _select(conn, records, node)
        assert got == _expected(records, node), (node, cf)
        # parse(to_formula()) of hostile nodes is stable too
        if evil:
            assert parse(to_formula(node)) == node
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == len(records)


# ---------------------------------------------------------------- property test
NAMES = ["Name", "Age", "Tags", "Café", 'q"x', "a.b"]
text_values = st.sampled_from(["", "Jane", "jane", "J", "0", "5", "5.0", " 7 ", "abc", "Zoë", "a\x00b",
                               "2024-03-01", "2024-03-01T10:00:00.000Z", "2024-02-30", "Jane, Doe"])
cell = st.one_of(text_values, st.integers(-3, 30), st.sampled_from([0.5, -2.25, 1e20, 21.0]),
                 st.just(True), st.just(False), st.none(),
                 st.lists(st.one_of(text_values, st.integers(0, 5)), max_size=3),
                 st.fixed_dictionaries({"name": text_values}))
records_st = st.lists(st.dictionaries(st.sampled_from(NAMES), cell, max_size=4), min_size=1, max_size=8)

const = st.one_of(
    text_values.map(Literal), st.integers(-3, 30).map(Literal), st.sampled_from([0.5, 21.0]).map(Literal),
    st.sampled_from([Call("TRUE"), Call("FALSE"), Call("BLANK"),
                     Call("DATETIME_PARSE", (Literal("2024-03-01"),)),
                     Call("DATETIME_PARSE", (Literal("2024-01-01T00:00:00Z"),))]))
field_st = st.sampled_from(NAMES).map(Field)


@st.composite
def value_expr(draw):
    f = draw(field_st)
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return f
    if kind == 1:
        return Call("LEN", (f,))
    if kind == 2:
        return Call(draw(st.sampled_from(["LOWER", "UPPER"])), (f,))
    if kind == 3:
        return Call(draw(st.sampled_from(["FIND", "SEARCH"])), (draw(text_values.map(Literal)), f))
    if kind == 4:
        return BinaryOp("&", f, draw(text_values.map(Literal)))
    return f


@st.composite
def leaf(draw):
    v = draw(value_expr())
    if draw(st.booleans()):
        return v
    op = draw(st.sampled_from(["=", "!=", "<", ">", "<=", ">="]))
    c = draw(const)
    if draw(st.booleans()):
        return BinaryOp(op, v, c)
    return BinaryOp(op, c, v)


rid = st.integers(0, 9).map(lambda i: BinaryOp("=", Call("RECORD_ID"), Literal(f"rec{i:014d}")))
pred = st.recursive(st.one_of(leaf(), rid),
                    lambda ch: st.one_of(st.lists(ch, min_size=1, max_size=3).map(lambda a: Call("AND", tuple(a))),
                                         st.lists(ch, min_size=1, max_size=3).map(lambda a: Call("OR", tuple(a))),
                                         ch.map(lambda a: Call("NOT", (a,)))),
                    max_leaves=6)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(records_st, pred)
def test_sql_equals_evaluator(fields_list, node):
    records = [_rec(i, f) for i, f in enumerate(fields_list)]
    conn = _db(records)
    got, cf = _select(conn, records, node)
    assert got == _expected(records, node), (to_formula(node), cf.sql, cf.params)
    # most of what is generated here compiles to SQL; the rest must still agree via the residual


def test_the_sql_match_function_leaves_out_only_rows_whose_fields_are_not_json(caplog):
    conn = _db([{"id": "recA", "createdTime": None, "fields": {"Name": "Ada"}}])
    conn.execute("INSERT INTO records VALUES ('recB', NULL, '{not json')")
    sql = "SELECT id FROM records WHERE atc_match(?, fields, id, created_time) ORDER BY id"
    with caplog.at_level("WARNING", logger="airtable_cached.formula.sql"):
        assert [r[0] for r in conn.execute(sql, ("{Name} != 'x'",))] == ["recA"]
    assert "recB has unreadable fields" in caplog.text
    with pytest.raises(sqlite3.OperationalError, match="user-defined function raised exception"):
        conn.execute(sql, ("AND({Name} = 'Ada'",)).fetchall()  # a formula that cannot parse: an error, not "no match"
