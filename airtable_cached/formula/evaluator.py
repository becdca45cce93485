"""Evaluation of formula trees against Airtable records (compiled once to Python closures)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from .functions import FUNCTIONS, _Err, f_switch_equal
from .nodes import BinaryOp, Call, ErrorValue, Field, Literal, UnaryOp, walk
from .parser import parse
from .values import ERROR, compare, parse_datetime, to_number, to_text, truthy

# What a function meets when a cell holds data it cannot compute with (Airtable shows #ERROR!): its
# own _Err, arithmetic on the data (1/0, overflow), a conversion that fails (ValueError), nesting too
# deep. Anything else (TypeError, KeyError, IndexError, AttributeError...) is a bug here and propagates
# (tests/test_formula_eval.py, test_a_bug_in_a_function_raises_instead_of_becoming_an_error_value).
_DATA_ERRORS = (_Err, ArithmeticError, ValueError, RecursionError)

__all__ = ["Env", "compile_python", "evaluate", "matches", "field_names", "function_names"]


class Env:
    """What a formula sees of one record."""

    __slots__ = ("record", "fields", "field_ids", "_now", "_names")

    def __init__(self, record, field_ids=None, now=None):
        self.record = record
        self.fields = record.get("fields") or {}
        self.field_ids = field_ids
        self._now = now
        self._names = None

    def get(self, name):
        fields = self.fields
        if name in fields:
            return fields[name]
        ids = self.field_ids
        if ids:
            if name in ids:
                return fields.get(ids[name])
            if self._names is None:
                self._names = {v: k for k, v in ids.items()}
            fid = self._names.get(name)
            if fid is not None:
                return fields.get(fid)
        return None

    def record_id(self):
        return self.record.get("id") or ""

    def _time(self, key):
        v = self.record.get(key)
        if isinstance(v, datetime):
            return v
        if isinstance(v, str):
            d = parse_datetime(v)
            if d is not None:
                return d
        return ERROR

    def created_time(self):
        return self._time("createdTime")

    def last_modified_time(self):
        if self.record.get("lastModifiedTime"):
            return self._time("lastModifiedTime")
        return self._time("createdTime")

    def now(self):
        if self._now is None:
            self._now = datetime.now(UTC)
        elif self._now.tzinfo is None:
            self._now = self._now.replace(tzinfo=UTC)
        return self._now


def _arith(op, a, b):
    if isinstance(a, ErrorValue):
        return a
    if isinstance(b, ErrorValue):
        return b
    # UNVERIFIED: arithmetic on date values is not supported (use DATEADD / DATETIME_DIFF).
    if isinstance(a, datetime) or isinstance(b, datetime):
        return ERROR
    x, y = to_number(a), to_number(b)
    if isinstance(x, ErrorValue):
        return x
    if isinstance(y, ErrorValue):
        return y
    try:
        if op == "+":
            r = x + y
        elif op == "-":
            r = x - y
        elif op == "*":
            r = x * y
        else:
            if y == 0:
                return ERROR  # UNVERIFIED: division by zero is #ERROR!
            r = x / y
            if isinstance(r, float) and r.is_integer() and abs(r) < 2 ** 53:
                r = int(r)
    except (OverflowError, ValueError):
        return ERROR
    if isinstance(r, float) and r != r:
        return ERROR
    return r


def _concat(a, b):
    x = to_text(a)
    if isinstance(x, ErrorValue):
        return x
    y = to_text(b)
    if isinstance(y, ErrorValue):
        return y
    return x + y


def _neg(v):
    if isinstance(v, ErrorValue):
        return v
    if isinstance(v, datetime):
        return ERROR
    n = to_number(v)
    if isinstance(n, ErrorValue):
        return n
    return -n


def _build(node) -> Callable:
    if isinstance(node, Field):
        name = node.name
        return lambda env: env.get(name)
    if isinstance(node, Literal):
        value = node.value
        return lambda env: value
    if isinstance(node, BinaryOp):
        left, right, op = _build(node.left), _build(node.right), node.op
        if op == "&":
            return lambda env: _concat(left(env), right(env))
        if op in ("+", "-", "*", "/"):
            return lambda env: _arith(op, left(env), right(env))
        return lambda env: compare(op, left(env), right(env))
    if isinstance(node, UnaryOp):
        operand = _build(node.operand)
        return lambda env: _neg(operand(env))
    if isinstance(node, Call):
        return _build_call(node)
    raise TypeError(f"not a formula node: {node!r}")


def _build_call(node: Call) -> Callable:
    args = [_build(a) for a in node.args]
    special = _SPECIAL_FORMS.get(node.name)
    if special is not None:
        return special(node, args)
    if node.name == "OR" and len(node.args) > 3:
        by_ids = _build_or_of_record_ids(node, args)
        if by_ids is not None:
            return by_ids
    return _build_function(FUNCTIONS[node.name], args)


def _build_if(node: Call, args: list[Callable]) -> Callable:
    cond, then = args[0], args[1]
    other = args[2] if len(args) > 2 else (lambda env: None)

    def f_if(env):
        c = cond(env)
        if isinstance(c, ErrorValue):
            return c
        return then(env) if truthy(c) else other(env)
    return f_if


def _build_switch(node: Call, args: list[Callable]) -> Callable:
    expr, rest = args[0], args[1:]
    pairs = [(rest[i], rest[i + 1]) for i in range(0, len(rest) - 1, 2)]
    default = rest[-1] if len(rest) % 2 else (lambda env: None)

    def f_switch(env):
        v = expr(env)
        if isinstance(v, ErrorValue):
            return v
        for pat, res in pairs:
            p = pat(env)
            if isinstance(p, ErrorValue):
                return p
            if f_switch_equal(v, p):
                return res(env)
        return default(env)
    return f_switch


def _build_iserror(node: Call, args: list[Callable]) -> Callable:
    inner = args[0]
    return lambda env: isinstance(inner(env), ErrorValue)


#: Forms that evaluate their arguments lazily (or look at errors), unlike every other function.
_SPECIAL_FORMS: dict[str, Callable[[Call, list[Callable]], Callable]] = {
    "IF": _build_if, "SWITCH": _build_switch, "ISERROR": _build_iserror,
}


def _is_record_id_test(node: object) -> bool:
    return (isinstance(node, BinaryOp) and node.op == "=" and isinstance(node.left, Call)
            and node.left.name == "RECORD_ID" and isinstance(node.right, Literal) and isinstance(node.right.value, str))


def _build_or_of_record_ids(node: Call, args: list[Callable]) -> Callable | None:
    """OR(RECORD_ID()='rec1', RECORD_ID()='rec2', ...) (pyairtable's ORM): a set lookup."""
    ids = frozenset(a.right.value for a in node.args if _is_record_id_test(a))  # type: ignore[attr-defined]
    if len(ids) <= 1:
        return None
    others = [fn_ for a, fn_ in zip(node.args, args) if not _is_record_id_test(a)]
    or_impl = FUNCTIONS["OR"]

    def f_or_ids(env):
        values = [a(env) for a in others]
        for v in values:
            if isinstance(v, ErrorValue):
                return v
        return env.record_id() in ids or or_impl(env, *values) if values else env.record_id() in ids
    return f_or_ids


def _build_function(impl: Any, args: list[Callable]) -> Callable:
    """An ordinary function: arguments first (an error among them is the answer), then the call."""
    if not args:
        def f0(env):
            try:
                return impl(env)
            except _DATA_ERRORS:
                return ERROR
        return f0
    if len(args) == 1:
        a0 = args[0]

        def f1(env):
            v = a0(env)
            if isinstance(v, ErrorValue):
                return v
            try:
                return impl(env, v)
            except _DATA_ERRORS:
                return ERROR
        return f1

    def fn(env):
        values = [a(env) for a in args]
        for v in values:
            if isinstance(v, ErrorValue):
                return v  # UNVERIFIED: errors propagate through every function (incl. AND/OR)
        try:
            return impl(env, *values)
        except _DATA_ERRORS:
            return ERROR
    return fn


@lru_cache(maxsize=2048)
def _compiled_cached(node) -> Callable:
    return _build(node)


def _compiled(node) -> Callable:
    # the closure is memoised on the (immutable) node itself: hashing a large tree on every call is slow
    fn = node.__dict__.get("_compiled_fn")
    if fn is None:
        fn = _compiled_cached(node)
        object.__setattr__(node, "_compiled_fn", fn)
    return fn


def _as_node(node):
    return parse(node) if isinstance(node, str) or not hasattr(node, "__dataclass_fields__") else node


def compile_python(node) -> Callable[..., object]:
    """Compile a node (or formula text) into ``fn(record, *, field_ids=None, now=None) -> value``."""
    inner = _compiled(_as_node(node))

    def run(record, *, field_ids=None, now=None):
        try:
            return inner(Env(record, field_ids, now))
        except _DATA_ERRORS:  # pragma: no cover - defensive: the functions catch their own
            return ERROR
    return run


def evaluate(node, record, *, field_ids=None, now=None):
    """Evaluate a node (or formula text) for one record; data problems give an ErrorValue."""
    try:
        return _compiled(_as_node(node))(Env(record, field_ids, now))
    except _DATA_ERRORS:
        return ERROR


def matches(node, record, **kw) -> bool:
    """filterByFormula semantics: True unless the result is 0, false, "", NaN, [], blank or an error."""
    return truthy(evaluate(node, record, **kw))


def field_names(node) -> set:
    return {n.name for n in walk(_as_node(node)) if isinstance(n, Field)}


def function_names(node) -> set:
    return {n.name.upper() for n in walk(_as_node(node)) if isinstance(n, Call)}
