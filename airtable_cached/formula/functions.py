"""Function table: arities (as Airtable's formula field reference gives them) and implementations.

Each implementation takes ``(env, *args)`` with already evaluated arguments; errors in arguments are
propagated by the evaluator before the call (except by its special forms IF, SWITCH and ISERROR,
``_SPECIAL_FORMS`` in evaluator.py). Data an implementation cannot compute with raises ``_Err`` (or
an arithmetic or conversion ``ValueError``), which the evaluator turns into ``#ERROR!``; any other
exception is a bug and propagates.
"""

from __future__ import annotations

import calendar
import math
import re
import urllib.parse
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_UP, Decimal

import re2

from .nodes import ErrorValue
from .values import (
    ERROR,
    compare,
    flatten,
    format_datetime,
    is_number,
    js_number,
    parse_datetime,
    to_date,
    to_number,
    to_text,
    truthy,
)

# name -> (min args, max args or None for variadic)
ARITY: dict[str, tuple[int, int | None]] = {
    # logical
    "AND": (1, None), "OR": (1, None), "NOT": (1, 1), "XOR": (1, None), "IF": (2, 3), "SWITCH": (3, None),
    "BLANK": (0, 0), "ERROR": (0, 1), "ISERROR": (1, 1), "TRUE": (0, 0), "FALSE": (0, 0),
    # text
    "CONCATENATE": (1, None), "FIND": (2, 3), "SEARCH": (2, 3), "LEFT": (2, 2), "RIGHT": (2, 2),
    "MID": (3, 3), "LEN": (1, 1), "LOWER": (1, 1), "UPPER": (1, 1), "TRIM": (1, 1), "REPLACE": (4, 4),
    "SUBSTITUTE": (3, 4), "REPT": (2, 2), "T": (1, 1), "VALUE": (1, 1), "ENCODE_URL_COMPONENT": (1, 1),
    "REGEX_MATCH": (2, 2), "REGEX_EXTRACT": (2, 2), "REGEX_REPLACE": (3, 3),
    # numeric
    "ABS": (1, 1), "AVERAGE": (1, None), "CEILING": (1, 2), "FLOOR": (1, 2), "COUNT": (1, None),
    "COUNTA": (1, None), "COUNTALL": (1, None), "EVEN": (1, 1), "ODD": (1, 1), "EXP": (1, 1),
    "INT": (1, 1), "LOG": (1, 2), "MAX": (1, None), "MIN": (1, None), "MOD": (2, 2), "POWER": (2, 2),
    "ROUND": (2, 2), "ROUNDDOWN": (2, 2), "ROUNDUP": (2, 2), "SQRT": (1, 1), "SUM": (1, None),
    # date/time
    "CREATED_TIME": (0, 0), "LAST_MODIFIED_TIME": (0, None), "NOW": (0, 0), "TODAY": (0, 0),
    "DATEADD": (3, 3), "DATETIME_DIFF": (3, 3), "DATETIME_FORMAT": (1, 2), "DATETIME_PARSE": (1, 3),
    "DATESTR": (1, 1), "TIMESTR": (1, 1), "DAY": (1, 1), "MONTH": (1, 1), "YEAR": (1, 1), "HOUR": (1, 1),
    "MINUTE": (1, 1), "SECOND": (1, 1), "WEEKDAY": (1, 2), "WEEKNUM": (1, 2), "IS_AFTER": (2, 2),
    "IS_BEFORE": (2, 2), "IS_SAME": (2, 3), "FROMNOW": (1, 1), "TONOW": (1, 1), "SET_LOCALE": (2, 2),
    "SET_TIMEZONE": (2, 2), "WORKDAY": (2, 3), "WORKDAY_DIFF": (2, 3),
    # record / array
    "RECORD_ID": (0, 0), "ARRAYJOIN": (1, 2), "ARRAYUNIQUE": (1, 1), "ARRAYCOMPACT": (1, 1),
    "ARRAYFLATTEN": (1, 1), "ARRAYSLICE": (2, 3),
}

#: functions whose value depends on the record (beyond field references) or on the clock
RECORD_FUNCTIONS = frozenset({"RECORD_ID", "CREATED_TIME", "LAST_MODIFIED_TIME"})
TIME_FUNCTIONS = frozenset({"NOW", "TODAY", "FROMNOW", "TONOW"})
#: evaluated lazily by the evaluator itself
LAZY = frozenset({"IF", "SWITCH", "ISERROR"})


class _Err(Exception):
    """Raised inside implementations to produce #ERROR!."""


def _num(v):
    n = to_number(v)
    if isinstance(n, ErrorValue):
        raise _Err
    return n


def _int(v):
    n = _num(v)
    if n != n or n in (math.inf, -math.inf):
        raise _Err
    return int(n)


def _text(v):
    t = to_text(v)
    if isinstance(t, ErrorValue):
        raise _Err
    return t


def _date(v):
    d = to_date(v)
    if isinstance(d, ErrorValue):
        raise _Err
    return d


def _clean(n):
    """Normalise a float result: integral floats stay floats (text formatting drops .0); NaN/inf error."""
    if isinstance(n, float) and (n != n or n in (math.inf, -math.inf)):
        raise _Err
    return n


def _dec(x) -> Decimal:
    return Decimal(repr(float(x))) if isinstance(x, float) else Decimal(x)


def _decnum(d: Decimal):
    if d == d.to_integral_value():
        return int(d)
    return float(d)


# ---------------------------------------------------------------- logical
def f_and(env, *a): return all(truthy(x) for x in a)
def f_or(env, *a): return any(truthy(x) for x in a)
def f_not(env, a): return not truthy(a)
def f_xor(env, *a): return sum(1 for x in a if truthy(x)) % 2 == 1
def f_blank(env): return None
def f_error(env, *a): return ERROR
def f_true(env): return True
def f_false(env): return False


# ---------------------------------------------------------------- text
def f_concatenate(env, *a): return "".join(_text(x) for x in a)


def f_find(env, needle, hay, start=None):
    n, h = _text(needle), _text(hay)
    s = 0 if start is None else max(_int(start) - 1, 0)
    return h.find(n, s) + 1


def f_search(env, needle, hay, start=None):
    # UNVERIFIED: SEARCH is case-sensitive like FIND (Airtable's docs do not say otherwise); it returns
    # blank instead of 0 when the text is not found.
    pos = f_find(env, needle, hay, start)
    return pos if pos else None


def f_left(env, s, n):
    k = _int(n)
    if k < 0:
        raise _Err
    return _text(s)[:k]


def f_right(env, s, n):
    k = _int(n)
    if k < 0:
        raise _Err
    t = _text(s)
    return t[len(t) - k:] if k else ""


def f_mid(env, s, start, count):
    st, c = _int(start), _int(count)
    if st < 1 or c < 0:
        raise _Err  # UNVERIFIED
    return _text(s)[st - 1:st - 1 + c]


# UNVERIFIED: lengths and positions count Unicode code points (JavaScript would count UTF-16 units).
def f_len(env, s): return len(_text(s))
def f_lower(env, s): return _text(s).lower()
def f_upper(env, s): return _text(s).upper()
def f_trim(env, s): return _text(s).strip()  # UNVERIFIED: internal runs of spaces are kept


def f_replace(env, s, start, count, repl):
    t = _text(s)
    st, c = _int(start), _int(count)
    if st < 1 or c < 0:
        raise _Err
    return t[:st - 1] + _text(repl) + t[st - 1 + c:]


def f_substitute(env, s, old, new, index=None):
    t, o, nw = _text(s), _text(old), _text(new)
    if o == "":
        return t
    if index is None:
        return t.replace(o, nw)
    k = _int(index)
    if k < 1:
        return t
    pos = -1
    for _ in range(k):
        pos = t.find(o, pos + 1)
        if pos < 0:
            return t
    return t[:pos] + nw + t[pos + len(o):]


def f_rept(env, s, n):
    k = _int(n)
    if k < 0 or k > 100000:
        raise _Err
    return _text(s) * k


def f_t(env, v): return v if isinstance(v, str) else None


def f_value(env, v):
    if is_number(v):
        return v
    # UNVERIFIED: VALUE ignores thousands separators, currency signs and spaces; "%" divides by 100.
    t = _text(v).strip().replace(",", "").replace("$", "").replace(" ", "")
    pct = t.endswith("%")
    if pct:
        t = t[:-1]
    n = js_number(t)
    if n != n:
        raise _Err
    return n / 100 if pct else n


def f_encode(env, s):
    return urllib.parse.quote(_text(s), safe="-_.!~*'()")


_regex_cache: dict = {}
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # an invalid pattern is #ERROR!, not a line on stderr


def _re(p):
    p = _text(p)
    r = _regex_cache.get(p)
    if r is None:
        try:
            # Airtable evaluates regexes with RE2: same syntax, and linear time, so a pattern that
            # makes a backtracking engine run for ever (``(a+)+$``) answers at once here too.
            r = re2.compile(p, _RE2_OPTIONS)
        except (re2.error, OverflowError, RecursionError, TypeError):
            raise _Err from None
        if len(_regex_cache) > 512:
            _regex_cache.clear()
        _regex_cache[p] = r
    return r


def f_regex_match(env, s, p): return _re(p).search(_text(s)) is not None


def f_regex_extract(env, s, p):
    m = _re(p).search(_text(s))
    if m is None:
        raise _Err  # UNVERIFIED: no match is #ERROR!
    return m.group(0)


def f_regex_replace(env, s, p, r):
    rep = _text(r)
    return _re(p).sub(lambda m: rep, _text(s))


# ---------------------------------------------------------------- numeric
def _numbers(args):
    out = []
    for v in flatten(args):
        if isinstance(v, ErrorValue):
            raise _Err
        if isinstance(v, bool):
            out.append(int(v))
        elif is_number(v):
            out.append(v)
        elif isinstance(v, str):
            # UNVERIFIED: numeric text counts in SUM/AVERAGE/MAX/MIN; other text is ignored
            n = js_number(v)
            if n == n and v.strip():
                out.append(n)
    return out


def f_abs(env, v): return abs(_num(v))


def f_average(env, *a):
    ns = _numbers(a)
    if not ns:
        raise _Err  # UNVERIFIED
    return _clean(sum(ns) / len(ns))


def _sig(sig):
    s = 1 if sig is None else _num(sig)
    if s == 0:
        raise _Err
    return abs(s)


def f_ceiling(env, v, sig=None):
    s = _sig(sig)
    return _decnum((_dec(_num(v)) / _dec(s)).to_integral_value(ROUND_CEILING) * _dec(s))


def f_floor(env, v, sig=None):
    s = _sig(sig)
    return _decnum((_dec(_num(v)) / _dec(s)).to_integral_value(ROUND_FLOOR) * _dec(s))


def f_count(env, *a): return sum(1 for v in flatten(a) if is_number(v) or isinstance(v, bool))
def f_counta(env, *a): return sum(1 for v in flatten(a) if v is not None and v != "")
def f_countall(env, *a): return len(flatten(a))


def f_even(env, v):
    n = _num(v)
    k = math.ceil(abs(n))
    if k % 2:
        k += 1
    return k if n >= 0 else -k  # UNVERIFIED: away from zero for negatives


def f_odd(env, v):
    n = _num(v)
    k = math.ceil(abs(n))
    if k % 2 == 0:
        k += 1
    return k if n >= 0 else -k


def f_exp(env, v): return _clean(math.exp(_num(v)))
def f_int(env, v): return math.floor(_num(v))


def f_log(env, v, base=None):
    b = 10 if base is None else _num(base)
    return _clean(math.log(_num(v), b))


def f_max(env, *a):
    ns = _numbers(a)
    return max(ns) if ns else 0


def f_min(env, *a):
    ns = _numbers(a)
    return min(ns) if ns else 0


def f_mod(env, v, d):
    x, y = _num(v), _num(d)
    if y == 0:
        raise _Err
    # UNVERIFIED: sign follows the divisor (spreadsheet MOD)
    return _clean(x - y * math.floor(x / y)) if isinstance(x, float) or isinstance(y, float) else x % y


def f_power(env, b, e):
    r = _num(b) ** _num(e)
    if isinstance(r, complex):
        raise _Err
    return _clean(r) if isinstance(r, float) else r


def _round(v, p, mode):
    x, prec = _num(v), _int(p)
    d = _dec(x).scaleb(prec)
    if mode == "half":
        d = (d + Decimal("0.5")).to_integral_value(ROUND_FLOOR)  # ties toward +infinity
    else:
        d = d.to_integral_value(mode)
    return _decnum(d.scaleb(-prec))


def f_round(env, v, p): return _round(v, p, "half")
def f_rounddown(env, v, p): return _round(v, p, ROUND_DOWN)
def f_roundup(env, v, p): return _round(v, p, ROUND_UP)


def f_sqrt(env, v):
    n = _num(v)
    if n < 0:
        raise _Err
    return _clean(math.sqrt(n))


def f_sum(env, *a):
    return sum(_numbers(a))


# ---------------------------------------------------------------- date/time
def f_created_time(env): return env.created_time()
def f_last_modified_time(env, *fields):
    # UNVERIFIED: the per-field form is answered with the record's last modification time.
    return env.last_modified_time()
def f_now(env): return env.now()


def f_today(env):
    # UNVERIFIED: TODAY() is midnight UTC of the current UTC date.
    n = env.now().astimezone(UTC)
    return datetime(n.year, n.month, n.day, tzinfo=UTC)


_UNITS = {
    "milliseconds": "ms", "millisecond": "ms", "ms": "ms",
    "seconds": "s", "second": "s", "s": "s",
    "minutes": "m", "minute": "m", "m": "m",
    "hours": "h", "hour": "h", "h": "h",
    "days": "d", "day": "d", "d": "d",
    "weeks": "w", "week": "w", "w": "w",
    "months": "M", "month": "M", "M": "M",
    "quarters": "Q", "quarter": "Q", "Q": "Q",
    "years": "y", "year": "y", "y": "y",
}
_FIXED = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _unit(u):
    t = _text(u)
    unit = _UNITS.get(t) or _UNITS.get(t.lower())  # UNVERIFIED: abbreviations; "M" months, "m" minutes
    if unit is None:
        raise _Err
    return unit


def _add_months(d: datetime, months: int) -> datetime:
    y, m = divmod(d.month - 1 + months, 12)
    year = d.year + y
    if not 1 <= year <= 9999:
        raise _Err
    day = min(d.day, calendar.monthrange(year, m + 1)[1])
    return d.replace(year=year, month=m + 1, day=day)


def f_dateadd(env, d, n, u):
    dt, k, unit = _date(d), _num(n), _unit(u)
    if unit in _FIXED:
        return dt + timedelta(seconds=k * _FIXED[unit])
    months = int(k) * {"M": 1, "Q": 3, "y": 12}[unit]  # UNVERIFIED: fractional months truncate
    return _add_months(dt, months)


def _month_diff(a: datetime, b: datetime) -> float:
    # moment.js monthDiff: whole months plus a fraction, sign-aware
    whole = (a.year - b.year) * 12 + (a.month - b.month)
    anchor = _add_months(b, whole)
    if a - anchor < timedelta(0):
        anchor2 = _add_months(b, whole - 1)
        frac = (a - anchor) / (anchor - anchor2)
    else:
        anchor2 = _add_months(b, whole + 1)
        frac = (a - anchor) / (anchor2 - anchor)
    return whole + frac


def f_datetime_diff(env, d1, d2, u):
    a, b, unit = _date(d1), _date(d2), _unit(u)
    if unit in _FIXED:
        v = (a - b).total_seconds() / _FIXED[unit]
    else:
        v = _month_diff(a, b) / {"M": 1, "Q": 3, "y": 12}[unit]
    return int(v)  # UNVERIFIED: truncated toward zero


_MONTHS = list(calendar.month_name)
_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_FMT_TOKENS = re.compile(r"\[[^\]]*\]|YYYY|YY|MMMM|MMM|MM|Mo|M|DDDD|DD|Do|D|dddd|ddd|d|HH|H|hh|h|mm|m|ss|s|SSS|A|a|X|x|ZZ|Z|LLLL|LLL|LL|L|Q|E|e|ww|w")


def _ordinal(n):
    suf = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suf}"


def _format(d: datetime, fmt: str) -> str:
    # UNVERIFIED: a subset of moment.js format tokens; locales other than English are not supported.
    def tok(m):
        t = m.group()
        if t.startswith("["):
            return t[1:-1]
        wd = (d.weekday() + 1) % 7
        off = d.utcoffset() or timedelta(0)
        sign = "-" if off < timedelta(0) else "+"
        oh, om = divmod(abs(int(off.total_seconds())) // 60, 60)
        h12 = d.hour % 12 or 12
        return {
            "YYYY": f"{d.year:04d}", "YY": f"{d.year % 100:02d}", "MMMM": _MONTHS[d.month],
            "MMM": _MONTHS[d.month][:3], "MM": f"{d.month:02d}", "Mo": _ordinal(d.month), "M": str(d.month),
            "DDDD": f"{d.timetuple().tm_yday:03d}", "DD": f"{d.day:02d}", "Do": _ordinal(d.day),
            "D": str(d.day), "dddd": _DAYS[wd], "ddd": _DAYS[wd][:3], "d": str(wd), "e": str(wd),
            "E": str(d.isoweekday()), "HH": f"{d.hour:02d}", "H": str(d.hour), "hh": f"{h12:02d}",
            "h": str(h12), "mm": f"{d.minute:02d}", "m": str(d.minute), "ss": f"{d.second:02d}",
            "s": str(d.second), "SSS": f"{d.microsecond // 1000:03d}", "A": "AM" if d.hour < 12 else "PM",
            "a": "am" if d.hour < 12 else "pm", "X": str(int(d.timestamp())),
            "x": str(int(d.timestamp() * 1000)), "ZZ": f"{sign}{oh:02d}{om:02d}",
            "Z": f"{sign}{oh:02d}:{om:02d}", "L": d.strftime("%m/%d/%Y"),
            "LL": f"{_MONTHS[d.month]} {d.day}, {d.year}",
            "LLL": f"{_MONTHS[d.month]} {d.day}, {d.year} {h12}:{d.minute:02d} {'AM' if d.hour < 12 else 'PM'}",
            "LLLL": f"{_DAYS[wd]}, {_MONTHS[d.month]} {d.day}, {d.year} {h12}:{d.minute:02d} "
                    f"{'AM' if d.hour < 12 else 'PM'}",
            "Q": str((d.month - 1) // 3 + 1), "w": str(int(d.strftime("%U")) + 1),
            "ww": f"{int(d.strftime('%U')) + 1:02d}",
        }[t]
    return _FMT_TOKENS.sub(tok, fmt)


def f_datetime_format(env, d, fmt=None):
    dt = _date(d)
    if fmt is None:
        return format_datetime(dt)  # UNVERIFIED: default is ISO UTC with milliseconds
    return _format(dt, _text(fmt))


_PARSE_TOKENS = {
    "YYYY": r"(?P<Y>\d{4})", "YY": r"(?P<y>\d{2})", "MMMM": r"(?P<MN>[A-Za-z]+)", "MMM": r"(?P<MN>[A-Za-z]{3})",
    "MM": r"(?P<M>\d{1,2})", "M": r"(?P<M>\d{1,2})", "DD": r"(?P<D>\d{1,2})", "D": r"(?P<D>\d{1,2})",
    "Do": r"(?P<D>\d{1,2})(?:st|nd|rd|th)", "HH": r"(?P<H>\d{1,2})", "H": r"(?P<H>\d{1,2})",
    "hh": r"(?P<h>\d{1,2})", "h": r"(?P<h>\d{1,2})", "mm": r"(?P<m>\d{1,2})", "m": r"(?P<m>\d{1,2})",
    "ss": r"(?P<s>\d{1,2})", "s": r"(?P<s>\d{1,2})", "SSS": r"(?P<S>\d{1,3})", "A": r"(?P<A>[AaPp][Mm])",
    "a": r"(?P<A>[AaPp][Mm])", "X": r"(?P<X>-?\d+(?:\.\d+)?)", "x": r"(?P<x>-?\d+)",
    "Z": r"(?P<Z>Z|[+-]\d{2}:?\d{2})", "ZZ": r"(?P<Z>Z|[+-]\d{2}:?\d{2})",
}
_PARSE_SPLIT = re.compile(r"\[[^\]]*\]|YYYY|YY|MMMM|MMM|MM|M|Do|DD|D|HH|H|hh|h|mm|m|ss|s|SSS|A|a|X|x|ZZ|Z")


def _parse_with_format(text: str, fmt: str) -> datetime:
    pattern, pos, used = [], 0, set()
    for m in _PARSE_SPLIT.finditer(fmt):
        pattern.append(re.escape(fmt[pos:m.start()]))
        t = m.group()
        if t.startswith("["):
            pattern.append(re.escape(t[1:-1]))
        else:
            rx = _PARSE_TOKENS[t]
            group = rx[4:rx.index(">")]
            if group in used:
                raise _Err
            used.add(group)
            pattern.append(rx)
        pos = m.end()
    pattern.append(re.escape(fmt[pos:]))
    parsed = re.match("".join(pattern) + r"\s*\Z", text.strip())
    if not parsed:
        raise _Err
    g = parsed.groupdict()
    if g.get("X"):
        return datetime.fromtimestamp(float(g["X"]), UTC)
    if g.get("x"):
        return datetime.fromtimestamp(int(g["x"]) / 1000, UTC)
    year = int(g["Y"]) if g.get("Y") else (2000 + int(g["y"]) if g.get("y") else 1970)
    if g.get("MN"):
        names = [n.lower() for n in _MONTHS]
        mn = g["MN"].lower()
        month = next((i for i, n in enumerate(names) if n and (n == mn or n[:3] == mn)), None)
        if month is None:
            raise _Err
    else:
        month = int(g.get("M") or 1)
    hour = int(g.get("H") or 0)
    if g.get("h"):
        hour = int(g["h"]) % 12
        if (g.get("A") or "am").lower() == "pm":
            hour += 12
    ms = g.get("S") or "0"
    tz = UTC
    if g.get("Z") and g["Z"] != "Z":
        z = g["Z"].replace(":", "")
        tz = timezone((1 if z[0] == "+" else -1) * timedelta(hours=int(z[1:3]), minutes=int(z[3:5])))
    return datetime(year, month, int(g.get("D") or 1), hour, int(g.get("m") or 0), int(g.get("s") or 0),
                    int(ms.ljust(3, "0")) * 1000, tzinfo=tz).astimezone(UTC)


def f_datetime_parse(env, text, fmt=None, locale=None):
    if isinstance(text, datetime):
        return text
    t = _text(text)
    if fmt is not None and not (isinstance(fmt, str) and fmt == ""):
        return _parse_with_format(t, _text(fmt))
    d = parse_datetime(t)
    if d is not None:
        return d
    # UNVERIFIED: a few common non-ISO shapes (US month/day/year, "January 2, 2024").
    for f in ("M/D/YYYY", "M/D/YYYY H:mm", "M/D/YYYY h:mm A", "MMMM D, YYYY", "MMM D, YYYY", "D MMMM YYYY",
              "YYYY/M/D", "YYYY-M-D"):
        try:
            return _parse_with_format(t, f)
        except (_Err, ValueError):
            continue
    raise _Err


def f_datestr(env, d): return _date(d).strftime("%Y-%m-%d")
def f_timestr(env, d): return _date(d).strftime("%H:%M:%S")
def f_day(env, d): return _date(d).day
def f_month(env, d): return _date(d).month
def f_year(env, d): return _date(d).year
def f_hour(env, d): return _date(d).hour
def f_minute(env, d): return _date(d).minute
def f_second(env, d): return _date(d).second


def _monday(start):
    return start is not None and _text(start).strip().lower() == "monday"


def f_weekday(env, d, start=None):
    wd = (_date(d).weekday() + 1) % 7  # Sunday = 0
    return (wd - 1) % 7 if _monday(start) else wd


def f_weeknum(env, d, start=None):
    dt = _date(d)
    jan1 = dt.replace(month=1, day=1)
    first = (jan1.weekday() if _monday(start) else (jan1.weekday() + 1) % 7)
    return (dt.timetuple().tm_yday - 1 + first) // 7 + 1


def f_is_after(env, a, b): return _date(a) > _date(b)
def f_is_before(env, a, b): return _date(a) < _date(b)


def f_is_same(env, a, b, unit=None):
    x, y = _date(a).astimezone(UTC), _date(b).astimezone(UTC)
    if unit is None:
        return x == y
    u = _unit(unit)
    keys = {"y": 1, "Q": 2, "M": 2, "w": 3, "d": 3, "h": 4, "m": 5, "s": 6, "ms": 7}[u]
    if u == "Q":
        return x.year == y.year and (x.month - 1) // 3 == (y.month - 1) // 3
    if u == "w":
        sx = (x - timedelta(days=(x.weekday() + 1) % 7)).date()
        sy = (y - timedelta(days=(y.weekday() + 1) % 7)).date()
        return sx == sy
    tx = (x.year, x.month, x.day, x.hour, x.minute, x.second, x.microsecond // 1000)[:keys]
    ty = (y.year, y.month, y.day, y.hour, y.minute, y.second, y.microsecond // 1000)[:keys]
    return tx == ty


def f_fromnow(env, d):
    # UNVERIFIED: whole days between the date and now, as an absolute number
    return abs(int((env.now() - _date(d)).total_seconds() / 86400))


def f_tonow(env, d):
    return abs(int((env.now() - _date(d)).total_seconds() / 86400))  # UNVERIFIED


def f_set_locale(env, d, loc):
    return _date(d)  # UNVERIFIED: locales only affect DATETIME_FORMAT, which supports English only


def f_set_timezone(env, d, tz):
    from zoneinfo import ZoneInfo
    try:
        return _date(d).astimezone(ZoneInfo(_text(tz)))
    except (ValueError, KeyError, OverflowError):  # an unknown zone name or an unparsable date
        raise _Err from None


def _holidays(h):
    if h is None:
        return set()
    out = set()
    for part in (flatten([h]) if isinstance(h, list) else _text(h).split(",")):
        p = _text(part).strip()
        if p:
            dd = parse_datetime(p)
            if dd is None:
                raise _Err
            out.add(dd.date())
    return out


def f_workday(env, start, n, holidays=None):
    d, k, hol = _date(start), _int(n), _holidays(holidays)
    if abs(k) > 100000:
        raise _Err
    step = 1 if k >= 0 else -1
    cur = d
    while k:
        cur += timedelta(days=step)
        if cur.weekday() < 5 and cur.date() not in hol:
            k -= step
    return cur


def f_workday_diff(env, start, end, holidays=None):
    a, b, hol = _date(start).date(), _date(end).date(), _holidays(holidays)
    sign = 1
    if b < a:
        a, b, sign = b, a, -1
    if (b - a).days > 400000:
        raise _Err
    count = 0
    cur = a
    while cur <= b:
        if cur.weekday() < 5 and cur not in hol:
            count += 1
        cur += timedelta(days=1)
    return sign * count  # UNVERIFIED: inclusive of both ends (NETWORKDAYS)


# ---------------------------------------------------------------- record / array
def f_record_id(env): return env.record_id()


def _array(v):
    if v is None:
        return []
    return list(v) if isinstance(v, list) else [v]


def f_arrayjoin(env, arr, sep=None):
    s = ", " if sep is None else _text(sep)  # UNVERIFIED: default separator ", "
    return s.join(_text(x) for x in flatten(_array(arr)))


def f_arrayunique(env, arr):
    out, seen = [], set()
    for x in _array(arr):
        key = repr(x)
        if key not in seen:
            seen.add(key)
            out.append(x)
    return out


def f_arraycompact(env, arr): return [x for x in _array(arr) if x is not None and x != ""]
def f_arrayflatten(env, arr): return flatten(_array(arr))


def f_arrayslice(env, arr, start, end=None):
    a = _array(arr)
    s = _int(start)
    si = s - 1 if s > 0 else (len(a) + s if s < 0 else 0)
    if end is None:
        return a[max(si, 0):]
    e = _int(end)
    ei = e if e > 0 else len(a) + e + 1
    return a[max(si, 0):max(ei, 0)]


def f_switch_equal(a, b):
    # UNVERIFIED: SWITCH matches patterns with the `=` operator's rules.
    r = compare("=", a, b)
    return r is True


FUNCTIONS = {
    "AND": f_and, "OR": f_or, "NOT": f_not, "XOR": f_xor, "BLANK": f_blank, "ERROR": f_error,
    "TRUE": f_true, "FALSE": f_false, "CONCATENATE": f_concatenate, "FIND": f_find, "SEARCH": f_search,
    "LEFT": f_left, "RIGHT": f_right, "MID": f_mid, "LEN": f_len, "LOWER": f_lower, "UPPER": f_upper,
    "TRIM": f_trim, "REPLACE": f_replace, "SUBSTITUTE": f_substitute, "REPT": f_rept, "T": f_t,
    "VALUE": f_value, "ENCODE_URL_COMPONENT": f_encode, "REGEX_MATCH": f_regex_match,
    "REGEX_EXTRACT": f_regex_extract, "REGEX_REPLACE": f_regex_replace, "ABS": f_abs, "AVERAGE": f_average,
    "CEILING": f_ceiling, "FLOOR": f_floor, "COUNT": f_count, "COUNTA": f_counta, "COUNTALL": f_countall,
    "EVEN": f_even, "ODD": f_odd, "EXP": f_exp, "INT": f_int, "LOG": f_log, "MAX": f_max, "MIN": f_min,
    "MOD": f_mod, "POWER": f_power, "ROUND": f_round, "ROUNDDOWN": f_rounddown, "ROUNDUP": f_roundup,
    "SQRT": f_sqrt, "SUM": f_sum, "CREATED_TIME": f_created_time, "LAST_MODIFIED_TIME": f_last_modified_time,
    "NOW": f_now, "TODAY": f_today, "DATEADD": f_dateadd, "DATETIME_DIFF": f_datetime_diff,
    "DATETIME_FORMAT": f_datetime_format, "DATETIME_PARSE": f_datetime_parse, "DATESTR": f_datestr,
    "TIMESTR": f_timestr, "DAY": f_day, "MONTH": f_month, "YEAR": f_year, "HOUR": f_hour,
    "MINUTE": f_minute, "SECOND": f_second, "WEEKDAY": f_weekday, "WEEKNUM": f_weeknum,
    "IS_AFTER": f_is_after, "IS_BEFORE": f_is_before, "IS_SAME": f_is_same, "FROMNOW": f_fromnow,
    "TONOW": f_tonow, "SET_LOCALE": f_set_locale, "SET_TIMEZONE": f_set_timezone, "WORKDAY": f_workday,
    "WORKDAY_DIFF": f_workday_diff, "RECORD_ID": f_record_id, "ARRAYJOIN": f_arrayjoin,
    "ARRAYUNIQUE": f_arrayunique, "ARRAYCOMPACT": f_arraycompact, "ARRAYFLATTEN": f_arrayflatten,
    "ARRAYSLICE": f_arrayslice,
}
assert set(FUNCTIONS) | LAZY == set(ARITY)
