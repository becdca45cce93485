"""Per-base flush locks that die with their process.

One flusher at a time sends a base's queued writes, across every process using the cache file. The
lock is an OS file lock (``filelock``: ``flock`` on Unix), so the kernel releases it the moment its
holder dies: a flusher restarted after a crash (SIGKILL, OOM, a container stopped) takes over at
once instead of waiting out a lease. Holding the lock also proves that whoever claimed the base's
in-flight writes is gone (see ``Sync._flush_base``).

A lease remains for one case the kernel cannot see: a holder that is alive but hung. The holder
renews ``lease`` while it flushes; a flusher that finds the lock held and the lease run out moves
the base to a new lock file (an epoch), takes that one, and the hung holder learns at its next
renewal that it lost the base. Nobody ever waits on the lock: a flusher that cannot take it at
once leaves the base to its holder and goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import diskcache
import filelock

log = logging.getLogger("airtable_cached")


def private_locks_dir(locks_dir: Path) -> None:
    """Create the locks folder ``0700`` and its lock database ``0600`` before anything opens them;
    tighten an existing folder the same way."""
    locks_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(locks_dir, 0o700)
    lock_db = locks_dir / "cache.db"  # diskcache's file (SQLite gives its -wal/-shm the same mode)
    if not lock_db.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(lock_db, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    for child in locks_dir.iterdir():
        with contextlib.suppress(OSError):
            if child.is_file() and stat.S_IMODE(child.stat().st_mode) & 0o077:
                os.chmod(child, 0o600)


def flush_key(endpoint: str, base_id: str) -> str:
    """What a flush lock is taken on: a base of one Airtable (the cache is keyed by endpoint)."""
    return f"{endpoint} {base_id}" if endpoint else base_id


@dataclass
class HeldLock:
    """A base's flush lock held by this process (``base_id`` is its :func:`flush_key`)."""

    base_id: str
    epoch: int
    lock: filelock.BaseFileLock


class FlushLocks:
    """The flush locks of the bases of one cache file (files in ``folder``, leases in ``cache``)."""

    def __init__(self, folder: Path, cache: diskcache.Cache, lease: float, *, now: Callable[[], float] = time.time):
        self.folder = folder
        self.cache = cache
        self.lease = lease
        #: Wall time, not a test's clock: leases are compared between processes.
        self.now = now

    def try_acquire(self, base_id: str) -> HeldLock | None:
        """The base's flush lock, taken without waiting; ``None`` when a live flusher holds it."""
        epoch = self._epoch(base_id)
        lock = self._file_lock(base_id, epoch)
        if not self._take(lock):
            taken_over = self._take_over_from_hung_holder(base_id, epoch)
            if taken_over is None:
                return None
            epoch = taken_over
            lock = self._file_lock(base_id, epoch)
            if not self._take(lock):
                return None
        if self._epoch(base_id) != epoch:  # a take-over moved the base on meanwhile
            lock.release()
            return None
        self.cache.set(self._lease_key(base_id), self.now() + self.lease, retry=True)
        return HeldLock(base_id, epoch, lock)

    def renew(self, held: HeldLock) -> bool:
        """Extend the lease; ``False`` if another flusher took the base over (this one was hung)."""
        if self._epoch(held.base_id) != held.epoch:
            return False
        self.cache.set(self._lease_key(held.base_id), self.now() + self.lease, retry=True)
        return True

    def release(self, held: HeldLock) -> None:
        if self._epoch(held.base_id) == held.epoch:
            self.cache.delete(self._lease_key(held.base_id), retry=True)
        held.lock.release()

    # -- internals ---------------------------------------------------------------------------------
    def _take_over_from_hung_holder(self, base_id: str, epoch: int) -> int | None:
        """The next epoch if the holder's lease ran out (it is alive but hung), else ``None``."""
        until = self.cache.get(self._lease_key(base_id), retry=True)
        if until is None or until > self.now():
            return None
        with self.cache.transact(retry=True):  # SQLite's lock: dies with a process killed inside it
            if self._epoch(base_id) != epoch:
                return None  # someone else took it over first
            self.cache.set(self._epoch_key(base_id), epoch + 1, retry=True)
            # A fresh lease, so that a third flusher does not take over from the new holder too.
            self.cache.set(self._lease_key(base_id), self.now() + self.lease, retry=True)
        log.warning(
            "the flush lock of base %s is held by a process that has not renewed it for %ss (hung?);"
            " taking its writes over", base_id, self.lease,
        )
        return epoch + 1

    def _file_lock(self, base_id: str, epoch: int) -> filelock.BaseFileLock:
        # Base ids are safe file names, but an agent may pass anything as a base id: hash it.
        digest = hashlib.sha256(base_id.encode()).hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"flush-{digest}-{epoch}.lock"
        return filelock.FileLock(str(path), thread_local=False, blocking=False, mode=0o600)

    @staticmethod
    def _take(lock: filelock.BaseFileLock) -> bool:
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            return False
        return True

    def _epoch(self, base_id: str) -> int:
        return int(self.cache.get(self._epoch_key(base_id), 0, retry=True))

    @staticmethod
    def _epoch_key(base_id: str) -> str:
        return f"flush-epoch:{base_id}"

    @staticmethod
    def _lease_key(base_id: str) -> str:
        return f"flush-lease:{base_id}"
