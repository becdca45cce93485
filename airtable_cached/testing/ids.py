"""Deterministic ids and times: seeded record/table/field ids, counter ids, ISO instants."""

from __future__ import annotations

import datetime as _dt
import random

B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: The logical clock's zero: every fake time is this instant plus whole seconds of events.
BASE_INSTANT = _dt.datetime(2024, 1, 1, tzinfo=_dt.UTC)


class IdGen:
    """Deterministic ids: a prefix plus 14 base62 characters from an RNG seeded per kind."""

    def __init__(self, seed: int):
        self._rngs: dict[str, random.Random] = {}
        self._seed = seed

    def new(self, prefix: str) -> str:
        rng = self._rngs.get(prefix)
        if rng is None:
            rng = self._rngs[prefix] = random.Random(f"airtable-fake:{self._seed}:{prefix}")
        return prefix + "".join(rng.choice(B62) for _ in range(14))


def counter_id(n: int) -> str:
    """``n`` in base62, padded to the 14 characters of an Airtable id."""
    s = ""
    while n:
        n, r = divmod(n, 62)
        s = B62[r] + s
    return s.rjust(14, "0")


def iso(instant: _dt.datetime) -> str:
    """An instant as Airtable writes it: UTC, milliseconds, ``Z``."""
    return instant.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"
