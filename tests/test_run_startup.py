"""``airtable-cached run`` starts a program without loading the cache until the program imports
requests (the start-up cost: benchmarks/bench_run_startup.py). No network is involved."""

from __future__ import annotations

import sys

from airtable_cached.run import run_program

PROBE = (
    "import sys\n"
    "print('before', 'airtable_cached' in sys.modules, 'requests' in sys.modules)\n"
    "import requests\n"
    "from airtable_cached import http\n"
    "print('after', http.is_installed(), type(requests.Session.get_adapter).__name__ != 'function')\n"
)


def test_the_cache_is_loaded_only_when_the_program_imports_requests(tmp_path, capfd):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    assert run_program([sys.executable, str(script)], path=tmp_path / "c.sqlite3", flush="manual") == 0
    out = capfd.readouterr().out.splitlines()
    assert out == ["before False False", "after True True"]


def test_a_program_that_never_imports_requests_never_loads_the_cache(tmp_path, capfd):
    code = "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('airtable_cached', 'pyairtable', 'requests')))"
    assert run_program([sys.executable, "-c", code], path=tmp_path / "c.sqlite3", flush="manual") == 0
    assert capfd.readouterr().out.strip() == "[]"

