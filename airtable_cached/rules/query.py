"""List options, as Airtable receives them, parsed into one :class:`ListQuery`.

Both front-ends end here: pyairtable's options become query parameters through pyairtable's own
``options_to_params`` (so unknown options fail as they do in pyairtable), plain HTTP agents send the
same parameters in the URL or in a ``listRecords`` JSON body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airtable_cached.errors import AirtableResponseError

MAX_PAGE_SIZE = 100
_SORT_KEY = re.compile(r"^sort\[(\d+)\]\[(field|direction)\]$")


@dataclass(frozen=True)
class ListQuery:
    fields: tuple[str, ...] | None = None
    sort: tuple[tuple[str, str], ...] = ()
    max_records: int | None = None
    page_size: int = MAX_PAGE_SIZE
    offset: str | None = None
    view: str | None = None
    formula: str | None = None
    cell_format: str = "json"
    time_zone: str | None = None
    user_locale: str | None = None
    by_field_ids: bool = False
    comment_count: bool = False
    extra: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ListQuery:
        """From query parameters (values: a str, a number, or a list of them)."""
        values = {key: _as_list(value) for key, value in params.items()}
        sort_parts: dict[int, dict[str, str]] = {}
        options: dict[str, Any] = {}
        extra = []
        for key, items in values.items():
            if not items:
                continue
            last = items[-1]
            if m := _SORT_KEY.match(key):
                sort_parts.setdefault(int(m.group(1)), {})[m.group(2)] = last
            elif key in ("fields[]", "fields"):
                options["fields"] = items
            elif key in ("recordMetadata[]", "recordMetadata"):
                options["recordMetadata"] = items
            else:
                options[key] = last
        for key in list(options):
            if key not in _KNOWN:
                extra.append((key, str(options.pop(key))))
        sort = [sort_parts[i] for i in sorted(sort_parts)]
        return cls._build(options, sort, tuple(extra))

    @classmethod
    def from_json(cls, body: Mapping[str, Any] | None, params: Mapping[str, Any] | None = None) -> ListQuery:
        """From a ``POST .../listRecords`` body (plus ``timeZone``/``userLocale`` from the URL)."""
        if body is not None and not isinstance(body, Mapping):
            # As Airtable (and the fake server) answer a body that is a list, a string or a number.
            raise AirtableResponseError.invalid_request("Invalid request: parameter validation failed. Check your request data.")
        body = dict(body or {})
        for key, value in (params or {}).items():
            if key in ("timeZone", "userLocale"):
                body[key] = _as_list(value)[-1]
        sort = body.pop("sort", None) or []
        if not isinstance(sort, list) or not all(isinstance(s, dict) for s in sort):
            raise AirtableResponseError.invalid_request("sort must be a list of {field, direction} objects")
        unknown = [k for k in body if k not in _KNOWN]
        if unknown:
            raise AirtableResponseError.invalid_request(f"Unknown parameter: {unknown[0]}")
        return cls._build(body, sort, ())

    @classmethod
    def _build(cls, options: dict[str, Any], sort: list[dict], extra: tuple) -> ListQuery:
        fields = options.get("fields")
        if fields is not None:
            if isinstance(fields, str):
                fields = [fields]
            fields = tuple(str(f) for f in fields)
        parsed_sort = []
        for item in sort:
            name = item.get("field")
            direction = (item.get("direction") or "asc").lower()
            if not name or direction not in ("asc", "desc"):
                raise AirtableResponseError.invalid_request(
                    f"Invalid sort: each sort needs a field and a direction of asc or desc, got {item!r}"
                )
            parsed_sort.append((str(name), direction))
        page_size = _int_option(options, "pageSize", MAX_PAGE_SIZE) or 0
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise AirtableResponseError.invalid_request(
                f"pageSize must be between 1 and {MAX_PAGE_SIZE}, got {page_size}"
            )
        max_records = _int_option(options, "maxRecords", None)
        if max_records is not None and max_records < 1:
            # As the fake server models it; Airtable's answer to maxRecords=0 is not documented.
            raise AirtableResponseError.invalid_request(f"maxRecords must be 1 or more, got {max_records}")
        cell_format = str(options.get("cellFormat") or "json")
        if cell_format not in ("json", "string"):
            raise AirtableResponseError.invalid_request(f"cellFormat must be json or string, got {cell_format!r}")
        metadata = options.get("recordMetadata") or []
        if isinstance(metadata, str):
            metadata = [metadata]
        return cls(
            fields=fields,
            sort=tuple(parsed_sort),
            max_records=max_records,
            page_size=page_size,
            offset=_str_option(options, "offset"),
            view=_str_option(options, "view"),
            formula=_str_option(options, "filterByFormula"),
            cell_format=cell_format,
            time_zone=_str_option(options, "timeZone"),
            user_locale=_str_option(options, "userLocale"),
            by_field_ids=_bool_option(options.get("returnFieldsByFieldId")),
            comment_count="commentCount" in metadata,
            extra=extra,
        )

    @property
    def returns_full_records(self) -> bool:
        """Whether Airtable's answer holds whole records as stored (JSON cells, every field, keyed
        by name), so that the cache may keep them."""
        return self.cell_format == "json" and not self.by_field_ids and self.fields is None

    def to_params(self) -> dict[str, Any]:
        """Back to Airtable's query parameters (for a query sent on to Airtable)."""
        params: dict[str, Any] = {}
        if self.fields is not None:
            params["fields[]"] = list(self.fields)
        for i, (name, direction) in enumerate(self.sort):
            params[f"sort[{i}][field]"] = name
            params[f"sort[{i}][direction]"] = direction
        optional = {
            "maxRecords": self.max_records,
            "offset": self.offset,
            "view": self.view,
            "filterByFormula": self.formula,
            "timeZone": self.time_zone,
            "userLocale": self.user_locale,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        if self.page_size != MAX_PAGE_SIZE:
            params["pageSize"] = self.page_size
        if self.cell_format != "json":
            params["cellFormat"] = self.cell_format
        if self.by_field_ids:
            params["returnFieldsByFieldId"] = 1
        if self.comment_count:
            params["recordMetadata[]"] = ["commentCount"]
        params.update(dict(self.extra))
        return params


_KNOWN = {
    "fields",
    "sort",
    "maxRecords",
    "pageSize",
    "offset",
    "view",
    "filterByFormula",
    "cellFormat",
    "timeZone",
    "userLocale",
    "returnFieldsByFieldId",
    "recordMetadata",
}


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _str_option(options: Mapping[str, Any], name: str) -> str | None:
    value = options.get(name)
    if value is None or value == "":
        return None
    return str(value)


def _int_option(options: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = options.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AirtableResponseError.invalid_request(f"{name} must be an integer, got {value!r}") from None


def _bool_option(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true")
    return bool(value)
