"""The "web lookups" both example enrichers make: deterministic local stand-ins for the search and
scraping calls a real agent makes (same input, same answer), so runs can be compared."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import urlsplit

_INDUSTRIES = ["analytics", "logistics", "payments", "security", "healthcare", "energy", "retail", "robotics"]
_FIRST = ["Alex", "Sam", "Jordan", "Morgan", "Robin", "Taylor", "Charlie", "Jamie"]
_LAST = ["Keller", "Moreau", "Novak", "Okafor", "Silva", "Lindqvist", "Haddad", "Sato"]
_ROLES = ["Head of Sales", "COO", "VP Operations", "CTO"]


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16)


def slug(text: str) -> str:
    """'Chloé O'Brien' -> 'chloeobrien': what goes left of the @."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "", ascii_text.lower())


def domain_of(website: str | None) -> str | None:
    if not website:
        return None
    host = urlsplit(website if "://" in website else "https://" + website).hostname or ""
    return host.removeprefix("www.") or None


def lookup_company(company: str, website: str | None) -> dict:
    """Stands in for the web search + scraping a real enricher does: same input, same answer."""
    h = _digest(company)
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
