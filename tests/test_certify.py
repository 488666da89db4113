"""Soundness of the certificates: every bound holds where the theorem says it does."""
import math

import numpy as np
import pytest
import torch

from dipcert.certify import (
    LIPSCHITZ_FORMS,
    certify,
    hessian_norm_estimate,
    jacobian_gram,
    lipschitz_bound,
    sampled_lipschitz,
)
from dipcert.losses import KLLoss, LogisticLoss, MSELoss
from dipcert.networks import MLP, TwoLayerDIP
from dipcert.operators import Matrix, Spectral
from dipcert.optim import GradientDescent, train
from dipcert.problems import Problem, gaussian_problem
from dipcert.seeding import derive_seed

from jacobians import dense_jacobian  # tests/jacobians.py


def _net(problem, k, seeds, **kw):
    return TwoLayerDIP(problem.n, k, seeds=[derive_seed(s, "network") for s in seeds], **kw)


def _square_problem(n, seeds, noise_std, well_conditioned):
    """Square injective problems (y ∈ Im(A) even with noise), one per seed."""
    gen = torch.Generator().manual_seed(sum(seeds))
    mats = []
    for s in seeds:
        if well_conditioned:
            mats.append(Spectral.random(n, s=torch.linspace(1, 2, n, dtype=torch.float64), seed=s).to_dense())
        else:
            mats.append(torch.randn(n, n, generator=torch.Generator().manual_seed(s), dtype=torch.float64))
    op = Matrix(torch.stack(mats))
    x = torch.randn(len(seeds), n, generator=gen, dtype=torch.float64)
    noise = noise_std * torch.randn(len(seeds), n, generator=gen, dtype=torch.float64)
    return Problem(op, op.forward_flat(x) + noise, x, noise)


CASES = {
    # name: (problem builder, k, train)
    "gaussian n5 m2, W": (lambda: gaussian_problem(5, 2, [0, 1, 2]), 10_000, "W"),
    "well-conditioned n4 noisy, W": (lambda: _square_problem(4, [0, 1, 2], 0.3, True), 20_000, "W"),
    "well-conditioned n4 noisy, WV": (lambda: _square_problem(4, [0, 1, 2], 0.3, True), 20_000, "WV"),
    "gaussian square n3, W": (lambda: _square_problem(3, [5, 6, 7], 0.0, False), 40_000, "W"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_measured_curves_never_exceed_bounds_when_condition_4_holds(case):
    build, k, train_layers = CASES[case]
    problem = build()
    seeds = list(range(problem.batch))
    net = _net(problem, k, seeds, train=train_layers)
    cert = certify(problem, net)
    ok = cert.holds
    assert ok.sum() >= 2, cert.report()  # the case is meant to satisfy (4) for most runs
    result = train(problem, net, GradientDescent(torch.as_tensor(cert["step"].value)), max_iters=600)
    h = result.history
    bounds = cert.bounds_at(h.iteration)
    slack = 1 + 1e-9
    assert np.all(h.loss[:, ok] <= bounds["loss_bound"][:, ok] * slack + 1e-300)
    assert np.all(h.param_dist[:, ok] <= bounds["param_bound"][:, ok] * slack)
    if problem.operator.injective():
        assert np.all(h.error[:, ok] <= bounds["error_bound"][:, ok] * slack)
    else:
        assert "error_bound" not in bounds
    assert np.all(h.loss[-1, ok] < 1e-3 * h.loss[0, ok])  # the runs did converge


def test_mse_bound_curves_match_closed_forms():
    """docs/theory.md §2.2 with c = √2: L_0 exp(−σ_A²σ_J²τ/(2ν2)), R' = 2ν1‖y_0 − y‖/(σ_Aσ_J)."""
    problem = gaussian_problem(5, 2, [0])
    cert = certify(problem, _net(problem, 1000, [0]))
    q = {name: cert[name].value[0] for name in cert.quantities}
    tau = np.array([0.0, 10.0, 1000.0])
    a = q["sigma_A"] ** 2 * q["sigma_min_J0"] ** 2
    np.testing.assert_allclose(cert.loss_bound(tau)[:, 0], q["loss0"] * np.exp(-a * tau / (2 * q["nu2"])), rtol=1e-12)
    r0 = math.sqrt(2 * q["loss0"])
    assert q["R_prime"] == pytest.approx(2 * q["nu1"] * r0 / (q["sigma_A"] * q["sigma_min_J0"]), rel=1e-12)
    # the default step 1/(2L) minimizes ν2, where ν2 = 6L (the paper's remark)
    assert q["nu2"] == pytest.approx(6 * q["L"], rel=1e-12)
    assert q["step"] == pytest.approx(1 / (2 * q["L"]), rel=1e-12)


@pytest.mark.parametrize("train_layers", ["W", "WV", "V"])
@pytest.mark.parametrize("parametrization", ["reduced", "full"])
def test_sigma_min_J0_equals_autograd_jacobian_singular_value(train_layers, parametrization):
    problem = gaussian_problem(4, 3, [0, 1])
    net = _net(problem, 30, [0, 1], d=3, train=train_layers, parametrization=parametrization)
    cert = certify(problem, net)
    params = net.initial_params()
    for run in range(2):
        sv = torch.linalg.svdvals(dense_jacobian(net, params, run))
        assert cert["sigma_min_J0"].value[run] == pytest.approx(sv[-1].item(), rel=1e-10)
        assert cert["sigma_max_J0"].value[run] == pytest.approx(sv[0].item(), rel=1e-10)


def test_mlp_gram_matches_autograd():
    net = MLP(3, [7, 6], d=2, seeds=[0])
    jac = dense_jacobian(net, net.initial_params())
    torch.testing.assert_close(jacobian_gram(net)[0], jac @ jac.T, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("train_layers", ["W", "WV"])
def test_every_lipschitz_bound_exceeds_sampled_ratios(train_layers):
    problem = gaussian_problem(3, 2, [0])
    net = _net(problem, 40, [0], d=3, train=train_layers, activation="tanh", parametrization="full")
    params0 = net.initial_params()
    gen = torch.Generator().manual_seed(1)
    forms = [f for f in LIPSCHITZ_FORMS if not (f == "radius-free" and train_layers == "WV")]
    for radius in (0.5, 3.0, 20.0):
        worst = 0.0
        for _ in range(40):
            pts = []
            for _ in range(2):
                steps = {name: torch.randn(p.shape, generator=gen, dtype=torch.float64) for name, p in params0.items()}
                norm = math.sqrt(sum(s.pow(2).sum().item() for s in steps.values()))
                scale = radius * torch.rand(1, generator=gen).item() / norm
                pts.append({name: params0[name] + scale * steps[name] for name in params0})
            dist = math.sqrt(sum((pts[0][n] - pts[1][n]).pow(2).sum().item() for n in params0))
            diff = dense_jacobian(net, pts[0]) - dense_jacobian(net, pts[1])
            worst = max(worst, torch.linalg.matrix_norm(diff, ord=2).item() / dist)
        for form in forms:
            bound = lipschitz_bound(net, form).fn(np.array([radius]))[0]
            assert worst <= bound, (form, radius, worst, bound)
        estimate = sampled_lipschitz(net, radius, pairs=10, generator=torch.Generator().manual_seed(2))[0]
        assert 0 < estimate <= lipschitz_bound(net, "radius-dependent").fn(np.array([radius]))[0]


def _dense_hessian_norm(problem, net, params):
    flat = torch.cat([p[0].reshape(-1) for p in params.values()])
    shapes = [(name, p.shape[1:]) for name, p in params.items()]

    def objective(vec):
        p, start = {}, 0
        for name, shape in shapes:
            size = math.prod(shape)
            p[name] = vec[start : start + size].reshape(1, *shape)
            start += size
        return MSELoss().value(problem.operator.forward_flat(net.function(p)), problem.y).sum()

    hess = torch.autograd.functional.hessian(objective, flat)
    return torch.linalg.matrix_norm(hess, ord=2).item()


@pytest.mark.parametrize("train_layers", ["W", "WV"])
def test_smoothness_bound_dominates_true_hessian_in_the_ball(train_layers):
    problem = gaussian_problem(3, 2, [0])
    net = _net(problem, 25, [0], d=2, train=train_layers)
    cert = certify(problem, net)
    L, R = cert["L"].value[0], cert["R"].value[0]
    params0 = net.initial_params()
    gen = torch.Generator().manual_seed(0)
    norms = [_dense_hessian_norm(problem, net, params0)]
    for _ in range(10):
        steps = {name: torch.randn(p.shape, generator=gen, dtype=torch.float64) for name, p in params0.items()}
        norm = math.sqrt(sum(s.pow(2).sum().item() for s in steps.values()))
        point = {name: params0[name] + R * torch.rand(1, generator=gen).item() / norm * steps[name] for name in params0}
        norms.append(_dense_hessian_norm(problem, net, point))
    assert max(norms) <= L


def test_hessian_estimate_can_fall_below_L_and_stays_out_of_the_verdict():
    problem = gaussian_problem(5, 2, [0])
    net = _net(problem, 10_000, [0])
    crude = certify(problem, net, hessian_iters=1, hessian_safety=1.0)
    careful = certify(problem, net, hessian_iters=50, hessian_safety=1.0)
    params0 = net.initial_params()
    true_norm = hessian_norm_estimate(problem, net, MSELoss(), iters=200, rtol=0)[0]
    assert crude["L_hessian"].value[0] < 0.9 * true_norm  # a one-step power iteration underestimates
    assert crude["L_hessian"].kind == "estimate" and crude["L"].kind == "upper bound"
    assert crude["L"].value[0] >= true_norm
    for name in ("condition_4", "margin", "R_prime", "L", "step"):
        assert crude[name].value[0] == careful[name].value[0], name
    assert params0["z"].shape == (1, 10_000)


def test_every_number_has_a_kind_and_the_json_has_the_required_keys():
    problem = gaussian_problem(5, 2, [0])
    data = certify(problem, _net(problem, 1000, [0])).to_json()
    required = ["sigma_A", "norm_A", "sigma_min_J0", "lip_J", "R", "R_prime", "nu1", "nu2", "L", "step",
                "condition_4", "margin", "k_bound"]
    for key in required:
        assert key in data and key in data["kinds"]
    assert isinstance(data["condition_4"], bool)
    assert data["kinds"]["k_bound"] == "estimate" and data["kinds"]["L"] == "upper bound"
    assert data["kinds"]["sigma_min_J0"] == "exact" and data["kinds"]["R"] == "lower bound"


def test_step_above_1_over_L_fails_the_verdict():
    problem = gaussian_problem(5, 2, [0])
    net = _net(problem, 100_000, [0])
    good = certify(problem, net)
    assert good.holds[0]
    bad = certify(problem, net, step=1.5 / good["L"].value[0])
    assert not bad.holds[0] and "step" in bad.verdict_text()


def test_large_width_is_fast_and_never_forms_k_by_k():
    """k = 10^6 at n = 5: seconds, memory O(nk)."""
    import time

    problem = gaussian_problem(5, 2, [0])
    start = time.perf_counter()
    cert = certify(problem, _net(problem, 1_000_000, [0]))
    assert time.perf_counter() - start < 60
    assert cert.holds[0]


def test_deep_networks_get_estimates_and_no_verdict():
    problem = gaussian_problem(3, 2, [0])
    cert = certify(problem, MLP(3, [20], seeds=[0]))
    assert math.isnan(cert["condition_4"].value[0])
    assert cert.to_json()["condition_4"] is None
    assert cert["L"].kind == "estimate"


def test_losses_without_certificates_say_why():
    problem = gaussian_problem(3, 2, [0])
    net = _net(problem, 50, [0])
    with pytest.raises(ValueError, match="infimum 0 is not attained"):
        certify(problem, net, loss=LogisticLoss())
    with pytest.raises(ValueError, match="give v_max"):
        certify(problem, net, loss=KLLoss())


def test_output_layer_only_is_linear_and_certified_exactly():
    """train = "V": g is linear in V, J_g J_gᵀ = ‖φ(z)‖²/k I, Lip = 0, L = ‖A‖²‖φ(z)‖²/k exactly."""
    problem = gaussian_problem(4, 3, [0])
    net = _net(problem, 200, [0], train="V")
    cert = certify(problem, net)
    phi = net.activation(net.z0[0])
    sigma = (phi.norm() / math.sqrt(net.k)).item()
    assert cert["sigma_min_J0"].value[0] == pytest.approx(sigma, rel=1e-12)
    assert cert["sigma_max_J0"].value[0] == pytest.approx(sigma, rel=1e-12)
    assert cert["lip_J"].value[0] == 0 and math.isinf(cert["R"].value[0])
    assert cert["L"].value[0] == pytest.approx(cert["norm_A"].value[0] ** 2 * sigma**2, rel=1e-12)
    assert cert["L"].value[0] == pytest.approx(hessian_norm_estimate(problem, net, MSELoss(), iters=300, rtol=0)[0], rel=1e-6)
    assert cert.holds[0]
    result = train(problem, net, GradientDescent(float(cert["step"].value[0])), max_iters=300)
    assert np.all(result.history.loss[:, 0] <= cert.loss_bound(result.history.iteration)[:, 0] * (1 + 1e-9))


def test_sublevel_smoothness_bound_dominates_the_hessian_on_the_sublevel_set():
    """L̂ (docs/theory.md §2.3) bounds the Hessian along a GD run that stays in {L ≤ L_0}."""
    problem = gaussian_problem(3, 2, [0])
    net = _net(problem, 30, [0], d=2)
    cert = certify(problem, net)
    L_hat = cert["L_sublevel"].value[0]
    A, V = problem.operator.to_dense()[0], net.V0[0]
    r0 = (A @ net.function(net.initial_params())[0] - problem.y[0]).norm()
    expected = (net.activation.B1**2 / net.k) * torch.linalg.matrix_norm(A @ V, 2) ** 2 + (
        net.activation.B2 / math.sqrt(net.k)) * (A @ V).norm(dim=0).max() * r0
    assert L_hat == pytest.approx(expected.item(), rel=1e-10)
    result = train(problem, net, GradientDescent(0.9 / L_hat), max_iters=200)
    assert np.all(np.diff(result.history.loss[:, 0]) <= 1e-12)  # stays in the sublevel set
    assert _dense_hessian_norm(problem, net, result.params) <= L_hat
    assert _dense_hessian_norm(problem, net, net.initial_params()) <= L_hat
    assert cert["L_sublevel"].kind == "estimate"


@pytest.mark.parametrize("case", ["gaussian n5 m2, W", "well-conditioned n4 noisy, W"])
def test_gradient_flow_stays_below_its_bounds_when_condition_4_holds(case):
    """theory.md §3.1: with ν1 = 1 and t for ν2 τ, the flow's loss, distance and error curves (6)-(8)
    bound the trajectory integrated by RK45 (tight tolerances)."""
    from dipcert.optim import GradientFlow

    build, k, train_layers = CASES[case]
    problem = build()
    net = _net(problem, k, list(range(problem.batch)), train=train_layers)
    cert = certify(problem, net, dynamics="flow", hessian_iters=0)
    assert cert["nu1"].kind == "exact" and np.all(cert["nu1"].value == 1)
    ok = cert.holds
    assert ok.sum() >= 2, cert.report()
    result = train(problem, net, GradientFlow(rtol=1e-9, atol=1e-12), max_iters=150, loss_tol=1e-12)
    h = result.history
    for run in np.flatnonzero(ok):
        cols = h.columns(run)
        bounds = cert.bounds_at(cols["time"])
        assert np.all(cols["loss"] <= bounds["loss_bound"][:, run] * (1 + 1e-7))
        assert np.all(cols["param_dist"] <= bounds["param_bound"][:, run])
        if "error_bound" in bounds:
            assert np.all(cols["error"] <= bounds["error_bound"][:, run] * (1 + 1e-7))


def test_gradient_flow_bound_is_the_mse_closed_form():
    """MSE: L(t) ≤ L_0 exp(−σ_A²σ_J² t/2) and R' = 2‖y_0 − y‖/(σ_Aσ_J) (theory.md §3.1)."""
    problem = gaussian_problem(5, 2, [0])
    cert = certify(problem, _net(problem, 1000, [0]), dynamics="flow", hessian_iters=0)
    q = {name: cert[name].value[0] for name in cert.quantities}
    t = np.array([0.0, 3.0, 50.0])
    a = q["sigma_A"] ** 2 * q["sigma_min_J0"] ** 2
    np.testing.assert_allclose(cert.loss_bound(t)[:, 0], q["loss0"] * np.exp(-a * t / 2), rtol=1e-12)
    assert q["R_prime"] == pytest.approx(2 * math.sqrt(2 * q["loss0"]) / (q["sigma_A"] * q["sigma_min_J0"]), rel=1e-12)
    assert math.isnan(q["step"]) and "step_max" not in cert.quantities


@pytest.mark.parametrize("method_name", ["heavy-ball", "gradient-difference", "inna", "inertial-flow", "adam"])
def test_a_posteriori_bound_holds_for_every_method(method_name):
    """For an injective A and the MSE, (‖y_τ − y‖ + ‖ε‖)/σ_A bounds ‖x_τ − x̄‖ along any trajectory."""
    from dipcert.config import RunConfig
    from dipcert.methods import METHOD, build_method

    problem = _square_problem(4, [0, 1], 0.3, True)
    method_config = RunConfig.build({"method": {"method": method_name}}, (METHOD,)).method
    settings = dict(method_config.values, method=method_name)
    net = _net(problem, 2000, [0, 1], train="W", parametrization="reduced" if method_config.can("reduction") else "full")
    cert = certify(problem, net, dynamics="a-posteriori", hessian_iters=0)
    assert math.isnan(cert["condition_4"].value[0]) and "R_prime" not in cert.quantities
    method, _ = build_method(settings, problem, net)
    result = train(problem, net, method, max_iters=200)
    h = result.history
    bound = cert.a_posteriori_error_bound(h.loss)
    assert np.all(h.error <= bound * (1 + 1e-9))
    assert np.all(h.loss[-1] < 1e-2 * h.loss[0])  # the runs trained, so the bound was tested where it tightens
