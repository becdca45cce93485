"""ORM models run through the cache when they derive from airtable_cached.orm.Model."""

from __future__ import annotations

import pytest
from pyairtable.orm import fields as F

import airtable_cached
from airtable_cached.orm import Model
from tests.conftest import BASE, TABLE


@pytest.fixture
def Lead(fake, db_path):
    class Lead(Model):
        class Meta:
            base_id = BASE
            table_name = TABLE
            api_key = fake.token
            cache = {"endpoint_url": fake.url, "path": db_path, "flush": "manual"}

        name = F.TextField("Full Name")
        email = F.EmailField("Email")
        status = F.SelectField("Status")
        score = F.NumberField("Score")

    return Lead


def test_model_uses_the_cached_api(Lead):
    assert isinstance(Lead.meta.api, airtable_cached.Api)
    assert isinstance(Lead.meta.table, airtable_cached.Table)


def test_model_reads_come_from_the_cache(fake, Lead):
    everyone = Lead.all()
    assert len(everyone) == 250
    fake.reset_log()
    assert Lead.first(formula="{Status}='New'") is not None
    assert Lead.from_id(everyone[3].id).name == everyone[3].name
    assert fake.request_count() == 0


def test_model_writes_are_queued_then_flushed(fake, Lead):
    lead = Lead(name="Ada Lovelace", email="ada@example.com", status="New", score=99)
    lead.save()
    assert lead.id.startswith("rec")
    assert fake.request_count(method="POST") == 0
    found = Lead.first(formula="{Full Name}='Ada Lovelace'")
    assert found is not None and found.email == "ada@example.com"
    result = Lead.meta.api.flush()
    assert result.ok and result.sent
    at_airtable = [r for r in fake.records(BASE, TABLE) if r["fields"].get("Full Name") == "Ada Lovelace"]
    assert len(at_airtable) == 1 and at_airtable[0]["fields"]["Score"] == 99
