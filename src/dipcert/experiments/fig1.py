"""Fig. 1 of the paper: the width needed for condition (4), against the width needed to converge.

n = 5, A and x̄ with iid N(0, 1) entries, two-layer net (9) with sigmoid, MSE, hidden layer W
trained. Panel (a): the empirical probability that condition (4) holds, for each Lipschitz form,
over a k grid extended beyond the training grid; panel (b): the probability that
L_y(y_τ) ≤ 1e-14 within 1e5 gradient-descent iterations.

Our choices where the paper is silent (recorded in the manifest): V_0 Rademacher, d = 32 (the
W-only dynamics do not depend on d), one step per trial γ = 1/‖A J_g(θ_0)‖² (half the stability
limit of the linearized model), and a trial stops once its loss is ≤ 1e-14 (gradient descent with
such a step keeps decreasing it, so this equals "L_y(y_{1e5}) ≤ 1e-14" up to rare oscillations).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

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
from .engine import Cell, CellResult, Row, settings_and_choices

TITLE = "Fig. 1: width for condition (4) vs width for convergence (n = 5, sigmoid, W trained)"


@dataclass(frozen=True)
class Config:
    n: int = 5
    ms: tuple[int, ...] = tuple(range(1, 11))
    log10_ks: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
    certify_log10_ks: tuple[float, ...] = (4.5, 5.0)
    trials: int = 50
    iters: int = 100_000
    loss_tol: float = 1e-14
    seed: int = 0
    activation: str = "sigmoid"
    v_law: str = "rademacher"
    d: int = 32
    max_batch_entries: int = 20_000_000  # V_0 entries held at once (memory bound)

    @classmethod
    def at_scale(cls, scale: str) -> "Config":
        if scale == "paper":
            return cls()
        return cls(ms=(1, 2, 3, 5, 8), log10_ks=(1.0, 2.0, 3.0), certify_log10_ks=(4.0,), trials=8, iters=4000,
                   loss_tol=1e-10)


def width(log10_k: float) -> int:
    return int(round(10**log10_k))


def cells(config: Config) -> list[Cell]:
    grid = [Cell.of(m=m, log10_k=e, trained=True) for e in config.log10_ks for m in config.ms]
    return grid + [Cell.of(m=m, log10_k=e, trained=False) for e in config.certify_log10_ks for m in config.ms]


def group_of(cell: Cell) -> tuple:
    """All m for one k run as one batch (A is zero-padded to the largest m; zero rows change
    neither the loss nor its gradient)."""
    return (cell["log10_k"], cell["trained"])


def cost(cell: Cell) -> float:
    """Relative cost of a cell, to start the costliest groups first."""
    return width(cell["log10_k"]) * (1.0 if cell["trained"] else 0.01)


def _padded_problem(config: Config, ms: list[int], seeds: list[int]) -> Problem:
    parts = [gaussian_problem(config.n, m, seeds) for m in ms]
    m_max = max(ms)
    A = torch.zeros(len(ms) * len(seeds), m_max, config.n, dtype=torch.float64)
    y = torch.zeros(len(ms) * len(seeds), m_max, dtype=torch.float64)
    for i, (m, part) in enumerate(zip(ms, parts)):
        rows = slice(i * len(seeds), (i + 1) * len(seeds))
        A[rows, :m] = part.operator.matrix
        y[rows, :m] = part.y
    x_true = torch.cat([part.x_true for part in parts])
    return Problem(Matrix(A), y, x_true, torch.zeros_like(y))


def _network(config: Config, k: int, seeds: list[int]) -> TwoLayerDIP:
    return TwoLayerDIP(config.n, k, d=config.d, activation=config.activation, v_law=config.v_law,
                       seeds=[derive_seed(s, "network") for s in seeds])


def _certify_rows(config: Config, m: int, k: int, seeds: list[int], network: TwoLayerDIP | None = None) -> list[Row]:
    """Condition (4) under each Lipschitz form, per trial; ``network`` (the trials' networks, in
    ``seeds`` order) is drawn here when not given, in memory-bounded chunks."""
    rows: list[Row] = []
    chunk = len(seeds) if network is not None else max(1, config.max_batch_entries // (config.n * k))
    for start in range(0, len(seeds), chunk):
        part = seeds[start : start + chunk]
        net = network if network is not None else _network(config, k, part)
        certs = certify_forms(gaussian_problem(config.n, m, part), net, LIPSCHITZ_FORMS, hessian_iters=0)
        for b in range(len(part)):
            rows.append({f"condition_4_{form.replace('-', '_')}": bool(c.holds[b]) for form, c in zip(LIPSCHITZ_FORMS, certs)})
    return rows


def run_group(config: Config, group: list[Cell]) -> dict[str, CellResult]:
    """Certify every trial of every cell; train the trained cells' trials as one batch."""
    k = width(group[0]["log10_k"])
    seeds = [config.seed + t for t in range(config.trials)]
    ms = [cell["m"] for cell in group]
    start = time.perf_counter()
    train_rows: dict[str, list[Row]] = {}
    if not group[0]["trained"]:
        cert_rows = {cell.key: _certify_rows(config, cell["m"], k, seeds) for cell in group}
    else:
        network = _network(config, k, seeds * len(ms))  # trial t of every m: the same seed
        runs = lambda i: torch.arange(i * len(seeds), (i + 1) * len(seeds))
        cert_rows = {cell.key: _certify_rows(config, cell["m"], k, seeds, network.select(runs(i)))
                     for i, cell in enumerate(group)}
        problem = _padded_problem(config, ms, seeds)
        steps = auto_steps(problem, network)
        result = train(problem, network, GradientDescent(steps), max_iters=config.iters, loss_tol=config.loss_tol,
                       record_every=config.iters)
        for i, cell in enumerate(group):
            rows = []
            for t in range(len(seeds)):
                b = i * len(seeds) + t
                rows.append({"converged": result.status[b] == "converged", "final_loss": float(result.final_loss[b]),
                             "iterations": int(result.iterations[b]), "status": result.status[b],
                             "step": float(steps[b])})
            train_rows[cell.key] = rows
    per_trial = (time.perf_counter() - start) / (len(group) * len(seeds))
    out = {}
    for cell in group:
        rows = []
        for t, seed in enumerate(seeds):
            row: Row = {"m": cell["m"], "k": k, "log10_k": cell["log10_k"], "trained": cell["trained"],
                        "trial": t, "seed": seed, **cert_rows[cell.key][t]}
            row.update(train_rows[cell.key][t] if cell["trained"] else
                       {"converged": "", "final_loss": math.nan, "iterations": 0, "status": "not trained", "step": math.nan})
            row["seconds"] = per_trial
            rows.append(row)
        out[cell.key] = CellResult(rows)
    return out


def summary(config: Config, rows: list[Row]) -> dict:
    """Probabilities per (m, k), and for each m the smallest k where each reaches 1/2."""
    def prob(m, e, column):
        values = [r[column] for r in rows if r["m"] == m and r["log10_k"] == e and r[column] != ""]
        return float(np.mean(values)) if values else math.nan

    all_ks = sorted({r["log10_k"] for r in rows})
    columns = ["converged"] + [f"condition_4_{f.replace('-', '_')}" for f in LIPSCHITZ_FORMS]
    table = {c: {m: [prob(m, e, c) for e in all_ks] for m in config.ms} for c in columns}
    first_half = {c: {m: next((e for e, p in zip(all_ks, table[c][m]) if p >= 0.5), None) for m in config.ms}
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


def plot(config: Config, rows: list[Row], arrays: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MultipleLocator

    info = summary(config, rows)
    ks = info["log10_ks"]
    trained = [i for i, e in enumerate(ks) if e in config.log10_ks]
    panels = [(f"condition_4_{f.replace('-', '_')}", f"(a) P[(4) holds]\n{f} Lipschitz bound", list(range(len(ks))))
              for f in LIPSCHITZ_FORMS]
    panels.append(("converged", f"(b) P[$L_y(y_\\tau) \\leq$ {config.loss_tol:g}]\nwithin {config.iters:g} iterations",
                   trained))
    # every k cell as wide in every panel: panel widths follow their k range
    edges = [_cell_edges([ks[i] for i in columns]) for _, _, columns in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 1.2, 3.6), squeeze=False, sharey=True,
                             layout="constrained", gridspec_kw={"width_ratios": [e[-1] - e[0] for e in edges]})
    m_edges = np.arange(len(config.ms) + 1) - 0.5
    for ax, (column, title, columns), x_edges in zip(axes[0], panels, edges):
        grid = np.array([[info["probability"][column][m][i] for i in columns] for m in config.ms])
        image = ax.pcolormesh(x_edges, m_edges, np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="viridis")
        ax.set_xlim(x_edges[0], x_edges[-1])
        ax.xaxis.set_major_locator(MultipleLocator(1))
        ax.set_xlabel("$\\log_{10} k$", fontsize=9)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        if column != "converged" and len(trained) < len(ks):
            ax.axvline(x_edges[len(trained)], color="w", lw=1.2, ls=":")
    axes[0][0].set_yticks(range(len(config.ms)), [str(m) for m in config.ms])
    axes[0][0].set_ylabel("m (measurements)", fontsize=9)
    axes[0][-1].tick_params(labelleft=True)  # (b) stands apart from the three (a) panels
    fig.get_layout_engine().set(wspace=0.03)
    bar = fig.colorbar(image, ax=axes[0].tolist(), fraction=0.025, pad=0.015, aspect=25)
    bar.set_label("probability", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    note = "(a): white dotted line = right end of the k range of (b); " if len(trained) < len(ks) else ""
    fig.suptitle(f"{TITLE}\n{note}{config.trials} trials per cell; V0 Rademacher, "
                 f"step 1/||A J(theta0)||^2 (our choices)", fontsize=9)
    save_figure(fig, path, tight=False)


def manifest(config: Config) -> dict:
    return settings_and_choices(config, __doc__)
