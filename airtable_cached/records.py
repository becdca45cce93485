"""Pure functions over Airtable records: emptiness, write semantics, ids, sort order, projection.

Nothing here does I/O, so the rules that decide what a read returns can be tested on plain dicts.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import string
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

#: Provisional ids look like Airtable's (``rec`` + 14 alphanumerics) and carry a fixed marker.
PROVISIONAL_PREFIX = "recLOCAL"
_ALPHABET = string.ascii_letters + string.digits
RECORD_ID_RE = re.compile(r"^rec[A-Za-z0-9]{14}$")

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


def new_provisional_id() -> str:
    return PROVISIONAL_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(17 - len(PROVISIONAL_PREFIX)))


def is_provisional(record_id: str) -> bool:
    return isinstance(record_id, str) and record_id.startswith(PROVISIONAL_PREFIX) and len(record_id) == 17


def now_iso(now: float | None = None) -> str:
    """Airtable's timestamp format: ISO-8601 UTC with milliseconds."""
    moment = datetime.now(timezone.utc) if now is None else datetime.fromtimestamp(now, timezone.utc)
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


def dumps(value: Any) -> str:
    """JSON as stored: compact, key order kept (Airtable's field order is meaningful to agents)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_serialisable(fields: Any, *, where: str) -> None:
    """Raise a clear error for a value Airtable could never receive."""
    from airtable_cached.errors import WriteRejectedError

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
# Airtable sorts text case-insensitively, numbers numerically, dates chronologically. Blanks come
# first when ascending and last when descending (a modelling decision the fake server shares).


def _value_key(value: Any) -> tuple:
    if is_empty(value):
        return (0,)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (1, value if not math.isnan(value) else -math.inf)
    if isinstance(value, str):
        return (2, value.casefold(), value)
    if isinstance(value, list):
        return (3, tuple(_value_key(item) for item in value))
    if isinstance(value, dict):
        return (4, str(value.get("name") or value.get("email") or value.get("id") or ""))
    return (5, str(value))


class _Reversed:
    __slots__ = ("key",)

    def __init__(self, key: tuple):
        self.key = key

    def __lt__(self, other: "_Reversed") -> bool:
        return other.key < self.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and other.key == self.key


def sort_records(records: list[dict], sort: Iterable[tuple[str, str]]) -> list[dict]:
    """Stable multi-key sort; ties keep the incoming (natural) order."""
    keys = list(sort)
    if not keys:
        return records

    def key(record: dict) -> tuple:
        fields = record["fields"]
        parts = []
        for name, direction in keys:
            k = _value_key(fields.get(name))
            parts.append(_Reversed(k) if direction == "desc" else k)
        return tuple(parts)

    return sorted(records, key=key)


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
