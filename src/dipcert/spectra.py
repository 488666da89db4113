"""Extreme eigenvalues of symmetric PSD operators known only through products, per run of a batch.

Used for the certificates of networks without a closed-form Gram matrix (issue 12): σ_min(J_g(θ_0))
and σ_max(J_g(θ_0)) of (4)-(5) from the NTK Gram matrix G = J Jᵀ, and ‖A J_g(θ_0)‖² from A J Jᵀ Aᵀ,
through Jacobian–vector and vector–Jacobian products only (J is never formed).

The method is Lanczos with full reorthogonalization (classical Gram–Schmidt applied twice), batched
over the runs: one product with the operator serves every unfinished run, and the largest and the
smallest Ritz values come from the same Krylov space. Chosen by measurement, on the NTK Gram matrix
of a ConvDecoder (32×32 image, 16 channels, n = 1024, κ = 1.9·10⁷): both ends to the residual
10⁻⁸·θ_max took 528 products (λ_min to 1.2·10⁻⁴ relative), 10⁻⁹ took 572 (5·10⁻⁷), whereas
ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh`` on a ``LinearOperator``,
which="SA", the same criterion) took 16,000 to 18,000 products with 60 Krylov vectors and did not
converge in 30,000 with 20: its restarts discard the vectors that resolve the clustered small end
(the large end is cheap either way: 21 products). ``torch.lobpcg`` takes a matrix, not a product.
A product of a convolutional generator costs 0.1-0.2 s of CPU at n = 4096, so products dominate.
The price is the basis, ``max_iter + 1`` vectors of the operator's size per run in float64 (10 MB
per run at n = 4096 and 300 steps). A run stops on its own test, so its result does not depend on
the other runs of its batch.

What the numbers are (exact arithmetic; float64 rounding aside):

- Each reported value θ = vᵀGv is the Rayleigh quotient of a unit Ritz vector v, recomputed with an
  explicit product, so by Courant–Fischer θ_largest ≤ λ_max (a *lower bound* on λ_max) and
  θ_smallest ≥ λ_min (an *upper bound* on λ_min), whether or not the iteration converged.
- The residual r = ‖Gv − θv‖, also explicit, puts an eigenvalue of G in [θ − r, θ + r] (for a
  symmetric G). It need not be the extreme one: a converged Ritz value estimates λ_max or λ_min, and
  is a proven bound only in the direction above.
- ``converged`` means r ≤ tol · θ_max, with θ_max the run's largest Ritz value (≈ ‖G‖): the
  tolerance is relative to the operator's norm, as a relative tolerance on λ_min itself is out of
  reach when G is ill-conditioned. So a converged λ_min is known to ±tol·θ_max only: at the default
  10⁻⁶ the small end of the NTK of a 64×64 ConvDecoder (κ > 10⁷) stays unresolved (its residual
  exceeds its value) and only the upper bound holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from .networks import Network, Params
from .problems import Problem

#: ``operator(runs)`` gives the product w ↦ G w for the runs at ``runs`` (1-D index tensor), on
#: w of shape (len(runs), size) in float64.
OperatorFactory = Callable[[Tensor], Callable[[Tensor], Tensor]]

ENDS = ("largest", "smallest")


@dataclass(frozen=True)
class RitzPair:
    """One end of the spectrum per run: Rayleigh quotient, residual, whether it converged."""

    value: np.ndarray  # (batch,) θ = vᵀGv: ≤ λ_max at the largest end, ≥ λ_min at the smallest
    residual: np.ndarray  # (batch,) ‖Gv − θv‖ (explicit product): an eigenvalue lies within it of θ
    converged: np.ndarray  # (batch,) bool: residual ≤ tol · scale
    vector: Tensor | None  # (batch, size) unit Ritz vectors v, when asked for


@dataclass(frozen=True)
class ExtremeEigen:
    """The result of :func:`extreme_eigenpairs`."""

    ends: dict[str, RitzPair]  # "largest" and/or "smallest"
    scale: np.ndarray  # (batch,) θ_max, the largest Ritz value: the residuals are relative to it
    tol: float
    max_iter: int
    iterations: np.ndarray  # (batch,) Lanczos steps (one product each)
    matvecs: np.ndarray  # (batch,) products in all: the steps and the explicit checks

    def __getitem__(self, end: str) -> RitzPair:
        return self.ends[end]

    def describe(self, end: str) -> str:
        """A note: steps, products, the worst residual over the runs, the tolerance, and which runs
        did not converge."""
        pair = self.ends[end]
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(self.scale > 0, pair.residual / self.scale, 0.0)
        missed = np.flatnonzero(~pair.converged)
        listed = ", ".join(str(r) for r in missed[:10]) + (", ..." if len(missed) > 10 else "")
        runs = len(pair.converged)
        status = "converged" if len(missed) == 0 else f"NOT converged in {len(missed)} of {runs} runs ({listed})"
        return (f"Lanczos (full reorthogonalization), {int(self.iterations.min())}-{int(self.iterations.max())} "
                f"steps, {int(self.matvecs.max())} products at most; residual ||G v - theta v|| <= "
                f"{float(relative.max()):.2g} theta_max (tol {self.tol:g}): {status}")


def _ritz(alpha: np.ndarray, beta: np.ndarray, index: int) -> tuple[float, np.ndarray]:
    """Eigenvalue ``index`` (0: smallest, −1: largest) of the tridiagonal T and its eigenvector."""
    k = len(alpha)
    i = index % k
    if k == 1:
        return float(alpha[0]), np.ones(1)
    w, s = scipy.linalg.eigh_tridiagonal(alpha, beta, select="i", select_range=(i, i))
    return float(w[0]), s[:, 0]


def _lanczos_converged(alpha: np.ndarray, beta: np.ndarray, ends: tuple[str, ...], tol: float) -> bool:
    """Whether β_k|s_k| ≤ tol·θ_max at every end, the Lanczos estimate of ‖Gv − θv‖ (T from
    ``alpha`` and ``beta[:-1]``; ``beta[-1]`` = β_k, the norm of the next Lanczos vector)."""
    top, s_top = _ritz(alpha, beta[:-1], -1)
    bound = tol * max(top, 0.0)
    if "largest" in ends and abs(beta[-1] * s_top[-1]) > bound:
        return False
    return "smallest" not in ends or abs(beta[-1] * _ritz(alpha, beta[:-1], 0)[1][-1]) <= bound


def extreme_eigenpairs(
    operator: OperatorFactory,
    size: int,
    batch: int,
    *,
    ends: tuple[str, ...] = ENDS,
    tol: float = 1e-6,
    max_iter: int = 300,
    seed: int = 0,
    vectors: bool = False,
    device: torch.device | str | None = None,
) -> ExtremeEigen:
    """Largest and/or smallest eigenvalue of a symmetric PSD G (size × size) per run, by Lanczos.

    ``operator(runs)`` returns the product on the runs at ``runs`` (see :data:`OperatorFactory`); it
    is called again only when the set of unfinished runs changes. A run stops when every end in
    ``ends`` has the Lanczos residual estimate β_k|s_k| ≤ ``tol`` · θ_max, after ``max_iter`` steps
    (reported as not converged unless the explicit residual passes), or when its Krylov space is
    the whole space. The start vector is N(0, I) from ``seed``, the same for every run. Then one
    explicit product per end gives the reported Rayleigh quotient and residual (see the module
    docstring for what they bound).
    """
    unknown = set(ends) - set(ENDS)
    if unknown or not ends:
        raise ValueError(f"ends must be a non-empty subset of {ENDS}, got {ends!r}")
    if not (tol > 0 and max_iter >= 1):
        raise ValueError(f"tol must be > 0 and max_iter >= 1, got tol={tol!r}, max_iter={max_iter!r}")
    steps = min(max_iter, size)
    to = dict(dtype=torch.float64, device=device)
    start = torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device)
    basis = torch.zeros(batch, steps + 1, size, **to)  # Lanczos vectors q_1, …, q_{k+1} per run
    basis[:, 0] = start / start.norm()
    alpha, beta = np.zeros((batch, steps)), np.zeros((batch, steps))
    iterations = np.zeros(batch, dtype=np.int64)
    everyone = torch.arange(batch)
    full = operator(everyone.to(device))  # kept for the explicit checks
    active, product, product_runs = everyone, full, everyone
    for j in range(steps):
        if not torch.equal(product_runs, active):
            product, product_runs = operator(active.to(device)), active
        rows = slice(None) if len(active) == batch else active  # a view when every run is unfinished
        idx = active.numpy()
        q = basis[rows, j]
        w = product(q)
        a = (q * w).sum(-1)
        w = w - a[:, None] * q
        if j > 0:
            w = w - torch.as_tensor(beta[idx, j - 1], **to)[:, None] * basis[rows, j - 1]
        Q = basis[rows, : j + 1]
        for _ in range(2):  # full reorthogonalization, twice (Kahan–Parlett: "twice is enough")
            w = w - torch.einsum("bkn,bk->bn", Q, torch.einsum("bkn,bn->bk", Q, w))
        b = w.norm(dim=-1)
        basis[rows, j + 1] = w / b.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
        alpha[idx, j], beta[idx, j] = a.cpu().numpy(), b.cpu().numpy()
        iterations[idx] = j + 1
        finished = [j + 1 == size or _lanczos_converged(alpha[r, : j + 1], beta[r, : j + 1], ends, tol) for r in idx]
        active = active[~torch.tensor(finished, dtype=torch.bool)]
        if len(active) == 0:
            break

    del product  # the last set of runs' forward pass
    scale = np.array([_ritz(alpha[r, : iterations[r]], beta[r, : iterations[r] - 1], -1)[0] for r in range(batch)])
    scale = np.maximum(scale, 0.0)
    pairs = {}
    for end in ends:
        v = torch.zeros(batch, size, **to)
        for r in range(batch):
            k = int(iterations[r])
            s = _ritz(alpha[r, :k], beta[r, : k - 1], 0 if end == "smallest" else -1)[1]
            v[r] = torch.as_tensor(s, **to) @ basis[r, :k]
        v = v / v.norm(dim=-1, keepdim=True)
        gv = full(v)
        theta = (v * gv).sum(-1)
        residual = (gv - theta[:, None] * v).norm(dim=-1).cpu().numpy()
        pairs[end] = RitzPair(theta.cpu().numpy(), residual, residual <= tol * scale, v if vectors else None)
    return ExtremeEigen(pairs, scale, tol, max_iter, iterations, iterations + len(ends))


# ---------------------------------------------------------------- the operators of the certificates


def ntk_operator(net: Network, params: Params) -> OperatorFactory:
    """runs ↦ (w ↦ J_g(θ) J_g(θ)ᵀ w) on those runs, in float64 (θ = ``params`` cast to float64).

    A vector–Jacobian product whose forward pass is made once per set of runs, then a
    Jacobian–vector product, through :meth:`~dipcert.networks.Network.function` with float64
    parameters (measured 1.6 to 2.8 times faster than redoing the forward pass at every product, as
    ``Network.ntk_matvec`` does, for the convolutional generators at n = 4096). The network's fixed
    tensors must follow the parameters' dtype (the convolutional generators and the MLP do; the
    two-layer net has its dense Gram matrix instead: :func:`dense_operator`).
    """
    params = {name: p.detach().double() for name, p in params.items()}

    def on(runs: Tensor) -> Callable[[Tensor], Tensor]:
        every = len(runs) == net.batch
        sub = net if every else net.select(runs)
        theta = params if every else {name: p[runs] for name, p in params.items()}
        _, pullback = torch.func.vjp(sub.function, theta)
        return lambda w: torch.func.jvp(sub.function, (theta,), pullback(w))[1]

    return on


def dense_operator(matrices: Tensor) -> OperatorFactory:
    """runs ↦ (w ↦ M w) with the matrices M of those runs (``matrices``: (batch, size, size))."""

    def on(runs: Tensor) -> Callable[[Tensor], Tensor]:
        M = matrices if len(runs) == len(matrices) else matrices[runs]
        return lambda w: (M @ w.unsqueeze(-1)).squeeze(-1)

    return on


def gauss_newton_operator(problem: Problem, ntk: OperatorFactory) -> OperatorFactory:
    """runs ↦ (w ↦ A J Jᵀ Aᵀ w) on those runs (size m, float64), from the product with J Jᵀ: its
    largest eigenvalue is ‖A J_g(θ)‖², the norm of the Gauss–Newton term of the Hessian of
    ½‖A g(u, θ) − y‖²."""
    op = problem.operator.to(dtype=torch.float64)

    def on(runs: Tensor) -> Callable[[Tensor], Tensor]:
        sub, product = op if len(runs) == problem.batch else op.select(runs), ntk(runs)
        return lambda w: sub.forward_flat(product(sub.adjoint_flat(w)))

    return on
