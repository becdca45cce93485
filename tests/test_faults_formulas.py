"""Formulas under hostile input: regexes that make backtracking engines run for ever.

Compared with: the project's fake Airtable (``airtable_cached/testing.py``), whose formula engine is
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
