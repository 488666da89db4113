"""For which width k does condition (4) of Theorem III.1 hold? (the paper's Fig. 1a setting)

n = 5, A and x̄ iid N(0, 1), sigmoid, MSE, hidden layer W trained, V_0 Rademacher, step γ = 1/(2L)
with the certified L. For each Lipschitz form and each k, the fraction of seeds for which (4) holds,
and the smallest k where it reaches 1/2. Run: ``.venv/bin/python examples/condition4_vs_k.py``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from dipcert.certify import LIPSCHITZ_FORMS, certify
from dipcert.networks import TwoLayerDIP
from dipcert.problems import gaussian_problem
from dipcert.seeding import derive_seed


def fraction_holding(n: int, m: int, k: int, seeds: list[int], form: str) -> float:
    held = 0
    batch = max(1, min(len(seeds), 2_000_000 // (n * k)))  # keep V_0 under ~16 MB a batch
    for start in range(0, len(seeds), batch):
        chunk = seeds[start : start + batch]
        problem = gaussian_problem(n, m, chunk)
        net = TwoLayerDIP(n, k, seeds=[derive_seed(s, "network") for s in chunk])
        held += int(certify(problem, net, lipschitz_form=form, hessian_iters=0).holds.sum())
    return held / len(seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--m", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--log10-k", type=float, nargs=2, default=(1.0, 7.5), metavar=("LOW", "HIGH"))
    args = parser.parse_args()
    exponents = np.arange(args.log10_k[0], args.log10_k[1] + 1e-9, 0.5)
    seeds = list(range(args.seeds))
    print(f"n = {args.n}, m = {args.m}, {args.seeds} seeds; fraction of seeds where (4) holds")
    print("log10 k  " + "  ".join(f"{form:>16}" for form in LIPSCHITZ_FORMS))
    first_half = {form: None for form in LIPSCHITZ_FORMS}
    start = time.perf_counter()
    for e in exponents:
        k = int(round(10**e))
        row = []
        for form in LIPSCHITZ_FORMS:
            frac = fraction_holding(args.n, args.m, k, seeds, form)
            if frac >= 0.5 and first_half[form] is None:
                first_half[form] = e
            row.append(frac)
        print(f"{e:7.1f}  " + "  ".join(f"{f:16.2f}" for f in row), flush=True)
    print("smallest log10 k with probability >= 1/2: "
          + ", ".join(f"{form}: {first_half[form]}" for form in LIPSCHITZ_FORMS))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
