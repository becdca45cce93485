"""Compile (parts of) a formula to a WHERE expression that selects exactly the evaluator's records.

Only shapes whose SQL result provably equals the evaluator's are compiled; the rest is returned as a
residual node for Python-side evaluation. Values are always bound parameters; field names only ever
appear as bound JSON paths / keys.

Two dialects (:class:`Dialect`):

* ``sqlite`` (fields as JSON text): rows whose field JSON contains an escaped NUL, and cells of
  array or object type, are answered by the Python evaluator through the registered ``atc_match``
  function, so :func:`register_sql_functions` must be called on every connection that runs
  compiled SQL;
* ``postgres`` (fields as ``jsonb``, ``%s`` placeholders, see
  ``airtable_cached/store/postgres/schema.py``): the server cannot call the evaluator, so where
  SQLite would call ``atc_match`` (array and object cells, and rows whose ``jsonb`` is NULL because
  their JSON holds a NUL) the condition lets the row through (or keeps it out, under an odd number
  of NOTs) and the whole conjunct is also left in the residual: the SQL selects a superset, the
  evaluator decides. Shapes that need SQLite's Python helpers (text to number or date, LOWER,
  UPPER: Python's case mapping is not the server's) are not compiled for PostgreSQL at all. Text
  compares ``COLLATE "C"`` (code point order, as Python compares), numbers as ``numeric`` (a float
  bound as its shortest decimal, as ``json`` wrote it).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from .evaluator import evaluate, field_names, matches
from .functions import RECORD_FUNCTIONS, TIME_FUNCTIONS
from .nodes import COMPARISON_OPS, BinaryOp, Call, ErrorValue, Field, Literal, conjuncts, to_formula, walk
from .parser import parse
from .values import js_number, parse_datetime

log = logging.getLogger(__name__)

__all__ = ["DIALECTS", "CompiledFilter", "Dialect", "compile_where", "register_sql_functions"]

_FLIP = {"=": "=", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
_SAFE_NAME = re.compile(r'[ !#-\[\]-~]+\Z')  # printable ASCII without '"' and '\\'
_NUL_MARK = "\\u0000"


@dataclass
class CompiledFilter:
    """``sql`` (or None: no SQL condition), its ``params``, and the ``residual`` node (or None)."""

    sql: str | None
    params: list = field(default_factory=list)
    residual: object = None


class _P:
    """A bound parameter inside a fragment list."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL the compiler writes for one database and another."""

    name: str
    true: str
    false: str
    ifnull: str
    instr: str  # instr(haystack, needle): 1-based position, 0 when absent
    collate: str  # appended to the right side of a text comparison: code point order
    helpers: bool  # the atc_* helper functions exist on the connection (SQLite: registered)

    def placeholder(self, value) -> tuple[str, object]:
        """The placeholder text and the value bound for one parameter."""
        if self.name == "sqlite":
            return "?", value
        if isinstance(value, str):
            return "%s::text", value
        if isinstance(value, float):
            return "%s::numeric", Decimal(repr(value))
        return "%s::numeric", value

    def const(self, truth: bool) -> str:
        return self.true if truth else self.false

    def field_value(self, name: str, fields_column: str = "r.fields") -> str | None:
        """The expression of a field's text value as each store's field index is written (an
        expression index matches only an expression written identically), or ``None`` for a name
        no store indexes (see :func:`indexable_field_name`)."""
        if not indexable_field_name(name):
            return None
        if self.name == "sqlite":
            path = '$."' + name + '"'
            return f"json_extract({fields_column}, {_quoted(path)})"
        return f"({fields_column} ->> {_quoted(name)})"

    def field_equals(self, name: str) -> str:
        """``{name} = <parameter>`` through the field's index expression (the name must be indexable)."""
        expression = self.field_value(name)
        if expression is None:
            raise ValueError(f"field {name!r} cannot be indexed: it has no index expression")
        return f"{expression} = {self.placeholder('')[0]}"

    def id_among(self, ids: list[str]) -> tuple[str, list]:
        """``r.id`` among ``ids``, and the parameters to bind."""
        if self.name == "sqlite":
            return f"r.id IN ({','.join('?' * len(ids))})", list(ids)
        return "r.id = ANY(%s::text[])", [ids]


def indexable_field_name(name: str) -> bool:
    """Whether a field can have an expression index in both stores: SQLite compares JSON path
    labels with the raw key, so names needing JSON escapes (quotes, backslashes, control or
    non-ASCII characters) are left to the full scan, on PostgreSQL too (both index the same fields)."""
    return bool(name) and all(32 <= ord(ch) < 127 for ch in name) and '"' not in name and "\\" not in name


def _quoted(text: str) -> str:
    """A SQL string literal (spliced, never an identifier: the index expression must be literal)."""
    return "'" + text.replace("'", "''") + "'"


DIALECTS = {
    "sqlite": Dialect("sqlite", "1", "0", "IFNULL", "instr", "", True),
    "postgres": Dialect("postgres", "TRUE", "FALSE", "COALESCE", "strpos", ' COLLATE "C"', False),
}


def _render(parts, dialect: Dialect = DIALECTS["sqlite"]) -> tuple[str, list]:
    sql, params = [], []
    for p in parts:
        if isinstance(p, _P):
            text, value = dialect.placeholder(p.value)
            sql.append(text)
            params.append(value)
        else:
            sql.append(p)
    return "".join(sql), params


def _canonical_iso(d: datetime) -> str:
    d = d.astimezone(UTC)
    return (f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}."
            f"{d.microsecond:06d}Z")


# ---------------------------------------------------------------- SQL functions (Python side)
@lru_cache(maxsize=256)
def _parse_cached(text):
    return parse(text)


def _atc_match(formula, fields_json, rec_id, created):
    """SQL ``atc_match(formula, fields, id, created)``: 1 where the record matches the formula.
    Only a row whose fields are not JSON is matched by nothing (and logged); any other error raises
    and fails the query."""
    try:
        fields = json.loads(fields_json) if fields_json else {}
    except ValueError as exc:
        log.warning("record %s has unreadable fields, left out of a formula read: %s", rec_id, exc)
        return 0
    if not isinstance(fields, dict):
        fields = {}
    rec = {"id": rec_id or "", "createdTime": created, "fields": fields}
    return 1 if matches(_parse_cached(formula), rec) else 0


def _atc_iso(text):
    if not isinstance(text, str):
        return None
    d = parse_datetime(text)
    return None if d is None else _canonical_iso(d)


def _atc_num(text):
    if not isinstance(text, str):
        return None
    n = js_number(text)
    if n != n:
        return None
    if isinstance(n, int) and abs(n) >= 2 ** 63:
        return float(n)
    return n


def _atc_lower(text):
    return text.lower() if isinstance(text, str) else text


def _atc_upper(text):
    return text.upper() if isinstance(text, str) else text


def register_sql_functions(conn: sqlite3.Connection) -> None:
    """Define the deterministic helper functions compiled SQL may use (call on every connection)."""
    conn.create_function("atc_match", 4, _atc_match, deterministic=True)
    conn.create_function("atc_iso", 1, _atc_iso, deterministic=True)
    conn.create_function("atc_num", 1, _atc_num, deterministic=True)
    conn.create_function("atc_lower", 1, _atc_lower, deterministic=True)
    conn.create_function("atc_upper", 1, _atc_upper, deterministic=True)


# ---------------------------------------------------------------- compiler
_DUMMY: dict[str, Any] = {"id": "", "createdTime": None, "fields": {}}


def _is_constant(node) -> bool:
    return not any(
        isinstance(n, Field) or (isinstance(n, Call) and (n.name in RECORD_FUNCTIONS or n.name in TIME_FUNCTIONS))
        for n in walk(node)
    )


def _const_value(node):
    """(ok, value) for a constant node usable in SQL."""
    v = evaluate(node, _DUMMY)
    if isinstance(v, ErrorValue) or isinstance(v, (list, dict)):
        return False, None
    if isinstance(v, str) and "\x00" in v:
        return False, None
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int) and abs(v) > 2 ** 53:
        return False, None
    if isinstance(v, float) and v != v:
        return False, None
    return True, v


def _kind(v):
    if v is None:
        return "blank"
    if isinstance(v, str):
        return "text"
    if isinstance(v, datetime):
        return "date"
    return "num"


class _Compiler:
    def __init__(self, fields_column, id_column, created_column, field_ids, functions, dialect: Dialect):
        self.F = fields_column
        self.id = id_column
        self.created = created_column
        self.field_ids = field_ids
        self.dialect = dialect
        self.functions = functions and dialect.helpers
        #: Parity of the NOTs above the node being compiled (PostgreSQL's stand-in for atc_match).
        self.negated = False
        #: The conjunct being compiled let rows through for the evaluator to decide (PostgreSQL).
        self.recheck = False

    # -- value translation for one field of a known JSON kind -----------------------------------
    def value(self, node, fname, jv, branch):
        """(parts, kind) of node's value when field `fname` is a `branch` ('text'|'num') SQL value."""
        if _is_constant(node):
            ok, v = _const_value(node)
            if not ok:
                return None
            k = _kind(v)
            if k == "text" and self.dialect.name == "postgres" and not _encodable(v):
                return None
            if k == "date":
                return [], ("date", v)
            if k == "blank":
                return [], ("blank", None)
            return [_P(v)], (k, v)
        if isinstance(node, Field):
            return (jv, (branch, None)) if node.name == fname else None
        if branch != "text":
            return None
        if isinstance(node, Call):
            if node.name in ("LEN", "LOWER", "UPPER") :
                inner = self.value(node.args[0], fname, jv, branch)
                if inner is None or inner[1][0] != "text":
                    return None
                if node.name == "LEN":
                    return ["length(", *inner[0], ")"], ("num", None)
                if not self.functions:
                    return None
                fn = "atc_lower(" if node.name == "LOWER" else "atc_upper("
                return [fn, *inner[0], ")"], ("text", None)
            if node.name in ("FIND", "SEARCH") and len(node.args) == 2:
                a = self.value(node.args[0], fname, jv, branch)
                b = self.value(node.args[1], fname, jv, branch)
                if a is None or b is None or a[1][0] != "text" or b[1][0] != "text":
                    return None
                # SEARCH gives blank where FIND gives 0: the same against numbers, blank and in
                # truthiness, but not against text ("" vs "0"), hence its own kind.
                return ([f"{self.dialect.instr}(", *b[0], ", ", *a[0], ")"],
                        ("num" if node.name == "FIND" else "snum", None))
            return None
        if isinstance(node, BinaryOp) and node.op == "&":
            a = self.value(node.left, fname, jv, branch)
            b = self.value(node.right, fname, jv, branch)
            if a is None or b is None:
                return None
            pa = a[0] if a[1][0] == "text" else ([_P("")] if a[1][0] == "blank" else None)
            pb = b[0] if b[1][0] == "text" else ([_P("")] if b[1][0] == "blank" else None)
            if pa is None or pb is None:
                return None
            return ["(", *pa, " || ", *pb, ")"], ("text", None)
        return None

    def branch_pred(self, node, fname, jv, branch):
        """SQL (0/1) for truthy(node) when the field is of `branch` kind, or None."""
        if isinstance(node, BinaryOp) and node.op in COMPARISON_OPS:
            a = self.value(node.left, fname, jv, branch)
            b = self.value(node.right, fname, jv, branch)
            if a is None or b is None:
                return None
            return self.compare(node.op, a, b)
        v = self.value(node, fname, jv, branch)
        if v is None:
            return None
        parts, (k, _) = v
        if k == "text":
            return ["(", *parts, " != '')"]
        if k in ("num", "snum"):
            return ["(", *parts, " != 0)"]
        return None

    def compare(self, op, a, b):
        (pa, (ka, va)), (pb, (kb, vb)) = a, b
        if "snum" in (ka, kb):
            other = kb if ka == "snum" else ka
            if other not in ("num", "blank", "snum"):
                return None
            ka = "num" if ka == "snum" else ka
            kb = "num" if kb == "snum" else kb
        if ka == "blank" and kb == "blank":
            return None
        if ka == "blank":
            pa, ka = ([_P("")], "text") if kb == "text" else (([_P(0)], "num") if kb == "num" else (None, None))
            if pa is None:
                return None
        if kb == "blank":
            pb, kb = ([_P("")], "text") if ka == "text" else (([_P(0)], "num") if ka == "num" else (None, None))
            if pb is None:
                return None
        if ka == kb and ka in ("text", "num"):
            return ["(", *pa, f" {op} ", *pb, self.dialect.collate if ka == "text" else "", ")"]
        if {ka, kb} == {"text", "num"}:
            # text vs number compares numerically; only a constant text side can be converted here
            if ka == "text" and va is None and kb == "num" and self.functions:
                return ["IFNULL(atc_num(", *pa, f") {op} ", *pb, ", ", "1" if op == "!=" else "0", ")"]
            if kb == "text" and vb is None and ka == "num" and self.functions:
                return ["IFNULL(", *pa, f" {op} atc_num(", *pb, "), ", "1" if op == "!=" else "0", ")"]
            if ka == "text" and va is not None:
                n = js_number(va)
                if isinstance(n, int) and abs(n) > 2 ** 53:
                    return None
                if n != n:
                    return [self.dialect.const(op == "!=")]
                return ["(", _P(n), f" {op} ", *pb, ")"]
            if kb == "text" and vb is not None:
                n = js_number(vb)
                if isinstance(n, int) and abs(n) > 2 ** 53:
                    return None
                if n != n:
                    return [self.dialect.const(op == "!=")]
                return ["(", *pa, f" {op} ", _P(n), ")"]
            return None
        if "date" in (ka, kb) and self.functions:
            if ka == "date" and kb == "text" and vb is None:
                return ["IFNULL(", _P(_canonical_iso(va)), f" {op} atc_iso(", *pb, "), ",
                        "1" if op == "!=" else "0", ")"]
            if kb == "date" and ka == "text" and va is None:
                return ["IFNULL(atc_iso(", *pa, f") {op} ", _P(_canonical_iso(vb)), ", ",
                        "1" if op == "!=" else "0", ")"]
        return None

    def field_leaf(self, node, fname):
        if self.field_ids and (fname in self.field_ids or fname in self.field_ids.values()):
            return None  # the stored key may be the id or the name: leave it to the evaluator
        if "\x00" in fname or not fname:
            return None
        if self.dialect.name == "postgres":
            return self.jsonb_leaf(node, fname)
        F = self.F
        if _SAFE_NAME.match(fname):
            path = _P('$."' + fname + '"')
            jt = ["json_type(", F, ", ", path, ")"]
            jv = ["json_extract(", F, ", ", path, ")"]
        else:
            key = _P(fname)
            jt = ["(SELECT type FROM json_each(", F, ") WHERE key = ", key, ")"]
            jv = ["(SELECT value FROM json_each(", F, ") WHERE key = ", key, ")"]
        t_text = self.branch_pred(node, fname, jv, "text")
        t_num = self.branch_pred(node, fname, jv, "num")
        if (t_text is None and t_num is None) or not self.functions:
            return None
        formula = _P(to_formula(node))
        fallback = ["atc_match(", formula, ", ", F, ", ", self.id, ", ", self.created, ")"]
        t_text = fallback if t_text is None else t_text
        t_num = fallback if t_num is None else t_num

        def const(value):
            fields = {} if value is _MISSING else {fname: value}
            return "1" if matches(node, {"id": "", "createdTime": None, "fields": fields}) else "0"

        return ["(CASE WHEN instr(", F, ", ", _P(_NUL_MARK), ") > 0 THEN ", *fallback,
                " ELSE (CASE ", *jt,
                " WHEN 'text' THEN ", *t_text,
                " WHEN 'integer' THEN ", *t_num,
                " WHEN 'real' THEN ", *t_num,
                " WHEN 'true' THEN ", const(True),
                " WHEN 'false' THEN ", const(False),
                " WHEN 'array' THEN ", *fallback,
                " WHEN 'object' THEN ", *fallback,
                " ELSE ", const(_MISSING), " END) END)"]

    def record_id_cmp(self, node):
        left, right = node.left, node.right
        op = node.op
        if _is_rid(right) and not _is_rid(left):
            left, right, op = right, left, _FLIP[op]
        if not (_is_rid(left) and _is_constant(right)):
            return None
        ok, v = _const_value(right)
        if not ok:
            return None
        if v is None:
            v = ""
        if not isinstance(v, str) or (self.dialect.name == "postgres" and not _encodable(v)):
            return None
        return [f"({self.dialect.ifnull}(", self.id, ", '') ", op, " ", _P(v), self.dialect.collate, ")"]

    def pred(self, node, under_not=False):
        if isinstance(node, Call) and node.name in ("AND", "OR"):
            if node.name == "OR":
                ids, rest = [], []
                for a in node.args:
                    if (isinstance(a, BinaryOp) and a.op == "=" and _is_rid(a.left)
                            and isinstance(a.right, Literal) and isinstance(a.right.value, str)
                            and _encodable(a.right.value)):
                        ids.append(a.right.value)
                    else:
                        rest.append(a)
                parts_list = []
                if len(ids) > 1:
                    ph = []
                    for i, v in enumerate(ids):
                        ph += [", " if i else "", _P(v)]
                    parts_list.append([f"({self.dialect.ifnull}(", self.id, ", '') IN (", *ph, "))"])
                else:
                    rest = list(node.args) if ids else rest
                for a in rest:
                    p = self.pred(a, under_not)
                    if p is None:
                        return None
                    parts_list.append(p)
            else:
                parts_list = []
                for a in node.args:
                    p = self.pred(a, under_not)
                    if p is None:
                        return None
                    parts_list.append(p)
            joiner = " AND " if node.name == "AND" else " OR "
            out = ["("]
            for i, p in enumerate(parts_list):
                if i:
                    out.append(joiner)
                out += p
            return out + [")"]
        if isinstance(node, Call) and node.name == "NOT":
            self.negated = not self.negated
            try:
                p = self.pred(node.args[0], True)
            finally:
                self.negated = not self.negated
            return None if p is None else ["(NOT ", *p, ")"]
        if _is_constant(node):
            v = evaluate(node, _DUMMY)
            if isinstance(v, ErrorValue):
                return None if under_not else [self.dialect.false]
            return [self.dialect.const(matches(node, _DUMMY))]
        names = field_names(node)
        if isinstance(node, BinaryOp) and node.op in COMPARISON_OPS and not names:
            return self.record_id_cmp(node)
        if len(names) == 1 and not _uses(node, RECORD_FUNCTIONS | TIME_FUNCTIONS):
            return self.field_leaf(node, next(iter(names)))
        return None


    def jsonb_leaf(self, node, fname):
        """field_leaf for PostgreSQL: the cell's jsonb type picks the branch."""
        if not _encodable(fname):
            return None
        F, key = self.F, _P(fname)
        t_text = self.branch_pred(node, fname, ["(", F, " ->> ", key, ")"], "text")
        t_num = self.branch_pred(node, fname, ["((", F, " -> ", key, ")::numeric)"], "num")
        if t_text is None and t_num is None:
            return None
        self.recheck = True
        fallback = [self.dialect.const(not self.negated)]  # a superset: the residual decides
        t_text = fallback if t_text is None else t_text
        t_num = fallback if t_num is None else t_num
        const = self.dialect.const
        return ["(CASE WHEN ", F, " IS NULL THEN ", *fallback,
                " ELSE (CASE jsonb_typeof(", F, " -> ", key, ")",
                " WHEN 'string' THEN ", *t_text,
                " WHEN 'number' THEN ", *t_num,
                " WHEN 'boolean' THEN (CASE WHEN (", F, " -> ", key, ") = 'true'::jsonb THEN ",
                const(_matches_cell(node, fname, True)), " ELSE ", const(_matches_cell(node, fname, False)), " END)",
                " WHEN 'array' THEN ", *fallback,
                " WHEN 'object' THEN ", *fallback,
                " ELSE ", const(_matches_cell(node, fname, _MISSING)), " END) END)"]


_MISSING = object()


def _matches_cell(node, fname, value) -> bool:
    fields = {} if value is _MISSING else {fname: value}
    return matches(node, {"id": "", "createdTime": None, "fields": fields})


def _encodable(text: str) -> bool:
    """Whether a text can be sent to PostgreSQL (UTF-8, no NUL)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _is_rid(n):
    return isinstance(n, Call) and n.name == "RECORD_ID"


def _uses(node, names) -> bool:
    return any(isinstance(n, Call) and n.name in names for n in walk(node))


def compile_where(node, *, fields_column="fields", id_column="id", created_column="created_time",
                  field_ids=None, sql_functions=True, dialect="sqlite") -> CompiledFilter:
    """Split a formula into a SQL expression (of ``dialect``: sqlite or postgres) and a residual node.

    A row is selected iff (``sql`` is None or true) and (``residual`` is None or
    ``matches(residual, record)``). ``fields_column``/``id_column``/``created_column`` are SQL
    expressions naming the columns (quote them yourself if needed; they are not user data).
    With ``sql_functions=False`` no registered function is used (and much less is compiled).
    """
    if isinstance(node, str) or not hasattr(node, "__dataclass_fields__"):
        node = parse(node)
    speaks = DIALECTS[dialect]
    comp = _Compiler(fields_column, id_column, created_column, field_ids, sql_functions, speaks)
    compiled, residual = [], []
    for c in conjuncts(node):
        comp.recheck = False
        try:
            p = comp.pred(c)
        except RecursionError:  # pragma: no cover - parser limits depth
            p = None
        if p is None or comp.recheck:
            residual.append(c)
        if p is not None:
            compiled.append(p)
    if not compiled:
        return CompiledFilter(None, [], node)
    parts = []
    for i, p in enumerate(compiled):
        if i:
            parts.append(" AND ")
        parts += p
    sql, params = _render(parts, speaks)
    res = None if not residual else (residual[0] if len(residual) == 1 else Call("AND", tuple(residual)))
    return CompiledFilter(sql, params, res)
