"""Fig. 2 of the paper: which step sizes γ converge, as the signal size n grows (k = 10⁴), and the
companion experiment described in its text: n and m fixed, k varied, the divergence threshold in γ
does not depend on k.

A trial converges when L_y(y_τ) ≤ 1e-14 within 1e5 gradient-descent iterations (as in Fig. 1).

Our choices where the paper is silent (recorded in the manifest): m = 2 measurements for every n
(the paper does not give m for Fig. 2), V_0 Rademacher, d = 32, sigmoid, hidden layer W trained;
the companion experiment (range of k not stated) uses k = 10^2 … 10^4 in half decades. Its
k = 10^4 point is the n = companion_n, k = width group of the main panel (the same trials, run
once). k = 10^5 is a configuration option left out of the paper scale for cost (about ten times
a k = 10^4 group, 5.7 GB).
Since only W trains, A g(u, θ) = (A V_0) φ(W u)/√k: each trial trains against the m×k matrix A V_0,
an exact rewriting that makes a trial's cost independent of n.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..networks import TwoLayerDIP
from ..operators import Matrix
from ..optim import GradientDescent, train
from ..problems import Problem, gaussian_problem
from ..report import save_figure
from ..seeding import derive_seed
from .engine import Cell, CellResult, Row, settings_and_choices

TITLE = "Fig. 2: convergence against the step size, for growing n (k = 1e4), and for growing k"


@dataclass(frozen=True)
class Config:
    ns: tuple[int, ...] = (5, 10, 20, 40, 80)
    m: int = 2
    width: int = 10_000
    companion_n: int = 5
    companion_log10_ks: tuple[float, ...] = (2.0, 2.5, 3.0, 3.5, 4.0)
    log10_steps: tuple[float, ...] = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
    trials: int = 50
    iters: int = 100_000
    loss_tol: float = 1e-14
    seed: int = 0
    activation: str = "sigmoid"
    d: int = 32

    @classmethod
    def at_scale(cls, scale: str) -> "Config":
        if scale == "paper":
            return cls()
        return cls(ns=(5, 20), width=1000, companion_log10_ks=(2.0, 3.0), log10_steps=(-1.0, 0.0, 1.0, 2.0),
                   trials=6, iters=3000, loss_tol=1e-10)


def cells(config: Config) -> list[Cell]:
    k0 = round(np.log10(config.width), 6)
    by_n = [Cell.of(panel="n", n=n, log10_k=k0, log10_step=g) for n in config.ns for g in config.log10_steps]
    shared = config.companion_n in config.ns  # its k = width point is a group of the main panel
    by_k = [Cell.of(panel="k", n=config.companion_n, log10_k=e, log10_step=g)
            for e in config.companion_log10_ks if not (shared and e == k0) for g in config.log10_steps]
    return by_n + by_k


def _companion(config: Config, row: Row) -> bool:
    """Does ``row`` belong to the companion experiment (n = companion_n, k varied)?"""
    if row["panel"] == "k":
        return True
    return row["n"] == config.companion_n and round(np.log10(row["k"]), 6) in config.companion_log10_ks


def group_of(cell: Cell) -> tuple:
    """Every step size of one (n, k) runs as one batch (one step per trial)."""
    return (cell["panel"], cell["n"], cell["log10_k"])


def cost(cell: Cell) -> float:
    return 10 ** cell["log10_k"]


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


def run_group(config: Config, group: list[Cell]) -> dict[str, CellResult]:
    n, k = group[0]["n"], int(round(10 ** group[0]["log10_k"]))
    seeds = [config.seed + t for t in range(config.trials)]
    start = time.perf_counter()
    problem = gaussian_problem(n, config.m, seeds * len(group))
    network = TwoLayerDIP(n, k, d=config.d, activation=config.activation,
                          seeds=[derive_seed(s, "network") for s in seeds] * len(group))
    problem, network = folded(problem, network)
    steps = torch.tensor([10 ** cell["log10_step"] for cell in group for _ in seeds], dtype=torch.float64)
    result = train(problem, network, GradientDescent(steps), max_iters=config.iters, loss_tol=config.loss_tol,
                   record_every=config.iters)
    per_trial = (time.perf_counter() - start) / len(steps)
    out = {}
    for i, cell in enumerate(group):
        rows: list[Row] = []
        for t, seed in enumerate(seeds):
            b = i * len(seeds) + t
            rows.append({"panel": cell["panel"], "n": n, "m": config.m, "k": k, "log10_step": cell["log10_step"],
                         "step": float(steps[b]), "trial": t, "seed": seed,
                         "converged": result.status[b] == "converged", "final_loss": float(result.final_loss[b]),
                         "iterations": int(result.iterations[b]), "status": result.status[b], "seconds": per_trial})
        out[cell.key] = CellResult(rows)
    return out


def summary(config: Config, rows: list[Row]) -> dict:
    """P(converged) per (n or k, γ); the largest γ converging with probability ≥ 1/2."""
    out: dict = {}
    for panel, key in (("n", "n"), ("k", "k")):
        table = {}
        mine = [r for r in rows if (r["panel"] == "n" if panel == "n" else _companion(config, r))]
        for value in sorted({r[key] for r in mine}):
            probs = {g: float(np.mean([r["converged"] for r in mine if r[key] == value and r["log10_step"] == g]))
                     for g in config.log10_steps}
            good = [g for g, p in probs.items() if p >= 0.5]
            table[value] = {"probability": probs, "largest_log10_step_with_probability_half": max(good) if good else None}
        out[f"by_{key}"] = table
    return out


def plot(config: Config, rows: list[Row], arrays: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = summary(config, rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), sharey=True, layout="constrained")
    markers = "osD^vP<>X*"
    panels = (("n", f"(a) growing n: k = {config.width:g}, m = {config.m}"),
              ("k", f"(b) growing k: n = {config.companion_n}, m = {config.m}"))
    for ax, (key, title) in zip(axes, panels):
        table = info[f"by_{key}"]
        for i, (value, entry) in enumerate(table.items()):
            gs = sorted(entry["probability"])
            # open markers of different shapes and sizes: points that coincide stay visible
            ax.plot(gs, [entry["probability"][g] for g in gs], marker=markers[i % len(markers)],
                    markersize=max(4.0, 11.0 - 2.0 * i), mfc="none", mew=1.6, lw=1.4, zorder=2 + i,
                    label=f"{value:g}")
        ax.set_xticks(config.log10_steps)
        ax.set_xlabel("$\\log_{10}$ step $\\gamma$")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(title, fontsize=10)
        ax.legend(title=key, fontsize=8, title_fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"P[$L_y(y_\\tau) \\leq$ {config.loss_tol:g} within {config.iters:g} it.]", fontsize=9)
    fig.suptitle(f"Fig. 2: convergence against the step size, for growing n (k = {config.width:g}) and for growing k; "
                 f"{config.trials} trials per point", fontsize=10)
    save_figure(fig, path)


def manifest(config: Config) -> dict:
    return settings_and_choices(config, __doc__)
