"""Parser: the whole language, pyairtable.formulas output, errors, round trips."""

from __future__ import annotations

import dataclasses
import datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyairtable import formulas as F

from airtable_cached.formula import (
    BinaryOp,
    Call,
    Field,
    FormulaError,
    FormulaSyntaxError,
    Literal,
    UnaryOp,
    UnknownFunctionError,
    field_names,
    function_names,
    parse,
    to_formula,
)
from airtable_cached.formula.functions import ARITY


@pytest.mark.parametrize("text, tree", [
    ('{Name}="Jane"', BinaryOp("=", Field("Name"), Literal("Jane"))),
    ("COLUMN_ID='5'", BinaryOp("=", Field("COLUMN_ID"), Literal("5"))),
    ("{fldAAAAAAAAAAAAAA}=1", BinaryOp("=", Field("fldAAAAAAAAAAAAAA"), Literal(1))),
    ("fldAAAAAAAAAAAAAA=1", BinaryOp("=", Field("fldAAAAAAAAAAAAAA"), Literal(1))),
    (r"{a\}b}='x'", BinaryOp("=", Field("a}b"), Literal("x"))),
    (r"{a\\b}", Field("a\\b")),
    (r"{a\nb}", Field("a\\nb")),
    (r"'Jane\'s'", Literal("Jane's")),
    (r'"say \"hi\""', Literal('say "hi"')),
    (r"'a\\b'", Literal("a\\b")),
    (r"'line\nbreak'", Literal("line\nbreak")),
    ("1.5", Literal(1.5)), (".5", Literal(0.5)), ("1e3", Literal(1000.0)), ("-5", Literal(-5)),
    ("--5", UnaryOp("-", Literal(-5))), ("-{a}", UnaryOp("-", Field("a"))),
    ("1+2*3", BinaryOp("+", Literal(1), BinaryOp("*", Literal(2), Literal(3)))),
    ("(1+2)*3", BinaryOp("*", BinaryOp("+", Literal(1), Literal(2)), Literal(3))),
    ("1-2-3", BinaryOp("-", BinaryOp("-", Literal(1), Literal(2)), Literal(3))),
    ("'a'&1+2", BinaryOp("&", Literal("a"), BinaryOp("+", Literal(1), Literal(2)))),
    ("{a}&'x'='y'", BinaryOp("=", BinaryOp("&", Field("a"), Literal("x")), Literal("y"))),
    ("{a}<={b}", BinaryOp("<=", Field("a"), Field("b"))), ("{a}!=1", BinaryOp("!=", Field("a"), Literal(1))),
    ("TRUE", Call("TRUE")), ("true()", Call("TRUE")), ("FALSE()", Call("FALSE")),
    ("and(1, or(0))", Call("AND", (Literal(1), Call("OR", (Literal(0),))))),
    ("  \n{a} \t=\n 1 ", BinaryOp("=", Field("a"), Literal(1))),
    ("{Café}='é😀'", BinaryOp("=", Field("Café"), Literal("é😀"))),
])
def test_parse(text, tree):
    assert parse(text) == tree
    assert parse(to_formula(tree)) == tree


def test_pyairtable_shapes():
    shapes = [
        F.match({"First Name": "John", "Age": (">=", 21)}),
        F.match({"Name": "Jane's \\ \"q\""}), F.match({"a": 1, "b": 2.5}, match_any=True),
        F.match({"Done": True}), F.match({"Done": False}), F.match({"D": datetime.date(2024, 1, 2)}),
        F.match({"D": datetime.datetime(2023, 12, 1, 12, 34, 56)}),
        F.match({"N": Decimal("3.14159265")}), F.match({"N": Fraction("4/19")}), F.match({"N": -5}),
        F.match({"N": 1e-7}), F.match({"N": Decimal("1E+5")}), F.match({"a}b": "x"}),
        F.AND(F.EQ(F.Field("a"), 1), F.NE(F.Field("b"), "x"), c=3).flatten(), F.OR(F.GT(F.Field("x"), 1)),
        F.NOT(F.LT(F.Field("x"), 1)), F.XOR(F.LTE(F.Field("x"), 1), F.GTE(F.Field("y"), 2)),
        (F.Field("a").eq(1) & F.Field("b").ne(2)) | ~F.Field("c").gt(3),
        F.EQ(F.EQ(F.Field("a"), 1), F.TRUE()),
        F.GT(F.FIND("x", F.Field("Tags")), 0), F.OR(*(F.EQ(F.RECORD_ID(), f"rec{i}") for i in range(5))),
        F.IS_AFTER(F.LAST_MODIFIED_TIME(), datetime.datetime(2024, 1, 1)),
        F.DATETIME_FORMAT(F.CREATED_TIME(), "YYYY"), F.IF(F.Field("a"), "y", "n"), F.BLANK(), F.ERROR(),
        F.SWITCH(F.Field("a"), 1, "one", "other"), F.WORKDAY(datetime.date(2024, 1, 1), 3),
        F.LAST_MODIFIED_TIME(F.Field("a"), F.Field("b")),
    ]
    for shape in shapes:
        node = parse(shape)
        assert parse(str(shape)) == node
        assert parse(to_formula(node)) == node
    assert parse(F.match({"Name": "Jane's"})) == BinaryOp("=", Field("Name"), Literal("Jane's"))
    assert parse(F.match({"a}b": "x"})) == BinaryOp("=", Field("a}b"), Literal("x"))
    assert parse(F.match({"D": datetime.date(2024, 1, 2)})) == BinaryOp(
        "=", Field("D"), Call("DATETIME_PARSE", (Literal("2024-01-02"),)))


def test_every_pyairtable_function_is_known():
    for name, fn in vars(F).items():
        if name.isupper() and callable(fn) and name not in ("EQ", "NE", "GT", "GTE", "LT", "LTE"):
            assert name in ARITY, name


@pytest.mark.parametrize("text, pos", [
    ("", 0), ("{a", 0), ("'abc", 0), ("1 +", 3), ("(1", 2), ("1)", 1), ("{a} {b}", 4), ("AND(1,", 6),
    ("#", 0), ("{}", 0), ("1 == 2", 3), ("'a' 'b'", 4), ("5abc", 1),
])
def test_syntax_errors(text, pos):
    with pytest.raises(FormulaSyntaxError) as ei:
        parse(text)
    assert ei.value.position == pos
    assert f"position {pos}" in str(ei.value)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, FormulaError)


def test_unknown_function_and_arity():
    with pytest.raises(UnknownFunctionError, match="NOPE"):
        parse("NOPE(1)")
    with pytest.raises(UnknownFunctionError, match="LEFT"):
        parse("LEFT('a')")
    with pytest.raises(UnknownFunctionError, match="NOT"):
        parse("NOT(1, 2)")
    with pytest.raises(UnknownFunctionError):
        parse("RECORD_ID(1)")


def test_deep_nesting_is_a_syntax_error():
    for text in ["(" * 5000 + "1" + ")" * 5000, "-" * 5000 + "{a}", "NOT(" * 3000 + "1" + ")" * 3000,
                 "+".join(["1"] * 5000), "&".join(["{a}"] * 3000)]:
        with pytest.raises(FormulaSyntaxError):
            parse(text)
    parse("(" * 50 + "1" + ")" * 50)
    parse("OR(" + ", ".join(f"RECORD_ID()='rec{i}'" for i in range(1000)) + ")")


def test_field_and_function_names():
    node = parse("AND({a}=1, OR(b='x', find('y', {fldX})), RECORD_ID()='r')")
    assert field_names(node) == {"a", "b", "fldX"}
    assert function_names(node) == {"AND", "OR", "FIND", "RECORD_ID"}


def test_nodes_hashable_and_immutable():
    a, b = parse("{a}=1"), parse("{a} = 1")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.op = "!="


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from(list("{}()'\"\\,=!<>&+-*/ .0123456789abAND_TRUEfld\n\x00é")), max_size=40))
def test_parser_only_raises_formula_errors(text):
    try:
        node = parse(text)
    except FormulaError:
        return
    assert parse(to_formula(node)) == node


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=30))
def test_parser_random_unicode(text):
    try:
        parse(text)
    except FormulaError:
        pass


names = st.text(min_size=1, max_size=8).filter(lambda s: "\x00" not in s or True)
leaves = st.one_of(
    st.text(min_size=1, max_size=6).map(Field),
    st.text(max_size=6).map(Literal),
    st.integers(-10**6, 10**6).map(Literal),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(Literal),
    st.sampled_from([Call("TRUE"), Call("FALSE"), Call("BLANK"), Call("RECORD_ID"), Call("NOW")]),
)
ops = st.sampled_from(["=", "!=", "<", ">", "<=", ">=", "&", "+", "-", "*", "/"])


def _unary_ok(n):
    return UnaryOp("-", n)


trees = st.recursive(
    leaves,
    lambda ch: st.one_of(
        st.tuples(ops, ch, ch).map(lambda t: BinaryOp(*t)),
        ch.map(_unary_ok),
        st.lists(ch, min_size=1, max_size=3).map(lambda a: Call("AND", tuple(a))),
        st.tuples(ch, ch).map(lambda a: Call("IF", a)),
        ch.map(lambda a: Call("LEN", (a,))),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_roundtrip_random_trees(tree):
    assert parse(to_formula(tree)) == tree
