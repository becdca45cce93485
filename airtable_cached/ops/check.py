"""``check``: integrity, schema version, what agents read, the queue, and file permissions.

``check`` opens the file with a plain connection (:mod:`airtable_cached.store.sqlite.files`), never
as a :class:`~airtable_cached.store.sqlite.Store`: a damaged or older file is reported as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from airtable_cached.ops import safety
from airtable_cached.ops.backup_files import backup_dir_for, list_backups
from airtable_cached.ops.findings import Finding
from airtable_cached.rules.records import is_provisional, referenced_provisional_ids
from airtable_cached.store.sqlite import SCHEMA_VERSION, Store, files
from airtable_cached.store.sqlite.connection import SqliteUnit
from airtable_cached.store.sqlite.outbox import SqliteOutbox

#: An inflight claim expired longer ago than this is reported by ``check``.
STALE_CLAIM_GRACE = 600.0
#: The tables a file of the current schema version must have.
REQUIRED_TABLES = frozenset({"tables", "records", "outbox", "id_map", "sync_log", "stats"})


def _store(store_or_path: Store | str | os.PathLike) -> Store:
    if isinstance(store_or_path, Store):
        return store_or_path
    from airtable_cached.runtime import open_store

    store = open_store(store_or_path)  # a path: always a SQLite file
    assert isinstance(store, Store)
    return store


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
    if not path.exists():
        return [Finding("error", "missing", f"no database at {path}")]
    findings = _permission_findings(path, backup_dir, fix) if permissions else []
    try:
        conn = files.raw_connect(path, timeout=10)
    except sqlite3.Error as exc:
        return findings + [Finding("error", "unreadable", f"{path} cannot be opened: {exc}")]
    try:
        return _check_content(conn, path, findings, fix, thorough, now, claim_grace)
    finally:
        conn.close()


def _check_content(conn: sqlite3.Connection, path: Path, findings: list[Finding], fix: bool, thorough: bool,
                   now: float, claim_grace: float) -> list[Finding]:
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
    return findings


# -- permissions ---------------------------------------------------------------------------------------


def _permission_findings(path: Path, backup_dir: str | os.PathLike | None, fix: bool) -> list[Finding]:
    """The database files, the backups and the locks folder: private to their owner."""
    directory = Path(backup_dir) if backup_dir is not None else backup_dir_for(path)
    return (_mode_findings([p for p in files.db_files(path) if p.exists()], "database file", fix)
            + _mode_findings(list_backups(path, directory), "backup", fix)
            + safety.locks_findings(path, fix))


def _mode_findings(paths: Iterable[Path], what: str, fix: bool) -> list[Finding]:
    found = []
    for p in paths:
        try:
            mode = stat.S_IMODE(p.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            found.append(_mode_finding(p, mode, what, fix))
    return found


def _mode_finding(p: Path, mode: int, what: str, fix: bool) -> Finding:
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
    return finding


# -- integrity and schema ------------------------------------------------------------------------------


def _check_integrity(conn: sqlite3.Connection, path: Path, thorough: bool) -> list[Finding]:
    pragma = "integrity_check" if thorough else "quick_check"
    try:
        rows = files.integrity_problems(conn, thorough)
    except sqlite3.DatabaseError as exc:
        return [Finding("error", "not-a-database" if "not a database" in str(exc) else "corrupt",
                        f"{path} is damaged: {exc}; restore a backup (airtable-cached restore)")]
    if rows != ["ok"]:
        return [Finding("error", "corrupt", f"{path} failed {pragma}: " + "; ".join(rows[:5]),
                        detail={"problems": rows})]
    return []


def _check_version(conn: sqlite3.Connection, path: Path, fix: bool) -> list[Finding]:
    version = files.schema_version(conn)
    if version == SCHEMA_VERSION:
        missing = REQUIRED_TABLES - files.table_names(conn)
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
        _store(path).close()  # opening the file migrates it
        finding.fixed = True
    return [finding]


# -- the queue -----------------------------------------------------------------------------------------


def _check_queue(conn: sqlite3.Connection, path: Path, fix: bool, now: float, grace: float) -> list[Finding]:
    queue = SqliteOutbox(conn)
    rows = queue.stored_writes()
    mapped = queue.id_map()
    orphans, remappable, stale = _classify_writes(rows, mapped, now, grace)
    findings: list[Finding] = []
    if orphans:
        findings.append(_orphan_finding(conn, path, orphans, fix))
    if remappable:
        findings.append(_unmapped_finding(conn, remappable, mapped, fix))
    if stale:
        findings.append(_stale_claim_finding(conn, stale, grace, fix))
    dead = [r for r in rows if r["state"] == "dead"]
    if dead:
        findings.append(Finding("warning", "queue-dead",
                                f"{len(dead)} dead-lettered write(s): see `airtable-cached queue list`, "
                                f"then `queue retry` or `queue drop`",
                                detail={"seqs": [r["seq"] for r in dead]}))
    unknown = queue.count_without_table()
    if unknown:
        findings.append(Finding("error", "queue-table", f"{unknown} queued write(s) belong to no known table"))
    return findings


def _classify_writes(rows: list, mapped: dict[str, str], now: float, grace: float) -> tuple[list, list, list]:
    """The writes naming a provisional id nothing explains (with that id), those naming one already
    mapped, and those whose claim expired over ``grace`` seconds ago."""
    created = {(r["tid"], r["record_id"]) for r in rows if r["op"] == "create"}
    created_ids = {rid for (_tid, rid) in created}
    orphans: list[tuple] = []
    remappable, stale = [], []
    for row in rows:
        rid = row["record_id"]
        if is_provisional(rid) and row["op"] != "create":
            if rid in mapped:
                remappable.append(row)
            elif (row["tid"], rid) not in created and row["state"] != "dead":
                orphans.append((row, rid))
        missing_links = {p for p in referenced_provisional_ids(_fields_of(row)) if p not in mapped and p not in created_ids}
        if missing_links and row["state"] != "dead" and not any(o[0]["seq"] == row["seq"] for o in orphans):
            orphans.append((row, sorted(missing_links)[0]))
        if row["state"] == "inflight" and (row["claimed_until"] or 0) < now - grace:
            stale.append(row)
    return orphans, remappable, stale


def _fields_of(row) -> dict | None:
    try:
        return json.loads(row["fields"]) if row["fields"] else None
    except ValueError:
        return None  # garbled: reported by safety.readable_findings


def _orphan_finding(conn: sqlite3.Connection, path: Path, orphans: list[tuple], fix: bool) -> Finding:
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
        with files.write_transaction(conn):
            SqliteOutbox(conn).dead_letter(seqs, error=error)
            recompute(conn, {(r["tid"], r["record_id"]) for r, _ in orphans})
        finding.fixed = True
    return finding


def _unmapped_finding(conn: sqlite3.Connection, remappable: list, mapped: dict[str, str], fix: bool) -> Finding:
    finding = Finding("warning", "queue-unmapped",
                      f"{len(remappable)} queued write(s) still name a provisional id Airtable already replaced",
                      detail={"seqs": [r["seq"] for r in remappable]})
    if fix:
        queue = SqliteOutbox(conn)
        with files.write_transaction(conn):
            for row in remappable:
                queue.rewrite(row["seq"], record_id=mapped[row["record_id"]])
        finding.fixed = True
    return finding


def _stale_claim_finding(conn: sqlite3.Connection, stale: list, grace: float, fix: bool) -> Finding:
    finding = Finding("warning", "queue-stale-claim",
                      f"{len(stale)} write(s) claimed by a flusher whose claim expired over {grace:g} s ago "
                      f"(the next flush re-sends them; creates are reconciled first)",
                      detail={"seqs": [r["seq"] for r in stale]})
    if fix:
        releasable = [r["seq"] for r in stale if r["op"] != "create"]  # a create keeps its "uncertain" mark
        with files.write_transaction(conn):
            SqliteOutbox(conn).return_claimed(releasable)
        finding.fixed = len(releasable) == len(stale)
    return finding


def _recomputer(path: Path) -> Callable[[sqlite3.Connection, Iterable[tuple[int, str]]], None]:
    """Rebuilds what reads see for records, in a unit of work on the connection it is given."""
    from airtable_cached.runtime import local_engine

    engine = local_engine(_store(path))

    def recompute(conn: sqlite3.Connection, keys: Iterable[tuple[int, str]]) -> None:
        unit = SqliteUnit(conn)
        for tid, rid in keys:
            engine.recompute(unit, tid, [rid])

    return recompute
