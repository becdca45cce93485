"""Guards against damage: operator mistakes, damaged files, loose permissions.

* backup never overwrites the live database, nor an existing file unless forced;
* restore takes only an airtable_cached database;
* ``check`` reads what agents read (every cached record and queued write is parsed, as a read or a
  flush would), verifies each queued write's checksum, and looks at the locks folder's permissions;
* :func:`salvage` copies every readable queued write out of a damaged file into a fresh one (row by
  row where a whole-table read fails), so a damaged file loses only what is really unreadable;
* the locks folder beside the database is ``0700`` and its files ``0600``, like the database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airtable_cached.errors import AirtableCachedError
from airtable_cached.rules.records import is_provisional, now_iso, replay
from airtable_cached.store import checksum
from airtable_cached.store.sqlite import files
from airtable_cached.store.sqlite.outbox import SqliteOutbox
from airtable_cached.store.sqlite.replica import SqliteReplica

if TYPE_CHECKING:
    from airtable_cached.ops.findings import Finding
    from airtable_cached.store.sqlite.connection import SqliteUnit

log = logging.getLogger("airtable_cached")

#: The tables an airtable_cached database has from its first schema version.
CORE_TABLES = frozenset({"tables", "table_aliases", "records", "outbox", "id_map"})


class SafetyError(AirtableCachedError):
    """An operation was refused because it would destroy data (the message says what to do)."""


# -- locks folder ------------------------------------------------------------------------------------


def locks_findings(db_path: Path, fix: bool) -> list[Finding]:
    from airtable_cached.ops.findings import Finding

    locks_dir = db_path.with_name(db_path.name + ".locks")
    if not locks_dir.is_dir():
        return []
    found = []
    for p, wanted in [(locks_dir, 0o700), *((c, 0o600) for c in sorted(locks_dir.iterdir()) if c.is_file())]:
        mode = stat.S_IMODE(p.stat().st_mode)
        if not mode & 0o077:
            continue
        finding = Finding("error" if mode & 0o007 else "warning", "permissions",
                          f"locks {'folder' if p.is_dir() else 'file'} {p} is accessible to others (mode {mode:04o});"
                          f" it should be {wanted:04o}", detail={"path": str(p), "mode": f"{mode:04o}"})
        if fix:
            with contextlib.suppress(OSError):
                os.chmod(p, wanted)
                finding.fixed = True
        found.append(finding)
    return found


# -- backup and restore ------------------------------------------------------------------------------


def check_backup_target(db_path: Path, dest: Path, *, force: bool) -> None:
    """Refuse a backup that would overwrite the live database (always), or an existing file
    (unless ``force``): either destroys data, the first under running agents."""
    live = [db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm")]
    for p in live:
        if dest.exists() and p.exists() and os.path.samefile(dest, p) or dest.resolve() == p.resolve():
            raise SafetyError(
                f"refusing to back up into {dest}: it is the live database the agents use; name another file"
                " or a folder (`--force` does not change this)"
            )
    if dest.exists() and not force:
        raise SafetyError(f"refusing to overwrite {dest}: it exists; name a new file or a folder, or add --force")


def require_cache_database(path: Path) -> None:
    """Refuse a file that is not an airtable_cached database (empty, another application's)."""
    if path.stat().st_size == 0:
        raise SafetyError(f"{path} is empty: not an airtable_cached database, nothing to restore")
    try:
        conn = files.open_readonly(path)
    except sqlite3.Error as exc:
        raise SafetyError(f"{path} cannot be opened as a database: {exc}") from exc
    try:
        version, names = files.schema_version(conn), files.table_names(conn)
    except sqlite3.DatabaseError as exc:
        raise SafetyError(f"{path} is not a readable SQLite database: {exc}") from exc
    finally:
        conn.close()
    missing = CORE_TABLES - names
    if version < 1 or missing:
        raise SafetyError(
            f"{path} is not an airtable_cached database (schema version {version}, no "
            f"{', '.join(sorted(missing)) or 'version'}): another application's file? Nothing was changed"
        )


# -- check: what agents read, and the checksums ------------------------------------------------------


def readable_findings(conn: sqlite3.Connection, path: Path) -> list[Finding]:
    """Parse what reads and flushes parse: every cached record and every queued write."""
    from airtable_cached.ops.findings import Finding

    try:
        bad_records = SqliteReplica(conn).garbled_records()
        bad_writes = SqliteOutbox(conn).garbled()
    except sqlite3.DatabaseError as exc:
        return [Finding("error", "unreadable",
                        f"{path}: reading the cached records or the queue fails ({exc}), as agents' reads will;"
                        " copy the queue out with `airtable-cached salvage`, or restore a backup")]
    found = []
    for row in bad_records:
        found.append(Finding(
            "error", "unreadable-records",
            f"{row['n']} cached record(s) of table {row['label']} are garbled: reads of that table fail;"
            f" `airtable-cached reset --table {row['label']}` drops them (the queue is kept) and the next read pulls",
            detail={"tid": row["tid"], "records": row["n"]},
        ))
    if bad_writes:
        found.append(Finding(
            "error", "unreadable-writes",
            f"{len(bad_writes)} queued write(s) are garbled (seq {', '.join(map(str, bad_writes[:10]))}): they cannot be"
            " sent; `airtable-cached salvage` copies the readable ones into a fresh file",
            detail={"seqs": bad_writes},
        ))
    return found


def checksum_findings(conn: sqlite3.Connection, fix: bool) -> list[Finding]:
    from airtable_cached.ops.findings import Finding

    try:
        damaged = SqliteOutbox(conn).damaged()
    except sqlite3.DatabaseError:
        return []  # reported by readable_findings
    if not damaged:
        return []
    seqs = [r["seq"] for r in damaged]
    finding = Finding(
        "error", "queue-checksum",
        f"{len(seqs)} queued write(s) no longer match their checksum (seq {', '.join(map(str, seqs[:10]))}): their"
        " stored content changed on disk; the flush dead-letters them instead of sending them (`--fix` does it now)",
        detail={"seqs": seqs},
    )
    if fix:
        with files.write_transaction(conn):
            SqliteOutbox(conn).quarantine()
        finding.fixed = True
    return [finding]


# -- salvage -----------------------------------------------------------------------------------------


@dataclass
class SalvageResult:
    source: str
    database: str
    copied: list[int] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    tables: int = 0
    id_map: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def salvage(source: str | os.PathLike, dest: str | os.PathLike) -> SalvageResult:
    """Copy every readable queued write (and what they need: tables, aliases, the id map) out of a
    damaged database into a new one at ``dest``. Cached records are not copied: the next read pulls
    them again; the agent's own creates not flushed yet are rebuilt from the queue."""
    source, dest = Path(source), Path(dest)
    if not source.is_file():
        raise SafetyError(f"no database at {source}")
    if dest.exists():
        raise SafetyError(f"refusing to salvage into {dest}: it exists; name a new file")
    result = SalvageResult(source=str(source), database=str(dest))
    found = _read_damaged(source)
    result.skipped += [{"seq": rowid, "reason": "unreadable row"} for rowid in found["lost"]]
    kept = _sendable_writes(found["outbox"], result)
    _write_salvaged(dest, found, kept, result)
    files.make_private(dest)
    if result.skipped:
        log.warning("salvage: %d queued write(s) could not be copied: %s", len(result.skipped), result.skipped[:10])
    return result


def _read_damaged(source: Path) -> dict[str, list]:
    """What can still be read of the tables, aliases, id map and queue (``lost``: unreadable queue rowids)."""
    src = sqlite3.connect(str(source), isolation_level=None)
    src.row_factory = sqlite3.Row
    try:
        found: dict[str, list] = {name: files.readable_rows(src, name)[0] for name in ("tables", "table_aliases", "id_map")}
        found["outbox"], found["lost"] = files.readable_rows(src, "outbox")
        return found
    finally:
        src.close()


def _sendable_writes(writes: list[dict[str, Any]], result: SalvageResult) -> list[dict[str, Any]]:
    """The writes that can be sent as they are; the others are noted in ``result.skipped``."""
    kept = []
    for row in writes:
        reason = _unsendable(row)
        if reason:
            result.skipped.append({"seq": row["seq"], "reason": reason})
        else:
            kept.append(row)
    return kept


def _write_salvaged(dest: Path, found: dict[str, list], kept: list[dict[str, Any]], result: SalvageResult) -> None:
    """A new database at ``dest`` holding the salvaged tables and writes."""
    from airtable_cached.runtime import open_store
    from airtable_cached.store.sqlite import Store

    store = open_store(dest)
    assert isinstance(store, Store)  # a path: always a SQLite file
    try:
        with store.write() as unit:
            known = _copy_tables(unit.replica, found["tables"], found["table_aliases"])
            unit.outbox.restore_ids({r["provisional"]: (r["real"], r["tid"]) for r in found["id_map"]})
            for row in kept:
                if row["tid"] not in known:  # its table's row was lost: make one from the write itself
                    unit.replica.restore_table(row["tid"], row["base_id"], None, row["table_ref"])
                    unit.replica.add_table_aliases([(row["base_id"], row["table_ref"], row["tid"])])
                    known.add(row["tid"])
                _insert_write(unit.outbox, row)
                result.copied.append(row["seq"])
            _rebuild_local_creates(unit)
        result.tables = len(known)
        result.id_map = len(found["id_map"])
    finally:
        store.close()


def _copy_tables(replica: SqliteReplica, tables: list[dict[str, Any]], aliases: list[dict[str, Any]]) -> set[int]:
    """The salvaged tables (a garbled cached schema dropped) and their aliases; their tids."""
    for row in tables:
        replica.restore_table(row["tid"], row["base_id"], row["table_id"], row["name"],
                              row["schema_json"] if _valid_json(row["schema_json"]) else None)
    known = {row["tid"] for row in tables}
    replica.add_table_aliases((r["base_id"], r["alias"], r["tid"]) for r in aliases if r["tid"] in known)
    return known


def _unsendable(row: dict[str, Any]) -> str | None:
    if row.get("op") not in ("create", "update", "replace", "delete"):
        return "garbled operation"
    for column in ("fields", "base", "merge_on"):
        if not _valid_json(row.get(column)):
            return f"garbled {column}"
    if row.get("checksum") is not None and not checksum.intact(row):
        return "does not match its checksum"
    return None


def _valid_json(text: Any) -> bool:
    if text is None:
        return True
    try:
        json.loads(text)
    except (TypeError, ValueError):
        return False
    return True


def _insert_write(queue: SqliteOutbox, row: dict[str, Any]) -> None:
    # An inflight write's flusher is gone: its claim is expired at once (a create stays in doubt).
    queue.restore_write({**row, "claimed_until": 0.0 if row["state"] == "inflight" else row["claimed_until"]})


def _rebuild_local_creates(unit: SqliteUnit) -> None:
    """Records the agent created and that are not on Airtable yet exist only in the queue: rebuild
    them so reads show them, as before the damage."""
    queue = unit.outbox
    creates = queue.first_creates()
    for position, row in enumerate(creates, start=1_000_000_000):
        if not is_provisional(row["record_id"]):
            continue
        view = replay(None, queue.live_ops_for_record(row["tid"], row["record_id"]))
        unit.replica.insert_local_record(row["tid"], row["record_id"], position, now_iso(row["at"]), view)
