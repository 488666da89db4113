"""Sweeps: a grid over any option of the run configuration, written once in a TOML file.

A sweep file has these tables::

    [sweep]
    name = "width"              # the table is OUT/width.csv, the figure OUT/width.png
    trials = 8                  # runs per cell
    batch = 8                   # optional: at most this many trials trained at once (default: trials)
    seed = 0                    # the first seed
    seeds = "shared"            # shared: trial t of every cell uses seed + t (common random numbers)
                                # per-cell: cell c (grid order) uses seed + c*trials + t
    record = ["converged", "iterations", "condition_4"]   # what each row holds (see OUTPUTS)

    [base]                      # a run configuration, as `dipcert solve --config` reads it
    problem = { signal = "gaussian", n = 5 }
    training = { iters = 4000, loss_tol = 1e-10 }
    certificate = { certify = true }

    [grid]                      # "section.option" = [values]; the cells are their product
    "operator.m" = [1, 2, 3, 5, 8]
    "network.width" = [10, 100, 1000]

    [scales.quick]              # optional: what `--scale quick` changes (tables laid over the file's)
    sweep = { trials = 2 }
    grid = { "operator.m" = [1, 3], "network.width" = [10, 100] }

    [plot]                      # optional: a statistic of one recorded output over grid axes
    kind = "heatmap"            # heatmap (x by y) or curves (over x, one curve per y)
    x = "network.width"
    y = "operator.m"
    value = "converged"
    statistic = "mean"          # over a cell's trials: mean, median, min, max, std

A grid may also be a list of blocks (``[[grid]]`` tables): the cells are each block's product in
turn, e.g. a coarse grid and a finer or cheaper extension of it, or methods that take different
options (a block of gd steps, a block of inertial dampings). Blocks may list different axes: the
table has a column per axis of any block, empty where a cell's block does not set it (the cell then
has the [base] value or the default). No two cells may have the same configuration. The [plot]'s x
and y must be axes of every block.

A cell is one run configuration (``base`` with the cell's grid values, ``run.runs = trials``); it
runs as ``dipcert solve`` would, in batches of at most ``batch`` trials, and each of its trials is one
row. A trial's seed does not depend on the batch it is trained in, nor do its step (gd, heavy ball,
Nesterov: one per run) and certificate, so ``batch`` bounds memory without changing what a trial
computes (up to the last bits of batched arithmetic). The exceptions are the ``auto`` values that
are one per batch (the inertial schemes' α, β, h; ``momentum = auto``): there ``batch = 1`` tunes
each trial on its own. Every cell's configuration is
built and checked (options, combination, memory) before any work, so a bad value is refused with
the cell that holds it. Seeds belong to cells, never to the executor that runs them: the same file
gives the same table in-process, on a local cluster and through a scheduler. Grid axes beyond the
two plotted ones give one panel per combination of their values.
"""
from __future__ import annotations

import itertools
import math
import statistics
import textwrap
import time
import tomllib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..certify import LIPSCHITZ_FORMS
from ..config import ConfigError, RunConfig
from ..report import dumps, save_figure, write_csv
from .engine import Cell, CellResult, ResultStore, Row, run_grid
from .executors import DaskExecutor, InProcess

SEED_RULES = ("shared", "per-cell")
PLOT_KINDS = ("heatmap", "curves")
STATISTICS: dict[str, Callable[[list[float]], float]] = {
    "mean": statistics.fmean, "median": statistics.median, "min": min, "max": max,
    "std": lambda values: statistics.pstdev(values) if len(values) > 1 else 0.0,
}
MAX_PANELS = 12
UNSET = ""  # a cell's value on an axis its block does not set (the table's empty field)
_SEEDED = ("run.seed", "run.runs")  # the sweep's own: [sweep] seed, seeds and trials


@dataclass(frozen=True)
class Output:
    """A recordable column: its help, what it needs, and how to read it from a run's metrics."""

    help: str
    read: Callable[[dict], Any]
    needs: str = ""  # "image" (a truth image), "certificate" ([certificate] certify = true), "forms" (below)


def _stop(key: str) -> Callable[[dict], Any]:
    return lambda run: run["stop"][key]


def _oracle(key: str) -> Callable[[dict], Any]:
    return lambda run: run["stop"].get("oracle", {}).get(key, math.nan)


def _certificate(name: str) -> Callable[[dict], Any]:
    def read(run: dict) -> Any:
        value = run["certificate"][name]
        return "" if value is None else value  # condition (4) undecided
    return read


_CERTIFIED = {
    "condition_4": "the verdict of condition (4) of Theorem III.1 (empty when undecidable)",
    "margin": "R - R' of condition (4) (a lower bound)",
    "R": "the radius R of Theorem III.1 (a lower bound)",
    "R_prime": "the radius R' of Theorem III.1 (an upper bound)",
    "sigma_A": "sigma_min(A), the smallest non-zero singular value of A",
    "L": "the Lipschitz constant of the gradient used by the certificate",
    "step_max": "1/L, the largest step the theorem allows (an upper bound)",
    "sigma_min_J0": "sigma_min(J_g(theta_0))",
    "norm_AJ0_sq": "||A J_g(theta_0)||^2 (a lower bound)",
    "k_bound": "the width Corollary III.2 asks for (an estimate, with its constants)",
    "tau_eps": "the early-stopping time of the certificate (an upper bound)",
}
OUTPUTS: dict[str, Output] = {
    "status": Output("how the run ended: converged (loss <= loss_tol), max_iters, stopped, diverged, ...",
                     lambda run: run["status"]),
    "converged": Output("the loss reached training.loss_tol (status converged)", lambda run: run["status"] == "converged"),
    "iterations": Output("iterations run", lambda run: run["iterations"]),
    "gradient_evaluations": Output("gradient evaluations", lambda run: run["gradient_evaluations"]),
    "final_loss": Output("the loss at the last iterate", lambda run: run["final_loss"]),
    "step": Output("the step the run used (the learning rate for adam; empty for the flows)",
                   lambda run: run.get("step", "")),
    "error": Output("||x - x_true|| of the returned iterate", lambda run: run["error"]),
    "error_last": Output("||x - x_true|| of the last iterate", lambda run: run["error_last"]),
    "relative_error": Output("||x - x_true|| / ||x_true||", lambda run: run["relative_error"]),
    "psnr": Output("PSNR (dB) of the returned iterate", lambda run: run["psnr"], "image"),
    "ssim": Output("SSIM of the returned iterate", lambda run: run["ssim"], "image"),
    "psnr_last": Output("PSNR (dB) of the last iterate", lambda run: run["psnr_last"], "image"),
    "ssim_last": Output("SSIM of the last iterate", lambda run: run["ssim_last"], "image"),
    "psnr_observation": Output("PSNR (dB) of the observation y, where A is square (empty otherwise)",
                               lambda run: run.get("psnr_observation", ""), "image"),
    "noise_norm": Output("||epsilon||, the norm of the noise drawn (0 without noise)",
                         lambda run: run.get("noise_norm", 0.0)),
    "stop_rule": Output("the stopping rule applied (what auto resolved to)", _stop("rule")),
    "stop_tau": Output("the iteration of the returned iterate", _stop("tau")),
    "oracle_tau": Output("the iteration nearest x_true among those computed (an oracle)", _oracle("tau")),
    "oracle_error": Output("||x - x_true|| at the oracle iteration", _oracle("error")),
    **{name: Output(f"certificate: {text}; the column {name}_kind says exact, bound or estimate per row",
                    _certificate(name), "certificate") for name, text in _CERTIFIED.items()},
}
FORM_OUTPUTS = {f"condition_4_{form.replace('-', '_')}": form for form in LIPSCHITZ_FORMS}
OUTPUTS.update({name: Output(
    f"condition (4) at theta_0 with the {form} Lipschitz bound, at that bound's certified step 1/(2L) (Fig. 1 (a); "
    "the two-layer network and the MSE loss; independent of the run's own step and certificate)",
    lambda run, form=form: run["forms"][form], "forms") for name, form in FORM_OUTPUTS.items()})
DEFAULT_RECORD = ("status", "converged", "iterations", "final_loss", "error")


@dataclass(frozen=True)
class PlotSpec:
    kind: str
    x: str
    y: str
    value: str
    statistic: str = "mean"
    title: str = ""


@dataclass(frozen=True)
class Sweep:
    """A parsed and checked sweep file (see the module docstring)."""

    name: str
    base: dict[str, dict[str, Any]]
    blocks: tuple[tuple[tuple[str, tuple], ...], ...]  # each block: its axes (the same in every block)
    trials: int
    batch: int
    seed: int
    seeds: str
    record: tuple[str, ...]
    plot: PlotSpec | None = None

    @classmethod
    def load(cls, path: str | Path, scale: str | None = None) -> "Sweep":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read sweep file {path}: {exc.__class__.__name__}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"cannot parse sweep file {path}: {exc}") from None
        return cls.from_dict(data, default_name=path.stem, scale=scale)

    @classmethod
    def from_dict(cls, data: dict, default_name: str = "sweep", scale: str | None = None) -> "Sweep":
        _only(data, {"sweep", "base", "grid", "plot", "scales"}, "the sweep file")
        data = _at_scale(data, scale)
        head = data.get("sweep", {})
        _only(head, {"name", "trials", "batch", "seed", "seeds", "record"}, "[sweep]")
        name = head.get("name", default_name)
        if not isinstance(name, str) or not name or any(c in name for c in "/\\") or name.startswith("."):
            raise ConfigError(f"[sweep] name must be a file name (no / or \\), got {name!r}")
        trials, seed = head.get("trials", 1), head.get("seed", 0)
        if not _integer(trials) or not 1 <= trials <= 1 << 20:
            raise ConfigError(f"[sweep] trials must be an integer from 1 to {1 << 20}, got {trials!r}")
        batch = head.get("batch", trials)
        if not _integer(batch) or not 1 <= batch <= trials:
            raise ConfigError(f"[sweep] batch (trials trained at once) must be an integer from 1 to trials = {trials}, "
                              f"got {batch!r}")
        if not _integer(seed) or not 0 <= seed <= 2**62:
            raise ConfigError(f"[sweep] seed must be an integer from 0 to 2^62, got {seed!r}")
        seeds = head.get("seeds", "shared")
        if seeds not in SEED_RULES:
            raise ConfigError(f"[sweep] seeds must be one of {', '.join(SEED_RULES)}, got {seeds!r}")
        record = head.get("record", list(DEFAULT_RECORD))
        if not isinstance(record, list) or not record or not all(isinstance(r, str) for r in record):
            raise ConfigError("[sweep] record must be a non-empty list of output names")
        unknown = [r for r in record if r not in OUTPUTS]
        if unknown:
            raise ConfigError(f"[sweep] record: unknown output(s) {', '.join(unknown)}; allowed: {', '.join(OUTPUTS)}")
        base = data.get("base", {})
        if not isinstance(base, dict) or not all(isinstance(v, dict) for v in base.values()):
            raise ConfigError("[base] must hold sections of a run configuration ([base.operator], ...)")
        grid = data.get("grid", {})
        blocks = tuple(_axes(block) for block in (grid if isinstance(grid, list) else [grid]))
        for section, options in base.items():
            for option in options:
                if f"{section}.{option}" in _SEEDED:
                    raise ConfigError(f"[base.{section}] {option}: seeds and trials belong to [sweep] (seed, seeds, "
                                      "trials)")
        in_every_block = [key for key, _ in blocks[0] if all(key in dict(block) for block in blocks)]
        sweep = cls(name, base, blocks, trials, batch, seed, seeds, tuple(record),
                    _plot(data.get("plot"), in_every_block, record))
        keys = [cell.key for cell in sweep.cells()]
        if len(set(keys)) != len(keys):
            twice = next(key for key in keys if keys.count(key) > 1)
            raise ConfigError(f"[[grid]] blocks overlap: the cell {twice} is in two of them")
        check_panels(sweep)
        return sweep

    @property
    def axes(self) -> tuple[tuple[str, tuple], ...]:
        """Each axis of any block with its values over every block, in order of first appearance;
        an axis that some block does not set also has the value ``UNSET``."""
        values: dict[str, dict[str, Any]] = {}
        for block in self.blocks:
            for key, axis in block:
                values.setdefault(key, {}).update({dumps(v): v for v in axis if dumps(v) not in values.get(key, {})})
        for key in values:
            if not all(key in dict(block) for block in self.blocks):
                values[key][dumps(UNSET)] = UNSET
        return tuple((key, tuple(axis.values())) for key, axis in values.items())

    def coordinates(self, cell: Cell) -> dict[str, Any]:
        """The cell's value on every axis of the sweep (``UNSET`` where its block does not set one):
        the first columns of its rows."""
        own = dict(cell.coords)
        return {key: own.get(key, UNSET) for key, _ in self.axes}

    def cells(self) -> list[Cell]:
        """The cells of every block, block by block, each block the product of its axes."""
        return [Cell.of(**{key: value for (key, _), value in zip(block, combination)})
                for block in self.blocks for combination in itertools.product(*(values for _, values in block))]

    def first_seed(self, index: int) -> int:
        """The seed of trial 0 of cell ``index`` (grid order)."""
        return self.seed + (index * self.trials if self.seeds == "per-cell" else 0)

    def run_config(self, cell: Cell, index: int, first: int = 0, runs: int | None = None) -> RunConfig:
        """The configuration of trials ``first`` to ``first + runs`` (default: all) of cell ``index``."""
        nested = {section: dict(values) for section, values in self.base.items()}
        for key, value in cell.coords:
            section, option = key.split(".")
            nested.setdefault(section, {})[option] = value
        nested.setdefault("run", {}).update(seed=self.first_seed(index) + first, runs=runs or self.trials)
        return RunConfig.build(nested)

    def batches(self) -> list[tuple[int, int]]:
        """(first trial, trials) of each batch of a cell."""
        return [(first, min(self.batch, self.trials - first)) for first in range(0, self.trials, self.batch)]

    def check(self) -> list[RunConfig]:
        """Every cell's configuration, built and checked (options, combination, memory) before any
        work; an error names the cell."""
        from ..solve import check_before_work

        configs = []
        for index, cell in enumerate(self.cells()):
            try:
                config = self.run_config(cell, index)
                check_before_work(self.run_config(cell, index, *self.batches()[0]))  # the largest batch
            except ValueError as exc:
                raise ConfigError(f"cell {_label(cell)}: {exc}") from None
            for name in self.record:
                needs = OUTPUTS[name].needs
                if needs == "image" and config.problem.name != "image":
                    raise ConfigError(f"[sweep] record: {name} needs an image problem ([base.problem] signal = "
                                      f"\"image\"); cell {_label(cell)} has signal {config.problem.name}")
                if needs == "certificate" and not config.certificate.certify:
                    raise ConfigError(f"[sweep] record: {name} is a certificate quantity: set [base.certificate] "
                                      "certify = true")
                if needs == "forms" and (config.network.name != "two-layer" or config.loss.name != "mse"):
                    raise ConfigError(f"[sweep] record: {name} needs the two-layer network and the MSE loss; cell "
                                      f"{_label(cell)} has {config.network.name} and {config.loss.name}")
            configs.append(config)
        seen: dict[str, Cell] = {}
        for cell, config in zip(self.cells(), configs):
            resolved = config.to_dict()
            text = dumps({**resolved, "run": {**resolved["run"], "seed": 0}})
            if text in seen:
                raise ConfigError(f"cells {_label(seen[text])} and {_label(cell)} have the same configuration: "
                                  "drop one of them from the grid")
            seen[text] = cell
        return configs

    def stamp(self) -> dict:
        """What the results depend on (the plot does not): the stamp of the result store. A batch
        smaller than the trials changes the last bits of batched arithmetic, so it is stamped too."""
        grids = [{key: list(values) for key, values in block} for block in self.blocks]
        stamp = {"name": self.name, "base": self.base, "grid": grids[0] if len(grids) == 1 else grids,
                 "trials": self.trials, "seed": self.seed, "seeds": self.seeds, "record": list(self.record)}
        return stamp if self.batch == self.trials else {**stamp, "batch": self.batch}


def _axes(grid: Any) -> tuple[tuple[str, tuple], ...]:
    """The axes of one [grid] table, checked."""
    if not isinstance(grid, dict) or not grid:
        raise ConfigError("[grid] is empty: a sweep needs at least one axis (\"section.option\" = [values]); "
                          "for one configuration, use dipcert solve --runs")
    axes = []
    for key, values in grid.items():
        if key.count(".") != 1:
            raise ConfigError(f"[grid] keys are section.option (e.g. \"network.width\"), got {key!r}")
        if key in _SEEDED:
            raise ConfigError(f"[grid] {key}: seeds and trials belong to [sweep] (seed, seeds, trials)")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"[grid] {key} must be a non-empty list of values")
        if len({dumps(v) for v in values}) != len(values):
            raise ConfigError(f"[grid] {key} lists a value twice")
        axes.append((key, tuple(values)))
    return tuple(axes)


def _at_scale(data: dict, scale: str | None) -> dict:
    """``data`` with the tables of ``[scales.SCALE]`` laid over it (a table's keys replace the file's
    one by one; [grid] and lists are replaced whole); without ``scale``, the file as written."""
    scales = data.get("scales", {})
    if not isinstance(scales, dict) or not all(isinstance(v, dict) for v in scales.values()):
        raise ConfigError("[scales] must hold tables [scales.NAME] of what NAME changes")
    data = {key: value for key, value in data.items() if key != "scales"}
    if scale is None:
        return data
    if scale not in scales:
        raise ConfigError(f"the sweep file has no scale {scale!r}; it has: {', '.join(scales) or 'none'}")
    changes = scales[scale]
    _only(changes, {"sweep", "base", "grid", "plot"}, f"[scales.{scale}]")
    out = dict(data)
    for table, value in changes.items():
        if not isinstance(value, dict) and not (table == "grid" and isinstance(value, list)):
            raise ConfigError(f"[scales.{scale}] {table} must be a table" + (" or a list of tables" if table == "grid"
                                                                             else ""))
        if table == "grid" or not isinstance(out.get(table), dict):
            out[table] = value
        elif table == "base":
            if not all(isinstance(options, dict) for options in value.values()):
                raise ConfigError(f"[scales.{scale}.base] must hold sections of a run configuration")
            out[table] = {section: {**out[table].get(section, {}), **options} for section, options in
                          {**{s: {} for s in out[table]}, **value}.items()}
        else:
            out[table] = {**out[table], **value}
    return out


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _only(table: Any, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _plot(table: Any, axes: list[str], record: list[str]) -> PlotSpec | None:
    if table is None:
        return None
    _only(table, {"kind", "x", "y", "value", "statistic", "title"}, "[plot]")
    kind = table.get("kind", "heatmap")
    if kind not in PLOT_KINDS:
        raise ConfigError(f"[plot] kind must be one of {', '.join(PLOT_KINDS)}, got {kind!r}")
    for key in ("x", "y"):
        if table.get(key) not in axes:
            raise ConfigError(f"[plot] {key} must be an axis of every [[grid]] block ({', '.join(axes)}), "
                              f"got {table.get(key)!r}")
    if table["x"] == table["y"]:
        raise ConfigError("[plot] x and y must be two different grid axes")
    value, statistic = table.get("value"), table.get("statistic", "mean")
    if value not in record:
        raise ConfigError(f"[plot] value must be a recorded output ({', '.join(record)}), got {value!r}")
    if value in ("status", "stop_rule"):
        raise ConfigError(f"[plot] value {value} is text: plot a number or a yes/no output")
    if statistic not in STATISTICS:
        raise ConfigError(f"[plot] statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    return PlotSpec(kind, table["x"], table["y"], value, statistic, str(table.get("title", "")))


def _label(cell: Cell) -> str:
    return ", ".join(f"{key} = {value}" for key, value in cell.coords)


# ----------------------------------------------------------------------------------------- cells
def run_group(sweep: Sweep, group: list[Cell],
              keep: Callable[[Any, int], dict[str, np.ndarray]] | None = None) -> dict[str, CellResult]:
    """Solve each cell of ``group``, batch by batch (:meth:`Sweep.batches`); one row per trial, and
    the arrays ``keep(outcome, first)`` takes from each batch's solve (its first trial ``first``)."""
    from ..solve import solve

    cells = sweep.cells()
    out = {}
    for cell in group:
        rows, arrays = [], {}
        for first, runs in sweep.batches():
            outcome = solve(sweep.run_config(cell, cells.index(cell), first, runs))
            rows += cell_rows(sweep, cell, outcome, first)
            if keep is not None:
                arrays.update(keep(outcome, first))
        out[cell.key] = CellResult(rows, arrays)
    return out


def cell_rows(sweep: Sweep, cell: Cell, outcome, first: int = 0) -> list[Row]:
    """The rows of the trials ``first``, ``first + 1``, … that ``outcome`` (a :func:`~dipcert.solve.solve`
    of them) computed: the cell's grid values, trial, seed, the recorded outputs, and the seconds of
    the whole solve (certificates included) per trial."""
    start = time.perf_counter()
    by_form = _verdicts_by_form(outcome) if any(OUTPUTS[n].needs == "forms" for n in sweep.record) else None
    per_trial = (outcome.wall_seconds + time.perf_counter() - start) / len(outcome.metrics["runs"])
    rows = []
    for t, run in enumerate(outcome.metrics["runs"], start=first):
        if by_form is not None:
            run = {**run, "forms": {form: bool(holds[t - first]) for form, holds in by_form.items()}}
        row: Row = sweep.coordinates(cell)
        row.update(trial=t, seed=run["seed"])
        for name in sweep.record:
            row[name] = OUTPUTS[name].read(run)
            if OUTPUTS[name].needs == "certificate":
                row[f"{name}_kind"] = run["certificate"]["kinds"][name]
        row["seconds"] = per_trial
        rows.append(row)
    return rows


def _verdicts_by_form(outcome) -> dict[str, np.ndarray]:
    """Condition (4) at θ_0 under each Lipschitz form, each at its own certified step 1/(2L) per run
    (the spectra shared; L is certified for the two-layer net and the MSE, so no Hessian estimate)."""
    from ..certify import certify_forms

    certificates = certify_forms(outcome.problem, outcome.network, LIPSCHITZ_FORMS, loss=outcome.loss,
                                 hessian_iters=0)
    return {form: certificate.holds for form, certificate in zip(LIPSCHITZ_FORMS, certificates)}


def cost(configs: dict[str, RunConfig], cell: Cell) -> float:
    """A rough relative cost, to start the costliest cells first: trials x iterations x n x width."""
    config = configs[cell.key]
    width = config.network.values.get("width") or sum(config.network.values.get("widths") or ()) or 1
    return float(config.run.runs) * config.training.iters * config.signal_size * width


# --------------------------------------------------------------------------------------- summary
def summary_rows(sweep: Sweep, rows: list[Row], cells: list[Cell] | None = None) -> list[Row]:
    """One row per cell: its grid values, the trial count and, for every numeric or yes/no output,
    the mean over its trials (non-finite values counted apart)."""
    out = []
    names = [key for key, _ in sweep.axes]
    for cell in cells if cells is not None else sweep.cells():
        where = sweep.coordinates(cell)
        mine = [r for r in rows if all(_same(r[key], value) for key, value in where.items())]
        row: Row = {key: where[key] for key in names}
        row["trials"] = len(mine)
        for name in sweep.record:
            values = _numbers(mine, name)
            if values is not None:
                finite = [v for v in values if math.isfinite(v)]
                row[f"{name}_mean"] = statistics.fmean(finite) if finite else math.nan
                if len(finite) < len(values):
                    row[f"{name}_nonfinite"] = len(values) - len(finite)
        out.append(row)
    columns = list(dict.fromkeys(key for row in out for key in row))
    return [{key: row.get(key, 0 if key.endswith("_nonfinite") else "") for key in columns} for row in out]


def _same(a: Any, b: Any) -> bool:
    """A value read back from CSV against the grid's value (numbers compare as numbers)."""
    if isinstance(b, (list, tuple)):
        return str(a) == str(b) or str(a) == ",".join(map(str, b))
    if isinstance(b, bool) or isinstance(a, bool):
        return str(a) == str(b)
    if isinstance(b, (int, float)) and isinstance(a, (int, float)):
        return float(a) == float(b)
    return str(a) == str(b)


def _numbers(rows: list[Row], name: str) -> list[float] | None:
    """The output's values as numbers (yes/no as 1/0), or None when it is text."""
    values = []
    for row in rows:
        value = row[name]
        if isinstance(value, bool):
            values.append(float(value))
        elif isinstance(value, (int, float)):
            values.append(float(value))
        elif value == "":
            continue
        else:
            return None
    return values


# ------------------------------------------------------------------------------------------ plot
def plot(sweep: Sweep, rows: list[Row], path: Path) -> None:
    """The [plot] of ``sweep``: the statistic of a recorded output per cell, as a heat map over
    (x, y) or as curves over x (one per y), one panel per value of the other axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = sweep.plot
    axes = dict(sweep.axes)
    others = [key for key in axes if key not in (spec.x, spec.y)]
    panels = list(itertools.product(*(axes[key] for key in others)))
    xs, ys = axes[spec.x], axes[spec.y]
    reduce = STATISTICS[spec.statistic]
    yes_no = all(isinstance(r[spec.value], bool) or r[spec.value] == "" for r in rows)

    def value(where: dict) -> float:
        values = _numbers([r for r in rows if all(_same(r[k], v) for k, v in where.items())], spec.value) or []
        finite = [v for v in values if math.isfinite(v)]
        return reduce(finite) if finite else math.nan

    columns = min(len(panels), 3)
    lines = math.ceil(len(panels) / columns)
    fig, grid = plt.subplots(lines, columns, figsize=(4.2 * columns + 0.8, 3.3 * lines + 0.6), squeeze=False,
                             layout="constrained")
    label = (f"fraction of trials with {spec.value}" if yes_no and spec.statistic == "mean" else
             f"{spec.statistic} of {spec.value}") + f" ({sweep.trials} trials per cell)"
    image = None
    for ax, panel in zip(grid.flat, panels):
        fixed = dict(zip(others, panel))
        table = np.array([[value({spec.x: x, spec.y: y, **fixed}) for x in xs] for y in ys])
        if spec.kind == "heatmap":
            finite = np.isfinite(table).any()
            low, high = (0, 1) if yes_no or not finite else (np.nanmin(table), np.nanmax(table))
            image = ax.imshow(np.ma.masked_invalid(table), origin="lower", aspect="auto", cmap="viridis",
                              vmin=low, vmax=high)
            if table.size <= 100:
                for (i, j), v in np.ndenumerate(table):
                    if math.isfinite(v):
                        ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=7,
                                color="w" if (v - low) < 0.6 * (high - low or 1) else "k")
            ax.set_xticks(range(len(xs)), [_tick(x) for x in xs], fontsize=8)
            ax.set_yticks(range(len(ys)), [_tick(y) for y in ys], fontsize=8)
            ax.set_ylabel(spec.y, fontsize=9)
        else:
            positions = _positions(xs)
            for y, curve in zip(ys, table):
                ax.plot(positions, curve, marker="o", ms=3, label=f"{spec.y} = {_tick(y)}")
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs) and _spans_decades(xs):
                ax.set_xscale("log")
            else:
                ax.set_xticks(positions, [_tick(x) for x in xs], fontsize=8)
            if yes_no and spec.statistic in ("mean", "median", "min", "max"):
                ax.set_ylim(-0.04, 1.04)
            ax.grid(alpha=0.3)
        ax.set_xlabel(spec.x, fontsize=9)
        ax.tick_params(labelsize=8)
        if fixed:
            ax.set_title(", ".join(f"{k} = {_tick(v)}" for k, v in fixed.items()), fontsize=9)
    for ax in list(grid.flat)[len(panels):]:
        ax.set_visible(False)
    if spec.kind == "heatmap" and image is not None:
        bar = fig.colorbar(image, ax=grid.ravel().tolist(), fraction=0.03, pad=0.02)
        bar.set_label(textwrap.fill(label, 45), fontsize=9)
    else:
        for ax in grid[:, 0]:
            ax.set_ylabel(textwrap.fill(label, 40) if lines == 1 else spec.value, fontsize=9)
        handles, labels = grid.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5), fontsize=8, frameon=False)
    width_inches = fig.get_size_inches()[0]  # about 12 characters an inch at this size
    fig.suptitle(textwrap.fill(spec.title or f"{sweep.name}: {label}", int(12 * width_inches)), fontsize=10)
    save_figure(fig, path, tight=False)


def _tick(value: Any) -> str:
    if value is UNSET:
        return "(not set)"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _positions(xs: tuple) -> Any:
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    return list(xs) if numeric else list(range(len(xs)))


def half_decade(value: float) -> float:
    """log10 of a grid value rounded to the half-decade grid (10^e values rounded to integers or
    written with few digits, as in the shipped figure files)."""
    return round(2 * math.log10(value)) / 2


def _spans_decades(xs: tuple) -> bool:
    return min(xs) > 0 and max(xs) / min(xs) >= 100


def check_panels(sweep: Sweep) -> None:
    """Refuse a plot that would need more than :data:`MAX_PANELS` panels."""
    if sweep.plot is None:
        return
    count = math.prod(len(values) for key, values in sweep.axes if key not in (sweep.plot.x, sweep.plot.y))
    if count > MAX_PANELS:
        raise ConfigError(f"[plot] the grid axes other than x and y make {count} panels (at most {MAX_PANELS}): "
                          "plot fewer axes, or draw from the table")


# --------------------------------------------------------------------------------------- running
def run_sweep(sweep: Sweep, out_dir: str | Path, *, fresh: bool = False,
              executor: InProcess | DaskExecutor | None = None,
              on_group: Callable[[list[Cell], float], None] | None = None,
              on_notice: Callable[[str], None] | None = None,
              configs: list[RunConfig] | None = None,
              figure: Callable[[list[Row], dict[str, dict], Path], dict] | None = None,
              runner: tuple[Callable, Callable[[Cell], Any]] | None = None,
              keep: Callable[[Cell], bool] | None = None, table: str | None = None) -> dict[str, Path]:
    """Check every cell (unless ``configs``, what :meth:`Sweep.check` returned, is given), then run
    (or resume) ``sweep`` in ``out_dir``: ``NAME.csv`` (one row per trial), ``NAME.summary.csv`` (one
    row per cell), ``NAME.png`` (the [plot], or what ``figure(rows, arrays, path)`` draws from the
    rows and the cells' arrays, whose returned summary joins the manifest) and the manifest
    ``NAME.json``; NAME is ``table`` or the sweep's name, and only the cells ``keep`` selects run
    (finished cells are kept in ``SWEEP.cells/``, shared by the tables of one sweep).
    ``runner`` = (run_group(sweep, cells), group_of(cell)) runs groups of cells at once where an
    experiment knows how to batch them (it must give the rows of :func:`run_group`, as Fig. 1's
    does); by default each cell is its own group."""
    configs = configs if configs is not None else sweep.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = table or sweep.name
    store = ResultStore(out, sweep.name, sweep.stamp(), fresh=fresh)
    chosen = [(cell, config) for cell, config in zip(sweep.cells(), configs) if keep is None or keep(cell)]
    grid = [cell for cell, _ in chosen]
    by_key = {cell.key: config for cell, config in chosen}
    start = time.perf_counter()
    task, group_of = runner or (run_group, lambda cell: cell.key)
    rows = run_grid(store, grid, partial(task, sweep), group_of, on_group=on_group, table=name, executor=executor,
                    cost=partial(cost, by_key), on_notice=on_notice)
    seconds = time.perf_counter() - start
    per_cell = summary_rows(sweep, rows, grid)
    summary_path = out / f"{name}.summary.csv"
    write_csv(summary_path, {key: [row[key] for row in per_cell] for key in per_cell[0]})
    paths = {"table": store.table_path(name), "summary": summary_path}
    drawn = None
    if figure is not None:
        paths["figure"] = out / f"{name}.png"
        arrays = {cell.key: store.read_arrays(cell) for cell in grid if store.has_arrays(cell)}
        drawn = figure(rows, arrays, paths["figure"])
    elif sweep.plot is not None:
        paths["figure"] = out / f"{name}.png"
        plot(sweep, rows, paths["figure"])
    extra = {**({"summary": drawn} if drawn is not None else {}),
             "outputs": {output: OUTPUTS[output].help for output in sweep.record},
             "executor": (executor or InProcess()).description,
             "seed_rule": (f"trial t of every cell uses seed {sweep.seed} + t" if sweep.seeds == "shared" else
                           f"trial t of cell c (grid order) uses seed {sweep.seed} + c*{sweep.trials} + t"),
             "configurations": {cell.key: config.to_dict() for cell, config in chosen}}
    paths["manifest"] = store.write_manifest(len(grid), len(rows), seconds, extra, table=name)
    return paths


def finished_results(sweep: Sweep, out_dir: str | Path) -> tuple[list[Row], dict[str, dict[str, np.ndarray]]]:
    """The rows and the arrays (by cell key) of ``sweep`` as :func:`run_sweep` left them in ``out_dir``,
    every cell finished."""
    store = ResultStore(Path(out_dir), sweep.name, sweep.stamp())
    cells = sweep.cells()
    unfinished = [cell.key for cell in cells if store.check(cell) is not None]
    if unfinished:
        raise ValueError(f"{store.cell_dir}: unfinished cell(s) {', '.join(unfinished)}")
    return ([row for cell in cells for row in store.read(cell)],
            {cell.key: store.read_arrays(cell) for cell in cells if store.has_arrays(cell)})


__all__ = ["OUTPUTS", "PlotSpec", "Sweep", "run_sweep", "summary_rows"]
