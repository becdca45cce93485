"""airtable_cached: pyairtable's Api, Base and Table, served from a local SQLite cache.

Change ``from pyairtable import Api`` to ``from airtable_cached import Api``: reads come from the
cache (with the agent's own pending writes visible), writes go to a durable queue that a flush
sends to Airtable, paced and retried.
"""

from airtable_cached.api import Api, Base, Table
from airtable_cached.config import Settings
from airtable_cached.errors import (
    AirtableCachedError,
    ConfigurationError,
    OfflineError,
    WriteRejectedError,
)
from airtable_cached.http import install, uninstall

__version__ = "0.1.0"

__all__ = [
    "Api",
    "Base",
    "Table",
    "Settings",
    "install",
    "uninstall",
    "AirtableCachedError",
    "ConfigurationError",
    "OfflineError",
    "WriteRejectedError",
]
