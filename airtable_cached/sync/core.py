"""Talking to Airtable: pull tables into the cache, push the queue out.

* :class:`Remote` sends one request: paced under the base's rate limit by the store's cross-process
  (cross-host, on PostgreSQL) pacer, stopped for the whole base after a 429, retried on transient failures by tenacity
  with an injectable sleep (tests never sleep for real).
* :class:`Sync` pulls tables and views and flushes the outbox: claim, coalesce, send 10 records a
  request, then confirm (remap provisional ids), retry later, or dead-letter.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
import tenacity
import urllib3

from airtable_cached.config import Settings, check_token
from airtable_cached.engine import apply, links
from airtable_cached.errors import (
    AirtableResponseError,
    OfflineError,
    RemoteError,
    StoreCommitUnknown,
    StoreConnectionLost,
)
from airtable_cached.rules.policy import backoff
from airtable_cached.rules.query import ListQuery
from airtable_cached.rules.records import dumps, now_iso, referenced_provisional_ids, replace_ids
from airtable_cached.store import checksum
from airtable_cached.sync import outbox, reconcile
from airtable_cached.sync.locks import flush_key
from airtable_cached.sync.refresh import Refresher, RefreshResult

if TYPE_CHECKING:
    from airtable_cached.engine.tables import TableInfo
    from airtable_cached.store.contract import HeldLock, Replica, Unit
    from airtable_cached.sync.ports import EnginePort
    from airtable_cached.types import DeadLetterDict

log = logging.getLogger("airtable_cached")

PULL_PAGE_SIZE = 100
#: Airtable's limit on a URL (pyairtable's ``Api.MAX_URL_LENGTH``): longer lists go by POST.
MAX_URL_LENGTH = 16_000
#: Seconds before writes are tried again after Airtable could not be reached: short, so the queue
#: drains within seconds of Airtable answering again (an attempt costs a refused connection or
#: one network timeout, not an Airtable request).
OUTAGE_RETRY = 2.0
#: Times an acknowledgement is run again when the database connection dropped before its commit.
CONFIRM_ATTEMPTS = 5


# -- pacing and retries ----------------------------------------------------------------------------


class Remote:
    """One HTTP conversation with Airtable for one token. The token lives only in this object."""

    def __init__(self, token: str, settings: Settings, engine: EnginePort, *, timeout: Any = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.engine = engine
        self.timeout = timeout if timeout is not None else (settings.network_timeout, settings.network_timeout)
        self.clock = clock
        self.sleep = sleep
        # The rate budget, flush locks and table locks shared with every process (every host, on
        # PostgreSQL) using the store: the store's own means (store/sqlite/locks.py, store/postgres/).
        shared = engine.store.coordination(settings, clock=clock, sleep=sleep)
        self.pacer, self.locks, self.table_lock = shared.pacer, shared.locks, shared.table_lock
        self._token = check_token(token)  # in memory only; scrubbed from error messages before they are stored
        # One requests.Session per thread (and per process after a fork): a Session's connection
        # pool and cookies are not meant to be shared between threads.
        self._local = threading.local()
        # Weak: a finished thread's session goes with it.
        self._sessions: weakref.WeakSet[requests.Session] = weakref.WeakSet()
        self._sessions_lock = threading.Lock()
        #: Airtable's clock as its last answer told it (``Date``): bounds what a lost create made.
        self.server_time: Any = None
        self._counted = threading.local()  # per thread: requests and Airtable's clock since mark()

    @property
    def session(self) -> requests.Session:
        """This thread's session with Airtable."""
        found = getattr(self._local, "session", None)
        if found is not None and found[0] == os.getpid():
            return found[1]
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self._token}"
        session.headers["User-Agent"] = "airtable_cached"
        # Marked so that airtable_cached.http's interception of requests never answers the sync
        # from the cache it is filling.
        session._airtable_cached_direct = True  # type: ignore[attr-defined]
        self._local.session = (os.getpid(), session)
        session._airtable_cached_pid = os.getpid()  # type: ignore[attr-defined]
        with self._sessions_lock:
            self._sessions.add(session)
        return session

    def close_thread_session(self) -> None:
        """Close the calling thread's session (a thread that ends closes its own sockets)."""
        found = getattr(self._local, "session", None)
        if found is not None and found[0] == os.getpid():
            found[1].close()
            with self._sessions_lock:
                self._sessions.discard(found[1])
        self._local.session = None

    def close(self) -> None:
        """Close every thread's session (their sockets) and the pacer's diskcache."""
        with self._sessions_lock:
            sessions, self._sessions = list(self._sessions), weakref.WeakSet()
        for session in sessions:
            if session._airtable_cached_pid == os.getpid():  # type: ignore[attr-defined]  # a parent's are the parent's
                session.close()
        self._local = threading.local()
        self.pacer.close()

    def token_digest(self, salt: bytes) -> str:
        """An HMAC of the token keyed by ``salt``: tells tokens apart without keeping the token."""
        return hmac.new(salt, self._token.encode(), hashlib.sha256).hexdigest()

    def mark(self) -> None:
        """Start counting this thread's requests (a refresh's cost) and noting Airtable's clock."""
        self._counted.requests = 0
        self._counted.first_date = None
        self._counted.last_date = None

    def since_mark(self) -> tuple[int, float | None, float | None]:
        """Requests this thread sent since ``mark()``, and the Date header (epoch seconds, Airtable's
        clock) of the first and the last answer."""
        return (getattr(self._counted, "requests", 0), getattr(self._counted, "first_date", None),
                getattr(self._counted, "last_date", None))

    def _note(self, response: requests.Response | None) -> None:
        self._counted.requests = getattr(self._counted, "requests", 0) + 1
        date = _server_date(response) if response is not None else None
        if date is not None:
            if getattr(self._counted, "first_date", None) is None:
                self._counted.first_date = date
            self._counted.last_date = date

    def url(self, *parts: str) -> str:
        return self.settings.endpoint_url + "/v0/" + "/".join(quote(p, safe="") for p in parts)

    def send(self, base_id: str, method: str, url: str, *, kind: str, params: Any = None, json_body: Any = None,
             idempotent: bool = True) -> Any:
        """Send with pacing and retries; return the parsed JSON or raise :class:`RemoteError`.

        A request that is not idempotent (a plain create) is retried here only when it surely did
        not reach Airtable (429, or the connection could not be opened): after a lost response or a
        5xx the record may exist, and the caller must look for it before sending it again.
        """
        if self.settings.mode == "offline":
            raise OfflineError(f"offline mode: not sending {method} {url}")

        def worth_retrying(error: BaseException) -> bool:
            if not isinstance(error, RemoteError) or error.unreachable:
                return False  # unreachable: the caller serves the cache or keeps the writes queued
            return error.transient and (idempotent or not may_have_applied(error))

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(worth_retrying),
            stop=tenacity.stop_after_attempt(self.settings.retries),
            wait=self._wait,
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(self._send_once, base_id, method, url, kind, params, json_body)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return self.retry_delay(state.attempt_number, error)

    def retry_delay(self, attempt_number: int, error: BaseException | None) -> float:
        """Exponential backoff before attempt ``attempt_number + 1`` (0.5 s, 1 s, 2 s... at most 30 s)."""
        if isinstance(error, RemoteError) and error.status == 429:
            return 0.0  # the pacer holds every request to this base until the penalty is over
        delay = min(30.0, 0.5 * 2 ** (attempt_number - 1))
        if isinstance(error, RemoteError) and error.retry_after:
            delay = max(delay, error.retry_after)
        return delay

    def _send_once(self, base_id: str, method: str, url: str, kind: str, params: Any, json_body: Any) -> Any:
        self.pacer.wait_turn(base_id)
        status: int | None = None
        try:
            response = self.session.request(method, url, params=params, json=json_body, timeout=self.timeout)
            status = response.status_code
            self._note(response)
        except requests.RequestException as exc:
            self._note(None)
            error = RemoteError(None, f"{type(exc).__name__}: {exc}".replace(self._token, "***"))
            error.unsent = _never_sent(exc)  # type: ignore[attr-defined]
            error.no_answer = error.unsent or isinstance(exc, requests.Timeout)  # type: ignore[attr-defined]
            raise error from exc
        finally:
            self._log(base_id, kind, method, status)
        self.server_time = reconcile.server_time(response.headers.get("Date")) or self.server_time
        if status == 429:
            self.pacer.penalise(base_id, _retry_after(response))
        if status >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text[:500]
            raise RemoteError(status, body, retry_after=_retry_after(response))
        return response.json() if response.content else None

    def _log(self, base_id: str, kind: str, method: str, status: int | None) -> None:
        log_request(self.engine.store, base_id, kind, method, status)


def log_request(store: Any, base_id: str, kind: str, method: str, status: int | None) -> None:
    """One row of the request log (``status`` and ``stats`` count what Airtable was sent)."""
    try:
        with store.write() as unit:
            unit.replica.log_request(time.time(), base_id, kind, method.upper(), status)
    except Exception as exc:  # noqa: BLE001 - the log is for operators; it never fails a request
        log.debug("could not log request: %s", exc)


def _never_sent(exc: requests.RequestException) -> bool:
    """Whether the request surely never reached the server (the connection could not be opened)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def may_have_applied(error: RemoteError) -> bool:
    """Whether a failed request may still have been carried out by Airtable (its answer was lost or
    was a 5xx). A 429 is refused before anything happens; a refused connection sent nothing."""
    if error.status is None:
        return not getattr(error, "unsent", False)
    return error.status >= 500


def _server_date(response: requests.Response) -> float | None:
    """Airtable's clock from an answer's Date header (one-second resolution), as epoch seconds."""
    when = reconcile.server_time(response.headers.get("Date"))
    return when.timestamp() if when is not None else None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


# -- flush results ---------------------------------------------------------------------------------


@dataclass
class FlushResult:
    """What a flush did: writes confirmed by Airtable, writes that failed and why, writes left."""

    sent: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    requests: int = 0
    pending: int = 0
    #: Bases left to another flusher that holds them (never waited for).
    busy: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def merge(self, other: FlushResult) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.requests += other.requests
        self.pending = other.pending
        self.busy += other.busy

    def as_dict(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "requests": self.requests, "pending": self.pending,
                "busy": self.busy}


# -- sync ------------------------------------------------------------------------------------------


_in_process_locks: dict[tuple[str, str], threading.Lock] = {}
_in_process_locks_guard = threading.Lock()


def _in_process_lock(path: Any, base_id: str) -> threading.Lock:
    """One flusher thread at a time per (cache file, base) in this process."""
    with _in_process_locks_guard:
        return _in_process_locks.setdefault((str(path), base_id), threading.Lock())


def _reset_in_process_locks() -> None:
    """In a forked child: a lock held by a parent's thread would never be released."""
    global _in_process_locks_guard
    _in_process_locks.clear()
    _in_process_locks_guard = threading.Lock()


os.register_at_fork(after_in_child=_reset_in_process_locks)


class Sync:
    def __init__(self, engine: EnginePort, token: str, *, timeout: Any = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.engine = engine
        self.settings = engine.settings
        self.remote = Remote(token, self.settings, engine, timeout=timeout, clock=clock, sleep=sleep)
        self._schema_denied: set[str] = set()
        #: Called with a dict describing each dead-lettered call (``Api(on_dead_letter=...)``).
        self.on_dead_letter: Callable[[DeadLetterDict], Any] | None = None
        #: Bases Airtable refused this token (401, 403, 404 to a probe): writes to them are refused
        #: at once, without asking again.
        self.refused: dict[str, AirtableResponseError] = {}
        self._plan: list[outbox.Send] = []  # the sends of the batch being flushed
        self._settled: set[int] = set()  # id() of sends of the plan that reconciliation settled
        #: Per base: batches Airtable took whose acknowledgement's commit was left unknown, with
        #: Airtable's answer (see ``_confirm``).
        self._unconfirmed: dict[str, list[tuple[list[outbox.Send], list[dict] | None]]] = {}
        self._flusher: AutoFlusher | None = None
        self._flusher_lock = threading.Lock()
        self._closed = False
        engine.adopt_unkeyed_tables()
        self._start_flusher()
        self.refresher = Refresher(self)

    @property
    def store(self):
        return self.engine.store

    # -- pull --------------------------------------------------------------------------------------
    def pull(self, base_id: str, table: str, *, view: str | None = None) -> int:
        """Pull a table (or one view's members and order) whole; returns the number of records."""
        started = self.remote.clock()
        self.remote.mark()
        info = self.engine.table_info(base_id, table)
        schema = self._fetch_schema(info, table) if info.schema is None else None
        params: dict[str, Any] = {"pageSize": PULL_PAGE_SIZE, "recordMetadata[]": ["commentCount"]}
        if view:
            params["view"] = view
        records = self.fetch_all(base_id, table, params)
        self.engine.grant(base_id)
        apply.apply_pull(self.store, self.engine.table_info(base_id, table), records, endpoint=self.engine.endpoint,
                         clock=self.engine.clock, started_at=started, schema=schema, view=view)
        if view is None:
            requests, server_start, _last = self.remote.since_mark()
            self.refresher.record_full(info, requests=requests, server_start=server_start)
        return len(records)

    def refresh(self, base_id: str, table: str, *, max_age: float | None = None,
                force_full: bool = False) -> RefreshResult:
        """Bring a table up to date: only what changed since its watermark when that is enough
        (see airtable_cached/sync/refresh.py); skipped if it is younger than ``max_age`` by the time
        this process holds the table's refresh lock."""
        return self.refresher.refresh(base_id, table, max_age=max_age, force_full=force_full)

    def probe(self, base_id: str, table: str) -> bool:
        """Ask Airtable whether this token may read the table (one record, one field at most).
        Raises Airtable's refusal; a transient failure lets the caller go on. Returns whether
        Airtable answered yes."""
        try:
            self.remote.send(base_id, "GET", self.remote.url(base_id, table), kind="probe",
                             params={"maxRecords": 1, "pageSize": 1})
        except RemoteError as exc:
            if exc.status in (401, 403, 404):
                self.refused[base_id] = AirtableResponseError(exc.status, exc.body if isinstance(exc.body, dict) else {})
                raise _as_response_error(exc) from exc
            log.info("could not ask Airtable whether the token may read %s: %s", base_id, exc)
            return False
        except OfflineError:
            return False
        self.refused.pop(base_id, None)
        return True

    def fetch_all(self, base_id: str, table: str, params: dict) -> list[dict]:
        for _attempt in range(3):
            records: list[dict] = []
            page_params = dict(params)
            try:
                while True:
                    page = self.remote.send(base_id, "GET", self.remote.url(base_id, table), kind="pull", params=page_params)
                    records.extend(page.get("records", []))
                    if not page.get("offset"):
                        return records
                    page_params["offset"] = page["offset"]
            except RemoteError as exc:
                if _error_type(exc.body) == "LIST_RECORDS_ITERATOR_NOT_AVAILABLE":
                    continue  # the offset expired mid-pull: start again, never replay it
                raise _as_response_error(exc) from exc
        raise AirtableResponseError.typed(422, "LIST_RECORDS_ITERATOR_NOT_AVAILABLE", "pull kept losing its offset")

    def fetch_schema(self, info: TableInfo) -> dict | None:
        """The table's schema as Airtable has it now (``None``: the token cannot read schemas)."""
        return self._fetch_schema(info, info.table_id or info.name or "")

    def _fetch_schema(self, info: TableInfo, table: str) -> dict | None:
        if info.base_id in self._schema_denied:
            return None
        try:
            body = self.remote.send(
                info.base_id, "GET", self.settings.endpoint_url + f"/v0/meta/bases/{info.base_id}/tables", kind="schema"
            )
        except RemoteError as exc:
            if exc.status in (401, 403, 404):
                self._schema_denied.add(info.base_id)  # a token without schema.bases:read
                return None
            raise _as_response_error(exc) from exc
        for candidate in body.get("tables", []):
            if table in (candidate.get("id"), candidate.get("name")):
                return candidate
        return None

    def list_remote(self, info: TableInfo, table: str, query: ListQuery) -> dict:
        """A list only Airtable can answer exactly: send it, keep the full records it returns."""
        sent_at = self.remote.clock()
        try:
            page = self.list_request(info.base_id, table, query.to_params(), kind="passthrough")
        except RemoteError as exc:
            raise _as_response_error(exc) from exc
        if query.returns_full_records:
            apply.absorb(self.store, self.engine.table_info(info.base_id, table), page.get("records", []),
                         now=self.engine.clock(), sent_at=sent_at)
        return page

    def send_now(self, base_id: str, method: str, url: str, body: Any, *, idempotent: bool) -> Any:
        """Send one write call of the agent as it is (one only Airtable can answer)."""
        try:
            return self.remote.send(base_id, method, url, kind="push", json_body=body, idempotent=idempotent)
        except RemoteError as exc:
            raise _as_response_error(exc) from exc

    def list_request(self, base_id: str, table: str, params: dict[str, Any], *, kind: str) -> Any:
        """List records as pyairtable does: a GET, or ``POST .../listRecords`` with the options in
        a JSON body when the URL would be too long for Airtable (which answers 414)."""
        url = self.remote.url(base_id, table)
        prepared = requests.Request("GET", url, params=params).prepare()
        if len(str(prepared.url)) < MAX_URL_LENGTH:
            return self.remote.send(base_id, "GET", url, kind=kind, params=params)
        body, spare = _list_body(params)
        return self.remote.send(base_id, "POST", self.remote.url(base_id, table, "listRecords"), kind=kind,
                                params=spare, json_body=body)

    def get_remote(self, info: TableInfo, table: str, record_id: str, query: ListQuery) -> dict:
        try:
            return self.remote.send(info.base_id, "GET", self.remote.url(info.base_id, table, record_id),
                                    kind="passthrough", params=query.to_params())
        except RemoteError as exc:
            raise _as_response_error(exc) from exc

    # -- flush -------------------------------------------------------------------------------------
    def _start_flusher(self) -> AutoFlusher | None:
        """The background flusher of this process (a forked child starts its own: threads do not
        survive a fork)."""
        if self.settings.flush != "auto" or self.settings.mode != "cache" or self._closed:
            return None
        with self._flusher_lock:
            if self._flusher is None or self._flusher.pid != os.getpid():
                self._flusher = AutoFlusher(self)
            return self._flusher

    @property
    def flusher(self) -> AutoFlusher | None:
        return self._start_flusher()

    def notify_write(self, records: int = 1) -> None:
        """Queued writes of ``records`` records wait for the background flusher."""
        flusher = self._start_flusher()
        if flusher is not None:
            flusher.wake(records)

    def flush(self, base_id: str | None = None, *, wait_in_process: bool = True) -> FlushResult:
        """Push the queue now (one base, or every base with queued writes). Bases another process
        is flushing are left to it and listed in ``busy``."""
        if self.settings.mode == "offline":
            raise OfflineError("offline mode: flush needs Airtable; the writes stay queued")
        result = FlushResult()
        bases = [base_id] if base_id else self.store.outbox.bases_with_queued(self.engine.endpoint)
        for base in bases:
            result.merge(self._flush_base_if_free(base, wait_in_process=wait_in_process))
        result.pending = self.store.outbox.count_queued()
        return result

    def flush_writes(self, base_id: str, seqs: list[int], *, poll: float = 0.05) -> FlushResult:
        """Flush a base until these writes have had Airtable's answer (write-through). When another
        process is flushing the base it sends them (it claims until the queue is empty): this waits
        for their rows to be acknowledged or dead-lettered, or for the base to be free again, at
        most ``claim_timeout`` seconds."""
        deadline = time.monotonic() + self.settings.claim_timeout
        while True:
            result = self.flush(base_id)
            if not result.busy or not self._still_queued(seqs) or time.monotonic() > deadline:
                return result
            time.sleep(poll)  # real time: another process is at work

    def _still_queued(self, seqs: list[int]) -> bool:
        return self.store.outbox.any_queued(seqs)

    def _flush_base_if_free(self, base_id: str, *, wait_in_process: bool) -> FlushResult:
        """Flush a base unless another flusher is at it. Another process holding the base's lock is
        never waited for: the base is left to it (``FlushResult.busy``). Another thread of this
        process is waited for by an explicit flush (its caller expects the writes sent when it
        returns; that flusher is making progress), not by the background flusher."""
        key = flush_key(self.engine.endpoint, base_id)
        local = _in_process_lock(self.settings.path, key)
        if not local.acquire(blocking=wait_in_process):
            return FlushResult(busy=[base_id])
        try:
            held = self.remote.locks.try_acquire(key)
            if held is None:
                log.info("base %s is being flushed by another process; left to it", base_id)
                return FlushResult(busy=[base_id])
            try:
                return self._flush_base(base_id, held)
            finally:
                self.remote.locks.release(held)
        finally:
            local.release()

    def _flush_base(self, base_id: str, held: HeldLock) -> FlushResult:
        result = FlushResult()
        endpoint = self.engine.endpoint
        lease = self.settings.claim_timeout
        self._confirm_left_unknown(base_id, result)
        with self.store.write() as unit:
            # This flusher holds the base's lock, so whoever claimed its in-flight writes is gone
            # (the kernel released its lock when it died) or was taken over (hung past its lease).
            unit.outbox.release_claims(base_id, endpoint=endpoint)
            self._quarantine(unit, base_id, result)  # once a flush, before anything is claimed
        while True:
            now = self.remote.clock()
            with self.store.write() as unit:
                ops = unit.outbox.claim(base_id, now=now, lease=lease, link_fields=self._base_link_fields(unit, base_id),
                                        endpoint=endpoint)
                # What is claimed is exactly what is sent: its checksums are verified once more. A
                # damaged write is dead-lettered and the claim taken again, so what came after it
                # (a write to a record whose create is now dead) waits as claim() decides.
                if self._quarantine(unit, base_id, result, [op.seq for op in ops]):
                    unit.outbox.unclaim(ops)
                    continue
            if not ops:
                return result
            sends = outbox.plan(ops, self._link_fields({op.tid for op in ops}))
            self._plan = sends  # the creates in doubt among them are counted by reconciliation
            self._settled = set()
            try:
                if not self._send_planned(held, sends, now, lease, result):
                    return result
            except RemoteError as exc:
                self._release(sends, exc, result)
                return result

    def _quarantine(self, unit: Unit, base_id: str, result: FlushResult,
                    seqs: list[int] | None = None) -> set[int]:
        """Writes (of this endpoint's tables) whose stored bytes no longer match their checksum are
        dead-lettered, never sent. Returns their seqs."""
        damaged = unit.outbox.quarantine(base_id, seqs, endpoint=self.engine.endpoint)
        for row in damaged:
            log.error("queued write %s (%s of %s) no longer matches its checksum: dead-lettered, not sent",
                      row["seq"], row["op"], row["record_id"])
            apply.recompute(unit, row["tid"], [row["record_id"]])
            result.failed.append({"op": row["op"], "record_id": row["record_id"], "seqs": [row["seq"]],
                                  "status": None, "error": checksum.quarantine_error(row)["body"], "dead": True})
        return {row["seq"] for row in damaged}

    def _send_planned(self, held: HeldLock, sends: list[outbox.Send], now: float, lease: float,
                      result: FlushResult) -> bool:
        """Send the planned writes batch by batch; ``False`` when another flusher took the base over
        while this one was stalled (it stops at once)."""
        self._drop_cancelled([s for s in sends if s.kind == "none"], result)
        renewed = now
        batches = outbox.chunk_requests(sends)
        for i, batch in enumerate(batches):
            if not self.remote.locks.renew(held):
                log.warning("base %s was taken over by another flusher while this one was stalled; stopping",
                            held.base_id)
                return False
            if self.remote.clock() - renewed > lease / 3:
                # A long flush (penalties, retries) keeps its claims: a flusher that took over
                # from a hung holder leaves them alone while they last.
                renewed = self.remote.clock()
                self._renew([seq for b in batches[i:] for s in b for seq in s.seqs], renewed + lease)
            self._send_batch(batch, result)
        return True

    def _release(self, sends: list[outbox.Send], exc: RemoteError, result: FlushResult) -> None:
        """Airtable could not be reached (or a lookup failed): the writes this claim still holds go
        back to the queue, due again in ``OUTAGE_RETRY`` seconds when Airtable was out of reach (so
        the queue drains as soon as it answers), after the usual backoff otherwise. A create in
        doubt keeps its mark (and its clock bound)."""
        attempts = self.store.outbox.max_attempts([seq for send in sends for seq in send.seqs])
        delay = OUTAGE_RETRY if exc.unreachable else backoff(attempts or 1)
        retry_at = self.remote.clock() + delay
        errors: dict[int, Any] = {}
        for send in sends:
            error: dict[str, Any] = {"status": exc.status, "body": exc.body}
            if send.uncertain:
                error.update(uncertain=True, created_after=send.created_after)
            errors.update(dict.fromkeys(send.seqs, error))
        with self.store.write() as unit:
            released = unit.outbox.release(errors, next_attempt_at=retry_at)
        log.warning("Airtable did not answer (%s): %d write(s) stay queued, tried again in %ss",
                    exc, released, delay)
        result.failed.append({"op": "flush", "status": exc.status, "error": exc.body, "dead": False,
                              "queued": released})

    def _base_link_fields(self, unit: Unit, base_id: str) -> dict[int, frozenset[str]]:
        tids = unit.outbox.tables_with_writes(base_id)
        return {tid: frozenset(pair.field for pair in links.link_pairs(unit.replica, tid)) for tid in tids}

    def _link_fields(self, tids: set[int]) -> dict[int, frozenset[str]]:
        replica = self.store.replica
        return {tid: frozenset(pair.field for pair in links.link_pairs(replica, tid)) for tid in tids}

    def _renew(self, seqs: list[int], until: float) -> None:
        with self.store.write() as unit:
            unit.outbox.renew_claims(seqs, until)

    def _drop_cancelled(self, sends: list[outbox.Send], result: FlushResult) -> None:
        """A create deleted before it was flushed: nothing to send, nothing to keep; unless the
        create was sent before and its answer lost, in which case the record it made is deleted."""
        if not sends:
            return
        doubtful = [s for s in sends if s.uncertain]
        plain = [s for s in sends if not s.uncertain]
        for group in _groups(doubtful):
            self._settle(group, result)
        self._forget_cancelled(plain, result)

    def _forget_cancelled(self, sends: list[outbox.Send], result: FlushResult) -> None:
        if not sends:
            return
        with self.store.write() as unit:
            for send in sends:
                unit.outbox.ack(send.seqs)
                unit.replica.delete_records(send.tid, [send.record_id], only_local=True)
                result.sent.append({"op": "none", "record_id": send.record_id, "seqs": send.seqs})

    def _send_batch(self, batch: list[outbox.Send], result: FlushResult) -> None:
        batch = self._still_claimed(batch)
        if not batch:
            return
        for send in batch:
            self._with_real_ids(send)
        attempt = 0
        while True:
            # Creates a reconciliation already settled (found, dead-lettered) are never sent, even
            # when a later lookup of the same batch failed and the batch is tried again.
            batch = [send for send in batch if id(send) not in self._settled]
            if not batch:
                return
            before_send = self.remote.server_time
            try:
                if batch[0].kind == "create" and batch[0].uncertain and not batch[0].merge_on:
                    batch = self._reconcile_creates(batch, result)
                    if not batch:
                        return
                records = self._request(batch)
                result.requests += 1
            except RemoteError as exc:
                result.requests += 1
                batch = [send for send in batch if id(send) not in self._settled]
                if not batch:
                    return
                if _is_plain_create(batch) and exc.transient and may_have_applied(exc):
                    # The records may exist now although no answer said so: look for them before
                    # sending them again (within this flush after a backoff, or in a later one).
                    for send in batch:
                        if not send.uncertain:  # in doubt already: its bound (or none) stays
                            send.created_after = send.created_after or reconcile.created_after(before_send)
                        send.uncertain = True
                    attempt += 1
                    if attempt < self.settings.retries and not exc.unreachable:
                        self.remote.sleep(self.remote.retry_delay(attempt, exc))
                        continue
                if exc.unreachable:
                    raise  # the whole claim goes back to the queue (see _release)
                self._handle_failure(batch, exc, result)
                return
            self._confirm(batch, records, result)
            return

    def _request(self, batch: list[outbox.Send]) -> list[dict] | None:
        first = batch[0]
        url = self.remote.url(first.base_id, first.table_ref)
        if first.kind == "delete":
            self.remote.send(first.base_id, "DELETE", url, kind="push", params={"records[]": [s.record_id for s in batch]})
            return None
        if first.merge_on and first.kind in ("create", "update"):
            # An upsert: records made by it go by their fields, records it matched by their id.
            body: dict[str, Any] = {
                "records": [{"id": s.record_id, "fields": s.fields} if s.kind == "update" else {"fields": s.fields} for s in batch],
                "typecast": first.typecast, "performUpsert": {"fieldsToMergeOn": first.merge_on},
            }
            return self.remote.send(first.base_id, "PATCH", url, kind="push", json_body=body)["records"]
        if first.kind == "create":
            body = {"records": [{"fields": s.fields} for s in batch], "typecast": first.typecast}
            if first.merge_on:
                body["performUpsert"] = {"fieldsToMergeOn": first.merge_on}
                return self.remote.send(first.base_id, "PATCH", url, kind="push", json_body=body)["records"]
            return self.remote.send(first.base_id, "POST", url, kind="push", json_body=body, idempotent=False)["records"]
        method = "PUT" if first.kind == "replace" else "PATCH"
        body = {"records": [{"id": s.record_id, "fields": s.fields} for s in batch], "typecast": first.typecast}
        return self.remote.send(first.base_id, method, url, kind="push", json_body=body)["records"]

    def _handle_failure(self, batch: list[outbox.Send], exc: RemoteError, result: FlushResult) -> None:
        first = batch[0]
        if first.kind == "delete" and len(batch) > 1 and _is_gone(exc):
            for send in batch:  # find which record is gone already; the others are still deleted
                self._send_batch([send], result)
            return
        if not exc.transient and len(outbox.components(batch)) > 1:
            # Airtable refuses a whole request for one bad record: send call by call to find it.
            for component in outbox.components(batch):
                self._send_batch(component, result)
            return
        error: dict[str, Any] = {"status": exc.status, "body": exc.body}
        doubt = any(s.uncertain for s in batch) and _is_plain_create(batch)
        if doubt:
            error["uncertain"] = True  # the next flush looks for the record before re-sending it
        seqs = [seq for s in batch for seq in s.seqs]
        dead: list[outbox.Op] = []
        with self.store.write() as unit:
            if first.kind == "delete" and _is_gone(exc):
                # Already gone from Airtable: the delete has happened.
                unit.outbox.ack(seqs)
                for s in batch:
                    unit.replica.delete_records(s.tid, [s.record_id])
                result.sent.extend({"op": "delete", "record_id": s.record_id, "seqs": s.seqs} for s in batch)
                return
            if exc.transient:
                attempts = max(unit.outbox.max_attempts(seqs) or 1, 1)
                for send in batch:  # each create in doubt keeps its own clock bound (or none)
                    unit.outbox.retry_later(send.seqs, error={**error, "created_after": send.created_after} if doubt else error,
                                            next_attempt_at=self.remote.clock() + backoff(attempts))
            else:
                dead = self._dead_letter_calls(unit, batch, error)
        if not exc.transient:
            self._report_dead(dead, exc)
        for send in batch:
            result.failed.append({
                "op": send.kind, "record_id": send.record_id, "seqs": send.seqs, "status": exc.status,
                "error": exc.body, "dead": not exc.transient,
            })

    def _with_real_ids(self, send: outbox.Send) -> None:
        """Ids Airtable gave earlier in this flush replace provisional ones in a planned send (the
        queue on disk was remapped; this send was planned before)."""
        if send.kind != "create":
            send.record_id = self.engine.resolve_id(send.record_id)
        mapping = {p: self.engine.resolve_id(p) for p in referenced_provisional_ids(send.fields)}
        if send.fields and any(p != r for p, r in mapping.items()):
            send.fields = {name: replace_ids(value, mapping) for name, value in send.fields.items()}

    def _still_claimed(self, batch: list[outbox.Send]) -> list[outbox.Send]:
        """Sends none of whose writes was dead-lettered meanwhile (with another write of its call)."""
        dead = self.store.outbox.dead_among([seq for s in batch for seq in s.seqs])
        return [s for s in batch if not dead & set(s.seqs)]

    def _dead_letter_calls(self, unit: Unit, batch: list[outbox.Send], error: dict) -> list[outbox.Op]:
        """Airtable refused a write: every write of the calls it belongs to is dead-lettered with it
        (a call is applied whole or not at all), and reads show Airtable's values for them again."""
        dead = unit.outbox.dead_letter_calls({c for s in batch for c in s.calls}, error=error)
        by_table: dict[int, set[str]] = {}
        for op in dead:
            by_table.setdefault(op.tid, set()).add(op.record_id)
        for tid, ids in by_table.items():
            apply.recompute(unit, tid, ids)
            for linked_tid, others in links.targets(unit, tid, ids).items():
                apply.recompute(unit, linked_tid, others)
        return dead

    def _report_dead(self, dead: list[outbox.Op], exc: RemoteError) -> None:
        """A dead letter is logged (never the token: errors are scrubbed when made) and handed to
        ``Api(on_dead_letter=...)``."""
        if not dead:
            return
        tables = sorted({op.table_ref for op in dead})
        ids = sorted({op.record_id for op in dead})
        log.warning("dead-lettered %d write(s) to %s (records %s): Airtable answered %s %s",
                    len(dead), ", ".join(tables), ", ".join(ids), exc.status, dumps(exc.body) if not isinstance(exc.body, str) else exc.body)
        # Select options a refused typecast added to the cached schema never reached Airtable.
        for op in {(op.base_id, op.table_ref): op for op in dead if op.typecast}.values():
            self.engine.refresh_schema(op.base_id, op.table_ref)
        if self.on_dead_letter is None:
            return
        event: DeadLetterDict = {"base_id": dead[0].base_id, "tables": tables, "record_ids": ids, "seqs": [op.seq for op in dead],
                 "status": exc.status, "error": exc.body, "writes": [op.as_dict() for op in dead]}
        try:
            self.on_dead_letter(event)
        except Exception:  # the agent's hook must not break the flush
            log.exception("on_dead_letter raised")

    def _confirm(self, batch: list[outbox.Send], records: list[dict] | None, result: FlushResult) -> None:
        """Airtable took the batch: acknowledge it, run again whole if the database connection dropped
        and the store found nothing of it kept (a PostgreSQL restart or failover, before or during the
        commit: ``airtable_cached/store/postgres/commits.py``), so that the batch is never sent twice.
        A commit whose outcome the store could not learn (``StoreCommitUnknown``: the database did
        not answer in time) ends the flush; the batch and Airtable's answer are kept in memory, and
        this process's next flush of the base acknowledges them before anything else if they are
        still queued (``_confirm_left_unknown``). Only if this process ends first are they taken over
        as a killed flusher's writes are (creates looked for in Airtable before they are sent again;
        an update or delete may be sent again, with the same values)."""
        sent = len(result.sent)
        for attempt in range(CONFIRM_ATTEMPTS):
            try:
                return self._confirm_once(batch, records, result)
            except StoreConnectionLost:
                del result.sent[sent:]
                if attempt == CONFIRM_ATTEMPTS - 1:
                    raise
                self.remote.sleep(0.2 * (attempt + 1))
            except StoreCommitUnknown:
                del result.sent[sent:]
                left = self._unconfirmed.setdefault(batch[0].base_id, [])
                if not any(kept is batch for kept, _ in left):
                    left.append((batch, records))
                raise

    def _confirm_left_unknown(self, base_id: str, result: FlushResult) -> None:
        """Acknowledge the batches whose acknowledgement was left unknown (``_confirm``) and that are
        still queued, with the answer Airtable gave then: they are never sent again. Batches no
        longer queued were acknowledged (the commit was kept, or another flusher settled them)."""
        for entry in list(self._unconfirmed.get(base_id, [])):
            batch, records = entry
            if self.store.outbox.any_queued([seq for send in batch for seq in send.seqs]):
                self._confirm(batch, records, result)
            self._unconfirmed[base_id].remove(entry)

    def _confirm_once(self, batch: list[outbox.Send], records: list[dict] | None, result: FlushResult) -> None:
        now = self.remote.clock()
        recompute: dict[int, set[str]] = {}  # once per table at the end (link lists read the queue)
        with self.store.write() as unit:
            for i, send in enumerate(batch):
                if send.kind == "delete":
                    _add(recompute, links.after_confirm(unit, send.tid, send.record_id,
                                                        _remote_fields(unit.replica, send.tid, send.record_id), None))
                    unit.replica.delete_records(send.tid, [send.record_id])
                    unit.outbox.ack(send.seqs)
                    result.sent.append({"op": "delete", "record_id": send.record_id, "seqs": send.seqs})
                    continue
                assert records is not None  # Airtable answers every create and update with records
                record = records[i]
                before = _remote_fields(unit.replica, send.tid, send.record_id)
                if send.kind == "create":
                    self._adopt(unit, send, record, now)
                else:
                    unit.replica.set_remote_fields(send.tid, send.record_id, record.get("fields", {}), now)
                unit.outbox.ack(send.seqs)
                recompute.setdefault(send.tid, set()).add(record["id"])
                _add(recompute, links.after_confirm(unit, send.tid, record["id"], before, record.get("fields", {})))
                result.sent.append({"op": send.kind, "record_id": send.record_id, "id": record["id"], "seqs": send.seqs})
            for tid, ids in recompute.items():
                apply.recompute(unit, tid, ids)
            # Airtable has new state: which records its views hold, and in what order, is pulled again
            # (views of linked tables too: their inverse link fields changed).
            unit.replica.forget_views({send.tid for send in batch} | set(recompute))

    @staticmethod
    def _adopt(unit: Unit, send: outbox.Send, record: dict, now: float) -> None:
        """Airtable made the record: its real id replaces the provisional one everywhere."""
        provisional, real = send.record_id, record["id"]
        unit.replica.adopt_record_id(send.tid, provisional, real, record.get("fields", {}),
                                     record.get("createdTime") or now_iso(now), now)
        unit.outbox.remap_id(provisional, real, send.tid)
        unit.replica.replace_linked_id(provisional, real)

    def _reconcile_creates(self, batch: list[outbox.Send], result: FlushResult) -> list[outbox.Send]:
        """Creates were sent before but their answer never arrived: look for the records they
        would have made before sending them again (see :mod:`airtable_cached.sync.reconcile`). Returns
        the creates that made nothing and must be sent again."""
        again: list[outbox.Send] = []
        for group in _groups(batch):
            again += self._settle(group, result)
        for send in again:
            send.uncertain = False  # looked for and not found: a plain create again
        return again

    def _settle(self, group: list[outbox.Send], result: FlushResult) -> list[outbox.Send]:
        """Settle identical creates in doubt (some perhaps cancelled since); returns those to resend."""
        key = reconcile.group_key(group[0])
        in_doubt = sum(1 for s in self._plan if s.uncertain and reconcile.group_key(s) == key)
        candidates = self._candidates(group)
        outcome = reconcile.settle(group, candidates, max(in_doubt, len(group)))
        for send, record in outcome.adopt:
            self._confirm([send], [record], result)
        if outcome.delete:
            first = group[0]
            ids = [r["id"] for r in outcome.delete]
            for i in range(0, len(ids), outbox.MAX_RECORDS_PER_REQUEST):
                try:
                    self.remote.send(first.base_id, "DELETE", self.remote.url(first.base_id, first.table_ref),
                                     kind="push", params={"records[]": ids[i : i + outbox.MAX_RECORDS_PER_REQUEST]})
                except RemoteError as exc:
                    if exc.status != 404 and _error_type(exc.body) != "ROW_DOES_NOT_EXIST":
                        raise
                result.requests += 1
            log.info("deleted %d record(s) made by creates whose answer was lost and that were deleted since", len(ids))
        self._forget_cancelled(outcome.drop, result)
        if outcome.uncertain:
            self._dead_letter_uncertain(outcome.uncertain, candidates, result)
        for send in group:
            send.uncertain = any(send is again for again in outcome.resend)
            if not send.uncertain:
                self._settled.add(id(send))
        return outcome.resend

    def _dead_letter_uncertain(self, sends: list[outbox.Send], candidates: list[dict], result: FlushResult) -> None:
        """More identical records appeared than creates were in doubt: someone else made some, and
        nothing tells which are this queue's. Sending again could duplicate; adopting could take
        another's record. The operator decides (``queue retry`` looks again, ``queue drop`` forgets)."""
        ids = sorted(r["id"] for r in candidates)
        body = {"error": {"type": "UNCERTAIN_CREATE", "message": (
            f"the answer to this create was lost and {len(ids)} identical records exist in Airtable"
            f" for {len(sends)} create(s) in doubt; not sent again to avoid a duplicate"
        ), "candidates": ids}}
        log.warning("dead-lettered %d create(s) as uncertain: %d identical records in Airtable (%s)",
                    len(sends), len(ids), ", ".join(ids[:10]))
        with self.store.write() as unit:
            for send in sends:
                # Each keeps its own clock bound (or none): ``queue retry`` looks for it again with it.
                error = {"status": None, "uncertain": True, "created_after": send.created_after, "body": body}
                unit.outbox.dead_letter(send.seqs, error=error)
                apply.recompute(unit, send.tid, [send.record_id])
                result.failed.append({"op": send.kind, "record_id": send.record_id, "seqs": send.seqs, "status": None,
                                      "error": error["body"], "dead": True})

    def _candidates(self, group: list[outbox.Send]) -> list[dict]:
        """Records in Airtable that only these (identical) creates can have made."""
        first = group[0]
        info = self.engine.table_info(first.base_id, first.table_ref)
        # One create in doubt without a bound (left in flight by a dead flusher): none for the group.
        bounds = [s.created_after for s in group if s.created_after]
        after = min(bounds) if bounds and len(bounds) == len(group) else None
        schema_fields = info.fields_by_name if info is not None else {}
        formula = reconcile.lookup_formula(first.fields or {}, schema_fields, typecast=first.typecast, after=after)
        try:
            found = self._lookup(first, formula)
        except RemoteError as exc:
            if exc.status != 422 or not formula:
                raise
            # Airtable refused the formula (a field renamed, a type it compares otherwise): the
            # time bound alone, or the whole table, still holds every candidate.
            log.info("lost-create lookup formula refused (%s); looking more widely", exc)
            found = self._lookup(first, reconcile.lookup_formula({}, {}, typecast=False, after=after))
        queued_at = self.store.outbox.first_queued_at([seq for s in group for seq in s.seqs])
        # Not theirs: a record another create already adopted, or one the cache saw before these
        # creates were queued. A record a pull brought in since (a lost create's, pulled first) is.
        taken = self.store.outbox.real_ids(first.tid)
        older = self.store.replica.remote_ids_seen_by(first.tid, queued_at if queued_at is not None else float("inf"))
        return [r for r in found if r["id"] not in taken and r["id"] not in older]

    def _lookup(self, send: outbox.Send, formula: str) -> list[dict]:
        params: dict[str, Any] = {"pageSize": PULL_PAGE_SIZE}
        if formula:
            params["filterByFormula"] = formula
        records: list[dict] = []
        while True:
            page = self.list_request(send.base_id, send.table_ref, params, kind="reconcile")
            records += page.get("records", [])
            if not page.get("offset"):
                return records
            params["offset"] = page["offset"]

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float | None = None) -> bool:
        """Flush what is queued (auto flush only; at most ``timeout``, default ``exit_timeout``
        seconds), stop the background flusher, close the sessions, their sockets and the pacer's
        diskcache. Returns whether the queue drained in time. Idempotent."""
        drained = True
        flusher = self._flusher
        self._closed = True
        # Background refreshes and probes use this sync's sessions and the store's connections:
        # they finish before those are closed (a connection closed under a thread using it can
        # crash the interpreter).
        self.engine.wait_for_refreshes(self.settings.exit_timeout if timeout is None else timeout)
        if flusher is not None and flusher.pid == os.getpid():
            drained = flusher.drain(timeout)
            self._flusher = None
        self.remote.close()
        return drained


def _list_body(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Query parameters of a list as the JSON body of ``POST .../listRecords`` (as pyairtable's
    ``options_to_json_and_params``); ``timeZone`` and ``userLocale`` stay in the query string."""
    body: dict[str, Any] = {}
    spare: dict[str, Any] = {}
    sort: dict[int, dict[str, str]] = {}
    for name, value in params.items():
        found = re.fullmatch(r"sort\[(\d+)\]\[(field|direction)\]", name)
        if found:
            sort.setdefault(int(found.group(1)), {})[found.group(2)] = value
        elif name in ("timeZone", "userLocale"):
            spare[name] = value
        elif name.endswith("[]"):
            body[name[:-2]] = list(value)
        elif name == "returnFieldsByFieldId":
            body[name] = bool(value)
        else:
            body[name] = value
    if sort:
        body["sort"] = [sort[i] for i in sorted(sort)]
    return body, spare


def _groups(sends: list[outbox.Send]) -> list[list[outbox.Send]]:
    """Sends split into groups of identical creates (same table, same fields), in order."""
    groups: dict[tuple, list[outbox.Send]] = {}
    for send in sends:
        groups.setdefault(reconcile.group_key(send), []).append(send)
    return list(groups.values())


def _is_plain_create(batch: list[outbox.Send]) -> bool:
    """A POST of new records: not idempotent (an upsert on key fields is)."""
    return bool(batch) and batch[0].kind == "create" and not batch[0].merge_on


def _remote_fields(replica: Replica, tid: int, record_id: str) -> dict | None:
    """Airtable's last known fields of a record (None: not cached, or only local)."""
    state = replica.remote_state(tid, record_id)
    return None if state is None else state[0]


def _add(into: dict[int, set[str]], more: dict[int, set[str]]) -> None:
    for tid, ids in more.items():
        into.setdefault(tid, set()).update(ids)


def _is_gone(exc: RemoteError) -> bool:
    return exc.status == 404 or _error_type(exc.body) == "ROW_DOES_NOT_EXIST"


def _error_type(body: Any) -> str | None:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return error.get("type")
        return error
    return None


def _as_response_error(exc: RemoteError) -> Exception:
    if exc.status is None:
        return requests.ConnectionError(str(exc))
    return AirtableResponseError(exc.status, exc.body if isinstance(exc.body, dict) else {"error": exc.body})


# -- automatic flushing ----------------------------------------------------------------------------


class AutoFlusher:
    """Flushes in a background thread after writes, and once more at interpreter exit with a
    bounded wait. A flush cut short by exit loses nothing: the base's flush lock dies with the
    process and the next flusher sends what was in flight.

    A write wakes the thread, which then waits ``batch_delay`` seconds for more writes to share
    its requests, and sends everything queued by then: fewer requests, at the cost of writes
    reaching Airtable up to that much later. (Waiting only for a quiet moment, as this did before,
    sends one request per write for an agent that writes every few seconds.)"""

    PERIOD = 15.0

    def __init__(self, sync: Sync):
        self._sync = weakref.ref(sync)
        self._batch_delay = sync.settings.batch_delay
        self._exit_timeout = sync.settings.exit_timeout
        self._cond = threading.Condition()
        self._writes = 0  # writes since the last flush began
        self._stopping = False
        self._busy = threading.Lock()  # held while this flusher flushes (the thread or the exit drain)
        self.pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="airtable_cached-flush", daemon=True)
        self._thread.start()
        _register_exit(self)

    @property
    def waiting_writes(self) -> int:
        """Writes the thread has been told of and not yet flushed."""
        return self._writes

    def wake(self, records: int = 1) -> None:
        with self._cond:
            self._writes += max(1, records)
            self._cond.notify()

    def _run(self) -> None:
        try:
            # At once on start: what a previous run left (a crash, an exit cut short) goes now,
            # not after the first idle period.
            self._flush_once()
            while self._wait_for_work():
                self._flush_once()
        finally:
            self._close_thread_resources()

    def _wait_for_work(self) -> bool:
        """Block until a flush is due; ``False`` when stopped."""
        with self._cond:
            # Until a write, or until the next queued write is due (after an outage: seconds).
            self._cond.wait_for(lambda: self._stopping or self._writes > 0, timeout=self._idle_wait())
            if self._writes:
                # Gather the writes that follow for batch_delay (real time: the thread waits).
                self._cond.wait_for(lambda: self._stopping, timeout=self._batch_delay)
            if self._stopping:
                return False
            self._writes = 0
            return True

    def _idle_wait(self) -> float:
        """Until the next queued write is due (after an outage: seconds), at most ``PERIOD``."""
        sync = self._sync()
        if sync is None:
            return 0.0
        try:
            due = sync.store.outbox.next_due(endpoint=sync.engine.endpoint)
        except Exception as exc:  # noqa: BLE001 - any store's (SQLite's, PostgreSQL's): the thread must live on
            log.warning("background flush could not read the queue (tried again in %.0f s): %s", self.PERIOD, exc)
            return self.PERIOD
        if due is None:
            return self.PERIOD
        # At least a second: writes that are due but blocked (behind a dead create) must not spin.
        return min(self.PERIOD, max(1.0, due - sync.remote.clock()))

    def _flush_once(self) -> None:
        sync = self._sync()
        if sync is None:
            self.stop()
            return
        with self._busy:
            try:
                if sync.store.outbox.has_ready(sync.remote.clock(), endpoint=sync.engine.endpoint):
                    sync.flush(wait_in_process=False)
            except Exception as exc:  # noqa: BLE001 - the queue keeps the writes; the next round tries again
                log.warning("background flush failed: %s", exc)

    def _drain_once(self) -> None:
        try:
            self._flush_once()
        finally:
            self._close_thread_resources()

    def _close_thread_resources(self) -> None:
        """This thread's SQLite connections (cache file, pacer) are its own to close."""
        sync = self._sync()
        if sync is not None:
            sync.store.close()
            sync.remote.pacer.close()
            sync.remote.close_thread_session()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self, timeout: float | None) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def drain(self, timeout: float | None = None) -> bool:
        """Stop the thread, let a flush in progress finish, then flush once more, waiting at most
        ``timeout`` (default ``exit_timeout``) seconds in all. Returns whether the queue drained in
        time; if not, what is left stays queued (and in flight, for the next flusher to take)."""
        timeout = self._exit_timeout if timeout is None else timeout
        drained = self.drain_until(time.monotonic() + timeout)
        if not drained:
            log.warning("the queue did not drain within %ss; the next run flushes the rest", timeout)
        return drained

    def drain_until(self, deadline: float) -> bool:
        """:meth:`drain` with a deadline (``time.monotonic()``); does not log."""
        if self.pid != os.getpid():
            return True  # a parent's flusher: the parent drains it
        self.stop()
        worker = threading.Thread(target=self._drain_once, name="airtable_cached-drain", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        self.join(max(0.0, deadline - time.monotonic()))
        return not worker.is_alive()


_exit_flushers: weakref.WeakSet[AutoFlusher] = weakref.WeakSet()


_exit_hook_installed = False


def _register_exit(flusher: AutoFlusher) -> None:
    global _exit_hook_installed
    if not _exit_hook_installed:
        atexit.register(drain_all)
        _exit_hook_installed = True
    _exit_flushers.add(flusher)


def drain_all(timeout: float | None = None) -> bool:
    """At exit: drain every flusher of this process at once, waiting at most ``timeout`` (default:
    the longest ``exit_timeout`` among them) in all, not once per flusher. Returns whether all
    drained."""
    flushers = [f for f in list(_exit_flushers) if f.pid == os.getpid()]
    if not flushers:
        return True
    if timeout is None:
        timeout = max(f._exit_timeout for f in flushers)
    deadline = time.monotonic() + timeout
    done: list[bool] = []
    drains = [threading.Thread(target=lambda f=f: done.append(f.drain_until(deadline)), daemon=True) for f in flushers]
    for thread in drains:
        thread.start()
    for thread in drains:
        thread.join(max(0.0, deadline - time.monotonic()) + 0.05)
    drained = len(done) == len(flushers) and all(done)
    if not drained:
        log.warning("the queue did not drain within %ss; the next run flushes the rest", timeout)
    return drained
