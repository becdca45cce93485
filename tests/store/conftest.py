"""The storage contract suite runs every test here against every store (as requests-cache runs one
suite against every backend). A store joins by adding a factory to ``STORES``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airtable_cached.store.sqlite import Store as SqliteStore


def _sqlite(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "cache.db")


STORES: dict[str, Callable[[Path], object]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    opened = STORES[request.param](tmp_path)
    yield opened
    opened.close_all()  # type: ignore[attr-defined]
