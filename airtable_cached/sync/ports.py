"""What the sync asks of the engine, as the sync sees it.

The sync never imports the engine's class: it is handed an object with these members
(``airtable_cached.engine.facade.Engine`` satisfies it). The state transitions the sync triggers on
the cache (a pull swapped in, records absorbed, forgotten or recomputed, conflicts resolved) are not
here: they are functions of a store or a unit of work (``airtable_cached/engine/apply.py``).

:class:`SyncCore` is what the refresher (``sync/refresh.py``) asks of its sync (``sync/core.py``),
so that the two modules do not import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

if TYPE_CHECKING:
    from airtable_cached.config import Settings
    from airtable_cached.engine.tables import TableInfo
    from airtable_cached.store.contract import Store


class EnginePort(Protocol):
    """The engine the sync keeps in step with Airtable."""

    @property
    def store(self) -> Store: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def endpoint(self) -> str:
        """The Airtable the engine mirrors: part of every table's key in the cache."""

    def clock(self) -> float: ...

    @overload
    def table_info(self, base_id: str, table: str) -> TableInfo: ...
    @overload
    def table_info(self, base_id: str, table: str, *, create: Literal[True]) -> TableInfo: ...
    @overload
    def table_info(self, base_id: str, table: str, *, create: bool) -> TableInfo | None: ...

    def forget_marker(self) -> None:
        """After waiting on a lock another process held, ask the database again."""

    def adopt_unkeyed_tables(self) -> int: ...

    def grant(self, base_id: str) -> None:
        """The token was seen to read ``base_id`` (a pull or a probe answered)."""

    def resolve_id(self, record_id: str) -> str:
        """A provisional id's real id, once its create was flushed (else the id itself)."""

    def refresh_schema(self, base_id: str, table: str) -> None:
        """Read the table's schema again, logging (not raising) a failure."""

    def reread_schema(self, info: TableInfo) -> bool:
        """Read the table's schema again into ``info``; whether a schema came back."""

    def wait_for_refreshes(self, timeout: float | None = None) -> bool: ...


class RemoteCore(Protocol):
    """What the refresher uses of the HTTP conversation with Airtable (``sync/core.py``, ``Remote``)."""

    def send(self, base_id: str, method: str, url: str, *, kind: str, params: Any = None, json_body: Any = None,
             idempotent: bool = True) -> Any: ...

    def mark(self) -> None: ...

    def since_mark(self) -> tuple[int, float | None, float | None]: ...

    #: The store's refresh lock per table (``Coordination.table_lock`` in store/contract.py).
    table_lock: Callable[[str, int, float], AbstractContextManager[bool]]


class SyncCore(Protocol):
    """What the refresher (``sync/refresh.py``) uses of its sync (``sync/core.py``, ``Sync``)."""

    @property
    def engine(self) -> EnginePort: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def remote(self) -> RemoteCore: ...

    def pull(self, base_id: str, table: str, *, view: str | None = None) -> int: ...

    def fetch_all(self, base_id: str, table: str, params: dict) -> list[dict]: ...
