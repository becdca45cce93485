"""The one place that builds and closes a cache: Store + Engine + Sync, wired together.

Every front-end (``api``, ``http``, ``run``) and every command (``ops``) gets its parts here:

* :func:`open_store` — the process's one store for a location (a SQLite file path);
* :func:`shared_runtime` — an engine and its sync, shared per (settings, token) in a process, so that
  an ORM model building a new ``Api`` on every access does not start a flusher thread each time;
* :func:`open_runtime` — an engine and its sync for one command (``flush``, ``pull``, ``serve-sync``);
* :func:`local_engine` — an engine without a sync, for commands that only read or repair the cache.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from airtable_cached.config import Settings
from airtable_cached.engine import Engine
from airtable_cached.store.sqlite import Store
from airtable_cached.sync.core import Sync

__all__ = ["Runtime", "local_engine", "open_runtime", "open_store", "shared_runtime"]

_stores: dict[str, Store] = {}
_runtimes: dict[tuple, Runtime] = {}
_registry_lock = threading.Lock()


def open_store(location: str | os.PathLike[str]) -> Store:
    """The process's one store for a location (today a SQLite file path)."""
    from airtable_cached.store.sqlite.replica import register_sql_functions

    key = str(location)
    with _registry_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = Store(location, on_connect=register_sql_functions)
        return store


class Runtime:
    """An engine and its sync (with the background flusher). A shared runtime counts the ``Api``
    objects using it; the last one to close it closes it. Unpacks as ``engine, sync``."""

    def __init__(self, key: tuple | None, engine: Engine, sync: Sync):
        self.key = key
        self.engine = engine
        self.sync = sync
        self.users = 0
        self._closed = False

    @property
    def store(self) -> Store:
        return self.engine.store

    @property
    def closed(self) -> bool:
        """Closed, or its sync was (``sync.close()`` called directly): never handed out again."""
        return self._closed or self.sync.closed

    def __iter__(self) -> Iterator[Any]:
        return iter((self.engine, self.sync))

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def add_user(self) -> None:
        with _registry_lock:
            self.users += 1

    def drop_user(self) -> bool:
        """One user fewer; whether it was the last."""
        with _registry_lock:
            self.users -= 1
            return self.users <= 0

    def close(self, timeout: float | None = None) -> bool:
        """Flush (auto flush: bounded by ``timeout``, default ``exit_timeout``), stop the flusher,
        write the read statistics, close the sessions and every connection of the store.
        Returns whether the queue drained in time."""
        with _registry_lock:
            if self.key is not None and _runtimes.get(self.key) is self:
                del _runtimes[self.key]
            if self._closed:
                return True
            self._closed = True
        drained = self.sync.close(timeout)
        self.engine.stats.write()
        with _registry_lock:
            others = any(rt.engine.store is self.engine.store for rt in _runtimes.values())
        if not others:
            # Other users of the store (a CLI command, another runtime later) reconnect on next use.
            self.engine.store.close_all()
        return drained


def open_runtime(settings: Settings, token: str, *, store: Store | None = None, timeout: Any = None,
                 clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None,
                 key: tuple | None = None) -> Runtime:
    """A new engine and sync on the settings' store (or ``store``), wired to each other."""
    store = store or open_store(settings.path)
    engine = Engine(store, settings, clock=clock or time.time)
    sync = Sync(engine, token, timeout=timeout, clock=clock or time.time, sleep=sleep or time.sleep)
    engine.sync = sync
    return Runtime(key, engine, sync)


def shared_runtime(settings: Settings, token: str, timeout: Any = None, clock: Callable[[], float] | None = None,
                   sleep: Callable[[float], None] | None = None) -> Runtime:
    """The runtime shared per (settings, token, timeout, clock, sleep) in a process. A closed runtime
    is never handed out again: the next caller gets a new one."""
    key = (settings, token, timeout, clock, sleep)
    with _registry_lock:
        found = _runtimes.get(key)
    if found is not None and not found.closed:
        return found
    runtime = open_runtime(settings, token, timeout=timeout, clock=clock, sleep=sleep, key=key)
    with _registry_lock:
        found = _runtimes.get(key)
        if found is not None and not found.closed:
            winner = found
        else:
            winner = _runtimes[key] = runtime
    if winner is not runtime:
        runtime.close(0)  # another thread built one first
    return winner


def local_engine(store_or_settings: Store | Settings) -> Engine:
    """An engine without a sync: answers from the cache and repairs it, never asks Airtable."""
    if isinstance(store_or_settings, Settings):
        return Engine(open_store(store_or_settings.path), store_or_settings)
    return Engine(store_or_settings, Settings.from_env(path=store_or_settings.path))
