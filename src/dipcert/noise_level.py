"""The noise of y = A x̄ + ε as the stopping rules need it: its norm ‖ε‖ per run, and the std σ
when the noise is white Gaussian; given, or estimated from y alone.

Estimates are made only where one is sound:

- Gaussian noise through a blur (a local operator, so y is an image): scikit-image's wavelet
  estimator ``skimage.restoration.estimate_sigma`` (the median absolute deviation of the finest
  diagonal wavelet coefficients, Donoho & Johnstone) on y; ‖ε‖ ≈ σ̂√m;
- Gaussian noise through a Gaussian matrix with m > n: the least-squares residual,
  σ̂² = ‖y − A A⁺ y‖²/(m − n), unbiased;
- Poisson noise y = (p/N)·Poisson(N A x̄/p) with the photon count N of the noise model (the user's
  statement of the noise level): E‖ε‖² = (p/N) Σ A x̄ ≈ (p/N) Σ max(y, 0).

Nowhere else. In particular not for the well-conditioned operator U diag(s) Vᵀ: its random U mixes
every pixel into every measurement, so no part of y is noise alone, and the back-projection A⁻¹y
keeps the image's own fine detail, which the wavelet estimator counts as noise (measured on 64×64
camera and coins: 2× σ at σ = 2.5, +23% at σ = 10). Nor for inpainting (y is pixels at random
positions, not an image) or a Gaussian matrix with m ≤ n. There :func:`estimate_noise_level` says
why, and the ``auto`` stopping rule falls back to a rule that needs no noise level.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .operators import GaussianBlur, GaussianMatrix, Spectral
from .problems import GaussianNoise, PoissonNoise, Problem


@dataclass
class NoiseLevel:
    """‖ε‖ per run (None when unknown), σ when the noise is Gaussian, how they were obtained."""

    norm: np.ndarray | None  # (batch,) or (1,)
    sigma: np.ndarray | None
    source: str  # "given", "estimated", "noise model" or "unavailable"
    method: str  # how, in words; or why there is no estimate

    @property
    def known(self) -> bool:
        return self.norm is not None

    def to_json(self, run: int, true_sigma: float | None = None) -> dict:
        out: dict = {"source": self.source, "method": self.method}
        pick = lambda a: float(a[run if a.size > 1 else 0])
        if self.norm is not None:
            out["noise_norm"] = pick(self.norm)
        if self.sigma is not None:
            out["sigma"] = pick(self.sigma)
            if true_sigma is not None:
                out["true_sigma"] = true_sigma
                if self.source == "estimated" and true_sigma > 0:
                    out["relative_error"] = out["sigma"] / true_sigma - 1
        return out


def _wavelet_sigma(image: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(image, channel_axis=None))


def _gaussian(sigma: np.ndarray, m: int, source: str, method: str) -> NoiseLevel:
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
    return NoiseLevel(sigma * np.sqrt(m), sigma, source, method)


def estimate_noise_level(problem: Problem) -> NoiseLevel:
    """‖ε‖ (and σ) for every run of ``problem`` from its observations y (see the module docstring)."""
    noise = (problem.description or {}).get("noise") or {}
    op, y = problem.operator, problem.y.detach().double().cpu()
    name = noise.get("name", GaussianNoise.name)
    if name == PoissonNoise.name:
        scale = noise["peak"] / noise["photons"]
        return NoiseLevel(np.sqrt(scale * y.clamp_min(0).sum(-1).numpy()), None, "noise model",
                          f"E||eps||^2 = (peak/N) sum(A x_true) ~ (peak/N) sum(max(y, 0)), N = {noise['photons']:g}")
    if name != GaussianNoise.name:
        return NoiseLevel(None, None, "unavailable", f"no estimator for {name} noise")
    if isinstance(op, GaussianBlur) and problem.image_shape is not None:
        sigma = [_wavelet_sigma(y[b].numpy().reshape(problem.image_shape)) for b in range(problem.batch)]
        return _gaussian(np.array(sigma), problem.m, "estimated", "wavelet MAD (skimage estimate_sigma) on y")
    if isinstance(op, GaussianMatrix) and op.out_size > op.in_size:
        m, n = op.out_size, op.in_size
        matrices = op.matrix.double().cpu()
        matrices = matrices.expand(problem.batch, m, n) if matrices.ndim == 2 else matrices
        fit = torch.linalg.lstsq(matrices, y.unsqueeze(-1)).solution
        residual = (y - (matrices @ fit).squeeze(-1)).norm(dim=-1)
        return _gaussian((residual / (m - n) ** 0.5).numpy(), m, "estimated",
                         "least-squares residual ||y - A A^+ y|| / sqrt(m - n)")
    if isinstance(op, GaussianMatrix):
        why = f"a {op.out_size} x {op.in_size} Gaussian matrix (m <= n) leaves no part of y that is noise alone"
    elif isinstance(op, Spectral):
        why = "U diag(s) V^T mixes every pixel into every measurement: no part of y is noise alone"
    else:
        why = f"y of the {op.label} is not an image"
    return NoiseLevel(None, None, "unavailable", f"no sound noise estimate: {why}")


def given_noise_level(sigma: float, m: int) -> NoiseLevel:
    """σ as the user gave it (--noise-level); ‖ε‖ ≈ σ√m."""
    return _gaussian(np.array([float(sigma)]), m, "given", "--noise-level")
