"""Seed data for tests, benchmarks and the demo: the leads table (``LEADS_SCHEMA``, ``seed_leads``)
and two tables linked both ways (``add_linked_tables``)."""

from __future__ import annotations

import datetime as _dt
import random
import re
from typing import Any

from airtable_cached.testing.server import FakeAirtable

_STATUS_CHOICES = [("New", "blueLight2"), ("Contacted", "yellowLight2"), ("Qualified", "greenLight2"), ("Lost", "redLight2")]
_TAG_CHOICES = ["Enterprise", "SMB", "Warm", "Cold", "Referral", "Conference", "Inbound", "Outbound"]

LEADS_SCHEMA: list[dict] = [
    {"name": "Full Name", "type": "singleLineText"},
    {"name": "Email", "type": "email"},
    {"name": "Company", "type": "singleLineText"},
    {"name": "Website", "type": "url"},
    {"name": "Company Description", "type": "multilineText"},
    {"name": "LinkedIn URL", "type": "url"},
    {"name": "Status", "type": "singleSelect",
     "options": {"choices": [{"name": n, "color": c} for n, c in _STATUS_CHOICES]}},
    {"name": "Score", "type": "number", "options": {"precision": 0}},
    {"name": "Last Contacted", "type": "date", "options": {"dateFormat": {"name": "iso", "format": "YYYY-MM-DD"}}},
    {"name": "Tags", "type": "multipleSelects",
     "options": {"choices": [{"name": n, "color": "grayLight2"} for n in _TAG_CHOICES]}},
    {"name": "Opted Out", "type": "checkbox", "options": {"icon": "check", "color": "greenBright"}},
]

_FIRST = ["Ada", "Ben", "Chloé", "Dmitri", "Elena", "Farah", "George", "Hana", "Ivan", "Julia", "Kofi", "Lena",
          "Marco", "Nina", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wei", "Yusuf", "Zoe"]
_LAST = ["Anderson", "Brown", "Chen", "Dubois", "Evans", "Fischer", "García", "Hughes", "Ito", "Jensen", "Kowalski",
         "López", "Müller", "Nakamura", "O'Brien", "Patel", "Rossi", "Smith", "Tanaka", "Usman", "Virtanen", "Wong"]
_CO_A = ["Acme", "Blue", "Bright", "Cobalt", "Delta", "Evergreen", "Falcon", "Granite", "Harbor", "Iris", "Juniper",
         "Kite", "Lumen", "Maple", "North", "Orbit", "Pine", "Quartz", "River", "Summit", "Tidal", "Vertex"]
_CO_B = ["Analytics", "Labs", "Systems", "Logistics", "Health", "Robotics", "Software", "Foods", "Energy", "Media",
         "Partners", "Capital", "Studio", "Networks", "Bio"]
_SUFFIX = ["Inc", "LLC", "GmbH", "Ltd", "SAS", "Co"]
_DESC = ["builds {x} tools for mid-market teams", "provides {x} services across Europe",
         "is a B2B startup focused on {x}", "sells {x} software to hospitals", "runs a {x} marketplace"]
_TOPIC = ["supply-chain", "analytics", "payments", "compliance", "recruiting", "energy", "logistics", "security"]


def _slug(text: str) -> str:
    import unicodedata

    t = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", t.lower()).strip("-")


def seed_leads(n: int, *, seed: int = 0) -> list[dict]:
    """``n`` deterministic lead records (plain field dicts, empty values omitted as Airtable does)."""
    rng = random.Random(f"leads:{seed}")
    out = []
    for i in range(n):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        name = f"{first} {last}"
        company = f"{rng.choice(_CO_A)} {rng.choice(_CO_B)} {rng.choice(_SUFFIX)}"
        domain = _slug(company.rsplit(" ", 1)[0]).replace("-", "") + rng.choice([".com", ".io", ".de", ".co.uk"])
        fields: dict[str, Any] = {"Full Name": name, "Company": company}
        if rng.random() >= 0.4:
            fields["Email"] = f"{_slug(first)}.{_slug(last)}@{domain}"
        if rng.random() >= 0.25:
            fields["Website"] = f"https://www.{domain}"
        if rng.random() >= 0.35:
            fields["Company Description"] = f"{company} " + rng.choice(_DESC).format(x=rng.choice(_TOPIC)) + "."
        fields["LinkedIn URL"] = f"https://www.linkedin.com/in/{_slug(first)}-{_slug(last)}-{i:04d}"
        fields["Status"] = rng.choice([s for s, _ in _STATUS_CHOICES])
        fields["Score"] = rng.randint(0, 100)
        if rng.random() >= 0.3:
            day = _dt.date(2023, 1, 1) + _dt.timedelta(days=rng.randint(0, 500))
            fields["Last Contacted"] = day.isoformat()
        tags = sorted(rng.sample(_TAG_CHOICES, rng.randint(0, 3)), key=_TAG_CHOICES.index)
        if tags:
            fields["Tags"] = tags
        if rng.random() < 0.1:
            fields["Opted Out"] = True
        out.append(fields)
    return out


#: Two tables linked both ways (``add_linked_tables``): ids fixed so that two fakes agree.
COMPANIES_ID = "tblCompanies00001"
PEOPLE_ID = "tblPeople00000001"


def add_linked_tables(fake: FakeAirtable, base_id: str, *, companies: int = 3, people: int = 6) -> tuple[str, str]:
    """Add ``Companies`` and ``People`` to a base, linked both ways (``People.Company`` and its
    inverse ``Companies.Employees``), with a view on each (one filtered on the link), select,
    number, date and checkbox fields, and a few records linked consistently. Returns the two table
    ids."""
    fake.add_table(base_id, "Companies", [
        {"id": "fldCoName0000001", "name": "Name", "type": "singleLineText"},
        {"id": "fldCoEmployees01", "name": "Employees", "type": "multipleRecordLinks",
         "options": {"linkedTableId": PEOPLE_ID, "inverseLinkFieldId": "fldPeCompany0001", "prefersSingleRecordLink": False}},
        {"id": "fldCoKind0000001", "name": "Kind", "type": "singleSelect",
         "options": {"choices": [{"name": "Client"}, {"name": "Prospect"}]}},
    ], [{"Name": f"Company {i}"} for i in range(companies)], table_id=COMPANIES_ID)
    fake.add_table(base_id, "People", [
        {"id": "fldPeName0000001", "name": "Name", "type": "singleLineText"},
        {"id": "fldPeCompany0001", "name": "Company", "type": "multipleRecordLinks",
         "options": {"linkedTableId": COMPANIES_ID, "inverseLinkFieldId": "fldCoEmployees01", "prefersSingleRecordLink": False}},
        {"id": "fldPeEmail000001", "name": "Email", "type": "email"},
        {"id": "fldPeStage000001", "name": "Stage", "type": "singleSelect",
         "options": {"choices": [{"name": "New"}, {"name": "Won"}]}},
        {"id": "fldPeScore000001", "name": "Score", "type": "number", "options": {"precision": 0}},
        {"id": "fldPeMet00000001", "name": "Met", "type": "date", "options": {"dateFormat": {"name": "iso"}}},
        {"id": "fldPeActive00001", "name": "Active", "type": "checkbox", "options": {"icon": "check", "color": "greenBright"}},
    ], [], table_id=PEOPLE_ID)
    company_ids = [r["id"] for r in fake.records(base_id, COMPANIES_ID)]
    made = fake.add_records(base_id, PEOPLE_ID, [
        {"Name": f"Person {i}", "Score": i, "Stage": "New" if i % 2 else "Won",
         **({"Company": [company_ids[i % len(company_ids)]]} if company_ids and i % 3 else {}),
         **({"Email": f"p{i}@example.com"} if i % 2 else {})}
        for i in range(people)
    ])
    assert len(made) == people
    fake.add_view(base_id, PEOPLE_ID, "No email", formula="{Email} = ''", sort=[("Score", "desc")])
    fake.add_view(base_id, COMPANIES_ID, "Without staff", formula="{Employees} = ''", sort=[("Name", "asc")])
    return COMPANIES_ID, PEOPLE_ID
