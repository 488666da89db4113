"""Data-fidelity losses L_y and their Kurdyka–Łojasiewicz desingularizers (Definition II.2).

A loss acts on flat observations ``v`` of shape ``(*batch, m)`` and reduces over the last axis.
Its KL desingularizer ψ satisfies ψ'(L_y(v))‖∇L_y(v)‖ ≥ 1 (3) on a stated region; Ψ is a
primitive of −(ψ')², so that the loss bound (6) reads ``L_y(y_τ) ≤ Ψ⁻¹(ξ_τ)``.

| loss | ψ | where (3) holds | source |
|---|---|---|---|
| MSE ½‖v − y‖² | c√s, c = √2 | everywhere | theory.md §2.2 [D] |
| Kullback–Leibler (Poisson) | 2√(v_max s) | 0 < v_i ≤ v_max | our derivation [D], below |
| logistic | none | inf L = 0 is not attained | Definition II.2 fails |
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class DesingularizerUnavailable(ValueError):
    """The loss has no known KL desingularizer (so no certificate); the message says why."""


class Loss(ABC):
    """Interface every loss implements; ``psi``/``Psi``/``Psi_inv`` act elementwise on tensors."""

    name: str
    #: Where the desingularizer is valid, or why there is none.
    desingularizer_domain: str = ""

    @abstractmethod
    def value(self, v: Tensor, y: Tensor) -> Tensor:
        """L_y(v), reduced over the last axis."""

    @abstractmethod
    def grad(self, v: Tensor, y: Tensor) -> Tensor:
        """∇_v L_y(v), same shape as v."""

    def check_data(self, y: Tensor) -> None:
        """Raise ValueError when y is outside the loss's data domain."""

    def psi(self, s: Tensor) -> Tensor:
        """KL desingularizer ψ (3)."""
        raise DesingularizerUnavailable(self.desingularizer_domain)

    def psi_inv(self, r: Tensor) -> Tensor:
        """Inverse of ψ."""
        raise DesingularizerUnavailable(self.desingularizer_domain)

    def Psi(self, s: Tensor) -> Tensor:
        """A primitive of −(ψ')², decreasing."""
        raise DesingularizerUnavailable(self.desingularizer_domain)

    def Psi_inv(self, xi: Tensor) -> Tensor:
        """Inverse of Ψ."""
        raise DesingularizerUnavailable(self.desingularizer_domain)

    def describe(self) -> dict:
        return {"name": self.name, "desingularizer_domain": self.desingularizer_domain}


class _SqrtDesingularized(Loss):
    """Losses with ψ(s) = c√s: Ψ(s) = −(c²/4)·ln s, Ψ⁻¹(ξ) = exp(−4ξ/c²) (constants cancel)."""

    c: float

    def psi(self, s: Tensor) -> Tensor:
        return self.c * torch.sqrt(s)

    def psi_inv(self, r: Tensor) -> Tensor:
        return (r / self.c) ** 2

    def Psi(self, s: Tensor) -> Tensor:
        return -(self.c**2 / 4.0) * torch.log(s)

    def Psi_inv(self, xi: Tensor) -> Tensor:
        return torch.exp(-4.0 * xi / self.c**2)


class MSELoss(_SqrtDesingularized):
    """L_y(v) = ½‖v − y‖² with ψ(s) = c·√s (theory.md §2.2).

    ψ satisfies (3) on all of ]0, ∞[ iff c ≥ √2, since ψ'(L)‖∇L‖ = c/√2; the default c = √2 is the
    tightest choice and gives ψ(L_y(v)) = ‖v − y‖ exactly. The paper writes only ψ(s) = c s^{1/2};
    the value of c is ours.
    """

    name = "mse"
    desingularizer_domain = "everywhere"

    def __init__(self, c: float = math.sqrt(2.0)) -> None:
        if not c >= math.sqrt(2.0) - 1e-15:
            raise ValueError(f"MSE desingularizer constant c must be >= sqrt(2) for (3) to hold, got {c}")
        self.c = float(c)

    def value(self, v: Tensor, y: Tensor) -> Tensor:
        return 0.5 * torch.sum((v - y) ** 2, dim=-1)

    def grad(self, v: Tensor, y: Tensor) -> Tensor:
        return v - y

    def describe(self) -> dict:
        return {**super().describe(), "c": self.c}


class KLLoss(_SqrtDesingularized):
    """Kullback–Leibler (Poisson) loss L_y(v) = Σ_i v_i − y_i − y_i ln(v_i / y_i), with 0 ln 0 = 0.

    Data y ≥ 0 (counts); the loss is finite for v > 0 (``inf`` elsewhere), so assumption A-1
    (C¹ on all of R^m) holds only on that region. Desingularizer [D, ours]: with h(t) = t − 1 − ln t,
    h(t) ≤ (t − 1)²/t because ln t ≥ 1 − 1/t; hence L_y(v) ≤ Σ v_i (1 − y_i/v_i)² ≤ v_max ‖∇L_y(v)‖²
    whenever every v_i ≤ v_max, and ψ(s) = 2√(v_max·s) satisfies (3) there. ``v_max`` must bound
    every A g(u, θ_τ) along the run; without it there is no certificate.
    """

    name = "kl"

    def __init__(self, v_max: float | None = None) -> None:
        if v_max is not None and not (math.isfinite(v_max) and v_max > 0):
            raise ValueError(f"v_max must be a finite number > 0, got {v_max}")
        self.v_max = v_max
        self.desingularizer_domain = (
            f"0 < v_i <= v_max = {v_max} for every observation v = A g(u, theta)"
            if v_max is not None
            else "unknown: give v_max, a bound on every entry of A g(u, theta) along the run"
        )

    @property
    def c(self) -> float:  # type: ignore[override]
        if self.v_max is None:
            raise DesingularizerUnavailable(f"KL loss: desingularizer {self.desingularizer_domain}")
        return 2.0 * math.sqrt(self.v_max)

    def check_data(self, y: Tensor) -> None:
        if bool((y < 0).any()):
            raise ValueError("the Kullback-Leibler loss needs non-negative data y (counts)")

    def value(self, v: Tensor, y: Tensor) -> Tensor:
        ratio_log = torch.where(y > 0, y * (torch.log(y.clamp_min(1e-300)) - torch.log(v)), torch.zeros_like(v))
        terms = torch.where((v > 0) | ((y == 0) & (v == 0)), v - y + ratio_log, torch.full_like(v, math.inf))
        return terms.sum(-1)

    def grad(self, v: Tensor, y: Tensor) -> Tensor:
        return 1.0 - y / v

    def describe(self) -> dict:
        return {**super().describe(), "v_max": self.v_max}


class LogisticLoss(Loss):
    """Logistic loss L_y(v) = Σ_i ln(1 + exp(−y_i v_i)) for labels y_i ∈ {−1, +1}.

    Its infimum 0 is not attained, so Definition II.2 (min f = 0) fails; moreover
    ‖∇L‖ ≤ Σ_i (1 − e^{−s_i}) ≤ L for the per-sample losses s_i, so ψ' ≥ 1/L near 0 and ψ cannot
    vanish at 0. It can be trained, but it carries no certificate.
    """

    name = "logistic"
    desingularizer_domain = "none: the infimum 0 is not attained, so no psi with psi(0) = 0 satisfies (3)"

    def check_data(self, y: Tensor) -> None:
        if not bool(((y == 1) | (y == -1)).all()):
            raise ValueError("the logistic loss needs labels y in {-1, +1}")

    def value(self, v: Tensor, y: Tensor) -> Tensor:
        return torch.nn.functional.softplus(-y * v).sum(-1)

    def grad(self, v: Tensor, y: Tensor) -> Tensor:
        return -y * torch.sigmoid(-y * v)


LOSSES: dict[str, type[Loss]] = {"mse": MSELoss, "kl": KLLoss, "logistic": LogisticLoss}


def get_loss(name: str, **params) -> Loss:
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(sorted(LOSSES))}") from None
    return cls(**params)
