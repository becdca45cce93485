"""AST nodes of the Airtable formula language, and printing them back to formula text."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Node", "Field", "Literal", "Call", "BinaryOp", "UnaryOp", "ErrorValue", "to_formula",
           "PRECEDENCE", "COMPARISON_OPS"]


@dataclass(frozen=True)
class ErrorValue:
    """An Airtable error value (``#ERROR!``); it propagates through most operations."""

    code: str = "#ERROR!"

    def __str__(self) -> str:
        return self.code


@dataclass(frozen=True)
class Field:
    """A field reference: ``{Field Name}``, a bare name, or a field id (``fld...``)."""

    name: str


@dataclass(frozen=True)
class Literal:
    """A string or number literal (value is ``str``, ``int`` or ``float``)."""

    value: str | int | float


@dataclass(frozen=True)
class Call:
    """A function call; ``name`` is upper-case, ``args`` a tuple of nodes."""

    name: str
    args: tuple = ()


@dataclass(frozen=True)
class BinaryOp:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class UnaryOp:
    op: str
    operand: Node


Node = Field | Literal | Call | BinaryOp | UnaryOp

COMPARISON_OPS = ("=", "!=", "<", ">", "<=", ">=")
PRECEDENCE = {"=": 1, "!=": 1, "<": 1, ">": 1, "<=": 1, ">=": 1, "&": 2, "+": 3, "-": 3, "*": 4, "/": 4}


def _quote_string(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _field_ref(name: str) -> str:
    return "{" + name.replace("\\", "\\\\").replace("}", "\\}") + "}"


def _number(v) -> str:
    if isinstance(v, bool):
        return "TRUE()" if v else "FALSE()"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "(0/0)"  # never produced by the parser
    if math.isinf(v):
        return "1e999" if v > 0 else "-1e999"
    return repr(v)


def to_formula(node) -> str:
    """Print a node as formula text such that ``parse(to_formula(n)) == n``."""
    if isinstance(node, Field):
        return _field_ref(node.name)
    if isinstance(node, Literal):
        if isinstance(node.value, str):
            return _quote_string(node.value)
        return _number(node.value)
    if isinstance(node, Call):
        return node.name + "(" + ", ".join(to_formula(a) for a in node.args) + ")"
    if isinstance(node, UnaryOp):
        inner = to_formula(node.operand)
        o = node.operand
        if isinstance(o, BinaryOp) or (isinstance(o, Literal) and not isinstance(o.value, str)):
            inner = "(" + inner + ")"
        return node.op + inner
    if isinstance(node, BinaryOp):
        p = PRECEDENCE[node.op]
        left, right = to_formula(node.left), to_formula(node.right)
        if isinstance(node.left, BinaryOp) and PRECEDENCE[node.left.op] < p:
            left = "(" + left + ")"
        if isinstance(node.right, BinaryOp) and PRECEDENCE[node.right.op] <= p:
            right = "(" + right + ")"
        return left + node.op + right
    raise TypeError(f"not a formula node: {node!r}")


def walk(node):
    """Every node of a tree, the root first."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, Call):
            stack.extend(reversed(n.args))
        elif isinstance(n, BinaryOp):
            stack += [n.right, n.left]
        elif isinstance(n, UnaryOp):
            stack.append(n.operand)


def conjuncts(node) -> list:
    """The parts a formula requires all of: the arguments of (nested) top-level ANDs."""
    if isinstance(node, Call) and node.name == "AND":
        return [part for arg in node.args for part in conjuncts(arg)]
    return [node]
