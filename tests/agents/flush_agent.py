"""A small agent run as a subprocess by tests/test_durability.py.

Settings come from the environment as for any agent (AIRTABLE_CACHED_PATH, AIRTABLE_CACHED_ENDPOINT_URL,
AIRTABLE_CACHED_FLUSH...). It prints one line per phase so the test can follow it:

    queue-and-flush   20 creates then 200 updates (+50 second updates), "QUEUED", then a flush
    queue-only        the same writes, "QUEUED", then waits to be killed
    create TAG N DIR  N single creates named "TAG i", "WRITTEN"; waits for DIR/read, prints what it
                      sees ("SEEN {json}"); waits for DIR/flush, flushes (unless auto), "DONE {json}"
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from airtable_cached import Api

BASE = "appLEADSbase00001"
TABLE = "Leads"
TOKEN = os.environ.get("FAKE_AIRTABLE_TOKEN", "patFAKE.token")


def say(*parts: str) -> None:
    print(*parts, flush=True)


def wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.01)


def queue_writes(table) -> None:
    table.batch_create([{"Full Name": f"Kill Create {i:02d}", "Score": i} for i in range(20)])
    records = table.all()[:200]
    table.batch_update([{"id": r["id"], "fields": {"Score": 1000 + i}} for i, r in enumerate(records)])
    for i, r in enumerate(records[:50]):
        table.update(r["id"], {"Score": 2000 + i, "Company": f"Second {i}"})


def main(argv: list[str]) -> None:
    mode = argv[1]
    api = Api(TOKEN)
    table = api.table(BASE, TABLE)
    if mode in ("queue-and-flush", "queue-only"):
        queue_writes(table)
        say("QUEUED")
        if mode == "queue-only":
            while True:
                time.sleep(1)
        result = api.flush()
        say("DONE", json.dumps(result.as_dict()))
        return
    if mode == "create":
        tag, count, folder = argv[2], int(argv[3]), Path(argv[4])
        for i in range(count):
            table.create({"Full Name": f"{tag} {i:02d}", "Score": i})
        say("WRITTEN")
        wait_for(folder / "read")
        names = [r["fields"].get("Full Name", "") for r in table.all()]
        seen = {}
        for name in names:
            prefix = name.split(" ")[0]
            if prefix.startswith("Proc"):
                seen[prefix] = seen.get(prefix, 0) + 1
        say("SEEN", json.dumps(seen))
        wait_for(folder / "flush")
        if api.settings.flush == "manual":
            result = api.flush()
            say("DONE", json.dumps({"pending": result.pending, "failed": result.failed}))
        else:
            say("DONE", json.dumps({}))  # the exit drain flushes
        return
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
