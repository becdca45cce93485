"""The fake's error answers: Airtable's error bodies and the exception that carries one out."""

from __future__ import annotations

from typing import Any

MSG_422 = "Invalid request: parameter validation failed. Check your request data."
MSG_403 = (
    "Invalid permissions, or the requested model was not found. Check that both your user and your "
    "token have the required permissions, and that the model names and/or ids are correct."
)
NOT_FOUND = {"error": "NOT_FOUND"}


def error_body(type_: str, message: str) -> dict:
    """Airtable's ``{"error": {"type", "message"}}`` body."""
    return {"error": {"type": type_, "message": message}}


_STANDARD: dict[int, tuple[str, str]] = {
    401: ("AUTHENTICATION_REQUIRED", "Authentication required"),
    403: ("INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND", MSG_403),
    # MODELLING DECISION: Airtable's 413 body is not recorded anywhere we have.
    413: ("REQUEST_TOO_LARGE", "Request body is too large"),
    422: ("INVALID_REQUEST_UNKNOWN", MSG_422),
    429: ("RATE_LIMIT_REACHED", "Rate limit exceeded. Please try again later"),
    503: ("RETRIABLE_ERROR", "Airtable is temporarily unavailable. Please retry shortly."),
}


def standard_error_body(status: int) -> dict:
    """Airtable's body for ``status`` as used by fault injection."""
    if status == 404:
        return dict(NOT_FOUND)
    if status in _STANDARD:
        return error_body(*_STANDARD[status])
    if status >= 500:
        return error_body("SERVER_ERROR", "Try again. If the problem persists, contact support.")
    return error_body("INVALID_REQUEST_UNKNOWN", MSG_422)


class FakeAirtableError(Exception):
    """An error answer: raised inside the engine, turned into an HTTP response."""

    def __init__(self, status: int, body: Any):
        super().__init__(status, body)
        self.status = status
        self.body = body


def fail(status: int, type_: str, message: str) -> FakeAirtableError:
    return FakeAirtableError(status, error_body(type_, message))


def invalid_request(message: str = MSG_422) -> FakeAirtableError:
    return fail(422, "INVALID_REQUEST_UNKNOWN", message)


def cannot_accept(field: dict) -> FakeAirtableError:
    return fail(422, "INVALID_VALUE_FOR_COLUMN", f'Field "{field["name"]}" cannot accept the provided value')


def unknown_field(key: Any) -> FakeAirtableError:
    return fail(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{key}"')


def no_such_row(record_id: str) -> FakeAirtableError:
    return fail(422, "ROW_DOES_NOT_EXIST", f"Record ID {record_id} does not exist")


def invalid_records(message: str) -> FakeAirtableError:
    return fail(422, "INVALID_RECORDS", message)
