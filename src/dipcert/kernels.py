"""A fused CPU kernel for gradient descent on the two-layer DIP (W reduced to z = W u, and/or V).

One step of eq. (2) in the z-reduction of theory.md §6, followed by the next forward pass, is

    z⁺ = z − γ/√k · φ'(z) ⊙ Vᵀw,    V⁺ = V − γ/√k · w φ(z)ᵀ,    x⁺ = V⁺ φ(z⁺)/√k,

with w = Aᵀ∇ℓ(A x) the cotangent (z⁺ = z when W is fixed, V⁺ = V when V is fixed). Done as
matrix-vector products, V (n×k, by far the largest array) is read from memory twice per step, and
read and written once more when V trains. But column j of V enters (Vᵀw)_j, hence z⁺_j, its own
update, and x⁺ only through V⁺[:, j] φ(z⁺_j): everything can walk V column block by column block,
the second pass reading each block while it is still in cache. V is then read from memory once per
step (and written once when it trains). The kernel needs the columns of V contiguous, so it works
on Vᵀ (batch, k, n).

Work is split into chunks of columns whose number does not depend on the thread count, and the
partial sums of the chunks are added in a fixed order: the same input gives the same result, bit
for bit, whatever the number of threads. With one thread a serial loop runs, so that no thread
pool is started (its idle threads took CPU from a second process on a 2-core machine). Summation
order differs from the two-product path, so results agree with it to rounding (tested in float64).
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

#: Activations the kernel knows, by name (their codes in the kernel).
ACTIVATION_CODES = {"sigmoid": 0, "tanh": 1, "softplus": 2}
#: Columns of V per chunk of work: fixed, so that results do not depend on the thread count.
CHUNK_COLUMNS = 1024
#: Bytes of V a column block may take: the block is read twice and should stay in a core's L2.
BLOCK_BYTES = 256 * 1024

# Reassociation lets the reductions vectorize; no "nnan"/"ninf": non-finite values must propagate
# so that a diverging run is detected.
_FASTMATH = {"reassoc", "contract"}


@njit(cache=True, fastmath=_FASTMATH)
def _phi(x, code):
    if code == 0:
        return 1.0 / (1.0 + math.exp(-x))
    if code == 1:
        return math.tanh(x)
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(cache=True, fastmath=_FASTMATH)
def _dphi(x, code):
    if code == 1:
        t = math.tanh(x)
        return 1.0 - t * t
    s = 1.0 / (1.0 + math.exp(-x))  # sigmoid, and softplus' = sigmoid
    return s * (1.0 - s) if code == 0 else s


@njit(cache=True, fastmath=_FASTMATH)
def _descend_chunk(Vt, z, w, step, code, train_w, train_v, lo, hi, block, h, out):
    """Columns lo..hi−1 of one run: update z and V there, and write their share of V⁺ φ(z⁺) to ``out``."""
    n = Vt.shape[1]
    zero = Vt[0, 0] * 0
    for i in range(n):
        out[i] = zero
    for j0 in range(lo, hi, block):
        j1 = min(j0 + block, hi)
        for j in range(j0, j1):  # first pass over the block: (Vᵀw)_j, then z_j, V[:, j] and φ(z⁺_j)
            col = Vt[j]
            acc = zero
            for i in range(n):
                acc += col[i] * w[i]
            zj = z[j]
            if train_v:
                a = step * _phi(zj, code)
                for i in range(n):
                    col[i] += a * w[i]
            if train_w:
                zj = zj + step * acc * _dphi(zj, code)
                z[j] = zj
            h[j - j0] = _phi(zj, code)
        for j in range(j0, j1):  # second pass, from cache: V⁺[:, j0:j1] φ(z⁺[j0:j1])
            col = Vt[j]
            hj = h[j - j0]
            for i in range(n):
                out[i] += col[i] * hj


@njit(cache=True)
def _descend_item(Vt, z, w, steps, code, train_w, train_v, block, partial, item):
    """Work item ``item``: one chunk of columns of one run."""
    k = Vt.shape[1]
    chunks = partial.shape[0]
    run, chunk = item // chunks, item % chunks
    lo = chunk * CHUNK_COLUMNS
    hi = min(k, lo + CHUNK_COLUMNS)
    h = np.empty(block, dtype=Vt.dtype)
    _descend_chunk(Vt[run], z[run], w[run], steps[run], code, train_w, train_v, lo, hi, block, h, partial[chunk, run])


@njit(parallel=True, cache=True)
def _descend_parallel(Vt, z, w, steps, code, train_w, train_v, block, partial):
    for item in prange(Vt.shape[0] * partial.shape[0]):
        _descend_item(Vt, z, w, steps, code, train_w, train_v, block, partial, item)


@njit(cache=True)
def _descend_serial(Vt, z, w, steps, code, train_w, train_v, block, partial):
    for item in range(Vt.shape[0] * partial.shape[0]):
        _descend_item(Vt, z, w, steps, code, train_w, train_v, block, partial, item)


def _threads() -> int:
    """Threads for a kernel: torch's setting (capped by Numba's pool), so that a process limited to
    one thread (a worker of ``--cluster local:2`` here) starts no thread pool at all."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if threads > 1:
        numba.set_num_threads(threads)
    return threads


def fused_descent(Vt: Tensor, z: Tensor, w: Tensor, steps: Tensor, activation: str, *, train_w: bool = True,
                  train_v: bool = False) -> Tensor:
    """One gradient step in place and the next forward pass; returns V φ(z)/√k at the new point.

    z ← z + steps[b]/√k · φ'(z) ⊙ Vᵀw (when ``train_w``) and V ← V + steps[b]/√k · w φ(z)ᵀ (when
    ``train_v``), both from the old point. ``Vt`` (batch, k, n) is Vᵀ, contiguous; ``z`` (batch, k)
    contiguous; ``w`` (batch, n); ``steps`` (batch,) is −γ for a run that moves and 0 for a frozen
    one. CPU tensors only.
    """
    batch, k, n = Vt.shape
    if z.shape != (batch, k) or w.shape != (batch, n) or steps.shape != (batch,):
        raise ValueError(f"shapes do not match Vt {tuple(Vt.shape)}: z {tuple(z.shape)}, w {tuple(w.shape)}, "
                         f"steps {tuple(steps.shape)}")
    if not (Vt.is_contiguous() and z.is_contiguous()):
        raise ValueError("Vt and z must be contiguous (they are updated in place)")
    dtype = Vt.dtype
    block = max(1, min(CHUNK_COLUMNS, BLOCK_BYTES // (n * Vt.element_size())))
    partial = np.empty((math.ceil(k / CHUNK_COLUMNS), batch, n), dtype=Vt.numpy().dtype)
    scaled = (steps.to(torch.float64) / math.sqrt(k)).to(dtype)
    descend = _descend_parallel if _threads() > 1 else _descend_serial
    descend(Vt.numpy(), z.numpy(), w.to(dtype).contiguous().numpy(), scaled.numpy(), ACTIVATION_CODES[activation],
             train_w, train_v, block, partial)
    return torch.from_numpy(partial.sum(0)) * (1.0 / math.sqrt(k))


#: Elements per chunk of :func:`sqdist` (fixed, so that results do not depend on the thread count).
SQDIST_CHUNK = 1 << 16


@njit(cache=True, fastmath=_FASTMATH)
def _sqdist_chunk(a, b):
    acc = 0.0
    for i in range(a.shape[0]):
        d = np.float64(a[i]) - np.float64(b[i])
        acc += d * d
    return acc


@njit(cache=True)
def _sqdist_item(a, b, partial, item):
    chunks = partial.shape[1]
    run, chunk = item // chunks, item % chunks
    lo, hi = chunk * SQDIST_CHUNK, min(a.shape[1], (chunk + 1) * SQDIST_CHUNK)
    partial[run, chunk] = _sqdist_chunk(a[run, lo:hi], b[run, lo:hi])


@njit(parallel=True, cache=True)
def _sqdist_parallel(a, b, partial):
    for item in prange(a.shape[0] * partial.shape[1]):
        _sqdist_item(a, b, partial, item)


@njit(cache=True)
def _sqdist_serial(a, b, partial):
    for item in range(a.shape[0] * partial.shape[1]):
        _sqdist_item(a, b, partial, item)


def sqdist(a: Tensor, b: Tensor) -> Tensor:
    """‖a[r] − b[r]‖² per run r, in float64, for contiguous CPU tensors (batch, size) of one dtype:
    one read of each, no temporary (‖θ − θ_0‖ over V costs a training step otherwise)."""
    if a.shape != b.shape or a.dtype != b.dtype or a.dim() != 2 or not (a.is_contiguous() and b.is_contiguous()):
        raise ValueError(f"sqdist needs two contiguous (batch, size) tensors of one shape and dtype, got "
                         f"{tuple(a.shape)} {a.dtype} and {tuple(b.shape)} {b.dtype}")
    partial = np.empty((a.shape[0], max(1, math.ceil(a.shape[1] / SQDIST_CHUNK))))
    (_sqdist_parallel if _threads() > 1 else _sqdist_serial)(a.numpy(), b.numpy(), partial)
    return torch.from_numpy(partial.sum(1))
