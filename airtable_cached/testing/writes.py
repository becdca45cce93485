"""Writes in the fake: create, update (PATCH/PUT), upsert and delete, checked as Airtable checks
them; a request that fails changes nothing."""

from __future__ import annotations

import copy
from typing import Any

from airtable_cached.testing.cells import COMPUTED_TYPES, Pending, convert_value, is_empty
from airtable_cached.testing.errors import (
    FakeAirtableError,
    fail,
    invalid_records,
    invalid_request,
    no_such_row,
    unknown_field,
)
from airtable_cached.testing.links import NEW_LINK, Links
from airtable_cached.testing.model import Table

_TOO_MANY = "You must provide an array of up to 10 record objects, each with an \"id\" field and a \"fields\" object"
_NOT_A_MERGE_KEY = frozenset({"multipleRecordLinks", "multipleAttachments", "multipleSelects", "multipleCollaborators",
                              "singleCollaborator", "checkbox"})


class Writes(Links):
    # -- checking what is written ---------------------------------------------------------------

    def _convert_fields(self, t: Table, fields: Any, typecast: bool, pending_choices: Pending) -> dict[str, Any]:
        """Validate and convert one record's written fields; returns {name: value or None}."""
        if not isinstance(fields, dict):
            raise invalid_request()
        out: dict[str, Any] = {}
        for key, value in fields.items():
            f = t.field(key)
            if f is None:
                raise unknown_field(key)
            if f["type"] in COMPUTED_TYPES:
                raise fail(422, "INVALID_VALUE_FOR_COLUMN", f'Field "{f["name"]}" cannot accept a value because the field is computed')
            out[f["name"]] = convert_value(f, value, typecast, pending_choices)
            if f["type"] == "multipleRecordLinks" and out[f["name"]] is not None:
                out[f["name"]] = self._check_links(f, out[f["name"]], typecast, pending_choices)
        return out

    def _prepare(self, t: Table, field_dicts: list[Any], body: dict) -> list[dict]:
        """Convert every record's fields, then make what typecast asked for (linked records,
        select options): all checks pass before anything changes."""
        pending: Pending = {}
        converted = [self._convert_fields(t, fields, bool(body.get("typecast")), pending) for fields in field_dicts]
        self._make_pending_links(pending, converted)
        self._commit_choices(t, pending)
        return converted

    def _make_pending_links(self, pending: Pending, converted: list[dict]) -> None:
        """Create the records a typecast link named by primary value, and put their ids in place."""
        made = [self._insert(linked, {primary: value})["id"] for linked, primary, value in pending.pop("__links__", [])]
        if not made:
            return
        for fields in converted:
            for name, value in fields.items():
                if isinstance(value, list):
                    fields[name] = [_made_id(v, made) for v in value]

    def _commit_choices(self, t: Table, pending: Pending) -> None:
        for fid, names in pending.items():
            choices = t.known_field(fid).setdefault("options", {}).setdefault("choices", [])
            for n in names:
                if n not in [c["name"] for c in choices]:
                    choices.append({"id": self._ids.new("sel"), "name": n, "color": "grayLight2"})

    # -- records --------------------------------------------------------------------------------

    def _insert(self, t: Table, converted: dict) -> dict:
        ts = self._tick()
        rid = self._ids.new("rec")
        stored = {k: v for k, v in converted.items() if not is_empty(v)}
        rec = {"id": rid, "createdTime": ts, "_modified": ts, "fields": stored}
        t.records.append(rec)
        self._event(t, "created", rec)
        self._sync_inverse(t, rid, {}, stored)
        return rec

    def _remove(self, t: Table, rec: dict) -> None:
        t.records.remove(rec)
        self._event(t, "destroyed", rec["id"])
        self._sync_inverse(t, rec["id"], rec["fields"], {})

    def _apply(self, t: Table, rec: dict, converted: dict, replace: bool) -> None:
        before = dict(rec["fields"])
        self._apply_fields(t, rec, converted, replace)
        self._sync_inverse(t, rec["id"], before, rec["fields"])

    def _apply_fields(self, t: Table, rec: dict, converted: dict, replace: bool) -> None:
        if replace:
            # PUT clears every field not given, except computed ones (which the user cannot set).
            rec["fields"] = {k: v for k, v in rec["fields"].items() if (t.field(k) or {}).get("type") in COMPUTED_TYPES}
        for k, v in converted.items():
            if v is None and (t.field(k) or {}).get("type") == "richText":
                # MODELLING DECISION: recorded (grouparoo's update clearing every field), a rich text
                # cleared with null reads "\n" afterwards; what a create with null gives is not recorded.
                rec["fields"][k] = "\n"
            elif is_empty(v):
                rec["fields"].pop(k, None)
            else:
                rec["fields"][k] = v
        rec["_modified"] = self._tick()
        self._event(t, "changed", rec)

    # -- endpoints ------------------------------------------------------------------------------

    def _create(self, t: Table, body: dict) -> dict:
        opts = _write_opts(body)
        if "records" not in body:
            (one,) = self._prepare(t, [body.get("fields", {})], body)
            return self._render_opts(t, self._insert(t, one), opts)
        recs = _batch(body, items_message="Invalid records")
        converted = self._prepare(t, [r.get("fields", {}) for r in recs], body)
        return {"records": [self._render_opts(t, self._insert(t, c), opts) for c in converted]}

    def _update_many(self, t: Table, body: dict, replace: bool) -> dict:
        recs = _batch(body)
        upsert = body.get("performUpsert")
        if upsert is not None:
            return self._upsert(t, recs, body, replace, upsert)
        for r in recs:
            if not isinstance(r.get("id"), str):
                raise invalid_records("Each record must have an \"id\" field")
            if t.find(r["id"]) is None:
                # MODELLING DECISION: an unknown id in a batch update fails the whole request with 422
                # ROW_DOES_NOT_EXIST (single-record endpoints answer 404 MODEL_ID_NOT_FOUND as recorded).
                raise no_such_row(r["id"])
        return {"records": self._write_updates(t, recs, body, replace)}

    def _write_updates(self, t: Table, recs: list[dict], body: dict, replace: bool) -> list[dict]:
        converted = self._prepare(t, [r.get("fields") if r.get("fields") is not None else {} for r in recs], body)
        out = []
        for r, c in zip(recs, converted):
            rec = t.known_record(r["id"])
            self._apply(t, rec, c, replace)
            out.append(self._render_opts(t, rec, _write_opts(body)))
        return out

    def _delete_many(self, t: Table, query: dict) -> dict:
        ids = query.get("records[]", []) + query.get("records", [])
        if not 1 <= len(ids) <= 10:
            raise invalid_records("You must provide an array of up to 10 record IDs")
        for rid in ids:
            if t.find(rid) is None:
                raise no_such_row(rid)  # MODELLING DECISION: as for batch updates.
        for rid in ids:
            rec = t.find(rid)
            if rec is not None:
                self._remove(t, rec)
        return {"records": [{"deleted": True, "id": rid} for rid in ids]}

    # -- upsert ---------------------------------------------------------------------------------

    def _upsert(self, t: Table, recs: list[dict], body: dict, replace: bool, upsert: Any) -> dict:
        merge_fields = _merge_fields(t, upsert)
        pending: Pending = {}
        plan = [self._upsert_plan(t, r, merge_fields, bool(body.get("typecast")), pending) for r in recs]
        # Validation done: apply (records in one request are matched in order, so a key created
        # earlier in the same request is updated by a later record with the same key).
        self._make_pending_links(pending, [c for _rid, c in plan])
        snapshot = copy.deepcopy(t.records), self._clock, copy.deepcopy(self._ids._rngs)
        created: list[str] = []
        updated: list[str] = []
        try:
            out = [self._upsert_one(t, rid, c, merge_fields, replace, created, updated) for rid, c in plan]
        except FakeAirtableError:
            t.records, self._clock, self._ids._rngs = snapshot
            raise
        self._commit_choices(t, pending)
        opts = _write_opts(body)
        return {"createdRecords": created, "records": [self._render_opts(t, r, opts) for r in out], "updatedRecords": updated}

    def _upsert_plan(self, t: Table, r: dict, merge_fields: list[dict], typecast: bool, pending: Pending) -> tuple[str | None, dict]:
        """(the record id given, or None to match on the merge fields; the converted fields)."""
        converted = self._convert_fields(t, r.get("fields") or {}, typecast, pending)
        if "id" in r:
            if t.find(r["id"]) is None:
                raise no_such_row(r["id"])
            return r["id"], converted
        # A blank key value is no key (issue 9: Airtable refuses it).
        missing = [f["name"] for f in merge_fields if is_empty(converted.get(f["name"]))]
        if missing:
            raise invalid_records(f"Missing value for fieldsToMergeOn field(s): {', '.join(missing)}")
        return None, converted

    def _upsert_one(self, t: Table, rid: str | None, converted: dict, merge_fields: list[dict], replace: bool,
                    created: list[str], updated: list[str]) -> dict:
        rec = t.known_record(rid) if rid is not None else _merge_match(t, converted, merge_fields)
        if rec is None:
            rec = self._insert(t, converted)
            created.append(rec["id"])
            return rec
        self._apply(t, rec, converted, replace)
        if rec["id"] not in created and rec["id"] not in updated:
            updated.append(rec["id"])
        return rec


def _write_opts(body: dict) -> dict:
    return {"returnFieldsByFieldId": body.get("returnFieldsByFieldId")}


def _batch(body: dict, items_message: str = _TOO_MANY) -> list[dict]:
    """The ``records`` of a batch write: 1 to 10 objects."""
    recs = body.get("records")
    if not isinstance(recs, list) or not 1 <= len(recs) <= 10:
        raise invalid_records(_TOO_MANY)
    if not all(isinstance(r, dict) for r in recs):
        raise invalid_records(items_message)
    return recs


def _made_id(value: object, made: list[str]) -> object:
    if isinstance(value, str) and value.startswith(NEW_LINK):
        return made[int(value[len(NEW_LINK):])]
    return value


def _merge_fields(t: Table, upsert: Any) -> list[dict]:
    merge_on = upsert.get("fieldsToMergeOn") if isinstance(upsert, dict) else None
    if not isinstance(merge_on, list) or not 1 <= len(merge_on) <= 3:
        raise invalid_request("fieldsToMergeOn must be an array of 1 to 3 field names or ids")
    return [_merge_field(t, key) for key in merge_on]


def _merge_field(t: Table, key: Any) -> dict:
    f = t.field(key) if isinstance(key, str) else None
    if f is None:
        raise unknown_field(key)
    if f["type"] in COMPUTED_TYPES or f["type"] in _NOT_A_MERGE_KEY:
        # MODELLING DECISION: computed fields and values with no single value to match on.
        raise fail(422, "INVALID_VALUE_FOR_COLUMN", f'Field "{f["name"]}" cannot be used in fieldsToMergeOn')
    return f


def _merge_value(v: Any) -> Any:
    return None if is_empty(v) else v


def _merge_match(t: Table, converted: dict, merge_fields: list[dict]) -> dict | None:
    key = [_merge_value(converted[f["name"]]) for f in merge_fields]
    hits = [x for x in t.records if [_merge_value(x["fields"].get(f["name"])) for f in merge_fields] == key]
    if len(hits) > 1:
        # MODELLING DECISION: error type and message for an ambiguous upsert are a guess.
        raise invalid_records("Cannot update more than one record that matches fieldsToMergeOn")
    return hits[0] if hits else None
