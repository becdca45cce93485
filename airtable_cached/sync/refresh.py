"""Refreshing a stale table without pulling it whole.

A table pulled once keeps a watermark: Airtable's clock (the Date header of the first answer of the
pull) when that pull began. A refresh then asks only for the records changed since, with
``IS_AFTER(LAST_MODIFIED_TIME(), DATETIME_PARSE(watermark - overlap))``, and merges them with the
rules of a full pull (Airtable wins per field, queued writes replayed on top, a flush confirmed
after the refresh began is not undone). The watermark moves only after the merge committed: a crash
in between repeats the work, never skips it.

``LAST_MODIFIED_TIME()`` sees neither deletions nor computed fields fed from elsewhere, so:

* deletions come from a change feed, an Airtable webhook per base polled for its payloads (no
  notification URL), kept in SQLite with its cursor and reused by every run on this cache file
  (records it reports created or changed that the watermark list missed are asked for by id); or,
  where the token may not manage webhooks or the feed is off, from an id sweep on its own cadence
  (list every id with only the primary field; ids gone from Airtable are dropped locally);
* a table with lookups, rollups, counts or clock formulas gets a full pull every
  ``full_pull_every`` seconds (:func:`airtable_cached.rules.policy.volatile_fields`).

Two processes finding one table stale at once send one refresh: the store's lock per table (a file
lock beside a SQLite file, an advisory lock in PostgreSQL for every host; both die with their
holder), and whoever gets it second finds the table fresh.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airtable_cached.engine import apply, links
from airtable_cached.errors import RemoteError
from airtable_cached.rules.policy import RefreshPlan, plan_refresh, volatile_fields, watermark_formula

if TYPE_CHECKING:
    from airtable_cached.engine.tables import TableInfo
    from airtable_cached.store.contract import Replica, Unit
    from airtable_cached.sync.ports import EnginePort, SyncCore

log = logging.getLogger("airtable_cached")

#: Refresh a webhook when it has less than this left of its seven days.
HOOK_REFRESH_MARGIN = 2 * 86400.0
#: After Airtable refused a webhook (403, or its 10 per base are taken), try again after this.
HOOK_RETRY_AFTER = 86400.0
#: A reader waits this long at most for another process's refresh of the same table.
LOCK_TIMEOUT = 900.0
_RECORD_ID = re.compile(r"rec[0-9A-Za-z]{14}")
HOOK_SPEC = {"options": {"filters": {"dataTypes": ["tableData", "tableFields"]}}}


@dataclass
class RefreshResult:
    """What one refresh did."""

    kind: str  # full | incremental | skipped
    requests: int = 0
    changed: int = 0
    deleted: int = 0
    why: str = ""

    def as_dict(self) -> dict:
        return {"kind": self.kind, "requests": self.requests, "changed": self.changed, "deleted": self.deleted,
                "why": self.why}


@dataclass
class FeedRead:
    """Payloads read from a base's webhook after its stored cursor."""

    hook_id: str
    cursor: int
    destroyed: set[str] = field(default_factory=set)
    schema_changed: set[str] = field(default_factory=set)  # table ids
    touched: dict[str, set[str]] = field(default_factory=dict)  # table id -> records created or changed
    lost: bool = False  # payloads were dropped before we read them (cursor too old)


class Refresher:
    """Incremental refresh, change feed, id sweep and single flight for one sync (``sync/core.py``)."""

    def __init__(self, sync: SyncCore):
        self.sync = sync
        self.engine: EnginePort = sync.engine
        self.settings = sync.settings
        self.remote = sync.remote
        self._checked: set[str] = set()  # bases whose webhook this process has seen listed

    @property
    def store(self):
        return self.engine.store

    # -- entry point -------------------------------------------------------------------------------
    def refresh(self, base_id: str, table: str, *, max_age: float | None = None, force_full: bool = False) -> RefreshResult:
        """Bring the table up to date, unless (once this process holds the table's refresh lock)
        it is younger than ``max_age`` seconds: someone else refreshed it meanwhile."""
        info = self._info(base_id, table)
        with self._single_flight(info):
            self.engine.forget_marker()  # whoever held the lock may have refreshed the table
            info = self._info(base_id, table)
            if max_age is not None and info.pulled_at is not None and self.engine.clock() - info.pulled_at <= max_age:
                return RefreshResult("skipped", why="refreshed meanwhile by another process or thread")
            self.remote.mark()
            hook = self.feed_hook(base_id)
            setup, _first, _last = self.remote.since_mark()  # listing or making the webhook, counted too
            state = self.state(info.tid)
            plan = plan_refresh(
                # No pull since the cached records were dropped (``reset``): the watermark means nothing.
                now=self.engine.clock(), watermark=state.get("watermark") if info.pulled_at is not None else None,
                last_full=state.get("last_full"),
                last_sweep=state.get("last_sweep"), volatile=volatile_fields(info.schema),
                table_hook=state.get("hook_id"), base_hook=hook, full_every=self.settings.full_pull_every,
                sweep_every=self.settings.sweep_every, force_full=force_full,
            )
            if plan.full:
                log.info("full pull of %s/%s: %s", base_id, table, plan.why)
                result = self._full(base_id, table, plan)
                kind = "full"
            else:
                result = self._incremental(info, table, state, hook, plan)
                kind = "full" if result.kind == "full" else "incremental"
            if setup:
                result.requests += setup
                with self.store.write() as unit:
                    unit.replica.count_refresh_requests(info.tid, kind, setup)
            return result

    def _info(self, base_id: str, table: str) -> TableInfo:
        info = self.engine.table_info(base_id, table)
        assert info is not None  # table_info creates the table's entry when it is missing
        return info

    @contextlib.contextmanager
    def _single_flight(self, info: TableInfo) -> Iterator[None]:
        # The store's table lock (store.coordination()): every process, every host on PostgreSQL.
        with self.remote.table_lock(info.base_id, info.tid, LOCK_TIMEOUT) as held:
            if not held:
                log.warning("refresh of %s/%s: another process held the table's lock for %ss; refreshing anyway",
                            info.base_id, info.tid, LOCK_TIMEOUT)
            yield

    # -- full pull ---------------------------------------------------------------------------------
    def _full(self, base_id: str, table: str, plan: RefreshPlan) -> RefreshResult:
        count = self.sync.pull(base_id, table)  # marks the request count itself
        requests, _first, _last = self.remote.since_mark()
        return RefreshResult("full", requests=requests, changed=count, why=plan.why)

    def record_full(self, info: TableInfo, *, requests: int, server_start: float | None) -> None:
        """After a full pull committed: its watermark, cost, and the webhook that covers it from now."""
        now = self.engine.clock()
        hook = self.store.replica.usable_webhook_id(self.engine.endpoint, info.base_id)
        with self.store.write() as unit:
            unit.replica.record_full_refresh(info.tid, watermark=server_start, at=now, hook_id=hook,
                                             source="feed" if hook else "sweep", requests=requests)
        self.engine.grant(info.base_id)

    # -- incremental -------------------------------------------------------------------------------
    def _incremental(self, info: TableInfo, table: str, state: dict, hook: str | None, plan: RefreshPlan) -> RefreshResult:
        self.remote.mark()
        started = self.engine.clock()
        feed = self._read_feed(info.base_id, hook) if hook else None
        if feed is not None and feed.lost:
            log.warning("change feed of base %s lost payloads (cursor too old, or the webhook is gone): each of its"
                        " tables gets one full pull", info.base_id)
            self._forget_coverage(info.base_id)
            self.feed_hook(info.base_id)  # a new webhook if the old one is gone, before the pull begins
            return self._full(info.base_id, table, RefreshPlan(True, False, "the change feed lost payloads"))
        if feed is not None and feed.schema_changed & {info.table_id}:
            self.engine.reread_schema(info)  # a field added, changed or removed in Airtable
        params: dict[str, Any] = {
            "pageSize": 100, "recordMetadata[]": ["commentCount"],
            "filterByFormula": watermark_formula(state["watermark"], self.settings.overlap),
        }
        records = self.sync.fetch_all(info.base_id, table, params)
        if feed is not None and info.table_id:
            records += self._fetch_unlisted(info, table, feed, {r["id"] for r in records})
        swept = self._sweep_ids(info, table) if plan.sweep else None
        _requests, first_date, _last = self.remote.since_mark()
        destroyed = feed.destroyed if feed else set()
        deleted = self.apply_changes(info, records, destroyed=destroyed, present=swept, started_at=started)
        requests, _first, _last = self.remote.since_mark()
        now = self.engine.clock()
        with self.store.write() as unit:
            unit.replica.record_incremental_refresh(info.tid, watermark=first_date, at=now, swept=swept is not None,
                                                    source="feed" if feed else "sweep", requests=requests)
            if feed is not None:
                unit.replica.advance_webhook(self.engine.endpoint, info.base_id, feed.hook_id, feed.cursor, now)
        self.engine.grant(info.base_id)
        log.info("refreshed %s/%s incrementally: %d changed, %d deleted, %d requests", info.base_id, table,
                 len(records), deleted, requests)
        return RefreshResult("incremental", requests=requests, changed=len(records), deleted=deleted, why=plan.why)

    def apply_changes(self, info: TableInfo, records: list[dict], *, destroyed: set[str], present: set[str] | None,
                      started_at: float) -> int:
        """Merge changed records and deletions in one transaction, with a full pull's rules.

        ``destroyed``: ids the change feed reports deleted (from any table of the base: record ids
        are unique). ``present``: every id Airtable listed in an id sweep (``None``: no sweep); a
        cached record missing from it is deleted, unless the queue still creates or writes it.
        Returns how many records were deleted."""
        now = self.engine.clock()
        with self.store.write() as unit:
            apply.resolve_conflicts(unit, info.tid, records, now, started_at)
            position = unit.replica.merge_changed_records(
                info.tid, records, now=now, started_at=started_at, position=unit.replica.last_position(info.tid))
            deleted = self._apply_deletions(unit, info, destroyed, present, started_at)
            if records:
                # The agent's own creates keep their place after the records Airtable has.
                unit.replica.move_local_records_after(info.tid, position)
            unit.replica.mark_pulled(info.tid, now)
            touched = {r["id"] for r in records}
            apply.recompute(unit, info.tid, touched & unit.outbox.records_with_live_ops(info.tid) | links.pending_targets(unit, info.tid))
        return deleted

    def _apply_deletions(self, unit: Unit, info: TableInfo, destroyed: set[str], present: set[str] | None,
                         started_at: float) -> int:
        """Deletions the change feed reported, and records an id sweep no longer found (unless the
        queue still names them); how many records were deleted."""
        deleted = 0
        if destroyed:
            deleted += unit.replica.delete_destroyed_records(self.engine.endpoint, info.base_id, destroyed, started_at)
        if present is not None:
            live = unit.outbox.records_with_live_ops(info.tid)
            missing = unit.replica.remote_ids_missing_from(info.tid, present, started_at)
            gone = [rid for rid in missing if rid not in live]
            kept = sorted(set(missing) - set(gone))
            if kept:
                log.warning("id sweep of %s/%s: %d record(s) gone from Airtable kept while queued writes name them"
                            " (the flush will report them): %s", info.base_id, info.tid, len(kept), ", ".join(kept[:10]))
            unit.replica.delete_records(info.tid, gone)
            deleted += len(gone)
        return deleted

    def _fetch_unlisted(self, info: TableInfo, table: str, feed: FeedRead, listed: set[str]) -> list[dict]:
        """Records the change feed reports created or changed in this table that the watermark list
        did not bring (a change ``LAST_MODIFIED_TIME()`` does not see, or one further back than
        the overlap): asked for by id, 50 at a time, so what the feed reports reaches the cache."""
        # Only well-formed record ids go into the formula.
        wanted = sorted(rid for rid in feed.touched.get(info.table_id or "", set()) - listed - feed.destroyed
                        if _RECORD_ID.fullmatch(rid))
        found: list[dict] = []
        for i in range(0, len(wanted), 50):
            chunk = wanted[i:i + 50]
            formula = "OR(" + ",".join(f"RECORD_ID()='{rid}'" for rid in chunk) + ")"
            found += self.sync.fetch_all(info.base_id, table, {"pageSize": 100, "recordMetadata[]": ["commentCount"],
                                                                "filterByFormula": formula})
        if wanted:
            log.info("%s/%s: %d record(s) the change feed reported were not in the watermark list; asked by id",
                     info.base_id, table, len(wanted))
        return found

    # -- id sweep ----------------------------------------------------------------------------------
    def _sweep_ids(self, info: TableInfo, table: str) -> set[str] | None:
        """Every record id in the table, listed with only the primary field (``None``: the schema,
        and so the primary field, is unknown; the table's full pulls find deletions instead)."""
        schema = info.schema or {}
        primary = next((f["name"] for f in schema.get("fields", []) if f.get("id") == schema.get("primaryFieldId")), None)
        if primary is None:
            return None
        records = self.sync.fetch_all(info.base_id, table, {"pageSize": 100, "fields[]": [primary]})
        return {r["id"] for r in records}

    # -- change feed -------------------------------------------------------------------------------
    def feed_hook(self, base_id: str) -> str | None:
        """The id of this cache file's webhook on the base (made if needed), or ``None`` when the
        feed is off, Airtable refused it, or it could not be reached."""
        if self.settings.feed == "off" or self.settings.mode == "offline":
            return None
        row = self.store.replica.webhook(self.engine.endpoint, base_id)
        now = self.engine.clock()
        if row is not None and row["denied_at"] is not None and now - row["denied_at"] < HOOK_RETRY_AFTER:
            return None
        if row is not None and row["webhook_id"] and base_id in self._checked:
            return row["webhook_id"]
        try:
            return self._check_or_create(base_id, row["webhook_id"] if row is not None else None)
        except RemoteError as exc:
            if exc.status in (401, 403, 404) or (exc.status == 422 and _error_type(exc.body) == "TOO_MANY_WEBHOOKS"):
                why = ("Airtable allows 10 webhooks per base and they are taken; see `airtable-cached webhooks list`"
                       if exc.status == 422 else "this token may not manage webhooks (scope webhook:manage)")
                log.warning("change feed for base %s unavailable (%s): deletions are found by id sweeps", base_id, why)
                self._set_hook(base_id, None, denied=why)
                return None
            log.warning("change feed for base %s unreachable now: %s", base_id, exc)
            return row["webhook_id"] if row is not None else None

    def _check_or_create(self, base_id: str, known: str | None) -> str:
        listed = self.remote.send(base_id, "GET", self._hooks_url(base_id), kind="feed")["webhooks"]
        self._checked.add(base_id)
        mine = next((h for h in listed if h.get("id") == known), None)
        if mine is not None and mine.get("isHookEnabled", True):
            self._set_hook(base_id, known, expires=_epoch(mine.get("expirationTime")), keep_cursor=True)
            return known  # type: ignore[return-value]
        if mine is not None:  # disabled: it reports nothing any more; replace it
            log.warning("webhook %s on base %s is disabled; replacing it (each table gets one full pull)", known, base_id)
            self.remote.send(base_id, "DELETE", self._hooks_url(base_id, known or ""), kind="feed")
        elif known is not None:
            log.warning("webhook %s on base %s is gone (expired?); making a new one (each table gets one full pull)",
                        known, base_id)
        made = self.remote.send(base_id, "POST", self._hooks_url(base_id), kind="feed",
                                json_body={"notificationUrl": None, "specification": HOOK_SPEC})
        self._set_hook(base_id, made["id"], expires=_epoch(made.get("expirationTime")))
        return made["id"]

    def _read_feed(self, base_id: str, hook_id: str) -> FeedRead | None:
        row = self.store.replica.webhook(self.engine.endpoint, base_id)
        read = FeedRead(hook_id, row["cursor"] if row else 1)
        while True:
            try:
                page = self.remote.send(base_id, "GET", self._hooks_url(base_id, hook_id, "payloads"), kind="feed",
                                        params={"cursor": read.cursor})
            except RemoteError as exc:
                if exc.status == 404:  # expired or removed: a new webhook, and full pulls
                    self._checked.discard(base_id)
                    self._set_hook(base_id, None)
                    read.lost = True
                    return read
                raise
            payloads = page.get("payloads", [])
            if page.get("cursor", read.cursor) > read.cursor + len(payloads):
                read.lost = True  # Airtable no longer keeps some payloads after our cursor
            for payload in payloads:
                for table_id, change in (payload.get("changedTablesById") or {}).items():
                    read.destroyed.update(change.get("destroyedRecordIds") or [])
                    read.touched.setdefault(table_id, set()).update(
                        [*(change.get("createdRecordsById") or {}), *(change.get("changedRecordsById") or {})])
                    if change.get("createdFieldsById") or change.get("changedFieldsById") or change.get("destroyedFieldIds"):
                        read.schema_changed.add(table_id)
            read.cursor = page.get("cursor", read.cursor + len(payloads))
            if not page.get("mightHaveMore") or not payloads:
                break
        if read.lost:
            self._set_hook(base_id, hook_id, cursor=read.cursor)
        self._extend_if_due(base_id, hook_id, row["expires_at"] if row else None)
        return read

    def _extend_if_due(self, base_id: str, hook_id: str, expires_at: float | None) -> None:
        _n, _first, server_now = self.remote.since_mark()
        if expires_at is None or server_now is None or expires_at - server_now > HOOK_REFRESH_MARGIN:
            return
        answer = self.remote.send(base_id, "POST", self._hooks_url(base_id, hook_id, "refresh"), kind="feed")
        with self.store.write() as unit:
            unit.replica.set_webhook_expiry(self.engine.endpoint, base_id, _epoch(answer.get("expirationTime")))

    def _forget_coverage(self, base_id: str) -> None:
        """The feed missed something: every table of the base gets one full pull."""
        with self.store.write() as unit:
            unit.replica.forget_feed_coverage(self.engine.endpoint, base_id)

    def _set_hook(self, base_id: str, hook_id: str | None, *, expires: float | None = None, denied: str | None = None,
                  cursor: int | None = None, keep_cursor: bool = False) -> None:
        now = self.engine.clock()
        with self.store.write() as unit:
            old = unit.replica.webhook(self.engine.endpoint, base_id)
            same = old is not None and old["webhook_id"] == hook_id and hook_id is not None
            new_cursor = cursor if cursor is not None else (old["cursor"] if old is not None and same and keep_cursor else 1)
            unit.replica.save_webhook(self.engine.endpoint, base_id, hook_id, cursor=new_cursor, expires_at=expires,
                                      now=now, denied_why=denied)

    def _hooks_url(self, base_id: str, *parts: str) -> str:
        return "/".join([self.settings.endpoint_url, "v0", "bases", base_id, "webhooks", *parts])

    # -- state -------------------------------------------------------------------------------------
    def state(self, tid: int) -> dict:
        return self.store.replica.refresh_state(tid)

    def count_stale_served(self, tid: int) -> None:
        with self.store.write() as unit:
            unit.replica.count_stale_served(tid)


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return _dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _error_type(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("type")
    return None


__all__ = ["Refresher", "RefreshResult", "FeedRead"]


# -- reports (status, stats) and operations (webhooks list/remove) ---------------------------------


def refresh_status(replica: Replica, tid: int, schema: dict | None, settings, now: float) -> dict:
    """What ``status`` shows about a table's refreshes: last incremental and full pull, watermark,
    where deletions come from (change feed or id sweep) and how old that knowledge is, and why
    it gets full pulls on a cadence, if it does."""
    state = replica.refresh_state(tid)
    base = replica.table(tid)
    hook = replica.webhook(base["endpoint"], base["base_id"]) if base else None
    volatile = volatile_fields(schema)
    feed_on = bool(hook is not None and hook["webhook_id"] and state.get("hook_id") == hook["webhook_id"])
    if feed_on and hook is not None:
        source, seen = "feed", hook["read_at"] or state.get("last_full")
    else:
        source, seen = "sweep", state.get("last_sweep")
    reason = None
    if volatile is None:
        reason = f"schema unknown: full pull every {settings.full_pull_every:g}s"
    elif volatile:
        reason = f"computed fields {', '.join(volatile)}: full pull every {settings.full_pull_every:g}s"
    watermark = state.get("watermark")
    return {
        "last_incremental": state.get("last_incremental"),
        "last_full": state.get("last_full"),
        "watermark": None if watermark is None else _dt.datetime.fromtimestamp(watermark, _dt.UTC).isoformat(),
        "deletions": source if state else None,
        "deletions_age": None if seen is None else max(0.0, now - seen),
        "webhook_id": hook["webhook_id"] if feed_on and hook is not None else None,
        "feed_refused": hook["denied_why"] if hook is not None else None,
        "full_pull_reason": reason,
    }


def refresh_counts(replica: Replica) -> list[dict]:
    """What ``stats`` shows: incremental and full pulls per table, the requests each kind cost,
    and stale reads answered at once (AIRTABLE_CACHED_STALE=serve)."""
    rows = replica.refresh_counts()
    return [{
        "base_id": r["base_id"], "table": r["label"],
        "full_pulls": r["full_pulls"], "full_requests": r["full_requests"],
        "incremental_pulls": r["incremental_pulls"], "incremental_requests": r["incremental_requests"],
        "stale_served": r["stale_served"],
    } for r in rows]


def list_webhooks(sync: SyncCore, bases: list[str]) -> list[dict]:
    """Every webhook Airtable has on these bases, marked ``ours`` when this cache file uses it."""
    mine = sync.engine.store.replica.webhook_ids(sync.engine.endpoint)
    out = []
    for base_id in bases:
        url = "/".join([sync.settings.endpoint_url, "v0", "bases", base_id, "webhooks"])
        for hook in sync.remote.send(base_id, "GET", url, kind="feed").get("webhooks", []):
            out.append({"base_id": base_id, "id": hook.get("id"), "ours": mine.get(base_id) == hook.get("id"),
                        "enabled": hook.get("isHookEnabled"), "notification_url": hook.get("notificationUrl"),
                        "expires": hook.get("expirationTime"), "next_cursor": hook.get("cursorForNextPayload"),
                        "data_types": ((hook.get("specification") or {}).get("options") or {}).get("filters", {})
                        .get("dataTypes")})
    return out


def remove_webhooks(sync: SyncCore, base_id: str, ids: list[str]) -> list[str]:
    """Delete these webhooks from Airtable. Removing the one this cache file uses makes the next
    refresh create another (and pull each table of the base whole once)."""
    removed = []
    for hook_id in ids:
        url = "/".join([sync.settings.endpoint_url, "v0", "bases", base_id, "webhooks", hook_id])
        sync.remote.send(base_id, "DELETE", url, kind="feed")
        removed.append(hook_id)
        with sync.engine.store.write() as unit:
            unit.replica.delete_webhook(sync.engine.endpoint, base_id, hook_id)
    return removed
