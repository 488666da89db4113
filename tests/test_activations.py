import math

import pytest
import torch

from dipcert.activations import ACTIVATIONS, get_activation

# theory.md §1.4 (Gauss–Hermite, 200 nodes).
TABLE = {
    "sigmoid": (0.541645, 0.211746),
    "tanh": (0.627929, 0.681471),
    "softplus": (0.959816, 0.541645),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_gaussian_constants_match_theory_table(name):
    act = get_activation(name)
    c_phi, c_dphi = TABLE[name]
    assert act.C_phi == pytest.approx(c_phi, abs=2e-6)
    assert act.C_dphi == pytest.approx(c_dphi, abs=2e-6)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_gaussian_constants_against_monte_carlo(name):
    act = get_activation(name)
    x = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert act(x).pow(2).mean().sqrt().item() == pytest.approx(act.C_phi, rel=3e-3)
    assert act.derivative(x).pow(2).mean().sqrt().item() == pytest.approx(act.C_dphi, rel=3e-3)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_derivative_matches_autograd(name):
    act = get_activation(name)
    x = torch.linspace(-12, 12, 2001, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(act(x).sum(), x)
    torch.testing.assert_close(act.derivative(x.detach()), grad, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_B1_B2_are_tight_suprema(name):
    """B1 = sup|φ'|, B2 = sup|φ''| = Lip(φ'): upper bounds, attained to 1e-6 on a fine grid."""
    act = get_activation(name)
    x = torch.linspace(-20, 20, 400_001, dtype=torch.float64, requires_grad=True)
    d1 = act.derivative(x)
    (d2,) = torch.autograd.grad(d1.sum(), x)
    sup1, sup2 = d1.abs().max().item(), d2.abs().max().item()
    assert sup1 <= act.B1 + 1e-12 and sup1 == pytest.approx(act.B1, abs=1e-6)
    assert sup2 <= act.B2 + 1e-12 and sup2 == pytest.approx(act.B2, abs=1e-6)
    assert act.B == max(act.B1, act.B2)


def test_unknown_activation_lists_allowed():
    with pytest.raises(ValueError, match="allowed: sigmoid, softplus, tanh"):
        get_activation("relu")


def test_sup_abs():
    assert get_activation("sigmoid").sup_abs == 1.0
    assert get_activation("softplus").sup_abs == math.inf
