"""Daily lead enricher, written for plain pyairtable the way agents are written today.

Every morning (cron, a CI schedule, a container) it:

1. finds the leads that still have no email (and did not opt out) with a formula;
2. enriches each one: a "web lookup" of its company (here a deterministic local function standing
   in for the search/scraping calls a real agent makes), the email pattern its colleagues already
   in the table use, a description when the lead has none;
3. writes the results back with ``batch_update``, in chunks, so a crash loses at most one chunk;
4. creates the new contacts the lookups discovered (after checking they are not in the table yet);
5. marks the processed leads (tag ``Outbound``, the list the outbound sequence picks up);
6. reads the table again and reports.

Configuration comes from the environment:

    AIRTABLE_API_KEY        personal access token (required)
    AIRTABLE_BASE_ID        the base, appXXXXXXXXXXXXXX (required)
    AIRTABLE_TABLE          the leads table (default: Leads)
    AIRTABLE_ENDPOINT_URL   another Airtable-compatible endpoint (optional)

    python examples/daily_enricher.py

To run it through airtable_cached, change the import line below and nothing else:

    from airtable_cached import Api
"""

from __future__ import annotations

import json
import os
from collections import Counter

from enrichment import guess_email, lookup_company
from pyairtable import Api
from pyairtable.formulas import match

#: Leads that still need an email. Opted-out leads are never touched.
TODO_FORMULA = "AND({Email} = '', NOT({Opted Out}))"
#: Records per batch_update call made by this script (pyairtable splits each into requests of 10).
CHUNK_SIZE = 25
#: The tag that puts a lead on the outbound sequence.
PROCESSED_TAG = "Outbound"

def open_table():
    """The leads table, from the environment."""
    options = {}
    if os.environ.get("AIRTABLE_ENDPOINT_URL"):
        options["endpoint_url"] = os.environ["AIRTABLE_ENDPOINT_URL"]
    api = Api(os.environ["AIRTABLE_API_KEY"], **options)
    return api.table(os.environ["AIRTABLE_BASE_ID"], os.environ.get("AIRTABLE_TABLE", "Leads"))


def colleague_domain(table, company: str, lead_id: str) -> str | None:
    """The email domain colleagues at the same company already use, if any."""
    colleagues = table.all(formula=match({"Company": company}), fields=["Email"])
    domains = Counter(
        r["fields"]["Email"].rsplit("@", 1)[-1] for r in colleagues if r["id"] != lead_id and r["fields"].get("Email")
    )
    return min(domains, key=lambda d: (-domains[d], d)) if domains else None


# -- the job -----------------------------------------------------------------------------------------

def main() -> dict:
    table = open_table()
    todo = table.all(formula=TODO_FORMULA)
    print(f"{len(todo)} leads need an email")

    updates: list[dict] = []
    processed: list[dict] = []
    discovered: dict[str, dict] = {}
    skipped = 0
    for lead in todo:
        fields = lead["fields"]
        name, company = fields.get("Full Name"), fields.get("Company")
        if not name or not company:
            skipped += 1
            continue
        found = lookup_company(company, fields.get("Website"))
        domain = colleague_domain(table, company, lead["id"]) or found["domain"]
        if domain is None:
            skipped += 1
            continue
        change = {"Email": guess_email(name, domain), "Score": min(100, fields.get("Score", 0) + found["score_bonus"])}
        if not fields.get("Company Description"):
            change["Company Description"] = found["description"]
        updates.append({"id": lead["id"], "fields": change})
        processed.append(lead)
        for contact in found["contacts"]:
            discovered.setdefault(contact["Email"], contact)
        if len(updates) >= CHUNK_SIZE:
            table.batch_update(updates)
            updates = []
    if updates:
        table.batch_update(updates)

    new_leads = []
    for email, contact in sorted(discovered.items()):
        if table.first(formula=match({"Email": email})) is None:
            new_leads.append({**contact, "Status": "New", "Tags": ["Referral"]})
    created = table.batch_create(new_leads) if new_leads else []

    marks = [
        {"id": lead["id"], "fields": {"Tags": lead["fields"].get("Tags", []) + [PROCESSED_TAG]}}
        for lead in processed
        if PROCESSED_TAG not in lead["fields"].get("Tags", [])
    ]
    for start in range(0, len(marks), CHUNK_SIZE):
        table.batch_update(marks[start : start + CHUNK_SIZE])

    remaining = table.all(formula=TODO_FORMULA)
    everyone = table.all(fields=["Email"])
    report = {
        "enriched": len(processed),
        "skipped": skipped,
        "created": len(created),
        "marked": len(marks),
        "still_missing_email": len(remaining),
        "leads": len(everyone),
        "with_email": sum(1 for r in everyone if r["fields"].get("Email")),
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
