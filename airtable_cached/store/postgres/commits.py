"""Commit marks: whether a commit whose answer was lost was kept (``commit_marks``, schema version 4).

A connection can drop while its ``COMMIT`` is on the way: the server may have committed or not,
and the client cannot tell from the error. Every write transaction of the store therefore sets, as
its last statement, its thread's row in ``commit_marks`` to the transaction's own number ``n``. The
row is data like any other: it is kept exactly when the transaction is, on the server that answers
after a restart or a failover too (a standby promoted without the commit has the old number).

To settle a lost commit, :func:`was_committed` reads the row on a new connection with
``INSERT ... ON CONFLICT DO UPDATE``, which waits for the lost transaction if its server process is
still at it (a commit in progress, or a process that has not noticed its client is gone). A wait
longer than :data:`MARK_WAIT_MS` ends that process (``pg_terminate_backend``): a process cut off
from its client while the network was down only notices when its TCP keepalive says so, which
can take hours. It is found by the row's ``xmax``: only the lost transaction can have updated its
thread's row, so no other process is ever ended. Ended, its transaction is decided (a commit
already written stays; anything else is rolled back) and the row tells which.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from airtable_cached.store.postgres.runner import Connection

#: How long settling a lost commit waits for the lost transaction before ending its process.
MARK_WAIT_MS = 2000
#: How many times settling ends the lost transaction's process before giving up.
HOLDER_ENDINGS = 3
#: A thread takes a new owner row after this many seconds, so that rows unused for a week
#: (:func:`forget_old_marks`) are never rows still in use.
OWNER_TTL = 86400.0

_SET_MARK = "UPDATE commit_marks SET n = %s, at = now() WHERE owner = %s"
_READ_MARK = ("INSERT INTO commit_marks (owner, n) VALUES (%s, 0)"
              " ON CONFLICT (owner) DO UPDATE SET n = commit_marks.n RETURNING n")
_END_HOLDER = ("SELECT pg_terminate_backend(l.pid) FROM commit_marks m JOIN pg_locks l"
               " ON l.locktype = 'transactionid' AND l.transactionid = m.xmax AND l.mode = 'ExclusiveLock'"
               " WHERE m.owner = %s AND l.granted AND l.pid <> pg_backend_pid()")


@dataclass
class CommitMark:
    """A thread's row in ``commit_marks`` and the number of its latest write transaction."""

    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    n: int = 0
    pid: int = field(default_factory=os.getpid)
    made_at: float = field(default_factory=time.monotonic)

    def usable(self) -> bool:
        """Whether this process (not a forked child) may go on using it."""
        return self.pid == os.getpid() and time.monotonic() - self.made_at < OWNER_TTL


def create_owner(conn: Connection, mark: CommitMark) -> None:
    """The owner's row, committed before any transaction sets it (autocommit): settling finds the
    lost transaction's process through the row's ``xmax``, which only an update of an existing row
    sets. Running it twice is harmless."""
    conn.execute("INSERT INTO commit_marks (owner, n) VALUES (%s, 0) ON CONFLICT (owner) DO NOTHING", (mark.owner,))


def set_mark(conn: Connection, mark: CommitMark) -> None:
    """The transaction's last statement: the owner's row holds its number (inserted if it is missing,
    which settling also handles, though it cannot end a process holding a row not yet committed)."""
    if conn.execute(_SET_MARK, (mark.n, mark.owner)).rowcount == 0:
        conn.execute("INSERT INTO commit_marks (owner, n) VALUES (%s, %s)", (mark.owner, mark.n))


def was_committed(conn: Connection, mark: CommitMark) -> bool | None:
    """Whether the transaction numbered ``mark.n`` was committed; ``None`` when its server process
    held the row through :data:`HOLDER_ENDINGS` endings (nothing could be learnt)."""
    for _ in range(HOLDER_ENDINGS):
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{MARK_WAIT_MS}ms",))
                row = conn.execute(_READ_MARK, (mark.owner,)).fetchone()
        except psycopg.errors.LockNotAvailable:
            conn.execute(_END_HOLDER, (mark.owner,))
            continue
        assert row is not None
        return int(row["n"]) == mark.n
    return None


def forget_old_marks(conn: Connection) -> None:
    """Delete the rows of owners unused for a week (threads and processes long gone)."""
    conn.execute("DELETE FROM commit_marks WHERE at < now() - interval '7 days'")
