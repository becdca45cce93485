"""``backup`` and ``restore``: consistent online copies of the database, and swapping one back in.

Every function here returns data and prints nothing; the CLI (:mod:`airtable_cached.ops.cli`)
renders it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from airtable_cached.config import Settings
from airtable_cached.ops import safety
from airtable_cached.ops.backup_files import BACKUP_SUFFIX, backup_dir_for, backup_prefix, list_backups
from airtable_cached.ops.errors import MaintenanceError
from airtable_cached.store.sqlite import Store, files
from airtable_cached.store.sqlite.outbox import SqliteOutbox


class RestoreRefused(MaintenanceError):
    """Restore would be unsafe now (a flush holds the database, or the backup is damaged)."""


def utc_stamp(now: float | None = None) -> str:
    """A UTC time for file names, sortable, to the microsecond."""
    moment = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    return moment.strftime("%Y%m%dT%H%M%S.") + f"{moment.microsecond:06d}Z"


# -- backup ------------------------------------------------------------------------------------------


def backup(store: Store | str | os.PathLike, to: str | os.PathLike | None = None, keep: int | None = None,
           *, now: float | None = None, force: bool = False) -> Path:
    """A consistent online copy of the database (SQLite's backup API) while agents keep running.

    ``to`` is a folder (default: ``backups/`` beside the database) or, ending in ``.sqlite3``/``.db``,
    an exact file. In a folder the copy is named by UTC time and only the newest ``keep`` are kept.
    The copy is created 0600 and written under a temporary name, so a half-made backup never looks
    like a finished one. Returns the path of the new backup.
    """
    db_path = store.path if isinstance(store, Store) else Path(store)
    if not db_path.exists():
        raise MaintenanceError(f"no database at {db_path}")
    if keep is not None and keep < 1:
        raise MaintenanceError("keep must be at least 1")
    directory, dest = _backup_destination(db_path, to, now)
    safety.check_backup_target(db_path, dest, force=force)
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(directory, 0o700)
    if isinstance(store, Store):
        store.backup(dest)
    else:  # a file not opened as a Store: copied as it is (never migrated)
        files.copy_database(db_path, dest)
    if keep is not None and dest.parent == directory and dest.name.startswith(backup_prefix(db_path)):
        _keep_newest(db_path, directory, dest, keep)
    return dest


def _backup_destination(db_path: Path, to: str | os.PathLike | None, now: float | None) -> tuple[Path, Path]:
    """The folder and the file of a new backup: ``to`` names a file, or a folder (the file named by time)."""
    target = Path(to) if to is not None else backup_dir_for(db_path)
    if (target.suffix in (".sqlite3", ".db", ".sqlite") or target.is_file()) and not target.is_dir():
        return target.parent, target
    return target, target / f"{backup_prefix(db_path)}{utc_stamp(now)}{BACKUP_SUFFIX}"


def _keep_newest(db_path: Path, directory: Path, dest: Path, keep: int) -> None:
    for old in list_backups(db_path, directory)[:-keep]:
        if old != dest:
            old.unlink(missing_ok=True)


# -- restore -----------------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    restored_from: str
    database: str
    replaced_kept_at: str | None
    #: Writes queued in the replaced database that the backup does not hold (they are gone now,
    #: but still in the file kept aside).
    writes_lost: list[int] = field(default_factory=list)
    #: Writes in the backup's queue that the replaced database no longer had (most likely sent to
    #: Airtable after the backup was taken: they will be sent again).
    writes_resent: list[int] = field(default_factory=list)
    pending: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def queued_seqs(path: Path) -> tuple[set[int], int]:
    """The ids of the writes queued in a database file, and the highest id it ever gave."""
    conn = files.raw_connect(path)
    try:
        queue = SqliteOutbox(conn)
        return set(queue.seqs()), queue.top_seq()
    finally:
        conn.close()


def _pending_writes(path: Path) -> int:
    conn = files.raw_connect(path)
    try:
        return SqliteOutbox(conn).count_queued()
    finally:
        conn.close()


def _bases_of(path: Path) -> set[str]:
    """The flush-lock keys of the bases in a database file (a base of one endpoint each)."""
    from airtable_cached.sync.locks import flush_key

    return {flush_key(endpoint, base_id) for endpoint, base_id in files.bases_in(path)}


@contextlib.contextmanager
def _hold_flush_locks(settings: Settings, bases: Iterable[str]) -> Iterator[None]:
    """Take every base's flush lock without waiting; refuse if a flusher holds one."""
    import diskcache

    from airtable_cached.store.sqlite.locks import FlushLocks, private_locks_dir

    private_locks_dir(settings.locks_dir)  # 0700, its files 0600, as the sync makes it
    cache = diskcache.Cache(str(settings.locks_dir))
    locks = FlushLocks(settings.locks_dir, cache, settings.claim_timeout)
    held = []
    try:
        for base in sorted(bases):
            lock = locks.try_acquire(base)
            if lock is None:
                raise RestoreRefused(f"a flush of base {base} holds the database; try again when it is over")
            held.append(lock)
        yield
    finally:
        for lock in held:
            locks.release(lock)
        cache.close()


def restore(path: str | os.PathLike, settings: Settings, *, now: float | None = None) -> RestoreResult:
    """Swap a backup in as the database of ``settings``.

    Refuses when the backup fails ``check`` or while a flush holds the database (every base's flush
    lock is taken, without waiting, for the whole swap). The database being replaced is first copied
    aside (``<db>.replaced-<UTC time>``). The swap itself goes through SQLite's backup API into the
    live file, so processes that still have it open see the restored content on their next query
    instead of writing into an unlinked file.
    """
    source = Path(path)
    _refuse_bad_backup(source)
    db_path = settings.path
    result = RestoreResult(restored_from=str(source), database=str(db_path), replaced_kept_at=None)
    backup_seqs, _ = queued_seqs(source)
    bases = _bases_of(source) | (_bases_of(db_path) if db_path.exists() else set())
    with _hold_flush_locks(settings, bases):
        if db_path.exists():
            _set_aside(db_path, backup_seqs, result, now)
        else:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            files.create_private(db_path)
        files.copy_into_live(source, db_path)
        result.pending = _pending_writes(db_path)
    files.make_private(db_path)
    return result


def _refuse_bad_backup(source: Path) -> None:
    """Refuse a backup that is missing, not a cache database, or fails ``check``."""
    from airtable_cached.ops.check import check

    if not source.is_file():
        raise MaintenanceError(f"no backup at {source}")
    try:
        safety.require_cache_database(source)
    except safety.SafetyError as exc:
        raise RestoreRefused(str(exc)) from None
    problems = [f for f in check(source, thorough=True, permissions=False) if f.severity == "error"]
    if problems:
        raise RestoreRefused(f"{source} fails check: " + "; ".join(f.message for f in problems))


def _set_aside(db_path: Path, backup_seqs: set[int], result: RestoreResult, now: float | None) -> None:
    """Copy the database being replaced aside; note the writes the swap loses or sends again."""
    live_seqs, live_top = queued_seqs(db_path)
    result.writes_lost = sorted(live_seqs - backup_seqs)
    result.writes_resent = sorted(s for s in backup_seqs - live_seqs if s <= live_top)
    aside = db_path.with_name(f"{db_path.name}.replaced-{utc_stamp(now)}")
    files.copy_database(db_path, aside)
    result.replaced_kept_at = str(aside)
