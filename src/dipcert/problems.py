"""Inverse problems y = A x̄ + ε (1): synthetic Gaussian problems and image problems.

A :class:`Problem` holds a batch of independent instances (leading dimension ``batch``) in flat form:
``y`` is (batch, m), ``x_true`` is (batch, n). Image problems keep the image shape for display.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .operators import GaussianMatrix, LinearOperator
from .seeding import derive_seed, generator


class ProblemError(ValueError):
    """Inconsistent problem data; the message says what was wrong."""


@dataclass
class Problem:
    """A batch of instances of (1). ``x_true`` and ``noise`` are None when unknown (the builders
    below know both; a noiseless problem has a zero ``noise``)."""

    operator: LinearOperator
    y: Tensor
    x_true: Tensor | None = None
    noise: Tensor | None = None
    image_shape: tuple[int, int] | None = None
    description: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        op = self.operator
        if self.y.dim() != 2 or self.y.shape[-1] != op.out_size:
            raise ProblemError(f"y must have shape (batch, {op.out_size}) for this operator, got {tuple(self.y.shape)}")
        if op.batch_shape and op.batch_shape[0] != self.y.shape[0]:
            raise ProblemError(f"operator holds {op.batch_shape[0]} instances but y holds {self.y.shape[0]}")
        if not torch.isfinite(self.y).all():
            raise ProblemError("observation y contains NaN or inf")
        if self.x_true is not None and tuple(self.x_true.shape) != (self.batch, op.in_size):
            raise ProblemError(f"x_true must have shape ({self.batch}, {op.in_size}), got {tuple(self.x_true.shape)}")

    def select(self, indices: Tensor) -> "Problem":
        """The instances at ``indices`` (1-D index tensor), as a problem of their own."""
        pick = lambda t: None if t is None else t[indices.to(t.device)]
        return Problem(self.operator.select(indices), pick(self.y), pick(self.x_true), pick(self.noise),
                       self.image_shape, self.description)

    @property
    def batch(self) -> int:
        return self.y.shape[0]

    @property
    def n(self) -> int:
        return self.operator.in_size

    @property
    def m(self) -> int:
        return self.operator.out_size


def _add_noise(op: LinearOperator, clean: Tensor, noise_std: float, seeds: Sequence[int]) -> tuple[Tensor, Tensor]:
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ProblemError(f"noise standard deviation must be finite and >= 0, got {noise_std}")
    if noise_std == 0:
        return clean, torch.zeros_like(clean)
    noise = torch.stack(
        [torch.randn(clean.shape[-1], generator=generator(s, "noise"), dtype=torch.float64) for s in seeds]
    ).to(dtype=clean.dtype, device=clean.device) * noise_std
    if not op.full_row_rank():
        warnings.warn(
            "A does not have full row rank and the data are noisy: y is not in Im(A), so the "
            "zero-loss claims of Theorem III.1 do not apply (theory.md §1.1)",
            stacklevel=3,
        )
    return clean + noise, noise


def gaussian_problem(
    n: int,
    m: int,
    seeds: Sequence[int] = (0,),
    noise_std: float = 0.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> Problem:
    """The paper's synthetic problems (Fig. 1-2): A and x̄ with iid N(0, 1) entries, one per seed."""
    for name, value in (("n", n), ("m", m)):
        if not isinstance(value, int) or value <= 0:
            raise ProblemError(f"{name} must be a positive integer, got {value!r}")
    seeds = [int(s) for s in seeds]
    op = GaussianMatrix.from_seeds(m, n, [derive_seed(s, "operator") for s in seeds], dtype=dtype, device=device)
    x_true = torch.stack(
        [torch.randn(n, generator=generator(s, "signal"), dtype=torch.float64) for s in seeds]
    ).to(dtype=dtype, device=device)
    y, noise = _add_noise(op, op.forward_flat(x_true), noise_std, seeds)
    return Problem(op, y, x_true, noise, description={"signal": "gaussian", "n": n, "m": m, "noise_std": noise_std, "seeds": seeds})


def image_problem(
    image: np.ndarray,
    operator: LinearOperator,
    seeds: Sequence[int] = (0,),
    noise_std: float = 0.0,
) -> Problem:
    """Observe an (H, W) image through ``operator`` with white Gaussian noise of std ``noise_std``
    (on the image's scale, [0, 255] for the paper), one noise draw per seed."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ProblemError(f"image must be a 2-D array, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ProblemError("image contains NaN or inf")
    if operator.in_size != image.size:
        raise ProblemError(f"operator expects {operator.in_shape} inputs, image has shape {image.shape}")
    seeds = [int(s) for s in seeds]
    x = torch.as_tensor(image.reshape(1, -1), dtype=operator.dtype, device=operator.device).expand(len(seeds), -1)
    y, noise = _add_noise(operator, operator.forward_flat(x), noise_std, seeds)
    return Problem(
        operator, y, x.contiguous(), noise, image_shape=image.shape,
        description={"signal": "image", "shape": list(image.shape), "noise_std": noise_std, "seeds": seeds},
    )
