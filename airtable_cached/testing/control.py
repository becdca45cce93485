"""What a test does to the fake from outside the API: make bases, tables, views and fields, and
act as another Airtable user (edit, create, delete records) whose changes the cache must notice."""

from __future__ import annotations

import copy
from collections.abc import Iterable

from airtable_cached.testing.cells import is_empty
from airtable_cached.testing.model import Table, infer_schema, is_full_record
from airtable_cached.testing.writes import Writes


class Control(Writes):
    def add_base(self, base_id: str, name: str | None = None) -> str:
        with self._lock:
            base = self._bases.setdefault(base_id, {"name": name or f"Base {base_id}", "tables": []})
            if name:
                base["name"] = name
            return base_id

    def add_table(
        self,
        base_id: str,
        name: str,
        fields: list[dict] | None = None,
        records: Iterable[dict] = (),
        *,
        table_id: str | None = None,
        primary_field: str | None = None,
    ) -> str:
        with self._lock:
            self.add_base(base_id)
            records = list(records)
            plain = [r["fields"] if is_full_record(r) else r for r in records]
            schema = self._schema_with_ids(infer_schema(plain) if fields is None else fields)
            primary = schema[0] if primary_field is None else next(
                f for f in schema if f["name"] == primary_field or f["id"] == primary_field)
            table = Table(table_id or self._ids.new("tbl"), name, schema, primary["id"])
            table.base_id = base_id
            table.views.append({"id": self._ids.new("viw"), "name": "Grid view", "type": "grid", "formula": None, "sort": []})
            for raw, flds in zip(records, plain):
                self._seed_record(table, raw if flds is not raw else {}, flds)
            self._bases[base_id]["tables"].append(table)
            return table.id

    def _schema_with_ids(self, fields: list[dict]) -> list[dict]:
        """Copies of the fields with ids for them and their select options (a Name field if none)."""
        schema = []
        for f in fields:
            f = copy.deepcopy(f)
            f.setdefault("type", "singleLineText")
            f.setdefault("id", self._ids.new("fld"))
            for c in (f.get("options") or {}).get("choices") or []:
                c.setdefault("id", self._ids.new("sel"))
            schema.append(f)
        return schema or [{"type": "singleLineText", "id": self._ids.new("fld"), "name": "Name"}]

    def _seed_record(self, table: Table, given: dict, flds: dict) -> None:
        """One record of ``add_table``, keeping a given id and createdTime (``given``)."""
        stored = {}
        for k, v in flds.items():
            col = table.field(k)
            if col is None:
                raise KeyError(f"record field {k!r} is not in the schema of {table.name!r}")
            if not is_empty(v):
                stored[col["name"]] = copy.deepcopy(v)
        ts = self._tick()
        table.records.append({"id": given.get("id") or self._ids.new("rec"), "createdTime": given.get("createdTime") or ts,
                              "fields": stored, "_modified": ts})

    def add_view(
        self,
        base_id: str,
        table: str,
        name: str,
        *,
        formula: str | None = None,
        sort: Iterable[tuple[str, str]] = (),
    ) -> str:
        with self._lock:
            t = self._table_or_raise(base_id, table)
            vid = self._ids.new("viw")
            t.views.append({"id": vid, "name": name, "type": "grid", "formula": formula, "sort": list(sort)})
            return vid

    def add_field(self, base_id: str, table: str, field: dict) -> str:
        """Simulate a field added in Airtable's UI (``{"name", "type", "options"?}``); returns its id."""
        with self._lock:
            t = self._table_or_raise(base_id, table)
            added = {"id": self._ids.new("fld"), **copy.deepcopy(field)}
            t.fields.append(added)
            self._event(t, "field", added)
            self._publish_events()
            return str(added["id"])

    def records(self, base_id: str, table: str) -> list[dict]:
        with self._lock:
            t = self._table_or_raise(base_id, table)
            return [self._render(t, r) for r in t.records]

    def schema(self, base_id: str, table: str) -> dict:
        with self._lock:
            return self._table_schema(self._table_or_raise(base_id, table))

    def expire_offsets(self) -> None:
        """Make every outstanding list offset invalid (as after Airtable's inactivity timeout)."""
        with self._lock:
            self._iterators.clear()

    # -- another user's changes -----------------------------------------------------------------

    def set_fields(self, base_id: str, table: str, record_id: str, fields: dict) -> dict:
        """Simulate another user's edit (PATCH semantics, no type checks). Bumps the modified time."""
        with self._lock:
            t = self._table_or_raise(base_id, table)
            rec = t.find(record_id)
            if rec is None:
                raise KeyError(record_id)
            before = dict(rec["fields"])
            for k, v in fields.items():
                _set_cell(t, rec, k, v)
            self._sync_inverse(t, record_id, before, rec["fields"])
            rec["_modified"] = self._tick()
            self._event(t, "changed", rec)
            self._publish_events()
            return self._render(t, rec)

    def delete_record(self, base_id: str, table: str, record_id: str) -> None:
        """Simulate another user deleting a record."""
        with self._lock:
            t = self._table_or_raise(base_id, table)
            rec = t.find(record_id)
            if rec is None:
                raise KeyError(record_id)
            self._remove(t, rec)
            self._publish_events()

    def add_records(self, base_id: str, table: str, records: Iterable[dict]) -> list[dict]:
        """Simulate another user creating records (plain field dicts); returns them rendered."""
        with self._lock:
            t = self._table_or_raise(base_id, table)
            out = [self._render(t, self._add_record(t, flds)) for flds in records]
            self._publish_events()
            return out

    def _add_record(self, t: Table, flds: dict) -> dict:
        """As ``_insert``, but taking the values as given (no type checks, as another user's edit)."""
        ts = self._tick()
        stored = {t.known_field(k)["name"]: copy.deepcopy(v) for k, v in flds.items() if not is_empty(v)}
        rid = self._ids.new("rec")
        rec = {"id": rid, "createdTime": ts, "_modified": ts, "fields": stored}
        t.records.append(rec)
        self._event(t, "created", rec)
        self._sync_inverse(t, rid, {}, stored)
        return rec


def _set_cell(t: Table, rec: dict, key: str, value: object) -> None:
    f = t.field(key)
    if f is None:
        raise KeyError(f"unknown field {key!r}")
    if is_empty(value):
        rec["fields"].pop(f["name"], None)
    else:
        rec["fields"][f["name"]] = copy.deepcopy(value)
