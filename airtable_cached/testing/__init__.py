"""A fake Airtable Web API server for tests (standard library only).

``FakeAirtable`` serves the record endpoints, the meta endpoints the project uses and whoami over
real HTTP on 127.0.0.1, behaving as Airtable does as far as it is known (the
Airtable facts and recorded traffic beside the checkout, which ``tests/test_recorded_airtable.py``
checks it against). Pass ``fake.url`` as
``endpoint_url=`` to ``pyairtable.Api``.

Everything is deterministic given ``seed``: record, table, field, view and option ids come from
seeded RNGs, ``createdTime`` and last-modified times from a logical clock (a fixed base instant
plus one second per event), offsets from a counter. Record order without sort/view is insertion
order.

Modelling decisions where Airtable's behaviour is not known are marked ``MODELLING DECISION``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import random
import re
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from airtable_cached.rules.records import DATE_TYPES, format_number, parse_iso_datetime, plain_text, sort_key
from airtable_cached.testing.webhooks import WebhookError, Webhooks

__all__ = ["FakeAirtable", "seed_leads", "LEADS_SCHEMA", "FakeAirtableError", "add_linked_tables"]

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE_INSTANT = _dt.datetime(2024, 1, 1, tzinfo=_dt.UTC)
_RECORD_ID_RE = re.compile(r"^rec[0-9A-Za-z]{14}$")

#: Field types whose values Airtable computes; writing them is a 422.
COMPUTED_TYPES = frozenset(
    {
        "formula", "rollup", "multipleLookupValues", "lookup", "count", "createdTime",
        "lastModifiedTime", "autoNumber", "createdBy", "lastModifiedBy", "button",
    }
)
_NUMBER_TYPES = frozenset({"number", "currency", "percent", "rating", "duration", "autoNumber", "count"})
_DATE_TYPES = DATE_TYPES
_TEXT_TYPES = frozenset(
    {"singleLineText", "multilineText", "richText", "email", "url", "phoneNumber"}
)

# Standard error bodies -----------------------------------------------------------------------

_MSG_422 = "Invalid request: parameter validation failed. Check your request data."
_MSG_403 = (
    "Invalid permissions, or the requested model was not found. Check that both your user and your "
    "token have the required permissions, and that the model names and/or ids are correct."
)


def _err(type_: str, message: str) -> dict:
    return {"error": {"type": type_, "message": message}}


NOT_FOUND = {"error": "NOT_FOUND"}


def standard_error_body(status: int) -> dict:
    """Airtable's body for ``status`` as used by fault injection."""
    if status == 401:
        return _err("AUTHENTICATION_REQUIRED", "Authentication required")
    if status == 403:
        return _err("INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND", _MSG_403)
    if status == 404:
        return dict(NOT_FOUND)
    if status == 413:
        # MODELLING DECISION: Airtable's 413 body is not recorded anywhere we have.
        return _err("REQUEST_TOO_LARGE", "Request body is too large")
    if status == 422:
        return _err("INVALID_REQUEST_UNKNOWN", _MSG_422)
    if status == 429:
        return _err("RATE_LIMIT_REACHED", "Rate limit exceeded. Please try again later")
    if status == 503:
        return _err(
            "RETRIABLE_ERROR",
            "Airtable is temporarily unavailable. Please retry shortly.",
        )
    if status >= 500:
        return _err("SERVER_ERROR", "Try again. If the problem persists, contact support.")
    return _err("INVALID_REQUEST_UNKNOWN", _MSG_422)


class FakeAirtableError(Exception):
    """An error answer: raised inside the engine, turned into an HTTP response."""

    def __init__(self, status: int, body: Any):
        super().__init__(status, body)
        self.status = status
        self.body = body


def _fail(status: int, type_: str, message: str) -> FakeAirtableError:
    return FakeAirtableError(status, _err(type_, message))


def _invalid_request(message: str = _MSG_422) -> FakeAirtableError:
    return _fail(422, "INVALID_REQUEST_UNKNOWN", message)


# Helpers -------------------------------------------------------------------------------------


def _is_empty(value: Any) -> bool:
    """Airtable omits these values from ``fields``."""
    return value is None or value is False or value == "" or value == [] or value == {}


def _iso(instant: _dt.datetime) -> str:
    return instant.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{instant.microsecond // 1000:03d}Z"
    )


_parse_iso_datetime = parse_iso_datetime


def _truthy_param(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() in ("1", "true", "yes", "on")


_format_number = format_number


class _IdGen:
    """Deterministic ids: a prefix plus 14 base62 characters from an RNG seeded per kind."""

    def __init__(self, seed: int):
        self._rngs: dict[str, random.Random] = {}
        self._seed = seed

    def new(self, prefix: str) -> str:
        rng = self._rngs.get(prefix)
        if rng is None:
            rng = self._rngs[prefix] = random.Random(f"airtable-fake:{self._seed}:{prefix}")
        return prefix + "".join(rng.choice(_B62) for _ in range(14))


# Sorting -------------------------------------------------------------------------------------


blanks_first_sort_key = sort_key  # the rule lives in airtable_cached.rules.records
_plain_text = plain_text


def _sort_records(records: list[dict], sort: list[tuple[dict, str]]) -> list[dict]:
    """Stable multi-key sort: apply keys from the last to the first."""
    out = list(records)
    for field, direction in reversed(sort):
        name = field["name"]
        out.sort(key=lambda r: blanks_first_sort_key(r["fields"].get(name), field), reverse=(direction == "desc"))
    return out


# Formulas ------------------------------------------------------------------------------------


def formula_field_references(text: str) -> list[str]:
    """Names inside ``{...}`` in a formula, skipping string literals; ``\\}`` is an escaped brace."""
    refs: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            i += 1
            while i < n and text[i] != c:
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif c == "{":
            j, buf = i + 1, []
            while j < n and text[j] != "}":
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            refs.append("".join(buf))
            i = j + 1
        else:
            i += 1
    return refs


# Cell format "string" ------------------------------------------------------------------------


def _format_date(value: str, locale: str) -> str:
    try:
        d = _dt.date.fromisoformat(value[:10])
    except ValueError:
        return value
    loc = (locale or "").lower()
    if loc in ("en-us", "en"):
        return f"{d.month}/{d.day}/{d.year}"
    if loc.startswith("en-") or loc[:2] in ("fr", "de", "es", "it", "nl", "pt"):
        return f"{d.day:02d}/{d.month:02d}/{d.year}"
    return d.isoformat()


def _format_datetime(value: str, tz: str, locale: str) -> str:
    d = _parse_iso_datetime(value)
    if d is None:
        return value
    try:
        from zoneinfo import ZoneInfo

        d = d.astimezone(ZoneInfo(tz))
    except Exception:  # noqa: BLE001 - unknown zone: keep UTC
        pass
    date_part = _format_date(d.date().isoformat(), locale)
    if (locale or "").lower() in ("en-us", "en"):
        hour = d.hour % 12 or 12
        return f"{date_part} {hour}:{d.minute:02d}{'am' if d.hour < 12 else 'pm'}"
    return f"{date_part} {d.hour:02d}:{d.minute:02d}"


def cell_to_string(value: Any, field: dict | None, tz: str, locale: str) -> str:
    """MODELLING DECISION: an approximation of ``cellFormat=string``.

    Arrays are joined with ", "; numbers as text without a trailing ".0"; a checked checkbox is
    "checked"; dates follow the locale (en-us M/D/YYYY, other en-*/European DD/MM/YYYY, else ISO),
    date-times are converted to ``timeZone``; attachments are "filename (url)"; collaborators their
    name; link fields stay record ids (the fake knows no primary values of linked tables).
    """
    ftype = (field or {}).get("type")
    if isinstance(value, list):
        return ", ".join(cell_to_string(v, field, tz, locale) for v in value)
    if isinstance(value, dict):
        if "url" in value and "filename" in value:
            return f"{value['filename']} ({value['url']})"
        return _plain_text(value)
    if isinstance(value, str):
        if ftype == "date":
            return _format_date(value, locale)
        if ftype in ("dateTime", "createdTime", "lastModifiedTime"):
            return _format_datetime(value, tz, locale)
        return value
    return _plain_text(value)


# The fake ------------------------------------------------------------------------------------


class _Table:
    def __init__(self, tid: str, name: str, fields: list[dict], primary_id: str):
        self.id = tid
        self.name = name
        self.fields = fields  # schema dicts, with ids
        self.primary_id = primary_id
        self.base_id = ""
        self.records: list[dict] = []  # {"id","createdTime","fields"(by name), "_modified"}
        self.base_id = ""
        self.views: list[dict] = []  # {"id","name","type","formula","sort"}

    def field(self, key: str) -> dict | None:
        for f in self.fields:
            if f["name"] == key or f["id"] == key:
                return f
        return None

    def by_name(self) -> dict[str, dict]:
        return {f["name"]: f for f in self.fields}

    def find(self, record_id: str) -> dict | None:
        for r in self.records:
            if r["id"] == record_id:
                return r
        return None

    def known_field(self, key: str) -> dict:
        """A field the request was already checked to name (a KeyError here is a bug in the fake)."""
        found = self.field(key)
        if found is None:
            raise KeyError(key)
        return found

    def known_record(self, record_id: str) -> dict:
        """A record the request was already checked to name (a KeyError here is a bug in the fake)."""
        found = self.find(record_id)
        if found is None:
            raise KeyError(record_id)
        return found


class FakeAirtable:
    """An in-process fake of the Airtable Web API on 127.0.0.1 (see module docstring)."""

    #: Seconds of inactivity after which a list offset expires (422 LIST_RECORDS_ITERATOR_NOT_AVAILABLE).
    offset_ttl: float = 300.0

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
        self.token = token
        self.latency = latency
        self.rate_limit = rate_limit
        self.penalty_seconds = penalty_seconds
        self.schema_access = schema_access
        self.seed = seed
        self._port = port
        self._lock = threading.RLock()
        self._ids = _IdGen(seed)
        self._clock: float = 0
        self._bases: dict[str, dict] = {}  # base id -> {"name", "tables": list[_Table]}
        self._iterators: dict[str, dict] = {}
        self._iter_counter = 0
        self._faults: list[dict] = []
        self._recent: dict[str, deque] = {}
        self._penalty_until: dict[str, float] = {}
        self.requests: list[dict] = []
        #: The webhooks API (see airtable_cached/testing_webhooks.py); ``webhooks.access = False``
        #: answers 403 as for a token without the webhook:manage scope.
        self.webhooks = Webhooks(self._ids.new, self._now_instant)
        self.webhooks.access = webhook_access
        self._events: list[tuple[str, str, str, Any]] = []  # published when the request succeeds
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeAirtable:
        if self._server is not None:
            return self
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        server = _QuietServer(("127.0.0.1", self._port), Handler)
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

    # -- clock ----------------------------------------------------------------------------------

    def _tick(self) -> str:
        """The logical clock: base instant + one second per event (deterministic)."""
        self._clock += 1
        return _iso(_BASE_INSTANT + _dt.timedelta(seconds=self._clock))

    def now(self) -> str:
        """The logical clock's current time (ISO, UTC, ms); the last createdTime/modified time issued."""
        with self._lock:
            return _iso(_BASE_INSTANT + _dt.timedelta(seconds=self._clock))

    def _now_instant(self) -> _dt.datetime:
        return _BASE_INSTANT + _dt.timedelta(seconds=self._clock)

    def advance_clock(self, seconds: float) -> None:
        """Let time pass on the server (webhook expiry, payload retention, the Date header)."""
        with self._lock:
            self._clock += seconds

    # -- change events (webhook payloads) -------------------------------------------------------

    def _event(self, t: _Table, kind: str, item: Any) -> None:
        self._events.append((t.base_id, t.id, kind, item))

    def _publish_events(self) -> None:
        events, self._events = self._events, []
        for base_id, table_id, kind, item in events:
            self.webhooks.publish(base_id, table_id, kind, item)

    # -- setup ----------------------------------------------------------------------------------

    def add_base(self, base_id: str, name: str | None = None) -> str:
        with self._lock:
            base = self._bases.setdefault(base_id, {"name": name or f"Base {base_id}", "tables": []})
            if name:
                base["name"] = name
            return base_id

    def add_table(
        self,
        base_id: str,
        name: str,
        fields: list[dict] | None = None,
        records: Iterable[dict] = (),
        *,
        table_id: str | None = None,
        primary_field: str | None = None,
    ) -> str:
        with self._lock:
            self.add_base(base_id)
            records = list(records)
            plain = [r["fields"] if _is_full_record(r) else r for r in records]
            if fields is None:
                fields = _infer_schema(plain)
            schema = []
            for f in fields:
                f = copy.deepcopy(f)
                f.setdefault("type", "singleLineText")
                f.setdefault("id", self._ids.new("fld"))
                choices = (f.get("options") or {}).get("choices")
                if choices is not None:
                    for c in choices:
                        c.setdefault("id", self._ids.new("sel"))
                schema.append(f)
            if not schema:
                schema.append({"type": "singleLineText", "id": self._ids.new("fld"), "name": "Name"})
            primary = schema[0]
            if primary_field is not None:
                primary = next(f for f in schema if f["name"] == primary_field or f["id"] == primary_field)
            table = _Table(table_id or self._ids.new("tbl"), name, schema, primary["id"])
            table.base_id = base_id
            table.views.append({"id": self._ids.new("viw"), "name": "Grid view", "type": "grid", "formula": None, "sort": []})
            for raw, flds in zip(records, plain):
                stored = {}
                for k, v in flds.items():
                    col = table.field(k)
                    if col is None:
                        raise KeyError(f"record field {k!r} is not in the schema of {name!r}")
                    if not _is_empty(v):
                        stored[col["name"]] = copy.deepcopy(v)
                created = raw.get("createdTime") if flds is not raw else None
                rid = raw.get("id") if flds is not raw else None
                ts = self._tick()
                table.records.append(
                    {"id": rid or self._ids.new("rec"), "createdTime": created or ts, "fields": stored, "_modified": ts}
                )
            self._bases[base_id]["tables"].append(table)
            return table.id

    def add_view(
        self,
        base_id: str,
        table: str,
        name: str,
        *,
        formula: str | None = None,
        sort: Iterable[tuple[str, str]] = (),
    ) -> str:
        with self._lock:
            t = self._table_or_raise(base_id, table)
            vid = self._ids.new("viw")
            t.views.append({"id": vid, "name": name, "type": "grid", "formula": formula, "sort": list(sort)})
            return vid

    def add_field(self, base_id: str, table: str, field: dict) -> str:
        """Simulate a field added in Airtable's UI (``{"name", "type", "options"?}``); returns its id."""
        with self._lock:
            t = self._table_or_raise(base_id, table)
            added = {"id": self._ids.new("fld"), **copy.deepcopy(field)}
            t.fields.append(added)
            self._event(t, "field", added)
            self._publish_events()
            return added["id"]

    def records(self, base_id: str, table: str) -> list[dict]:
        with self._lock:
            t = self._table_or_raise(base_id, table)
            return [self._render(t, r) for r in t.records]

    def set_fields(self, base_id: str, table: str, record_id: str, fields: dict) -> dict:
        """Simulate another user's edit (PATCH semantics, no type checks). Bumps the modified time."""
        with self._lock:
            t = self._table_or_raise(base_id, table)
            rec = t.find(record_id)
            if rec is None:
                raise KeyError(record_id)
            before = dict(rec["fields"])
            for k, v in fields.items():
                f = t.field(k)
                if f is None:
                    raise KeyError(f"unknown field {k!r}")
                if _is_empty(v):
                    rec["fields"].pop(f["name"], None)
                else:
                    rec["fields"][f["name"]] = copy.deepcopy(v)
            self._sync_inverse(t, record_id, before, rec["fields"])
            rec["_modified"] = self._tick()
            self._event(t, "changed", rec)
            self._publish_events()
            return self._render(t, rec)

    def delete_record(self, base_id: str, table: str, record_id: str) -> None:
        """Simulate another user deleting a record."""
        with self._lock:
            t = self._table_or_raise(base_id, table)
            rec = t.find(record_id)
            if rec is None:
                raise KeyError(record_id)
            self._remove(t, rec)
            self._publish_events()

    def add_records(self, base_id: str, table: str, records: Iterable[dict]) -> list[dict]:
        """Simulate another user creating records (plain field dicts); returns them rendered."""
        with self._lock:
            t = self._table_or_raise(base_id, table)
            out = []
            for flds in records:
                ts = self._tick()
                stored = {t.known_field(k)["name"]: copy.deepcopy(v) for k, v in flds.items() if not _is_empty(v)}
                rid = self._ids.new("rec")
                rec = {"id": rid, "createdTime": ts, "_modified": ts, "fields": stored}
                t.records.append(rec)
                self._event(t, "created", rec)
                self._sync_inverse(t, rid, {}, stored)
                out.append(self._render(t, rec))
            self._publish_events()
            return out

    def schema(self, base_id: str, table: str) -> dict:
        with self._lock:
            return self._table_schema(self._table_or_raise(base_id, table))

    def expire_offsets(self) -> None:
        """Make every outstanding list offset invalid (as after Airtable's inactivity timeout)."""
        with self._lock:
            self._iterators.clear()

    def _table_or_raise(self, base_id: str, table: str) -> _Table:
        t = self._find_table(base_id, table)
        if t is None:
            raise KeyError(f"no table {table!r} in base {base_id!r}")
        return t

    def _find_table(self, base_id: str, table: str) -> _Table | None:
        base = self._bases.get(base_id)
        if base is None:
            return None
        for t in base["tables"]:
            if t.id == table:
                return t
        for t in base["tables"]:
            if t.name == table:
                return t
        return None

    # -- log and faults -------------------------------------------------------------------------

    def request_count(self, *, base_id: str | None = None, method: str | None = None, path_contains: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if _log_matches(r, base_id, method, path_contains))

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
            self._faults.append(
                {
                    "status": status, "count": count, "method": method.upper() if method else None,
                    "path_contains": path_contains, "body": body, "retry_after": retry_after,
                    "drop": drop_connection, "apply": apply,
                }
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> dict | None:
        for fault in self._faults:
            if fault["method"] and fault["method"] != method:
                continue
            if fault["path_contains"] and fault["path_contains"] not in path:
                continue
            fault["count"] -= 1
            if fault["count"] <= 0:
                self._faults.remove(fault)
            return fault
        return None

    # -- HTTP entry point -----------------------------------------------------------------------

    def handle_http(self, method: str, raw_path: str, headers: Any, body_bytes: bytes) -> tuple[int | None, Any, dict]:
        """Returns (status or None to drop the connection, json body, extra headers)."""
        if self.latency:
            time.sleep(self.latency)
        split = urlsplit(raw_path)
        segments = [unquote(s) for s in split.path.split("/") if s != ""]
        path = "/" + "/".join(segments)
        query = parse_qs(split.query, keep_blank_values=True)
        body: Any = None
        body_error = False
        if body_bytes:
            try:
                body = json.loads(body_bytes.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                body_error = True
        base_id = _base_of(segments)
        with self._lock:
            entry = {"method": method, "path": path, "query": query, "json": body, "status": None, "base_id": base_id}
            self.requests.append(entry)
            try:
                status, out, extra = self._dispatch_guarded(method, segments, path, query, body, body_error, headers, base_id)
            finally:
                self._events.clear()  # a request that failed changed nothing
            entry["status"] = status
            # Airtable's answers carry a Date header (see the recorded traffic); this one is the
            # server clock as the answer was made, which clients may use as a watermark.
            extra = {**extra, "Date": formatdate(self._now_instant().timestamp(), usegmt=True)}
            return status, out, extra

    def _dispatch_guarded(self, method, segments, path, query, body, body_error, headers, base_id):
        now = time.monotonic()
        fault = self._take_fault(method, path)
        if fault is not None:
            if fault["apply"]:
                self._dispatch_checked(method, segments, query, body, body_error, headers, base_id, now)
            if fault["drop"]:
                return None, None, {}
            extra = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
            return fault["status"], fault["body"] if fault["body"] is not None else standard_error_body(fault["status"]), extra
        return self._dispatch_checked(method, segments, query, body, body_error, headers, base_id, now)

    def _dispatch_checked(self, method, segments, query, body, body_error, headers, base_id, now):
        auth = headers.get("Authorization") or ""
        if auth != f"Bearer {self.token}":
            return 401, standard_error_body(401), {}
        if base_id is not None and self.rate_limit is not None:
            # MODELLING DECISION: no Retry-After on 429 (Airtable does not document one).
            # Requests answered 429 do not count towards the window (MODELLING DECISION; with a 30 s
            # penalty it makes no difference, and it lets tests use a short penalty).
            if self._penalty_until.get(base_id, 0.0) > now:
                return 429, standard_error_body(429), {}
            recent = self._recent.setdefault(base_id, deque())
            while recent and now - recent[0] >= 1.0:
                recent.popleft()
            if len(recent) + 1 > self.rate_limit:
                self._penalty_until[base_id] = now + self.penalty_seconds
                recent.clear()
                return 429, standard_error_body(429), {}
            recent.append(now)
        if body_error:
            return 422, _invalid_request("Could not parse request body as JSON").body, {}
        try:
            answer = self._dispatch(method, segments, query, body)
        except FakeAirtableError as exc:
            return exc.status, exc.body, {}
        self._publish_events()
        return 200, answer, {}

    def _dispatch(self, method: str, seg: list[str], query: dict, body: Any) -> Any:
        if len(seg) < 2 or seg[0] != "v0":
            raise FakeAirtableError(404, NOT_FOUND)
        if seg[1] == "meta":
            return self._meta(method, seg[2:])
        if seg[1] == "bases" and len(seg) >= 4 and seg[3] == "webhooks":
            if seg[2] not in self._bases:
                raise FakeAirtableError(404, NOT_FOUND)
            try:
                return self.webhooks.handle(method, seg[2], seg[4:], query, body)
            except WebhookError as exc:
                raise FakeAirtableError(exc.status, exc.body) from None
        base_id = seg[1]
        if base_id not in self._bases or len(seg) < 3:
            raise FakeAirtableError(404, NOT_FOUND)
        table = self._find_table(base_id, seg[2])
        if table is None:
            raise _fail(404, "TABLE_NOT_FOUND", f"Could not find table {seg[2]} in application {base_id}")
        rest = seg[3:]
        if body is not None and not isinstance(body, dict):
            raise _invalid_request()
        body = body or {}
        if not rest:
            if method == "GET":
                return self._list(table, _options_from_query(query))
            if method == "POST":
                return self._create(table, body)
            if method in ("PATCH", "PUT"):
                return self._update_many(table, body, replace=(method == "PUT"))
            if method == "DELETE":
                return self._delete_many(table, query)
            raise FakeAirtableError(404, NOT_FOUND)
        if len(rest) == 1 and rest[0] == "listRecords" and method == "POST":
            opts = _options_from_body(body)
            for key in ("timeZone", "userLocale"):
                if key in query:
                    opts[key] = query[key][-1]
            return self._list(table, opts)
        if len(rest) == 1:
            rid = rest[0]
            if method == "GET":
                opts = _options_from_query(query)
                rec = self._record_or_404(table, rid)
                return self._render_opts(table, rec, opts)
            if method in ("PATCH", "PUT"):
                self._record_or_404(table, rid)
                result = self._write_updates(table, [{"id": rid, "fields": body.get("fields")}], body, replace=(method == "PUT"))
                return result[0]
            if method == "DELETE":
                rec = self._record_or_404(table, rid)
                self._remove(table, rec)
                return {"deleted": True, "id": rid}
        raise FakeAirtableError(404, NOT_FOUND)

    def _record_or_404(self, table: _Table, rid: str) -> dict:
        rec = table.find(rid)
        if rec is None:
            if not _RECORD_ID_RE.match(rid):
                # MODELLING DECISION: an id that does not look like a record id gets the bare 404.
                raise FakeAirtableError(404, NOT_FOUND)
            raise _fail(404, "MODEL_ID_NOT_FOUND", "Record not found")  # as in recorded traffic
        return rec

    # -- meta -----------------------------------------------------------------------------------

    def _meta(self, method: str, seg: list[str]) -> Any:
        if method != "GET":
            raise FakeAirtableError(404, NOT_FOUND)
        if seg == ["whoami"]:
            # MODELLING DECISION: a fixed user id; scopes listed as for a PAT with the needed scopes.
            scopes = ["data.records:read", "data.records:write"]
            if self.schema_access:
                scopes.append("schema.bases:read")
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

    def _table_schema(self, t: _Table) -> dict:
        fields = []
        for f in t.fields:
            d = {"type": f["type"], "id": f["id"], "name": f["name"]}
            for k, v in f.items():
                if k not in d:
                    d[k] = copy.deepcopy(v)
            fields.append(d)
        return {
            "id": t.id, "name": t.name, "primaryFieldId": t.primary_id, "fields": fields,
            "views": [{"id": v["id"], "name": v["name"], "type": v["type"]} for v in t.views],
        }

    # -- rendering ------------------------------------------------------------------------------

    def _render(self, t: _Table, rec: dict, *, by_id: bool = False, only: set[str] | None = None,
                cell_format: str = "json", tz: str = "", locale: str = "", comment_count: bool = False) -> dict:
        fields = {}
        for f in t.fields:  # schema order
            name = f["name"]
            if name not in rec["fields"] or (only is not None and name not in only):
                continue
            value = rec["fields"][name]
            if _is_empty(value):
                continue
            value = cell_to_string(value, f, tz, locale) if cell_format == "string" else copy.deepcopy(value)
            fields[f["id"] if by_id else name] = value
        out = {"id": rec["id"], "fields": fields, "createdTime": rec["createdTime"]}
        if comment_count:
            out["commentCount"] = 0
        return out

    def _render_opts(self, t: _Table, rec: dict, opts: dict, only: set[str] | None = None) -> dict:
        cell_format = opts.get("cellFormat") or "json"
        if cell_format not in ("json", "string"):
            raise _invalid_request(f"Invalid cellFormat: {cell_format}")
        tz, locale = opts.get("timeZone") or "", opts.get("userLocale") or ""
        if cell_format == "string" and (not tz or not locale):
            raise _invalid_request("The 'timeZone' and 'userLocale' parameters are required when 'cellFormat' is 'string'")
        return self._render(
            t, rec, by_id=_truthy_param(opts.get("returnFieldsByFieldId")), only=only, cell_format=cell_format,
            tz=tz, locale=locale, comment_count="commentCount" in (opts.get("recordMetadata") or []),
        )

    # -- list -----------------------------------------------------------------------------------

    def _list(self, t: _Table, opts: dict) -> dict:
        page_size = _int_option(opts.get("pageSize"), default=100) or 0
        if not 1 <= page_size <= 100:
            raise _invalid_request()
        max_records = _int_option(opts.get("maxRecords"), default=None)
        if max_records is not None and max_records < 1:
            raise _invalid_request()
        only = None
        if opts.get("fields") is not None:
            only = set()
            for key in opts["fields"]:
                f = t.field(key)
                if f is None:
                    raise _fail(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{key}"')
                only.add(f["name"])
        # validate the rendering options before doing any work
        self._render_opts(t, {"id": "", "createdTime": "", "fields": {}}, opts)

        offset = opts.get("offset")
        now = time.monotonic()
        if offset:
            itr, pos = self._resolve_offset(t, str(offset), now, opts)
            ids = itr["ids"]
        else:
            ids = [r["id"] for r in self._query(t, opts)]
            if max_records is not None:
                ids = ids[:max_records]
            self._iter_counter += 1
            token = "itr" + _counter_id(self._iter_counter)
            itr = {"token": token, "table": t.id, "ids": ids, "index": {rid: i for i, rid in enumerate(ids)},
                   "listing": _listing(opts)}
            pos = 0
        itr["last_used"] = now
        page_ids = ids[pos:pos + page_size]
        by_id = {r["id"]: r for r in t.records}
        records = [self._render_opts(t, by_id[rid], opts, only) for rid in page_ids if rid in by_id]
        out: dict = {"records": records}
        next_pos = pos + page_size
        if next_pos < len(ids):
            self._iterators[itr["token"]] = itr
            out["offset"] = f"{itr['token']}/{ids[next_pos]}"
        else:
            self._iterators.pop(itr["token"], None)
        return out

    def _resolve_offset(self, t: _Table, offset: str, now: float, opts: dict) -> tuple[dict, int]:
        token, _, rid = offset.partition("/")
        itr = self._iterators.get(token)
        if itr is not None and now - itr["last_used"] > self.offset_ttl:
            self._iterators.pop(token, None)
            itr = None
        if itr is not None and itr.get("listing") != _listing(opts):
            itr = None  # an offset of another query (issue 9: Airtable refuses it as expired)
        if itr is None or itr["table"] != t.id or rid not in itr["index"]:
            raise _fail(422, "LIST_RECORDS_ITERATOR_NOT_AVAILABLE", "LIST_RECORDS_ITERATOR_NOT_AVAILABLE")
        return itr, itr["index"][rid]

    def _query(self, t: _Table, opts: dict) -> list[dict]:
        """Filter and order per view, formula and sort (MODELLING DECISION: explicit sort overrides the view's)."""
        records = list(t.records)
        sort_spec: list[tuple[dict, str]] = []
        view_ref = opts.get("view")
        if view_ref:
            view = next((v for v in t.views if v["id"] == view_ref), None) or next(
                (v for v in t.views if v["name"] == view_ref), None
            )
            if view is None:
                # MODELLING DECISION: the type and message of Airtable's unknown-view error are a guess.
                raise _fail(422, "VIEW_NAME_NOT_FOUND", f'View "{view_ref}" not found')
            if view["formula"]:
                records = self._filter(t, records, view["formula"])
            sort_spec = [(self._sort_field(t, name), _direction(d)) for name, d in view["sort"]]
        formula = opts.get("filterByFormula")
        if formula:
            records = self._filter(t, records, str(formula))
        if opts.get("sort"):
            sort_spec = [(self._sort_field(t, s.get("field")), _direction(s.get("direction"))) for s in opts["sort"]]
        if sort_spec:
            records = _sort_records(records, sort_spec)
        return records

    def _sort_field(self, t: _Table, name: Any) -> dict:
        f = t.field(name) if isinstance(name, str) else None
        if f is None:
            raise _fail(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{name}"')
        return f

    def _filter(self, t: _Table, records: list[dict], formula: str) -> list[dict]:
        try:  # lazy: the formula engine is a separate part of the project
            from airtable_cached.formula import FormulaError, matches, parse
        except ImportError as exc:
            raise _fail(500, "FAKE_AIRTABLE_NO_FORMULA_ENGINE", f"airtable_cached.formula is not available: {exc}") from None
        try:
            node = parse(formula)
        except FormulaError as exc:
            unknown = self._unknown_refs(t, formula_field_references(formula))
            if unknown:
                raise _unknown_fields_error(unknown) from None
            raise _fail(422, "INVALID_FILTER_BY_FORMULA", f"The formula for filtering records is invalid: {exc}") from None
        unknown = self._unknown_refs(t, list(_ast_field_names(node)) + formula_field_references(formula))
        if unknown:
            raise _unknown_fields_error(unknown)
        field_ids = {f["id"]: f["name"] for f in t.fields}
        out = []
        for r in records:
            rd = {"id": r["id"], "createdTime": r["createdTime"], "fields": self._formula_cells(t, r["fields"]),
                  "lastModifiedTime": r["_modified"]}
            try:
                ok = matches(node, rd, field_ids=field_ids)
            except FormulaError:
                ok = False  # an error value excludes the record, as in Airtable
            if ok:
                out.append(r)
        return out

    def _formula_cells(self, t: _Table, fields: dict) -> dict:
        """Cells as a formula sees them: a link reads as its records' primary values."""
        out = copy.deepcopy(fields)
        for f in t.fields:
            if f["type"] == "multipleRecordLinks" and f["name"] in out:
                linked = self._find_table_by_id(((f.get("options") or {}).get("linkedTableId")) or "")
                if linked is None:
                    continue
                primary = linked.known_field(linked.primary_id)["name"]
                shown = [(linked.find(x) or {"fields": {}})["fields"].get(primary) for x in out[f["name"]]]
                out[f["name"]] = [v for v in shown if not _is_empty(v)]
        return out

    @staticmethod
    def _unknown_refs(t: _Table, names: list[str]) -> list[str]:
        return list(dict.fromkeys(n for n in names if t.field(n) is None))

    # -- writes ---------------------------------------------------------------------------------

    def _convert_fields(self, t: _Table, fields: Any, typecast: bool, pending_choices: dict) -> dict[str, Any]:
        """Validate and convert one record's written fields; returns {name: value or None}."""
        if not isinstance(fields, dict):
            raise _invalid_request()
        out: dict[str, Any] = {}
        for key, value in fields.items():
            f = t.field(key)
            if f is None:
                raise _fail(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{key}"')
            if f["type"] in COMPUTED_TYPES:
                raise _fail(422, "INVALID_VALUE_FOR_COLUMN", f'Field "{f["name"]}" cannot accept a value because the field is computed')
            out[f["name"]] = _convert_value(f, value, typecast, pending_choices)
            if f["type"] == "multipleRecordLinks" and out[f["name"]] is not None:
                out[f["name"]] = self._check_links(f, out[f["name"]], typecast, pending_choices)
        return out

    # -- links ----------------------------------------------------------------------------------

    def _check_links(self, f: dict, ids: list[str], typecast: bool, pending: dict) -> list[str]:
        """Every linked id must name a record of the linked table (422 ``ROW_DOES_NOT_EXIST``, as
        issue 9 reports Airtable's answer). With ``typecast`` a value that is no record id of that
        table is taken as a primary value: the record having it, else a new record made with it
        (MODELLING DECISION: the first record with that primary value)."""
        linked = self._find_table_by_id(((f.get("options") or {}).get("linkedTableId")) or "")
        if linked is None:
            return ids
        out = []
        for item in ids:
            if linked.find(item) is not None:
                out.append(item)
            elif not typecast:
                if not _RECORD_ID_RE.match(item):
                    raise _cannot_accept(f)
                raise _fail(422, "ROW_DOES_NOT_EXIST", f"Record ID {item} does not exist")
            else:
                primary = linked.known_field(linked.primary_id)["name"]
                hit = next((r for r in linked.records if r["fields"].get(primary) == item), None)
                if hit is not None:
                    out.append(hit["id"])
                else:
                    # Made when the request is applied (ids are drawn only for requests that succeed);
                    # one record per new primary value in a request (MODELLING DECISION).
                    made = pending.setdefault("__links__", [])
                    if (linked, primary, item) not in made:
                        made.append((linked, primary, item))
                    out.append(_NEW_LINK + str(made.index((linked, primary, item))))
        return list(dict.fromkeys(out))

    def _find_table_by_id(self, table_id: str) -> _Table | None:
        for base in self._bases.values():
            for t in base["tables"]:
                if t.id == table_id:
                    return t
        return None

    def _make_pending_links(self, pending: dict, converted: list[dict]) -> None:
        """Create the records a typecast link named by primary value, and put their ids in place."""
        made = []
        for linked, primary, value in pending.pop("__links__", []):
            rec = self._insert(linked, {primary: value})
            made.append(rec["id"])
        if not made:
            return
        for fields in converted:
            for name, value in fields.items():
                if isinstance(value, list):
                    fields[name] = [made[int(v[len(_NEW_LINK):])] if isinstance(v, str) and v.startswith(_NEW_LINK) else v
                                    for v in value]

    def _link_fields(self, t: _Table) -> list[tuple[dict, _Table, dict]]:
        """(field, linked table, inverse field) for each link field with an inverse."""
        out = []
        for f in t.fields:
            options = f.get("options") or {}
            if f["type"] != "multipleRecordLinks" or not options.get("inverseLinkFieldId"):
                continue
            linked = self._find_table_by_id(options.get("linkedTableId") or "")
            inverse = linked.field(options["inverseLinkFieldId"]) if linked else None
            if linked is not None and inverse is not None:
                out.append((f, linked, inverse))
        return out

    def _sync_inverse(self, t: _Table, rid: str, before: dict, after: dict) -> None:
        """Airtable keeps both sides of a link: a record linked gains this record in its inverse
        field (appended: MODELLING DECISION, as the recorded gatsby-source-airtable tables suggest),
        a record unlinked loses it."""
        for f, linked, inverse in self._link_fields(t):
            old = before.get(f["name"]) or []
            new = after.get(f["name"]) or []
            for other_id in [x for x in old if x not in new]:
                other = linked.find(other_id)
                if other is not None:
                    kept = [x for x in other["fields"].get(inverse["name"], []) if x != rid]
                    _set_or_clear(other["fields"], inverse["name"], kept)
            for other_id in [x for x in new if x not in old]:
                other = linked.find(other_id)
                if other is not None:
                    current = other["fields"].get(inverse["name"], [])
                    if rid not in current:
                        other["fields"][inverse["name"]] = [*current, rid]

    def _write_opts(self, body: dict) -> dict:
        return {"returnFieldsByFieldId": body.get("returnFieldsByFieldId")}

    def _create(self, t: _Table, body: dict) -> dict:
        typecast = bool(body.get("typecast"))
        pending: dict = {}
        if "records" in body:
            recs = body["records"]
            if not isinstance(recs, list) or not 1 <= len(recs) <= 10:
                raise _fail(422, "INVALID_RECORDS", "You must provide an array of up to 10 record objects, each with an \"id\" field and a \"fields\" object")
            converted = []
            for r in recs:
                if not isinstance(r, dict):
                    raise _fail(422, "INVALID_RECORDS", "Invalid records")
                converted.append(self._convert_fields(t, r.get("fields", {}), typecast, pending))
            self._make_pending_links(pending, converted)
            self._commit_choices(t, pending)
            made = [self._insert(t, c) for c in converted]
            return {"records": [self._render_opts(t, m, self._write_opts(body)) for m in made]}
        one = self._convert_fields(t, body.get("fields", {}), typecast, pending)
        self._make_pending_links(pending, [one])
        self._commit_choices(t, pending)
        return self._render_opts(t, self._insert(t, one), self._write_opts(body))

    def _insert(self, t: _Table, converted: dict) -> dict:
        ts = self._tick()
        rid = self._ids.new("rec")
        stored = {k: v for k, v in converted.items() if not _is_empty(v)}
        rec = {"id": rid, "createdTime": ts, "_modified": ts, "fields": stored}
        t.records.append(rec)
        self._event(t, "created", rec)
        self._sync_inverse(t, rid, {}, stored)
        return rec

    def _remove(self, t: _Table, rec: dict) -> None:
        t.records.remove(rec)
        self._event(t, "destroyed", rec["id"])
        self._sync_inverse(t, rec["id"], rec["fields"], {})

    def _commit_choices(self, t: _Table, pending: dict) -> None:
        for fid, names in pending.items():
            f = t.known_field(fid)
            choices = f.setdefault("options", {}).setdefault("choices", [])
            for n in names:
                if n not in [c["name"] for c in choices]:
                    choices.append({"id": self._ids.new("sel"), "name": n, "color": "grayLight2"})

    def _update_many(self, t: _Table, body: dict, replace: bool) -> dict:
        recs = body.get("records")
        if not isinstance(recs, list) or not 1 <= len(recs) <= 10 or not all(isinstance(r, dict) for r in recs):
            raise _fail(422, "INVALID_RECORDS", "You must provide an array of up to 10 record objects, each with an \"id\" field and a \"fields\" object")
        upsert = body.get("performUpsert")
        if upsert is not None:
            return self._upsert(t, recs, body, replace, upsert)
        for r in recs:
            if not isinstance(r.get("id"), str):
                raise _fail(422, "INVALID_RECORDS", "Each record must have an \"id\" field")
            if t.find(r["id"]) is None:
                # MODELLING DECISION: an unknown id in a batch update fails the whole request with 422
                # ROW_DOES_NOT_EXIST (single-record endpoints answer 404 MODEL_ID_NOT_FOUND as recorded).
                raise _fail(422, "ROW_DOES_NOT_EXIST", f"Record ID {r['id']} does not exist")
        return {"records": self._write_updates(t, recs, body, replace)}

    def _write_updates(self, t: _Table, recs: list[dict], body: dict, replace: bool) -> list[dict]:
        typecast = bool(body.get("typecast"))
        pending: dict = {}
        converted = [self._convert_fields(t, r.get("fields", {}) if r.get("fields") is not None else {}, typecast, pending) for r in recs]
        self._make_pending_links(pending, converted)
        self._commit_choices(t, pending)
        out = []
        for r, c in zip(recs, converted):
            rec = t.known_record(r["id"])
            self._apply(t, rec, c, replace)
            out.append(self._render_opts(t, rec, self._write_opts(body)))
        return out

    def _apply(self, t: _Table, rec: dict, converted: dict, replace: bool) -> None:
        before = dict(rec["fields"])
        self._apply_fields(t, rec, converted, replace)
        self._sync_inverse(t, rec["id"], before, rec["fields"])

    def _apply_fields(self, t: _Table, rec: dict, converted: dict, replace: bool) -> None:
        if replace:
            # PUT clears every field not given, except computed ones (which the user cannot set).
            keep = {k: v for k, v in rec["fields"].items() if (t.field(k) or {}).get("type") in COMPUTED_TYPES}
            rec["fields"] = keep
        for k, v in converted.items():
            if _is_empty(v):
                rec["fields"].pop(k, None)
            else:
                rec["fields"][k] = v
        rec["_modified"] = self._tick()
        self._event(t, "changed", rec)

    def _upsert(self, t: _Table, recs: list[dict], body: dict, replace: bool, upsert: Any) -> dict:
        merge_on = upsert.get("fieldsToMergeOn") if isinstance(upsert, dict) else None
        if not isinstance(merge_on, list) or not 1 <= len(merge_on) <= 3:
            raise _invalid_request("fieldsToMergeOn must be an array of 1 to 3 field names or ids")
        merge_fields = []
        for key in merge_on:
            f = t.field(key) if isinstance(key, str) else None
            if f is None:
                raise _fail(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{key}"')
            if f["type"] in COMPUTED_TYPES or f["type"] in _NOT_A_MERGE_KEY:
                # MODELLING DECISION: computed fields and values with no single value to match on.
                raise _fail(422, "INVALID_VALUE_FOR_COLUMN", f'Field "{f["name"]}" cannot be used in fieldsToMergeOn')
            merge_fields.append(f)
        typecast = bool(body.get("typecast"))
        pending: dict = {}
        plan = []  # (existing record id or None, converted)
        for r in recs:
            converted = self._convert_fields(t, r.get("fields") or {}, typecast, pending)
            if "id" in r:
                if t.find(r["id"]) is None:
                    raise _fail(422, "ROW_DOES_NOT_EXIST", f"Record ID {r['id']} does not exist")
                plan.append((r["id"], converted))
                continue
            # A blank key value is no key (issue 9: Airtable refuses it).
            missing = [f["name"] for f in merge_fields if _is_empty(converted.get(f["name"]))]
            if missing:
                raise _fail(422, "INVALID_RECORDS", f"Missing value for fieldsToMergeOn field(s): {', '.join(missing)}")
            plan.append((None, converted))
        # Validation done: apply (records in one request are matched in order, so a key created
        # earlier in the same request is updated by a later record with the same key).
        self._make_pending_links(pending, [c for _rid, c in plan])
        snapshot = copy.deepcopy(t.records), self._clock, copy.deepcopy(self._ids._rngs)
        created, updated, out = [], [], []
        try:
            for rid, converted in plan:
                if rid is None:
                    key = [converted[f["name"]] for f in merge_fields]
                    hits = [x for x in t.records if [_merge_value(x["fields"].get(f["name"])) for f in merge_fields] == [_merge_value(k) for k in key]]
                    if len(hits) > 1:
                        # MODELLING DECISION: error type and message for an ambiguous upsert are a guess.
                        raise _fail(422, "INVALID_RECORDS", "Cannot update more than one record that matches fieldsToMergeOn")
                    if hits:
                        rec = hits[0]
                        self._apply(t, rec, converted, replace)
                        if rec["id"] not in created and rec["id"] not in updated:
                            updated.append(rec["id"])
                    else:
                        rec = self._insert(t, converted)
                        created.append(rec["id"])
                else:
                    rec = t.known_record(rid)
                    self._apply(t, rec, converted, replace)
                    if rid not in updated and rid not in created:
                        updated.append(rid)
                out.append(rec)
        except FakeAirtableError:
            t.records, self._clock, self._ids._rngs = snapshot
            raise
        self._commit_choices(t, pending)
        opts = self._write_opts(body)
        return {"createdRecords": created, "records": [self._render_opts(t, r, opts) for r in out], "updatedRecords": updated}

    def _delete_many(self, t: _Table, query: dict) -> dict:
        ids = query.get("records[]", []) + query.get("records", [])
        if not 1 <= len(ids) <= 10:
            raise _fail(422, "INVALID_RECORDS", "You must provide an array of up to 10 record IDs")
        for rid in ids:
            if t.find(rid) is None:
                # MODELLING DECISION: as for batch updates.
                raise _fail(422, "ROW_DOES_NOT_EXIST", f"Record ID {rid} does not exist")
        for rid in ids:
            rec = t.find(rid)
            if rec is not None:
                self._remove(t, rec)
        return {"records": [{"deleted": True, "id": rid} for rid in ids]}


# Module-level helpers ------------------------------------------------------------------------


def _unknown_fields_error(names: list[str]) -> FakeAirtableError:
    return _fail(422, "INVALID_FILTER_BY_FORMULA",
                 "The formula for filtering records is invalid: Unknown field names: " + ", ".join(n.lower() for n in names))


def _ast_field_names(node: Any, _depth: int = 0) -> Iterable[str]:
    """Names of field-reference nodes (class ``Field`` with a ``name``) anywhere in a formula AST."""
    if _depth > 500:
        return
    if type(node).__name__ == "Field" and isinstance(getattr(node, "name", None), str):
        yield node.name
        return
    children: Iterable[Any] = ()
    if isinstance(node, (list, tuple)):
        children = node
    elif hasattr(node, "__dataclass_fields__"):
        children = [getattr(node, k) for k in node.__dataclass_fields__]
    for child in children:
        yield from _ast_field_names(child, _depth + 1)


def _is_full_record(r: dict) -> bool:
    """``{"id"?, "createdTime"?, "fields"}`` (Airtable shape) rather than a plain field dict."""
    return isinstance(r.get("fields"), dict) and set(r) <= {"id", "createdTime", "fields"}


def _listing(opts: dict) -> str:
    """The query an offset belongs to: every option but the offset and the page size."""
    return json.dumps({k: v for k, v in opts.items() if k not in ("offset", "pageSize")}, sort_keys=True, default=str)


def _merge_value(v: Any) -> Any:
    return None if _is_empty(v) else v


def _direction(d: Any) -> str:
    d = (d or "asc").lower() if isinstance(d, str) or d is None else d
    if d not in ("asc", "desc"):
        raise _invalid_request(f"Invalid sort direction: {d}")
    return d


def _int_option(value: Any, default: int | None) -> int | None:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise _invalid_request()
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _invalid_request() from None


def _counter_id(n: int) -> str:
    s = ""
    while n:
        n, r = divmod(n, 62)
        s = _B62[r] + s
    return s.rjust(14, "0")


def _base_of(segments: list[str]) -> str | None:
    if len(segments) >= 3 and segments[0] == "v0" and segments[1] == "bases":
        return segments[2]  # the webhooks API: /v0/bases/{base}/webhooks...
    if len(segments) >= 2 and segments[0] == "v0":
        if segments[1] == "meta":
            if len(segments) >= 4 and segments[2] == "bases":
                return segments[3]
            return None
        return segments[1]
    return None


def _log_matches(r: dict, base_id: str | None, method: str | None, path_contains: str | None) -> bool:
    if base_id is not None and r["base_id"] != base_id:
        return False
    if method is not None and r["method"] != method.upper():
        return False
    if path_contains is not None and path_contains not in r["path"]:
        return False
    return True


_SORT_RE = re.compile(r"^sort\[(\d+)\]\[(field|direction)\]$")


def _options_from_query(query: dict[str, list[str]]) -> dict:
    opts: dict[str, Any] = {}
    for key in ("pageSize", "maxRecords", "offset", "view", "filterByFormula", "cellFormat", "timeZone",
                "userLocale", "returnFieldsByFieldId"):
        if key in query:
            opts[key] = query[key][-1]
    if "fields[]" in query or "fields" in query:
        opts["fields"] = query.get("fields[]", []) + query.get("fields", [])
    sorts: dict[int, dict] = {}
    for key, values in query.items():
        m = _SORT_RE.match(key)
        if m:
            sorts.setdefault(int(m.group(1)), {})[m.group(2)] = values[-1]
    if sorts:
        opts["sort"] = [sorts[i] for i in sorted(sorts)]
    meta = query.get("recordMetadata[]", []) + query.get("recordMetadata", [])
    if meta:
        opts["recordMetadata"] = meta
    return opts


def _options_from_body(body: dict) -> dict:
    opts = {k: v for k, v in body.items() if v is not None}
    if "fields" in opts and not isinstance(opts["fields"], list):
        raise _invalid_request()
    if "sort" in opts:
        if not isinstance(opts["sort"], list) or not all(isinstance(s, dict) for s in opts["sort"]):
            raise _invalid_request()
    return opts


def _infer_schema(records: list[dict]) -> list[dict]:
    """MODELLING DECISION: infer field types from values (bool -> checkbox, number -> number, list of
    str -> multipleSelects with the values seen as choices, anything else -> singleLineText)."""
    order: dict[str, dict] = {}
    for flds in records:
        for k, v in flds.items():
            f = order.setdefault(k, {"name": k, "type": None})
            if f["type"] is None and not _is_empty(v):
                if isinstance(v, bool):
                    f["type"] = "checkbox"
                elif isinstance(v, (int, float)):
                    f["type"] = "number"
                elif isinstance(v, list) and all(isinstance(x, str) for x in v):
                    f["type"] = "multipleSelects"
                else:
                    f["type"] = "singleLineText"
            if isinstance(v, list) and f["type"] == "multipleSelects":
                choices = f.setdefault("options", {"choices": []})["choices"]
                for x in v:
                    if x not in [c["name"] for c in choices]:
                        choices.append({"name": x, "color": "grayLight2"})
    for f in order.values():
        if f["type"] is None:
            f["type"] = "singleLineText"
        if f["type"] == "number":
            f.setdefault("options", {"precision": 0})
    return list(order.values())


_NEW_LINK = "\0new-link:"
_NOT_A_MERGE_KEY = frozenset({"multipleRecordLinks", "multipleAttachments", "multipleSelects", "multipleCollaborators",
                              "singleCollaborator", "checkbox"})


def _set_or_clear(fields: dict, name: str, value: list) -> None:
    if value:
        fields[name] = value
    else:
        fields.pop(name, None)


def _cannot_accept(f: dict) -> FakeAirtableError:
    return _fail(422, "INVALID_VALUE_FOR_COLUMN", f'Field "{f["name"]}" cannot accept the provided value')


def _convert_value(f: dict, value: Any, typecast: bool, pending_choices: dict) -> Any:
    """Type checks and ``typecast`` conversions for one written value. None means clear."""
    if value is None:
        return None
    ftype = f["type"]
    if ftype in _NUMBER_TYPES:
        if isinstance(value, bool):
            raise _cannot_accept(f)
        if isinstance(value, (int, float)):
            return value
        if typecast and isinstance(value, str):
            text = value.strip().replace(",", "")
            if text == "":
                return None
            try:
                num = float(text)
            except ValueError:
                return None  # MODELLING DECISION: an unparseable typecast number becomes blank
            return int(num) if num.is_integer() else num
        raise _cannot_accept(f)
    if ftype == "checkbox":
        if isinstance(value, bool):
            return value
        if typecast and isinstance(value, (str, int, float)):
            return str(value).strip().lower() in ("1", "true", "yes", "checked", "on", "x")
        raise _cannot_accept(f)
    if ftype in ("singleSelect", "multipleSelects"):
        choices = [c.get("name") for c in ((f.get("options") or {}).get("choices") or [])]
        if ftype == "singleSelect":
            if typecast and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = _format_number(value)
            if not isinstance(value, str):
                raise _cannot_accept(f)
            items = [value] if value != "" else []
        else:
            if typecast and isinstance(value, str):
                value = [x.strip() for x in value.split(",") if x.strip()]
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise _cannot_accept(f)
            items = value
        for item in items:
            if item not in choices:
                if not typecast:
                    raise _fail(422, "INVALID_MULTIPLE_CHOICE_OPTIONS", f'Insufficient permissions to create new select option ""{item}""')
                pending_choices.setdefault(f["id"], [])
                if item not in pending_choices[f["id"]]:
                    pending_choices[f["id"]].append(item)
        return value if ftype == "singleSelect" else list(dict.fromkeys(items))
    if ftype in _TEXT_TYPES:
        if isinstance(value, str):
            # Airtable stores rich text as Markdown ending with a newline (recorded: refine's create
            # of "bar" answered "bar\n").
            return value + "\n" if ftype == "richText" and value and not value.endswith("\n") else value
        if typecast and isinstance(value, (int, float)) and not isinstance(value, bool):
            return _format_number(value)
        raise _cannot_accept(f)
    if ftype == "date":
        if isinstance(value, str):
            d = _parse_iso_datetime(value) if "T" in value else None
            try:
                return d.date().isoformat() if d else _dt.date.fromisoformat(value).isoformat()
            except ValueError:
                raise _cannot_accept(f) from None
        raise _cannot_accept(f)
    if ftype == "dateTime":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _iso(_dt.datetime.fromtimestamp(value / 1000, tz=_dt.UTC))
        if isinstance(value, str):
            d = _parse_iso_datetime(value)
            if d is None:
                raise _cannot_accept(f)
            return _iso(d)
        raise _cannot_accept(f)
    if ftype == "multipleRecordLinks":
        if typecast and isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return list(value)
        if isinstance(value, list) and all(isinstance(x, dict) and "id" in x for x in value):
            return [x["id"] for x in value]
        raise _cannot_accept(f)
    if ftype == "multipleAttachments":
        if not isinstance(value, list) or not all(isinstance(x, dict) and ("url" in x or "id" in x) for x in value):
            raise _cannot_accept(f)
        out = []
        for i, x in enumerate(value):
            att = dict(x)
            att.setdefault("id", "att" + _counter_id(zlib.crc32(f"{i}:{att.get('url', '')}".encode()) + 1))
            if "url" in att:
                att.setdefault("filename", att["url"].rstrip("/").rsplit("/", 1)[-1] or "file")
            out.append(att)
        return out
    return copy.deepcopy(value)


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
        try:
            status, out, extra = self.fake.handle_http(self.command, self.path, self.headers, body)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: answer 500 and say what it was
            status, out, extra = 500, _err("FAKE_AIRTABLE_BUG", f"{type(exc).__name__}: {exc}"), {}
        if status is None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        data = json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._date = extra.pop("Date", None)
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


# Seed data -----------------------------------------------------------------------------------

_STATUS_CHOICES = [("New", "blueLight2"), ("Contacted", "yellowLight2"), ("Qualified", "greenLight2"), ("Lost", "redLight2")]
_TAG_CHOICES = ["Enterprise", "SMB", "Warm", "Cold", "Referral", "Conference", "Inbound", "Outbound"]

LEADS_SCHEMA: list[dict] = [
    {"name": "Full Name", "type": "singleLineText"},
    {"name": "Email", "type": "email"},
    {"name": "Company", "type": "singleLineText"},
    {"name": "Website", "type": "url"},
    {"name": "Company Description", "type": "multilineText"},
    {"name": "LinkedIn URL", "type": "url"},
    {"name": "Status", "type": "singleSelect",
     "options": {"choices": [{"name": n, "color": c} for n, c in _STATUS_CHOICES]}},
    {"name": "Score", "type": "number", "options": {"precision": 0}},
    {"name": "Last Contacted", "type": "date", "options": {"dateFormat": {"name": "iso", "format": "YYYY-MM-DD"}}},
    {"name": "Tags", "type": "multipleSelects",
     "options": {"choices": [{"name": n, "color": "grayLight2"} for n in _TAG_CHOICES]}},
    {"name": "Opted Out", "type": "checkbox", "options": {"icon": "check", "color": "greenBright"}},
]

_FIRST = ["Ada", "Ben", "Chloé", "Dmitri", "Elena", "Farah", "George", "Hana", "Ivan", "Julia", "Kofi", "Lena",
          "Marco", "Nina", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wei", "Yusuf", "Zoe"]
_LAST = ["Anderson", "Brown", "Chen", "Dubois", "Evans", "Fischer", "García", "Hughes", "Ito", "Jensen", "Kowalski",
         "López", "Müller", "Nakamura", "O'Brien", "Patel", "Rossi", "Smith", "Tanaka", "Usman", "Virtanen", "Wong"]
_CO_A = ["Acme", "Blue", "Bright", "Cobalt", "Delta", "Evergreen", "Falcon", "Granite", "Harbor", "Iris", "Juniper",
         "Kite", "Lumen", "Maple", "North", "Orbit", "Pine", "Quartz", "River", "Summit", "Tidal", "Vertex"]
_CO_B = ["Analytics", "Labs", "Systems", "Logistics", "Health", "Robotics", "Software", "Foods", "Energy", "Media",
         "Partners", "Capital", "Studio", "Networks", "Bio"]
_SUFFIX = ["Inc", "LLC", "GmbH", "Ltd", "SAS", "Co"]
_DESC = ["builds {x} tools for mid-market teams", "provides {x} services across Europe",
         "is a B2B startup focused on {x}", "sells {x} software to hospitals", "runs a {x} marketplace"]
_TOPIC = ["supply-chain", "analytics", "payments", "compliance", "recruiting", "energy", "logistics", "security"]


def _slug(text: str) -> str:
    import unicodedata

    t = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", t.lower()).strip("-")


def seed_leads(n: int, *, seed: int = 0) -> list[dict]:
    """``n`` deterministic lead records (plain field dicts, empty values omitted as Airtable does)."""
    rng = random.Random(f"leads:{seed}")
    out = []
    for i in range(n):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        name = f"{first} {last}"
        company = f"{rng.choice(_CO_A)} {rng.choice(_CO_B)} {rng.choice(_SUFFIX)}"
        domain = _slug(company.rsplit(" ", 1)[0]).replace("-", "") + rng.choice([".com", ".io", ".de", ".co.uk"])
        fields: dict[str, Any] = {"Full Name": name, "Company": company}
        if rng.random() >= 0.4:
            fields["Email"] = f"{_slug(first)}.{_slug(last)}@{domain}"
        if rng.random() >= 0.25:
            fields["Website"] = f"https://www.{domain}"
        if rng.random() >= 0.35:
            fields["Company Description"] = f"{company} " + rng.choice(_DESC).format(x=rng.choice(_TOPIC)) + "."
        fields["LinkedIn URL"] = f"https://www.linkedin.com/in/{_slug(first)}-{_slug(last)}-{i:04d}"
        fields["Status"] = rng.choice([s for s, _ in _STATUS_CHOICES])
        fields["Score"] = rng.randint(0, 100)
        if rng.random() >= 0.3:
            day = _dt.date(2023, 1, 1) + _dt.timedelta(days=rng.randint(0, 500))
            fields["Last Contacted"] = day.isoformat()
        tags = sorted(rng.sample(_TAG_CHOICES, rng.randint(0, 3)), key=_TAG_CHOICES.index)
        if tags:
            fields["Tags"] = tags
        if rng.random() < 0.1:
            fields["Opted Out"] = True
        out.append(fields)
    return out


#: Two tables linked both ways (``add_linked_tables``): ids fixed so that two fakes agree.
COMPANIES_ID = "tblCompanies00001"
PEOPLE_ID = "tblPeople00000001"


def add_linked_tables(fake: FakeAirtable, base_id: str, *, companies: int = 3, people: int = 6) -> tuple[str, str]:
    """Add ``Companies`` and ``People`` to a base, linked both ways (``People.Company`` and its
    inverse ``Companies.Employees``), with a view on each (one filtered on the link), select,
    number, date and checkbox fields, and a few records linked consistently. Returns the two table
    ids."""
    fake.add_table(base_id, "Companies", [
        {"id": "fldCoName0000001", "name": "Name", "type": "singleLineText"},
        {"id": "fldCoEmployees01", "name": "Employees", "type": "multipleRecordLinks",
         "options": {"linkedTableId": PEOPLE_ID, "inverseLinkFieldId": "fldPeCompany0001", "prefersSingleRecordLink": False}},
        {"id": "fldCoKind0000001", "name": "Kind", "type": "singleSelect",
         "options": {"choices": [{"name": "Client"}, {"name": "Prospect"}]}},
    ], [{"Name": f"Company {i}"} for i in range(companies)], table_id=COMPANIES_ID)
    fake.add_table(base_id, "People", [
        {"id": "fldPeName0000001", "name": "Name", "type": "singleLineText"},
        {"id": "fldPeCompany0001", "name": "Company", "type": "multipleRecordLinks",
         "options": {"linkedTableId": COMPANIES_ID, "inverseLinkFieldId": "fldCoEmployees01", "prefersSingleRecordLink": False}},
        {"id": "fldPeEmail000001", "name": "Email", "type": "email"},
        {"id": "fldPeStage000001", "name": "Stage", "type": "singleSelect",
         "options": {"choices": [{"name": "New"}, {"name": "Won"}]}},
        {"id": "fldPeScore000001", "name": "Score", "type": "number", "options": {"precision": 0}},
        {"id": "fldPeMet00000001", "name": "Met", "type": "date", "options": {"dateFormat": {"name": "iso"}}},
        {"id": "fldPeActive00001", "name": "Active", "type": "checkbox", "options": {"icon": "check", "color": "greenBright"}},
    ], [], table_id=PEOPLE_ID)
    company_ids = [r["id"] for r in fake.records(base_id, COMPANIES_ID)]
    made = fake.add_records(base_id, PEOPLE_ID, [
        {"Name": f"Person {i}", "Score": i, "Stage": "New" if i % 2 else "Won",
         **({"Company": [company_ids[i % len(company_ids)]]} if company_ids and i % 3 else {}),
         **({"Email": f"p{i}@example.com"} if i % 2 else {})}
        for i in range(people)
    ])
    assert len(made) == people
    fake.add_view(base_id, PEOPLE_ID, "No email", formula="{Email} = ''", sort=[("Score", "desc")])
    fake.add_view(base_id, COMPANIES_ID, "Without staff", formula="{Employees} = ''", sort=[("Name", "asc")])
    return COMPANIES_ID, PEOPLE_ID
