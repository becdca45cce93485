"""Operating the cache: the operator commands, one module each, gathered here for one import.

* :mod:`~airtable_cached.ops.status` (``status``), :mod:`~airtable_cached.ops.stats` (``stats``);
* :mod:`~airtable_cached.ops.backup` (``backup``, ``restore``), :mod:`~airtable_cached.ops.check`
  (``check``), :mod:`~airtable_cached.ops.vacuum` (``vacuum``);
* :mod:`~airtable_cached.ops.reset` (``reset``), :mod:`~airtable_cached.ops.pull` (``pull``,
  ``flush``, ``reseed``: the ones that talk to Airtable), :mod:`~airtable_cached.ops.queue` (the
  ``queue`` commands).

Every function returns data (dataclasses and dicts) and prints nothing; the CLI
(:mod:`airtable_cached.ops.cli`) only renders what they return.
"""

from __future__ import annotations

from airtable_cached.ops.backup import (
    BACKUP_SUFFIX,
    RestoreRefused,
    RestoreResult,
    backup,
    backup_dir_for,
    list_backups,
    restore,
)
from airtable_cached.ops.check import STALE_CLAIM_GRACE, check
from airtable_cached.ops.errors import MaintenanceError
from airtable_cached.ops.findings import Finding, exit_code
from airtable_cached.ops.pull import flush, pull, reseed
from airtable_cached.ops.queue import queue_drop, queue_list, queue_retry
from airtable_cached.ops.reset import reset
from airtable_cached.ops.stats import LOCAL_KINDS, REMOTE_KINDS, stats
from airtable_cached.ops.status import status
from airtable_cached.ops.vacuum import KEEP_LATENCY_SAMPLES, prune_logs, vacuum

__all__ = [
    "BACKUP_SUFFIX",
    "KEEP_LATENCY_SAMPLES",
    "LOCAL_KINDS",
    "REMOTE_KINDS",
    "STALE_CLAIM_GRACE",
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
