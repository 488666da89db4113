"""Momentum methods used as references: Polyak's heavy ball and Nesterov's accelerated gradient.

Both are linear combinations of gradients and iterates, so the z = W u reduction is exact for them.
"""
from __future__ import annotations

from torch import Tensor

from ..networks import Params, add_scaled_
from .loop import Gradients
from .state import PerRun, expand, masked


class HeavyBall:
    """θ_{k+1} = θ_k − γ ∇L(θ_k) + μ (θ_k − θ_{k−1}), θ_{−1} = θ_0 (Polyak)."""

    name = "heavy-ball"
    commutes_with_reduction = True

    def __init__(self, step: float | Tensor, momentum: float | Tensor = 0.9) -> None:
        self.step = PerRun("step", step)
        self.momentum = PerRun("momentum", momentum, minimum=0.0, strict=False)
        self._velocity: Params | None = None  # v_k

    def update(self, params: Params, grads: Gradients, active: Tensor) -> None:
        if self._velocity is None:
            self._velocity = {name: p.new_zeros(p.shape) for name, p in params.items()}
        like = next(iter(params.values()))
        gamma = masked(self.step.get(like).expand(active.shape), active)
        mu = masked(self.momentum.get(like).expand(active.shape), active)
        for name, grad in grads.items():
            velocity = self._velocity[name]
            velocity.mul_(expand(mu, velocity))
            add_scaled_(velocity, grad, -gamma)  # v_{k+1} = μ v_k − γ ∇L
            self._move(params[name], velocity, grad, gamma, mu)

    @staticmethod
    def _move(param: Tensor, velocity: Tensor, grad, gamma: Tensor, mu: Tensor) -> None:
        param.add_(velocity)  # θ_{k+1} = θ_k + v_{k+1}

    def select(self, indices: Tensor) -> None:
        self.step.select(indices)
        self.momentum.select(indices)
        if self._velocity is not None:
            self._velocity = {name: v[indices.to(v.device)] for name, v in self._velocity.items()}

    def describe(self) -> dict:
        return {"name": self.name, "step": self.step.describe(), "momentum": self.momentum.describe()}


class Nesterov(HeavyBall):
    """Nesterov's method with constant momentum μ, written on the extrapolated points p_k at which
    the gradient is taken (the iterates the loop evaluates):

        v_{k+1} = μ v_k − γ ∇L(p_k),    p_{k+1} = p_k + μ v_{k+1} − γ ∇L(p_k),    v_0 = 0,

    equivalent to θ_{k+1} = p_k − γ∇L(p_k), p_{k+1} = θ_{k+1} + μ(θ_{k+1} − θ_k).
    """

    name = "nesterov"

    @staticmethod
    def _move(param: Tensor, velocity: Tensor, grad, gamma: Tensor, mu: Tensor) -> None:
        param.addcmul_(velocity, expand(mu, velocity))
        add_scaled_(param, grad, -gamma)
