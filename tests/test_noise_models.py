"""Noise models of problems.py: seeded draws, the laws they claim, and their refusals."""
import math

import numpy as np
import pytest
import torch

from dipcert.operators import GaussianBlur, Inpainting
from dipcert.problems import GaussianNoise, OneBitNoise, PoissonNoise, ProblemError, gaussian_problem, image_problem
from dipcert.seeding import generator


def _flat_image(value: float, shape=(100, 200)) -> np.ndarray:
    return np.full(shape, value)


def test_a_number_is_a_gaussian_std_and_draws_from_the_noise_stream():
    """noise=σ and GaussianNoise(σ) give the same bits, σ·randn(generator(seed, "noise")) per run."""
    seeds = [0, 7]
    by_number = gaussian_problem(6, 4, seeds, 0.3)
    by_model = gaussian_problem(6, 4, seeds, GaussianNoise(0.3))
    assert torch.equal(by_number.y, by_model.y) and torch.equal(by_number.noise, by_model.noise)
    expected = torch.stack([torch.randn(4, generator=generator(s, "noise"), dtype=torch.float64) for s in seeds]) * 0.3
    assert torch.equal(by_number.noise, expected)
    assert torch.equal(by_number.y, by_number.operator.forward_flat(by_number.x_true) + expected)
    clean = gaussian_problem(6, 4, seeds)
    assert torch.equal(clean.noise, torch.zeros_like(clean.y))
    assert by_model.description["noise"] == {"name": "gaussian", "std": 0.3}


def test_a_run_draws_the_same_noise_in_any_batch():
    op = GaussianBlur((10, 12), 1.0)
    image = np.random.default_rng(0).random((10, 12)) * 255
    for model in (GaussianNoise(5.0), PoissonNoise(20.0), OneBitNoise(300.0)):
        pair = image_problem(image, op, [3, 8], model)
        alone = image_problem(image, op, [8], model)
        again = image_problem(image, op, [8], model)
        assert torch.equal(alone.y, again.y), model.name
        # (A x̄ itself may differ in the last bit between batch sizes: batched FFTs)
        torch.testing.assert_close(pair.y[1], alone.y[0], rtol=1e-12, atol=1e-12, msg=model.name)
        assert not torch.equal(pair.y[0], pair.y[1]), model.name
        torch.testing.assert_close(pair.y, op.forward_flat(pair.x_true) + pair.noise, rtol=0, atol=1e-12)


@pytest.mark.parametrize("photons", [5.0, 50.0])
def test_poisson_counts_have_the_scaled_poisson_law(photons):
    """y = (peak/N)·Poisson(N·c/peak): counts are integers, E y = c and Var y = peak·c/N.

    20 000 pixels of a flat image (blurring keeps it flat): the sample mean is within 5 standard
    errors of c, and the sample variance within 5 of its own standard error (√(2/m)·Var, plus the
    excess-kurtosis term Var·√(peak/(N c m)))."""
    c, peak = 100.0, 255.0
    problem = image_problem(_flat_image(c), GaussianBlur((100, 200), 1.5), [4], PoissonNoise(photons, peak))
    y = problem.y[0]
    counts = y * photons / peak
    torch.testing.assert_close(counts, counts.round(), rtol=0, atol=1e-9)
    assert bool((y >= 0).all())
    m, var = y.numel(), peak * c / photons
    assert abs(y.mean().item() - c) < 5 * math.sqrt(var / m)
    var_se = var * math.sqrt(2 / m + peak / (photons * c * m))
    assert abs(y.var().item() - var) < 5 * var_se
    assert problem.description["noise"] == {"name": "poisson", "photons": photons, "peak": peak}


def test_poisson_snr_grows_with_photons():
    image = _flat_image(60.0, (40, 50))
    op = GaussianBlur((40, 50), 1.0)
    rms = [image_problem(image, op, [0], PoissonNoise(n)).noise.pow(2).mean().sqrt().item() for n in (10.0, 1000.0)]
    expected = [math.sqrt(255 * 60 / n) for n in (10.0, 1000.0)]  # std of the scaled counts
    for got, want in zip(rms, expected):
        assert got == pytest.approx(want, rel=0.1)


def test_poisson_needs_a_nonnegative_mean():
    with pytest.raises(ProblemError, match="Gaussian matrix is not"):
        gaussian_problem(8, 5, [0], PoissonNoise(10.0))
    image = np.zeros((12, 12))
    image[3:6, 4:9] = 200.0  # zeros next to bright pixels: the FFT blur leaves rounding-size negatives
    blurred = image_problem(image, GaussianBlur((12, 12), 1.0), [0], PoissonNoise(10.0))
    assert bool((blurred.y >= 0).all())
    kept = image_problem(image, Inpainting.random((12, 12), 0.5, seed=1), [0], PoissonNoise(10.0))
    assert kept.y.shape == (1, 72)


def test_one_bit_is_the_sign_of_the_gaussian_observation():
    """y = sign(A x̄ + σ ε) with the same ε as GaussianNoise(σ); σ = 0 gives sign(A x̄)."""
    seeds = [2, 5]
    ones = gaussian_problem(30, 10, seeds, OneBitNoise(0.7))
    gauss = gaussian_problem(30, 10, seeds, 0.7)
    assert set(ones.y.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(ones.y, torch.where(gauss.y >= 0, 1.0, -1.0).double())
    clean = gaussian_problem(30, 10, seeds, OneBitNoise())
    assert torch.equal(clean.y, torch.where(clean.operator.forward_flat(clean.x_true) >= 0, 1.0, -1.0).double())
    assert ones.description["noise"] == {"name": "one-bit", "std": 0.7}


@pytest.mark.parametrize("build, message", [
    (lambda: GaussianNoise(-1.0), "standard deviation must be a finite number >= 0"),
    (lambda: GaussianNoise(math.nan), "standard deviation must be a finite number >= 0"),
    (lambda: OneBitNoise(math.inf), "standard deviation must be a finite number >= 0"),
    (lambda: PoissonNoise(0.0), "photons must be a finite number > 0"),
    (lambda: PoissonNoise(True), "photons must be a finite number > 0"),
    (lambda: PoissonNoise(10.0, peak=-1.0), "peak must be a finite number > 0"),
    (lambda: gaussian_problem(4, 3, [0], -0.5), "standard deviation must be a finite number >= 0"),
])
def test_bad_noise_parameters_are_refused(build, message):
    with pytest.raises(ProblemError, match=message):
        build()


def test_noisy_data_outside_the_range_of_a_wide_operator_warns():
    with pytest.warns(UserWarning, match="not in Im\\(A\\)"):
        gaussian_problem(3, 6, [0], OneBitNoise())
