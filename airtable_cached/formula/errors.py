"""Exceptions of the formula engine."""

from __future__ import annotations

from ..errors import AirtableCachedError


class FormulaError(AirtableCachedError, ValueError):
    """Any problem with a formula (syntax, unknown function, arity)."""


class FormulaSyntaxError(FormulaError):
    """Malformed formula text; ``position`` is the 0-based offset of the problem."""

    def __init__(self, message: str, position: int, text: str | None = None):
        self.position = position
        self.problem = message
        self.text = text
        super().__init__(f"formula syntax error at position {position}: {message}")


class UnknownFunctionError(FormulaError):
    """A call of a function that does not exist, or with the wrong number of arguments."""

    def __init__(self, message: str, name: str, position: int | None = None):
        self.name = name
        self.position = position
        super().__init__(message)
