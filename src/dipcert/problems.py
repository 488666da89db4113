"""Inverse problems y = A x̄ + ε (1): synthetic Gaussian problems and image problems.

A :class:`Problem` holds a batch of independent instances (leading dimension ``batch``) in flat form:
``y`` is (batch, m), ``x_true`` is (batch, n). Image problems keep the image shape for display.

Noise models turn the clean data A x̄ into observations, one seeded draw per run
(``seeding.generator(seed, "noise")``): :class:`GaussianNoise` (y = A x̄ + σ ε, for the MSE),
:class:`PoissonNoise` (photon counts, for the Kullback–Leibler loss) and :class:`OneBitNoise`
(signs, for the logistic loss). Every model reports ``noise = y − A x̄``, so that y = A x̄ + noise.
"""
from __future__ import annotations

import math
import numbers
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .operators import GaussianMatrix, LinearOperator, conditioned_matrices
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


def _finite(name: str, value: float, low: float, strict: bool) -> float:
    """``value`` as a float if finite and above ``low`` (strictly or not); ProblemError otherwise."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value > low if strict else value >= low):
        raise ProblemError(f"{name} must be a finite number {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def _gaussian_draws(m: int, seeds: Sequence[int]) -> Tensor:
    """(batch, m) iid N(0, 1) in float64 on the CPU, run b drawn from ``generator(seeds[b], "noise")``."""
    return torch.stack([torch.randn(m, generator=generator(s, "noise"), dtype=torch.float64) for s in seeds])


class NoiseModel(ABC):
    """Turns clean data A x̄ (batch, m) into observations y, one draw per run seed."""

    name: str

    @abstractmethod
    def sample(self, clean: Tensor, seeds: Sequence[int]) -> tuple[Tensor, Tensor]:
        """(y, noise) with y = clean + noise, same dtype and device as ``clean``."""

    @abstractmethod
    def describe(self) -> dict:
        """JSON-able parameters, with the model's ``name``."""


class GaussianNoise(NoiseModel):
    """y = A x̄ + σ ε with ε iid N(0, 1) (on the signal's scale: [0, 255] for images); σ ≥ 0."""

    name = "gaussian"

    def __init__(self, std: float = 0.0) -> None:
        self.std = _finite("noise standard deviation", std, 0.0, strict=False)

    def sample(self, clean: Tensor, seeds: Sequence[int]) -> tuple[Tensor, Tensor]:
        if self.std == 0:
            return clean, torch.zeros_like(clean)
        noise = _gaussian_draws(clean.shape[-1], seeds).to(dtype=clean.dtype, device=clean.device) * self.std
        return clean + noise, noise

    def describe(self) -> dict:
        return {"name": self.name, "std": self.std}


class PoissonNoise(NoiseModel):
    """Photon counts scaled to the image's range: y = (peak/N)·Poisson(N·A x̄/peak), N = ``photons``.

    N is the expected count at the value ``peak`` (255 for the paper's images), so y has the scale of
    A x̄, E y = A x̄, Var y = (peak/N)·A x̄, and the SNR grows like √N. The Poisson mean must be
    non-negative: blur or inpainting of a non-negative image gives A x̄ ≥ 0, a Gaussian matrix does
    not (refused). Negative entries within 64 ulps of max|A x̄| are rounding and taken as 0.
    """

    name = "poisson"

    def __init__(self, photons: float, peak: float = 255.0) -> None:
        self.photons = _finite("photons", photons, 0.0, strict=True)
        self.peak = _finite("peak", peak, 0.0, strict=True)

    def sample(self, clean: Tensor, seeds: Sequence[int]) -> tuple[Tensor, Tensor]:
        mean = clean.detach().to(device="cpu", dtype=torch.float64)
        rounding = 64 * torch.finfo(clean.dtype).eps * float(mean.abs().max())
        if float(mean.min()) < -rounding:
            raise ProblemError(
                f"Poisson noise needs A x_true >= 0 (a Poisson mean), got a minimum of {float(mean.min()):.4g}: "
                "blur or inpainting of a non-negative image is fine, a Gaussian matrix is not"
            )
        rate = mean.clamp_min(0) * (self.photons / self.peak)
        counts = torch.stack([torch.poisson(rate[b], generator=generator(s, "noise")) for b, s in enumerate(seeds)])
        y = (counts * (self.peak / self.photons)).to(dtype=clean.dtype, device=clean.device)
        return y, y - clean

    def describe(self) -> dict:
        return {"name": self.name, "photons": self.photons, "peak": self.peak}


class OneBitNoise(NoiseModel):
    """1-bit measurements y = sign(A x̄ + σ ε) ∈ {−1, +1} (sign 0 = +1), ε iid N(0, 1); σ ≥ 0.

    The data of the logistic loss. The sign forgets the scale of x̄; ``noise = y − A x̄``.
    """

    name = "one-bit"

    def __init__(self, std: float = 0.0) -> None:
        self.std = _finite("noise standard deviation", std, 0.0, strict=False)

    def sample(self, clean: Tensor, seeds: Sequence[int]) -> tuple[Tensor, Tensor]:
        pre = clean.detach().to(device="cpu", dtype=torch.float64)
        if self.std > 0:
            pre = pre + self.std * _gaussian_draws(clean.shape[-1], seeds)
        y = torch.where(pre >= 0, 1.0, -1.0).to(dtype=clean.dtype, device=clean.device)
        return y, y - clean

    def describe(self) -> dict:
        return {"name": self.name, "std": self.std}


def _observe(op: LinearOperator, clean: Tensor, noise: NoiseModel | float, seeds: Sequence[int]) -> tuple[Tensor, Tensor, dict]:
    """(y, noise, noise description); a number ``noise`` is a Gaussian standard deviation."""
    model = noise if isinstance(noise, NoiseModel) else GaussianNoise(noise)
    if len(seeds) != clean.shape[0]:
        raise ProblemError(f"one seed per instance is needed: {len(seeds)} seeds for {clean.shape[0]} instances")
    y, eps = model.sample(clean, seeds)
    if bool((eps != 0).any()) and not op.full_row_rank():
        warnings.warn(
            "A does not have full row rank and the data are noisy: y is not in Im(A), so the "
            "zero-loss claims of Theorem III.1 do not apply (theory.md §1.1)",
            stacklevel=3,
        )
    return y, eps, model.describe()


def gaussian_problem(
    n: int,
    m: int,
    seeds: Sequence[int] = (0,),
    noise: NoiseModel | float = 0.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    condition: float | None = None,
) -> Problem:
    """The paper's synthetic problems (Fig. 1-2): A and x̄ with iid N(0, 1) entries, one per seed.
    ``noise``: a :class:`NoiseModel`, or a number, the std of white Gaussian noise. With
    ``condition`` κ, A has that condition number instead (:func:`~dipcert.operators.conditioned_matrices`;
    our construction, the paper has none)."""
    for name, value in (("n", n), ("m", m)):
        if not isinstance(value, int) or value <= 0:
            raise ProblemError(f"{name} must be a positive integer, got {value!r}")
    seeds = [int(s) for s in seeds]
    operator_seeds = [derive_seed(s, "operator") for s in seeds]
    op = (GaussianMatrix.from_seeds(m, n, operator_seeds, dtype=dtype, device=device) if condition is None else
          conditioned_matrices(m, n, condition, operator_seeds, dtype=dtype, device=device))
    x_true = torch.stack(
        [torch.randn(n, generator=generator(s, "signal"), dtype=torch.float64) for s in seeds]
    ).to(dtype=dtype, device=device)
    y, eps, described = _observe(op, op.forward_flat(x_true), noise, seeds)
    return Problem(op, y, x_true, eps, description={"signal": "gaussian", "n": n, "m": m, "noise": described, "seeds": seeds,
                                                      **({"condition": condition} if condition is not None else {})})


def image_problem(
    image: np.ndarray,
    operator: LinearOperator,
    seeds: Sequence[int] = (0,),
    noise: NoiseModel | float = 0.0,
) -> Problem:
    """Observe an (H, W) image through ``operator``, one noise draw per seed. ``noise``: a
    :class:`NoiseModel`, or a number, the std of white Gaussian noise on the image's scale ([0, 255]
    for the paper)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ProblemError(f"image must be a 2-D array, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ProblemError("image contains NaN or inf")
    if operator.in_size != image.size:
        raise ProblemError(f"operator expects {operator.in_shape} inputs, image has shape {image.shape}")
    seeds = [int(s) for s in seeds]
    x = torch.as_tensor(image.reshape(1, -1), dtype=operator.dtype, device=operator.device).expand(len(seeds), -1)
    y, eps, described = _observe(operator, operator.forward_flat(x), noise, seeds)
    return Problem(
        operator, y, x.contiguous(), eps, image_shape=image.shape,
        description={"signal": "image", "shape": list(image.shape), "noise": described, "seeds": seeds},
    )
