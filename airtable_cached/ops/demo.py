"""The main job, on an embedded default: a lead agent against a bundled fake Airtable, with no token.

Starts the fake Airtable on 127.0.0.1 (with Airtable's latency and rate limit), runs the same small
agent twice, once with plain pyairtable and once through airtable_cached, and shows what the cache
did: reads served locally, requests saved, writes queued and flushed, and that Airtable ended up
in the same state.

    airtable-cached demo            # or: python -m airtable_cached demo
    airtable-cached demo --url postgresql://...   # the cache in a PostgreSQL database instead

Its cache is scratch, a temporary SQLite file, unless ``--path`` or ``--url`` names one:
``AIRTABLE_CACHED_URL`` and ``AIRTABLE_CACHED_PATH`` are not used, so that a demo never writes into
the cache the agents of this host share.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyairtable

from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads

BASE = "appDEMObase000001"
TABLE = "Leads"


def lead_agent(table: pyairtable.Table, steps: int) -> dict:
    """A typical enrichment agent: re-reads its work list every step, enriches, writes back."""
    enriched = created = 0
    for step in range(steps):
        todo = table.all(formula="AND({Email} = '', {Status} = 'New')", max_records=5)
        for lead in todo:
            name = lead["fields"].get("Full Name", "someone")
            email = name.lower().replace(" ", ".") + "@example.com"
            table.update(lead["id"], {"Email": email, "Status": "Contacted"})
            enriched += 1
        if step % 3 == 0:
            table.create({"Full Name": f"Demo Lead {step}", "Status": "New", "Score": step})
            created += 1
        table.first(sort=["-Score"])  # the agent checks its best lead every step
    return {"enriched": enriched, "created": created}


def _content(records: list[dict]) -> Counter:
    return Counter(repr(sorted(r["fields"].items())) for r in records)


def _run(label: str, make_table: Callable[[FakeAirtable], pyairtable.Table], steps: int, latency: float, out) -> tuple[FakeAirtable, dict]:
    # No rate limit on the fake: plain pyairtable would meet 429s at the pace this agent calls
    # (its retry gives up long before Airtable's 30 s penalty ends). airtable_cached paces itself.
    fake = FakeAirtable(latency=latency, seed=0).start()
    fake.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(300, seed=0))
    table = make_table(fake)
    started = time.perf_counter()
    did = lead_agent(table, steps)
    agent_seconds = time.perf_counter() - started
    requests_during_agent = fake.request_count()
    flush = None
    if hasattr(table, "flush"):
        flush = table.flush()
    total = time.perf_counter() - started
    stats = {
        **did,
        "agent_seconds": agent_seconds,
        "total_seconds": total,
        "requests_during_agent": requests_during_agent,
        "requests_total": fake.request_count(),
        "flush": flush,
    }
    out(f"  {label:<16} agent {agent_seconds:6.2f} s, {requests_during_agent:4d} requests while it ran,"
        f" {fake.request_count():4d} in all")
    return fake, stats


def _next_run_starts_warm(fake: FakeAirtable, location: str, out) -> bool:
    """The daily-agent set-up: ``serve-sync`` keeps the cache file fresh (incrementally) while others
    edit Airtable; the agent's next run finds it warm and its first read sends nothing."""
    from airtable_cached import Api
    from airtable_cached.config import Settings
    from airtable_cached.ops.serve import SyncService

    records = fake.records(BASE, TABLE)
    fake.set_fields(BASE, TABLE, records[0]["id"], {"Status": "Qualified"})  # a colleague's edit
    fake.delete_record(BASE, TABLE, records[1]["id"])  # and a deletion
    before = fake.request_count()
    service = SyncService(Settings.from_env(url=location, endpoint_url=fake.url, feed="webhooks"), fake.token,
                          tables=[f"{BASE}/{TABLE}"], pull_every=0, backup_every=None)
    service.cycle()
    service.close()
    refresh_requests = fake.request_count() - before
    api = Api(fake.token, endpoint_url=fake.url, url=location, flush="manual", feed="webhooks")
    before = fake.request_count()
    started = time.perf_counter()
    todo = api.table(BASE, TABLE).all(formula="AND({Email} = '', {Status} = 'New')", max_records=5)
    first_read = time.perf_counter() - started
    sent = fake.request_count() - before
    seen = {r["id"]: r["fields"] for r in api.table(BASE, TABLE).all()}
    current = records[1]["id"] not in seen and seen[records[0]["id"]].get("Status") == "Qualified"
    api.close()
    out(f"  next run, serve-sync beside it      : serve-sync refreshed the file in {refresh_requests} requests"
        f" (an edit and a deletion made elsewhere);")
    out(f"                                        the agent's first read took {first_read * 1000:.1f} ms and sent"
        f" {sent} requests ({len(todo)} leads to do){'' if current else ' - BUT IT MISSED THE CHANGES'}")
    return current and sent == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="airtable-cached demo", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="agent steps (default 12)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds of latency per request (default 0.1)")
    parser.add_argument("--path", type=Path, default=None, help="cache file (default: a temporary one)")
    parser.add_argument("--url", default=None, help="a postgresql:// database for the cache (its tables stay there)")
    args = parser.parse_args(argv)
    if args.url is not None:
        return _demo(args, args.url, kept=True)
    if args.path is not None:
        return _demo(args, str(args.path), kept=True)
    # The cache file of a demo is scratch: removed with its folder, whatever happens.
    with tempfile.TemporaryDirectory(prefix="airtable-cached-demo-") as workdir:
        return _demo(args, str(Path(workdir) / "cache.sqlite3"), kept=False)


def _demo(args: argparse.Namespace, location: str, *, kept: bool) -> int:
    """The demo with its cache at ``location``: a SQLite path or a PostgreSQL URL (given as the
    ``url`` setting either way, which the environment's settings do not override)."""
    out = print

    out(f"Fake Airtable on 127.0.0.1: {args.latency * 1000:.0f} ms a request, 300 leads, no token needed.")
    out(f"The agent runs {args.steps} steps: read its work list, enrich 5 leads, add a lead, check its best lead.\n")

    plain_fake, plain = _run(
        "plain pyairtable",
        lambda fake: pyairtable.Api(fake.token, endpoint_url=fake.url).table(BASE, TABLE),
        args.steps, args.latency, out,
    )
    from airtable_cached import Api

    cached_api: list[Api] = []

    def cached_table(fake: FakeAirtable):
        # The change feed on, as by default (the demo's next run shows deletions learnt from it).
        api = Api(fake.token, endpoint_url=fake.url, url=location, flush="manual", feed="webhooks")
        cached_api.append(api)
        return api.table(BASE, TABLE)

    cached_fake, cached = _run("airtable_cached", cached_table, args.steps, args.latency, out)
    api = cached_api[0]
    api.engine.stats.write()
    local_reads = api.engine.store.replica.read_count(("list.local", "get.local", "list.page"))
    flush = cached["flush"]
    same = _content(plain_fake.records(BASE, TABLE)) == _content(cached_fake.records(BASE, TABLE))

    out("\nWhat the cache did")
    out(f"  reads answered from the local cache : {local_reads}")
    out(f"  requests sent while the agent ran   : {cached['requests_during_agent']} (plain pyairtable: {plain['requests_during_agent']})")
    saved = plain["requests_total"] - cached["requests_total"]
    out(f"  requests saved in all               : {saved} of {plain['requests_total']}")
    writes = cached["enriched"] + cached["created"]
    out(f"  writes queued, then flushed         : {writes} writes ({cached['enriched']} updates, {cached['created']} creates)"
        f" reached Airtable as {len(flush.sent)} records in {flush.requests} requests; {len(flush.failed)} failed")
    speedup = plain["agent_seconds"] / max(cached["agent_seconds"], 1e-9)
    out(f"  agent time                          : {cached['agent_seconds']:.2f} s vs {plain['agent_seconds']:.2f} s ({speedup:.1f}x as fast)")
    out(f"  Airtable's final state              : {'identical to the plain run' if same else 'DIFFERENT from the plain run'}")
    out(f"  cache                               : {api.engine.store.location if kept else 'temporary, removed now (keep one with --path)'}")
    api.close()
    warm = _next_run_starts_warm(cached_fake, location, out)
    plain_fake.stop()
    cached_fake.stop()
    return 0 if same and flush.ok and warm else 1


if __name__ == "__main__":
    raise SystemExit(main())
