"""The noise level the stopping rules use (dipcert.noise_level): estimates where they are sound,
a reason where there is none."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from dipcert.images import load_image
from dipcert.noise_level import estimate_noise_level, given_noise_level
from dipcert.operators import GaussianBlur, Inpainting, Spectral
from dipcert.problems import PoissonNoise, gaussian_problem, image_problem

IMAGES = ("camera", "astronaut", "coins", "brick")
SEEDS = [0, 1, 2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: a second thread only waits


@pytest.fixture(scope="module")
def images():
    return {name: load_image(f"builtin:{name}", (64, 64)) for name in IMAGES}


@pytest.mark.parametrize("sigma", [2.5, 10.0])
@pytest.mark.parametrize("name", IMAGES)
def test_wavelet_estimate_on_blurred_images_is_within_15_percent(images, name, sigma):
    """(measured: at most +14.1% at σ = 2.5 (astronaut, seed 0), ±6% at σ = 10)"""
    problem = image_problem(images[name], GaussianBlur((64, 64), 1.0), seeds=SEEDS, noise=sigma)
    level = estimate_noise_level(problem)
    assert level.known and level.source == "estimated" and "wavelet" in level.method
    assert level.sigma.shape == (3,) and level.norm.shape == (3,)
    for b in range(3):
        assert abs(level.sigma[b] / sigma - 1) < 0.15, (name, sigma, b, level.sigma[b])
    np.testing.assert_allclose(level.norm, level.sigma * math.sqrt(64 * 64), rtol=1e-12)
    # ‖ε̂‖ = σ̂√m against the actual ‖ε‖ of each draw
    actual = problem.noise.norm(dim=-1).numpy()
    np.testing.assert_allclose(level.norm / actual, 1, atol=0.16)
    info = level.to_json(1, sigma)
    assert info["relative_error"] == pytest.approx(level.sigma[1] / sigma - 1, rel=1e-12)


def test_least_squares_estimate_on_an_overdetermined_gaussian_matrix():
    sigma = 0.7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (m > n: y is not in Im(A), which is the point here)
        problem = gaussian_problem(50, 400, SEEDS, noise=sigma)
    level = estimate_noise_level(problem)
    assert level.known and level.source == "estimated" and "least-squares" in level.method
    assert np.all(np.abs(level.sigma / sigma - 1) < 0.10), level.sigma  # (measured -7.4% to +3.8%)
    # σ̂² = ‖y − A A⁺ y‖²/(m − n), computed here with numpy's lstsq
    for b in range(3):
        A, y = problem.operator.matrix[b].numpy(), problem.y[b].numpy()
        fit = np.linalg.lstsq(A, y, rcond=None)[0]
        assert level.sigma[b] == pytest.approx(np.linalg.norm(y - A @ fit) / math.sqrt(350), rel=1e-9)
    np.testing.assert_allclose(level.norm, level.sigma * math.sqrt(400), rtol=1e-12)


def test_poisson_noise_norm_comes_from_the_noise_model(images):
    photons = 100.0
    problem = image_problem(images["camera"], GaussianBlur((64, 64), 1.0), seeds=SEEDS, noise=PoissonNoise(photons))
    level = estimate_noise_level(problem)
    assert level.known and level.source == "noise model" and level.sigma is None
    actual = problem.noise.norm(dim=-1).numpy()
    assert np.all(np.abs(level.norm / actual - 1) < 0.10), (level.norm, actual)  # (measured within 2%)
    expected = np.sqrt(255.0 / photons * problem.y.clamp_min(0).sum(-1).numpy())
    np.testing.assert_allclose(level.norm, expected, rtol=1e-12)


def _unknown(problem, fragment: str) -> None:
    level = estimate_noise_level(problem)
    assert level.known is False and level.norm is None and level.sigma is None
    assert level.source == "unavailable"
    assert isinstance(level.method, str) and fragment in level.method, level.method
    assert level.to_json(0, 1.0) == {"source": "unavailable", "method": level.method}


def test_no_estimate_for_well_conditioned_inpainting_and_underdetermined_gaussian(images):
    image = images["coins"][:16, :16]
    op = Spectral.well_conditioned(256, seed=0, in_shape=(16, 16))
    _unknown(image_problem(image, op, seeds=[0], noise=5.0), "mixes every pixel")
    inpainting = Inpainting.random((64, 64), 0.5, seed=0)
    _unknown(image_problem(images["coins"], inpainting, seeds=[0], noise=5.0), "not an image")
    _unknown(gaussian_problem(50, 50, [0], noise=0.7), "50 x 50 Gaussian matrix (m <= n)")
    _unknown(gaussian_problem(50, 30, [0], noise=0.7), "30 x 50 Gaussian matrix (m <= n)")


def test_given_noise_level():
    level = given_noise_level(2.5, 400)
    assert level.known and level.source == "given"
    np.testing.assert_allclose(level.sigma, [2.5])
    np.testing.assert_allclose(level.norm, [50.0])
    info = level.to_json(0, 2.5)
    assert info["noise_norm"] == 50.0 and "relative_error" not in info
