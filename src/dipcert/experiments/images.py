"""Fig. 3a, 3b and 4 of the paper: the two-layer DIP on a 64×64 image.

The experiment is the sweep file ``sweeps/images.toml`` (its comments give the setting and our
choices where the paper is silent): ``fig3a`` draws its blur cells, ``fig3b`` and ``fig4`` its
well-conditioned cell (the same run, computed once). :func:`run_group` runs a cell as the sweep's
own runner does (``dipcert solve``, the same rows) and keeps what the figures draw: the truth, the
observation, the last and the returned iterates, the loss and error curves, the iterates at
:data:`SNAPSHOTS` and the recovery bound (8) along the run.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..images import psnr
from ..report import save_figure
from ..solve import solve
from .engine import Cell, CellResult, Row
from .sweep import Sweep, cell_rows

TITLES = {
    "fig3a": "Fig. 3a: deblurring (sigma = 1) without and with noise (2.5)",
    "fig3b": "Fig. 3b: reconstructions along training, well-conditioned operator, noise 50",
    "fig4": "Fig. 4: recovery error along training with the bound of Theorem III.1",
}
SWEEP_FILE = Path(__file__).parent / "sweeps" / "images.toml"
#: the iterations whose iterates Fig. 3b shows (those within a run's budget)
SNAPSHOTS = (0, 1, 3, 10, 30, 100, 300, 1000)
OPERATOR, NOISE = "operator.operator", "noise.noise_std"


def load(scale: str) -> Sweep:
    """The image figures' sweep at ``scale`` ("paper": the file as written; "quick": its [scales.quick])."""
    return Sweep.load(SWEEP_FILE, None if scale == "paper" else scale)


def group_of(cell: Cell) -> str:
    return cell.key


def run_group(sweep: Sweep, group: list[Cell]) -> dict[str, CellResult]:
    """Each cell solved as the sweep's own runner solves it, with the arrays the figures draw."""
    cells = sweep.cells()
    out = {}
    for cell in group:
        config = sweep.run_config(cell, cells.index(cell))
        outcome = solve(config, snapshot_at=[tau for tau in SNAPSHOTS if tau <= config.training.iters])
        result, problem, shape = outcome.result, outcome.problem, outcome.truth_image.shape
        h = result.history
        arrays = {"truth": outcome.truth_image, "observation": problem.y[0].double().cpu().numpy().reshape(shape),
                  "reconstruction": result.x_last[0].double().cpu().numpy().reshape(shape),
                  "stopped": result.x[0].double().cpu().numpy().reshape(shape),
                  "iteration": h.iteration, "loss": h.loss[:, 0], "error": h.error[:, 0],
                  "error_bound": outcome.certificate.error_bound(h.iteration)[:, 0]}
        for tau, x in result.snapshots.items():
            arrays[f"snapshot_{tau}"] = x[0].double().cpu().numpy().reshape(shape)
        out[cell.key] = CellResult(cell_rows(sweep, cell, outcome), arrays)
    return out


def summary(rows: list[Row]) -> dict:
    keys = ("psnr_last", "ssim_last", "psnr_observation", "error_last", "oracle_error", "oracle_tau", "condition_4",
            "sigma_A", "stop_rule", "stop_tau", "psnr")
    return {f"{r[OPERATOR]} noise {r[NOISE]}": {k: r[k] for k in keys} for r in rows}


def _figure(panels: int, rows: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # room for two-line titles above every image; constrained layout keeps them off the row above
    return plt, *plt.subplots(rows, panels, figsize=(2.4 * panels, 2.9 * rows + 0.4), squeeze=False,
                              layout="constrained")


def _show(ax, img, title) -> None:
    ax.imshow(img, cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _arrays(r: Row, arrays: dict[str, dict]) -> dict:
    return arrays[Cell.of(**{key: r[key] for key in (OPERATOR, NOISE, "training.iters")}).key]


def plot_fig3a(sweep: Sweep, rows: list[Row], arrays: dict[str, dict], path) -> dict:
    blur = [r for r in rows if r[OPERATOR] == "blur"]
    plt, fig, axes = _figure(4, len(blur))
    for ax_row, r in zip(axes, blur):
        a = _arrays(r, arrays)
        _show(ax_row[0], a["truth"], "truth")
        _show(ax_row[1], a["observation"], f"blurred, noise {r[NOISE]:g}\n({r['psnr_observation']:.1f} dB)")
        _show(ax_row[2], a["reconstruction"],
              f"DIP, last of {int(r['iterations'])} it.\n({r['psnr_last']:.1f} dB, the paper's)")
        _show(ax_row[3], a["stopped"], _stopped_title(r))
    fig.get_layout_engine().set(h_pad=0.1)
    fig.suptitle(TITLES["fig3a"], fontsize=10)
    save_figure(fig, path)
    return summary(blur)


def _stopped_title(r: dict) -> str:
    return f"--stop auto: {r['stop_rule']}, tau = {r['stop_tau']}\n({r['psnr']:.1f} dB)"


def _well_conditioned(rows, arrays):
    r = next(r for r in rows if r[OPERATOR] == "well-conditioned")
    return r, _arrays(r, arrays)


def plot_fig3b(sweep: Sweep, rows: list[Row], arrays: dict[str, dict], path) -> dict:
    r, a = _well_conditioned(rows, arrays)
    taus = sorted(int(k.split("_")[1]) for k in a if k.startswith("snapshot_"))
    panels = [(a["truth"], "truth"), (a["observation"], f"observation y\n(noise {r[NOISE]:g})")]
    panels += [(a[f"snapshot_{tau}"], f"tau = {tau}\n({psnr(a['truth'], a[f'snapshot_{tau}']):.1f} dB)")
               for tau in taus]
    panels.append((a["stopped"], _stopped_title(r)))
    rows_ = 1 if len(panels) <= 5 else 2  # one long strip would make every image and title tiny
    cols = math.ceil(len(panels) / rows_)
    plt, fig, axes = _figure(cols, rows_)
    flat = axes.ravel()
    for ax, (img, title) in zip(flat, panels):
        _show(ax, img, title)
    for ax in flat[len(panels):]:
        ax.axis("off")
    fig.suptitle(TITLES["fig3b"], fontsize=10)
    save_figure(fig, path)
    return summary([r])


def plot_fig4(sweep: Sweep, rows: list[Row], arrays: dict[str, dict], path) -> dict:
    r, a = _well_conditioned(rows, arrays)
    plt, fig, axes = _figure(1)
    ax = axes[0][0]
    fig.set_size_inches(6.0, 5.2)
    it = a["iteration"] + 1
    ax.plot(it, a["error"], lw=2, label=r"error $\|x_\tau - \bar x\|$")
    label = "bound (8)" + ("" if r["condition_4"] else ": (4) does not hold here, drawn for reference")
    ax.plot(it, a["error_bound"], "--", label=label)
    # A injective: ‖x − x̄‖ ≤ ‖A(x − x̄)‖/σ_A ≤ (‖y_τ − y‖ + ‖ε‖)/σ_A for every x, with ‖y_τ − y‖ = √(2 L_y(y_τ))
    posterior = (np.sqrt(2 * a["loss"]) + r["noise_norm"]) / r["sigma_A"]
    ax.plot(it, posterior, "-.", label=r"a posteriori (8): $(\|y_\tau - y\| + \|\varepsilon\|)/\sigma_A$")
    ax.axhline(r["noise_norm"] / r["sigma_A"], color="gray", lw=0.8, ls=":", label=r"$\|\varepsilon\|/\sigma_{A}$")
    ax.axvline(r["stop_tau"] + 1, color="tab:red", lw=1.2, ls=":", label=f"returned by the {r['stop_rule']} rule, "
               f"tau = {r['stop_tau']}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"iteration $\tau + 1$")
    ax.set_ylabel(r"$\|x - \bar x\|$")
    ax.grid(True, which="both", alpha=0.3)
    # below the axes: inside, the legend would cover the curves
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
    ax.set_title(TITLES["fig4"] + f"\nmin error at tau = {r['oracle_tau']}", fontsize=9)
    save_figure(fig, path)
    return summary([r])
