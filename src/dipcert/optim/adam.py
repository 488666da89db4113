"""Adam (Kingma & Ba), the optimizer most DIP code uses, as a baseline (learning rate 1e-2).

Adam rescales each coordinate of the gradient, so it does not commute with the z = W u reduction of
theory.md §6: with the hidden layer trained it must run on the full W (``commutes_with_reduction``
is False, and :func:`dipcert.solve.solve` builds the network accordingly).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..networks import Params
from .loop import Gradients
from .state import PerRun, dense, masked


class Adam:
    """θ ← θ − lr·m̂/(√v̂ + ε), with bias-corrected moment estimates m̂, v̂ (as ``torch.optim.Adam``)."""

    name = "adam"
    commutes_with_reduction = False

    def __init__(self, lr: float | Tensor = 1e-2, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr = PerRun("learning rate", lr)
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Adam betas must lie in [0, 1), got {betas!r}")
        if not eps > 0:
            raise ValueError(f"Adam eps must be > 0, got {eps!r}")
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)
        self._m: Params | None = None
        self._v: Params | None = None
        self._count = 0

    def update(self, params: Params, grads: Gradients, active: Tensor) -> None:
        if self._m is None:
            self._m = {name: torch.zeros_like(p) for name, p in params.items()}
            self._v = {name: torch.zeros_like(p) for name, p in params.items()}
        self._count += 1
        b1, b2 = self.betas
        like = next(iter(params.values()))
        lr = masked(self.lr.get(like).expand(active.shape), active)
        for name, grad in grads.items():
            g, m, v = dense(grad), self._m[name], self._v[name]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2**self._count)).sqrt_().add_(self.eps)
            step = lr.view(-1, *([1] * (g.dim() - 1))) / (1 - b1**self._count)
            params[name].addcdiv_(m * step, denom, value=-1)

    def select(self, indices: Tensor) -> None:
        self.lr.select(indices)
        if self._m is not None:
            self._m = {name: t[indices.to(t.device)] for name, t in self._m.items()}
            self._v = {name: t[indices.to(t.device)] for name, t in self._v.items()}

    def describe(self) -> dict:
        return {"name": self.name, "lr": self.lr.describe(), "betas": list(self.betas), "eps": self.eps}
