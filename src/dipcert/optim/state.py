"""Per-run hyperparameters and parameter arithmetic shared by the training methods.

Parameters and gradients are dicts of batched tensors (leading dimension: the runs); a gradient
may be a :class:`~dipcert.networks.RankOne` (the V-gradient of the two-layer net), which these
helpers handle without forming it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..networks import RankOne


class PerRun:
    """A hyperparameter with one value for every run, or one value per run of the batch (a 1-D
    tensor); it follows the working set when stopped runs are dropped (:meth:`select`)."""

    def __init__(self, name: str, value: float | Tensor, *, minimum: float = 0.0, strict: bool = True) -> None:
        values = torch.as_tensor(value, dtype=torch.float64).flatten()
        ok = torch.isfinite(values) & ((values > minimum) if strict else (values >= minimum))
        if values.numel() == 0 or not bool(ok.all()):
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
        self.name = name
        self.values = values
        self.scalar = values.numel() == 1 and not isinstance(value, Tensor)

    def get(self, like: Tensor) -> Tensor:
        """The values as a tensor of shape (batch,) (or (1,)) in ``like``'s dtype and device."""
        return self.values.to(device=like.device, dtype=like.dtype)

    def select(self, indices: Tensor) -> None:
        if not self.scalar:
            self.values = self.values[indices.to(self.values.device)]

    def describe(self) -> float | list[float]:
        return float(self.values[0]) if self.scalar else self.values.tolist()


def masked(values: Tensor, active: Tensor, inactive: float = 0.0) -> Tensor:
    """``values`` on the active runs, ``inactive`` on the others, shape (batch,)."""
    return torch.where(active, values, torch.full_like(values, inactive))


def expand(scale: Tensor, like: Tensor) -> Tensor:
    """A per-run scale of shape (batch,) viewed to broadcast against ``like`` (batch, ...)."""
    return scale.view(-1, *([1] * (like.dim() - 1)))


def dense(grad: Tensor | RankOne) -> Tensor:
    return grad.dense() if isinstance(grad, RankOne) else grad


def sqnorm(t: Tensor | RankOne) -> Tensor:
    """‖t[b]‖² per run, float64."""
    if isinstance(t, RankOne):
        return t.sqnorm().double()
    return torch.linalg.vector_norm(t.flatten(1), dim=-1, dtype=torch.float64) ** 2


def inner(a: Tensor, b: Tensor | RankOne) -> Tensor:
    """⟨a[b], b[b]⟩ per run, float64; ``b`` may be rank one (then ⟨a, l rᵀ⟩ = lᵀ a r)."""
    if isinstance(b, RankOne):
        return torch.einsum("bn,bnk,bk->b", b.left, a, b.right).double()
    return (a.flatten(1).double() * b.flatten(1).double()).sum(-1)


def sqdist(a: Tensor | RankOne, b: Tensor | RankOne) -> Tensor:
    """‖a[b] − b[b]‖² per run, float64, for tensors or rank-one pairs."""
    if isinstance(a, RankOne) and isinstance(b, RankOne):
        cross = (a.left * b.left).sum(-1).double() * (a.right * b.right).sum(-1).double()
        return (sqnorm(a) + sqnorm(b) - 2 * cross).clamp_min(0)
    return sqnorm(dense(a) - dense(b))


def total(per_name: dict[str, Tensor]) -> Tensor:
    """Sum over parameter names of per-run values."""
    return sum(per_name.values())


def select_tree(tree: dict | None, indices: Tensor) -> dict | None:
    """The runs at ``indices`` of a dict of batched tensors or rank-one gradients."""
    if tree is None:
        return None
    out = {}
    for name, t in tree.items():
        idx = indices.to((t.left if isinstance(t, RankOne) else t).device)
        out[name] = RankOne(t.left[idx], t.right[idx]) if isinstance(t, RankOne) else t[idx]
    return out


def check_nonnegative(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
