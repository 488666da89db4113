"""Matrix-free spectra (dipcert.spectra): Lanczos on Jacobian products against closed-form Gram
matrices, dense autograd Jacobians and matrices of known spectrum; the certificate's labels for
networks without a dense Gram path."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dipcert.certify import _two_layer_gram, certify, gauss_newton_norm, jacobian_extremes
from dipcert.generators import ConvDecoder, DeepDecoder
from dipcert.images import load_image
from dipcert.networks import TwoLayerDIP
from dipcert.operators import GaussianBlur
from dipcert.problems import image_problem
from dipcert.spectra import dense_operator, extreme_eigenpairs

from jacobians import dense_jacobian  # tests/jacobians.py

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: a second thread only waits

SHAPE = (8, 8)


def _known_spectrum(eigenvalues: torch.Tensor, seed: int) -> torch.Tensor:
    """Q diag(eigenvalues) Qᵀ with Q a seeded random orthogonal matrix."""
    n = len(eigenvalues)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return (Q * eigenvalues) @ Q.T


def _blur_problem(seeds):
    image = load_image("builtin:camera", SHAPE)
    return image_problem(image, GaussianBlur(SHAPE, 1.0, dtype=torch.float64), seeds, 2.0)


# ---------------------------------------------------------------- the solver on known spectra


def test_ritz_values_bound_the_extremes_and_the_residual_locates_an_eigenvalue():
    """A 300×300 SPD matrix per run with eigenvalues 10⁻³…10² (log-spaced): converged to 1e-10, both
    ends match; stopped after 25 steps, not converged and said so, and still θ_max ≤ λ_max,
    θ_min ≥ λ_min, with an eigenvalue within the residual of each Ritz value."""
    eig = torch.logspace(-3, 2, 300, dtype=torch.float64)
    G = torch.stack([_known_spectrum(eig, 0), _known_spectrum(3 * eig, 1)])
    lam = torch.stack([eig, 3 * eig]).numpy()
    done = extreme_eigenpairs(dense_operator(G), 300, 2, tol=1e-10, max_iter=300, seed=4, vectors=True)
    assert done["largest"].converged.all() and done["smallest"].converged.all()
    np.testing.assert_allclose(done["largest"].value, lam[:, -1], rtol=1e-12)
    np.testing.assert_allclose(done["smallest"].value, lam[:, 0], rtol=1e-6)
    v = done["largest"].vector
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(2, dtype=torch.float64))
    residual = (torch.einsum("bij,bj->bi", G, v) - torch.as_tensor(done["largest"].value)[:, None] * v).norm(dim=-1)
    np.testing.assert_allclose(residual.numpy(), done["largest"].residual, rtol=1e-6, atol=1e-12)
    assert np.all(done.matvecs == done.iterations + 2) and "converged" in done.describe("smallest")

    early = extreme_eigenpairs(dense_operator(G), 300, 2, tol=1e-10, max_iter=25, seed=4)
    assert list(early.iterations) == [25, 25] and not early["smallest"].converged.any()
    assert "NOT converged in 2 of 2 runs (0, 1)" in early.describe("smallest")
    assert np.all(early["largest"].value <= lam[:, -1] * (1 + 1e-14))
    assert np.all(early["smallest"].value >= lam[:, 0] * (1 - 1e-14))
    assert np.all(early["smallest"].value > 10 * lam[:, 0])  # far off, hence the label
    for end in ("largest", "smallest"):
        pair = early[end]
        gap = np.abs(lam - pair.value[:, None]).min(-1)
        assert np.all(gap <= pair.residual * (1 + 1e-12))
        assert np.all(pair.residual > 0)


def test_runs_stop_on_their_own_test_and_match_the_run_alone():
    """Run b of a batch gives what it gives alone (same steps, same values), though the other run
    needs more steps; a Krylov space that fills the space ends the run with exact values."""
    easy, hard = torch.linspace(1, 2, 60, dtype=torch.float64), torch.logspace(-4, 0, 60, dtype=torch.float64)
    G = torch.stack([_known_spectrum(easy, 2), _known_spectrum(hard, 3)])
    both = extreme_eigenpairs(dense_operator(G), 60, 2, tol=1e-8)
    assert both.iterations[0] < both.iterations[1]
    for b in range(2):
        alone = extreme_eigenpairs(dense_operator(G[b : b + 1]), 60, 1, tol=1e-8)
        assert alone.iterations[0] == both.iterations[b]
        for end in ("largest", "smallest"):
            assert alone[end].value[0] == pytest.approx(both[end].value[b], rel=1e-12, abs=1e-15)
    full = extreme_eigenpairs(dense_operator(G[1:]), 60, 1, tol=1e-300, max_iter=500)
    assert full.iterations[0] == 60 and full["smallest"].value[0] == pytest.approx(1e-4, rel=1e-8)
    with pytest.raises(ValueError, match="ends must be"):
        extreme_eigenpairs(dense_operator(G), 60, 2, ends=("middle",))


# ---------------------------------------------------------------- Jacobian spectra of networks


def test_matrix_free_two_layer_spectrum_matches_the_closed_form_gram():
    """Lanczos on generic autograd products (VJP then JVP, jacobian_extremes) and on the two-layer
    net's own closed-form products, against eigvalsh of the closed-form Gram matrix V D² Vᵀ/k, to 1e-8."""
    net = TwoLayerDIP(128, 400, train="W", seeds=[0, 1], dtype=torch.float64)
    eig = torch.linalg.eigvalsh(_two_layer_gram(net)).numpy()
    params = net.initial_state()

    def closed_form(runs):
        sub, theta = net.select(runs), {k: p[runs] for k, p in params.items()}
        return lambda w: sub.ntk_matvec(theta, w)

    for result in (jacobian_extremes(net, tol=1e-12), extreme_eigenpairs(closed_form, net.n, net.batch, tol=1e-12)):
        np.testing.assert_allclose(result["largest"].value, eig[:, -1], rtol=1e-8)
        np.testing.assert_allclose(result["smallest"].value, eig[:, 0], rtol=1e-8)
        assert result["largest"].converged.all() and result["smallest"].converged.all()


@pytest.mark.parametrize("cls, options, full_rank", [
    (ConvDecoder, dict(channels=4, layers=2, input_size=2), False),  # p = 317 > n = 64, yet rank J < n
    (ConvDecoder, dict(channels=8, layers=2, input_size=2), True),  # p = 1209, σ_min > 0
    (DeepDecoder, dict(channels=2, layers=2), False),  # p = 33 < n = 64: λ_max only
])
def test_conv_spectra_match_the_svd_of_the_dense_jacobian(cls, options, full_rank):
    net = cls(SHAPE, seeds=[0, 1], dtype=torch.float64, **options)
    params = net.initial_state()
    result = jacobian_extremes(net, tol=1e-12)
    assert ("smallest" in result.ends) == (net.parameter_count >= net.n)
    for run in range(2):
        s2 = torch.linalg.svdvals(dense_jacobian(net, params, run)).numpy() ** 2
        lam_min = s2[net.n - 1] if len(s2) >= net.n else 0.0
        assert result["largest"].value[run] == pytest.approx(s2[0], rel=1e-10)
        if "smallest" in result.ends:
            assert (lam_min > 1e-8 * s2[0]) == full_rank
            assert result["smallest"].value[run] == pytest.approx(lam_min, rel=1e-8, abs=1e-12 * s2[0])


def test_gauss_newton_norm_matches_the_dense_product():
    """‖A J‖² by Lanczos on A (J (Jᵀ (Aᵀ w))) against the largest singular value of A J, dense."""
    problem = _blur_problem([0, 1])
    net = ConvDecoder(SHAPE, channels=8, layers=2, input_size=2, seeds=[0, 1], dtype=torch.float64)
    result = gauss_newton_norm(problem, net, tol=1e-12)
    A = problem.operator.to_dense()
    for run in range(2):
        exact = torch.linalg.matrix_norm(A @ dense_jacobian(net, net.initial_state(), run), ord=2).item() ** 2
        assert result["largest"].value[run] == pytest.approx(exact, rel=1e-10)
        assert result["largest"].value[run] <= exact * (1 + 1e-12)  # a lower bound


def test_runs_of_a_conv_batch_are_independent():
    """Each run's Lanczos stops on its own test: run b of a batch equals the run alone."""
    net = ConvDecoder(SHAPE, channels=8, layers=2, input_size=2, seeds=[3, 7], dtype=torch.float64)
    both = jacobian_extremes(net, tol=1e-8, seed=5)
    for b, seed in enumerate([3, 7]):
        alone = jacobian_extremes(ConvDecoder(SHAPE, channels=8, layers=2, input_size=2, seeds=[seed],
                                              dtype=torch.float64), tol=1e-8, seed=5)
        assert alone.iterations[0] == both.iterations[b]
        for end in ("largest", "smallest"):
            assert alone[end].value[0] == pytest.approx(both[end].value[b], rel=1e-9)


# ---------------------------------------------------------------- the certificate's labels


def test_fewer_parameters_than_pixels_give_sigma_min_zero_exactly_and_a_failed_verdict():
    problem = _blur_problem([0, 1])
    net = DeepDecoder(SHAPE, channels=2, layers=2, seeds=[0, 1], dtype=torch.float64)
    assert net.parameter_count < net.n
    cert = certify(problem, net, step=1e-6, hessian_iters=2, lipschitz_pairs=2)
    assert cert["sigma_min_J0"].kind == "exact" and np.all(cert["sigma_min_J0"].value == 0)
    assert "33 trained parameters < n = 64" in cert["sigma_min_J0"].note
    assert np.all(cert["condition_4"].value == 0) and not cert.holds.any()
    assert "condition_4_on_estimates" not in cert.quantities
    text = cert.verdict_text(1)
    assert "Condition (4) does not hold" in text and "rank J_g(0) <= p < n" in text and "step" not in text
    assert cert["sigma_max_J0"].kind == "lower bound" and cert["norm_AJ0_sq"].kind == "lower bound"


def test_conv_certificate_labels_ritz_values_as_bounds_and_stays_undecided():
    problem = _blur_problem([0])
    net = ConvDecoder(SHAPE, channels=8, layers=2, input_size=2, seeds=[0], dtype=torch.float64)
    cert = certify(problem, net, step=1e-9, hessian_iters=2, lipschitz_pairs=2, eigen_tol=1e-9)
    s2 = torch.linalg.svdvals(dense_jacobian(net, net.initial_state(), 0)).numpy() ** 2
    assert cert["sigma_min_J0"].kind == "upper bound" and cert["sigma_max_J0"].kind == "lower bound"
    assert cert["sigma_min_J0"].value[0] == pytest.approx(math.sqrt(s2[net.n - 1]), rel=1e-6)
    assert cert["sigma_max_J0"].value[0] == pytest.approx(math.sqrt(s2[0]), rel=1e-10)
    assert "Courant-Fischer" in cert["sigma_min_J0"].note and "tol 1e-09" in cert["sigma_min_J0"].note
    assert "converged" in cert["norm_AJ0_sq"].note
    assert cert.settings["eigen_tol"] == 1e-9 and cert.settings["eigen_max_iter"] == 300
    assert math.isnan(cert["condition_4"].value[0]) and "estimated" in cert.verdict_text()
    assert cert["condition_4_on_estimates"].value[0] in (0.0, 1.0)
    two_layer = certify(problem, TwoLayerDIP(64, 200, seeds=[0]), hessian_iters=0)
    assert two_layer["sigma_min_J0"].kind == "exact" and two_layer["norm_AJ0_sq"].kind == "lower bound"
