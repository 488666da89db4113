"""Grids of independent trials: batched, resumable, tidy results.

An experiment is a list of :class:`Cell` (grid coordinates). Cells that can share one batched tensor
program (same shapes) form a *group*; a group runs as one batch and then every cell's rows are
written atomically to ``DIR/NAME.cells/<cell>.csv``. A rerun of the same command skips finished
cells, so an interrupted run (Ctrl-C, kill) loses at most the group in flight, and the assembled
table ``DIR/NAME.csv`` is the same as that of an uninterrupted run (timing columns aside). The
manifest ``DIR/NAME.json`` records the configuration, versions, seeds and wall time.

Trial seeds are ``seed + trial index`` in every cell: deterministic, independent of batching and of
the order cells run in.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Sequence

import numpy as np
import torch

from ..fileio import atomic_output, atomic_write_text
from ..report import dumps, versions, write_csv

Row = dict[str, object]


@dataclass
class CellResult:
    """A finished cell: one row per trial, and optional arrays (e.g. reconstructions) for plots."""

    rows: list[Row]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One point of the grid; ``key`` names its result file."""

    coords: tuple[tuple[str, object], ...]

    @classmethod
    def of(cls, **coords) -> "Cell":
        return cls(tuple(coords.items()))

    def __getitem__(self, name: str):
        return dict(self.coords)[name]

    @property
    def key(self) -> str:
        return "_".join(f"{k}={v}" for k, v in self.coords).replace("/", "-")


def settings_and_choices(config, doc: str) -> dict:
    """An experiment's manifest entry: its settings, and the choices its docstring lists after
    "Our choices" (where the paper is silent)."""
    return {"settings": dataclasses.asdict(config), "choices": doc.split("Our choices", 1)[1].strip()}


class ConfigMismatch(ValueError):
    """The output folder holds results of another configuration."""


class ResultStore:
    """Finished cells of one experiment in ``out_dir``; refuses to mix configurations."""

    def __init__(self, out_dir: str | Path, name: str, config: dict, fresh: bool = False) -> None:
        self.out_dir, self.name, self.config = Path(out_dir), name, config
        self.cell_dir = self.out_dir / f"{name}.cells"
        stamp = self.cell_dir / "config.json"
        if fresh and self.cell_dir.exists():
            shutil.rmtree(self.cell_dir)
        self.cell_dir.mkdir(parents=True, exist_ok=True)
        wanted = json.loads(dumps(config))
        if stamp.exists():
            if json.loads(stamp.read_text()) != wanted:
                raise ConfigMismatch(
                    f"{self.cell_dir} holds results of another configuration of {name}; "
                    "use another --out, or --fresh to discard them"
                )
        else:
            atomic_write_text(stamp, dumps(config) + "\n")

    def _path(self, cell: Cell) -> Path:
        return self.cell_dir / f"{cell.key}.csv"

    def done(self, cell: Cell) -> bool:
        return self._path(cell).exists()

    def write(self, cell: Cell, result: CellResult) -> None:
        """Arrays first, then the rows: a cell counts as finished once its CSV exists."""
        if result.arrays:
            with atomic_output(self.cell_dir / f"{cell.key}.npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **result.arrays)
        rows = result.rows
        write_csv(self._path(cell), {key: [row[key] for row in rows] for key in rows[0]})

    def has_arrays(self, cell: Cell) -> bool:
        return (self.cell_dir / f"{cell.key}.npz").exists()

    def read_arrays(self, cell: Cell) -> dict[str, np.ndarray]:
        with np.load(self.cell_dir / f"{cell.key}.npz") as data:
            return dict(data)

    def read(self, cell: Cell) -> list[Row]:
        with open(self._path(cell), newline="") as fh:
            return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]

    def assemble(self, cells: Sequence[Cell], table: str | None = None) -> list[Row]:
        """Write ``TABLE.csv`` (default: the store's name): the cells' rows, in grid order."""
        rows = [row for cell in cells for row in self.read(cell)]
        write_csv(self.table_path(table), {key: [row[key] for row in rows] for key in rows[0]})
        return rows

    def table_path(self, table: str | None = None) -> Path:
        return self.out_dir / f"{table or self.name}.csv"

    def write_manifest(self, cells: int, trials: int, wall_seconds: float, extra: dict | None = None,
                       table: str | None = None) -> Path:
        """Write ``TABLE.json``: configuration, versions, seed rule, wall time, and ``extra``."""
        path = self.out_dir / f"{table or self.name}.json"
        manifest = {
            "experiment": table or self.name, "results": str(self.cell_dir.name), "config": self.config,
            "versions": versions(),
            "cells": cells, "trials": trials, "wall_seconds_last_invocation": wall_seconds,
            "seed_rule": "trial t of every cell uses seed config.seed + t", **(extra or {}),
        }
        atomic_write_text(path, dumps(manifest) + "\n")
        return path


def _parse(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def _timed(run_group: Callable[[list[Cell]], dict[str, CellResult]], threads: int, group: list[Cell]):
    """Run one group in a worker process with ``threads`` torch threads; return results and seconds."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    return run_group(group), time.perf_counter() - start


def run_grid(
    store: ResultStore,
    cells: Sequence[Cell],
    run_group: Callable[[list[Cell]], dict[str, CellResult]],
    group_of: Callable[[Cell], Hashable] = lambda cell: cell.key,
    on_group: Callable[[list[Cell], float], None] | None = None,
    table: str | None = None,
    workers: int = 1,
    cost: Callable[[Cell], float] | None = None,
) -> list[Row]:
    """Run every unfinished cell, group by group; write and return every cell's rows, in grid order.

    With ``workers > 1``, groups run in that many processes (each with an equal share of the
    cores), costliest first when ``cost`` estimates a cell's cost; each finished group is written
    as soon as it arrives. ``run_group`` must then be picklable (a module-level function, or a
    ``functools.partial`` of one).
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    groups: dict[Hashable, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(group_of(cell), []).append(cell)
    pending = [[cell for cell in group if not store.done(cell)] for group in groups.values()]
    pending = [group for group in pending if group]
    if cost is not None:
        pending.sort(key=lambda group: -sum(cost(cell) for cell in group))

    def finish(group: list[Cell], results: dict[str, CellResult], seconds: float) -> None:
        for cell in group:
            store.write(cell, results[cell.key])
        if on_group is not None:
            on_group(group, seconds)

    if workers == 1 or len(pending) <= 1:
        for group in pending:
            finish(group, *_timed(run_group, torch.get_num_threads(), group))
    else:
        threads = max(1, torch.get_num_threads() // workers)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_timed, run_group, threads, group): group for group in pending}
            try:
                for future in as_completed(futures):
                    finish(futures[future], *future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return store.assemble(cells, table)
