"""The tests' PostgreSQL server: ``airtable_cached/testing/postgres.py`` (the benchmarks use it too)."""

from airtable_cached.testing.postgres import SUPERUSER, PgServer, find_bin_dir, running_server

__all__ = ["SUPERUSER", "PgServer", "find_bin_dir", "running_server"]
