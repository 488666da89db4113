"""Fig. 2 of the paper: which step sizes γ converge, as the signal size n grows (k = 10⁴), and the
companion experiment described in its text: n and m fixed, k varied, the divergence threshold in γ
does not depend on k.

The experiment is the sweep file ``sweeps/fig2.toml`` (its comments give the setting and our choices
where the paper is silent); ``dipcert reproduce fig2`` runs it on the sweep engine, and this module
draws the figure and its summary from the sweep's table. It also runs the file's groups faster than
cell by cell (:func:`run_group`): every step of one (n, k) trains as one batch, and since only W
trains, A g(u, θ) = (A V_0) φ(W u)/√k: each trial trains against the m×k matrix A V_0, an exact
rewriting (:func:`folded`) that makes a trial's cost independent of n. It gives the rows of the
sweep's own runner (``tests/test_experiments.py`` checks it).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..networks import TwoLayerDIP
from ..operators import Matrix
from ..optim import GradientDescent, train
from ..problems import Problem, gaussian_problem
from ..report import save_figure
from ..seeding import derive_seed
from .engine import Cell, CellResult, Row
from .sweep import Sweep, half_decade

TITLE = "Fig. 2: convergence against the step size, for growing n (k = 1e4), and for growing k"
SWEEP_FILE = Path(__file__).parent / "sweeps" / "fig2.toml"
#: what :func:`run_group` can record (the sweep file's outputs)
RECORDS = {"converged", "final_loss", "iterations", "status", "step"}


def load(scale: str) -> Sweep:
    """The Fig. 2 sweep at ``scale`` ("paper": the file as written; "quick": its [scales.quick])."""
    return Sweep.load(SWEEP_FILE, None if scale == "paper" else scale)


def group_of(cell: Cell) -> tuple:
    """Every step size of one (n, k) runs as one batch (one step per trial)."""
    return (cell["problem.n"], cell["network.width"])


def folded(problem: Problem, network: TwoLayerDIP) -> tuple[Problem, TwoLayerDIP]:
    """The exact W-only rewriting A g(u, θ) = (A V_0) φ(W u)/√k: a problem with A = I_m and a
    network whose fixed output layer is A V_0 (m×k)."""
    if network.trains_v:
        raise ValueError("folding A into the output layer needs V fixed (train='W')")
    op = problem.operator
    AV = op.forward_flat(network.V0.permute(2, 0, 1)).permute(1, 2, 0).contiguous()  # (batch, m, k)
    net = network.select(torch.arange(network.batch))
    net.V0, net.n = AV, problem.m
    eye = torch.eye(problem.m, dtype=problem.y.dtype, device=problem.y.device)
    return Problem(Matrix(eye), problem.y, None, problem.noise), net


def run_group(sweep: Sweep, group: list[Cell]) -> dict[str, CellResult]:
    """The rows :func:`~.sweep.run_group` gives for ``group`` (one n and k, every step), with every
    step's trials trained as one folded batch."""
    cells = sweep.cells()
    configs = [sweep.run_config(cell, cells.index(cell)) for cell in group]
    config = configs[0]
    if not set(sweep.record) <= RECORDS or config.stopping.name != "none" or config.method.name != "gd" \
            or config.network.train != "W" or any(isinstance(c.method.step, str) for c in configs):
        raise ValueError(f"fig2.run_group runs gd with given steps, W trained, without a stopping rule, and "
                         f"records {sorted(RECORDS)} only")
    n, m, k, seeds, net = config.problem.n, config.operator.m, config.network.width, config.seeds, config.network
    start = time.perf_counter()
    problem = gaussian_problem(n, m, seeds * len(group))
    network = TwoLayerDIP(n, k, d=net.d, activation=net.activation, v_law=net.v_law, train=net.train,
                          seeds=[derive_seed(s, "network") for s in seeds] * len(group))
    problem, network = folded(problem, network)
    steps = torch.tensor([c.method.step for c in configs for _ in seeds], dtype=torch.float64)
    training = config.training
    result = train(problem, network, GradientDescent(steps), max_iters=training.iters, loss_tol=training.loss_tol,
                   record_every=training.record_every, stall_patience=training.stall_patience)
    per_trial = (time.perf_counter() - start) / len(steps)
    out = {}
    for i, cell in enumerate(group):
        rows: list[Row] = []
        for t, seed in enumerate(seeds):
            b = i * len(seeds) + t
            values = {"converged": result.status[b] == "converged", "final_loss": float(result.final_loss[b]),
                      "iterations": int(result.iterations[b]), "status": result.status[b], "step": float(steps[b])}
            rows.append({**sweep.coordinates(cell), "trial": t, "seed": seed, **{r: values[r] for r in sweep.record},
                         "seconds": per_trial})
        out[cell.key] = CellResult(rows)
    return out


def _panels(sweep: Sweep) -> tuple[int, int | None]:
    """(the width of panel (a), the n of panel (b)): the first block's width and the second's n."""
    first = dict(sweep.blocks[0])
    second = dict(sweep.blocks[1]) if len(sweep.blocks) > 1 else None
    return first["network.width"][0], second["problem.n"][0] if second else None


def summary(sweep: Sweep, rows: list[Row]) -> dict:
    """P(converged) per (n or k, γ); the largest γ converging with probability ≥ 1/2. Panel (a): every
    n at the first block's width; panel (b): every k at the second block's n."""
    width, companion_n = _panels(sweep)
    log10_steps = sorted({half_decade(r["method.step"]) for r in rows})
    out: dict = {}
    for key, column, mine in (("n", "problem.n", [r for r in rows if r["network.width"] == width]),
                              ("k", "network.width", [r for r in rows if r["problem.n"] == companion_n])):
        table = {}
        for value in sorted({r[column] for r in mine}):
            probs = {g: float(np.mean([r["converged"] for r in mine if r[column] == value
                                       and half_decade(r["method.step"]) == g])) for g in log10_steps}
            good = [g for g, p in probs.items() if p >= 0.5]
            table[value] = {"probability": probs, "largest_log10_step_with_probability_half": max(good) if good else None}
        out[f"by_{key}"] = table
    return out


def plot(sweep: Sweep, rows: list[Row], arrays: dict, path) -> dict:
    """Draw Fig. 2 from the sweep's rows (it keeps no ``arrays``); return :func:`summary`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = summary(sweep, rows)
    width, companion_n = _panels(sweep)
    m, training = sweep.base["operator"]["m"], sweep.base["training"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), sharey=True, layout="constrained")
    markers = "osD^vP<>X*"
    panels = (("n", f"(a) growing n: k = {width:g}, m = {m}"), ("k", f"(b) growing k: n = {companion_n}, m = {m}"))
    for ax, (key, title) in zip(axes, panels):
        table = info[f"by_{key}"]
        for i, (value, entry) in enumerate(table.items()):
            gs = sorted(entry["probability"])
            # open markers of different shapes and sizes: points that coincide stay visible
            ax.plot(gs, [entry["probability"][g] for g in gs], marker=markers[i % len(markers)],
                    markersize=max(4.0, 11.0 - 2.0 * i), mfc="none", mew=1.6, lw=1.4, zorder=2 + i,
                    label=f"{value:g}")
        ax.set_xticks(sorted({g for entry in table.values() for g in entry["probability"]}))
        ax.set_xlabel("$\\log_{10}$ step $\\gamma$")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(title, fontsize=10)
        ax.legend(title=key, fontsize=8, title_fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"P[$L_y(y_\\tau) \\leq$ {training['loss_tol']:g} within {training['iters']:g} it.]", fontsize=9)
    fig.suptitle(f"Fig. 2: convergence against the step size, for growing n (k = {width:g}) and for growing k; "
                 f"{sweep.trials} trials per point", fontsize=10)
    save_figure(fig, path)
    return info
