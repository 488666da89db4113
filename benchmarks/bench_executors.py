"""Wall time of one experiment on each executor, measured side by side in one run.

Runs ``reproduce fig1`` at the given scales three ways: in-process (the baseline), on a Dask
``LocalCluster`` of N worker processes (``--cluster local:N``), and on the process pool dipcert
used before its executors (a spawn ``ProcessPoolExecutor`` of N processes with cores/N torch
threads each, rebuilt here as a reference). Each executor writes to a fresh folder; the tables are
compared row for row (timings aside: bit for bit, or which columns differ and by how much) and the
wall times printed with their ratio to in-process.
Usage: ``.venv/bin/python benchmarks/bench_executors.py [--scales quick,paper] [--workers 2]``.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import torch

from dipcert.experiments import reproduce
from dipcert.experiments.executors import available_cores, open_executor


def _in_pool(threads: int, task, group):
    torch.set_num_threads(threads)
    start = time.perf_counter()
    return task(group), time.perf_counter() - start


class ProcessPool:
    """The pre-Dask multi-process path: spawn processes, results as they finish (reference only)."""

    def __init__(self, workers: int) -> None:
        self.workers, self.threads = workers, max(1, available_cores() // workers)
        self.description = f"process pool of {workers} (the old path)"

    def run(self, task, groups):
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
            futures = {pool.submit(_in_pool, self.threads, task, group): group for group in groups}
            for future in as_completed(futures):
                yield (futures[future], *future.result())


@contextmanager
def _pool(workers: int):
    yield ProcessPool(workers)


def _table(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def _compare(table: list[dict], reference: list[dict]) -> str:
    """'same' (bit for bit), or which rows differ, in which columns and by how much (relative)."""
    if len(table) != len(reference):
        return f"DIFFERENT: {len(table)} rows against {len(reference)}"
    columns, worst, rows = set(), 0.0, 0
    for row, ref in zip(table, reference):
        changed = [k for k in ref if row[k] != ref[k]]
        if not changed:
            continue
        rows += 1
        for k in changed:
            columns.add(k)
            try:
                a, b = float(row[k]), float(ref[k])
                worst = max(worst, abs(a - b) / max(abs(b), 1e-300))
            except ValueError:
                worst = float("inf")
    if not rows:
        return "same"
    return f"{rows} row(s) differ in {', '.join(sorted(columns))} (relative <= {worst:.1e})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="quick,paper")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {available_cores()} cores, {platform.processor() or platform.machine()}, "
          f"pid {os.getpid()}")
    executors = {"in-process": lambda: open_executor(),
                 f"local:{args.workers} (Dask)": lambda: open_executor(cluster=f"local:{args.workers}"),
                 f"process pool x{args.workers} (old)": lambda: _pool(args.workers)}
    print(f"{'scale':8}{'executor':28}{'wall s':>9}{'ratio':>8}  table")
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales.split(","):
            baseline, reference = None, None
            for name, make in executors.items():
                out = Path(tmp) / scale / name.split()[0]
                start = time.perf_counter()
                with make() as executor:  # a cluster's start-up counts: a user waits for it too
                    paths = reproduce("fig1", scale, out, executor=executor)
                wall = time.perf_counter() - start
                table = _table(paths["table"])
                baseline = baseline or wall
                reference = reference or table
                print(f"{scale:8}{name:28}{wall:9.1f}{wall / baseline:8.2f}  {_compare(table, reference)}", flush=True)


if __name__ == "__main__":
    main()
