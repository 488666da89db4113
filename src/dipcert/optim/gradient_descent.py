"""Gradient descent (2): θ_{τ+1} = θ_τ − γ ∇_θ L_y(A g(u, θ_τ))."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..networks import Params, RankOne, add_scaled_


class GradientDescent:
    """Fixed-step gradient descent, eq. (2). Theorem III.1 asks for γ ∈ ]0, 1/L[."""

    name = "gd"

    def __init__(self, step: float) -> None:
        if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
            raise ValueError(f"step size must be a finite number > 0, got {step!r}")
        self.step = float(step)

    def update(self, params: Params, grads: dict[str, Tensor | RankOne], active: Tensor) -> None:
        """One step on the runs where ``active`` is True; the others stay frozen."""
        scale = torch.where(active, -self.step, 0.0).to(next(iter(params.values())).dtype)
        for name, grad in grads.items():
            add_scaled_(params[name], grad, scale)

    def select(self, indices: Tensor) -> None:
        """Gradient descent keeps no per-run state."""

    def describe(self) -> dict:
        return {"name": self.name, "step": self.step}
