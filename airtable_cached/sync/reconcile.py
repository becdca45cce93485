"""Creates whose answer was lost: find what they made, so every create reaches Airtable once.

A POST whose answer never came (a dropped connection, a 5xx after Airtable committed) may or may
not have made its records. Before it is sent again, the sync asks Airtable for the records such a
create would have made, and counts them against the creates of the same fields still in doubt:

* the lookup formula is a *superset* filter: it compares only what Airtable stores exactly as sent
  (text, numbers, a checked box, multiple selects through ``ARRAYJOIN``), and bounds
  ``CREATED_TIME()`` by Airtable's own clock (the ``Date`` header of an answer received before the
  create was sent), so the records a lost create made are never filtered out;
* records the cache saw before the create was queued, and records another create already adopted,
  are not candidates;
* with ``m`` candidates and ``k`` identical creates in doubt, ``m <= k`` settles it (adopt ``m``,
  send the rest again); ``m > k`` means someone else made identical records too, and nothing can
  tell which are ours: the creates are dead-lettered as "uncertain" for the operator rather than
  risk a second copy.

Everything here is pure: :mod:`airtable_cached.sync.core` does the requests and the bookkeeping.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from airtable_cached.rules.records import RECORD_ID_RE
from airtable_cached.sync.outbox import Send

#: Field types whose stored value can differ from what was sent (ids turned into objects, dates
#: rendered in a time zone, collaborators by email): left out of the lookup formula.
_NOT_COMPARABLE = frozenset({
    "multipleRecordLinks", "multipleAttachments", "singleCollaborator", "multipleCollaborators",
    "date", "dateTime", "createdTime", "lastModifiedTime", "button", "barcode",
    "richText",  # stored as Airtable's markdown: characters may come back escaped
})
#: Text stored exactly as sent.
_EXACT_TEXT = frozenset({"singleLineText", "email", "url", "phoneNumber", "singleSelect"})
#: Long text: Airtable may end it with a newline it adds (recorded: "bar" came back as "bar\n").
_LONG_TEXT = frozenset({"multilineText"})
_NUMBER_TYPES = frozenset({"number", "currency", "percent", "rating", "duration", "autoNumber"})
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?$")

#: Seconds taken off Airtable's clock reading: its ``Date`` header is truncated to the second, and
#: the edge that stamps it and the database that stamps ``createdTime`` may disagree a little.
CLOCK_MARGIN = 5.0


def group_key(send: Send) -> tuple[int, str]:
    """Creates with this key would make records no lookup can tell apart."""
    return send.tid, json.dumps(send.fields or {}, sort_keys=True, ensure_ascii=False)


def server_time(date_header: str | None) -> _dt.datetime | None:
    """Airtable's clock from an answer's ``Date`` header (``None`` when absent or unreadable)."""
    if not date_header:
        return None
    try:
        when = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=_dt.UTC)


def created_after(before_send: _dt.datetime | None) -> str | None:
    """The lower bound for ``CREATED_TIME()`` of what a create sent after ``before_send`` made."""
    if before_send is None:
        return None
    bound = before_send.astimezone(_dt.UTC) - _dt.timedelta(seconds=CLOCK_MARGIN)
    return bound.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def lookup_formula(fields: dict[str, Any], schema_fields: dict[str, dict], *, typecast: bool,
                   after: str | None) -> str:
    """A ``filterByFormula`` that every record made by a create of ``fields`` matches ("" = all)."""
    terms = []
    if after:
        terms.append(f"IS_AFTER(CREATED_TIME(), DATETIME_PARSE('{after}'))")
    for name, value in fields.items():
        term = _term(name, value, (schema_fields.get(name) or {}).get("type"), typecast)
        if term:
            terms.append(term)
    if not terms:
        return ""
    return terms[0] if len(terms) == 1 else "AND(" + ", ".join(terms) + ")"


def _term(name: str, value: Any, kind: str | None, typecast: bool) -> str | None:
    ref = "{" + name.replace("}", "\\}") + "}"
    if kind in _NOT_COMPARABLE:
        return None
    if isinstance(value, bool):
        # An unchecked box is blank: nothing to compare. A checked one is 1.
        return f"{ref}=TRUE()" if value and kind in (None, "checkbox") else None
    if isinstance(value, (int, float)):
        if kind not in (None, *_NUMBER_TYPES) or not math.isfinite(value) or value != int(value):
            return None  # rounded to the field's precision, or typecast into something else
        return f"{ref}={int(value)}"
    if isinstance(value, str):
        if not value or "\r" in value or (kind is None and _ISO_DATE.match(value)):
            return None  # blank, line ends Airtable may rewrite, or a date written as text
        if kind is not None and kind not in _EXACT_TEXT | _LONG_TEXT:
            return None  # text typecast into another type
        if typecast and kind is None:
            return None  # the field's type is unknown: typecast may have turned it into anything
        if kind in _EXACT_TEXT:
            return f"{ref}={_quote(value)}"
        # Long text (or a type not known): as sent, or with the newline Airtable appends.
        appended = _quote(value + "\n")
        return f"OR({ref}={_quote(value)}, {ref}={appended})"
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        if kind not in (None, "multipleSelects") or (kind is None and any(RECORD_ID_RE.match(v) for v in value)):
            return None  # links are seen by formulas as the linked records' names, not their ids
        if typecast and kind is None:
            return None
        return f"ARRAYJOIN({ref}, ', ')={_quote(', '.join(value))}"
    return None


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


@dataclass
class Settlement:
    """What to do with a group of identical creates in doubt, given the candidates found."""

    adopt: list[tuple[Send, dict]] = field(default_factory=list)  # a create and the record it made
    delete: list[dict] = field(default_factory=list)  # made by a create the agent deleted since
    resend: list[Send] = field(default_factory=list)  # made nothing: send again
    drop: list[Send] = field(default_factory=list)  # cancelled, and made nothing: just forget it
    uncertain: list[Send] = field(default_factory=list)  # nothing can tell: dead-letter for the operator


def settle(sends: list[Send], candidates: list[dict], in_doubt: int) -> Settlement:
    """Match ``candidates`` (records only these creates can have made) to ``sends`` (identical
    creates, some perhaps cancelled: kind ``none``), when ``in_doubt`` identical creates in all may
    have made them. Creates take records first; cancelled ones delete what is left for them."""
    out = Settlement()
    if len(candidates) > max(in_doubt, len(sends)):
        out.uncertain = list(sends)
        return out
    pool = sorted(candidates, key=lambda r: (r.get("createdTime") or "", r["id"]))
    creates = [s for s in sends if s.kind == "create"]
    cancelled = [s for s in sends if s.kind == "none"]
    for send in creates:
        if pool:
            out.adopt.append((send, pool.pop(0)))
        else:
            out.resend.append(send)
    for send in cancelled:
        if pool:
            out.delete.append(pool.pop(0))
        out.drop.append(send)
    return out
