"""Gradient evaluations and wall time to reach a loss of 1e-10, every method, in one run.

Runs the Gaussian trials of ``dipcert reproduce inertia`` (n = 5, m = 2, k = 10⁴, W trained,
float64; every method tuned per trial, see dipcert.experiments.inertia) and prints, per method,
the median gradient evaluations, iterations and seconds over the trials that reached the
tolerance, with ratios against gradient descent with its certified step measured in the same run.
Usage: ``.venv/bin/python benchmarks/bench_methods.py [--trials 10] [--width 10000]``.
"""
from __future__ import annotations

import argparse
import platform
from dataclasses import replace

import torch

from dipcert.experiments.engine import Cell
from dipcert.experiments.inertia import Config, run_group, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--width", type=int, default=10_000)
    args = parser.parse_args()
    config = replace(Config(), trials=args.trials, width=args.width)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"n = {config.n}, m = {config.m}, k = {config.width}, {config.trials} trials, loss <= {config.loss_tol:g}")
    rows = []
    for trial in range(config.trials):
        for result in run_group(config, [Cell.of(problem="gaussian", trial=trial)]).values():
            rows.extend(result.rows)
    table = summary(config, rows)["gaussian"]
    base = table["gd certified"]
    print(f"{'method':<24}{'reached':>8}{'evals':>10}{'iters':>10}{'seconds':>10}{'evals ratio':>13}{'time ratio':>12}")
    for label, entry in table.items():
        if entry["median_evaluations"] is None:
            print(f"{label:<24}{entry['reached']:>8}")
            continue
        print(f"{label:<24}{entry['reached']:>8}{entry['median_evaluations']:>10.0f}{entry['median_iterations']:>10.0f}"
              f"{entry['median_seconds']:>10.3f}{base['median_evaluations'] / entry['median_evaluations']:>13.2f}"
              f"{base['median_seconds'] / entry['median_seconds']:>12.2f}")


if __name__ == "__main__":
    main()
