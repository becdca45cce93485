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
        from airtable_cached.store.sqlite import Store
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


def test_close_all_never_closes_a_connection_another_thread_is_using(tmp_path):
    """close_all() from one thread while another is inside a transaction: the other thread's
    connection is not closed under it (that can crash the interpreter); it finishes its work, and
    its connection closes once it lets go. An idle thread's connection closes at once."""
    import gc
    import threading
    import weakref

    from airtable_cached.store.sqlite import Store

    store = Store(tmp_path / "c.sqlite3")
    in_tx, closed, idle_ready, finish = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []
    refs: dict[str, weakref.ref] = {}

    def busy() -> None:
        try:
            with store.transaction() as conn:
                refs["busy"] = weakref.ref(conn)
                conn.execute("INSERT INTO tables (base_id, name) VALUES ('app', 'one')")
                in_tx.set()
                closed.wait(10)
                conn.execute("INSERT INTO tables (base_id, name) VALUES ('app', 'two')")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def idle() -> None:
        refs["idle"] = weakref.ref(store.conn)
        idle_ready.set()
        finish.wait(10)
        store.conn.execute("SELECT 1").fetchone()  # reconnects after close_all

    threads = [threading.Thread(target=busy), threading.Thread(target=idle)]
    for thread in threads:
        thread.start()
    assert in_tx.wait(10) and idle_ready.wait(10)
    store.close_all()
    gc.collect()
    assert refs["idle"]() is None  # let go, hence closed
    closed.set()
    finish.set()
    for thread in threads:
        thread.join(10)
    assert not errors, errors
    gc.collect()
    assert refs["busy"]() is None
    assert store.conn.execute("SELECT COUNT(*) FROM tables WHERE base_id = 'app'").fetchone()[0] == 2


def test_close_all_while_threads_run_statements_does_not_crash(tmp_path):
    """Before close_all() let other threads' connections go, closing them under a running
    statement (here one calling a Python function) crashed the interpreter within ~0.1 s."""
    script = textwrap.dedent(
        f"""
        import sqlite3, threading, time
        from airtable_cached.store.sqlite import Store
        store = Store({str(tmp_path / "s.sqlite3")!r})
        stop = time.monotonic() + 1.5
        errors = []
        def worker():
            while time.monotonic() < stop:
                try:
                    conn = store.conn
                    conn.create_function("ident", 1, lambda x: x)
                    conn.execute("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 2000)"
                                 " SELECT SUM(ident(i)) FROM r").fetchone()
                except sqlite3.ProgrammingError as exc:
                    errors.append(exc)
        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        while time.monotonic() < stop:
            store.close_all()
            time.sleep(0.0005)
        for t in threads:
            t.join()
        print(len(errors))
        """
    )
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "0"
