"""Formulas under hostile input: regexes that make backtracking engines run for ever.

Compared with: the project's fake Airtable (``airtable_cached/testing/``), whose formula engine is
the same RE2-based one; the point here is that the process answers at all.
"""

from __future__ import annotations

import threading

from tests.conftest import BASE, TABLE


def test_catastrophic_regex_returns_at_once(fake, api, table):
    """``(a+)+$`` against 64 a's and a '!' takes 2**64 steps in Python's ``re``; RE2 is linear."""
    rid = fake.add_records(BASE, TABLE, [{"Full Name": "a" * 64 + "!"}])[0]["id"]
    table.all()
    answers: list = []
    worker = threading.Thread(
        target=lambda: answers.append(table.all(formula="REGEX_MATCH({Full Name}, '(a+)+$')")), daemon=True
    )
    worker.start()
    worker.join(30)  # a bounded wait: with a backtracking engine the thread never ends
    assert not worker.is_alive(), "the regex hung the process"
    assert rid not in {r["id"] for r in answers[0]}
    assert [r["id"] for r in table.all(formula="REGEX_MATCH({Full Name}, '^a{64}!$')")] == [rid]


def test_invalid_regex_is_an_error_value_not_a_crash(fake, api, table):
    """RE2 has no look-behind: like Airtable, the formula's value is an error and matches nothing."""
    table.all()
    assert table.all(formula="REGEX_MATCH({Full Name}, '(?<=a)b')") == []


def test_or_of_thousand_equalities_falls_back_to_the_evaluator(fake, api, table, plain):
    """SQLite refuses expression trees deeper than 1,000; the cache answers anyway, as Airtable
    (here: the fake, through plain pyairtable) does."""
    everyone = table.all()
    wanted = [r["fields"]["LinkedIn URL"] for r in everyone[:7]]
    terms = [f"{{LinkedIn URL}}='https://example.com/nobody-{i}'" for i in range(1200)] + [
        f"{{LinkedIn URL}}='{url}'" for url in wanted
    ]
    formula = "OR(" + ", ".join(terms) + ")"
    fake.reset_log()
    answer = table.all(formula=formula)
    assert fake.request_count() == 0  # answered from the cache
    assert sorted(r["id"] for r in answer) == sorted(r["id"] for r in everyone[:7])
    assert answer == plain.all(formula=formula)
    # Those records were decoded in memory (the read model); first() of a table not decoded yet
    # asks SQLite with a LIMIT, which refuses the formula, and the evaluator answers instead.
    api.engine.model.clear()
    assert table.first(formula=formula) == plain.first(formula=formula)
    api.engine.stats.write()
    assert api.engine.store.conn.execute("SELECT count FROM stats WHERE kind = 'formula.python'").fetchone()[0] >= 1


def test_long_formula_only_airtable_can_answer_goes_as_post_listrecords(fake, api, table, plain):
    """A URL of 16,000 characters or more gets 414 from Airtable; pyairtable then POSTs to
    ``listRecords``, and so does the cache (compared with plain pyairtable against the fake)."""
    everyone = table.all()
    wanted = [r["fields"]["LinkedIn URL"] for r in everyone[:3]]
    terms = [f"{{LinkedIn URL}}='https://example.com/nobody-{i}'" for i in range(400)] + [
        f"{{LinkedIn URL}}='{url}'" for url in wanted
    ]
    # LAST_MODIFIED_TIME() is known only to Airtable: the formula is sent on.
    formula = "AND(IS_AFTER(LAST_MODIFIED_TIME(), '2000-01-01'), OR(" + ", ".join(terms) + "))"
    fake.reset_log()
    answer = table.all(formula=formula, sort=["-Score"], fields=["Full Name", "Score"])
    sent = [(r["method"], r["path"]) for r in fake.requests]
    assert sent == [("POST", f"/v0/{BASE}/{TABLE}/listRecords")]
    assert "filterByFormula" not in fake.requests[0]["query"]  # in the body
    assert answer == plain.all(formula=formula, sort=["-Score"], fields=["Full Name", "Score"])
    assert len(answer) == 3
