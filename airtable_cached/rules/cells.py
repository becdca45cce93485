"""Written cell values checked and converted as Airtable does, before a write is queued.

A call Airtable would refuse must be refused at the call, with Airtable's status and body, and a
call it would accept must read back as Airtable would store it (``typecast`` included). The rules
here are pure: the caller supplies what needs the database (whether a linked record exists, the id
a provisional id was given).

Where the outcome of ``typecast`` cannot be known locally (a link given by primary value, an
attachment, a collaborator, a number that does not parse), :func:`convert_fields` says so and the
caller sends that call to Airtable at once instead of guessing.

The rules follow the bundled fake server's (``airtable_cached/testing/cells.py``), which models Airtable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from airtable_cached.errors import AirtableResponseError
from airtable_cached.rules.records import RECORD_ID_RE, format_number, parse_iso_datetime

NUMBER_TYPES = frozenset({"number", "currency", "percent", "rating", "duration"})
TEXT_TYPES = frozenset({"singleLineText", "multilineText", "richText", "email", "url", "phoneNumber"})
#: Types whose typecast result only Airtable knows.
AIRTABLE_ONLY_TYPECAST = frozenset({"multipleAttachments", "singleCollaborator", "multipleCollaborators"})
#: Types that cannot be an upsert key (MODELLING DECISION, shared with the fake server: values
#: that are lists or objects have no single value to match on).
NOT_A_KEY = frozenset({"multipleRecordLinks", "multipleAttachments", "multipleSelects", "multipleCollaborators",
                       "singleCollaborator", "checkbox"})


@dataclass
class Converted:
    """One record's fields as Airtable would store them."""

    fields: dict[str, Any]
    #: Select options ``typecast`` adds to the schema: field name -> new option names, in order.
    new_choices: dict[str, list[str]] = field(default_factory=dict)
    #: Why only Airtable can tell the result (``None``: the result is certain).
    needs_airtable: str | None = None


#: ``link_state(linked_table_id, record_id)``: True (exists), False (surely does not), None (unknown).
LinkState = Callable[[str, str], bool | None]


def cannot_accept(name: str) -> AirtableResponseError:
    return AirtableResponseError.typed(422, "INVALID_VALUE_FOR_COLUMN", f'Field "{name}" cannot accept the provided value')


def convert_fields(schema: Mapping[str, Mapping], fields: Mapping[str, Any], *, typecast: bool,
                   link_state: LinkState, translate: Callable[[str], str], new_choices: dict[str, list[str]] | None = None) -> Converted:
    """Check and convert one record's written values (``fields`` keyed by field name, every name in
    ``schema``). ``translate`` maps a provisional id to the id Airtable gave it. ``new_choices``
    carries select options added by earlier records of the same call."""
    out = Converted({}, new_choices if new_choices is not None else {})
    for name, value in fields.items():
        spec = schema[name]
        out.fields[name] = _convert(spec, name, value, typecast, out, link_state, translate)
    return out


def _convert(spec: Mapping, name: str, value: Any, typecast: bool, out: Converted, link_state: LinkState,
             translate: Callable[[str], str]) -> Any:
    if value is None:
        return None
    ftype = spec.get("type")
    if ftype in NUMBER_TYPES:
        return _number(name, value, typecast, out)
    if ftype == "checkbox":
        if isinstance(value, bool):
            return value
        if typecast and isinstance(value, (str, int, float)):
            return str(value).strip().lower() in ("1", "true", "yes", "checked", "on", "x")
        raise cannot_accept(name)
    if ftype in ("singleSelect", "multipleSelects"):
        return _select(spec, name, value, typecast, out)
    if ftype in TEXT_TYPES:
        if isinstance(value, str):
            # Airtable stores rich text as Markdown ending with a newline (as the fake server does).
            return value + "\n" if ftype == "richText" and value and not value.endswith("\n") else value
        if typecast and isinstance(value, (int, float)) and not isinstance(value, bool):
            return format_number(value)
        raise cannot_accept(name)
    if ftype == "date":
        return _date(name, value)
    if ftype == "dateTime":
        return _date_time(name, value)
    if ftype == "multipleRecordLinks":
        return _links(spec, name, value, typecast, out, link_state, translate)
    if ftype == "multipleAttachments":
        if not isinstance(value, list) or not all(isinstance(x, dict) and ("url" in x or "id" in x) for x in value):
            raise cannot_accept(name)
        out.needs_airtable = out.needs_airtable or f"Airtable fills in attachments of field {name!r}"
        return value
    if typecast and ftype in AIRTABLE_ONLY_TYPECAST:
        out.needs_airtable = out.needs_airtable or f"typecast of {ftype} field {name!r}"
    return value


def _number(name: str, value: Any, typecast: bool, out: Converted) -> Any:
    if isinstance(value, bool):
        raise cannot_accept(name)
    if isinstance(value, (int, float)):
        return value
    if typecast and isinstance(value, str):
        text = value.strip().replace(",", "")
        if text == "":
            return None
        try:
            number = float(text)
        except ValueError:
            out.needs_airtable = out.needs_airtable or f"{value!r} is not a number Airtable's typecast is known to read"
            return value
        return int(number) if number.is_integer() else number
    raise cannot_accept(name)


def _select(spec: Mapping, name: str, value: Any, typecast: bool, out: Converted) -> Any:
    choices = [c.get("name") for c in ((spec.get("options") or {}).get("choices") or [])]
    added = out.new_choices.setdefault(name, [])
    if spec.get("type") == "singleSelect":
        if typecast and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = format_number(value)
        if not isinstance(value, str):
            raise cannot_accept(name)
        items = [value] if value != "" else []
    else:
        if typecast and isinstance(value, str):
            value = [x.strip() for x in value.split(",") if x.strip()]
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise cannot_accept(name)
        items = value
    for item in items:
        if item in choices or item in added:
            continue
        if not typecast:
            raise AirtableResponseError.typed(
                422, "INVALID_MULTIPLE_CHOICE_OPTIONS", f'Insufficient permissions to create new select option ""{item}""'
            )
        added.append(item)
    if not added:
        out.new_choices.pop(name, None)
    return value if spec.get("type") == "singleSelect" else list(dict.fromkeys(items))


def _date(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise cannot_accept(name)
    moment = parse_iso_datetime(value) if "T" in value else None
    try:
        return moment.date().isoformat() if moment else date.fromisoformat(value).isoformat()
    except ValueError:
        raise cannot_accept(name) from None


def _date_time(name: str, value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _iso(datetime.fromtimestamp(value / 1000, tz=UTC))
    if isinstance(value, str):
        moment = parse_iso_datetime(value)
        if moment is None:
            raise cannot_accept(name)
        return _iso(moment)
    raise cannot_accept(name)


def _iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _links(spec: Mapping, name: str, value: Any, typecast: bool, out: Converted, link_state: LinkState,
           translate: Callable[[str], str]) -> Any:
    if typecast and isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(x, dict) and "id" in x for x in value):
        value = [x["id"] for x in value]
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise cannot_accept(name)
    linked = (spec.get("options") or {}).get("linkedTableId") or ""
    ids = []
    for item in value:
        item = translate(item)
        state = link_state(linked, item)
        if state is False or (state is None and not RECORD_ID_RE.match(item)):
            if typecast:
                # Airtable looks the text up by primary value (and may make a record): ask it.
                out.needs_airtable = out.needs_airtable or f"link field {name!r} given by primary value"
            elif not RECORD_ID_RE.match(item):
                raise cannot_accept(name)
            else:
                raise AirtableResponseError.typed(422, "ROW_DOES_NOT_EXIST", f"Record ID {item} does not exist")
        ids.append(item)
    return list(dict.fromkeys(ids))


def check_merge_keys(schema: Mapping[str, Mapping], merge_on: list[str]) -> None:
    """Refuse an upsert key Airtable does not accept: unknown, computed, or with no single value."""
    from airtable_cached.rules.records import COMPUTED_TYPES

    for key in merge_on:
        spec = schema.get(key)
        if spec is None:
            raise AirtableResponseError.typed(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{key}"')
        if spec.get("type") in COMPUTED_TYPES or spec.get("type") in NOT_A_KEY:
            raise AirtableResponseError.typed(
                422, "INVALID_VALUE_FOR_COLUMN", f'Field "{key}" cannot be used in fieldsToMergeOn'
            )


def check_merge_values(fields: Mapping[str, Any], merge_on: list[str]) -> None:
    """An upsert record without a value for every key field is refused (blank counts as none)."""
    from airtable_cached.rules.records import is_empty

    missing = [key for key in merge_on if is_empty(fields.get(key))]
    if missing:
        raise AirtableResponseError.typed(
            422, "INVALID_RECORDS", f"Missing value for fieldsToMergeOn field(s): {', '.join(missing)}"
        )
