"""Offsets: the record ids of a listing, kept so later pages neither skip nor repeat records while
the agent writes between pages."""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from airtable_cached.rules.query import ListQuery

if TYPE_CHECKING:
    from airtable_cached.engine.tables import TableInfo

log = logging.getLogger("airtable_cached")

#: Offsets (list iterators) expire like Airtable's do after some idle minutes.
OFFSET_TTL = 300.0
MAX_SNAPSHOTS = 256
#: Record ids held by all listings' snapshots together (about 60 bytes each: 30 MB at most).
MAX_SNAPSHOT_IDS = 500_000
#: Listings read to their last page whose snapshots are still kept.
KEPT_FINISHED = 4


@dataclass
class Snapshot:
    used: float
    ids: list[str]
    finished: bool = False
    #: The table and query the offset belongs to: another listing's offset is refused.
    listing: tuple = ()
    #: Whether the later pages may decode the table into the read model (reads.Reads.may_load_model).
    load: bool = True


class Snapshots:
    """Record ids of a listing. Offsets look like Airtable's (``itr.../rec...``) and expire after a while.

    Bounded (issue 11): a snapshot holds ids only, never records; only the newest few listings read
    to their last page are kept (``finish``); every listing sweeps the ones idle longer than
    ``OFFSET_TTL`` (expiry on time, not on reuse); and past ``MAX_SNAPSHOTS`` listings or
    ``MAX_SNAPSHOT_IDS`` ids in all, the least recently used go first. An
    offset whose snapshot is gone gets Airtable's LIST_RECORDS_ITERATOR_NOT_AVAILABLE."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Snapshot] = OrderedDict()
        self._lock = threading.Lock()
        self._ids = 0

    def put(self, ids: list[str], now: float, listing: tuple = (), *, load: bool = True) -> str:
        token = "itr" + secrets.token_hex(7)
        with self._lock:
            self._sweep(now)
            self._items[token] = Snapshot(now, ids, listing=listing, load=load)
            self._ids += len(ids)
            self._evict()
        return token

    def _evict(self) -> None:
        while len(self._items) > 1 and (len(self._items) > MAX_SNAPSHOTS or self._ids > MAX_SNAPSHOT_IDS):
            token, evicted = self._items.popitem(last=False)
            self._ids -= len(evicted.ids)
            log.info("offset %s evicted: more than %d listings or %d record ids held", token, MAX_SNAPSHOTS, MAX_SNAPSHOT_IDS)

    def get(self, token: str, now: float) -> Snapshot | None:
        with self._lock:
            self._sweep(now)
            item = self._items.get(token)
            if item is None:
                return None
            item.used = now
            self._items.move_to_end(token)
            return item

    def sweep(self, now: float) -> None:
        with self._lock:
            self._sweep(now)

    def finish(self, token: str) -> None:
        """The listing's last page was served. Airtable still answers its offsets again for a
        while (a client may retry a page), so it is kept, but only the newest ``KEPT_FINISHED``
        finished listings are: a loop of ``all()`` calls holds no more than that."""
        with self._lock:
            item = self._items.get(token)
            if item is None:
                return
            item.finished = True
            finished = [t for t, i in self._items.items() if i.finished]
            for old in finished[: max(0, len(finished) - KEPT_FINISHED)]:
                self._ids -= len(self._items.pop(old).ids)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def held_ids(self) -> int:
        return self._ids

    def _sweep(self, now: float) -> None:
        # Least recently used first: stop at the first one still alive.
        while self._items:
            token, item = next(iter(self._items.items()))
            if now - item.used <= OFFSET_TTL:
                return
            del self._items[token]
            self._ids -= len(item.ids)


def listing(info: TableInfo, query: ListQuery) -> tuple:
    """What an offset is tied to: the table and every option but the offset and page size."""
    return (info.tid, replace(query, offset=None, page_size=0))


def offset_token(snapshot: str, position: int) -> str:
    return f"{snapshot}/{position}"


def parse_offset(offset: str) -> tuple[str, int] | None:
    token, _, position = offset.partition("/")
    if not position.isdigit():
        return None
    return token, int(position)
