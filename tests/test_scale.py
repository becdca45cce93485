"""Issue 11: costs that stay linear in the table size, bounded memory for offsets, limits pushed into
SQL. Answers are compared with plain pyairtable over the project's fake Airtable (``plain``); the
per-record costs themselves are shown by ``benchmarks/bench_scale.py``, not timed here."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from airtable_cached import Api
from airtable_cached.config import Settings
from airtable_cached.engine import Engine, apply
from airtable_cached.engine import paging as engine_module
from airtable_cached.engine.readmodel import copy_record_fields, with_mutable
from airtable_cached.store.sqlite.connection import MIGRATIONS, Store, _statements
from airtable_cached.store.sqlite.replica import register_sql_functions
from airtable_cached.testing import FakeAirtable
from tests.conftest import BASE, TABLE, FakeClock


def fts_rows(api) -> dict[str, tuple[int, str]]:
    """Each record's full-text row: its FTS rowid and indexed text."""
    rows = api.engine.store.conn.execute(
        "SELECT k.id, f.rowid, f.body FROM records_fts_keys k JOIN records_fts f ON f.rowid = k.docid"
    ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def test_a_refresh_rewrites_only_the_records_that_changed(api, table, fake, clock):
    table.all()
    conn = api.engine.store.conn
    before = {row[0]: tuple(row[1:]) for row in conn.execute("SELECT id, synced_at, fields FROM records")}
    index_before = fts_rows(api)
    changed = next(iter(before))
    fake.set_fields(BASE, TABLE, changed, {"Company": "Zanzibar Shipping"})
    clock.advance(10)
    changes = conn.total_changes
    table.refresh(force=True)
    after = {row[0]: tuple(row[1:]) for row in conn.execute("SELECT id, synced_at, fields FROM records")}
    assert {rid for rid in before if before[rid] != after[rid]} == {changed}
    index_after = fts_rows(api)
    assert {rid for rid in index_before if index_before[rid] != index_after[rid]} == {changed}
    assert "Zanzibar Shipping" in index_after[changed][1]
    # One record row, its index row and key, the table's stamp, the refresh's bookkeeping and the
    # request log: a handful of rows, not 250.
    assert conn.total_changes - changes < 40
    assert [r["id"] for r in table.search("zanzibar")] == [changed]


def test_index_follows_updates_deletes_and_the_real_id_of_a_flushed_create(api, table, fake):
    created = table.create({"Full Name": "Quentin Quokka"})
    assert [r["id"] for r in table.search("quokka")] == [created["id"]]
    api.flush()
    real = api.engine.resolve_id(created["id"])
    assert real != created["id"]
    assert [r["id"] for r in table.search("quokka")] == [real]
    table.update(real, {"Full Name": "Quentin Wombat"})
    assert table.search("quokka") == [] and [r["id"] for r in table.search("wombat")] == [real]
    table.delete(real)
    assert table.search("wombat") == []
    live = {row[0] for row in api.engine.store.conn.execute("SELECT id FROM records WHERE fields IS NOT NULL")}
    assert set(fts_rows(api)) == live


def test_index_rows_are_found_by_key_not_by_a_scan(api, table):
    """The trigger's lookups, as SQLite plans them: by the FTS rowid and the keys' unique index."""
    table.all()
    plan = " | ".join(row[3] for row in api.engine.store.conn.execute(
        "EXPLAIN QUERY PLAN DELETE FROM records_fts WHERE rowid ="
        " (SELECT docid FROM records_fts_keys WHERE tid = 1 AND id = 'recX')"
    ))
    assert "INDEX 0:=" in plan  # FTS5's rowid lookup (a scan reads "INDEX 0:")
    assert "USING COVERING INDEX sqlite_autoindex_records_fts_keys_1" in plan


def test_a_schema_3_file_gets_its_existing_records_indexed(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for version in (1, 2, 3):
        for statement in _statements(MIGRATIONS[version]):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO tables (base_id, name) VALUES ('appX', 'T')")
    conn.execute("INSERT INTO records (tid, id, position, created_time, fields) VALUES (1, 'rec1', 0, 't', ?)",
                 (json.dumps({"Name": "Grace Hopper"}),))
    conn.execute("INSERT INTO records (tid, id, position, created_time, fields) VALUES (1, 'rec2', 1, 't', NULL)")
    conn.close()
    store = Store(path)
    assert store.version() >= 4
    found = store.conn.execute(
        "SELECT k.id FROM records_fts f JOIN records_fts_keys k ON k.docid = f.rowid WHERE records_fts MATCH 'hopper'"
    ).fetchall()
    assert [row[0] for row in found] == ["rec1"]
    store.conn.execute("UPDATE records SET fields = ? WHERE id = 'rec1'", (json.dumps({"Name": "Ada"}),))
    assert store.conn.execute("SELECT count(*) FROM records_fts WHERE records_fts MATCH 'hopper'").fetchone()[0] == 0


def test_pulled_at_is_when_the_apply_ended(api, table, clock, monkeypatch):
    """An apply that outlasts max_age must not leave the table stale for the very next read."""
    recompute = apply.recompute

    def slow_recompute(*args, **kwargs):
        clock.advance(api.settings.max_age + 60)  # the apply takes longer than max_age
        return recompute(*args, **kwargs)

    monkeypatch.setattr(apply, "recompute", slow_recompute)
    table.all()
    monkeypatch.setattr(apply, "recompute", recompute)
    assert table.is_fresh()


# -- limits pushed into SQL ---------------------------------------------------------------------


@pytest.fixture
def statements(api, table):
    """The SQL statements this thread's connection runs from here on."""
    table.all()  # pulled before recording
    api.engine.model.clear()  # as in a new process, or after another process wrote
    seen: list[str] = []
    api.engine.store.conn.set_trace_callback(seen.append)
    yield seen
    api.engine.store.conn.set_trace_callback(None)


def record_selects(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith("SELECT r.id, r.created_time")]


@pytest.mark.parametrize(("call", "limit"), [
    (lambda t: [t.first()], "LIMIT 1"),
    (lambda t: [t.first(formula="{Status} = 'New'")], "LIMIT 1"),
    (lambda t: t.all(max_records=10), "LIMIT 10"),
    (lambda t: next(t.iterate(page_size=7)), "LIMIT 8"),
    (lambda t: t.all(max_records=150), "LIMIT 101"),
])
def test_first_max_records_and_page_size_reach_sql(call, limit, table, plain, statements):
    """Compared with plain pyairtable over the project's fake."""
    got = call(table)
    assert [r["id"] for r in got] == [r["id"] for r in call(plain)]
    selects = record_selects(statements)
    assert selects and all(s.endswith(limit) for s in selects)


def test_a_filter_sql_cannot_decide_alone_still_reads_everything(table, plain, statements):
    """A sort is done in Python: no LIMIT may cut the rows before it. Compared with the fake."""
    got = table.all(sort=["Company"], max_records=5)
    assert [r["id"] for r in got] == [r["id"] for r in plain.all(sort=["Company"], max_records=5)]
    assert not any("LIMIT" in s for s in record_selects(statements))


# -- offsets: bounded, expiring on time -----------------------------------------------------------


def test_a_finished_listing_keeps_no_records_and_few_ids(api, table):
    for _ in range(20):
        assert len(table.all()) == 250
    snapshots = api.engine.snapshots
    assert len(snapshots) <= engine_module.KEPT_FINISHED
    assert snapshots.held_ids <= engine_module.KEPT_FINISHED * 250
    assert all(isinstance(i, str) for s in snapshots._items.values() for i in s.ids)


def test_the_last_page_can_be_asked_again(table):
    """Airtable answers an offset more than once while it lives; so does the cache."""
    first = table.api.request("GET", table.urls.records, options={"page_size": 100})
    second = table.api.request("GET", table.urls.records, options={"page_size": 100, "offset": first["offset"]})
    last = table.api.request("GET", table.urls.records, options={"page_size": 100, "offset": second["offset"]})
    again = table.api.request("GET", table.urls.records, options={"page_size": 100, "offset": second["offset"]})
    assert again == last and "offset" not in last


def test_abandoned_offsets_expire_on_time_without_being_reused(api, table, clock):
    pages = table.iterate(page_size=10)
    next(pages)  # abandoned after one page
    assert len(api.engine.snapshots) == 1
    clock.advance(engine_module.OFFSET_TTL + 1)
    table.first()  # any other read: the idle one is gone, though nobody asked for it again
    assert len(api.engine.snapshots) == 0
    with pytest.raises(requests.HTTPError) as error:
        next(pages)
    assert error.value.response.status_code == 422
    assert "LIST_RECORDS_ITERATOR_NOT_AVAILABLE" in error.value.args[-1]


def test_offsets_held_are_bounded_in_ids(api, table, monkeypatch):
    monkeypatch.setattr(engine_module, "MAX_SNAPSHOT_IDS", 600)
    abandoned = [table.iterate(page_size=10) for _ in range(5)]
    for pages in abandoned:
        next(pages)
    assert api.engine.snapshots.held_ids <= 600
    assert len(api.engine.snapshots) == 2
    assert len([r for page in abandoned[-1] for r in page]) == 240  # the newest one still works


# -- no request for a read of a fresh cache ------------------------------------------------------------


def another_process(fake, db_path, clock, **settings):
    """An Api with its own engine over the same file, as a new process would have (the runtime is
    shared per settings within a process, so the settings differ)."""
    return Api(fake.token, endpoint_url=fake.url, path=db_path, flush="manual", clock=clock, sleep=clock.sleep,
               max_age=299, **settings)


def test_a_new_process_reading_a_fresh_cache_sends_nothing(fake, db_path, clock, table):
    table.all()
    clock.advance(60)
    fake.reset_log()
    other = another_process(fake, db_path, clock)
    assert other.engine is not table.api.engine
    assert len(other.table(BASE, TABLE).all()) == 250
    assert other.table(BASE, TABLE).first() is not None
    assert fake.request_count() == 0
    other.close()


def test_the_token_is_remembered_only_as_a_keyed_digest(fake, db_path, table):
    table.all()
    table.api.engine.stats.write()
    conn = table.api.engine.store.conn
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    digests = [row[0] for row in conn.execute("SELECT digest FROM token_grants")]
    assert len(digests) == 1 and fake.token not in digests[0]
    stored = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*") if p.is_file())
    assert fake.token.encode() not in stored


def test_an_old_grant_is_checked_again(fake, db_path, clock, table):
    """The table is fresh (another token refreshed it, say) but this token's answer is older
    than max_age: one probe, then the grant is new again."""
    table.all()
    conn = table.api.engine.store.conn
    conn.execute("UPDATE token_grants SET granted_at = granted_at - 1000")
    fake.reset_log()
    other = another_process(fake, db_path, clock)
    other.table(BASE, TABLE).all()
    assert fake.request_count() == 1
    third = another_process(fake, db_path, clock, exit_timeout=1.0)
    third.table(BASE, TABLE).all()
    assert fake.request_count() == 1
    other.close()
    third.close()


# -- the read model: exact, never shared -----------------------------------------------------------


def test_a_create_flushed_between_pages_is_listed_under_its_real_id(api, table):
    """It is the same record, not a deleted one: no page skips it (a flusher in this or another
    process may send it at any moment)."""
    created = table.create({"Full Name": "Between Pages"})
    pages = table.iterate()
    first = next(pages)
    api.flush()
    rest = [r for page in pages for r in page]
    listed = [r["id"] for r in first + rest]
    real = api.engine.resolve_id(created["id"])
    assert len(listed) == 251 and listed[-1] == real != created["id"]


def test_a_returned_record_is_never_the_caches_own(table):
    before = table.all()
    first = table.all()
    got = table.get(first[0]["id"])
    listed = table.all(formula="NOT({Email} = '')")
    for record in (first[0], got, listed[0], table.first()):
        record["fields"]["Full Name"] = "Mutated"
        record["fields"].setdefault("Tags", []).append("Mutated")
        record["fields"].clear()
        record.clear()
    assert table.all() == before
    assert table.all(formula="NOT({Email} = '')") == [r for r in before if r["fields"].get("Email")]


def _containers(value, found: list) -> list:
    if isinstance(value, (list, dict)):
        found.append(value)
        for item in value.values() if isinstance(value, dict) else value:
            _containers(item, found)
    return found


def test_a_copy_of_a_kept_record_shares_no_list_or_object_with_it():
    files = [{"id": "att1", "url": "https://x/a.png", "thumbnails": {"small": {"url": "https://x/s.png"}}}]
    kept = with_mutable({"id": "rec1", "createdTime": "2024-01-01T00:00:00.000Z",
                         "fields": {"Name": "Ada", "Tags": ["a", "b"], "Files": files, "Meta": {"k": "v"}, "N": 3}})
    copy = copy_record_fields(kept)
    assert copy == kept["fields"]
    assert {id(c) for c in _containers(copy, [])}.isdisjoint(id(c) for c in _containers(kept["fields"], []))


def separate_engine(db_path, clock, fake) -> Engine:
    """An engine over its own ``Store`` (its own connections, its own commit count), as in
    another process: its commits reach this process only through SQLite's ``data_version``."""
    store = Store(db_path, on_connect=register_sql_functions)
    settings = Settings(path=db_path, mode="offline", flush="manual", max_age=1e9, endpoint_url=fake.url)
    return Engine(store, settings, clock=clock)


def test_reads_see_another_process_write_at_once(fake, db_path, clock, table):
    """The decoded model follows SQLite's data_version: another connection's commit is seen by
    the very next read, with no request to Airtable."""
    assert len(table.all()) == 250
    loads = table.api.engine.model.loads
    other = separate_engine(db_path, clock, fake)
    theirs = other.create(BASE, TABLE, {"fields": {"Full Name": "Written Elsewhere"}})
    other.update(BASE, TABLE, table.all()[0]["id"], {"fields": {"Full Name": "Renamed Elsewhere"}}, replace=False)
    fake.reset_log()
    after = table.all()
    assert after[-1]["id"] == theirs["id"] and after[0]["fields"]["Full Name"] == "Renamed Elsewhere"
    assert table.get(theirs["id"])["fields"]["Full Name"] == "Written Elsewhere"
    assert table.api.engine.model.loads > loads
    assert fake.request_count() == 0
    other.store.close()


def test_a_filtered_read_decodes_the_table_only_when_asked_again(fake, db_path, clock, table, plain):
    """After another process's write, one filtered read costs what it did before the model (SQLite
    decodes only the matches); asked again at the same state, the model is loaded and kept.
    Answers compared with plain pyairtable over the fake."""
    table.all()
    other = separate_engine(db_path, clock, fake)
    other.update(BASE, TABLE, table.first()["id"], {"fields": {"Score": 5}}, replace=False)
    model = table.api.engine.model
    loads = model.loads
    first = table.all(formula="{Score} >= 4")
    assert model.loads == loads
    assert table.all(formula="{Score} >= 4") == first
    assert model.loads == loads + 1
    assert table.all(formula="{Score} >= 2") == [r for r in table.all() if r["fields"].get("Score", 0) >= 2]
    assert model.loads == loads + 1
    assert [r["id"] for r in first] == [r["id"] for r in table.all() if r["fields"].get("Score", 0) >= 4]
    other.store.close()


class ReadModelMachine(RuleBasedStateMachine):
    """Writes by this engine and by a separate one (another process's connection), interleaved
    with reads: every read equals what SQLite holds, read without the decoded model."""

    fake: FakeAirtable

    def __init__(self) -> None:
        super().__init__()
        directory = Path(tempfile.mkdtemp())
        self.clock = FakeClock()
        self.api = Api(self.fake.token, endpoint_url=self.fake.url, path=directory / "c.sqlite3", flush="manual",
                       clock=self.clock, sleep=self.clock.sleep, max_age=1e9)
        self.table = self.api.table(BASE, TABLE)
        self.table.all()
        self.other = separate_engine(directory / "c.sqlite3", self.clock, self.fake)
        self.created = 0

    def ids(self) -> list[str]:
        return [row[0] for row in self.api.engine.store.conn.execute(
            "SELECT id FROM records WHERE fields IS NOT NULL ORDER BY position")]

    @rule(score=st.integers(0, 5), here=st.booleans())
    def create(self, score: int, here: bool) -> None:
        self.created += 1
        body = {"fields": {"Full Name": f"New {self.created}", "Score": score, "Tags": ["Inbound"]}}
        (self.api.engine if here else self.other).create(BASE, TABLE, body)

    @rule(pick=st.integers(0, 10_000), score=st.integers(0, 5), here=st.booleans())
    def update(self, pick: int, score: int, here: bool) -> None:
        ids = self.ids()
        engine = self.api.engine if here else self.other
        engine.update(BASE, TABLE, ids[pick % len(ids)], {"fields": {"Score": score}}, replace=False)

    @rule(pick=st.integers(0, 10_000), here=st.booleans())
    def delete(self, pick: int, here: bool) -> None:
        ids = self.ids()
        (self.api.engine if here else self.other).delete(BASE, TABLE, [ids[pick % len(ids)]], single=True)

    @rule(formula=st.sampled_from([None, "{Score} >= 3", "NOT({Email} = '')", "FIND('New', {Full Name})"]))
    def read(self, formula: str | None) -> None:
        options = {"formula": formula} if formula else {}
        got = self.table.all(**options)
        first = self.table.first(**options)
        got[0:1] and got[0]["fields"].clear()  # a caller mutating its answer changes nothing
        self.api.engine.model.clear()
        expected = self.table.all(**options)
        self.api.engine.model.clear()
        assert [r["id"] for r in got] == [r["id"] for r in expected]
        assert got[1:] == expected[1:]
        assert first == (expected[0] if expected else None)

    def teardown(self) -> None:
        self.other.store.close()
        self.api.close()


def test_the_read_model_always_equals_sqlite(fake):
    ReadModelMachine.fake = fake
    run_state_machine_as_test(
        ReadModelMachine,
        settings=settings(max_examples=8, stateful_step_count=12, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )


def test_own_writes_patch_the_model_without_decoding_the_table_again(api, table, plain):
    """Compared with plain pyairtable over the fake, after the cache's writes are flushed."""
    table.all()
    loads = api.engine.model.loads
    ids = [r["id"] for r in table.all()]
    # "Qualified": an option Status has (one it lacks is refused at the call, as Airtable refuses it).
    table.update(ids[3], {"Status": "Qualified"})
    created = table.create({"Full Name": "Zed Newcomer", "Status": "Qualified"})
    table.delete(ids[7])
    table.batch_update([{"id": ids[9], "fields": {"Score": 99}}])
    seen = table.all()
    assert api.engine.model.loads == loads
    assert [r["id"] for r in seen] == [i for i in ids if i != ids[7]] + [created["id"]]
    won = table.all(formula="{Status} = 'Qualified'")
    assert ids[3] in {r["id"] for r in won} and created["id"] in {r["id"] for r in won}
    api.flush()
    assert [r["fields"] for r in table.all()] == [r["fields"] for r in plain.all()]


def test_formula_reads_over_the_model_match_airtables_answers(table, plain):
    """Broad filters evaluated in Python over the decoded model, remembered per state; compared
    with plain pyairtable over the project's fake."""
    formulas = [
        "NOT({Email} = '')",
        "AND({Website} != '', {Company Description} = '')",
        "AND(NOT({Full Name} = ''), OR({Company} = '', {Website} = ''))",
        "{Score} > 3",
        "FIND('a', LOWER({Full Name}))",
    ]
    for formula in formulas:
        expected = plain.all(formula=formula)
        assert table.all(formula=formula) == expected, formula
        assert table.all(formula=formula) == expected, formula  # remembered
    record = table.all(formula="{Score} > 3")[0]
    table.update(record["id"], {"Score": 0})
    assert record["id"] not in {r["id"] for r in table.all(formula="{Score} > 3")}


def test_pyairtable_still_validates_what_airtable_answered(api, table, fake, monkeypatch):
    """Only the engine's own answers skip pyairtable's check: a malformed answer from Airtable
    (here a formula the cache sends on) fails as it does in plain pyairtable."""
    import pydantic

    from airtable_cached.engine import formula_bridge

    monkeypatch.setattr(formula_bridge, "remote_reason", lambda *a: "sent to Airtable for this test")
    table.all()
    monkeypatch.setattr(api.sync, "list_remote", lambda *a, **k: {"records": [{"id": "recX"}]})
    with pytest.raises(pydantic.ValidationError):
        table.all(formula="{Score} > 3")
    assert table.all()  # the cache's own answers still pass


def test_writing_statistics_keeps_the_model(api, table):
    """Statistics and a token's grant change no record: the decoded model stays current."""
    table.all()
    loads = api.engine.model.loads
    api.engine.stats.write()
    api.engine.grant(BASE)
    table.all()
    table.get(table.first()["id"])
    assert api.engine.model.loads == loads


def test_an_index_made_for_a_filter_keeps_the_model(api, table):
    """An index changes no record: the decoded model stays current after a read makes one."""
    table.all()
    loads = api.engine.model.loads
    assert api.engine.indexes.ensure_index("Company") is not None
    table.all()
    table.get(table.first()["id"])
    assert api.engine.model.loads == loads


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
@settings(max_examples=200, deadline=None)
def test_the_models_json_decoding_is_json_loads(value):
    """msgspec where it can, json.loads where it cannot (numbers past a float, lone surrogates):
    the same values, key order included."""
    from airtable_cached.engine.readmodel import loads
    from airtable_cached.rules.records import dumps

    text = dumps({"v": value})
    assert loads(text) == json.loads(text)
    assert list(loads(text)["v"]) == list(json.loads(text)["v"]) if isinstance(value, dict) else True


@pytest.mark.parametrize("text", ['{"v":1e400}', '{"v":"\\ud800"}', '{"v":123456789012345678901234567890}',
                                  '{"b":1,"a":2}', '{"v":-0.0}'])
def test_what_msgspec_refuses_is_decoded_by_json_loads(text):
    from airtable_cached.engine.readmodel import loads

    assert repr(loads(text)) == repr(json.loads(text))
