"""A fake Airtable Web API server for tests (standard library only), and seed data.

``FakeAirtable`` serves the record endpoints, the meta endpoints the project uses, whoami and the
webhooks API over real HTTP on 127.0.0.1. Pass ``fake.url`` as ``endpoint_url=`` to
``pyairtable.Api``.

What it is evidence of. The fake is the project's model of Airtable, not Airtable: it is written
from Airtable's Web API documentation and the recorded traffic beside the checkout, and
where Airtable's behaviour is not known it decides (marked ``MODELLING DECISION``). It also shares
the cache's own rules: ``filterByFormula`` and view formulas are evaluated by the project's formula
engine (``airtable_cached/formula``), and sorting, number text and date parsing use
``airtable_cached/rules/records.py``. A test that compares the cache with the fake on a formula or a
sort therefore compares the engine with itself; it checks the plumbing around the engine (paging,
offsets, writes, errors, refresh), not that the engine matches Airtable. Claims of fidelity to
Airtable rest on the recordings of real Airtable traffic in ``../shared/airtable-traffic/``, which
``tests/test_recorded_airtable.py`` replays (through ``recorded()`` in ``tests/conftest.py``)
against plain pyairtable, the cache and this fake. The cassettes in ``cassettes/`` were recorded
from this fake, not from Airtable.

Everything is deterministic given ``seed``: record, table, field, view and option ids come from
seeded RNGs, ``createdTime`` and last-modified times from a logical clock (a fixed base instant
plus one second per event), offsets from a counter. Record order without sort/view is insertion
order.

The parts, one job each: ``server.py`` (``FakeAirtable``: HTTP, routing, request log),
``model.py`` (bases, tables, records, clock, rendering), ``reads.py`` (list, filter, sort,
offsets), ``writes.py`` (create, update, upsert, delete), ``links.py`` (linked records),
``cells.py`` (cell values: type checks, typecast, ``cellFormat=string``), ``control.py`` (what a
test does from outside the API), ``faults.py`` (injected faults, rate limit), ``errors.py``,
``ids.py``, ``webhooks.py`` and ``seed.py`` (``LEADS_SCHEMA``, ``seed_leads``,
``add_linked_tables``).
"""

from __future__ import annotations

from airtable_cached.testing.cells import COMPUTED_TYPES, cell_to_string
from airtable_cached.testing.errors import NOT_FOUND, FakeAirtableError, standard_error_body
from airtable_cached.testing.reads import formula_field_references
from airtable_cached.testing.seed import COMPANIES_ID, LEADS_SCHEMA, PEOPLE_ID, add_linked_tables, seed_leads
from airtable_cached.testing.server import FakeAirtable

__all__ = [
    "COMPANIES_ID", "COMPUTED_TYPES", "LEADS_SCHEMA", "NOT_FOUND", "PEOPLE_ID", "FakeAirtable", "FakeAirtableError",
    "add_linked_tables", "cell_to_string", "formula_field_references", "seed_leads", "standard_error_body",
]
