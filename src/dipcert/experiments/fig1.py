"""Fig. 1 of the paper: the width needed for condition (4), against the width needed to converge.

The experiment is the sweep file ``sweeps/fig1.toml`` (its comments give the setting and our
choices where the paper is silent); ``dipcert reproduce fig1`` runs it on the sweep engine, and this
module draws the figure and its summary from the sweep's table. It also runs the file's groups
faster than cell by cell: every m of one width trains as one batch (:func:`run_group`), which gives
the rows of the sweep's own runner (``tests/test_experiments.py`` checks it). Panel (a): the empirical
probability that condition (4) holds, for each Lipschitz form, over a k grid extended beyond the
training grid; panel (b): the probability that L_y(y_τ) ≤ 1e-14 within 1e5 gradient-descent
iterations.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ..certify import LIPSCHITZ_FORMS, certify_forms
from ..networks import TwoLayerDIP
from ..operators import Matrix
from ..optim import GradientDescent, train
from ..problems import Problem, gaussian_problem
from ..report import save_figure
from ..seeding import derive_seed
from ..steps import auto_steps
from .engine import Cell, CellResult, Row
from .sweep import FORM_OUTPUTS, Sweep, half_decade
from .sweep import run_group as run_cells

TITLE = "Fig. 1: width for condition (4) vs width for convergence (n = 5, sigmoid, W trained)"
SWEEP_FILE = Path(__file__).parent / "sweeps" / "fig1.toml"
FORM_COLUMNS = {form: name for name, form in FORM_OUTPUTS.items()}


def load(scale: str) -> Sweep:
    """The Fig. 1 sweep at ``scale`` ("paper": the file as written; "quick": its [scales.quick])."""
    return Sweep.load(SWEEP_FILE, None if scale == "paper" else scale)


#: V_0 entries (all m, all trials) from which a group runs cell by cell instead (memory bound)
MAX_PADDED_ENTRIES = 25_000_000
#: what :func:`run_group` can record (the sweep file's outputs)
RECORDS = {"converged", "final_loss", "iterations", "status", "step", *FORM_OUTPUTS}


def group_of(cell: Cell) -> tuple:
    """Every m of one width and iteration budget runs as one batch."""
    return (cell["training.iters"], cell["network.width"])


def _padded_problem(n: int, ms: list[int], seeds: list[int]) -> Problem:
    """The problems of every m, A and y zero-padded to the largest m: zero rows change neither the
    loss nor its gradient."""
    parts = [gaussian_problem(n, m, seeds) for m in ms]
    m_max = max(ms)
    A = torch.zeros(len(ms) * len(seeds), m_max, n, dtype=torch.float64)
    y = torch.zeros(len(ms) * len(seeds), m_max, dtype=torch.float64)
    for i, (m, part) in enumerate(zip(ms, parts)):
        rows = slice(i * len(seeds), (i + 1) * len(seeds))
        A[rows, :m] = part.operator.matrix
        y[rows, :m] = part.y
    return Problem(Matrix(A), y, torch.cat([part.x_true for part in parts]), torch.zeros_like(y))


def run_group(sweep: Sweep, group: list[Cell]) -> dict[str, CellResult]:
    """The rows :func:`~.sweep.run_group` gives for ``group`` (one width, every m), with every m's
    trials trained as one batch; a group too large for that runs cell by cell."""
    cells = sweep.cells()
    config = sweep.run_config(group[0], cells.index(group[0]))
    n, k, seeds = config.problem.n, config.network.width, config.seeds
    if len(group) * len(seeds) * n * k > MAX_PADDED_ENTRIES:
        return run_cells(sweep, group)
    if not set(sweep.record) <= RECORDS or config.stopping.name != "none" or config.method.name != "gd":
        raise ValueError(f"fig1.run_group runs gd without a stopping rule and records {sorted(RECORDS)} only")
    start = time.perf_counter()
    ms = [sweep.run_config(cell, cells.index(cell)).operator.m for cell in group]
    net = config.network
    network = TwoLayerDIP(n, k, d=net.d, activation=net.activation, v_law=net.v_law, train=net.train,
                          seeds=[derive_seed(s, "network") for s in seeds] * len(ms))  # trial t of every m: one seed
    problem = _padded_problem(n, ms, seeds)
    steps = auto_steps(problem, network)
    training = config.training
    result = train(problem, network, GradientDescent(steps), max_iters=training.iters, loss_tol=training.loss_tol,
                   record_every=training.record_every, stall_patience=training.stall_patience)
    out = {}
    for i, (cell, m) in enumerate(zip(group, ms)):
        runs = torch.arange(i * len(seeds), (i + 1) * len(seeds))
        certificates = certify_forms(gaussian_problem(n, m, seeds), network.select(runs), LIPSCHITZ_FORMS,
                                     hessian_iters=0)
        rows = []
        for t, b in enumerate(runs.tolist()):
            values = {"converged": result.status[b] == "converged", "final_loss": float(result.final_loss[b]),
                      "iterations": int(result.iterations[b]), "status": result.status[b], "step": float(steps[b]),
                      **{name: bool(c.holds[t]) for name, c in zip(FORM_OUTPUTS, certificates)}}
            rows.append({**sweep.coordinates(cell), "trial": t, "seed": seeds[t], **{r: values[r] for r in sweep.record}})
        out[cell.key] = CellResult(rows)
    per_trial = (time.perf_counter() - start) / (len(group) * len(seeds))
    for result_rows in out.values():
        for row in result_rows.rows:
            row["seconds"] = per_trial
    return out


def trained_iterations(sweep: Sweep) -> int:
    """The iteration budget of the trained block (the certificate-only block runs one iteration)."""
    return max(dict(sweep.axes)["training.iters"])


def summary(sweep: Sweep, rows: list[Row]) -> dict:
    """Probabilities per (m, k), and for each m the smallest k where each reaches 1/2."""
    iters = trained_iterations(sweep)
    ms = sorted({r["operator.m"] for r in rows})

    def prob(m, e, column):
        values = [r[column] for r in rows if r["operator.m"] == m and half_decade(r["network.width"]) == e
                  and (column != "converged" or r["training.iters"] == iters)]
        return float(np.mean(values)) if values else math.nan

    all_ks = sorted({half_decade(r["network.width"]) for r in rows})
    columns = ["converged"] + [FORM_COLUMNS[f] for f in LIPSCHITZ_FORMS]
    table = {c: {m: [prob(m, e, c) for e in all_ks] for m in ms} for c in columns}
    first_half = {c: {m: next((e for e, p in zip(all_ks, table[c][m]) if p >= 0.5), None) for m in ms}
                  for c in columns}
    return {"log10_ks": all_ks, "probability": table, "smallest_log10_k_with_probability_half": first_half}


def _cell_edges(centres) -> np.ndarray:
    """Edges of the cells centred on ``centres`` (sorted; spacing may vary): midpoints between
    neighbours, the ends half a neighbouring gap out."""
    c = np.asarray(centres, dtype=float)
    if len(c) == 1:
        return np.array([c[0] - 0.25, c[0] + 0.25])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def plot(sweep: Sweep, rows: list[Row], arrays: dict, path) -> dict:
    """Draw Fig. 1 from the sweep's rows (it keeps no ``arrays``); return :func:`summary`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MultipleLocator

    info = summary(sweep, rows)
    iters, loss_tol = trained_iterations(sweep), sweep.base["training"]["loss_tol"]
    ms = sorted(info["probability"]["converged"])
    ks = info["log10_ks"]
    trained_ks = {half_decade(r["network.width"]) for r in rows if r["training.iters"] == iters}
    trained = [i for i, e in enumerate(ks) if e in trained_ks]
    panels = [(FORM_COLUMNS[f], f"(a) P[(4) holds]\n{f} Lipschitz bound", list(range(len(ks))))
              for f in LIPSCHITZ_FORMS]
    panels.append(("converged", f"(b) P[$L_y(y_\\tau) \\leq$ {loss_tol:g}]\nwithin {iters:g} iterations", trained))
    # every k cell as wide in every panel: panel widths follow their k range
    edges = [_cell_edges([ks[i] for i in columns]) for _, _, columns in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 1.2, 3.6), squeeze=False, sharey=True,
                             layout="constrained", gridspec_kw={"width_ratios": [e[-1] - e[0] for e in edges]})
    m_edges = np.arange(len(ms) + 1) - 0.5
    for ax, (column, title, columns), x_edges in zip(axes[0], panels, edges):
        grid = np.array([[info["probability"][column][m][i] for i in columns] for m in ms])
        image = ax.pcolormesh(x_edges, m_edges, np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="viridis")
        ax.set_xlim(x_edges[0], x_edges[-1])
        ax.xaxis.set_major_locator(MultipleLocator(1))
        ax.set_xlabel("$\\log_{10} k$", fontsize=9)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        if column != "converged" and len(trained) < len(ks):
            ax.axvline(x_edges[len(trained)], color="w", lw=1.2, ls=":")
    axes[0][0].set_yticks(range(len(ms)), [str(m) for m in ms])
    axes[0][0].set_ylabel("m (measurements)", fontsize=9)
    axes[0][-1].tick_params(labelleft=True)  # (b) stands apart from the three (a) panels
    fig.get_layout_engine().set(wspace=0.03)
    bar = fig.colorbar(image, ax=axes[0].tolist(), fraction=0.025, pad=0.015, aspect=25)
    bar.set_label("probability", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    note = "(a): white dotted line = right end of the k range of (b); " if len(trained) < len(ks) else ""
    fig.suptitle(f"{TITLE}\n{note}{sweep.trials} trials per cell; V0 Rademacher, "
                 f"step 1/||A J(theta0)||^2 per trial (our choices)", fontsize=9)
    save_figure(fig, path, tight=False)
    return info
