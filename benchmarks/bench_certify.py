"""Cost of a certificate (``dipcert.certify.certify``) as the width grows, and for an image problem.

Synthetic: n = 5, m = 2, W trained, k = 10³ … 10⁷ (``--max-log10-k``). Image: 64×64 blur σ = 1,
k = 10⁴, both layers trained, float32. Each line: the wall time of building the network (drawing
V₀ and z₀) and of the certificate itself (NTK Gram matrix, eigenvalues, bounds; the Hessian power
estimate with its default 30 iterations), and the peak memory. No k×k or p×p matrix is formed.
Usage: ``.venv/bin/python benchmarks/bench_certify.py [--max-log10-k 7]``.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from dipcert.certify import certify
from dipcert.config import RunConfig
from dipcert.solve import build_network, build_problem


def timed(config: RunConfig) -> tuple[float, float, bool]:
    start = time.perf_counter()
    problem, _ = build_problem(config)
    network = build_network(config, problem)
    built = time.perf_counter()
    cert = certify(problem, network)
    return built - start, time.perf_counter() - built, bool(cert.holds[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-log10-k", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'problem':<28}{'build s':>9}{'certify s':>11}{'(4) holds':>11}{'peak RSS MB':>13}")
    for e in range(3, args.max_log10_k + 1):
        config = RunConfig.build({"problem": {"signal": "gaussian", "n": 5}, "operator": {"m": 2},
                                  "network": {"width": 10**e}, "method": {"step": "certified"}})
        build, cert, holds = timed(config)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{'n=5 m=2 k=1e%d W' % e:<28}{build:>9.2f}{cert:>11.2f}{str(holds):>11}{rss:>13.0f}")
    build, cert, holds = timed(RunConfig.build({"method": {"step": "certified"}}))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'64x64 blur k=1e4 WV f32':<28}{build:>9.2f}{cert:>11.2f}{str(holds):>11}{rss:>13.0f}")


if __name__ == "__main__":
    main()
