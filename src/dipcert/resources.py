"""Memory a run will need, estimated before anything is allocated, and the check that it fits.

:func:`estimate_run_bytes` counts the arrays of a run from its sizes alone (batch B of runs, signal
size n, m measurements, width k, input size d, bytes per entry s): the network (V₀: B·n·k·s, the
largest array; the fused kernel's transposed copy of it; W₀ when Adam trains the full W), the
trained parameters, the method's state (velocities, Adam's moments, SciPy's Runge–Kutta stages in
float64), the operator (dense n×n or m×n matrices), the certificate's work (n×n Gram matrices in
float64 and the eigensolver's copy, Hessian-vector products; for a convolutional generator, the
matrix-free Lanczos basis and Jacobian products in float64 instead of any n×n matrix) and the
history. Memory peaks either during training, when all of these are held, or during a setup
phase: V₀ is drawn in float64 run by run and stacked before the cast to float32 (20 bytes per
entry for a moment, against 12 for V₀, its transposed copy and the trained V while training); the
well-conditioned operator is built from float64 factors; the certificate and the inertial
methods' automatic damping form n×n and m×m Gram matrices. The breakdown gives every item its own
size, the training items (held together) and the ``setup: …`` items (transient, before training);
``total`` is the peak, the largest of the training sum and of each setup phase with what is held
by then, plus a fixed :data:`ALLOWANCE`. The items therefore do not add up to the total.

The counts were checked against the peak resident memory of real ``dipcert solve`` runs, measured
in fresh processes above a warmed-up baseline (``benchmarks/bench_memory.py``; images in float32,
the gaussian problems in float64; 31 runs, estimate/measured from 0.90 to 1.63, median 1.04; a selection):

================================================  ========  ========  =====
run                                               estimate  measured  ratio
================================================  ========  ========  =====
blur 64², k=1e3, WV, gd                            0.116 GB  0.098 GB   1.18
blur 64², k=1e4, WV, gd                            0.853 GB  0.819 GB   1.04
blur 64², k=1e4, 4 runs, WV, gd                    3.311 GB  3.276 GB   1.01
blur 64², k=1e4, WV, gd, float64                   1.018 GB  0.995 GB   1.02
blur 64², k=1e4, WV, gd, certify                   1.181 GB  1.172 GB   1.01
blur 64², k=1e4, WV, adam                          1.188 GB  1.161 GB   1.02
blur 64², k=1e4, V, adam                           1.181 GB  1.147 GB   1.03
blur 64², k=1e4, WV, inna                          1.017 GB  1.004 GB   1.01
blur 64², k=1e3, WV, gradient-flow                 0.657 GB  0.656 GB   1.00
blur 64², k=1e4, WV, gradient-flow                 6.262 GB  5.244 GB   1.19
well-conditioned 64², k=1e4, WV, gd                1.188 GB  1.052 GB   1.13
gaussian n=5 m=2, k=1e4, 100 runs, gd              0.268 GB  0.169 GB   1.59
gaussian n=5 m=2, k=1e4, 100 runs, adam            2.358 GB  2.017 GB   1.17
gaussian n=5 m=2, k=1e4, 100 runs, gradient-flow   0.350 GB  0.389 GB   0.90
gaussian n=5 m=2, k=1e4, 10 runs, inertial-flow    0.079 GB  0.058 GB   1.37
blur 64², MLP 1000-1000, 4 runs, adam              0.699 GB  0.589 GB   1.19
================================================  ========  ========  =====

:func:`check_fits` compares the total with :func:`available_bytes` and refuses a run that cannot
fit with a :class:`ResourceError` naming the largest items and the options that shrink them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .certify import EIGEN_MAX_ITER
from .components import NETWORK, OPERATOR, PROBLEM
from .methods import ALPHA, METHOD
from .networks import FUSED_FROM_BYTES, FUSED_FROM_N, TRAINABLE

GB = 1e9

OPERATORS = tuple(OPERATOR.components)
NETWORKS = tuple(NETWORK.components)
SIGNALS = tuple(PROBLEM.components)
ODE_STAGES = {"RK45": 7, "RK23": 4, "DOP853": 16}  # rows of the stage array SciPy keeps (K, or K_extended)

#: Entries of V₀ the Gram and sublevel-set loops of certify.py convert to float64 per block.
CERTIFY_BLOCK = 1 << 22
#: Fixed allowance for what no item counts: blocks of a few MB the allocator keeps after freeing them,
#: library buffers (measured: 15 to 70 MB above the items on small runs).
ALLOWANCE = 32 << 20


@dataclass(frozen=True)
class MethodCost:
    """What a training method adds, in dense copies of the trained parameters."""

    state: int = 0  # kept from step to step (velocity, Adam's two moments, ψ)
    temporaries: int = 0  # alive at once inside a step, in copies of the largest trained tensor
    densifies: bool = False  # forms the rank-one V-gradient as a dense matrix
    ode_systems: int = 0  # SciPy integrates this many copies of θ (θ, or θ and ψ) in float64


METHODS = {
    "gd": MethodCost(),
    "heavy-ball": MethodCost(state=1),
    "nesterov": MethodCost(state=1),
    "adam": MethodCost(state=2, temporaries=2, densifies=True),
    "gradient-difference": MethodCost(state=1),
    "inna": MethodCost(state=1, temporaries=3),
    "gradient-flow": MethodCost(ode_systems=1),
    "inertial-flow": MethodCost(ode_systems=2),
}

_SIZES = ("--width", "--size", "--runs")
#: For the refusal message: the options that shrink each item, and another way out.
_LOWER: dict[str, tuple[tuple[str, ...], str]] = {
    "V0": (_SIZES, ""),
    "V0 transposed (fused kernel)": (_SIZES, ""),
    "W0": (("--width", "--d", "--runs"), ""),
    "trained parameters": (_SIZES, ""),
    "network weights": (("--widths", "--size", "--runs"), ""),
    "gradients and activations": (_SIZES, ""),
    "method state": (_SIZES, "use --method gd"),
    "ODE solver (float64)": (_SIZES, "use a discrete --method"),
    "operator": (("--size",), "use --operator blur or inpainting"),
    "stopped runs": (_SIZES, ""),
    "history": (("--iters", "--runs"), "raise --record-every"),
    "allowance": ((), ""),
    "setup: V0 drawn in float64": (_SIZES, ""),
    "setup: weights drawn in float64": (("--widths", "--size", "--runs"), ""),
    "setup: W0 drawn in float64": (("--width", "--d", "--runs"), ""),
    "setup: operator built in float64": (("--size",), "use --operator blur or inpainting"),
    "setup: certificate": (("--size", "--runs"), "drop --certify and --step certified"),
    "setup: automatic damping (Gram matrices)": (("--size", "--runs"), "give numbers for --alpha and --beta"),
}


class ResourceError(ValueError):
    """A run that cannot fit in the memory available; the message says what to lower."""


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
    return value


def _operator_bytes(operator: str, n: int, m: int, copies: int, s: int) -> tuple[int, int, int]:
    """(held, build peak, float64 copy for the Gram matrices) of the operator, in bytes. ``copies``
    is the number of matrices a Gaussian operator holds (one per run for the synthetic problems)."""
    if operator == "well-conditioned":  # U, V and U diag(s) Vᵀ, built from float64 factors: up to eight
        # n×n float64 matrices at once, and the allocator keeps about one of them afterwards (measured)
        return 3 * n * n * s + 8 * n * n, 64 * n * n, 3 * n * n * 8 * (s != 8)
    if operator == "gaussian":  # drawn in float64 (stacked when batched), then its SVD for the spectrum
        entries = copies * m * n
        drawn = entries * (8 * (1 + (copies > 1)) + s * (s != 8))
        return entries * s, max(drawn, entries * (s + 16)), entries * 8 * (s != 8)
    return 16 * n, 16 * n, 0  # blur's transfer function or 1-D matrices; inpainting's mask and index


def stop_vector_count(rule: str, window: int = 0, average: bool = False) -> int:
    """Signals per run that a stopping rule holds: the chosen iterate (none for ``none``), the ES-WMV
    window for ``variance`` (``auto`` may resolve to it), and x̃, A x̃ when averaging."""
    count = 0 if rule == "none" else 1
    if rule in ("variance", "auto"):
        count += window
    return count + (2 if average else 0)


def estimate_run_bytes(
    *,
    n: int,
    m: int,
    batch: int,
    itemsize: int,
    operator: str,
    method: str,
    signal: str = "image",
    network: str = "two-layer",
    k: int = 1,
    d: int = 32,
    train: str = "W",
    widths: Sequence[int] = (),
    ode_solver: str = "RK45",
    history_rows: int = 2001,
    certify: bool = False,
    auto_damping: bool = True,
    device: str = "cpu",
    stop_vectors: int = 1,
    generator: tuple[int, int] | None = None,
) -> dict[str, int]:
    """Bytes a run needs, by item (see the module docstring), with the peak as ``"total"``.

    ``n``, ``m``: signal size and measurements; ``batch``: runs trained together; ``itemsize``: 4
    (float32) or 8 (float64); ``operator``: one of :data:`OPERATORS`; ``method``: one of
    :data:`METHODS`; ``signal``: "image" (one operator shared by the runs) or "gaussian" (one
    Gaussian matrix per run); ``network``: "two-layer" (width ``k``, input size ``d``, trained
    layers ``train``) or "mlp" (hidden ``widths``); ``history_rows``: recorded iterations;
    ``certify``: the certificate (or a certified step) is computed; ``auto_damping``: an inertial
    method chooses α or β itself ("auto", from Gram matrices); ``device``: the fused kernel of
    gradient descent (and its copy of V₀) exists on the CPU only. On CUDA the total is an upper
    bound of the device's share: it also counts what stays on the host (the float64 draws, SciPy).
    ``stop_vectors``: signals of size n (or m) the stopping rule keeps per run (the chosen iterate,
    the averages, the variance window; :func:`stop_vector_count`). ``generator``: for a convolutional
    network, (parameters, activation entries) of one run (``ConvGenerator.sizes``).
    """
    for name, value in (("n", n), ("m", m), ("batch", batch), ("k", k), ("d", d)):
        _positive(name, value)
    if itemsize not in (4, 8):
        raise ValueError(f"itemsize must be 4 (float32) or 8 (float64), got {itemsize!r}")
    if isinstance(history_rows, bool) or not isinstance(history_rows, int) or history_rows < 0:
        raise ValueError(f"history_rows must be an integer >= 0, got {history_rows!r}")
    _choice("operator", operator, OPERATORS)
    _choice("signal", signal, SIGNALS)
    _choice("network", network, NETWORKS)
    _choice("ODE solver", ode_solver, tuple(ODE_STAGES))
    cost = METHODS[_choice("method", method, tuple(METHODS))]
    entry = METHOD.components[method]  # what the registry says the method does
    full_w = not entry.can("reduction")  # trains W (k×d) itself, gradients by autograd
    fused = entry.can("descent")  # may step through the fused kernel on the CPU, which keeps Vᵀ
    damping_gram = ALPHA in entry.options  # automatic damping forms the Gram matrices of A J_g(θ₀)
    B, s = batch, itemsize
    held: dict[str, int] = {}  # held together while training
    setup: dict[str, tuple[int, int]] = {}  # phase → (what it allocates, what is held by then)

    op_held, op_built, op_float64 = _operator_bytes(operator, n, m, B if signal == "gaussian" else 1, s)
    held["operator"] = op_held
    if op_built > op_held:
        setup["setup: operator built in float64"] = (op_built - op_held, op_held)
    if generator is not None:  # a convolutional generator: parameters and autograd's saved activations
        parameters, activations = generator
        trained, largest, hidden, autograd, rank_one = B * parameters, B * parameters, B * activations, True, 0
        fixed = 0  # (the inputs z: channels × a few pixels per run)
        setup["setup: parameters drawn in float64"] = (trained * 8 * (1 + (s != 8)), op_held + fixed)
    elif network == "mlp":
        sizes = [d, *(_positive("MLP width", w) for w in widths), n]
        if len(sizes) < 3:
            raise ValueError("an MLP needs at least one hidden width")
        layers = [B * a * b for a, b in zip(sizes[:-1], sizes[1:])]
        trained, largest, hidden, autograd, rank_one = sum(layers), max(layers), B * sum(sizes[1:-1]), True, 0
        held["network weights"] = fixed = trained * s
        setup["setup: weights drawn in float64"] = (trained * 8 * (1 + (s != 8)), op_held + fixed)
    else:
        _choice("trained layers", train, TRAINABLE)
        E = B * n * k
        held["V0"] = fixed = E * s + B * k * s  # V₀ and z₀ = W₀u
        trains_w, trains_v = "W" in train, "V" in train
        autograd = full_w and trains_w
        w_entries = (B * k * d if autograd else B * k) if trains_w else 0
        trained = w_entries + (E if trains_v else 0)
        largest, hidden = max(w_entries, E if trains_v else 0), B * k
        rank_one = E if trains_v and not autograd else 0  # the V-gradient, kept as a rank-one pair
        # V₀ is drawn run by run in float64 and stacked, then cast (the stack is V₀ itself in float64)
        setup["setup: V0 drawn in float64"] = (E * 8 * (1 + (s != 8)), op_held + fixed)
        if autograd:
            held["W0"] = B * k * d * s
            fixed += held["W0"]
            setup["setup: W0 drawn in float64"] = (B * k * d * 8 * (1 + (s != 8)) + 4 * k * d * 8, op_held + fixed)
        if fused and device == "cpu" and (n >= FUSED_FROM_N or E * s >= FUSED_FROM_BYTES):
            held["V0 transposed (fused kernel)"] = E * s
    before_training = op_held + fixed  # what the certificate and the damping rule find allocated

    held["trained parameters"] = trained * s
    # closed-form gradients are vectors (the V-gradient stays rank one); autograd's are dense
    held["gradients and activations"] = 8 * (hidden + B * (n + m)) * s + (trained * s if autograd else 0)
    held["method state"] = (cost.state * trained + cost.temporaries * largest + cost.densifies * rank_one) * s
    if cost.ode_systems:  # stages, y, y_old, f, y_new, f_new and the right-hand side's work, in float64
        held["ODE solver (float64)"] = (ODE_STAGES[ode_solver] + 10) * cost.ode_systems * trained * 8 + 2 * largest * s
    if B > 1:  # when runs stop apart: their final state, and the running runs' network copied out
        held["stopped runs"] = trained * s + fixed // 2
    held["stopping rule"] = stop_vectors * B * max(n, m) * s
    held["history"] = history_rows * (B * 400 + 1000)  # recorded rows, then the CSV's Python floats

    if certify and generator is not None:  # matrix-free (certify.jacobian_extremes): the Lanczos basis,
        # θ in float64 with Jᵀw and the JVP's tangent, the VJP's saved forward pass and the JVP's primal
        # and tangent intermediates: 32 float64 copies of the block outputs (measured at 64×64: 151 MB
        # for the ConvDecoder, 81 MB for the Deep Decoder, against 150 and 103 MB here)
        lanczos = B * (EIGEN_MAX_ITER + 1) * max(n, m) * 8
        products = 3 * trained * 8 + 32 * (hidden + B * (n + m)) * 8
        setup["setup: certificate"] = (max(lanczos + products, 6 * trained * s), before_training)
    elif certify:  # Gram matrix and the eigensolver's copy; or V₀ in float64 blocks; or Hessian products
        gram = 2 * B * n * n * 8 + 2 * min(fixed // s, CERTIFY_BLOCK) * 8
        setup["setup: certificate"] = (max(gram, 6 * trained * s, B * m * m * 8), before_training)
    if damping_gram and auto_damping:  # J Jᵀ, A J Jᵀ, A J Jᵀ Aᵀ, the operator's work, the eigensolver
        side = max(n, m)
        setup["setup: automatic damping (Gram matrices)"] = (op_float64 + 6 * B * side * side * 8, before_training)

    breakdown = {name: int(value) for name, value in held.items() if value > 0}
    breakdown.update((name, int(own)) for name, (own, _) in setup.items())
    breakdown["allowance"] = ALLOWANCE
    peak = max(sum(held.values()), *(own + before for own, before in setup.values()))
    breakdown["total"] = int(peak + ALLOWANCE)
    return breakdown


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Limit minus the working set (usage without inactive page cache) of this cgroup, v2 or v1;
    None without a limit."""
    for limit_file, usage_file, stat_file, cache_key in (
        ("memory.max", "memory.current", "memory.stat", "inactive_file"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat", "total_inactive_file"),
    ):
        try:
            limit = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text())
            stats = dict(line.split() for line in (root / stat_file).read_text().splitlines() if line.strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 1 << 60:
            return None
        return max(0, int(limit) - (usage - int(stats.get(cache_key, 0))))
    return None


def available_bytes(device: str = "cpu") -> int | None:
    """Memory available to a new allocation on ``device``: on the CPU, /proc/meminfo's MemAvailable
    (else free pages from ``os.sysconf``), capped by a cgroup limit; on CUDA, the device's free
    memory. None when it cannot be found out."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    if device != "cpu":
        return None
    available = _meminfo_available()
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    headroom = _cgroup_headroom()
    return available if headroom is None else min(available, headroom)


def check_fits(breakdown: dict[str, int], device: str = "cpu", fraction: float = 0.9,
               available: int | None = None) -> None:
    """Raise :class:`ResourceError` when ``breakdown["total"]`` exceeds ``fraction`` of the memory
    available on ``device`` (``available`` bytes, or :func:`available_bytes`). Nothing is checked
    when the available memory is unknown."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    available = available_bytes(device) if available is None else available
    total = breakdown["total"]
    if available is None or total <= fraction * available:
        return
    items = sorted(((v, name) for name, v in breakdown.items() if name != "total"), reverse=True)[:3]
    largest = ", ".join(f"{name} {value / GB:.2f} GB" for value, name in items)
    hints = [_LOWER.get(name, ((), "")) for _, name in items]
    options = list(dict.fromkeys(option for names, _ in hints for option in names))
    advice = ([f"lower {_either(options)}"] if options else []) + list(dict.fromkeys(o for _, o in hints if o))
    raise ResourceError(f"this run needs about {total / GB:.2f} GB of memory but {available / GB:.2f} GB is "
                        f"available on {device} (largest: {largest}); {', or '.join(advice) or 'use smaller sizes'}")


def _either(words: list[str]) -> str:
    """The words as "a", "a or b", "a, b or c"."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def history_rows(iters: int, record_every: int) -> int:
    """Rows the history records for ``iters`` iterations (every ``record_every``, the first and last)."""
    return iters // _positive("record_every", record_every) + 2

