"""The local Airtable: answers the record endpoints from the cache and the queue.

``Engine.dispatch(route, params, body)`` returns the JSON Airtable would return, or raises
:class:`AirtableResponseError` with the status and body Airtable would send. The pyairtable front-end
(``api.py``) and the plain-HTTP front-end (``http.py``) are thin wrappers around it, so paging,
sorting, filtering, write semantics and errors exist once.

What the cache holds: per record the last state Airtable reported (``remote``)
and what reads see (``fields``: remote with the pending writes applied). Every write applies to
``fields`` and appends to the outbox in one transaction; a pull replaces ``remote`` and replays the
pending writes on top (``apply.py``).

The engine is a facade over its parts, each with what it needs handed to it: ``tables.py`` (the
registry), ``access.py`` (freshness, grants), ``reads.py``, ``search.py``, ``writes.py``, ``apply.py``
(the state transitions the sync calls), ``stats.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Literal, TypeVar, cast, overload

from airtable_cached.config import Settings
from airtable_cached.engine import apply
from airtable_cached.engine.access import Access
from airtable_cached.engine.ports import SyncHandle, SyncPort
from airtable_cached.engine.readmodel import ReadModel
from airtable_cached.engine.reads import Reads
from airtable_cached.engine.routing import PLAIN_QUERY, Route, deleted_ids, json_body, list_query
from airtable_cached.engine.search import Indexes, Search
from airtable_cached.engine.stats import StatsRecorder
from airtable_cached.engine.tables import TableInfo, Tables
from airtable_cached.engine.writes import Writes
from airtable_cached.errors import AirtableResponseError, OfflineError
from airtable_cached.rules.query import ListQuery
from airtable_cached.store.contract import Store, Unit
from airtable_cached.types import (
    RecordDeletedDict,
    RecordDict,
    RecordListDict,
    RecordsDeletedDict,
    RecordsDict,
    UpsertResultDict,
)

log = logging.getLogger("airtable_cached")

#: The store's own type, so that callers still reaching past the contract keep their types.
S = TypeVar("S", bound=Store)


class Engine(Generic[S]):
    """The local Airtable over one cache."""

    def __init__(self, store: S, settings: Settings, sync: SyncPort | None = None, *,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.settings = settings
        self.clock = clock
        self._sync = SyncHandle(sync)
        self.tables = Tables(store, settings.endpoint_url)
        self.model = ReadModel(store, marker=self.tables.change_marker)
        self.stats = StatsRecorder(store)
        self.stats.on_written = self.model.carry  # statistics change no record: the model stays
        self.access = Access(store, settings, self.tables, sync=self._sync, stats=self.stats, model=self.model, clock=clock)
        self.indexes = Indexes(store, settings)
        self.indexes.on_written = self.model.carry  # an index changes no record either
        self.reads = Reads(store, settings, self.tables, self.access, model=self.model, stats=self.stats,
                           indexes=self.indexes, sync=self._sync, clock=clock)
        self.writes = Writes(store, settings, self.tables, self.access, self.reads, model=self.model,
                             sync=self._sync, clock=clock)
        self._search = Search(store, self.tables, self.access)

    @property
    def sync(self) -> SyncPort | None:
        """The connection to Airtable (set after the engine is made, or None)."""
        return self._sync.sync

    @sync.setter
    def sync(self, sync: SyncPort | None) -> None:
        self._sync.sync = sync

    @property
    def snapshots(self) -> Any:
        return self.reads.snapshots

    @property
    def authorized(self) -> set[str]:
        return self.access.authorized

    @property
    def endpoint(self) -> str:
        """The Airtable this engine mirrors: part of every table's key in the cache."""
        return self.settings.endpoint_url

    # -- entry point -------------------------------------------------------------------------------
    def answered_locally(self) -> bool:
        """Whether this thread's last ``dispatch`` was answered from the cache (not by Airtable):
        such an answer is built by the engine, already in Airtable's record shape, so the
        pyairtable front-end need not validate it again (api.py, ``Table.iterate``)."""
        return self.reads.answered_locally()

    def dispatch(self, r: Route, params: Mapping[str, Any], body: Any) -> Any:
        self.reads.begin_call()
        self.tables.new_call()
        if r.action == "list":
            return self.list_records(r.base_id, r.table, list_query(r, params, body))
        if r.action == "get":
            query = PLAIN_QUERY if not params else ListQuery.from_params(params)
            return self.get_record(r.base_id, r.table, r.record_id or "", query)
        if r.action == "create":
            return self.create(r.base_id, r.table, json_body(body))
        if r.action in ("update", "replace"):
            return self.update(r.base_id, r.table, r.record_id, json_body(body), replace=r.action == "replace")
        if r.action == "delete":
            if r.record_id:
                return self.delete(r.base_id, r.table, [r.record_id], single=True)
            return self.delete(r.base_id, r.table, deleted_ids(params), single=False)
        raise AssertionError(r.action)

    # -- tables ------------------------------------------------------------------------------------
    @overload
    def table_info(self, base_id: str, table: str) -> TableInfo: ...
    @overload
    def table_info(self, base_id: str, table: str, *, create: Literal[True]) -> TableInfo: ...
    @overload
    def table_info(self, base_id: str, table: str, *, create: bool) -> TableInfo | None: ...
    def table_info(self, base_id: str, table: str, *, create: bool = True) -> TableInfo | None:
        """The table's row, remembered until the database changes (every read asks for it)."""
        return self.tables.info(base_id, table, create=create)

    def forget_marker(self) -> None:
        """After waiting (on a lock another process held), ask the database again: it may have committed."""
        self.tables.new_call()

    def change_marker(self) -> tuple:
        return self.tables.change_marker()

    def adopt_unkeyed_tables(self) -> int:
        return self.tables.adopt_unkeyed()

    def is_fresh(self, base_id: str, table: str) -> bool:
        return self.access.is_fresh(self.table_info(base_id, table))

    def grant(self, base_id: str) -> None:
        """This engine's token was seen to read ``base_id`` (a pull or a probe answered)."""
        self.access.grant(base_id)

    def wait_for_refreshes(self, timeout: float | None = None) -> bool:
        return self.access.wait_for_refreshes(timeout)

    def start_background(self, key: object, target: Callable[[], None], name: str) -> None:
        self.access.start_background(key, target, name)

    def refresh_schema(self, base_id: str, table: str) -> None:
        """Read the table's schema again (what the cache learnt may not be what Airtable has)."""
        try:
            self.access.reread_schema(self.table_info(base_id, table))
        except (AirtableResponseError, OfflineError, OSError) as exc:  # requests errors are OSErrors
            log.info("could not read the schema of %s again: %s", table, exc)

    def reread_schema(self, info: TableInfo) -> bool:
        """Read the table's schema again into ``info`` (a field added, changed or removed in
        Airtable); whether a schema came back."""
        return self.access.reread_schema(info)

    def known_views(self, base_id: str, table: str) -> list[str]:
        return self.store.replica.known_views(self.table_info(base_id, table).tid)

    # -- reads, search, writes ---------------------------------------------------------------------
    def list_records(self, base_id: str, table: str, query: ListQuery) -> RecordListDict:
        self.tables.new_call()  # called directly too (not only by dispatch): ask the database again
        return cast(RecordListDict, self.reads.list_records(base_id, table, query))

    def get_record(self, base_id: str, table: str, record_id: str, query: ListQuery) -> RecordDict:
        self.tables.new_call()  # called directly too (not only by dispatch): ask the database again
        return cast(RecordDict, self.reads.get_record(base_id, table, record_id, query))

    def resolve_id(self, record_id: str) -> str:
        """A provisional id keeps working after its create was flushed: follow the id map."""
        return self.reads.resolve_id(record_id)

    def search(self, base_id: str, table: str, text: str, *, fields: list[str] | None = None,
               max_records: int | None = None) -> list[RecordDict]:
        return cast("list[RecordDict]", self._search.search(base_id, table, text, fields=fields, max_records=max_records))

    def ensure_index(self, field: str) -> str | None:
        return self.indexes.ensure_index(field)

    def create(self, base_id: str, table: str, body: dict) -> RecordDict | RecordsDict | UpsertResultDict:
        self.tables.new_call()  # called directly too (not only by dispatch): ask the database again
        return cast("RecordDict | RecordsDict | UpsertResultDict", self.writes.create(base_id, table, body))

    def update(self, base_id: str, table: str, record_id: str | None, body: dict, *,
               replace: bool) -> RecordDict | RecordsDict | UpsertResultDict:
        self.tables.new_call()  # called directly too (not only by dispatch): ask the database again
        return cast("RecordDict | RecordsDict | UpsertResultDict",
                    self.writes.update(base_id, table, record_id, body, replace=replace))

    def delete(self, base_id: str, table: str, record_ids: list[str], *, single: bool) -> RecordDeletedDict | RecordsDeletedDict:
        self.tables.new_call()  # called directly too (not only by dispatch): ask the database again
        return cast("RecordDeletedDict | RecordsDeletedDict", self.writes.delete(base_id, table, record_ids, single=single))

    # -- state transitions (apply.py; the sync calls those functions on its store or unit itself) ----
    def recompute(self, unit: Unit, tid: int, record_ids: Iterable[str]) -> None:
        """Rebuild what reads see for these records, in the unit of work (``apply.recompute``)."""
        apply.recompute(unit, tid, record_ids)

    def apply_pull(self, base_id: str, table: str, records: list[dict], *, started_at: float,
                   schema: dict | None = None, view: str | None = None, complete: bool = True) -> None:
        """Swap in a pulled table (or view) in one transaction, then replay the queue on top."""
        apply.apply_pull(self.store, self.table_info(base_id, table), records, endpoint=self.endpoint, clock=self.clock,
                         started_at=started_at, schema=schema, view=view, complete=complete)

    def absorb(self, base_id: str, table: str, records: list[dict], *, sent_at: float | None = None) -> None:
        """Records Airtable returned to a request sent on the agent's behalf (at ``sent_at``): keep
        them, unless a flush confirmed a newer state of the record meanwhile."""
        info = self.table_info(base_id, table)
        now = self.clock()
        apply.absorb(self.store, info, records, now=now, sent_at=now if sent_at is None else sent_at)

    def absorb_answer(self, r: Route, params: Mapping[str, Any], body: Any, result: Any, *, sent_at: float) -> None:
        """Passthrough: Airtable answered a record request sent as the agent made it; keep what it
        said about whole records (never a projection, string cells or field-id keys)."""
        if not isinstance(result, dict):
            return
        try:
            query = list_query(r, params, body) if r.action == "list" else ListQuery.from_params(params)
        except AirtableResponseError:
            return
        if not query.returns_full_records or (isinstance(body, dict) and body.get("returnFieldsByFieldId")):
            return
        if result.get("deleted") and "id" in result:
            self.forget(r.base_id, r.table, [result["id"]])
        elif isinstance(result.get("records"), list):
            self._absorb_records(r, result["records"], sent_at)
        elif "id" in result and "fields" in result:
            self.absorb(r.base_id, r.table, [result], sent_at=sent_at)

    def _absorb_records(self, r: Route, records: list, sent_at: float) -> None:
        deleted = [x["id"] for x in records if x.get("deleted")]
        if deleted:
            self.forget(r.base_id, r.table, deleted)
        else:
            self.absorb(r.base_id, r.table, records, sent_at=sent_at)

    def forget(self, base_id: str, table: str, record_ids: list[str]) -> None:
        apply.forget(self.store, self.table_info(base_id, table), record_ids)
