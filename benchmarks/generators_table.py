"""Every generator on public images, with automatic and oracle stopping: the table of docs/generators.md.

Each case (image, task, generator) is trained once with ``dipcert solve``'s defaults for that
generator (64×64, seed 0; its default method, step and iteration budget), keeping every iterate.
The rule ``--stop auto`` would choose (:func:`dipcert.solve.choose_stop`, the code ``solve`` runs) and
the oracle (the iterate nearest x̄) are then replayed on that trajectory with the library's
:class:`~dipcert.stopping.StopTracker` (``stopping_table.replay``), so both see the same iterates.
(Seconds per iteration are benchmarked apart, on an idle machine: benchmarks/RESULTS.md.) The classical
reference of each task runs on the same observation: scikit-image's unsupervised Wiener filter for
deblurring (the blur's own kernel, periodic like the operator) and biharmonic inpainting.

    .venv/bin/python benchmarks/generators_table.py [--images camera,coins] [--networks conv-decoder]
        [--iters N] [--markdown docs/generators.md]

Trajectories are cached in ``--cache`` (default: benchmarks/.generators-cache), one file per case.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from skimage.restoration import inpaint_biharmonic, unsupervised_wiener

from dipcert.components import NETWORK
from dipcert.config import RunConfig
from dipcert.images import psnr, ssim
from dipcert.optim import train
from dipcert.solve import build_loss, build_network, build_problem, choose_method, choose_stop
from dipcert.stopping import NoStop, Oracle
from stopping_table import END, START, replay, write_between_markers

IMAGES = ("camera", "astronaut", "coins", "brick")
TASKS = (("blur", 2.5), ("blur", 10.0), ("inpainting", 0.0), ("inpainting", 10.0))


def configuration(image: str, operator: str, sigma: float, network: str, iters: int | None) -> RunConfig:
    values = {"problem": {"image": f"builtin:{image}"}, "operator": {"operator": operator},
              "noise": {"noise_std": sigma}, "network": {"network": network}, "stopping": {"stop": "auto"}}
    if iters is not None:
        values["training"] = {"iters": iters}
    return RunConfig.build(values)


def record(config: RunConfig, path: Path) -> dict:
    """Train one case to its iteration budget and keep every iterate (cached in ``path``)."""
    if path.exists():
        return dict(np.load(path))
    problem, truth = build_problem(config)
    loss = build_loss(config)
    network = build_network(config, problem)
    method, _, _, _ = choose_method(config, problem, network, loss)
    iters = config.training.iters
    start = time.perf_counter()
    result = train(problem, network, method, loss=loss, max_iters=iters, snapshot_at=range(iters + 1))
    seconds = time.perf_counter() - start
    taus = sorted(result.snapshots)
    data = {"x": torch.stack([result.snapshots[t][0] for t in taus]).float().numpy(),
            "y": problem.y[0].double().numpy(), "truth": truth.astype(np.float64),
            "seconds": np.linspace(0, seconds, len(taus)), "loss": result.history.loss[:, 0],
            "parameters": network.parameter_count}
    np.savez(path, **data)
    return data


def classical(config: RunConfig) -> tuple[str, np.ndarray]:
    """The classical reconstruction of the case's observation (the same bits as the trained one)."""
    problem, truth = build_problem(config)
    op, y = problem.operator, problem.y[0].double().cpu().numpy()
    if config.operator.name == "blur":
        kernel = op.kernel_1d().double().cpu().numpy()
        estimate, _ = unsupervised_wiener(y.reshape(truth.shape) / 255, np.outer(kernel, kernel),
                                          rng=np.random.default_rng(0))
        return "unsupervised Wiener", estimate * 255
    mask = op.mask.cpu().numpy().reshape(truth.shape)
    image = np.zeros(truth.shape)
    image[mask] = y
    return "biharmonic", inpaint_biharmonic(image / 255, ~mask) * 255


def measure(config: RunConfig, data: dict) -> dict:
    problem, _ = build_problem(config)
    forward = problem.operator.forward_flat
    auto, name, _ = choose_stop(config, problem, None, None, [])
    shape = data["truth"].shape
    row = {"auto_rule": name, "parameters": int(data["parameters"]), "iters": len(data["x"]) - 1}
    for label, rule in (("auto", auto), ("oracle", Oracle()), ("last", NoStop())):
        tau = replay(rule, data, forward)[0]
        x = data["x"][tau].astype(np.float64).reshape(shape)
        row[label] = {"psnr": psnr(data["truth"], x), "ssim": ssim(data["truth"], x), "tau": int(tau)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=",".join(IMAGES))
    parser.add_argument("--networks", default=",".join(NETWORK.components))
    parser.add_argument("--tasks", default=",".join(f"{op}:{s:g}" for op, s in TASKS))
    parser.add_argument("--iters", type=int, help="iteration budget of every generator (default: each one's own)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cached-only", action="store_true", help="tabulate the cached cases only (train nothing)")
    parser.add_argument("--cache", default=str(Path(__file__).parent / ".generators-cache"))
    parser.add_argument("--markdown", help="write the table into this file, between its lines "
                        f"{START} and {END}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    tasks = [(op, float(s)) for op, s in (t.split(":") for t in args.tasks.split(","))]
    images, networks = args.images.split(","), args.networks.split(",")
    rows, references = [], {}
    for (operator, sigma), image in itertools.product(tasks, images):
        base = configuration(image, operator, sigma, "two-layer", None)
        method, reference = classical(base)
        truth = build_problem(base)[1]
        references[operator, sigma, image] = (method, psnr(truth, reference), ssim(truth, reference))
        for network in networks:
            config = configuration(image, operator, sigma, network, args.iters)
            path = cache / f"{image}-{operator}-{sigma:g}-{network}-{config.training.iters}.npz"
            if args.cached_only and not path.exists():
                continue
            data = record(config, path)
            row = measure(config, data)
            row.update(image=image, operator=operator, sigma=sigma, network=network)
            rows.append(row)
            print(f"{image} {operator} sigma {sigma:g} {network}: auto ({row['auto_rule']}) "
                  f"{row['auto']['psnr']:.2f} dB at {row['auto']['tau']}, oracle {row['oracle']['psnr']:.2f} "
                  f"at {row['oracle']['tau']}, last {row['last']['psnr']:.2f}; {method} "
                  f"{references[operator, sigma, image][1]:.2f}", flush=True)

    lines = []
    for operator, sigma in tasks:
        group = [r for r in rows if r["operator"] == operator and r["sigma"] == sigma]
        method = references[operator, sigma, images[0]][0]
        lines += ["", f"**{'deblurring (blur σ = 1)' if operator == 'blur' else 'inpainting (50% of pixels)'}, "
                  f"noise σ = {sigma:g}**", "",
                  f"| image | generator (auto chose) | auto stop: PSNR / SSIM | τ | vs {method} | oracle: PSNR / SSIM | τ |",
                  "|---|---|---|---|---|---|---|"]
        for image in images:
            ref = references[operator, sigma, image]
            lines.append(f"| {image} | {method} | {ref[1]:.2f} / {ref[2]:.3f} | | | | |")
            for r in (r for r in group if r["image"] == image):
                a, o = r["auto"], r["oracle"]
                lines.append(f"| | {r['network']} ({r['auto_rule']}) | {a['psnr']:.2f} / {a['ssim']:.3f} | "
                             f"{a['tau']} | {a['psnr'] - ref[1]:+.2f} | "
                             f"{o['psnr']:.2f} / {o['ssim']:.3f} | {o['tau']} |")
        mean_ref = statistics.mean(references[operator, sigma, i][1] for i in images)
        lines.append(f"| **mean** | {method} | {mean_ref:.2f} | | | | |")
        for network in networks:
            mine = [r for r in group if r["network"] == network]
            if len(mine) < len(images):
                continue  # a mean over fewer images would not compare
            auto = statistics.mean(r["auto"]["psnr"] for r in mine)
            oracle = statistics.mean(r["oracle"]["psnr"] for r in mine)
            lines.append(f"| | {network} | {auto:.2f} | | {auto - mean_ref:+.2f} | {oracle:.2f} | |")
    counts = {r["network"]: (r["parameters"], r["iters"]) for r in rows}
    lines += ["", "Parameters per run and iteration budget: "
              + "; ".join(f"{n} {p:,} parameters, {i} iterations" for n, (p, i) in counts.items()) + "."]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        write_between_markers(Path(args.markdown), table)


if __name__ == "__main__":
    main()
