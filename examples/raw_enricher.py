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

import hashlib
import json
import os
import re
import unicodedata
from collections import Counter
from urllib.parse import quote, urlsplit

import requests

ENDPOINT = os.environ.get("AIRTABLE_ENDPOINT_URL", "https://api.airtable.com").rstrip("/")
URL = f"{ENDPOINT}/v0/{os.environ['AIRTABLE_BASE_ID']}/{quote(os.environ.get('AIRTABLE_TABLE', 'Leads'))}"
HEADERS = {"Authorization": f"Bearer {os.environ['AIRTABLE_API_KEY']}"}
PROCESSED_TAG = "Outbound"

_INDUSTRIES = ["analytics", "logistics", "payments", "security", "healthcare", "energy", "retail", "robotics"]
_FIRST = ["Alex", "Sam", "Jordan", "Morgan", "Robin", "Taylor", "Charlie", "Jamie"]
_LAST = ["Keller", "Moreau", "Novak", "Okafor", "Silva", "Lindqvist", "Haddad", "Sato"]
_ROLES = ["Head of Sales", "COO", "VP Operations", "CTO"]


def slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "", ascii_text.lower())


def domain_of(website: str | None) -> str | None:
    if not website:
        return None
    host = urlsplit(website if "://" in website else "https://" + website).hostname or ""
    return host.removeprefix("www.") or None


def lookup_company(company: str, website: str | None) -> dict:
    """Stands in for the web search + scraping a real enricher does: same input, same answer."""
    h = int(hashlib.sha256(company.encode("utf-8")).hexdigest(), 16)
    contacts = []
    domain = domain_of(website)
    if domain and h % 4 == 0:
        first, last = _FIRST[h % len(_FIRST)], _LAST[(h // 7) % len(_LAST)]
        contacts.append({
            "Full Name": f"{first} {last}",
            "Email": f"{slug(first)}.{slug(last)}@{domain}",
            "Company": company,
            "Website": website,
            "Company Description": f"{_ROLES[(h // 11) % len(_ROLES)]} at {company}.",
        })
    return {
        "domain": domain,
        "description": f"{company} is a {_INDUSTRIES[h % len(_INDUSTRIES)]} company (enriched).",
        "score_bonus": 5 + h % 10,
        "contacts": contacts,
    }


def guess_email(full_name: str, domain: str) -> str:
    parts = [slug(p) for p in full_name.split() if slug(p)]
    return f"{parts[0]}.{parts[-1]}@{domain}" if len(parts) > 1 else f"{parts[0]}@{domain}"


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
