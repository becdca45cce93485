"""The PostgreSQL store: one database shared by every host (``AIRTABLE_CACHED_URL=postgresql://...``).

Needs the ``postgres`` extra (``pip install "airtable_cached[postgres]"``): psycopg and psycopg_pool.
"""

from airtable_cached.config import is_postgres_url
from airtable_cached.store.postgres.connection import PostgresStore, StoreError, redact
from airtable_cached.store.postgres.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore", "StoreError", "is_postgres_url", "redact"]
