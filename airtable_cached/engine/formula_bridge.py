"""Wiring between the engine's reads and the formula engine (``airtable_cached.formula``).

Decides whether a ``filterByFormula`` can be answered exactly from the cache, and if so turns it
into a SQL condition plus a Python residual. A formula the cache cannot answer exactly goes to
Airtable; that fallback is counted and logged once per formula.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from airtable_cached.errors import AirtableResponseError
from airtable_cached.formula.sql import DIALECTS, indexable_field_name
from airtable_cached.store.contract import Replica

if TYPE_CHECKING:
    from airtable_cached.engine.tables import TableInfo

log = logging.getLogger("airtable_cached")

#: Field types whose formula value is not what the API returns for them (links show the linked
#: records' primary values, attachments and collaborators their names...), or is computed by
#: Airtable: a formula over them is sent to Airtable.
INEXACT_TYPES = frozenset(
    {
        "multipleRecordLinks",
        "multipleAttachments",
        "singleCollaborator",
        "multipleCollaborators",
        "createdBy",
        "lastModifiedBy",
        "barcode",
        "button",
        "formula",
        "rollup",
        "count",
        "lookup",
        "multipleLookupValues",
        "lastModifiedTime",
        "aiText",
        "duration",
        "currency",
        "percent",
        "rating",
        "externalSyncSource",
    }
)
#: Functions whose value the cache cannot know exactly.
INEXACT_FUNCTIONS = frozenset({"LAST_MODIFIED_TIME"})

_logged: set[str] = set()


def _formula():
    """The formula engine, imported on first use: ``import airtable_cached`` stays quick (it loads RE2)."""
    from airtable_cached import formula

    return formula


@lru_cache(maxsize=512)
def _parse(text: str):
    return _formula().parse(text)


@lru_cache(maxsize=512)
def _field_refs(text: str) -> frozenset[str]:
    """The field names or ids a formula names, found once per formula (a read asks several times,
    and a walk of an ORM's ``OR`` of 200 record ids is not free)."""
    return frozenset(_formula().field_names(_parse(text)))


@lru_cache(maxsize=512)
def _function_refs(text: str) -> frozenset[str]:
    """The functions a formula calls (upper case), found once per formula."""
    return frozenset(_formula().function_names(_parse(text)))


def remote_reason(replica: Replica, info: TableInfo, text: str) -> str | None:
    """Why ``text`` must go to Airtable (``None``: the cache answers it exactly).

    Raises Airtable's 422 ``INVALID_FILTER_BY_FORMULA`` for a field the schema does not have.
    """
    reason = _reason(replica, info, text)
    if reason and text not in _logged:
        _logged.add(text)
        log.info("formula sent to Airtable (%s): %s", reason, text)
    return reason


def _reason(replica: Replica, info: TableInfo, text: str) -> str | None:
    try:
        functions = _function_refs(text) & INEXACT_FUNCTIONS
    except _formula().FormulaError as exc:
        return f"the formula is not understood locally ({exc})"
    if functions:
        return f"uses {', '.join(sorted(functions))}, which the cache cannot know"
    schema_fields = info.fields_by_name
    name_for_id = info.name_for_id
    for ref in sorted(_field_refs(text)):
        name = name_for_id.get(ref, ref)
        if schema_fields:
            if name not in schema_fields:
                raise AirtableResponseError.typed(
                    422, "INVALID_FILTER_BY_FORMULA", f"The formula for filtering records is invalid: Unknown field names: {name.lower()}"
                )
            if schema_fields[name].get("type") == "multipleRecordLinks" and _link_source(replica, info, schema_fields[name]):
                continue  # the linked table is cached: its primary values are known (links.py)
            if schema_fields[name].get("type") in INEXACT_TYPES:
                return f"field {name!r} is a {schema_fields[name]['type']} field, computed or shown differently by Airtable"
        elif not _field_seen(replica, info, name):
            return f"field {name!r} has never been seen in the cache"
    return None


def _link_source(replica: Replica, info: TableInfo, spec: dict) -> tuple[int, str] | None:
    from airtable_cached.engine import links

    return links.primary_source(replica, info.tid, spec)


def link_sources(replica: Replica, info: TableInfo, text: str) -> dict[str, tuple[int, str]]:
    """The link fields a formula names, with where their primary values come from."""
    try:
        refs = _field_refs(text)
    except _formula().FormulaError:
        return {}
    found = {}
    for ref in refs:
        name = info.name_for_id.get(ref, ref)
        spec = info.fields_by_name.get(name)
        if spec is not None and spec.get("type") == "multipleRecordLinks":
            source = _link_source(replica, info, spec)
            if source is not None:
                found[name] = source
    return found


def _field_seen(replica: Replica, info: TableInfo, name: str) -> bool:
    """Whether any cached record of the table has a value for ``name`` (the path is bound)."""
    if info.pulled_at is None:
        return True  # not pulled yet: the pull that precedes serving will tell
    return replica.field_ever_seen(info.tid, name)


@dataclass(frozen=True)
class SqlFilter:
    """A formula as the engine runs it."""

    #: Condition over ``r.fields`` / ``r.id`` (empty: none), and its parameters (``Selection.where``).
    sql: str
    params: list
    #: Python check for what SQL cannot answer exactly (``None``: SQL says it all).
    check: Callable[[dict], bool] | None
    #: Text fields the formula requires to equal a value: an index on one answers it.
    equality_fields: list[str]
    #: Whether an index (a field's, or the primary key for literal record ids) finds the rows.
    indexed: bool


def sql_filter(info: TableInfo, text: str, dialect: str = "sqlite") -> SqlFilter:
    """The SQL condition (in the store's ``dialect``: ``Replica.dialect``) and Python residual that
    answer ``text`` exactly over the cached table."""
    module = _formula()
    field_ids = tuple(sorted(info.name_for_id.items()))
    compiled = _compile(text, field_ids, dialect)
    parts = [f"({compiled.sql})"] if compiled.sql else []
    equalities = indexable_equalities(info, text)
    parts += [DIALECTS[dialect].field_equals(name) for name, _value in equalities]
    # Implied by the formula, but in a form the primary key (tid, id) can answer.
    ids = record_ids_required(text) or []
    id_params: list = []
    if ids:
        part, id_params = DIALECTS[dialect].id_among(ids)
        parts.append(part)
    sql = " AND ".join(parts)
    rest = compiled.residual
    check = None if rest is None else (lambda record: module.matches(rest, record))
    params = list(compiled.params) + [value for _name, value in equalities] + id_params
    names = [n for n, _v in equalities]
    return SqlFilter(sql, params, check, names, bool(names or ids))


@lru_cache(maxsize=512)
def _compile(text: str, field_ids: tuple[tuple[str, str], ...], dialect: str = "sqlite"):
    """Compile once per formula, table schema and dialect. Field ids (``{fldXXX}``) are rewritten
    to the names the cache stores records by, so SQL and the evaluator see the same fields."""
    module = _formula()
    node = _with_names(module, _parse(text), dict(field_ids))
    return module.compile_where(node, fields_column="r.fields", id_column="r.id", created_column="r.created_time",
                                dialect=dialect)


def _with_names(module, node, name_for_id: dict[str, str]):
    if not name_for_id:
        return node
    if isinstance(node, module.Field):
        return module.Field(name_for_id.get(node.name, node.name))
    if isinstance(node, module.Call):
        return module.Call(node.name, tuple(_with_names(module, arg, name_for_id) for arg in node.args))
    if isinstance(node, module.BinaryOp):
        return module.BinaryOp(node.op, _with_names(module, node.left, name_for_id), _with_names(module, node.right, name_for_id))
    if isinstance(node, module.UnaryOp):
        return module.UnaryOp(node.op, _with_names(module, node.operand, name_for_id))
    return node


#: Field types whose values are plain JSON strings: ``{F} = 'x'`` (x not empty) holds exactly when
#: the stored value is the string 'x', so an index on the field can answer it.
TEXT_TYPES = frozenset({"singleLineText", "multilineText", "email", "url", "phoneNumber", "singleSelect", "richText"})


def indexable_equalities(info: TableInfo, text: str) -> list[tuple[str, str]]:
    """``(field, value)`` of the top-level ``{Text field} = 'value'`` conjuncts of a formula."""
    module = _formula()
    try:
        node = _parse(text)
    except module.FormulaError:
        return []
    parts = module.conjuncts(node)
    found = []
    schema_fields = info.fields_by_name
    for item in parts:
        if not (isinstance(item, module.BinaryOp) and item.op == "="):
            continue
        pair = (item.left, item.right)
        if isinstance(pair[1], module.Field):
            pair = (pair[1], pair[0])
        field, literal = pair
        if not (isinstance(field, module.Field) and isinstance(literal, module.Literal)):
            continue
        if not isinstance(literal.value, str) or literal.value == "":
            continue
        name = info.name_for_id.get(field.name, field.name)
        if (schema_fields.get(name) or {}).get("type") in TEXT_TYPES and indexable_field_name(name):
            found.append((name, literal.value))
    return found


def record_ids_required(text: str) -> list[str] | None:
    """The ids a formula is limited to when it is (or requires) ``RECORD_ID() = 'rec...'`` for
    literal ids, as pyairtable's ORM writes it; the primary key then finds the rows without a scan.
    ``None`` when the formula does not limit the ids."""
    ids = _required_ids(text)
    return None if ids is None else list(ids)


@lru_cache(maxsize=512)
def _required_ids(text: str) -> tuple[str, ...] | None:
    """``record_ids_required``, found once per formula (a read asks several times)."""
    module = _formula()
    try:
        node = _parse(text)
    except module.FormulaError:
        return None
    for part in module.conjuncts(node):
        if _only_record_ids(module, part):
            return tuple(sorted(_record_id_literals(module, part)))
    return None


def _record_id_literals(module, node) -> set[str]:
    if isinstance(node, module.Call):  # OR(...)
        return set().union(*(_record_id_literals(module, arg) for arg in node.args))
    literal = node.right if isinstance(node.right, module.Literal) else node.left
    return {str(literal.value)}


def _only_record_ids(module, node) -> bool:
    if isinstance(node, module.Call) and node.name == "OR" and node.args:
        return all(_only_record_ids(module, arg) for arg in node.args)
    if isinstance(node, module.BinaryOp) and node.op == "=":
        sides = {type(node.left), type(node.right)}
        call = node.left if isinstance(node.left, module.Call) else node.right
        return sides == {module.Call, module.Literal} and call.name == "RECORD_ID" and not call.args
    return False




#: Functions whose value depends on the moment of evaluation: their results are never remembered.
CLOCK_FUNCTIONS = frozenset({"NOW", "TODAY"})


def python_filter(info: TableInfo, text: str) -> tuple[Callable[[dict], bool], bool]:
    """The whole formula as a Python predicate over decoded records (``filterByFormula``
    semantics, the same evaluator the SQL residual uses), and whether its answer depends on the
    clock (``NOW()``, ``TODAY()``). Compiled once per formula and table schema."""
    return _python_filter(text, tuple(sorted(info.name_for_id.items())))


@lru_cache(maxsize=512)
def _python_filter(text: str, field_ids: tuple[tuple[str, str], ...]) -> tuple[Callable[[dict], bool], bool]:
    module = _formula()
    node = _with_names(module, _parse(text), dict(field_ids))
    clock_bound = bool({name.upper() for name in module.function_names(node)} & CLOCK_FUNCTIONS)
    matches, formula_error = module.matches, module.FormulaError

    def check(record: dict) -> bool:
        try:
            return matches(node, record)
        except formula_error:
            return False  # an error value excludes the record, as in Airtable

    return check, clock_bound
