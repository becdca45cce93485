"""Which of Airtable's record endpoints a request addresses (anything else is passed through)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from airtable_cached.errors import AirtableResponseError
from airtable_cached.rules.query import ListQuery

_TABLE_ACTIONS = {"GET": "list", "POST": "create", "PATCH": "update", "PUT": "replace", "DELETE": "delete"}
_RECORD_ACTIONS = {"GET": "get", "PATCH": "update", "PUT": "replace", "DELETE": "delete"}
#: The query of a request without parameters (immutable, so shared).
PLAIN_QUERY = ListQuery.from_params({})


@dataclass(frozen=True)
class Route:
    """A request to one of Airtable's record endpoints."""

    action: str  # list | get | create | update | replace | delete
    base_id: str
    table: str
    record_id: str | None = None
    list_by_post: bool = False


def route(method: str, url: str) -> Route | None:
    """The record endpoint a request addresses, or ``None`` for anything else (passed through)."""
    return _route(method, str(url))


@lru_cache(maxsize=4096)
def _route(method: str, url: str) -> Route | None:
    # Pure, and asked on every call with the same few URLs (a record's, a table's): remembered.
    parts = [unquote(p) for p in urlsplit(url).path.split("/") if p]
    if len(parts) < 3 or parts[0] != "v0" or parts[1] == "meta" or not parts[1].startswith("app"):
        return None
    method = method.upper()
    base_id, table, rest = parts[1], parts[2], parts[3:]
    if not rest:
        action = _TABLE_ACTIONS.get(method)
        return Route(action, base_id, table) if action else None
    if len(rest) == 1:
        if rest[0] == "listRecords":
            return Route("list", base_id, table, list_by_post=True) if method == "POST" else None
        action = _RECORD_ACTIONS.get(method)
        return Route(action, base_id, table, rest[0]) if action else None
    return None


def list_query(r: Route, params: Any, body: Any) -> ListQuery:
    """The query of a listing request (in the URL, or in the body of ``listRecords``)."""
    return ListQuery.from_json(body, params) if r.list_by_post else ListQuery.from_params(params)


def deleted_ids(params: Any) -> list[str]:
    """The record ids a batch delete names (``records[]``)."""
    ids = params.get("records[]", params.get("records"))
    if isinstance(ids, str):
        ids = [ids]
    return list(ids or [])


def json_body(body: Any) -> dict:
    if not isinstance(body, dict):
        raise AirtableResponseError.invalid_request("the request body must be a JSON object")
    return body
