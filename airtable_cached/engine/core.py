"""The local Airtable: answers the record endpoints from the cache and the queue.

``Engine.handle(method, url, params, body)`` returns the JSON Airtable would return, or raises
:class:`AirtableResponseError` with the status and body Airtable would send. The pyairtable front-end
(``api.py``) and the plain-HTTP front-end (``http.py``) are thin wrappers around it, so paging,
sorting, filtering, write semantics and errors exist once.

What the cache holds: per record the last state Airtable reported (``remote``)
and what reads see (``fields``: remote with the pending writes applied). Every write applies to
``fields`` and appends to the outbox in one transaction; a pull replaces ``remote`` and replays the
pending writes on top.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
import unicodedata
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import unquote, urlsplit

from airtable_cached.config import Settings
from airtable_cached.engine import links, outage
from airtable_cached.engine.readmodel import MUTABLE, ReadModel, TableModel, copy_fields, copy_record_fields, copy_value
from airtable_cached.errors import AirtableResponseError, OfflineError
from airtable_cached.rules import cells
from airtable_cached.rules.policy import Read, TableState, Write, decide_read, decide_write
from airtable_cached.rules.query import ListQuery
from airtable_cached.rules.records import (
    COMPUTED_TYPES,
    PROVISIONAL_PREFIX,
    apply_write,
    check_serialisable,
    clean_fields,
    dumps,
    is_provisional,
    new_provisional_id,
    now_iso,
    project,
    rename_to_ids,
    replace_ids,
    sort_records,
)
from airtable_cached.store import checksum
from airtable_cached.store.sqlite import Store
from airtable_cached.sync import outbox

if TYPE_CHECKING:
    from airtable_cached.sync.core import Sync

log = logging.getLogger("airtable_cached")

MAX_RECORDS_PER_WRITE = 10
#: Offsets (list iterators) expire like Airtable's do after some idle minutes.
OFFSET_TTL = 300.0
MAX_SNAPSHOTS = 256
#: Record ids held by all listings' snapshots together (about 60 bytes each: 30 MB at most).
MAX_SNAPSHOT_IDS = 500_000
#: Listings read to their last page whose snapshots are still kept.
KEPT_FINISHED = 4
_PROVISIONAL_RE = re.compile(PROVISIONAL_PREFIX + r"[A-Za-z0-9]{9}")


# -- routing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """A request to one of Airtable's record endpoints."""

    action: str  # list | get | create | update | replace | delete
    base_id: str
    table: str
    record_id: str | None = None
    list_by_post: bool = False


def route(method: str, url: str) -> Route | None:
    """The record endpoint a request addresses, or ``None`` for anything else (passed through)."""
    return _route(method, str(url))


@lru_cache(maxsize=4096)
def _route(method: str, url: str) -> Route | None:
    # Pure, and asked on every call with the same few URLs (a record's, a table's): remembered.
    parts = [unquote(p) for p in urlsplit(url).path.split("/") if p]
    if len(parts) < 3 or parts[0] != "v0" or parts[1] == "meta" or not parts[1].startswith("app"):
        return None
    method = method.upper()
    base_id, table, rest = parts[1], parts[2], parts[3:]
    if not rest:
        action = {"GET": "list", "POST": "create", "PATCH": "update", "PUT": "replace", "DELETE": "delete"}.get(method)
        return Route(action, base_id, table) if action else None
    if len(rest) == 1:
        if rest[0] == "listRecords":
            return Route("list", base_id, table, list_by_post=True) if method == "POST" else None
        action = {"GET": "get", "PATCH": "update", "PUT": "replace", "DELETE": "delete"}.get(method)
        return Route(action, base_id, table, rest[0]) if action else None
    return None


# -- list snapshots (offsets) ----------------------------------------------------------------------


class _Snapshots:
    """Record ids of a listing, kept so later pages neither skip nor repeat records while the agent
    writes between pages. Offsets look like Airtable's (``itr.../rec...``) and expire after a while.

    Bounded (issue 11): a snapshot holds ids only, never records; only the newest few listings read
    to their last page are kept (``finish``); every listing sweeps the ones idle longer than
    ``OFFSET_TTL`` (expiry on time, not on reuse); and past ``MAX_SNAPSHOTS`` listings or
    ``MAX_SNAPSHOT_IDS`` ids in all, the least recently used go first. An
    offset whose snapshot is gone gets Airtable's LIST_RECORDS_ITERATOR_NOT_AVAILABLE."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, _Snapshot] = OrderedDict()
        self._lock = threading.Lock()
        self._ids = 0

    def put(self, ids: list[str], now: float, listing: tuple = (), *, load: bool = True) -> str:
        token = "itr" + secrets.token_hex(7)
        with self._lock:
            self._sweep(now)
            self._items[token] = _Snapshot(now, ids, listing=listing, load=load)
            self._ids += len(ids)
            while len(self._items) > 1 and (len(self._items) > MAX_SNAPSHOTS or self._ids > MAX_SNAPSHOT_IDS):
                _token, evicted = self._items.popitem(last=False)
                self._ids -= len(evicted.ids)
                log.info("offset %s evicted: more than %d listings or %d record ids held", _token, MAX_SNAPSHOTS, MAX_SNAPSHOT_IDS)
        return token

    def get(self, token: str, now: float) -> _Snapshot | None:
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


@dataclass
class _Snapshot:
    used: float
    ids: list[str]
    finished: bool = False
    #: The table and query the offset belongs to: another listing's offset is refused.
    listing: tuple = ()
    #: Whether the later pages may decode the table into the read model (Engine._may_load_model).
    load: bool = True


def _listing(info: TableInfo, query: ListQuery) -> tuple:
    """What an offset is tied to: the table and every option but the offset and page size."""
    return (info.tid, replace(query, offset=None, page_size=0))


def _offset_token(snapshot: str, position: int) -> str:
    return f"{snapshot}/{position}"


def _parse_offset(offset: str) -> tuple[str, int] | None:
    token, _, position = offset.partition("/")
    if not position.isdigit():
        return None
    return token, int(position)


# -- the engine ------------------------------------------------------------------------------------


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


@dataclass
class _WriteCall:
    """One write call of the agent: its queued writes share a call id (sent and dead-lettered
    together), its typecast may add select options, and it may need Airtable's answer at once."""

    call_id: int | None = None
    new_choices: dict[str, list[str]] = field(default_factory=dict)
    needs_airtable: str | None = None

    def queued(self, seq: int) -> int:
        if self.call_id is None:
            self.call_id = seq
        return seq


class Engine:
    """The local Airtable over one cache file."""

    def __init__(self, store: Store, settings: Settings, sync: Sync | None = None, *, clock: Callable[[], float] = time.time):
        self.store = store
        self.settings = settings
        self.sync = sync
        self.clock = clock
        self.snapshots = _Snapshots()
        self.model = ReadModel(store, marker=self.change_marker)
        self._answer = threading.local()
        self._infos: dict[tuple[str, str], tuple[tuple, TableInfo]] = {}
        self.stats = StatsRecorder(store)
        self.stats.on_written = self.model.carry  # statistics change no record: the model stays
        #: Bases this engine's token has been seen to read (a pull or a probe answered), in memory.
        self.authorized: set[str] = set()
        self._digest: str | None = None
        self._filter_uses: dict[str, int] = {}
        #: tid -> refresh started by a stale read; ("probe", base id) -> a write's background check
        #: that the token may use the base. Joined before the sync closes what they use.
        self._background: dict[object, threading.Thread] = {}
        self._background_lock = threading.Lock()
        self._indexed: set[str] = self._load_indexes()

    # -- entry point -------------------------------------------------------------------------------
    def handle(self, method: str, url: str, params: Mapping[str, Any] | None = None, body: Any = None) -> Any:
        found = route(method, url)
        if found is None:
            raise ValueError(f"not a record endpoint: {method} {url}")
        return self.dispatch(found, params or {}, body)

    def answered_locally(self) -> bool:
        """Whether this thread's last ``dispatch`` was answered from the cache (not by Airtable):
        such an answer is built by the engine, already in Airtable's record shape, so the
        pyairtable front-end need not validate it again (api.py, ``Table.iterate``)."""
        return getattr(self._answer, "local", False)

    def dispatch(self, r: Route, params: Mapping[str, Any], body: Any) -> Any:
        self._answer.local = False
        self._answer.marker = None
        if r.action == "list":
            query = ListQuery.from_json(body, params) if r.list_by_post else ListQuery.from_params(params)
            return self.list_records(r.base_id, r.table, query)
        if r.action == "get":
            query = _PLAIN_QUERY if not params else ListQuery.from_params(params)
            return self.get_record(r.base_id, r.table, r.record_id or "", query)
        if r.action == "create":
            return self.create(r.base_id, r.table, _json_body(body))
        if r.action in ("update", "replace"):
            return self.update(r.base_id, r.table, r.record_id, _json_body(body), replace=r.action == "replace")
        if r.action == "delete":
            if r.record_id:
                return self.delete(r.base_id, r.table, [r.record_id], single=True)
            ids = params.get("records[]", params.get("records"))
            if isinstance(ids, str):
                ids = [ids]
            return self.delete(r.base_id, r.table, list(ids or []), single=False)
        raise AssertionError(r.action)

    # -- tables ------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The Airtable this engine mirrors: part of every table's key in the cache."""
        return self.settings.endpoint_url

    @overload
    def table_info(self, base_id: str, table: str) -> TableInfo: ...
    @overload
    def table_info(self, base_id: str, table: str, *, create: Literal[True]) -> TableInfo: ...
    @overload
    def table_info(self, base_id: str, table: str, *, create: bool) -> TableInfo | None: ...
    def table_info(self, base_id: str, table: str, *, create: bool = True) -> TableInfo | None:
        """The table's row, remembered until the database changes (every read asks for it)."""
        if self.store.conn.in_transaction:
            return self._read_table_info(base_id, table, create=create)
        marker = self.change_marker()
        hit = self._infos.get((base_id, table))
        if hit is not None and hit[0] == marker:
            return hit[1]
        info = self._read_table_info(base_id, table, create=create)
        if info is not None and self.change_marker() == marker:
            self._infos[(base_id, table)] = (marker, info)
        return info

    def forget_marker(self) -> None:
        """After waiting (on a lock another process held), ask SQLite again: it may have committed."""
        self._answer.marker = None

    def change_marker(self) -> tuple:
        """``Store.change_marker``, asked of SQLite once per call of ``dispatch`` while this
        process commits nothing (a read asks for it several times; each asking is a query)."""
        memo = getattr(self._answer, "marker", None)
        if memo is not None and memo[0] == self.store.commits and memo[1] == self.store.conn.serial:
            return memo
        marker = self.store.change_marker()
        self._answer.marker = marker
        return marker

    def _read_table_info(self, base_id: str, table: str, *, create: bool = True) -> TableInfo | None:
        conn: sqlite3.Connection = self.store.conn
        find = "SELECT t.* FROM table_aliases a JOIN tables t USING (tid) WHERE a.endpoint = ? AND a.base_id = ? AND a.alias = ?"
        row = conn.execute(find, (self.endpoint, base_id, table)).fetchone()
        if row is None:
            if not create:
                return None
            with self.store.transaction() as conn:
                row = conn.execute(find, (self.endpoint, base_id, table)).fetchone()
                if row is None:
                    # The other spelling of a table whose schema is known (its id for its name, or
                    # the reverse): the same cached table, not a second one.
                    row = conn.execute(
                        "SELECT * FROM tables WHERE endpoint = ? AND base_id = ? AND (table_id = ? OR name = ?) ORDER BY tid LIMIT 1",
                        (self.endpoint, base_id, table, table),
                    ).fetchone()
                    if row is not None:
                        conn.execute("INSERT INTO table_aliases (endpoint, base_id, alias, tid) VALUES (?, ?, ?, ?)",
                                     (self.endpoint, base_id, table, row["tid"]))
                if row is None:
                    is_id = table.startswith("tbl") and len(table) == 17
                    cur = conn.execute(
                        "INSERT INTO tables (endpoint, base_id, table_id, name) VALUES (?, ?, ?, ?)",
                        (self.endpoint, base_id, table if is_id else None, None if is_id else table),
                    )
                    conn.execute(
                        "INSERT INTO table_aliases (endpoint, base_id, alias, tid) VALUES (?, ?, ?, ?)",
                        (self.endpoint, base_id, table, cur.lastrowid),
                    )
                    row = conn.execute("SELECT * FROM tables WHERE tid = ?", (cur.lastrowid,)).fetchone()
        return TableInfo(
            tid=row["tid"],
            base_id=row["base_id"],
            table_id=row["table_id"],
            name=row["name"],
            schema=json.loads(row["schema_json"]) if row["schema_json"] else None,
            pulled_at=row["pulled_at"],
        )

    def adopt_unkeyed_tables(self) -> int:
        """Tables cached before the cache was keyed by endpoint become this engine's endpoint's
        (the first sync to open an upgraded file is the one that filled it). Returns how many."""
        if self.store.conn.execute("SELECT 1 FROM tables WHERE endpoint = '' LIMIT 1").fetchone() is None:
            return 0
        with self.store.transaction() as conn:
            adopted = conn.execute("UPDATE tables SET endpoint = ? WHERE endpoint = ''", (self.endpoint,)).rowcount
            conn.execute("UPDATE OR IGNORE table_aliases SET endpoint = ? WHERE endpoint = ''", (self.endpoint,))
            conn.execute("DELETE FROM table_aliases WHERE endpoint = ''")
            conn.execute("UPDATE OR IGNORE webhooks SET endpoint = ? WHERE endpoint = ''", (self.endpoint,))
        if adopted:
            log.info("%d table(s) cached before the cache was keyed by endpoint are now %s's", adopted, self.endpoint)
        return adopted

    def is_fresh(self, base_id: str, table: str) -> bool:
        info = self.table_info(base_id, table)
        return TableState(info.pulled_at, self.settings.max_age).is_fresh(self.clock())

    def _ensure_fresh(self, info: TableInfo, table: str, remote_reason: str | None) -> tuple[Read, TableInfo]:
        decision = decide_read(self.settings.mode, TableState(info.pulled_at, self.settings.max_age), self.clock(), remote_reason)
        if decision is Read.OFFLINE_STALE:
            why = remote_reason or f"table {table!r} of base {info.base_id} has never been pulled"
            raise OfflineError(f"offline mode: cannot answer from the cache: {why}")
        if decision is Read.PULL_THEN_SERVE and self._serve_stale(info, table):
            decision = Read.SERVE
        if decision is Read.PULL_THEN_SERVE:
            if not outage.pull_or_serve_stale(self, info, table):
                return Read.SERVE, info
            info = self.table_info(info.base_id, table)
        elif decision is Read.SERVE:
            self._authorize(info, table)
        return decision, info

    def _authorize(self, info: TableInfo, table: str) -> None:
        """Serve a base from the cache only to a token Airtable lets read it.

        Another token may have filled the cache file. The first time this engine's token meets a
        base it has not pulled, one small request asks Airtable; its refusal (401, 403, 404) is
        the answer. If Airtable cannot be asked (offline, network down), the cache answers."""
        if info.base_id in self.authorized or self.settings.mode == "offline" or self.sync is None:
            return
        if self._granted(info.base_id):
            self.authorized.add(info.base_id)
            return
        if self.sync.probe(info.base_id, table):
            self.grant(info.base_id)
        else:
            self.authorized.add(info.base_id)  # Airtable could not be asked: as before, not remembered

    # Remembered answers (issue 11): a new process reading a fresh cache sends no probe when this
    # token was seen to read the base within max_age, the same window the cached data is trusted
    # for. The file keeps an HMAC of the token (keyed by a random salt of its own), never the token.
    def grant(self, base_id: str) -> None:
        """This engine's token was seen to read ``base_id`` (a pull or a probe answered)."""
        self.authorized.add(base_id)
        digest = self._token_digest()
        if digest is None:
            return
        before = None if self.store.conn.in_transaction else self.store.change_marker()
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO token_grants (base_id, digest, granted_at) VALUES (?, ?, ?)"
                " ON CONFLICT (base_id, digest) DO UPDATE SET granted_at = excluded.granted_at",
                (self._grant_key(base_id), digest, self.clock()),
            )
        if before is not None:
            self.model.carry(before)

    def _granted(self, base_id: str) -> bool:
        digest = self._token_digest()
        if digest is None:
            return False
        row = self.store.conn.execute(
            "SELECT granted_at FROM token_grants WHERE base_id = ? AND digest = ?", (self._grant_key(base_id), digest)
        ).fetchone()
        return row is not None and self.clock() - row[0] <= self.settings.max_age

    def _grant_key(self, base_id: str) -> str:
        """A grant is for a base of one Airtable (the same base id behind another endpoint is
        another base): the key is the flush-lock key, endpoint and base id."""
        from airtable_cached.sync.locks import flush_key

        return flush_key(self.endpoint, base_id)

    def _token_digest(self) -> str | None:
        if self.sync is None:
            return None
        if self._digest is None:
            salt = self.store.conn.execute("SELECT salt FROM token_salt").fetchone()[0]
            self._digest = self.sync.remote.token_digest(salt)
        return self._digest

    def _serve_stale(self, info: TableInfo, table: str) -> bool:
        """``AIRTABLE_CACHED_STALE=serve``: a stale table that was pulled before answers at once
        while one background thread per table refreshes it. The answer is the same as any cached
        answer; the count of such reads is kept (``stats``)."""
        if self.settings.stale != "serve" or info.pulled_at is None or self.sync is None:
            return False
        self.sync.refresher.count_stale_served(info.tid)
        with self._background_lock:
            running = self._background.get(info.tid)
            if running is None or not running.is_alive():
                thread = threading.Thread(target=self._refresh_in_background, args=(info.base_id, table),
                                          name=f"airtable_cached-refresh-{info.tid}", daemon=True)
                self._background[info.tid] = thread
                thread.start()
        return True

    def _refresh_in_background(self, base_id: str, table: str) -> None:
        try:
            self._require_sync().refresh(base_id, table, max_age=self.settings.max_age)
        except Exception as exc:  # noqa: BLE001 - logged; the next stale read tries again
            log.warning("background refresh of %s/%s failed: %s", base_id, table, exc)

    def wait_for_refreshes(self, timeout: float | None = None) -> bool:
        """Wait for background refreshes started by stale reads; whether they all finished."""
        with self._background_lock:
            threads = list(self._background.values())
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads if t is not threading.current_thread())

    def start_background(self, key: object, target: Callable[[], None], name: str) -> None:
        """Start a daemon thread that :meth:`wait_for_refreshes` (and closing the sync) waits for."""
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._background_lock:
            for done in [k for k, t in self._background.items() if not t.is_alive() and t.ident is not None]:
                del self._background[done]
            self._background[key] = thread
        thread.start()

    def _require_sync(self) -> Sync:
        if self.sync is None:
            raise OfflineError("no connection to Airtable is configured for this engine")
        return self.sync

    # -- reads -------------------------------------------------------------------------------------
    def list_records(self, base_id: str, table: str, query: ListQuery) -> dict:
        started = time.perf_counter()
        self.snapshots.sweep(self.clock())
        info = self.table_info(base_id, table)
        if query.offset and _parse_offset(query.offset) is None:
            # Airtable's own offset, from a listing it answered: the next page is its to give.
            if self.settings.mode == "offline":
                raise OfflineError("offline mode: this offset belongs to a listing Airtable answered")
            self.stats.count(info.tid, "list.remote", started)
            return self._require_sync().list_remote(info, table, query)
        if query.offset:
            page = self._next_page(info, query)
            self.stats.count(info.tid, "list.page", started)
            self._answer.local = True
            return page
        query = self._with_real_ids(query)
        self._check_field_names(info, query.fields or ())
        reason = self._remote_reason(info, query)
        decision, info = self._ensure_fresh_or_forget(info, table, reason)
        if decision is Read.PULL_THEN_SERVE and reason is None and query.formula:
            # Pulled for the first time: now the schema tells whether the cache can answer it.
            reason = self._remote_reason(info, query)
            decision = Read.REMOTE if reason else decision
        if decision is Read.REMOTE:
            self.stats.count(info.tid, "list.remote", started)
            if query.formula and reason and self.settings.mode != "passthrough":
                self.stats.count(info.tid, "formula.fallback")
            # Linked tables' queued writes too: they change this table's link fields.
            if self._flush_before_asking(info, linked=True):
                query = self._with_real_ids(query)
            return self._require_sync().list_remote(info, table, query)
        self._check_field_names(info, [name for name, _direction in query.sort])
        if query.formula:
            self._ensure_linked_fresh(info, query.formula)
        if query.view and (not self._view_is_fresh(info, query.view) or self._has_queued_writes(info, linked=True)):
            # A view's filter and order are Airtable's to evaluate: after local writes to its table,
            # they are sent first and the view is read again (counted as a remote read).
            if self.settings.mode == "offline":
                if not self._view_is_fresh(info, query.view):
                    raise OfflineError(f"offline mode: view {query.view!r} of table {table!r} has never been pulled")
            else:
                self._flush_before_asking(info, linked=True)
                outage.pull_view_or_serve_stale(self, info, table, query.view)
                self.stats.count(info.tid, "view.remote")
        page = self._first_page(info, query)
        # A read that pulled the table first waited for Airtable: not a local read.
        self.stats.count(info.tid, "list.pull" if decision is Read.PULL_THEN_SERVE else "list.local", started)
        self._answer.local = True
        return page

    # -- fidelity helpers (issue 9) ---------------------------------------------------------------
    def _has_queued_writes(self, info: TableInfo, *, linked: bool = False) -> bool:
        """Whether writes to the table are queued (``linked``: or to a table linked to it, whose
        writes change this table's link fields too)."""
        tids = [info.tid] + ([pair.linked_tid for pair in links.link_pairs(self.store.conn, info.tid)] if linked else [])
        marks = ",".join("?" * len(tids))
        return self.store.conn.execute(
            f"SELECT 1 FROM outbox WHERE tid IN ({marks}) AND state != 'dead' LIMIT 1", tids
        ).fetchone() is not None

    def _flush_before_asking(self, info: TableInfo, *, linked: bool = False) -> bool:
        """Before Airtable answers a read of a table, it gets the agent's queued writes to that
        table, so that its answer includes them (read-your-writes). Returns whether it flushed."""
        if self.settings.mode not in ("cache", "write-through") or not self._has_queued_writes(info, linked=linked):
            return False
        self._require_sync().flush(info.base_id)
        return True

    def _with_real_ids(self, query: ListQuery) -> ListQuery:
        """A formula naming a provisional id (``RECORD_ID() = 'recLOCAL...'``) finds the record
        after its create was flushed too: the ids Airtable gave are put in."""
        if not query.formula or PROVISIONAL_PREFIX not in query.formula:
            return query
        formula = _PROVISIONAL_RE.sub(lambda m: self.resolve_id(m.group(0)), query.formula)
        return replace(query, formula=formula) if formula != query.formula else query

    def _check_field_names(self, info: TableInfo, names: Iterable[str]) -> None:
        """Airtable answers 422 ``UNKNOWN_FIELD_NAME`` for a name in ``fields`` or ``sort`` that
        the table does not have (the schema is read again first: the field may be new)."""
        names = list(names)
        if not names or not info.fields_by_name:
            return
        unknown = [n for n in names if n not in info.fields_by_name and n not in info.name_for_id]
        if unknown and self._refresh_schema(info):
            unknown = [n for n in names if n not in info.fields_by_name and n not in info.name_for_id]
        if unknown:
            raise AirtableResponseError.typed(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{unknown[0]}"')

    def _ensure_fresh_or_forget(self, info: TableInfo, table: str, remote_reason: str | None) -> tuple[Read, TableInfo]:
        """``_ensure_fresh``; a table Airtable says does not exist leaves nothing behind (no
        phantom table for ``status`` to list and ``serve-sync`` to pull)."""
        try:
            return self._ensure_fresh(info, table, remote_reason)
        except AirtableResponseError as exc:
            if exc.status == 404 and info.pulled_at is None:
                self._forget_table(info)
            raise

    def _forget_table(self, info: TableInfo) -> None:
        with self.store.transaction() as conn:
            used = conn.execute(
                "SELECT 1 FROM outbox WHERE tid = ? UNION ALL SELECT 1 FROM records WHERE tid = ? LIMIT 1", (info.tid, info.tid)
            ).fetchone()
            if used is None:
                conn.execute("DELETE FROM table_aliases WHERE tid = ?", (info.tid,))
                conn.execute("DELETE FROM stats WHERE tid = ?", (info.tid,))
                conn.execute("DELETE FROM tables WHERE tid = ?", (info.tid,))
                log.info("table %s of base %s does not exist in Airtable; not kept", info.name or info.table_id, info.base_id)

    def refresh_schema(self, base_id: str, table: str) -> None:
        """Read the table's schema again (what the cache learnt may not be what Airtable has)."""
        try:
            self._refresh_schema(self.table_info(base_id, table))
        except (AirtableResponseError, OfflineError, OSError) as exc:  # requests errors are OSErrors
            log.info("could not read the schema of %s again: %s", table, exc)

    def known_views(self, base_id: str, table: str) -> list[str]:
        info = self.table_info(base_id, table)
        return [r[0] for r in self.store.conn.execute("SELECT view FROM views WHERE tid = ? ORDER BY view", (info.tid,))]

    def _refresh_schema(self, info: TableInfo) -> bool:
        """Read the table's schema again (it names a field the cached schema lacks); updates
        ``info`` in place. Returns whether a schema came back."""
        if self.settings.mode == "offline" or self.sync is None:
            return False
        schema = self.sync.fetch_schema(info)
        if schema is None:
            return False
        with self.store.transaction() as conn:
            self._learn_schema(conn, info, schema)
        info.set_schema(schema)
        return True

    def _remote_reason(self, info: TableInfo, query: ListQuery) -> str | None:
        """Why this query cannot be answered exactly from the cache (``None``: it can).

        A formula naming a field the cached schema lacks reads the schema again before Airtable's
        422 is given: the field may have been added since."""
        try:
            return self._query_remote_reason(info, query)
        except AirtableResponseError as exc:
            if exc.body.get("error", {}).get("type") != "INVALID_FILTER_BY_FORMULA" or not self._refresh_schema(info):
                raise
            return self._query_remote_reason(info, query)

    def _query_remote_reason(self, info: TableInfo, query: ListQuery) -> str | None:
        if query.cell_format == "string":
            return "cellFormat=string renders values the way Airtable's UI does"
        if query.by_field_ids and not info.schema and info.pulled_at is not None:
            return "returnFieldsByFieldId needs the table schema, which this token cannot read"
        if query.formula:
            from airtable_cached.engine import formula_bridge

            return formula_bridge.remote_reason(self.store.conn, info, query.formula)
        return None

    def _view_is_fresh(self, info: TableInfo, view: str) -> bool:
        row = self.store.conn.execute("SELECT pulled_at FROM views WHERE tid = ? AND view = ?", (info.tid, view)).fetchone()
        return row is not None and TableState(row[0], self.settings.max_age).is_fresh(self.clock())

    def _select(self, info: TableInfo, query: ListQuery, *, limit: int | None = None, load: bool = True) -> list[dict]:
        """Every record the query matches, in the order Airtable would list them (the first
        ``limit`` of them: only for a query SQL answers whole, see ``_sql_decides``)."""
        # A limited read (first(), maxRecords, a first page) uses the model only if it is current:
        # decoding the whole table for one page is what LIMIT in SQL avoids.
        model = None if query.view else self.model.table(info.tid, load=load and limit is None)
        if model is not None:
            records = self._select_in_model(info, query, model)
            if query.sort:
                records = sort_records(records, [(self._field_name(info, f), d) for f, d in query.sort], info.fields_by_name)
            return records if limit is None else records[:limit]
        rows, residual = self._select_rows(info, query, _RECORD_COLUMNS, limit=limit)
        records = [_record(row) for row in rows]
        if residual is not None:
            records = [r for r in records if residual(r)]
        if query.sort:
            records = sort_records(records, [(self._field_name(info, f), d) for f, d in query.sort], info.fields_by_name)
        return records

    def _select_in_model(self, info: TableInfo, query: ListQuery, model: TableModel) -> list[dict]:
        """The matching records of the decoded model, in natural order (shared with the model:
        never mutated, never handed out; ``_shape`` copies), remembered for the model's state
        unless the formula reads the clock."""
        if not query.formula:
            return model.records
        from airtable_cached.engine import formula_bridge

        link_check = self._link_formula(info, query)
        if link_check is not None:
            return [r for r in model.records if link_check(r)]
        compiled = formula_bridge.sql_filter(info, query.formula)
        self._index_filtered_fields(compiled.equality_fields)
        predicate, clock_bound = self._python_predicate(info, query.formula)

        def matching() -> list[dict]:
            if not compiled.indexed:
                return [r for r in model.records if predicate(r)]
            # An index finds the candidates (ids only, nothing decoded); the model has them decoded.
            rows, residual = self._select_rows(info, query, "r.id")
            found = (model.get(row[0]) for row in rows)
            return [r for r in found if r is not None and (residual is None or residual(r))]

        if clock_bound:
            return matching()
        return model.remembered(("formula", query.formula), matching)

    def _link_formula(self, info: TableInfo, query: ListQuery) -> Callable[[dict], bool] | None:
        """A formula naming link fields of this table, as a check where links read as their
        records' primary values (``None``: it names none the cache can read)."""
        if not query.formula or not self._link_sources(info, query.formula):
            return None
        check, _clock_bound = self._python_predicate(info, query.formula)
        return check

    def _select_ids(self, info: TableInfo, query: ListQuery, *, limit: int | None) -> list[str]:
        """The ids ``_select`` would list, without decoding a record (a query SQL answers whole)."""
        if not query.view and self.model.table(info.tid, load=False) is not None:
            return [r["id"] for r in self._select(info, query, limit=limit)]
        rows, residual = self._select_rows(info, query, "r.id", limit=limit)
        if residual is not None:  # SQL could not take the formula: decode and let the evaluator decide
            return [r["id"] for r in self._select(info, query, limit=limit)]
        return [row[0] for row in rows]

    def _select_rows(self, info: TableInfo, query: ListQuery, columns: str, *,
                     limit: int | None = None) -> tuple[list[sqlite3.Row], Callable[[dict], bool] | None]:
        """The rows ``_select_sql`` selects, and the check still to apply to them. SQLite bounds an
        expression's depth (an OR of about 1,000 terms): such a formula is answered by the
        evaluator over the whole table instead."""
        sql, args, residual = self._select_sql(info, query, columns)
        if limit is not None:
            sql, args = sql + " LIMIT ?", [*args, limit]
        try:
            return self.store.conn.execute(sql, args).fetchall(), residual
        except sqlite3.OperationalError as exc:
            from airtable_cached.engine import formula_bridge

            if not query.formula or not formula_bridge.too_big_for_sql(exc):
                raise
        self.stats.count(info.tid, "formula.python")
        from airtable_cached.engine import formula_bridge

        predicate, _clock_bound = self._python_predicate(info, query.formula)
        sql, args, _none = self._select_sql(info, dataclasses.replace(query, formula=None), columns)
        return self.store.conn.execute(sql, args).fetchall(), predicate

    def _ensure_linked_fresh(self, info: TableInfo, formula: str) -> None:
        """The linked tables whose primary values a formula reads are brought up to date as the
        table itself is (a stale name there is a stale answer here)."""
        for tid in sorted({tid for tid, _primary in self._link_sources(info, formula).values()}):
            row = self.store.conn.execute("SELECT table_id FROM tables WHERE tid = ?", (tid,)).fetchone()
            if row is not None and row[0]:
                self._ensure_fresh(self.table_info(info.base_id, row[0]), row[0], None)

    def _link_sources(self, info: TableInfo, formula: str) -> dict:
        """The link fields a formula reads (as their records' primary values, as Airtable does)."""
        from airtable_cached.engine import formula_bridge

        return formula_bridge.link_sources(self.store.conn, info, formula)

    def _python_predicate(self, info: TableInfo, formula: str) -> tuple[Callable[[dict], bool], bool]:
        """The whole formula as a check over decoded records, links read as primary values, and
        whether its answer depends on the clock."""
        from airtable_cached.engine import formula_bridge

        check, clock_bound = formula_bridge.python_filter(info, formula)
        sources = self._link_sources(info, formula)
        if not sources:
            return check, clock_bound
        primary = links.PrimaryValues(self.store.conn, sources)
        return (lambda record: check(primary.record(record))), clock_bound

    def _select_sql(self, info: TableInfo, query: ListQuery, columns: str) -> tuple[str, list, Callable[[dict], bool] | None]:
        where, params, residual, order = "", [], None, "r.position"
        link_check = self._link_formula(info, query)
        if link_check is not None:
            residual = link_check
        elif query.formula:
            from airtable_cached.engine import formula_bridge

            compiled = formula_bridge.sql_filter(info, query.formula)
            self._index_filtered_fields(compiled.equality_fields)
            where, params, residual = compiled.sql, compiled.params, compiled.check
            if compiled.indexed:
                # An index (a field's, or the primary key) finds these rows; "+" keeps the planner
                # from walking the natural-order index instead just to skip a sort.
                order = "+r.position"
        if query.view:
            # The view's members in its order, then the agent's own creates not flushed yet (the
            # view's filter cannot be evaluated here; after a flush the view is pulled again).
            sql = (
                f"SELECT {columns} FROM records r"
                " LEFT JOIN view_members v ON v.tid = r.tid AND v.record_id = r.id AND v.view = ?"
                " WHERE r.tid = ? AND r.fields IS NOT NULL AND (v.record_id IS NOT NULL OR r.remote IS NULL)"
                # An explicit sort replaces the view's order; ties then keep the natural order.
                f" {where} ORDER BY " + ("r.position" if query.sort else "v.position IS NULL, v.position, r.position")
            )
            return sql, [query.view, info.tid, *params], residual
        sql = f"SELECT {columns} FROM records r WHERE r.tid = ? AND r.fields IS NOT NULL {where} ORDER BY {order}"
        return sql, [info.tid, *params], residual

    # -- indexes and search ------------------------------------------------------------------------
    def _index_filtered_fields(self, names: list[str]) -> None:
        """Index a text field once agents filter on it by equality often enough (or as configured)."""
        for name in names:
            uses = self._filter_uses[name] = self._filter_uses.get(name, 0) + 1
            if uses >= self.settings.index_after or name in self.settings.index_fields:
                self.ensure_index(name)

    def ensure_index(self, field: str) -> str | None:
        """An expression index on one field's value; returns its name (``None``: not indexable)."""
        from airtable_cached.engine.formula_bridge import literal_path

        path = literal_path(field)
        if path is None:
            return None
        index = self._index_name(field)
        if index not in self._indexed:
            with self.store.transaction() as conn:
                conn.execute(f'CREATE INDEX IF NOT EXISTS "{index}" ON records (tid, json_extract(fields, {path}))')
            self._indexed.add(index)
        return index

    @staticmethod
    def _index_name(field: str) -> str:
        return "records_by_" + hashlib.sha1(field.encode()).hexdigest()[:16]

    def _load_indexes(self) -> set[str]:
        rows = self.store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'records_by_%'")
        return {row[0] for row in rows}

    def search(self, base_id: str, table: str, text: str, *, fields: list[str] | None = None,
               max_records: int | None = None) -> list[dict]:
        """Records whose text contains every word of ``text`` (as word prefixes, any case), best
        matches first (FTS5's bm25), in Airtable's shape. ``fields`` limits where words may match."""
        info = self.table_info(base_id, table)
        _decision, info = self._ensure_fresh(info, table, None)
        words = re.findall(r"\w+", text)
        if not words:
            return []
        # Each word is made only of word characters, quoted as an FTS5 string, and bound.
        match = " ".join(f'"{w}"*' for w in words)
        rows = self.store.conn.execute(
            "SELECT r.id, r.created_time, r.modified_time, r.fields, r.comment_count FROM records_fts f"
            " JOIN records r ON r.tid = f.tid AND r.id = f.id"
            " WHERE records_fts MATCH ? AND f.tid = ? AND r.fields IS NOT NULL ORDER BY f.rank",
            (match, info.tid),
        ).fetchall()
        records = [_record(row) for row in rows]
        if fields is not None:
            names = [self._field_name(info, f) for f in fields]
            records = [r for r in records if _words_in_fields(r, names, words)]
        if max_records is not None:
            records = records[:max_records]
        return [self._shape(info, r, ListQuery()) for r in records]

    def _field_name(self, info: TableInfo, name_or_id: str) -> str:
        return info.name_for_id.get(name_or_id, name_or_id)

    def _first_page(self, info: TableInfo, query: ListQuery) -> dict:
        """The first page; the ids of the rest (if any) go to a snapshot for the offset."""
        load = self._may_load_model(info, query)
        records, rest = self._select_page(info, query, load=load)
        result: dict[str, Any] = {"records": self._shape_page(info, records, query)}
        if rest:
            token = self.snapshots.put([r["id"] for r in records] + rest, self.clock(), _listing(info, query), load=load)
            result["offset"] = _offset_token(token, query.page_size)
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
        from airtable_cached.engine import formula_bridge

        if formula_bridge.link_sources(self.store.conn, info, query.formula):
            return False

        return formula_bridge.sql_filter(info, query.formula).check is None

    def _next_page(self, info: TableInfo, query: ListQuery) -> dict:
        parsed = _parse_offset(query.offset or "")
        snapshot = self.snapshots.get(parsed[0], self.clock()) if parsed else None
        # The ids put in when the listing began, or now (a create flushed between pages).
        if snapshot is not None and snapshot.listing not in (_listing(info, query), _listing(info, self._with_real_ids(query))):
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
        rows = self._rows_by_id(info.tid, wanted, load=snapshot.load)
        self._follow_flushed_creates(info.tid, wanted, rows)
        page = [rows[i] for i in wanted if i in rows]
        result: dict[str, Any] = {"records": self._shape_page(info, page, query)}
        if position + query.page_size < len(ids):
            result["offset"] = _offset_token(parsed[0], position + query.page_size)
        else:
            self.snapshots.finish(parsed[0])
        return result

    def _follow_flushed_creates(self, tid: int, wanted: list[str], rows: dict[str, dict]) -> None:
        """A create flushed (by any process) between two pages now has Airtable's id: it is the
        same record, listed under its real id, not a deleted one to skip."""
        moved = {i: self.resolve_id(i) for i in wanted if i not in rows and is_provisional(i)}
        moved = {old: new for old, new in moved.items() if new != old}
        if moved:
            found = self._rows_by_id(tid, list(moved.values()))
            rows.update({old: found[new] for old, new in moved.items() if new in found})

    def _rows_by_id(self, tid: int, ids: list[str], *, load: bool = False) -> dict[str, dict]:
        """The visible records among ``ids``. From the read model when it is current (or with
        ``load``, decoded for this: a listing's later pages), else from SQLite."""
        model = self.model.table(tid, load=load)
        if model is not None:
            pairs = ((i, model.get(i)) for i in ids)
            return {i: r for i, r in pairs if r is not None}
        found: dict[str, dict] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.store.conn.execute(
                "SELECT id, created_time, modified_time, fields, comment_count FROM records"
                f" WHERE tid = ? AND fields IS NOT NULL AND id IN ({marks})",
                [tid, *chunk],
            ):
                found[row["id"]] = _record(row)
        return found

    def _shape_page(self, info: TableInfo, records: list[dict], query: ListQuery) -> list[dict]:
        """``_shape`` of each record; the plain query (every field, by name) inlined, as the
        per-record cost of a listing is mostly this copy."""
        if query.fields is not None or query.by_field_ids or query.comment_count:
            return [self._shape(info, r, query) for r in records]
        out = []
        for record in records:
            mutable = record.get(MUTABLE)
            if mutable is None:
                fields = copy_fields(record["fields"])
            else:
                fields = record["fields"].copy()
                for name in mutable:
                    fields[name] = copy_value(fields[name])
            out.append({"id": record["id"], "createdTime": record["createdTime"], "fields": fields})
        return out

    def _shape(self, info: TableInfo, record: dict, query: ListQuery) -> dict:
        """A stored record as Airtable returns it for this query."""
        # A copy: the record may be the read model's own (issue 11: never hand out what the cache keeps).
        out = {"id": record["id"], "createdTime": record["createdTime"], "fields": copy_record_fields(record)}
        if query.fields is not None:
            out = project(out, [self._field_name(info, f) for f in query.fields])
        if query.by_field_ids:
            out = rename_to_ids(out, info.id_for_name)
        if query.comment_count:
            out["commentCount"] = record.get("commentCount", 0)
        return out

    def get_record(self, base_id: str, table: str, record_id: str, query: ListQuery) -> dict:
        started = time.perf_counter()
        info = self.table_info(base_id, table)
        reason = self._remote_reason(info, query)
        decision, info = self._ensure_fresh_or_forget(info, table, reason)
        if decision is Read.REMOTE:
            self.stats.count(info.tid, "get.remote", started)
            self._flush_before_asking(info, linked=True)
            return self._require_sync().get_remote(info, table, self.resolve_id(record_id), query)
        rows = self._rows_by_id(info.tid, [self.resolve_id(record_id)])
        if not rows:
            self.stats.count(info.tid, "get.miss", started)
            raise AirtableResponseError.record_not_found(record_id)
        self.stats.count(info.tid, "get.pull" if decision is Read.PULL_THEN_SERVE else "get.local", started)
        self._answer.local = True
        return self._shape(info, next(iter(rows.values())), query)

    def resolve_id(self, record_id: str) -> str:
        """A provisional id keeps working after its create was flushed: follow the id map."""
        if not is_provisional(record_id):
            return record_id
        row = self.store.conn.execute("SELECT real FROM id_map WHERE provisional = ?", (record_id,)).fetchone()
        return row[0] if row else record_id

    # -- writes ------------------------------------------------------------------------------------
    def create(self, base_id: str, table: str, body: dict) -> dict:
        info = self.table_info(base_id, table)
        outage.authorize_in_background(self, info, table)
        if info.schema is None:
            self._refresh_schema(info)  # the values are checked against the schema, as Airtable does
        single = "fields" in body and "records" not in body
        items = [{"fields": body.get("fields")}] if single else body.get("records")
        items = _check_batch(items, need_id=False)
        typecast = bool(body.get("typecast"))
        call = _WriteCall()
        field_sets = [self._validate_fields(info, item.get("fields") or {}, typecast, call) for item in items]
        if self._sends_now(info, call):
            return self._send_now(info, table, call, "POST", None, body)
        seqs: list[int] = []
        created = []
        now = self.clock()
        before = self.model.marker()
        with self.store.transaction() as conn:
            self._learn_choices(conn, info, call)
            position = conn.execute("SELECT COALESCE(MAX(position), -1) FROM records WHERE tid = ?", (info.tid,)).fetchone()[0]
            for fields in field_sets:
                position += 1
                record = self._insert_local(conn, info, table, fields, typecast, position, now, merge_on=None, call=call)
                seqs.append(record.pop("_seq"))
                created.append(record)
            linked = links.after_local_write(self, conn, info, [r["id"] for r in created])
        self.model.after_write(info.tid, before, [r["id"] for r in created] + sorted(linked.get(info.tid, ())))
        self._after_write(info, seqs)
        created = self._maybe_reread(info, created)
        shaped = [self._shape_write(info, r, body) for r in created]
        return shaped[0] if single else {"records": shaped}

    def _insert_local(self, conn: sqlite3.Connection, info: TableInfo, table: str, fields: dict, typecast: bool,
                      position: int, now: float, merge_on: list[str] | None, call: _WriteCall) -> dict:
        record_id = new_provisional_id()
        created_time = now_iso(now)
        stored = clean_fields(fields)
        conn.execute(
            "INSERT INTO records (tid, id, position, created_time, modified_time, remote, fields)"
            " VALUES (?, ?, ?, ?, ?, NULL, ?)",
            (info.tid, record_id, position, created_time, created_time, dumps(stored)),
        )
        seq = outbox.append(
            conn, tid=info.tid, base_id=info.base_id, table_ref=table, op="create", record_id=record_id,
            fields=fields, base=None, typecast=typecast, now=now, merge_on=merge_on, call_id=call.call_id,
        )
        call.queued(seq)
        return {"id": record_id, "createdTime": created_time, "fields": stored, "_seq": seq}

    def _table_for_write(self, base_id: str, table: str) -> TableInfo:
        """An update, upsert or delete needs the records it names: pull a table never read before."""
        info = self.table_info(base_id, table)
        if info.pulled_at is None:
            if self.settings.mode == "offline":
                raise OfflineError(f"offline mode: table {table!r} of base {base_id} has never been pulled")
            try:
                self._require_sync().pull(base_id, table)
            except AirtableResponseError as exc:
                if exc.status == 404:
                    self._forget_table(info)
                raise
            info = self.table_info(base_id, table)
        else:
            outage.authorize_in_background(self, info, table)
        return info

    def update(self, base_id: str, table: str, record_id: str | None, body: dict, *, replace: bool) -> dict:
        info = self._table_for_write(base_id, table)
        typecast = bool(body.get("typecast"))
        op = "replace" if replace else "update"
        call = _WriteCall()
        if record_id is not None:
            self._require_records(info, [record_id], batch=False)  # Airtable answers 404 before any value check
            fields = self._validate_fields(info, body.get("fields") or {}, typecast, call)
            if self._sends_now(info, call):
                return self._send_now(info, table, call, "PUT" if replace else "PATCH", record_id, body)
            seqs, records = self._update_many(info, table, [(record_id, fields)], op, typecast, call, batch=False)
            self._after_write(info, seqs)
            return self._shape_write(info, self._maybe_reread(info, records)[0], body)
        items = body.get("records")
        upsert = body.get("performUpsert")
        items = _check_batch(items, need_id=upsert is None)
        if upsert is not None:
            return self._upsert(info, table, items, upsert, op, typecast, body)
        self._require_records(info, [item["id"] for item in items], batch=True)
        pairs = [(item["id"], self._validate_fields(info, item.get("fields") or {}, typecast, call)) for item in items]
        if self._sends_now(info, call):
            return self._send_now(info, table, call, "PUT" if replace else "PATCH", None, body)
        seqs, records = self._update_many(info, table, pairs, op, typecast, call)
        self._after_write(info, seqs)
        return {"records": [self._shape_write(info, r, body) for r in self._maybe_reread(info, records)]}

    def _require_records(self, info: TableInfo, record_ids: list[str], *, batch: bool) -> None:
        """Records a write names must exist (checked before values, in Airtable's order)."""
        found = self._rows_by_id(info.tid, [self.resolve_id(i) for i in record_ids])
        for record_id in record_ids:
            if self.resolve_id(record_id) not in found:
                raise AirtableResponseError.record_not_found(record_id, batch=batch)

    def _update_many(self, info: TableInfo, table: str, pairs: list[tuple[str, dict]], op: str, typecast: bool,
                     call: _WriteCall, *, batch: bool = True) -> tuple[list[int], list[dict]]:
        now = self.clock()
        seqs, results = [], []
        before = self.model.marker()
        with self.store.transaction() as conn:
            self._learn_choices(conn, info, call)
            for record_id, fields in pairs:
                seq, record = self._update_one(conn, info, table, record_id, fields, op, typecast, now, call, batch=batch)
                seqs.append(seq)
                results.append(record)
            linked = links.after_local_write(self, conn, info, [r["id"] for r in results])
        self.model.after_write(info.tid, before, [r["id"] for r in results] + sorted(linked.get(info.tid, ())))
        return seqs, results

    def _update_one(self, conn: sqlite3.Connection, info: TableInfo, table: str, record_id: str, fields: dict,
                    op: str, typecast: bool, now: float, call: _WriteCall, *, batch: bool = True,
                    merge_on: list[str] | None = None) -> tuple[int, dict]:
        real_id = self.resolve_id(record_id)
        row = conn.execute(
            "SELECT id, created_time, modified_time, fields, comment_count FROM records WHERE tid = ? AND id = ? AND fields IS NOT NULL",
            (info.tid, real_id),
        ).fetchone()
        if row is None:
            raise AirtableResponseError.record_not_found(record_id, batch=batch)
        current = json.loads(row["fields"])
        new_fields = apply_write(current, op, fields)
        queued_op, queued = op, fields
        if op == "replace" and info.fields_by_name:
            # A PUT clears the fields the record has now, not those someone adds in Airtable before
            # the flush: queued as a PATCH that clears them, it is rebased and resolved like any
            # update (Airtable wins on a field changed meanwhile), as if sent at once.
            cleared = {name: None for name in current
                       if name not in fields and info.fields_by_name.get(name, {}).get("type") not in COMPUTED_TYPES}
            queued_op, queued = "update", {**cleared, **fields}
        base = {name: current.get(name) for name in (current if queued_op == "replace" else queued)}
        conn.execute(
            "UPDATE records SET fields = ?, modified_time = ? WHERE tid = ? AND id = ?",
            (dumps(new_fields), now_iso(now), info.tid, real_id),
        )
        seq = outbox.append(
            conn, tid=info.tid, base_id=info.base_id, table_ref=table, op=queued_op, record_id=real_id,
            fields=queued, base=base, typecast=typecast, now=now, call_id=call.call_id, merge_on=merge_on,
        )
        call.queued(seq)
        return seq, {"id": real_id, "createdTime": row["created_time"], "fields": new_fields}

    def _upsert(self, info: TableInfo, table: str, items: list[dict], upsert: Any, op: str, typecast: bool, body: dict) -> dict:
        merge_on = upsert.get("fieldsToMergeOn") if isinstance(upsert, dict) else None
        if not isinstance(merge_on, list) or not 1 <= len(merge_on) <= 3 or not all(isinstance(f, str) for f in merge_on):
            raise AirtableResponseError.invalid_request("performUpsert.fieldsToMergeOn must list 1 to 3 field names")
        merge_on = [self._field_name(info, f) for f in merge_on]
        if info.fields_by_name:
            if not all(f in info.fields_by_name for f in merge_on):
                self._refresh_schema(info)
            cells.check_merge_keys(info.fields_by_name, merge_on)
        call = _WriteCall()
        prepared = []
        for item in items:
            fields = self._validate_fields(info, item.get("fields") or {}, typecast, call)
            if "id" in item:
                self._require_records(info, [item["id"]], batch=True)
            else:
                cells.check_merge_values(fields, merge_on)
            prepared.append((item.get("id"), fields))
        if self._sends_now(info, call):
            return self._send_now(info, table, call, "PUT" if op == "replace" else "PATCH", None, body)
        now = self.clock()
        created_ids, updated_ids, records, seqs = [], [], [], []
        before = self.model.marker()
        with self.store.transaction() as conn:
            self._learn_choices(conn, info, call)
            current = [_record(row) for row in conn.execute(
                "SELECT id, created_time, modified_time, fields, comment_count FROM records WHERE tid = ? AND fields IS NOT NULL ORDER BY position",
                (info.tid,),
            )]
            position = conn.execute("SELECT COALESCE(MAX(position), -1) FROM records WHERE tid = ?", (info.tid,)).fetchone()[0]
            for record_id, fields in prepared:
                if record_id is None:
                    key = [fields.get(f) for f in merge_on]
                    matches = [r for r in current if [r["fields"].get(f) for f in merge_on] == key]
                    if len(matches) > 1:
                        raise AirtableResponseError.typed(
                            422, "INVALID_RECORDS",
                            # As the fake server models it (Airtable's wording is not documented).
                            "Cannot update more than one record that matches fieldsToMergeOn",
                        )
                    record_id = matches[0]["id"] if matches else None
                if record_id is None:
                    position += 1
                    record = self._insert_local(conn, info, table, fields, typecast, position, now, merge_on=merge_on, call=call)
                    seqs.append(record.pop("_seq"))
                    created_ids.append(record["id"])
                    current.append(record)
                else:
                    # Queued with the call's key: sent in the call's upsert request (as an update by id),
                    # so that Airtable applies the upsert whole.
                    seq, record = self._update_one(conn, info, table, record_id, fields, op, typecast, now, call,
                                                   merge_on=merge_on)
                    seqs.append(seq)
                    if record["id"] not in created_ids and record["id"] not in updated_ids:
                        updated_ids.append(record["id"])  # each record listed once, as Airtable does
                    if record["id"] in created_ids:  # made earlier in this call: later matches see it as now
                        current = [record if r["id"] == record["id"] else r for r in current]
                records.append(record)
            linked = links.after_local_write(self, conn, info, [r["id"] for r in records])
        self.model.after_write(info.tid, before, [r["id"] for r in records] + sorted(linked.get(info.tid, ())))
        self._after_write(info, seqs)
        if self.settings.mode == "write-through":
            remapped = {r["id"]: self.resolve_id(r["id"]) for r in records}
            created_ids = [remapped[i] for i in created_ids]
            updated_ids = [remapped[i] for i in updated_ids]
            records = self._maybe_reread(info, records)
        # A record matched twice in one call is answered twice in its final state, as Airtable does.
        final = {r["id"]: r for r in records}
        return {
            "records": [self._shape_write(info, final[r["id"]], body) for r in records],
            "createdRecords": created_ids,
            "updatedRecords": updated_ids,
        }

    def delete(self, base_id: str, table: str, record_ids: list[str], *, single: bool) -> dict:
        info = self._table_for_write(base_id, table)
        if not single:
            if not record_ids:
                raise AirtableResponseError.invalid_request("records[] must name at least one record to delete")
            if len(record_ids) > MAX_RECORDS_PER_WRITE:
                raise AirtableResponseError.typed(
                    422, "INVALID_RECORDS", f"You can delete at most {MAX_RECORDS_PER_WRITE} records per request"
                )
        now = self.clock()
        seqs: list[int] = []
        deleted_ids: list[str] = []
        call = _WriteCall()
        before = self.model.marker()
        with self.store.transaction() as conn:
            for record_id in record_ids:
                real_id = self.resolve_id(record_id)
                deleted_ids.append(real_id)
                changed = conn.execute(
                    "UPDATE records SET fields = NULL WHERE tid = ? AND id = ? AND fields IS NOT NULL", (info.tid, real_id)
                ).rowcount
                if not changed:
                    raise AirtableResponseError.record_not_found(record_id, batch=not single)
                seqs.append(call.queued(outbox.append(
                    conn, tid=info.tid, base_id=base_id, table_ref=table, op="delete", record_id=real_id,
                    fields=None, base=None, typecast=False, now=now, call_id=call.call_id,
                )))
            linked = links.after_local_write(self, conn, info, deleted_ids)
        self.model.after_write(info.tid, before, deleted_ids + sorted(linked.get(info.tid, ())))
        self._after_write(info, seqs)
        deleted = [{"id": self.resolve_id(i) if self.settings.mode == "write-through" else i, "deleted": True} for i in record_ids]
        return deleted[0] if single else {"records": deleted}

    def _validate_fields(self, info: TableInfo, fields: Any, typecast: bool, call: _WriteCall) -> dict:
        """Refuse at the call what Airtable would refuse, so nothing unsendable is queued; return
        the values as Airtable would store them (``typecast`` applied, provisional ids translated)."""
        check_serialisable(fields, where=f"write to table {info.name or info.table_id}")
        names = info.name_for_id
        fields = {names.get(k, k): v for k, v in fields.items()}
        if info.fields_by_name and not all(name in info.fields_by_name for name in fields):
            self._refresh_schema(info)  # a field added in Airtable since the schema was read?
        known = info.fields_by_name
        if known:
            for name in fields:
                if name not in known:
                    raise AirtableResponseError.typed(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{name}"')
                if known[name].get("type") in COMPUTED_TYPES:
                    raise AirtableResponseError.typed(
                        422,
                        "INVALID_VALUE_FOR_COLUMN",
                        f'Field "{name}" cannot accept a value because the field is computed',
                    )
            converted = cells.convert_fields(
                known, fields, typecast=typecast, link_state=lambda table_id, record_id: links.record_state(self, info, table_id, record_id),
                translate=self.resolve_id, new_choices=call.new_choices,
            )
            call.needs_airtable = call.needs_airtable or converted.needs_airtable
            if call.new_choices and not call.needs_airtable:
                # Sent at once: the option exists in Airtable from now on, as the cache assumes (a
                # queued write could be merged away before the flush, and the option with it).
                call.needs_airtable = f"typecast adds select options {call.new_choices}"
            return converted.fields
        return fields

    def _sends_now(self, info: TableInfo, call: _WriteCall) -> bool:
        """Whether only Airtable can answer this call (``call.needs_airtable``): then it is sent at
        once, as plain pyairtable sends it. The writes queued before it go first."""
        if call.needs_airtable is None or self.settings.mode not in ("cache", "write-through"):
            return False
        log.info("sending a write at once: %s", call.needs_airtable)
        if self.store.conn.execute(
            "SELECT 1 FROM outbox WHERE base_id = ? AND state != 'dead' LIMIT 1", (info.base_id,)
        ).fetchone() is not None:
            self._require_sync().flush(info.base_id)
        return True

    def _send_now(self, info: TableInfo, table: str, call: _WriteCall, method: str, record_id: str | None, body: dict) -> Any:
        """Send the agent's call to Airtable as it is (provisional ids replaced by the ids Airtable
        gave), keep the records it answers with, read again the linked tables it may have changed
        (inverse links, records made by a typecast), and answer as Airtable answered."""
        sync = self._require_sync()
        mapping = {p: self.resolve_id(p) for p in _PROVISIONAL_RE.findall(json.dumps(body))}
        sent = replace_ids(body, mapping) if mapping else body
        parts = [info.base_id, table] + ([self.resolve_id(record_id)] if record_id else [])
        sent_at = sync.remote.clock()
        answer = sync.send_now(info.base_id, method, sync.remote.url(*parts), sent, idempotent=method != "POST")
        with self.store.transaction() as conn:
            self._learn_choices(conn, info, call)
            conn.execute("DELETE FROM views WHERE tid = ?", (info.tid,))  # Airtable re-evaluates them
        records: list = answer["records"] if isinstance(answer, dict) and isinstance(answer.get("records"), list) else [answer]
        if not (isinstance(body, dict) and body.get("returnFieldsByFieldId")):
            self.absorb(info.base_id, table, [r for r in records if isinstance(r, dict)], sent_at=sent_at)
        written = {name for item in (body.get("records") or [body]) if isinstance(item, dict)
                   for name in (item.get("fields") or {})}
        for spec in info.schema.get("fields", []) if info.schema else []:
            linked = (spec.get("options") or {}).get("linkedTableId")
            if spec.get("type") == "multipleRecordLinks" and linked and (spec["name"] in written or spec.get("id") in written):
                sync.pull(info.base_id, linked)
                with self.store.transaction() as conn:  # its views too: its inverse link fields changed
                    conn.execute("DELETE FROM views WHERE tid = ?", (self.table_info(info.base_id, linked).tid,))
        return answer

    def _learn_choices(self, conn: sqlite3.Connection, info: TableInfo, call: _WriteCall) -> None:
        """Select options a typecast write adds exist from then on (Airtable adds them to the field)."""
        if not call.new_choices or info.schema is None:
            return
        schema = json.loads(dumps(info.schema))
        for spec in schema.get("fields", []):
            for name in call.new_choices.get(spec.get("name"), []):
                choices = spec.setdefault("options", {}).setdefault("choices", [])
                if name not in [c.get("name") for c in choices]:
                    choices.append({"name": name})
        conn.execute("UPDATE tables SET schema_json = ? WHERE tid = ?", (dumps(schema), info.tid))
        info.set_schema(schema)

    def _shape_write(self, info: TableInfo, record: dict, body: dict) -> dict:
        out = {"id": record["id"], "createdTime": record["createdTime"], "fields": copy_record_fields(record)}
        if body.get("returnFieldsByFieldId"):
            out = rename_to_ids(out, info.id_for_name)
        return out

    def _after_write(self, info: TableInfo, seqs: list[int]) -> None:
        """Write-through sends the writes now and fails the call if Airtable refused them."""
        if decide_write(self.settings.mode) is not Write.WRITE_THROUGH or not seqs:
            if self.sync is not None:
                self.sync.notify_write(len(seqs))
            return
        self._require_sync().flush_writes(info.base_id, seqs)
        marks = ",".join("?" * len(seqs))
        left = self.store.conn.execute(
            f"SELECT seq, record_id, last_error, state FROM outbox WHERE seq IN ({marks})", seqs
        ).fetchall()
        refused = [row for row in left if row["state"] == "dead"]
        if refused:
            # The call fails as it would in pyairtable, and the refused writes do not linger in the queue.
            with self.store.transaction() as conn:
                outbox.ack(conn, [row["seq"] for row in refused])
                self.recompute(conn, info.tid, {row["record_id"] for row in refused})
            error = json.loads(refused[0]["last_error"] or "{}")
            raise AirtableResponseError(error.get("status") or 422, error.get("body") or {})
        if left:
            # Airtable could not be reached even after retries: the write stays queued (it is durable
            # and a later flush sends it) and the call answers from the cache, as cache mode would.
            log.warning("write-through: Airtable did not confirm %d write(s) yet; they stay queued", len(left))

    def _reread(self, info: TableInfo, record_id: str) -> dict:
        rows = self._rows_by_id(info.tid, [self.resolve_id(record_id)])
        return next(iter(rows.values()))

    def _maybe_reread(self, info: TableInfo, records: list[dict]) -> list[dict]:
        if self.settings.mode != "write-through":
            return records
        # A record written twice in one call is answered in each state in turn (as Airtable
        # answers): only its last answer is what Airtable stored.
        last = {r["id"]: i for i, r in enumerate(records)}
        return [self._reread(info, r["id"]) if last[r["id"]] == i else r for i, r in enumerate(records)]

    # -- state transitions used by the sync ----------------------------------------------------------
    def recompute(self, conn: sqlite3.Connection, tid: int, record_ids: Iterable[str]) -> None:
        """Rebuild what reads see for these records: remote state + live queued writes (their own,
        and those of linked records, on link fields: see links.py)."""
        link_lists = links.link_views(conn, tid)
        for record_id in record_ids:
            row = conn.execute("SELECT remote FROM records WHERE tid = ? AND id = ?", (tid, record_id)).fetchone()
            if row is None:
                continue
            remote = json.loads(row[0]) if row[0] is not None else None
            view = outbox.replay(remote, outbox.live_ops_for_record(conn, tid, record_id))
            if view is not None and link_lists:
                view = links.adjust(dict(view), record_id, link_lists)
            conn.execute(
                "UPDATE records SET fields = ? WHERE tid = ? AND id = ?",
                (None if view is None else dumps(view), tid, record_id),
            )

    def apply_pull(self, base_id: str, table: str, records: list[dict], *, started_at: float,
                   schema: dict | None = None, view: str | None = None, complete: bool = True) -> None:
        """Swap in a pulled table (or view) in one transaction, then replay the queue on top."""
        info = self.table_info(base_id, table)
        now = self.clock()
        with self.store.transaction() as conn:
            if schema is not None:
                self._learn_schema(conn, info, schema)
            existing = {row[0]: row[1] for row in conn.execute("SELECT id, position FROM records WHERE tid = ?", (info.tid,))}
            self._resolve_conflicts(conn, info.tid, records, now, started_at)
            seen = set()
            for position, record in enumerate(records):
                seen.add(record["id"])
                fields_json = dumps(clean_fields(record.get("fields") or {}))
                if view is None or record["id"] not in existing:
                    pos = position if view is None else position + 1_000_000_000
                    conn.execute(
                        "INSERT INTO records (tid, id, position, created_time, modified_time, remote, fields, comment_count, synced_at, first_seen)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (tid, id) DO UPDATE SET position = excluded.position, remote = excluded.remote,"
                        " fields = excluded.fields, comment_count = excluded.comment_count, synced_at = excluded.synced_at,"
                        " modified_time = CASE WHEN records.remote IS excluded.remote THEN records.modified_time ELSE excluded.modified_time END"
                        # A flush confirmed this record after the pull began: its state is newer than the page's.
                        " WHERE (records.synced_at IS NULL OR records.synced_at <= ?)"
                        # A row the pull would leave as it is, is not rewritten (issue 11: a refresh
                        # costs what changed; synced_at is when remote was last *set*).
                        " AND (records.remote IS NOT excluded.remote OR records.fields IS NOT excluded.fields"
                        " OR records.position IS NOT excluded.position OR records.comment_count IS NOT excluded.comment_count)",
                        (info.tid, record["id"], pos, record.get("createdTime") or now_iso(now), now_iso(now),
                         fields_json, fields_json, record.get("commentCount", 0), now, now, started_at),
                    )
                else:
                    conn.execute(
                        "UPDATE records SET remote = ?, fields = ?, synced_at = ?, comment_count = ? WHERE tid = ? AND id = ?"
                        " AND (synced_at IS NULL OR synced_at <= ?)"
                        " AND (remote IS NOT ? OR fields IS NOT ? OR comment_count IS NOT ?)",
                        (fields_json, fields_json, now, record.get("commentCount", 0), info.tid, record["id"], started_at,
                         fields_json, fields_json, record.get("commentCount", 0)),
                    )
            if view is not None:
                conn.execute("DELETE FROM view_members WHERE tid = ? AND view = ?", (info.tid, view))
                conn.execute(
                    "INSERT OR REPLACE INTO views (tid, view, pulled_at) VALUES (?, ?, ?)", (info.tid, view, now)
                )
                conn.executemany(
                    "INSERT INTO view_members (tid, view, record_id, position) VALUES (?, ?, ?, ?)",
                    [(info.tid, view, r["id"], i) for i, r in enumerate(records)],
                )
            elif complete:
                # Gone from Airtable: drop what was seen before this pull began (a record confirmed by a
                # flush during the pull is newer than the pull and stays).
                conn.execute(
                    "DELETE FROM records WHERE tid = ? AND remote IS NOT NULL AND (synced_at IS NULL OR synced_at <= ?)"
                    " AND id NOT IN (SELECT value FROM json_each(?))",
                    (info.tid, started_at, dumps(sorted(seen))),
                )
                # Local creates keep their place after the pulled records.
                offset = len(records)
                for i, (rid,) in enumerate(conn.execute(
                    "SELECT id FROM records WHERE tid = ? AND remote IS NULL ORDER BY position", (info.tid,)
                ).fetchall()):
                    conn.execute("UPDATE records SET position = ? WHERE tid = ? AND id = ?", (offset + i, info.tid, rid))
            self.recompute(conn, info.tid, outbox.records_with_live_ops(conn, info.tid) | links.pending_targets(conn, info.tid))
            if view is None and complete:
                # Stamped when the apply ends, not when it began: a long apply must not leave the
                # table already stale for the next read (issue 11).
                conn.execute(
                    "UPDATE tables SET pulled_at = ?, generation = generation + 1 WHERE tid = ?", (self.clock(), info.tid)
                )

    def _resolve_conflicts(self, conn: sqlite3.Connection, tid: int, pulled: list[dict], now: float, started_at: float) -> None:
        """Airtable wins: a field that changed in Airtable since the cache last saw it,
        to a value other than the agent's, and that a queued update also writes, keeps Airtable's
        value. The update no longer sends that field; the dropped local value goes to the
        ``conflicts`` log. Left alone: writes a flusher is sending right now, PUTs (the agent
        replaced the whole record), and records a flush confirmed after this pull began (the
        pulled copy is older than what the cache knows)."""
        queued: dict[str, list[sqlite3.Row]] = {}
        for row in conn.execute(
            "SELECT seq, record_id, fields FROM outbox WHERE tid = ? AND op = 'update' AND state = 'pending'", (tid,)
        ):
            queued.setdefault(row["record_id"], []).append(row)
        if not queued:
            return
        for record in pulled:
            ops = queued.get(record["id"])
            if not ops:
                continue
            row = conn.execute("SELECT remote, synced_at FROM records WHERE tid = ? AND id = ?", (tid, record["id"])).fetchone()
            if row is None or row[0] is None or (row[1] is not None and row[1] > started_at):
                continue
            before, after = json.loads(row[0]), clean_fields(record.get("fields") or {})
            changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
            for op in ops:
                written = json.loads(op["fields"] or "{}")
                lost = {name for name in changed & set(written) if after.get(name) != written[name]}
                if not lost:
                    continue
                conn.executemany(
                    "INSERT INTO conflicts (at, tid, record_id, field, local_value, remote_value) VALUES (?, ?, ?, ?, ?, ?)",
                    [(now, tid, record["id"], name, dumps(written[name]), dumps(after.get(name))) for name in sorted(lost)],
                )
                kept = {name: value for name, value in written.items() if name not in lost}
                if kept:
                    checksum.rewrite(conn, op["seq"], fields=dumps(kept))
                else:
                    outbox.ack(conn, [op["seq"]])
                log.warning("conflict on %s: Airtable changed %s meanwhile; its value wins", record["id"], ", ".join(sorted(lost)))

    def _learn_schema(self, conn: sqlite3.Connection, info: TableInfo, schema: dict) -> None:
        conn.execute(
            "UPDATE tables SET schema_json = ?, table_id = ?, name = ? WHERE tid = ?",
            (dumps(schema), schema.get("id"), schema.get("name"), info.tid),
        )
        for alias in (schema.get("id"), schema.get("name")):
            if alias:
                other = conn.execute(
                    "SELECT tid FROM table_aliases WHERE endpoint = ? AND base_id = ? AND alias = ?",
                    (self.endpoint, info.base_id, alias),
                ).fetchone()
                if other is None:
                    conn.execute(
                        "INSERT INTO table_aliases (endpoint, base_id, alias, tid) VALUES (?, ?, ?, ?)",
                        (self.endpoint, info.base_id, alias, info.tid),
                    )

    def absorb(self, base_id: str, table: str, records: list[dict], *, sent_at: float | None = None) -> None:
        """Records Airtable returned to a request sent on the agent's behalf (at ``sent_at``): keep
        them, unless a flush confirmed a newer state of the record meanwhile."""
        info = self.table_info(base_id, table)
        now = self.clock()
        sent_at = now if sent_at is None else sent_at
        with self.store.transaction() as conn:
            position = conn.execute("SELECT COALESCE(MAX(position), -1) FROM records WHERE tid = ?", (info.tid,)).fetchone()[0]
            last = {r.get("id"): i for i, r in enumerate(records)}  # a record answered twice: its final state
            for i, record in enumerate(records):
                if "createdTime" not in record or "fields" not in record or last[record.get("id")] != i:
                    continue
                position += 1
                fields_json = dumps(clean_fields(record["fields"]))
                conn.execute(
                    "INSERT INTO records (tid, id, position, created_time, remote, fields, synced_at, first_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (tid, id) DO UPDATE SET remote = excluded.remote, fields = excluded.fields, synced_at = excluded.synced_at"
                    " WHERE records.synced_at IS NULL OR records.synced_at <= ?",
                    (info.tid, record["id"], position, record["createdTime"], fields_json, fields_json, now, now, sent_at),
                )
            self.recompute(conn, info.tid, {r["id"] for r in records} & outbox.records_with_live_ops(conn, info.tid)
                           | links.pending_targets(conn, info.tid))

    def absorb_answer(self, r: Route, params: Mapping[str, Any], body: Any, result: Any, *, sent_at: float) -> None:
        """Passthrough: Airtable answered a record request sent as the agent made it; keep what it
        said about whole records (never a projection, string cells or field-id keys)."""
        if not isinstance(result, dict):
            return
        try:
            if r.action == "list":
                query = ListQuery.from_json(body, params) if r.list_by_post else ListQuery.from_params(params)
            else:
                query = ListQuery.from_params(params)
        except AirtableResponseError:
            return
        if not query.returns_full_records or (isinstance(body, dict) and body.get("returnFieldsByFieldId")):
            return
        if result.get("deleted") and "id" in result:
            self.forget(r.base_id, r.table, [result["id"]])
        elif isinstance(result.get("records"), list):
            deleted = [x["id"] for x in result["records"] if x.get("deleted")]
            if deleted:
                self.forget(r.base_id, r.table, deleted)
            else:
                self.absorb(r.base_id, r.table, result["records"], sent_at=sent_at)
        elif "id" in result and "fields" in result:
            self.absorb(r.base_id, r.table, [result], sent_at=sent_at)

    def forget(self, base_id: str, table: str, record_ids: list[str]) -> None:
        info = self.table_info(base_id, table)
        with self.store.transaction() as conn:
            conn.executemany("DELETE FROM records WHERE tid = ? AND id = ?", [(info.tid, i) for i in record_ids])


_RECORD_COLUMNS = "r.id, r.created_time, r.modified_time, r.fields, r.comment_count"
#: The query of a request without parameters (immutable, so shared).
_PLAIN_QUERY = ListQuery.from_params({})


def _record(row: sqlite3.Row) -> dict:
    record = {
        "id": row["id"],
        "createdTime": row["created_time"],
        "fields": json.loads(row["fields"]),
        "commentCount": row["comment_count"],
    }
    if row["modified_time"]:
        record["lastModifiedTime"] = row["modified_time"]
    return record


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


def _json_body(body: Any) -> dict:
    if not isinstance(body, dict):
        raise AirtableResponseError.invalid_request("the request body must be a JSON object")
    return body


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


_exit_recorders: weakref.WeakSet[StatsRecorder] = weakref.WeakSet()


def _write_stats_at_exit() -> None:
    for recorder in list(_exit_recorders):
        recorder.write()


atexit.register(_write_stats_at_exit)


class StatsRecorder:
    """Read statistics kept in memory and written out in one transaction now and then, so that
    counting stays cheap enough to leave on."""

    FLUSH_EVERY = 5.0

    def __init__(self, store: Store):
        self.store = store
        #: Called with the change marker from before each write of statistics (which changes no record).
        self.on_written: Callable[[tuple], None] | None = None
        self._counts: dict[tuple[int, str], list[float]] = {}
        self._latencies: list[tuple[int, str, float]] = []
        self._lock = threading.Lock()
        self._last_write = time.monotonic()
        # What a short-lived agent counted is written at exit (and by Api.close()).
        _exit_recorders.add(self)

    def count(self, tid: int, kind: str, started: float | None = None) -> None:
        ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        with self._lock:
            entry = self._counts.setdefault((tid, kind), [0, 0.0])
            entry[0] += 1
            entry[1] += ms
            if len(self._latencies) < 10_000:
                self._latencies.append((tid, kind, ms))
        if time.monotonic() - self._last_write > self.FLUSH_EVERY:
            self.write()

    def write(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
            latencies, self._latencies = self._latencies, []
            self._last_write = time.monotonic()
        if not counts:
            return
        try:
            before = None if self.store.conn.in_transaction else self.store.change_marker()
            with self.store.transaction() as conn:
                conn.executemany(
                    "INSERT INTO stats (tid, kind, count, total_ms) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (tid, kind) DO UPDATE SET count = count + excluded.count, total_ms = total_ms + excluded.total_ms",
                    [(tid, kind, c, ms) for (tid, kind), (c, ms) in counts.items()],
                )
                conn.executemany("INSERT INTO latencies (tid, kind, ms) VALUES (?, ?, ?)", latencies)
            if before is not None and self.on_written is not None:
                self.on_written(before)
        except sqlite3.Error as exc:  # statistics must never fail a read
            log.debug("could not write statistics: %s", exc)
