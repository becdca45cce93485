"""The fake's data: bases holding tables of fields, views and records, the logical clock, the
change events its webhooks publish, and how a stored record is rendered in an answer."""

from __future__ import annotations

import copy
import datetime as _dt
import re
import threading
from typing import Any

from airtable_cached.testing.cells import cell_to_string, is_empty
from airtable_cached.testing.errors import invalid_request
from airtable_cached.testing.ids import BASE_INSTANT, IdGen, iso
from airtable_cached.testing.webhooks import Webhooks

RECORD_ID_RE = re.compile(r"^rec[0-9A-Za-z]{14}$")


class Table:
    """One table: schema dicts (with ids) in order, views, and records in insertion order. A record
    is ``{"id", "createdTime", "fields" (by field name), "_modified"}``."""

    def __init__(self, tid: str, name: str, fields: list[dict], primary_id: str):
        self.id = tid
        self.name = name
        self.fields = fields
        self.primary_id = primary_id
        self.base_id = ""
        self.records: list[dict] = []
        self.views: list[dict] = []  # {"id","name","type","formula","sort"}

    def field(self, key: str) -> dict | None:
        for f in self.fields:
            if f["name"] == key or f["id"] == key:
                return f
        return None

    def by_name(self) -> dict[str, dict]:
        return {f["name"]: f for f in self.fields}

    def find(self, record_id: str) -> dict | None:
        for r in self.records:
            if r["id"] == record_id:
                return r
        return None

    def known_field(self, key: str) -> dict:
        """A field the request was already checked to name (a KeyError here is a bug in the fake)."""
        found = self.field(key)
        if found is None:
            raise KeyError(key)
        return found

    def known_record(self, record_id: str) -> dict:
        """A record the request was already checked to name (a KeyError here is a bug in the fake)."""
        found = self.find(record_id)
        if found is None:
            raise KeyError(record_id)
        return found

    def primary_name(self) -> str:
        return self.known_field(self.primary_id)["name"]


class Model:
    """The state every part of the fake works on, and the lookups and rendering they share."""

    def __init__(self, seed: int, webhook_access: bool):
        self._lock = threading.RLock()
        self._ids = IdGen(seed)
        self._clock: float = 0
        self._bases: dict[str, dict] = {}  # base id -> {"name", "tables": list[Table]}
        self._iterators: dict[str, dict] = {}
        self._iter_counter = 0
        #: The webhooks API (see airtable_cached/testing/webhooks.py); ``webhooks.access = False``
        #: answers 403 as for a token without the webhook:manage scope.
        self.webhooks = Webhooks(self._ids.new, self._now_instant)
        self.webhooks.access = webhook_access
        self._events: list[tuple[str, str, str, Any]] = []  # published when the request succeeds

    # -- clock ----------------------------------------------------------------------------------

    def _tick(self) -> str:
        """The logical clock: base instant + one second per event (deterministic)."""
        self._clock += 1
        return iso(self._now_instant())

    def now(self) -> str:
        """The logical clock's current time (ISO, UTC, ms); the last createdTime/modified time issued."""
        with self._lock:
            return iso(self._now_instant())

    def _now_instant(self) -> _dt.datetime:
        return BASE_INSTANT + _dt.timedelta(seconds=self._clock)

    def advance_clock(self, seconds: float) -> None:
        """Let time pass on the server (webhook expiry, payload retention, the Date header)."""
        with self._lock:
            self._clock += seconds

    # -- change events (webhook payloads) -------------------------------------------------------

    def _event(self, t: Table, kind: str, item: Any) -> None:
        self._events.append((t.base_id, t.id, kind, item))

    def _publish_events(self) -> None:
        events, self._events = self._events, []
        for base_id, table_id, kind, item in events:
            self.webhooks.publish(base_id, table_id, kind, item)

    # -- lookups --------------------------------------------------------------------------------

    def _table_or_raise(self, base_id: str, table: str) -> Table:
        t = self._find_table(base_id, table)
        if t is None:
            raise KeyError(f"no table {table!r} in base {base_id!r}")
        return t

    def _find_table(self, base_id: str, table: str) -> Table | None:
        tables = self._bases.get(base_id, {}).get("tables", [])
        return next((t for t in tables if t.id == table), None) or next((t for t in tables if t.name == table), None)

    def _find_table_by_id(self, table_id: str) -> Table | None:
        tables = (t for base in self._bases.values() for t in base["tables"])
        return next((t for t in tables if t.id == table_id), None)

    def _linked_table(self, f: dict) -> Table | None:
        """The table a link field points at (None if it names no table of the fake)."""
        return self._find_table_by_id(((f.get("options") or {}).get("linkedTableId")) or "")

    # -- rendering ------------------------------------------------------------------------------

    def _table_schema(self, t: Table) -> dict:
        fields = [{"type": f["type"], "id": f["id"], "name": f["name"], **copy.deepcopy(f)} for f in t.fields]
        return {
            "id": t.id, "name": t.name, "primaryFieldId": t.primary_id, "fields": fields,
            "views": [{"id": v["id"], "name": v["name"], "type": v["type"]} for v in t.views],
        }

    def _render(self, t: Table, rec: dict, *, by_id: bool = False, only: set[str] | None = None,
                cell_format: str = "json", tz: str = "", locale: str = "", comment_count: bool = False) -> dict:
        fields = {}
        for f in t.fields:  # schema order
            value = rec["fields"].get(f["name"])
            if is_empty(value) or (only is not None and f["name"] not in only):
                continue
            value = cell_to_string(value, f, tz, locale) if cell_format == "string" else copy.deepcopy(value)
            fields[f["id"] if by_id else f["name"]] = value
        out = {"id": rec["id"], "fields": fields, "createdTime": rec["createdTime"]}
        if comment_count:
            out["commentCount"] = 0
        return out

    def _render_opts(self, t: Table, rec: dict, opts: dict, only: set[str] | None = None) -> dict:
        cell_format = opts.get("cellFormat") or "json"
        if cell_format not in ("json", "string"):
            raise invalid_request(f"Invalid cellFormat: {cell_format}")
        tz, locale = opts.get("timeZone") or "", opts.get("userLocale") or ""
        if cell_format == "string" and (not tz or not locale):
            raise invalid_request("The 'timeZone' and 'userLocale' parameters are required when 'cellFormat' is 'string'")
        return self._render(
            t, rec, by_id=truthy_param(opts.get("returnFieldsByFieldId")), only=only, cell_format=cell_format,
            tz=tz, locale=locale, comment_count="commentCount" in (opts.get("recordMetadata") or []),
        )


def truthy_param(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def is_full_record(r: dict) -> bool:
    """``{"id"?, "createdTime"?, "fields"}`` (Airtable shape) rather than a plain field dict."""
    return isinstance(r.get("fields"), dict) and set(r) <= {"id", "createdTime", "fields"}


def _inferred_type(v: Any) -> str:
    if isinstance(v, bool):
        return "checkbox"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return "multipleSelects"
    return "singleLineText"


def infer_schema(records: list[dict]) -> list[dict]:
    """MODELLING DECISION: infer field types from values (bool -> checkbox, number -> number, list of
    str -> multipleSelects with the values seen as choices, anything else -> singleLineText)."""
    order: dict[str, dict] = {}
    for flds in records:
        for k, v in flds.items():
            f = order.setdefault(k, {"name": k, "type": None})
            if f["type"] is None and not is_empty(v):
                f["type"] = _inferred_type(v)
            if isinstance(v, list) and f["type"] == "multipleSelects":
                _add_choices(f, v)
    for f in order.values():
        f["type"] = f["type"] or "singleLineText"
        if f["type"] == "number":
            f.setdefault("options", {"precision": 0})
    return list(order.values())


def _add_choices(f: dict, values: list[str]) -> None:
    choices = f.setdefault("options", {"choices": []})["choices"]
    for x in values:
        if x not in [c["name"] for c in choices]:
            choices.append({"name": x, "color": "grayLight2"})
