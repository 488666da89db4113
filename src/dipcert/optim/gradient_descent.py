"""Gradient descent (2): θ_{τ+1} = θ_τ − γ ∇_θ L_y(A g(u, θ_τ))."""
from __future__ import annotations

import torch
from torch import Tensor

from ..networks import Params, RankOne, add_scaled_


class GradientDescent:
    """Fixed-step gradient descent, eq. (2). Theorem III.1 asks for γ ∈ ]0, 1/L[.

    ``step`` is one γ for every run, or a 1-D tensor with one γ per run of the batch.
    """

    name = "gd"
    commutes_with_reduction = True

    def __init__(self, step: float | Tensor) -> None:
        values = torch.as_tensor(step, dtype=torch.float64).flatten()
        if values.numel() == 0 or not bool((torch.isfinite(values) & (values > 0)).all()):
            raise ValueError(f"step size must be a finite number > 0, got {step!r}")
        self.step: float | Tensor = float(step) if values.numel() == 1 and not isinstance(step, Tensor) else values
        self._cached: tuple[Tensor, Tensor] | None = None

    def update(self, params: Params, grads: dict[str, Tensor | RankOne], active: Tensor) -> None:
        """One step on the runs where ``active`` is True; the others stay frozen."""
        for name, grad in grads.items():
            dtype = grad.left.dtype if isinstance(grad, RankOne) else grad.dtype
            add_scaled_(params[name], grad, self.descent_steps(active, dtype))

    def descent_steps(self, active: Tensor, dtype: torch.dtype) -> Tensor:
        """−γ on active runs, 0 on the others (the ``steps`` of ``Network.descend``, which fuses a
        step with the next forward pass); cached while ``active`` does not change."""
        if self._cached is not None and self._cached[0] is active and self._cached[1].dtype == dtype:
            return self._cached[1]
        step = self.step if isinstance(self.step, float) else self.step.to(device=active.device)
        scale = torch.where(active, -step, torch.zeros((), dtype=torch.float64, device=active.device)).to(dtype)
        self._cached = (active, scale)
        return scale

    def select(self, indices: Tensor) -> None:
        """Keep the steps of the runs at ``indices`` (per-run steps only)."""
        if isinstance(self.step, Tensor):
            self.step = self.step[indices.to(self.step.device)]
        self._cached = None

    def describe(self) -> dict:
        step = self.step if isinstance(self.step, float) else self.step.tolist()
        return {"name": self.name, "step": step}
