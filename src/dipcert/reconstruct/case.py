"""What every reconstruction method receives and returns.

A :class:`Case` is one observation y = A x̄ + ε of an image (a batch-1 :class:`~dipcert.problems.Problem`
in float64), with the noise level the methods may use and the truth, which only oracle choices and
the metrics read. A :class:`Reconstruction` is x̂ with its seconds, the parameter or stop it chose,
the rule that chose it and what that rule needed (a noise level, the ground truth).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..noise_level import NoiseLevel
from ..problems import Problem

#: what each parameter-choice rule needs besides y and A (rules not listed need nothing more)
RULE_NEEDS: dict[str, tuple[str, ...]] = {
    "discrepancy": ("noise level",),
    "certified": ("noise level",),
    "given-noise": ("noise level",),
    "oracle": ("ground truth",),
}

#: where the rules that need a noise level get it: the simulated σ, or an estimate from y
NOISE_LEVELS = ("given", "estimated")

#: std of the rounding error of 8-bit quantized observations, in gray levels: uniform on [-1/2, 1/2]
QUANTIZATION_STD = 1 / math.sqrt(12)


class NotApplicable(ValueError):
    """The method cannot reconstruct this case (wrong operator, missing noise level, missing package)."""


@dataclass
class Case:
    """One observation to reconstruct. ``problem`` holds a single run in float64; ``noise`` is the
    noise level given to the rules that need one (None: unknown); ``truth`` (H, W) is read only by
    oracle rules and the metrics."""

    problem: Problem
    truth: np.ndarray
    noise: NoiseLevel | None
    seed: int = 0
    task: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.problem.batch != 1:
            raise ValueError(f"a case holds one run, got a batch of {self.problem.batch}")
        if self.problem.image_shape is None or tuple(self.problem.image_shape) != self.truth.shape:
            raise ValueError("a case needs an image problem whose shape is that of its truth")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.problem.image_shape)

    @property
    def operator(self):
        return self.problem.operator

    @property
    def y(self) -> torch.Tensor:
        """The observation, flat (m,), float64."""
        return self.problem.y[0].to(torch.float64)

    @property
    def sigma(self) -> float | None:
        """The noise std σ given to the rules (None when unknown or not Gaussian)."""
        if self.noise is None or self.noise.sigma is None:
            return None
        return float(self.noise.sigma[0])

    @property
    def noise_norm(self) -> float:
        """‖ε‖ as the discrepancy rules take it; NotApplicable when the noise level is unknown."""
        if self.noise is None or not self.noise.known:
            raise NotApplicable("the discrepancy rule needs a noise level, and none is known here")
        return float(self.noise.norm[0])

    def error(self, x: np.ndarray | torch.Tensor) -> float:
        """‖x − x̄‖, for oracle choices."""
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return float(np.linalg.norm(x.reshape(-1) - self.truth.reshape(-1)))


@dataclass
class Reconstruction:
    """x̂ (H, W) on the image's scale, with how it was obtained.

    ``seconds``: wall time to obtain it: the shared setup plus its own search for a parameter; for an
    iteration (and a DIP), the time to reach the iterate where the rule stops (the whole path for the
    oracle, which must see it all). ``parameter``/``value``: what the rule chose (``"lambda"``, ``"iterations"``…;
    "" and NaN for a method with nothing to choose). ``rule``: the rule as applied (``auto`` resolved).
    """

    x: np.ndarray
    seconds: float
    rule: str
    parameter: str = ""
    value: float = math.nan
    needs: tuple[str, ...] | None = None  # None: what the rule needs by RULE_NEEDS
    notes: tuple[str, ...] = ()
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.needs is None:
            self.needs = RULE_NEEDS.get(self.rule, ())


def build_case(values: dict, quantize: bool = False, noise_level: str = "given") -> Case:
    """The case of a ``solve`` configuration (nested ``values``: problem, operator, noise, run sections):
    the same image, operator and noise draw as ``dipcert solve`` with those options, in float64.

    ``quantize``: observations rounded to 8 bits (integers in [0, 255]; for noiseless blur, so that
    no method gets the inverse crime); the rounding is then the noise. ``noise_level``: ``"given"``
    (the simulated σ, or the rounding's 1/√12, as a user who knows the sensor would give it) or
    ``"estimated"`` (from y where :func:`~dipcert.noise_level.estimate_noise_level` can; unknown elsewhere).
    """
    from ..config import RunConfig
    from ..images import load_image
    from ..noise_level import estimate_noise_level, given_noise_level
    from ..problems import GaussianNoise, image_problem
    from ..solve import build_image_operator

    config = RunConfig.build({**values, "run": {**values.get("run", {}), "dtype": "float64"},
                              "network": {"network": "two-layer"}})
    if config.noise.name != "gaussian":
        raise ValueError(f"cases take Gaussian noise, got {config.noise.name}")
    image = load_image(config.problem.image, config.problem.size)
    operator = build_image_operator(config, image.shape)
    problem = image_problem(image, operator, [config.run.seed], GaussianNoise(config.noise.noise_std))
    sigma = config.noise.noise_std
    if quantize:
        if operator.out_size != operator.in_size:
            raise ValueError("8-bit quantization applies to observations that are images")
        clean = problem.y - problem.noise
        y = problem.y.round().clamp(0, 255)
        problem = Problem(operator, y, problem.x_true, y - clean, problem.image_shape,
                          {**problem.description, "quantized": "8 bits"})
        sigma = math.sqrt(sigma**2 + QUANTIZATION_STD**2)
    if noise_level not in NOISE_LEVELS:
        raise ValueError(f"noise_level must be one of {', '.join(NOISE_LEVELS)}, got {noise_level!r}")
    level = given_noise_level(sigma, problem.m) if noise_level == "given" else estimate_noise_level(problem)
    task = {"config": values, "quantized": quantize, "noise_level": noise_level}
    return Case(problem, image, level, config.run.seed, task)
