"""Reproductions of the paper's figures, run by :func:`reproduce`.

A figure is either a sweep file shipped in ``sweeps/`` (fig1, fig2 and the image figures: its
module provides ``load(scale)``, the :class:`~.sweep.Sweep`; ``run_group``/``group_of``, which run
groups of its cells at once and keep what the figures draw; and a ``plot(sweep, rows, arrays,
path)`` per figure, which draws it from the sweep's table and returns its summary), or a module with
a ``Config`` dataclass with ``at_scale("quick" | "paper")``, ``cells(config)``, ``group_of(cell)``,
``run_group(config, cells)``, ``summary(config, rows)`` and ``manifest(config)`` (inertia); an
:class:`Experiment` adds which cells it needs and how to plot them.
Plotting only reads recorded results. Experiments of one module share their finished cells (fig3b
and fig4 are the same run).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Callable

from ..components import SCALE
from . import fig1, fig2, images, inertia
from .engine import Cell, ResultStore, run_grid
from .executors import DaskExecutor, InProcess
from .sweep import run_sweep


@dataclass(frozen=True)
class Experiment:
    module: ModuleType
    title: str
    plot: Callable
    keep: Callable[[Cell], bool] = lambda cell: True


EXPERIMENTS: dict[str, Experiment] = {
    "fig1": Experiment(fig1, fig1.TITLE, fig1.plot),
    "fig2": Experiment(fig2, fig2.TITLE, fig2.plot),
    "fig3a": Experiment(images, images.TITLES["fig3a"], images.plot_fig3a, lambda c: c[images.OPERATOR] == "blur"),
    "fig3b": Experiment(images, images.TITLES["fig3b"], images.plot_fig3b, lambda c: c[images.OPERATOR] != "blur"),
    "fig4": Experiment(images, images.TITLES["fig4"], images.plot_fig4, lambda c: c[images.OPERATOR] != "blur"),
    "inertia": Experiment(inertia, inertia.TITLE, inertia.plot),
}
SCALES = SCALE.choices


def describe() -> dict[str, str]:
    """Experiment name → one-line description."""
    return {name: experiment.title for name, experiment in EXPERIMENTS.items()}


def reproduce(
    name: str,
    scale: str,
    out_dir: str | Path,
    *,
    fresh: bool = False,
    executor: InProcess | DaskExecutor | None = None,
    on_group: Callable[[list[Cell], float], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Run (or resume) experiment ``name`` at ``scale`` in ``out_dir``; write its table
    ``NAME.csv``, manifest ``NAME.json`` and figure ``NAME.png``; return their paths. ``executor`` runs the groups of cells (in this process by default, see
    :mod:`.executors`); ``on_notice`` hears of damaged cells recomputed."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; allowed: {', '.join(EXPERIMENTS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    experiment = EXPERIMENTS[name]
    module = experiment.module
    if hasattr(module, "load"):  # a sweep file
        sweep = module.load(scale)
        paths = run_sweep(sweep, out_dir, fresh=fresh, executor=executor, on_group=on_group, on_notice=on_notice,
                          figure=partial(experiment.plot, sweep), runner=(module.run_group, module.group_of),
                          keep=experiment.keep, table=name)
        return {key: paths[key] for key in ("table", "manifest", "figure")}
    config = module.Config.at_scale(scale)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store_name = module.__name__.rsplit(".", 1)[-1]
    store = ResultStore(out, store_name, {"scale": scale, **module.manifest(config)}, fresh=fresh)
    start = time.perf_counter()
    grid = [cell for cell in module.cells(config) if experiment.keep(cell)]
    rows = run_grid(store, grid, partial(module.run_group, config), module.group_of, on_group, table=name,
                    executor=executor, cost=getattr(module, "cost", None), on_notice=on_notice)
    arrays = {cell.key: store.read_arrays(cell) for cell in grid if store.has_arrays(cell)}
    figure = out / f"{name}.png"
    experiment.plot(config, rows, arrays, figure)
    manifest = store.write_manifest(len(grid), len(rows), time.perf_counter() - start,
                                    {"summary": module.summary(config, rows)}, table=name)
    return {"table": store.table_path(name), "manifest": manifest, "figure": figure}
