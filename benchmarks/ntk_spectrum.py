"""The prior of each generator, made visible: the spectrum of its tangent kernel at θ_0 (issue 12, item 4).

Near initialization, gradient descent on ½‖A g(θ) − y‖² moves the residual r = y − A g(θ) by
r ← (I − γ M) r with M = A J Jᵀ Aᵀ, J = J_g(θ_0): the components of y along M's leading eigenvectors
are fitted first. For every generator of dipcert at its default options (seed 0, built as
``dipcert solve --operator blur`` builds it) this script computes the top K eigenpairs of

  - J Jᵀ            the generator's own kernel (what it would fit first if A were the identity);
  - M = A J Jᵀ Aᵀ   the kernel that drives the fit of y on the blur problem;

and, as the reference, of M = A Aᵀ (J Jᵀ = I: gradient descent on x itself, i.e. Landweber). Reported:

  - λ_i/λ_1 against i, for both kernels;
  - f̄_i, the mean radial frequency of eigenvector i (cycles/pixel, weighted by the power of its 2-D
    FFT); white noise: the mean of |f| over the FFT grid, 0.383 at 64×64;
  - the neighbour coupling of J Jᵀ: the mean of K[p, q]/K[p, p] over the 4 neighbours q of 16 pixels
    p on a grid (what links an unobserved pixel to observed ones, e.g. in inpainting);
  - the fractions of the energy of A x̄, of its zero-mean part A x̄ − mean, of the constant image and
    of white noise ε (mean over 8 draws) in the span of the top K eigenvectors of M. White noise puts
    K/m of its energy into any K-dimensional subspace, whatever the kernel: its column is the baseline;
  - ρ = (vᵀMv/‖v‖²) / mean_ε(εᵀMε/‖ε‖²) for v = A x̄ − mean: how many times faster than white noise
    the zero-mean signal is fitted at the first step (the initial decrease of ½‖r‖² along v is
    vᵀMv); computed with M itself, no truncation to K.

Problem: ``builtin:camera`` resized to SIZE×SIZE, ``GaussianBlur(σ = 1, circular)`` (the defaults of
``dipcert solve --operator blur``). Networks: ``two-layer`` (eq. (9), k = 10⁴, W and V trained),
``mlp`` (widths (256,)) and every entry of ``dipcert.generators.GENERATORS``, each built by
``dipcert.solve.build_network`` from the registry defaults.

Products with J Jᵀ: the two-layer net's closed form (``TwoLayerDIP.ntk_matvec``, applied here to a
block of vectors at once and checked against it), ``Network.ntk_matvec`` for the MLP, and for the
convolutional generators one vjp and one jvp batched over a block by ``torch.func.vmap`` (checked
against ``ntk_matvec``). Float64, except the convolutional generators' products: float32 (dipcert's
image default; float64 convolutions take PyTorch's slow path) — relative error ~1e-7, measured.

Eigen-solvers (``--solver auto``), all seeded:
  - ``scipy.sparse.linalg.eigsh`` (ARPACK, which="LA", seeded v0) on a LinearOperator where a single
    product is cheap: the MLP and the Landweber reference;
  - the two-layer net: a single product reads V (4096 × 10⁴) twice, ~0.1 s, and ARPACK needs ~10³ of
    them on its flat spectrum; by blocks of 64 it costs ~4 ms per vector, so J Jᵀ is assembled from n
    block products, A J Jᵀ Aᵀ from it by FFTs, and LAPACK (scipy.linalg.eigh, subset by index) gives
    the top K eigenpairs of both;
  - the convolutional generators: a single vjp + jvp takes seconds, tens of ms per vector in a vmapped
    block; a block Krylov space [X, MX, M²X, …] (X seeded Gaussian, each new block orthogonalized twice
    against the basis) with Rayleigh–Ritz, grown by blocks until each of the top K Ritz pairs has
    ‖M x − λ x‖ ≤ rtol·λ or the dimension cap is reached.
The residuals ‖M x_i − λ_i x_i‖/λ_i of the returned pairs are computed explicitly and printed.

Usage (the figure of docs/generators.md):
    python benchmarks/ntk_spectrum.py --k 100 --size 64 --out docs/figures/ntk_spectrum.png
"""
from __future__ import annotations

import os
import sys


def _threads(argv: list[str]) -> str:
    """--threads N from the command line (read before numpy starts its BLAS threads)."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _threads(sys.argv[1:]))

import argparse  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
import scipy.sparse.linalg as sla  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, machine_busy_seconds  # noqa: E402

from dipcert.config import RunConfig  # noqa: E402
from dipcert.generators import GENERATORS, ConvGenerator  # noqa: E402
from dipcert.networks import TwoLayerDIP  # noqa: E402
from dipcert.solve import build_network, build_problem  # noqa: E402

LANDWEBER = "landweber"
NOISE_DRAWS = 8
CHUNK = 32  # vectors per vmapped product of a convolutional generator
Apply = Callable[[np.ndarray], np.ndarray]  # (b, n) float64 -> (b, n) float64


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------------------------- kernels
def kernel_apply(net, params) -> tuple[Apply, str]:
    """W (b, n) ↦ (J Jᵀ Wᵀ)ᵀ, and how it is computed; checked against ``net.ntk_matvec``."""
    to_torch = lambda W: torch.as_tensor(W, dtype=net.dtype)  # noqa: E731
    if isinstance(net, TwoLayerDIP):
        # the closed form of TwoLayerDIP.ntk_matvec, for a block: J Jᵀ = V D² Vᵀ/k (+ ‖φ(z)‖²/k I)
        z = net.hidden(params)[0]
        V = params.get("V", net.V0)[0]
        dphi2 = net.activation.derivative(z) ** 2
        shift = float(net.activation(z).pow(2).sum() / net.k) if net.trains_v else 0.0
        scale_w = 1.0 if net.trains_w else 0.0

        def apply(W: np.ndarray) -> np.ndarray:
            T = to_torch(W)
            return (scale_w * ((T @ V) * dphi2) @ V.T / net.k + shift * T).double().numpy()
        how = "closed form"
    elif isinstance(net, ConvGenerator):
        _, vjp_fn = torch.func.vjp(net.function, params)
        vjp_b = torch.func.vmap(lambda w: vjp_fn(w)[0])
        jvp_b = torch.func.vmap(lambda t: torch.func.jvp(net.function, (params,), (t,))[1])

        def apply(W: np.ndarray) -> np.ndarray:
            out = [jvp_b(vjp_b(c.unsqueeze(1))).squeeze(1) for c in to_torch(W).split(CHUNK)]
            return torch.cat(out).double().numpy()
        how = "vmapped vjp + jvp"
    else:
        def apply(W: np.ndarray) -> np.ndarray:
            return torch.cat([net.ntk_matvec(params, w[None]) for w in to_torch(W)]).double().numpy()
        how = "ntk_matvec"
    w = np.random.default_rng(12345).standard_normal((1, net.n))
    ref = net.ntk_matvec(params, to_torch(w)).double().numpy()
    err = float(np.linalg.norm(apply(w) - ref) / np.linalg.norm(ref))
    tol = 1e-10 if net.dtype == torch.float64 else 1e-4
    if not err <= tol:
        raise RuntimeError(f"block product differs from ntk_matvec by {err:.1e} (relative)")
    return apply, how


def with_operator(apply_k: Apply | None, op) -> Apply:
    """W ↦ rows of A K Aᵀ, A the blur, in float64 (K = I when apply_k is None)."""
    A = lambda W: op.forward_flat(torch.as_tensor(W, dtype=op.dtype)).double().numpy()  # noqa: E731
    At = lambda W: op.adjoint_flat(torch.as_tensor(W, dtype=op.dtype)).double().numpy()  # noqa: E731
    if apply_k is None:
        return lambda W: A(At(W))
    return lambda W: A(apply_k(At(W)))


# ----------------------------------------------------------------------------------- solvers
@dataclass
class Eigen:
    values: np.ndarray  # (K,), descending
    vectors: np.ndarray  # (n, K), orthonormal columns
    residuals: np.ndarray  # ‖M x_i − λ_i x_i‖ / λ_i
    products: int  # products with M (vectors), residual checks included; Krylov: the space's dimension
    solver: str
    seconds: float


def top_eigs_eigsh(apply: Apply, n: int, k: int, seed: int, tol: float) -> Eigen:
    t0 = time.perf_counter()
    count = [0]

    def matvec(v):
        count[0] += 1
        return apply(np.asarray(v, dtype=np.float64).reshape(1, n))[0]

    op = sla.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    values, vectors = sla.eigsh(op, k=k, which="LA", v0=v0, tol=tol, ncv=min(n, max(2 * k + 1, k + 64)))
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    MX = apply(vectors.T).T
    residuals = np.linalg.norm(MX - vectors * values, axis=0) / np.abs(values)
    return Eigen(values, vectors, residuals, count[0] + k, "eigsh", time.perf_counter() - t0)


def top_eigs_dense(M: np.ndarray, k: int) -> Eigen:
    """The top k eigenpairs of a symmetric matrix by LAPACK (scipy.linalg.eigh, subset by index)."""
    t0 = time.perf_counter()
    n = M.shape[0]
    M = (M + M.T) / 2
    values, vectors = scipy.linalg.eigh(M, subset_by_index=[n - k, n - 1])
    values, vectors = values[::-1], vectors[:, ::-1]
    residuals = np.linalg.norm(M @ vectors - vectors * values, axis=0) / np.abs(values)
    return Eigen(values, vectors, residuals, 0, "LAPACK eigh", time.perf_counter() - t0)


def _orthogonalize(R: np.ndarray, basis: np.ndarray) -> np.ndarray:
    for _ in range(2):
        R = R - basis @ (basis.T @ R)
    Q = np.linalg.qr(R)[0]
    return np.linalg.qr(Q - basis @ (basis.T @ Q))[0]


def top_eigs_block_krylov(apply: Apply, n: int, k: int, seed: int, block: int, max_dim: int,
                          rtol: float) -> Eigen:
    """Rayleigh–Ritz on the block Krylov space [X, MX, M²X, …] (block Lanczos with full
    reorthogonalization): the product M Q_j that builds the next block is kept, so the Ritz matrix
    QᵀMQ and the residuals M x − λ x need no further products. Grows until the top k Ritz pairs have
    relative residuals ≤ rtol or the dimension reaches max_dim."""
    t0 = time.perf_counter()
    Q = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, block)))[0]
    basis, Mbasis = np.zeros((n, 0)), np.zeros((n, 0))
    while True:
        MQ = apply(Q.T).T
        basis, Mbasis = np.hstack([basis, Q]), np.hstack([Mbasis, MQ])
        dim = basis.shape[1]
        if dim >= k + block or dim + block > max_dim:
            H = basis.T @ Mbasis
            theta, S = np.linalg.eigh((H + H.T) / 2)
            order = np.argsort(theta)[::-1][:k]
            values, S = theta[order], S[:, order]
            vectors, MX = basis @ S, Mbasis @ S
            residuals = np.linalg.norm(MX - vectors * values, axis=0) / np.abs(values)
            if residuals.max() <= rtol or dim + block > max_dim:
                break
        Q = _orthogonalize(MQ, basis)
    return Eigen(values, vectors, residuals, dim, "block Krylov", time.perf_counter() - t0)


# ------------------------------------------------------------------------------- frequencies
def radial_frequency_grid(shape: tuple[int, int]) -> np.ndarray:
    fy, fx = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), indexing="ij")
    return np.sqrt(fx**2 + fy**2)


def mean_radial_frequency(vectors: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Σ_f |f| |v̂(f)|² / Σ_f |v̂(f)|² for each column v (cycles/pixel)."""
    power = np.abs(np.fft.fft2(vectors.T.reshape(-1, *shape))) ** 2
    return (power * radial_frequency_grid(shape)).sum(axis=(1, 2)) / power.sum(axis=(1, 2))


def probe_pixels(shape: tuple[int, int], per_side: int = 4) -> list[tuple[int, int]]:
    rows = [int((i + 0.5) * shape[0] / per_side) for i in range(per_side)]
    cols = [int((j + 0.5) * shape[1] / per_side) for j in range(per_side)]
    return [(r, c) for r in rows for c in cols]


def neighbour_coupling(apply_k: Apply, shape: tuple[int, int]) -> tuple[float, np.ndarray]:
    """Mean K[p, q]/K[p, p] over the 4 neighbours q of the probe pixels p, and the row K[p, ·] of the
    probe pixel nearest the centre (as an image)."""
    H, W = shape
    pixels = probe_pixels(shape)
    E = np.zeros((len(pixels), H * W))
    for i, (r, c) in enumerate(pixels):
        E[i, r * W + c] = 1.0
    rows = apply_k(E).reshape(-1, H, W)
    ratios = [rows[i, (r + dr) % H, (c + dc) % W] / rows[i, r, c]
              for i, (r, c) in enumerate(pixels) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    centre = min(range(len(pixels)), key=lambda i: abs(pixels[i][0] - H / 2) + abs(pixels[i][1] - W / 2))
    return float(np.mean(ratios)), rows[centre]


# --------------------------------------------------------------------------------- networks
@dataclass
class Result:
    name: str
    label: str
    params: int | None
    dtype: str
    product: str = ""
    k_net: Eigen | None = None  # eigenpairs of J Jᵀ
    k_fit: Eigen | None = None  # eigenpairs of A J Jᵀ Aᵀ
    freq_net: np.ndarray | None = None
    freq_fit: np.ndarray | None = None
    coupling: float | None = None
    kernel_row: np.ndarray | None = None
    stats: dict = field(default_factory=dict)
    seconds: float = 0.0
    cpu: float = 0.0


def network_names() -> list[str]:
    return ["two-layer", "mlp", *GENERATORS]


def config_for(name: str, size: int, dtype: str) -> RunConfig:
    return RunConfig.build({"problem": {"image": "builtin:camera", "size": [size, size]},
                            "operator": {"operator": "blur"}, "noise": {"noise_std": 0.0},
                            "network": {"network": name}, "run": {"seed": 0, "dtype": dtype}})


def label_of(name: str, net) -> str:
    if name == "two-layer":
        return f"two-layer (9), k={net.k}, {net.train}"
    if name == "mlp":
        return f"MLP, widths {','.join(map(str, net.widths))}"
    return name


def capture_stats(eig: Eigen, apply_m: Apply, signal: np.ndarray, seed: int) -> dict:
    """Energy fractions in the span of the top K eigenvectors of M, and the Rayleigh ratio ρ."""
    X = eig.vectors
    n = X.shape[0]
    detail = signal - signal.mean()
    noise = np.random.default_rng(seed + 1).standard_normal((NOISE_DRAWS, n))
    frac = lambda v: float(np.sum((X.T @ v) ** 2) / np.sum(v**2))  # noqa: E731
    V = np.vstack([detail[None], noise])
    q = np.sum(V * apply_m(V), axis=1) / np.sum(V * V, axis=1)
    return {
        "captured_signal": frac(signal),
        "captured_detail": frac(detail),
        "captured_constant": frac(np.ones(n)),
        "captured_noise": float(np.mean([frac(e) for e in noise])),
        "rho_detail": float(q[0] / q[1:].mean()),
    }


def solve(apply: Apply, n: int, args, krylov: bool) -> Eigen:
    if krylov:
        return top_eigs_block_krylov(apply, n, args.k, args.seed, args.block, int(args.max_dim * args.k), args.rtol)
    return top_eigs_eigsh(apply, n, args.k, args.seed, args.tol)


def run_network(name: str, args, op, signal: np.ndarray, shape) -> Result:
    t0, c0 = time.perf_counter(), cpu_seconds()
    n = op.in_size
    if name == LANDWEBER:
        res = Result(name, "Landweber: J Jᵀ = I", None, "float64", "FFT")
        apply_m = with_operator(None, op)
        res.k_fit = solve(apply_m, n, args, args.solver == "krylov")
    else:
        conv = name in GENERATORS
        dtype = args.conv_dtype if conv else "float64"
        config = config_for(name, args.size, dtype)
        problem, _ = build_problem(config)
        net = build_network(config, problem)
        params = net.initial_state()
        res = Result(name, label_of(name, net), net.parameter_count, dtype)
        apply_k, res.product = kernel_apply(net, params)
        solver = args.solver
        if solver == "auto":
            solver = "krylov" if conv else "dense" if isinstance(net, TwoLayerDIP) else "eigsh"
        dense = {}
        if solver == "dense":  # J Jᵀ assembled from n products by blocks; LAPACK on the matrices
            gram = np.vstack([apply_k(np.eye(n)[i: i + args.block]) for i in range(0, n, args.block)])
            gram = (gram + gram.T) / 2
            rows_a = lambda X: op.forward_flat(torch.as_tensor(X)).double().numpy()  # noqa: E731  X ↦ X Aᵀ
            dense = {"k_net": gram, "k_fit": rows_a(rows_a(gram).T)}  # A K Aᵀ = rows_A((K Aᵀ)ᵀ)
            apply_k = lambda W: W @ gram  # noqa: E731
            res.product += f" ×{n}, assembled"
        apply_m = with_operator(apply_k, op)
        for which, apply in (("k_net", apply_k), ("k_fit", apply_m)):
            if which in dense:
                eig = top_eigs_dense(dense[which], args.k)
            else:
                eig = solve(apply, n, args, solver == "krylov")
            setattr(res, which, eig)
            print(f"  {which}: {eig.solver}, {eig.products} products, {eig.seconds:.1f} s, "
                  f"max residual/λ {eig.residuals.max():.1e}", flush=True)
        res.freq_net = mean_radial_frequency(res.k_net.vectors, shape)
        res.coupling, res.kernel_row = neighbour_coupling(apply_k, shape)
    res.freq_fit = mean_radial_frequency(res.k_fit.vectors, shape)
    res.stats = capture_stats(res.k_fit, apply_m, signal, args.seed)
    res.seconds, res.cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return res


# ------------------------------------------------------------------------------------- output
COLORS = {"two-layer": "tab:blue", "mlp": "tab:orange", "conv-decoder": "tab:green", "deep-decoder": "tab:red",
          "skip": "tab:purple", LANDWEBER: "black"}
EXTRA_COLORS = ["tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


def style(r: Result, i: int) -> dict:
    if r.name == LANDWEBER:
        return dict(color="black", lw=1.3, ls=(0, (4, 3)))
    return dict(color=COLORS.get(r.name, EXTRA_COLORS[i % len(EXTRA_COLORS)]), lw=1.8)


def running_mean(v: np.ndarray, w: int = 5) -> np.ndarray:
    if len(v) < w:
        return v
    padded = np.concatenate([np.full(w // 2, v[0]), v, np.full(w // 2, v[-1])])
    return np.convolve(padded, np.ones(w) / w, mode="valid")


def plot(results: list[Result], shape, k: int, white: float, out: Path, pictures: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    shown = [r for name in pictures for r in results if r.name == name]
    ncols = 7  # 6 eigenvectors and the kernel row at the centre pixel
    header, plots, images = 1.5, 7.4, 1.95 * len(shown)  # inches
    height = header + plots + images + 0.2
    fig = plt.figure(figsize=(13, height))
    top = 1 - header / height
    split = top - plots / height
    gs = GridSpec(2, 2, figure=fig, top=top, bottom=split + 0.75 / height, left=0.07, right=0.98, wspace=0.25,
                  hspace=0.42)
    axes = [[fig.add_subplot(gs[r, 0]), fig.add_subplot(gs[r, 1])] for r in range(2)]
    if shown:
        gs_img = GridSpec(len(shown), ncols, figure=fig, top=split - 0.05 / height, bottom=0.2 / height, left=0.07,
                          right=0.98, wspace=0.12, hspace=0.3)
    idx = np.arange(1, k + 1)
    handles = {}
    for row, (attr, fattr, what) in enumerate((
            ("k_net", "freq_net", "the generator's own kernel J Jᵀ  (J = J_g(θ₀))"),
            ("k_fit", "freq_fit", "the kernel of the fit of y:  A J Jᵀ Aᵀ  (A: blur σ = 1)"))):
        for i, r in enumerate(results):
            eig = getattr(r, attr)
            if eig is None:
                continue
            line, = axes[row][0].semilogy(idx, eig.values / eig.values[0], label=r.label, **style(r, i))
            axes[row][1].plot(idx, running_mean(getattr(r, fattr)), **style(r, i))
            handles.setdefault(r.label, line)
        white_line = axes[row][1].axhline(white, color="gray", ls=":", lw=1.6)
        axes[row][0].set_title(f"({'ac'[row]}) eigenvalues of {what}", fontsize=10, loc="left")
        axes[row][1].set_title(f"({'bd'[row]}) frequency content of its eigenvectors (running mean of 5)",
                               fontsize=10, loc="left")
        axes[row][0].set_xlabel("index i")
        axes[row][0].set_ylabel(r"$\lambda_i\,/\,\lambda_1$")
        axes[row][1].set_xlabel("index i")
        axes[row][1].set_ylabel("mean radial frequency (cycles/pixel)")
        axes[row][1].set_ylim(0, 0.45)
        for ax in axes[row]:
            ax.grid(alpha=0.3, which="both")
            ax.set_xlim(1, k)
    handles[f"white noise (mean radial frequency {white:.3f})"] = white_line
    axes[0][1].text(0.98, 0.8, "two-layer and MLP lie on the white-noise line", transform=axes[0][1].transAxes,
                    ha="right", va="top", fontsize=8.5, bbox=dict(facecolor="white", edgecolor="0.8", alpha=0.9))
    axes[1][0].text(0.98, 0.97, "two-layer and MLP lie under\nthe Landweber curve",
                    transform=axes[1][0].transAxes, ha="right", va="top", fontsize=8.5,
                    bbox=dict(facecolor="white", edgecolor="0.8", alpha=0.9))
    axes[1][1].text(0.98, 0.78, "two-layer and MLP lie under the Landweber curve;\n"
                    "the blur A alone makes these eigenvectors smooth", transform=axes[1][1].transAxes,
                    ha="right", va="top", fontsize=8.5, bbox=dict(facecolor="white", edgecolor="0.8", alpha=0.9))
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=4, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.58 / height))
    for j, r in enumerate(shown):
        for c in range(ncols):
            ax = fig.add_subplot(gs_img[j, c])
            v = r.k_net.vectors[:, c].reshape(shape) if c < ncols - 1 else r.kernel_row
            lim = np.abs(v).max()
            ax.imshow(v, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c < ncols - 1:
                ax.set_title(f"eigenvector {c + 1}: f̄ = {r.freq_net[c]:.2f}", fontsize=8)
            else:
                ax.set_title("J Jᵀ row at centre pixel", fontsize=8)
            if c == 0:
                ax.set_ylabel(r.name, fontsize=9)
    fig.suptitle(f"Tangent kernels at initialization (seed 0), {shape[0]}×{shape[1]} camera, top {k} eigenpairs; "
                 "images: leading eigenvectors of J Jᵀ\n(blue < 0 < red; f̄ = mean radial frequency in cycles/pixel)", fontsize=11.5, y=1 - 0.08 / height)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def short(e: Eigen) -> str:
    if e.solver.startswith("LAPACK"):
        return "LAPACK"
    return f"eigsh, {e.products} products" if e.solver.startswith("eigsh") else f"Krylov, dim {e.products}"


def tables(results: list[Result], k: int) -> str:
    dash = "—"
    ratio = lambda e: dash if e is None else f"{e.values[-1] / e.values[0]:.2g}"  # noqa: E731
    freqs = lambda f: dash if f is None else f"{f[:10].mean():.3f} / {f.mean():.3f}"  # noqa: E731
    head1 = ("| network | p | J Jᵀ w by; eigenpairs by (J Jᵀ / A J Jᵀ Aᵀ) | λ_1 of A J Jᵀ Aᵀ | λ_K/λ_1, J Jᵀ "
             "| λ_K/λ_1, A J Jᵀ Aᵀ | f̄ top 10 / top K, J Jᵀ | f̄ top 10 / top K, A J Jᵀ Aᵀ | neighbour coupling of J Jᵀ | max residual/λ | CPU s | wall s |")
    lines = [f"Spectra (K = {k}; f̄ in cycles/pixel):", "", head1, "|---" * (head1.count("|") - 1) + "|"]
    for r in results:
        e = r.k_fit
        resid = max(e.residuals.max(), r.k_net.residuals.max() if r.k_net else 0)
        solver = " / ".join(short(x) for x in (r.k_net, e) if x is not None)
        lines.append(
            f"| {r.label} | {dash if r.params is None else f'{r.params:,}'} | {r.product}, {r.dtype}; {solver} "
            f"| {e.values[0]:.3g} | {ratio(r.k_net)} | {ratio(e)} | {freqs(r.freq_net)} | {freqs(r.freq_fit)} "
            f"| {dash if r.coupling is None else f'{r.coupling:.2g}'} | {resid:.1e} | {r.cpu:.0f} | {r.seconds:.0f} |")
    head2 = ("| network | A x̄ | A x̄ − mean | constant image | white noise (mean of 8) "
             "| ρ: speed of A x̄ − mean / speed of noise |")
    lines += ["", f"Energy in the span of the top {k} eigenvectors of A J Jᵀ Aᵀ, and ρ:", "", head2,
              "|---" * (head2.count("|") - 1) + "|"]
    for r in results:
        s = r.stats
        lines.append(f"| {r.label} | {s['captured_signal']:.3f} | {s['captured_detail']:.3f} "
                     f"| {s['captured_constant']:.3f} | {s['captured_noise']:.4f} | {s['rho_detail']:.3g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--k", type=int, default=100, help="eigenpairs per kernel (default 100)")
    parser.add_argument("--size", type=int, default=64, help="image side N: the N×N camera (default 64)")
    parser.add_argument("--out", type=Path, default=Path("docs/figures/ntk_spectrum.png"), help="PNG path")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    parser.add_argument("--networks", nargs="*", default=None,
                        help=f"subset of: {', '.join(network_names())}, {LANDWEBER} (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of v0 / the Krylov start and the noise draws")
    parser.add_argument("--solver", default="auto", choices=("auto", "eigsh", "krylov", "dense"),
                        help="auto: block Krylov for the convolutional generators, dense (J Jᵀ assembled by blocks, "
                             "then LAPACK) for the two-layer net, eigsh for the others")
    parser.add_argument("--tol", type=float, default=1e-8, help="eigsh tolerance (default 1e-8)")
    parser.add_argument("--rtol", type=float, default=1e-2,
                        help="block Krylov: stop when every top-K residual ‖Mx − λx‖ ≤ rtol·λ (default 1e-2)")
    parser.add_argument("--max-dim", type=float, default=10.0,
                        help="block Krylov: dimension cap / K (default 10)")
    parser.add_argument("--block", type=int, default=64, help="block Krylov: block size (default 64)")
    parser.add_argument("--conv-dtype", default="float32", choices=("float32", "float64"),
                        help="dtype of the convolutional generators (default float32)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: with other processes on the machine, 2 threads made "
                             "the FFTs of the blur 1000 times slower, measured)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="pickle of the results: written after computing; when it exists (same --k, --size, "
                             "--seed, --networks), read instead, to redraw the figure and tables without recomputing")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    t0, c0, busy0 = time.perf_counter(), cpu_seconds(), machine_busy_seconds()
    problem, _ = build_problem(config_for("two-layer", args.size, "float64"))
    op, shape, n = problem.operator, tuple(problem.image_shape), problem.n
    if not 0 < args.k < n:
        parser.error(f"--k must be in 1..{n - 1}")
    signal = op.forward_flat(problem.x_true[:1]).double().numpy()[0]
    white = float(radial_frequency_grid(shape).mean())
    names = args.networks if args.networks is not None else [*network_names(), LANDWEBER]
    print(f"{shape[0]}x{shape[1]} camera, {op.describe()}, K = {args.k}; CPU {cpu_model()}, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    key = {"k": args.k, "size": args.size, "seed": args.seed, "networks": names}
    if args.cache is not None and args.cache.exists():
        with open(args.cache, "rb") as f:
            cached = pickle.load(f)
        if cached["key"] != key:
            parser.error(f"{args.cache} holds results for {cached['key']}, not {key}")
        results, wall, cpu, busy = cached["results"], cached["wall"], cached["cpu"], cached["busy"]
        print(f"results read from {args.cache} (computed in {wall:.0f} s wall)")
    else:
        results = []
        for name in names:
            print(f"{name} ...", flush=True)
            results.append(run_network(name, args, op, signal, shape))
            print(f"  {results[-1].seconds:.1f} s wall, {results[-1].cpu:.1f} s CPU", flush=True)
        wall = time.perf_counter() - t0
        cpu, busy = cpu_seconds() - c0, machine_busy_seconds() - busy0
        if args.cache is not None:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            with open(args.cache, "wb") as f:
                pickle.dump({"key": key, "results": results, "wall": wall, "cpu": cpu, "busy": busy}, f)
    pictures = [name for name in ("two-layer", "deep-decoder", "conv-decoder", "skip") if name in names]
    plot(results, shape, args.k, white, args.out, pictures)
    print()
    print(tables(results, args.k))
    print(f"\nwhite noise: mean radial frequency {white:.4f} cycles/pixel; K/m = {args.k / n:.4f}")
    print(f"total {wall:.0f} s wall, {cpu:.0f} s CPU; this process used {cpu / wall:.2f} cores, all processes "
          f"{busy / wall:.2f} cores")
    print(f"figure: {args.out}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "k": args.k, "size": args.size, "white_noise_frequency": white, "seconds": wall, "cpu_seconds": cpu,
            "networks": [{
                "name": r.name, "label": r.label, "params": r.params, "dtype": r.dtype, "product": r.product,
                "seconds": r.seconds, "cpu_seconds": r.cpu, "neighbour_coupling": r.coupling, **r.stats,
                **{f"{w}_{key}": v for w, e in (("fit", r.k_fit), ("net", r.k_net)) if e is not None
                   for key, v in (("values", e.values.tolist()), ("residuals", e.residuals.tolist()),
                                  ("solver", e.solver), ("products", e.products))},
                "freq_fit": r.freq_fit.tolist(), "freq_net": None if r.freq_net is None else r.freq_net.tolist(),
            } for r in results],
        }, indent=1))


if __name__ == "__main__":
    main()
