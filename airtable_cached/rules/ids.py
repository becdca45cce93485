"""The shape of Airtable's record ids (imported by ``errors``, so it imports nothing)."""

import re

RECORD_ID_RE = re.compile(r"^rec[A-Za-z0-9]{14}$")
