"""Linear reconstructions of y = A x̄ + ε: Tikhonov in closed form or by conjugate gradients, and the
Landweber, CGLS and Richardson–Lucy iterations with their residual (and error) at every step.

Everything runs in float64 torch on the operator's device, on flat vectors (n,) and (m,).
"""
from __future__ import annotations

import abc
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import Tensor

from ..operators import GaussianBlur, LinearOperator, Matrix, Spectral

#: conjugate gradients on the normal equations stop at ‖r‖ ≤ CG_TOLERANCE·‖b‖ or after CG_MAX_ITERATIONS
CG_TOLERANCE = 1e-8
CG_MAX_ITERATIONS = 500
#: Rademacher probes of Hutchinson's trace estimate (fixed seed: G(λ) is a deterministic function)
HUTCHINSON_PROBES = 16
HUTCHINSON_SEED = 0
#: Richardson–Lucy divides by y: data below RL_FLOOR · max(y) are raised to it
RL_FLOOR = 1e-6

REGULARIZERS = ("identity", "laplacian")
#: dense matrices with at most this many columns get the exact generalized-eigenvector Tikhonov
#: (:class:`DenseTikhonov`: O(n³) once, 4 n² float64 in memory) instead of conjugate gradients
DENSE_MAX_COLUMNS = 4096


def forward(op: LinearOperator, x: Tensor) -> Tensor:
    """A x for flat x (…, n), as (…, m) (a batch-1 operator broadcasts over the leading axes)."""
    return op.forward_flat(x).reshape(*x.shape[:-1], op.out_size)


def adjoint(op: LinearOperator, y: Tensor) -> Tensor:
    """Aᵀ y for flat y (…, m), as (…, n)."""
    return op.adjoint_flat(y).reshape(*y.shape[:-1], op.in_size)


def laplacian(x: Tensor, shape: tuple[int, int]) -> Tensor:
    """The 5-point periodic Laplacian (stencil [[0,-1,0],[-1,4,-1],[0,-1,0]], scikit-image's
    ``wiener`` default) of flat images x (…, H·W); it is symmetric, so Lᵀ = L."""
    img = x.reshape(*x.shape[:-1], *shape)
    out = 4 * img - sum(img.roll(step, dim) for step in (1, -1) for dim in (-2, -1))
    return out.reshape(x.shape)


def laplacian_transfer(shape: tuple[int, int], device: torch.device) -> Tensor:
    """L̂, the Laplacian's transfer function on the rfft2 grid: 4 − 2cos(2πk/H) − 2cos(2πl/W) (real, ≥ 0)."""
    H, W = shape
    kh = torch.arange(H, dtype=torch.float64, device=device)
    kw = torch.arange(W // 2 + 1, dtype=torch.float64, device=device)
    return 4 - 2 * torch.cos(2 * math.pi * kh / H)[:, None] - 2 * torch.cos(2 * math.pi * kw / W)[None, :]


def conjugate_gradients(apply: Callable[[Tensor], Tensor], b: Tensor, x: Tensor | None = None,
                        tol: float = CG_TOLERANCE, max_iterations: int = CG_MAX_ITERATIONS) -> tuple[Tensor, bool]:
    """Solve M x = b for symmetric positive (semi)definite M = ``apply``, one system per row of b
    (k, n), from ``x`` (default 0) (Hestenes & Stiefel 1952). Returns x and whether every row reached
    ‖b − M x‖ ≤ ``tol``·‖b‖ within ``max_iterations``."""
    x = torch.zeros_like(b) if x is None else x
    r = b - apply(x)
    p, rr = r, (r * r).sum(-1)
    bound = tol**2 * (b * b).sum(-1)
    for _ in range(max_iterations):
        if bool((rr <= bound).all()):
            return x, True
        q = apply(p)
        pq = (p * q).sum(-1)
        alpha = torch.where(pq > 0, rr / pq, torch.zeros_like(rr))[:, None]
        x, r = x + alpha * p, r - alpha * q
        rr_next = (r * r).sum(-1)
        beta = torch.where(rr > 0, rr_next / rr, torch.zeros_like(rr))[:, None]
        p, rr = r + beta * p, rr_next
    return x, bool((rr <= bound).all())


class Tikhonov(abc.ABC):
    """x_λ = argmin ½‖Ax − y‖² + ½λ‖Lx‖² (Tikhonov 1963), with its residual and GCV function.

    Subclasses give the solution map, and trace(A R_λ) for G(λ) = m‖A x_λ − y‖²/(m − trace(A R_λ))².
    """

    solver: str  # "fourier", "svd", "dense" or "cg"
    exact_trace: bool

    def __init__(self, op: LinearOperator, y: Tensor) -> None:
        self.op, self.y = op, y
        self.capped: list[float] = []  # the λ whose (iterative) solve stopped at its iteration cap

    @abc.abstractmethod
    def solve(self, lam: float) -> Tensor:
        """x_λ, flat (n,)."""

    @abc.abstractmethod
    def trace(self, lam: float) -> float:
        """trace(A R_λ), R_λ = (AᵀA + λLᵀL)⁻¹Aᵀ the map y ↦ x_λ."""

    @property
    @abc.abstractmethod
    def notes(self) -> tuple[str, ...]:
        """How x_λ is computed, in words."""

    def residual_norm(self, lam: float) -> float:
        return float((forward(self.op, self.solve(lam)) - self.y).norm())

    def gcv(self, lam: float) -> float:
        """G(λ); inf where an estimated trace reaches m (the estimate is then meaningless)."""
        m = self.op.out_size
        gap = m - self.trace(lam)
        return m * self.residual_norm(lam) ** 2 / gap**2 if gap > 0 else math.inf


class FilteredTikhonov(Tikhonov):
    """Tikhonov diagonalised by a transform T (x = T*[conj(h)·c / (|h|² + λℓ²)], c the coefficients of
    y): the Fourier domain of a circular blur (h its transfer function, ℓ that of L) or the SVD of
    ``Spectral`` with L = I (h = s, ℓ = 1). The filter factors f = |h|²/(|h|² + λℓ²) give the exact
    trace Σ w·f (w: each coefficient's multiplicity)."""

    exact_trace = True

    def __init__(self, op: LinearOperator, y: Tensor, solver: str, h: Tensor, penalty: Tensor, coef: Tensor,
                 weights: Tensor, back: Callable[[Tensor], Tensor]) -> None:
        super().__init__(op, y)
        self.solver, self.h, self.penalty, self.coef, self.weights, self.back = solver, h, penalty, coef, weights, back
        self.gain = h.abs() ** 2

    def solve(self, lam: float) -> Tensor:
        return self.back(self.h.conj() * self.coef / (self.gain + lam * self.penalty))

    def trace(self, lam: float) -> float:
        return float((self.weights * self.gain / (self.gain + lam * self.penalty)).sum())

    @property
    def notes(self) -> tuple[str, ...]:
        return ({"fourier": "x_lambda in closed form in the Fourier domain (circular blur)",
                 "svd": "x_lambda in closed form by the SVD of A"}[self.solver],)


def fourier_tikhonov(op: GaussianBlur, y: Tensor, regularizer: str) -> FilteredTikhonov:
    """Circular blur: filter conj(H)/(|H|² + λ|L̂|²) on rfft2(y) (H = ``op._transfer``)."""
    shape = op.in_shape
    if regularizer == "laplacian":
        ell = laplacian_transfer(shape, op.device)
    else:
        ell = torch.ones((), dtype=torch.float64, device=op.device)
    weights = torch.full(op._transfer.shape, 2.0, dtype=torch.float64, device=op.device)
    weights[:, 0] = 1
    if shape[1] % 2 == 0:
        weights[:, -1] = 1  # rfft2 keeps half the spectrum: the other columns stand for two
    back = lambda z: torch.fft.irfft2(z, s=shape).reshape(-1)
    return FilteredTikhonov(op, y, "fourier", op._transfer, ell**2, torch.fft.rfft2(y.reshape(shape)), weights, back)


def svd_tikhonov(op: Spectral, y: Tensor) -> FilteredTikhonov:
    """Spectral A = U diag(s) Vᵀ, L = I: x_λ = V diag(s/(s² + λ)) Uᵀ y."""
    U, V, s = op.U.to(torch.float64), op.V.to(torch.float64), op.s
    return FilteredTikhonov(op, y, "svd", s, torch.ones_like(s), U.mT @ y, torch.ones_like(s), lambda z: V @ z)


class KrylovTikhonov(Tikhonov):
    """Any A and L: conjugate gradients on (AᵀA + λLᵀL) x = Aᵀy (:func:`conjugate_gradients`, to a
    relative residual of CG_TOLERANCE = 1e-8 within CG_MAX_ITERATIONS = 500 iterations), each solve
    started from the previous one's solution; trace(A R_λ) by Hutchinson's estimator
    (Hutchinson 1989) E[zᵀ A R_λ z] over :data:`HUTCHINSON_PROBES` fixed Rademacher probes z, solved
    with x_λ in one block. x_λ and the trace are cached by λ."""

    solver = "cg"
    exact_trace = False

    def __init__(self, op: LinearOperator, y: Tensor, penalty: Callable[[Tensor], Tensor]) -> None:
        super().__init__(op, y)
        self.penalty = penalty
        signs = torch.randint(0, 2, (HUTCHINSON_PROBES, op.out_size),
                              generator=torch.Generator().manual_seed(HUTCHINSON_SEED))
        self.probes = (2.0 * signs - 1).to(dtype=torch.float64, device=y.device)
        self._solutions: dict[float, Tensor] = {}
        self._traces: dict[float, float] = {}
        self._warm: dict[int, Tensor] = {}  # the last solution, by number of right-hand sides

    def _solve_block(self, lam: float, rhs: Tensor) -> Tensor:
        normal = lambda x: adjoint(self.op, forward(self.op, x)) + lam * self.penalty(x)
        x, converged = conjugate_gradients(normal, adjoint(self.op, rhs), self._warm.get(len(rhs)))
        if not converged:
            self.capped.append(lam)
        self._warm[len(rhs)] = x
        return x

    def solve(self, lam: float) -> Tensor:
        if lam not in self._solutions:
            self._solutions[lam] = self._solve_block(lam, self.y[None])[0]
        return self._solutions[lam]

    def trace(self, lam: float) -> float:
        if lam not in self._traces:
            x = self._solve_block(lam, torch.cat([self.y[None], self.probes]))
            self._solutions.setdefault(lam, x[0])
            self._traces[lam] = float((self.probes * forward(self.op, x[1:])).sum(-1).mean())
        return self._traces[lam]

    @property
    def notes(self) -> tuple[str, ...]:
        return (f"x_lambda by conjugate gradients on the normal equations (tolerance {CG_TOLERANCE:g}, "
                f"at most {CG_MAX_ITERATIONS} iterations)",)


class DenseTikhonov(Tikhonov):
    """A dense matrix (a Gaussian matrix; ``Spectral`` with the Laplacian) and any L, exactly: with
    B = AᵀA + λ₀LᵀL positive definite, the generalized eigenvectors V of LᵀL v = θ B v (VᵀBV = I,
    VᵀLᵀLV = Θ, by a Cholesky factor of B and one symmetric eigendecomposition) diagonalise every
    AᵀA + λLᵀL = B + (λ − λ₀)LᵀL, so x_λ = V diag(1/(1 + (λ − λ₀)θ)) Vᵀ Aᵀy and the trace of the
    influence matrix is Σ (1 − λ₀θ)/(1 + (λ − λ₀)θ) exactly. λ₀ = ‖A‖²·1e-2 (any λ₀ > 0 gives the
    same x_λ; B is definite when no constant image is in the null space of A, which holds for the
    random matrices here, and L = I is always definite)."""

    solver = "dense"
    exact_trace = True

    def __init__(self, op: Matrix, y: Tensor, penalty: Tensor) -> None:
        super().__init__(op, y)
        A = op.matrix.to(torch.float64)
        lam0 = float(op.norm().max()) ** 2 * 1e-2
        factor = torch.linalg.cholesky(A.mT @ A + lam0 * penalty)
        inv_factor = torch.linalg.solve_triangular(factor, torch.eye(len(factor), dtype=torch.float64,
                                                                     device=factor.device), upper=False)
        theta, W = torch.linalg.eigh(inv_factor @ penalty @ inv_factor.mT)
        self.V = inv_factor.mT @ W
        self.theta, self.lam0 = theta.clamp_min(0), lam0
        self.coef = self.V.mT @ (A.mT @ y)

    def solve(self, lam: float) -> Tensor:
        return self.V @ (self.coef / (1 + (lam - self.lam0) * self.theta))

    def trace(self, lam: float) -> float:
        return float(((1 - self.lam0 * self.theta) / (1 + (lam - self.lam0) * self.theta)).sum())

    @property
    def notes(self) -> tuple[str, ...]:
        return ("x_lambda in closed form by the generalized eigenvectors of (L^T L, A^T A + lambda0 L^T L)",)


def tikhonov(op: LinearOperator, y: Tensor, regularizer: str, shape: tuple[int, int]) -> Tikhonov:
    """Tikhonov for ``op`` with L = ``regularizer`` ("identity" or "laplacian" on images of ``shape``):
    a closed form where there is one (circular blur; ``Spectral`` with L = I; a dense matrix of at most
    DENSE_MAX_COLUMNS columns), CG otherwise."""
    if regularizer not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {regularizer!r}; allowed: {', '.join(REGULARIZERS)}")
    if isinstance(op, GaussianBlur) and op.boundary == "circular":
        return fourier_tikhonov(op, y, regularizer)
    if isinstance(op, Spectral) and regularizer == "identity":
        return svd_tikhonov(op, y)
    penalty = (lambda x: laplacian(laplacian(x, shape), shape)) if regularizer == "laplacian" else (lambda x: x)
    if isinstance(op, Matrix) and op.matrix.ndim == 2 and op.in_size <= DENSE_MAX_COLUMNS:
        eye = torch.eye(op.in_size, dtype=torch.float64, device=y.device)
        return DenseTikhonov(op, y, penalty(eye))  # the rows of L L (I) are those of LᵀL: L is symmetric
    return KrylovTikhonov(op, y, penalty)


# --------------------------------------------------------------------------- iterations


@dataclass
class Path:
    """An iteration followed from x_0: ‖A x_k − y‖ and (when the truth was given) ‖x_k − x̄‖ for every
    k, the seconds elapsed when x_k was reached, and the iterates a stopping rule may ask for (the
    first under the discrepancy target, the least-error one, the last)."""

    residuals: list[float] = field(default_factory=list)
    errors: list[float] | None = None
    seconds: list[float] = field(default_factory=list)
    kept: dict[int, Tensor] = field(default_factory=dict)

    @property
    def last(self) -> int:
        return len(self.residuals) - 1


def follow(steps: Iterator[tuple[Tensor, float]], max_iterations: int, target: float | None = None,
           truth: Tensor | None = None) -> Path:
    """Run ``steps`` (x_k, ‖A x_k − y‖), k = 0, 1, …, up to x_{max_iterations}. Without ``truth``, stop
    at the first residual ≤ ``target``; with it, go on to the cap to find the least error."""
    path = Path(errors=None if truth is None else [])
    start, stop, best = time.perf_counter(), None, None
    for k, (x, residual) in enumerate(steps):
        path.residuals.append(residual)
        path.seconds.append(time.perf_counter() - start)
        if stop is None and target is not None and residual <= target:
            stop = k
        if truth is not None:
            path.errors.append(float((x - truth).norm()))
            if best is None or path.errors[k] < path.errors[best]:
                best = k
        path.kept = {j: v for j, v in path.kept.items() if j in (stop, best)}
        path.kept[k] = x
        if k == max_iterations or (truth is None and stop is not None):
            break
    return path


def landweber_steps(op: LinearOperator, y: Tensor) -> Iterator[tuple[Tensor, float]]:
    """Landweber (1951): x_{k+1} = x_k + ω Aᵀ(y − A x_k), ω = 1/‖A‖², from x_0 = 0."""
    omega = 1 / float(op.norm().max()) ** 2
    x = torch.zeros(op.in_size, dtype=torch.float64, device=y.device)
    r = y
    while True:
        yield x, float(r.norm())
        x = x + omega * adjoint(op, r)
        r = y - forward(op, x)


def cgls_steps(op: LinearOperator, y: Tensor) -> Iterator[tuple[Tensor, float]]:
    """CGLS (Hestenes & Stiefel 1952; Björck, *Numerical Methods for Least Squares Problems*, 1996):
    CG on AᵀA x = Aᵀy without forming AᵀA, from x_0 = 0; x_k minimizes ‖Ax − y‖ over the Krylov space
    K_k(AᵀA, Aᵀy). Ends early when Aᵀr vanishes (x is then a least-squares solution)."""
    x = torch.zeros(op.in_size, dtype=torch.float64, device=y.device)
    r = y
    s = adjoint(op, r)
    p, gamma = s, float(s @ s)
    yield x, float(r.norm())
    while gamma > 0:
        q = forward(op, p)
        alpha = gamma / float(q @ q)
        x, r = x + alpha * p, r - alpha * q
        yield x, float(r.norm())
        s = adjoint(op, r)
        gamma, previous = float(s @ s), gamma
        p = s + (gamma / previous) * p


def richardson_lucy_steps(op: LinearOperator, y: Tensor) -> Iterator[tuple[Tensor, float]]:
    """Richardson–Lucy, the EM iteration for Poisson data (Richardson 1972; Lucy 1974; Shepp & Vardi
    1982): x ← x · Aᵀ(y / A x) / Aᵀ1, for A ≥ 0 entrywise, from the flat image x_0 = mean(y).

    Our own rather than ``skimage.restoration.richardson_lucy``: the discrepancy rule needs the
    residual ‖A x_k − y‖ at every k, and scikit-image convolves with a zero boundary where dipcert's
    blur may be circular. y is raised to RL_FLOOR·max(y) in the ratio (EM divides by it); the
    residual is that to the y given.
    """
    data = y.clamp_min(RL_FLOOR * float(y.max()))
    sensitivity = adjoint(op, torch.ones_like(y))
    x = torch.full((op.in_size,), float(data.mean()), dtype=torch.float64, device=y.device)
    while True:
        blurred = forward(op, x)
        yield x, float((blurred - y).norm())
        x = x * adjoint(op, data / blurred) / sensitivity
