"""Review round 2: bugs where features meet (found by review, each test failed before its fix)."""

from __future__ import annotations


def test_offset_of_a_formula_naming_a_provisional_id_survives_the_flush_between_pages(api, table, plain):
    table.all()  # pull
    created = table.create({"Full Name": "Fresh one"})
    assert created["id"].startswith("recLOCAL")
    formula = f"OR(RECORD_ID() = '{created['id']}', {{Full Name}} != '')"
    pages = table.iterate(page_size=100, formula=formula)
    first = next(pages)
    api.flush()
    rest = [r for page in pages for r in page]
    names = sorted(r["fields"]["Full Name"] for r in first + rest)
    assert names == sorted(r["fields"]["Full Name"] for r in plain.all(formula="{Full Name} != ''"))
