"""Timing shared by the benchmark scripts (run as ``python benchmarks/<script>.py``, so this folder
is on ``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int = 7, number: int = 1) -> float:
    """Seconds per call of ``fn``: the fastest of ``repeats`` rounds of ``number`` calls each (the
    least disturbed by the rest of a noisy machine)."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - started) / number)
    return min(samples)
