"""Certificates beyond the MSE two-layer case: the KL loss with its continuation below ε, the
logistic loss (no certificate), and the MLP of Definition II.1 (Gram matrix from Jacobian
products, estimates where no bound is proven)."""
import math

import numpy as np
import pytest
import torch

from dipcert.certify import NoCertificate, _jacobian_difference_norm, _generic_gram, certify, check_domain, jacobian_gram
from dipcert.images import load_image, psnr
from dipcert.losses import KLLoss, LogisticLoss
from dipcert.networks import MLP, TwoLayerDIP
from dipcert.operators import GaussianBlur, Matrix
from dipcert.optim import GradientDescent, train
from dipcert.problems import PoissonNoise, Problem, gaussian_problem, image_problem
from dipcert.steps import auto_step

from jacobians import dense_jacobian  # tests/jacobians.py

# y = 0, 0 < y < ε, y = ε and y > ε: every branch of the continuation (ε = 0.5)
Y = torch.tensor([[0.0, 0.2, 0.5, 1.0, 3.0]], dtype=torch.float64)


def _points(count, low, high, seed):
    gen = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(count, Y.shape[1], generator=gen, dtype=torch.float64)


# ---------------------------------------------------------------- the KL loss


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_kl_gradient_matches_autograd_and_finite_differences(eps):
    loss = KLLoss(eps=eps)
    v = _points(200, 1e-3 if eps == 0 else -3.0, 6.0, 0)
    v.requires_grad_(True)
    (auto,) = torch.autograd.grad(loss.value(v, Y).sum(), v)
    torch.testing.assert_close(loss.grad(v.detach(), Y), auto, rtol=1e-12, atol=1e-12)
    direction = _points(200, -1.0, 1.0, 1)
    h = 1e-6
    v = v.detach()
    numeric = (loss.value(v + h * direction, Y) - loss.value(v - h * direction, Y)) / (2 * h)
    analytic = (loss.grad(v, Y) * direction).sum(-1)
    torch.testing.assert_close(numeric, analytic, rtol=1e-6, atol=1e-6)


def test_kl_continuation_is_c1_convex_with_minimum_zero_at_its_minimizer():
    loss = KLLoss(eps=0.5)
    h = 1e-7
    at, below, above = (torch.full_like(Y, 0.5 + d) for d in (0.0, -h, h))
    for side in (below, above):  # value and slope continuous at ε
        torch.testing.assert_close(loss.value(side, Y), loss.value(at, Y) + ((side - at) * loss.grad(at, Y)).sum(-1),
                                   rtol=0, atol=10 * h**2 * 12)
        torch.testing.assert_close(loss.grad(side, Y), loss.grad(at, Y), rtol=0, atol=12 * h * 1.01)
    star = loss.minimizer(Y)
    torch.testing.assert_close(star[:, 2:], Y[:, 2:], rtol=0, atol=0)  # v* = y where y ≥ ε
    assert star[0, 0].item() == pytest.approx(-0.5, abs=1e-15)  # y = 0: v* = −ε
    assert abs(loss.value(star, Y).item()) < 1e-15 and loss.grad(star, Y).abs().max().item() < 1e-14
    a, b = _points(500, -3.0, 6.0, 2), _points(500, -3.0, 6.0, 3)
    values = loss.value(a, Y), loss.value(b, Y), loss.value((a + b) / 2, Y)
    assert torch.all(values[0] >= 0) and torch.all(values[2] <= (values[0] + values[1]) / 2 + 1e-12)
    assert torch.isinf(KLLoss().value(-torch.ones_like(Y), Y)).all()  # ε = 0: the exact KL, inf at v < 0


@pytest.mark.parametrize("eps, low", [(0.0, 1e-3), (0.5, -20.0)])
def test_kl_desingularizer_holds_where_every_entry_is_below_v_max(eps, low):
    """(3): ψ'(L)‖∇L‖ ≥ 1 with ψ(s) = 2√(v_max s) for all v ≤ v_max (and v > 0 when ε = 0)."""
    loss = KLLoss(v_max=6.0, eps=eps)
    v = _points(5000, low, 6.0, 4)
    s = loss.value(v, Y).requires_grad_(True)
    (dpsi,) = torch.autograd.grad(loss.psi(s).sum(), s)
    assert torch.all(dpsi * loss.grad(v, Y).norm(dim=-1) >= 1 - 1e-12)
    outside = loss.minimizer(Y).clone()
    outside[0, 0] = 50.0  # y = 0 and v = 50: L = 50 - v*(...) but ‖∇L‖ = 1, so (3) fails above v_max
    s = loss.value(outside, Y).requires_grad_(True)
    (dpsi,) = torch.autograd.grad(loss.psi(s).sum(), s)
    assert (dpsi * loss.grad(outside, Y).norm(dim=-1)).item() < 1


def test_kl_gradient_is_lipschitz_with_the_stated_constant():
    """‖∇L(v) − ∇L(v')‖ ≤ ℓ₂‖v − v'‖, ℓ₂ = max c = 3/ε² here, nearly attained below ε."""
    loss = KLLoss(eps=0.5)
    ell2 = loss.grad_lipschitz(Y).item()
    assert ell2 == pytest.approx(3.0 / 0.25, rel=1e-15)
    a, b = _points(2000, -3.0, 6.0, 5), _points(2000, -3.0, 6.0, 6)
    ratio = (loss.grad(a, Y) - loss.grad(b, Y)).norm(dim=-1) / (a - b).norm(dim=-1)
    assert ratio.max().item() <= ell2 * (1 + 1e-12)
    a, b = loss.minimizer(Y).clone(), loss.minimizer(Y).clone()
    a[0, 4], b[0, 4] = -1.0, 0.0  # the y = 3 entry, both points below ε
    ratio = ((loss.grad(a, Y) - loss.grad(b, Y)).norm() / (a - b).norm()).item()
    assert ratio == pytest.approx(ell2, rel=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_sublevel_v_max_is_the_supremum_of_v_on_the_sublevel_set(eps):
    loss = KLLoss(eps=eps)
    level = torch.tensor([4.0], dtype=torch.float64)
    bound = loss.sublevel_v_max(Y, level).item()
    star = loss.minimizer(Y)
    reached = []
    for i in range(Y.shape[1]):  # one entry at the bound, the others at the minimizer: L ≥ level,
        v = star.clone()         # with equality for the entry that sets the bound (the supremum)
        v[0, i] = bound / (1 + 1e-11)
        reached.append(loss.value(v, Y).item())
    assert min(reached) <= 4.0 and min(reached) == pytest.approx(4.0, rel=1e-9)
    # points of the level set along 2000 random rays from v* (L is convex: it grows along each ray)
    direction = _points(2000, -1.0, 1.0, 7)
    direction[:, 0] = direction[:, 0].abs()  # (y = 0, ε = 0: L jumps to inf below v = 0, a level set's edge)
    lo, hi = torch.zeros(2000, 1, dtype=torch.float64), torch.full((2000, 1), 100.0, dtype=torch.float64)
    assert torch.all(loss.value(star + hi * direction, Y) > 4.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        inside = (loss.value(star + mid * direction, Y) <= 4.0).unsqueeze(-1)
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    edge = star + lo * direction
    torch.testing.assert_close(loss.value(edge, Y), torch.full((2000,), 4.0, dtype=torch.float64), rtol=1e-6, atol=0)
    assert edge.max().item() <= bound


# ---------------------------------------------------------------- KL: training and certificates


def test_kl_trains_from_the_standard_initialization_only_with_the_continuation():
    """A g(u, θ_0) has entries of both signs: the exact KL is inf there; with ε = 5 (grey levels)
    gradient descent trains and improves on the observation's PSNR (at 3× the Gauss–Newton auto
    step: near its minimizer the KL's curvature is 1/y, not 1, and the auto step is slow)."""
    image = load_image("builtin:camera", (16, 16))
    op = GaussianBlur((16, 16), 1.0, dtype=torch.float32)
    problem = image_problem(image, op, [0], PoissonNoise(100.0))
    net = TwoLayerDIP(256, 1000, train="WV", dtype=torch.float32, seeds=[5])
    y0 = op.forward_flat(net.function(net.initial_state()))
    assert bool((y0 < 0).any()) and torch.isinf(KLLoss().value(y0, problem.y)).all()
    result = train(problem, net, GradientDescent(3 * auto_step(problem, net)), loss=KLLoss(eps=5.0), max_iters=40)
    assert result.status == ["max_iterations"]
    assert result.final_loss[0] < 0.01 * result.history.loss[0, 0]
    observed = psnr(image, problem.y[0].double().numpy().reshape(16, 16))
    assert psnr(image, result.x[0].double().numpy().reshape(16, 16)) > observed + 1.0


def _positive_problem(net):
    """A diagonal, well-conditioned A (|A_ii| from 1 to 2) whose signs make A g(u, θ_0) > 0, and
    noiseless data y = A g(u, θ_0) + δ with δ ∈ [0.05, 0.15]: (4) can hold for the KL loss."""
    x0 = net.function(net.initial_state())
    A = torch.diag_embed(torch.sign(x0) * torch.linspace(1, 2, net.n, dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    y = (A @ x0.unsqueeze(-1)).squeeze(-1) + 0.05 + 0.1 * torch.rand(x0.shape, generator=gen, dtype=torch.float64)
    return Problem(Matrix(A), y, torch.linalg.solve(A, y), torch.zeros_like(y))


def test_kl_certificate_bounds_hold_along_gradient_descent():
    """Sublevel v_max (a proven bound) and ε > 0 (a certified L): (4) is decided from bounds only,
    and the loss (6), distance R' and recovery (8) curves bound the run."""
    net = TwoLayerDIP(4, 2000, seeds=[10, 11])
    problem = _positive_problem(net)
    cert = certify(problem, net, loss=KLLoss(v_max="sublevel", eps=0.05), hessian_iters=0)
    assert cert.holds.all(), cert.report()
    assert cert["v_max"].kind == "upper bound" and cert["L"].kind == "upper bound"
    assert cert["R_prime"].kind == "upper bound" and "Theorem III.1 applies" in cert.verdict_text()
    assert cert["loss_grad_lipschitz"].value == pytest.approx(problem.y.amax(-1).numpy() / 0.05**2, rel=1e-12)
    result = train(problem, net, GradientDescent(torch.as_tensor(cert["step"].value)), loss=KLLoss(eps=0.05),
                   max_iters=200, snapshot_at=range(0, 201, 10))
    h = result.history
    bounds = cert.bounds_at(h.iteration)
    assert np.all(h.loss <= bounds["loss_bound"] * (1 + 1e-9))
    assert np.all(h.param_dist <= bounds["param_bound"])
    assert np.all(h.error <= bounds["error_bound"])
    assert np.all(h.loss[-1] < 0.9 * h.loss[0])
    observations = torch.stack([problem.operator.forward_flat(x) for x in result.snapshots.values()])
    assert check_domain(cert, observations).holds.all()


def test_an_assumed_v_max_is_labelled_and_checked_on_the_run():
    net = TwoLayerDIP(4, 2000, seeds=[10])
    problem = _positive_problem(net)
    top = problem.y.max().item()
    cert = certify(problem, net, loss=KLLoss(v_max=2 * top, eps=0.05), hessian_iters=0)
    assert cert["v_max"].kind == "assumption" and "assuming" in cert["condition_4"].note
    assert cert.holds[0] and "an assumption: check it with check_domain" in cert.verdict_text()
    inside = check_domain(cert, problem.y.unsqueeze(0))
    assert inside.holds[0] and inside.v_max[0] == top and "held" in inside.text()
    outside = check_domain(cert, torch.stack([problem.y, 3 * problem.y]))
    assert not outside.holds[0] and "did NOT hold" in outside.text()
    exact = certify(problem, net, loss=KLLoss(v_max=2 * top), hessian_iters=3)  # ε = 0: L only estimated
    assert math.isnan(exact["condition_4"].value[0]) and exact["L"].kind == "estimate"
    assert not check_domain(exact, torch.stack([problem.y, -problem.y])).holds[0]


def test_losses_without_a_certificate_raise_no_certificate():
    problem = gaussian_problem(3, 2, [0])
    net = TwoLayerDIP(3, 50, seeds=[0])
    with pytest.raises(NoCertificate, match=LogisticLoss.desingularizer_domain.replace("(", r"\(").replace(")", r"\)")):
        certify(problem, net, loss=LogisticLoss())
    with pytest.raises(NoCertificate, match="give v_max"):
        certify(problem, net, loss=KLLoss(eps=0.1))
    image = load_image("builtin:camera", (8, 8))
    blurred = image_problem(image, GaussianBlur((8, 8), 1.0), [0], PoissonNoise(50.0))
    with pytest.raises(NoCertificate, match="L_y\\(y_0\\) is infinite"):
        certify(blurred, TwoLayerDIP(64, 100, seeds=[0]), loss=KLLoss(v_max="sublevel"))
    assert issubclass(NoCertificate, ValueError)
    with pytest.raises(ValueError, match="v_max must be finite, > 0 and >= eps"):
        KLLoss(v_max=0.1, eps=0.5)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        KLLoss(eps=-1.0)


# ---------------------------------------------------------------- the MLP of Definition II.1


@pytest.mark.parametrize("widths", [(9,), (7, 5), (4, 6, 5)])
def test_mlp_gram_from_jacobian_products_matches_the_dense_jacobian(widths):
    """Layer-wise (‖g⁽ˡ⁻¹⁾‖² B_l B_lᵀ) and generic (VJP then JVP) Gram matrices, both float64 from
    a float32 network, against J Jᵀ of the dense autograd Jacobian."""
    net = MLP(6, widths, d=3, activation="tanh", seeds=[0, 1], dtype=torch.float32)
    params = net.initial_state()
    layerwise, generic = jacobian_gram(net), _generic_gram(net, params, chunk_elements=40)
    assert layerwise.dtype == generic.dtype == torch.float64
    for run in range(2):
        jac = dense_jacobian(net, params, run)
        dense = jac @ jac.T
        scale = dense.abs().max()
        assert ((layerwise[run] - dense).abs().max() / scale).item() < 1e-10
        assert ((generic[run] - dense).abs().max() / scale).item() < 1e-10


def test_jacobian_difference_norm_is_a_lower_estimate_that_converges():
    net = MLP(5, (8,), d=3, seeds=[0])
    gen = torch.Generator().manual_seed(3)
    p = net.initial_state()
    q = {k: v + 0.3 * torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in p.items()}
    exact = torch.linalg.matrix_norm(dense_jacobian(net, p, 0) - dense_jacobian(net, q, 0), ord=2).item()
    few = _jacobian_difference_norm(net, p, q, 2, torch.Generator().manual_seed(0)).item()
    many = _jacobian_difference_norm(net, p, q, 300, torch.Generator().manual_seed(0)).item()
    assert few <= exact * (1 + 1e-12) and many <= exact * (1 + 1e-12)
    assert many == pytest.approx(exact, rel=1e-6)


def test_mlp_certificate_on_an_image_problem_uses_estimates_and_says_so():
    """An image problem (n = 256): the Gram matrix never forms the n×p Jacobian; one hidden layer of
    width 32 < n gives λ_min(J Jᵀ) = ‖g⁽¹⁾‖² exactly (the output layer's block is ‖g⁽¹⁾‖² I, the
    other has rank 32)."""
    image = load_image("builtin:camera", (16, 16))
    problem = image_problem(image, GaussianBlur((16, 16), 1.0, dtype=torch.float32), [0], 2.0)
    net = MLP(256, (32,), seeds=[3], dtype=torch.float32)
    cert = certify(problem, net, step=1e-3, hessian_iters=3, lipschitz_pairs=3)
    hidden = net.activation(torch.einsum("bij,bj->bi", net.initial_state()["W1"].double(), net.u.double()))
    assert cert["sigma_min_J0"].value[0] == pytest.approx(hidden.norm().item(), rel=1e-10)
    for name in ("lip_J", "R", "L", "R_prime", "nu1", "margin"):
        assert cert[name].kind == "estimate", name
    assert math.isnan(cert["condition_4"].value[0]) and cert["condition_4_on_estimates"].value[0] in (0.0, 1.0)
    assert "a verdict built on estimates, not a certificate" in cert.verdict_text()
    assert np.isfinite(cert["lip_J"].value[0]) and cert["lip_J"].value[0] > 0


def test_mlp_trains_with_the_generic_loop():
    """Through MLP.forward (backpropagation). The Gauss–Newton step 1/‖A J‖² is too long for this
    MLP on [0, 255] data (its Hessian's second-order term dominates): a quarter of 1/λ_max(J Jᵀ)
    (‖A‖ = 1)."""
    image = load_image("builtin:camera", (16, 16))
    problem = image_problem(image, GaussianBlur((16, 16), 1.0, dtype=torch.float32), [0, 1], 5.0)
    net = MLP(256, (32,), seeds=[0, 1], dtype=torch.float32)
    step = 0.25 / torch.linalg.eigvalsh(jacobian_gram(net))[:, -1].max().item()
    result = train(problem, net, GradientDescent(step), max_iters=40)
    assert result.status == ["max_iterations"] * 2
    assert np.all(result.history.loss[-1] < 0.05 * result.history.loss[0])
    torch.testing.assert_close(result.x, net.function(result.params), rtol=1e-5, atol=1e-3)  # float32, [0, 255]
