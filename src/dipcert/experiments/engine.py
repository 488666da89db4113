"""Grids of independent trials: batched, resumable, tidy results.

An experiment is a list of :class:`Cell` (grid coordinates). Cells that can share one batched tensor
program (same shapes) form a *group*; a group runs as one batch and then every cell's rows are
written atomically to ``DIR/NAME.cells/<cell>.csv`` (and its arrays to ``<cell>.npz``), then a
record ``<cell>.meta.json`` of their checksums, row count and columns. A rerun of the same command
skips finished cells (record and files agree) and recomputes damaged ones, so an interrupted run
(Ctrl-C, kill) loses at most the group in flight, and the assembled table ``DIR/NAME.csv`` is the
same as that of an uninterrupted run (timing columns aside). The stamp ``NAME.cells/config.json``
holds the configuration and package versions; a rerun with either changed is refused. The manifest
``DIR/NAME.json`` records the configuration, versions, seeds and wall time.

Trial seeds are ``seed + trial index`` in every cell: deterministic, independent of batching and of
the order cells run in.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Sequence

import numpy as np

from ..fileio import atomic_output, atomic_write_text
from ..report import dumps, versions, write_csv
from .executors import DaskExecutor, InProcess

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
    """The output folder holds results of another configuration or of other package versions."""


NOT_STARTED = "not started"
"""What :meth:`ResultStore.check` says of a cell none of whose files exist."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ResultStore:
    """Finished cells of one experiment in ``out_dir``; refuses to mix configurations or package
    versions."""

    def __init__(self, out_dir: str | Path, name: str, config: dict, fresh: bool = False) -> None:
        self.out_dir, self.name, self.config = Path(out_dir), name, config
        self.cell_dir = self.out_dir / f"{name}.cells"
        stamp = self.cell_dir / "config.json"
        if fresh and self.cell_dir.exists():
            shutil.rmtree(self.cell_dir)
        self.cell_dir.mkdir(parents=True, exist_ok=True)
        wanted = {"config": json.loads(dumps(config)), "versions": versions()}
        if stamp.exists():
            self._check_stamp(stamp, wanted)
        else:
            atomic_write_text(stamp, dumps(wanted) + "\n")

    def _check_stamp(self, stamp: Path, wanted: dict) -> None:
        """Raise :class:`ConfigMismatch` unless ``stamp`` records ``wanted`` (configuration, versions)."""
        advice = "use --fresh to discard them, or another --out"
        try:
            found = json.loads(stamp.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigMismatch(f"{stamp} is unreadable ({exc}); {advice}") from None
        if not isinstance(found, dict) or set(found) != {"config", "versions"}:
            raise ConfigMismatch(f"{self.cell_dir} was written by an older dipcert that did not record "
                                 f"package versions; {advice}")
        if found["config"] != wanted["config"]:
            raise ConfigMismatch(f"{self.cell_dir} holds results of another configuration of {self.name}; "
                                 f"{advice}")
        old, new = found["versions"], wanted["versions"]
        changed = [f"{pkg} {old.get(pkg, 'none')} -> {new.get(pkg, 'none')}"
                   for pkg in sorted(set(old) | set(new)) if old.get(pkg) != new.get(pkg)]
        if changed:
            raise ConfigMismatch(f"{self.cell_dir} holds results computed with other package versions "
                                 f"({', '.join(changed)}); {advice}")

    def _path(self, cell: Cell) -> Path:
        return self.cell_dir / f"{cell.key}.csv"

    def _npz(self, cell: Cell) -> Path:
        return self.cell_dir / f"{cell.key}.npz"

    def _meta(self, cell: Cell) -> Path:
        return self.cell_dir / f"{cell.key}.meta.json"

    def check(self, cell: Cell) -> str | None:
        """None if ``cell`` is finished and intact, ``NOT_STARTED`` if none of its files exist, else
        what is wrong with them (a cell counts as finished only when its record and files agree)."""
        files = [self._path(cell), self._npz(cell), self._meta(cell)]
        if not any(path.exists() for path in files):
            return NOT_STARTED
        if not self._meta(cell).exists():
            return "no record: its writing was interrupted"
        try:
            meta = json.loads(self._meta(cell).read_text(encoding="utf-8"))
            rows, columns = meta["rows"], meta["columns"]
            csv_sha, npz_sha = meta["csv_sha256"], meta["npz_sha256"]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            return "unreadable record"
        if not self._path(cell).exists():
            return "CSV missing"
        data = self._path(cell).read_bytes()
        if not data:
            return "empty CSV"
        try:
            header, *body = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
        except (UnicodeDecodeError, csv.Error):
            return "CSV unparseable"
        if header != columns:
            return "wrong CSV header"
        short = [i for i, row in enumerate(body) if len(row) != len(columns)]
        if short and short != [len(body) - 1]:  # only the last row may be cut off
            return "CSV unparseable"
        complete = len(body) - len(short)
        if complete < rows:
            return f"truncated: {complete} rows of {rows}"
        if len(body) > rows:
            return f"{len(body)} rows where {rows} were written"
        if _sha256(data) != csv_sha:
            return "CSV checksum mismatch"
        if npz_sha is not None:
            if not self._npz(cell).exists():
                return "arrays (.npz) missing"
            if _sha256(self._npz(cell).read_bytes()) != npz_sha:
                return "arrays (.npz) checksum mismatch"
        return None

    def write(self, cell: Cell, result: CellResult) -> None:
        """Arrays first, then the rows, then the record of both: a cell counts as finished once its
        record exists and agrees with its files."""
        self._meta(cell).unlink(missing_ok=True)
        npz_sha = None
        if result.arrays:
            with atomic_output(self._npz(cell)) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **result.arrays)
            npz_sha = _sha256(self._npz(cell).read_bytes())
        rows = result.rows
        write_csv(self._path(cell), {key: [row[key] for row in rows] for key in rows[0]})
        meta = {"rows": len(rows), "columns": list(rows[0]),
                "csv_sha256": _sha256(self._path(cell).read_bytes()), "npz_sha256": npz_sha}
        atomic_write_text(self._meta(cell), dumps(meta) + "\n")

    def has_arrays(self, cell: Cell) -> bool:
        return self._npz(cell).exists()

    def read_arrays(self, cell: Cell) -> dict[str, np.ndarray]:
        with np.load(self._npz(cell)) as data:
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


def run_grid(
    store: ResultStore,
    cells: Sequence[Cell],
    run_group: Callable[[list[Cell]], dict[str, CellResult]],
    group_of: Callable[[Cell], Hashable] = lambda cell: cell.key,
    on_group: Callable[[list[Cell], float], None] | None = None,
    table: str | None = None,
    executor: InProcess | DaskExecutor | None = None,
    cost: Callable[[Cell], float] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> list[Row]:
    """Run every unfinished cell, group by group; write and return every cell's rows, in grid order.

    A cell whose files are damaged (see :meth:`ResultStore.check`) is recomputed, and ``on_notice``
    is told why. A group with any cell unfinished (a run killed while writing its cells) runs again
    whole: a smaller batch could change the last bits of its rows. The groups go to ``executor`` (:mod:`.executors`; in this process by default),
    costliest first when ``cost`` estimates a cell's cost, and each finished group is written here as
    soon as it arrives. For a Dask executor ``run_group`` must be picklable (a module-level function,
    or a ``functools.partial`` of one).
    """
    groups: dict[Hashable, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(group_of(cell), []).append(cell)
    pending = []
    for group in groups.values():
        unfinished = False
        for cell in group:
            problem = store.check(cell)
            unfinished |= problem is not None
            if problem not in (None, NOT_STARTED) and on_notice is not None:
                on_notice(f"cell {cell.key}: damaged ({problem}), recomputing it")
        if unfinished:  # the whole group: its batch, hence the last bits of its rows, as in one run
            pending.append(group)
    if cost is not None:
        pending.sort(key=lambda group: -sum(cost(cell) for cell in group))
    for group, results, seconds in (executor or InProcess()).run(run_group, pending):
        for cell in group:
            store.write(cell, results[cell.key])
        if on_group is not None:
            on_group(group, seconds)
    return store.assemble(cells, table)
