"""Where a PostgreSQL repository's calls run: on a unit's open transaction, or on a pooled
connection per call (``connection.py``). Apart so that repositories need not import the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import psycopg

T = TypeVar("T")
Connection = psycopg.Connection[dict[str, Any]]


class Caller(Protocol):
    def call(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` on a pooled connection, retried on a dropped connection."""
        ...


class Server(Caller, Protocol):
    """A store whose locks need connections of their own (``url``) besides pooled calls."""

    url: str


class Runner:
    """``run(fn)`` calls ``fn(connection)`` on the unit's open transaction, or (outside a write) on
    a pooled connection, retried if it was dropped."""

    def __init__(self, store: Caller, conn: Connection | None = None):
        self.store = store
        self.conn = conn

    def run(self, fn: Callable[[Connection], T]) -> T:
        if self.conn is not None:
            return fn(self.conn)
        return self.store.call(fn)

    def run_atomically(self, fn: Callable[[Connection], T]) -> T:
        """``run(fn)`` with its statements seeing one another: in the unit's transaction, or (outside
        a write) in a transaction of its own."""
        def atomically(conn: Connection) -> T:
            if conn.info.transaction_status != 0:  # already in the unit's transaction
                return fn(conn)
            with conn.transaction():
                return fn(conn)
        return self.run(atomically)
