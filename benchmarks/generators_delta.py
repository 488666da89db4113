"""The discrepancy rule's δ for the convolutional generators, chosen on images the table does not use.

The two-layer network's δ = 1 was chosen on moon, cat, clock and coffee (docs/stopping.md). A
generator fits y more slowly, and its image keeps improving after ‖A x_τ − y‖ first reaches ‖ε‖;
this script measures by how much. Each case (image, noise σ, generator) is trained once with solve's
defaults and cached like the table's (``generators_table.record``); the discrepancy rule with the
estimated σ is then replayed for every δ, and the oracle beside it.

    .venv/bin/python benchmarks/generators_delta.py [--images moon,cat] [--networks deep-decoder]
        [--deltas 0.9,0.95,1] [--sigmas 2.5,10] [--threads 1]

Prints, per generator and noise level, the mean (worst) PSNR of each δ against the oracle.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from dipcert.solve import build_problem, noise_level
from dipcert.stopping import Discrepancy, Oracle
from generators_table import configuration, record
from stopping_table import replay

IMAGES = ("moon", "cat", "clock", "coffee")  # disjoint from the table's camera, astronaut, coins, brick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=",".join(IMAGES))
    parser.add_argument("--networks", default="deep-decoder")
    parser.add_argument("--sigmas", default="2.5,10")
    parser.add_argument("--deltas", default="0.85,0.9,0.95,0.97,1,1.05")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default=str(Path(__file__).parent / ".generators-cache"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    deltas = [float(d) for d in args.deltas.split(",")]
    for network in args.networks.split(","):
        for sigma in (float(s) for s in args.sigmas.split(",")):
            gaps: dict[float, list[float]] = {d: [] for d in deltas}
            for image in args.images.split(","):
                config = configuration(image, "blur", sigma, network, None)
                path = cache / f"{image}-blur-{sigma:g}-{network}-{config.training.iters}.npz"
                data = record(config, path)
                problem, _ = build_problem(config)
                level = noise_level(config, problem)
                forward = problem.operator.forward_flat
                oracle_tau, oracle, _ = replay(Oracle(), data, forward)
                line = [f"{network} sigma {sigma:g} {image}: oracle {oracle:.2f} dB at {oracle_tau}"]
                for delta in deltas:
                    tau, value, _ = replay(Discrepancy(level.norm, delta), data, forward)
                    gaps[delta].append(value - oracle)
                    line.append(f"delta {delta:g}: {value - oracle:+.2f} at {tau}")
                print("; ".join(line), flush=True)
            print(f"{network} sigma {sigma:g}: " + "; ".join(
                f"delta {d:g} {statistics.mean(g):+.2f} ({min(g):+.2f})" for d, g in gaps.items()), flush=True)


if __name__ == "__main__":
    main()
