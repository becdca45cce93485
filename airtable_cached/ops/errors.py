"""The error every operator command raises when it cannot do what was asked."""

from __future__ import annotations

from airtable_cached.errors import AirtableCachedError


class MaintenanceError(AirtableCachedError):
    """A maintenance operation could not be carried out (the message says why)."""
