"""ORM models through the cache.

``pyairtable.orm.Model`` builds its own ``pyairtable.Api`` from ``Meta``, so swapping the user's
import does not reach it. Derive models from :class:`airtable_cached.orm.Model` instead; everything
else about them stays as in pyairtable. Optional ``Meta.cache``: a dict of cache settings (``path``,
``mode``, ``max_age``, ``flush``...), as keyword arguments of :class:`airtable_cached.Api`.

    from airtable_cached.orm import Model
    from pyairtable.orm import fields as F

    class Lead(Model):
        class Meta:
            base_id = "appXXXXXXXXXXXXXX"
            table_name = "Leads"
            api_key = os.environ["AIRTABLE_API_KEY"]

        name = F.TextField("Full Name")
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import pyairtable.orm.model as _orm_model

from airtable_cached.api import Api

__all__ = ["Model"]


class _CachedMeta(_orm_model._Meta):
    @cached_property
    def api(self) -> Api:  # type: ignore[override]
        settings = self.get("cache", default=None) or {}
        return Api(self.api_key, timeout=self.timeout, retry_strategy=self.retry_strategy, **settings)


class Model(_orm_model.Model):
    """``pyairtable.orm.Model`` whose reads and writes go through airtable_cached."""

    #: Marks this abstract base: pyairtable validates ``Meta`` of every subclass, not of this one.
    _airtable_cached_base = True

    @classmethod
    def _validate_class(cls) -> None:
        if cls.__dict__.get("_airtable_cached_base"):
            return
        super()._validate_class()

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls.meta = _CachedMeta(cls)
