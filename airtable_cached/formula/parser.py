"""Tokenizer and recursive-descent parser for Airtable formulas."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from .errors import FormulaSyntaxError, UnknownFunctionError
from .functions import ARITY
from .nodes import PRECEDENCE, BinaryOp, Call, Field, Literal, UnaryOp

__all__ = ["parse", "MAX_DEPTH"]

#: Maximum nesting (parentheses, calls, unary minus) and maximum tree depth accepted.
MAX_DEPTH = 100
MAX_TREE_DEPTH = 200

_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[^\W\d]\w*")
_OPS = ("!=", "<=", ">=", "=", "<", ">", "&", "+", "-", "*", "/", "(", ")", ",")
_STRING_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}

# token kinds
NUM, STR, IDENT, FIELD, OP, END = "number", "string", "identifier", "field", "operator", "end"


def _number_value(text: str):
    if "." in text or "e" in text or "E" in text or len(text) > 15:
        return float(text)
    return int(text)


def tokenize(text: str) -> list:
    """Return a list of (kind, value, position) tuples ending with an END token."""
    tokens: list[tuple[str, Any, int]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == "{":
            start = i
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise FormulaSyntaxError("unterminated field reference (missing '}')", start, text)
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    nxt = text[i + 1]
                    if nxt in "}{\\":
                        buf.append(nxt)
                    else:
                        # UNVERIFIED: inside braces a backslash before another character is kept as-is
                        # (pyairtable's field_name() escapes only "}").
                        buf.append("\\" + nxt)
                    i += 2
                    continue
                if ch == "}":
                    i += 1
                    break
                buf.append(ch)
                i += 1
            name = "".join(buf)
            if not name:
                raise FormulaSyntaxError("empty field reference {}", start, text)
            tokens.append((FIELD, name, start))
            continue
        if c in "'\"":
            start = i
            quote = c
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise FormulaSyntaxError("unterminated string literal", start, text)
                ch = text[i]
                if ch == "\\":
                    if i + 1 >= n:
                        raise FormulaSyntaxError("unterminated string literal", start, text)
                    nxt = text[i + 1]
                    buf.append(_STRING_ESCAPES.get(nxt, nxt))
                    i += 2
                    continue
                if ch == quote:
                    i += 1
                    break
                buf.append(ch)
                i += 1
            tokens.append((STR, "".join(buf), start))
            continue
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            m = _NUMBER.match(text, i)
            if m is None or not m.group().isascii():
                raise FormulaSyntaxError(f"invalid number {c!r}", i, text)
            tokens.append((NUM, _number_value(m.group()), i))
            i = m.end()
            continue
        m = _IDENT.match(text, i)
        if m:
            tokens.append((IDENT, m.group(), i))
            i = m.end()
            continue
        for op in _OPS:
            if text.startswith(op, i):
                tokens.append((OP, op, i))
                i += len(op)
                break
        else:
            raise FormulaSyntaxError(f"unexpected character {c!r}", i, text)
    tokens.append((END, None, n))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.nesting = 0
        self.depth: dict[int, int] = {}  # id(node) -> tree depth (for guarding deep left-recursive chains)

    def peek(self):
        return self.tokens[self.i]

    def advance(self):
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, msg, pos=None):
        if pos is None:
            pos = self.peek()[2]
        raise FormulaSyntaxError(msg, pos, self.text)

    def expect(self, value):
        kind, v, pos = self.peek()
        if kind != OP or v != value:
            found = "end of formula" if kind == END else repr(v if kind != STR else self.text[pos])
            self.error(f"expected {value!r}, found {found}")
        return self.advance()

    def enter(self, pos):
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise FormulaSyntaxError(f"formula nested too deeply (more than {MAX_DEPTH} levels)", pos, self.text)

    def node_depth(self, node, *children):
        d = 1 + max((self.depth.get(id(c), 1) for c in children), default=0)
        if d > MAX_TREE_DEPTH:
            self.error(f"formula nested too deeply (expression depth over {MAX_TREE_DEPTH})")
        self.depth[id(node)] = d
        self._keep.append(node)
        return node

    def parse(self):
        self._keep = []
        if self.peek()[0] == END:
            self.error("empty formula")
        node = self.binary(1)
        kind, v, pos = self.peek()
        if kind != END:
            self.error(f"unexpected {v!r} after end of expression" if kind != STR else
                       "unexpected string after end of expression")
        return node

    def binary(self, min_prec):
        left = self.unary()
        while True:
            kind, op, pos = self.peek()
            if kind != OP or op not in PRECEDENCE:
                return left
            prec = PRECEDENCE[op]
            if prec < min_prec:
                return left
            self.advance()
            right = self.binary(prec + 1)
            left = self.node_depth(BinaryOp(op, left, right), left, right)

    def unary(self):
        kind, v, pos = self.peek()
        if kind == OP and v == "-":
            self.advance()
            nk, nv, npos = self.peek()
            if nk == NUM:
                self.advance()
                return Literal(-nv)
            self.enter(pos)
            operand = self.unary()
            self.nesting -= 1
            return self.node_depth(UnaryOp("-", operand), operand)
        return self.primary()

    def primary(self):
        kind, v, pos = self.advance()
        if kind == NUM or kind == STR:
            return Literal(v)
        if kind == FIELD:
            return Field(v)
        if kind == OP and v == "(":
            self.enter(pos)
            node = self.binary(1)
            self.expect(")")
            self.nesting -= 1
            return node
        if kind == IDENT:
            nk, nv, npos = self.peek()
            if nk == OP and nv == "(":
                return self.call(v, pos)
            upper = v.upper()
            if upper in ("TRUE", "FALSE"):
                return Call(upper, ())
            return Field(v)
        if kind == END:
            self.error("unexpected end of formula", pos)
        self.error(f"unexpected {v!r}" if kind == OP else "unexpected token", pos)

    def call(self, name, pos):
        upper = name.upper()
        arity = ARITY.get(upper)
        if arity is None:
            raise UnknownFunctionError(f"unknown function {name!r} at position {pos}", name, pos)
        self.advance()  # (
        self.enter(pos)
        args = []
        if not (self.peek()[0] == OP and self.peek()[1] == ")"):
            while True:
                args.append(self.binary(1))
                kind, v, p = self.peek()
                if kind == OP and v == ",":
                    self.advance()
                    continue
                break
        self.expect(")")
        self.nesting -= 1
        lo, hi = arity
        if len(args) < lo or (hi is not None and len(args) > hi):
            want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            raise UnknownFunctionError(
                f"function {upper} takes {want} argument(s), got {len(args)} (position {pos})", upper, pos)
        node = Call(upper, tuple(args))
        return self.node_depth(node, *args) if args else node


@lru_cache(maxsize=4096)
def _parse_str(text: str):
    return _Parser(text).parse()


def parse(text):
    """Parse formula text (a ``str`` or any object whose ``str()`` is a formula) into a Node."""
    if not isinstance(text, str):
        text = str(text)
    return _parse_str(text)
