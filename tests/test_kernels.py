"""The fused gradient-descent kernel (kernels.py) against the two-product path it replaces."""
import math

import numpy as np
import pytest
import torch

from dipcert.activations import Activation, get_activation
from dipcert.kernels import CHUNK_COLUMNS, SQDIST_CHUNK, fused_descent, sqdist
from dipcert.networks import FUSED_FROM_BYTES, FUSED_FROM_N, TwoLayerDIP
from dipcert.operators import GaussianBlur
from dipcert.optim import GradientDescent, HeavyBall, train
from dipcert.problems import gaussian_problem, image_problem


def _step_by_products(V, z, w, steps, activation, train_w=True, train_v=False):
    """(z⁺, V⁺, V⁺ φ(z⁺)/√k) of one gradient step, with batched products in float64."""
    phi = get_activation(activation)
    k = V.shape[-1]
    V, z, w, steps = V.double(), z.double(), w.double(), steps.double()
    z_next, V_next = z, V
    if train_w:
        z_next = z + steps[:, None] * torch.einsum("bnk,bn->bk", V, w) / math.sqrt(k) * phi.derivative(z)
    if train_v:
        V_next = V + steps[:, None, None] * torch.einsum("bn,bk->bnk", w, phi(z)) / math.sqrt(k)
    return z_next, V_next, torch.einsum("bnk,bk->bn", V_next, phi(z_next)) / math.sqrt(k)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus"])
@pytest.mark.parametrize("batch,n,k", [(1, 1, 1), (3, 7, 2 * CHUNK_COLUMNS + 37), (2, 257, 300), (1, 5, 1000)])
def test_fused_step_matches_two_products(activation, batch, n, k):
    """Relative error < 1e-13 in float64, over sizes that split into several chunks and blocks."""
    net = TwoLayerDIP(n, k, activation=activation, seeds=range(batch))
    gen = torch.Generator().manual_seed(1)
    z = net.z0.clone()
    w = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    steps = -torch.rand(batch, generator=gen, dtype=torch.float64) * 3
    z_ref, _, x_ref = _step_by_products(net.V0, z, w, steps, activation)
    x = fused_descent(net.V0.transpose(1, 2).contiguous(), z, w, steps, activation)
    assert ((z - z_ref).abs().max() / z_ref.abs().max()).item() < 1e-13
    assert ((x - x_ref).abs().max() / x_ref.abs().max()).item() < 1e-13


@pytest.mark.parametrize("train_w,train_v", [(True, True), (False, True)])
def test_fused_step_with_V_trained_matches_the_products(train_w, train_v):
    """V is updated in place from the old point (rank one), z too when W trains: 1e-13 relative."""
    batch, n, k = 2, 37, CHUNK_COLUMNS + 300
    net = TwoLayerDIP(n, k, activation="tanh", seeds=range(batch))
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    steps = torch.tensor([-1.5, 0.0], dtype=torch.float64)  # the second run is frozen
    z, Vt = net.z0.clone(), net.V0.transpose(1, 2).contiguous()
    z_ref, V_ref, x_ref = _step_by_products(net.V0, net.z0, w, steps, "tanh", train_w, train_v)
    x = fused_descent(Vt, z, w, steps, "tanh", train_w=train_w, train_v=train_v)
    assert ((Vt.transpose(1, 2) - V_ref).abs().max()).item() < 1e-13
    assert torch.equal(Vt[1].transpose(0, 1), net.V0[1]) and torch.equal(z[1], net.z0[1])
    assert ((z - z_ref).abs().max()).item() < 1e-13 and (train_w or torch.equal(z, net.z0))
    assert ((x - x_ref).abs().max() / x_ref.abs().max()).item() < 1e-13


def test_zero_step_leaves_z_unchanged_and_gives_the_forward_pass():
    net = TwoLayerDIP(9, 1500, seeds=[0, 1])
    z = net.z0.clone()
    x = fused_descent(net.V0.transpose(1, 2).contiguous(), z, torch.randn(2, 9, dtype=torch.float64),
                      torch.zeros(2, dtype=torch.float64), "sigmoid")
    assert torch.equal(z, net.z0)
    torch.testing.assert_close(x, net.forward(net.initial_params())[0], rtol=1e-13, atol=0)


def test_float32_step_matches_float64_to_float32_rounding():
    net = TwoLayerDIP(64, 3000, seeds=[2], dtype=torch.float32)
    w = torch.randn(1, 64)
    z = net.z0.clone()
    x = fused_descent(net.V0.transpose(1, 2).contiguous(), z, w, torch.tensor([-2.0]), "sigmoid")
    z_ref, _, x_ref = _step_by_products(net.V0, net.z0, w, torch.tensor([-2.0]), "sigmoid")
    assert x.dtype == z.dtype == torch.float32
    assert ((x.double() - x_ref).abs().max() / x_ref.abs().max()).item() < 1e-5
    assert (z.double() - z_ref).abs().max().item() < 1e-5


def test_result_does_not_depend_on_the_thread_count():
    """Chunks of columns are fixed, so 1 and 2 threads give the same bits."""
    net = TwoLayerDIP(33, 3 * CHUNK_COLUMNS + 5, seeds=[0, 1, 2])
    Vt = net.V0.transpose(1, 2).contiguous()
    w = torch.randn(3, 33, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    steps = torch.tensor([-1.0, -0.5, 0.0], dtype=torch.float64)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            z = net.z0.clone()
            results.append((z, fused_descent(Vt, z, w, steps, "tanh")))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_bad_shapes_and_layouts_are_refused():
    net = TwoLayerDIP(4, 10)
    Vt = net.V0.transpose(1, 2).contiguous()
    z, w, steps = net.z0.clone(), torch.zeros(1, 4, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    with pytest.raises(ValueError, match="shapes do not match"):
        fused_descent(Vt, z, torch.zeros(1, 5, dtype=torch.float64), steps, "sigmoid")
    with pytest.raises(ValueError, match="contiguous"):
        fused_descent(net.V0.transpose(1, 2), z, w, steps, "sigmoid")


def _training_pair(problem, k, seeds, train_layers="W", step=0.3, **kwargs):
    """The same training with the fused kernel and with the matrix-vector products."""
    return [
        train(problem, TwoLayerDIP(problem.n, k, seeds=seeds, fused=fused, dtype=problem.y.dtype, train=train_layers),
              GradientDescent(step), **kwargs)
        for fused in (True, False)
    ]


@pytest.mark.parametrize("train_layers", ["W", "WV", "V"])
def test_fused_training_follows_the_two_product_trajectory(train_layers):
    """1000 steps in float64, runs stopping at different iterations, the working batch compacted:
    the same trajectories to 1e-10."""
    seeds = list(range(4))
    problem = gaussian_problem(6, 3, seeds)
    fused, products = _training_pair(problem, 700, seeds, train_layers, max_iters=1000, loss_tol=1e-9)
    assert fused.config["fused_descent"] and not products.config["fused_descent"]
    assert fused.status == products.status and len(set(fused.iterations.tolist())) > 1
    np.testing.assert_array_equal(fused.iterations, products.iterations)
    np.testing.assert_allclose(fused.history.loss, products.history.loss, rtol=1e-10, atol=1e-17)
    np.testing.assert_allclose(fused.history.error, products.history.error, rtol=1e-10)
    np.testing.assert_allclose(fused.history.param_dist, products.history.param_dist, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(fused.x, products.x, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(fused.history.evaluations, products.history.evaluations)
    for name in products.params:
        torch.testing.assert_close(fused.params[name], products.params[name], rtol=1e-10, atol=1e-12)


def test_fused_training_on_an_image_in_float32():
    """A blur problem like the benchmark's, small: float32 trajectories agree to rounding."""
    op = GaussianBlur((12, 10), 1.0, dtype=torch.float32)
    x_true = torch.rand(12 * 10, generator=torch.Generator().manual_seed(0))
    problem = image_problem(x_true.view(12, 10).numpy(), op)
    fused, products = _training_pair(problem, 500, [0], max_iters=50, record_every=10)
    assert fused.config["fused_descent"]
    np.testing.assert_allclose(fused.history.loss, products.history.loss, rtol=1e-4)
    assert fused.history.loss[-1, 0] < 0.5 * fused.history.loss[0, 0]


def test_too_large_step_diverges_with_the_fused_kernel():
    problem = gaussian_problem(5, 2, [0, 1])
    result = train(problem, TwoLayerDIP(5, 50, seeds=[0, 1], activation="softplus", fused=True), GradientDescent(1e6),
                   max_iters=200)
    assert result.config["fused_descent"]
    assert result.status == ["diverged", "diverged"]
    assert len(result.history.iteration) >= 2 and np.isfinite(result.history.loss[0]).all()


def test_the_kernel_is_used_only_where_it_applies():
    problem = gaussian_problem(5, 2, [0])
    assert TwoLayerDIP(FUSED_FROM_N, 10).fused_descent and not TwoLayerDIP(FUSED_FROM_N - 1, 10).fused_descent
    big = TwoLayerDIP(2, FUSED_FROM_BYTES // 8 // 2 // 2, seeds=[0, 1])  # V_0 (two runs) of FUSED_FROM_BYTES
    assert big.fused_descent and not TwoLayerDIP(2, big.k - 1, seeds=[0, 1]).fused_descent
    custom = get_activation("sigmoid")
    custom = Activation(custom.name, custom.fn, custom.derivative, custom.B1, custom.B2, custom.sup_abs,
                        custom._numpy_fn, custom._numpy_derivative)  # same name, not the built-in object
    cases = {
        "gd, W": (TwoLayerDIP(5, 20, fused=True), GradientDescent(0.1), True),
        "gd, WV": (TwoLayerDIP(5, 20, train="WV", fused=True), GradientDescent(0.1), True),
        "gd, V": (TwoLayerDIP(5, 20, train="V", parametrization="full", fused=True), GradientDescent(0.1), True),
        "gd, full W": (TwoLayerDIP(5, 20, parametrization="full", fused=True), GradientDescent(0.1), False),
        "gd, fused=False": (TwoLayerDIP(5, 20, fused=False), GradientDescent(0.1), False),
        "gd, user activation": (TwoLayerDIP(5, 20, activation=custom, fused=True), GradientDescent(0.1), False),
        "heavy ball": (TwoLayerDIP(5, 20, fused=True), HeavyBall(0.1, 0.5), False),
        "gd, auto, small n and V": (TwoLayerDIP(5, 20), GradientDescent(0.1), False),
    }
    for name, (net, method, expected) in cases.items():
        assert train(problem, net, method, max_iters=3).config["fused_descent"] is expected, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sqdist_matches_a_float64_reference(dtype):
    """‖a − b‖² per run over several chunks, accumulated in float64 (so float32 inputs lose nothing)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 2 * SQDIST_CHUNK + 11, generator=gen, dtype=torch.float64).to(dtype)
    b = (a.double() + 1e-3 * torch.randn(a.shape, generator=gen, dtype=torch.float64)).to(dtype)
    reference = (a.double() - b.double()).pow(2).sum(1)
    result = sqdist(a, b)
    assert result.dtype == torch.float64
    assert ((result - reference).abs() / reference).max().item() < 1e-13


def test_param_sqdist_is_the_same_in_every_layout():
    """The network's ‖θ − θ_0‖² with V row-major, laid out for descend, and one of each."""
    net = TwoLayerDIP(6, 300, train="WV", seeds=[0, 1], fused=True)
    gen = torch.Generator().manual_seed(1)
    move = {name: 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype) for name, p in net.initial_state().items()}
    rows = {name: p + move[name] for name, p in net.initial_state().items()}
    columns = {name: p.clone() for name, p in net.descent_state().items()}
    for name, p in columns.items():
        p.add_(move[name])
    assert not columns["V"].is_contiguous()
    expected = sum(m.pow(2).flatten(1).sum(1) for m in move.values())
    torch.testing.assert_close(net.param_sqdist(rows, net.initial_state()), expected, rtol=1e-13, atol=0)
    torch.testing.assert_close(net.param_sqdist(columns, net.descent_state()), expected, rtol=1e-13, atol=0)
    torch.testing.assert_close(net.param_sqdist(columns, net.initial_state()), expected, rtol=1e-13, atol=0)


def test_sqdist_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="contiguous"):
        sqdist(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="contiguous"):
        sqdist(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("train_layers", ["W", "WV"])
def test_a_shrinking_batch_leaves_the_fused_path_below_the_size_rule(train_layers, monkeypatch):
    """With fused=None, a working batch compacted below FUSED_FROM_BYTES goes on with the products
    (which also read V in the fused layout): same trajectories as the products throughout."""
    import dipcert.networks as networks

    seeds = list(range(6))
    problem = gaussian_problem(6, 3, seeds)
    k = 700
    monkeypatch.setattr(networks, "FUSED_FROM_BYTES", 4 * 6 * k * 8)  # V_0 of 4 runs
    calls = []
    descend = TwoLayerDIP.descend
    monkeypatch.setattr(TwoLayerDIP, "descend", lambda self, *a: calls.append(self.batch) or descend(self, *a))
    auto, products = [
        train(problem, TwoLayerDIP(6, k, seeds=seeds, train=train_layers, fused=fused), GradientDescent(0.3),
              max_iters=1000, loss_tol=1e-9, compact_below=0.9)
        for fused in (None, False)
    ]
    assert auto.config["fused_descent"] and min(calls) >= 4
    assert sorted(auto.iterations.tolist())[-4] < auto.iterations.max()  # steps were taken by ≤ 3 runs
    assert auto.status == products.status
    np.testing.assert_allclose(auto.history.loss, products.history.loss, rtol=1e-10, atol=1e-17)
    np.testing.assert_allclose(auto.history.param_dist, products.history.param_dist, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(auto.x, products.x, rtol=1e-10, atol=1e-13)
