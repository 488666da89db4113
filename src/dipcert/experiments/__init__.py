"""Reproductions of the paper's figures, run by :func:`reproduce`.

Every figure is one or more sweep files shipped in ``sweeps/``. Its module provides ``load(scale)``,
the :class:`~.sweep.Sweep` (or a tuple of them, run in turn: the inertia experiment's image and
Gaussian problems); ``run_group``/``group_of``, which run groups of its cells and keep what the
figures draw (fig1 batches every m of a width); and a ``plot`` per figure, which draws it from the
sweeps' tables and arrays and returns its summary: ``plot(sweep, rows, arrays, path)``, or with
several sweeps ``plot(sweeps, [(rows, arrays) of each earlier sweep], rows, arrays, path)``. An
:class:`Experiment` adds which cells it needs. Plotting only reads recorded results. Experiments of
one module share their finished cells (fig3b and fig4 are the same run).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Callable

from ..components import SCALE
from . import fig1, fig2, images, inertia
from .engine import Cell
from .executors import DaskExecutor, InProcess
from .sweep import finished_results, run_sweep


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
    loaded = module.load(scale)
    *earlier, sweep = loaded if isinstance(loaded, tuple) else (loaded,)
    options = dict(fresh=fresh, executor=executor, on_group=on_group, on_notice=on_notice,
                   runner=(module.run_group, module.group_of))
    for other in earlier:  # their tables beside, their results read back for the figure
        run_sweep(other, out_dir, **options)
    figure = (partial(experiment.plot, loaded, [finished_results(other, out_dir) for other in earlier])
              if earlier else partial(experiment.plot, sweep))
    paths = run_sweep(sweep, out_dir, figure=figure, keep=experiment.keep, table=name, **options)
    return {key: paths[key] for key in ("table", "manifest", "figure")}
