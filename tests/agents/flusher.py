"""A flusher run as a subprocess by tests/test_restart.py: flushes the queue of the cache file named
by the environment (AIRTABLE_CACHED_PATH, AIRTABLE_CACHED_ENDPOINT_URL...), then prints
"DONE {json}" with what is left. The tests kill it with SIGKILL mid-way and start it again."""

from __future__ import annotations

import json
import os

from airtable_cached import Api

TOKEN = os.environ.get("FAKE_AIRTABLE_TOKEN", "patFAKE.token")


def main() -> None:
    with Api(TOKEN) as api:
        print("STARTED", flush=True)
        result = api.flush()
        print("DONE", json.dumps({"pending": result.pending, "failed": result.failed, "busy": result.busy}), flush=True)


if __name__ == "__main__":
    main()
