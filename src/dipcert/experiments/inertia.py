"""Inertial training against gradient descent and gradient flow, after the companion paper
"Implicit Regularization of the Deep Inverse Prior Trained with Inertia" (its figure: loss against
time for several α and β; "a better α allows for much faster convergence while for this problem,
β does not appear to be necessary").

The experiment is two sweep files, each method a cell of its grid (their comments give the settings
and our choices where the papers are silent):

- ``sweeps/inertia.toml``: the synthetic problem of Fig. 1 (n = 5, m = 2, k = 10⁴, W trained,
  float64), 10 trials, every method run to a loss of 1e-10: loss against the time t for the DIN ODE
  with several (α, β), the gradient flow and gradient descent (t = τγ), and loss against gradient
  evaluations for every method;
- ``sweeps/inertia-image.toml``: the noisy well-conditioned problem of Fig. 4 (64×64, noise 50,
  k = 10⁴, W and V trained, float32), each method for a budget of gradient evaluations:
  ‖x_τ − x̄‖ against gradient evaluations, with the a-posteriori recovery bound of gradient descent.

Every method is tuned per trial by the ``auto`` rules of ``dipcert solve`` (:mod:`dipcert.methods`;
``batch = 1``: each trial from its own spectrum [μ, L] of A J_g(θ_0) J_g(θ_0)ᵀ Aᵀ); heavy ball and
Nesterov with ``momentum = auto``, the textbook tunings for [μ, L]. :func:`run_group` solves a cell
as the sweep's own runner does (the same rows) and keeps each trial's loss, evaluation, time and
error curves for the figure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..report import save_figure
from .engine import Cell, CellResult, Row
from .sweep import Sweep
from .sweep import run_group as run_cells

TITLE = "Inertia: DIN ODE, inertial schemes, gradient descent and gradient flow"
SWEEP_FILES = (Path(__file__).parent / "sweeps" / "inertia-image.toml",
               Path(__file__).parent / "sweeps" / "inertia.toml")

#: labels of the methods compared on every problem, in plotting order
ROSTER = ("gd certified", "gd 1/L", "heavy ball", "nesterov", "adam", "C1", "C1 adaptive", "C2", "C2 adaptive",
          "gradient flow", "inertial flow")
_NAMES = {"heavy-ball": "heavy ball", "nesterov": "nesterov", "adam": "adam", "gradient-flow": "gradient flow",
          "gradient-difference": "C1", "inna": "C2"}


def load(scale: str) -> tuple[Sweep, Sweep]:
    """The image sweep, then the Gaussian one (whose table is ``inertia.csv``), at ``scale``."""
    return tuple(Sweep.load(path, None if scale == "paper" else scale) for path in SWEEP_FILES)


def method_label(where: dict) -> str:
    """The figure's name of the method of a cell or row (its grid values)."""
    method = where["method.method"]
    if method == "gd":
        return "gd certified" if where.get("method.step") == "certified" else "gd 1/L"
    if method == "inertial-flow":
        alpha = where.get("method.alpha", "")
        if alpha in ("", "auto"):
            return "inertial flow"
        return f"DIN alpha={float(alpha):g} beta={float(where.get('method.beta') or 0):g}"
    return _NAMES[method] + (" adaptive" if where.get("method.adaptive_step") is True else "")


def group_of(cell: Cell) -> str:
    return cell.key


def run_group(sweep: Sweep, group: list[Cell]) -> dict[str, CellResult]:
    """Each cell solved, batch by batch, as the sweep's own runner solves it, with every trial's
    curves: ``T|loss``, ``T|evaluations``, ``T|time`` (t = τγ for gd), ``T|error`` and, where the run
    has a certificate, ``T|error_bound_a_posteriori`` (T the trial)."""
    return run_cells(sweep, group, keep=_curves)


def _curves(outcome, first: int) -> dict[str, np.ndarray]:
    """The curves of the trials ``first``, ``first + 1``, … of one solve (see :func:`run_group`)."""
    h, certificate = outcome.result.history, outcome.certificate
    steps = np.broadcast_to(np.asarray(outcome.step if outcome.step is not None else np.nan, dtype=np.float64),
                            (h.loss.shape[1],))
    out = {}
    for b in range(h.loss.shape[1]):
        t = first + b
        out[f"{t}|loss"], out[f"{t}|evaluations"] = h.loss[:, b], h.evaluations[:, b]
        if h.time is not None:
            out[f"{t}|time"] = h.time[:, b]
        elif outcome.config.method.name == "gd":
            out[f"{t}|time"] = h.iteration * steps[b]
        if h.error is not None:
            out[f"{t}|error"] = h.error[:, b]
        if certificate is not None:
            out[f"{t}|error_bound_a_posteriori"] = certificate.a_posteriori_error_bound(h.loss)[:, b]
            out[f"{t}|sigma_A"] = np.array([float(certificate["sigma_A"].value[b])])
    return out


def curves_by_label(sweep: Sweep, arrays: dict[str, dict]) -> list[dict[str, np.ndarray]]:
    """Per trial, ``LABEL|curve`` → array, from the cells' arrays ``T|curve``."""
    trials: list[dict[str, np.ndarray]] = [{} for _ in range(sweep.trials)]
    for cell in sweep.cells():
        name = method_label(dict(cell.coords))
        for key, value in arrays.get(cell.key, {}).items():
            t, curve = key.split("|", 1)
            trials[int(t)][f"{name}|{curve}"] = value
    return [trial for trial in trials if trial]


def summary(gaussian_rows: list[Row], gaussian: list[dict], image_rows: list[Row], image: dict) -> dict:
    """Per method on the Gaussian problem: median gradient evaluations, iterations, seconds and time t
    to reach the loss tolerance, and how many trials reached it; on the image problem: the smallest
    and final errors, the evaluations and seconds."""
    out: dict = {"gaussian": {}, "image": {}}
    labels = list(dict.fromkeys(method_label(r) for r in gaussian_rows + image_rows))
    for name in [*ROSTER, *sorted(set(labels) - set(ROSTER))]:
        mine = [r for r in gaussian_rows if method_label(r) == name]
        if mine:
            done = [r for r in mine if r["converged"]]
            times = [float(gaussian[r["trial"]][f"{name}|time"][-1]) for r in done
                     if f"{name}|time" in gaussian[r["trial"]]]
            entry = {"reached": f"{len(done)}/{len(mine)}"}
            for key, values in (("evaluations", [r["gradient_evaluations"] for r in done]),
                                ("iterations", [r["iterations"] for r in done]),
                                ("seconds", [r["seconds"] for r in done]), ("time", times)):
                entry[f"median_{key}"] = float(np.median(values)) if values else None
            out["gaussian"][name] = entry
        row = next((r for r in image_rows if method_label(r) == name), None)
        if row is not None:
            error = image[f"{name}|error"]
            out["image"][name] = {"min_error": float(error.min()), "final_error": float(error[-1]),
                                  "evaluations": row["gradient_evaluations"], "seconds": row["seconds"]}
    base = out["gaussian"].get("gd certified", {}).get("median_evaluations")
    if base:
        out["gaussian_speedup_over_gd_certified"] = {
            name: base / entry["median_evaluations"] for name, entry in out["gaussian"].items()
            if entry["median_evaluations"]}
    return out


def _median_curve(xs: list[np.ndarray], ys: list[np.ndarray], grid: np.ndarray) -> np.ndarray:
    """Median over trials of log-interpolated curves y(x) on ``grid`` (NaN past a trial's end)."""
    curves = []
    for x, y in zip(xs, ys):
        logy = np.interp(grid, x, np.log10(np.maximum(y, 1e-300)), right=np.nan)
        curves.append(logy)
    with np.errstate(all="ignore"):
        return 10 ** np.nanmedian(np.array(curves), axis=0)


#: one colour per method, the same in every panel (the default cycle has ten colours for eleven methods)
COLOURS = dict(zip(ROSTER, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                            "tab:gray", "tab:olive", "tab:cyan", "midnightblue")))
#: the DIN curves of panel (a), in colours apart from those of the methods drawn with them
DIN_COLOURS = ("#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")


def _style(label: str, din: list[str]) -> dict:
    """Colour and line style of a method's curve: gradient descent and the gradient flow dashed; the
    DIN curves of panel (a) in colours of their own."""
    if label in din:
        return {"color": DIN_COLOURS[din.index(label) % len(DIN_COLOURS)], "ls": "-"}
    return {"color": COLOURS.get(label), "ls": "--" if label.startswith(("gd", "gradient flow")) else "-"}


def _median_curves(ax, trials: list[dict], labels, x_name: str, grid_of) -> None:
    """Median loss over trials against ``x_name`` (time or evaluations), one curve per label;
    gradient descent and the gradient flow dashed."""
    din = [label for label in labels if label.startswith("DIN")]
    for label in labels:
        xs = [a[f"{label}|{x_name}"] for a in trials]
        grid = grid_of(max(x[-1] for x in xs))
        ax.plot(grid, _median_curve(xs, [a[f"{label}|loss"] for a in trials], grid), label=label, lw=1.4,
                **_style(label, din))


def plot(sweeps: tuple[Sweep, Sweep], earlier: list[tuple[list[Row], dict]], rows: list[Row], arrays: dict,
         path) -> dict:
    """The figure from the Gaussian sweep's ``rows`` and ``arrays`` and the image sweep's (``earlier``);
    returns :func:`summary`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image_sweep, gaussian_sweep = sweeps
    ((image_rows, image_arrays),) = earlier
    gaussian = curves_by_label(gaussian_sweep, arrays)
    image = (curves_by_label(image_sweep, image_arrays) or [{}])[0]
    config = gaussian_sweep.run_config(gaussian_sweep.cells()[0], 0)
    n, m, width = config.problem.n, config.operator.m, config.network.width
    image_config = image_sweep.run_config(image_sweep.cells()[0], 0)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.7), layout="constrained")
    # legends below their panel: inside, eleven entries cover the curves
    below = dict(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False)
    ax = axes[0]
    din = [key.split("|")[0] for key in gaussian[0] if key.startswith("DIN") and key.endswith("|time")]
    _median_curves(ax, gaussian, din + ["gradient flow", "gd certified", "gd 1/L"], "time",
                   lambda end: np.linspace(0, end, 400))
    ax.set_yscale("log")
    ax.set_xlabel(r"time $t$ (gradient descent: $t = \tau\gamma$)")
    ax.set_ylabel("loss (median over trials)")
    ax.set_title(f"(a) loss against time, n = {n}, m = {m}, k = {width}", fontsize=10)
    ax.legend(ncol=2, **below)
    ax = axes[1]
    _median_curves(ax, gaussian, ROSTER, "evaluations", lambda end: np.unique(np.geomspace(1, end, 300).round()))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gradient evaluations")
    ax.set_ylabel("loss (median over trials)")
    ax.set_title(f"(b) loss against gradient evaluations ({len(gaussian)} trials, median)", fontsize=10)
    ax.legend(ncol=3, **below)
    ax = axes[2]
    if image:
        for label in ROSTER:
            ax.plot(image[f"{label}|evaluations"] + 1, image[f"{label}|error"], lw=1.4, **_style(label, []))
        ax.plot(image["gd 1/L|evaluations"] + 1, image["gd 1/L|error_bound_a_posteriori"], ":", color="k", lw=1.6,
                label="a-posteriori bound (gd 1/L)")
        noise_norm = next(r["noise_norm"] for r in image_rows if method_label(r) == "gd 1/L")
        ax.axhline(noise_norm / float(image["gd 1/L|sigma_A"][0]), color="gray", lw=1.0, ls=(0, (1, 3)),
                   label=r"$\|\varepsilon\|/\sigma_A$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(top=3 * max(image[f"{label}|error"][0] for label in ROSTER))  # a diverging run stays legible
        ax.set_xlabel("gradient evaluations + 1")
        ax.set_ylabel(r"$\|x - \bar x\|$")
        ax.set_title(f"(c) recovery error, well-conditioned A, noise {image_config.noise.noise_std:g}", fontsize=10)
        ax.legend(title="methods: colours as in (b)", title_fontsize=8, **below)
    else:
        ax.axis("off")
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(TITLE, fontsize=11)
    save_figure(fig, path)
    return summary(rows, gaussian, image_rows, image)


