"""Benchmark: what ``airtable-cached run`` adds to a program's start.

Runs ``python -c pass`` bare and through ``airtable-cached run``, alternately, and prints the best
and median times of each and their ratio (the machines are noisy; compare within one run). The
program here never imports requests, so the cache is never loaded in it; the cost left is the
``airtable-cached`` command itself and the bootstrap's ``sitecustomize``.

    python benchmarks/bench_run_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    command = shutil.which("airtable-cached")
    through = [command] if command else [sys.executable, "-m", "airtable_cached"]
    bare_argv = [sys.executable, "-c", "pass"]
    run_argv = [*through, "run", "--", sys.executable, "-c", "pass"]
    bare, run = [], []
    for _ in range(args.runs):
        bare.append(timed(bare_argv))
        run.append(timed(run_argv))
    print(f"python -c pass                        best {min(bare):.3f} s  median {statistics.median(bare):.3f} s")
    print(f"airtable-cached run -- python -c pass best {min(run):.3f} s  median {statistics.median(run):.3f} s")
    print(f"added by run: best {min(run) - min(bare):.3f} s, median {statistics.median(run) - statistics.median(bare):.3f} s;"
          f" ratio of medians {statistics.median(run) / statistics.median(bare):.1f}x")


if __name__ == "__main__":
    main()
