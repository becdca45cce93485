"""Airtable formula engine: parser, evaluator and SQLite compiler.

Public API: :func:`parse`, :func:`to_formula`, :func:`evaluate`, :func:`matches`,
:func:`compile_python`, :func:`compile_where`, :func:`register_sql_functions`, :func:`field_names`,
:func:`function_names`, node classes and the error classes.
"""

from .errors import FormulaError, FormulaSyntaxError, UnknownFunctionError
from .evaluator import compile_python, evaluate, field_names, function_names, matches
from .nodes import BinaryOp, Call, ErrorValue, Field, Literal, Node, UnaryOp, conjuncts, to_formula, walk
from .parser import parse
from .sql import CompiledFilter, compile_where, register_sql_functions
from .values import truthy

__all__ = [
    "FormulaError", "FormulaSyntaxError", "UnknownFunctionError", "parse", "to_formula", "evaluate",
    "matches", "compile_python", "compile_where", "CompiledFilter", "register_sql_functions",
    "field_names", "function_names", "Node", "Field", "Literal", "Call", "BinaryOp", "UnaryOp",
    "ErrorValue", "truthy", "walk", "conjuncts",
]
