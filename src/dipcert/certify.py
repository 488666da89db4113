"""Certificates of Theorem III.1 and Corollary III.2 for a problem, a network and a step size.

Every number carries a *kind*:

- ``exact``: computed exactly up to float64 rounding (closed-form spectra, dense eigensolvers);
- ``upper bound`` / ``lower bound``: a proven bound in the stated direction;
- ``estimate``: neither (power iterations, sampled ratios, the paper's (10) with an unknown
  constant, Corollary III.2 with unknown constants C, C'); never used in the verdict;
- ``assumption``: a value we cannot compute and take as given (dist(x̄, Σ') in (8); a KL ``v_max``
  given as a number, to be checked on the run with :func:`check_domain`);
- ``verdict``: condition (4) together with the step condition γ < 1/L, decided from exact values
  and bounds only.

The condition is checked conservatively: σ_J is exact, R is the radius certified by an *upper*
bound on Lip_{B(θ_0, R)}(J_g) (so the theorem's R is at least as large), R' uses an *upper* bound on
L through ν1 (increasing in γL). References: the paper's (4)-(10), docs/theory.md §2-3.

Losses enter through ψ, ℓ₂ (a Lipschitz constant of ∇L_y) and the minimizer v* of L_y: the certified
L is ℓ₂ times the MSE bound with ‖y_0 − v*‖ (MSE: ℓ₂ = 1, v* = y); the KL loss with a continuation
(ε > 0) has finite ℓ₂ and gets a verdict, the exact KL (ε = 0) only estimates.

Networks without proven bounds (the MLP of Definition II.1, the convolutional generators) get
Lip(J_g) and L as estimates: their ``condition_4`` is undecided, and ``condition_4_on_estimates``
says what the same test gives on the estimates (not a certificate). The two-layer net and the MLP
have exact spectra of J_g(θ_0) from the dense n×n Gram matrix; every other network gets them
matrix-free, from Lanczos Ritz values (:mod:`dipcert.spectra`): σ_max(J_g(θ_0)) as a lower bound,
σ_min(J_g(θ_0)) as an upper bound (not the lower bound (4) needs), or σ_min = 0 exactly when the
network has fewer trained parameters than pixels (rank J_g ≤ p < n), and then (4) fails.
``norm_AJ0_sq`` = ‖A J_g(θ_0)‖², the scale of the Gauss–Newton step heuristics, is a Lanczos lower
bound for every network. Losses without a KL desingularizer (logistic; KL without
``v_max``) raise :class:`NoCertificate` with the reason.

``dynamics="flow"`` gives the gradient-flow version (theory.md §3.1): ν1 = 1, the time t in place
of ν2 τ, no step condition. For any method and any iterate, :meth:`Certificate.a_posteriori_error_bound`
turns the observed loss into a bound on ‖x_τ − x̄‖ (MSE, A injective; theory.md §4.2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .losses import DesingularizerUnavailable, KLLoss, Loss, MSELoss
from .networks import MLP, Network, Params, TwoLayerDIP
from .problems import Problem
from .spectra import ExtremeEigen, dense_operator, extreme_eigenpairs, gauss_newton_operator, ntk_operator


class NoCertificate(ValueError):
    """No certificate exists for this loss (no KL desingularizer (3), or an infinite L_y(y_0));
    the message says why."""


KINDS = ("exact", "lower bound", "upper bound", "estimate", "assumption", "verdict")
DYNAMICS = ("gd", "flow", "a-posteriori")
LIPSCHITZ_FORMS = ("radius-free", "radius-dependent", "jmiv")


@dataclass(frozen=True)
class Quantity:
    """One certificate number per run (shape (batch,)), with its kind and a note on its origin."""

    value: np.ndarray
    kind: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; allowed: {', '.join(KINDS)}")


def _q(value, kind: str, note: str = "") -> Quantity:
    return Quantity(np.atleast_1d(np.asarray(value, dtype=np.float64)), kind, note)


# ---------------------------------------------------------------- spectra of the Jacobian at θ_0


def _two_layer_gram(net: TwoLayerDIP, chunk_elements: int = 1 << 22) -> Tensor:
    """J_g(0) J_g(0)ᵀ in closed form (theory.md §2.3), float64, shape (batch, n, n).

    W part: V D² Vᵀ/k with D = diag φ'(W u); V part: (‖φ(W u)‖²/k) I. Accumulated over column
    blocks of V so that no n×k float64 copy is made.
    """
    z = net.z0.double()
    gram = torch.zeros(net.batch, net.n, net.n, dtype=torch.float64, device=z.device)
    if net.trains_w:
        dphi2 = net.activation.derivative(z) ** 2
        chunk = max(1, chunk_elements // (net.n * net.batch))
        for start in range(0, net.k, chunk):
            block = net.V0[:, :, start : start + chunk].double()
            gram.baddbmm_(block * dphi2[:, None, start : start + chunk], block.transpose(1, 2))
        gram /= net.k
    if net.trains_v:
        gram.diagonal(dim1=1, dim2=2).add_((net.activation(z).pow(2).sum(-1) / net.k)[:, None])
    return gram


def _generic_gram(net: Network, params: Params, chunk_elements: int = 1 << 24) -> Tensor:
    """J Jᵀ in float64, shape (batch, n, n), column block by column block: for a block E of basis
    vectors, J (Jᵀ E) by a vectorized vector–Jacobian product then a Jacobian–vector product, so
    that at most ``chunk_elements`` numbers of Jᵀ E (never the n×p Jacobian) are held at once."""
    params = {name: p.detach().double() for name, p in params.items()}
    _, pullback = torch.func.vjp(net.function, params)

    def column(w: Tensor) -> Tensor:  # J Jᵀ w for w of shape (batch, n)
        return torch.func.jvp(net.function, (params,), pullback(w))[1]

    chunk = max(1, chunk_elements // (net.parameter_count * net.batch))
    eye = torch.eye(net.n, dtype=torch.float64, device=net.device)
    blocks = [torch.func.vmap(column)(eye[i : i + chunk, None, :].expand(-1, net.batch, -1))
              for i in range(0, net.n, chunk)]
    return torch.cat(blocks).permute(1, 2, 0)  # [b, :, i] = J Jᵀ e_i


def _mlp_gram(net: MLP, params: Params) -> Tensor:
    """J Jᵀ for the MLP of Definition II.1 layer by layer, float64, shape (batch, n, n).

    With a_l = W⁽ˡ⁾g⁽ˡ⁻¹⁾ and B_l = ∂g/∂a_l (n × N_l), the Jacobian in W⁽ˡ⁾ maps Δ to B_l Δ g⁽ˡ⁻¹⁾, so
    J_l J_lᵀ = ‖g⁽ˡ⁻¹⁾‖² B_l B_lᵀ; B_L = I and B_l = B_{l+1} W⁽ˡ⁺¹⁾ diag φ'(a_l) (backpropagation of
    the n output directions through the widths N_l only: no n×p Jacobian, O(n² Σ N_l) work).
    """
    weights = [p.detach().double() for p in params.values()]
    acts, pre = [net.u.double()], []  # g⁽⁰⁾, …, g⁽ᴸ⁻¹⁾ and a_1, …, a_{L−1}
    for W in weights[:-1]:
        pre.append(torch.einsum("bij,bj->bi", W, acts[-1]))
        acts.append(net.activation(pre[-1]))
    gram = torch.diag_embed(acts[-1].pow(2).sum(-1, keepdim=True).expand(-1, net.n)).contiguous()  # layer L
    B = weights[-1]  # B_{l+1} W⁽ˡ⁺¹⁾ for the layer l handled next
    for l in range(len(weights) - 2, -1, -1):  # layers L−1, …, 1 (0-based index l)
        B = B * net.activation.derivative(pre[l]).unsqueeze(1)  # B_l
        gram.baddbmm_(B * acts[l].pow(2).sum(-1)[:, None, None], B.transpose(1, 2))
        if l > 0:
            B = B @ weights[l]
    return gram


def jacobian_gram(net: Network, params: Params | None = None) -> Tensor:
    """J_g(θ) J_g(θ)ᵀ (θ = θ_0 by default), float64, shape (batch, n, n): in closed form for the
    two-layer net at θ_0, layer by layer for the MLP, from Jacobian–vector products otherwise."""
    if params is None and isinstance(net, TwoLayerDIP):
        return _two_layer_gram(net)
    params = params if params is not None else net.initial_state()
    if isinstance(net, MLP):
        return _mlp_gram(net, params)
    return _generic_gram(net, params)


def _extreme_eigenvalues(gram: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest eigenvalue of each symmetric matrix (LAPACK, float64)."""
    eig = torch.linalg.eigvalsh(gram).cpu().numpy()
    return eig[:, 0], eig[:, -1]


#: Defaults of the matrix-free spectra (Lanczos): residual tolerance relative to θ_max, and step limit.
EIGEN_TOL = 1e-6
EIGEN_MAX_ITER = 300


def jacobian_extremes(
    net: Network, params: Params | None = None, *, tol: float = EIGEN_TOL, max_iter: int = EIGEN_MAX_ITER,
    seed: int = 0,
) -> ExtremeEigen:
    """λ_max and, when p ≥ n, λ_min of J_g(θ) J_g(θ)ᵀ (θ = θ_0 by default) per run, matrix-free:
    Lanczos (:func:`dipcert.spectra.extreme_eigenpairs`) on Jacobian products, J never formed. With
    p < n only λ_max is computed (λ_min = 0 exactly: rank J ≤ p < n). The largest Ritz value is a
    lower bound on λ_max, the smallest an upper bound on λ_min (Courant–Fischer)."""
    params = params if params is not None else net.initial_state()
    ends = ("largest", "smallest") if net.parameter_count >= net.n else ("largest",)
    return extreme_eigenpairs(ntk_operator(net, params), net.n, net.batch, ends=ends, tol=tol,
                              max_iter=max_iter, seed=seed, device=net.device)


def gauss_newton_norm(
    problem: Problem, net: Network, gram: Tensor | None = None, *, tol: float = EIGEN_TOL,
    max_iter: int = EIGEN_MAX_ITER, seed: int = 0,
) -> ExtremeEigen:
    """‖A J_g(θ_0)‖² = λ_max(A J Jᵀ Aᵀ) per run by Lanczos on A (J (Jᵀ (Aᵀ w))), with J Jᵀ the dense
    ``gram`` when given, else from Jacobian products: the Ritz value is a lower bound
    (Courant–Fischer), within its residual of an eigenvalue."""
    ntk = dense_operator(gram) if gram is not None else ntk_operator(net, net.initial_state())
    return extreme_eigenpairs(gauss_newton_operator(problem, ntk), problem.m, net.batch, ends=("largest",),
                              tol=tol, max_iter=max_iter, seed=seed, device=net.device)


def _ritz_note(result: ExtremeEigen, end: str, what: str) -> str:
    """The note of a quantity from a Ritz value: which bound it is, the residual, convergence."""
    pair = result[end]
    bound = "a lower bound on lambda_max" if end == "largest" else "an upper bound on lambda_min"
    unresolved = ""
    if end == "smallest" and bool(np.any(pair.residual >= np.abs(pair.value))):
        unresolved = "; the residual exceeds the value in some runs: only the bound stands, not an estimate"
    return (f"{what} from the {end} Ritz value of a Lanczos run, {bound} (Courant-Fischer); an eigenvalue "
            f"lies within the residual of it. {result.describe(end)}{unresolved}")


# ---------------------------------------------------------------- Lipschitz constant of J_g


@dataclass(frozen=True)
class LipschitzBound:
    """ρ ↦ upper bound on Lip_{B(θ_0, ρ)}(J_g), per run."""

    form: str
    fn: Callable[[np.ndarray], np.ndarray]
    radius_free: bool
    kind: str
    note: str


def lipschitz_bound(net: TwoLayerDIP, form: str | None = None) -> LipschitzBound:
    """The Lipschitz bounds of docs/theory.md §2.3 for the two-layer net (9).

    - ``radius-free`` (V fixed): ‖J(θ) − J(θ')‖ ≤ B2·v̄/√k·‖θ − θ'‖ everywhere, v̄ = max_i ‖v_i(0)‖;
      with only V trained, J_g is constant and Lip = 0.
    - ``radius-dependent`` (any trained layers; ours [D]): on B(θ_0, ρ),
      ‖J(θ) − J(θ')‖ ≤ (1/√k)[B1‖ΔV‖ + (B1 + B2(v̄ + ρ))‖ΔW‖] ≤ √(B1² + (B1 + B2(v̄ + ρ))²)/√k·‖Δθ‖.
    - ``jmiv``: B(1 + 2(D√n + ρ))/√k with B = max(B1, B2), D = max|V_0|, as we recall it from the
      JMIV paper (not checked against its text; it bounds ours when B ≥ B1, B2 and D√n ≥ v̄).
    """
    form = form or ("radius-free" if not net.trains_v or not net.trains_w else "radius-dependent")
    if form not in LIPSCHITZ_FORMS:
        raise ValueError(f"unknown Lipschitz form {form!r}; allowed: {', '.join(LIPSCHITZ_FORMS)}")
    act, sqrt_k = net.activation, math.sqrt(net.k)
    if not net.trains_w:  # g is linear in V: J_g does not depend on θ
        if form != "radius-free":
            raise ValueError("with only V trained, J_g is constant: use the radius-free form (Lip = 0)")
        return LipschitzBound(form, lambda rho: np.zeros_like(rho), True, "exact", "0: only V trains, J_g does not depend on theta")
    v_bar = torch.linalg.vector_norm(net.V0, dim=1, dtype=torch.float64).amax(-1).cpu().numpy()  # max column norm, per run
    if form == "radius-free":
        if net.trains_v:
            raise ValueError("the radius-free Lipschitz bound holds only when V is fixed (train='W')")
        return LipschitzBound(
            form, lambda rho: act.B2 * v_bar / sqrt_k + np.zeros_like(rho), True, "upper bound",
            "B2 * vbar / sqrt(k), global (V fixed); docs/theory.md 2.3",
        )
    if form == "radius-dependent":
        return LipschitzBound(
            form, lambda rho: np.sqrt(act.B1**2 + (act.B1 + act.B2 * (v_bar + rho)) ** 2) / sqrt_k, False,
            "upper bound", "sqrt(B1^2 + (B1 + B2 (vbar + R))^2) / sqrt(k) on B(theta_0, R); our derivation",
        )
    D = net.V0.abs().flatten(1).amax(-1).double().cpu().numpy()
    return LipschitzBound(
        form, lambda rho: act.B * (1 + 2 * (D * math.sqrt(net.n) + rho)) / sqrt_k, False, "upper bound",
        "B (1 + 2 (D sqrt(n) + R)) / sqrt(k) on B(theta_0, R), recalled from the JMIV paper (unverified)",
    )


def certified_radius(sigma_J: np.ndarray, lip: LipschitzBound) -> np.ndarray:
    """The largest R with R · Lip(R) ≤ σ_J/2, i.e. R = σ_J/(2 Lip_{B(θ_0,R)}) in (5).

    R ↦ R·Lip(R) increases, so bisection finds the root; any upper bound on Lip gives a lower bound
    on the theorem's R.
    """
    if lip.radius_free:
        with np.errstate(divide="ignore"):
            return sigma_J / (2 * lip.fn(np.zeros_like(sigma_J)))  # inf when Lip = 0
    lo, hi = np.zeros_like(sigma_J), np.maximum(sigma_J / (2 * lip.fn(np.zeros_like(sigma_J))), 1e-300)
    for _ in range(200):  # grow hi until hi·Lip(hi) ≥ σ_J/2
        short = hi * lip.fn(hi) < sigma_J / 2
        if not short.any():
            break
        hi = np.where(short, 2 * hi, hi)
    for _ in range(200):
        mid = (lo + hi) / 2
        ok = mid * lip.fn(mid) <= sigma_J / 2
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return lo


def sampled_lipschitz(
    net: Network, radius: float | np.ndarray, pairs: int = 20, generator: torch.Generator | None = None,
    power_iters: int = 20,
) -> np.ndarray:
    """max ‖J(θ) − J(θ')‖/‖θ − θ'‖ over random pairs in B(θ_0, radius) (radius > 0): a *lower*
    estimate of Lip_{B(θ_0, radius)}(J_g), per run.

    Each pair lies in a ball B(θ_0, r) with r log-uniform between min(radius, 10⁻³‖θ_0‖) and radius
    (a wide ball of a bounded activation is mostly saturated: small r see the curvature near θ_0);
    θ is drawn in it and θ' on the segment from θ to a second point of it, at a fraction
    10^(−U(0, 3)) (points: a N(0, I) direction scaled to radius r·U(0, 1)). Each ‖J(θ) − J(θ')‖ is
    estimated from below by ``power_iters`` power iterations on (J − J')(J − J')ᵀ with
    vector–Jacobian and Jacobian–vector products (no Jacobian is formed), as ‖(J − J')ᵀw‖ for a unit
    w. All draws come from ``generator`` (seed 0 by default), shared by the runs; the products are
    in the network's dtype. Every ratio is, up to rounding, at most the Lipschitz constant on the
    ball: the maximum is a lower bound on it (the supremum need not be attained by the pairs), and
    certify reports it as an estimate. Cost: ``pairs`` × ``power_iters`` × 4 products.
    """
    gen = generator or torch.Generator().manual_seed(0)
    theta0 = net.initial_state()
    radius = torch.as_tensor(np.broadcast_to(radius, (net.batch,)).copy(), dtype=torch.float64, device=net.device)
    norm0 = sum(p.double().pow(2).flatten(1).sum(-1) for p in theta0.values()).sqrt()
    smallest = torch.minimum(radius, 1e-3 * norm0)
    best = np.zeros(net.batch)
    for _ in range(pairs):
        scale = (radius * (smallest / radius) ** torch.rand((), generator=gen, dtype=torch.float64)).to(net.dtype)
        first, other = _random_point_in_ball(theta0, scale, gen), _random_point_in_ball(theta0, scale, gen)
        fraction = 10.0 ** (-3 * torch.rand((), generator=gen, dtype=torch.float64).item())
        second = {k: first[k] + fraction * (other[k] - first[k]) for k in first}
        dist = sum((first[k] - second[k]).pow(2).flatten(1).sum(-1) for k in first).sqrt()
        ratio = _jacobian_difference_norm(net, first, second, power_iters, gen) / dist
        best = np.maximum(best, ratio.double().cpu().numpy())
    return best


def _random_point_in_ball(center: Params, radius: Tensor, gen: torch.Generator) -> Params:
    steps = {k: torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) for k, p in center.items()}
    norm = sum(s.pow(2).flatten(1).sum(-1) for s in steps.values()).sqrt()
    scale = radius * torch.rand(radius.shape, generator=gen, dtype=torch.float64).to(radius) / norm
    return {k: center[k] + steps[k] * scale.view(-1, *([1] * (steps[k].dim() - 1))) for k in center}


def _jacobian_difference_norm(net: Network, p: Params, q: Params, iters: int, gen: torch.Generator) -> Tensor:
    """‖J(p) − J(q)‖ per run, from below: the Rayleigh quotient of (J_p − J_q)(J_p − J_q)ᵀ after
    ``iters`` power iterations (products with J_pᵀ, J_qᵀ by VJP and with J_p, J_q by JVP)."""
    _, pull_p = torch.func.vjp(net.function, p)
    _, pull_q = torch.func.vjp(net.function, q)
    w = torch.randn(net.batch, net.n, generator=gen, dtype=torch.float64).to(dtype=net.dtype, device=net.device)
    estimate = torch.zeros(net.batch, dtype=net.dtype, device=net.device)
    for _ in range(iters):
        w = w / w.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        (grad_p,), (grad_q,) = pull_p(w), pull_q(w)
        diff = {k: grad_p[k] - grad_q[k] for k in grad_p}  # (J_p − J_q)ᵀ w
        estimate = sum(d.pow(2).flatten(1).sum(-1) for d in diff.values()).sqrt()
        w = torch.func.jvp(net.function, (p,), (diff,))[1] - torch.func.jvp(net.function, (q,), (diff,))[1]
    return estimate


# ---------------------------------------------------------------- the smoothness constant L


def hessian_norm_estimate(
    problem: Problem, net: Network, loss: Loss, iters: int = 10, rtol: float = 1e-3
) -> np.ndarray:
    """‖∇²_θ F(θ_0)‖ per run, F(θ) = L_y(A g(u, θ)), by power iteration (the runs' losses are summed:
    their Hessian is block diagonal, one block per run).

    Start: one N(0, I) vector over one run's parameter shapes, from seed 0, the same for every run.
    Each iteration normalizes v per run, forms h = ∇²F(θ_0) v by forward-over-reverse autograd
    (``jvp`` of ``grad``, in the network's dtype) and takes |⟨v, h⟩|, then v ← h. A run stops when
    its value changes by at most ``rtol`` relative, or after ``iters`` iterations; its value does not
    depend on the other runs of its batch. Each value is a Rayleigh quotient, so it is at most
    ‖∇²F(θ_0)‖ ≤ L (a lower bound on L, the supremum over a region containing θ_0); certify
    multiplies it by a safety factor, which makes it an *estimate* in neither direction.
    """
    op, y = problem.operator, problem.y
    params = net.initial_state()

    def objective(p: Params) -> Tensor:
        return loss.value(op.forward_flat(net.function(p)), y).sum()

    gen = torch.Generator().manual_seed(0)
    # the same start for every run: a run's estimate does not depend on its batch
    vec = {k: torch.randn(p.shape[1:], generator=gen, dtype=torch.float64).to(p).expand_as(p) for k, p in params.items()}
    estimate = torch.zeros(net.batch, dtype=torch.float64, device=y.device)
    done = torch.zeros(net.batch, dtype=torch.bool, device=y.device)
    for _ in range(iters):
        norm = sum(v.pow(2).flatten(1).sum(-1) for v in vec.values()).sqrt()
        vec = {k: v / norm.view(-1, *([1] * (v.dim() - 1))) for k, v in vec.items()}
        _, hv = torch.func.jvp(torch.func.grad(objective), (params,), (vec,))
        current = sum((hv[k] * vec[k]).flatten(1).sum(-1) for k in vec).abs().double()
        settled = (current - estimate).abs() <= rtol * current
        estimate = torch.where(done, estimate, current)
        done |= settled
        vec = hv
        if bool(done.all()):
            break
    return estimate.cpu().numpy()


def smoothness_bound_on_ball(
    norm_A: np.ndarray, sigma_max_J: np.ndarray, lip: np.ndarray, residual0: np.ndarray, rho: np.ndarray
) -> np.ndarray:
    """Upper bound on L = sup ‖∇²_θ ½‖A g(u, θ) − y‖²‖ over B(θ_0, ρ) (MSE; ours [D]).

    ∇²F[h, h] = ‖A J h‖² + ⟨Aᵀr, D²g[h, h]⟩ with ‖J(θ)‖ ≤ σ_max(J_0) + Lip·ρ, ‖D²g[h, h]‖ ≤ Lip‖h‖²,
    and ‖r(θ)‖ ≤ ‖r_0‖ + ‖A‖(σ_max(J_0)ρ + Lip ρ²/2).
    """
    with np.errstate(invalid="ignore"):  # Lip = 0 (J constant) with ρ = ∞: the ρ terms vanish
        lip_rho = np.where(lip > 0, lip * rho, 0.0)
        residual = residual0 + norm_A * np.where(lip > 0, sigma_max_J * rho + lip * rho**2 / 2, 0.0)
    return norm_A**2 * (sigma_max_J + lip_rho) ** 2 + norm_A * lip * residual


def smoothness_bound_on_sublevel_set(problem: Problem, net: TwoLayerDIP, residual0: np.ndarray) -> np.ndarray:
    """L̂ = (B1²/k)‖A V₀‖² + (B2/√k)·max_i ‖A v_i(0)‖·‖y₀ − y‖ (docs/theory.md §2.3; W trained, MSE).

    It bounds the Hessian of z ↦ ½‖A V₀ φ(z)/√k − y‖² wherever ‖A g − y‖ ≤ ‖y₀ − y‖, i.e. on the
    sublevel set {L_y ≤ L_y(y₀)}; gradient descent need not keep the segments between its iterates
    in that set, so it is reported as an estimate. ‖A V₀‖ is exact (eigenvalues of the m×m matrix
    A V₀ V₀ᵀ Aᵀ); A is applied to the k columns of V₀ in blocks.
    """
    op, k = problem.operator, net.k
    batch, m = net.batch, problem.m
    gram = torch.zeros(batch, m, m, dtype=torch.float64, device=net.device)
    col_max = torch.zeros(batch, dtype=torch.float64, device=net.device)
    chunk = max(1, (1 << 22) // max(m, net.n) // batch)
    for start in range(0, k, chunk):
        cols = net.V0[:, :, start : start + chunk].permute(2, 0, 1)  # (c, batch, n)
        av = op.forward_flat(cols).double().permute(1, 0, 2)  # (batch, c, m): A v_i
        gram.baddbmm_(av.transpose(1, 2), av)
        col_max = torch.maximum(col_max, av.norm(dim=-1).amax(-1))
    norm_AV_sq = torch.linalg.eigvalsh(gram)[:, -1].cpu().numpy()
    act = net.activation
    return act.B1**2 / k * norm_AV_sq + act.B2 / math.sqrt(k) * col_max.cpu().numpy() * residual0


# ---------------------------------------------------------------- the certificate


def _stopping_time(loss: Loss, loss0: np.ndarray, rate: np.ndarray, noise_norm: np.ndarray) -> np.ndarray:
    """The first τ with ψ(Ψ⁻¹(ξ_τ)) ≤ ‖ε‖ (docs/theory.md §3.2), ξ_τ = rate·τ + Ψ(L_y(y_0)):
    beyond it Theorem III.1 gives ‖y_τ − ȳ‖ ≤ 2‖ε‖ (a time t for the gradient flow)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        psi0 = loss.psi(torch.as_tensor(loss0)).numpy()
        target = loss.Psi(loss.psi_inv(torch.as_tensor(noise_norm))).numpy()
        return np.where(psi0 <= noise_norm, 0.0, np.ceil((target - loss.Psi(torch.as_tensor(loss0)).numpy()) / rate))


@dataclass
class Certificate:
    """Theorem III.1 quantities for every run of a batch, with bound curves (6), (7), (8)."""

    quantities: dict[str, Quantity]
    loss: Loss
    lipschitz_form: str | None
    settings: dict = field(default_factory=dict)
    dynamics: str = "gd"  # "flow": the bound curves take the time t where gradient descent takes τ

    def __getitem__(self, name: str) -> Quantity:
        return self.quantities[name]

    @property
    def batch(self) -> int:
        return len(self.quantities["sigma_A"].value)

    @property
    def holds(self) -> np.ndarray:
        """Condition (4) and γ < 1/L, per run (False where undecidable)."""
        return self.quantities["condition_4"].value == 1.0

    def _xi(self, tau: np.ndarray) -> Tensor:
        """ξ_τ = σ_A² σ_J² τ/(4ν2) + Ψ(L_y(y_0)), shape (T, batch) (for the flow ν2 = 1, τ = t)."""
        if self.dynamics == "a-posteriori":
            raise ValueError("an a-posteriori certificate has no a-priori bound curves; "
                             "use a_posteriori_error_bound")
        q = self.quantities
        rate = q["sigma_A"].value ** 2 * q["sigma_min_J0"].value ** 2 / (4 * q["nu2"].value)
        psi0 = self.loss.Psi(torch.as_tensor(q["loss0"].value))
        return torch.as_tensor(np.asarray(tau, dtype=np.float64)[:, None] * rate) + psi0

    def stopping_time(self, noise_norm: np.ndarray) -> np.ndarray:
        """τ_ε for a noise norm ‖ε‖ per run (e.g. an estimate σ̂√m): see :func:`_stopping_time`."""
        q = self.quantities
        rate = q["sigma_A"].value ** 2 * q["sigma_min_J0"].value ** 2 / (4 * q["nu2"].value)
        return _stopping_time(self.loss, q["loss0"].value, rate, np.asarray(noise_norm, dtype=np.float64))

    def loss_bound(self, tau: np.ndarray) -> np.ndarray:
        """(6): L_y(y_τ) ≤ Ψ⁻¹(ξ_τ), shape (T, batch)."""
        return self.loss.Psi_inv(self._xi(tau)).numpy()

    def residual_bound(self, tau: np.ndarray) -> np.ndarray:
        """ψ(Ψ⁻¹(ξ_τ)): a bound on ‖y_τ − v*‖, v* the minimizer of the convex L_y (the KL inequality
        on a convex function bounds the distance to its minimizer by ψ(L_y)); v* = y for the MSE,
        where ψ(L_y(v)) = ‖v − y‖ with c = √2."""
        return self.loss.psi(self.loss.Psi_inv(self._xi(tau))).numpy()

    def param_bound(self, tau: np.ndarray) -> np.ndarray:
        """‖θ_τ − θ_0‖ ≤ R' for all τ (the iterates stay in B(θ_0, R')), shape (T, batch)."""
        self._xi(np.zeros(1))  # the same check: only a-priori certificates have curves
        return np.broadcast_to(self.quantities["R_prime"].value, (len(np.atleast_1d(tau)), self.batch)).copy()

    def param_to_limit_bound(self, tau: np.ndarray) -> np.ndarray:
        """(7): ‖θ_τ − θ_∞‖ ≤ 2ν1 ψ(Ψ⁻¹(ξ_τ))/(σ_J σ_A)."""
        q = self.quantities
        return 2 * q["nu1"].value * self.residual_bound(tau) / (q["sigma_min_J0"].value * q["sigma_A"].value)

    def error_bound(self, tau: np.ndarray) -> np.ndarray:
        """(8) with λ = σ_min(A) (A injective, so A-5 holds) and the assumed dist(x̄, Σ'), plus
        ‖v* − y‖/λ when the loss's minimizer v* is not y (the KL continuation)."""
        q = self.quantities
        lam, dist, noise = q["lambda"].value, q["dist"].value, q["noise_norm"].value
        residual = self.residual_bound(tau) + q["argmin_offset"].value
        return residual / lam + (1 + q["norm_A"].value / lam) * dist + noise / lam

    def a_posteriori_error_bound(self, loss_values: np.ndarray) -> np.ndarray:
        """‖x_τ − x̄‖ ≤ (‖y_τ − y‖ + ‖ε‖)/λ + (1 + ‖A‖/λ) dist(x̄, Σ') from the observed loss, for any
        method (MSE, where ‖y_τ − y‖ = √(2 L_y(y_τ)); λ = σ_min(A), A injective). With dist = 0 it
        is ‖A(x_τ − x̄)‖/σ_min(A) bounded by the triangle inequality: a bound, not an estimate.
        NaN where it cannot be evaluated (A not injective, or ‖ε‖ unknown).
        ``loss_values`` has shape (T, batch), or (T, 1) to broadcast one run's losses."""
        if not isinstance(self.loss, MSELoss):
            raise ValueError("the a-posteriori recovery bound needs the MSE loss (||y - y_tau|| = sqrt(2 L))")
        q = self.quantities
        lam, dist, noise = q["lambda"].value, q["dist"].value, q["noise_norm"].value
        residual = np.sqrt(2 * np.maximum(np.asarray(loss_values, dtype=np.float64), 0))
        return (residual + noise) / lam + (1 + q["norm_A"].value / lam) * dist  # NaN when ‖ε‖ is unknown

    def bounds_at(self, tau: np.ndarray) -> dict[str, np.ndarray]:
        """Bound curves for the history: ``loss_bound``, ``param_bound``, ``error_bound``."""
        out = {"loss_bound": self.loss_bound(tau), "param_bound": self.param_bound(tau)}
        if np.all(np.isfinite(self.quantities["lambda"].value)):
            out["error_bound"] = self.error_bound(tau)
        return out

    def to_json(self, run: int = 0) -> dict:
        """Flat values (``condition_4`` as a boolean, or null if undecidable) plus kinds and notes."""
        values, kinds, notes = {}, {}, {}
        for name, q in self.quantities.items():
            v = float(q.value[run])
            if name == "condition_4":
                v = None if math.isnan(v) else bool(v)
            values[name], kinds[name], notes[name] = v, q.kind, q.note
        return {**values, "kinds": kinds, "notes": notes, "lipschitz_form": self.lipschitz_form,
                "loss": self.loss.describe(), "settings": self.settings}

    def report(self, run: int = 0) -> str:
        """A readable table: name, value, kind, note; then the verdict in words."""
        lines = [f"{'quantity':<16}{'value':>14}  {'kind':<12} note"]
        for name, q in self.quantities.items():
            v = q.value[run]
            text = ("yes" if v == 1 else "no" if v == 0 else "undecided") if name == "condition_4" else f"{v:.6g}"
            lines.append(f"{name:<16}{text:>14}  {q.kind:<12} {q.note}")
        lines.append("")
        lines.append(self.verdict_text(run))
        return "\n".join(lines)

    def verdict_text(self, run: int = 0) -> str:
        q = self.quantities
        v = q["condition_4"].value[run]
        if math.isnan(v) and "condition_4_on_estimates" in q:
            on_estimates = "holds" if q["condition_4_on_estimates"].value[run] == 1 else "does not hold"
            return ("Condition (4): undecided: " + q["condition_4"].note + ". Evaluated on those estimates it "
                    f"{on_estimates} (R - R' = {q['margin'].value[run]:.4g}): a verdict built on estimates, "
                    "not a certificate.")
        if math.isnan(v):
            return "Condition (4): undecided: " + q["condition_4"].note
        margin, step, L = q["margin"].value[run], q["step"].value[run], q["L"].value[run]
        if v == 1 and self.dynamics == "flow":
            return (f"Condition (4) holds (R - R' = {margin:.4g} > 0): the gradient-flow version of "
                    "Theorem III.1 (as reconstructed in docs/theory.md 3.1) applies to this run" + self._assumed() + ".")
        if v == 1:
            return (f"Condition (4) holds (R - R' = {margin:.4g} > 0) and step {step:.4g} < 1/L = {1 / L:.4g}: "
                    "Theorem III.1 applies to this run" + self._assumed() + ".")
        reasons = []
        bounded = q["L"].kind == "upper bound"  # else sigma_min = 0 (p < n) alone decided: L is an estimate
        if bounded and self.dynamics == "gd" and step * L >= 1:
            reasons.append(f"step {step:.4g} >= 1/L = {1 / L:.4g} (try --step certified)")
        elif bounded and margin <= 0:
            reasons.append(f"R' >= R (margin {margin:.4g}; a wider network or a smaller initial loss helps)")
        if q["sigma_min_J0"].value[run] <= 0:
            reasons.append(f"sigma_min(J_g(0)) = 0 ({q['sigma_min_J0'].note})")
        return "Condition (4) does not hold: " + "; ".join(reasons) + "."

    def _assumed(self) -> str:
        """The proviso of a verdict resting on an assumed v_max (KL loss)."""
        v_max = self.quantities.get("v_max")
        if v_max is None or v_max.kind != "assumption":
            return ""
        return ", provided every observation A g(u, theta_tau) stays <= v_max (an assumption: check it with check_domain)"


@dataclass(frozen=True)
class DomainCheck:
    """Where a run's observations went, against the region where the certificate's ψ satisfies (3)."""

    holds: np.ndarray  # (batch,) bool
    v_min: np.ndarray  # (batch,) smallest entry of any observation
    v_max: np.ndarray  # (batch,) largest entry of any observation
    condition: str  # the region, in words

    def text(self, run: int = 0) -> str:
        held = "held" if self.holds[run] else "did NOT hold"
        return (f"Desingularizer domain ({self.condition}) {held} along the run: observations in "
                f"[{self.v_min[run]:.6g}, {self.v_max[run]:.6g}].")


def check_domain(certificate: Certificate, observations: Tensor) -> DomainCheck:
    """Whether the observations v_τ = A g(u, θ_τ) of a run, shape (T, batch, m) or (batch, m), stayed
    where the certificate's desingularizer satisfies (3): every v_i ≤ v_max for the KL loss (and
    v_i > 0 when eps = 0), everywhere for the MSE. A verdict resting on an assumed v_max holds for a
    run only if this check holds for it. The observations can come from ``train(...,
    snapshot_at=...)``: ``torch.stack([A.forward_flat(x) for x in result.snapshots.values()])``."""
    v = observations.detach().double()
    v = v.unsqueeze(0) if v.dim() == 2 else v
    if v.dim() != 3 or v.shape[1] != certificate.batch:
        raise ValueError(f"observations must have shape (T, {certificate.batch}, m) or ({certificate.batch}, m), "
                         f"got {tuple(observations.shape)}")
    v_min, v_max = v.amin(dim=(0, 2)).cpu().numpy(), v.amax(dim=(0, 2)).cpu().numpy()
    holds = np.ones(certificate.batch, dtype=bool)
    if isinstance(certificate.loss, KLLoss):
        holds = v_max <= certificate["v_max"].value
        if certificate.loss.eps == 0:
            holds &= v_min > 0
    return DomainCheck(holds, v_min, v_max, certificate.loss.desingularizer_domain)


def certify(problem: Problem, network: Network, *, lipschitz_form: str | None = None, **options) -> Certificate:
    """The certificate of Theorem III.1 for every run of ``problem`` with ``network`` and step γ.

    ``lipschitz_form`` picks the bound on Lip(J_g) (see :func:`lipschitz_bound`); the other options
    are those of :func:`certify_forms`.
    """
    return certify_forms(problem, network, [lipschitz_form], **options)[0]


#: A-2 asks for KL_ψ(L_y(y_0) + η) with some η > 0; ``v_max="sublevel"`` takes η = this × L_y(y_0).
SUBLEVEL_ETA = 1e-6


def _desingularized(loss: Loss, problem: Problem, y0: Tensor) -> tuple[Loss, dict[str, Quantity]]:
    """The loss with a usable ψ (a KL loss gets its v_max per run) and the quantities saying where
    (3) holds; NoCertificate when there is no desingularizer."""
    reason = None
    if isinstance(loss, KLLoss):
        if loss.v_max is None:
            reason = loss.desingularizer_domain
    else:
        try:
            loss.psi(torch.ones(1, dtype=torch.float64))
        except DesingularizerUnavailable as exc:
            reason = str(exc)
    if reason is not None:
        raise NoCertificate(f"no certificate for the {loss.name} loss: desingularizer {reason}")
    if not isinstance(loss, KLLoss):
        return loss, {}
    y, batch = problem.y, problem.batch
    loss.check_data(y)
    level = loss.value(y0.double(), y.double())
    if not bool(torch.isfinite(level).all()):
        raise NoCertificate("no certificate for the kl loss: L_y(y_0) is infinite (A g(u, theta_0) has entries "
                            "<= 0, outside the domain of the exact KL loss): use eps > 0")
    if isinstance(loss.v_max, str):  # "sublevel"
        v_max = loss.sublevel_v_max(y, level * (1 + SUBLEVEL_ETA)).cpu()
        quantity = _q(v_max.numpy(), "upper bound",
                      f"sup of v_i over {{L_y <= (1 + {SUBLEVEL_ETA:g}) L_y(y_0)}}: (3) holds on that whole sublevel set (A-2)")
    else:
        if loss.v_max.numel() not in (1, batch):
            raise ValueError(f"v_max has {loss.v_max.numel()} values for {batch} runs: give one, or one per run")
        v_max = loss.v_max.expand(batch).clone()
        quantity = _q(v_max.numpy(), "assumption",
                      "given: (3) holds only where every v_i <= v_max; check the run with check_domain")
    return KLLoss(v_max=v_max, eps=loss.eps), {"v_max": quantity}


def certify_forms(
    problem: Problem,
    network: Network,
    lipschitz_forms: Sequence[str | None],
    *,
    step: float | Sequence[float] | None = None,
    loss: Loss | None = None,
    hessian_iters: int = 10,
    hessian_safety: float = 2.0,
    paper_constant: float = 1.0,
    corollary_constants: tuple[float, float] = (1.0, 1.0),
    dist: float = 0.0,
    dynamics: str = "gd",
    lipschitz_pairs: int = 10,
    seed: int = 0,
    eigen_tol: float = EIGEN_TOL,
    eigen_max_iter: int = EIGEN_MAX_ITER,
) -> list[Certificate]:
    """One certificate per Lipschitz form, sharing the spectra, the NTK Gram matrix and the Hessian
    estimate (computed once).

    ``step`` is one γ for every run or one per run; ``step=None`` uses γ = 1/(2L) of each run, with
    L the certified bound (or the estimate where there is none; the paper's best step, ν2 = 6L).
    ``dist`` is the assumed dist(x̄, Σ') of (8). ``paper_constant`` is the unknown constant of (10);
    ``corollary_constants`` are (C, C') of Corollary III.2; both only scale estimates.
    ``hessian_iters=0`` skips the Hessian estimate of L (it never enters the verdict).
    ``dynamics="flow"``: the gradient-flow theorem (ν1 = 1, time t for ν2 τ, no step; ``step`` unused).
    ``dynamics="a-posteriori"``: for methods without an a-priori theorem (the inertial ones, whose
    constants are unknown: theory.md §4.2): no verdict, only what the a-posteriori bound needs.
    Networks without a Lipschitz bound (the MLP) get Lip(J_g) estimated by :func:`sampled_lipschitz`
    on B(θ_0, R') with ``lipschitz_pairs`` pairs drawn from ``seed``.
    Networks other than the two-layer net and the MLP (the convolutional generators) get the spectra
    of J_g(θ_0) and ‖A J_g(θ_0)‖² (reported for every network, ``norm_AJ0_sq``) matrix-free, by
    Lanczos (:func:`jacobian_extremes`, :func:`gauss_newton_norm`) stopped at the residual
    ``eigen_tol`` · θ_max or after ``eigen_max_iter`` products, from a start vector drawn from ``seed``:
    σ_max(J_g(θ_0)) and ‖A J_g(θ_0)‖² as lower bounds, σ_min(J_g(θ_0)) as an upper bound (Ritz
    values, Courant–Fischer), or 0 exactly when the p trained parameters are fewer than n (rank J_g ≤
    p): then (4) fails.

    Raises :class:`NoCertificate` for a loss without a desingularizer (logistic; KL without v_max).
    """
    if dynamics not in DYNAMICS:
        raise ValueError(f"unknown dynamics {dynamics!r}; allowed: {', '.join(DYNAMICS)}")
    flow = dynamics != "gd"  # "a-posteriori" shares the flow's step-free path, then drops the theorem
    op, y = problem.operator, problem.y
    batch = problem.batch
    params0 = network.initial_state()
    y0 = op.forward_flat(network.function(params0))
    loss, shared = _desingularized(loss or MSELoss(), problem, y0)  # the quantities common to every form

    def per_run(t: Tensor) -> np.ndarray:
        return np.broadcast_to(t.double().cpu().numpy(), (batch,)).copy()

    sigma_A, norm_A = per_run(op.sigma_min()), per_run(op.norm())
    shared["sigma_A"] = _q(sigma_A, "exact", "smallest non-zero singular value of A")
    shared["norm_A"] = _q(norm_A, "exact", "largest singular value of A")

    loss0 = loss.value(y0, y).double().cpu().numpy()
    minimizer = loss.minimizer(y)
    residual0 = (y0 - minimizer).double().norm(dim=-1).cpu().numpy()  # ‖y_0 − v*‖, v* = argmin L_y
    shared["loss0"] = _q(loss0, "exact", "L_y(y_0)")
    ell2 = per_run(loss.grad_lipschitz(y))
    shared["loss_grad_lipschitz"] = _q(ell2, "exact", "Lipschitz constant of the gradient of L_y on R^m (inf: none)")
    offset = (minimizer - y).double().norm(dim=-1).cpu().numpy()
    shared["argmin_offset"] = _q(offset, "exact", "||v* - y||, v* the minimizer of L_y (0 unless the loss moves it)")

    n, p = problem.n, network.parameter_count
    rank_deficient = False  # p < n: σ_min(J_g(θ_0)) = 0 exactly, and (4) fails
    eigen = dict(tol=eigen_tol, max_iter=eigen_max_iter, seed=seed)
    gram = None
    if isinstance(network, (TwoLayerDIP, MLP)):  # the dense Gram matrix, in closed form or layer by layer
        gram = jacobian_gram(network)
        lam_min, lam_max = _extreme_eigenvalues(gram)
        sigma_J, sigma_max_J = np.sqrt(np.maximum(lam_min, 0)), np.sqrt(lam_max)
        shared["sigma_min_J0"] = _q(sigma_J, "exact", "sqrt(lambda_min(J J^T)) at theta_0 (float64 eigensolver)")
        shared["sigma_max_J0"] = _q(sigma_max_J, "exact", "sqrt(lambda_max(J J^T)) at theta_0")
    else:
        spectrum = jacobian_extremes(network, params0, **eigen)
        sigma_max_J = np.sqrt(np.maximum(spectrum["largest"].value, 0))
        if p < n:
            rank_deficient, sigma_J = True, np.zeros(batch)
            shared["sigma_min_J0"] = _q(sigma_J, "exact", f"0: {p} trained parameters < n = {n}, so rank J_g(0) <= p "
                                        "< n and lambda_min(J J^T) = 0; (4) cannot hold")
        else:
            sigma_J = np.sqrt(np.maximum(spectrum["smallest"].value, 0))
            shared["sigma_min_J0"] = _q(sigma_J, "upper bound", _ritz_note(spectrum, "smallest",
                                                                             "sqrt(lambda_min(J J^T)) at theta_0"))
        shared["sigma_max_J0"] = _q(sigma_max_J, "lower bound", _ritz_note(spectrum, "largest",
                                                                         "sqrt(lambda_max(J J^T)) at theta_0"))
    gauss_newton = gauss_newton_norm(problem, network, gram, **eigen)
    del gram
    shared["norm_AJ0_sq"] = _q(gauss_newton["largest"].value, "lower bound", _ritz_note(
        gauss_newton, "largest", "||A J_g(theta_0)||^2 = lambda_max(A J J^T A^T) (the auto step of gd is 1/this, "
        "by power iteration)"))

    certified_L = isinstance(network, TwoLayerDIP) and bool(np.all(np.isfinite(ell2)))
    if hessian_iters > 0:
        hess = hessian_norm_estimate(problem, network, loss, hessian_iters) * hessian_safety
    elif not certified_L:
        raise ValueError("hessian_iters must be > 0 when L has no certified bound (it is then the only estimate)")
    else:
        hess = np.full(batch, math.nan)
    L_sublevel = None
    if isinstance(network, TwoLayerDIP) and isinstance(loss, MSELoss) and network.train == "W":
        L_sublevel = smoothness_bound_on_sublevel_set(problem, network, residual0)

    def assemble(lipschitz_form: str | None) -> Certificate:
        q = dict(shared)
        form = None
        if isinstance(network, TwoLayerDIP):
            lip = lipschitz_bound(network, lipschitz_form)
            form = lip.form
            R = certified_radius(sigma_J, lip)
            lip_at_R = lip.fn(R)
            q["lip_J"] = _q(lip_at_R, lip.kind, lip.note)
            q["R"] = _q(R, "lower bound", "largest R with R * Lip(R) <= sigma_J/2, from the Lipschitz bound")
        elif lipschitz_form is not None:
            raise ValueError("Lipschitz bounds exist for the two-layer network only")

        # The smoothness constant L: certified on B(θ_0, R) (two-layer net, ∇L_y Lipschitz), plus estimates.
        if certified_L:
            L = ell2 * smoothness_bound_on_ball(norm_A, sigma_max_J, lip_at_R, residual0, R)
            q["L"] = _q(L, "upper bound", "Lipschitz constant of the gradient on B(theta_0, R): "
                        "loss_grad_lipschitz x the MSE Hessian bound with ||y_0 - v*|| (our derivation)")
        else:
            L = hess
            q["L"] = _q(L, "estimate", "no certified bound for this loss/network: Hessian power estimate")
        k = getattr(network, "k", None)
        if k is not None and isinstance(loss, MSELoss):
            L_paper = paper_constant * (norm_A**2 * n / k + norm_A * residual0 * math.sqrt(n / k))
            q["L_paper"] = _q(L_paper, "estimate", f"(10) with its unknown constant set to {paper_constant}")
        if L_sublevel is not None:
            q["L_sublevel"] = _q(L_sublevel, "estimate",
                                 "Hessian bound on the sublevel set {L <= L_0} (docs/theory.md 2.3); iterates may leave it")
        q["L_hessian"] = _q(hess, "estimate", f"Hessian power iteration at theta_0 x safety {hessian_safety}")

        if flow:
            gamma = np.full(batch, math.nan)
            q["step"] = _q(gamma, "exact", "gradient flow: no step")
            nu1, nu2 = np.ones(batch), np.ones(batch)
            q["nu1"] = _q(nu1, "exact", "1 for the gradient flow")
            q["nu2"] = _q(nu2, "exact", "gradient flow: the bounds take the time t in place of nu2 tau")
            gl = np.zeros(batch)
        else:
            if step is None:
                with np.errstate(divide="ignore"):
                    gamma = 1 / (2 * L)
            else:
                gamma = np.broadcast_to(np.asarray(step, dtype=np.float64), (batch,)).copy()
                if not np.all(np.isfinite(gamma) & (gamma > 0)):
                    raise ValueError(f"step must be finite numbers > 0, got {step}")
            q["step"] = _q(gamma, "exact", "1/(2L) of each run, the paper's best step" if step is None else "given")
            q["step_max"] = _q(1 / L, "upper bound" if certified_L else "estimate", "Theorem III.1 needs step < 1/L")
            gl = gamma * L
            with np.errstate(divide="ignore", invalid="ignore"):
                nu1 = np.where(gl < 2, (1 + gl) / (1 - gl / 2), np.inf)
                nu2 = np.where(gl < 2, (1 + gl) ** 2 / (gamma - gamma**2 * L / 2), np.inf)
            q["nu1"] = _q(nu1, "upper bound" if certified_L else "estimate", "(1 + gamma L)/(1 - gamma L/2)")
            q["nu2"] = _q(nu2, "upper bound" if certified_L else "estimate", "(1 + gamma L)^2/(gamma - gamma^2 L/2)")

        psi0 = loss.psi(torch.as_tensor(loss0)).numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            R_prime = 2 * nu1 * psi0 / (sigma_A * sigma_J)
        q["R_prime"] = _q(R_prime, "upper bound" if certified_L else "estimate", "2 nu1 psi(L_y(y_0))/(sigma_A sigma_J), (5)")

        if not isinstance(network, TwoLayerDIP):  # (4) reads R'·Lip_{B(θ_0,R')}(J_g) < σ_J/2: sample that ball
            finite = np.isfinite(R_prime) & (R_prime > 0)
            lip_at_R = np.full(batch, math.nan)
            if finite.any():
                radius = np.where(finite, R_prime, 1.0)
                lip_at_R = np.where(finite, sampled_lipschitz(network, radius, lipschitz_pairs,
                                                              torch.Generator().manual_seed(seed)), math.nan)
            with np.errstate(divide="ignore", invalid="ignore"):
                R = sigma_J / (2 * lip_at_R)
            q["lip_J"] = _q(lip_at_R, "estimate", f"no bound for this network: sampled_lipschitz on B(theta_0, R'), "
                            f"{lipschitz_pairs} pairs, seed {seed} (a lower estimate)")
            q["R"] = _q(R, "estimate", "sigma_J/(2 Lip) with the sampled Lip on B(theta_0, R'); R' < R iff (4) "
                        "when Lip is exact")

        holds = (sigma_J > 0) & (R_prime < R) & (gl < 1)
        if certified_L:
            note = (("sigma_J > 0 and R' < R (gradient flow)" if flow else "sigma_J > 0, R' < R and step < 1/L")
                    + ", from exact values and bounds only")
            if q.get("v_max") is not None and q["v_max"].kind == "assumption":
                note += ", assuming every observation stays <= v_max (check_domain)"
            q["condition_4"] = _q(np.where(holds, 1.0, 0.0), "verdict", note)
        elif rank_deficient:
            q["condition_4"] = _q(np.zeros(batch), "verdict", f"fails: sigma_min(J_g(0)) = 0 exactly ({p} trained "
                                  f"parameters < n = {n})")
        else:
            estimated = "L or Lip(J) is only estimated for this loss/network"
            if not isinstance(network, (TwoLayerDIP, MLP)):
                estimated = ("L, Lip(J) and sigma_min(J_g(0)) are only estimated for this network (sigma_min by a "
                             "Ritz value: an upper bound, where (4) needs a lower one)")
            q["condition_4"] = _q(np.full(batch, math.nan), "verdict", estimated)
            q["condition_4_on_estimates"] = _q(np.where(holds, 1.0, 0.0), "estimate",
                                               "the test of (4) with the estimated L and Lip(J): not a certificate")
        q["margin"] = _q(R - R_prime, "lower bound" if certified_L else "estimate", "R - R'")

        # Recovery (8): λ = σ_min(A) when A is injective; otherwise A-5 cannot be checked.
        injective = op.injective()
        q["lambda"] = _q(sigma_A if injective else np.full(batch, math.nan), "exact" if injective else "estimate",
                         "sigma_min(A): A injective, so A-5 holds" if injective else "A not injective: A-5 unverifiable")
        noise = problem.noise
        noise_norm = noise.double().norm(dim=-1).cpu().numpy() if noise is not None else np.full(batch, math.nan)
        q["noise_norm"] = _q(noise_norm, "exact" if noise is not None else "estimate", "||eps||")
        q["dist"] = _q(np.full(batch, float(dist)), "assumption",
                       "dist(x_true, Sigma') in (8), assumed (not computable); unneeded when A is injective")

        tau_eps = _stopping_time(loss, loss0, sigma_A**2 * sigma_J**2 / (4 * nu2), noise_norm)
        q["tau_eps"] = _q(tau_eps, "upper bound" if certified_L else "estimate",
                          ("time t" if flow else "iterations") + " after which ||y_tau - y_clean|| <= 2 ||eps|| "
                          "+ argmin_offset (valid when (4) holds)")

        # Corollary III.2: a sufficient width, up to the unknown constants C, C' (MSE: L_{L,0} = 1).
        C, C_prime = corollary_constants
        d = getattr(network, "d", 1)
        if problem.x_true is not None:
            clean_inf = op.forward_flat(problem.x_true).abs().amax(-1).double().cpu().numpy()
        else:
            clean_inf = y.abs().amax(-1).double().cpu().numpy()
        noise_inf = noise.abs().amax(-1).double().cpu().numpy() if noise is not None else 0.0
        r = C * norm_A * math.sqrt(n * math.log(d)) + math.sqrt(problem.m) * (clean_inf + noise_inf)
        psi_r = loss.psi(torch.as_tensor(r**2 / 2)).numpy()
        q["k_bound"] = _q(C_prime * sigma_A**-4 * n * psi_r**4, "estimate",
                          f"Corollary III.2 with C = {C}, C' = {C_prime} (constants unknown: scaling only)")

        if dynamics == "a-posteriori":
            for name in ("step", "nu1", "nu2", "R_prime", "margin", "tau_eps", "condition_4_on_estimates"):
                q.pop(name, None)
            q["condition_4"] = _q(np.full(batch, math.nan), "verdict",
                                  "no a-priori certificate is known for this method (docs/theory.md 4.2); "
                                  "see the a-posteriori recovery bound")
        settings = {"hessian_iters": hessian_iters, "hessian_safety": hessian_safety, "paper_constant": paper_constant,
                    "corollary_constants": list(corollary_constants), "dist": dist, "dynamics": dynamics,
                    "lipschitz_pairs": lipschitz_pairs, "seed": seed, "eigen_tol": eigen_tol,
                    "eigen_max_iter": eigen_max_iter}
        return Certificate(q, loss, form, settings, dynamics)

    return [assemble(form) for form in lipschitz_forms]
