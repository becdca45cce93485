"""Value model and coercions of the evaluator.

Values: ``None`` (blank), ``str``, ``int``/``float`` (numbers), ``bool`` (TRUE()/FALSE(), checkboxes;
numerically 1/0), ``datetime`` (timezone-aware; results of date functions), ``list`` (arrays:
multiple selects, lookups, links), ``dict`` (collaborator, attachment, barcode... as the API returns
them) and :class:`ErrorValue`.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal

from .nodes import ErrorValue

ERROR = ErrorValue("#ERROR!")
NAN = float("nan")

_NUM_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def format_number(v) -> str:
    """Number as text, JavaScript-style: 3 not 3.0, 0.1, 1e+21."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    if v == 0:
        return "0"
    a = abs(v)
    if v.is_integer() and a < 1e21:
        return str(int(v))
    r = repr(v)
    if "e" in r:
        if 1e-7 <= a < 1e21:
            r = format(Decimal(r), "f")
        else:
            mant, exp = r.split("e")
            r = f"{mant}e{'-' if exp.startswith('-') else '+'}{int(exp.lstrip('+-'))}"
    return r


def js_number(s: str) -> float | int:
    """JavaScript ``Number(text)``: trimmed, "" -> 0, invalid -> NaN."""
    t = s.strip()
    if t == "":
        return 0
    if _NUM_RE.match(t):
        if "." in t or "e" in t or "E" in t or len(t) > 15:
            return float(t)
        return int(t)
    if t in ("Infinity", "+Infinity"):
        return math.inf
    if t == "-Infinity":
        return -math.inf
    low = t.lower()
    try:
        if low.startswith("0x"):
            return int(t[2:], 16)
        if low.startswith("0o"):
            return int(t[2:], 8)
        if low.startswith("0b"):
            return int(t[2:], 2)
    except ValueError:
        return NAN
    return NAN


def format_datetime(d: datetime) -> str:
    d = d.astimezone(UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def dict_text(d: dict) -> str:
    # UNVERIFIED: text form of object-valued cells (collaborator -> name, attachment -> filename,
    # barcode -> text, button -> label, AI text -> value).
    for key in ("name", "text", "label", "value", "filename", "email", "url", "id"):
        v = d.get(key)
        if isinstance(v, str):
            return v
    return ""


def to_text(v) -> str | ErrorValue:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        # UNVERIFIED: TRUE()/checkbox in text context is "1" (FALSE() "0").
        return "1" if v else "0"
    if isinstance(v, (int, float)):
        return format_number(v)
    if isinstance(v, datetime):
        # UNVERIFIED: a date value in text context is its ISO-8601 UTC form with milliseconds.
        return format_datetime(v)
    if isinstance(v, list):
        parts = []
        for item in v:
            t = to_text(item)
            if isinstance(t, ErrorValue):
                return t
            parts.append(t)
        # UNVERIFIED: arrays join with ", " in text context.
        return ", ".join(parts)
    if isinstance(v, dict):
        return dict_text(v)
    if isinstance(v, ErrorValue):
        return v
    return str(v)


def to_number(v):
    """Number for arithmetic; blank -> 0; text must look like a number; else ERROR."""
    if v is None:
        return 0
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, ErrorValue):
        return v
    if isinstance(v, list):
        if not v:
            return 0
        if len(v) == 1:
            return to_number(v[0])
        return ERROR
    if isinstance(v, str):
        # UNVERIFIED: numeric text is converted in arithmetic; other text is an error.
        n = js_number(v)
        if isinstance(n, float) and math.isnan(n):
            return ERROR
        return n
    return ERROR


def parse_datetime(s: str) -> datetime | None:
    """ISO-8601 text to an aware UTC datetime; date-only means midnight UTC. None if not a date."""
    t = s.strip()
    if len(t) < 10 or not t[:4].isdigit():
        return None
    try:
        if len(t) == 10:
            d = date.fromisoformat(t)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        if t[10] not in "T ":
            return None
        d = datetime.fromisoformat(t)
    except ValueError:
        return None
    if d.tzinfo is None:
        # UNVERIFIED: an ISO string without offset is taken as UTC (Airtable's default without SET_TIMEZONE)
        return d.replace(tzinfo=UTC)
    return d.astimezone(UTC)


def to_date(v):
    """Date-like value -> aware datetime; blank -> ERROR (date functions on blank fields error)."""
    if isinstance(v, datetime):
        return v
    if isinstance(v, ErrorValue):
        return v
    if isinstance(v, list) and len(v) == 1:
        return to_date(v[0])
    if isinstance(v, str):
        d = parse_datetime(v)
        return ERROR if d is None else d
    # UNVERIFIED: numbers are not accepted as dates.
    return ERROR


def truthy(v) -> bool:
    """filterByFormula truthiness: 0, false, "", NaN, [], blank and errors are falsy."""
    if v is None or v is False:
        return False
    if isinstance(v, str):
        return v != ""
    if isinstance(v, (int, float)):
        return v == v and v != 0
    if isinstance(v, list):
        # UNVERIFIED: a non-empty array is truthy (even [""]).
        return len(v) > 0
    if isinstance(v, ErrorValue):
        return False
    return True


def _norm(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, list):
        if not v:
            return None
        return to_text(v)
    if isinstance(v, dict):
        return dict_text(v)
    return v


def _apply(op, a, b) -> bool:
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == ">":
        return a > b
    if op == "<=":
        return a <= b
    return a >= b


def compare(op: str, a, b):
    """Airtable comparison; returns a bool or an ErrorValue."""
    if isinstance(a, ErrorValue):
        return a
    if isinstance(b, ErrorValue):
        return b
    a = _norm(a)
    b = _norm(b)
    if isinstance(a, ErrorValue):
        return a
    if isinstance(b, ErrorValue):
        return b
    if isinstance(a, datetime) or isinstance(b, datetime):
        da = a if isinstance(a, datetime) else (parse_datetime(a) if isinstance(a, str) else None)
        db = b if isinstance(b, datetime) else (parse_datetime(b) if isinstance(b, str) else None)
        if da is None or db is None:
            # UNVERIFIED: a date compared with blank, a number or non-date text is never equal and unordered.
            return op == "!="
        return _apply(op, da, db)
    if a is None and b is None:
        return op in ("=", "<=", ">=")
    if a is None:
        a = 0 if not isinstance(b, str) else ""
    if b is None:
        b = 0 if not isinstance(a, str) else ""
    if isinstance(a, str) and isinstance(b, str):
        # UNVERIFIED: text ordering is by code point (case-sensitive).
        return _apply(op, a, b)
    if isinstance(a, str):
        # UNVERIFIED: text vs number compares numerically (JavaScript semantics, "" is 0, non-numeric
        # text is NaN: only != holds).
        a = js_number(a)
    elif isinstance(b, str):
        b = js_number(b)
    if a != a or b != b:
        return op == "!="
    return _apply(op, a, b)


def flatten(values):
    out = []
    for v in values:
        if isinstance(v, list):
            out.extend(flatten(v))
        else:
            out.append(v)
    return out
