"""``pull``, ``flush`` and ``reseed``: the operator commands that talk to Airtable.

They take the token as an argument and keep it only inside the
:class:`~airtable_cached.sync.core.Sync` they build.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

from airtable_cached.config import Settings
from airtable_cached.ops.errors import MaintenanceError
from airtable_cached.ops.reset import reset, resolve_tables
from airtable_cached.rules.policy import TableState
from airtable_cached.runtime import open_runtime
from airtable_cached.store.sqlite import Store
from airtable_cached.sync.core import Sync


@contextlib.contextmanager
def _sync(store: Store, settings: Settings, token: str, clock: Callable[[], float] | None = None,
          sleep: Callable[[float], None] | None = None) -> Iterator[Sync]:
    """A sync (flushing only when asked) on ``store`` for the command, closed when it is done."""
    if not token:
        raise MaintenanceError("no Airtable token: pass --token or set AIRTABLE_API_KEY")
    with open_runtime(settings.replace(flush="manual"), token, store=store, clock=clock, sleep=sleep) as runtime:
        yield runtime.sync


def _table_ref(row: Mapping) -> str:
    return row["table_id"] or row["name"]


def pull(store: Store, settings: Settings, token: str, base: str | None = None, table: str | None = None,
         *, force: bool = False, on_page: Callable[[str, int], None] | None = None,
         clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None) -> list[dict]:
    """Pull tables into the cache: one table, every table of a base (those cached, or all of the
    base's tables when its schema can be read), or every cached table. Fresh tables are skipped
    unless ``force``. ``on_page(table, records)`` is called per page received (for progress bars)."""
    with _sync(store, settings, token, clock, sleep) as sync:
        now = sync.remote.clock()
        targets = _pull_targets(store, sync, settings, base, table)
        if on_page is not None:
            _report_pages(sync, on_page)
        return [_pull_one(sync, settings, base_id, ref, force, now) for base_id, ref in targets]


def _pull_targets(store: Store, sync, settings: Settings, base: str | None, table: str | None) -> list[tuple[str, str]]:
    """(base, table) to pull: the one named, the cached tables (of a base), or a base's every table."""
    if base and table:
        return [(base, table)]
    targets = [(r["base_id"], _table_ref(r)) for r in store.replica.table_rows(base) if _table_ref(r)]
    if base and not targets:
        body = sync.remote.send(base, "GET", settings.endpoint_url + f"/v0/meta/bases/{base}/tables", kind="schema")
        targets = [(base, t["id"]) for t in body.get("tables", [])]
    return targets


def _report_pages(sync, on_page: Callable[[str, int], None]) -> None:
    """Call ``on_page(table, records)`` for every page of records the sync receives."""
    original = sync.remote.send

    def counting_send(base_id, method, url, *, kind, **kwargs):
        answer = original(base_id, method, url, kind=kind, **kwargs)
        if kind == "pull" and isinstance(answer, dict):
            on_page(url.rsplit("/", 1)[-1], len(answer.get("records", [])))
        return answer

    sync.remote.send = counting_send


def _pull_one(sync, settings: Settings, base_id: str, ref: str, force: bool, now: float) -> dict:
    info = sync.engine.table_info(base_id, ref)
    if TableState(info.pulled_at, settings.max_age).is_fresh(now) and not force:
        return {"base_id": base_id, "table": info.name or ref, "pulled": False, "records": None}
    if force:
        count, kind = sync.pull(base_id, ref), "full"
    else:  # only what changed since the table's watermark, when that is enough
        refreshed = sync.refresh(base_id, ref)
        count, kind = refreshed.changed, refreshed.kind
    info = sync.engine.table_info(base_id, ref)
    return {"base_id": base_id, "table": info.name or ref, "pulled": True, "records": count, "kind": kind}


def flush(store: Store, settings: Settings, token: str, base: str | None = None, *,
          clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None):
    """Push the queued writes now; returns the :class:`~airtable_cached.sync.core.FlushResult`."""
    with _sync(store, settings, token, clock, sleep) as sync:
        return sync.flush(base)


def reseed(store: Store, settings: Settings, token: str, table: str | None = None, *,
           include_queue: bool = False, on_page: Callable[[str, int], None] | None = None,
           clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None) -> dict:
    """Reset (one table or all), then pull again."""
    if not token:
        raise MaintenanceError("no Airtable token: pass --token or set AIRTABLE_API_KEY")
    rows = [store.replica.table(tid) for tid in resolve_tables(store.replica, table)]
    targets = [(r["base_id"], _table_ref(r)) for r in rows if r is not None and _table_ref(r)]
    dropped = reset(store, table, include_queue=include_queue)
    pulled = []
    for base_id, ref in targets:
        pulled += pull(store, settings, token, base_id, ref, force=True, on_page=on_page, clock=clock, sleep=sleep)
    return {"reset": dropped, "pulled": pulled}
