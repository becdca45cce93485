"""Many processes opening one new database file at the same moment all get a working WAL store."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_processes_opening_a_new_file_at_once(tmp_path):
    path = tmp_path / "new.sqlite3"
    script = textwrap.dedent(
        f"""
        import sys
        from airtable_cached.store import Store
        store = Store({str(path)!r})
        with store.transaction() as conn:
            conn.execute("INSERT INTO tables (base_id, name) VALUES ('app', ?)", (sys.argv[1],))
        print(store.conn.execute("PRAGMA journal_mode").fetchone()[0])
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(6)]
    results = [(p.wait(60), p.stdout.read().strip(), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _out, _err in results), [err for _c, _o, err in results if err]
    assert {out for _code, out, _err in results} == {"wal"}
    import sqlite3

    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM tables").fetchone()[0] == 6
