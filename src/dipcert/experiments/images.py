"""Fig. 3a, 3b and 4 of the paper: the two-layer DIP on a 64×64 image.

- ``fig3a``: Gaussian blur σ = 1, noiseless and with noise σ = 2.5: truth, observation and
  reconstruction for each.
- ``fig3b``: the well-conditioned operator U diag(s) Vᵀ (s evenly spaced in [1, 2]) with noise
  σ = 50: the reconstruction at increasing iterations.
- ``fig4``: the same run: ‖x_τ − x̄‖ against τ, with the recovery bound (8) of Theorem III.1 dashed.

Each run also applies ``dipcert solve``'s default stopping rule (``--stop auto``, docs/stopping.md)
and trains on past its stop, so every figure shows the paper's last iterate and, beside it, the
iterate the rule returns with its τ.

Our choices where the paper is silent (recorded in the manifest): scikit-image's ``camera`` image
(the paper used Tiny ImageNet images, which need a download), both layers trained (with V fixed,
a [0, 255] image is out of reach at k = 10⁴), V_0 Rademacher, d = 32, the step
γ = 1/‖A J_g(θ_0)‖², a circular blur boundary, and for (8) λ = σ_min(A) = 1 (A is injective,
so A-5 holds and dist(x̄, Σ') is not needed).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..certify import certify
from ..config import RunConfig
from ..images import load_image, psnr, ssim
from ..networks import TwoLayerDIP
from ..operators import GaussianBlur, Spectral
from ..optim import GradientDescent, train
from ..problems import image_problem
from ..report import save_figure
from ..seeding import derive_seed
from ..solve import choose_stop
from ..steps import auto_step
from .engine import Cell, CellResult, settings_and_choices

TITLES = {
    "fig3a": "Fig. 3a: deblurring (sigma = 1) without and with noise (2.5)",
    "fig3b": "Fig. 3b: reconstructions along training, well-conditioned operator, noise 50",
    "fig4": "Fig. 4: recovery error along training with the bound of Theorem III.1",
}


@dataclass(frozen=True)
class Config:
    image: str = "builtin:camera"
    size: int = 64
    width: int = 10_000
    blur_sigma: float = 1.0
    blur_noise: tuple[float, ...] = (0.0, 2.5)
    well_conditioned_noise: float = 50.0
    blur_iters: int = 2000
    well_conditioned_iters: int = 1000
    snapshots: tuple[int, ...] = (0, 1, 3, 10, 30, 100, 300, 1000)
    seed: int = 0
    activation: str = "sigmoid"
    dtype: str = "float32"

    @classmethod
    def at_scale(cls, scale: str) -> "Config":
        if scale == "paper":
            return cls()
        return cls(size=24, width=1500, blur_iters=150, well_conditioned_iters=100, snapshots=(0, 1, 3, 10, 30, 100))


def cells(config: Config) -> list[Cell]:
    return [Cell.of(operator="blur", noise=s) for s in config.blur_noise] + [
        Cell.of(operator="well-conditioned", noise=config.well_conditioned_noise)
    ]


def group_of(cell: Cell) -> tuple:
    return (cell["operator"], cell["noise"])


def run_group(config: Config, group: list[Cell]) -> dict[str, CellResult]:
    (cell,) = group
    dtype = {"float32": torch.float32, "float64": torch.float64}[config.dtype]
    image = load_image(config.image, (config.size, config.size))
    shape, n = image.shape, image.size
    if cell["operator"] == "blur":
        op = GaussianBlur(shape, config.blur_sigma, dtype=dtype)
        iters, snapshots = config.blur_iters, ()
    else:
        op = Spectral.well_conditioned(n, seed=derive_seed(config.seed, "operator"), dtype=dtype, in_shape=shape)
        iters, snapshots = config.well_conditioned_iters, config.snapshots
    problem = image_problem(image, op, [config.seed], cell["noise"])
    net = TwoLayerDIP(n, config.width, train="WV", activation=config.activation,
                      seeds=[derive_seed(config.seed, "network")], dtype=dtype)
    step = auto_step(problem, net)
    rule, rule_name, _ = choose_stop(_run_config(config, cell), problem, None, None, [])
    start = time.perf_counter()
    result = train(problem, net, GradientDescent(step), max_iters=iters, snapshot_at=snapshots, stop=rule,
                   run_past_stop=True)
    seconds = time.perf_counter() - start
    recon = result.x_last[0].double().cpu().numpy().reshape(shape)
    stopped = result.x[0].double().cpu().numpy().reshape(shape)
    observation = problem.y[0].double().cpu().numpy().reshape(shape)
    h = result.history
    arrays = {"truth": image, "observation": observation, "reconstruction": recon, "stopped": stopped,
              "iteration": h.iteration, "loss": h.loss[:, 0], "error": h.error[:, 0]}
    for tau, x in result.snapshots.items():
        arrays[f"snapshot_{tau}"] = x[0].double().cpu().numpy().reshape(shape)
    cert = certify(problem, net, step=step, hessian_iters=0)
    arrays["error_bound"] = cert.error_bound(h.iteration)[:, 0]
    row = {"operator": cell["operator"], "noise": cell["noise"], "seed": config.seed, "k": config.width,
           "step": step, "psnr": psnr(image, recon), "ssim": ssim(image, recon),
           "psnr_observation": psnr(image, observation) if cell["operator"] == "blur" else math.nan,
           "final_loss": float(result.final_loss[0]), "final_error": float(h.error[-1, 0]),
           "min_error": float(h.error[:, 0].min()), "argmin_error": int(h.iteration[np.argmin(h.error[:, 0])]),
           "noise_norm": float(problem.noise[0].norm()), "condition_4": bool(cert.holds[0]),
           "sigma_A": float(cert["sigma_A"].value[0]), "iterations": int(result.iterations[0]),
           "status": result.status[0], "seconds": seconds, "stop_rule": rule_name,
           "stop_tau": result.stop.tau[0], "stop_psnr": psnr(image, stopped)}
    return {cell.key: CellResult([row], arrays)}


def _run_config(config: Config, cell: Cell) -> RunConfig:
    """The cell as a ``solve`` configuration, for its default stopping rule."""
    return RunConfig.build({"problem": {"image": config.image, "size": config.size}, "network": {"network": "two-layer"},
                            "operator": {"operator": cell["operator"],
                                         **({"blur_sigma": config.blur_sigma} if cell["operator"] == "blur" else {})},
                            "noise": {"noise_std": cell["noise"]}, "run": {"seed": config.seed}})


def summary(config: Config, rows: list[dict]) -> dict:
    keys = ("psnr", "ssim", "psnr_observation", "final_error", "min_error", "argmin_error", "condition_4", "sigma_A",
            "stop_rule", "stop_tau", "stop_psnr")
    return {f"{r['operator']} noise {r['noise']}": {k: r[k] for k in keys} for r in rows}


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


def plot_fig3a(config: Config, rows: list[dict], arrays: dict[str, dict], path) -> None:
    blur = [r for r in rows if r["operator"] == "blur"]
    plt, fig, axes = _figure(4, len(blur))
    for ax_row, r in zip(axes, blur):
        a = arrays[Cell.of(operator="blur", noise=r["noise"]).key]
        _show(ax_row[0], a["truth"], "truth")
        _show(ax_row[1], a["observation"], f"blurred, noise {r['noise']:g}\n({r['psnr_observation']:.1f} dB)")
        _show(ax_row[2], a["reconstruction"], f"DIP, last of {int(r['iterations'])} it.\n({r['psnr']:.1f} dB, the paper's)")
        _show(ax_row[3], a["stopped"], _stopped_title(r))
    fig.get_layout_engine().set(h_pad=0.1)
    fig.suptitle(TITLES["fig3a"], fontsize=10)
    save_figure(fig, path)


def _stopped_title(r: dict) -> str:
    return f"--stop auto: {r['stop_rule']}, tau = {r['stop_tau']}\n({r['stop_psnr']:.1f} dB)"


def _well_conditioned(rows, arrays):
    r = next(r for r in rows if r["operator"] == "well-conditioned")
    return r, arrays[Cell.of(operator="well-conditioned", noise=r["noise"]).key]


def plot_fig3b(config: Config, rows: list[dict], arrays: dict[str, dict], path) -> None:
    r, a = _well_conditioned(rows, arrays)
    taus = sorted(int(k.split("_")[1]) for k in a if k.startswith("snapshot_"))
    panels = [(a["truth"], "truth"), (a["observation"], f"observation y\n(noise {r['noise']:g})")]
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


def plot_fig4(config: Config, rows: list[dict], arrays: dict[str, dict], path) -> None:
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
    ax.set_title(TITLES["fig4"] + f"\nmin error at tau = {r['argmin_error']}", fontsize=9)
    save_figure(fig, path)


PLOTS = {"fig3a": plot_fig3a, "fig3b": plot_fig3b, "fig4": plot_fig4}


def manifest(config: Config) -> dict:
    return settings_and_choices(config, __doc__)
