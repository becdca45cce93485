"""The SQLite store: one database file per cache (the default)."""

from airtable_cached.store.sqlite.connection import Store, StoreError, is_disk_full
from airtable_cached.store.sqlite.schema import MIGRATIONS, PRAGMAS, SCHEMA_VERSION

__all__ = ["MIGRATIONS", "PRAGMAS", "SCHEMA_VERSION", "Store", "StoreError", "is_disk_full"]
