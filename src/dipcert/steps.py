"""Step-size heuristics for gradient descent (not certificates).

Near θ_0 the Hessian of θ ↦ L_y(A g(u, θ)) for the MSE is dominated by its Gauss–Newton term
Jᵀ AᵀA J, whose norm is ‖A J_g(θ_0)‖² (theory.md §2.3). Gradient descent on the linearized model is
stable for γ < 2/‖A J_g(θ_0)‖²; the default ``auto`` step is 1/‖A J_g(θ_0)‖², half that limit.
This is an *estimate*: the certified step 1/L of Theorem III.1 comes from the certificate module.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .networks import Network
from .problems import Problem


def gauss_newton_sqnorm(
    problem: Problem,
    network: Network,
    *,
    iters: int = 50,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Estimate ‖A J_g(θ_0)‖² per run by ``iters`` power iterations on A J Jᵀ Aᵀ (m×m, never formed).

    A fixed count (no batch-wide stopping test) keeps each run's estimate independent of the other
    runs of its batch. Power iteration approaches the top eigenvalue from below: a lower estimate.
    """
    op = problem.operator
    params = network.initial_state()
    gen = generator or torch.Generator().manual_seed(0)
    # the same start for every run, so that a run's estimate does not depend on its batch
    w = torch.randn(op.out_size, generator=gen, dtype=torch.float64).to(problem.y).expand(problem.batch, -1)
    w = w / w.norm(dim=-1, keepdim=True)
    estimate = torch.zeros(problem.batch, dtype=torch.float64, device=w.device)
    for _ in range(iters):
        mw = op.forward_flat(network.ntk_matvec(params, op.adjoint_flat(w)))
        estimate = (w * mw).sum(-1).to(torch.float64)
        w = mw / mw.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(mw.dtype).tiny)
    return estimate


def auto_step(problem: Problem, network: Network) -> float:
    """γ = 1/‖A J_g(θ_0)‖², the smallest over the runs of the batch."""
    return float(1.0 / gauss_newton_sqnorm(problem, network).max())


def auto_steps(problem: Problem, network: Network) -> Tensor:
    """γ = 1/‖A J_g(θ_0)‖² for each run of the batch, shape (batch,)."""
    return 1.0 / gauss_newton_sqnorm(problem, network)


#: eigenvalues of A J Jᵀ Aᵀ at most this × the largest count as zero (float64 rounding is ~1e-16)
RANK_TOLERANCE = 1e-12


def gauss_newton_extremes(problem: Problem, network: Network) -> tuple[Tensor, Tensor]:
    """(μ, L): the smallest non-zero and the largest eigenvalue of A J_g(θ_0) J_g(θ_0)ᵀ Aᵀ per run,
    exactly (float64 eigensolver on the m×m matrix, built from the n×n Gram matrix of J_g(θ_0)).

    μ is the smallest eigenvalue above :data:`RANK_TOLERANCE` × L (0 only when the matrix is 0).
    The matrix has rank at most min(m, n, number of parameters): a generator with fewer
    parameters than pixels has zero eigenvalues beside those of a rank-deficient A. In the
    linearized dynamics μ is the slowest rate of the residual in the range of A J_g(θ_0), the part
    training can reduce (theory.md §4.1): it sets the critically damped viscosity α = 2√μ, and L the
    stable steps. Costs O(n²k + m²n) for the two-layer net.
    """
    from .certify import jacobian_gram

    op = problem.operator.to(dtype=torch.float64)
    gram = jacobian_gram(network)  # (batch, n, n), symmetric
    AG = op.forward_flat(gram.transpose(0, 1)).permute(1, 2, 0)  # (batch, m, n) = A G
    AGA = op.forward_flat(AG.transpose(0, 1)).permute(1, 2, 0)  # (batch, m, m) = A G Aᵀ
    eig = torch.linalg.eigvalsh((AGA + AGA.transpose(1, 2)) / 2)  # ascending
    L = eig[:, -1]
    above = eig > RANK_TOLERANCE * L[:, None]
    mu = torch.where(above, eig, torch.inf).min(dim=1).values
    return torch.where(above.any(dim=1), mu, torch.zeros_like(mu)), L
