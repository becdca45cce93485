"""SQLite connections, transactions and schema migrations (the schema itself: ``schema.py``).

One :class:`Store` per database file and process. Connections are per thread and re-opened after a
fork (a SQLite connection must never cross a fork). Writes run under ``BEGIN IMMEDIATE`` so two
processes never both believe they hold the write lock; ``busy_timeout`` makes the loser wait instead
of failing. The schema version lives in ``PRAGMA user_version``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from airtable_cached.errors import AirtableCachedError, DiskFullError
from airtable_cached.store.sqlite import files, locks
from airtable_cached.store.sqlite.outbox import SqliteOutbox
from airtable_cached.store.sqlite.replica import SqliteReplica
from airtable_cached.store.sqlite.schema import MIGRATIONS, PRAGMAS, SCHEMA_VERSION

if TYPE_CHECKING:
    from airtable_cached.config import Settings
    from airtable_cached.store.contract import Coordination

_serials = itertools.count(1)


class _Connection(sqlite3.Connection):
    """A connection that can be referred to weakly (the base class cannot), with a serial number
    never reused in the process (``id()`` is: a closed connection's address goes to the next)."""

    serial: int = 0
    #: The thread that opened it (weakly): only that thread uses it.
    owner: Callable[[], threading.Thread | None] | None = None


class SqliteUnit:
    """One unit of work on one connection: the replica and the queue, in the same transaction."""

    __slots__ = ("conn", "outbox", "replica")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.replica = SqliteReplica(conn)
        self.outbox = SqliteOutbox(conn)


class StoreError(AirtableCachedError):
    """The database cannot be used (wrong schema version, unreadable file)."""


class Store:
    """A SQLite database file: per-thread connections, transactions, migrations."""

    def __init__(self, path: str | os.PathLike[str], *, on_connect: Callable[[sqlite3.Connection], None] | None = None):
        self.path = Path(path)
        self._on_connect = on_connect
        self._local = threading.local()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        #: Every thread's open connection, so that close_all() can close them (weak: a finished
        #: thread's connection goes with it).
        self._open: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._open_lock = threading.Lock()
        #: Write transactions committed through this Store (any thread) since it was opened.
        self.commits = 0
        self._prepare_file()
        self.migrate()

    # -- connections ---------------------------------------------------------------------------
    def _prepare_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # Create the file 0600 before SQLite opens it: it holds a team's data.
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)

    @property
    def conn(self) -> _Connection:
        """This thread's connection (re-opened in a forked child)."""
        if os.getpid() != self._pid:
            self._local = threading.local()
            self._pid = os.getpid()
            self._open = weakref.WeakSet()  # the parent's connections: never used (nor closed) here
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._open_lock:
                self._open.add(conn)
        return conn

    def _connect(self) -> _Connection:
        # isolation_level=None: we issue BEGIN ourselves, so transactions are explicit.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False, factory=_Connection)
        assert isinstance(conn, _Connection)
        for name, value in PRAGMAS:
            if name == "journal_mode":
                _enable_wal(conn)
            else:
                conn.execute(f"PRAGMA {name} = {value}")
        conn.row_factory = sqlite3.Row
        conn.serial = next(_serials)
        conn.owner = weakref.ref(threading.current_thread())
        if self._on_connect:
            self._on_connect(conn)
        return conn

    def close(self) -> None:
        """Close the calling thread's connection (it reconnects on next use)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and os.getpid() == self._pid:
            with self._open_lock:
                self._open.discard(conn)
            conn.close()
        self._local.conn = None

    def close_all(self) -> None:
        """Close every thread's connection. A thread that uses the Store again reconnects.

        The calling thread's connections and those of finished threads are closed here. Another
        live thread's connection is not closed under it (it may be in the middle of a statement:
        closing a connection while another thread uses it can crash the interpreter); it is let go
        instead, and closes as soon as that thread no longer holds it (at once if it is idle)."""
        with self._open_lock:
            conns, self._open = list(self._open), weakref.WeakSet()
        me = threading.current_thread()
        while conns:
            conn = conns.pop()
            owner = conn.owner() if conn.owner is not None else None
            if owner is None or owner is me or not owner.is_alive():
                conn.close()
            del conn, owner
        self._local = threading.local()

    # -- transactions --------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``); nested use joins the outer one."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if is_disk_full(exc):
                raise self._disk_full() from exc
            raise
        self.commits += 1

    @contextlib.contextmanager
    def write(self) -> Iterator[SqliteUnit]:
        """One atomic write transaction (the contract's ``write()``); nested use joins the outer one."""
        with self.transaction() as conn:
            yield SqliteUnit(conn)

    @property
    def replica(self) -> SqliteReplica:
        """The replica on this thread's connection, outside any transaction: committed state."""
        return SqliteReplica(self.conn)

    @property
    def outbox(self) -> SqliteOutbox:
        """The queue on this thread's connection, outside any transaction: committed state."""
        return SqliteOutbox(self.conn)

    @property
    def location(self) -> str:
        return str(self.path)

    def _disk_full(self) -> DiskFullError:
        return DiskFullError(
            f"the disk holding the cache {self.path} is full: this call was not recorded and nothing"
            " was queued for it; the writes queued before are intact and will be sent. Free space on"
            " that disk (or move AIRTABLE_CACHED_PATH) and try again"
        )

    def change_marker(self) -> tuple[int, int, int]:
        """Changes whenever the database may have changed: a commit through this Store, or one by
        another process. ``data_version`` counts per connection, so the connection is part of it."""
        conn = self.conn
        return self.commits, conn.serial, conn.execute("PRAGMA data_version").fetchone()[0]

    def moved_only_by_own_commit(self, before: tuple, after: tuple) -> bool:
        """Whether the file went from ``before`` to ``after`` by one commit through this Store and
        nothing else (another process's commit moves ``data_version``)."""
        return after == (before[0] + 1, *before[1:])

    def knows_current(self, marker: tuple) -> bool:
        """Whether ``marker`` is still this process's view as far as it knows without asking SQLite."""
        return marker[0] == self.commits and marker[1] == self.conn.serial

    def in_write(self) -> bool:
        """Whether the calling thread is inside ``write()`` (or ``transaction()``)."""
        return self.conn.in_transaction

    # -- coordination between processes (locks.py) ----------------------------------------------
    def coordination(self, settings: Settings, *, clock: Callable[[], float],
                     sleep: Callable[[float], None]) -> Coordination:
        """The diskcache pacer and the file locks beside the file: the processes of one machine."""
        return locks.coordination(settings, clock=clock, sleep=sleep)

    # -- whole-file operations (files.py) --------------------------------------------------------
    def backup(self, dest: Path) -> None:
        """A consistent copy of the database, taken while others keep writing, into a new 0600 file."""
        files.copy_database(self.path, dest)

    def vacuum(self) -> None:
        """Give the space of deleted rows back to the file system."""
        files.compact(self.conn)

    def disk_bytes(self) -> int:
        """Bytes the database takes on disk (WAL included)."""
        return files.disk_bytes(self.path)

    def page_bytes(self) -> dict[str, int]:
        """Bytes of the database's pages (``database``) and, of those, unused (``free``)."""
        return files.page_bytes(self.conn)

    def execute(self, sql: str, params: tuple | list | dict = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    # -- migrations ----------------------------------------------------------------------------
    def version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> None:
        with self._lock:
            with self.transaction() as conn:
                current = conn.execute("PRAGMA user_version").fetchone()[0]
                if current > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} has schema version {current}, newer than this airtable_cached "
                        f"understands ({SCHEMA_VERSION}); upgrade airtable_cached"
                    )
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    for statement in _statements(MIGRATIONS[version]):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {version}")


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL ("database or disk is full"), or the OS's ENOSPC."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def _enable_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """Switch the file to WAL (persistent: once per file). Two processes opening a new file at once
    can both try; the switch needs a moment alone with the file and SQLite does not always wait
    for it, so a busy answer is retried here."""
    for attempt in range(attempts):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            conn.execute("PRAGMA journal_mode = wal")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def _statements(script: str) -> list[str]:
    """Split a migration script into complete statements (triggers hold ';' inside BEGIN...END)."""
    statements, buffer = [], ""
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        buffer += line + "\n"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
