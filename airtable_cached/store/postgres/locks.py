"""Per-base flush locks for every host: session-level advisory locks that die with their connection.

The same interface as :class:`airtable_cached.sync.locks.FlushLocks` (OS file locks, for the
processes of one machine). Here the lock is ``pg_try_advisory_lock`` on a connection of its own,
held for as long as the lock: the server releases it the moment that connection ends (its process
killed, its host gone, the network cut), so a flusher elsewhere takes over at once.

A lease remains for the holder that is alive but hung: it renews ``lease`` in ``flush_leases``
while it flushes; a flusher that finds the lock held and the lease run out ends the holder's
connection (``pg_terminate_backend``: the lock goes with it), moves the base to the next epoch and
takes the lock; the hung holder learns at its next renewal that it lost the base.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

if TYPE_CHECKING:
    from airtable_cached.store.postgres.runner import Connection, Server

log = logging.getLogger("airtable_cached")

#: The first key of every flush lock (advisory locks take two int4 keys): "atc" and 2.
NAMESPACE = 0x61746302
#: The first key of every table's refresh lock: "atc" and 3.
TABLE_NAMESPACE = 0x61746303


def lock_id(key: str) -> int:
    """The second advisory-lock key of a flush key (31 bits of its hash; a collision only makes
    two bases share one flusher)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclass
class HeldLock:
    """A base's flush lock held by this process (``base_id`` is its flush key), on ``conn``."""

    base_id: str
    epoch: int
    conn: Connection


class PostgresFlushLocks:
    """The flush locks of the bases of one PostgreSQL cache (leases in ``flush_leases``)."""

    def __init__(self, store: Server, lease: float, *, now: Callable[[], float] = time.time,
                 take_over_wait: float = 10.0):
        self.store = store
        self.lease = lease
        #: Wall time, compared between hosts: keep their clocks in sync (NTP), as for any lease.
        self.now = now
        self.take_over_wait = take_over_wait

    def try_acquire(self, base_id: str) -> HeldLock | None:
        """The base's flush lock, taken without waiting; ``None`` when a live flusher holds it."""
        conn: Connection = psycopg.connect(self.store.url, autocommit=True, row_factory=dict_row)
        try:
            held = self._acquire_on(conn, base_id)
        except BaseException:
            conn.close()
            raise
        if held is None:
            conn.close()
        return held

    def _acquire_on(self, conn: Connection, base_id: str) -> HeldLock | None:
        if not self._take(conn, base_id):
            if not self._take_over_from_hung_holder(base_id) or not self._take(conn, base_id, self.take_over_wait):
                return None
        row = conn.execute(
            "INSERT INTO flush_leases (lock_key, lease_until, holder_pid) VALUES (%s, %s, pg_backend_pid())"
            " ON CONFLICT (lock_key) DO UPDATE SET lease_until = EXCLUDED.lease_until,"
            " holder_pid = EXCLUDED.holder_pid RETURNING epoch", (base_id, self.now() + self.lease)).fetchone()
        assert row is not None
        return HeldLock(base_id, int(row["epoch"]), conn)

    def renew(self, held: HeldLock) -> bool:
        """Extend the lease; ``False`` if another flusher took the base over (this one was hung)."""
        try:
            row = held.conn.execute(
                "UPDATE flush_leases SET lease_until = %s WHERE lock_key = %s AND epoch = %s RETURNING epoch",
                (self.now() + self.lease, held.base_id, held.epoch)).fetchone()
        except psycopg.OperationalError:
            return False  # its connection ended: the lock went with it
        return row is not None

    def release(self, held: HeldLock) -> None:
        """Give the lock back (closing its connection releases it even if the unlock fails)."""
        try:
            held.conn.execute("DELETE FROM flush_leases WHERE lock_key = %s AND epoch = %s", (held.base_id, held.epoch))
            held.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (NAMESPACE, lock_id(held.base_id)))
        except psycopg.OperationalError:
            pass  # the connection is gone, and the lock with it
        finally:
            held.conn.close()

    def holder(self, base_id: str) -> int | None:
        """The server process id of the connection holding the base's lock, if any."""
        row = self.store.call(lambda conn: conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s::bigint::oid"
            " AND objid = %s::bigint::oid AND objsubid = 2 AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())", (NAMESPACE, lock_id(base_id))).fetchone())
        return None if row is None else int(row["pid"])

    # -- internals ---------------------------------------------------------------------------------
    def _take(self, conn: Connection, base_id: str, wait: float = 0.0) -> bool:
        deadline = time.monotonic() + wait
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s) AS got", (NAMESPACE, lock_id(base_id))).fetchone()
            if row is not None and row["got"]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _take_over_from_hung_holder(self, base_id: str) -> bool:
        """End the holder's connection if its lease ran out (it is alive but hung)."""
        return self.store.call(lambda conn: self._take_over(conn, base_id))

    def _take_over(self, conn: Connection, base_id: str) -> bool:
        with conn.transaction():
            row: Any = conn.execute("SELECT lease_until, holder_pid FROM flush_leases WHERE lock_key = %s FOR UPDATE",
                                    (base_id,)).fetchone()
            if row is None or row["lease_until"] is None or row["lease_until"] > self.now():
                return False
            holder = self.holder(base_id)
            if holder is not None:
                conn.execute("SELECT pg_terminate_backend(%s)", (holder,))
            # A fresh lease and the next epoch: a third flusher does not take over from the new holder.
            conn.execute("UPDATE flush_leases SET epoch = epoch + 1, lease_until = %s WHERE lock_key = %s",
                         (self.now() + self.lease, base_id))
        log.warning("the flush lock of base %s is held by a process that has not renewed it for %ss (hung?);"
                    " taking its writes over", base_id, self.lease)
        return True


@contextlib.contextmanager
def table_lock(store: Server, base_id: str, tid: int, timeout: float) -> Iterator[bool]:
    """Hold the table's refresh lock, for every host, for the block: a session-level advisory lock
    on a connection of its own (it dies with it). Yields ``False`` when it could not be taken within
    ``timeout`` seconds or the server could not be reached (the block runs anyway: a second pull
    costs requests, never data)."""
    key = (TABLE_NAMESPACE, lock_id(f"{base_id} {tid}"))
    try:
        conn: Connection = psycopg.connect(store.url, autocommit=True, row_factory=dict_row)
    except psycopg.OperationalError as exc:
        log.warning("refresh lock of %s/%s: cannot reach the database (%s)", base_id, tid, exc)
        yield False
        return
    with conn:
        got = _wait_for(conn, key, timeout)
        try:
            yield got
        finally:
            if got:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)


def _wait_for(conn: Connection, key: tuple[int, int], timeout: float) -> bool:
    """Wait (at most ``timeout`` seconds) for the advisory lock ``key`` on ``conn``."""
    try:
        conn.execute(f"SET lock_timeout = {int(timeout * 1000)}")
        conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
    except psycopg.errors.LockNotAvailable:
        return False
    except psycopg.OperationalError:
        return False
    return True
