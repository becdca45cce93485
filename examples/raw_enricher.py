"""Daily lead enricher written with plain ``requests``, the way many agents are written.

It never imports pyairtable: one GET of the table (without paging, so it sees the first 100
records), then a PATCH per lead it enriches, a POST per new contact, and a second PATCH per lead to
mark it processed. The enrichment is the same deterministic stand-in for web lookups as in
``daily_enricher.py``.

    AIRTABLE_API_KEY        personal access token (required)
    AIRTABLE_BASE_ID        the base, appXXXXXXXXXXXXXX (required)
    AIRTABLE_TABLE          the leads table (default: Leads)
    AIRTABLE_ENDPOINT_URL   default https://api.airtable.com

    python examples/raw_enricher.py

There is no import line to swap. Run it through airtable_cached unchanged with:

    airtable-cached run -- python examples/raw_enricher.py
"""

from __future__ import annotations

import json
import os
from collections import Counter
from urllib.parse import quote

import requests
from enrichment import guess_email, lookup_company

ENDPOINT = os.environ.get("AIRTABLE_ENDPOINT_URL", "https://api.airtable.com").rstrip("/")
URL = f"{ENDPOINT}/v0/{os.environ['AIRTABLE_BASE_ID']}/{quote(os.environ.get('AIRTABLE_TABLE', 'Leads'))}"
HEADERS = {"Authorization": f"Bearer {os.environ['AIRTABLE_API_KEY']}"}
PROCESSED_TAG = "Outbound"

def main() -> dict:
    response = requests.get(URL, headers=HEADERS, timeout=30)
    response.raise_for_status()
    records = response.json()["records"]

    domains_by_company: dict[str, Counter] = {}
    for record in records:
        fields = record["fields"]
        if fields.get("Email") and fields.get("Company"):
            domains_by_company.setdefault(fields["Company"], Counter())[fields["Email"].rsplit("@", 1)[-1]] += 1

    enriched, discovered = [], {}
    for record in records:
        fields = record["fields"]
        if fields.get("Email") or fields.get("Opted Out") or not fields.get("Full Name") or not fields.get("Company"):
            continue
        found = lookup_company(fields["Company"], fields.get("Website"))
        known = domains_by_company.get(fields["Company"])
        domain = min(known, key=lambda d: (-known[d], d)) if known else found["domain"]
        if domain is None:
            continue
        change = {"Email": guess_email(fields["Full Name"], domain),
                  "Score": min(100, fields.get("Score", 0) + found["score_bonus"])}
        if not fields.get("Company Description"):
            change["Company Description"] = found["description"]
        r = requests.patch(f"{URL}/{record['id']}", headers=HEADERS, json={"fields": change}, timeout=30)
        r.raise_for_status()
        enriched.append(record)
        for contact in found["contacts"]:
            discovered.setdefault(contact["Email"], contact)

    known_emails = {r["fields"].get("Email") for r in records}
    created = 0
    for email, contact in sorted(discovered.items()):
        if email in known_emails:
            continue
        r = requests.post(URL, headers=HEADERS, timeout=30,
                          json={"fields": {**contact, "Status": "New", "Tags": ["Referral"]}})
        r.raise_for_status()
        created += 1

    marked = 0
    for record in enriched:
        tags = record["fields"].get("Tags", [])
        if PROCESSED_TAG not in tags:
            r = requests.patch(f"{URL}/{record['id']}", headers=HEADERS, timeout=30,
                               json={"fields": {"Tags": tags + [PROCESSED_TAG]}})
            r.raise_for_status()
            marked += 1

    report = {"seen": len(records), "enriched": len(enriched), "created": created, "marked": marked}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
