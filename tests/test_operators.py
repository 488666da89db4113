"""Tests for dipcert.operators: adjoints, dense forms, exact spectra, batching, dtypes, seeds, errors."""

import json
import math

import numpy as np
import pytest
import scipy.ndimage
import torch

from dipcert.operators import (
    BOUNDARIES,
    GaussianBlur,
    GaussianMatrix,
    Inpainting,
    LinearOperator,
    Matrix,
    OperatorError,
    Spectral,
    well_conditioned,
)

F64_EPS = torch.finfo(torch.float64).eps


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rank_deficient() -> Matrix:
    rng = np.random.default_rng(1)
    return Matrix(rng.standard_normal((6, 2)) @ rng.standard_normal((2, 5)))


REGISTRY = {
    "matrix_numpy": lambda: Matrix(np.random.default_rng(0).standard_normal((5, 8))),
    "matrix_rank_deficient": _rank_deficient,
    "matrix_batched_image": lambda: Matrix(_randn(3, 4, 6), in_shape=(2, 3)),
    "gaussian_tall": lambda: GaussianMatrix(9, 4, seed=1),
    "gaussian_batched": lambda: GaussianMatrix(4, 6, batch=3, seed=2),
    "gaussian_from_seeds": lambda: GaussianMatrix.from_seeds(3, 5, [7, 8]),
    # 3x4 with sigma 1.2: the kernel (11 taps) is wider than the image.
    **{
        f"blur_{boundary}_{h}x{w}": (lambda b=boundary, h=h, w=w, s=s: GaussianBlur((h, w), s, boundary=b))
        for boundary in BOUNDARIES
        for h, w, s in [(7, 10, 1.0), (13, 9, 0.7), (3, 4, 1.2)]
    },
    "spectral_wide": lambda: Spectral.random(12, m=8, seed=3),
    "spectral_tall_low_rank": lambda: Spectral.random(5, m=9, s=[3.0, 1.0, 0.5], seed=4),
    "well_conditioned_image": lambda: well_conditioned(30, seed=5, in_shape=(5, 6)),
    "inpainting_random": lambda: Inpainting.random((7, 10), 0.4, seed=6),
    "inpainting_numpy_mask": lambda: Inpainting(np.random.default_rng(2).random((4, 5)) < 0.5),
}


@pytest.fixture(params=list(REGISTRY), scope="module")
def op(request) -> LinearOperator:
    return REGISTRY[request.param]()


def _inner(a: torch.Tensor, b: torch.Tensor, batch_ndim: int) -> torch.Tensor:
    """Inner products over all but the first batch_ndim dims."""
    return (a * b).flatten(batch_ndim).sum(-1)


def _reference_sigma_min(sv: torch.Tensor, m: int, n: int) -> torch.Tensor:
    nonzero = sv > max(m, n) * F64_EPS * sv[..., :1]
    return torch.where(nonzero, sv, torch.inf).min(-1).values


# --------------------------------------------------------------------------- every operator


def test_adjointness_error(op):
    assert op.adjointness_error(generator=torch.Generator().manual_seed(1)) < 1e-10


def test_adjoint_against_dense_inner_products(op):
    D = op.to_dense()
    k = len(op.batch_shape)
    x = _randn(*op.batch_shape, op.in_size, seed=1)
    y = _randn(*op.batch_shape, op.out_size, seed=2)
    Dx = (D @ x.unsqueeze(-1)).squeeze(-1)
    DTy = (D.mT @ y.unsqueeze(-1)).squeeze(-1)
    lhs = _inner(op.forward_flat(x), y, k)  # <A x, y>
    rhs = _inner(x, DTy, k)  # <x, D^T y>
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-12)
    assert torch.allclose(_inner(x, op.adjoint_flat(y), k), _inner(Dx, y, k), rtol=1e-10, atol=1e-12)


def test_to_dense_matches_basis_vectors(op):
    D = op.to_dense()
    assert D.shape == (*op.batch_shape, op.out_size, op.in_size)
    for j in range(op.in_size):
        e = torch.zeros(op.in_size, dtype=torch.float64)
        e[j] = 1.0
        column = op.A(e.reshape(op.in_shape)).reshape(*op.batch_shape, op.out_size)
        torch.testing.assert_close(column, D[..., j], rtol=1e-12, atol=1e-14)


def test_adjoint_matches_transpose(op):
    DT = op.to_dense().mT
    for i in range(op.out_size):
        e = torch.zeros(op.out_size, dtype=torch.float64)
        e[i] = 1.0
        row = op.A_adjoint(e.reshape(op.out_shape)).reshape(*op.batch_shape, op.in_size)
        torch.testing.assert_close(row, DT[..., i], rtol=1e-12, atol=1e-14)


def test_spectrum_matches_svd_of_dense(op):
    ref = torch.linalg.svdvals(op.to_dense())
    norm = ref[..., 0]
    sv = op.singular_values()
    assert sv.dtype == torch.float64 and sv.shape == (*op.batch_shape, min(op.out_size, op.in_size))
    assert torch.all(sv[..., :-1] >= sv[..., 1:])
    torch.testing.assert_close(sv, ref, rtol=1e-10, atol=1e-13 * norm.max().item())
    assert op.norm().shape == op.batch_shape and op.sigma_min().shape == op.batch_shape
    torch.testing.assert_close(op.norm(), norm, rtol=1e-10, atol=0.0)
    ref_min = _reference_sigma_min(ref, op.out_size, op.in_size)
    torch.testing.assert_close(op.sigma_min(), ref_min, rtol=1e-10, atol=0.0)
    rank = (ref > max(op.out_size, op.in_size) * F64_EPS * ref[..., :1]).sum(-1)
    assert op.full_row_rank() == bool(op.out_size <= op.in_size and (rank == op.out_size).all())
    assert op.norm_kind in ("exact", "upper bound")


def test_spectrum_is_cached_and_protected(op):
    first = op.singular_values()
    first.zero_()
    assert op.singular_values().max() > 0


def test_leading_batch_dims(op):
    x = _randn(3, *op.batch_shape, *op.in_shape, seed=3)
    y = _randn(3, *op.batch_shape, *op.out_shape, seed=4)
    for f, v in [(op.A, x), (op.A_adjoint, y)]:
        torch.testing.assert_close(f(v), torch.stack([f(vi) for vi in v]), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(op(x), op.A(x), rtol=0.0, atol=0.0)
    flat = op.forward_flat(x.reshape(3, *op.batch_shape, op.in_size))
    torch.testing.assert_close(flat, op.A(x).reshape(flat.shape), rtol=0.0, atol=0.0)


def test_float32_copy_agrees(op):
    op32 = op.to(dtype=torch.float32)
    assert op32.dtype == torch.float32 and op.dtype == torch.float64  # op itself unchanged
    x = _randn(2, *op.batch_shape, *op.in_shape, seed=5)
    y = _randn(2, *op.batch_shape, *op.out_shape, seed=6)
    for f64, f32, v in [(op.A, op32.A, x), (op.A_adjoint, op32.A_adjoint, y)]:
        out32 = f32(v.float())
        assert out32.dtype == torch.float32
        ref = f64(v)
        assert (out32.double() - ref).norm() <= 1e-5 * ref.norm()
    torch.testing.assert_close(op32.norm(), op.norm(), rtol=1e-5, atol=0.0)


def test_autograd_vjp_is_adjoint(op):
    x = _randn(*op.batch_shape, *op.in_shape, seed=7).requires_grad_()
    y = _randn(*op.batch_shape, *op.out_shape, seed=8)
    (grad,) = torch.autograd.grad((op.A(x) * y).sum(), x)
    torch.testing.assert_close(grad, op.A_adjoint(y), rtol=0.0, atol=1e-12)


def test_bad_shapes_raise(op):
    expected_in = ", ".join(map(str, (*op.batch_shape, *op.in_shape)))
    expected_out = ", ".join(map(str, (*op.batch_shape, *op.out_shape)))
    bad_in = (*op.in_shape[:-1], op.in_shape[-1] + 1)
    bad_out = (*op.out_shape[:-1], op.out_shape[-1] + 1)
    with pytest.raises(OperatorError, match=rf"shape \(\.\.\., {expected_in}\)"):
        op.A(torch.zeros(bad_in, dtype=torch.float64))
    with pytest.raises(OperatorError, match=rf"shape \(\.\.\., {expected_out}\)"):
        op.A_adjoint(torch.zeros(bad_out, dtype=torch.float64))
    with pytest.raises(OperatorError, match=rf"\(\.\.\., {op.in_size}\)"):
        op.forward_flat(torch.zeros(op.in_size + 1, dtype=torch.float64))
    with pytest.raises(OperatorError, match=rf"\(\.\.\., {op.out_size}\)"):
        op.adjoint_flat(torch.zeros(op.out_size - 1, dtype=torch.float64))
    with pytest.raises(OperatorError, match="float32"):
        op.A(torch.zeros(*op.batch_shape, *op.in_shape, dtype=torch.float32))
    with pytest.raises(OperatorError, match="torch.Tensor"):
        op.A(np.zeros(op.in_shape))


def test_describe_is_json(op):
    d = json.loads(json.dumps(op.describe()))
    assert d["type"] == type(op).__name__ and d["in_shape"] == list(op.in_shape)


# --------------------------------------------------------------------------- Gaussian blur


def test_blur_64_circular_spectrum():
    blur = GaussianBlur((64, 64), 1.0)
    assert 1.5e-4 < blur.sigma_min().item() < 3e-4
    assert abs(blur.norm().item() - 1.0) < 1e-12
    assert blur.full_row_rank() and blur.norm_kind == "exact"


@pytest.mark.parametrize("shape, sigma", [((64, 64), 1.0), ((7, 10), 1.0), ((3, 4), 1.2), ((5, 3), 2.5)])
def test_circular_fft_equals_periodic_convolution(shape, sigma):
    blur = GaussianBlur(shape, sigma)
    g = blur.kernel_1d()
    r = blur.radius
    x = _randn(2, *shape, seed=9)
    offsets = range(-r, r + 1)
    direct = sum(
        g[i + r] * g[j + r] * torch.roll(x, shifts=(i, j), dims=(-2, -1)) for i in offsets for j in offsets
    )
    torch.testing.assert_close(blur.A(x), direct, rtol=0.0, atol=1e-12)
    torch.testing.assert_close(blur.A_adjoint(x), blur.A(x), rtol=0.0, atol=1e-12)  # symmetric kernel


SCIPY_MODES = {"circular": "grid-wrap", "zero": "constant", "reflect": "reflect", "replicate": "nearest"}


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape, sigma", [((7, 10), 1.0), ((13, 9), 0.7), ((3, 4), 1.2)])
def test_blur_matches_scipy_convolve(boundary, shape, sigma):
    blur = GaussianBlur(shape, sigma, boundary=boundary)
    g = blur.kernel_1d().numpy()
    x = _randn(*shape, seed=10)
    ref = scipy.ndimage.convolve(x.numpy(), np.outer(g, g), mode=SCIPY_MODES[boundary])
    np.testing.assert_allclose(blur.A(x).numpy(), ref, rtol=0, atol=1e-12)


def test_blur_kernel_normalised_and_radius():
    blur = GaussianBlur((8, 8), 1.3, truncate=3.0)
    assert blur.radius == math.ceil(3.0 * 1.3)
    assert abs(blur.kernel_1d().sum().item() - 1.0) < 1e-15


def test_replicate_blur_is_not_symmetric():
    D = GaussianBlur((5, 6), 1.0, boundary="replicate").to_dense()
    assert (D - D.mT).abs().max() > 1e-3


def test_blur_bad_parameters():
    for sigma in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(OperatorError, match="sigma"):
            GaussianBlur((8, 8), sigma)
    with pytest.raises(OperatorError, match="circular, zero, reflect, replicate"):
        GaussianBlur((8, 8), 1.0, boundary="periodic")
    with pytest.raises(OperatorError, match="shape"):
        GaussianBlur((8, 0), 1.0)
    with pytest.raises(OperatorError, match=r"\(H, W\)"):
        GaussianBlur((8, 8, 3), 1.0)
    with pytest.raises(OperatorError, match="dtype"):
        GaussianBlur((8, 8), 1.0, dtype=torch.float16)


# --------------------------------------------------------------------------- matrices and seeds


def test_from_seeds_independent_of_batching():
    batch = GaussianMatrix.from_seeds(4, 6, [3, 4])
    assert batch.batch_shape == (2,)
    assert torch.equal(batch.matrix[1], GaussianMatrix(4, 6, seed=4).matrix)
    from_generator = GaussianMatrix(4, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(batch.matrix[0], from_generator.matrix)


def test_same_seed_is_bit_identical():
    twice = [GaussianMatrix(5, 7, seed=11, batch=2).matrix for _ in range(2)]
    assert torch.equal(*twice)
    assert not torch.equal(GaussianMatrix(5, 7, seed=11).matrix, GaussianMatrix(5, 7, seed=12).matrix)
    assert torch.equal(Spectral.random(6, seed=1).matrix, Spectral.random(6, seed=1).matrix)
    masks = [Inpainting.random((6, 6), 0.3, seed=2).mask for _ in range(2)]
    assert torch.equal(*masks)
    single = GaussianMatrix(5, 7, seed=11, dtype=torch.float32)
    assert torch.equal(single.matrix, GaussianMatrix(5, 7, seed=11).matrix.float())


def test_batched_matrix_broadcasts_a_single_input():
    op = GaussianMatrix(4, 6, batch=3, seed=0)
    x = _randn(6, seed=1)
    torch.testing.assert_close(op.A(x), torch.stack([M @ x for M in op.matrix]), rtol=1e-14, atol=1e-14)
    with pytest.raises(OperatorError, match=r"\(\.\.\., 3, 6\)"):
        op.A(_randn(2, 6))


def test_well_conditioned_exact_spectrum():
    op = well_conditioned(64, seed=0)
    assert op.sigma_min().item() == 1.0 and op.norm().item() == 2.0
    eye = torch.eye(64, dtype=torch.float64)
    for Q in (op.U, op.V):
        torch.testing.assert_close(Q.mT @ Q, eye, rtol=0.0, atol=1e-12)
        torch.testing.assert_close(Q @ Q.mT, eye, rtol=0.0, atol=1e-12)
    assert op.full_row_rank()
    assert Spectral.well_conditioned(10, low=0.5, high=3.0, seed=1).sigma_min().item() == 0.5


def test_full_row_rank():
    assert GaussianMatrix(4, 6, seed=0).full_row_rank()
    assert not GaussianMatrix(6, 4, seed=0).full_row_rank()
    assert not _rank_deficient().full_row_rank()
    assert Inpainting.random((5, 5), 0.5, seed=0).full_row_rank()


def test_to_keeps_operator_and_returns_copy():
    op = GaussianMatrix(3, 4, seed=0)
    op.norm()
    moved = op.to("cpu")
    assert moved is not op and type(moved) is GaussianMatrix and moved.describe() == op.describe()
    op32 = op.to(dtype=torch.float32)
    assert op32.matrix.dtype == torch.float32 and op.matrix.dtype == torch.float64


def test_matrix_errors():
    for bad in (math.nan, math.inf):
        M = torch.ones(3, 4, dtype=torch.float64)
        M[1, 2] = bad
        with pytest.raises(OperatorError, match="matrix contains NaN or inf"):
            Matrix(M)
    with pytest.raises(OperatorError, match="matrix must have shape"):
        Matrix(torch.ones(4))
    with pytest.raises(OperatorError, match="in_shape"):
        Matrix(torch.ones(3, 4), in_shape=(3, 3))
    with pytest.raises(OperatorError, match="m must be a positive int"):
        GaussianMatrix(0, 4)
    with pytest.raises(OperatorError, match="either generator or seed"):
        GaussianMatrix(2, 2, generator=torch.Generator(), seed=1)
    with pytest.raises(OperatorError, match="orthonormal"):
        Spectral(torch.ones(3, 2), [1.0, 1.0], torch.eye(2))
    with pytest.raises(OperatorError, match="positive"):
        Spectral(torch.eye(2), [1.0, 0.0], torch.eye(2))
    with pytest.raises(OperatorError, match="low <= high"):
        well_conditioned(4, low=2.0, high=1.0)
    assert issubclass(OperatorError, ValueError)


def test_inpainting_errors_and_mask():
    with pytest.raises(OperatorError, match="keeps no pixel"):
        Inpainting(torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(OperatorError, match="boolean"):
        Inpainting(torch.ones(3, 3))
    for fraction in (0.0, -0.1, 1.5):
        with pytest.raises(OperatorError, match="keep_fraction"):
            Inpainting.random((4, 4), fraction, seed=0)
    op = Inpainting.random((7, 10), 0.4, seed=6)
    assert op.out_shape == (28,) and int(op.mask.sum()) == 28
    x = _randn(7, 10, seed=3)
    torch.testing.assert_close(op.A(x), x[op.mask], rtol=0.0, atol=0.0)
    assert torch.all(op.A_adjoint(op.A(x))[~op.mask] == 0)
