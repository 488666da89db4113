"""The training methods (``--method``), their options and the ``auto`` rules of their hyperparameters.

The ``auto`` rules are heuristics (estimates, not certificates), computed at θ_0 from the
Gauss–Newton spectrum of A J_g(θ_0) J_g(θ_0)ᵀ Aᵀ: its smallest non-zero eigenvalue μ and its largest
L (:func:`dipcert.steps.gauss_newton_extremes`, exact; :func:`~dipcert.steps.gauss_newton_sqnorm`,
a power-iteration estimate of L, for the steps of gd, heavy ball and Nesterov):

- gradient descent, heavy ball, Nesterov: γ = 1/L, one step per run from that run's own θ_0 (so a
  run's trajectory does not depend on the other runs of its batch);
- C1 / C2: h = ½ h_stab(L), half the largest linearly stable step (see :mod:`dipcert.optim.inertial`);
- viscous damping α = 2√μ: critical damping of the slowest mode of the linearized dynamics
  ë + (α + βλ) ė + λ e = 0 (theory.md §4.1);
- Hessian damping: β = 0 by default (the companion paper finds it unnecessary on its problem),
  except for C2, whose first-order form needs β > 0. ``auto`` is β = 1/√L, the best of
  β√L ∈ {0.5, 1, 2, 4} on the Fig. 1 problem (docs/inertia.md). With α ≈ 0, β = 2/√L would give
  the largest stable step, but with α = 2√μ not small against √L it gives a smaller one;
- Adam: learning rate 1e-2, the usual DIP setting.

- heavy ball and Nesterov with ``momentum = auto``: the textbook tunings for a quadratic with
  spectrum [μ, L] (:func:`polyak_heavy_ball`, :func:`nesterov_momentum`); the step, if ``auto``
  too, is the tuning's own (Polyak's 4/(√L + √μ)², Nesterov's 1/L).

The inertial schemes, and heavy ball and Nesterov with ``momentum = auto``, take one value for the
whole batch (the smallest μ and the largest L over its runs): their runs, unlike gd's, depend on the
batch they are trained in (a sweep with ``batch = 1`` tunes every trial on its own spectrum).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .networks import Network
from .optim import (
    Adam, GradientDescent, GradientDifference, GradientFlow, HeavyBall, INNA, InertialFlow, Method, Nesterov,
)
from .optim.flows import SOLVERS
from .optim.inertial import c1_stable_step, c2_stable_step
from .problems import Problem
from .registry import Component, Option, Section, choice
from .steps import gauss_newton_extremes, gauss_newton_sqnorm

ADAM_LEARNING_RATE = 1e-2


class Spectrum:
    """μ and L of A J_g(θ_0) J_g(θ_0)ᵀ Aᵀ: over the runs of a batch (smallest μ, largest L), or per
    run (the power estimate of L), computed once, on first use."""

    def __init__(self, problem: Problem, network: Network) -> None:
        self.problem, self.network = problem, network
        self._extremes: tuple[float, float] | None = None
        self._power_L: torch.Tensor | None = None

    @property
    def extremes(self) -> tuple[float, float]:
        if self._extremes is None:
            mu, L = gauss_newton_extremes(self.problem, self.network)
            self._extremes = float(mu.min()), float(L.max())
        return self._extremes

    def power_L(self) -> torch.Tensor:
        """L of each run by power iteration (a lower estimate, cheaper than the eigensolver), shape
        (batch,)."""
        if self._power_L is None:
            self._power_L = gauss_newton_sqnorm(self.problem, self.network)
        return self._power_L


def critical_damping(mu: float) -> float:
    """α = 2√μ, critical damping of the slowest mode."""
    return 2 * math.sqrt(mu)


def hessian_damping(L: float) -> float:
    """β = 1/√L (docs/inertia.md)."""
    return 1 / math.sqrt(L)


def half_stable_step(name: str, L: float, alpha: float, beta: float) -> float:
    """½ h_stab(L) for C1 (``gradient-difference``) or C2 (``inna``)."""
    stable = c1_stable_step if name == "gradient-difference" else c2_stable_step
    return 0.5 * float(stable(torch.tensor([L], dtype=torch.float64), alpha, beta)[0])


def polyak_heavy_ball(mu: float, L: float) -> tuple[float, float]:
    """Polyak's (step, momentum) for a quadratic with spectrum [μ, L]."""
    sq = math.sqrt(mu / L)
    return 4 / (math.sqrt(L) + math.sqrt(mu)) ** 2, ((1 - sq) / (1 + sq)) ** 2


def nesterov_momentum(mu: float, L: float) -> tuple[float, float]:
    """Nesterov's (step, momentum) for a μ-strongly convex, L-smooth function."""
    sq = math.sqrt(mu / L)
    return 1 / L, (1 - sq) / (1 + sq)


def per_run_value(values) -> float | list[float]:
    """A hyperparameter as the methods and the metrics take it: one number for a single run, else
    one number per run."""
    flat = [float(v) for v in torch.as_tensor(values, dtype=torch.float64).flatten()]
    return flat[0] if len(flat) == 1 else flat


def value_text(value: float | list[float]) -> str:
    """A hyperparameter for a message: the number, or the range of the per-run numbers."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return f"{min(value):.3g}" if min(value) == max(value) else f"{min(value):.3g} to {max(value):.3g} (per run)"


@dataclass(frozen=True)
class Rule:
    """An ``auto`` rule: the value from the spectrum and the values chosen so far, and its text."""

    fn: Callable[[Spectrum, dict], float]
    text: str


GD_STEP_RULE = Rule(lambda s, _: per_run_value(1 / s.power_L()),
                    "auto: 1/||A J_g(theta_0)||^2 per run (power-iteration estimate, not a certificate)")
RULES: dict[str, dict[str, Rule]] = {  # method → option → its auto rule
    "gd": {"step": GD_STEP_RULE},
    "heavy-ball": {"step": GD_STEP_RULE},
    "nesterov": {"step": GD_STEP_RULE},
    "adam": {"step": Rule(lambda s, _: ADAM_LEARNING_RATE, "auto: 1e-2, the usual DIP learning rate")},
}
_TEXTBOOK = "for a quadratic with spectrum [mu, L] of A J J^T A^T at theta_0 (a heuristic for the DIP)"
#: the rules of ``momentum = auto``, which replace the step rule too
TEXTBOOK_RULES: dict[str, dict[str, Rule]] = {
    "heavy-ball": {
        "momentum": Rule(lambda s, _: polyak_heavy_ball(*s.extremes)[1],
                         f"auto: Polyak's ((1 - sqrt(q))/(1 + sqrt(q)))^2, q = mu/L, {_TEXTBOOK}"),
        "step": Rule(lambda s, _: polyak_heavy_ball(*s.extremes)[0], f"auto: Polyak's 4/(sqrt(L) + sqrt(mu))^2, {_TEXTBOOK}"),
    },
    "nesterov": {
        "momentum": Rule(lambda s, _: nesterov_momentum(*s.extremes)[1],
                         f"auto: Nesterov's (1 - sqrt(q))/(1 + sqrt(q)), q = mu/L, {_TEXTBOOK}"),
        "step": Rule(lambda s, _: nesterov_momentum(*s.extremes)[0], f"auto: Nesterov's 1/L, {_TEXTBOOK}"),
    },
}
_ALPHA_RULE = Rule(lambda s, _: critical_damping(s.extremes[0]),
                   "auto: 2 sqrt(mu), mu = smallest non-zero eigenvalue of A J J^T A^T at theta_0 "
                   "(critical damping, a heuristic)")
_BETA_RULE = Rule(lambda s, _: hessian_damping(s.extremes[1]),
                  "auto: 1/sqrt(L), L = lambda_max(A J J^T A^T) at theta_0 (a measured compromise, see docs/inertia.md)")
for _name in ("gradient-difference", "inna"):
    RULES[_name] = {
        "alpha": _ALPHA_RULE, "beta": _BETA_RULE,
        "step": Rule(lambda s, chosen, name=_name: half_stable_step(name, s.extremes[1], chosen["alpha"], chosen["beta"]),
                     "auto: half the largest linearly stable step at L = lambda_max(A J J^T A^T) (a heuristic)"),
    }
RULES["inertial-flow"] = {"alpha": _ALPHA_RULE, "beta": _BETA_RULE}

# ----------------------------------------------------------------------------------- options
STEP = Option("step", float, "auto",
              "Step γ (h for the inertial schemes, the learning rate for adam): a number, 'auto' (a heuristic, "
              "see docs) or, for gd, 'certified' (1/(2L), L a proven bound).",
              low=0, open_low=True, words=("auto", "certified"))
MOMENTUM = Option("momentum", float, 0.9, "Momentum of heavy-ball and nesterov; auto = the textbook tuning for the "
                  "spectrum [μ, L] of A J Jᵀ Aᵀ at θ0, with its own step if the step is auto too.", low=0, high=1,
                  open_high=True, words=("auto",))
ALPHA = Option("alpha", float, "auto", "Viscous damping α; auto = 2√μ, μ = λ_min(A J Jᵀ Aᵀ) at θ0.", low=0,
               words=("auto",))
BETA = Option("beta", float, None, "Hessian damping β; auto = 1/√L, L = λ_max(A J Jᵀ Aᵀ).", low=0, words=("auto",),
              default_text="0, except inna (needs β > 0): auto")
ADAPTIVE_STEP = Option("adaptive_step", bool, False, "Adaptive step (our rule, not the paper's).")
ODE_SOLVER = Option("ode_solver", str, "RK45", "SciPy solver.", choices=tuple(SOLVERS))
RTOL = Option("rtol", float, 1e-8, "ODE relative tolerance (the loss cannot go far below (rtol ||θ|| ||A J||)²/2).",
              low=0, open_low=True, high=1, open_high=True)
ATOL = Option("atol", float, 1e-12, "ODE absolute tolerance.", low=0, open_low=True, high=1)

_ODE = (ODE_SOLVER, RTOL, ATOL)
_INERTIAL = (STEP, ALPHA, BETA, ADAPTIVE_STEP)
METHOD_NAME, _methods = choice("method", [
    Component("gd", "gradient descent (2), fixed step", (STEP,),
              frozenset({"certifiable", "certified_step", "reduction", "descent"}), {"method.beta": 0.0}),
    Component("heavy-ball", "Polyak's heavy ball (reference)", (STEP, MOMENTUM), frozenset({"reduction"})),
    Component("nesterov", "Nesterov's accelerated gradient (reference)", (STEP, MOMENTUM), frozenset({"reduction"})),
    Component("adam", "Adam, learning rate 1e-2 (the practical DIP baseline)", (STEP,)),
    Component("gradient-difference", "inertial scheme C1: Hessian damping as a gradient difference", _INERTIAL,
              frozenset({"reduction", "time"}), {"method.beta": 0.0}),
    Component("inna", "inertial scheme C2: forward Euler on the first-order DIN system (INNA-type)", _INERTIAL,
              frozenset({"reduction", "time"}), {"method.beta": "auto"}),
    Component("gradient-flow", "gradient flow, adaptive Runge-Kutta (SciPy)", _ODE,
              frozenset({"certifiable", "reduction", "time", "ode"})),
    Component("inertial-flow", "the DIN ODE of the inertia paper, adaptive Runge-Kutta (SciPy)", (ALPHA, BETA, *_ODE),
              frozenset({"reduction", "time", "ode"}), {"method.beta": 0.0}),
], "gd", "Training method")
METHOD = Section("method", "the training method", _methods, METHOD_NAME)


@dataclass
class Chosen:
    """The hyperparameters a method got: name → {"value", "rule"}."""

    values: dict = field(default_factory=dict)

    def pick(self, key: str, value, rule: Rule | None, spectrum: Spectrum, text: str = "user"):
        if value == "auto":
            value = rule.fn(spectrum, {k: v["value"] for k, v in self.values.items()})
            text = rule.text
        self.values[key] = {"value": value, "rule": text}
        return value


def build_method(settings: dict, problem: Problem, network: Network, step: float | list[float] | None = None,
                 spectrum: Spectrum | None = None) -> tuple[Method, dict]:
    """The method of the ``method`` section values ``settings`` (``settings["method"]`` its name,
    the other keys its options) for ``problem`` and ``network``, and the hyperparameters it got
    with how each was chosen. ``step`` overrides the step rule (the certified γ for gd); a
    ``spectrum`` already computed for this problem and network is reused."""
    name = settings["method"]
    rules, chosen = RULES.get(name, {}), Chosen()
    spectrum = spectrum or Spectrum(problem, network)
    alpha = beta = 0.0
    if "alpha" in settings:
        alpha = chosen.pick("alpha", settings["alpha"], rules.get("alpha"), spectrum)
        beta = chosen.pick("beta", settings["beta"], rules.get("beta"), spectrum,
                           "user" if name == "inna" or settings["beta"] != 0.0 else
                           "default: 0 (the inertia paper finds beta unnecessary)")
    if name in ("gradient-flow", "inertial-flow"):
        solver = dict(solver=settings["ode_solver"], rtol=settings["rtol"], atol=settings["atol"])
        chosen.values["solver"] = solver
        method = GradientFlow(**solver) if name == "gradient-flow" else InertialFlow(alpha, beta, **solver)
        return method, chosen.values
    if settings.get("momentum") == "auto":
        rules = {**rules, **TEXTBOOK_RULES[name]}
    if "momentum" in settings:
        momentum = chosen.pick("momentum", settings["momentum"], rules.get("momentum"), spectrum,
                               "default" if settings["momentum"] == MOMENTUM.default else "user")
    if step is not None:
        chosen.values["step"] = {"value": step, "rule": "certified: 1/(2L) per run, L an upper bound on B(theta_0, R)"}
    else:
        step = chosen.pick("step", settings["step"], rules.get("step"), spectrum)
    if name == "gd":
        return GradientDescent(step), chosen.values
    if name in ("heavy-ball", "nesterov"):
        return (HeavyBall if name == "heavy-ball" else Nesterov)(step, momentum), chosen.values
    if name == "adam":
        return Adam(step), chosen.values
    if settings["adaptive_step"]:
        chosen.values["step"]["rule"] += "; then adaptive (ours, not the paper's)"
    cls = GradientDifference if name == "gradient-difference" else INNA
    return cls(step, alpha, beta, adaptive=settings["adaptive_step"]), chosen.values
