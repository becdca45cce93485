"""airtable_cached: pyairtable's Api, Base and Table, served from a local SQLite cache.

Change ``from pyairtable import Api`` to ``from airtable_cached import Api``: reads come from the
cache (with the agent's own pending writes visible), writes go to a durable queue that a flush
sends to Airtable, paced and retried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airtable_cached.config import Settings
from airtable_cached.errors import (
    AirtableCachedError,
    ConfigurationError,
    OfflineError,
    WriteRejectedError,
)

if TYPE_CHECKING:
    from airtable_cached.api import Api, Base, Table
    from airtable_cached.http import install, uninstall

__version__ = "0.1.0"

#: Imported on first use (PEP 562): a program run through ``airtable-cached run`` imports this
#: package at start-up, and pyairtable alone takes a third of a second to import.
_LAZY = {"Api": "airtable_cached.api", "Base": "airtable_cached.api", "Table": "airtable_cached.api",
         "install": "airtable_cached.http", "uninstall": "airtable_cached.http"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'airtable_cached' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

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
