"""The ``solve`` pipeline: build a problem and a network from a :class:`SolveConfig`, train, report.

This is what ``dipcert solve`` runs; it is usable from Python as well::

    from dipcert.solve import SolveConfig, solve, write_outputs
    outcome = solve(SolveConfig(image="builtin:camera", operator="blur", iters=200))
    write_outputs(outcome, "out/camera")
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .certify import Certificate, certify
from .images import load_image, psnr, save_png, ssim
from .losses import MSELoss
from .methods import MethodSettings, build_method
from .networks import TwoLayerDIP
from .operators import (
    GaussianBlur,
    GaussianMatrix,
    Inpainting,
    LinearOperator,
    Spectral,
)
from .optim import Method, TrainResult, train
from .problems import Problem, gaussian_problem, image_problem
from .report import summary_figure, versions, write_csv, write_json
from .seeding import derive_seed

OPERATORS = ("blur", "well-conditioned", "gaussian", "inpainting")
SIGNALS = ("image", "gaussian")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
STEP_RULES = ("auto", "certified")


@dataclass
class SolveConfig:
    """Everything that defines a run; ``None`` means "the default for this signal" (see below).

    Defaults for image problems: float32, both layers trained ("WV"), 500 iterations.
    Defaults for the synthetic Gaussian problems (Fig. 1-2): float64, the hidden layer only ("W"),
    1e5 iterations stopped at loss 1e-14, as in the paper. ``method`` is one of
    :data:`dipcert.methods.METHODS`; ``step`` is a number, ``"auto"`` (the heuristics of
    :mod:`dipcert.methods`) or ``"certified"`` (gd: γ = 1/(2L) with the certified bound on L of
    :mod:`dipcert.certify`; gradient-flow: the flow's certificate). ``certify`` attaches the
    certificate of Theorem III.1 (its gradient-flow version for the flow) to the outcome, and for
    every method the a-posteriori recovery bound. ``momentum``, ``alpha``, ``beta``,
    ``adaptive_step``, ``ode_solver``, ``rtol``, ``atol`` configure the other methods.
    """

    signal: str = "image"
    image: str = "builtin:camera"
    size: tuple[int, int] = (64, 64)
    n: int = 5
    m: int | None = None
    operator: str = "blur"
    blur_sigma: float = 1.0
    boundary: str = "circular"
    keep_fraction: float = 0.5
    noise_std: float = 0.0
    width: int = 10_000
    d: int = 32
    train: str | None = None
    activation: str = "sigmoid"
    v_law: str = "rademacher"
    step: float | str = "auto"
    iters: int | None = None
    loss_tol: float | None = None
    record_every: int | None = None
    seed: int = 0
    runs: int = 1
    device: str = "cpu"
    dtype: str | None = None
    certify: bool = False
    lipschitz_form: str | None = None
    method: str = MethodSettings.name
    momentum: float = MethodSettings.momentum
    alpha: float | str = MethodSettings.alpha
    beta: float | str | None = MethodSettings.beta
    adaptive_step: bool = MethodSettings.adaptive_step
    ode_solver: str = MethodSettings.ode_solver
    rtol: float = MethodSettings.rtol
    atol: float = MethodSettings.atol

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"unknown signal {self.signal!r}; allowed: {', '.join(SIGNALS)}")
        if self.operator not in OPERATORS:
            raise ValueError(f"unknown operator {self.operator!r}; allowed: {', '.join(OPERATORS)}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if self.signal == "gaussian" and self.operator != "gaussian":
            self.operator = "gaussian"
        synthetic = self.signal == "gaussian"
        self.dtype = self.dtype or ("float64" if synthetic else "float32")
        self.train = self.train or ("W" if synthetic else "WV")
        self.iters = self.iters if self.iters is not None else (100_000 if synthetic else 500)
        self.loss_tol = self.loss_tol if self.loss_tol is not None else (1e-14 if synthetic else 0.0)
        self.record_every = self.record_every or max(1, self.iters // 2000)
        for name in ("width", "d", "runs", "iters", "n"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.m is not None and (not isinstance(self.m, int) or self.m <= 0):
            raise ValueError(f"m must be a positive integer, got {self.m!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        if not self.blur_sigma > 0:
            raise ValueError(f"blur sigma must be > 0, got {self.blur_sigma}")
        if not 0 < self.keep_fraction <= 1:
            raise ValueError(f"keep fraction must be in (0, 1], got {self.keep_fraction}")
        if isinstance(self.step, str):
            if self.step not in STEP_RULES:
                raise ValueError(f"step must be a number > 0 or one of {', '.join(STEP_RULES)}, got {self.step!r}")
        elif not (np.isfinite(self.step) and self.step > 0):
            raise ValueError(f"step must be a finite number > 0, got {self.step}")
        self.method_settings  # validates the method options
        try:
            torch.empty(0, device=self.device)
        except (RuntimeError, ValueError, AssertionError) as exc:  # torch asserts when built without CUDA
            raise ValueError(f"device {self.device!r} is not available here ({exc}); use cpu or cuda[:N]") from None

    @property
    def method_settings(self) -> MethodSettings:
        return MethodSettings(self.method, self.step, self.momentum, self.alpha, self.beta, self.adaptive_step,
                              self.ode_solver, self.rtol, self.atol)

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.runs))

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


@dataclass
class SolveOutcome:
    config: SolveConfig
    problem: Problem
    network: TwoLayerDIP
    result: TrainResult
    step: float | None  # None for the ODE methods
    hyperparameters: dict  # name → {"value", "rule"}: what the method got and how it was chosen
    truth_image: np.ndarray | None = None
    certificate: Certificate | None = None
    metrics: dict = field(default_factory=dict)


def build_image_operator(config: SolveConfig, shape: tuple[int, int]) -> LinearOperator:
    dtype, device = config.torch_dtype, config.device
    seed = derive_seed(config.seed, "operator")
    n = shape[0] * shape[1]
    if config.operator == "blur":
        return GaussianBlur(shape, config.blur_sigma, boundary=config.boundary, dtype=dtype, device=device)
    if config.operator == "well-conditioned":
        return Spectral.well_conditioned(n, seed=seed, dtype=dtype, device=device, in_shape=shape)
    if config.operator == "inpainting":
        return Inpainting.random(shape, config.keep_fraction, seed=seed).to(device=device, dtype=dtype)
    return GaussianMatrix(config.m or n, n, seed=seed, dtype=dtype, device=device)


def build_problem(config: SolveConfig) -> tuple[Problem, np.ndarray | None]:
    """The problem of ``config`` and, for images, the true image (H, W)."""
    if config.signal == "gaussian":
        problem = gaussian_problem(
            config.n, config.m or config.n, config.seeds, config.noise_std, config.torch_dtype, config.device
        )
        return problem, None
    image = load_image(config.image, config.size)
    operator = build_image_operator(config, image.shape)
    return image_problem(image, operator, config.seeds, config.noise_std), image


def build_network(config: SolveConfig, problem: Problem) -> TwoLayerDIP:
    """The two-layer DIP (9) of ``config``, one initialization per run seed. The hidden layer is
    trained through z = W u (exact, theory.md §6) unless the method does not commute with that
    reduction (Adam): then through the full W."""
    reduced = config.method_settings.commutes_with_reduction
    return TwoLayerDIP(
        problem.n, config.width, d=config.d, activation=config.activation, train=config.train,
        v_law=config.v_law, seeds=[derive_seed(s, "network") for s in config.seeds],
        parametrization="reduced" if reduced else "full", dtype=config.torch_dtype, device=config.device,
    )


def choose_method(
    config: SolveConfig, problem: Problem, network: TwoLayerDIP
) -> tuple[Method, dict, Certificate | None]:
    """The training method with its hyperparameters (and how each was chosen), and the certificate
    when ``config`` asks for one: Theorem III.1 for gd, its gradient-flow version for the flow, and
    for the other methods the quantities of the a-posteriori recovery bound."""
    settings = config.method_settings
    flow = config.method == "gradient-flow"
    wants_certificate = config.certify or config.step == "certified"
    certificate, step = None, None
    if wants_certificate and config.method != "gd":
        certificate = certify(problem, network, lipschitz_form=config.lipschitz_form,
                              dynamics="flow" if flow else "a-posteriori")
    if config.method == "gd" and config.step == "certified":
        certificate = certify(problem, network, lipschitz_form=config.lipschitz_form)
        step = float(certificate["step"].value[0])
    method, chosen = build_method(settings, problem, network, step)
    if step is not None:
        chosen["step"]["rule"] = "certified: 1/(2L), L an upper bound on B(theta_0, R)"
    if config.method == "gd" and config.certify and certificate is None:
        certificate = certify(problem, network, step=chosen["step"]["value"], lipschitz_form=config.lipschitz_form)
    return method, chosen, certificate


def solve(config: SolveConfig, callback: Callable[[int, torch.Tensor], None] | None = None) -> SolveOutcome:
    problem, truth = build_problem(config)
    network = build_network(config, problem)
    method, chosen, certificate = choose_method(config, problem, network)
    result = train(
        problem, network, method, max_iters=config.iters, loss_tol=config.loss_tol,
        record_every=config.record_every, callback=callback,
    )
    step = chosen["step"]["value"] if "step" in chosen else None
    outcome = SolveOutcome(config, problem, network, result, step, chosen, truth, certificate)
    outcome.metrics = compute_metrics(outcome)
    return outcome


def observation_image(problem: Problem, run: int = 0) -> np.ndarray | None:
    """The observation as a picture: y itself when it has the image's shape, else Aᵀy (zero-filled)."""
    if problem.image_shape is None:
        return None
    op, y = problem.operator, problem.y[run]
    flat = y if op.out_size == op.in_size else op.adjoint_flat(y)
    return flat.detach().cpu().double().numpy().reshape(problem.image_shape)


def compute_metrics(outcome: SolveOutcome) -> dict:
    problem, result, config = outcome.problem, outcome.result, outcome.config
    runs = []
    for b, seed in enumerate(config.seeds):
        x = result.x[b].detach().cpu().double().numpy()
        run = {
            "seed": seed,
            "status": result.status[b],
            "iterations": int(result.iterations[b]),
            "gradient_evaluations": int(result.history.evaluations[-1, b]),
            "final_loss": float(result.final_loss[b]),
        }
        if result.history.time is not None:
            run["time"] = float(result.history.time[-1, b])
        if problem.x_true is not None:
            x_true = problem.x_true[b].detach().cpu().double().numpy()
            run["error"] = float(np.linalg.norm(x - x_true))
            run["relative_error"] = run["error"] / float(np.linalg.norm(x_true))
        if outcome.truth_image is not None:
            recon = x.reshape(outcome.truth_image.shape)
            run["psnr"] = psnr(outcome.truth_image, recon)
            run["ssim"] = ssim(outcome.truth_image, recon)
            if problem.operator.out_size == problem.operator.in_size:
                run["psnr_observation"] = psnr(outcome.truth_image, observation_image(problem, b))
        if problem.noise is not None:
            run["noise_norm"] = float(problem.noise[b].norm())
        if outcome.certificate is not None:
            run["certificate"] = outcome.certificate.to_json(b)
        runs.append(run)
    return {
        **runs[0],
        "seconds": result.seconds,
        "method": config.method,
        "step": outcome.step,
        "hyperparameters": outcome.hyperparameters,
        "runs": runs,
        "config": {
            **dataclasses.asdict(config),
            "seeds": config.seeds,
            "network": outcome.network.describe(),
            "operator": problem.operator.describe(),
            "training": result.config,
        },
        "versions": versions(),
    }


def history_columns(outcome: SolveOutcome, run: int) -> dict[str, np.ndarray]:
    """One run's history, with the certificate's bound curves (``*_bound``) when there is one:
    (6)-(8) in τ for gd, in t for the gradient flow; for every method with the MSE and an
    injective A, the a-posteriori recovery bound ``error_bound_a_posteriori``."""
    cols = outcome.result.history.columns(run)
    certificate, method = outcome.certificate, outcome.config.method
    if certificate is None:
        return cols
    if method in ("gd", "gradient-flow"):
        clock = cols["time"] if method == "gradient-flow" else cols["iteration"]
        for name, values in certificate.bounds_at(clock).items():
            cols[name] = values[:, run]
    if isinstance(certificate.loss, MSELoss) and np.isfinite(certificate["lambda"].value[run]):
        cols["error_bound_a_posteriori"] = certificate.a_posteriori_error_bound(cols["loss"][:, None])[:, run]
    return cols


def write_outputs(outcome: SolveOutcome, out_dir: str | Path) -> dict[str, Path]:
    """Write metrics.json, history.csv and the pictures; return the written paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json", "history": out / "history.csv", "summary": out / "summary.png"}
    columns: dict[str, list] = {}
    for b in range(outcome.problem.batch):
        cols = history_columns(outcome, b)
        columns.setdefault("run", []).extend([b] * len(cols["iteration"]))
        for name, values in cols.items():
            columns.setdefault(name, []).extend(np.asarray(values).tolist())
    write_csv(paths["history"], columns)
    write_json(paths["metrics"], outcome.metrics)
    curves = history_columns(outcome, 0)
    images = {}
    if outcome.truth_image is not None:
        shape = outcome.truth_image.shape
        observation = observation_image(outcome.problem)
        recon = outcome.result.x[0].detach().cpu().double().numpy().reshape(shape)
        paths["observation"], paths["reconstruction"] = out / "observation.png", out / "reconstruction.png"
        save_png(observation, paths["observation"])
        save_png(recon, paths["reconstruction"])
        m = outcome.metrics
        obs_label = "observation y" if outcome.problem.m == outcome.problem.n else "observation A^T y"
        if "psnr_observation" in m:
            obs_label += f" ({m['psnr_observation']:.1f} dB)"
        images = {"truth": outcome.truth_image, obs_label: observation, f"reconstruction ({m['psnr']:.1f} dB)": recon}
    c = outcome.config
    step = f", step {outcome.step:.3g}" if outcome.step is not None else ""
    title = f"{c.signal} / {c.operator}, k={c.width}, train {c.train}, {c.method}{step}: {outcome.metrics['status']}"
    summary_figure(paths["summary"], curves, images, title=title)
    return paths
