"""Settings: ``AIRTABLE_CACHED_*`` environment variables, each overridable by a keyword argument.

``Settings.from_env(**overrides)`` is the only constructor callers need. Every value is validated
when the settings are built, so a setting that makes no sense fails at start with a message naming
it, never later in the middle of a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from airtable_cached.errors import ConfigurationError

ENV_PREFIX = "AIRTABLE_CACHED_"

MODES = ("cache", "write-through", "passthrough", "offline")
FLUSH_MODES = ("auto", "manual")
STALE_MODES = ("refresh", "serve")
FEED_MODES = ("webhooks", "off")
#: Settings that take one of a few words.
CHOICES = {"mode": MODES, "flush": FLUSH_MODES, "stale": STALE_MODES, "feed": FEED_MODES}


def default_path() -> Path:
    """The per-user default database: ``$XDG_CACHE_HOME/airtable_cached/cache.sqlite3``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "airtable_cached" / "cache.sqlite3"


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: object) -> bool:
    """Whether a store location names a PostgreSQL database rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


@dataclass(frozen=True)
class Settings:
    #: The SQLite file holding the cache and the write queue (with a PostgreSQL ``url``: the folder
    #: beside it still holds this host's own files, such as its backups).
    path: Path
    #: Where the cache lives: a ``postgresql://`` URL selects PostgreSQL, shared by many hosts; a
    #: path (or nothing) keeps SQLite at ``path``.
    url: str | None = field(default=None, repr=False)  # may hold a password: never in a repr
    #: Seconds a table's cache is served before a read refreshes it.
    max_age: float = 300.0
    #: cache | write-through | passthrough | offline
    mode: str = "cache"
    #: auto (background thread + bounded wait at exit) | manual (only on flush())
    flush: str = "auto"
    #: The Airtable the cache syncs with.
    endpoint_url: str = "https://api.airtable.com"
    #: Seconds the interpreter waits at exit for the queue to drain (auto flush), in all.
    exit_timeout: float = 30.0
    #: Longest a write waits in the queue for others to share its request (auto flush). Longer:
    #: fewer requests (an agent writing one record every 10 s sends one PATCH per 10 records at
    #: 100 s) but Airtable, and people looking at it, see the writes that much later. Reads are
    #: not affected (they see the queue), and the wait is no risk: the queue is on disk.
    batch_delay: float = 3.0
    #: Requests per second per base, shared by every process using the cache file.
    rate_limit: float = 5.0
    #: Seconds Airtable locks a base out after a 429.
    penalty: float = 30.0
    #: Attempts per request for transient failures (429, 5xx, connection errors) within one flush.
    retries: int = 5
    #: Seconds a flusher's claim on a batch lasts before another flusher may take it over. Longer
    #: than one batch can take while retrying (5 attempts, 30 s penalties after 429s).
    claim_timeout: float = 300.0
    #: Seconds to wait for Airtable to accept a connection, and again for each answer. When it does
    #: not, reads of a cached table serve the cache (stale-if-error) and writes stay queued.
    network_timeout: float = 10.0
    #: Fields to index from the start (comma-separated in the environment).
    index_fields: tuple[str, ...] = ()
    #: A text field filtered by equality this many times gets an index of its own.
    index_after: int = 3
    #: refresh: a stale read refreshes the table first | serve: it answers from the cache at once
    #: and the refresh runs in the background.
    stale: str = "refresh"
    #: Seconds an incremental pull reaches back before its watermark (clock skew between Airtable's
    #: servers, the Date header's one-second resolution, changes landing while a pull runs).
    overlap: float = 60.0
    #: Seconds between full pulls of a table whose computed fields can change without
    #: LAST_MODIFIED_TIME() moving (lookups, rollups, counts, formulas over NOW()/TODAY()).
    full_pull_every: float = 3600.0
    #: Seconds between id sweeps (deletions found by listing ids) when there is no change feed.
    sweep_every: float = 3600.0
    #: webhooks: learn deletions and schema changes from a polled Airtable webhook per base |
    #: off: only the id sweep.
    feed: str = "webhooks"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``), then apply keyword overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = (raw, ENV_PREFIX + f.name.upper())
        for name, value in overrides.items():
            if name not in {f.name for f in fields(cls)}:
                raise ConfigurationError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = (value, name)
        if "url" in values and not is_postgres_url(values["url"][0]):
            values["path"] = values.pop("url")  # a path given as the URL: SQLite there
        if "path" not in values:
            values["path"] = (default_path(), "default path")
        return cls(**{name: _convert(name, value, source) for name, (value, source) in values.items()})

    @property
    def store_location(self) -> str:
        """What :func:`airtable_cached.runtime.open_store` opens: the URL, else the SQLite path."""
        return self.url if self.url is not None else str(self.path)

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def locks_dir(self) -> Path:
        """Folder of the cross-process locks and throttles (diskcache) beside the database."""
        return self.path.with_name(self.path.name + ".locks")


def check_token(token: Any) -> str:
    """A token that can go in an ``Authorization`` header; the error never repeats the token."""
    if not isinstance(token, str) or not token:
        raise ConfigurationError("the Airtable token must be a non-empty string")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in token):
        raise ConfigurationError(
            "the Airtable token contains whitespace or control characters (a trailing newline from a"
            " secrets file?); strip it before passing it"
        )
    return token


def _convert(name: str, value: Any, source: str) -> Any:
    def fail(why: str) -> ConfigurationError:
        return ConfigurationError(f"setting {source}={value!r} is invalid: {why}")

    if name == "path":
        return Path(os.path.expanduser(str(value)))
    if name == "url":
        if not is_postgres_url(value):
            raise fail("expected a postgresql:// URL or a path")
        return str(value)
    if name in ("max_age", "exit_timeout", "rate_limit", "penalty", "claim_timeout", "batch_delay", "network_timeout",
                "overlap", "full_pull_every", "sweep_every"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise fail("expected a number of seconds") from None
        if number < 0 or number != number:
            raise fail("must be zero or more")
        if name == "rate_limit" and number == 0:
            raise fail("must be more than zero requests per second")
        if name == "network_timeout" and not 0 < number <= 600:
            raise fail("must be more than zero and at most 600 seconds")
        return number
    if name == "index_fields":
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(item.strip() for item in items if str(item).strip())
    if name in ("retries", "index_after"):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise fail("expected a whole number") from None
        if number < 1:
            raise fail("must be at least 1")
        return number
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise fail(f"expected one of {', '.join(CHOICES[name])}")
        return value
    if name == "endpoint_url":
        text = str(value).rstrip("/")
        if not text.startswith(("http://", "https://")):
            raise fail("expected an http:// or https:// URL")
        return text
    return value
