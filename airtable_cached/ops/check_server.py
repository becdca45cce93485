"""``check`` on a PostgreSQL cache: the checks of ``check.py`` that are about the cache's content
(schema version, what agents read, queued writes' checksums, the queue's consistency), run through
the store's protocols; those about a SQLite file (integrity pragmas, file and locks-folder
permissions, backups beside the file) are reported as not applying (the server checks its own pages;
``pg_dump`` makes its backups).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from airtable_cached.engine.apply import recompute
from airtable_cached.ops.check import STALE_CLAIM_GRACE, _classify_writes
from airtable_cached.ops.findings import Finding

if TYPE_CHECKING:
    from airtable_cached.store.postgres import PostgresStore

#: What ``check`` does on a SQLite file only.
FILE_ONLY = ("integrity (PRAGMA integrity_check: the server checks its own pages)",
             "file and locks-folder permissions (the server's roles govern access)",
             "backup files (back a PostgreSQL cache up with pg_dump)")
#: The integrity check ``--quick`` shortens on SQLite, in its place when ``quick``.
QUICK_INTEGRITY = ("integrity (--quick: PRAGMA quick_check; nothing to shorten here, the server checks its own pages;"
                   " the content checks below ran whole)")


def check_server(store: PostgresStore, fix: bool = False, *, quick: bool = False, now: float | None = None,
                 claim_grace: float = STALE_CLAIM_GRACE) -> list[Finding]:
    """Check a PostgreSQL cache (see the module's docstring); ``fix`` repairs as ``check`` does.
    ``quick`` (``check --quick``, a container's health check) runs the same checks: what it
    shortens on SQLite, the file's integrity check, does not apply here, and the finding says so."""
    now = time.time() if now is None else now
    skipped = (QUICK_INTEGRITY, *FILE_ONLY[1:]) if quick else FILE_ONLY
    findings = [Finding("info", "not-applicable", f"not checked on PostgreSQL: {what}") for what in skipped]
    version = _version_findings(store)
    findings += version
    if any(f.severity == "error" for f in version):
        return findings
    findings += _readable_findings(store)
    findings += _checksum_findings(store, fix)
    findings += _queue_findings(store, fix, now, claim_grace)
    return findings


def _version_findings(store: PostgresStore) -> list[Finding]:
    from airtable_cached.store.postgres import SCHEMA_VERSION

    found = store.version()
    if found == SCHEMA_VERSION:
        return []
    return [Finding("error", "schema-version", f"{store.location} has schema version {found}, expected {SCHEMA_VERSION}",
                    detail={"found": found, "expected": SCHEMA_VERSION})]


def _readable_findings(store: PostgresStore) -> list[Finding]:
    bad = store.outbox.garbled()
    if not bad:
        return []
    return [Finding("error", "unreadable-writes",
                    f"{len(bad)} queued write(s) are garbled (seq {', '.join(map(str, bad[:10]))}): they cannot be sent",
                    detail={"seqs": bad})]


def _checksum_findings(store: PostgresStore, fix: bool) -> list[Finding]:
    damaged = store.outbox.damaged()
    if not damaged:
        return []
    seqs = [r["seq"] for r in damaged]
    finding = Finding("error", "queue-checksum",
                      f"{len(seqs)} queued write(s) no longer match their checksum (seq {', '.join(map(str, seqs[:10]))});"
                      " the flush dead-letters them instead of sending them (`--fix` does it now)", detail={"seqs": seqs})
    if fix:
        with store.write() as unit:
            unit.outbox.quarantine()
        finding.fixed = True
    return [finding]


def _queue_findings(store: PostgresStore, fix: bool, now: float, grace: float) -> list[Finding]:
    rows = store.outbox.stored_writes()
    orphans, remappable, stale = _classify_writes(rows, store.outbox.id_map(), now, grace)
    findings: list[Finding] = []
    if orphans:
        findings.append(_orphans(store, orphans, fix))
    if remappable:
        findings.append(_remap(store, remappable, fix))
    if stale:
        findings.append(_stale(store, stale, grace, fix))
    dead = [r["seq"] for r in rows if r["state"] == "dead"]
    if dead:
        findings.append(Finding("warning", "queue-dead", f"{len(dead)} dead-lettered write(s): see `airtable-cached queue"
                                " list`, then `queue retry` or `queue drop`", detail={"seqs": dead}))
    unknown = store.outbox.count_without_table()
    if unknown:
        findings.append(Finding("error", "queue-table", f"{unknown} queued write(s) belong to no known table"))
    return findings


def _orphans(store: PostgresStore, orphans: list[tuple], fix: bool) -> Finding:
    seqs = [r["seq"] for r, _ in orphans]
    finding = Finding("error", "queue-orphan", f"{len(orphans)} queued write(s) name a provisional id that no queued"
                      f" create or id map entry explains (seq {', '.join(map(str, seqs[:10]))}); they can never be sent",
                      detail={"seqs": seqs, "ids": sorted({str(p) for _, p in orphans})})
    if fix:
        error = {"status": None, "body": {"error": {"type": "ORPHANED_WRITE",
                                                    "message": "names a provisional id nothing will create"}}}
        with store.write() as unit:
            unit.outbox.dead_letter(seqs, error=error)
            for row, _ in orphans:
                recompute(unit, row["tid"], [row["record_id"]])
        finding.fixed = True
    return finding


def _remap(store: PostgresStore, remappable: list, fix: bool) -> Finding:
    finding = Finding("warning", "queue-unmapped", f"{len(remappable)} queued write(s) still name a provisional id"
                      " Airtable already replaced", detail={"seqs": [r["seq"] for r in remappable]})
    if fix:
        mapped = store.outbox.id_map()
        with store.write() as unit:
            for row in remappable:
                unit.outbox.rewrite(row["seq"], record_id=mapped[row["record_id"]])
        finding.fixed = True
    return finding


def _stale(store: PostgresStore, stale: list, grace: float, fix: bool) -> Finding:
    finding = Finding("warning", "queue-stale-claim", f"{len(stale)} write(s) claimed by a flusher whose claim expired"
                      f" over {grace:g} s ago (the next flush re-sends them; creates are reconciled first)",
                      detail={"seqs": [r["seq"] for r in stale]})
    if fix:
        releasable = [r["seq"] for r in stale if r["op"] != "create"]
        with store.write() as unit:
            unit.outbox.return_claimed(releasable)
        finding.fixed = len(releasable) == len(stale)
    return finding
