"""The drop-in: pyairtable's ``Api``, ``Base`` and ``Table`` with record traffic served by the cache.

The classes keep pyairtable's names (pyairtable derives URL context keys from
``type(obj).__name__``). ``Api.request`` is the one choke point every record call passes through
(Table methods, the ORM, ``iterate_requests``): record endpoints go to the engine, everything else
(comments, schema, webhooks, attachments) goes to Airtable as plain pyairtable sends it.
"""

from __future__ import annotations

import json as jsonlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyairtable
import pyairtable.api.base
import pyairtable.api.table
import requests
from pyairtable.api.params import options_to_params
from pyairtable.api.types import RecordDict, RecordId, assert_typed_dict, assert_typed_dicts
from pyairtable.formulas import Formula, to_formula_str

from airtable_cached.config import Settings, check_token
from airtable_cached.engine import Engine, route
from airtable_cached.errors import AirtableResponseError, reason_phrase
from airtable_cached.runtime import Runtime, open_store, shared_runtime
from airtable_cached.sync.core import FlushResult, Sync
from airtable_cached.types import DeadLetterDict, QueuedWriteDict

__all__ = ["Api", "Base", "Table", "open_store"]  # open_store: airtable_cached.runtime

class Api(pyairtable.Api):
    """``pyairtable.Api`` with a local cache and a durable write queue.

    Every keyword of ``pyairtable.Api`` is accepted. The cache's settings come from
    ``AIRTABLE_CACHED_*`` environment variables, each overridable here: ``path``, ``max_age``,
    ``mode`` (cache | write-through | passthrough | offline), ``flush`` (auto | manual),
    ``exit_timeout``, ``rate_limit``, ``penalty``, ``retries``, ``claim_timeout``, ``network_timeout``, and for
    refreshes ``stale`` (refresh | serve), ``feed`` (webhooks | off), ``overlap``, ``sweep_every``,
    ``full_pull_every``.
    ``on_dead_letter`` is called with a dict describing each call a flush dead-letters.
    ``endpoint_url`` defaults to ``AIRTABLE_CACHED_ENDPOINT_URL`` or Airtable's.
    """

    def __init__(
        self,
        api_key: str,
        *,
        timeout: Any = None,
        retry_strategy: Any = True,
        endpoint_url: str | None = None,
        use_field_ids: bool = False,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        on_dead_letter: Callable[[DeadLetterDict], Any] | None = None,
        **cache_settings: Any,
    ):
        check_token(api_key)
        self.settings = Settings.from_env(endpoint_url=endpoint_url, **cache_settings)
        super().__init__(
            api_key,
            timeout=timeout,
            retry_strategy=retry_strategy,
            endpoint_url=self.settings.endpoint_url,
            use_field_ids=use_field_ids,
        )
        self._clock = clock
        self._sleep = sleep
        if on_dead_letter is not None and not callable(on_dead_letter):
            raise TypeError(f"on_dead_letter must be callable, got {type(on_dead_letter).__name__}")
        #: Called with a dict (base_id, tables, record_ids, seqs, status, error, writes) each time
        #: a flush dead-letters a call's writes.
        self.on_dead_letter = on_dead_letter
        self._rt: Runtime | None = None
        self._rt_lock = threading.Lock()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _use_runtime(self) -> Runtime:
        """The runtime this Api uses (acquired on first use; a new one after ``close()``)."""
        rt = self._rt
        if rt is not None and not rt.closed:
            return rt
        with self._rt_lock:
            rt = self._rt
            if rt is None or rt.closed:
                rt = shared_runtime(self.settings, self.api_key, self.timeout, self._clock, self._sleep)
                rt.add_user()
                if self.on_dead_letter is not None:
                    rt.sync.on_dead_letter = self.on_dead_letter
                self._rt = rt
            return rt

    def __repr__(self) -> str:
        return f"<airtable_cached.Api mode={self.settings.mode!r} path={str(self.settings.path)!r}>"

    @property
    def engine(self) -> Engine:
        return self._use_runtime().engine

    @property
    def sync(self) -> Sync:
        return self._use_runtime().sync

    # -- pyairtable's factories, returning the cached classes ------------------------------------
    def base(self, base_id: str, *, validate: bool = False, force: bool = False) -> Base:
        if validate:
            info = self._base_info(force=force).base(base_id)
            return self._base_from_info(info)
        return Base(self, base_id)

    def _base_from_info(self, base_info: Any) -> Base:
        return Base(self, base_info.id, name=base_info.name, permission_level=base_info.permission_level)

    def table(self, base_id: str, table_name: str, *, validate: bool = False, force: bool = False) -> Table:
        return self.base(base_id, validate=validate, force=force).table(table_name, validate=validate, force=force)

    # -- the choke point ---------------------------------------------------------------------------
    def request(self, method: str, url: str, fallback: Any = None, options: dict | None = None,
                params: dict | None = None, json: dict | None = None) -> Any:
        found = route(method, url)
        if found is None:
            return super().request(method, url, fallback=fallback, options=options, params=params, json=json)
        # pyairtable's own conversion: unknown options raise InvalidParameterError as they always did.
        request_params = {**options_to_params(options or {}), **(params or {})}
        if self.settings.mode == "passthrough":
            sent_at = time.time()
            result = super().request(method, url, fallback=fallback, options=options, params=params, json=json)
            self.engine.absorb_answer(found, request_params, json, result, sent_at=sent_at)
            return result
        try:
            return self.engine.dispatch(found, request_params, json)
        except AirtableResponseError as exc:
            raise self._http_error(method, url, exc) from None

    def _http_error(self, method: str, url: str, exc: AirtableResponseError) -> requests.HTTPError:
        """The exact ``requests.HTTPError`` pyairtable raises for this status and body."""
        response = requests.Response()
        response.status_code = exc.status
        response._content = jsonlib.dumps(exc.body).encode()
        response.headers["Content-Type"] = "application/json; charset=utf-8"
        response.url = url
        response.reason = reason_phrase(exc.status)
        response.request = requests.Request(method.upper(), url).prepare()
        try:
            self._process_response(response)
        except requests.HTTPError as error:
            return error
        return requests.HTTPError(str(exc), response=response)

    # -- extras ------------------------------------------------------------------------------------
    def flush(self, base_id: str | None = None) -> FlushResult:
        """Push the queued writes now. Returns what was sent, what failed and why; a base another
        process is flushing is left to it (``result.busy``), never waited for."""
        return self.sync.flush(base_id)

    def pending(self) -> list[QueuedWriteDict]:
        """The queued and dead-lettered writes, with attempts and last error."""
        return [op.as_dict() for op in self.engine.store.outbox.list_ops()]

    def close(self, timeout: float | None = None) -> bool:
        """Flush what is queued (auto flush; at most ``timeout``, default ``exit_timeout`` seconds),
        stop the background flusher, close the SQLite connections, the diskcache, the sessions and
        their sockets. Other ``Api`` objects sharing the runtime keep it until they close too. Using
        this ``Api`` again, or a new one, starts a fresh runtime. Returns whether the queue drained
        in time (what did not stays queued on disk). Also a context manager::

            with Api(token) as api:
                api.table(base_id, "Leads").update(record_id, {"Status": "Won"})
        """
        with self._rt_lock:
            rt, self._rt = self._rt, None
        self.session.close()
        if rt is None:
            return True
        return rt.close(timeout) if rt.drop_user() else True


class Base(pyairtable.api.base.Base):
    """``pyairtable.Base`` whose tables are cached."""

    api: Api

    def table(self, id_or_name: str, *, validate: bool = False, force: bool = False) -> Table:
        if validate:
            schema = self.schema(force=force).table(id_or_name)
            return Table(None, self, schema)
        return Table(None, self, id_or_name)

    def tables(self, *, force: bool = False) -> list[Table]:  # type: ignore[override]  # a list of our Tables
        return [Table(None, self, table_schema) for table_schema in self.schema(force=force).tables]


class Table(pyairtable.api.table.Table):
    """``pyairtable.Table`` answered from the cache, with ``flush``, ``refresh`` and ``is_fresh``."""

    def __init__(self, api_key: str | None, base_id: Any, table_name: Any, **kwargs: Any):
        if isinstance(api_key, str) and isinstance(base_id, str):
            # pyairtable's deprecated constructor builds a plain Api; build a cached one instead.
            import warnings

            warnings.warn(
                "Passing API keys or base IDs to pyairtable.Table is deprecated;"
                " use Api.table() or Base.table() instead.",
                category=DeprecationWarning,
                stacklevel=2,
            )
            base_id = Api(api_key, **kwargs).base(base_id)
            api_key = None
        super().__init__(api_key, base_id, table_name)

    # pyairtable validates every record it returns with pydantic (21% of a cached all()). A
    # record the engine answered from the cache is built in Airtable's shape by the engine, so
    # that check cannot fail and is skipped; an answer Airtable gave is checked as before. The
    # two methods are pyairtable 3.5's own, but for that one condition.
    def get(self, record_id: RecordId, **options: Any) -> RecordDict:
        if self.api.use_field_ids:
            options.setdefault("use_field_ids", self.api.use_field_ids)
        record = self.api.get(self._record_url(record_id), options=options)
        return record if self._answered_locally() else assert_typed_dict(RecordDict, record)

    def _record_url(self, record_id: RecordId) -> Any:
        """``self.urls.record(record_id)``, remembered per table (building it parses and joins URLs)."""
        urls = self.__dict__.setdefault("_record_urls", {})
        key = (record_id, self._schema is None)  # the URL names the table by id once its schema is known
        url = urls.get(key)
        if url is None:
            if len(urls) >= 4096:
                urls.clear()
            url = urls[key] = self.urls.record(record_id)
        return url

    def iterate(self, **options: Any) -> Iterator[list[RecordDict]]:
        if isinstance(formula := options.get("formula"), Formula):
            options["formula"] = to_formula_str(formula)
        if self.api.use_field_ids:
            options.setdefault("use_field_ids", self.api.use_field_ids)
        for page in self.api.iterate_requests(
            method="get",
            url=self.urls.records,
            fallback=("post", self.urls.records_post),
            options=options,
        ):
            records = page.get("records", [])
            yield records if self._answered_locally() else assert_typed_dicts(RecordDict, records)

    def _answered_locally(self) -> bool:
        api = self.api
        return isinstance(api, Api) and api.settings.mode != "passthrough" and api.engine.answered_locally()

    @property
    def _cached_api(self) -> Api:
        # Base.table() builds every Table of ours with our Api; pyairtable types it as its own.
        assert isinstance(self.api, Api)
        return self.api

    @property
    def _table_ref(self) -> str:
        return self._schema.id if self._schema else self.name

    def flush(self) -> FlushResult:
        """Push this base's queued writes now."""
        return self._cached_api.sync.flush(self.base.id)

    def refresh(self, force: bool = False) -> bool:
        """Refresh the table now if it is stale: only what changed since its watermark when that is
        enough. ``force``: pull it whole now. Returns whether it refreshed."""
        if not force and self.is_fresh():
            return False
        self._cached_api.sync.refresh(self.base.id, self._table_ref, force_full=force)
        if force:  # the views read so far are pulled again too (their members and order)
            for view in self._cached_api.engine.known_views(self.base.id, self._table_ref):
                self._cached_api.sync.pull(self.base.id, self._table_ref, view=view)
        return True

    def is_fresh(self) -> bool:
        """Whether reads are served without pulling first."""
        return self._cached_api.engine.is_fresh(self.base.id, self._table_ref)

    def search(self, text: str, fields: list[str] | None = None, *, max_records: int | None = None) -> list[RecordDict]:
        """Full-text search over the table's text fields (any case, word prefixes), best first.

        >>> leads.search("ada lovelace")
        >>> leads.search("acme", fields=["Company", "Email"])
        """
        return self._cached_api.engine.search(self.base.id, self._table_ref, text, fields=fields, max_records=max_records)

