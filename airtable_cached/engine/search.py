"""Field indexes made as agents filter on fields, and full-text search over a table's records."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

from airtable_cached.config import Settings
from airtable_cached.engine.access import Access
from airtable_cached.engine.shapes import shape
from airtable_cached.engine.tables import Tables, field_name
from airtable_cached.rules.query import ListQuery
from airtable_cached.store.contract import Store


class Indexes:
    """An index on a text field once agents filter on it by equality often enough (or as configured)."""

    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.settings = settings
        self._filter_uses: dict[str, int] = {}
        #: The field indexes known to exist (asked once; then kept as they are made).
        self.indexed: set[str] = store.replica.field_indexes()
        #: Called with the change marker from before each index is made (which changes no record).
        self.on_written: Callable[[tuple], None] | None = None

    def filtered_on(self, names: list[str]) -> None:
        """Agents filter on these fields by equality: index those used often enough."""
        for name in names:
            uses = self._filter_uses[name] = self._filter_uses.get(name, 0) + 1
            if uses >= self.settings.index_after or name in self.settings.index_fields:
                self.ensure_index(name)

    def ensure_index(self, field: str) -> str | None:
        """An index on one field's value; returns its name (``None``: not indexable)."""
        index = self.store.replica.field_index(field)
        if index is not None and index not in self.indexed:
            before = None if self.store.in_write() else self.store.change_marker()
            with self.store.write() as unit:
                unit.replica.add_field_index(field)
            self.indexed.add(index)
            if before is not None and self.on_written is not None:
                self.on_written(before)
        return index


class Search:
    """Records whose text contains every word of a text, best matches first."""

    def __init__(self, store: Store, tables: Tables, access: Access):
        self.store, self.tables, self.access = store, tables, access

    def search(self, base_id: str, table: str, text: str, *, fields: list[str] | None = None,
               max_records: int | None = None) -> list[dict]:
        """Records whose text contains every word of ``text`` (as word prefixes, any case), best
        matches first (FTS5's bm25), in Airtable's shape. ``fields`` limits where words may match."""
        info = self.tables.info(base_id, table)
        _decision, info = self.access.ensure_fresh(info, table, None)
        words = re.findall(r"\w+", text)
        if not words:
            return []
        records = self.store.replica.search_records(info.tid, words)
        if fields is not None:
            names = [field_name(info, f) for f in fields]
            records = [r for r in records if _words_in_fields(r, names, words)]
        if max_records is not None:
            records = records[:max_records]
        return [shape(info, r, ListQuery()) for r in records]


def _words_in_fields(record: dict, names: list[str], words: list[str]) -> bool:
    """Every word starts a word somewhere in the text of the named fields, folded as the FTS index
    folds them (any case, accents removed)."""
    present = set(re.findall(r"\w+", _fold(" ".join(_text_of(record["fields"].get(name)) for name in names))))
    return all(any(p.startswith(_fold(w)) for p in present) for w in words)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text_of(v) for v in value)
    return ""
