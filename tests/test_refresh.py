"""Incremental refresh, deletions seen (change feed and id sweep), stale reads that do not wait.

Every test here runs against the project's fake Airtable (airtable_cached/testing/, its webhooks
in airtable_cached/testing/webhooks.py) over real HTTP on 127.0.0.1 and a real SQLite file; none of
them claims to match recorded Airtable traffic. The Date header the watermark rests on is the one
Airtable sends on every answer (see the recorded traffic under ../shared/airtable-traffic/).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests
from conftest import BASE, TABLE, FakeClock

from airtable_cached import Api
from airtable_cached.engine import outage
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads

ROOT = Path(__file__).resolve().parent.parent


def cached(fake: FakeAirtable, path: Path, clock: FakeClock, **settings) -> Api:
    settings.setdefault("feed", "webhooks")
    return Api(fake.token, endpoint_url=fake.url, path=path, flush="manual", clock=clock, sleep=clock.sleep, **settings)


def local_view(table) -> dict[str, dict]:
    return {r["id"]: r["fields"] for r in table.all()}


def remote_view(fake: FakeAirtable) -> dict[str, dict]:
    return {r["id"]: r["fields"] for r in fake.records(BASE, TABLE)}


def incremental_lists(fake: FakeAirtable) -> list[dict]:
    return [r for r in fake.requests if "LAST_MODIFIED_TIME" in (r["query"].get("filterByFormula") or [""])[0]]


def change_remotely(fake: FakeAirtable) -> tuple[str, str, str]:
    """Another user creates one record, changes one and deletes one."""
    records = fake.records(BASE, TABLE)
    made = fake.add_records(BASE, TABLE, [{"Full Name": "Made Elsewhere", "Status": "New"}])[0]
    fake.set_fields(BASE, TABLE, records[3]["id"], {"Company": "Changed Elsewhere Ltd"})
    fake.delete_record(BASE, TABLE, records[7]["id"])
    return made["id"], records[3]["id"], records[7]["id"]


# -- 1. incremental pull, 2. deletions -------------------------------------------------------------


def test_remote_creates_updates_and_deletes_reach_the_cache_by_the_feed(fake, db_path, clock):
    api = cached(fake, db_path, clock)
    table = api.table(BASE, TABLE)
    assert len(table.all()) == 250  # first read: a full pull, and the base's webhook made first
    assert len(fake.webhooks.of_base(BASE)) == 1
    made, changed, deleted = change_remotely(fake)
    clock.advance(301)
    fake.reset_log()
    assert local_view(table) == remote_view(fake)
    paths = [(r["method"], r["path"]) for r in fake.requests]
    assert len(paths) <= 3, paths  # payloads after the cursor, then the records changed since the watermark
    assert any(p.endswith("/payloads") for _m, p in paths)
    assert len(incremental_lists(fake)) == 1
    assert table.get(made)["fields"]["Full Name"] == "Made Elsewhere"
    assert table.get(changed)["fields"]["Company"] == "Changed Elsewhere Ltd"
    with pytest.raises(requests.HTTPError) as gone:
        table.get(deleted)
    assert gone.value.response.status_code == 404
    api.close()


def test_remote_creates_updates_and_deletes_reach_the_cache_by_the_sweep(fake, db_path, clock):
    api = cached(fake, db_path, clock, feed="off", sweep_every=600)
    table = api.table(BASE, TABLE)
    table.all()
    made, changed, deleted = change_remotely(fake)
    clock.advance(301)  # stale, but the sweep is not due: creates and updates arrive, the delete waits
    fake.reset_log()
    view = local_view(table)
    assert made in view and view[changed]["Company"] == "Changed Elsewhere Ltd" and deleted in view
    assert fake.request_count() == 1 and not fake.webhooks.of_base(BASE)
    clock.advance(301)  # the sweep is due: ids listed with the primary field only
    fake.reset_log()
    assert local_view(table) == remote_view(fake)
    sweeps = [r for r in fake.requests if r["query"].get("fields[]") == ["Full Name"]]
    assert len(sweeps) == 3  # 250 ids, 100 a page
    api.close()


def test_the_sweep_keeps_a_record_the_queue_still_writes(fake, db_path, clock, caplog):
    api = cached(fake, db_path, clock, feed="off", sweep_every=0)
    table = api.table(BASE, TABLE)
    victim = table.all()[5]["id"]
    table.update(victim, {"Status": "Qualified"})
    fake.delete_record(BASE, TABLE, victim)
    clock.advance(301)
    with caplog.at_level(logging.WARNING, logger="airtable_cached"):
        assert table.get(victim)["fields"]["Status"] == "Qualified"
    assert "kept while queued writes name them" in caplog.text
    api.close()


def test_a_token_that_may_not_manage_webhooks_falls_back_to_the_sweep(fake, db_path, clock, caplog):
    fake.webhooks.access = False  # 403, as for a token without webhook:manage
    api = cached(fake, db_path, clock, sweep_every=0)
    table = api.table(BASE, TABLE)
    with caplog.at_level(logging.WARNING, logger="airtable_cached"):
        table.all()
    assert "may not manage webhooks" in caplog.text
    change_remotely(fake)
    clock.advance(301)
    assert local_view(table) == remote_view(fake)
    fake.reset_log()
    clock.advance(301)
    table.all()  # Airtable's refusal is remembered: no webhook request again for a day
    assert not [r for r in fake.requests if "/webhooks" in r["path"]]
    api.close()


def test_a_field_added_in_airtable_is_learnt_from_the_feed(fake, db_path, clock):
    api = cached(fake, db_path, clock)
    table = api.table(BASE, TABLE)
    table.all()
    fake.add_field(BASE, TABLE, {"name": "Priority", "type": "singleLineText"})
    clock.advance(301)
    table.all()
    schema = api.engine.table_info(BASE, TABLE).schema
    assert "Priority" in [f["name"] for f in schema["fields"]]
    api.close()


def test_a_change_landing_during_a_refresh_is_not_missed(fake, db_path, clock):
    """A record on a page already read changes while the pull reads the next page: the watermark
    is Airtable's clock when the pull began, so the next refresh brings it."""
    api = cached(fake, db_path, clock)
    table = api.table(BASE, TABLE)
    first_page_id = fake.records(BASE, TABLE)[0]["id"]
    original = fake.handle_http

    def change_during_second_page(method, raw_path, headers, body):
        if "offset=" in raw_path and not fake.records(BASE, TABLE)[0]["fields"].get("Company", "").startswith("Mid"):
            fake.set_fields(BASE, TABLE, first_page_id, {"Company": "Mid-pull Change"})
        return original(method, raw_path, headers, body)

    fake.handle_http = change_during_second_page
    table.all()
    fake.handle_http = original
    assert table.get(first_page_id)["fields"]["Company"] != "Mid-pull Change"  # the pull saw it before
    clock.advance(301)
    assert table.get(first_page_id)["fields"]["Company"] == "Mid-pull Change"
    api.close()


def test_the_overlap_covers_a_modification_time_behind_airtables_clock(fake, db_path, clock):
    """LAST_MODIFIED_TIME() written by a server whose clock lags the one stamping Date by 20 s."""
    api = cached(fake, db_path, clock, overlap=60)
    table = api.table(BASE, TABLE)
    table.all()
    rid = fake.records(BASE, TABLE)[9]["id"]
    fake.advance_clock(5)
    fake.set_fields(BASE, TABLE, rid, {"Score": 999})
    with fake._lock:  # the modification lands stamped 20 s in the past
        record = fake._table_or_raise(BASE, TABLE).find(rid)
        record["_modified"] = _minus(record["_modified"], 20)
    clock.advance(301)
    assert table.get(rid)["fields"]["Score"] == 999
    api.close()


def _minus(iso: str, seconds: int) -> str:
    import datetime as dt

    moment = dt.datetime.fromisoformat(iso.replace("Z", "+00:00")) - dt.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_a_change_the_watermark_cannot_see_reaches_the_cache_by_the_feed(fake, db_path, clock):
    """A value that changed while LAST_MODIFIED_TIME() stayed put (as a lookup fed by another table
    does): the feed reports the record, the refresh asks for it by id."""
    api = cached(fake, db_path, clock)
    table = api.table(BASE, TABLE)
    table.all()
    rid = fake.records(BASE, TABLE)[11]["id"]
    fake.advance_clock(86400)
    fake.set_fields(BASE, TABLE, rid, {"Score": 4321})
    with fake._lock:  # its modification time stays a day back, before the watermark
        record = fake._table_or_raise(BASE, TABLE).find(rid)
        record["_modified"] = _minus(record["_modified"], 2 * 86400)
    clock.advance(301)
    fake.reset_log()
    assert table.get(rid)["fields"]["Score"] == 4321
    assert len([r for r in fake.requests if "RECORD_ID()" in (r["query"].get("filterByFormula") or [""])[0]]) == 1
    api.close()


def test_a_queued_write_to_a_field_changed_remotely_follows_airtable_wins(fake, db_path, clock):
    api = cached(fake, db_path, clock)
    table = api.table(BASE, TABLE)
    rid = table.all()[0]["id"]
    table.update(rid, {"Company": "Local Co", "Score": 42})
    fake.set_fields(BASE, TABLE, rid, {"Company": "Remote Co"})
    clock.advance(301)
    fields = table.get(rid)["fields"]
    assert fields["Company"] == "Remote Co" and fields["Score"] == 42  # Airtable wins Company only
    conflicts = api.engine.store.conn.execute("SELECT field, local_value FROM conflicts").fetchall()
    assert [(c[0], c[1]) for c in conflicts] == [("Company", '"Local Co"')]
    api.flush()
    assert remote_view(fake)[rid]["Company"] == "Remote Co" and remote_view(fake)[rid]["Score"] == 42
    api.close()


def test_a_failed_refresh_keeps_its_watermark_and_the_next_one_repeats_the_work(fake, db_path, clock):
    api = cached(fake, db_path, clock, feed="off", retries=1)
    table = api.table(BASE, TABLE)
    table.all()
    state = api.engine.store.conn.execute("SELECT watermark FROM refresh_state").fetchone()[0]
    rid = fake.records(BASE, TABLE)[2]["id"]
    fake.set_fields(BASE, TABLE, rid, {"Score": 1234})
    clock.advance(301)
    fake.fail_next(503, path_contains=f"/{TABLE}")
    served = {r["id"]: r for r in table.all()}  # Airtable unavailable: the stale cache is served
    assert served[rid]["fields"].get("Score") != 1234
    assert api.engine.store.conn.execute("SELECT watermark FROM refresh_state").fetchone()[0] == state
    clock.advance(outage.QUIET_AFTER_FAILURE + 1)  # the next stale read asks Airtable again
    assert table.get(rid)["fields"]["Score"] == 1234
    api.close()


def test_after_a_reset_the_next_refresh_pulls_whole(fake, db_path, clock):
    from airtable_cached.ops import maintenance

    api = cached(fake, db_path, clock)
    table = api.table(BASE, TABLE)
    table.all()
    maintenance.reset(api.engine.store)
    clock.advance(301)
    assert len(table.all()) == 250
    api.close()


def test_a_table_with_computed_fields_from_elsewhere_gets_full_pulls_on_their_cadence(db_path, clock):
    schema = [*LEADS_SCHEMA, {"name": "Deals", "type": "count", "options": {}}]
    with FakeAirtable(seed=3) as fake:
        fake.add_table(BASE, TABLE, schema, seed_leads(120, seed=3))
        api = cached(fake, db_path, clock, full_pull_every=3600)
        table = api.table(BASE, TABLE)
        table.all()
        clock.advance(301)
        fake.reset_log()
        table.all()
        assert len(incremental_lists(fake)) == 1
        clock.advance(3600)
        fake.reset_log()
        table.all()
        assert not incremental_lists(fake) and fake.request_count(path_contains=f"/v0/{BASE}/{TABLE}") == 2
        from airtable_cached.ops import maintenance

        row = maintenance.status(api.engine.store, api.settings, now=clock())["tables"][0]
        assert "Deals" in row["full_pull_reason"]
        api.close()


# -- lost cursors, expired webhooks, the limit ---------------------------------------------------------


def test_a_lost_cursor_falls_back_to_one_full_pull(fake, db_path, clock):
    api = cached(fake, db_path, clock)
    table = api.table(BASE, TABLE)
    table.all()
    hook = fake.webhooks.of_base(BASE)[0]["id"]
    _made, _changed, deleted = change_remotely(fake)
    fake.webhooks.drop_payloads(hook)  # a week went by: Airtable no longer keeps them
    clock.advance(301)
    fake.reset_log()
    assert local_view(table) == remote_view(fake) and deleted not in local_view(table)
    assert fake.request_count(path_contains=f"/v0/{BASE}/{TABLE}") == 3  # the full pull
    clock.advance(301)
    fake.reset_log()
    table.all()
    assert len(incremental_lists(fake)) == 1  # and incremental again
    api.close()


def test_an_expired_webhook_falls_back_to_one_full_pull_with_a_new_webhook(fake, db_path, clock):
    api = cached(fake, db_path, clock)
    table = api.table(BASE, TABLE)
    table.all()
    old = fake.webhooks.of_base(BASE)[0]["id"]
    _made, _changed, deleted = change_remotely(fake)
    fake.webhooks.expire(old)
    clock.advance(301)
    assert local_view(table) == remote_view(fake)
    hooks = fake.webhooks.of_base(BASE)
    assert len(hooks) == 1 and hooks[0]["id"] != old
    fake.delete_record(BASE, TABLE, fake.records(BASE, TABLE)[0]["id"])
    clock.advance(301)
    fake.reset_log()
    assert local_view(table) == remote_view(fake)
    assert len(incremental_lists(fake)) == 1
    api.close()


def test_a_disabled_webhook_is_replaced_and_the_next_run_pulls_whole_once(fake, db_path, clock):
    first = cached(fake, db_path, clock)
    first.table(BASE, TABLE).all()
    first.close()
    old = fake.webhooks.of_base(BASE)[0]["id"]
    fake.webhooks.disable(old)
    _made, _changed, deleted = change_remotely(fake)
    later = FakeClock(clock() + 86400)
    second = cached(fake, db_path, later)  # the next run lists the base's webhooks once
    table = second.table(BASE, TABLE)
    fake.reset_log()
    assert local_view(table) == remote_view(fake) and deleted not in local_view(table)
    hooks = fake.webhooks.of_base(BASE)
    assert len(hooks) == 1 and hooks[0]["id"] != old and hooks[0]["enabled"]
    assert fake.request_count(path_contains=f"/v0/{BASE}/{TABLE}") == 3  # one full pull
    second.close()


def test_a_webhook_close_to_its_expiry_is_refreshed(fake, db_path, clock):
    api = cached(fake, db_path, clock)
    table = api.table(BASE, TABLE)
    table.all()
    fake.advance_clock(6 * 86400)  # six of its seven days gone
    clock.advance(301)
    table.all()
    assert fake.request_count(method="POST", path_contains="/refresh") == 1
    fake.advance_clock(3 * 86400)  # past the original expiry: still there
    assert len(fake.webhooks.of_base(BASE)) == 1
    api.close()


def test_the_webhook_limit_is_never_exceeded_across_many_runs(fake, tmp_path, caplog):
    for run in range(12):  # twelve runs on one cache file: one webhook, reused
        clock = FakeClock(1_800_000_000 + run * 86400)
        api = cached(fake, tmp_path / "shared.sqlite3", clock)
        api.table(BASE, TABLE).all()
        api.close()
    assert len(fake.webhooks.of_base(BASE)) == 1
    with caplog.at_level(logging.WARNING, logger="airtable_cached"):
        for run in range(12):  # twelve cache files: ten webhooks at most, then the sweep
            api = cached(fake, tmp_path / f"own-{run}.sqlite3", FakeClock())
            assert len(api.table(BASE, TABLE).all()) == 250
            api.close()
    assert len(fake.webhooks.of_base(BASE)) == 10
    assert "10 webhooks per base" in caplog.text


# -- 3. stale reads that do not wait ------------------------------------------------------------


def test_stale_serve_answers_at_once_and_refreshes_in_the_background(fake, db_path, clock):
    api = cached(fake, db_path, clock, stale="serve")
    table = api.table(BASE, TABLE)
    before = local_view(table)
    made, _changed, _deleted = change_remotely(fake)
    clock.advance(301)
    answer = local_view(table)  # at once, from the cache as it was: the refresh has not been waited for
    assert answer == before and made not in answer
    assert api.engine.wait_for_refreshes(timeout=30)
    assert local_view(table) == remote_view(fake) and made in local_view(table)
    from airtable_cached.ops import maintenance

    api.engine.stats.write()
    counted = maintenance.stats(api.engine.store)
    assert counted["refresh"][0]["stale_served"] == 1
    api.close()


# -- single flight across processes -----------------------------------------------------------------

_READER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from airtable_cached import Api
    go = Path(sys.argv[1])
    while not go.exists():
        time.sleep(0.01)
    api = Api(os.environ["FAKE_TOKEN"], flush="manual")
    print(len(api.table(sys.argv[2], sys.argv[3]).all()), flush=True)
""")


def test_two_processes_refreshing_one_table_at_once_send_one_refresh(tmp_path):
    db = tmp_path / "cache.sqlite3"
    with FakeAirtable(seed=2, latency=0.3) as fake:
        fake.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(150, seed=2))
        api = Api(fake.token, endpoint_url=fake.url, path=db, flush="manual", feed="off")
        api.table(BASE, TABLE).all()
        api.close()
        with api.engine.store.transaction() as conn:  # the cache is an hour old
            conn.execute("UPDATE tables SET pulled_at = pulled_at - 3600")
        fake.reset_log()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRTABLE_CACHED_")}
        env.update({"AIRTABLE_CACHED_ENDPOINT_URL": fake.url, "AIRTABLE_CACHED_PATH": str(db),
                    "AIRTABLE_CACHED_FEED": "off", "FAKE_TOKEN": fake.token,
                    "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
        go = tmp_path / "go"
        readers = [subprocess.Popen([sys.executable, "-c", _READER, str(go), BASE, TABLE], env=env,
                                    stdout=subprocess.PIPE, text=True) for _ in range(2)]
        time.sleep(1.0)  # both started and waiting (bounded; the assertion does not depend on it)
        go.touch()
        outputs = [r.communicate(timeout=60)[0].strip() for r in readers]
        assert outputs == ["150", "150"]
        assert len(incremental_lists(fake)) == 1
        assert fake.request_count(path_contains=f"/v0/{BASE}/{TABLE}") == 1


# -- 4. kept warm: the daily agent ------------------------------------------------------------------


def test_a_daily_agent_beside_serve_sync_starts_warm(tmp_path):
    """5,000 records; the agent ran yesterday; serve-sync kept the file fresh since: the agent's
    first read sends no request."""
    from airtable_cached.config import Settings
    from airtable_cached.ops.serve import SyncService

    db = tmp_path / "cache.sqlite3"
    clock = FakeClock()
    with FakeAirtable(seed=4) as fake:
        fake.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(5000, seed=4))
        yesterday = cached(fake, db, clock)
        assert len(yesterday.table(BASE, TABLE).all()) == 5000
        yesterday.close()
        settings = Settings.from_env(path=db, endpoint_url=fake.url, feed="webhooks")
        service = SyncService(settings, fake.token, clock=clock, wait=clock.sleep, backup_every=None)
        for _hour in range(24):  # a day of changes elsewhere while serve-sync runs
            fake.set_fields(BASE, TABLE, fake.records(BASE, TABLE)[_hour]["id"], {"Score": 1000 + _hour})
            clock.advance(3600)
            service.cycle()
        service.close()
        fake.reset_log()
        agent = cached(fake, db, FakeClock(clock() + 1))
        started = time.perf_counter()
        first = agent.table(BASE, TABLE).first(formula="{Score} = 1023")
        elapsed = time.perf_counter() - started
        assert fake.request_count() == 0
        assert first is not None and first["fields"]["Score"] == 1023
        assert elapsed < 1.0  # a loose bound: milliseconds in practice (see benchmarks/bench_refresh.py)
        agent.close()


def test_an_incremental_refresh_keeps_airtables_order_and_own_creates_last(fake, db_path, clock):
    """The order a full pull would give: Airtable's records (new ones after the old), then the
    agent's creates not flushed yet."""
    api = cached(fake, db_path, clock)
    table = api.table(BASE, TABLE)
    table.all()
    mine = table.create({"Full Name": "Queued Here"})
    made = fake.add_records(BASE, TABLE, [{"Full Name": "Made There"}])[0]
    clock.advance(301)
    ids = [r["id"] for r in table.all()]
    assert ids[:-1] == [r["id"] for r in fake.records(BASE, TABLE)] and ids[-2] == made["id"]
    assert ids[-1] == mine["id"]
    api.close()


def test_a_flush_confirmed_while_a_refresh_runs_is_not_undone(fake, db_path, clock):
    """The refresh's list answer was made before the flush reached Airtable; the cache keeps what
    the flush confirmed."""
    from urllib.parse import unquote

    api = cached(fake, db_path, clock)
    table = api.table(BASE, TABLE)
    rid = table.all()[4]["id"]
    table.update(rid, {"Score": 5})
    fake.set_fields(BASE, TABLE, rid, {"Company": "Changed There"})  # so the refresh lists it
    clock.advance(301)
    original = fake.handle_http

    def flush_after_answering(method, raw_path, headers, body):
        answer = original(method, raw_path, headers, body)
        if "LAST_MODIFIED_TIME" in unquote(raw_path):
            fake.handle_http = original
            clock.advance(1)
            api.flush()  # confirmed by Airtable after the list answer was made
        return answer

    fake.handle_http = flush_after_answering
    fields = table.get(rid)["fields"]
    assert fields["Score"] == 5 and fields["Company"] == "Changed There"
    assert remote_view(fake)[rid]["Score"] == 5
    api.close()
