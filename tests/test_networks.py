import math

import pytest
import torch

from dipcert.networks import MLP, RankOne, TwoLayerDIP, add_scaled_


def _dense(grad):
    return grad.dense() if isinstance(grad, RankOne) else grad


def _autograd_jacobian(net, params):
    """Full Jacobian of run 0, columns ordered as the flattened params (names sorted as given)."""
    names = list(params)

    def f(*flat):
        p = {name: t.unsqueeze(0) for name, t in zip(names, flat)}
        full = {name: params[name].clone() for name in names}
        for name in names:
            full[name] = torch.cat([p[name], params[name][1:]]) if params[name].shape[0] > 1 else p[name]
        return net.function(full)[0]

    jac = torch.autograd.functional.jacobian(f, tuple(params[name][0] for name in names))
    return torch.cat([j.reshape(net.n, -1) for j in jac], dim=1)


@pytest.mark.parametrize("train", ["W", "WV", "V"])
@pytest.mark.parametrize("parametrization", ["reduced", "full"])
def test_two_layer_pullback_matches_autograd_jacobian(train, parametrization):
    net = TwoLayerDIP(4, 30, d=3, train=train, parametrization=parametrization, seeds=[5])
    params = net.initial_params()
    x, pullback = net.forward(params)
    torch.testing.assert_close(x, net.function(params), rtol=0, atol=1e-15)
    jac = _autograd_jacobian(net, params)
    w = torch.randn(1, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = pullback(w)
    flat = torch.cat([_dense(grads[name])[0].reshape(-1) for name in params])
    torch.testing.assert_close(flat, jac.T @ w[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus"])
def test_two_layer_jacobian_against_finite_differences(activation):
    net = TwoLayerDIP(3, 12, d=2, train="WV", activation=activation, seeds=[1])
    params = net.initial_params()
    _, pullback = net.forward(params)
    gen = torch.Generator().manual_seed(2)
    direction = {name: torch.randn(p.shape, generator=gen, dtype=torch.float64) for name, p in params.items()}
    w = torch.randn(1, 3, generator=gen, dtype=torch.float64)
    grads = pullback(w)
    analytic = sum((_dense(grads[name]) * direction[name]).sum() for name in params)
    h = 1e-6
    plus = net.function({name: p + h * direction[name] for name, p in params.items()})
    minus = net.function({name: p - h * direction[name] for name, p in params.items()})
    numeric = ((plus - minus) / (2 * h) * w).sum()
    assert analytic.item() == pytest.approx(numeric.item(), rel=1e-7)


@pytest.mark.parametrize("train", ["W", "WV", "V"])
def test_ntk_closed_form_matches_autograd_gram(train):
    """theory.md §2.3: J Jᵀ = V D² Vᵀ/k (+ ‖φ(z)‖²/k I when V trains)."""
    net = TwoLayerDIP(5, 40, d=3, train=train, parametrization="full", seeds=[3])
    params = net.initial_params()
    jac = _autograd_jacobian(net, params)
    gram = jac @ jac.T
    eye = torch.eye(5, dtype=torch.float64)
    closed = torch.stack([net.ntk_matvec(params, eye[i : i + 1])[0] for i in range(5)], dim=1)
    torch.testing.assert_close(closed, gram, rtol=1e-12, atol=1e-14)
    reduced = TwoLayerDIP(5, 40, d=3, train=train, seeds=[3])
    generic = torch.stack([super(TwoLayerDIP, reduced).ntk_matvec(reduced.initial_params(), eye[i : i + 1])[0] for i in range(5)], 1)
    torch.testing.assert_close(generic, gram, rtol=1e-12, atol=1e-14)


def test_mlp_pullback_and_ntk_match_autograd():
    net = MLP(4, [6, 5], d=3, activation="tanh", seeds=[0, 1])
    params = net.initial_params()
    assert [tuple(p.shape) for p in params.values()] == [(2, 6, 3), (2, 5, 6), (2, 4, 5)]
    x, pullback = net.forward(params)
    assert x.shape == (2, 4)
    jac = _autograd_jacobian(net, params)
    w = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = pullback(w)
    flat = torch.cat([grads[name][0].reshape(-1) for name in params])
    torch.testing.assert_close(flat, jac.T @ w[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(net.ntk_matvec(params, w)[0], jac @ (jac.T @ w[0]), rtol=1e-12, atol=1e-14)


def test_initialization_laws_and_seeds():
    net = TwoLayerDIP(6, 50_000, d=4, seeds=[7, 8])
    torch.testing.assert_close(net.u.norm(dim=-1), torch.ones(2, dtype=torch.float64))
    assert set(net.V0.unique().tolist()) == {-1.0, 1.0}
    z0 = net.z0
    assert abs(z0.mean().item()) < 0.02 and abs(z0.var().item() - 1) < 0.02  # z_0 = W_0 u ~ N(0, I)
    alone = TwoLayerDIP(6, 50_000, d=4, seeds=[8])
    assert torch.equal(alone.V0[0], net.V0[1]) and torch.equal(alone.z0[0], net.z0[1])
    uniform = TwoLayerDIP(6, 50_000, d=4, v_law="uniform", seeds=[7])
    assert uniform.V0.abs().max() <= math.sqrt(3) and abs(uniform.V0.var().item() - 1) < 0.01


def test_weights_recovers_W_from_z():
    net = TwoLayerDIP(3, 10, d=4, seeds=[0])
    params = net.initial_params()
    W, V = net.weights(params)
    torch.testing.assert_close(W, net.W0, rtol=0, atol=1e-15)
    assert V is net.V0


def test_rank_one_update_equals_dense():
    gen = torch.Generator().manual_seed(0)
    left, right = torch.randn(3, 4, generator=gen, dtype=torch.float64), torch.randn(3, 5, generator=gen, dtype=torch.float64)
    grad = RankOne(left, right)
    param = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)
    expected = param + torch.tensor([0.5, 0.0, -2.0], dtype=torch.float64)[:, None, None] * grad.dense()
    add_scaled_(param, grad, torch.tensor([0.5, 0.0, -2.0], dtype=torch.float64))
    torch.testing.assert_close(param, expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(grad.sqnorm(), grad.dense().pow(2).sum((1, 2)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=0, k=5), "n .* positive integer"),
        (dict(n=3, k=-1), "k .* positive integer"),
        (dict(n=3, k=5, train="U"), "train must be one of W, WV, V"),
        (dict(n=3, k=5, v_law="cauchy"), "allowed: rademacher, uniform, gaussian"),
        (dict(n=3, k=5, seeds=[]), "at least one seed"),
        (dict(n=3, k=5, activation="relu"), "allowed"),
    ],
)
def test_bad_network_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TwoLayerDIP(**kwargs)


def test_row_block_products_equal_single_products(monkeypatch):
    """Large V: products over row blocks of V agree with plain products."""
    import dipcert.networks as nets

    gen = torch.Generator().manual_seed(0)
    M = torch.randn(2, 64, 300, generator=gen, dtype=torch.float64)
    v, w = torch.randn(2, 300, generator=gen, dtype=torch.float64), torch.randn(2, 64, generator=gen, dtype=torch.float64)
    monkeypatch.setattr(nets, "BLOCKED_FROM", 1)
    assert nets._blocks(M) == nets.ROW_BLOCKS
    torch.testing.assert_close(nets._matvec(M, v), torch.einsum("bnk,bk->bn", M, v), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nets._rmatvec(M, w), torch.einsum("bnk,bn->bk", M, w), rtol=1e-12, atol=1e-12)
