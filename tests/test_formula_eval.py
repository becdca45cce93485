"""Evaluator conformance table: (formula, fields, expected)."""

from __future__ import annotations

import re
import time
import urllib.parse
from datetime import UTC, datetime

import pytest

from airtable_cached.formula import ErrorValue, compile_python, evaluate, matches, parse
from airtable_cached.formula.functions import ARITY
from tests.conftest import recorded

NOW = datetime(2024, 6, 15, 12, 0, 0, tzinfo=UTC)
ERR = ErrorValue("#ERROR!")
BASE = {"Name": "Jane", "Age": 30, "Zero": 0, "Done": True, "Tags": ["a", "b"], "Nums": [1, 2, 3],
        "D": "2024-03-01", "DT": "2024-03-01T10:30:45.123Z", "Text5": "5", "Pad": "  hi  ",
        "Collab": {"id": "usr1", "email": "j@x", "name": "Jane Doe"}, "F": 2.5}


def rec(fields=None, **extra):
    r = {"id": "recAAAAAAAAAAAAAA", "createdTime": "2024-01-02T03:04:05.000Z",
         "fields": BASE if fields is None else fields}
    r.update(extra)
    return r


CASES = [
    # operators
    ("1+2", 3), ("5-7", -2), ("2*3.5", 7), ("7/2", 3.5), ("6/3", 2), ("1/0", ERR), ("-{Age}", -30),
    ("{Age}+{Missing}", 30), ("'3'+1", 4), ("'x'+1", ERR), ("{Name}&'!'", "Jane!"), ("{Missing}&''", ""),
    ("{Age}&''", "30"), ("{F}&''", "2.5"), ("(1/4)*4&''", "1"), ("{Done}&''", "1"), ("{Tags}&''", "a, b"),
    ("{Nums}&''", "1, 2, 3"), ("{Collab}&''", "Jane Doe"), ("2+3*4", 14), ("(2+3)*4", 20), ("1+2&3", "33"),
    ("{Name}='Jane'", True), ("{Name}='jane'", False), ("{Name}!='jane'", True), ("{Missing}=''", True),
    ("{Missing}=BLANK()", True), ("{Missing}=0", True), ("{Zero}=''", True), ("{Zero}=BLANK()", True),
    ("{Zero}&''=''", False), ("{Age}=30", True), ("{Age}='30'", True), ("{Age}>'4'", True),
    ("{Age}>=30", True), ("{Age}<30", False), ("{Age}<=29", False), ("'b'>'a'", True), ("'B'<'a'", True),
    ("{Done}=TRUE()", True), ("{Done}=1", True), ("{Missing}=FALSE()", True), ("{Tags}='a, b'", True),
    ("{D}=DATETIME_PARSE('2024-03-01')", True), ("{DT}>DATETIME_PARSE('2024-03-01')", True),
    ("{DT}<DATETIME_PARSE('2024-03-01T10:30:45.124Z')", True), ("{D}='2024-03-01'", True),
    ("DATETIME_PARSE('2024-03-01')='2024-03-01T00:00:00Z'", True), ("{Name}=DATETIME_PARSE('2024-03-01')", False),
    ("1/0=1", ERR), ("{Age}=ERROR()", ERR),
    # logical
    ("AND(1, 'x', {Done})", True), ("AND(1, 0)", False), ("AND(1, 1/0)", ERR), ("OR(0, '', {Age})", True),
    ("OR(0, {Missing})", False), ("NOT({Missing})", True), ("NOT({Name})", False), ("XOR(1, 1, 1)", True),
    ("XOR(1, 1)", False), ("IF({Done}, 'y', 'n')", "y"), ("IF({Missing}, 'y')", None),
    ("IF(1, 2, 1/0)", 2), ("IF(1/0, 1, 2)", ERR), ("SWITCH({Name}, 'Bob', 1, 'Jane', 2, 3)", 2),
    ("SWITCH({Name}, 'Bob', 1, 3)", 3), ("SWITCH({Name}, 'Bob', 1)", None), ("BLANK()", None), ("ERROR()", ERR),
    ("ISERROR(1/0)", True), ("ISERROR(1)", False), ("TRUE()", True), ("FALSE", False), ("TRUE()+1", 2),
    # text
    ("CONCATENATE({Name}, ' ', {Age}, {Missing})", "Jane 30"), ("FIND('n', {Name})", 3), ("FIND('z', {Name})", 0),
    ("FIND('a', 'banana', 3)", 4), ("SEARCH('n', {Name})", 3), ("SEARCH('z', {Name})", None),
    ("LEFT({Name}, 2)", "Ja"), ("RIGHT({Name}, 2)", "ne"), ("RIGHT({Name}, 0)", ""), ("MID({Name}, 2, 2)", "an"),
    ("LEN({Name})", 4), ("LEN({Missing})", 0), ("LEN({Tags})", 4), ("LOWER('ÀB')", "àb"), ("UPPER('zoë')", "ZOË"),
    ("TRIM({Pad})", "hi"), ("REPLACE('abcdef', 2, 3, 'X')", "aXef"), ("SUBSTITUTE('a-b-c', '-', '+')", "a+b+c"),
    ("SUBSTITUTE('a-b-c', '-', '+', 2)", "a-b+c"), ("REPT('ab', 3)", "ababab"), ("T({Name})", "Jane"),
    ("T({Age})", None), ("VALUE('1,234.5')", 1234.5), ("VALUE('x')", ERR), ("VALUE('50%')", 0.5),
    ("ENCODE_URL_COMPONENT('a b&c/é')", "a%20b%26c%2F%C3%A9"), ("REGEX_MATCH({Name}, '^J.n')", True),
    ("REGEX_EXTRACT('abc123', '[0-9]+')", "123"), ("REGEX_EXTRACT('abc', '[0-9]+')", ERR),
    ("REGEX_REPLACE('a1b2', '[0-9]', '#')", "a#b#"), ("REGEX_MATCH('a', '(')", ERR),
    # numeric
    ("ABS(-2)", 2), ("AVERAGE(1, 2, {Nums})", 1.8), ("CEILING(2.1)", 3), ("CEILING(7, 5)", 10), ("FLOOR(2.9)", 2),
    ("FLOOR(7, 5)", 5), ("COUNT(1, 'a', {Nums}, {Missing})", 4), ("COUNTA(1, 'a', '', {Missing})", 2),
    ("COUNTALL(1, {Missing}, {Tags})", 4), ("EVEN(1.5)", 2), ("EVEN(-1)", -2), ("ODD(2)", 3), ("ODD(-2)", -3),
    ("EXP(0)", 1.0), ("INT(-2.5)", -3), ("LOG(100)", 2.0), ("LOG(8, 2)", 3.0), ("MAX(1, {Nums}, -1)", 3),
    ("MIN(4, {Nums})", 1), ("MOD(7, 3)", 1), ("MOD(-7, 3)", 2), ("MOD(1, 0)", ERR), ("POWER(2, 10)", 1024),
    ("ROUND(2.5, 0)", 3), ("ROUND(-2.5, 0)", -2), ("ROUND(1.005, 2)", 1.01), ("ROUND(1234, -2)", 1200),
    ("ROUNDDOWN(-2.7, 0)", -2), ("ROUNDUP(-2.1, 0)", -3), ("ROUNDUP(2.01, 1)", 2.1), ("SQRT(16)", 4.0),
    ("SQRT(-1)", ERR), ("SUM(1, {Nums}, '2')", 9), ("SUM({Missing})", 0),
    # date/time
    ("CREATED_TIME()", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("LAST_MODIFIED_TIME()", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)), ("NOW()", NOW),
    ("TODAY()", datetime(2024, 6, 15, tzinfo=UTC)),
    ("DATEADD({D}, 1, 'months')", datetime(2024, 4, 1, tzinfo=UTC)),
    ("DATEADD('2024-01-31', 1, 'month')", datetime(2024, 2, 29, tzinfo=UTC)),
    ("DATEADD({D}, 2, 'days')", datetime(2024, 3, 3, tzinfo=UTC)),
    ("DATETIME_DIFF('2024-03-10', {D}, 'days')", 9), ("DATETIME_DIFF({D}, '2024-03-10', 'days')", -9),
    ("DATETIME_DIFF('2024-03-01T01:30:00Z', {D}, 'hours')", 1), ("DATETIME_DIFF('2025-03-01', {D}, 'years')", 1),
    ("DATETIME_DIFF('2024-05-15', {D}, 'months')", 2), ("DATETIME_FORMAT({DT}, 'YYYY-MM-DD HH:mm')", "2024-03-01 10:30"),
    ("DATETIME_FORMAT({D}, 'MMMM Do, YYYY [at] h A')", "March 1st, 2024 at 12 AM"),
    ("DATETIME_FORMAT({DT})", "2024-03-01T10:30:45.123Z"), ("DATETIME_FORMAT({Missing})", ERR),
    ("DATETIME_PARSE('01/02/2024', 'DD/MM/YYYY')", datetime(2024, 2, 1, tzinfo=UTC)),
    ("DATETIME_PARSE('x')", ERR), ("DATESTR({DT})", "2024-03-01"), ("TIMESTR({DT})", "10:30:45"),
    ("DAY({D})", 1), ("MONTH({D})", 3), ("YEAR({D})", 2024), ("HOUR({DT})", 10), ("MINUTE({DT})", 30),
    ("SECOND({DT})", 45), ("WEEKDAY({D})", 5), ("WEEKDAY({D}, 'Monday')", 4), ("WEEKNUM('2024-01-07')", 2),
    ("WEEKNUM('2024-01-07', 'Monday')", 1), ("IS_AFTER({DT}, {D})", True), ("IS_BEFORE({DT}, {D})", False),
    ("IS_SAME({DT}, {D}, 'day')", True), ("IS_SAME({DT}, {D})", False), ("IS_SAME({DT}, '2024-03-31', 'month')", True),
    ("TONOW('2024-06-10')", 5), ("FROMNOW('2024-06-20')", 4),
    ("HOUR(SET_TIMEZONE({DT}, 'America/New_York'))", 5), ("DATESTR(SET_LOCALE({D}, 'fr'))", "2024-03-01"),
    ("WORKDAY('2024-03-01', 1)", datetime(2024, 3, 4, tzinfo=UTC)),
    ("WORKDAY('2024-03-01', 1, '2024-03-04')", datetime(2024, 3, 5, tzinfo=UTC)),
    ("WORKDAY_DIFF('2024-03-01', '2024-03-08')", 6), ("WORKDAY_DIFF('2024-03-08', '2024-03-01')", -6),
    ("DAY({Missing})", ERR),
    # record / array
    ("RECORD_ID()", "recAAAAAAAAAAAAAA"), ("ARRAYJOIN({Tags}, '|')", "a|b"), ("ARRAYJOIN({Tags})", "a, b"),
    ("ARRAYUNIQUE({Tags})", ["a", "b"]), ("ARRAYCOMPACT({Nums})", [1, 2, 3]), ("ARRAYFLATTEN({Tags})", ["a", "b"]),
    ("ARRAYSLICE({Nums}, 2)", [2, 3]), ("ARRAYSLICE({Nums}, 1, 2)", [1, 2]), ("ARRAYSLICE({Nums}, -2)", [2, 3]),
]


def test_every_function_has_a_case():
    used = set()
    for f, _ in CASES:
        used |= {m.upper() for m in re.findall(r"([A-Za-z_]+)\(", f)}
    assert set(ARITY) - used - {"TRUE", "FALSE"} == set()


@pytest.mark.parametrize("formula, expected", CASES)
def test_eval(formula, expected):
    got = evaluate(parse(formula), rec(), now=NOW)
    if isinstance(expected, float) and isinstance(got, float):
        assert got == pytest.approx(expected)
    else:
        assert got == expected and type(got) is not str or got == expected, (got, expected)
        assert got == expected


def test_eval_extra_records():
    r = rec({"X": [1, 2]}, lastModifiedTime="2024-05-05T00:00:00.000Z")
    assert evaluate("LAST_MODIFIED_TIME()", r) == datetime(2024, 5, 5, tzinfo=UTC)
    assert evaluate("{fldX}", r, field_ids={"fldX": "X"}) == [1, 2]
    assert evaluate("{X}", rec({"fldX": 3}), field_ids={"fldX": "X"}) == 3
    assert evaluate("NOW()", rec()).tzinfo is not None


@pytest.mark.parametrize("formula, fields, included", [
    ("0", {}, False), ("''", {}, False), ("FALSE()", {}, False), ("{A}", {"A": []}, False), ("1/0", {}, False),
    ("{A}", {}, False), ("{A}", {"A": "x"}, True), ("{A}", {"A": 0.0}, False), ("{A}", {"A": ["x"]}, True),
    ("DATETIME_PARSE('2024-01-01')", {}, True), ("VALUE('x')", {}, False),
    # real filters
    ("AND({Website} != '', {Company Description} = '')", {"Website": "w"}, True),
    ("AND({Website} != '', {Company Description} = '')", {"Website": "w", "Company Description": "d"}, False),
    ("NOT({Email} = '')", {"Email": "a@b"}, True), ("NOT({Email} = '')", {}, False),
    ("AND(NOT({Full Name} = ''), OR({Company} = '', {Website} = ''))", {"Full Name": "A", "Company": "C"}, True),
    ("AND(NOT({Full Name} = ''), OR({Company} = '', {Website} = ''))",
     {"Full Name": "A", "Company": "C", "Website": "w"}, False),
    ("{LinkedIn URL} = 'https://www.linkedin.com/in/x'", {"LinkedIn URL": "https://www.linkedin.com/in/x"}, True),
    ("OR(RECORD_ID()='recAAAAAAAAAAAAAA', RECORD_ID()='recB')", {}, True),
    ("OR(RECORD_ID()='recC', RECORD_ID()='recB')", {}, False),
])
def test_matches(formula, fields, included):
    assert matches(parse(formula), rec(fields)) is included


def test_grouparoo_traffic_filters():
    formulas = set()
    traffic = recorded("grouparoo")
    for path in sorted(traffic.glob("*.yaml")):
        for m in re.finditer(r"filterByFormula=([^&\s'\"]+)", open(path, encoding="utf-8").read()):
            formulas.add(urllib.parse.unquote_plus(m.group(1)))
    assert formulas, "the grouparoo recordings hold filterByFormula queries"
    for f in formulas:
        node = parse(f)
        name = re.match(r'\{Name\}="(.*)"\Z', f).group(1)
        assert matches(node, rec({"Name": name}))
        assert not matches(node, rec({"Name": name + "x"}))


def test_compile_python_is_fast():
    fn = compile_python(parse("AND({Website} != '', {Company Description} = '')"))
    records = [rec({"Website": "w" if i % 2 else "", "Company Description": "" if i % 3 else "d"})
               for i in range(10000)]
    t = time.perf_counter()
    n = sum(1 for r in records if fn(r))
    assert n == len([i for i in range(10000) if i % 2 and i % 3])
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize("bug", [TypeError, KeyError, IndexError, AttributeError])
def test_a_bug_in_a_function_raises_instead_of_becoming_an_error_value(monkeypatch, bug):
    """Only data a function cannot compute with is ``#ERROR!``; a mistake in the code propagates."""
    from airtable_cached.formula import functions

    def broken(env, value):
        raise bug("a mistake in the implementation")

    monkeypatch.setitem(functions.FUNCTIONS, "LEN", broken)
    with pytest.raises(bug):
        evaluate(parse(f"LEN('{bug.__name__} probe')"), rec())


@pytest.mark.parametrize("formula", ["1 / 0", "SQRT(-1)", "DATETIME_PARSE('not a date')", "REGEX_MATCH('a', '(')"])
def test_data_a_function_cannot_compute_with_is_an_error_value(formula):
    assert evaluate(parse(formula), rec()) == ERR
