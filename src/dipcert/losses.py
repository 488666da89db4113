"""Data-fidelity losses L_y and their Kurdyka–Łojasiewicz desingularizers (Definition II.2).

A loss acts on flat observations ``v`` of shape ``(*batch, m)`` and reduces over the last axis.
Its KL desingularizer ψ satisfies ψ'(L_y(v))‖∇L_y(v)‖ ≥ 1 (3); Ψ is a primitive of −(ψ')², so
that the loss bound (6) reads ``L_y(y_τ) ≤ Ψ⁻¹(ξ_τ)``.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class Loss(ABC):
    """Interface every loss implements; ``psi``/``Psi``/``Psi_inv`` act elementwise on tensors."""

    name: str

    @abstractmethod
    def value(self, v: Tensor, y: Tensor) -> Tensor:
        """L_y(v), reduced over the last axis."""

    @abstractmethod
    def grad(self, v: Tensor, y: Tensor) -> Tensor:
        """∇_v L_y(v), same shape as v."""

    @abstractmethod
    def psi(self, s: Tensor) -> Tensor:
        """KL desingularizer ψ (3)."""

    @abstractmethod
    def Psi(self, s: Tensor) -> Tensor:
        """A primitive of −(ψ')², decreasing."""

    @abstractmethod
    def Psi_inv(self, xi: Tensor) -> Tensor:
        """Inverse of Ψ."""

    def describe(self) -> dict:
        return {"name": self.name}


class MSELoss(Loss):
    """L_y(v) = ½‖v − y‖² with ψ(s) = c·√s (theory.md §2.2).

    ψ satisfies (3) on all of ]0, ∞[ iff c ≥ √2, since ψ'(L)‖∇L‖ = c/√2; the default c = √2 is the
    tightest choice and gives ψ(L_y(v)) = ‖v − y‖ exactly. Then Ψ(s) = −(c²/4)·ln s and
    Ψ⁻¹(ξ) = exp(−4ξ/c²). The paper writes only ψ(s) = c s^{1/2}; the value of c is ours.
    """

    name = "mse"

    def __init__(self, c: float = math.sqrt(2.0)) -> None:
        if not c >= math.sqrt(2.0) - 1e-15:
            raise ValueError(f"MSE desingularizer constant c must be >= sqrt(2) for (3) to hold, got {c}")
        self.c = float(c)

    def value(self, v: Tensor, y: Tensor) -> Tensor:
        return 0.5 * torch.sum((v - y) ** 2, dim=-1)

    def grad(self, v: Tensor, y: Tensor) -> Tensor:
        return v - y

    def psi(self, s: Tensor) -> Tensor:
        return self.c * torch.sqrt(s)

    def Psi(self, s: Tensor) -> Tensor:
        return -(self.c**2 / 4.0) * torch.log(s)

    def Psi_inv(self, xi: Tensor) -> Tensor:
        return torch.exp(-4.0 * xi / self.c**2)

    def describe(self) -> dict:
        return {"name": self.name, "c": self.c}


LOSSES: dict[str, type[Loss]] = {"mse": MSELoss}


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(sorted(LOSSES))}") from None
