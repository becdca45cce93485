"""Operating the cache: status, backups and restore, health checks, statistics, resets, the queue.

Every function here returns data (dataclasses and dicts) and prints nothing; the CLI
(:mod:`airtable_cached.ops.cli`) only renders what they return. Functions that talk to Airtable take the
token as an argument and keep it only inside the :class:`~airtable_cached.sync.core.Sync` they build.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from airtable_cached.config import Settings
from airtable_cached.errors import AirtableCachedError
from airtable_cached.ops import safety
from airtable_cached.rules.policy import TableState
from airtable_cached.rules.records import is_provisional, referenced_provisional_ids
from airtable_cached.store import checksum
from airtable_cached.store.sqlite import SCHEMA_VERSION, Store
from airtable_cached.sync import outbox
from airtable_cached.sync.refresh import refresh_counts, refresh_status

__all__ = [
    "Finding",
    "MaintenanceError",
    "RestoreRefused",
    "RestoreResult",
    "backup",
    "backup_dir_for",
    "check",
    "exit_code",
    "flush",
    "list_backups",
    "prune_logs",
    "pull",
    "queue_drop",
    "queue_list",
    "queue_retry",
    "reseed",
    "reset",
    "restore",
    "stats",
    "status",
    "vacuum",
]

SEVERITIES = ("info", "warning", "error")
BACKUP_SUFFIX = ".sqlite3"
#: An inflight claim expired longer ago than this is reported by ``check``.
STALE_CLAIM_GRACE = 600.0
#: Latency samples kept per table and kind by ``vacuum`` (percentiles need no more).
KEEP_LATENCY_SAMPLES = 10_000


class MaintenanceError(AirtableCachedError):
    """A maintenance operation could not be carried out (the message says why)."""


class RestoreRefused(MaintenanceError):
    """Restore would be unsafe now (a flush holds the database, or the backup is damaged)."""


# -- helpers -----------------------------------------------------------------------------------------


def _store(store_or_path: Store | str | os.PathLike) -> Store:
    if isinstance(store_or_path, Store):
        return store_or_path
    from airtable_cached.api import open_store

    return open_store(store_or_path)


def _utc_stamp(now: float | None = None) -> str:
    moment = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    return moment.strftime("%Y%m%dT%H%M%S.") + f"{moment.microsecond:06d}Z"


def _create_private(path: Path) -> None:
    """Create (or truncate) ``path`` with mode 0600 before anything writes to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def _raw_connect(path: Path, *, timeout: float = 30.0) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.row_factory = sqlite3.Row
    return conn


def _copy_database(src: Path, dest: Path) -> None:
    """A consistent copy of ``src`` (WAL content included) into a new 0600 file, in one step."""
    tmp = dest.with_name(dest.name + ".partial")
    _create_private(tmp)
    source = _raw_connect(src)
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


def _table_label(row: sqlite3.Row) -> str:
    return row["name"] or row["table_id"] or f"tid {row['tid']}"


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return round(sorted_values[index], 3)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _db_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


# -- status ------------------------------------------------------------------------------------------


def status(store: Store, settings: Settings, *, now: float | None = None) -> dict:
    """Per table: records, last pull, age against max age, queued and dead writes, oldest queued
    write; per base: requests sent in the last hour (and the 429s among them)."""
    now = time.time() if now is None else now
    conn = store.conn
    tables = []
    for row in conn.execute("SELECT * FROM tables ORDER BY base_id, tid").fetchall():
        tid = row["tid"]
        counts = conn.execute(
            "SELECT COUNT(*) AS total, SUM(fields IS NOT NULL) AS visible, SUM(remote IS NULL) AS local_only"
            " FROM records WHERE tid = ?",
            (tid,),
        ).fetchone()
        queue = {state: 0 for state in ("pending", "inflight", "dead")}
        for state, n in conn.execute("SELECT state, COUNT(*) FROM outbox WHERE tid = ? GROUP BY state", (tid,)):
            queue[state] = n
        oldest = conn.execute(
            "SELECT MIN(created_at) FROM outbox WHERE tid = ? AND state != 'dead'", (tid,)
        ).fetchone()[0]
        pulled_at = row["pulled_at"]
        age = None if pulled_at is None else max(0.0, now - pulled_at)
        tables.append({
            "base_id": row["base_id"],
            "table": _table_label(row),
            "table_id": row["table_id"],
            "records": counts["visible"] or 0,
            "local_only": counts["local_only"] or 0,
            "last_pull": pulled_at,
            "age": age,
            "max_age": settings.max_age,
            "fresh": TableState(pulled_at, settings.max_age).is_fresh(now),
            "pending": queue["pending"] + queue["inflight"],
            "inflight": queue["inflight"],
            "dead": queue["dead"],
            "oldest_pending": oldest,
            "oldest_pending_age": None if oldest is None else max(0.0, now - oldest),
            **refresh_status(conn, tid, json.loads(row["schema_json"]) if row["schema_json"] else None, settings, now),
        })
    bases: dict[str, dict] = {}
    for base_id in sorted({t["base_id"] for t in tables}
                          | {r[0] for r in conn.execute("SELECT DISTINCT base_id FROM sync_log WHERE at >= ?", (now - 3600,))}):
        sent, limited = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(status = 429), 0) FROM sync_log WHERE base_id = ? AND at >= ?",
            (base_id, now - 3600),
        ).fetchone()
        bases[base_id] = {"requests_last_hour": sent, "rate_limited_last_hour": limited}
    return {
        "path": str(store.path),
        "schema_version": store.version(),
        "bytes": sum(_file_size(p) for p in _db_files(store.path)),
        "mode": settings.mode,
        "tables": tables,
        "bases": bases,
        "queue": {
            "pending": sum(t["pending"] for t in tables),
            "dead": sum(t["dead"] for t in tables),
        },
    }


# -- backup and restore ------------------------------------------------------------------------------


def backup_dir_for(db_path: str | os.PathLike) -> Path:
    """Where backups go by default: ``backups/`` beside the database file."""
    return Path(db_path).parent / "backups"


def _backup_prefix(db_path: Path) -> str:
    return db_path.stem + "-"


def list_backups(db_path: str | os.PathLike, directory: str | os.PathLike | None = None) -> list[Path]:
    """The backups of ``db_path`` in ``directory``, oldest first (names sort by time)."""
    db_path = Path(db_path)
    directory = Path(directory) if directory is not None else backup_dir_for(db_path)
    if not directory.is_dir():
        return []
    prefix = _backup_prefix(db_path)
    return sorted(p for p in directory.iterdir()
                  if p.name.startswith(prefix) and p.name.endswith(BACKUP_SUFFIX) and p.is_file())


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
    target = Path(to) if to is not None else backup_dir_for(db_path)
    if (target.suffix in (".sqlite3", ".db", ".sqlite") or target.is_file()) and not target.is_dir():
        directory, dest = target.parent, target
    else:
        directory = target
        dest = directory / f"{_backup_prefix(db_path)}{_utc_stamp(now)}{BACKUP_SUFFIX}"
    safety.check_backup_target(db_path, dest, force=force)
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(directory, 0o700)
    _copy_database(db_path, dest)
    if keep is not None and dest.parent == directory and dest.name.startswith(_backup_prefix(db_path)):
        for old in list_backups(db_path, directory)[:-keep]:
            if old != dest:
                old.unlink(missing_ok=True)
    return dest


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


def _queued_seqs(path: Path) -> tuple[set[int], int]:
    conn = _raw_connect(path)
    try:
        seqs = {r[0] for r in conn.execute("SELECT seq FROM outbox")}
        top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        with contextlib.suppress(sqlite3.Error):
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            if row:
                top = max(top, row[0])
        return seqs, top
    finally:
        conn.close()


def _bases_of(path: Path) -> set[str]:
    """The flush-lock keys of the bases in a database file (a base of one endpoint each)."""
    from airtable_cached.sync.locks import flush_key

    conn = _raw_connect(path)
    try:
        try:
            return {flush_key(r[0], r[1]) for r in conn.execute("SELECT endpoint, base_id FROM tables")}
        except sqlite3.OperationalError:  # a file from before the cache was keyed by endpoint
            return {r[0] for r in conn.execute("SELECT base_id FROM tables UNION SELECT base_id FROM outbox")}
    except sqlite3.Error:
        return set()
    finally:
        conn.close()


@contextlib.contextmanager
def _hold_flush_locks(settings: Settings, bases: Iterable[str]) -> Iterator[None]:
    """Take every base's flush lock without waiting; refuse if a flusher holds one."""
    import diskcache

    from airtable_cached.ops.safety import private_locks_dir
    from airtable_cached.sync.locks import FlushLocks

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
    if not source.is_file():
        raise MaintenanceError(f"no backup at {source}")
    try:
        safety.require_cache_database(source)
    except safety.SafetyError as exc:
        raise RestoreRefused(str(exc)) from None
    problems = [f for f in check(source, thorough=True, permissions=False) if f.severity == "error"]
    if problems:
        raise RestoreRefused(f"{source} fails check: " + "; ".join(f.message for f in problems))
    db_path = settings.path
    result = RestoreResult(restored_from=str(source), database=str(db_path), replaced_kept_at=None)
    backup_seqs, _ = _queued_seqs(source)
    bases = _bases_of(source) | (_bases_of(db_path) if db_path.exists() else set())
    with _hold_flush_locks(settings, bases):
        if db_path.exists():
            live_seqs, live_top = _queued_seqs(db_path)
            result.writes_lost = sorted(live_seqs - backup_seqs)
            result.writes_resent = sorted(s for s in backup_seqs - live_seqs if s <= live_top)
            aside = db_path.with_name(f"{db_path.name}.replaced-{_utc_stamp(now)}")
            _copy_database(db_path, aside)
            result.replaced_kept_at = str(aside)
        else:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            _create_private(db_path)
        src = _raw_connect(source)
        live = _raw_connect(db_path)
        try:
            live.execute("PRAGMA journal_mode = WAL")
            src.backup(live)
            live.execute("PRAGMA journal_mode = WAL")
            live.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            result.pending = live.execute("SELECT COUNT(*) FROM outbox WHERE state != 'dead'").fetchone()[0]
        finally:
            live.close()
            src.close()
    for p in _db_files(db_path):
        with contextlib.suppress(OSError):
            os.chmod(p, 0o600)
    return result


# -- check -------------------------------------------------------------------------------------------


@dataclass
class Finding:
    severity: str  # info | warning | error
    code: str
    message: str
    fixed: bool = False
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def exit_code(findings: list[Finding], *, fail_on: str = "warning") -> int:
    """0 healthy, 1 warnings, 2 errors (repaired findings do not count). With ``fail_on='error'``
    warnings exit 0, for health checks that should only fail on damage."""
    open_ = [f for f in findings if not f.fixed]
    if any(f.severity == "error" for f in open_):
        return 2
    if fail_on == "warning" and any(f.severity == "warning" for f in open_):
        return 1
    return 0


def _mode_findings(paths: Iterable[Path], what: str, fix: bool) -> list[Finding]:
    found = []
    for p in paths:
        try:
            mode = stat.S_IMODE(p.stat().st_mode)
        except OSError:
            continue
        if not mode & 0o077:
            continue
        world = bool(mode & 0o007)
        finding = Finding(
            "error" if world else "warning",
            "permissions",
            f"{what} {p} is {'world' if world else 'group'}-accessible (mode {mode:04o}); it should be 0600",
            detail={"path": str(p), "mode": f"{mode:04o}"},
        )
        if fix:
            with contextlib.suppress(OSError):
                os.chmod(p, 0o600)
                finding.fixed = True
        found.append(finding)
    return found


def check(store_or_path: Store | str | os.PathLike, fix: bool = False, *, thorough: bool = True,
          permissions: bool = True, backup_dir: str | os.PathLike | None = None,
          now: float | None = None, claim_grace: float = STALE_CLAIM_GRACE) -> list[Finding]:
    """Check a database file: integrity (``PRAGMA integrity_check``, or ``quick_check`` when not
    ``thorough``), schema version, queue consistency and file permissions (database and backups).

    ``fix=True`` repairs what is safe: permissions to 0600, an older schema migrated, writes naming a
    provisional id that nothing will ever create moved to the dead letters (kept, visible, droppable),
    writes naming an already mapped provisional id rewritten, long-expired claims of updates and
    deletes released. Never repaired: corruption, a newer schema.
    """
    path = store_or_path.path if isinstance(store_or_path, Store) else Path(store_or_path)
    now = time.time() if now is None else now
    findings: list[Finding] = []
    if not path.exists():
        return [Finding("error", "missing", f"no database at {path}")]
    if permissions:
        findings += _mode_findings([p for p in _db_files(path) if p.exists()], "database file", fix)
        directory = Path(backup_dir) if backup_dir is not None else backup_dir_for(path)
        findings += _mode_findings(list_backups(path, directory), "backup", fix)
        findings += safety.locks_findings(path, fix)
    try:
        conn = _raw_connect(path, timeout=10)
    except sqlite3.Error as exc:
        return findings + [Finding("error", "unreadable", f"{path} cannot be opened: {exc}")]
    try:
        findings += _check_integrity(conn, path, thorough)
        if any(f.code in ("corrupt", "not-a-database") for f in findings):
            return findings
        version_findings = _check_version(conn, path, fix)
        findings += version_findings
        if any(f.severity == "error" and not f.fixed for f in version_findings):
            return findings
        findings += safety.readable_findings(conn, path)  # what agents' reads and the flush parse
        findings += safety.checksum_findings(conn, fix)
        if not any(f.code == "unreadable" for f in findings):
            findings += _check_queue(conn, path, fix, now, claim_grace)
    finally:
        conn.close()
    return findings


def _check_integrity(conn: sqlite3.Connection, path: Path, thorough: bool) -> list[Finding]:
    pragma = "integrity_check" if thorough else "quick_check"
    try:
        rows = [r[0] for r in conn.execute(f"PRAGMA {pragma}(100)")]
    except sqlite3.DatabaseError as exc:
        return [Finding("error", "not-a-database" if "not a database" in str(exc) else "corrupt",
                        f"{path} is damaged: {exc}; restore a backup (airtable-cached restore)")]
    if rows != ["ok"]:
        return [Finding("error", "corrupt", f"{path} failed {pragma}: " + "; ".join(rows[:5]),
                        detail={"problems": rows})]
    return []


def _check_version(conn: sqlite3.Connection, path: Path, fix: bool) -> list[Finding]:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = {"tables", "records", "outbox", "id_map", "sync_log", "stats"} - names
        if missing:
            return [Finding("error", "schema", f"{path} says schema version {version} but lacks tables: "
                            + ", ".join(sorted(missing)))]
        return []
    if version > SCHEMA_VERSION:
        return [Finding("error", "schema-version",
                        f"{path} has schema version {version}, newer than this airtable_cached understands "
                        f"({SCHEMA_VERSION}); upgrade airtable_cached",
                        detail={"found": version, "expected": SCHEMA_VERSION})]
    finding = Finding("warning", "schema-version",
                      f"{path} has schema version {version}, older than {SCHEMA_VERSION}; it is migrated when opened",
                      detail={"found": version, "expected": SCHEMA_VERSION})
    if fix:
        Store(path).close()
        finding.fixed = True
    return [finding]


def _check_queue(conn: sqlite3.Connection, path: Path, fix: bool, now: float, grace: float) -> list[Finding]:
    findings: list[Finding] = []
    rows = conn.execute("SELECT * FROM outbox ORDER BY seq").fetchall()
    mapped = {r[0]: r[1] for r in conn.execute("SELECT provisional, real FROM id_map")}
    created = {(r["tid"], r["record_id"]) for r in rows if r["op"] == "create"}
    created_ids = {rid for (_tid, rid) in created}
    orphans, remappable, stale = [], [], []
    for row in rows:
        rid = row["record_id"]
        try:
            fields = json.loads(row["fields"]) if row["fields"] else None
        except ValueError:
            fields = None  # garbled: reported by safety.readable_findings
        if is_provisional(rid) and row["op"] != "create":
            if rid in mapped:
                remappable.append(row)
            elif (row["tid"], rid) not in created and row["state"] != "dead":
                orphans.append((row, rid))
        missing_links = {p for p in referenced_provisional_ids(fields) if p not in mapped and p not in created_ids}
        if missing_links and row["state"] != "dead" and not any(o[0]["seq"] == row["seq"] for o in orphans):
            orphans.append((row, sorted(missing_links)[0]))
        if row["state"] == "inflight" and (row["claimed_until"] or 0) < now - grace:
            stale.append(row)
    if orphans:
        seqs = [r["seq"] for r, _ in orphans]
        finding = Finding(
            "error", "queue-orphan",
            f"{len(orphans)} queued write(s) name a provisional id that no queued create or id map entry "
            f"explains (seq {', '.join(map(str, seqs[:10]))}); they can never be sent",
            detail={"seqs": seqs, "ids": sorted({str(p) for _, p in orphans})},
        )
        if fix:
            error = {"status": None, "body": {"error": {"type": "ORPHANED_WRITE",
                                                        "message": "names a provisional id nothing will create"}}}
            # Opening the engine may open (and migrate) the file through a second connection: done
            # before this one takes the write lock, or it would wait on it for busy_timeout.
            recompute = _recomputer(path)
            conn.execute("BEGIN IMMEDIATE")
            try:
                outbox.dead_letter(conn, seqs, error=error)
                recompute(conn, {(r["tid"], r["record_id"]) for r, _ in orphans})
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            finding.fixed = True
        findings.append(finding)
    if remappable:
        finding = Finding("warning", "queue-unmapped",
                          f"{len(remappable)} queued write(s) still name a provisional id Airtable already replaced",
                          detail={"seqs": [r["seq"] for r in remappable]})
        if fix:
            conn.execute("BEGIN IMMEDIATE")
            for row in remappable:
                checksum.rewrite(conn, row["seq"], record_id=mapped[row["record_id"]])
            conn.execute("COMMIT")
            finding.fixed = True
        findings.append(finding)
    if stale:
        finding = Finding("warning", "queue-stale-claim",
                          f"{len(stale)} write(s) claimed by a flusher whose claim expired over {grace:g} s ago "
                          f"(the next flush re-sends them; creates are reconciled first)",
                          detail={"seqs": [r["seq"] for r in stale]})
        if fix:
            releasable = [r["seq"] for r in stale if r["op"] != "create"]  # a create keeps its "uncertain" mark
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE outbox SET state = 'pending', claimed_until = NULL WHERE seq = ? AND state = 'inflight'",
                             [(s,) for s in releasable])
            conn.execute("COMMIT")
            finding.fixed = len(releasable) == len(stale)
        findings.append(finding)
    dead = [r for r in rows if r["state"] == "dead"]
    if dead:
        findings.append(Finding("warning", "queue-dead",
                                f"{len(dead)} dead-lettered write(s): see `airtable-cached queue list`, "
                                f"then `queue retry` or `queue drop`",
                                detail={"seqs": [r["seq"] for r in dead]}))
    unknown = conn.execute("SELECT COUNT(*) FROM outbox WHERE tid NOT IN (SELECT tid FROM tables)").fetchone()[0]
    if unknown:
        findings.append(Finding("error", "queue-table", f"{unknown} queued write(s) belong to no known table"))
    return findings


def _recomputer(path: Path) -> Callable[[sqlite3.Connection, Iterable[tuple[int, str]]], None]:
    """Rebuilds what reads see for records, on the connection it is given."""
    from airtable_cached.engine import Engine

    engine = Engine(_store(path), Settings.from_env(path=path))

    def recompute(conn: sqlite3.Connection, keys: Iterable[tuple[int, str]]) -> None:
        for tid, rid in keys:
            engine.recompute(conn, tid, [rid])

    return recompute


# -- statistics --------------------------------------------------------------------------------------

LOCAL_KINDS = ("list.local", "list.page", "get.local")
#: A read that pulled its table first counts as remote (``*.pull``): it waited for Airtable.
REMOTE_KINDS = ("list.remote", "get.remote", "list.pull", "get.pull")


def stats(store: Store) -> dict:
    """Cache hits and misses per table and kind, local vs remote reads, formula fallbacks, latency
    percentiles, requests sent (by kind and status), 429s met, bytes stored."""
    conn = store.conn
    names = {r["tid"]: (r["base_id"], _table_label(r)) for r in conn.execute("SELECT * FROM tables")}
    samples: dict[tuple[int, str], list[float]] = {}
    for tid, kind, ms in conn.execute("SELECT tid, kind, ms FROM latencies"):
        samples.setdefault((tid, kind), []).append(ms)
    for values in samples.values():
        values.sort()
    tables: dict[int, dict] = {}
    totals = {"local": 0, "remote": 0, "misses": 0, "formula_fallbacks": 0}
    for row in conn.execute("SELECT tid, kind, count, total_ms FROM stats ORDER BY tid, kind"):
        tid, kind = row["tid"], row["kind"]
        base_id, label = names.get(tid, ("?", f"tid {tid}"))
        entry = tables.setdefault(tid, {"base_id": base_id, "table": label, "kinds": {},
                                        "local": 0, "remote": 0, "misses": 0, "formula_fallbacks": 0})
        values = samples.get((tid, kind), [])
        entry["kinds"][kind] = {
            "count": row["count"],
            "mean_ms": round(row["total_ms"] / row["count"], 3) if row["count"] else None,
            "p50_ms": _percentile(values, 0.50),
            "p95_ms": _percentile(values, 0.95),
        }
        if kind in LOCAL_KINDS:
            entry["local"] += row["count"]
        elif kind in REMOTE_KINDS:
            entry["remote"] += row["count"]
        elif kind == "get.miss":
            entry["misses"] += row["count"]
        elif kind == "formula.fallback":
            entry["formula_fallbacks"] += row["count"]
    for entry in tables.values():
        reads = entry["local"] + entry["remote"] + entry["misses"]
        entry["hits"] = entry["local"]
        entry["hit_ratio"] = round(entry["local"] / reads, 4) if reads else None
        for key in totals:
            totals[key] += entry[key]
    by_kind: dict[str, dict] = {}
    merged: dict[str, list[float]] = {}
    for (_tid, kind), values in samples.items():
        merged.setdefault(kind, []).extend(values)
    for kind, values in merged.items():
        values.sort()
        by_kind[kind] = {"samples": len(values), "p50_ms": _percentile(values, 0.5), "p95_ms": _percentile(values, 0.95)}
    requests: dict[str, dict[str, int]] = {}
    for kind, status_, n in conn.execute("SELECT kind, status, COUNT(*) FROM sync_log GROUP BY kind, status"):
        requests.setdefault(kind, {})[str(status_) if status_ is not None else "network-error"] = n
    sent = conn.execute("SELECT COUNT(*) FROM sync_log").fetchone()[0]
    limited = conn.execute("SELECT COUNT(*) FROM sync_log WHERE status = 429").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    freelist = conn.execute("PRAGMA freelist_count").fetchone()[0]
    record_bytes = conn.execute(
        "SELECT COALESCE(SUM(LENGTH(COALESCE(remote, '')) + LENGTH(COALESCE(fields, ''))), 0) FROM records"
    ).fetchone()[0]
    reads = totals["local"] + totals["remote"] + totals["misses"]
    return {
        "reads": {**totals, "hit_ratio": round(totals["local"] / reads, 4) if reads else None},
        "tables": list(tables.values()),
        "refresh": refresh_counts(conn),
        "latency": by_kind,
        "requests": {"sent": sent, "rate_limited": limited, "by_kind": requests},
        "bytes": {
            "file": sum(_file_size(p) for p in _db_files(store.path)),
            "database": page_size * page_count,
            "free": page_size * freelist,
            "records_json": record_bytes,
        },
    }


# -- reset, pull, flush ------------------------------------------------------------------------------


def _resolve_tables(conn: sqlite3.Connection, table: str | None) -> list[int]:
    """``None``: every table. Else ``BASE/TABLE`` or a bare table name or id (unique across bases)."""
    if table is None:
        return [r[0] for r in conn.execute("SELECT tid FROM tables ORDER BY tid")]
    if "/" in table:
        base_id, alias = table.split("/", 1)
        rows = conn.execute("SELECT tid FROM table_aliases WHERE base_id = ? AND alias = ?", (base_id, alias)).fetchall()
    else:
        rows = conn.execute("SELECT DISTINCT tid FROM table_aliases WHERE alias = ?", (table,)).fetchall()
    tids = sorted({r[0] for r in rows})
    if not tids:
        raise MaintenanceError(f"no cached table {table!r}")
    if len(tids) > 1:
        raise MaintenanceError(f"{table!r} names tables in several bases; write BASE/TABLE")
    return tids


def reset(store: Store, table: str | None = None, include_queue: bool = False) -> dict:
    """Drop cached records (one table or all) so the next read pulls again.

    The queue is kept unless ``include_queue``: records with queued writes keep their rows so the
    agent still sees its own writes, and the next pull rebases them. Table names, ids and aliases
    are kept; the cached schema is dropped (the next pull fetches it again).
    """
    with store.transaction() as conn:
        tids = _resolve_tables(conn, table)
        result = {"tables": len(tids), "records": 0, "writes": 0}
        for tid in tids:
            if include_queue:
                result["writes"] += conn.execute("DELETE FROM outbox WHERE tid = ?", (tid,)).rowcount
                conn.execute("DELETE FROM id_map WHERE tid = ?", (tid,))
                result["records"] += conn.execute("DELETE FROM records WHERE tid = ?", (tid,)).rowcount
            else:
                result["records"] += conn.execute(
                    "DELETE FROM records WHERE tid = ? AND id NOT IN (SELECT record_id FROM outbox WHERE tid = ?)",
                    (tid, tid),
                ).rowcount
            conn.execute("DELETE FROM view_members WHERE tid = ?", (tid,))
            conn.execute("DELETE FROM views WHERE tid = ?", (tid,))
            conn.execute("UPDATE tables SET pulled_at = NULL, schema_json = NULL, generation = generation + 1 WHERE tid = ?",
                         (tid,))
    return result


def _sync(store: Store, settings: Settings, token: str, clock: Callable[[], float] | None = None,
          sleep: Callable[[float], None] | None = None):
    from airtable_cached.engine import Engine
    from airtable_cached.sync.core import Sync

    if not token:
        raise MaintenanceError("no Airtable token: pass --token or set AIRTABLE_API_KEY")
    settings = settings.replace(flush="manual")
    engine = Engine(store, settings, clock=clock or time.time)
    sync = Sync(engine, token, clock=clock or time.time, sleep=sleep or time.sleep)
    engine.sync = sync
    return sync


def _table_ref(row: sqlite3.Row) -> str:
    return row["table_id"] or row["name"]


def pull(store: Store, settings: Settings, token: str, base: str | None = None, table: str | None = None,
         *, force: bool = False, on_page: Callable[[str, int], None] | None = None,
         clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None) -> list[dict]:
    """Pull tables into the cache: one table, every table of a base (those cached, or all of the
    base's tables when its schema can be read), or every cached table. Fresh tables are skipped
    unless ``force``. ``on_page(table, records)`` is called per page received (for progress bars)."""
    sync = _sync(store, settings, token, clock, sleep)
    now = sync.remote.clock()
    targets: list[tuple[str, str]] = []
    conn = store.conn
    if base and table:
        targets = [(base, table)]
    else:
        sql = "SELECT * FROM tables" + (" WHERE base_id = ?" if base else "") + " ORDER BY base_id, tid"
        targets = [(r["base_id"], _table_ref(r)) for r in conn.execute(sql, (base,) if base else ()) if _table_ref(r)]
        if base and not targets:
            body = sync.remote.send(base, "GET", settings.endpoint_url + f"/v0/meta/bases/{base}/tables", kind="schema")
            targets = [(base, t["id"]) for t in body.get("tables", [])]
    if on_page is not None:
        original = sync.remote.send

        def counting_send(base_id, method, url, *, kind, **kwargs):
            answer = original(base_id, method, url, kind=kind, **kwargs)
            if kind == "pull" and isinstance(answer, dict):
                on_page(url.rsplit("/", 1)[-1], len(answer.get("records", [])))
            return answer

        sync.remote.send = counting_send
    results = []
    for base_id, ref in targets:
        info = sync.engine.table_info(base_id, ref)
        if TableState(info.pulled_at, settings.max_age).is_fresh(now) and not force:
            results.append({"base_id": base_id, "table": info.name or ref, "pulled": False, "records": None})
            continue
        if force:
            count, kind = sync.pull(base_id, ref), "full"
        else:  # only what changed since the table's watermark, when that is enough
            refreshed = sync.refresh(base_id, ref)
            count, kind = refreshed.changed, refreshed.kind
        info = sync.engine.table_info(base_id, ref)
        results.append({"base_id": base_id, "table": info.name or ref, "pulled": True, "records": count, "kind": kind})
    return results


def flush(store: Store, settings: Settings, token: str, base: str | None = None, *,
          clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None):
    """Push the queued writes now; returns the :class:`~airtable_cached.sync.core.FlushResult`."""
    return _sync(store, settings, token, clock, sleep).flush(base)


def reseed(store: Store, settings: Settings, token: str, table: str | None = None, *,
           include_queue: bool = False, on_page: Callable[[str, int], None] | None = None,
           clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None) -> dict:
    """Reset (one table or all), then pull again."""
    if not token:
        raise MaintenanceError("no Airtable token: pass --token or set AIRTABLE_API_KEY")
    conn = store.conn
    rows = [conn.execute("SELECT * FROM tables WHERE tid = ?", (tid,)).fetchone() for tid in _resolve_tables(conn, table)]
    targets = [(r["base_id"], _table_ref(r)) for r in rows if _table_ref(r)]
    dropped = reset(store, table, include_queue=include_queue)
    pulled = []
    for base_id, ref in targets:
        pulled += pull(store, settings, token, base_id, ref, force=True, on_page=on_page, clock=clock, sleep=sleep)
    return {"reset": dropped, "pulled": pulled}


# -- vacuum ------------------------------------------------------------------------------------------


def vacuum(store: Store, keep_log_days: float = 30.0, *, now: float | None = None) -> dict:
    """Prune the sync log and the conflict log older than ``keep_log_days``, keep the newest latency
    samples, then compact the file (``VACUUM``) and truncate the WAL."""
    now = time.time() if now is None else now
    cutoff = now - keep_log_days * 86400
    before = sum(_file_size(p) for p in _db_files(store.path))
    with store.transaction() as conn:
        log_rows = conn.execute("DELETE FROM sync_log WHERE at < ?", (cutoff,)).rowcount
        conflict_rows = conn.execute("DELETE FROM conflicts WHERE at < ?", (cutoff,)).rowcount
        latency_rows = conn.execute(_TRIM_LATENCIES, (KEEP_LATENCY_SAMPLES,)).rowcount
    conn = store.conn
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    after = sum(_file_size(p) for p in _db_files(store.path))
    return {"sync_log_pruned": log_rows, "conflicts_pruned": conflict_rows, "latencies_pruned": latency_rows,
            "bytes_before": before, "bytes_after": after}


def prune_logs(store: Store, keep_log_days: float, *, now: float | None = None) -> int:
    """Only the pruning part of :func:`vacuum` (cheap enough to run daily from the sync process)."""
    cutoff = (time.time() if now is None else now) - keep_log_days * 86400
    with store.transaction() as conn:
        pruned = conn.execute("DELETE FROM sync_log WHERE at < ?", (cutoff,)).rowcount
        conn.execute(_TRIM_LATENCIES, (KEEP_LATENCY_SAMPLES,))
        return pruned


_TRIM_LATENCIES = (
    "DELETE FROM latencies WHERE rowid IN (SELECT rowid FROM ("
    " SELECT rowid, ROW_NUMBER() OVER (PARTITION BY tid, kind ORDER BY rowid DESC) AS n FROM latencies"
    ") WHERE n > ?)"
)


# -- the queue ---------------------------------------------------------------------------------------


def queue_list(store: Store, *, base: str | None = None, state: str | None = None) -> list[dict]:
    """Queued and dead-lettered writes, oldest first, with attempts, last error and claim."""
    states = (state,) if state else ("pending", "inflight", "dead")
    conn = store.conn
    extra = {r["seq"]: r for r in conn.execute("SELECT seq, next_attempt_at, claimed_until FROM outbox")}
    items = []
    for op in outbox.list_ops(conn, base_id=base, states=states):
        item = op.as_dict()
        item["next_attempt_at"] = extra[op.seq]["next_attempt_at"] if op.seq in extra else None
        item["claimed_until"] = op.claimed_until
        items.append(item)
    return items


def _affected(conn: sqlite3.Connection, seqs: list[int]) -> set[tuple[int, str]]:
    if not seqs:
        return set()
    marks = ",".join("?" * len(seqs))
    return {(r[0], r[1]) for r in conn.execute(f"SELECT tid, record_id FROM outbox WHERE seq IN ({marks})", seqs)}


def _engine(store: Store):
    from airtable_cached.engine import Engine

    return Engine(store, Settings.from_env(path=store.path))


def _existing_seqs(conn: sqlite3.Connection, ids: Iterable[int]) -> list[int]:
    """The given queue ids, sorted; an error naming any that is not in the queue."""
    wanted = sorted(set(int(i) for i in ids))
    known = {r[0] for r in conn.execute("SELECT seq FROM outbox")}
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise MaintenanceError(f"no queued write with id {', '.join(map(str, unknown))}")
    return wanted


def queue_retry(store: Store, ids: Iterable[int] | None = None) -> dict:
    """Put dead-lettered writes back in the queue (``None``: all of them) and make waiting ones
    due now. Reads see the retried writes again at once. Returns the seqs touched."""
    engine = _engine(store)
    with store.transaction() as conn:
        if ids is None:
            wanted = [r[0] for r in conn.execute("SELECT seq FROM outbox WHERE state = 'dead' ORDER BY seq")]
        else:
            wanted = _existing_seqs(conn, ids)
        dead = [r[0] for r in conn.execute(
            f"SELECT seq FROM outbox WHERE state = 'dead' AND seq IN ({','.join('?' * len(wanted))})", wanted)] if wanted else []
        outbox.requeue(conn, dead)
        waiting = [s for s in wanted if s not in dead]
        conn.executemany("UPDATE outbox SET next_attempt_at = 0 WHERE seq = ? AND state = 'pending'",
                         [(s,) for s in waiting])
        for tid, rid in _affected(conn, dead):
            engine.recompute(conn, tid, [rid])
    return {"requeued": dead, "due_now": waiting}


def queue_drop(store: Store, ids: Iterable[int] | None = None, *, include_pending: bool = False,
               now: float | None = None) -> dict:
    """Remove writes from the queue for good (``None``: every dead-lettered write, and with
    ``include_pending`` every write). Dropping a create drops the later writes to the same record.
    Writes a live flusher has claimed are refused. The affected records' views are recomputed in
    the same transaction, so reads stop seeing the dropped writes at once."""
    now = time.time() if now is None else now
    engine = _engine(store)
    with store.transaction() as conn:
        if ids is None:
            sql = "SELECT seq FROM outbox" + ("" if include_pending else " WHERE state = 'dead'")
            wanted = [r[0] for r in conn.execute(sql)]
        else:
            wanted = _existing_seqs(conn, ids)
        if not wanted:
            return {"dropped": [], "records": []}
        marks = ",".join("?" * len(wanted))
        busy = [r[0] for r in conn.execute(
            f"SELECT seq FROM outbox WHERE seq IN ({marks}) AND state = 'inflight' AND claimed_until >= ?", [*wanted, now])]
        if busy:
            raise MaintenanceError(
                f"write(s) {', '.join(map(str, busy))} are being sent by a flusher right now; try again later")
        # A dropped create takes the later writes to the same record with it.
        creates = conn.execute(f"SELECT tid, record_id, seq FROM outbox WHERE seq IN ({marks}) AND op = 'create'",
                               wanted).fetchall()
        drop = set(wanted)
        for tid, rid, seq in creates:
            drop |= {r[0] for r in conn.execute(
                "SELECT seq FROM outbox WHERE tid = ? AND record_id = ? AND seq > ?", (tid, rid, seq))}
        drop_list = sorted(drop)
        affected = _affected(conn, drop_list)
        outbox.ack(conn, drop_list)
        for tid, rid in affected:
            left = conn.execute("SELECT 1 FROM outbox WHERE tid = ? AND record_id = ? LIMIT 1", (tid, rid)).fetchone()
            if left is None:
                # A record that was only ever local and has no write left: nothing will create it.
                conn.execute("DELETE FROM records WHERE tid = ? AND id = ? AND remote IS NULL", (tid, rid))
            engine.recompute(conn, tid, [rid])
    return {"dropped": drop_list, "records": sorted(rid for _tid, rid in affected)}
