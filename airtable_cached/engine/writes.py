"""Writes answered at once from the cache, as Airtable answers them: every write applies to what
reads see and is queued in the same transaction; what only Airtable can answer is sent at once.

A call's transaction is applied whole or not at all, also when the database connection drops (a
PostgreSQL restart or failover): the store says whether it was kept, asking the database when the
drop came during the commit (``airtable_cached/store/postgres/commits.py``). Not kept
(``StoreConnectionLost``), the transaction runs again whole, so the call is queued once; kept, the
call answers as usual. When the store cannot learn the outcome (``StoreCommitUnknown``: the database
did not answer in time) the call raises it and is not run again, since running it again could queue
it twice: ``api.pending()`` tells whether it was queued.

Once Airtable has applied a call, the call never fails because of the cache database, since the
agent would take the failure for Airtable's and could repeat the call (a create made twice):

* a call sent at once (only Airtable can answer it) returns Airtable's answer. The transactions
  that keep that answer in the cache (the select options a typecast added, the records Airtable
  returned, the linked tables pulled again) are idempotent, so each runs again when the connection
  drops, kept or not or unknown (:func:`keep_step`). If one still fails (or Airtable refuses the
  linked table's pull), an error names the records and the call still returns Airtable's answer;
  the cache shows the call after the next pull of the table.
* in write-through mode, a flush whose acknowledgement was lost or left unknown leaves the call's
  writes queued or settled by the next flush (``Sync._confirm``), never sent twice: the call
  answers from the cache, as cache mode does, and an error is logged.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from airtable_cached.config import Settings
from airtable_cached.engine import apply, outage
from airtable_cached.engine.access import Access
from airtable_cached.engine.ports import SyncHandle
from airtable_cached.engine.readmodel import ReadModel
from airtable_cached.engine.reads import PROVISIONAL_RE, Reads
from airtable_cached.engine.shapes import shape_write
from airtable_cached.engine.tables import TableInfo, Tables, field_name
from airtable_cached.errors import AirtableResponseError, OfflineError, StoreCommitUnknown, StoreConnectionLost
from airtable_cached.rules import cells
from airtable_cached.rules.policy import Write, decide_write
from airtable_cached.rules.records import (
    COMPUTED_TYPES,
    apply_write,
    check_serialisable,
    clean_fields,
    dumps,
    new_provisional_id,
    now_iso,
    replace_ids,
)
from airtable_cached.store.contract import Store, Unit

log = logging.getLogger("airtable_cached")

MAX_RECORDS_PER_WRITE = 10
#: Times a call's transaction runs when the database connection keeps dropping before it is kept.
LOST_ATTEMPTS = 5
#: Times a transaction keeping Airtable's answer to a call sent at once runs when the database
#: connection drops (a commit left unknown has already waited for the database for a while).
KEEP_ATTEMPTS = 3

T = TypeVar("T")


@dataclass
class WriteCall:
    """One write call of the agent: its queued writes share a call id (sent and dead-lettered
    together), its typecast may add select options, and it may need Airtable's answer at once."""

    call_id: int | None = None
    new_choices: dict[str, list[str]] = field(default_factory=dict)
    needs_airtable: str | None = None

    def queued(self, seq: int) -> int:
        if self.call_id is None:
            self.call_id = seq
        return seq


def run_whole(call: WriteCall, transaction: Callable[[], T]) -> T:
    """``transaction()`` (the call's one unit of work), run again whole while the store says the
    database connection dropped and nothing of it was kept (see the module's docstring)."""
    for attempt in range(1, LOST_ATTEMPTS + 1):
        try:
            return transaction()
        except StoreConnectionLost as exc:
            call.call_id = None  # the writes queued by the lost attempt were not kept
            if attempt == LOST_ATTEMPTS:
                raise
            log.warning("the cache database's connection dropped before the write was kept (%s); writing it again", exc)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class _Upserted:
    """What an upsert did, in the call's order."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)


class Writes:
    """Creates, updates (PATCH, PUT, upserts) and deletes of one engine."""

    def __init__(self, store: Store, settings: Settings, tables: Tables, access: Access, reads: Reads, *,
                 model: ReadModel, sync: SyncHandle, clock: Callable[[], float]):
        self.store, self.settings, self.tables, self.access, self.reads = store, settings, tables, access, reads
        self.model, self.sync, self.clock = model, sync, clock

    # -- create ------------------------------------------------------------------------------------
    def create(self, base_id: str, table: str, body: dict) -> dict:
        info = self.tables.info(base_id, table)
        outage.authorize_in_background(self.access, info, table)
        if info.schema is None:
            self.access.reread_schema(info)  # the values are checked against the schema, as Airtable does
        single = "fields" in body and "records" not in body
        items = _check_batch([{"fields": body.get("fields")}] if single else body.get("records"), need_id=False)
        typecast = bool(body.get("typecast"))
        call = WriteCall()
        field_sets = [self._validate_fields(info, item.get("fields") or {}, typecast, call) for item in items]
        if self._sends_now(info, call):
            return self._send_now(info, table, call, "POST", None, body)
        seqs, created = run_whole(call, lambda: self._create_many(info, table, field_sets, typecast, call))
        through = self._after_write(info, seqs)
        shaped = [shape_write(info, r, body) for r in self._maybe_reread(info, created, through)]
        return shaped[0] if single else {"records": shaped}

    def _create_many(self, info: TableInfo, table: str, field_sets: list[dict], typecast: bool,
                     call: WriteCall) -> tuple[list[int], list[dict]]:
        now = self.clock()
        seqs, created = [], []
        before = self.model.marker()
        with self.store.write() as unit:
            self._learn_choices(unit, info, call)
            position = unit.replica.last_position(info.tid)
            for fields in field_sets:
                position += 1
                record = self._insert_local(unit, info, table, fields, typecast, position, now, merge_on=None, call=call)
                seqs.append(record.pop("_seq"))
                created.append(record)
            linked = apply.after_local_write(unit, info.tid, [r["id"] for r in created])
        self.model.after_write(info.tid, before, [r["id"] for r in created] + sorted(linked.get(info.tid, ())))
        return seqs, created

    def _insert_local(self, unit: Unit, info: TableInfo, table: str, fields: dict, typecast: bool,
                      position: int, now: float, merge_on: list[str] | None, call: WriteCall) -> dict:
        record_id = new_provisional_id()
        created_time = now_iso(now)
        stored = clean_fields(fields)
        unit.replica.insert_local_record(info.tid, record_id, position, created_time, stored)
        seq = unit.outbox.append(
            tid=info.tid, base_id=info.base_id, table_ref=table, op="create", record_id=record_id,
            fields=fields, base=None, typecast=typecast, now=now, merge_on=merge_on, call_id=call.call_id,
        )
        call.queued(seq)
        return {"id": record_id, "createdTime": created_time, "fields": stored, "_seq": seq}

    # -- update, replace, upsert -------------------------------------------------------------------
    def _table_for_write(self, base_id: str, table: str) -> TableInfo:
        """An update, upsert or delete needs the records it names: pull a table never read before."""
        info = self.tables.info(base_id, table)
        if info.pulled_at is not None:
            outage.authorize_in_background(self.access, info, table)
            return info
        if self.settings.mode == "offline":
            raise OfflineError(f"offline mode: table {table!r} of base {base_id} has never been pulled")
        try:
            self.sync.require().pull(base_id, table)
        except AirtableResponseError as exc:
            if exc.status == 404:
                self.tables.forget_if_unused(info)
            raise
        return self.tables.info(base_id, table)

    def update(self, base_id: str, table: str, record_id: str | None, body: dict, *, replace: bool) -> dict:
        info = self._table_for_write(base_id, table)
        typecast = bool(body.get("typecast"))
        op = "replace" if replace else "update"
        if record_id is not None:
            return self._update_single(info, table, record_id, body, op, typecast)
        upsert = body.get("performUpsert")
        items = _check_batch(body.get("records"), need_id=upsert is None)
        if upsert is not None:
            return self._upsert(info, table, items, upsert, op, typecast, body)
        call = WriteCall()
        self._require_records(info, [item["id"] for item in items], batch=True)
        pairs = [(item["id"], self._validate_fields(info, item.get("fields") or {}, typecast, call)) for item in items]
        if self._sends_now(info, call):
            return self._send_now(info, table, call, _method(op), None, body)
        seqs, records = run_whole(call, lambda: self._update_many(info, table, pairs, op, typecast, call))
        through = self._after_write(info, seqs)
        return {"records": [shape_write(info, r, body) for r in self._maybe_reread(info, records, through)]}

    def _update_single(self, info: TableInfo, table: str, record_id: str, body: dict, op: str, typecast: bool) -> dict:
        call = WriteCall()
        self._require_records(info, [record_id], batch=False)  # Airtable answers 404 before any value check
        fields = self._validate_fields(info, body.get("fields") or {}, typecast, call)
        if self._sends_now(info, call):
            return self._send_now(info, table, call, _method(op), record_id, body)
        seqs, records = run_whole(
            call, lambda: self._update_many(info, table, [(record_id, fields)], op, typecast, call, batch=False))
        through = self._after_write(info, seqs)
        return shape_write(info, self._maybe_reread(info, records, through)[0], body)

    def _require_records(self, info: TableInfo, record_ids: list[str], *, batch: bool) -> None:
        """Records a write names must exist (checked before values, in Airtable's order)."""
        found = self.reads.rows_by_id(info.tid, [self.reads.resolve_id(i) for i in record_ids])
        for record_id in record_ids:
            if self.reads.resolve_id(record_id) not in found:
                raise AirtableResponseError.record_not_found(record_id, batch=batch)

    def _update_many(self, info: TableInfo, table: str, pairs: list[tuple[str, dict]], op: str, typecast: bool,
                     call: WriteCall, *, batch: bool = True) -> tuple[list[int], list[dict]]:
        now = self.clock()
        seqs, results = [], []
        before = self.model.marker()
        with self.store.write() as unit:
            self._learn_choices(unit, info, call)
            for record_id, fields in pairs:
                seq, record = self._update_one(unit, info, table, record_id, fields, op, typecast, now, call, batch=batch)
                seqs.append(seq)
                results.append(record)
            linked = apply.after_local_write(unit, info.tid, [r["id"] for r in results])
        self.model.after_write(info.tid, before, [r["id"] for r in results] + sorted(linked.get(info.tid, ())))
        return seqs, results

    def _update_one(self, unit: Unit, info: TableInfo, table: str, record_id: str, fields: dict,
                    op: str, typecast: bool, now: float, call: WriteCall, *, batch: bool = True,
                    merge_on: list[str] | None = None) -> tuple[int, dict]:
        real_id = self.reads.resolve_id(record_id)
        record = unit.replica.visible_records_by_id(info.tid, [real_id]).get(real_id)
        if record is None:
            raise AirtableResponseError.record_not_found(record_id, batch=batch)
        current = record["fields"]
        new_fields = apply_write(current, op, fields)
        assert new_fields is not None  # an update or replace leaves a record
        queued_op, queued = _as_queued(info, current, op, fields)
        base = {name: current.get(name) for name in (current if queued_op == "replace" else queued)}
        unit.replica.write_fields(info.tid, real_id, new_fields, now_iso(now))
        seq = unit.outbox.append(
            tid=info.tid, base_id=info.base_id, table_ref=table, op=queued_op, record_id=real_id,
            fields=queued, base=base, typecast=typecast, now=now, call_id=call.call_id, merge_on=merge_on,
        )
        call.queued(seq)
        return seq, {"id": real_id, "createdTime": record["createdTime"], "fields": new_fields}

    def _upsert(self, info: TableInfo, table: str, items: list[dict], upsert: Any, op: str, typecast: bool, body: dict) -> dict:
        merge_on = self._merge_keys(info, upsert)
        call = WriteCall()
        prepared = [self._prepare_upsert(info, item, merge_on, typecast, call) for item in items]
        if self._sends_now(info, call):
            return self._send_now(info, table, call, _method(op), None, body)
        done = run_whole(call, lambda: self._upsert_locally(info, table, prepared, merge_on, op, typecast, call))
        through = self._after_write(info, done.seqs)
        created_ids, updated_ids, records = done.created, done.updated, done.records
        if through:
            remapped = {r["id"]: self.reads.resolve_id(r["id"]) for r in records}
            created_ids = [remapped[i] for i in created_ids]
            updated_ids = [remapped[i] for i in updated_ids]
            records = self._maybe_reread(info, records, through)
        # A record matched twice in one call is answered twice in its final state, as Airtable does.
        final = {r["id"]: r for r in records}
        return {
            "records": [shape_write(info, final[r["id"]], body) for r in records],
            "createdRecords": created_ids,
            "updatedRecords": updated_ids,
        }

    def _merge_keys(self, info: TableInfo, upsert: Any) -> list[str]:
        merge_on = upsert.get("fieldsToMergeOn") if isinstance(upsert, dict) else None
        if not isinstance(merge_on, list) or not 1 <= len(merge_on) <= 3 or not all(isinstance(f, str) for f in merge_on):
            raise AirtableResponseError.invalid_request("performUpsert.fieldsToMergeOn must list 1 to 3 field names")
        merge_on = [field_name(info, f) for f in merge_on]
        if info.fields_by_name:
            if not all(f in info.fields_by_name for f in merge_on):
                self.access.reread_schema(info)
            cells.check_merge_keys(info.fields_by_name, merge_on)
        return merge_on

    def _prepare_upsert(self, info: TableInfo, item: dict, merge_on: list[str], typecast: bool,
                        call: WriteCall) -> tuple[str | None, dict]:
        fields = self._validate_fields(info, item.get("fields") or {}, typecast, call)
        if "id" in item:
            self._require_records(info, [item["id"]], batch=True)
        else:
            cells.check_merge_values(fields, merge_on)
        return item.get("id"), fields

    def _upsert_locally(self, info: TableInfo, table: str, prepared: list[tuple[str | None, dict]], merge_on: list[str],
                        op: str, typecast: bool, call: WriteCall) -> _Upserted:
        now = self.clock()
        done = _Upserted()
        before = self.model.marker()
        with self.store.write() as unit:
            self._learn_choices(unit, info, call)
            current = unit.replica.visible_records(info.tid)
            position = unit.replica.last_position(info.tid)
            for record_id, fields in prepared:
                record_id = record_id if record_id is not None else _match(current, fields, merge_on)
                if record_id is None:
                    position += 1
                    record = self._insert_local(unit, info, table, fields, typecast, position, now, merge_on=merge_on, call=call)
                    done.seqs.append(record.pop("_seq"))
                    done.created.append(record["id"])
                    done.records.append(record)
                    current.append(record)
                else:
                    current = self._upsert_update(unit, info, table, record_id, fields, op, typecast, now, call,
                                                  merge_on, done, current)
            linked = apply.after_local_write(unit, info.tid, [r["id"] for r in done.records])
        self.model.after_write(info.tid, before, [r["id"] for r in done.records] + sorted(linked.get(info.tid, ())))
        return done

    def _upsert_update(self, unit: Unit, info: TableInfo, table: str, record_id: str, fields: dict, op: str,
                       typecast: bool, now: float, call: WriteCall, merge_on: list[str], done: _Upserted,
                       current: list[dict]) -> list[dict]:
        # Queued with the call's key: sent in the call's upsert request (as an update by id),
        # so that Airtable applies the upsert whole.
        seq, record = self._update_one(unit, info, table, record_id, fields, op, typecast, now, call, merge_on=merge_on)
        done.seqs.append(seq)
        if record["id"] not in done.created and record["id"] not in done.updated:
            done.updated.append(record["id"])  # each record listed once, as Airtable does
        if record["id"] in done.created:  # made earlier in this call: later matches see it as now
            current = [record if r["id"] == record["id"] else r for r in current]
        done.records.append(record)
        return current

    # -- delete ------------------------------------------------------------------------------------
    def delete(self, base_id: str, table: str, record_ids: list[str], *, single: bool) -> dict:
        info = self._table_for_write(base_id, table)
        if not single:
            _check_deletes(record_ids)
        call = WriteCall()
        seqs = run_whole(call, lambda: self._delete_many(info, table, record_ids, single, call))
        through = self._after_write(info, seqs)
        deleted = [{"id": self.reads.resolve_id(i) if through else i, "deleted": True} for i in record_ids]
        return deleted[0] if single else {"records": deleted}

    def _delete_many(self, info: TableInfo, table: str, record_ids: list[str], single: bool, call: WriteCall) -> list[int]:
        now = self.clock()
        seqs: list[int] = []
        deleted_ids: list[str] = []
        before = self.model.marker()
        with self.store.write() as unit:
            for record_id in record_ids:
                real_id = self.reads.resolve_id(record_id)
                deleted_ids.append(real_id)
                if not unit.replica.hide_record(info.tid, real_id):
                    raise AirtableResponseError.record_not_found(record_id, batch=not single)
                seqs.append(call.queued(unit.outbox.append(
                    tid=info.tid, base_id=info.base_id, table_ref=table, op="delete", record_id=real_id,
                    fields=None, base=None, typecast=False, now=now, call_id=call.call_id,
                )))
            linked = apply.after_local_write(unit, info.tid, deleted_ids)
        self.model.after_write(info.tid, before, deleted_ids + sorted(linked.get(info.tid, ())))
        return seqs

    # -- checks ------------------------------------------------------------------------------------
    def _validate_fields(self, info: TableInfo, fields: Any, typecast: bool, call: WriteCall) -> dict:
        """Refuse at the call what Airtable would refuse, so nothing unsendable is queued; return
        the values as Airtable would store them (``typecast`` applied, provisional ids translated)."""
        check_serialisable(fields, where=f"write to table {info.name or info.table_id}")
        names = info.name_for_id
        fields = {names.get(k, k): v for k, v in fields.items()}
        if info.fields_by_name and not all(name in info.fields_by_name for name in fields):
            self.access.reread_schema(info)  # a field added in Airtable since the schema was read?
        known = info.fields_by_name
        if not known:
            return fields
        _check_writable(known, fields)
        converted = cells.convert_fields(
            known, fields, typecast=typecast, link_state=lambda table_id, record_id: self._linked_exists(info, table_id, record_id),
            translate=self.reads.resolve_id, new_choices=call.new_choices,
        )
        call.needs_airtable = call.needs_airtable or converted.needs_airtable
        if call.new_choices and not call.needs_airtable:
            # Sent at once: the option exists in Airtable from now on, as the cache assumes (a
            # queued write could be merged away before the flush, and the option with it).
            call.needs_airtable = f"typecast adds select options {call.new_choices}"
        return converted.fields

    def _linked_exists(self, info: TableInfo, table_id: str, record_id: str) -> bool | None:
        """Whether a record of the linked table exists: True, False, or None when the cache cannot tell
        (offline, and the linked table was never pulled). A linked table never read is pulled first."""
        replica = self.store.replica
        linked = replica.linked_table(self.tables.endpoint, info.base_id, table_id)
        sync = self.sync.sync
        if (linked is None or linked["pulled_at"] is None) and self.settings.mode != "offline" and sync is not None:
            # Whether the record exists is Airtable's to say: the linked table is read once, then cached.
            sync.pull(info.base_id, table_id)
            linked = replica.linked_table(self.tables.endpoint, info.base_id, table_id)
        if linked is None:
            return None
        visible = replica.record_visibility(linked["tid"], record_id)
        if visible is not None:
            return visible
        return False if linked["pulled_at"] is not None else None

    # -- what only Airtable can answer -------------------------------------------------------------
    def _sends_now(self, info: TableInfo, call: WriteCall) -> bool:
        """Whether only Airtable can answer this call (``call.needs_airtable``): then it is sent at
        once, as plain pyairtable sends it. The writes queued before it go first."""
        if call.needs_airtable is None or self.settings.mode not in ("cache", "write-through"):
            return False
        log.info("sending a write at once: %s", call.needs_airtable)
        if self.store.outbox.has_live_writes_for_base(info.base_id):
            self.sync.require().flush(info.base_id)
        return True

    def _send_now(self, info: TableInfo, table: str, call: WriteCall, method: str, record_id: str | None, body: dict) -> Any:
        """Send the agent's call to Airtable as it is (provisional ids replaced by the ids Airtable
        gave), keep the records it answers with, read again the linked tables it may have changed
        (inverse links, records made by a typecast), and answer as Airtable answered."""
        sync = self.sync.require()
        mapping = {p: self.reads.resolve_id(p) for p in PROVISIONAL_RE.findall(json.dumps(body))}
        sent = replace_ids(body, mapping) if mapping else body
        parts = [info.base_id, table] + ([self.reads.resolve_id(record_id)] if record_id else [])
        sent_at = sync.remote.clock()
        answer = sync.send_now(info.base_id, method, sync.remote.url(*parts), sent, idempotent=method != "POST")
        # From here on Airtable has applied the call: whatever befalls the cache, the call answers
        # as Airtable did (raising would tell the agent that it failed, and a create repeated by
        # the agent would be made twice in Airtable).
        self._keep_answer(info, call, body, answer, sent_at)
        return answer

    def _keep_answer(self, info: TableInfo, call: WriteCall, body: dict, answer: Any, sent_at: float) -> None:
        """Keep in the cache what Airtable answered to a call sent at once, one step after another,
        each run again when the database connection dropped (every step is idempotent: see
        :func:`keep_step`). When a step cannot be done the rest is left to the next pull: logged as
        an error naming the records, never raised (the call happened)."""
        records: list = answer["records"] if isinstance(answer, dict) and isinstance(answer.get("records"), list) else [answer]
        records = [r for r in records if isinstance(r, dict)]
        steps: list[tuple[str, Callable[[], None]]] = [("its select options and views", lambda: self._forget_views(info, call))]
        if not (isinstance(body, dict) and body.get("returnFieldsByFieldId")):
            steps.append(("its records", lambda: apply.absorb(self.store, info, records, now=self.clock(), sent_at=sent_at)))
        steps += [(f"linked table {linked}", functools.partial(self._pull_linked, info, linked))
                  for linked in _linked_written(info, body)]
        for n, (what, step) in enumerate(steps):
            try:
                keep_step(step, what, sleep=self.sync.require().remote.sleep)
            except Exception:  # noqa: BLE001 - the call happened: its answer is returned, the failure logged
                log.exception(
                    "Airtable applied a call sent at once to table %s (records %s), but the cache could not keep %s;"
                    " the cache shows the call after the next pull of the table", info.name or info.table_id,
                    [r.get("id") for r in records], ", ".join(w for w, _step in steps[n:]))
                return

    def _forget_views(self, info: TableInfo, call: WriteCall) -> None:
        with self.store.write() as unit:
            self._learn_choices(unit, info, call)
            unit.replica.forget_views([info.tid])  # Airtable re-evaluates them

    def _pull_linked(self, info: TableInfo, linked: str) -> None:
        """A linked table whose link field a call sent at once wrote is pulled again."""
        self.sync.require().pull(info.base_id, linked)
        tid = self.tables.info(info.base_id, linked).tid
        with self.store.write() as unit:  # its views too: its inverse link fields changed
            unit.replica.forget_views([tid])

    def _learn_choices(self, unit: Unit, info: TableInfo, call: WriteCall) -> None:
        """Select options a typecast write adds exist from then on (Airtable adds them to the field)."""
        if not call.new_choices or info.schema is None:
            return
        schema = json.loads(dumps(info.schema))
        for spec in schema.get("fields", []):
            for name in call.new_choices.get(spec.get("name"), []):
                choices = spec.setdefault("options", {}).setdefault("choices", [])
                if name not in [c.get("name") for c in choices]:
                    choices.append({"name": name})
        unit.replica.set_schema_only(info.tid, schema)
        info.set_schema(schema)

    # -- after the write ---------------------------------------------------------------------------
    def _after_write(self, info: TableInfo, seqs: list[int]) -> bool:
        """Write-through sends the writes now and fails the call if Airtable refused them. Returns
        whether the call answers with the records as Airtable keeps them (write-through, unless the
        flush was cut by the cache database: then the call answers from the cache as cache mode does)."""
        if decide_write(self.settings.mode) is not Write.WRITE_THROUGH or not seqs:
            if self.sync.sync is not None:
                self.sync.sync.notify_write(len(seqs))
            return decide_write(self.settings.mode) is Write.WRITE_THROUGH
        try:
            self.sync.require().flush_writes(info.base_id, seqs)
        except (StoreConnectionLost, StoreCommitUnknown) as exc:
            # The call's writes are queued (their transaction was kept) and Airtable may have
            # applied them already: the call must not fail, or the agent would write them again.
            # Its acknowledgement is settled by a later flush; the call answers from the cache.
            log.error("write-through: the cache database's connection dropped while sending writes %s (%s); they stay"
                      " queued, or were applied already, and a later flush settles them without sending them twice",
                      seqs, exc)
            return False
        left = self.store.outbox.write_states(seqs)
        refused = [write for write in left if write["state"] == "dead"]
        if refused:
            # The call fails as it would in pyairtable, and the refused writes do not linger in the queue.
            with self.store.write() as unit:
                unit.outbox.ack([write["seq"] for write in refused])
                apply.recompute(unit, info.tid, {write["record_id"] for write in refused})
            error = refused[0]["last_error"] or {}
            raise AirtableResponseError(error.get("status") or 422, error.get("body") or {})
        if left:
            # Airtable could not be reached even after retries: the write stays queued (it is durable
            # and a later flush sends it) and the call answers from the cache, as cache mode would.
            log.warning("write-through: Airtable did not confirm %d write(s) yet; they stay queued", len(left))
        return True

    def _maybe_reread(self, info: TableInfo, records: list[dict], through: bool) -> list[dict]:
        if not through:
            return records
        # A record written twice in one call is answered in each state in turn (as Airtable
        # answers): only its last answer is what Airtable stored.
        last = {r["id"]: i for i, r in enumerate(records)}
        return [self._reread(info, r["id"]) if last[r["id"]] == i else r for i, r in enumerate(records)]

    def _reread(self, info: TableInfo, record_id: str) -> dict:
        rows = self.reads.rows_by_id(info.tid, [self.reads.resolve_id(record_id)])
        return next(iter(rows.values()))


def keep_step(step: Callable[[], None], what: str, *, sleep: Callable[[float], None]) -> None:
    """``step()`` (a transaction keeping Airtable's answer to a call it already applied), run again
    when the database connection dropped, whether nothing of it was kept (``StoreConnectionLost``) or
    nobody can tell (``StoreCommitUnknown``): it is idempotent, so running it twice is harmless. The
    last failure is raised."""
    for attempt in range(1, KEEP_ATTEMPTS + 1):
        try:
            return step()
        except (StoreConnectionLost, StoreCommitUnknown) as exc:
            if attempt == KEEP_ATTEMPTS:
                raise
            log.warning("the cache database's connection dropped while keeping %s of a call Airtable applied (%s);"
                        " keeping it again", what, exc)
            sleep(min(2.0, 0.2 * attempt))


def _linked_written(info: TableInfo, body: dict) -> list[str]:
    """The tables linked by the link fields a call writes (their inverse link fields changed)."""
    written = {name for item in (body.get("records") or [body]) if isinstance(item, dict)
               for name in (item.get("fields") or {})}
    return [spec["options"]["linkedTableId"] for spec in (info.schema.get("fields", []) if info.schema else [])
            if spec.get("type") == "multipleRecordLinks" and (spec.get("options") or {}).get("linkedTableId")
            and (spec["name"] in written or spec.get("id") in written)]


def _method(op: str) -> str:
    return "PUT" if op == "replace" else "PATCH"


def _as_queued(info: TableInfo, current: dict, op: str, fields: dict) -> tuple[str, dict]:
    """How a write is queued. A PUT clears the fields the record has now, not those someone adds in
    Airtable before the flush: queued as a PATCH that clears them, it is rebased and resolved like
    any update (Airtable wins on a field changed meanwhile), as if sent at once."""
    if op != "replace" or not info.fields_by_name:
        return op, fields
    cleared = {name: None for name in current
               if name not in fields and info.fields_by_name.get(name, {}).get("type") not in COMPUTED_TYPES}
    return "update", {**cleared, **fields}


def _match(current: list[dict], fields: dict, merge_on: list[str]) -> str | None:
    """The record an upsert's key fields find (None: it creates one)."""
    key = [fields.get(f) for f in merge_on]
    matches = [r for r in current if [r["fields"].get(f) for f in merge_on] == key]
    if len(matches) > 1:
        raise AirtableResponseError.typed(
            422, "INVALID_RECORDS",
            # As the fake server models it (Airtable's wording is not documented).
            "Cannot update more than one record that matches fieldsToMergeOn",
        )
    return matches[0]["id"] if matches else None


def _check_writable(known: dict[str, dict], fields: dict) -> None:
    for name in fields:
        if name not in known:
            raise AirtableResponseError.typed(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{name}"')
        if known[name].get("type") in COMPUTED_TYPES:
            raise AirtableResponseError.typed(
                422,
                "INVALID_VALUE_FOR_COLUMN",
                f'Field "{name}" cannot accept a value because the field is computed',
            )


def _check_batch(items: Any, *, need_id: bool) -> list[dict]:
    """The request's records, once they are a list Airtable would take."""
    if not isinstance(items, list) or not items:
        raise AirtableResponseError.invalid_request("records must be a non-empty list")
    if len(items) > MAX_RECORDS_PER_WRITE:
        raise AirtableResponseError.typed(
            422, "INVALID_RECORDS", f"You can create, update or upsert at most {MAX_RECORDS_PER_WRITE} records per request"
        )
    for item in items:
        if not isinstance(item, dict):
            raise AirtableResponseError.invalid_request("each record must be a JSON object")
        if need_id and not isinstance(item.get("id"), str):
            raise AirtableResponseError.invalid_request("each record to update needs an id")
    return items


def _check_deletes(record_ids: list[str]) -> None:
    if not record_ids:
        raise AirtableResponseError.invalid_request("records[] must name at least one record to delete")
    if len(record_ids) > MAX_RECORDS_PER_WRITE:
        raise AirtableResponseError.typed(
            422, "INVALID_RECORDS", f"You can delete at most {MAX_RECORDS_PER_WRITE} records per request"
        )
