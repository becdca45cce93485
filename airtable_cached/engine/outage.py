"""When Airtable cannot be reached: serve what the cache holds, and never make a write wait.

* stale-if-error (as HTTP caches do, RFC 5861): a read of a table whose max age has passed pulls it
  first; if Airtable cannot be reached (refused, no answer within ``network_timeout``, a 5xx or a
  429), the cached records are served however old, with a logged warning and the ``read.stale``
  statistic. A table never pulled has nothing to serve: the error is raised.
* a write is queued at once: the check that this process's token may use a base it has not read
  yet (one small request) runs in the background. Its refusal is what the next read raises, and
  the queued writes are refused by Airtable at flush (dead letters with Airtable's answer).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import requests

from airtable_cached.errors import AirtableResponseError, OfflineError, RemoteError

if TYPE_CHECKING:
    from airtable_cached.config import Settings
    from airtable_cached.engine.ports import SyncHandle
    from airtable_cached.engine.stats import StatsRecorder
    from airtable_cached.engine.tables import TableInfo
    from airtable_cached.store.contract import Store

log = logging.getLogger("airtable_cached")


class Access(Protocol):
    """What serving through an outage needs of the engine's freshness keeper (``engine/access.py``)."""

    store: Store
    settings: Settings
    sync: SyncHandle
    stats: StatsRecorder
    authorized: set[str]

    def clock(self) -> float: ...

    def authorize(self, info: TableInfo, table: str) -> None: ...

    def start_background(self, key: object, target: Callable[[], None], name: str) -> None: ...

_probing: set[tuple[int, str]] = set()
_probing_lock = threading.Lock()


def cannot_reach(exc: BaseException) -> bool:
    """Whether a failed pull means Airtable is out of reach (rather than refusing the request)."""
    if isinstance(exc, OfflineError):
        return False
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    if isinstance(exc, RemoteError):
        return exc.transient
    if isinstance(exc, AirtableResponseError):
        return exc.status == 429 or exc.status >= 500
    return False


#: Seconds after Airtable could not be reached during which stale reads of that base serve the
#: cache without trying again (each try may cost a whole network timeout).
QUIET_AFTER_FAILURE = 5.0

_unreachable_since: dict[tuple[int, str], float] = {}


def pull_or_serve_stale(engine: Access, info: TableInfo, table: str) -> bool:
    """Refresh a stale table (incrementally where it can); returns False when the cache is served
    stale instead (Airtable out of reach now or moments ago). A table never pulled, or a refusal,
    raises."""
    return _pull_or_stale(engine, info, table, info.pulled_at is not None,
                          lambda: engine.sync.require().refresh(info.base_id, table, max_age=engine.settings.max_age))


def pull_view_or_serve_stale(engine: Access, info: TableInfo, table: str, view: str) -> None:
    """Pull a view that is stale or was never pulled; a view pulled before is served stale when
    Airtable cannot be reached (its members and order as last seen)."""
    pulled_before = engine.store.replica.view_pulled_at(info.tid, view) is not None
    _pull_or_stale(engine, info, f"{table} (view {view})", pulled_before,
                   lambda: engine.sync.require().pull(info.base_id, table, view=view))


def _pull_or_stale(engine: Access, info: TableInfo, label: str, cached: bool, pull: Callable[[], object]) -> bool:
    key = (id(engine), info.base_id)
    failed_at = _unreachable_since.get(key)
    if cached and failed_at is not None and engine.clock() - failed_at < QUIET_AFTER_FAILURE:
        serve_stale(engine, info, label, "it did not answer moments ago")
        return False
    try:
        pull()
    except Exception as exc:  # noqa: BLE001 - raised again unless Airtable is out of reach
        if not cannot_reach(exc):
            raise
        _unreachable_since[key] = engine.clock()
        if not cached:
            raise
        serve_stale(engine, info, label, exc)
        return False
    _unreachable_since.pop(key, None)
    return True


def serve_stale(engine: Access, info: TableInfo, table: str, why: object) -> None:
    """Log and count a read served from a stale table because Airtable could not be reached."""
    age = engine.clock() - (info.pulled_at or 0.0)
    log.warning("Airtable cannot be reached (%s): serving table %r of base %s from the cache, last pulled %.0f s ago",
                why, table, info.base_id, age)
    engine.stats.count(info.tid, "read.stale")


def authorize_in_background(engine: Access, info: TableInfo, table: str) -> None:
    """Ask Airtable whether this token may use the base, without making the write wait for it."""
    sync = engine.sync.sync
    if info.base_id in engine.authorized or engine.settings.mode == "offline" or sync is None:
        return
    refused = sync.refused.get(info.base_id)
    if refused is not None:
        raise AirtableResponseError(refused.status, refused.body)
    key = (id(engine), info.base_id)
    with _probing_lock:
        if key in _probing:
            return
        _probing.add(key)

    def probe() -> None:
        try:
            engine.authorize(info, table)
        except Exception as exc:  # noqa: BLE001 - a refusal is raised again by the next read
            log.warning("token may not use base %s: %s (its queued writes will be refused at flush)",
                        info.base_id, exc)
        finally:
            with _probing_lock:
                _probing.discard(key)

    engine.start_background(("probe", info.base_id, id(probe)), probe, "airtable_cached-probe")
