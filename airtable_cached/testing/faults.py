"""Trouble the fake can make: injected faults (an error status, a dropped connection, a write that
happens but whose answer is lost) and Airtable's per-base rate limit with its penalty."""

from __future__ import annotations

from collections import deque
from typing import Any

from airtable_cached.testing.errors import standard_error_body


class Faults:
    """The queue of faults ``FakeAirtable.fail_next`` asked for, taken by matching requests."""

    def __init__(self) -> None:
        self._faults: list[dict] = []

    def add(self, status: int, count: int, *, method: str | None, path_contains: str | None, body: dict | None,
            retry_after: int | None, drop_connection: bool, apply: bool) -> None:
        self._faults.append({
            "status": status, "count": count, "method": method.upper() if method else None,
            "path_contains": path_contains, "body": body, "retry_after": retry_after,
            "drop": drop_connection, "apply": apply,
        })

    def clear(self) -> None:
        self._faults.clear()

    def take(self, method: str, path: str) -> dict | None:
        """The first fault matching this request, counted down (None: no fault)."""
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


def fault_answer(fault: dict) -> tuple[int | None, Any, dict]:
    """(status or None to drop the connection, body, extra headers) for a fault taken."""
    if fault["drop"]:
        return None, None, {}
    extra = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
    body = fault["body"] if fault["body"] is not None else standard_error_body(fault["status"])
    return fault["status"], body, extra


class RateLimiter:
    """At most ``rate_limit`` requests per second per base; beyond that every request to the base
    is refused (429) for the penalty. MODELLING DECISION: no Retry-After on 429 (Airtable does not
    document one). Requests answered 429 do not count towards the window (MODELLING DECISION; with
    a 30 s penalty it makes no difference, and it lets tests use a short penalty)."""

    def __init__(self) -> None:
        self._recent: dict[str, deque] = {}
        self._penalty_until: dict[str, float] = {}

    def allows(self, base_id: str, now: float, rate_limit: float, penalty_seconds: float) -> bool:
        if self._penalty_until.get(base_id, 0.0) > now:
            return False
        recent = self._recent.setdefault(base_id, deque())
        while recent and now - recent[0] >= 1.0:
            recent.popleft()
        if len(recent) + 1 > rate_limit:
            self._penalty_until[base_id] = now + penalty_seconds
            recent.clear()
            return False
        recent.append(now)
        return True
