"""Cell values in the fake: what a write may put in a field (type checks, ``typecast``) and how a
stored value reads back as ``cellFormat=string``. The number and date rules are the project's own
(``airtable_cached/rules/records.py``), shared with the cache."""

from __future__ import annotations

import copy
import datetime as _dt
import re
import zlib
from collections.abc import Callable
from typing import Any

from airtable_cached.rules.records import format_number, parse_iso_datetime, plain_text
from airtable_cached.testing.errors import cannot_accept, fail
from airtable_cached.testing.ids import counter_id, iso

#: Field types whose values Airtable computes; writing them is a 422.
COMPUTED_TYPES = frozenset(
    {
        "formula", "rollup", "multipleLookupValues", "lookup", "count", "createdTime",
        "lastModifiedTime", "autoNumber", "createdBy", "lastModifiedBy", "button",
    }
)
NUMBER_TYPES = frozenset({"number", "currency", "percent", "rating", "duration", "autoNumber", "count"})
TEXT_TYPES = frozenset({"singleLineText", "multilineText", "richText", "email", "url", "phoneNumber"})
#: Pending select options of a write, by field id (made when the write is applied).
Pending = dict[str, Any]


def is_empty(value: Any) -> bool:
    """Airtable omits these values from ``fields``."""
    return value is None or value is False or value == "" or value == [] or value == {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Writes: one converter per field type --------------------------------------------------------


def _number(f: dict, value: Any, typecast: bool, pending: Pending) -> Any:
    if _is_number(value):
        return value
    if not (typecast and isinstance(value, str)):
        raise cannot_accept(f)
    text = value.strip().replace(",", "")
    try:
        num = float(text)
    except ValueError:
        return None  # blank, or MODELLING DECISION: an unparseable typecast number becomes blank
    return int(num) if num.is_integer() else num


def _checkbox(f: dict, value: Any, typecast: bool, pending: Pending) -> Any:
    if isinstance(value, bool):
        return value
    if typecast and isinstance(value, (str, int, float)):
        return str(value).strip().lower() in ("1", "true", "yes", "checked", "on", "x")
    raise cannot_accept(f)


def _single_select(f: dict, value: Any, typecast: bool, pending: Pending) -> Any:
    if typecast and _is_number(value):
        value = format_number(value)
    if not isinstance(value, str):
        raise cannot_accept(f)
    _note_choices(f, [value] if value != "" else [], typecast, pending)
    return value


def _multiple_selects(f: dict, value: Any, typecast: bool, pending: Pending) -> Any:
    if typecast and isinstance(value, str):
        value = [x.strip() for x in value.split(",") if x.strip()]
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise cannot_accept(f)
    _note_choices(f, value, typecast, pending)
    return list(dict.fromkeys(value))


def _note_choices(f: dict, items: list[str], typecast: bool, pending: Pending) -> None:
    """Options not in the field: a 422, or with ``typecast`` options to add when the write applies."""
    choices = [c.get("name") for c in ((f.get("options") or {}).get("choices") or [])]
    for item in items:
        if item in choices:
            continue
        if not typecast:
            raise fail(422, "INVALID_MULTIPLE_CHOICE_OPTIONS", f'Insufficient permissions to create new select option ""{item}""')
        added = pending.setdefault(f["id"], [])
        if item not in added:
            added.append(item)


def _text(f: dict, value: Any, typecast: bool, pending: Pending) -> Any:
    if isinstance(value, str):
        return _rich_text(value) if f["type"] == "richText" else value
    if typecast and _is_number(value):
        return format_number(value)
    raise cannot_accept(f)


def _rich_text(value: str) -> str:
    """Rich text as Airtable stores it: Markdown ending with a newline (recorded: refine's create of
    "bar" answered "bar\n"), its "* " list items written "- " (recorded: grouparoo's create of
    "#header\n* bullet" answered "#header\n- bullet\n")."""
    if not value:
        return value
    value = _BULLET.sub("- ", value)
    return value if value.endswith("\n") else value + "\n"


_BULLET = re.compile(r"^\* ", re.MULTILINE)


def _date(f: dict, value: Any, typecast: bool, pending: Pending) -> Any:
    if not isinstance(value, str):
        raise cannot_accept(f)
    d = parse_iso_datetime(value) if "T" in value else None
    try:
        return d.date().isoformat() if d else _dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise cannot_accept(f) from None


def _date_time(f: dict, value: Any, typecast: bool, pending: Pending) -> Any:
    if _is_number(value):
        return iso(_dt.datetime.fromtimestamp(value / 1000, tz=_dt.UTC))
    d = parse_iso_datetime(value) if isinstance(value, str) else None
    if d is None:
        raise cannot_accept(f)
    return iso(d)


def _links(f: dict, value: Any, typecast: bool, pending: Pending) -> Any:
    if typecast and isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return list(value)
    if isinstance(value, list) and all(isinstance(x, dict) and "id" in x for x in value):
        return [x["id"] for x in value]
    raise cannot_accept(f)


def _attachments(f: dict, value: Any, typecast: bool, pending: Pending) -> Any:
    if not isinstance(value, list) or not all(isinstance(x, dict) and ("url" in x or "id" in x) for x in value):
        raise cannot_accept(f)
    return [_attachment(i, x) for i, x in enumerate(value)]


def _attachment(i: int, given: dict) -> dict:
    """An attachment as stored: a stable id, and a file name taken from the URL when none is given."""
    att = dict(given)
    att.setdefault("id", "att" + counter_id(zlib.crc32(f"{i}:{att.get('url', '')}".encode()) + 1))
    if "url" in att:
        att.setdefault("filename", att["url"].rstrip("/").rsplit("/", 1)[-1] or "file")
    return att


def _any(f: dict, value: Any, typecast: bool, pending: Pending) -> Any:
    return copy.deepcopy(value)


_Converter = Callable[[dict, Any, bool, Pending], Any]
_CONVERTERS: dict[str, _Converter] = {
    **dict.fromkeys(NUMBER_TYPES, _number), **dict.fromkeys(TEXT_TYPES, _text),
    "checkbox": _checkbox, "singleSelect": _single_select, "multipleSelects": _multiple_selects,
    "date": _date, "dateTime": _date_time, "multipleRecordLinks": _links, "multipleAttachments": _attachments,
}


def convert_value(f: dict, value: Any, typecast: bool, pending_choices: Pending) -> Any:
    """Type checks and ``typecast`` conversions for one written value. None means clear."""
    if value is None:
        return None
    if f["type"] in NUMBER_TYPES and isinstance(value, bool):
        raise cannot_accept(f)
    return _CONVERTERS.get(f["type"], _any)(f, value, typecast, pending_choices)


# Reads: cellFormat=string ---------------------------------------------------------------------


def _format_date(value: str, locale: str) -> str:
    try:
        d = _dt.date.fromisoformat(value[:10])
    except ValueError:
        return value
    loc = (locale or "").lower()
    if loc in ("en-us", "en"):
        return f"{d.month}/{d.day}/{d.year}"
    if loc.startswith("en-") or loc[:2] in ("fr", "de", "es", "it", "nl", "pt"):
        return f"{d.day:02d}/{d.month:02d}/{d.year}"
    return d.isoformat()


def _in_zone(d: _dt.datetime, tz: str) -> _dt.datetime:
    try:
        from zoneinfo import ZoneInfo

        return d.astimezone(ZoneInfo(tz))
    except Exception:  # noqa: BLE001 - unknown zone: keep UTC
        return d


def _format_datetime(value: str, tz: str, locale: str) -> str:
    d = parse_iso_datetime(value)
    if d is None:
        return value
    d = _in_zone(d, tz)
    date_part = _format_date(d.date().isoformat(), locale)
    if (locale or "").lower() in ("en-us", "en"):
        hour = d.hour % 12 or 12
        return f"{date_part} {hour}:{d.minute:02d}{'am' if d.hour < 12 else 'pm'}"
    return f"{date_part} {d.hour:02d}:{d.minute:02d}"


def _string_to_string(value: str, ftype: Any, tz: str, locale: str) -> str:
    if ftype == "date":
        return _format_date(value, locale)
    if ftype in ("dateTime", "createdTime", "lastModifiedTime"):
        return _format_datetime(value, tz, locale)
    return value


def cell_to_string(value: Any, field: dict | None, tz: str, locale: str) -> str:
    """MODELLING DECISION: an approximation of ``cellFormat=string``.

    Arrays are joined with ", "; numbers as text without a trailing ".0"; a checked checkbox is
    "checked"; dates follow the locale (en-us M/D/YYYY, other en-*/European DD/MM/YYYY, else ISO),
    date-times are converted to ``timeZone``; attachments are "filename (url)"; collaborators their
    name; link fields stay record ids (the fake knows no primary values of linked tables).
    """
    if isinstance(value, list):
        return ", ".join(cell_to_string(v, field, tz, locale) for v in value)
    if isinstance(value, dict) and "url" in value and "filename" in value:
        return f"{value['filename']} ({value['url']})"
    if isinstance(value, str):
        return _string_to_string(value, (field or {}).get("type"), tz, locale)
    return plain_text(value)
