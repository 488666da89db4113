"""TV deconvolution (pyproximal) and the package baselines (scikit-image, bm3d) behind the
reconstruction interface, on small cases (≤ 32×32). Tolerances are stated where they are used."""
from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch

from dipcert.noise_level import given_noise_level
from dipcert.operators import GaussianBlur, GaussianMatrix, Inpainting, Spectral
from dipcert.problems import image_problem
from dipcert.reconstruct import build_case, packages, tv
from dipcert.reconstruct.case import Case, NotApplicable

NOISE = 10.0

pytestmark = pytest.mark.usefixtures("one_thread")  # small problems: a second thread only waits


def square_image(n: int = 32) -> np.ndarray:
    """Piecewise constant: a bright rectangle and a gray bar on a dark background."""
    image = np.full((n, n), 50.0)
    image[n // 4: 3 * n // 4, 5 * n // 16: 13 * n // 16] = 200.0
    image[7 * n // 16: 5 * n // 8, n // 8: 7 * n // 16] = 120.0
    return image


def make_case(op, image: np.ndarray, noise: float = NOISE, level: bool = True, seed: int = 0) -> Case:
    problem = image_problem(image, op, (seed,), noise)
    return Case(problem, image, given_noise_level(noise, problem.m) if level else None, seed)


def psnr(x: np.ndarray, truth: np.ndarray) -> float:
    return 10 * math.log10(255**2 / np.mean((x - truth) ** 2))


def residual(case: Case, x: np.ndarray) -> float:
    ax = case.operator.forward_flat(torch.as_tensor(x.reshape(-1), dtype=torch.float64)).reshape(-1)
    return float((ax - case.y).norm())


# --------------------------------------------------------------------------- TV

needs_pyproximal = pytest.mark.skipif(tv.missing_package() is not None, reason="pyproximal is not installed")


@pytest.fixture(scope="module")
def blur_case() -> Case:
    return make_case(GaussianBlur((32, 32), 1.0), square_image())


@pytest.fixture(scope="module")
def blur_tv(blur_case):
    return tv.tv_entry.reconstruct(blur_case, ("discrepancy", "oracle"))


@needs_pyproximal
def test_tv_deblurs_a_piecewise_constant_image(blur_case, blur_tv):
    truth = blur_case.truth
    observed = psnr(blur_case.y.numpy().reshape(truth.shape), truth)  # measured 22.5 dB
    rec = blur_tv["discrepancy"]
    assert rec.rule == "discrepancy" and rec.parameter == "mu" and rec.value > 0
    assert rec.needs == ("noise level",) and blur_tv["oracle"].needs == ("ground truth",)
    assert rec.x.shape == truth.shape and rec.x.dtype == np.float64
    # measured 30.2 dB (+7.7 dB): at least 5 dB above the observation
    assert psnr(rec.x, truth) > observed + 5.0


@needs_pyproximal
def test_tv_discrepancy_meets_the_noise_norm_and_oracle_is_nearer(blur_case, blur_tv):
    rec = blur_tv["discrepancy"]
    # the search stops within DISCREPANCY_RTOL = 0.5% of ‖ε‖ (measured 0.1%)
    assert abs(residual(blur_case, rec.x) / blur_case.noise_norm - 1) <= tv.DISCREPANCY_RTOL
    assert math.isclose(rec.details["residual_norm"], residual(blur_case, rec.x), rel_tol=1e-9)
    # the oracle's candidates include the discrepancy's point, so its error is no larger
    assert blur_tv["oracle"].value != rec.value
    assert blur_case.error(blur_tv["oracle"].x) <= blur_case.error(rec.x)
    assert blur_tv["oracle"].seconds >= rec.seconds > 0


@needs_pyproximal
def test_tv_solution_is_optimal(blur_case, blur_tv):
    """Against a long cold-start run (1500 iterations, another step ratio) and perturbations."""
    rec = blur_tv["discrepancy"]
    mu, x = rec.value, rec.x.reshape(-1)
    with tv.one_torch_thread():
        solver = tv.TVSolver(blur_case)
        import pyproximal
        from pyproximal.optimization.primaldual import PrimalDual

        g = pyproximal.VStack([pyproximal.L2(b=solver.y), pyproximal.L21(ndim=2, sigma=mu / solver.c)],
                              nn=[solver.m, 2 * solver.n])
        step = 0.99 / solver.lipschitz
        reference = PrimalDual(pyproximal.Quadratic(), g, solver.K, solver.x0.copy(), step, step, niter=1500)
        objective = lambda v: solver.objective(v, mu)  # noqa: E731
        best = objective(reference)
        # measured 1e-4 above the reference's objective and 2e-4 away from it (relative)
        assert objective(x) <= best * (1 + 1e-3)
        assert np.linalg.norm(x - reference) <= 1e-2 * np.linalg.norm(reference)
        assert rec.details["objective"] == pytest.approx(objective(x), rel=1e-12)
        # no perturbation decreases the objective by more than 1e-3 relative: random ones (1 gray
        # level per pixel) and moves along and past the segment to the reference
        rng = np.random.default_rng(0)
        for _ in range(10):
            assert objective(x + rng.standard_normal(x.size)) >= objective(x) * (1 - 1e-3)
        for h in (0.5, 2.0, -1.0):
            assert objective(x + h * (reference - x)) >= objective(x) * (1 - 1e-3)


@needs_pyproximal
def test_tv_inpainting():
    truth = square_image()
    case = make_case(Inpainting.random(truth.shape, 0.5, seed=3), truth)
    out = tv.tv_entry.reconstruct(case, ("discrepancy", "oracle"))
    rec = out["discrepancy"]
    assert abs(residual(case, rec.x) / case.noise_norm - 1) <= tv.DISCREPANCY_RTOL
    assert case.error(out["oracle"].x) <= case.error(rec.x)
    # measured 24.3 dB (zero-filling the missing half: 10.5 dB)
    assert psnr(rec.x, truth) > 22.0


@needs_pyproximal
@pytest.mark.parametrize("operator", ["gaussian-matrix", "spectral"])
def test_tv_other_operators(operator):
    truth = square_image(12)
    n = truth.size
    op = (GaussianMatrix(n // 2, n, seed=1, in_shape=truth.shape) if operator == "gaussian-matrix"
          else Spectral.well_conditioned(n, seed=1, in_shape=truth.shape))
    case = make_case(op, truth)
    rec = tv.tv_entry.reconstruct(case, ("discrepancy",))["discrepancy"]
    assert abs(residual(case, rec.x) / case.noise_norm - 1) <= tv.DISCREPANCY_RTOL
    assert case.error(rec.x) < 0.5 * np.linalg.norm(truth)


@needs_pyproximal
def test_tv_discrepancy_needs_a_noise_level():
    truth = square_image(12)
    case = make_case(GaussianBlur(truth.shape, 1.0), truth, level=False)
    assert tv.tv_entry.applies(case) is None
    with pytest.raises(NotApplicable, match="noise level"):
        tv.tv_entry.reconstruct(case, ("discrepancy",))
    with pytest.raises(NotApplicable, match="noise level"):
        tv.tv_entry.reconstruct(case, ("oracle", "discrepancy"))
    rec = tv.tv_entry.reconstruct(case, ("oracle",))["oracle"]  # the oracle needs none
    assert rec.value > 0 and np.all(np.isfinite(rec.x))



def camera_case(operator: dict, size: int = 32) -> Case:
    """``builtin:camera`` at size×size through ``operator``, noiseless (‖ε‖ = 0), seed 0: the compare
    tasks' case."""
    return build_case({"problem": {"image": "builtin:camera", "size": (size, size)}, "operator": operator,
                       "noise": {"noise_std": 0.0}, "run": {"seed": 0}})


@pytest.fixture(scope="module")
def noiseless_inpainting():
    case = camera_case({"operator": "inpainting", "keep_fraction": 0.5})
    assert case.noise_norm == 0
    return case, tv.tv_entry.reconstruct(case, ("discrepancy", "oracle")), packages.biharmonic_entry.reconstruct(case)


@needs_pyproximal
def test_tv_noiseless_discrepancy_is_the_constrained_minimizer(noiseless_inpainting):
    """‖ε‖ = 0: the discrepancy rule's limit μ → 0, min TV(x) subject to Ax = y, solved directly."""
    case, out, biharmonic = noiseless_inpainting
    rec, bih = out["discrepancy"], biharmonic["none"].x
    assert rec.rule == "discrepancy" and rec.parameter == "mu" and rec.value == 0
    assert rec.notes[0].startswith("noise norm 0") and "subject to Ax = y" in rec.notes[0]
    assert rec.details["mu_searched"] == [0.0] and rec.details["solves"] == 1
    y_norm = float(case.y.norm())
    with tv.one_torch_thread():
        solver = tv.TVSolver(case)
        x = rec.x.reshape(-1)
        # the constraint: the solve stops at ||Ax - y|| <= CONSTRAINT_RTOL ||y|| = 1e-5 ||y|| (measured 7.7e-6)
        assert residual(case, rec.x) <= tv.CONSTRAINT_RTOL * y_norm <= 1e-3 * y_norm
        # least TV among feasible points: biharmonic inpainting keeps the observed pixels (A x = y
        # exactly), and so does the truth (no noise); measured TV 13777.5 against 15177 and 16622
        assert residual(case, bih) == 0 and residual(case, case.truth) == 0
        assert rec.details["tv"] == pytest.approx(solver.tv(x), rel=1e-12)
        assert solver.tv(x) <= solver.tv(bih.reshape(-1)) * (1 + 1e-4)
        assert solver.tv(x) <= solver.tv(case.truth.reshape(-1)) * (1 + 1e-4)
        # and random perturbations of the missing pixels (1 gray level each; A x unchanged) do not
        # lower it by more than 1e-4 relative (measured: they raise it by >= 1.9%)
        missing = ~case.operator.mask.numpy().reshape(-1)
        rng = np.random.default_rng(0)
        for _ in range(10):
            assert solver.tv(x + missing * rng.standard_normal(x.size)) >= solver.tv(x) * (1 - 1e-4)
        # against a long cold-start run (3000 iterations, step ratio 0.1 instead of 0.2): measured TV
        # 2e-5 and x 1e-4 apart (relative)
        import pyproximal
        from pyproximal.optimization.primaldual import PrimalDual

        g = pyproximal.VStack([tv._point(solver.y), pyproximal.L21(ndim=2, sigma=1 / solver.c)],
                              nn=[solver.m, 2 * solver.n])
        ratio = 0.1 * solver.scale * solver.c
        reference = PrimalDual(solver.zero, g, solver.K, solver.x0.copy(), 0.99 * ratio / solver.lipschitz,
                               0.99 / (ratio * solver.lipschitz), niter=3000)
        assert solver.residual(reference) <= 1e-6 * y_norm
        assert solver.tv(x) == pytest.approx(solver.tv(reference), rel=1e-4)
        assert np.linalg.norm(x - reference) <= 1e-3 * np.linalg.norm(reference)
    # measured 27.93 dB, biharmonic 29.67 dB (zero-filling: 7.9 dB): within 2 dB of biharmonic
    assert psnr(rec.x, case.truth) >= psnr(bih, case.truth) - 2.0
    assert psnr(rec.x, case.truth) > 27.0


@needs_pyproximal
def test_tv_noiseless_oracle_counts_the_constrained_solution(noiseless_inpainting):
    case, out, _ = noiseless_inpainting
    rec, oracle = out["discrepancy"], out["oracle"]
    assert 0.0 in oracle.details["mu_searched"] and len(oracle.details["mu_searched"]) > 1
    assert case.error(oracle.x) <= case.error(rec.x)
    alone = tv.tv_entry.reconstruct(case, ("oracle",))["oracle"]  # the oracle asked alone solves it too
    assert 0.0 in alone.details["mu_searched"]
    assert case.error(alone.x) <= case.error(rec.x)


@needs_pyproximal
def test_tv_noiseless_blur():
    """‖ε‖ = 0 with an invertible operator (circular blur σ = 1, condition number 4.8e3): the only
    feasible point is the truth, which the constrained solve approaches slowly (the iteration cap is
    reached)."""
    case = camera_case({"operator": "blur", "blur_sigma": 1.0})
    rec = tv.tv_entry.reconstruct(case, ("discrepancy",))["discrepancy"]
    assert rec.value == 0 and rec.notes[0].startswith("noise norm 0")
    y_norm = float(case.y.norm())
    assert residual(case, rec.x) <= 1e-3 * y_norm  # measured 1.4e-4
    with tv.one_torch_thread():
        solver = tv.TVSolver(case)
        assert solver.tv(rec.x.reshape(-1)) <= solver.tv(case.truth.reshape(-1)) * (1 + 1e-3)  # measured 4% below
    # measured 42.0 dB from 24.6 dB observed
    assert psnr(rec.x, case.truth) > 40.0


def test_tv_without_pyproximal(monkeypatch, blur_case):
    monkeypatch.setitem(sys.modules, "pyproximal", None)  # import pyproximal -> ImportError
    assert tv.tv_entry.applies(blur_case) == "needs the optional package pyproximal: pip install 'dipcert[compare]'"
    with pytest.raises(NotApplicable, match="pyproximal"):
        tv.tv_entry.reconstruct(blur_case, ("oracle",))


# --------------------------------------------------------------------------- scikit-image


def test_unsupervised_wiener_is_skimage_bit_for_bit(blur_case):
    from skimage.restoration import unsupervised_wiener

    entry = packages.wiener_unsupervised_entry
    assert entry.applies(blur_case) is None and entry.rules == ("self-tuned",)
    rec = entry.reconstruct(blur_case)["self-tuned"]
    k = blur_case.operator.kernel_1d().numpy()
    image = blur_case.y.numpy().reshape(blur_case.shape) / 255
    direct, _ = unsupervised_wiener(image, np.outer(k, k), rng=np.random.default_rng(blur_case.seed))
    assert np.array_equal(rec.x, 255 * direct)
    assert rec.parameter == "" and math.isnan(rec.value) and rec.needs == ()
    # measured 23.4 dB from 22.5 dB observed
    assert psnr(rec.x, blur_case.truth) > psnr(blur_case.y.numpy().reshape(blur_case.shape), blur_case.truth) + 0.5


@pytest.mark.parametrize("operator", ["inpainting", "reflect-blur", "gaussian-matrix"])
def test_unsupervised_wiener_refuses(operator):
    truth = square_image(16)
    op = {"inpainting": lambda: Inpainting.random(truth.shape, 0.5, seed=0),
          "reflect-blur": lambda: GaussianBlur(truth.shape, 1.0, boundary="reflect"),
          "gaussian-matrix": lambda: GaussianMatrix(64, truth.size, seed=0, in_shape=truth.shape)}[operator]()
    case = make_case(op, truth)
    reason = packages.wiener_unsupervised_entry.applies(case)
    assert reason and reason.startswith("needs a circular Gaussian blur")
    with pytest.raises(NotApplicable):
        packages.wiener_unsupervised_entry.reconstruct(case)


@pytest.mark.parametrize("noise", [0.0, NOISE])
def test_biharmonic_is_skimage_bit_for_bit(noise):
    from skimage.restoration import inpaint_biharmonic

    truth = square_image()
    op = Inpainting.random(truth.shape, 0.4, seed=2)
    case = make_case(op, truth, noise)
    entry = packages.biharmonic_entry
    assert entry.applies(case) is None
    rec = entry.reconstruct(case)["none"]
    mask = op.mask.numpy()
    observed = np.zeros(truth.shape)
    observed[mask] = case.y.numpy()
    assert np.array_equal(rec.x, inpaint_biharmonic(observed, ~mask))
    assert np.array_equal(rec.x[mask], observed[mask])  # observed pixels kept as they are
    if noise == 0:  # measured 24.7 dB on the noiseless square
        assert psnr(rec.x, truth) > 22


def test_biharmonic_refuses_other_operators(blur_case):
    reason = packages.biharmonic_entry.applies(blur_case)
    assert reason == "needs inpainting (a pixel mask), not a Gaussian blur"
    with pytest.raises(NotApplicable):
        packages.biharmonic_entry.reconstruct(blur_case)


# --------------------------------------------------------------------------- bm3d


@pytest.fixture
def fresh_bm3d_check():
    packages.bm3d_problem.cache_clear()
    yield
    packages.bm3d_problem.cache_clear()


def test_bm3d_refusal_when_it_does_not_run(blur_case):
    reason = packages.bm3d_problem()
    if reason is None:
        pytest.skip("bm3d runs here")
    assert packages.bm3d_entry.applies(blur_case) == reason
    assert "bm3d" in reason
    with pytest.raises(NotApplicable, match="bm3d"):
        packages.bm3d_entry.reconstruct(blur_case)


def test_bm3d_refusal_when_installed_but_broken(monkeypatch, fresh_bm3d_check, blur_case):
    """An installed bm3d that fails at run time (bm3d 4.0.3 calls np.trapz, gone in NumPy 2.4)."""
    broken = types.ModuleType("bm3d")
    broken.__version__ = "4.0.3"

    def bm3d_deblurring(z, sigma_psd, psf, profile="np"):
        raise AttributeError("module 'numpy' has no attribute 'trapz'")

    broken.bm3d_deblurring = bm3d_deblurring
    monkeypatch.setitem(sys.modules, "bm3d", broken)
    reason = packages.bm3d_entry.applies(blur_case)
    assert reason == (f"bm3d 4.0.3 does not run with NumPy {np.__version__}: "
                      "AttributeError: module 'numpy' has no attribute 'trapz'")


def test_bm3d_refuses_without_circular_blur_or_noise_level():
    truth = square_image(16)
    inpainting = make_case(Inpainting.random(truth.shape, 0.5, seed=0), truth)
    assert packages.bm3d_entry.applies(inpainting).startswith("needs a circular Gaussian blur")
    unknown = make_case(GaussianBlur(truth.shape, 1.0), truth, level=False)
    assert "noise" in packages.bm3d_entry.applies(unknown)


@pytest.mark.skipif(packages.bm3d_problem() is not None, reason=f"bm3d does not run: {packages.bm3d_problem()}")
def test_bm3d_deblurs(blur_case):
    rec = packages.bm3d_entry.reconstruct(blur_case)["given-noise"]
    assert rec.needs == ("noise level",) and rec.value == NOISE
    assert psnr(rec.x, blur_case.truth) > psnr(blur_case.y.numpy().reshape(blur_case.shape), blur_case.truth) + 3
