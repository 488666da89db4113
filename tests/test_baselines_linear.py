"""Classical linear baselines (dipcert.reconstruct.linear / parameter / classical) against dense-matrix
computations written out independently here."""
import math

import numpy as np
import pytest
import torch
from torch import Tensor

from dipcert.images import load_image, psnr
from dipcert.noise_level import NoiseLevel, given_noise_level
from dipcert.operators import GaussianBlur, GaussianMatrix, Inpainting, Spectral
from dipcert.problems import image_problem
from dipcert.reconstruct import classical, parameter
from dipcert.reconstruct.case import Case, NotApplicable
from dipcert.reconstruct.linear import (
    CG_TOLERANCE,
    HUTCHINSON_PROBES,
    KrylovTikhonov,
    laplacian,
    cgls_steps,
    fourier_tikhonov,
    landweber_steps,
    richardson_lucy_steps,
    tikhonov,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # small problems: a second thread only waits

ENTRIES = {entry.name: entry for entry in classical.ENTRIES}
SHAPE = (16, 16)
N = SHAPE[0] * SHAPE[1]


# --------------------------------------------------------------------------- dense references
# (torch.linalg in float64: single-threaded under ``one_thread``, unlike numpy's BLAS on a busy machine)


def dense(op) -> Tensor:
    return op.to_dense().reshape(op.out_size, op.in_size)


def dense_laplacian(H: int, W: int) -> Tensor:
    """L = D_H ⊗ I + I ⊗ D_W, D the periodic second difference [-1, 2, -1] (row-major pixels)."""
    eye = lambda k: torch.eye(k, dtype=torch.float64)
    second = lambda k: 2 * eye(k) - eye(k).roll(1, 0) - eye(k).roll(-1, 0)
    return torch.kron(second(H), eye(W)) + torch.kron(eye(H), second(W))


def dense_penalty(regularizer: str) -> Tensor:
    """LᵀL on 16×16 images."""
    if regularizer == "identity":
        return torch.eye(N, dtype=torch.float64)
    L = dense_laplacian(*SHAPE)
    return L.T @ L


def dense_tikhonov(A, y, lam, P) -> Tensor:
    return torch.linalg.solve(A.T @ A + lam * P, A.T @ y)


def dense_influence(A, lam, P) -> Tensor:
    """A (AᵀA + λLᵀL)⁻¹ Aᵀ."""
    return A @ torch.linalg.solve(A.T @ A + lam * P, A.T)


class DenseFamily:
    """Residual, trace and GCV of x_λ = (AᵀA + λP)⁻¹Aᵀy for every λ from one generalized
    eigendecomposition P w = μ(AᵀA + P) w (WᵀPW = diag μ, WᵀAᵀAW = I − diag μ), so that
    (AᵀA + λP)⁻¹ = W diag(1/(1 − μ + λμ)) Wᵀ. Reduced to a symmetric one by the Cholesky factor C of
    AᵀA + P: W = C⁻ᵀQ with Q the eigenvectors of C⁻¹PC⁻ᵀ."""

    def __init__(self, A, P, y):
        C = torch.linalg.cholesky(A.T @ A + P)
        inner = torch.linalg.solve_triangular(C, torch.linalg.solve_triangular(C, P, upper=False).T, upper=False)
        self.mu, Q = torch.linalg.eigh((inner + inner.T) / 2)
        W = torch.linalg.solve_triangular(C.T, Q, upper=True)
        self.AW, self.y = A @ W, y
        self.c = self.AW.T @ y

    def residual(self, lam) -> float:
        return float((self.AW @ (self.c / (1 - self.mu + lam * self.mu)) - self.y).norm())

    def trace(self, lam) -> float:
        return float(((self.AW**2).sum(0) / (1 - self.mu + lam * self.mu)).sum())

    def gcv(self, lam) -> float:
        m = len(self.y)
        return m * self.residual(lam) ** 2 / (m - self.trace(lam)) ** 2


def image(shape=SHAPE) -> np.ndarray:
    return load_image("builtin:camera", shape)


def observe(op, noise_std: float = 2.0, shape=SHAPE, seed: int = 0):
    problem = image_problem(image(shape), op, [seed], noise_std)
    return problem, problem.y[0]


OPERATORS = {
    "circular blur": lambda: GaussianBlur(SHAPE, 1.0),
    "reflect blur": lambda: GaussianBlur(SHAPE, 1.0, boundary="reflect"),
    "inpainting": lambda: Inpainting.random(SHAPE, 0.6, seed=1),
    "spectral": lambda: Spectral.random(N, seed=2, in_shape=SHAPE, s=torch.logspace(0, -2, N, dtype=torch.float64)),
    "gaussian matrix": lambda: GaussianMatrix(200, N, seed=3, in_shape=SHAPE),
}
SOLVERS = {  # (operator, regularizer) -> the solver expected
    ("circular blur", "identity"): "fourier", ("circular blur", "laplacian"): "fourier",
    ("spectral", "identity"): "svd", ("spectral", "laplacian"): "dense",
    ("reflect blur", "identity"): "cg", ("reflect blur", "laplacian"): "cg",
    ("inpainting", "identity"): "cg", ("inpainting", "laplacian"): "cg",
    ("gaussian matrix", "identity"): "dense", ("gaussian matrix", "laplacian"): "dense",
}


# --------------------------------------------------------------------------- Tikhonov


@pytest.mark.parametrize("name, regularizer", list(SOLVERS))
def test_tikhonov_matches_dense_solve(name, regularizer):
    """x_λ = (AᵀA + λLᵀL)⁻¹Aᵀy: closed forms to 1e-9 relative; CG (stopped at relative residual
    CG_TOLERANCE, never at its cap here) to CG_TOLERANCE·cond(AᵀA + λLᵀL), the bound that residual gives."""
    op = OPERATORS[name]()
    _, y = observe(op)
    solver = tikhonov(op, y, regularizer, SHAPE)
    assert solver.solver == SOLVERS[name, regularizer]
    A, P = dense(op), dense_penalty(regularizer)
    for lam in (1e-2, 1.0):
        expected = dense_tikhonov(A, y, lam, P)
        got = solver.solve(lam)
        tol = CG_TOLERANCE * float(torch.linalg.cond(A.T @ A + lam * P)) if solver.solver == "cg" else 1e-9
        assert (got - expected).norm() <= tol * expected.norm()
        assert solver.residual_norm(lam) == pytest.approx(float((A @ expected - y).norm()), rel=max(tol, 1e-12))
        if solver.exact_trace:
            assert solver.trace(lam) == pytest.approx(float(dense_influence(A, lam, P).trace()), rel=1e-9)
    assert solver.capped == []


def test_skimage_wiener_is_fourier_tikhonov_laplacian():
    """scikit-image's wiener with balance b is the periodic Tikhonov-Laplacian filter with λ = b."""
    op = GaussianBlur((32, 32), 1.5)
    _, y = observe(op, shape=(32, 32))
    reference = fourier_tikhonov(op, y, "laplacian")
    for balance in (1e-4, 1e-2, 1.0):
        expected = reference.solve(balance).numpy().reshape(32, 32)
        got = classical.skimage_wiener(op, y, balance)
        assert np.abs(got - expected).max() <= 1e-10 * np.abs(expected).max()


def test_hutchinson_trace_within_four_standard_deviations():
    """The CG path's trace(A R_λ) estimate is within 4 std of the exact trace, std² = 2(‖M‖_F² − Σ M_ii²)/k
    (the variance of the Rademacher estimator of a symmetric M), and within 5%."""
    for op in (GaussianMatrix(200, N, seed=3, in_shape=SHAPE), GaussianBlur(SHAPE, 1.0, boundary="zero")):
        _, y = observe(op)
        solver = KrylovTikhonov(op, y, lambda x: laplacian(laplacian(x, SHAPE), SHAPE))  # a dense A would be exact
        assert not solver.exact_trace
        A, P = dense(op), dense_penalty("laplacian")
        for lam in (1e-2, 1.0):
            M = dense_influence(A, lam, P)
            exact = float(M.trace())
            std = math.sqrt(float((M**2).sum() - (M.diagonal() ** 2).sum()) * 2 / HUTCHINSON_PROBES)
            assert abs(solver.trace(lam) - exact) <= min(4 * std, 0.05 * exact)


# --------------------------------------------------------------------------- parameter choice


@pytest.mark.parametrize("name, regularizer", [("circular blur", "identity"), ("spectral", "identity"),
                                               ("inpainting", "laplacian")])
def test_discrepancy_matches_dense_grid(name, regularizer):
    """‖A x_λ − y‖ (dense) at the chosen λ is τ‖ε‖ to 1e-6, and λ lies between the points of a
    10-per-decade grid where the dense residual crosses the target."""
    op = OPERATORS[name]()
    problem, y = observe(op, noise_std=3.0)
    solver = tikhonov(op, y, regularizer, SHAPE)
    target = parameter.DISCREPANCY_FACTOR * float(problem.noise[0].norm())
    choice = parameter.discrepancy(solver.residual_norm, target, 1e-7, 10.0)
    assert choice.notes == ()
    family = DenseFamily(dense(op), dense_penalty(regularizer), y)
    assert family.residual(choice.value) == pytest.approx(target, rel=1e-6)
    grid = np.logspace(-7, 1, 81)
    residuals = np.array([family.residual(lam) for lam in grid])
    assert np.all(np.diff(residuals) > 0)
    k = int(np.argmax(residuals >= target))
    assert grid[k - 1] <= choice.value <= grid[k]


def test_discrepancy_out_of_reach_returns_the_ends():
    op = GaussianBlur(SHAPE, 1.0)
    _, y = observe(op)
    solver = tikhonov(op, y, "identity", SHAPE)
    low = parameter.discrepancy(solver.residual_norm, 0.5 * solver.residual_norm(1e-7), 1e-7, 10.0)
    assert low.value == 1e-7 and "below" in low.notes[0]
    high = parameter.discrepancy(solver.residual_norm, 2 * float(y.norm()), 1e-7, 10.0)
    assert high.value == 10.0 and "above" in high.notes[0]


@pytest.mark.parametrize("name, regularizer", [("circular blur", "laplacian"), ("spectral", "identity")])
def test_gcv_matches_dense_grid(name, regularizer):
    """The chosen λ minimizes G(λ) = m‖A x_λ − y‖²/trace(I − A R_λ)², computed with dense matrices and
    the exact trace: G there is at most the least G on a 20-per-decade grid, and λ within one grid
    step of that grid's argmin."""
    op = OPERATORS[name]()
    _, y = observe(op, noise_std=3.0)
    solver = tikhonov(op, y, regularizer, SHAPE)
    family = DenseFamily(dense(op), dense_penalty(regularizer), y)
    choice = parameter.gcv_minimize(solver.gcv, 1e-7, 10.0)
    grid = np.logspace(-7, 1, 161)
    values = np.array([family.gcv(lam) for lam in grid])
    best = int(np.argmin(values))
    assert 0 < best < len(grid) - 1, "the test case should have an interior GCV minimum"
    assert family.gcv(choice.value) <= values[best] * (1 + 1e-9)
    assert abs(math.log10(choice.value / grid[best])) <= 1 / 20


def test_oracle_minimize_finds_least_error():
    op = GaussianBlur(SHAPE, 1.0)
    _, y = observe(op, noise_std=3.0)
    solver = tikhonov(op, y, "identity", SHAPE)
    truth = image().reshape(-1)
    error = lambda lam: float(np.linalg.norm(solver.solve(lam).numpy() - truth))
    choice = parameter.oracle_minimize(error, 1e-7, 10.0)
    grid = np.logspace(-7, 1, 401)
    assert error(choice.value) <= min(error(lam) for lam in grid) * (1 + 1e-9)


def test_iteration_stops():
    assert parameter.discrepancy_stop([5.0, 4.0, 3.0, 2.0, 3.5], 3.0) == 2
    assert parameter.discrepancy_stop([5.0, 4.0], 3.0) is None
    assert parameter.oracle_stop([3.0, 1.0, 2.0, 1.0]) == 1


# --------------------------------------------------------------------------- iterations


def take(steps, count):
    return [next(steps) for _ in range(count)]


def test_landweber_matches_dense_iteration():
    op = GaussianBlur(SHAPE, 1.2, boundary="zero")
    _, y = observe(op)
    A = dense(op)
    omega = 1 / float(torch.linalg.matrix_norm(A, 2)) ** 2
    x = torch.zeros(N, dtype=torch.float64)
    for k, (xk, residual) in enumerate(take(landweber_steps(op, y), 30)):
        assert (xk - x).abs().max() <= 1e-10 * max(float(x.abs().max()), 1), k
        assert residual == pytest.approx(float((A @ x - y).norm()), rel=1e-10)
        x = x + omega * A.T @ (y - A @ x)


def test_cgls_iterates_are_krylov_least_squares():
    """x_k minimizes ‖Ax − y‖ over span{Aᵀy, (AᵀA)Aᵀy, …} (k vectors); x_n is the least-squares solution."""
    n = 16
    op = GaussianMatrix(40, n, seed=4, in_shape=(4, 4))
    A = dense(op)
    y = torch.randn(40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    path = take(cgls_steps(op, y), n + 1)
    assert (path[0][0] == 0).all()
    krylov = [A.T @ y]
    for k in range(1, 6):
        Q = torch.linalg.qr(torch.stack(krylov, 1)).Q
        expected = Q @ torch.linalg.lstsq(A @ Q, y[:, None]).solution[:, 0]
        assert (path[k][0] - expected).abs().max() <= 1e-9 * expected.abs().max(), k
        assert path[k][1] == pytest.approx(float((A @ expected - y).norm()), rel=1e-9)
        krylov.append(A.T @ (A @ krylov[-1]))
    least_squares = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
    assert (path[n][0] - least_squares).abs().max() <= 1e-8 * least_squares.abs().max()


def test_richardson_lucy_matches_dense_em():
    op = GaussianBlur(SHAPE, 1.0, boundary="zero")  # Aᵀ1 < 1 near the edges
    _, y = observe(op, noise_std=5.0)
    y = y.clone()
    y[:5] = -1.0  # below the floor
    A = dense(op)
    data = y.clamp_min(1e-6 * float(y.max()))
    x = torch.full((N,), float(data.mean()), dtype=torch.float64)
    for k, (xk, residual) in enumerate(take(richardson_lucy_steps(op, y), 30)):
        assert (xk - x).abs().max() <= 1e-10 * x.abs().max(), k
        assert residual == pytest.approx(float((A @ x - y).norm()), rel=1e-10)
        x = x * (A.T @ (data / (A @ x))) / (A.T @ torch.ones(N, dtype=torch.float64))


# --------------------------------------------------------------------------- registry entries


def blur_case(noise: str | None = "given", shape=(32, 32), op=None, sigma: float = 2.0) -> Case:
    op = op or GaussianBlur(shape, 1.0)
    problem = image_problem(image(shape), op, [0], sigma)
    level = given_noise_level(sigma, op.out_size) if noise == "given" else \
        NoiseLevel(None, None, "unavailable", "test") if noise == "unknown" else None
    return Case(problem, image(shape), level)


def test_every_entry_improves_on_the_observation():
    case = blur_case()
    observed = psnr(case.truth, case.y.numpy().reshape(case.shape))
    for entry in classical.ENTRIES:
        assert entry.applies(case) is None, entry.name
        out = entry.reconstruct(case, entry.rules)
        assert set(out) == set(entry.rules)
        for rule, rec in out.items():
            assert rec.x.shape == case.shape and rec.rule == rule and rec.seconds >= 0
            assert rec.parameter in ("lambda", "balance", "iterations") and math.isfinite(rec.value)
            assert psnr(case.truth, rec.x) > observed, (entry.name, rule)


def test_wiener_entry_is_tikhonov_laplacian_entry():
    case = blur_case()
    wiener = ENTRIES["wiener"].reconstruct(case, ("discrepancy", "gcv"))
    tik = ENTRIES["tikhonov-laplacian"].reconstruct(case, ("discrepancy", "gcv"))
    for rule in wiener:
        assert wiener[rule].value == tik[rule].value
        assert np.abs(wiener[rule].x - tik[rule].x).max() <= 1e-9 * np.abs(tik[rule].x).max()


def test_iterative_entry_returns_the_path_iterates(monkeypatch):
    """Discrepancy: the first iterate with residual ≤ ‖ε‖; oracle: the least-error iterate up to the cap."""
    monkeypatch.setattr(classical, "LANDWEBER_MAX_ITERATIONS", 150)
    case = blur_case(shape=SHAPE)
    out = ENTRIES["landweber"].reconstruct(case, ("discrepancy", "oracle"))
    path = take(landweber_steps(case.operator, case.y), 151)
    residuals = [r for _, r in path]
    errors = [case.error(x) for x, _ in path]
    stop, best = int(out["discrepancy"].value), int(out["oracle"].value)
    assert residuals[stop] <= case.noise_norm < min(residuals[:stop])
    assert best == int(np.argmin(errors))
    for k, rec in ((stop, out["discrepancy"]), (best, out["oracle"])):
        assert np.array_equal(rec.x, path[k][0].numpy().reshape(SHAPE))


def test_budget_reached_note(monkeypatch):
    monkeypatch.setattr(classical, "LANDWEBER_MAX_ITERATIONS", 3)
    rec = ENTRIES["landweber"].reconstruct(blur_case(sigma=0.5), ("discrepancy",))["discrepancy"]
    assert rec.value == 3 and rec.notes[0].startswith("budget reached")


def test_applies_refuses_unsupported_operators():
    refused = {
        "wiener": [Inpainting.random(SHAPE, 0.5, seed=0), GaussianBlur(SHAPE, 1.0, boundary="reflect"),
                   GaussianMatrix(100, N, seed=0, in_shape=SHAPE), GaussianBlur(SHAPE, 2.0)],  # 17 taps > 16
        "richardson-lucy": [Inpainting.random(SHAPE, 0.5, seed=0), GaussianMatrix(100, N, seed=0, in_shape=SHAPE)],
    }
    for name, operators in refused.items():
        for op in operators:
            reason = ENTRIES[name].applies(blur_case(op=op, shape=SHAPE))
            assert isinstance(reason, str) and reason, (name, op)
    inpainting = blur_case(op=Inpainting.random(SHAPE, 0.5, seed=0), shape=SHAPE)
    for name in ("tikhonov-identity", "tikhonov-laplacian", "landweber", "cgls"):
        assert ENTRIES[name].applies(inpainting) is None


@pytest.mark.parametrize("noise", [None, "unknown"])
def test_discrepancy_needs_a_noise_level(noise):
    case = blur_case(noise, shape=SHAPE)
    for entry in classical.ENTRIES:
        with pytest.raises(NotApplicable):
            entry.reconstruct(case, ("discrepancy",))
    assert ENTRIES["tikhonov-identity"].reconstruct(case, ("gcv",))["gcv"].value > 0
