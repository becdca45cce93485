"""The long-running sync process (``airtable-cached serve-sync``).

One loop, one thread: pull the tables that are due, flush the queue, take the daily backup (with
rotation) and prune the sync log, then wait. Agents keep writing into the queue meanwhile; this
process is the one that sends it, so agents can run with ``AIRTABLE_CACHED_FLUSH=manual``.

Shutdown: the first SIGTERM/SIGINT asks the loop to stop after the current step (a flush finishes
the batch it is sending); if that takes longer than ``stop_grace`` seconds, or a second signal
arrives, the next wait inside a request (pacing, retry back-off) abandons the flush. Nothing is
lost either way: a write leaves the queue only after Airtable confirmed it, and a claimed write
whose sender stopped is re-sent (a create is reconciled first) once its claim expires.

The clock, the wait and the stop event are injectable, and ``max_cycles`` bounds the loop, so
tests drive it without sleeping.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from airtable_cached.config import Settings
from airtable_cached.errors import AirtableCachedError
from airtable_cached.ops import maintenance
from airtable_cached.store.sqlite import Store

log = logging.getLogger("airtable_cached.ops.serve")

DAY = 86400.0


class _Abandon(BaseException):
    """Raised inside a request's wait when the process must stop now (not an Exception, so no
    retry layer swallows it)."""


@dataclass
class ServeStats:
    cycles: int = 0
    pulls: int = 0
    pull_errors: int = 0
    flushes: int = 0
    sent: int = 0
    failed: int = 0
    backups: list[str] = field(default_factory=list)
    abandoned: bool = False


class SyncService:
    """Pull on schedule, flush continuously, back up daily. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        token: str,
        *,
        tables: Iterable[str] = (),
        pull_every: float | None = None,
        flush_every: float = 1.0,
        backup_every: float | None = DAY,
        backup_keep: int = 7,
        backup_dir: str | Path | None = None,
        keep_log_days: float | None = 30.0,
        stop_grace: float = 5.0,
        clock: Callable[[], float] = time.time,
        wait: Callable[[float], object] | None = None,
        stop_event: threading.Event | None = None,
    ):
        if not token:
            raise AirtableCachedError("serve-sync needs an Airtable token: --token or AIRTABLE_API_KEY")
        from airtable_cached.runtime import open_runtime, open_store

        self.settings = settings.replace(flush="manual")
        self.tables = [self._parse_table(t) for t in tables]
        # Half the max age by default: a table is refreshed before any agent could find it stale.
        self.pull_every = settings.max_age / 2 if pull_every is None else pull_every
        self.flush_every = flush_every
        self.backup_every = backup_every
        self.backup_keep = backup_keep
        self.backup_dir = Path(backup_dir) if backup_dir else maintenance.backup_dir_for(settings.path)
        self.keep_log_days = keep_log_days
        self.stop_grace = stop_grace
        self.clock = clock
        self.stop_event = stop_event or threading.Event()
        self._wait = wait or self.stop_event.wait
        self._stop_requested_at: float | None = None
        self._abandon = False
        self.runtime = open_runtime(self.settings, token, store=open_store(self.settings.store_location), clock=clock,
                                    sleep=self._sleep)
        self.store, self.engine, self.sync = self.runtime.store, self.runtime.engine, self.runtime.sync
        self.stats = ServeStats()
        self._next_pull: dict[tuple[str, str], float] = {}
        self._last_backup = self._newest_backup_time()

    @staticmethod
    def _parse_table(spec: str) -> tuple[str, str]:
        base, sep, table = spec.partition("/")
        if not sep or not base or not table:
            raise AirtableCachedError(f"--table expects BASE/TABLE, got {spec!r}")
        return base, table

    # -- stopping ------------------------------------------------------------------------------
    def request_stop(self, *_args: object) -> None:
        """Ask the loop to stop (signal handler). A second request abandons the current flush."""
        if self._stop_requested_at is not None:
            self._abandon = True
        else:
            self._stop_requested_at = self.clock()
            log.info("stopping: finishing the current step (the queue stays on disk)")
        self.stop_event.set()

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def _must_abandon(self) -> bool:
        if self._abandon:
            return True
        return self._stop_requested_at is not None and self.clock() - self._stop_requested_at > self.stop_grace

    def _sleep(self, seconds: float) -> None:
        """The sleep used by pacing and retries: abandons the request once stopping is overdue."""
        end = self.clock() + max(0.0, seconds)
        while True:
            if self.stopping and self._must_abandon():
                raise _Abandon()
            remaining = end - self.clock()
            if remaining <= 0:
                return
            if self.stopping:
                time.sleep(min(remaining, 0.05))  # the event is set: wait() would not wait
            else:
                self._wait(min(remaining, 0.5))

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, max_cycles: int | None = None) -> ServeStats:
        log.info("serve-sync: database %s, pulling every %gs, flushing every %gs", self.store.location,
                 self.pull_every, self.flush_every)
        if self.settings.url is not None and self.backup_every:
            log.info("no backups taken here: back a PostgreSQL cache up with pg_dump (the sync log is still pruned)")
        try:
            while not self.stopping:
                self.cycle()
                if max_cycles is not None and self.stats.cycles >= max_cycles:
                    break
                if not self.stopping:
                    self._wait(self.flush_every)
        except _Abandon:
            self.stats.abandoned = True
            log.warning("stopped in the middle of a request; its writes stay queued and are re-sent later")
        finally:
            self.engine.stats.write()
        log.info("serve-sync stopped: %d sent, %d failed, %d pulls", self.stats.sent, self.stats.failed, self.stats.pulls)
        return self.stats

    def cycle(self) -> None:
        self.stats.cycles += 1
        for step in (self.pull_due, self.flush, self.backup_if_due):
            if self.stopping:
                return
            try:
                step()
            except _Abandon:
                raise
            except Exception as exc:  # noqa: BLE001 - one failing step never stops the others
                log.warning("%s failed: %s", step.__name__, exc)

    def targets(self) -> list[tuple[str, str]]:
        if self.tables:
            return list(self.tables)
        rows = self.store.replica.endpoint_tables(self.engine.endpoint)
        return [(r["base_id"], r["table_id"] or r["name"]) for r in rows if r["table_id"] or r["name"]]

    def pull_due(self) -> None:
        now = self.clock()
        for base_id, table in self.targets():
            if self.stopping:
                return
            key = (base_id, table)
            due = self._next_pull.get(key)
            if due is None:
                info = self.engine.table_info(base_id, table)
                due = (info.pulled_at + self.pull_every) if info.pulled_at is not None else now
            if due > now:
                self._next_pull[key] = due
                continue
            try:
                # Incremental when the table's watermark allows it: agents sharing the file find it
                # fresh without ever waiting for a pull themselves.
                result = self.sync.refresh(base_id, table)
                self.stats.pulls += 1
                log.info("refreshed %s/%s (%s): %d records changed, %d deleted, %d requests", base_id, table,
                         result.kind, result.changed, result.deleted, result.requests)
            except _Abandon:
                raise
            except Exception as exc:  # noqa: BLE001 - logged or re-raised
                self.stats.pull_errors += 1
                log.warning("pull of %s/%s failed: %s", base_id, table, exc)
            self._next_pull[key] = self.clock() + self.pull_every

    def flush(self) -> None:
        if not self.store.outbox.has_ready(self.clock(), endpoint=self.engine.endpoint):
            return
        result = self.sync.flush()
        self.stats.flushes += 1
        self.stats.sent += len(result.sent)
        self.stats.failed += len(result.failed)
        if result.sent or result.failed:
            log.info("flushed: %d sent, %d failed, %d left", len(result.sent), len(result.failed), result.pending)

    def _newest_backup_time(self) -> float | None:
        if self.settings.url is not None:
            return None
        found = maintenance.list_backups(self.settings.path, self.backup_dir)
        return found[-1].stat().st_mtime if found else None

    def backup_if_due(self) -> None:
        if not self.backup_every:
            return
        if self.settings.url is not None:  # PostgreSQL: backups are pg_dump's; the log is still pruned
            self._prune_if_due(self.backup_every)
            return
        now = self.clock()
        if self._last_backup is not None and now - self._last_backup < self.backup_every:
            return
        assert isinstance(self.store, Store)  # PostgreSQL: returned above
        path = maintenance.backup(self.store, self.backup_dir, keep=self.backup_keep)
        self._last_backup = now
        self.stats.backups.append(str(path))
        log.info("backup written: %s", path)
        if self.keep_log_days:
            maintenance.prune_logs(self.store, self.keep_log_days, now=now)

    def _prune_if_due(self, every: float) -> None:
        now = self.clock()
        if self._last_backup is not None and now - self._last_backup < every:
            return
        self._last_backup = now
        if self.keep_log_days:
            maintenance.prune_logs(self.store, self.keep_log_days, now=now)

    def close(self) -> None:
        self.runtime.close()


def serve(settings: Settings, token: str, **options) -> ServeStats:
    """Run the sync process until SIGTERM/SIGINT (the CLI's ``serve-sync``)."""
    max_cycles = options.pop("max_cycles", None)
    service = SyncService(settings, token, **options)
    service.install_signal_handlers()
    try:
        return service.run(max_cycles=max_cycles)
    finally:
        service.close()
