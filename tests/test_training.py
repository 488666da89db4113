import math

import numpy as np
import pytest
import torch

from dipcert.losses import MSELoss
from dipcert.networks import TwoLayerDIP
from dipcert.operators import Matrix
from dipcert.optim import GradientDescent, train
from dipcert.problems import Problem, gaussian_problem
from dipcert.seeding import derive_seed


def _net(problem, k, seeds, **kwargs):
    return TwoLayerDIP(problem.n, k, seeds=[derive_seed(s, "network") for s in seeds], **kwargs)


@pytest.mark.parametrize("fused", [True, False], ids=["fused kernel", "matrix-vector products"])
@pytest.mark.parametrize("train_layers", ["W", "WV"])
def test_z_reduction_matches_full_W_trajectory(train_layers, fused):
    """theory.md §6: training W through z = W u gives exactly the full-W trajectory (1000 steps),
    on both paths of the reduced parametrization (kernels.py, and the two products)."""
    seeds = [0, 1]
    problem = gaussian_problem(5, 3, seeds)
    kw = dict(k=50, seeds=seeds, d=4, train=train_layers)
    reduced = _net(problem, parametrization="reduced", fused=fused, **kw)
    full = _net(problem, parametrization="full", **kw)
    runs = [train(problem, net, GradientDescent(0.05), max_iters=1000) for net in (reduced, full)]
    assert runs[0].config["fused_descent"] is fused
    np.testing.assert_allclose(runs[0].history.loss, runs[1].history.loss, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(runs[0].history.param_dist, runs[1].history.param_dist, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(runs[0].x, runs[1].x, rtol=1e-10, atol=1e-12)
    W_reduced, V_reduced = reduced.weights(runs[0].params)
    W_full, V_full = full.weights(runs[1].params)
    assert (W_reduced - W_full).abs().max() < 1e-10
    assert (V_reduced - V_full).abs().max() < 1e-10
    assert runs[0].history.loss[-1].max() < 0.1 * runs[0].history.loss[0].min()  # it did train


def _hessian_bound(problem, net):
    """L̂ of theory.md §2.3 (W only): Hessian of z ↦ L on the sublevel set {L ≤ L_0}."""
    A = problem.operator.to_dense()[0]
    V = net.V0[0]
    act = net.activation
    r0 = (A @ net.function(net.initial_params())[0] - problem.y[0]).norm()
    return (act.B1**2 / net.k) * torch.linalg.matrix_norm(A @ V, 2) ** 2 + (
        act.B2 / math.sqrt(net.k)
    ) * (A @ V).norm(dim=0).max() * r0


def test_gradient_descent_below_1_over_L_decreases_loss_monotonically():
    problem = gaussian_problem(4, 3, [11])
    net = _net(problem, 60, [11])
    L = _hessian_bound(problem, net).item()
    result = train(problem, net, GradientDescent(0.95 / L), max_iters=3000)
    loss = result.history.loss[:, 0]
    # monotone down to the rounding floor of float64 (residuals ~1e-14, losses ~1e-28)
    assert np.all(np.diff(loss) <= 1e-12 * loss[:-1] + 1e-26), "loss increased"
    assert loss[-1] < 1e-3 * loss[0]


def test_paper_setting_reaches_1e_minus_14_for_most_seeds():
    """n = 5, m = 2, k = 1000, W trained, float64: L(y_τ) ≤ 1e-14 within 1e5 iterations (Fig. 1b)."""
    seeds = list(range(10))
    problem = gaussian_problem(5, 2, seeds)
    net = _net(problem, 1000, seeds)
    result = train(problem, net, GradientDescent(0.5), max_iters=100_000, loss_tol=1e-14, record_every=1000)
    converged = [s == "converged" for s in result.status]
    assert sum(converged) >= 8, result.status
    assert np.all(result.final_loss[converged] <= 1e-14)


def test_runs_are_independent_of_batching_and_reproducible():
    seeds = [3, 4, 5]
    batched = train(gaussian_problem(5, 2, seeds), _net(gaussian_problem(5, 2, seeds), 100, seeds), GradientDescent(0.3), max_iters=200)
    alone = train(gaussian_problem(5, 2, [4]), _net(gaussian_problem(5, 2, [4]), 100, [4]), GradientDescent(0.3), max_iters=200)
    again = train(gaussian_problem(5, 2, [4]), _net(gaussian_problem(5, 2, [4]), 100, [4]), GradientDescent(0.3), max_iters=200)
    # batched kernels round differently: equal to rounding, relative to the initial loss
    np.testing.assert_allclose(batched.history.loss[:, 1], alone.history.loss[:, 0], rtol=1e-8, atol=1e-15)
    assert np.array_equal(alone.history.loss, again.history.loss)  # bit for bit
    assert torch.equal(alone.x, again.x)


def test_each_run_stops_on_its_own():
    seeds = [0, 1, 2]
    problem = gaussian_problem(5, 2, seeds)
    result = train(problem, _net(problem, 200, seeds), GradientDescent(0.5), max_iters=5000, loss_tol=1e-6)
    assert result.status == ["converged"] * 3
    assert len(set(result.iterations.tolist())) > 1  # different stopping times
    for b in range(3):
        cols = result.history.columns(b)
        assert cols["iteration"][-1] == result.iterations[b]
        assert cols["loss"][-1] <= 1e-6 < cols["loss"][-2]


def test_divergence_is_detected_and_history_kept():
    seeds = [0, 1]
    problem = gaussian_problem(5, 2, seeds)
    # V trained: the output is unbounded and a huge step makes the loss explode (with V fixed and a
    # bounded φ the loss is bounded and a too-large step stalls instead).
    result = train(problem, _net(problem, 100, seeds, train="WV"), GradientDescent(1e4), max_iters=1000)
    assert result.status == ["diverged", "diverged"]
    assert np.all(result.iterations < 1000)
    cols = result.history.columns(0)
    assert np.isfinite(cols["loss"][0]) and len(cols["loss"]) == result.iterations[0] + 1


def test_mixed_outcomes_in_one_batch():
    """A diverging run does not disturb its neighbours."""
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(2, 2, 5, generator=gen, dtype=torch.float64)
    A[1] *= 30  # run 1 is badly scaled for this step
    x = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    op = Matrix(A)
    problem = Problem(op, op.forward_flat(x), x)
    result = train(problem, _net(problem, 100, [0, 1], train="WV"), GradientDescent(0.05), max_iters=20_000, loss_tol=1e-6)
    assert result.status == ["converged", "diverged"]


def test_history_records_error_and_parameter_distance():
    problem = gaussian_problem(5, 5, [0])
    net = _net(problem, 100, [0], train="WV")
    result = train(problem, net, GradientDescent(0.1), max_iters=50, record_every=10)
    h = result.history
    assert h.iteration.tolist() == [0, 10, 20, 30, 40, 50]
    assert h.param_dist[0, 0] == 0.0
    x_last = result.x
    assert h.error[-1, 0] == pytest.approx((x_last - problem.x_true).norm().item(), rel=1e-12)
    W, V = net.weights(result.params)
    dist = math.sqrt(((W - net.W0) ** 2).sum().item() + ((V - net.V0) ** 2).sum().item())
    assert h.param_dist[-1, 0] == pytest.approx(dist, rel=1e-10)
    assert np.all(np.diff(h.seconds) >= 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_iters=0), "iteration limit must be a positive integer"),
        (dict(max_iters=10, record_every=0), "record_every"),
        (dict(max_iters=10, loss_tol=float("nan")), "loss tolerance"),
    ],
)
def test_bad_settings(kwargs, message):
    problem = gaussian_problem(3, 2, [0])
    with pytest.raises(ValueError, match=message):
        train(problem, _net(problem, 10, [0]), GradientDescent(0.1), **kwargs)


@pytest.mark.parametrize("step", [0, -1, float("inf"), float("nan")])
def test_bad_step(step):
    with pytest.raises(ValueError, match="step size must be a finite number > 0"):
        GradientDescent(step)


def test_mismatched_network_and_dtype():
    problem = gaussian_problem(3, 2, [0])
    with pytest.raises(ValueError, match="does not match problem"):
        train(problem, TwoLayerDIP(4, 10), GradientDescent(0.1))
    with pytest.raises(ValueError, match="float32"):
        train(problem, TwoLayerDIP(3, 10, dtype=torch.float32), GradientDescent(0.1))


def test_float32_training_runs():
    problem = gaussian_problem(5, 3, [0], dtype=torch.float32)
    net = _net(problem, 200, [0], dtype=torch.float32)
    result = train(problem, net, GradientDescent(0.3), max_iters=300, loss=MSELoss())
    assert result.x.dtype == torch.float32
    assert result.final_loss[0] < 1e-2 * result.history.loss[0, 0]


@pytest.mark.parametrize("train_layers", ["W", "WV"])
def test_compaction_changes_nothing_but_cost(train_layers):
    """Dropping stopped runs from the working batch gives the same results as keeping them."""
    seeds = list(range(6))
    problem = gaussian_problem(5, 2, seeds)
    runs = [
        train(problem, _net(problem, 80, seeds, train=train_layers), GradientDescent(0.4), max_iters=3000,
              loss_tol=1e-8, compact_below=c)
        for c in (0.0, 0.9)
    ]
    assert runs[0].status == runs[1].status and len(set(runs[0].iterations.tolist())) > 2
    np.testing.assert_array_equal(runs[0].iterations, runs[1].iterations)
    np.testing.assert_allclose(runs[0].history.loss, runs[1].history.loss, rtol=1e-9, atol=1e-18)
    np.testing.assert_allclose(runs[0].history.param_dist, runs[1].history.param_dist, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(runs[0].x, runs[1].x, rtol=1e-9, atol=1e-12)
    for name in runs[0].params:
        torch.testing.assert_close(runs[0].params[name], runs[1].params[name], rtol=1e-9, atol=1e-12)
