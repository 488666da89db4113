"""The stopping rules measured on public images: the table of docs/stopping.md (issue 11).

Each case (image, operator, noise σ, seed) is trained once with ``dipcert solve``'s defaults (64×64,
two-layer DIP k = 10⁴, W and V trained, default step) for ``--iters`` iterations, keeping every
iterate x_τ and the time at each τ. Every rule is then replayed on that trajectory through the
library's own :class:`~dipcert.stopping.StopTracker` (the code ``train`` runs), so all rules see
the same iterates; "seconds" is the training time up to the iteration where the rule stopped.
The noise level is estimated from y by :func:`dipcert.noise_level.estimate_noise_level`.

    .venv/bin/python benchmarks/stopping_table.py [--quick] [--grid] [--markdown PATH]

``--grid`` also prints the tuning grid (δ, EMA weight, window/patience) that chose the defaults.
Trajectories are cached in ``--cache`` (default: benchmarks/.stopping-cache), one file per case.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dipcert.config import RunConfig
from dipcert.images import psnr
from dipcert.operators import Spectral
from dipcert.solve import build_loss, build_network, build_problem, choose_method, choose_stop
from dipcert.stopping import Discrepancy, NoStop, Oracle, Patience, StopRule, Variance
from dipcert.stopping import replay as replay_rule
from dipcert.stopping import DELTA, VARIANCE_PATIENCE, WINDOW, PATIENCE, MIN_IMPROVEMENT

IMAGES = ("camera", "astronaut", "coins", "brick")
# Every image of a seed shares its well-conditioned operator (two QR factorizations of 4096×4096): build it once.
Spectral.well_conditioned = staticmethod(functools.lru_cache(maxsize=4)(Spectral.well_conditioned))
START, END = "<!-- table:start -->", "<!-- table:end -->"
CASES = (("blur", 2.5), ("blur", 10.0), ("well-conditioned", 2.5), ("well-conditioned", 10.0),
         ("well-conditioned", 50.0))


def record(image: str, operator: str, sigma: float, seed: int, iters: int, cache: Path) -> dict:
    """Train one case and keep every iterate (cached)."""
    path = cache / f"{image}-{operator}-{sigma:g}-{seed}-{iters}.npz"
    if path.exists():
        return dict(np.load(path))
    config = RunConfig.build({"problem": {"image": f"builtin:{image}"}, "operator": {"operator": operator},
                              "noise": {"noise_std": sigma}, "run": {"seed": seed}, "network": {"network": "two-layer"},
                              "training": {"iters": iters}, "stopping": {"stop": "none"}})
    problem, truth = build_problem(config)
    from dipcert.optim import train

    loss = build_loss(config)
    network = build_network(config, problem)
    method, _, _, _ = choose_method(config, problem, network, loss)
    start = time.perf_counter()
    result = train(problem, network, method, loss=loss, max_iters=iters, snapshot_at=range(iters + 1))
    seconds = time.perf_counter() - start
    taus = sorted(result.snapshots)
    xs = torch.stack([result.snapshots[t][0] for t in taus]).double()
    data = {"x": xs.numpy().astype(np.float32), "y": problem.y[0].double().numpy(),
            "truth": truth.astype(np.float64), "seconds": np.linspace(0, seconds, len(taus)), "loss": result.history.loss[:, 0]}
    np.savez(path, **data)
    return data


def replay(rule: StopRule, data: dict, op_forward, average: float = 0.0) -> tuple[int, float, int]:
    """(τ of the returned iterate, its PSNR, the iteration where the run stopped)."""
    xs = torch.as_tensor(data["x"])
    y = torch.as_tensor(data["y"], dtype=xs.dtype)
    truth = torch.as_tensor(data["truth"].reshape(-1), dtype=xs.dtype)
    returned, report = replay_rule(rule, xs, y, data["loss"], op_forward, truth, average)
    end = report["stopped_at"] if report["stopped_at"] is not None else len(xs) - 1
    return report["tau"], psnr(data["truth"], returned.double().numpy().reshape(data["truth"].shape)), end


def setting(image: str, operator: str, sigma: float, seed: int):
    """The case's problem rebuilt (same seeds as the trained one), with its noise estimate
    and what ``--stop auto`` chooses for it (:func:`dipcert.solve.choose_stop`, the code solve runs)."""
    config = RunConfig.build({"problem": {"image": f"builtin:{image}"}, "operator": {"operator": operator},
                              "noise": {"noise_std": sigma}, "run": {"seed": seed}, "network": {"network": "two-layer"}})
    problem, _ = build_problem(config)
    auto, name, level = choose_stop(config, problem, None, None, [])
    return problem.operator.forward_flat, problem.m, level, (auto, name)


def rules_for(case: tuple, settings: dict) -> dict[str, tuple[StopRule, float]]:
    sigma, m, level, (auto, auto_name) = case[1], case[6], case[7], case[8]
    delta, average = settings["delta"], settings["average"]
    rules = {
        "last": (NoStop(), 0.0),
        "oracle": (Oracle(), 0.0),
        "discrepancy (true sigma)": (Discrepancy(np.array([sigma * m**0.5]), delta), average),
        "discrepancy": (Discrepancy(level.norm, delta), average) if level.known else None,
        "variance": (Variance(settings["window"], settings["variance_patience"]), average),
        "patience": (Patience(settings["patience"], settings["min_improvement"]), average),
        "auto": (auto, settings["average"]),
    }
    return rules


def write_between_markers(path: Path, table: str) -> None:
    """Replace what ``path`` holds between its lines START and END by ``table``."""
    text = path.read_text()
    start, end = text.index(START) + len(START), text.index(END)
    path.write_text(text[:start] + "\n" + table + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed, camera and coins")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--cache", default=str(Path(__file__).parent / ".stopping-cache"))
    parser.add_argument("--markdown", help="write the table into this file, between its lines "
                        "<!-- table:start --> and <!-- table:end -->")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    images = ("camera", "coins") if args.quick else IMAGES
    seeds = range(1 if args.quick else args.seeds)
    defaults = {"delta": DELTA.default, "average": 0.0, "window": WINDOW.default,
                "variance_patience": VARIANCE_PATIENCE.default, "patience": PATIENCE.default,
                "min_improvement": MIN_IMPROVEMENT.default}
    cases = []
    for (operator, sigma), image, seed in itertools.product(CASES, images, seeds):
        data = record(image, operator, sigma, seed, args.iters, cache)
        forward, m, level, auto = setting(image, operator, sigma, seed)
        cases.append((operator, sigma, image, seed, data, forward, m, level, auto))
        print(f"recorded {image} {operator} sigma {sigma:g} seed {seed}", flush=True)

    if args.grid:
        grid = [dict(defaults, delta=d, average=a) for d in (0.9, 1.0, 1.05, 1.1, 1.2) for a in (0.0, 0.5, 0.8)]
        grid += [dict(defaults, window=w, variance_patience=p) for w in (3, 5, 10, 20) for p in (5, 10, 20, 50)]
        for settings in grid:
            gaps = {}
            for case in cases:
                data, forward = case[4], case[5]
                oracle = replay(Oracle(), data, forward)[1]
                for name, entry in rules_for(case, settings).items():
                    if name in ("discrepancy", "variance") and entry is not None:
                        key = f"{name} {case[0]}"
                        gaps.setdefault(key, []).append(replay(entry[0], data, forward, entry[1])[1] - oracle)
            text = ", ".join(f"{k}: mean {statistics.mean(v):+.2f} worst {min(v):+.2f}" for k, v in gaps.items())
            print(settings, text, flush=True)

    rows = []
    for case in cases:
        operator, sigma, image, seed, data, forward, m, level, auto = case
        row = {"operator": operator, "sigma": sigma, "image": image, "seed": seed, "auto_rule": auto[1],
               "sigma_error": level.sigma[0] / sigma - 1 if level.sigma is not None else math.nan}
        for name, entry in rules_for(case, defaults).items():
            if entry is None:
                row[name] = None
                continue
            tau, value, end = replay(entry[0], data, forward, entry[1])
            row[name] = (value, tau, float(data["seconds"][end]))
        rows.append(row)
    names = list(rules_for(cases[0], defaults))
    gaps = [r["auto"][0] - r["oracle"][0] for r in rows if r["sigma"] in (2.5, 10.0)]
    summary = (f"`--stop auto` at noise σ = 2.5 and 10, {len(gaps)} cases: {statistics.mean(gaps):+.2f} dB against "
               f"the oracle on average, {min(gaps):+.2f} dB in the worst case.")
    print(summary)
    lines = ["| operator | noise σ | σ̂ error (mean abs) | auto chose | "
             + " | ".join(f"{n}: PSNR (vs oracle, worst), τ, s" for n in names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for operator, sigma in CASES:
        group = [r for r in rows if r["operator"] == operator and r["sigma"] == sigma]
        cells = []
        for name in names:
            if any(r[name] is None for r in group):
                cells.append("no estimate")
                continue
            psnrs = [r[name][0] for r in group]
            taus = [r[name][1] for r in group]
            secs = [r[name][2] for r in group]
            gap = [r[name][0] - r["oracle"][0] for r in group]
            cells.append(f"{statistics.mean(psnrs):.2f} ({statistics.mean(gap):+.2f}, worst {min(gap):+.2f}), "
                         f"{statistics.median(taus):g}, {statistics.mean(secs):.1f}")
        err = statistics.mean(abs(r["sigma_error"]) for r in group)
        err_text = "no estimate" if math.isnan(err) else f"{100 * err:.1f}%"
        chose = ", ".join(sorted({r["auto_rule"] for r in group}))
        lines.append(f"| {operator} | {sigma:g} | {err_text} | {chose} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        write_between_markers(Path(args.markdown), summary + "\n\n" + table)


if __name__ == "__main__":
    main()
