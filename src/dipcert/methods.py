"""Choosing a training method and its hyperparameters for a problem (``dipcert solve --method``).

The ``auto`` rules are heuristics (estimates, not certificates), computed at θ_0 from the
Gauss–Newton spectrum of A J_g(θ_0) J_g(θ_0)ᵀ Aᵀ: its smallest non-zero eigenvalue μ and its largest
L (:func:`dipcert.steps.gauss_newton_extremes`, exact; :func:`~dipcert.steps.gauss_newton_sqnorm`,
a power-iteration estimate of L, for the steps of gd, heavy ball and Nesterov):

- gradient descent, heavy ball, Nesterov: γ = 1/L;
- C1 / C2: h = ½ h_stab(L), half the largest linearly stable step (see :mod:`dipcert.optim.inertial`);
- viscous damping α = 2√μ: critical damping of the slowest mode of the linearized dynamics
  ë + (α + βλ) ė + λ e = 0 (theory.md §4.1);
- Hessian damping: β = 0 by default (the companion paper finds it unnecessary on its problem),
  except for C2, whose first-order form needs β > 0. ``auto`` is β = 1/√L, the best of
  β√L ∈ {0.5, 1, 2, 4} on the Fig. 1 problem (docs/inertia.md). With α ≈ 0, β = 2/√L would give
  the largest stable step, but with α = 2√μ not small against √L it gives a smaller one;
- Adam: learning rate 1e-2, the usual DIP setting.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .networks import Network
from .optim import (
    Adam, GradientDescent, GradientDifference, GradientFlow, HeavyBall, INNA, InertialFlow, Method, Nesterov,
)
from .optim.inertial import c1_stable_step, c2_stable_step
from .problems import Problem
from .steps import gauss_newton_extremes, gauss_newton_sqnorm

METHODS = {
    "gd": "gradient descent (2), fixed step",
    "heavy-ball": "Polyak's heavy ball (reference)",
    "nesterov": "Nesterov's accelerated gradient (reference)",
    "adam": "Adam, learning rate 1e-2 (the practical DIP baseline)",
    "gradient-difference": "inertial scheme C1: Hessian damping as a gradient difference",
    "inna": "inertial scheme C2: forward Euler on the first-order DIN system (INNA-type)",
    "gradient-flow": "gradient flow, adaptive Runge-Kutta (SciPy)",
    "inertial-flow": "the DIN ODE of the inertia paper, adaptive Runge-Kutta (SciPy)",
}
CLASSES = {"gd": GradientDescent, "heavy-ball": HeavyBall, "nesterov": Nesterov, "adam": Adam,
           "gradient-difference": GradientDifference, "inna": INNA, "gradient-flow": GradientFlow,
           "inertial-flow": InertialFlow}
ODE_METHODS = ("gradient-flow", "inertial-flow")
INERTIAL = ("gradient-difference", "inna", "inertial-flow")
MOMENTUM = ("heavy-ball", "nesterov")


@dataclass
class MethodSettings:
    """What ``--method`` and its options ask for; ``"auto"`` values follow the module's rules."""

    name: str = "gd"
    step: float | str = "auto"
    momentum: float = 0.9
    alpha: float | str = "auto"
    beta: float | str | None = None  # None: 0, or "auto" for inna
    adaptive_step: bool = False
    ode_solver: str = "RK45"
    rtol: float = 1e-8
    atol: float = 1e-12

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ValueError(f"unknown method {self.name!r}; allowed: {', '.join(METHODS)}")
        for key in ("alpha", "beta"):
            value = getattr(self, key)
            if isinstance(value, str) and value != "auto":
                raise ValueError(f"{key} must be a number >= 0 or 'auto', got {value!r}")
            if isinstance(value, (int, float)) and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key} must be a finite number >= 0 or 'auto', got {value!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if self.name in ODE_METHODS and self.step not in ("auto", "certified"):
            raise ValueError(f"{self.name} has no step size (an adaptive ODE solver): leave the step to 'auto'")
        if self.step == "certified" and self.name not in ("gd", "gradient-flow"):
            raise ValueError("--step certified exists for gd (1/(2L)) and gradient-flow only")
        defaults = MethodSettings.__dataclass_fields__
        unused = {  # options given (not at their defaults) that the method would ignore
            "--alpha": self.alpha != defaults["alpha"].default and self.name not in INERTIAL,
            "--beta": self.beta is not None and self.name not in INERTIAL,
            "--momentum": self.momentum != defaults["momentum"].default and self.name not in MOMENTUM,
            "--adaptive-step": self.adaptive_step and self.name not in ("gradient-difference", "inna"),
            "--ode-solver/--rtol/--atol": self.name not in ODE_METHODS and any(
                getattr(self, key) != defaults[key].default for key in ("ode_solver", "rtol", "atol")),
        }
        for option, ignored in unused.items():
            if ignored:
                raise ValueError(f"{option} does not apply to --method {self.name}")

    @property
    def commutes_with_reduction(self) -> bool:
        """Is the z = W u reduction exact for this method (theory.md §6)?"""
        return CLASSES[self.name].commutes_with_reduction


def build_method(settings: MethodSettings, problem: Problem, network: Network,
                 step: float | None = None) -> tuple[Method, dict]:
    """The method of ``settings`` for ``problem`` and ``network``, and the hyperparameters it got
    (with how each was chosen). ``step`` overrides the step rule (the certified γ for gd)."""
    name = settings.name
    chosen: dict = {}
    spectrum: tuple[torch.Tensor, torch.Tensor] | None = None

    def extremes() -> tuple[float, float]:
        nonlocal spectrum
        if spectrum is None:
            spectrum = gauss_newton_extremes(problem, network)
        return float(spectrum[0].min()), float(spectrum[1].max())

    def pick(key: str, value, auto, rule: str, default_rule: str = "user"):
        if value == "auto":
            value = auto()
            chosen[key] = {"value": value, "rule": rule}
        else:
            chosen[key] = {"value": value, "rule": default_rule}
        return value

    if name in INERTIAL:
        alpha = pick("alpha", settings.alpha, lambda: 2 * math.sqrt(extremes()[0]),
                     "auto: 2 sqrt(mu), mu = smallest non-zero eigenvalue of A J J^T A^T at theta_0 "
                     "(critical damping, a heuristic)")
        if settings.beta is None and name != "inna":
            beta = pick("beta", 0.0, None, "", "default: 0 (the inertia paper finds beta unnecessary)")
        else:
            beta = pick("beta", "auto" if settings.beta is None else settings.beta,
                        lambda: 1 / math.sqrt(extremes()[1]),
                        "auto: 1/sqrt(L), L = lambda_max(A J J^T A^T) at theta_0 (a measured compromise, "
                        "see docs/inertia.md)")
    if name in ODE_METHODS:
        solver = dict(solver=settings.ode_solver, rtol=settings.rtol, atol=settings.atol)
        chosen["solver"] = solver
        method = GradientFlow(**solver) if name == "gradient-flow" else InertialFlow(alpha, beta, **solver)
        return method, chosen
    if step is not None:
        chosen["step"] = {"value": step, "rule": "given"}
    elif name == "adam":
        step = pick("step", settings.step, lambda: 1e-2, "auto: 1e-2, the usual DIP learning rate")
    elif name in ("gradient-difference", "inna"):
        stable = c1_stable_step if name == "gradient-difference" else c2_stable_step
        step = pick("step", settings.step,
                    lambda: 0.5 * float(stable(torch.tensor([extremes()[1]], dtype=torch.float64), alpha, beta)[0]),
                    "auto: half the largest linearly stable step at L = lambda_max(A J J^T A^T) (a heuristic)")
    else:
        step = pick("step", settings.step, lambda: float(1 / gauss_newton_sqnorm(problem, network).max()),
                    "auto: 1/||A J_g(theta_0)||^2 (power-iteration estimate, not a certificate)")
    if name == "gd":
        return GradientDescent(step), chosen
    if name in MOMENTUM:
        default = settings.momentum == MethodSettings.momentum
        chosen["momentum"] = {"value": settings.momentum, "rule": "default" if default else "user"}
        return (HeavyBall if name == "heavy-ball" else Nesterov)(step, settings.momentum), chosen
    if name == "adam":
        return Adam(step), chosen
    cls = GradientDifference if name == "gradient-difference" else INNA
    if settings.adaptive_step:
        chosen["step"]["rule"] += "; then adaptive (ours, not the paper's)"
    return cls(step, alpha, beta, adaptive=settings.adaptive_step), chosen
