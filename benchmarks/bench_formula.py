"""Benchmark: lead filters via compile_where + SQLite (+ residual) vs a hand-written Python filter.

Run: python benchmarks/bench_formula.py  (to be rewired later through the cached Table)
"""

from __future__ import annotations

import json
import random
import sqlite3
import time

from airtable_cached.formula import compile_where, matches, parse, register_sql_functions

N = 10_000
rng = random.Random(1)


def make_records():
    recs = []
    for i in range(N):
        f = {}
        if rng.random() < 0.8:
            f["Full Name"] = f"Person {i}"
        if rng.random() < 0.6:
            f["Email"] = f"p{i}@example.com"
        if rng.random() < 0.5:
            f["Website"] = f"https://site{i}.example"
        if rng.random() < 0.4:
            f["Company"] = f"Company {i % 500}"
        if rng.random() < 0.3:
            f["Company Description"] = "We do things. " * 5
        f["LinkedIn URL"] = f"https://www.linkedin.com/in/p{i}"
        f["Tags"] = rng.sample(["hot", "cold", "warm", "b2b", "b2c"], k=rng.randint(0, 3))
        recs.append({"id": f"rec{i:014d}", "createdTime": "2024-01-02T03:04:05.000Z", "fields": f})
    return recs


def main():
    records = make_records()
    conn = sqlite3.connect(":memory:")
    register_sql_functions(conn)
    conn.execute("CREATE TABLE records (id TEXT PRIMARY KEY, created_time TEXT, fields TEXT)")
    conn.executemany("INSERT INTO records VALUES (?, ?, ?)",
                     [(r["id"], r["createdTime"], json.dumps(r["fields"])) for r in records])
    ids = [f"rec{i:014d}" for i in rng.sample(range(N), 200)]
    idset = set(ids)
    g = lambda r, k: r["fields"].get(k, "")
    cases = [
        ("AND({Website} != '', {Company Description} = '')",
         lambda r: g(r, "Website") != "" and g(r, "Company Description") == ""),
        ("NOT({Email} = '')", lambda r: g(r, "Email") != ""),
        ("AND(NOT({Full Name} = ''), OR({Company} = '', {Website} = ''))",
         lambda r: g(r, "Full Name") != "" and (g(r, "Company") == "" or g(r, "Website") == "")),
        ("{LinkedIn URL} = 'https://www.linkedin.com/in/p777'",
         lambda r: g(r, "LinkedIn URL") == "https://www.linkedin.com/in/p777"),
        ("OR(" + ", ".join(f"RECORD_ID()='{i}'" for i in ids) + ")", lambda r: r["id"] in idset),
    ]
    by_id = {r["id"]: r for r in records}
    for formula, py in cases:
        node = parse(formula)
        t0 = time.perf_counter()
        cf = compile_where(node)
        rows = conn.execute(f"SELECT id, fields FROM records WHERE {cf.sql or '1'}", cf.params).fetchall()
        out = [{"id": i, "fields": json.loads(f)} for i, f in rows]
        if cf.residual is not None:
            out = [r for r in out if matches(cf.residual, r)]
        t_sql = time.perf_counter() - t0

        t0 = time.perf_counter()
        rows = conn.execute("SELECT id, created_time, fields FROM records").fetchall()
        loaded = [{"id": i, "createdTime": c, "fields": json.loads(f)} for i, c, f in rows]
        hand = [r for r in loaded if py(r)]
        t_py = time.perf_counter() - t0

        t0 = time.perf_counter()
        ev = [r for r in records if matches(node, r)]
        t_eval = time.perf_counter() - t0
        assert [r["id"] for r in out] == [r["id"] for r in hand] == [r["id"] for r in ev], formula
        print(f"{formula[:60]:62s} n={len(out):5d} sql={t_sql*1000:7.1f}ms  "
              f"load+python={t_py*1000:7.1f}ms  ratio={t_py/t_sql:5.2f}x  evaluator(in-memory)={t_eval*1000:6.1f}ms")


if __name__ == "__main__":
    main()
