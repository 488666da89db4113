"""Inertial training against gradient descent and gradient flow, after the companion paper
"Implicit Regularization of the Deep Inverse Prior Trained with Inertia" (its figure: loss against
time for several α and β; "a better α allows for much faster convergence while for this problem,
β does not appear to be necessary").

Two problems:

- ``gaussian``: the synthetic problem of Fig. 1 (n = 5, m = 2, A and x̄ iid N(0, 1), k = 10⁴,
  hidden layer W trained, MSE, float64), ``trials`` seeds, every method run to a loss of
  ``loss_tol``: loss against the time t for the inertial ODE with several (α, β), the gradient flow
  and gradient descent (t = τγ); loss against gradient evaluations for every method;
- ``image``: the noisy well-conditioned problem of Fig. 4 (64×64 image, noise 50, k = 10⁴, W and V
  trained, float32), each method for a budget of gradient evaluations (``image_budget``; the ODEs
  get ``image_ode_budget``: SciPy holds seven stages of a 4·10⁷-entry float64 state, 4.5 GB for
  the DIN system, and a run of 1000 evaluations took over 40 min): ‖x_τ − x̄‖ against gradient
  evaluations, with the a-posteriori recovery bound of gradient descent.

Every method is tuned per trial by the ``auto`` rules of ``dipcert solve`` (:mod:`dipcert.methods`),
from the Gauss–Newton spectrum [μ, L] of A J_g(θ_0) J_g(θ_0)ᵀ Aᵀ: α = 2√μ (critical damping), half
the largest stable step for C1 and C2 (β = 1/√L for C2, which needs β > 0), Adam's 1e-2; heavy
ball and Nesterov get the textbook parameters for κ = L/μ (:func:`~dipcert.methods.polyak_heavy_ball`,
:func:`~dipcert.methods.nesterov_momentum`). Gradient descent runs with its certified step 1/(2L),
L the certified smoothness bound (Theorem III.1), and with the ``auto`` step 1/L_GN (L_GN by power
iteration).

Our choices where the papers are silent (recorded in the manifest): the problems above (the
companion paper's settings are unknown: theory.md §7.2), the (α, β) grid, the tuning rules, the
adaptive step rule (ours), Adam's learning rate 1e-2, SciPy's RK45 with rtol 1e-8, atol 1e-12 for
the ODEs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..certify import certify
from ..images import load_image
from ..networks import TwoLayerDIP
from ..operators import Spectral
from ..config import RunConfig
from ..methods import METHOD, Spectrum, build_method, nesterov_momentum, polyak_heavy_ball
from ..optim import GradientDescent, GradientFlow, HeavyBall, InertialFlow, Nesterov, train
from ..problems import gaussian_problem, image_problem
from ..report import save_figure
from ..seeding import derive_seed
from .engine import Cell, CellResult, Row, settings_and_choices

TITLE = "Inertia: DIN ODE, inertial schemes, gradient descent and gradient flow"

#: labels of the methods compared on every problem, in plotting order
ROSTER = ("gd certified", "gd 1/L", "heavy ball", "nesterov", "adam", "C1", "C1 adaptive", "C2", "C2 adaptive",
          "gradient flow", "inertial flow")


@dataclass(frozen=True)
class Config:
    n: int = 5
    m: int = 2
    width: int = 10_000
    trials: int = 10
    loss_tol: float = 1e-10
    max_iters: int = 200_000
    alphas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    betas: tuple[float, ...] = (0.3, 1.0)  # with α = betas_alpha
    betas_alpha: float = 0.3
    image: str = "builtin:camera"
    size: int = 64
    image_width: int = 10_000
    image_noise: float = 50.0
    image_budget: int = 300  # gradient evaluations per discrete method on the image problem
    image_ode_budget: int = 120  # and per ODE method (SciPy's state is 4·10⁷ float64 per copy of θ)
    rtol: float = 1e-8
    seed: int = 0
    activation: str = "sigmoid"

    @classmethod
    def at_scale(cls, scale: str) -> "Config":
        if scale == "paper":
            return cls()
        return cls(width=1000, trials=3, max_iters=20_000, alphas=(0.3, 3.0), betas=(1.0,), size=24,
                   image_width=1500, image_budget=60, image_ode_budget=60)


def cells(config: Config) -> list[Cell]:
    return [Cell.of(problem="gaussian", trial=t) for t in range(config.trials)] + [Cell.of(problem="image", trial=0)]


def group_of(cell: Cell) -> tuple:
    return (cell["problem"], cell["trial"])


def cost(cell: Cell) -> float:
    return 100.0 if cell["problem"] == "image" else 1.0


def _roster(problem, network, certified_L: float, spectrum: Spectrum, rtol: float) -> dict:
    """Label → method tuned for this trial: the ``auto`` rules of ``dipcert solve`` (the method
    registry), with the textbook tunings of heavy ball and Nesterov for the spectrum [μ, L]."""
    mu, L = spectrum.extremes

    def auto(name: str, **options) -> object:
        settings = RunConfig.build({"method": {"method": name, **options}}, (METHOD,)).method.values
        return build_method({**settings, "method": name}, problem, network, spectrum=spectrum)[0]

    ode = dict(rtol=rtol, atol=rtol * 1e-4)
    return {
        "gd certified": GradientDescent(1 / (2 * certified_L)),
        "gd 1/L": auto("gd"),
        "heavy ball": HeavyBall(*polyak_heavy_ball(mu, L)),
        "nesterov": Nesterov(*nesterov_momentum(mu, L)),
        "adam": auto("adam"),
        "C1": auto("gradient-difference"),
        "C1 adaptive": auto("gradient-difference", adaptive_step=True),
        "C2": auto("inna"),
        "C2 adaptive": auto("inna", adaptive_step=True),
        "gradient flow": auto("gradient-flow", **ode),
        "inertial flow": auto("inertial-flow", **ode),
    }


def _build(config: Config, cell: Cell):
    """The problem and its two networks (reduced and full W) for ``cell``."""
    seed = config.seed + cell["trial"]
    net_seed = [derive_seed(seed, "network")]
    if cell["problem"] == "gaussian":
        problem = gaussian_problem(config.n, config.m, [seed])
        make = lambda p: TwoLayerDIP(config.n, config.width, activation=config.activation, seeds=net_seed,  # noqa: E731
                                     parametrization=p)
        return problem, make("reduced"), make("full"), None
    image = load_image(config.image, (config.size, config.size))
    op = Spectral.well_conditioned(image.size, seed=derive_seed(seed, "operator"), dtype=torch.float32,
                                   in_shape=image.shape)
    problem = image_problem(image, op, [seed], config.image_noise)
    make = lambda p: TwoLayerDIP(image.size, config.image_width, train="WV", activation=config.activation,  # noqa: E731
                                 seeds=net_seed, parametrization=p, dtype=torch.float32)
    return problem, make("reduced"), make("full"), image


def run_group(config: Config, group: list[Cell]) -> dict[str, CellResult]:
    (cell,) = group
    problem, network, full_network, image = _build(config, cell)
    gaussian = cell["problem"] == "gaussian"
    spectrum = Spectrum(problem, network)
    mu, L = spectrum.extremes
    certificate = certify(problem, network, hessian_iters=0)
    certified_L = float(certificate["L"].value[0])
    methods = _roster(problem, network, certified_L, spectrum, config.rtol)
    if gaussian:  # the companion paper's figure: the DIN ODE for several (α, β)
        for a in config.alphas:
            methods[f"DIN alpha={a:g} beta=0"] = InertialFlow(a, 0.0, rtol=config.rtol, atol=config.rtol * 1e-4)
        for b in config.betas:
            methods[f"DIN alpha={config.betas_alpha:g} beta={b:g}"] = InertialFlow(config.betas_alpha, b, rtol=config.rtol, atol=config.rtol * 1e-4)
    rows: list[Row] = []
    arrays: dict[str, np.ndarray] = {}
    for label, method in methods.items():
        net = full_network if not getattr(method, "commutes_with_reduction", True) else network
        if gaussian:
            budget = dict(max_iters=config.max_iters, loss_tol=config.loss_tol)
        elif isinstance(method, (GradientFlow, InertialFlow)):  # a budget of gradient evaluations: RK45 makes six per step
            budget = dict(max_iters=max(1, config.image_ode_budget // 6), loss_tol=0.0)
        else:
            budget = dict(max_iters=config.image_budget, loss_tol=0.0)
        start = time.perf_counter()
        result = train(problem, net, method, record_every=1, **budget)
        seconds = time.perf_counter() - start
        h = result.history
        arrays[f"{label}|loss"], arrays[f"{label}|evaluations"] = h.loss[:, 0], h.evaluations[:, 0]
        if h.time is not None:
            arrays[f"{label}|time"] = h.time[:, 0]
        elif isinstance(method, GradientDescent):
            arrays[f"{label}|time"] = h.iteration * float(method.step)
        if h.error is not None:
            arrays[f"{label}|error"] = h.error[:, 0]
        rows.append({
            "problem": cell["problem"], "trial": cell["trial"], "seed": config.seed + cell["trial"], "method": label,
            "hyperparameters": str(method.describe()), "mu": mu, "L_gauss_newton": L, "L_certified": certified_L,
            "condition_4": bool(certificate.holds[0]), "status": result.status[0],
            "converged": result.status[0] == "converged", "iterations": int(result.iterations[0]),
            "evaluations": int(h.evaluations[-1, 0]), "time": float(h.time[-1, 0]) if h.time is not None else math.nan,
            "final_loss": float(result.final_loss[0]), "final_error": float(h.error[-1, 0]) if h.error is not None else math.nan,
            "min_error": float(h.error[:, 0].min()) if h.error is not None else math.nan, "seconds": seconds,
        })
    if not gaussian:
        arrays["noise_norm"] = np.array([float(problem.noise[0].norm())])
        arrays["sigma_A"] = np.array([float(certificate["sigma_A"].value[0])])
        arrays["gd 1/L|error_bound_a_posteriori"] = certificate.a_posteriori_error_bound(
            arrays["gd 1/L|loss"][:, None])[:, 0]
    return {cell.key: CellResult(rows, arrays)}


def summary(config: Config, rows: list[Row]) -> dict:
    """Per method on the Gaussian problem: median gradient evaluations, iterations and seconds to
    reach the loss tolerance, and how many trials reached it; on the image problem: the smallest
    and final errors."""
    out: dict = {"gaussian": {}, "image": {}}
    others = sorted({r["method"] for r in rows} - set(ROSTER))
    for label in [*ROSTER, *others]:
        mine = [r for r in rows if r["method"] == label and r["problem"] == "gaussian"]
        if mine:
            done = [r for r in mine if r["converged"]]
            out["gaussian"][label] = {
                "reached": f"{len(done)}/{len(mine)}",
                **{f"median_{key}": float(np.median([r[key] for r in done])) if done else None
                   for key in ("evaluations", "iterations", "seconds", "time")},
            }
        image = [r for r in rows if r["method"] == label and r["problem"] == "image"]
        if image:
            r = image[0]
            out["image"][label] = {"min_error": r["min_error"], "final_error": r["final_error"],
                                   "evaluations": r["evaluations"], "seconds": r["seconds"]}
    base = out["gaussian"].get("gd certified", {}).get("median_evaluations")
    if base:
        out["gaussian_speedup_over_gd_certified"] = {
            label: base / entry["median_evaluations"] for label, entry in out["gaussian"].items()
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


def plot(config: Config, rows: list[Row], arrays: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gaussian = [arrays[Cell.of(problem="gaussian", trial=t).key] for t in range(config.trials)]
    gaussian = [a for a in gaussian if a]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.7), layout="constrained")
    # legends below their panel: inside, eleven entries cover the curves
    below = dict(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False)
    ax = axes[0]
    labels = [k.split("|")[0] for k in gaussian[0] if k.endswith("|time")]
    din = [lab for lab in labels if lab.startswith("DIN")]
    _median_curves(ax, gaussian, din + ["gradient flow", "gd certified", "gd 1/L"], "time",
                   lambda end: np.linspace(0, end, 400))
    ax.set_yscale("log")
    ax.set_xlabel(r"time $t$ (gradient descent: $t = \tau\gamma$)")
    ax.set_ylabel("loss (median over trials)")
    ax.set_title(f"(a) loss against time, n = {config.n}, m = {config.m}, k = {config.width}", fontsize=10)
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
    image = arrays.get(Cell.of(problem="image", trial=0).key)
    if image:
        for label in ROSTER:
            ax.plot(image[f"{label}|evaluations"] + 1, image[f"{label}|error"], lw=1.4, **_style(label, []))
        ax.plot(image["gd 1/L|evaluations"] + 1, image["gd 1/L|error_bound_a_posteriori"], ":", color="k", lw=1.6,
                label="a-posteriori bound (gd 1/L)")
        ax.axhline(float(image["noise_norm"][0] / image["sigma_A"][0]), color="gray", lw=1.0, ls=(0, (1, 3)),
                   label=r"$\|\varepsilon\|/\sigma_A$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(top=3 * max(image[f"{label}|error"][0] for label in ROSTER))  # a diverging run stays legible
        ax.set_xlabel("gradient evaluations + 1")
        ax.set_ylabel(r"$\|x - \bar x\|$")
        ax.set_title(f"(c) recovery error, well-conditioned A, noise {config.image_noise:g}", fontsize=10)
        ax.legend(title="methods: colours as in (b)", title_fontsize=8, **below)
    else:
        ax.axis("off")
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(TITLE, fontsize=11)
    save_figure(fig, path)


def manifest(config: Config) -> dict:
    return settings_and_choices(config, __doc__)
