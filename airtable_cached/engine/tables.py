"""The table registry: which cached table a name or id an agent uses stands for (one per table of
one Airtable's base, however it is spelled), remembered until the database changes."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, overload

from airtable_cached.store.contract import Store, TableRow, Unit

log = logging.getLogger("airtable_cached")


@dataclass
class TableInfo:
    tid: int
    base_id: str
    table_id: str | None
    name: str | None
    schema: dict | None
    pulled_at: float | None

    # Derived once per TableInfo (they are read several times on every read); set_schema resets them.
    @cached_property
    def fields_by_name(self) -> dict[str, dict]:
        return {f["name"]: f for f in (self.schema or {}).get("fields", [])}

    @cached_property
    def name_for_id(self) -> dict[str, str]:
        return {f["id"]: f["name"] for f in (self.schema or {}).get("fields", []) if "id" in f}

    @cached_property
    def id_for_name(self) -> dict[str, str]:
        return {f["name"]: f["id"] for f in (self.schema or {}).get("fields", []) if "id" in f}

    def set_schema(self, schema: dict) -> None:
        self.schema = schema
        for derived in ("fields_by_name", "name_for_id", "id_for_name"):
            self.__dict__.pop(derived, None)

    @classmethod
    def of(cls, row: TableRow) -> TableInfo:
        return cls(tid=row["tid"], base_id=row["base_id"], table_id=row["table_id"], name=row["name"],
                   schema=row["schema"], pulled_at=row["pulled_at"])


def field_name(info: TableInfo, name_or_id: str) -> str:
    return info.name_for_id.get(name_or_id, name_or_id)


class Tables:
    """Tables by the spelling an agent used, for one Airtable (``endpoint``), and the database's
    change marker, asked once per call while this process commits nothing."""

    def __init__(self, store: Store, endpoint: str):
        self.store = store
        self.endpoint = endpoint
        self._infos: dict[tuple[str, str], tuple[tuple, TableInfo]] = {}
        self._call = threading.local()

    @overload
    def info(self, base_id: str, table: str) -> TableInfo: ...
    @overload
    def info(self, base_id: str, table: str, *, create: Literal[True]) -> TableInfo: ...
    @overload
    def info(self, base_id: str, table: str, *, create: bool) -> TableInfo | None: ...
    def info(self, base_id: str, table: str, *, create: bool = True) -> TableInfo | None:
        """The table's row, remembered until the database changes (every read asks for it)."""
        if self.store.in_write():
            return self._read(base_id, table, create=create)
        marker = self.change_marker()
        hit = self._infos.get((base_id, table))
        if hit is not None and hit[0] == marker:
            return hit[1]
        info = self._read(base_id, table, create=create)
        if info is not None and self.change_marker() == marker:
            self._infos[(base_id, table)] = (marker, info)
        return info

    def new_call(self) -> None:
        """A new call of the engine: the marker is asked of the database again."""
        self._call.marker = None

    def change_marker(self) -> tuple:
        """``Store.change_marker``, asked of the database once per call while this process commits
        nothing (a read asks for it several times; each asking is a query)."""
        memo = getattr(self._call, "marker", None)
        if memo is not None and self.store.knows_current(memo):
            return memo
        marker = self.store.change_marker()
        self._call.marker = marker
        return marker

    def _read(self, base_id: str, table: str, *, create: bool = True) -> TableInfo | None:
        row = self.store.replica.table_by_alias(self.endpoint, base_id, table)
        if row is None and create:
            with self.store.write() as unit:
                row = self._find_or_add(unit, base_id, table)
        return None if row is None else TableInfo.of(row)

    def _find_or_add(self, unit: Unit, base_id: str, table: str) -> TableRow:
        replica = unit.replica
        row = replica.table_by_alias(self.endpoint, base_id, table)
        if row is not None:
            return row
        # The other spelling of a table whose schema is known (its id for its name, or the
        # reverse): the same cached table, not a second one.
        row = replica.table_by_id_or_name(self.endpoint, base_id, table)
        if row is not None:
            replica.add_alias(self.endpoint, base_id, table, row["tid"])
            return row
        is_id = table.startswith("tbl") and len(table) == 17
        tid = replica.add_table(self.endpoint, base_id, table if is_id else None, None if is_id else table)
        replica.add_alias(self.endpoint, base_id, table, tid)
        added = replica.table(tid)
        assert added is not None
        return added

    def adopt_unkeyed(self) -> int:
        """Tables cached before the cache was keyed by endpoint become this engine's endpoint's
        (the first sync to open an upgraded file is the one that filled it). Returns how many."""
        if not self.store.replica.has_unkeyed_tables():
            return 0
        with self.store.write() as unit:
            adopted = unit.replica.adopt_unkeyed_tables(self.endpoint)
        if adopted:
            log.info("%d table(s) cached before the cache was keyed by endpoint are now %s's", adopted, self.endpoint)
        return adopted

    def forget_if_unused(self, info: TableInfo) -> None:
        """A table Airtable says does not exist leaves nothing behind (no phantom table for
        ``status`` to list and ``serve-sync`` to pull), unless it holds records or writes."""
        with self.store.write() as unit:
            if info.tid in unit.outbox.tables_with_writes(info.base_id) or unit.replica.has_records(info.tid):
                return
            unit.replica.drop_table(info.tid)
            log.info("table %s of base %s does not exist in Airtable; not kept", info.name or info.table_id, info.base_id)

    def learn_schema(self, unit: Unit, info: TableInfo, schema: dict) -> None:
        """Keep the table's schema; its id and name become aliases of it (unless taken)."""
        learn_schema(unit, self.endpoint, info, schema)


def learn_schema(unit: Unit, endpoint: str, info: TableInfo, schema: dict) -> None:
    """Keep the table's schema; its id and name become aliases of it (unless taken)."""
    unit.replica.set_schema(info.tid, schema)
    for alias in (schema.get("id"), schema.get("name")):
        if alias and not unit.replica.alias_taken(endpoint, info.base_id, alias):
            unit.replica.add_alias(endpoint, info.base_id, alias, info.tid)
