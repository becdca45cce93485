"""The pure decisions: where a read is answered, what a write does, when a retry comes."""

from __future__ import annotations

import pytest

from airtable_cached.rules.policy import Read, TableState, Write, backoff, decide_read, decide_write

FRESH = TableState(pulled_at=1000.0, max_age=300)
STALE = TableState(pulled_at=100.0, max_age=300)
NEVER = TableState(pulled_at=None, max_age=300)


@pytest.mark.parametrize(
    "mode, state, reason, expected",
    [
        ("cache", FRESH, None, Read.SERVE),
        ("cache", STALE, None, Read.PULL_THEN_SERVE),
        ("cache", NEVER, None, Read.PULL_THEN_SERVE),
        ("cache", FRESH, "cellFormat=string", Read.REMOTE),
        ("write-through", STALE, None, Read.PULL_THEN_SERVE),
        ("passthrough", FRESH, None, Read.REMOTE),
        ("offline", STALE, None, Read.SERVE),
        ("offline", NEVER, None, Read.OFFLINE_STALE),
        ("offline", FRESH, "formula needs Airtable", Read.OFFLINE_STALE),
    ],
)
def test_decide_read(mode, state, reason, expected):
    assert decide_read(mode, state, now=1100.0, remote_reason=reason) is expected


def test_decide_write():
    assert decide_write("cache") is Write.ENQUEUE
    assert decide_write("offline") is Write.ENQUEUE
    assert decide_write("write-through") is Write.WRITE_THROUGH
    assert decide_write("passthrough") is Write.PASSTHROUGH


def test_backoff_doubles_up_to_a_cap():
    assert [backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(50) == 300
