"""Pure functions over Airtable records: emptiness, write semantics, ids, sort order, projection.

Nothing here does I/O, so the rules that decide what a read returns can be tested on plain dicts.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from airtable_cached.errors import WriteRejectedError
from airtable_cached.rules import ids

#: Provisional ids look like Airtable's (``rec`` + 14 alphanumerics) and carry a fixed marker.
PROVISIONAL_PREFIX = "recLOCAL"
_ALPHABET = string.ascii_letters + string.digits

#: Field types whose values Airtable computes: a write to them is rejected (422), and a cache cannot
#: know their value after a local write.
COMPUTED_TYPES = frozenset(
    {
        "formula",
        "rollup",
        "count",
        "lookup",
        "multipleLookupValues",
        "createdTime",
        "lastModifiedTime",
        "createdBy",
        "lastModifiedBy",
        "autoNumber",
        "button",
        "aiText",
    }
)

RECORD_ID_RE = ids.RECORD_ID_RE  # where errors can import it without a cycle: rules/ids.py


def new_provisional_id() -> str:
    return PROVISIONAL_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(17 - len(PROVISIONAL_PREFIX)))


def is_provisional(record_id: str) -> bool:
    return isinstance(record_id, str) and record_id.startswith(PROVISIONAL_PREFIX) and len(record_id) == 17


def now_iso(now: float | None = None) -> str:
    """Airtable's timestamp format: ISO-8601 UTC with milliseconds."""
    moment = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def is_empty(value: Any) -> bool:
    """Airtable omits these from a record's ``fields``: empty text, unchecked box, empty lists."""
    return value is None or value is False or value == "" or value == [] or value == {}


def clean_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if not is_empty(value)}


def apply_write(current: Mapping[str, Any] | None, op: str, written: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The fields after one write: PATCH merges, PUT replaces, delete removes the record."""
    if op == "delete":
        return None
    if op in ("create", "replace"):
        return clean_fields(written or {})
    merged = dict(current or {})
    merged.update(written or {})
    return clean_fields(merged)


class QueuedWrite(Protocol):
    """One queued write as :func:`replay` reads it (the store's ``Op`` is one)."""

    @property
    def op(self) -> str: ...

    @property
    def fields(self) -> dict | None: ...


def replay(remote_fields: dict | None, ops: Iterable[QueuedWrite]) -> dict | None:
    """What reads see: the remote state with the pending writes applied in order (a rebase)."""
    current = remote_fields
    for op in ops:
        if op.op == "create":
            current = apply_write(None, "create", op.fields)
        elif current is None:
            continue  # an update or delete of a record that is gone remotely
        else:
            current = apply_write(current, op.op, op.fields)
    return current


def loads(text: str) -> Any:
    """``json.loads``, four times quicker (msgspec) for what the cache stores; anything msgspec
    refuses (numbers out of a float's range, lone surrogates) is decoded by ``json.loads``."""
    try:
        return _decoder.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


_decoder = msgspec.json.Decoder()


def dumps(value: Any) -> str:
    """JSON as stored: compact, key order kept (Airtable's field order is meaningful to agents)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_serialisable(fields: Any, *, where: str) -> None:
    """Raise a clear error for a value Airtable could never receive."""
    if not isinstance(fields, Mapping):
        raise WriteRejectedError(f"{where}: fields must be a dict of field name to value, got {type(fields).__name__}")
    for name, value in fields.items():
        if not isinstance(name, str) or not name:
            raise WriteRejectedError(f"{where}: field names must be non-empty strings, got {name!r}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise WriteRejectedError(
                f"{where}: value of field {name!r} cannot be sent to Airtable ({type(value).__name__}: {exc})"
            ) from None


# -- sorting --------------------------------------------------------------------------------------

DATE_TYPES = frozenset({"date", "dateTime", "createdTime", "lastModifiedTime"})


def parse_iso_datetime(text: str) -> datetime | None:
    try:
        t = text.strip()
        if t.endswith("Z"):
            t = t[:-1] + "+00:00"
        moment = datetime.fromisoformat(t)
    except (ValueError, AttributeError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def plain_text(value: Any) -> str:
    """A cell item as text (select names, attachment file names, numbers without a trailing .0)."""
    if isinstance(value, dict):
        return str(value.get("name") or value.get("filename") or value.get("text") or value.get("label") or value.get("id") or "")
    if isinstance(value, bool):
        return "checked" if value else ""
    if isinstance(value, (int, float)):
        return format_number(value)
    return str(value)


def sort_key(value: Any, field: Mapping[str, Any] | None) -> tuple:
    """Sort key of one cell, Airtable's order as this project models it.

    MODELLING DECISION (Airtable does not document it): blanks sort FIRST ascending and so LAST
    descending. Text compares case-insensitively, numbers numerically, dates chronologically (as UTC
    instants), checkboxes unchecked before checked, single selects by the order of their choices
    (as Airtable's grid does), multiple selects by their list of choice positions. Values of an
    unexpected type get their own rank so that sorting never raises. The fake server shares it.
    """
    if is_empty(value):
        return (0,)
    ftype = (field or {}).get("type", "singleLineText")
    if ftype in ("singleSelect", "multipleSelects"):
        choices = [c.get("name") for c in (((field or {}).get("options") or {}).get("choices") or [])]
        items = value if isinstance(value, list) else [value]
        positions = tuple(choices.index(v) if v in choices else len(choices) for v in items)
        return (1, 0, positions, tuple(str(v).casefold() for v in items))
    if isinstance(value, bool):
        return (1, 1, int(value))
    if isinstance(value, (int, float)):
        return (1, 2, float(value))
    if isinstance(value, str):
        if ftype in DATE_TYPES:
            moment = parse_iso_datetime(value)
            if moment is not None:
                return (1, 3, moment.timestamp())
        return (1, 4, value.casefold())
    if isinstance(value, list):
        return (1, 4, ", ".join(plain_text(v) for v in value).casefold())
    return (1, 5, json.dumps(value, sort_keys=True))


def sort_records(records: list[dict], sort: Iterable[tuple[str, str]], schema_fields: Mapping[str, Mapping] | None = None) -> list[dict]:
    """Stable multi-key sort (last key first); ties keep the incoming (natural) order."""
    out = list(records)
    fields = schema_fields or {}
    for name, direction in reversed(list(sort)):
        field = fields.get(name)
        out.sort(key=lambda r: sort_key(r["fields"].get(name), field), reverse=direction == "desc")
    return out


def project(record: dict, names: list[str] | None) -> dict:
    """Keep only the requested fields (``fields[]``); unknown names are ignored as Airtable does."""
    if names is None:
        return record
    wanted = set(names)
    return {**record, "fields": {k: v for k, v in record["fields"].items() if k in wanted}}


def rename_to_ids(record: dict, name_to_id: Mapping[str, str]) -> dict:
    return {**record, "fields": {name_to_id.get(k, k): v for k, v in record["fields"].items()}}


def replace_ids(value: Any, mapping: Mapping[str, str]) -> Any:
    """Replace record ids inside link-field values (lists of ids) by their mapped ids."""
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, list):
        return [replace_ids(item, mapping) for item in value]
    if isinstance(value, dict):
        return {k: replace_ids(v, mapping) for k, v in value.items()}
    return value


def referenced_provisional_ids(fields: Mapping[str, Any] | None) -> set[str]:
    """Provisional ids a write refers to (link fields naming records not yet on Airtable)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if is_provisional(value):
                found.add(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for value in (fields or {}).values():
        walk(value)
    return found
