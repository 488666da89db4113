"""Reproductions of the paper's figures: one module per figure, run by :func:`reproduce`.

Each module provides a config dataclass with ``at_scale("quick" | "paper")``, ``cells(config)``,
``group_of(cell)``, ``run_group(config, cells)``, ``summary(config, rows)``,
``plot(config, rows, path)`` and ``manifest(config)``; plotting only reads recorded rows.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Callable

from . import fig1
from .engine import Cell, ResultStore, run_grid

EXPERIMENTS: dict[str, ModuleType] = {"fig1": fig1}
SCALES = ("quick", "paper")


def describe() -> dict[str, str]:
    """Experiment name → one-line description."""
    return {name: module.TITLE for name, module in EXPERIMENTS.items()}


def reproduce(
    name: str,
    scale: str,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    on_group: Callable[[list[Cell], float], None] | None = None,
) -> dict[str, Path]:
    """Run (or resume) experiment ``name`` at ``scale`` in ``out_dir``; write its table, manifest
    and figure; return their paths."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; allowed: {', '.join(EXPERIMENTS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    module = EXPERIMENTS[name]
    config = module.Config.at_scale(scale)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out, name, {"scale": scale, **module.manifest(config)}, fresh=fresh)
    start = time.perf_counter()
    grid = module.cells(config)
    rows = run_grid(store, grid, partial(module.run_group, config), module.group_of, on_group)
    figure = out / f"{name}.png"
    module.plot(config, rows, figure)
    manifest = store.write_manifest(len(grid), len(rows), time.perf_counter() - start,
                                    {"summary": module.summary(config, rows)})
    return {"table": store.table_path, "manifest": manifest, "figure": figure}
