"""Fused gradient-descent kernel against the matrix-vector path, over batch sizes, n and k.

For each shape (batch of runs, signal size n, width k; W trained, float64, a Gaussian A with
m = min(n, 10) rows as in Fig. 1-2), times ``train(..., GradientDescent, max_iters=N)`` per
iteration with ``TwoLayerDIP(fused=True)`` and ``fused=False``, interleaved, and prints the ratio
and which path ``fused=None`` (the default) picks. The rule behind the default (networks.py,
``FUSED_FROM_N`` and ``FUSED_FROM_BYTES``) comes from this table: the kernel saves memory traffic,
so it wins when V is large, and loses when n is small and V fits in cache, where its scalar
activations (one exp per column and step, two for sigmoid/softplus) cost more than the products.

    .venv/bin/python benchmarks/bench_fused.py [--rounds 3] [--iters 30]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from dipcert.networks import TwoLayerDIP
from dipcert.optim import GradientDescent, train
from dipcert.problems import gaussian_problem

SHAPES = [  # (batch, n, k)
    (500, 5, 10_000),  # Fig. 1, the k = 10⁴ group (its critical path at the paper's scale)
    (500, 5, 3_162),
    (500, 5, 1_000),
    (50, 5, 10_000),
    (1, 5, 10_000),
    (200, 20, 1_000),
    (50, 40, 1_000),
    (50, 80, 1_000),
    (50, 80, 10_000),  # Fig. 2, n = 80
    (10, 400, 1_000),
    (1, 1_024, 10_000),
    (1, 4_096, 1_000),
]


def per_iteration(problem, network, iters: int) -> float:
    start = time.perf_counter()
    train(problem, network, GradientDescent(1e-3), max_iters=iters, record_every=iters)
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; float64, W trained, "
          f"{args.iters} iterations per call, median of {args.rounds} rounds")
    print(f"{'batch':>6s} {'n':>6s} {'k':>7s} {'V MB':>7s} {'fused ms':>9s} {'products ms':>12s} "
          f"{'products/fused':>15s} {'default':>9s}")
    for batch, n, k in SHAPES:
        problem = gaussian_problem(n, min(n, 10), seeds=list(range(batch)))
        nets = {fused: TwoLayerDIP(n, k, seeds=range(batch), fused=fused) for fused in (True, False)}
        for net in nets.values():  # warm-up: kernel compilation, V_0ᵀ copy, allocator
            per_iteration(problem, net, 2)
        times = {True: [], False: []}
        for _ in range(args.rounds):
            for fused, net in nets.items():
                times[fused].append(per_iteration(problem, net, args.iters))
        fused_s, products_s = statistics.median(times[True]), statistics.median(times[False])
        nets[True].fused = None  # what the default would pick for this network
        default = "fused" if nets[True].fused_descent else "products"
        v_mb = batch * n * k * 8 / 1e6
        print(f"{batch:6d} {n:6d} {k:7d} {v_mb:7.1f} {fused_s * 1e3:9.2f} {products_s * 1e3:12.2f} "
              f"{products_s / fused_s:15.2f} {default:>9s}")


if __name__ == "__main__":
    main()
