import math

import pytest
import torch

from dipcert.losses import DesingularizerUnavailable, KLLoss, LogisticLoss, MSELoss, get_loss


def test_mse_value_and_gradient_against_autograd():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(3, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    loss = MSELoss()
    value = loss.value(v, y)
    torch.testing.assert_close(value, 0.5 * ((v - y) ** 2).sum(-1))
    (grad,) = torch.autograd.grad(value.sum(), v)
    torch.testing.assert_close(loss.grad(v.detach(), y), grad, rtol=0, atol=1e-15)


def test_kl_inequality_is_tight_for_c_sqrt2():
    """(3): ψ'(L(v)) ‖∇L(v)‖ ≥ 1, with equality for c = √2 (theory.md §2.2)."""
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(100, 4, generator=gen, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.float64)
    for c, expected in ((math.sqrt(2), 1.0), (2.0, 2.0 / math.sqrt(2))):
        loss = MSELoss(c)
        s = loss.value(v, y).requires_grad_(True)
        (dpsi,) = torch.autograd.grad(loss.psi(s).sum(), s)
        ratio = dpsi * loss.grad(v, y).norm(dim=-1)
        torch.testing.assert_close(ratio, torch.full_like(ratio, expected), rtol=1e-12, atol=0)


def test_psi_of_loss_is_residual_norm():
    v, y = torch.tensor([[3.0, 4.0]], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    loss = MSELoss()
    assert loss.psi(loss.value(v, y)).item() == pytest.approx(5.0, rel=1e-15)


def test_Psi_is_primitive_of_minus_psi_prime_squared_and_inverse():
    loss = MSELoss(1.7)
    s = torch.logspace(-10, 5, 50, dtype=torch.float64, requires_grad=True)
    (dPsi,) = torch.autograd.grad(loss.Psi(s).sum(), s)
    (dpsi,) = torch.autograd.grad(loss.psi(s).sum(), s)
    torch.testing.assert_close(dPsi, -(dpsi**2), rtol=1e-12, atol=0)
    torch.testing.assert_close(loss.Psi_inv(loss.Psi(s.detach())), s.detach(), rtol=1e-12, atol=0)


def test_bad_c_and_unknown_loss():
    with pytest.raises(ValueError, match="sqrt\\(2\\)"):
        MSELoss(1.0)
    with pytest.raises(ValueError, match="allowed: kl, logistic, mse"):
        get_loss("huber")


@pytest.mark.parametrize("name", ["kl", "logistic"])
def test_other_losses_gradients_against_autograd(name):
    gen = torch.Generator().manual_seed(0)
    if name == "kl":
        y = torch.poisson(torch.full((2, 6), 3.0), generator=gen).double()
        v = (torch.rand(2, 6, generator=gen, dtype=torch.float64) * 5 + 0.1).requires_grad_(True)
    else:
        y = torch.randint(0, 2, (2, 6), generator=gen).double() * 2 - 1
        v = torch.randn(2, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    loss = get_loss(name)
    loss.check_data(y)
    value = loss.value(v, y)
    (grad,) = torch.autograd.grad(value.sum(), v)
    torch.testing.assert_close(loss.grad(v.detach(), y), grad, rtol=1e-12, atol=1e-14)
    assert torch.all(value >= 0)


def test_kl_minimum_and_desingularizer():
    """KL: min 0 at v = y; (3) holds with ψ(s) = 2√(v_max s) wherever 0 < v ≤ v_max (our derivation)."""
    y = torch.tensor([[0.0, 1.0, 4.0, 10.0]], dtype=torch.float64)
    loss = KLLoss(v_max=20.0)
    assert loss.value(y, y).item() == 0.0
    gen = torch.Generator().manual_seed(1)
    v = torch.rand(5000, 4, generator=gen, dtype=torch.float64) * 20 + 1e-6
    s = loss.value(v, y).requires_grad_(True)
    (dpsi,) = torch.autograd.grad(loss.psi(s).sum(), s)
    assert torch.all(dpsi * loss.grad(v, y).norm(dim=-1) >= 1 - 1e-12)
    assert torch.isinf(loss.value(torch.tensor([[1.0, -1.0, 1.0, 1.0]], dtype=torch.float64), y)).all()
    with pytest.raises(ValueError, match="non-negative"):
        loss.check_data(-y)


def test_logistic_has_no_desingularizer():
    with pytest.raises(DesingularizerUnavailable, match="not attained"):
        LogisticLoss().psi(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="labels"):
        LogisticLoss().check_data(torch.tensor([0.5]))
