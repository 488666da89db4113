"""Linear forward operators A: R^n -> R^m for inverse problems y = A x + noise.

Operators act on torch tensors of shape ``(*batch, *in_shape)`` on any device, in float32 or
float64. Every random draw happens on CPU with a ``torch.Generator`` (or an int seed turned into
one) and is then moved to the target device, so a seed gives the same numbers everywhere.

Spectra are computed in float64 and cached. They are exact (up to float64 rounding) for every
class here, so ``norm()`` and ``sigma_min()`` can feed the certificates directly:

* ``Matrix`` / ``GaussianMatrix``: LAPACK SVD (``torch.linalg.svdvals``) of the stored matrix.
* ``Spectral``: the given singular values ``s``.
* ``GaussianBlur``, circular boundary: the circulant is diagonalised by the 2-D DFT, so the
  singular values are |DFT of the periodised 1-D kernel along H| x |... along W|.
* ``GaussianBlur``, other boundaries: the operator is the Kronecker product of two 1-D matrices,
  so the singular values are all products of their (float64 SVD) singular values.
* ``Inpainting``: a row selection, so all singular values are 1.

A singular value counts as zero when it is <= max(m, n) * eps(float64) * sigma_max.
"""

from __future__ import annotations

import abc
import copy
import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BOUNDARIES",
    "GaussianBlur",
    "GaussianMatrix",
    "Inpainting",
    "LinearOperator",
    "Matrix",
    "OperatorError",
    "Spectral",
    "well_conditioned",
]

BOUNDARIES = ("circular", "zero", "reflect", "replicate")
_EPS64 = torch.finfo(torch.float64).eps


class OperatorError(ValueError):
    """Bad operator parameters or bad input to an operator."""


# --------------------------------------------------------------------------- validation helpers


def _check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise OperatorError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return dtype


def _device(device: torch.device | str | None) -> torch.device:
    """Normalised device ('cuda' -> 'cuda:0'), CPU when None."""
    return torch.empty(0, device=device).device


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise OperatorError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _positive_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise OperatorError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _shape(value: object, name: str) -> tuple[int, ...]:
    items = (value,) if isinstance(value, numbers.Integral) else value
    if not isinstance(items, Sequence) or len(items) == 0:
        raise OperatorError(f"{name} must be a non-empty tuple of positive ints, got {value!r}")
    return tuple(_positive_int(v, name) for v in items)


def _as_float_tensor(value: object, name: str) -> Tensor:
    """Copy of a tensor / numpy array / nested list as a finite float32 or float64 tensor."""
    array_like = isinstance(value, (Tensor, np.ndarray))
    try:
        t = torch.as_tensor(value, dtype=None if array_like else torch.float64).detach().clone()
    except (TypeError, ValueError, RuntimeError) as err:
        raise OperatorError(f"{name} must be a torch tensor or numpy array ({err})") from None
    if t.dtype.is_complex:
        raise OperatorError(f"{name} must be real, got dtype {t.dtype}")
    if not t.dtype.is_floating_point:
        t = t.to(torch.float64)
    elif t.dtype not in (torch.float32, torch.float64):
        raise OperatorError(f"{name} has dtype {t.dtype}; float32 or float64 allowed")
    if not torch.isfinite(t).all():
        raise OperatorError(f"{name} contains NaN or inf")
    return t


def _generator(generator: torch.Generator | int | None = None, seed: int | None = None) -> torch.Generator:
    """CPU generator from a generator or an int seed; torch's global CPU generator if neither."""
    if generator is not None and seed is not None:
        raise OperatorError("give either generator or seed, not both")
    if isinstance(generator, numbers.Integral):
        generator, seed = None, generator
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise OperatorError(f"seed must be a non-negative int, got {seed!r}")
        return torch.Generator().manual_seed(int(seed))
    if generator is None:
        return torch.default_generator
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise OperatorError("generator must be a CPU torch.Generator or an int seed (draws happen on CPU)")
    return generator


def _broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Do shapes ``a`` and ``b`` broadcast together (torch's rule, without its per-call cost)?"""
    return a == b or all(p == q or p == 1 or q == 1 for p, q in zip(reversed(a), reversed(b)))


def _fmt(shape: Sequence[int]) -> str:
    return "(..., " + ", ".join(map(str, shape)) + ")"


# --------------------------------------------------------------------------- base class


class LinearOperator(abc.ABC):
    """Abstract linear operator A: R^n -> R^m acting on tensors of shape (*batch, *in_shape).

    Leading dimensions of the input broadcast against ``batch_shape`` (right-aligned, as in
    torch): an operator holding b matrices accepts ``(b, *in_shape)``, ``(k, b, *in_shape)`` or a
    single ``in_shape`` input (applied by every one of the b operators).
    """

    label = "operator"  # name used in error messages
    norm_kind: str  # "exact" or "upper bound": what norm() returns

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        batch_shape: tuple[int, ...] = (),
    ) -> None:
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        self.batch_shape = tuple(batch_shape)
        self._dtype = _check_dtype(dtype)
        self._device = _device(device)
        self._spectrum: Tensor | None = None
        self._params: dict = {}

    # -- subclass hooks
    @abc.abstractmethod
    def _apply(self, x: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def _apply_adjoint(self, y: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def _compute_singular_values(self) -> Tensor:
        """All min(m, n) singular values, descending, float64, on self.device."""

    @abc.abstractmethod
    def _convert(self, device: torch.device, dtype: torch.dtype) -> None:
        """Move / cast this (freshly copied) operator's tensors in place."""

    # -- shapes, dtype, device
    @property
    def in_size(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_size(self) -> int:
        return math.prod(self.out_shape)

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    # -- application
    def _check(self, x: object, shape: tuple[int, ...], who: str) -> Tensor:
        if not isinstance(x, Tensor):
            raise OperatorError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
        k = len(shape)
        ok = x.ndim >= k and tuple(x.shape[x.ndim - k :]) == shape
        if ok and self.batch_shape:
            ok = _broadcastable(tuple(x.shape[: x.ndim - k]), self.batch_shape)
        if not ok:
            raise OperatorError(
                f"{who} expects input of shape {_fmt(self.batch_shape + shape)}, got {tuple(x.shape)}"
            )
        if x.dtype != self.dtype or x.device != self.device:
            raise OperatorError(
                f"{who} works on {self.dtype} tensors on {self.device}, got {x.dtype} on {x.device};"
                " convert the input or use .to(device=..., dtype=...)"
            )
        return x

    def A(self, x: Tensor) -> Tensor:
        """A x for x of shape (*batch, *in_shape); returns (*batch, *out_shape)."""
        return self._apply(self._check(x, self.in_shape, self.label))

    def A_adjoint(self, y: Tensor) -> Tensor:
        """A^T y for y of shape (*batch, *out_shape); returns (*batch, *in_shape)."""
        return self._apply_adjoint(self._check(y, self.out_shape, f"{self.label} adjoint"))

    __call__ = A

    def _check_flat(self, x: object, size: int, who: str) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[-1] != size:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise OperatorError(f"{who} expects flat input of shape {_fmt((size,))}, got {got}")
        return x

    def forward_flat(self, x: Tensor) -> Tensor:
        """A on flattened vectors: (*batch, in_size) -> (*batch, out_size)."""
        x = self._check_flat(x, self.in_size, self.label)
        out = self.A(x.reshape(*x.shape[:-1], *self.in_shape))
        return out.reshape(*out.shape[: out.ndim - len(self.out_shape)], self.out_size)

    def adjoint_flat(self, y: Tensor) -> Tensor:
        """A^T on flattened vectors: (*batch, out_size) -> (*batch, in_size)."""
        y = self._check_flat(y, self.out_size, f"{self.label} adjoint")
        out = self.A_adjoint(y.reshape(*y.shape[:-1], *self.out_shape))
        return out.reshape(*out.shape[: out.ndim - len(self.in_shape)], self.in_size)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LinearOperator:
        """A new operator on ``device`` with data in ``dtype`` (self is left unchanged)."""
        device = self.device if device is None else _device(device)
        dtype = self.dtype if dtype is None else _check_dtype(dtype)
        new = copy.copy(self)
        new._device, new._dtype = device, dtype
        new._convert(device, dtype)
        # The data changes with the dtype, so the spectrum is recomputed then.
        keep = self._spectrum is not None and dtype == self.dtype
        new._spectrum = self._spectrum.to(device) if keep else None
        return new

    def select(self, indices: Tensor) -> LinearOperator:
        """The operators of the batch at ``indices`` (1-D index tensor); an unbatched operator is
        shared by every run and returned as is."""
        if not self.batch_shape:
            return self
        new = copy.copy(self)
        new._select(indices)
        new.batch_shape = (len(indices),)
        new._spectrum = None if self._spectrum is None else self._spectrum[indices.to(self._spectrum.device)]
        return new

    def _select(self, indices: Tensor) -> None:
        raise OperatorError(f"{type(self).__name__} does not support selecting batch items")

    # -- spectrum
    def singular_values(self) -> Tensor:
        """All singular values, descending, float64, shape (*batch_shape, min(m, n)); cached."""
        if self._spectrum is None:
            self._spectrum = self._compute_singular_values()
        return self._spectrum.clone()

    def _nonzero_count(self, sv: Tensor) -> Tensor:
        tol = max(self.in_size, self.out_size) * _EPS64 * sv[..., :1]
        return (sv > tol).sum(-1)

    def norm(self) -> Tensor:
        """Spectral norm ||A|| (largest singular value), float64, shape batch_shape."""
        return self.singular_values()[..., 0]

    def sigma_min(self) -> Tensor:
        """Smallest non-zero singular value, float64, shape batch_shape (0 for the zero operator)."""
        sv = self.singular_values()
        last = (self._nonzero_count(sv) - 1).clamp(min=0)
        return sv.gather(-1, last.unsqueeze(-1)).squeeze(-1)

    def full_row_rank(self) -> bool:
        """Whether Im(A) = R^m, i.e. m <= n and all m singular values are non-zero (every batch item)."""
        m = self.out_size
        return m <= self.in_size and bool((self._nonzero_count(self.singular_values()) == m).all())

    def injective(self) -> bool:
        """Whether ker(A) = {0}, i.e. n <= m and all n singular values are non-zero (every batch item)."""
        n = self.in_size
        return n <= self.out_size and bool((self._nonzero_count(self.singular_values()) == n).all())

    # -- checks and export
    def adjointness_error(self, generator: torch.Generator | int | None = None, trials: int = 3) -> float:
        """max |<Ax, y> - <x, A^T y>| / (||Ax|| ||y|| + ||x|| ||A^T y||) over Gaussian x, y.

        Computed in the operator's dtype; ``generator=None`` means seed 0.
        """
        g = _generator(0 if generator is None else generator)
        worst = 0.0
        for _ in range(_positive_int(trials, "trials")):
            x = torch.randn(*self.batch_shape, self.in_size, generator=g, dtype=self.dtype).to(self.device)
            y = torch.randn(*self.batch_shape, self.out_size, generator=g, dtype=self.dtype).to(self.device)
            ax, aty = self.forward_flat(x), self.adjoint_flat(y)
            gap = ((ax * y).sum(-1) - (x * aty).sum(-1)).abs()
            scale = ax.norm(dim=-1) * y.norm(dim=-1) + x.norm(dim=-1) * aty.norm(dim=-1)
            err = torch.where(scale > 0, gap / scale, torch.zeros_like(gap))
            worst = max(worst, err.max().item())
        return worst

    def to_dense(self) -> Tensor:
        """The matrix of A, shape (*batch_shape, out_size, in_size), by applying A to a basis."""
        n = self.in_size
        eye = torch.eye(n, dtype=self.dtype, device=self.device)
        basis = eye.reshape(n, *([1] * len(self.batch_shape)), *self.in_shape)
        columns = self.A(basis).reshape(n, *self.batch_shape, self.out_size)
        return columns.movedim(0, -1)

    def describe(self) -> dict:
        """JSON-able description: type, shapes, dtype and parameters (not the data)."""
        return {
            "type": type(self).__name__,
            "in_shape": list(self.in_shape),
            "out_shape": list(self.out_shape),
            "batch_shape": list(self.batch_shape),
            "dtype": str(self.dtype).removeprefix("torch."),
            "norm_kind": self.norm_kind,
            **self._params,
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "type")
        return f"{type(self).__name__}({params})"


# --------------------------------------------------------------------------- dense matrices


class Matrix(LinearOperator):
    """Dense matrix M of shape (m, n), or (b, m, n) for b independent operators; A x = M x.

    ``in_shape`` defaults to (n,) and may be e.g. (H, W) with H * W == n. The spectrum is the
    float64 SVD of M (exact up to rounding).
    """

    label = "matrix"
    norm_kind = "exact"

    def __init__(self, matrix: Tensor | np.ndarray, in_shape: Sequence[int] | None = None) -> None:
        M = _as_float_tensor(matrix, "matrix")
        if M.ndim not in (2, 3) or M.numel() == 0:
            raise OperatorError(
                f"matrix must have shape (m, n) or (b, m, n) with positive sizes, got {tuple(M.shape)}"
            )
        m, n = M.shape[-2:]
        in_shape = (n,) if in_shape is None else _shape(in_shape, "in_shape")
        if math.prod(in_shape) != n:
            raise OperatorError(
                f"in_shape {in_shape} has {math.prod(in_shape)} entries but the matrix has n = {n} columns"
            )
        super().__init__(in_shape, (m,), M.dtype, M.device, batch_shape=tuple(M.shape[:-2]))
        self.matrix = M

    def _apply(self, x: Tensor) -> Tensor:
        x = x.flatten(x.ndim - len(self.in_shape))
        return (x.unsqueeze(-2) @ self.matrix.mT).squeeze(-2)

    def _apply_adjoint(self, y: Tensor) -> Tensor:
        return (y.unsqueeze(-2) @ self.matrix).squeeze(-2).unflatten(-1, self.in_shape)

    def _compute_singular_values(self) -> Tensor:
        return torch.linalg.svdvals(self.matrix.to(torch.float64))

    def _convert(self, device: torch.device, dtype: torch.dtype) -> None:
        self.matrix = self.matrix.to(device=device, dtype=dtype)

    def _select(self, indices: Tensor) -> None:
        self.matrix = self.matrix[indices.to(self.matrix.device)]


class GaussianMatrix(Matrix):
    """Matrix with iid N(0, 1) entries, no 1/sqrt(m) scaling (the paper's Fig. 1-2).

    Entries are drawn in float64 on CPU, then cast and moved, so the float32 operator is the
    rounded float64 one. Without generator or seed, torch's global CPU generator is used (so
    ``torch.manual_seed`` applies). ``batch=b`` draws b matrices from the one generator; use
    :meth:`from_seeds` for batches whose items do not depend on the batching.
    """

    def __init__(
        self,
        m: int,
        n: int,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        batch: int | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        in_shape: Sequence[int] | None = None,
    ) -> None:
        shape = (_positive_int(m, "m"), _positive_int(n, "n"))
        if batch is not None:
            shape = (_positive_int(batch, "batch"), *shape)
        draw = torch.randn(shape, generator=_generator(generator, seed), dtype=torch.float64)
        super().__init__(draw.to(device=_device(device), dtype=_check_dtype(dtype)), in_shape)
        self._params = {"seed": seed}

    @classmethod
    def from_seeds(
        cls,
        m: int,
        n: int,
        seeds: Sequence[int],
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        in_shape: Sequence[int] | None = None,
    ) -> GaussianMatrix:
        """Batch whose matrix i is ``GaussianMatrix(m, n, seed=seeds[i])``, bit for bit."""
        m, n = _positive_int(m, "m"), _positive_int(n, "n")
        if len(seeds) == 0:
            raise OperatorError("seeds must be a non-empty list of ints")
        draws = [torch.randn(m, n, generator=_generator(seed=s), dtype=torch.float64) for s in seeds]
        op = cls.__new__(cls)
        matrices = torch.stack(draws).to(device=_device(device), dtype=_check_dtype(dtype))
        Matrix.__init__(op, matrices, in_shape)
        op._params = {"seeds": [int(s) for s in seeds]}
        return op


def conditioned_matrices(
    m: int,
    n: int,
    condition: float,
    seeds: Sequence[int],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Matrix:
    """A batch of m x n matrices A_i = U_i diag(s) V_iᵀ with a prescribed condition number: U_i, V_i
    Haar-random orthonormal (drawn from ``seeds[i]`` on CPU in float64), s geometric from
    σ_max = √m + √n (the edge of an iid N(0, 1) matrix's spectrum) down to σ_max/``condition``, so
    κ(A_i) = ``condition`` exactly; ``condition`` 1 gives σ_max times a partial isometry."""
    m, n = _positive_int(m, "m"), _positive_int(n, "n")
    condition = _positive_float(condition, "condition")
    rank = min(m, n)
    if condition < 1 or (rank == 1 and condition != 1):
        raise OperatorError(f"condition must be >= 1, and 1 when min(m, n) = 1; got {condition:g} for "
                            f"m = {m}, n = {n}")
    if len(seeds) == 0:
        raise OperatorError("seeds must be a non-empty list of ints")
    top = math.sqrt(m) + math.sqrt(n)
    s = top * torch.logspace(0.0, -math.log10(condition), rank, dtype=torch.float64)
    draws = []
    for seed in seeds:
        g = _generator(seed=seed)
        U, V = _random_orthonormal(m, rank, g), _random_orthonormal(n, rank, g)
        draws.append((U * s) @ V.mT)
    op = Matrix(torch.stack(draws).to(device=_device(device), dtype=_check_dtype(dtype)))
    op._params = {"kind": "conditioned", "condition": condition, "seeds": [int(seed) for seed in seeds]}
    return op


def _random_orthonormal(rows: int, cols: int, generator: torch.Generator) -> Tensor:
    """rows x cols float64 matrix with orthonormal columns: Q of a Gaussian QR, signs fixed by diag(R)."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return q * torch.sign(r.diagonal())


def _check_orthonormal(q: Tensor, name: str) -> None:
    """Check Q^T Q = I on a few fixed random probes z (O(rows * cols), unlike forming Q^T Q)."""
    q64 = q.to(torch.float64)
    probes = torch.Generator().manual_seed(0)
    z = torch.randn(q.shape[1], 4, generator=probes, dtype=torch.float64).to(q.device)
    err = ((q64.mT @ (q64 @ z) - z).norm(dim=0) / z.norm(dim=0)).max().item()
    if err > torch.finfo(q.dtype).eps ** 0.5:
        raise OperatorError(
            f"{name} must have orthonormal columns, but |{name}^T {name} z - z| / |z| = {err:.2e}"
        )


class Spectral(Matrix):
    """A = U diag(s) V^T from its compact SVD: U (m, r), V (n, r) orthonormal columns, s (r,) > 0.

    The spectrum is ``s`` itself (padded with zeros to min(m, n)), exact for the operator
    defined by (U, s, V); A is applied through the dense product, precomputed once in float64.
    """

    label = "spectral operator"

    def __init__(
        self,
        U: Tensor | np.ndarray,
        s: Tensor | np.ndarray | Sequence[float],
        V: Tensor | np.ndarray,
        in_shape: Sequence[int] | None = None,
    ) -> None:
        U, V = _as_float_tensor(U, "U"), _as_float_tensor(V, "V")
        s = _as_float_tensor(s, "s").to(device=U.device, dtype=torch.float64)
        r = s.numel()
        if U.ndim != 2 or V.ndim != 2 or s.ndim != 1 or r == 0 or not U.shape[1] == V.shape[1] == r:
            raise OperatorError(
                f"expected U (m, r), s (r,), V (n, r) with r >= 1, got U {tuple(U.shape)},"
                f" s {tuple(s.shape)}, V {tuple(V.shape)}"
            )
        if V.dtype != U.dtype or V.device != U.device:
            raise OperatorError(
                f"U and V must share dtype and device,"
                f" got {U.dtype} on {U.device} and {V.dtype} on {V.device}"
            )
        if not (s > 0).all():
            raise OperatorError("s must be positive (it lists the non-zero singular values)")
        _check_orthonormal(U, "U")
        _check_orthonormal(V, "V")
        dense = (U.to(torch.float64) * s) @ V.to(torch.float64).mT
        super().__init__(dense.to(U.dtype), in_shape)
        self.U, self.s, self.V = U, s, V
        self._params = {"rank": r}

    def _compute_singular_values(self) -> Tensor:
        sv = torch.zeros(min(self.out_size, self.in_size), dtype=torch.float64, device=self.device)
        sv[: self.s.numel()] = self.s.sort(descending=True).values
        return sv

    def _convert(self, device: torch.device, dtype: torch.dtype) -> None:
        super()._convert(device, dtype)
        self.U = self.U.to(device=device, dtype=dtype)
        self.V = self.V.to(device=device, dtype=dtype)
        self.s = self.s.to(device)

    @classmethod
    def random(
        cls,
        n: int,
        m: int | None = None,
        s: Tensor | Sequence[float] | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        in_shape: Sequence[int] | None = None,
    ) -> Spectral:
        """R^n -> R^m (m defaults to n) with random orthonormal U then V, drawn on CPU in float64.

        ``s`` (at most min(m, n) positive values) defaults to linspace(1, 2, min(m, n)).
        """
        n = _positive_int(n, "n")
        m = n if m is None else _positive_int(m, "m")
        k = min(m, n)
        s = torch.linspace(1.0, 2.0, k, dtype=torch.float64) if s is None else _as_float_tensor(s, "s")
        if s.ndim != 1 or not 1 <= s.numel() <= k:
            raise OperatorError(
                f"s must be a vector of 1 to min(m, n) = {k} values, got shape {tuple(s.shape)}"
            )
        g = _generator(generator, seed)
        U = _random_orthonormal(m, s.numel(), g)
        V = _random_orthonormal(n, s.numel(), g)
        device, dtype = _device(device), _check_dtype(dtype)
        op = cls(U.to(device=device, dtype=dtype), s, V.to(device=device, dtype=dtype), in_shape)
        op._params["seed"] = seed
        return op

    @classmethod
    def well_conditioned(
        cls,
        n: int,
        low: float = 1.0,
        high: float = 2.0,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        in_shape: Sequence[int] | None = None,
    ) -> Spectral:
        """The paper's well-conditioned operator (Fig. 3b): square n x n, random orthogonal U, V,
        s = linspace(low, high, n), so sigma_min = low and ||A|| = high exactly."""
        low, high = _positive_float(low, "low"), _positive_float(high, "high")
        if low > high:
            raise OperatorError(f"need low <= high, got low={low}, high={high}")
        n = _positive_int(n, "n")
        s = torch.linspace(low, high, n, dtype=torch.float64)
        op = cls.random(n, s=s, generator=generator, seed=seed, dtype=dtype, device=device, in_shape=in_shape)
        op._params.update(kind="well_conditioned", low=low, high=high)
        return op


well_conditioned = Spectral.well_conditioned


# --------------------------------------------------------------------------- Gaussian blur


def _boundary_index(j: Tensor, size: int, boundary: str) -> Tensor:
    """Map (possibly out-of-range) indices into [0, size); "zero" leaves them for the caller to drop."""
    if boundary == "circular":
        return j % size
    if boundary == "reflect":  # half-sample symmetric: x[-1] = x[0], period 2 * size
        j = j % (2 * size)
        return torch.where(j >= size, 2 * size - 1 - j, j)
    if boundary == "replicate":
        return j.clamp(0, size - 1)
    return j


class GaussianBlur(LinearOperator):
    """Convolution of an H x W image with a normalised sampled Gaussian (the paper's Fig. 3a).

    1-D taps exp(-i^2 / (2 sigma^2)) for |i| <= r = ceil(truncate * sigma), normalised to sum 1;
    the 2-D kernel is their outer product. Boundaries: "circular" (periodic, applied with rfft2),
    "zero", "reflect" (half-sample symmetric, x[-1] = x[0]) and "replicate" (edge), the last
    three as A X = K_h X K_w^T with dense 1-D matrices. Kernels wider than the image wrap or
    reflect as many times as needed. "replicate" gives a non-symmetric matrix.
    """

    label = "Gaussian blur"
    norm_kind = "exact"

    def __init__(
        self,
        shape: tuple[int, int],
        sigma: float,
        boundary: str = "circular",
        truncate: float = 4.0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        shape = _shape(shape, "shape")
        if len(shape) != 2:
            raise OperatorError(f"shape must be (H, W), got {shape}")
        if boundary not in BOUNDARIES:
            raise OperatorError(f"unknown boundary {boundary!r}; allowed: {', '.join(BOUNDARIES)}")
        super().__init__(shape, shape, dtype, device)
        self.sigma = _positive_float(sigma, "sigma")
        self.truncate = _positive_float(truncate, "truncate")
        self.boundary = boundary
        self.radius = math.ceil(self.truncate * self.sigma)
        self._params = {
            "sigma": self.sigma,
            "boundary": boundary,
            "truncate": self.truncate,
            "radius": self.radius,
        }
        self._convert(self.device, self.dtype)

    def kernel_1d(self) -> Tensor:
        """Normalised 1-D taps for offsets -r..r, float64 on CPU."""
        i = torch.arange(-self.radius, self.radius + 1, dtype=torch.float64)
        g = torch.exp(-(i**2) / (2 * self.sigma**2))
        return g / g.sum()

    def kernel_2d(self) -> Tensor:
        """The (2r+1) × (2r+1) kernel, the outer product of the 1-D taps, float64 on CPU."""
        k = self.kernel_1d()
        return torch.outer(k, k)

    def _wrapped_kernel(self, size: int) -> Tensor:
        """The 1-D kernel periodised to length ``size`` (taps beyond the image add up)."""
        offsets = torch.arange(-self.radius, self.radius + 1) % size
        return torch.zeros(size, dtype=torch.float64).index_add_(0, offsets, self.kernel_1d())

    def _matrix_1d(self, size: int) -> Tensor:
        """size x size float64 1-D blur matrix: (K x)[p] = sum_i g[i] x[p - i], x extended by the boundary."""
        rows = torch.arange(size)
        K = torch.zeros(size, size, dtype=torch.float64)
        for offset, weight in zip(range(-self.radius, self.radius + 1), self.kernel_1d().tolist()):
            cols = _boundary_index(rows - offset, size, self.boundary)
            keep = (cols >= 0) & (cols < size)  # drops taps outside the image ("zero" only)
            K[rows[keep], cols[keep]] += weight
        return K

    def _convert(self, device: torch.device, dtype: torch.dtype) -> None:
        H, W = self.in_shape
        if self.boundary == "circular":
            fh = torch.fft.fft(self._wrapped_kernel(H))
            transfer = fh.unsqueeze(-1) * torch.fft.rfft(self._wrapped_kernel(W))
            complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
            self._transfer = transfer.to(device=device, dtype=complex_dtype)
        else:
            self._kh = self._matrix_1d(H).to(device=device, dtype=dtype)
            self._kw = self._matrix_1d(W).to(device=device, dtype=dtype)

    def _apply(self, x: Tensor) -> Tensor:
        if self.boundary == "circular":
            return torch.fft.irfft2(torch.fft.rfft2(x) * self._transfer, s=self.in_shape)
        return self._kh @ x @ self._kw.mT

    def _apply_adjoint(self, y: Tensor) -> Tensor:
        if self.boundary == "circular":
            return torch.fft.irfft2(torch.fft.rfft2(y) * self._transfer.conj(), s=self.in_shape)
        return self._kh.mT @ y @ self._kw

    def _compute_singular_values(self) -> Tensor:
        H, W = self.in_shape
        if self.boundary == "circular":
            sh = torch.fft.fft(self._wrapped_kernel(H)).abs()
            sw = torch.fft.fft(self._wrapped_kernel(W)).abs()
        else:
            sh = torch.linalg.svdvals(self._matrix_1d(H))
            sw = torch.linalg.svdvals(self._matrix_1d(W))
        sv = (sh.unsqueeze(-1) * sw).flatten().sort(descending=True).values
        return sv.to(self.device)


# --------------------------------------------------------------------------- inpainting


class Inpainting(LinearOperator):
    """Pixel selection: A x = x[mask] (out_shape = (number kept,)); A^T puts values back, zeros elsewhere.

    A A^T = I, so all singular values are exactly 1 and A has full row rank.
    """

    label = "inpainting"
    norm_kind = "exact"

    def __init__(
        self,
        mask: Tensor | np.ndarray,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        try:
            mask = torch.as_tensor(mask).detach().clone()
        except (TypeError, ValueError, RuntimeError) as err:
            raise OperatorError(f"mask must be a boolean torch tensor or numpy array ({err})") from None
        if mask.dtype != torch.bool or mask.ndim == 0:
            raise OperatorError(
                f"mask must be a boolean array of at least 1 dimension,"
                f" got {mask.dtype} of shape {tuple(mask.shape)}"
            )
        kept = int(mask.sum())
        if kept == 0:
            raise OperatorError("mask keeps no pixel; at least one entry must be True")
        device = mask.device if device is None else _device(device)
        super().__init__(tuple(mask.shape), (kept,), dtype, device)
        self.mask = mask.to(self.device)
        self._index = self.mask.flatten().nonzero().squeeze(1)
        self._params = {"kept": kept, "keep_fraction": kept / mask.numel()}

    @staticmethod
    def kept_count(n: int, keep_fraction: float) -> int:
        """Pixels a random mask keeps out of ``n``: max(1, round(keep_fraction · n))."""
        return max(1, round(keep_fraction * n))

    @classmethod
    def random(
        cls,
        shape: Sequence[int],
        keep_fraction: float,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> Inpainting:
        """Mask keeping exactly max(1, round(keep_fraction * n)) pixels chosen uniformly (randperm on CPU)."""
        shape = _shape(shape, "shape")
        real = isinstance(keep_fraction, numbers.Real) and not isinstance(keep_fraction, bool)
        if not real or not 0 < keep_fraction <= 1:
            raise OperatorError(f"keep_fraction must be in (0, 1], got {keep_fraction!r}")
        n = math.prod(shape)
        kept = torch.randperm(n, generator=_generator(generator, seed))[: cls.kept_count(n, keep_fraction)]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[kept] = True
        op = cls(mask.reshape(shape), dtype=dtype, device=device)
        op._params["seed"] = seed
        return op

    def _apply(self, x: Tensor) -> Tensor:
        return x.flatten(x.ndim - len(self.in_shape)).index_select(-1, self._index)

    def _apply_adjoint(self, y: Tensor) -> Tensor:
        out = y.new_zeros(*y.shape[:-1], self.in_size).index_copy(-1, self._index, y)
        return out.unflatten(-1, self.in_shape)

    def _compute_singular_values(self) -> Tensor:
        return torch.ones(self.out_size, dtype=torch.float64, device=self.device)

    def _convert(self, device: torch.device, dtype: torch.dtype) -> None:
        self.mask = self.mask.to(device)
        self._index = self._index.to(device)
