"""Reads in the fake: list records with views, ``filterByFormula``, sort, paging by offset.

Filtering uses the project's own formula engine (``airtable_cached/formula``) and sorting the
project's own sort rule (``airtable_cached/rules/records.py``): the very code the cache answers
with. Where the fake and the cache agree on a formula or a sort, that shows they share the code,
not that either matches Airtable; see the ``airtable_cached.testing`` docstring.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterable
from typing import Any

from airtable_cached.formula import FormulaError, matches, parse
from airtable_cached.rules.records import sort_key
from airtable_cached.testing.cells import is_empty
from airtable_cached.testing.errors import FakeAirtableError, fail, invalid_request, unknown_field
from airtable_cached.testing.ids import counter_id
from airtable_cached.testing.model import Model, Table


class Reads(Model):
    #: Seconds of inactivity after which a list offset expires (422 LIST_RECORDS_ITERATOR_NOT_AVAILABLE).
    offset_ttl: float = 300.0

    def _list(self, t: Table, opts: dict) -> dict:
        page_size = _int_option(opts.get("pageSize"), default=100) or 0
        if not 1 <= page_size <= 100:
            raise invalid_request()
        max_records = _int_option(opts.get("maxRecords"), default=None)
        if max_records is not None and max_records < 1:
            raise invalid_request()
        only = _only_fields(t, opts)
        self._render_opts(t, {"id": "", "createdTime": "", "fields": {}}, opts)  # validate before any work
        itr, pos = self._iterator(t, opts, max_records)
        ids = itr["ids"]
        by_id = {r["id"]: r for r in t.records}
        records = [self._render_opts(t, by_id[rid], opts, only) for rid in ids[pos:pos + page_size] if rid in by_id]
        out: dict = {"records": records}
        if pos + page_size < len(ids):
            self._iterators[itr["token"]] = itr
            out["offset"] = f"{itr['token']}/{ids[pos + page_size]}"
        else:
            self._iterators.pop(itr["token"], None)
        return out

    def _iterator(self, t: Table, opts: dict, max_records: int | None) -> tuple[dict, int]:
        """The listing a page comes from (the one its offset names, or a new one) and the position."""
        now = time.monotonic()
        if opts.get("offset"):
            itr, pos = self._resolve_offset(t, str(opts["offset"]), now, opts)
        else:
            itr, pos = self._new_iterator(t, opts, max_records), 0
        itr["last_used"] = now
        return itr, pos

    def _new_iterator(self, t: Table, opts: dict, max_records: int | None) -> dict:
        ids = [r["id"] for r in self._query(t, opts)][:max_records]
        self._iter_counter += 1
        return {"token": "itr" + counter_id(self._iter_counter), "table": t.id, "ids": ids,
                "index": {rid: i for i, rid in enumerate(ids)}, "listing": _listing(opts)}

    def _resolve_offset(self, t: Table, offset: str, now: float, opts: dict) -> tuple[dict, int]:
        token, _, rid = offset.partition("/")
        itr = self._iterators.get(token)
        if itr is not None and now - itr["last_used"] > self.offset_ttl:
            self._iterators.pop(token, None)
            itr = None
        if itr is not None and itr.get("listing") != _listing(opts):
            itr = None  # an offset of another query (issue 9: Airtable refuses it as expired)
        if itr is None or itr["table"] != t.id or rid not in itr["index"]:
            raise fail(422, "LIST_RECORDS_ITERATOR_NOT_AVAILABLE", "LIST_RECORDS_ITERATOR_NOT_AVAILABLE")
        return itr, itr["index"][rid]

    def _query(self, t: Table, opts: dict) -> list[dict]:
        """Filter and order per view, formula and sort (MODELLING DECISION: explicit sort overrides the view's)."""
        records = list(t.records)
        sort_spec: list[tuple[dict, str]] = []
        if opts.get("view"):
            view = _view(t, opts["view"])
            if view["formula"]:
                records = self._filter(t, records, view["formula"])
            sort_spec = [(_sort_field(t, name), _direction(d)) for name, d in view["sort"]]
        if opts.get("filterByFormula"):
            records = self._filter(t, records, str(opts["filterByFormula"]))
        if opts.get("sort"):
            sort_spec = [(_sort_field(t, s.get("field")), _direction(s.get("direction"))) for s in opts["sort"]]
        return sort_records(records, sort_spec)

    def _filter(self, t: Table, records: list[dict], formula: str) -> list[dict]:
        node = _parsed(t, formula)
        field_ids = {f["id"]: f["name"] for f in t.fields}
        out = []
        for r in records:
            rd = {"id": r["id"], "createdTime": r["createdTime"], "fields": self._formula_cells(t, r["fields"]),
                  "lastModifiedTime": r["_modified"]}
            try:
                ok = matches(node, rd, field_ids=field_ids)
            except FormulaError:
                ok = False  # an error value excludes the record, as in Airtable
            if ok:
                out.append(r)
        return out

    def _formula_cells(self, t: Table, fields: dict) -> dict:
        """Cells as a formula sees them: a link reads as its records' primary values."""
        out = copy.deepcopy(fields)
        for f in t.fields:
            linked = self._linked_table(f) if f["type"] == "multipleRecordLinks" and f["name"] in out else None
            if linked is not None:
                primary = linked.primary_name()
                shown = [(linked.find(x) or {"fields": {}})["fields"].get(primary) for x in out[f["name"]]]
                out[f["name"]] = [v for v in shown if not is_empty(v)]
        return out


# Sorting -------------------------------------------------------------------------------------


def sort_records(records: list[dict], sort: list[tuple[dict, str]]) -> list[dict]:
    """Stable multi-key sort with the cache's own rule (``sort_key``): keys from the last to the first."""
    out = list(records)
    for field, direction in reversed(sort):
        name = field["name"]
        out.sort(key=lambda r: sort_key(r["fields"].get(name), field), reverse=(direction == "desc"))
    return out


def _sort_field(t: Table, name: Any) -> dict:
    f = t.field(name) if isinstance(name, str) else None
    if f is None:
        raise unknown_field(name)
    return f


def _direction(d: Any) -> str:
    d = (d or "asc").lower() if isinstance(d, str) or d is None else d
    if d not in ("asc", "desc"):
        raise invalid_request(f"Invalid sort direction: {d}")
    return str(d)


def _view(t: Table, ref: str) -> dict:
    view = next((v for v in t.views if v["id"] == ref), None) or next((v for v in t.views if v["name"] == ref), None)
    if view is None:
        # MODELLING DECISION: the type and message of Airtable's unknown-view error are a guess.
        raise fail(422, "VIEW_NAME_NOT_FOUND", f'View "{ref}" not found')
    return view


# Options -------------------------------------------------------------------------------------


def _only_fields(t: Table, opts: dict) -> set[str] | None:
    """The names of the fields asked for with ``fields[]`` (None: every field)."""
    if opts.get("fields") is None:
        return None
    only = set()
    for key in opts["fields"]:
        f = t.field(key)
        if f is None:
            raise unknown_field(key)
        only.add(f["name"])
    return only


def _listing(opts: dict) -> str:
    """The query an offset belongs to: every option but the offset and the page size."""
    return json.dumps({k: v for k, v in opts.items() if k not in ("offset", "pageSize")}, sort_keys=True, default=str)


def _int_option(value: Any, default: int | None) -> int | None:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise invalid_request()
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid_request() from None


_SORT_RE = re.compile(r"^sort\[(\d+)\]\[(field|direction)\]$")
_QUERY_OPTIONS = ("pageSize", "maxRecords", "offset", "view", "filterByFormula", "cellFormat", "timeZone",
                  "userLocale", "returnFieldsByFieldId")


def options_from_query(query: dict[str, list[str]]) -> dict:
    """List options from a GET query string (``fields[]``, ``sort[0][field]``, ...)."""
    opts: dict[str, Any] = {key: query[key][-1] for key in _QUERY_OPTIONS if key in query}
    if "fields[]" in query or "fields" in query:
        opts["fields"] = query.get("fields[]", []) + query.get("fields", [])
    sorts: dict[int, dict] = {}
    for key, values in query.items():
        m = _SORT_RE.match(key)
        if m:
            sorts.setdefault(int(m.group(1)), {})[m.group(2)] = values[-1]
    if sorts:
        opts["sort"] = [sorts[i] for i in sorted(sorts)]
    meta = query.get("recordMetadata[]", []) + query.get("recordMetadata", [])
    if meta:
        opts["recordMetadata"] = meta
    return opts


def options_from_body(body: dict) -> dict:
    """List options from the JSON body of ``POST .../listRecords``."""
    opts = {k: v for k, v in body.items() if v is not None}
    if "fields" in opts and not isinstance(opts["fields"], list):
        raise invalid_request()
    if "sort" in opts and (not isinstance(opts["sort"], list) or not all(isinstance(s, dict) for s in opts["sort"])):
        raise invalid_request()
    return opts


# Formulas ------------------------------------------------------------------------------------


def _parsed(t: Table, formula: str) -> Any:
    """The formula's syntax tree; a 422 naming unknown fields, or saying the formula is invalid."""
    try:
        node = parse(formula)
    except FormulaError as exc:
        _refuse_unknown(t, formula_field_references(formula))
        raise fail(422, "INVALID_FILTER_BY_FORMULA", f"The formula for filtering records is invalid: {exc}") from None
    _refuse_unknown(t, list(_ast_field_names(node)) + formula_field_references(formula))
    return node


def _refuse_unknown(t: Table, names: list[str]) -> None:
    unknown = list(dict.fromkeys(n for n in names if t.field(n) is None))
    if unknown:
        raise _unknown_fields_error(unknown)


def _unknown_fields_error(names: list[str]) -> FakeAirtableError:
    return fail(422, "INVALID_FILTER_BY_FORMULA",
                "The formula for filtering records is invalid: Unknown field names: " + ", ".join(n.lower() for n in names))


def formula_field_references(text: str) -> list[str]:
    """Names inside ``{...}`` in a formula, skipping string literals; ``\\}`` is an escaped brace."""
    refs: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            i = _after_string(text, i)
        elif c == "{":
            name, i = _braced(text, i)
            refs.append(name)
        else:
            i += 1
    return refs


def _after_string(text: str, i: int) -> int:
    """The index after the string literal opening at ``i``."""
    quote, i = text[i], i + 1
    while i < len(text) and text[i] != quote:
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _braced(text: str, i: int) -> tuple[str, int]:
    """The field name in the ``{...}`` opening at ``i``, and the index after it."""
    j, buf = i + 1, []
    while j < len(text) and text[j] != "}":
        if text[j] == "\\" and j + 1 < len(text):
            buf.append(text[j + 1])
            j += 2
            continue
        buf.append(text[j])
        j += 1
    return "".join(buf), j + 1


def _ast_field_names(node: Any, _depth: int = 0) -> Iterable[str]:
    """Names of field-reference nodes (class ``Field`` with a ``name``) anywhere in a formula AST."""
    if _depth > 500:
        return
    if type(node).__name__ == "Field" and isinstance(getattr(node, "name", None), str):
        yield node.name
        return
    children: Iterable[Any] = ()
    if isinstance(node, (list, tuple)):
        children = node
    elif hasattr(node, "__dataclass_fields__"):
        children = [getattr(node, k) for k in node.__dataclass_fields__]
    for child in children:
        yield from _ast_field_names(child, _depth + 1)
