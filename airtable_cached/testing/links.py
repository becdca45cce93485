"""Linked records in the fake: a written link must name records of the linked table (or, with
``typecast``, their primary values), and Airtable keeps both sides of a two-way link."""

from __future__ import annotations

from airtable_cached.testing.cells import Pending
from airtable_cached.testing.errors import cannot_accept, no_such_row
from airtable_cached.testing.model import RECORD_ID_RE, Model, Table

#: Placeholder for a record a typecast link makes when the write applies (the index into the list).
NEW_LINK = "\0new-link:"


class Links(Model):
    def _check_links(self, f: dict, ids: list[str], typecast: bool, pending: Pending) -> list[str]:
        """Every linked id must name a record of the linked table (422 ``ROW_DOES_NOT_EXIST``, as
        issue 9 reports Airtable's answer). With ``typecast`` a value that is no record id of that
        table is taken as a primary value: the record having it, else a new record made with it
        (MODELLING DECISION: the first record with that primary value)."""
        linked = self._linked_table(f)
        if linked is None:
            return ids
        out = [self._link_target(f, linked, item, typecast, pending) for item in ids]
        return list(dict.fromkeys(out))

    def _link_target(self, f: dict, linked: Table, item: str, typecast: bool, pending: Pending) -> str:
        if linked.find(item) is not None:
            return item
        if not typecast:
            if not RECORD_ID_RE.match(item):
                raise cannot_accept(f)
            raise no_such_row(item)
        primary = linked.primary_name()
        hit = next((r for r in linked.records if r["fields"].get(primary) == item), None)
        if hit is not None:
            return str(hit["id"])
        # Made when the request is applied (ids are drawn only for requests that succeed);
        # one record per new primary value in a request (MODELLING DECISION).
        made = pending.setdefault("__links__", [])
        if (linked, primary, item) not in made:
            made.append((linked, primary, item))
        return NEW_LINK + str(made.index((linked, primary, item)))

    def _link_fields(self, t: Table) -> list[tuple[dict, Table, dict]]:
        """(field, linked table, inverse field) for each link field with an inverse."""
        out = []
        for f in t.fields:
            options = f.get("options") or {}
            if f["type"] != "multipleRecordLinks" or not options.get("inverseLinkFieldId"):
                continue
            linked = self._linked_table(f)
            inverse = linked.field(options["inverseLinkFieldId"]) if linked else None
            if linked is not None and inverse is not None:
                out.append((f, linked, inverse))
        return out

    def _sync_inverse(self, t: Table, rid: str, before: dict, after: dict) -> None:
        """Airtable keeps both sides of a link: a record linked gains this record in its inverse
        field (appended: MODELLING DECISION, as the recorded gatsby-source-airtable tables suggest),
        a record unlinked loses it."""
        for f, linked, inverse in self._link_fields(t):
            old = before.get(f["name"]) or []
            new = after.get(f["name"]) or []
            for other_id in [x for x in old if x not in new]:
                _unlink(linked.find(other_id), inverse["name"], rid)
            for other_id in [x for x in new if x not in old]:
                _link(linked.find(other_id), inverse["name"], rid)


def _unlink(other: dict | None, name: str, rid: str) -> None:
    if other is None:
        return
    kept = [x for x in other["fields"].get(name, []) if x != rid]
    if kept:
        other["fields"][name] = kept
    else:
        other["fields"].pop(name, None)


def _link(other: dict | None, name: str, rid: str) -> None:
    if other is not None and rid not in other["fields"].get(name, []):
        other["fields"][name] = [*other["fields"].get(name, []), rid]
