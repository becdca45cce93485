"""A flusher run as a subprocess by tests/test_restart.py: flushes the queue of the cache file named
by the environment (AIRTABLE_CACHED_PATH, AIRTABLE_CACHED_ENDPOINT_URL...), then prints
"DONE {json}" with what is left. The tests kill it with SIGKILL mid-way and start it again.

With ``FLUSHER_DIE_AFTER_HEADERS_OF_POST=n`` it kills itself (SIGKILL) once the headers of its
n-th POST are on the wire and before its body is: urllib3 sends the two in separate writes, so a
flusher killed mid-request can leave a request cut short, which this makes happen every time."""

from __future__ import annotations

import json
import os
import signal

from airtable_cached import Api

TOKEN = os.environ.get("FAKE_AIRTABLE_TOKEN", "patFAKE.token")


def die_after_headers_of_post(number: int) -> None:
    from urllib3.connection import HTTPConnection

    endheaders = HTTPConnection.endheaders
    posts = 0

    def cut_short(self, *args, **kwargs):
        nonlocal posts
        endheaders(self, *args, **kwargs)
        if self._method == "POST":
            posts += 1
            if posts == number:
                os.kill(os.getpid(), signal.SIGKILL)

    HTTPConnection.endheaders = cut_short  # type: ignore[method-assign]


def main() -> None:
    if os.environ.get("FLUSHER_DIE_AFTER_HEADERS_OF_POST"):
        die_after_headers_of_post(int(os.environ["FLUSHER_DIE_AFTER_HEADERS_OF_POST"]))
    with Api(TOKEN) as api:
        print("STARTED", flush=True)
        result = api.flush()
        print("DONE", json.dumps({"pending": result.pending, "failed": result.failed, "busy": result.busy}), flush=True)


if __name__ == "__main__":
    main()
