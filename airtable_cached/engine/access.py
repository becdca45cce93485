"""Whether the cache may answer a read now: the table's freshness (pulled first, refreshed in
the background, or served stale when Airtable is out of reach) and the token's right to the base."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from airtable_cached.config import Settings
from airtable_cached.engine import links, outage
from airtable_cached.engine.ports import SyncHandle
from airtable_cached.engine.readmodel import ReadModel
from airtable_cached.engine.stats import StatsRecorder
from airtable_cached.engine.tables import TableInfo, Tables
from airtable_cached.errors import AirtableResponseError, OfflineError
from airtable_cached.rules.policy import Read, TableState, decide_read
from airtable_cached.store.contract import Store

log = logging.getLogger("airtable_cached")


def grant_key(endpoint: str, base_id: str) -> str:
    """A grant is for a base of one Airtable (the same base id behind another endpoint is another
    base): the key is the flush lock's (``sync/locks.py``, ``flush_key``), endpoint and base id.
    Kept in the file (``token_grants``): it must stay what it is."""
    return f"{endpoint} {base_id}" if endpoint else base_id


class Access:
    """Freshness of tables and the token's grants, for one engine."""

    def __init__(self, store: Store, settings: Settings, tables: Tables, *, sync: SyncHandle, stats: StatsRecorder,
                 model: ReadModel, clock: Callable[[], float]):
        self.store, self.settings, self.tables, self.sync = store, settings, tables, sync
        self.stats, self.model, self.clock = stats, model, clock
        #: Bases this engine's token has been seen to read (a pull or a probe answered), in memory.
        self.authorized: set[str] = set()
        self._digest: str | None = None
        #: tid -> refresh started by a stale read; ("probe", base id) -> a write's background check
        #: that the token may use the base. Joined before the sync closes what they use.
        self._background: dict[object, threading.Thread] = {}
        self._background_lock = threading.Lock()

    def is_fresh(self, info: TableInfo) -> bool:
        return TableState(info.pulled_at, self.settings.max_age).is_fresh(self.clock())

    def ensure_fresh(self, info: TableInfo, table: str, remote_reason: str | None) -> tuple[Read, TableInfo]:
        decision = decide_read(self.settings.mode, TableState(info.pulled_at, self.settings.max_age), self.clock(), remote_reason)
        if decision is Read.OFFLINE_STALE:
            why = remote_reason or f"table {table!r} of base {info.base_id} has never been pulled"
            raise OfflineError(f"offline mode: cannot answer from the cache: {why}")
        if decision is Read.PULL_THEN_SERVE and self._serve_stale(info, table):
            decision = Read.SERVE
        if decision is Read.PULL_THEN_SERVE:
            if not outage.pull_or_serve_stale(self, info, table):
                return Read.SERVE, info
            info = self.tables.info(info.base_id, table)
        elif decision is Read.SERVE:
            self.authorize(info, table)
        return decision, info

    def ensure_fresh_or_forget(self, info: TableInfo, table: str, remote_reason: str | None) -> tuple[Read, TableInfo]:
        """``ensure_fresh``; a table Airtable says does not exist leaves nothing behind."""
        try:
            return self.ensure_fresh(info, table, remote_reason)
        except AirtableResponseError as exc:
            if exc.status == 404 and info.pulled_at is None:
                self.tables.forget_if_unused(info)
            raise

    def view_is_fresh(self, info: TableInfo, view: str) -> bool:
        pulled_at = self.store.replica.view_pulled_at(info.tid, view)
        return pulled_at is not None and TableState(pulled_at, self.settings.max_age).is_fresh(self.clock())

    def authorize(self, info: TableInfo, table: str) -> None:
        """Serve a base from the cache only to a token Airtable lets read it.

        Another token may have filled the cache file. The first time this engine's token meets a
        base it has not pulled, one small request asks Airtable; its refusal (401, 403, 404) is
        the answer. If Airtable cannot be asked (offline, network down), the cache answers."""
        sync = self.sync.sync
        if info.base_id in self.authorized or self.settings.mode == "offline" or sync is None:
            return
        if self._granted(info.base_id):
            self.authorized.add(info.base_id)
            return
        if sync.probe(info.base_id, table):
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
        before = None if self.store.in_write() else self.store.change_marker()
        with self.store.write() as unit:
            unit.replica.grant_token(grant_key(self.tables.endpoint, base_id), digest, at=self.clock())
        if before is not None:
            self.model.carry(before)

    def _granted(self, base_id: str) -> bool:
        digest = self._token_digest()
        if digest is None:
            return False
        granted_at = self.store.replica.token_granted_at(grant_key(self.tables.endpoint, base_id), digest)
        return granted_at is not None and self.clock() - granted_at <= self.settings.max_age

    def _token_digest(self) -> str | None:
        sync = self.sync.sync
        if sync is None:
            return None
        if self._digest is None:
            self._digest = sync.remote.token_digest(self.store.replica.token_salt())
        return self._digest

    def reread_schema(self, info: TableInfo) -> bool:
        """Read the table's schema again (it names a field the cached schema lacks); updates
        ``info`` in place. Returns whether a schema came back."""
        if self.settings.mode == "offline" or self.sync.sync is None:
            return False
        schema = self.sync.sync.fetch_schema(info)
        if schema is None:
            return False
        with self.store.write() as unit:
            self.tables.learn_schema(unit, info, schema)
        info.set_schema(schema)
        return True

    def flush_before_asking(self, info: TableInfo, *, linked: bool = False) -> bool:
        """Before Airtable answers a read of a table, it gets the agent's queued writes to that
        table, so that its answer includes them (read-your-writes). Returns whether it flushed."""
        if self.settings.mode not in ("cache", "write-through") or not self.has_queued_writes(info, linked=linked):
            return False
        self.sync.require().flush(info.base_id)
        return True

    def has_queued_writes(self, info: TableInfo, *, linked: bool = False) -> bool:
        """Whether writes to the table are queued (``linked``: or to a table linked to it, whose
        writes change this table's link fields too)."""
        tids = [info.tid] + ([pair.linked_tid for pair in links.link_pairs(self.store.replica, info.tid)] if linked else [])
        return self.store.outbox.has_live_writes(tids)

    # -- background refreshes and probes ---------------------------------------------------------
    def _serve_stale(self, info: TableInfo, table: str) -> bool:
        """``AIRTABLE_CACHED_STALE=serve``: a stale table that was pulled before answers at once
        while one background thread per table refreshes it. The answer is the same as any cached
        answer; the count of such reads is kept (``stats``)."""
        sync = self.sync.sync
        if self.settings.stale != "serve" or info.pulled_at is None or sync is None:
            return False
        sync.refresher.count_stale_served(info.tid)
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
            self.sync.require().refresh(base_id, table, max_age=self.settings.max_age)
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
