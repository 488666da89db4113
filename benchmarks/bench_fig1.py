"""Fig. 1 engine: batched trials against the same trials run one by one, in the same process.

Runs one group of Fig. 1 cells (every m at one k, ``--trials`` seeds each, ``--iters`` iterations)
twice: as the engine does (all trials in one batch, stopped runs dropped from the batch), and one
trial at a time through the same ``train`` function. Prints both wall times and their ratio.
Usage: ``.venv/bin/python benchmarks/bench_fig1.py [--log10-k 3.0] [--trials 10] [--iters 20000]``.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from dipcert.experiments.fig1 import _padded_problem
from dipcert.networks import TwoLayerDIP
from dipcert.optim import GradientDescent, train
from dipcert.seeding import derive_seed
from dipcert.steps import auto_steps

N, MS, LOSS_TOL = 5, list(range(1, 11)), 1e-14  # the Fig. 1 setting (sweeps/fig1.toml)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log10-k", type=float, default=3.0)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--iters", type=int, default=20_000)
    args = parser.parse_args()
    k, ms, seeds = int(round(10**args.log10_k)), MS, list(range(args.trials))
    problem = _padded_problem(N, ms, seeds)
    network = TwoLayerDIP(N, k, seeds=[derive_seed(s, "network") for s in seeds] * len(ms))
    steps = auto_steps(problem, network)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"k = {k}, m = {ms[0]}..{ms[-1]}, {args.trials} trials per m ({len(steps)} in all), {args.iters} iterations")

    start = time.perf_counter()
    batched = train(problem, network, GradientDescent(steps), max_iters=args.iters, loss_tol=LOSS_TOL,
                    record_every=args.iters)
    t_batched = time.perf_counter() - start

    start = time.perf_counter()
    statuses = []
    for b in range(len(steps)):
        index = torch.tensor([b])
        one = train(problem.select(index), network.select(index), GradientDescent(steps[index]),
                    max_iters=args.iters, loss_tol=LOSS_TOL, record_every=args.iters)
        statuses.append(one.status[0])
    t_single = time.perf_counter() - start
    agree = sum(a == b for a, b in zip(statuses, batched.status))
    print(f"batched: {t_batched:.1f} s   one by one: {t_single:.1f} s   speed-up: {t_single / t_batched:.1f}x")
    print(f"statuses agree for {agree}/{len(statuses)} trials; converged: {statuses.count('converged')}")


if __name__ == "__main__":
    main()
