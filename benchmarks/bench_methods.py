"""Gradient evaluations and wall time to reach a loss of 1e-10, every method, in one run.

Runs the Gaussian sweep of ``dipcert reproduce inertia`` (``dipcert/experiments/sweeps/inertia.toml``:
n = 5, m = 2, k = 10⁴, W trained, float64; every method tuned per trial) in a temporary folder and
prints, per method, the median gradient evaluations, iterations and seconds (the whole solve per
trial, spectra and certificate included) over the trials that reached the tolerance, with ratios
against gradient descent with its certified step measured in the same run.
Usage: ``.venv/bin/python benchmarks/bench_methods.py [--trials 10] [--width 10000]``.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import tomllib

import torch

from dipcert.experiments.inertia import SWEEP_FILES, curves_by_label, group_of, run_group, summary
from dipcert.experiments.sweep import Sweep, finished_results, run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--width", type=int, default=10_000)
    args = parser.parse_args()
    data = tomllib.loads(SWEEP_FILES[-1].read_text(encoding="utf-8"))
    data["sweep"]["trials"] = args.trials
    data["base"]["network"]["width"] = args.width
    sweep = Sweep.from_dict(data)
    config = sweep.run_config(sweep.cells()[0], 0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"n = {config.problem.n}, m = {config.operator.m}, k = {args.width}, {args.trials} trials, "
          f"loss <= {config.training.loss_tol:g}")
    with tempfile.TemporaryDirectory() as out:
        run_sweep(sweep, out, runner=(run_group, group_of))
        rows, arrays = finished_results(sweep, out)
    table = summary(rows, curves_by_label(sweep, arrays), [], {})["gaussian"]
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
