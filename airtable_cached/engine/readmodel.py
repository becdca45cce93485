"""The decoded read model: each table's visible records, decoded once and kept in memory (issue 11).

A cached ``all()`` used to decode every record's JSON on every call (45% of its time). The model
decodes a table once and serves it until the database changes: the change marker
(:meth:`Store.change_marker`) moves with every commit through this process's ``Store`` and, through
SQLite's ``data_version``, with every commit by another process. So the model is exact across
processes, and a read never sees a state older than the file's.

Records handed out are always fresh copies (:func:`copy_record`): an agent mutating what it got
changes nothing the cache keeps. Filters the cache answers in Python are evaluated over the model,
and their matching ids are remembered for the same change marker (formulas that read the clock,
``NOW()`` and ``TODAY()``, are evaluated again on every call).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from airtable_cached.rules.records import loads
from airtable_cached.store.contract import Store

__all__ = ["MUTABLE", "ReadModel", "TableModel", "copy_fields", "copy_kept_fields", "copy_record_fields", "copy_value", "loads", "with_mutable"]

#: A table larger than this is read from SQLite page by page instead (its decoded copy would cost
#: more memory than it saves time).
MAX_RECORDS = 200_000
#: Filter results remembered per table (each an id list) for the current marker.
MAX_REMEMBERED_FILTERS = 64

_ATOMS = (str, int, float, bool, type(None))
#: Key of a model record's list of fields holding lists or objects (never part of an answer:
#: answers are built key by key by the engine).
MUTABLE = "_mutable"


class TableModel:
    """One table's visible records (``fields IS NOT NULL``) by id, in natural order (a dict keeps
    its insertion order; local creates go to the end, as in the ``records`` table).

    Readers in other threads may hold it while this engine patches it after its own writes: every
    change replaces ``records`` (never mutates a list handed out) and goes under the lock."""

    def __init__(self, marker: tuple, records: list[dict]):
        self.marker = marker
        self.by_id: dict[str, dict] = {r["id"]: r for r in records}
        self._records: list[dict] | None = records
        self._filters: OrderedDict[Hashable, list[dict]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def records(self) -> list[dict]:
        with self._lock:
            if self._records is None:
                self._records = list(self.by_id.values())
            return self._records

    def get(self, record_id: str) -> dict | None:
        return self.by_id.get(record_id)

    def remembered(self, key: Hashable, compute: Callable[[], list[dict]]) -> list[dict]:
        with self._lock:
            found = self._filters.get(key)
            if found is not None:
                self._filters.move_to_end(key)
                return found
        found = compute()
        with self._lock:
            self._filters[key] = found
            while len(self._filters) > MAX_REMEMBERED_FILTERS:
                self._filters.popitem(last=False)
        return found

    def carry(self, before: tuple, after: tuple) -> None:
        with self._lock:
            if self.marker == before:
                self.marker = after

    def apply(self, marker: tuple, changed: dict[str, dict | None]) -> None:
        """Records this engine just wrote (``None``: no longer visible), now true as of ``marker``."""
        with self._lock:
            for record_id, record in changed.items():
                if record is None:
                    self.by_id.pop(record_id, None)
                else:
                    self.by_id[record_id] = record
            self._records = None
            self._filters.clear()
            self.marker = marker


class ReadModel:
    """The models of the tables this engine reads, for the current state of the database."""

    def __init__(self, store: Store, *, marker: Callable[[], tuple] | None = None):
        self.store = store
        #: The database's change marker (the engine's, which asks SQLite once per call).
        self.marker = marker or store.change_marker
        self._tables: dict[int, TableModel] = {}
        self._asked: dict[int, tuple] = {}
        self._lock = threading.Lock()
        #: Times a table was decoded whole (for tests and benchmarks).
        self.loads = 0

    def table(self, tid: int, *, load: bool = True) -> TableModel | None:
        """The table's model as of now; decoded again if the database changed and ``load`` (else
        ``None``: a small read goes to SQLite rather than decode the whole table). Also ``None``
        inside a write transaction (its own changes are not committed, so the marker has not moved
        yet) and for a table past ``MAX_RECORDS``."""
        if self.store.in_write():
            return None
        marker = self.marker()
        with self._lock:
            model = self._tables.get(tid)
        if model is not None and model.marker == marker:
            return model
        if not load:
            return None
        replica = self.store.replica
        if replica.count_visible(tid) > MAX_RECORDS:
            with self._lock:
                self._tables.pop(tid, None)
            return None
        records = replica.visible_records(tid)
        if self.store.change_marker() != marker:
            return None  # another thread committed meanwhile: this read goes to SQLite
        model = TableModel(marker, [with_mutable(record) for record in records])
        return self._keep(tid, marker, model)

    def _keep(self, tid: int, marker: tuple, model: TableModel) -> TableModel:
        with self._lock:
            # Models decoded under an older marker are stale: dropped, not kept for later.
            self._tables = {t: m for t, m in self._tables.items() if m.marker == marker}
            self._tables[tid] = model
            self.loads += 1
        return model

    def after_write(self, tid: int, before: tuple, record_ids: Iterable[str]) -> None:
        """This engine committed one transaction that changed only ``record_ids`` of table ``tid``:
        patch the model instead of decoding the whole table again. Patched only when nothing else
        committed meanwhile (the marker moved by exactly that one commit); otherwise the next read
        decodes the table again."""
        with self._lock:
            model = self._tables.get(tid)
        if model is None or model.marker != before:
            return
        after = self.store.change_marker()
        if not self.store.moved_only_by_own_commit(before, after):
            return
        ids = sorted(set(record_ids))
        changed: dict[str, dict | None] = dict.fromkeys(ids)
        for record_id, record in self.store.replica.visible_records_by_id(tid, ids).items():
            changed[record_id] = with_mutable(record)
        if self.store.change_marker() != after:
            return
        model.apply(after, changed)

    def wanted_again(self, tid: int) -> bool:
        """Whether a read that could use the model but not load it (a filtered read: SQLite
        decodes only the matches) came for this table already at this state of the file. The
        first such read goes to SQLite; the second loads the model, which pays off from then on.
        So a file changed by another process between every read costs what it cost before the
        model existed, and a quiet one is read at the floor."""
        marker = self.marker()
        with self._lock:
            again = self._asked.get(tid) == marker
            self._asked[tid] = marker
        return again

    def carry(self, before: tuple) -> None:
        """This engine committed one transaction that changed no record (statistics, a token's
        grant): models current before it stay current, unless anything else committed too."""
        after = self.store.change_marker()
        if not self.store.moved_only_by_own_commit(before, after):
            return
        with self._lock:
            models = list(self._tables.values())
        for model in models:
            model.carry(before, after)

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()


def with_mutable(record: dict) -> dict:
    """A decoded record as the model keeps it (its own copy: never handed out), listing the
    fields a copy must copy: those holding lists or objects of atoms only (``.copy()`` copies them
    whole, in C), and those nested deeper (:func:`copy_value`). Atoms are immutable and shared."""
    flat: list[str] = []
    nested: list[str] = []
    for name, value in record["fields"].items():
        if type(value) not in _ATOMS:
            (flat if _holds_atoms_only(value) else nested).append(name)
    record[MUTABLE] = (tuple(flat), tuple(nested))
    return record


def _holds_atoms_only(value: list | dict) -> bool:
    items = value.values() if type(value) is dict else value
    return all(type(v) in _ATOMS for v in items)


def copy_record_fields(record: dict) -> dict:
    """A deep copy of a record's fields; quicker for the model's records, which list the fields
    holding lists or objects."""
    mutable = record.get(MUTABLE)
    if mutable is None:
        return copy_fields(record["fields"])
    return copy_kept_fields(record["fields"], mutable)


def copy_kept_fields(fields: dict, mutable: tuple[tuple[str, ...], tuple[str, ...]]) -> dict:
    """A deep copy of a model record's fields, given its :data:`MUTABLE` entry."""
    flat, nested = mutable
    out = fields.copy()
    for name in flat:
        out[name] = out[name].copy()
    for name in nested:
        out[name] = copy_value(out[name])
    return out


def copy_value(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists and atoms only), cheaper than ``copy.deepcopy``."""
    kind = type(value)
    if kind is list:
        return [v if type(v) in _ATOMS else copy_value(v) for v in value]
    if kind is dict:
        return {k: v if type(v) in _ATOMS else copy_value(v) for k, v in value.items()}
    return value


def copy_fields(fields: dict) -> dict:
    """A deep copy of a record's fields: atoms are shared (immutable), lists and dicts copied."""
    out = fields.copy()
    for name, value in fields.items():
        if type(value) not in _ATOMS:
            out[name] = copy_value(value)
    return out
