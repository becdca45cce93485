"""A full disk: the call fails with a message saying what happened and what to do, and the queue
is intact. The disk is filled for real as far as SQLite can tell (``PRAGMA max_page_count``: SQLite
answers SQLITE_FULL exactly as on a full disk)."""

from __future__ import annotations

import pytest

from airtable_cached.errors import DiskFullError
from tests.conftest import BASE, TABLE


def test_a_write_on_a_full_disk_says_so_and_keeps_the_queue(fake, api, table):
    table.all()
    kept = table.create({"Full Name": "Queued Before"})
    conn = api.engine.store.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(DiskFullError) as error:
        table.batch_create([{"Full Name": "x" * 5000, "Company Description": "y" * 50_000}] * 10)
    message = str(error.value)
    assert "is full" in message and "queued before are intact" in message and "Free space" in message
    assert isinstance(error.value, OSError)
    conn.execute(f"PRAGMA max_page_count = {pages * 1000}")
    assert [op["record_id"] for op in api.pending()] == [kept["id"]]  # nothing half-written
    assert not [r for r in table.all() if r["fields"].get("Full Name", "").startswith("xxx")]
    assert api.flush().ok
    assert [r for r in fake.records(BASE, TABLE) if r["fields"].get("Full Name") == "Queued Before"]
