"""Reads answered from the cache as Airtable answers them: listings (filtered, sorted, paged by
offsets that survive writes between pages), single records; what the cache cannot answer exactly
goes to Airtable."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from airtable_cached.config import Settings
from airtable_cached.engine import formula_bridge, links, outage
from airtable_cached.engine.access import Access
from airtable_cached.engine.paging import Snapshots, listing, offset_token, parse_offset
from airtable_cached.engine.ports import SyncHandle
from airtable_cached.engine.readmodel import ReadModel, TableModel
from airtable_cached.engine.search import Indexes
from airtable_cached.engine.shapes import shape, shape_page
from airtable_cached.engine.stats import StatsRecorder
from airtable_cached.engine.tables import TableInfo, Tables, field_name
from airtable_cached.errors import AirtableResponseError, OfflineError
from airtable_cached.rules.policy import Read
from airtable_cached.rules.query import ListQuery
from airtable_cached.rules.records import PROVISIONAL_PREFIX, is_provisional, sort_records
from airtable_cached.store.contract import QueryTooComplex, Selection, Store

PROVISIONAL_RE = re.compile(PROVISIONAL_PREFIX + r"[A-Za-z0-9]{9}")
Check = Callable[[dict], bool]


def resolve_id(store: Store, record_id: str) -> str:
    """A provisional id keeps working after its create was flushed: follow the id map."""
    if not is_provisional(record_id):
        return record_id
    return store.outbox.real_id(record_id) or record_id


class Reads:
    """Listings and single records of one engine."""

    def __init__(self, store: Store, settings: Settings, tables: Tables, access: Access, *, model: ReadModel,
                 stats: StatsRecorder, indexes: Indexes, sync: SyncHandle, clock: Callable[[], float]):
        self.store, self.settings, self.tables, self.access = store, settings, tables, access
        self.model, self.stats, self.indexes, self.sync, self.clock = model, stats, indexes, sync, clock
        self.snapshots = Snapshots()
        self._answer = threading.local()

    def begin_call(self) -> None:
        self._answer.local = False

    def answered_locally(self) -> bool:
        return getattr(self._answer, "local", False)

    def resolve_id(self, record_id: str) -> str:
        return resolve_id(self.store, record_id)

    # -- listings ----------------------------------------------------------------------------------
    def list_records(self, base_id: str, table: str, query: ListQuery) -> dict:
        started = time.perf_counter()
        self.snapshots.sweep(self.clock())
        info = self.tables.info(base_id, table)
        if query.offset and parse_offset(query.offset) is None:
            return self._airtables_offset(info, table, query, started)
        if query.offset:
            page = self._next_page(info, query)
            self.stats.count(info.tid, "list.page", started)
            self._answer.local = True
            return page
        query = self._with_real_ids(query)
        self._check_field_names(info, query.fields or ())
        decision, info, reason = self._decide(info, table, query)
        if decision is Read.REMOTE:
            return self._list_remote(info, table, query, reason, started)
        page = self._list_local(info, table, query)
        # A read that pulled the table first waited for Airtable: not a local read.
        self.stats.count(info.tid, "list.pull" if decision is Read.PULL_THEN_SERVE else "list.local", started)
        self._answer.local = True
        return page

    def _airtables_offset(self, info: TableInfo, table: str, query: ListQuery, started: float) -> dict:
        # Airtable's own offset, from a listing it answered: the next page is its to give.
        if self.settings.mode == "offline":
            raise OfflineError("offline mode: this offset belongs to a listing Airtable answered")
        self.stats.count(info.tid, "list.remote", started)
        return self.sync.require().list_remote(info, table, query)

    def _decide(self, info: TableInfo, table: str, query: ListQuery) -> tuple[Read, TableInfo, str | None]:
        reason = self._remote_reason(info, query)
        decision, info = self.access.ensure_fresh_or_forget(info, table, reason)
        if decision is Read.PULL_THEN_SERVE and reason is None and query.formula:
            # Pulled for the first time: now the schema tells whether the cache can answer it.
            reason = self._remote_reason(info, query)
            decision = Read.REMOTE if reason else decision
        return decision, info, reason

    def _list_remote(self, info: TableInfo, table: str, query: ListQuery, reason: str | None, started: float) -> dict:
        self.stats.count(info.tid, "list.remote", started)
        if query.formula and reason and self.settings.mode != "passthrough":
            self.stats.count(info.tid, "formula.fallback")
        # Linked tables' queued writes too: they change this table's link fields.
        if self.access.flush_before_asking(info, linked=True):
            query = self._with_real_ids(query)
        return self.sync.require().list_remote(info, table, query)

    def _list_local(self, info: TableInfo, table: str, query: ListQuery) -> dict:
        self._check_field_names(info, [name for name, _direction in query.sort])
        if query.formula:
            self._ensure_linked_fresh(info, query.formula)
        if query.view and (not self.access.view_is_fresh(info, query.view) or self.access.has_queued_writes(info, linked=True)):
            self._refresh_view(info, table, query.view)
        return self._first_page(info, query)

    def _refresh_view(self, info: TableInfo, table: str, view: str) -> None:
        """A view's filter and order are Airtable's to evaluate: after local writes to its table,
        they are sent first and the view is read again (counted as a remote read)."""
        if self.settings.mode == "offline":
            if not self.access.view_is_fresh(info, view):
                raise OfflineError(f"offline mode: view {view!r} of table {table!r} has never been pulled")
            return
        self.access.flush_before_asking(info, linked=True)
        outage.pull_view_or_serve_stale(self.access, info, table, view)
        self.stats.count(info.tid, "view.remote")

    # -- fidelity helpers (issue 9) ---------------------------------------------------------------
    def _with_real_ids(self, query: ListQuery) -> ListQuery:
        """A formula naming a provisional id (``RECORD_ID() = 'recLOCAL...'``) finds the record
        after its create was flushed too: the ids Airtable gave are put in."""
        if not query.formula or PROVISIONAL_PREFIX not in query.formula:
            return query
        formula = PROVISIONAL_RE.sub(lambda m: self.resolve_id(m.group(0)), query.formula)
        return replace(query, formula=formula) if formula != query.formula else query

    def _check_field_names(self, info: TableInfo, names: Iterable[str]) -> None:
        """Airtable answers 422 ``UNKNOWN_FIELD_NAME`` for a name in ``fields`` or ``sort`` that
        the table does not have (the schema is read again first: the field may be new)."""
        names = list(names)
        if not names or not info.fields_by_name:
            return
        unknown = [n for n in names if n not in info.fields_by_name and n not in info.name_for_id]
        if unknown and self.access.reread_schema(info):
            unknown = [n for n in names if n not in info.fields_by_name and n not in info.name_for_id]
        if unknown:
            raise AirtableResponseError.typed(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{unknown[0]}"')

    def _remote_reason(self, info: TableInfo, query: ListQuery) -> str | None:
        """Why this query cannot be answered exactly from the cache (``None``: it can).

        A formula naming a field the cached schema lacks reads the schema again before Airtable's
        422 is given: the field may have been added since."""
        try:
            return self._query_remote_reason(info, query)
        except AirtableResponseError as exc:
            if exc.body.get("error", {}).get("type") != "INVALID_FILTER_BY_FORMULA" or not self.access.reread_schema(info):
                raise
            return self._query_remote_reason(info, query)

    def _query_remote_reason(self, info: TableInfo, query: ListQuery) -> str | None:
        if query.cell_format == "string":
            return "cellFormat=string renders values the way Airtable's UI does"
        if query.by_field_ids and not info.schema and info.pulled_at is not None:
            return "returnFieldsByFieldId needs the table schema, which this token cannot read"
        if query.formula:
            return formula_bridge.remote_reason(self.store.replica, info, query.formula)
        return None

    # -- selecting records -------------------------------------------------------------------------
    def _select(self, info: TableInfo, query: ListQuery, *, limit: int | None = None, load: bool = True) -> list[dict]:
        """Every record the query matches, in the order Airtable would list them (the first
        ``limit`` of them: only for a query SQL answers whole, see ``_sql_decides``)."""
        # A limited read (first(), maxRecords, a first page) uses the model only if it is current:
        # decoding the whole table for one page is what LIMIT in SQL avoids.
        model = None if query.view else self.model.table(info.tid, load=load and limit is None)
        if model is not None:
            records = self._select_in_model(info, query, model)
        else:
            selection, residual = self._selection(info, query)
            records = self._run(info, query, selection, residual, limit=limit)
            limit = None
        if query.sort:
            records = sort_records(records, [(field_name(info, f), d) for f, d in query.sort], info.fields_by_name)
        return records if limit is None else records[:limit]

    def _run(self, info: TableInfo, query: ListQuery, selection: Selection, residual: Check | None, *,
             limit: int | None) -> list[dict]:
        """The selected records, the residual check applied. A store bounds a condition's size (an
        OR of about 1,000 terms in SQLite): such a formula is answered by the evaluator over the
        whole table instead."""
        try:
            records = self.store.replica.select_records(info.tid, selection, limit=limit)
        except QueryTooComplex:
            records, residual = self._run_in_python(info, query, selection)
        return records if residual is None else [r for r in records if residual(r)]

    def _run_in_python(self, info: TableInfo, query: ListQuery, selection: Selection) -> tuple[list[dict], Check]:
        self.stats.count(info.tid, "formula.python")
        assert query.formula is not None
        predicate, _clock_bound = self._python_predicate(info, query.formula)
        whole = Selection(view=selection.view, sorted_later=selection.sorted_later)
        return self.store.replica.select_records(info.tid, whole), predicate

    def _select_ids(self, info: TableInfo, query: ListQuery, *, limit: int | None) -> list[str]:
        """The ids ``_select`` would list, without decoding a record (a query SQL answers whole)."""
        if not query.view and self.model.table(info.tid, load=False) is not None:
            return [r["id"] for r in self._select(info, query, limit=limit)]
        selection, residual = self._selection(info, query)
        if residual is not None:  # SQL could not take the formula: decode and let the evaluator decide
            return [r["id"] for r in self._select(info, query, limit=limit)]
        try:
            return self.store.replica.select_record_ids(info.tid, selection, limit=limit)
        except QueryTooComplex:
            self.stats.count(info.tid, "formula.python")
            return [r["id"] for r in self._select(info, query, limit=limit)]

    def _select_in_model(self, info: TableInfo, query: ListQuery, model: TableModel) -> list[dict]:
        """The matching records of the decoded model, in natural order (shared with the model:
        never mutated, never handed out; ``shape`` copies), remembered for the model's state
        unless the formula reads the clock."""
        if not query.formula:
            return model.records
        link_check = self._link_formula(info, query)
        if link_check is not None:
            return [r for r in model.records if link_check(r)]
        compiled = formula_bridge.sql_filter(info, query.formula, self.store.replica.dialect)
        self.indexes.filtered_on(compiled.equality_fields)
        predicate, clock_bound = self._python_predicate(info, query.formula)

        def matching() -> list[dict]:
            if not compiled.indexed:
                return [r for r in model.records if predicate(r)]
            return self._indexed_in_model(info, query, model)

        if clock_bound:
            return matching()
        return model.remembered(("formula", query.formula), matching)

    def _indexed_in_model(self, info: TableInfo, query: ListQuery, model: TableModel) -> list[dict]:
        """An index finds the candidates (ids only, nothing decoded); the model has them decoded."""
        selection, residual = self._selection(info, query)
        try:
            ids = self.store.replica.select_record_ids(info.tid, selection)
        except QueryTooComplex:
            self.stats.count(info.tid, "formula.python")
            assert query.formula is not None
            residual, _clock_bound = self._python_predicate(info, query.formula)
            ids = self.store.replica.select_record_ids(info.tid, Selection())
        found = (model.get(i) for i in ids)
        return [r for r in found if r is not None and (residual is None or residual(r))]

    def _selection(self, info: TableInfo, query: ListQuery) -> tuple[Selection, Check | None]:
        """The store's selection for a query, and the check still to apply to what it returns."""
        link_check = self._link_formula(info, query)
        where, params, residual, indexed = "", [], link_check, False
        if link_check is None and query.formula:
            compiled = formula_bridge.sql_filter(info, query.formula, self.store.replica.dialect)
            self.indexes.filtered_on(compiled.equality_fields)
            where, params, residual, indexed = compiled.sql, compiled.params, compiled.check, compiled.indexed
        return Selection(where, params, view=query.view, indexed=indexed, sorted_later=bool(query.sort)), residual

    def _link_formula(self, info: TableInfo, query: ListQuery) -> Check | None:
        """A formula naming link fields of this table, as a check where links read as their
        records' primary values (``None``: it names none the cache can read)."""
        if not query.formula or not self._link_sources(info, query.formula):
            return None
        check, _clock_bound = self._python_predicate(info, query.formula)
        return check

    def _ensure_linked_fresh(self, info: TableInfo, formula: str) -> None:
        """The linked tables whose primary values a formula reads are brought up to date as the
        table itself is (a stale name there is a stale answer here)."""
        for tid in sorted({tid for tid, _primary in self._link_sources(info, formula).values()}):
            row = self.store.replica.table(tid)
            if row is not None and row["table_id"]:
                self.access.ensure_fresh(self.tables.info(info.base_id, row["table_id"]), row["table_id"], None)

    def _link_sources(self, info: TableInfo, formula: str) -> dict:
        """The link fields a formula reads (as their records' primary values, as Airtable does)."""
        return formula_bridge.link_sources(self.store.replica, info, formula)

    def _python_predicate(self, info: TableInfo, formula: str) -> tuple[Check, bool]:
        """The whole formula as a check over decoded records, links read as primary values, and
        whether its answer depends on the clock."""
        check, clock_bound = formula_bridge.python_filter(info, formula)
        sources = self._link_sources(info, formula)
        if not sources:
            return check, clock_bound
        primary = links.PrimaryValues(self.store.replica, sources)
        return (lambda record: check(primary.record(record))), clock_bound

    # -- pages -------------------------------------------------------------------------------------
    def _first_page(self, info: TableInfo, query: ListQuery) -> dict:
        """The first page; the ids of the rest (if any) go to a snapshot for the offset."""
        load = self._may_load_model(info, query)
        records, rest = self._select_page(info, query, load=load)
        result: dict[str, Any] = {"records": shape_page(info, records, query)}
        if rest:
            token = self.snapshots.put([r["id"] for r in records] + rest, self.clock(), listing(info, query), load=load)
            result["offset"] = offset_token(token, query.page_size)
        return result

    def _may_load_model(self, info: TableInfo, query: ListQuery) -> bool:
        """Whether this listing may decode the whole table into the read model (when it is not
        current): a whole-table listing decodes every record anyway; a filtered one only when a
        filtered listing of this table came already at this state of the file (the first one
        goes to SQLite, which decodes only the matches: see ReadModel.wanted_again)."""
        if query.view:
            return False
        if not query.formula or self.model.table(info.tid, load=False) is not None:
            return True
        return self.model.wanted_again(info.tid)

    def _select_page(self, info: TableInfo, query: ListQuery, *, load: bool = True) -> tuple[list[dict], list[str]]:
        """The first page's records and the ids of the records after it (``max_records`` applied).
        Where SQL alone decides membership and order, the limit goes into SQL and only the first
        page is decoded; otherwise every match is decoded to be filtered or sorted here."""
        limit = query.max_records
        if self._sql_decides(info, query):
            wanted = query.page_size + 1 if limit is None else min(limit, query.page_size + 1)
            records = self._select(info, query, limit=wanted)
            if len(records) <= query.page_size:
                return records, []
            ids = self._select_ids(info, query, limit=limit)
            return records[: query.page_size], ids[query.page_size :]
        records = self._select(info, query, load=load)
        if limit is not None:
            records = records[:limit]
        return records[: query.page_size], [r["id"] for r in records[query.page_size :]]

    def _sql_decides(self, info: TableInfo, query: ListQuery) -> bool:
        if query.sort:
            return False
        if not query.formula:
            return True
        if formula_bridge.link_sources(self.store.replica, info, query.formula):
            return False
        return formula_bridge.sql_filter(info, query.formula, self.store.replica.dialect).check is None

    def _next_page(self, info: TableInfo, query: ListQuery) -> dict:
        parsed = parse_offset(query.offset or "")
        snapshot = self.snapshots.get(parsed[0], self.clock()) if parsed else None
        # The ids put in when the listing began, or now (a create flushed between pages).
        if snapshot is not None and snapshot.listing not in (listing(info, query), listing(info, self._with_real_ids(query))):
            snapshot = None  # an offset of another table or query (Airtable: the same 422)
        if parsed is None or snapshot is None:
            raise AirtableResponseError.typed(
                422,
                "LIST_RECORDS_ITERATOR_NOT_AVAILABLE",
                "The offset is no longer valid; restart the listing from the beginning",
            )
        position = parsed[1]
        ids = snapshot.ids
        # The same records as when the listing began, with their current contents; deleted ones skipped.
        wanted = ids[position : position + query.page_size]
        # The later pages of a listing decode the table once into the model if its first page
        # could (_may_load_model); otherwise they read their records from SQLite.
        rows = self.rows_by_id(info.tid, wanted, load=snapshot.load)
        self._follow_flushed_creates(info.tid, wanted, rows)
        result: dict[str, Any] = {"records": shape_page(info, [rows[i] for i in wanted if i in rows], query)}
        if position + query.page_size < len(ids):
            result["offset"] = offset_token(parsed[0], position + query.page_size)
        else:
            self.snapshots.finish(parsed[0])
        return result

    def _follow_flushed_creates(self, tid: int, wanted: list[str], rows: dict[str, dict]) -> None:
        """A create flushed (by any process) between two pages now has Airtable's id: it is the
        same record, listed under its real id, not a deleted one to skip."""
        moved = {i: self.resolve_id(i) for i in wanted if i not in rows and is_provisional(i)}
        moved = {old: new for old, new in moved.items() if new != old}
        if moved:
            found = self.rows_by_id(tid, list(moved.values()))
            rows.update({old: found[new] for old, new in moved.items() if new in found})

    def rows_by_id(self, tid: int, ids: list[str], *, load: bool = False) -> dict[str, dict]:
        """The visible records among ``ids``. From the read model when it is current (or with
        ``load``, decoded for this: a listing's later pages), else from the store."""
        model = self.model.table(tid, load=load)
        if model is not None:
            pairs = ((i, model.get(i)) for i in ids)
            return {i: r for i, r in pairs if r is not None}
        return self.store.replica.visible_records_by_id(tid, ids)

    # -- single records ----------------------------------------------------------------------------
    def get_record(self, base_id: str, table: str, record_id: str, query: ListQuery) -> dict:
        started = time.perf_counter()
        info = self.tables.info(base_id, table)
        reason = self._remote_reason(info, query)
        decision, info = self.access.ensure_fresh_or_forget(info, table, reason)
        if decision is Read.REMOTE:
            self.stats.count(info.tid, "get.remote", started)
            self.access.flush_before_asking(info, linked=True)
            return self.sync.require().get_remote(info, table, self.resolve_id(record_id), query)
        rows = self.rows_by_id(info.tid, [self.resolve_id(record_id)])
        if not rows:
            self.stats.count(info.tid, "get.miss", started)
            raise AirtableResponseError.record_not_found(record_id)
        self.stats.count(info.tid, "get.pull" if decision is Read.PULL_THEN_SERVE else "get.local", started)
        self._answer.local = True
        return shape(info, next(iter(rows.values())), query)

