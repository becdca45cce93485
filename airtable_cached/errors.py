"""Exceptions raised by airtable_cached.

Every exception derives from :class:`AirtableCachedError` and, where callers already catch a builtin
for the same situation, from that builtin too (as pyairtable does with ``MissingRecordError``).
"""

from __future__ import annotations

from http import HTTPStatus

from airtable_cached.rules.ids import RECORD_ID_RE


class AirtableCachedError(Exception):
    """Base class of every error raised by airtable_cached."""


class ConfigurationError(AirtableCachedError, ValueError):
    """A setting makes no sense; the message names the setting and the value."""


class StoreConnectionLost(AirtableCachedError, ConnectionError):
    """The database connection dropped inside a write (in its body, or during its commit and the
    database then said the commit was not kept): nothing of the write was kept, and it may be run
    again whole (a PostgreSQL restart or failover)."""


class StoreCommitUnknown(AirtableCachedError, ConnectionError):
    """The database connection dropped during a write's commit and the database could not be asked,
    in the time allowed, whether the commit was kept: the write may or may not have been recorded
    (``api.pending()`` lists the queued writes). Running it again could record it twice."""


class OfflineError(AirtableCachedError, ConnectionError):
    """The answer needs Airtable but the cache runs in offline mode."""


class WriteRejectedError(AirtableCachedError, TypeError, ValueError):
    """A write cannot be queued: a value is not JSON-serialisable, or fields is not a dict. Nothing
    was queued. A ``TypeError`` as plain pyairtable raises (from JSON encoding) for the same call."""


class DiskFullError(AirtableCachedError, OSError):
    """The disk holding the cache file is full: the call was not recorded (SQLite rolled it back),
    and everything committed before, the queued writes included, is intact."""


class AirtableResponseError(AirtableCachedError):
    """An answer Airtable would give with an error status, produced by the local engine.

    Front-ends turn it into what their callers expect: pyairtable's ``requests.HTTPError`` (with
    Airtable's error dict appended to ``args``) or an HTTP response with this status and body.
    """

    def __init__(self, status: int, body: dict):
        super().__init__(status, body)
        self.status = status
        self.body = body

    def __str__(self) -> str:
        return f"{self.status} {self.body!r}"

    @classmethod
    def typed(cls, status: int, type_: str, message: str | None = None) -> AirtableResponseError:
        error: dict = {"type": type_}
        if message is not None:
            error["message"] = message
        return cls(status, {"error": error})

    @classmethod
    def not_found(cls) -> AirtableResponseError:
        return cls(404, {"error": "NOT_FOUND"})

    @classmethod
    def record_not_found(cls, record_id: str, *, batch: bool = False) -> AirtableResponseError:
        """Airtable's answers for a missing record: 404 for one, 422 inside a batch write."""
        if batch:
            return cls.typed(422, "ROW_DOES_NOT_EXIST", f"Record ID {record_id} does not exist")
        if RECORD_ID_RE.match(record_id or ""):
            return cls.typed(404, "MODEL_ID_NOT_FOUND", "Record not found")
        return cls.not_found()

    @classmethod
    def invalid_request(cls, message: str) -> AirtableResponseError:
        return cls.typed(422, "INVALID_REQUEST_UNKNOWN", message)


class RemoteError(AirtableCachedError):
    """Airtable answered a request sent by the sync with an error (or did not answer)."""

    def __init__(self, status: int | None, body: object, *, retry_after: float | None = None):
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.unsent = False  # True when the request surely never reached Airtable

    @property
    def unreachable(self) -> bool:
        """Airtable could not be reached at all (refused, or no answer within the network timeout):
        retrying at once would only wait again; the caller serves the cache or keeps the write."""
        return bool(getattr(self, "no_answer", False))

    @property
    def transient(self) -> bool:
        """429, 5xx and network errors (status None) are worth retrying; other 4xx are not."""
        return self.status is None or self.status == 429 or self.status >= 500

    def __str__(self) -> str:
        return f"{self.status or 'network error'}: {self.body}"


def reason_phrase(status: int) -> str:
    """The standard reason phrase of an HTTP status ("Unprocessable Entity" for 422)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
