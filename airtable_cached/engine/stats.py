"""Read statistics, counted in memory and written out now and then (cheap enough to leave on)."""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable

from airtable_cached.errors import DiskFullError
from airtable_cached.store.contract import Store

log = logging.getLogger("airtable_cached")

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
            self._write(counts, latencies)
        except DiskFullError:
            raise
        except Exception as exc:  # noqa: BLE001 - statistics must never fail a read
            log.debug("could not write statistics: %s", exc)

    def _write(self, counts: dict[tuple[int, str], list[float]], latencies: list[tuple[int, str, float]]) -> None:
        before = None if self.store.in_write() else self.store.change_marker()
        with self.store.write() as unit:
            unit.replica.add_statistics({key: (int(c), ms) for key, (c, ms) in counts.items()}, latencies)
        if before is not None and self.on_written is not None:
            self.on_written(before)
