"""The examples, run unchanged: each against a fake Airtable twice, once plain and once through the
cache, from the same data. The two fakes must end in the same state, and the cached run must have sent
far fewer requests.

* ``daily_enricher.py`` (pyairtable): the cached run is a copy whose one import line is swapped;
* ``raw_enricher.py`` (plain requests): the cached run is ``python -m airtable_cached run -- ...``;
* ``lead_cache.py``: its helpers' answers against plain pyairtable's.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import requests

from airtable_cached import Api
from airtable_cached.testing import LEADS_SCHEMA, FakeAirtable, seed_leads
from tests.conftest import BASE, TABLE

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PLAIN_IMPORT = "from pyairtable import Api\n"
CACHED_IMPORT = "from airtable_cached import Api\n"
SEED = 7
LEADS = 200


def _fake() -> FakeAirtable:
    fake = FakeAirtable(seed=SEED).start()
    fake.add_table(BASE, TABLE, LEADS_SCHEMA, seed_leads(LEADS, seed=SEED))
    return fake


@pytest.fixture
def fakes():
    """Two fake Airtables holding the same records (same ids too): one per run."""
    plain, cached = _fake(), _fake()
    assert plain.records(BASE, TABLE) == cached.records(BASE, TABLE)
    yield plain, cached
    plain.stop()
    cached.stop()


def _content(fake: FakeAirtable) -> Counter:
    """Airtable's final state, by content (created records get different ids in the two runs)."""
    return Counter(json.dumps(r["fields"], sort_keys=True) for r in fake.records(BASE, TABLE))


def _env(fake: FakeAirtable, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRTABLE_API_KEY=fake.token,
        AIRTABLE_BASE_ID=BASE,
        AIRTABLE_TABLE=TABLE,
        AIRTABLE_ENDPOINT_URL=fake.url,
        # The cache's own settings: its file, and the Airtable it syncs with (for the raw agent,
        # also the host whose requests are intercepted). The fake has no rate limit: no pacing.
        AIRTABLE_CACHED_PATH=str(tmp_path / "cache.sqlite3"),
        AIRTABLE_CACHED_ENDPOINT_URL=fake.url,
        AIRTABLE_CACHED_RATE_LIMIT="1000",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), str(EXAMPLES), env.get("PYTHONPATH")])),
    )
    return env


def _run(argv: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{argv} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _queue_is_empty(fake: FakeAirtable, tmp_path: Path) -> None:
    api = Api(fake.token, endpoint_url=fake.url, path=tmp_path / "cache.sqlite3", flush="manual")
    try:
        assert api.pending() == []
    finally:
        api.close()


# -- daily_enricher.py: pyairtable, one import line swapped ----------------------------------------------

def _swapped_copy(tmp_path: Path) -> Path:
    source = (EXAMPLES / "daily_enricher.py").read_text(encoding="utf-8")
    assert source.count(PLAIN_IMPORT) == 1
    swapped = source.replace(PLAIN_IMPORT, CACHED_IMPORT)
    diff = [line for line in difflib.unified_diff(source.splitlines(True), swapped.splitlines(True), n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert diff == ["-" + PLAIN_IMPORT, "+" + CACHED_IMPORT]
    copy = tmp_path / "daily_enricher.py"
    copy.write_text(swapped, encoding="utf-8")
    return copy


def test_daily_enricher_is_plain_pyairtable():
    source = (EXAMPLES / "daily_enricher.py").read_text(encoding="utf-8")
    assert "airtable_cached" not in re.sub(r'""".*?"""', "", source, flags=re.S)
    assert "batch_update" in source and "formula=" in source


def test_daily_enricher_same_final_state_with_far_fewer_requests(fakes, tmp_path):
    plain_fake, cached_fake = fakes
    before = _content(plain_fake)

    plain_report = _run([sys.executable, str(EXAMPLES / "daily_enricher.py")], _env(plain_fake, tmp_path / "plain"))
    copy = _swapped_copy(tmp_path)
    cached_report = _run([sys.executable, str(copy)], _env(cached_fake, tmp_path / "cached"))

    # The job did something: leads enriched, contacts created, leads marked.
    assert plain_report["enriched"] > 20 and plain_report["created"] > 3
    assert plain_report["leads"] == LEADS + plain_report["created"]
    assert _content(plain_fake) != before
    # The cached run saw the same things (its reads include its own queued writes) ...
    assert cached_report == plain_report
    # ... its exit flushed everything, and Airtable ended in the same state.
    _queue_is_empty(cached_fake, tmp_path / "cached")
    assert _content(cached_fake) == _content(plain_fake)

    plain_requests, cached_requests = plain_fake.request_count(), cached_fake.request_count()
    assert cached_requests * 5 <= plain_requests, (cached_requests, plain_requests)
    # Reads cost the pull only (a page per 100 records, and the schema), not a request per lookup.
    assert cached_fake.request_count(method="GET") <= 2 + LEADS // 100
    # Each record's update and its "processed" mark reach Airtable as one write, 10 to a request.
    assert cached_fake.request_count(method="PATCH") <= -(-plain_report["enriched"] // 10)


# -- raw_enricher.py: plain requests, run through `airtable-cached run` ----------------------------------

def test_raw_enricher_never_imports_pyairtable():
    source = (EXAMPLES / "raw_enricher.py").read_text(encoding="utf-8")
    assert "import requests" in source
    assert not re.search(r"^\s*(from|import)\s+(pyairtable|airtable_cached)", source, flags=re.M)


def test_raw_enricher_through_airtable_cached_run(fakes, tmp_path):
    plain_fake, cached_fake = fakes
    script = str(EXAMPLES / "raw_enricher.py")

    plain_report = _run([sys.executable, script], _env(plain_fake, tmp_path / "plain"))
    cached_report = _run([sys.executable, "-m", "airtable_cached", "run", "--", sys.executable, script],
                         _env(cached_fake, tmp_path / "cached"))

    assert plain_report["seen"] == 100  # one GET without paging: the first page only
    assert plain_report["enriched"] > 10 and plain_report["created"] > 1
    assert cached_report == plain_report
    _queue_is_empty(cached_fake, tmp_path / "cached")
    assert _content(cached_fake) == _content(plain_fake)

    # Plain: one PATCH per record and per mark, one POST per contact.
    assert plain_report["marked"] > 10
    assert plain_fake.request_count(method="PATCH") == plain_report["enriched"] + plain_report["marked"]
    assert plain_fake.request_count(method="POST") == plain_report["created"]
    plain_requests, cached_requests = plain_fake.request_count(), cached_fake.request_count()
    assert cached_requests * 4 <= plain_requests, (cached_requests, plain_requests)
    assert cached_fake.request_count(method="PATCH") <= -(-plain_report["enriched"] // 10)
    assert cached_fake.request_count(method="POST") <= -(-plain_report["created"] // 10)


# -- lead_cache.py: the helpers against plain pyairtable ---------------------------------------------------

@pytest.fixture(scope="module")
def lead_cache():
    spec = importlib.util.spec_from_file_location("lead_cache", EXAMPLES / "lead_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _words_match(record: dict, words: list[str]) -> bool:
    """Plain Python's reading of search_leads: every word begins a word of name, company or email."""
    text = " ".join(str(record["fields"].get(f, "")) for f in ("Full Name", "Company", "Email")).casefold()
    present = re.findall(r"\w+", text)
    return all(any(p.startswith(w.casefold()) for p in present) for w in words)


def test_lead_helpers_answer_as_plain_pyairtable(lead_cache, table, plain, fake):
    assert lead_cache.get_all_leads(table) == plain.all()
    for status in ("New", "Contacted", "Qualified", "Lost", "Nonexistent"):
        assert lead_cache.get_leads_by_status(status, table) == plain.all(formula=f"{{Status}} = '{status}'")
    everyone = plain.all()
    for record in everyone[::37]:
        assert lead_cache.get_lead_by_id(record["id"], table) == plain.get(record["id"])
    assert lead_cache.get_lead_by_id("recZZZZZZZZZZZZZZ", table) is None
    with pytest.raises(requests.HTTPError) as missing:
        plain.get("recZZZZZZZZZZZZZZ")
    assert missing.value.response.status_code == 404

    ascii_leads = [r for r in everyone if {"Full Name", "Company", "Email"} <= set(r["fields"])
                   and r["fields"]["Full Name"].isascii() and r["fields"]["Company"].isascii()]
    lead = ascii_leads[0]["fields"]
    queries = [lead["Full Name"], lead["Full Name"].upper(), lead["Company"].lower(), lead["Email"],
               lead["Company"].split()[0][:3], "zzzz-nobody"]
    for text in queries:
        found = lead_cache.search_leads(text, table)
        expected = {r["id"] for r in everyone if _words_match(r, re.findall(r"\w+", text))}
        assert {r["id"] for r in found} == expected, text
        assert found == [plain.get(r["id"]) for r in found]
    assert lead_cache.search_leads(lead["Email"], table)[0]["fields"]["Email"] == lead["Email"]
    assert len(lead_cache.search_leads(lead["Company"].split()[0][:3], table, limit=2)) <= 2


def test_lead_helpers_cost_no_requests_once_pulled_and_see_queued_writes(lead_cache, table, fake):
    lead_cache.get_all_leads(table)
    fake.reset_log()
    for _ in range(5):
        lead_cache.get_all_leads(table)
        lead_cache.get_leads_by_status("New", table)
        lead_cache.search_leads("acme", table)
    created = table.create({"Full Name": "Grace Hopper", "Company": "Cobol Works", "Status": "New"})
    assert lead_cache.get_lead_by_id(created["id"], table)["fields"]["Full Name"] == "Grace Hopper"
    assert created["id"] in {r["id"] for r in lead_cache.get_leads_by_status("New", table)}
    assert [r["id"] for r in lead_cache.search_leads("grace cobol", table)] == [created["id"]]
    assert fake.request_count() == 0


def test_lead_helpers_default_table_from_the_environment(lead_cache, fake, monkeypatch, tmp_path, plain):
    monkeypatch.setenv("AIRTABLE_API_KEY", fake.token)
    monkeypatch.setenv("AIRTABLE_BASE_ID", BASE)
    monkeypatch.setenv("AIRTABLE_TABLE", TABLE)
    monkeypatch.setenv("AIRTABLE_ENDPOINT_URL", fake.url)
    monkeypatch.setenv("AIRTABLE_CACHED_PATH", str(tmp_path / "env-cache.sqlite3"))
    monkeypatch.setenv("AIRTABLE_CACHED_FLUSH", "manual")
    lead_cache.leads_table.cache_clear()
    try:
        assert lead_cache.get_all_leads() == plain.all()
        assert lead_cache.leads_table() is lead_cache.leads_table()
    finally:
        lead_cache.leads_table().api.close()
        lead_cache.leads_table.cache_clear()
