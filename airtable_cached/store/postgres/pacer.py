"""One rate budget per base for every host: the pacer and the 429 lock-out in PostgreSQL.

The same interface (``Pacer`` in airtable_cached/store/contract.py) as the SQLite store's
:class:`airtable_cached.store.sqlite.locks.Pacer` (which keeps the budget in a
diskcache beside a SQLite file, for the processes of one machine). Here the budget is one row per
base in ``rate_budget``, taken under its row lock for the few statements that hand out a turn, so N
hosts together stay under ``rate_limit`` requests a second. Turns are on the database's clock: the
hosts' clocks differ, and one budget needs one clock. A test may pass its own ``clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airtable_cached.config import Settings
    from airtable_cached.store.postgres.runner import Caller, Connection


class PostgresPacer:
    """Keeps every host using one database under ``rate_limit`` requests a second per base, and
    stops them all for ``penalty`` seconds after any of them met a 429."""

    def __init__(self, store: Caller, settings: Settings, *, sleep: Callable[[float], None],
                 clock: Callable[[], float] | None = None):
        self.store = store
        self.settings = settings
        self.sleep = sleep
        self.clock = clock

    def wait_turn(self, base_id: str) -> None:
        """Sleep until this host's turn to send one request to ``base_id``."""
        # A 5% margin: a limiter on the other side that counts a sliding second must never see six.
        interval = 1.05 / self.settings.rate_limit
        now, slot = self.store.call(lambda conn: self._take_turn(conn, base_id, interval))
        if slot > now:
            self.sleep(slot - now)

    def _take_turn(self, conn: Connection, base_id: str, interval: float) -> tuple[float, float]:
        with conn.transaction():
            conn.execute("INSERT INTO rate_budget (base_id) VALUES (%s) ON CONFLICT DO NOTHING", (base_id,))
            row = conn.execute("SELECT next_at, penalty_until, extract(epoch FROM clock_timestamp())::float8 AS now"
                               " FROM rate_budget WHERE base_id = %s FOR UPDATE", (base_id,)).fetchone()
            assert row is not None
            now = self.clock() if self.clock is not None else row["now"]
            slot, penalty = max(now, row["next_at"], row["penalty_until"]), row["penalty_until"]
            if slot > now + self.horizon:
                # Written by a clock that was ahead (a test's fake clock, a changed system time):
                # no real queue of waiting requests reaches that far, so start afresh.
                slot, penalty = now, 0.0
            conn.execute("UPDATE rate_budget SET next_at = %s, penalty_until = %s WHERE base_id = %s",
                         (slot + interval, penalty, base_id))
        return now, slot

    @property
    def horizon(self) -> float:
        """The furthest a legitimate turn can lie ahead: a penalty, then a long queue of requests."""
        return max(self.settings.penalty, 60.0) + 300.0

    def penalise(self, base_id: str, seconds: float | None = None) -> None:
        """Stop every host sending to ``base_id`` for ``seconds`` (the 429 lock-out by default)."""
        wait = self.settings.penalty if seconds is None else seconds
        self.store.call(lambda conn: self._penalise(conn, base_id, wait))

    def _penalise(self, conn: Connection, base_id: str, wait: float) -> None:
        now: Any = self.clock() if self.clock is not None else None
        conn.execute(
            "INSERT INTO rate_budget (base_id, penalty_until)"
            " VALUES (%s, coalesce(%s::float8, extract(epoch FROM clock_timestamp())::float8) + %s)"
            " ON CONFLICT (base_id) DO UPDATE SET penalty_until = EXCLUDED.penalty_until",
            (base_id, now, wait))

    def close(self) -> None:
        """Nothing of its own to close: it uses the store's pool."""
