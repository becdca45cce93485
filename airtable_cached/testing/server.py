"""The fake's HTTP side: ``FakeAirtable`` (the server a test starts), its request log, and the
routing of each Airtable endpoint to the reads, writes, meta and webhooks parts."""

from __future__ import annotations

import json
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from airtable_cached.testing.control import Control
from airtable_cached.testing.errors import (
    NOT_FOUND,
    FakeAirtableError,
    error_body,
    fail,
    invalid_request,
    standard_error_body,
)
from airtable_cached.testing.faults import Faults, RateLimiter, fault_answer
from airtable_cached.testing.model import RECORD_ID_RE, Table
from airtable_cached.testing.reads import Reads, options_from_body, options_from_query
from airtable_cached.testing.webhooks import WebhookError

Answer = tuple[int | None, Any, dict]


class FakeAirtable(Control, Reads):
    """An in-process fake of the Airtable Web API on 127.0.0.1 (see the ``airtable_cached.testing``
    docstring for what it is and is not evidence of)."""

    def __init__(
        self,
        *,
        token: str = "patFAKE.token",
        latency: float = 0.0,
        rate_limit: float | None = None,
        penalty_seconds: float = 30.0,
        schema_access: bool = True,
        webhook_access: bool = True,
        port: int = 0,
        seed: int = 0,
    ):
        super().__init__(seed, webhook_access)
        self.token = token
        self.latency = latency
        self.rate_limit = rate_limit
        self.penalty_seconds = penalty_seconds
        self.schema_access = schema_access
        self.seed = seed
        self._port = port
        self._faults = Faults()
        self._limiter = RateLimiter()
        self.requests: list[dict] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeAirtable:
        if self._server is not None:
            return self
        handler = type("Handler", (_Handler,), {"fake": self})
        server = _QuietServer(("127.0.0.1", self._port), handler)
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeAirtable:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    # -- log and faults -------------------------------------------------------------------------

    def request_count(self, *, base_id: str | None = None, method: str | None = None, path_contains: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if _log_matches(r, base_id, method, path_contains))

    def peak_rate(self, base_id: str | None = None) -> int:
        """The most requests (to ``base_id``, or any base) that arrived within any one second."""
        with self._lock:
            times = sorted(r["at"] for r in self.requests if base_id is None or r["base_id"] == base_id)
        peak, start = 0, 0
        for end, at in enumerate(times):
            while at - times[start] >= 1.0:
                start += 1
            peak = max(peak, end - start + 1)
        return peak

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def fail_next(
        self,
        status: int = 500,
        count: int = 1,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        body: dict | None = None,
        retry_after: int | None = None,
        drop_connection: bool = False,
        apply: bool = False,
    ) -> None:
        """The next ``count`` matching requests fail.

        With ``drop_connection`` the socket is closed without any response (a network error).
        With ``apply`` the request is first carried out (state changes) and then its response is
        replaced by the fault: a lost response to a write that did happen.
        """
        with self._lock:
            self._faults.add(status, count, method=method, path_contains=path_contains, body=body,
                             retry_after=retry_after, drop_connection=drop_connection, apply=apply)

    # -- HTTP entry point -----------------------------------------------------------------------

    def handle_http(self, method: str, raw_path: str, headers: Any, body_bytes: bytes) -> Answer:
        """Returns (status or None to drop the connection, json body, extra headers)."""
        if self.latency:
            time.sleep(self.latency)
        split = urlsplit(raw_path)
        segments = [unquote(s) for s in split.path.split("/") if s != ""]
        path = "/" + "/".join(segments)
        query = parse_qs(split.query, keep_blank_values=True)
        request = _Request(method, segments, query, body_bytes, headers)
        with self._lock:
            entry = {"method": method, "path": path, "query": query, "json": request.body, "status": None,
                     "base_id": request.base_id, "at": time.monotonic()}
            self.requests.append(entry)
            try:
                status, out, extra = self._answer_or_fault(request, path)
            finally:
                self._events.clear()  # a request that failed changed nothing
            entry["status"] = status
            # Airtable's answers carry a Date header (see the recorded traffic); this one is the
            # server clock as the answer was made, which clients may use as a watermark.
            extra = {**extra, "Date": formatdate(self._now_instant().timestamp(), usegmt=True)}
            return status, out, extra

    def _answer_or_fault(self, request: _Request, path: str) -> Answer:
        now = time.monotonic()
        fault = self._faults.take(request.method, path)
        if fault is None:
            return self._answer(request, now)
        if fault["apply"]:
            self._answer(request, now)
        return fault_answer(fault)

    def _answer(self, request: _Request, now: float) -> Answer:
        """Authorization, the rate limit, then the endpoint's answer (its changes published on success)."""
        if (request.headers.get("Authorization") or "") != f"Bearer {self.token}":
            return 401, standard_error_body(401), {}
        if request.base_id is not None and self.rate_limit is not None:
            if not self._limiter.allows(request.base_id, now, self.rate_limit, self.penalty_seconds):
                return 429, standard_error_body(429), {}
        if request.body_error:
            return 422, invalid_request("Could not parse request body as JSON").body, {}
        try:
            answer = self._dispatch(request.method, request.segments, request.query, request.body)
        except FakeAirtableError as exc:
            return exc.status, exc.body, {}
        self._publish_events()
        return 200, answer, {}

    # -- routing --------------------------------------------------------------------------------

    def _dispatch(self, method: str, seg: list[str], query: dict, body: Any) -> Any:
        if len(seg) < 2 or seg[0] != "v0":
            raise FakeAirtableError(404, NOT_FOUND)
        if seg[1] == "meta":
            return self._meta(method, seg[2:])
        if seg[1] == "bases" and len(seg) >= 4 and seg[3] == "webhooks":
            return self._webhooks(method, seg, query, body)
        base_id = seg[1]
        if base_id not in self._bases or len(seg) < 3:
            raise FakeAirtableError(404, NOT_FOUND)
        table = self._find_table(base_id, seg[2])
        if table is None:
            raise fail(404, "TABLE_NOT_FOUND", f"Could not find table {seg[2]} in application {base_id}")
        if body is not None and not isinstance(body, dict):
            raise invalid_request()
        return self._table_endpoint(method, table, seg[3:], query, body or {})

    def _webhooks(self, method: str, seg: list[str], query: dict, body: Any) -> Any:
        if seg[2] not in self._bases:
            raise FakeAirtableError(404, NOT_FOUND)
        try:
            return self.webhooks.handle(method, seg[2], seg[4:], query, body)
        except WebhookError as exc:
            raise FakeAirtableError(exc.status, exc.body) from None

    def _table_endpoint(self, method: str, table: Table, rest: list[str], query: dict, body: dict) -> Any:
        if not rest:
            return self._records_endpoint(method, table, query, body)
        if rest == ["listRecords"] and method == "POST":
            opts = options_from_body(body)
            opts.update({key: query[key][-1] for key in ("timeZone", "userLocale") if key in query})
            return self._list(table, opts)
        if len(rest) == 1:
            return self._record_endpoint(method, table, rest[0], query, body)
        raise FakeAirtableError(404, NOT_FOUND)

    def _records_endpoint(self, method: str, table: Table, query: dict, body: dict) -> Any:
        """``/v0/{base}/{table}``: list, create, update or upsert, delete."""
        if method == "GET":
            return self._list(table, options_from_query(query))
        if method == "POST":
            return self._create(table, body)
        if method in ("PATCH", "PUT"):
            return self._update_many(table, body, replace=(method == "PUT"))
        if method == "DELETE":
            return self._delete_many(table, query)
        raise FakeAirtableError(404, NOT_FOUND)

    def _record_endpoint(self, method: str, table: Table, rid: str, query: dict, body: dict) -> Any:
        """``/v0/{base}/{table}/{record}``: get, update, delete."""
        if method == "GET":
            return self._render_opts(table, self._record_or_404(table, rid), options_from_query(query))
        if method in ("PATCH", "PUT"):
            self._record_or_404(table, rid)
            return self._write_updates(table, [{"id": rid, "fields": body.get("fields")}], body, replace=(method == "PUT"))[0]
        if method == "DELETE":
            self._remove(table, self._record_or_404(table, rid))
            return {"deleted": True, "id": rid}
        raise FakeAirtableError(404, NOT_FOUND)

    def _record_or_404(self, table: Table, rid: str) -> dict:
        rec = table.find(rid)
        if rec is None:
            if not RECORD_ID_RE.match(rid):
                # MODELLING DECISION: an id that does not look like a record id gets the bare 404.
                raise FakeAirtableError(404, NOT_FOUND)
            raise fail(404, "MODEL_ID_NOT_FOUND", "Record not found")  # as in recorded traffic
        return rec

    def _meta(self, method: str, seg: list[str]) -> Any:
        if method != "GET":
            raise FakeAirtableError(404, NOT_FOUND)
        if seg == ["whoami"]:
            # MODELLING DECISION: a fixed user id; scopes listed as for a PAT with the needed scopes.
            scopes = ["data.records:read", "data.records:write"] + (["schema.bases:read"] if self.schema_access else [])
            return {"id": "usrFAKEuser000000", "scopes": scopes}
        if seg == ["bases"]:
            return {"bases": [{"id": bid, "name": b["name"], "permissionLevel": "create"} for bid, b in self._bases.items()]}
        if len(seg) == 3 and seg[0] == "bases" and seg[2] == "tables":
            if seg[1] not in self._bases:
                raise FakeAirtableError(404, NOT_FOUND)
            if not self.schema_access:
                raise FakeAirtableError(403, standard_error_body(403))
            return {"tables": [self._table_schema(t) for t in self._bases[seg[1]]["tables"]]}
        raise FakeAirtableError(404, NOT_FOUND)


class _Request:
    """One request as the routing sees it: path segments, query, JSON body (or that it was no JSON)."""

    def __init__(self, method: str, segments: list[str], query: dict, body_bytes: bytes, headers: Any):
        self.method, self.segments, self.query, self.headers = method, segments, query, headers
        self.base_id = _base_of(segments)
        self.body: Any = None
        self.body_error = False
        if body_bytes:
            try:
                self.body = json.loads(body_bytes.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                self.body_error = True


def _base_of(segments: list[str]) -> str | None:
    if len(segments) >= 3 and segments[0] == "v0" and segments[1] == "bases":
        return segments[2]  # the webhooks API: /v0/bases/{base}/webhooks...
    if len(segments) < 2 or segments[0] != "v0":
        return None
    if segments[1] != "meta":
        return segments[1]
    return segments[3] if len(segments) >= 4 and segments[2] == "bases" else None


def _log_matches(r: dict, base_id: str | None, method: str | None, path_contains: str | None) -> bool:
    if base_id is not None and r["base_id"] != base_id:
        return False
    if method is not None and r["method"] != method.upper():
        return False
    return path_contains is None or path_contains in r["path"]


# HTTP plumbing -------------------------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # no tracebacks on stderr
        pass


_COMMON_HEADERS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "DELETE,GET,OPTIONS,PATCH,POST,PUT",
    "access-control-allow-headers": "authorization,content-length,content-type,user-agent,x-airtable-application-id,x-airtable-user-agent,x-api-version,x-requested-with",
    "Vary": "Accept-Encoding",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class _Handler(BaseHTTPRequestHandler):
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    fake: FakeAirtable
    protocol_version = "HTTP/1.1"
    server_version = "Tengine"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The fake server's own clock (see FakeAirtable.handle_http), not the machine's.
        date = getattr(self, "_date", None)
        return date if date and timestamp is None else super().date_time_string(timestamp)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            # The client went away before its whole body arrived (killed between the headers and
            # the body, which urllib3 writes separately). Airtable's front end never passes such a
            # request on: nothing is carried out, nothing logged (it once became a blank record).
            self.close_connection = True
            return
        try:
            status, out, extra = self.fake.handle_http(self.command, self.path, self.headers, body)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: answer 500 and say what it was
            status, out, extra = 500, error_body("FAKE_AIRTABLE_BUG", f"{type(exc).__name__}: {exc}"), {}
        if status is None:
            self._drop()
            return
        self._date = extra.pop("Date", None)
        self._send(status, json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), extra)

    def _drop(self) -> None:
        """Close the socket without an answer (a network error for the client)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, status: int, data: bytes, extra: dict) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        for k, v in _COMMON_HEADERS.items():
            self.send_header(k, v)
        if status == 200 and self.command == "GET":
            self.send_header("airtable-uncompressed-content-length", str(len(data)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve
