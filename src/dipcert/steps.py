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
    iters: int = 100,
    rtol: float = 1e-4,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Estimate ‖A J_g(θ_0)‖² per run by power iteration on A J Jᵀ Aᵀ (m×m, never formed).

    Power iteration approaches the top eigenvalue from below: the result is a lower estimate.
    """
    op = problem.operator
    params = network.initial_params()
    gen = generator or torch.Generator().manual_seed(0)
    w = torch.randn(problem.batch, op.out_size, generator=gen, dtype=torch.float64).to(problem.y)
    w = w / w.norm(dim=-1, keepdim=True)
    estimate = torch.zeros(problem.batch, dtype=torch.float64, device=w.device)
    for _ in range(iters):
        mw = op.forward_flat(network.ntk_matvec(params, op.adjoint_flat(w)))
        new = (w * mw).sum(-1).to(torch.float64)
        w = mw / mw.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(mw.dtype).tiny)
        converged = bool(((new - estimate).abs() <= rtol * new.abs()).all())
        estimate = new
        if converged:
            break
    return estimate


def auto_step(problem: Problem, network: Network) -> float:
    """γ = 1/‖A J_g(θ_0)‖², the smallest over the runs of the batch."""
    return float(1.0 / gauss_newton_sqnorm(problem, network).max())
