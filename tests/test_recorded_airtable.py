"""The cache against real Airtable: recordings of Airtable's own answers, not the project's fake.

``../shared/airtable-traffic/refine/`` holds traffic that the refine project recorded from Airtable
(one table, ``posts``): a list, a get, single and batch updates, a create and a delete. Each test
replays one recording twice with vcrpy (``record_mode="none"``):

- through plain pyairtable, which must send the recorded request and return the recorded body;
- through the cache, which first pulls the table from the recorded list answer, then answers the
  same call itself; its answer must equal the body Airtable recorded.

The recordings are read where they lie at run time, never copied into this repository; a machine
without them skips these tests (CI has them). The refine recordings hold no schema request, so the
cache's one schema read is answered as Airtable answers a token without ``schema.bases:read``
(403, ``INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND``); the cache then works from the records alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyairtable
import pytest
import vcr
import yaml

from airtable_cached import Api
from tests.conftest import AIRTABLE_TRAFFIC

TRAFFIC = AIRTABLE_TRAFFIC / "refine"
BASE, TABLE = "appKYl1H4k9g73sBT", "posts"
TOKEN = "patRECORDEDtraffic.0000"
# The list whose records agree with every single-record recording (get, update, batch update).
PULLED_FROM = "getMany__index.mock.ts.yaml"

pytestmark = pytest.mark.skipif(not TRAFFIC.is_dir(), reason="../shared/airtable-traffic is not beside the checkout")


def interactions(name: str) -> list[dict[str, Any]]:
    data = yaml.safe_load((TRAFFIC / name).read_text(encoding="utf-8"))
    return list(data["interactions"])


def body_of(interaction: dict[str, Any]) -> Any:
    return json.loads(interaction["response"]["body"]["string"])


def write_cassette(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"interactions": items, "version": 1}, allow_unicode=True), encoding="utf-8")
    return path


def as_batch(interaction: dict[str, Any]) -> dict[str, Any]:
    """A recorded single-record create or delete in the batch form the flush sends: the same
    records, in a ``records`` list, as Airtable's batch endpoints answer (the refine batch
    recordings show that shape)."""
    request, response = dict(interaction["request"]), dict(interaction["response"])
    uri = request["uri"]
    if request["method"] == "DELETE":
        table_uri, record_id = uri.rsplit("/", 1)
        request["uri"] = f"{table_uri}?records%5B%5D={record_id}"
    elif request["body"]:
        request["body"] = json.dumps({"records": [json.loads(request["body"])]})
    response["body"] = {"string": json.dumps({"records": [body_of(interaction)]})}
    return {"request": request, "response": response}


def schema_refused() -> dict[str, Any]:
    """Airtable's answer to a schema read by a token without the scope (AIRTABLE_FACTS, errors)."""
    message = "Invalid permissions, or the requested model was not found."
    return {
        "request": {"body": None, "headers": {}, "method": "GET",
                    "uri": f"https://api.airtable.com/v0/meta/bases/{BASE}/tables"},
        "response": {
            "body": {"string": json.dumps({"error": {"type": "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND", "message": message}})},
            "headers": {"Content-Type": ["application/json; charset=utf-8"]},
            "status": {"code": 403, "message": "Forbidden"},
        },
    }


def same_route(r1: Any, r2: Any) -> None:
    """Paths equal but for a trailing slash (refine's client wrote ``posts/``; Airtable takes both)."""
    assert r1.path.rstrip("/") == r2.path.rstrip("/")


RECORDED = vcr.VCR()
RECORDED.register_matcher("route", same_route)


def replay(cassette: Path, *, loose: bool) -> Any:
    """vcrpy in replay-only mode. The cache's own list requests (page size, comment counts) differ
    from the recorded ones in their query, so for the cache requests match on method and path."""
    return RECORDED.use_cassette(
        str(cassette),
        record_mode="none",
        match_on=("method", "route") if loose else ("method", "scheme", "host", "route", "query"),
        allow_playback_repeats=loose,
        filter_headers=["authorization"],
    )


@pytest.fixture
def cached(tmp_path):
    """A cache of the ``posts`` table pulled from the recorded list, and the cassette's path."""
    cassette = tmp_path / "cassette.yaml"

    def make(*recorded: str, batched: tuple[str, ...] = ()) -> tuple[Any, Path]:
        items = interactions(PULLED_FROM) + [schema_refused()]
        for name in recorded:
            items += interactions(name)
        for name in batched:
            items += [as_batch(i) for i in interactions(name)]
        write_cassette(cassette, items)
        api = Api(TOKEN, path=tmp_path / "cache.sqlite3", flush="manual")
        with replay(cassette, loose=True):
            api.table(BASE, TABLE).refresh(force=True)
        return api, cassette

    apis: list[Any] = []

    def tracked(*recorded: str, batched: tuple[str, ...] = ()) -> tuple[Any, Path]:
        api, path = make(*recorded, batched=batched)
        apis.append(api)
        return api, path

    yield tracked
    for api in apis:
        api.close()


def plain_table() -> pyairtable.Table:
    return pyairtable.Api(TOKEN).table(BASE, TABLE)


def test_get_matches_airtable(cached):
    recorded = interactions("getOne__index.mock.ts.yaml")[0]
    record_id = recorded["request"]["uri"].rsplit("/", 1)[1]
    with replay(TRAFFIC / "getOne__index.mock.ts.yaml", loose=False):
        assert plain_table().get(record_id) == body_of(recorded)
    api, cassette = cached()
    with replay(cassette, loose=True) as tape:
        assert api.table(BASE, TABLE).get(record_id) == body_of(recorded)
        assert tape.play_count == 0  # answered from the cache


def test_list_matches_airtable(cached):
    recorded = interactions(PULLED_FROM)[0]
    with replay(TRAFFIC / PULLED_FROM, loose=False):
        assert plain_table().all(page_size=100) == body_of(recorded)["records"]
    api, cassette = cached()
    with replay(cassette, loose=True) as tape:
        assert api.table(BASE, TABLE).all(page_size=100) == body_of(recorded)["records"]
        assert tape.play_count == 0


def test_update_matches_airtable(cached):
    recorded = interactions("update__index.mock.ts.yaml")[0]
    record_id = recorded["request"]["uri"].rsplit("/", 1)[1]
    fields = json.loads(recorded["request"]["body"])["fields"]
    with replay(TRAFFIC / "update__index.mock.ts.yaml", loose=False):
        assert plain_table().update(record_id, fields) == body_of(recorded)
    api, cassette = cached()
    table = api.table(BASE, TABLE)
    with replay(cassette, loose=True) as tape:
        assert table.update(record_id, fields) == body_of(recorded)
        assert tape.play_count == 0  # queued, not sent
        assert table.get(record_id) == body_of(recorded)


def test_batch_update_matches_airtable(cached):
    """The flush sends the queued updates as one batch PATCH, the request recorded here."""
    recorded = interactions("updateMany__index.mock.ts.yaml")[0]
    records = json.loads(recorded["request"]["body"])["records"]
    with replay(TRAFFIC / "updateMany__index.mock.ts.yaml", loose=False):
        assert plain_table().batch_update(records) == body_of(recorded)["records"]
    api, cassette = cached("updateMany__index.mock.ts.yaml")
    table = api.table(BASE, TABLE)
    with replay(cassette, loose=True) as tape:
        assert table.batch_update(records) == body_of(recorded)["records"]
        result = api.flush()
        assert result.ok and not result.failed and tape.play_count == 1
        assert [table.get(r["id"]) for r in records] == body_of(recorded)["records"]


def test_create_then_delete_matches_airtable(cached):
    """The create answers at once with a provisional id; after the flush the cache holds exactly the
    record Airtable made (Airtable appends a newline to the rich-text ``content``, which the cache
    cannot know without the schema, so the immediate answer is compared on what it can know: the
    fields as sent). The recorded delete is of that same record."""
    created = interactions("create__index.mock.ts.yaml")[0]
    deleted = interactions("deleteOne__index.mock.ts.yaml")[0]
    fields = json.loads(created["request"]["body"])["fields"]
    with replay(TRAFFIC / "create__index.mock.ts.yaml", loose=False):
        assert plain_table().create(fields) == body_of(created)
    with replay(TRAFFIC / "deleteOne__index.mock.ts.yaml", loose=False):
        assert plain_table().delete(body_of(created)["id"]) == body_of(deleted)

    api, cassette = cached(batched=("create__index.mock.ts.yaml", "deleteOne__index.mock.ts.yaml"))
    table = api.table(BASE, TABLE)
    with replay(cassette, loose=True):
        answer = table.create(fields)
        assert answer["fields"] == fields
        assert api.flush().ok
        assert table.get(answer["id"]) == body_of(created)  # the provisional id still resolves
        assert table.delete(body_of(created)["id"]) == body_of(deleted)
        assert api.flush().ok
    assert [r["id"] for r in table.all()] == [r["id"] for r in body_of(interactions(PULLED_FROM)[0])["records"]]


# -- the project's fake server, checked against the same recordings ---------------------------------

POSTS_SCHEMA = [
    {"name": "title", "type": "singleLineText"},
    {"name": "content", "type": "richText"},
    {"name": "status", "type": "singleSelect",
     "options": {"choices": [{"name": "published"}, {"name": "rejected"}, {"name": "draft"}]}},
    {"name": "category", "type": "multipleRecordLinks", "options": {}},
]


@pytest.fixture
def fake_posts():
    from airtable_cached.testing import FakeAirtable

    with FakeAirtable(seed=1) as server:
        server.add_table(BASE, TABLE, POSTS_SCHEMA, body_of(interactions(PULLED_FROM)[0])["records"])
        yield server


@pytest.mark.parametrize("name", ["getOne__index.mock.ts.yaml", "update__index.mock.ts.yaml",
                                  "updateMany__index.mock.ts.yaml", PULLED_FROM])
def test_fake_server_answers_as_airtable_recorded(fake_posts, name):
    """The fake, holding the recorded records, answers each recorded request with the recorded
    body (record contents and shape; the fake's own field order aside, as JSON objects compare)."""
    import requests

    for recorded in interactions(name):
        request = recorded["request"]
        path_and_query = request["uri"].split("https://api.airtable.com", 1)[1]
        response = requests.request(
            request["method"], fake_posts.url + path_and_query.replace("posts/?", "posts?"),
            data=request["body"], headers={"Authorization": f"Bearer {fake_posts.token}",
                                           "Content-Type": "application/json"}, timeout=10,
        )
        assert response.status_code == recorded["response"]["status"]["code"]
        assert response.json() == body_of(recorded)


def test_fake_server_creates_as_airtable_recorded(fake_posts):
    """A create answers the recorded fields (rich text ends with a newline, as Airtable stores it)."""
    import requests

    recorded = interactions("create__index.mock.ts.yaml")[0]
    response = requests.post(
        fake_posts.url + f"/v0/{BASE}/{TABLE}", data=recorded["request"]["body"],
        headers={"Authorization": f"Bearer {fake_posts.token}", "Content-Type": "application/json"}, timeout=10,
    )
    assert response.status_code == 200
    assert response.json()["fields"] == body_of(recorded)["fields"]
