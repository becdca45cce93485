"""What the engine asks of the sync (the connection to Airtable), as the engine sees it.

The engine never imports the sync: it is handed an object with these methods
(``airtable_cached.sync.core.Sync``), or none (offline use, tests)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from airtable_cached.errors import AirtableResponseError, OfflineError
from airtable_cached.rules.query import ListQuery

if TYPE_CHECKING:
    from airtable_cached.engine.tables import TableInfo


class RemotePort(Protocol):
    """The HTTP conversation with Airtable."""

    def clock(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def url(self, *parts: str) -> str: ...

    def token_digest(self, salt: bytes) -> str: ...


class RefresherPort(Protocol):
    def count_stale_served(self, tid: int) -> None: ...


class SyncPort(Protocol):
    """Pulling, refreshing, asking Airtable directly, flushing the queue."""

    @property
    def remote(self) -> RemotePort: ...

    @property
    def refresher(self) -> RefresherPort: ...

    @property
    def refused(self) -> Mapping[str, AirtableResponseError]: ...

    def pull(self, base_id: str, table: str, *, view: str | None = None) -> int: ...

    def refresh(self, base_id: str, table: str, *, max_age: float | None = None, force_full: bool = False) -> Any: ...

    def probe(self, base_id: str, table: str) -> bool: ...

    def fetch_schema(self, info: TableInfo) -> dict | None: ...

    def list_remote(self, info: TableInfo, table: str, query: ListQuery) -> dict: ...

    def get_remote(self, info: TableInfo, table: str, record_id: str, query: ListQuery) -> dict: ...

    def send_now(self, base_id: str, method: str, url: str, body: Any, *, idempotent: bool) -> Any: ...

    def notify_write(self, records: int = 1) -> None: ...

    def flush(self, base_id: str | None = None, *, wait_in_process: bool = True) -> Any: ...

    def flush_writes(self, base_id: str, seqs: list[int], *, poll: float = 0.05) -> Any: ...


class SyncHandle:
    """The engine's sync, set after the engine is made (``engine.sync = sync``), shared by its parts."""

    def __init__(self, sync: SyncPort | None = None):
        self.sync = sync

    def require(self) -> SyncPort:
        if self.sync is None:
            raise OfflineError("no connection to Airtable is configured for this engine")
        return self.sync
