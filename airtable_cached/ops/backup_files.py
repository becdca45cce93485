"""Where backups live and how they are named: the part of ``backup`` that ``check`` reads too
(``ops/backup.py`` makes and restores them, ``ops/check.py`` checks their permissions)."""

from __future__ import annotations

import os
from pathlib import Path

BACKUP_SUFFIX = ".sqlite3"


def backup_dir_for(db_path: str | os.PathLike) -> Path:
    """Where backups go by default: ``backups/`` beside the database file."""
    return Path(db_path).parent / "backups"


def backup_prefix(db_path: Path) -> str:
    return db_path.stem + "-"


def list_backups(db_path: str | os.PathLike, directory: str | os.PathLike | None = None) -> list[Path]:
    """The backups of ``db_path`` in ``directory``, oldest first (names sort by time)."""
    db_path = Path(db_path)
    directory = Path(directory) if directory is not None else backup_dir_for(db_path)
    if not directory.is_dir():
        return []
    prefix = backup_prefix(db_path)
    return sorted(p for p in directory.iterdir()
                  if p.name.startswith(prefix) and p.name.endswith(BACKUP_SUFFIX) and p.is_file())
