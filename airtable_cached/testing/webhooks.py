"""The webhooks API of the fake Airtable (``airtable_cached.testing.FakeAirtable``).

What is modelled, after Airtable's Web API documentation and pyairtable 3.5's webhook models
(``pyairtable.models.webhook``):

* ``POST /v0/bases/{base}/webhooks`` creates a webhook (``notificationUrl`` may be null: a webhook
  made only to be polled) and answers ``{id, macSecretBase64, expirationTime}``; at most
  ``MAX_PER_BASE`` per base; a token without the ``webhook:manage`` scope gets a 403.
* ``GET /v0/bases/{base}/webhooks`` lists them; ``DELETE .../webhooks/{id}`` removes one;
  ``POST .../webhooks/{id}/refresh`` moves the expiry to seven days from now.
* ``GET .../webhooks/{id}/payloads?cursor=N`` returns up to 50 payloads from cursor N, the cursor
  of the next payload and ``mightHaveMore``. Payloads carry ``changedTablesById`` with
  ``createdRecordsById``, ``changedRecordsById`` and ``destroyedRecordIds`` (``tableData``) and
  ``createdFieldsById``/``changedFieldsById``/``destroyedFieldIds`` (``tableFields``).

MODELLING DECISIONS (Airtable does not document them):

* one payload per changed record or field (Airtable groups the changes of one transaction);
* a webhook past its ``expirationTime`` is gone: every call naming it answers 404;
* payloads older than the retention (seven days) are dropped; a cursor pointing before the oldest
  kept payload answers from the oldest kept one, so the answer's cursor runs ahead of the
  requested cursor plus the payloads returned (that gap is how a client sees what it missed);
* the error for an eleventh webhook is 422 ``TOO_MANY_WEBHOOKS``.
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
from typing import Any

MAX_PER_BASE = 10
PAYLOADS_PER_PAGE = 50
LIFETIME = _dt.timedelta(days=7)
RETENTION = _dt.timedelta(days=7)


class WebhookError(Exception):
    def __init__(self, status: int, body: Any):
        super().__init__(status, body)
        self.status = status
        self.body = body


def _err(status: int, type_: str, message: str) -> WebhookError:
    return WebhookError(status, {"error": {"type": type_, "message": message}})


def _iso(instant: _dt.datetime) -> str:
    return instant.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


class Webhooks:
    """Webhooks of every base of one fake server. ``now`` is the fake's clock (a datetime)."""

    def __init__(self, new_id, now):
        self._new_id = new_id
        self._now = now
        self.access = True  # False: the token lacks webhook:manage (or creator permission)
        self.hooks: dict[str, dict] = {}  # id -> {"base", "spec", "url", "expires", "enabled", "payloads", "first"}
        self._transaction = 0

    # -- operator helpers (tests) ---------------------------------------------------------------
    def of_base(self, base_id: str) -> list[dict]:
        self._expire()
        return [h for h in self.hooks.values() if h["base"] == base_id]

    def expire(self, hook_id: str) -> None:
        """Make a webhook expire now (as if nobody refreshed it for seven days)."""
        self.hooks[hook_id]["expires"] = self._now() - _dt.timedelta(seconds=1)

    def disable(self, hook_id: str) -> None:
        self.hooks[hook_id]["enabled"] = False

    def drop_payloads(self, hook_id: str, count: int | None = None) -> None:
        """Forget the oldest payloads (all by default), as Airtable does after a week."""
        hook = self.hooks[hook_id]
        n = len(hook["payloads"]) if count is None else count
        hook["first"] += n
        del hook["payloads"][:n]

    # -- events from the record and field endpoints ---------------------------------------------
    def publish(self, base_id: str, table_id: str, kind: str, item: Any) -> None:
        """One change in a table; ``kind``: created | changed | destroyed | field."""
        self._expire()
        hooks = [h for h in self.hooks.values() if h["base"] == base_id and h["enabled"]]
        if not hooks:
            return
        self._transaction += 1
        change: dict[str, Any]
        if kind == "created":
            change = {"createdRecordsById": {item["id"]: {"createdTime": item["createdTime"], "cellValuesByFieldId": {}}}}
            data_type = "tableData"
        elif kind == "changed":
            change = {"changedRecordsById": {item["id"]: {"current": {"cellValuesByFieldId": {}}}}}
            data_type = "tableData"
        elif kind == "destroyed":
            change = {"destroyedRecordIds": [item]}
            data_type = "tableData"
        else:
            change = {"createdFieldsById": {item["id"]: {"name": item["name"], "type": item["type"]}}}
            data_type = "tableFields"
        now = self._now()
        for hook in hooks:
            filters = ((hook["spec"].get("options") or {}).get("filters") or {})
            if data_type not in (filters.get("dataTypes") or []):
                continue
            scope = filters.get("recordChangeScope")
            if scope and scope != table_id:
                continue
            hook["payloads"].append({
                "timestamp": _iso(now),
                "baseTransactionNumber": self._transaction,
                "actionMetadata": {"source": "client", "sourceMetadata": {}},
                "payloadFormat": "v0",
                "changedTablesById": {table_id: copy.deepcopy(change)},
                "_at": now,
            })

    # -- HTTP -----------------------------------------------------------------------------------
    def handle(self, method: str, base_id: str, rest: list[str], query: dict, body: Any) -> Any:
        if not self.access:
            raise _err(403, "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND",
                       "Invalid permissions, or the requested model was not found. Check that both your user and"
                       " your token have the required permissions, and that the model names and/or ids are correct.")
        self._expire()
        if not rest:
            if method == "GET":
                return {"webhooks": [self._render(h) for h in self.of_base(base_id)]}
            if method == "POST":
                return self._create(base_id, body or {})
            raise WebhookError(404, {"error": "NOT_FOUND"})
        hook = self.hooks.get(rest[0])
        if hook is None or hook["base"] != base_id:
            raise WebhookError(404, {"error": "NOT_FOUND"})
        if len(rest) == 1 and method == "DELETE":
            del self.hooks[rest[0]]
            return {}
        if rest[1:] == ["refresh"] and method == "POST":
            hook["expires"] = self._now() + LIFETIME
            return {"expirationTime": _iso(hook["expires"])}
        if rest[1:] == ["payloads"] and method == "GET":
            return self._payloads(hook, query)
        raise WebhookError(404, {"error": "NOT_FOUND"})

    def _create(self, base_id: str, body: dict) -> dict:
        spec = body.get("specification")
        types = ((spec or {}).get("options") or {}).get("filters", {}).get("dataTypes") if isinstance(spec, dict) else None
        if not isinstance(types, list) or not types or not set(types) <= {"tableData", "tableFields", "tableMetadata"}:
            raise _err(422, "INVALID_REQUEST_UNKNOWN", "specification.options.filters.dataTypes is required")
        if len(self.of_base(base_id)) >= MAX_PER_BASE:
            raise _err(422, "TOO_MANY_WEBHOOKS", f"A base can have at most {MAX_PER_BASE} webhooks")
        hook_id = self._new_id("ach")
        hook = {"id": hook_id, "base": base_id, "spec": copy.deepcopy(spec), "url": body.get("notificationUrl"),
                "expires": self._now() + LIFETIME, "enabled": True, "payloads": [], "first": 1}
        self.hooks[hook_id] = hook
        secret = base64.b64encode(hook_id.encode()).decode()
        return {"id": hook_id, "macSecretBase64": secret, "expirationTime": _iso(hook["expires"])}

    def _payloads(self, hook: dict, query: dict) -> dict:
        self._drop_old(hook)
        raw = query.get("cursor", ["1"])[-1]
        try:
            cursor = int(raw)
        except ValueError:
            raise _err(422, "INVALID_REQUEST_UNKNOWN", "cursor must be a number") from None
        limit = min(int(query.get("limit", [PAYLOADS_PER_PAGE])[-1]), PAYLOADS_PER_PAGE)
        start = max(cursor, hook["first"])
        index = start - hook["first"]
        page = hook["payloads"][index:index + limit]
        following = start + len(page)
        return {
            "payloads": [{k: copy.deepcopy(v) for k, v in p.items() if k != "_at"} for p in page],
            "cursor": following,
            "mightHaveMore": following < hook["first"] + len(hook["payloads"]),
        }

    def _render(self, hook: dict) -> dict:
        return {
            "id": hook["id"],
            "areNotificationsEnabled": hook["url"] is not None,
            "cursorForNextPayload": hook["first"] + len(hook["payloads"]),
            "isHookEnabled": hook["enabled"],
            "lastSuccessfulNotificationTime": None,
            "notificationUrl": hook["url"],
            "lastNotificationResult": None,
            "expirationTime": _iso(hook["expires"]),
            "specification": copy.deepcopy(hook["spec"]),
        }

    def _expire(self) -> None:
        now = self._now()
        for hook_id in [i for i, h in self.hooks.items() if h["expires"] <= now]:
            del self.hooks[hook_id]

    def _drop_old(self, hook: dict) -> None:
        cutoff = self._now() - RETENTION
        old = 0
        while old < len(hook["payloads"]) and hook["payloads"][old]["_at"] < cutoff:
            old += 1
        if old:
            self.drop_payloads(hook["id"], old)
