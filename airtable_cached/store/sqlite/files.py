"""Whole-file operations on a SQLite cache file: copies (SQLite's backup API), integrity checks,
compaction, and reading what is still readable from a damaged file.

They work on a path (or a plain connection to it), without :class:`~.connection.Store`: a file being
checked, backed up or salvaged must not be migrated by opening it. A PostgreSQL store has none of
these (``pg_dump``, ``pg_restore`` and ``VACUUM`` are its operator's tools).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airtable_cached.store.sqlite.outbox import SqliteOutbox
from airtable_cached.store.sqlite.replica import SqliteReplica

log = logging.getLogger("airtable_cached")


# -- files ---------------------------------------------------------------------------------------------


def db_files(path: Path) -> list[Path]:
    """The database file and its WAL and shared-memory companions."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def file_size(path: Path) -> int:
    """Bytes of one file (0 when it is missing)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def disk_bytes(path: Path) -> int:
    """Bytes the database takes on disk, WAL included."""
    return sum(file_size(p) for p in db_files(path))


def create_private(path: Path) -> None:
    """Create (or truncate) ``path`` with mode 0600 before anything writes to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def make_private(path: Path) -> None:
    """Mode 0600 on the database file and its companions (where they exist)."""
    for p in db_files(path):
        with contextlib.suppress(OSError):
            os.chmod(p, 0o600)


# -- connections ---------------------------------------------------------------------------------------


def raw_connect(path: Path, *, timeout: float = 30.0) -> sqlite3.Connection:
    """A plain connection to the file (no migration), rows readable by column name."""
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.row_factory = sqlite3.Row
    return conn


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (``BEGIN IMMEDIATE``) on a plain connection: committed, or rolled back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# -- copies --------------------------------------------------------------------------------------------


def copy_database(src: Path, dest: Path) -> None:
    """A consistent copy of ``src`` (WAL content included) into a new 0600 file, in one step."""
    tmp = dest.with_name(dest.name + ".partial")
    create_private(tmp)
    source = raw_connect(src)
    try:
        target = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            source.backup(target)  # pages=-1: one step, one snapshot, never restarted by writers
            target.execute("PRAGMA journal_mode = DELETE")  # a self-contained single file
        finally:
            target.close()
    finally:
        source.close()
    os.chmod(tmp, 0o600)
    os.replace(tmp, dest)


def copy_into_live(source: Path, live_path: Path) -> None:
    """Copy ``source`` over the live file through the backup API, so processes that still have it
    open see the new content on their next query (never an unlinked file); WAL kept, checkpointed."""
    src = raw_connect(source)
    live = raw_connect(live_path)
    try:
        live.execute("PRAGMA journal_mode = WAL")
        src.backup(live)
        live.execute("PRAGMA journal_mode = WAL")
        live.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        live.close()
        src.close()


def compact(conn: sqlite3.Connection) -> None:
    """``VACUUM`` the file and truncate its WAL (outside any transaction)."""
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def page_bytes(conn: sqlite3.Connection) -> dict[str, int]:
    """Bytes the database's pages take (``database``) and of those, free pages (``free``)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    freelist = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return {"database": page_size * page_count, "free": page_size * freelist}


# -- checks --------------------------------------------------------------------------------------------


def integrity_problems(conn: sqlite3.Connection, thorough: bool) -> list[str]:
    """SQLite's own check (``integrity_check``, or the faster ``quick_check``): ``["ok"]`` when
    sound, else up to 100 problems. Raises :class:`sqlite3.DatabaseError` on a file too damaged."""
    pragma = "integrity_check" if thorough else "quick_check"
    return [r[0] for r in conn.execute(f"PRAGMA {pragma}(100)")]


def schema_version(conn: sqlite3.Connection) -> int:
    """The file's schema version (0: not an airtable_cached file, or a new one)."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


def table_names(conn: sqlite3.Connection) -> set[str]:
    """The names of the tables the file holds."""
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to the file (nothing it does can change the file)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def bases_in(path: Path) -> set[tuple[str, str]]:
    """(endpoint, base id) of every base a file holds tables (or, in a file from before the cache
    was keyed by endpoint, queued writes) of; nothing when the file cannot be read."""
    conn = raw_connect(path)
    try:
        replica = SqliteReplica(conn)
        try:
            return replica.endpoint_base_ids()
        except sqlite3.OperationalError:  # no endpoint column yet
            return {("", base_id) for base_id in set(replica.base_ids()) | SqliteOutbox(conn).bases()}
    except sqlite3.Error:
        return set()
    finally:
        conn.close()


# -- salvage -------------------------------------------------------------------------------------------


def readable_rows(conn: sqlite3.Connection, table: str) -> tuple[list[dict[str, Any]], list[int]]:
    """Every row of ``table`` that can be read; where a whole read fails, row by row (rowids that
    fail are returned too). A table that cannot be read at all gives nothing."""
    try:
        return [dict(r) for r in conn.execute(f"SELECT rowid AS _rowid, * FROM {table} ORDER BY rowid")], []
    except sqlite3.DatabaseError as exc:
        log.warning("salvage: reading %s whole failed (%s); reading it row by row", table, exc)
    rows, lost = [], []
    for rowid in range(1, _top_rowid(conn, table) + 1):
        try:
            row = conn.execute(f"SELECT rowid AS _rowid, * FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            lost.append(rowid)
            continue
        if row is not None:
            rows.append(dict(row))
    return rows, lost


def _top_rowid(conn: sqlite3.Connection, table: str) -> int:
    for sql in (f"SELECT MAX(rowid) FROM {table}", "SELECT seq FROM sqlite_sequence WHERE name = ?"):
        try:
            row = conn.execute(sql, (table,) if "?" in sql else ()).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row and row[0]:
            return int(row[0])
    return 100_000  # nothing tells how far the rows go: look that far
