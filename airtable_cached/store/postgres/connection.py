"""PostgreSQL connections, transactions and schema migrations (the schema itself: ``schema.py``).

One :class:`PostgresStore` per database URL and process. Connections come from a
``psycopg_pool.ConnectionPool`` for the length of one call (outside a write) or of one transaction
(``write()``); a forked child opens its own pool (a connection never crosses a fork). A connection
the server dropped (a restart, a failover, an idle timeout) is replaced and the call retried, with
tenacity, only where nothing was done on it yet: a read, or the start of a transaction.

A write transaction whose connection drops raises :class:`StoreConnectionLost` when nothing of it
was kept, so that its caller may run it again whole: cut in its body, the server rolled it back;
cut during its ``COMMIT``, the outcome is asked of the database (``commits.py``: the transaction's
commit mark) and the transaction returns normally if it was committed. When the database cannot be
asked within :data:`SETTLE_SECONDS`, :class:`StoreCommitUnknown` says that it may have been kept.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from airtable_cached.errors import AirtableCachedError, StoreCommitUnknown, StoreConnectionLost
from airtable_cached.store.contract import Coordination
from airtable_cached.store.postgres import commits
from airtable_cached.store.postgres.locks import PostgresFlushLocks, table_lock
from airtable_cached.store.postgres.outbox import PostgresOutbox
from airtable_cached.store.postgres.pacer import PostgresPacer
from airtable_cached.store.postgres.replica import PostgresReplica
from airtable_cached.store.postgres.runner import Connection, Runner
from airtable_cached.store.postgres.schema import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION

if TYPE_CHECKING:
    from airtable_cached.config import Settings

T = TypeVar("T")

#: What the change marker asks: the server's snapshot moves with every transaction given an id.
SNAPSHOT_QUERY = "SELECT pg_current_snapshot()::text"

#: Threads of one process that ask the change marker on a connection of their own (the rest share
#: the pool's, a checkout dearer by about one more round trip).
MARKER_CONNECTIONS = 8

#: Own commits whose transaction ids are remembered (a marker older than these is simply stale).
OWN_COMMITS_KEPT = 64

#: A dropped connection is retried this many times (a failover takes a few seconds).
RETRY_ATTEMPTS = 5
#: How long the outcome of a commit whose answer was lost is asked for (a failover, a restart).
SETTLE_SECONDS = 60.0


class StoreError(AirtableCachedError):
    """The database cannot be used (wrong schema version, unreachable server)."""


def redact(url: str) -> str:
    """The URL without its password (in the authority or as a query parameter), for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def retrying() -> Retrying:
    """Retries a call whose connection the server dropped before the call did anything."""
    return Retrying(retry=retry_if_exception_type(psycopg.OperationalError), stop=stop_after_attempt(RETRY_ATTEMPTS),
                    wait=wait_exponential(multiplier=0.1, max=2.0), reraise=True)


class PostgresUnit:
    """One unit of work on one connection: the replica and the queue, in the same transaction."""

    __slots__ = ("conn", "outbox", "replica")

    def __init__(self, store: PostgresStore, conn: Connection):
        self.conn = conn
        runner = Runner(store, conn)
        self.replica = PostgresReplica(runner)
        self.outbox = PostgresOutbox(runner)


class PostgresStore:
    """A PostgreSQL database holding one cache, shared by every host pointed at it."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10):
        self.url = url
        self.location = redact(url)
        self._sizes = (min_size, max_size)
        self._local = threading.local()
        self._pool_lock = threading.Lock()
        self._pid = os.getpid()
        self._pool: ConnectionPool[Any] | None = None
        #: Each thread's connection asking the change marker (closed with the pool).
        self._marker_conns: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._marker_opening = 0  # connections being opened for it (counted against the limit)
        #: Write transactions committed through this store (any thread) since it was opened.
        self.commits = 0
        #: The ids of the transactions each of the latest commits took, by their number in ``commits``.
        self._own_xids: dict[int, frozenset[int]] = {}
        self._commit_lock = threading.Lock()
        self.migrate()

    # -- connections ---------------------------------------------------------------------------
    @property
    def pool(self) -> ConnectionPool[Any]:
        """This process's pool (a forked child opens its own; the parent's is never used there)."""
        with self._pool_lock:
            self._start_afresh_after_fork()
            if self._pool is None:
                self._pool = self._open_pool()
            return self._pool

    def _start_afresh_after_fork(self) -> None:
        """In a forked child, forget the parent's pool and connections (never used, never closed
        here); called under ``_pool_lock``."""
        if self._pid != os.getpid():
            self._pid, self._local, self._pool = os.getpid(), threading.local(), None
            self._marker_conns, self._marker_opening = weakref.WeakSet(), 0

    def _open_pool(self) -> ConnectionPool[Any]:
        min_size, max_size = self._sizes
        pool: ConnectionPool[Any] = ConnectionPool(
            self.url, min_size=min_size, max_size=max_size, open=False, name="airtable_cached",
            kwargs={"autocommit": True, "row_factory": dict_row}, check=ConnectionPool.check_connection)
        try:
            pool.open(wait=True, timeout=30)
        except psycopg_pool.PoolTimeout as exc:
            pool.close()
            raise StoreError(f"cannot connect to the cache database {self.location}: {exc}") from exc
        return pool

    def call(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` on a pooled connection in autocommit, retried on a dropped connection:
        ``fn`` must be safe to run again (a read, or a transaction of its own whose repetition is
        harmless: a commit whose answer was lost is indistinguishable from a failure)."""
        for attempt in retrying():
            with attempt, self.pool.connection() as conn:
                return fn(conn)
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True

    def close(self) -> None:
        """Nothing to close per thread: a connection goes back to the pool after each call."""

    def close_all(self) -> None:
        """Close this process's pool (a later call opens a new one)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
            markers, self._marker_conns = self._marker_conns, weakref.WeakSet()
        if self._pid != os.getpid():
            return  # the parent's connections are the parent's to close
        for conn in list(markers):
            _close_quietly(conn)
        self._local.marker_conn = None
        if pool is not None:
            pool.close()

    # -- coordination between hosts (pacer.py, locks.py) ----------------------------------------
    def coordination(self, settings: Settings, *, clock: Callable[[], float],
                     sleep: Callable[[float], None]) -> Coordination:
        """The rate budget, flush locks and table locks in the database: every host shares them.
        The budget runs on the database's clock (``clock`` is the sync's, not the server's)."""
        return Coordination(PostgresPacer(self, settings, sleep=sleep),
                            PostgresFlushLocks(self, settings.claim_timeout),
                            functools.partial(table_lock, self))

    # -- transactions --------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction on one connection; nested use (same thread) joins the outer one.
        Committed when the block ends, or :class:`StoreConnectionLost` when the connection dropped and
        nothing was kept (see the module's docstring)."""
        outer = getattr(self._local, "conn", None)
        if outer is not None:
            yield outer
            return
        mark = self._next_mark()
        committing = False
        xid: int | None = None
        try:
            with self._begun() as conn:
                self._local.conn = conn
                try:
                    with conn.transaction():
                        with _lost_before_commit(conn):  # inside: a failed commit is not "before"
                            yield conn
                            commits.set_mark(conn, mark)
                            xid = _own_xid(conn)  # after the mark, which gives every transaction an id
                        committing = True
                finally:
                    self._local.conn = None
        except psycopg.OperationalError as exc:
            if not (committing and conn.broken):
                raise
            self._settle_lost_commit(mark, exc)
        owner_xid, self._local.owner_xid = getattr(self._local, "owner_xid", None), None
        self._count_commit({x for x in (owner_xid, xid) if x is not None})

    def _count_commit(self, xids: set[int]) -> None:
        """One more commit through this store, remembered with the ids of the transactions it took
        (its own, and the one that made its thread's commit mark) for :meth:`moved_only_by_own_commit`."""
        with self._commit_lock:
            self.commits += 1
            self._own_xids[self.commits] = frozenset(xids)
            while len(self._own_xids) > OWN_COMMITS_KEPT:
                del self._own_xids[next(iter(self._own_xids))]

    def _next_mark(self) -> commits.CommitMark:
        """The calling thread's commit mark, numbered for its next transaction (a new owner's row is
        made first, on a connection of its own)."""
        mark: commits.CommitMark | None = getattr(self._local, "mark", None)
        if mark is None or not mark.usable():
            mark = commits.CommitMark()
            # Its own transaction, whose id goes with the next commit's (moved_only_by_own_commit).
            self._local.owner_xid = self.call(lambda conn: _in_transaction(conn, lambda: commits.create_owner(conn, mark)))
            self._local.mark = mark
        mark.n += 1
        return mark

    def _settle_lost_commit(self, mark: commits.CommitMark, exc: psycopg.OperationalError) -> None:
        """The connection dropped during the commit: return if the transaction was kept, raise
        :class:`StoreConnectionLost` if it was not, :class:`StoreCommitUnknown` if that cannot be
        learnt (whatever this process remembers of the database is then stale: it may have been)."""
        try:
            committed = self._ask_commit(mark)
        except psycopg.OperationalError as err:
            committed, exc = None, err
        if committed is None:
            with self._commit_lock:
                self.commits += 1  # with no transaction id: never taken for an own commit alone
            raise StoreCommitUnknown(f"the database connection dropped during a commit and {self.location} could not "
                                     f"tell whether it was kept ({exc}); the write may have been recorded") from exc
        if not committed:
            raise StoreConnectionLost(f"the database connection dropped during a commit that was not kept ({exc});"
                                      " nothing was written") from exc

    def _ask_commit(self, mark: commits.CommitMark) -> bool | None:
        """Whether the transaction of ``mark`` was committed, asked on new connections for as long as
        :data:`SETTLE_SECONDS` (a server restarting or failing over does not answer at once)."""
        deadline = time.monotonic() + SETTLE_SECONDS
        for attempt in Retrying(retry=retry_if_exception_type(psycopg.OperationalError),
                                stop=stop_after_delay(SETTLE_SECONDS), wait=wait_exponential(multiplier=0.1, max=2.0),
                                reraise=True):
            with attempt, self.pool.connection(timeout=max(0.1, deadline - time.monotonic())) as conn:
                return commits.was_committed(conn, mark)
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True

    @contextlib.contextmanager
    def _begun(self) -> Iterator[Connection]:
        """A pooled connection known to be alive: the pool checks it (``check_connection``) and
        replaces a dropped one; a server that cannot be reached at all is retried here."""
        pool = self.pool
        conn: Connection | None = None
        for attempt in retrying():
            with attempt:
                conn = pool.getconn()
        assert conn is not None
        try:
            yield conn
        finally:
            pool.putconn(conn)

    @contextlib.contextmanager
    def write(self) -> Iterator[PostgresUnit]:
        """One atomic write transaction (the contract's ``write()``); nested use joins the outer one."""
        with self.transaction() as conn:
            yield PostgresUnit(self, conn)

    @property
    def replica(self) -> PostgresReplica:
        """The replica outside any transaction: each call on its own connection, committed state."""
        return PostgresReplica(Runner(self))

    @property
    def outbox(self) -> PostgresOutbox:
        """The queue outside any transaction: each call on its own connection, committed state."""
        return PostgresOutbox(Runner(self))

    def change_marker(self) -> tuple[int, str]:
        """Changes whenever the database may have changed: a commit through this store, or any
        transaction on the server that was given an id or ended since (the snapshot's xmax/xip).

        Every read asks it, so it goes on the thread's own connection (no pool checkout, no
        connection check: one round trip), replaced and asked again if the server dropped it."""
        commits = self.commits
        try:
            return commits, self._ask_snapshot()
        except psycopg.OperationalError:
            pass  # the connection was dropped (and forgotten): asked again on a new one, with backoff
        for attempt in retrying():
            with attempt:
                return commits, self._ask_snapshot()
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True

    def _ask_snapshot(self) -> str:
        conn = self._marker_connection()
        if conn is None:  # this process holds MARKER_CONNECTIONS already: asked on a pooled one
            row = self.call(lambda pooled: pooled.execute(SNAPSHOT_QUERY).fetchone())
            assert row is not None
            return str(row["pg_current_snapshot"])
        try:
            row = conn.execute(SNAPSHOT_QUERY).fetchone()
        except psycopg.OperationalError:
            self._local.marker_conn = None
            _close_quietly(conn)
            raise
        assert row is not None
        return str(row[0])

    def _marker_connection(self) -> psycopg.Connection[Any] | None:
        """The calling thread's connection for :meth:`change_marker` (per thread and process, as a
        connection never crosses a fork; closed by :meth:`close_all` or when the thread ends), or
        ``None`` past :data:`MARKER_CONNECTIONS` threads: an agent with many threads on many hosts
        must not exhaust the server's connections."""
        conn = getattr(self._local, "marker_conn", None)
        if conn is not None and not conn.closed and self._pid == os.getpid():
            return conn
        with self._pool_lock:
            self._start_afresh_after_fork()
            open_now = sum(1 for c in self._marker_conns if not c.closed)  # a dropped one is closed
            if open_now + self._marker_opening >= MARKER_CONNECTIONS:
                return None
            self._marker_opening += 1
        try:
            conn = psycopg.connect(self.url, autocommit=True)
        except psycopg.OperationalError as exc:
            raise psycopg.OperationalError(f"cannot connect to {self.location}: {exc}") from None
        finally:
            with self._pool_lock:
                self._marker_opening -= 1
        with self._pool_lock:
            self._marker_conns.add(conn)
        self._local.marker_conn = conn
        weakref.finalize(threading.current_thread(), _close_quietly, conn)
        return conn

    # -- whole-database operations ---------------------------------------------------------------
    def backup(self, dest: Path) -> None:
        """Not done here: a server's database is copied with its own tool, which this names."""
        raise StoreError(f"{self.location} is a PostgreSQL database: back it up with pg_dump (and restore it with "
                         f"pg_restore), not with airtable-cached backup ({dest} was not written)")

    def vacuum(self) -> None:
        """Rewrite every table to give the space of deleted rows back (``VACUUM FULL``: each table is
        locked while it is rewritten, as SQLite's VACUUM locks the file)."""
        self.call(lambda conn: conn.execute("VACUUM FULL"))

    def disk_bytes(self) -> int:
        """Bytes the database takes on the server's disk."""
        return int(self._scalar("SELECT pg_database_size(current_database()) AS n"))

    def page_bytes(self) -> dict[str, int]:
        """Bytes of the database (``database``) and, of those, an estimate of the dead rows' (``free``)
        from the server's table statistics."""
        database = self.disk_bytes()
        free = int(self._scalar(
            "SELECT COALESCE(SUM(pg_table_size(relid) * n_dead_tup / GREATEST(n_live_tup + n_dead_tup, 1)), 0)::bigint"
            " AS n FROM pg_stat_user_tables"))
        return {"database": database, "free": max(0, min(free, database))}

    def _scalar(self, query: str) -> Any:
        row = self.call(lambda conn: conn.execute(query).fetchone())
        assert row is not None
        return row["n"]

    def moved_only_by_own_commit(self, before: tuple, after: tuple) -> bool:
        """Whether the database went from ``before`` to ``after`` (two change markers) by one commit
        through this store and nothing else: the transactions that ended in between, read from the
        two snapshots, are at most that commit's own."""
        if len(before) != 2 or len(after) != 2 or after[0] != before[0] + 1:
            return False
        with self._commit_lock:
            if after[0] not in self._own_xids:
                return False
            own = self._own_xids[after[0]]
        ended = transactions_ended_between(before[1], after[1])
        return ended is not None and ended <= own

    def knows_current(self, marker: tuple) -> bool:
        """Whether ``marker`` is still this process's view without asking the server: nothing was
        committed through this store since (another host may have: ``change_marker`` asks)."""
        return bool(marker) and marker[0] == self.commits

    def in_write(self) -> bool:
        """Whether the calling thread is inside ``write()`` (or ``transaction()``)."""
        return getattr(self._local, "conn", None) is not None

    # -- migrations ----------------------------------------------------------------------------
    def version(self) -> int:
        return self.call(_version)

    def migrate(self) -> None:
        """Bring the database to :data:`SCHEMA_VERSION`, one version per transaction."""
        while True:
            with self._begun() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
                current = _version(conn)
                if current > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.location} has schema version {current}, newer than this airtable_cached "
                        f"understands ({SCHEMA_VERSION}); upgrade airtable_cached")
                if current == SCHEMA_VERSION:
                    commits.forget_old_marks(conn)
                    return
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, applied_at timestamptz)")
                conn.execute(MIGRATIONS[current + 1].encode())
                conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (%s, now())", (current + 1,))


@contextlib.contextmanager
def _lost_before_commit(conn: Connection) -> Iterator[None]:
    """A connection that dropped inside the transaction's body (before its commit) raises
    :class:`StoreConnectionLost`: the server rolled it back, so the caller may run it again."""
    try:
        yield
    except psycopg.OperationalError as exc:
        if not conn.broken:
            raise
        raise StoreConnectionLost(f"the database connection dropped mid-transaction ({exc}); nothing was written") from exc


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    """Close a connection that may already be broken (its error is of no use to anyone)."""
    with contextlib.suppress(psycopg.Error):
        conn.close()


def _in_transaction(conn: Connection, fn: Callable[[], object]) -> int | None:
    """``fn()`` in a transaction of its own on ``conn``; returns that transaction's id (if it took one)."""
    with conn.transaction():
        fn()
        return _own_xid(conn)


def _own_xid(conn: Connection) -> int | None:
    """The open transaction's id, if it was given one (it wrote something)."""
    row = conn.execute("SELECT pg_current_xact_id_if_assigned()::text AS x").fetchone()
    return None if row is None or row["x"] is None else int(row["x"])


def _snapshot_parts(snapshot: str) -> tuple[int, int, frozenset[int]]:
    xmin, xmax, xip = snapshot.split(":")
    return int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x)


def transactions_ended_between(before: str, after: str, *, limit: int = 10_000) -> set[int] | None:
    """The ids of the transactions that ended (committed or rolled back) between two snapshots of
    ``pg_current_snapshot()`` (``xmin:xmax:in-progress``): those in progress or not yet begun at
    ``before`` and neither at ``after``. ``None`` when more than ``limit`` ids passed (or the
    snapshots are out of order): too many to list, and surely not one commit alone."""
    _, xmax0, running0 = _snapshot_parts(before)
    _, xmax1, running1 = _snapshot_parts(after)
    if xmax1 < xmax0 or xmax1 - xmax0 > limit:
        return None
    ended = {x for x in running0 if x not in running1}
    ended.update(x for x in range(xmax0, xmax1) if x not in running1)
    return ended


def _version(conn: Connection) -> int:
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL AS found").fetchone()
    if row is None or not row["found"]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_version").fetchone()
    assert row is not None
    return int(row["v"])

