"""Discrete inertial algorithms for the DIN dynamics of the companion paper (theory.md §4),

    θ̈ + α θ̇ + β (d/dt) ∇L(θ) + ∇L(θ) = 0,    θ(0) = θ_0,  θ̇(0) = 0.

The paper's own algorithm and its adaptive step rule could not be retrieved (theory.md §7.2). We
implement the two consistent discretizations of theory.md §4.2, both with one gradient per step:

- :class:`GradientDifference` (C1): the Hessian term as a difference of successive gradients;
- :class:`INNA` (C2): forward Euler on the first-order (Hessian-free) form of the DIN system.

Each takes a fixed step h, or the adaptive rule below, which is **ours, not the paper's**:

    h_k = min(growth · h_{k−1}, safety · h_stab(L̂_k)),   L̂_k = ‖∇L_k − ∇L_{k−1}‖ / ‖θ_k − θ_{k−1}‖,

where h_stab(λ) is the largest step at which the scheme is linearly stable on every quadratic with
curvature in (0, λ] (closed forms below) and L̂_k is the secant curvature along the last step, in
the spirit of Malitsky & Mishchenko's adaptive gradient descent.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..networks import Params, add_scaled_
from .loop import Gradients
from .state import (
    PerRun,
    check_nonnegative,
    expand,
    inner,
    masked,
    select_tree,
    sqdist,
    sqnorm,
    total,
)


def c1_stable_step(curvature: Tensor, alpha: float, beta: float) -> Tensor:
    """Largest h at which C1 is stable for every curvature λ ∈ (0, L]: the root of
    L h² + 2(βL − α) h − 4 = 0 (Jury's conditions on r² − (1 + a − (s + b)λ) r + a − bλ)."""
    c = alpha - beta * curvature
    return (c + torch.sqrt(c * c + 4 * curvature)) / curvature


def c2_stable_step(curvature: Tensor, alpha: float, beta: float, points: int = 161) -> Tensor:
    """Largest h at which forward Euler on the first-order DIN system is stable for every
    curvature λ ∈ [10⁻⁸ L, L] (a log grid): |1 + h r| < 1 for both roots r of r² + (α + βλ) r + λ."""
    lam = curvature.unsqueeze(-1) * torch.logspace(-8, 0, points, dtype=curvature.dtype, device=curvature.device)
    s = alpha + beta * lam
    disc = s * s - 4 * lam
    real = 4 / (s + torch.sqrt(disc.clamp_min(0)))
    return torch.where(disc >= 0, real, s / lam).amin(-1)


class _Inertial:
    """Shared state of the discrete inertial schemes: per-run steps, the step rule, the time t."""

    name = ""
    commutes_with_reduction = True
    stable_step = staticmethod(c1_stable_step)

    def __init__(self, step: float | Tensor, alpha: float, beta: float, *, adaptive: bool = False,
                 safety: float = 0.5, growth: float = 1.2) -> None:
        self.initial_step = PerRun("step h", step)
        self.alpha, self.beta = check_nonnegative("alpha", alpha), check_nonnegative("beta", beta)
        if not 0 < safety < 1:
            raise ValueError(f"safety must lie in (0, 1), got {safety!r}")
        if not growth >= 1:
            raise ValueError(f"growth must be >= 1, got {growth!r}")
        self.adaptive, self.safety, self.growth = adaptive, float(safety), float(growth)
        self.time: Tensor | None = None  # t_k = Σ h, per working run
        self._h: Tensor | None = None  # the last step per run (float64)
        self._curvature: Tensor | None = None  # L̂, per run
        self._last_grads: Gradients | None = None
        self._last_move: Tensor | None = None  # ‖θ_k − θ_{k−1}‖² per run

    def _steps(self, grads: Gradients, active: Tensor) -> Tensor:
        """h_k per run (float64): the fixed step, or the adaptive rule once a secant exists."""
        if self._h is None:
            self._h = self.initial_step.get(active.double()).expand(active.shape).clone()
            self.time = torch.zeros(active.shape, dtype=torch.float64, device=active.device)
            self._curvature = torch.full_like(self._h, float("nan"))
        elif self.adaptive:
            moved = self._last_move > 0
            secant = torch.sqrt(total({n: sqdist(g, self._last_grads[n]) for n, g in grads.items()})
                                / torch.where(moved, self._last_move, torch.ones_like(self._last_move)))
            usable = moved & torch.isfinite(secant) & (secant > 0)
            self._curvature = torch.where(usable, secant, self._curvature)
            limit = self.safety * self.stable_step(self._curvature, self.alpha, self.beta)
            bounded = torch.minimum(self.growth * self._h, limit)
            self._h = torch.where(usable, bounded, self._h)
        return masked(self._h, active)

    def _finish(self, grads: Gradients, h: Tensor) -> None:
        self.time += h
        if self.adaptive:
            self._last_grads = grads

    def select(self, indices: Tensor) -> None:
        self.initial_step.select(indices)
        for name in ("time", "_h", "_curvature", "_last_move"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[indices.to(value.device)])
        self._last_grads = select_tree(self._last_grads, indices)
        self._select_state(indices)

    def _select_state(self, indices: Tensor) -> None:
        raise NotImplementedError

    def describe(self) -> dict:
        rule = ({"rule": "adaptive (ours, not the paper's)", "initial": self.initial_step.describe(),
                 "safety": self.safety, "growth": self.growth} if self.adaptive
                else {"rule": "fixed", "h": self.initial_step.describe()})
        return {"name": self.name, "alpha": self.alpha, "beta": self.beta, "step": rule}


class GradientDifference(_Inertial):
    """C1 of theory.md §4.2, in velocity form with steps h_k (v_0 = 0, ∇L_{−1} = ∇L_0):

        v_{k+1} = [v_k − β (h_k/h_{k−1}) (∇L_k − ∇L_{k−1}) − h_k ∇L_k] / (1 + α h_k),
        θ_{k+1} = θ_k + h_k v_{k+1}.

    With a constant h this is θ_{k+1} = θ_k + (θ_k − θ_{k−1})/(1+αh) − βh(∇L_k − ∇L_{k−1})/(1+αh)
    − h²∇L_k/(1+αh), first-order accurate for the DIN ODE.
    """

    name = "gradient-difference"
    stable_step = staticmethod(c1_stable_step)

    def __init__(self, step: float | Tensor, alpha: float = 1.0, beta: float = 0.0, **rule) -> None:
        super().__init__(step, alpha, beta, **rule)
        self._velocity: Params | None = None
        self._previous: Gradients | None = None

    def update(self, params: Params, grads: Gradients, active: Tensor) -> None:
        previous_h = self._h
        h = self._steps(grads, active)
        if self._velocity is None:
            self._velocity = {name: p.new_zeros(p.shape) for name, p in params.items()}
            self._previous, previous_h = grads, self._h
        ratio = h / previous_h
        like = next(iter(params.values()))
        damp = (1 / (1 + self.alpha * h)).to(like.dtype)
        for name, grad in grads.items():
            v = self._velocity[name]
            v.mul_(expand(damp, v))
            add_scaled_(v, grad, (-(self.beta * ratio + h) * damp).to(like.dtype))
            if self.beta:
                add_scaled_(v, self._previous[name], (self.beta * ratio * damp).to(like.dtype))
            add_scaled_(params[name], v, h.to(like.dtype))
        if self.adaptive:
            self._last_move = h * h * total({name: sqnorm(v) for name, v in self._velocity.items()})
        self._previous = grads
        self._finish(grads, h)

    def _select_state(self, indices: Tensor) -> None:
        self._velocity = select_tree(self._velocity, indices)
        self._previous = select_tree(self._previous, indices)


class INNA(_Inertial):
    """C2 of theory.md §4.2: forward Euler on the first-order form of the DIN system (β > 0),

        φ_k = (α − 1/β) θ_k + ψ_k/β,   θ_{k+1} = θ_k − h_k (φ_k + β ∇L(θ_k)),   ψ_{k+1} = ψ_k − h_k φ_k,

    with ψ_0 = (1 − αβ) θ_0 − β² ∇L(θ_0), so that θ̇(0) = 0 (``zero_initial_velocity``; INNA's
    own default ψ_0 = (1 − αβ) θ_0 starts with θ̇(0) = −β ∇L(θ_0)).
    """

    name = "inna"
    stable_step = staticmethod(c2_stable_step)

    def __init__(self, step: float | Tensor, alpha: float = 1.0, beta: float = 1.0, *,
                 zero_initial_velocity: bool = True, **rule) -> None:
        super().__init__(step, alpha, beta, **rule)
        if not self.beta > 0:
            raise ValueError("INNA needs beta > 0 (its first-order form divides by beta)")
        self.zero_initial_velocity = zero_initial_velocity
        self._psi: Params | None = None

    def update(self, params: Params, grads: Gradients, active: Tensor) -> None:
        h = self._steps(grads, active)
        alpha, beta = self.alpha, self.beta
        first = self._psi is None
        if first:
            self._psi = {name: p * (1 - alpha * beta) for name, p in params.items()}
            if self.zero_initial_velocity:
                for name, grad in grads.items():
                    add_scaled_(self._psi[name], grad, torch.full_like(h, -beta * beta).to(self._psi[name].dtype))
        like = next(iter(params.values()))
        step = h.to(like.dtype)
        move = torch.zeros_like(h)
        for name, grad in grads.items():
            theta, psi = params[name], self._psi[name]
            phi = theta * (alpha - 1 / beta) + psi / beta
            if self.adaptive:  # ‖θ_{k+1} − θ_k‖² = h² ‖φ + β∇L‖²
                move += h * h * (sqnorm(phi) + 2 * beta * inner(phi, grad) + beta * beta * sqnorm(grad))
            add_scaled_(theta, phi, -step)
            add_scaled_(theta, grad, -beta * step)
            add_scaled_(psi, phi, -step)
        if self.adaptive:  # with θ̇(0) = 0 the first step does not move θ (φ_0 + β∇L_0 = 0 exactly)
            self._last_move = torch.zeros_like(move) if first and self.zero_initial_velocity else move
        self._finish(grads, h)

    def _select_state(self, indices: Tensor) -> None:
        self._psi = select_tree(self._psi, indices)

    def describe(self) -> dict:
        return {**super().describe(), "zero_initial_velocity": self.zero_initial_velocity}
