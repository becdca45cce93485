"""The plain-HTTP front-end: Airtable record requests made with ``requests`` answered by the cache.

Agents that never import pyairtable call ``requests.get("https://api.airtable.com/v0/{base}/{table}")``
with a Bearer header, then ``requests.patch(".../{record_id}", json={"fields": ...})`` per record.
:func:`install` makes every such call (module-level ``requests.get/post/...`` and any
``requests.Session``, existing or new) go through :class:`CachedAdapter`, a transport adapter that
hands record-endpoint requests to the same :class:`~airtable_cached.engine.Engine` the pyairtable
front-end uses and wraps its answer in a real :class:`requests.Response` (status, headers, JSON body
as Airtable sends them, errors included).

What is intercepted, and what is not:

* only requests to Airtable's host: the host of ``settings.endpoint_url`` and ``api.airtable.com``;
  any other host never reaches this module's adapter;
* of those, only the record endpoints (:func:`airtable_cached.engine.route`): list, listRecords, get,
  create, update, replace, upsert, delete, batch delete. Meta, comments, webhooks and the rest go to
  the adapter the session would have used anyway;
* never the sync's own session (it is how the cache talks to Airtable): sessions marked with
  :data:`DIRECT_ATTR`, and any request made while the engine answers one on the same thread.

Tokens: the runtime (engine + sync) is built for the token in the agent's ``Authorization`` header,
so the sync talks to Airtable with the agent's own token. A missing header is answered 401 as
Airtable does; a token seen for the first time is checked once with ``GET /v0/meta/whoami`` through
the sync's session, and the verdict is kept in memory only (as a hash). A token is never written to
disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import requests.sessions
import wrapt
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.response import HTTPResponse

from airtable_cached.config import Settings
from airtable_cached.engine import Engine, Route, route
from airtable_cached.errors import AirtableResponseError, OfflineError, WriteRejectedError, reason_phrase

__all__ = ["install", "uninstall", "is_installed", "CachedAdapter", "DIRECT_ATTR", "mark_direct"]

log = logging.getLogger("airtable_cached")

#: Attribute set (to ``True``) on a ``requests.Session`` whose requests must never be intercepted.
DIRECT_ATTR = "_airtable_cached_direct"
AIRTABLE_HOST = "api.airtable.com"


#: Headers Airtable sends with every API answer (besides Content-Type and Content-Length).
_COMMON_HEADERS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "DELETE,GET,OPTIONS,PATCH,POST,PUT",
    "access-control-allow-headers": "authorization,content-length,content-type,user-agent,"
    "x-airtable-application-id,x-airtable-user-agent,x-api-version,x-requested-with",
    "Vary": "Accept-Encoding",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def mark_direct(session: requests.Session) -> requests.Session:
    """Exempt a session from interception (the sync's own session talks to Airtable for real)."""
    setattr(session, DIRECT_ATTR, True)
    return session


# -- the interceptor -------------------------------------------------------------------------------


class _Interceptor:
    """What :func:`install` set up: the settings, Airtable's hosts and the token verdicts."""

    def __init__(self, settings: Settings):
        self.settings = settings
        endpoint = urlsplit(settings.endpoint_url)
        self.hosts = {(AIRTABLE_HOST, 443), ((endpoint.hostname or "").lower(), _port(endpoint))}
        self._verdicts: dict[str, bool] = {}  # sha256(token) -> valid; memory only
        self._verdict_locks: dict[str, threading.Lock] = {}
        self._unasked_at: dict[str, float] = {}  # sha256(token) -> when Airtable could not be asked
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- which requests ----------------------------------------------------------------------------
    def is_airtable(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host == AIRTABLE_HOST:
            return True
        return (host, _port(parts)) in self.hosts

    @property
    def answering(self) -> bool:
        """Whether this thread is inside the engine (its sync's requests must go out for real)."""
        return getattr(self._local, "depth", 0) > 0

    def runtime(self, token: str) -> tuple[Engine, Any]:
        from airtable_cached.runtime import shared_runtime

        engine, sync = shared_runtime(self.settings, token)
        mark_direct(sync.remote.session)
        return engine, sync

    def dispatch(self, engine: Engine, found: Route, params: dict, body: Any) -> Any:
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            return engine.dispatch(found, params, body)
        finally:
            self._local.depth -= 1

    # -- tokens ------------------------------------------------------------------------------------
    def token_is_valid(self, token: str, base_id: str = "") -> bool:
        """Airtable's verdict on a token, asked once per process (``GET /v0/meta/whoami``).

        When Airtable cannot be asked (offline mode, network down, 5xx) the token is let through
        without a verdict: the cache answers, and Airtable judges the token when the sync next talks
        to it (a write it refuses with 401 goes to the dead-letter list)."""
        key = hashlib.sha256(token.encode()).hexdigest()
        verdict = self._verdicts.get(key)
        if verdict is not None:
            return verdict
        if self.settings.mode == "offline":
            return True
        with self._lock:
            lock = self._verdict_locks.setdefault(key, threading.Lock())
        with lock:
            verdict = self._verdicts.get(key)
            if verdict is not None:
                return verdict
            if time.monotonic() - self._unasked_at.get(key, -UNASKED_QUIET) < UNASKED_QUIET:
                return True  # Airtable could not be asked moments ago: no new wait for every request
            verdict = self._ask_airtable(token, base_id, key)
            if verdict is not None:
                self._verdicts[key] = verdict
            return True if verdict is None else verdict

    def _ask_airtable(self, token: str, base_id: str, key: str = "") -> bool | None:
        # A throwaway session: a wrong token must not get a runtime (and a flusher thread) of its own.
        with mark_direct(requests.Session()) as session:
            session.headers["Authorization"] = f"Bearer {token}"
            session.headers["User-Agent"] = "airtable_cached"
            try:
                timeout = (self.settings.network_timeout, self.settings.network_timeout)
                response = session.get(self.settings.endpoint_url + "/v0/meta/whoami", timeout=timeout)
            except requests.RequestException as exc:
                self._log_check(base_id, None)
                log.warning("could not check the token with Airtable (%s); answering from the cache", exc)
                self._unasked_at[key] = time.monotonic()  # out of reach: not asked again at once
                return None
        self._log_check(base_id, response.status_code)
        if response.status_code == 401:
            return False
        if response.status_code >= 500 or response.status_code == 429:
            log.warning("could not check the token with Airtable (HTTP %s); answering from the cache",
                        response.status_code)
            return None
        return True

    def _log_check(self, base_id: str, status: int | None) -> None:
        """The token check is a request Airtable counts: it goes in the request log (under the base
        the agent was addressing) like every other one."""
        from airtable_cached.runtime import open_store
        from airtable_cached.sync.core import log_request

        log_request(open_store(self.settings.path), base_id, "whoami", "GET", status)


#: Seconds during which a token Airtable could not judge (network down) is not asked about again.
UNASKED_QUIET = 30.0

_installed: _Interceptor | None = None
_install_lock = threading.Lock()


def _port(parts: Any) -> int:
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        return port
    return 443 if parts.scheme == "https" else 80


# -- the adapter -----------------------------------------------------------------------------------


class CachedAdapter(BaseAdapter):
    """Answers Airtable record requests from the engine; hands everything else to ``fallback``."""

    def __init__(self, interceptor: _Interceptor, fallback: BaseAdapter):
        super().__init__()
        self.interceptor = interceptor
        self.fallback = fallback

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        url = _url_of(request)
        found = route(request.method or "GET", url) if self.interceptor.is_airtable(url) else None
        if found is None:
            return self.fallback.send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        token = _bearer(request.headers.get("Authorization"))
        if self.interceptor.settings.mode == "passthrough":
            # Airtable answers (and judges the token); the cache keeps what it says about records.
            return self._passthrough(token, found, request, timeout, verify, cert, proxies)
        if token is None or not self.interceptor.token_is_valid(token, found.base_id):
            return self._respond(request, 401, _auth_required())
        engine, _sync = self.interceptor.runtime(token)
        try:
            body = _json_body(request.body)
        except ValueError:
            return self._respond(request, 422, _invalid_request("Could not parse request body as JSON"))
        params = _query_params(url)
        try:
            result = self.interceptor.dispatch(engine, found, params, body)
        except AirtableResponseError as exc:
            return self._respond(request, exc.status, exc.body)
        except WriteRejectedError as exc:
            return self._respond(request, 422, _invalid_request(str(exc)))
        except OfflineError as exc:
            raise requests.ConnectionError(str(exc), request=request) from exc
        except requests.RequestException as exc:
            if getattr(exc, "request", None) is None:
                exc.request = request
            raise
        return self._respond(request, 200, result)

    def _passthrough(self, token: str | None, found: Route, request: requests.PreparedRequest, timeout: Any,
                     verify: Any, cert: Any, proxies: Any) -> requests.Response:
        sent_at = time.time()
        response = self.fallback.send(request, stream=False, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        if response.status_code != 200 or token is None:
            return response
        try:
            result = response.json()
        except ValueError:
            return response
        try:
            engine, _sync = self.interceptor.runtime(token)
            body = _json_body(request.body)
            engine.absorb_answer(found, _query_params(_url_of(request)), body, result, sent_at=sent_at)
        except Exception as exc:  # noqa: BLE001 - keeping a copy must never fail the agent's request
            log.debug("passthrough: could not keep the records: %s", exc)
        return response

    def _respond(self, request: requests.PreparedRequest, status: int, payload: Any) -> requests.Response:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8", **_COMMON_HEADERS, "Content-Length": str(len(data))}
        reason = reason_phrase(status)
        raw = HTTPResponse(
            body=io.BytesIO(data), headers=headers, status=status, reason=reason,
            preload_content=False, decode_content=False, request_url=request.url, request_method=request.method,
        )
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict(headers)
        response.encoding = "utf-8"
        response.raw = raw
        response.reason = reason
        response.url = _url_of(request)
        response.request = request
        response.connection = self  # type: ignore[assignment]  # requests sets its adapter here too
        return response

    def close(self) -> None:
        pass  # the fallback belongs to the session, which closes it


def _bearer(header: Any) -> str | None:
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if not header:
        return None
    scheme, _, token = str(header).strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _auth_required() -> dict:
    return {"error": {"type": "AUTHENTICATION_REQUIRED", "message": "Authentication required"}}


def _invalid_request(message: str) -> dict:
    return {"error": {"type": "INVALID_REQUEST_UNKNOWN", "message": message}}


def _json_body(body: Any) -> Any:
    """The request's JSON body (``None`` when empty); ``ValueError`` when it is not JSON."""
    if body is None:
        return None
    if hasattr(body, "read"):
        body = body.read()
    elif not isinstance(body, (bytes, str)) and hasattr(body, "__iter__"):
        body = b"".join(part.encode("utf-8") if isinstance(part, str) else part for part in _chunks(body))
    if isinstance(body, bytes):
        body = body.decode("utf-8")
    if not body.strip():
        return None
    return json.loads(body)


def _chunks(body: Any) -> Iterator[Any]:
    yield from body


def _query_params(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


# -- install / uninstall ---------------------------------------------------------------------------


def _get_adapter_wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> BaseAdapter:
    adapter = wrapped(*args, **kwargs)
    interceptor = _installed
    if interceptor is None or instance is None or getattr(instance, DIRECT_ATTR, False) or interceptor.answering:
        return adapter
    url = args[0] if args else kwargs.get("url", "")
    if isinstance(url, bytes):
        url = url.decode("utf-8")
    if not interceptor.is_airtable(url):
        return adapter
    return CachedAdapter(interceptor, adapter)


def install(**settings: Any) -> None:
    """Answer Airtable record requests made with ``requests`` (any session) from the cache.

    Takes the same keyword overrides as ``airtable_cached.Api`` (``path``, ``mode``, ``flush``,
    ``endpoint_url``, ``max_age``, ``exit_timeout``...), on top of ``AIRTABLE_CACHED_*`` variables.
    Calling it again replaces the settings; :func:`uninstall` undoes it.
    """
    global _installed
    interceptor = _Interceptor(Settings.from_env(**settings))
    with _install_lock:
        if _installed is None:
            # The sync's own session marks itself direct (sync.Remote), so it is never intercepted.
            wrapt.wrap_function_wrapper(requests.sessions, "Session.get_adapter", _get_adapter_wrapper)
        _installed = interceptor


def uninstall() -> None:
    """Undo :func:`install`: ``requests`` talks to Airtable directly again. Safe to call twice."""
    global _installed
    with _install_lock:
        if _installed is None:
            return
        _installed = None
        _unwrap(requests.sessions.Session, "get_adapter")


def is_installed() -> bool:
    return _installed is not None


def _unwrap(owner: type, name: str) -> None:
    current = owner.__dict__.get(name)
    if isinstance(current, wrapt.FunctionWrapper) and current._self_wrapper is _get_adapter_wrapper:
        setattr(owner, name, current.__wrapped__)
    else:
        log.warning("uninstall: %s.%s was wrapped again by someone else; leaving it", owner.__name__, name)


def _url_of(request: requests.PreparedRequest) -> str:
    """The request's URL as text (requests allows bytes, and None before it is prepared)."""
    url = request.url
    return url.decode("utf-8") if isinstance(url, bytes) else str(url or "")
