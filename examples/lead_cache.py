"""The lead helpers teams ask for, each a few lines over the cached Table.

    from lead_cache import get_all_leads, get_leads_by_status, get_lead_by_id, search_leads

    get_all_leads()                       # every lead, from the local cache
    get_leads_by_status("New")            # {Status} = 'New', indexed after a few calls
    get_lead_by_id("recXXXXXXXXXXXXXX")   # None when there is no such lead
    search_leads("ada acme")              # by name, company or email, any case, best match first

Every helper takes an optional ``table``; without one it uses the table named by the environment
(``AIRTABLE_API_KEY``, ``AIRTABLE_BASE_ID``, ``AIRTABLE_TABLE`` default ``Leads``, optional
``AIRTABLE_ENDPOINT_URL``). Answers come from the cache, the agent's own queued writes included,
so calling them in a loop costs no requests until the cache is older than
``AIRTABLE_CACHED_MAX_AGE``.
"""

from __future__ import annotations

import functools
import os

import requests
from pyairtable.formulas import match

from airtable_cached import Api, Table

#: Where ``search_leads`` looks.
SEARCH_FIELDS = ["Full Name", "Company", "Email"]


@functools.cache
def leads_table() -> Table:
    """The leads table named by the environment (built once per process)."""
    options = {}
    if os.environ.get("AIRTABLE_ENDPOINT_URL"):
        options["endpoint_url"] = os.environ["AIRTABLE_ENDPOINT_URL"]
    api = Api(os.environ["AIRTABLE_API_KEY"], **options)
    return api.table(os.environ["AIRTABLE_BASE_ID"], os.environ.get("AIRTABLE_TABLE", "Leads"))


def get_all_leads(table: Table | None = None) -> list[dict]:
    """Every lead, in Airtable's order."""
    return (table or leads_table()).all()


def get_leads_by_status(status: str, table: Table | None = None) -> list[dict]:
    """The leads whose Status is ``status`` (e.g. "New", "Contacted", "Qualified", "Lost")."""
    return (table or leads_table()).all(formula=match({"Status": status}))


def get_lead_by_id(record_id: str, table: Table | None = None) -> dict | None:
    """One lead by record id (real or provisional ``recLOCAL...``), or ``None``."""
    try:
        return (table or leads_table()).get(record_id)
    except requests.HTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return None
        raise


def search_leads(text: str, table: Table | None = None, *, limit: int | None = None) -> list[dict]:
    """Leads whose name, company or email contains every word of ``text`` (as word beginnings,
    any case), best match first."""
    return (table or leads_table()).search(text, fields=SEARCH_FIELDS, max_records=limit)
