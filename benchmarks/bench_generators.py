"""Seconds per Adam iteration of the convolutional generators, and a batch of 8 runs against 8 single
runs of a plain PyTorch loop, measured in the same run (issue 12).

Setting, per generator of ``dipcert.generators.GENERATORS`` (default options, float32) and image size
S × S (default 64 and 256): the "camera" image resized to S × S, ``GaussianBlur((S, S), 1.0)``
(circular, float32), noise 0 (y = A x̄), the MSE loss ½‖A x − y‖², ``Adam(1e-2)``, N iterations.

Items, each a call timed as a whole (``time.perf_counter``), after one warm-up call of each (min(N, 2)
iterations):
  dipcert, batch 1     ``train(problem, net, Adam(1e-2), max_iters=N)`` with ``net = cls((S, S),
                       seeds=[0])``: dipcert's loop with its defaults (``record_every=1``: loss,
                       ‖x − x̄‖ and ‖θ − θ₀‖ every iteration, the stopping tracker, the divergence
                       rules);
  plain, 1 run         the plain PyTorch loop below, for the same run (seed 0);
  dipcert, batch of 8  the same ``train`` call on ``cls((S, S), seeds=range(8))`` (8 independent runs,
                       vmapped by dipcert);
  plain, 8 single runs the plain loop for runs 0..7 of that batch one after the other (8 × N
                       iterations);
  dipcert net, no train()  batch 1, dipcert's network and Adam in a bare loop (``bare_run``: forward,
                       pullback of Aᵀ(A x − y), ``Adam.update``; then x at θ_N), to split dipcert's
                       batch-1 cost into the network (this item vs plain) and ``train``'s
                       bookkeeping (dipcert, batch 1 vs this item).
The plain loop is the Deep Image Prior loop of deepinv (``deepinv.models.DeepImagePrior.forward``):
a copy of ``net.module`` (the plain ``torch.nn.Module`` of one run) with that run's θ₀ loaded, that
run's input z, ``torch.optim.Adam(model.parameters(), lr=1e-2)`` (its defaults: the single-tensor
implementation on the CPU), and N times ``zero_grad(); x = model(z) · scale; loss = ½‖A x − y‖²
(A = the dipcert operator's forward_flat); loss.backward(); step()``, then ``model(z)`` once more
(deepinv returns it). Both sides thus make N updates and N + 1 forward passes (dipcert's loop
evaluates the last iterate); the copies of the module and the building of the networks are not
timed, the optimizer's creation is. A call that stops a run before N iterations (status other than
``max_iterations``) aborts the benchmark: its time would be meaningless.

Reported, per (generator, size): seconds per iteration = call time / N of the batch-1 items
(dipcert and plain); throughput in run-iterations per second = runs × N / call time, of the batch of
8 and of the 8 single runs; and ratios of throughputs, > 1 meaning that dipcert is faster: dipcert
batch 1 ÷ plain 1 run (what dipcert costs for one run: ``functional_call``, ``train``'s
bookkeeping), the same without ``train`` (the network alone; a single run is not vmapped), and dipcert batch of 8 ÷ plain
8 single runs (what batching the runs buys). The items of a case are timed in ``--repeats`` rounds,
in an order rotated from round to round; times are medians over rounds and ratios medians over
rounds of per-round ratios, so that drifts of a shared machine hit numerator and denominator alike.
"cores" is process CPU time / wall time. The load that other processes put on the machine is
measured per round and printed, with a warning above 5% (no round is left out: run the script on an
idle machine; with as many threads as cores, a loaded machine made iterations 10-100x slower here,
as every parallel region waited for a core).

Correctness check first (float64, 16 × 16, 5 iterations, one thread, every generator selected; the
skip network and the Deep Decoder with the layers that fit): dipcert's batch-1 run (seed 0) and its
batch of 2 (seeds 0, 1) give the same x as the plain loops of those runs, up to rounding as the
training map amplifies it (with Adam's ε = 1 on both sides, and a tolerance of max(1e-10, 10 × the
plain loop's own spread under a 1e-15 perturbation of θ₀): see CHECK_TOL for why). The benchmark
aborts otherwise.

    .venv/bin/python benchmarks/bench_generators.py [--sizes 64 256] [--generators conv-decoder,skip]
        [--iters N] [--repeats R] [--threads 2] [--json PATH]

Defaults: N = 10, R = 5, 2 threads. A quick check: ``--sizes 32 --iters 5 --repeats 1`` (about 10 s on
an idle machine). The default run: about 2 min at 64 × 64 and, extrapolated (costs ∝ pixels),
20-35 min at 256 × 256 on the 2-core VM; the skip network's batch of 8 at 256 × 256 needs about
7.5 GB (``dipcert.resources.estimate_run_bytes``).
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import inspect
import json
import os
import platform
import statistics
import sys
import time

import torch

from dipcert.generators import GENERATORS, ConvGenerator, Skip
from dipcert.images import load_image
from dipcert.operators import GaussianBlur
from dipcert.optim import Adam, train
from dipcert.problems import Problem, image_problem
from machine import cpu_model, cpu_seconds, machine_busy_seconds  # benchmarks/machine.py

LR, BLUR, IMAGE = 1e-2, 1.0, "builtin:camera"
BATCH = 8  # runs of the batch, and single runs of the plain loop
CHECK_SHAPE, CHECK_ITERS, CHECK_SEEDS = (16, 16), 5, (0, 1)
# The correctness check. dipcert's Adam (src/dipcert/optim/adam.py) is torch.optim.Adam's update
# θ ← θ − lr·m̂/(√v̂ + ε) with the same defaults (betas (0.9, 0.999), ε = 1e-8: asserted below), rounded
# in another order (√(v/(1 − β₂ᵗ)) where torch takes √v/√(1 − β₂ᵗ), (m·lr/(1 − β₁ᵗ))/denom where torch
# takes lr/(1 − β₁ᵗ)·(m/denom)), and its gradients come from functional_call (vmapped, i.e. grouped,
# convolutions) where torch's come from the module: the two loops agree to rounding at θ₀ (~1e-15)
# but not after a few steps, because the training map amplifies rounding. Adam divides each
# coordinate's gradient by its own magnitude (√v̂ + ε): a coordinate whose gradient is 0 in exact
# arithmetic gets a step of ±lr·(noise/(|noise| + ε)) from pure rounding noise, and with ε = 1e-8 and
# gradients of order 1e6–1e8 (loss ½‖A x − y‖² on the [0, 255] scale) that noise is ~1e-8, so the step
# is a random ±lr/2. Such coordinates exist: the bias of a ConvDecoder channel whose pre-activations
# are all positive (the normalization after the ReLU subtracts it), every skip-network bias feeding a
# normalization. Measured at 16×16: the plain loop started from θ₀ multiplied by 1 + 1e-15·N(0, 1)
# differs from the plain loop by 1e-2 relative after ONE step for the ConvDecoder, 3e-1 after five
# (as much as dipcert does). The check therefore
#   - trains both sides with ε = CHECK_EPS = 1, small next to most gradients here (1e3–1e8: the update
#     is still Adam's) but large next to their rounding noise, which is no longer blown up to full
#     steps: the remaining amplification over 5 steps is ~2e-9 for the ConvDecoder, ≤ 2e-12 for the
#     others;
#   - measures that amplification in the same call, as the *spread*: the plain loop against itself
#     started from θ₀·(1 + 1e-15·N(0, 1)) (a few ulps);
#   - passes when ‖x_dipcert − x_plain‖/‖x_plain‖ ≤ max(CHECK_TOL, 10 × spread) (the two loops differ no
#     more than rounding can make the plain loop differ from itself), the spread is below 1e-6 (else
#     the check could not resolve a real difference) and training moved x by more than 1e-3
#     relative. Tried: a plain loop with lr × 1.01, β₂ = 0.99, ε × 2 or the output scale × 1.001 makes
#     it fail, with differences of 1e-3 to 1 (≥ 1e5 × the spread) on every generator.
CHECK_TOL, CHECK_EPS, CHECK_PERTURBATION, CHECK_MAX_SPREAD = 1e-10, 1.0, 1e-15, 1e-6
ITEMS = ("dipcert, batch 1", "plain, 1 run", f"dipcert, batch of {BATCH}", f"plain, {BATCH} single runs",
         "dipcert net, no train()")
RUNS = dict(zip(ITEMS, (1, 1, BATCH, BATCH, 1)))  # runs an item trains
MAX_BACKGROUND = 0.05  # above this load from other processes, a warning (threads = cores: timings unreliable)


# ------------------------------------------------------------------------------------ set-up
def generator_options(name: str, shape: tuple[int, int]) -> dict:
    """Default options, except on images too small for them (the check's 16 × 16, a quick run's
    32 × 32): the skip network's levels that fit, and the Deep Decoder's layers that leave an input
    of at least 2 × 2 pixels (from 1 × 1, its first maps are constant and their normalization divides
    rounding noise by √1e-5). From 64 × 64 on, every generator has its defaults."""
    if name == "skip" and Skip.max_layers(shape) < 5:
        return {"layers": Skip.max_layers(shape)}
    if name == "deep-decoder" and min(shape) // 2**5 < 2:
        return {"layers": max(1, (min(shape) // 2).bit_length() - 1)}
    return {}


def make_problem(shape: tuple[int, int], runs: int, dtype: torch.dtype) -> Problem:
    op = GaussianBlur(shape, BLUR, dtype=dtype)
    return image_problem(load_image(IMAGE, shape), op, list(range(runs)), noise=0.0)


def make_network(name: str, shape: tuple[int, int], runs: int, dtype: torch.dtype) -> ConvGenerator:
    return GENERATORS[name](shape, seeds=list(range(runs)), dtype=dtype, **generator_options(name, shape))


# ------------------------------------------------------------------------------------ the two loops
def dipcert_run(problem: Problem, net: ConvGenerator, iters: int, eps: float = 1e-8) -> torch.Tensor:
    """dipcert's loop, its defaults; returns x at θ_N, (batch, n)."""
    result = train(problem, net, Adam(LR, eps=eps), max_iters=iters)
    if any(s != "max_iterations" for s in result.status):
        raise RuntimeError(f"dipcert's runs stopped early ({result.status}): the timing would be meaningless")
    return result.x_last


def bare_run(problem: Problem, net: ConvGenerator, iters: int) -> torch.Tensor:
    """dipcert's network and Adam without ``train``: N times x, pullback = net.forward(θ);
    θ ← Adam(θ, pullback(Aᵀ(A x − y))), then x at θ_N. What ``train`` adds to this is its bookkeeping
    (loss and divergence rules, the stopping tracker, the history, ‖x − x̄‖ and ‖θ − θ₀‖)."""
    params, method = net.initial_params(), Adam(LR)
    active = torch.ones(net.batch, dtype=torch.bool, device=net.device)
    op, y = problem.operator, problem.y
    for _ in range(iters):
        x, pullback = net.forward(params)
        method.update(params, pullback(op.adjoint_flat(op.forward_flat(x) - y)), active)
    return net.function(params).detach()


def plain_model(net: ConvGenerator, run: int, perturbation: float = 0.0) -> torch.nn.Module:
    """A copy of the architecture with run ``run``'s θ₀ loaded (not timed); with ``perturbation``
    > 0, θ₀ multiplied by 1 + perturbation·N(0, 1) (the check's spread)."""
    model = copy.deepcopy(net.module)
    theta = {name: p[run] for name, p in net.initial_state().items()}
    if perturbation:
        gen = torch.Generator().manual_seed(run)
        theta = {name: p * (1 + perturbation * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p))
                 for name, p in theta.items()}
    model.load_state_dict(theta, strict=True)
    return model


def plain_run(model: torch.nn.Module, z: torch.Tensor, scale: float, problem: Problem, run: int,
              iters: int, eps: float = 1e-8) -> torch.Tensor:
    """The Deep Image Prior loop of deepinv, for one run; returns x at θ_N, (1, n)."""
    op, y = problem.operator, problem.y[run : run + 1]
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, eps=eps)
    for _ in range(iters):
        optimizer.zero_grad()
        x = model(z).reshape(1, -1) * scale
        loss = ((op.forward_flat(x) - y) ** 2).sum() / 2
        loss.backward()
        optimizer.step()
    return model(z).reshape(1, -1) * scale


def plain_runs(net: ConvGenerator, problem: Problem, runs: list[int], iters: int, eps: float = 1e-8,
               perturbation: float = 0.0) -> tuple[float, torch.Tensor]:
    """The plain loop for ``runs`` one after the other: (seconds, x of each run)."""
    models = [plain_model(net, b, perturbation) for b in runs]  # fresh copies: a loop trains its model in place
    inputs = [net.z[b : b + 1].clone() for b in runs]
    start = time.perf_counter()
    xs = [plain_run(m, z, net.output_scale, problem, b, iters, eps) for m, z, b in zip(models, inputs, runs)]
    return time.perf_counter() - start, torch.cat(xs).detach()


# ------------------------------------------------------------------------------------ check
def check(names: list[str]) -> bool:
    """dipcert's runs against the plain loop, float64 (see CHECK_TOL)."""
    ours_default, torch_default = Adam(), inspect.signature(torch.optim.Adam).parameters
    same_defaults = (ours_default.betas == tuple(torch_default["betas"].default)
                     and ours_default.eps == torch_default["eps"].default)
    print(f"check: x after {CHECK_ITERS} Adam iterations (lr {LR:g}, eps {CHECK_EPS:g}), float64, "
          f"{CHECK_SHAPE[0]}x{CHECK_SHAPE[1]}: relative difference dipcert vs plain loop [spread: plain loop vs "
          f"itself from θ₀·(1 + {CHECK_PERTURBATION:g}·N(0, 1))]; Adam defaults (betas, eps) "
          + ("equal to torch.optim.Adam's" if same_defaults else "DIFFER from torch.optim.Adam's"))
    ok = same_defaults
    for name in names:
        parts, good = [], True
        for runs in (1, len(CHECK_SEEDS)):
            problem = make_problem(CHECK_SHAPE, runs, torch.float64)
            net = make_network(name, CHECK_SHAPE, runs, torch.float64)
            ours = dipcert_run(problem, net, CHECK_ITERS, CHECK_EPS)
            _, theirs = plain_runs(net, problem, list(range(runs)), CHECK_ITERS, CHECK_EPS)
            _, shaken = plain_runs(net, problem, list(range(runs)), CHECK_ITERS, CHECK_EPS, CHECK_PERTURBATION)
            rel = lambda a, b: ((a - b).norm(dim=-1) / b.norm(dim=-1)).max().item()  # noqa: E731 (worst run)
            diff, spread = rel(ours, theirs), rel(shaken, theirs)
            moved = min(((theirs - net.function(net.initial_params()).detach()).norm(dim=-1)
                         / theirs.norm(dim=-1)).tolist())
            good &= diff <= max(CHECK_TOL, 10 * spread) and spread <= CHECK_MAX_SPREAD and moved > 1e-3
            parts.append(f"batch {runs}: {diff:.1e} [spread {spread:.1e}], x moved {moved:.1e}")
        options = "".join(f", {k}={v}" for k, v in generator_options(name, CHECK_SHAPE).items())
        print(f"  {name + options:24s} " + "; ".join(parts) + ("" if good else "  FAILED"))
        ok &= good
    return ok


# ------------------------------------------------------------------------------------ timing
def measure(name: str, size: int, iters: int, repeats: int) -> dict:
    shape = (size, size)
    p1, n1 = make_problem(shape, 1, torch.float32), make_network(name, shape, 1, torch.float32)
    p8, n8 = make_problem(shape, BATCH, torch.float32), make_network(name, shape, BATCH, torch.float32)

    def timed(run, problem: Problem, net: ConvGenerator, n: int) -> float:
        start = time.perf_counter()
        run(problem, net, n)
        return time.perf_counter() - start

    calls = {
        ITEMS[0]: lambda n: timed(dipcert_run, p1, n1, n),
        ITEMS[1]: lambda n: plain_runs(n1, p1, [0], n)[0],
        ITEMS[2]: lambda n: timed(dipcert_run, p8, n8, n),
        ITEMS[3]: lambda n: plain_runs(n8, p8, list(range(BATCH)), n)[0],
        ITEMS[4]: lambda n: timed(bare_run, p1, n1, n),
    }
    for call in calls.values():  # warm-up: allocator, FFT plans, the numba kernel of ‖θ − θ₀‖, caches
        call(min(iters, 2))
    seconds = {item: [] for item in ITEMS}
    cores = {item: [] for item in ITEMS}
    load = []
    for r in range(repeats):
        order = ITEMS[r % len(ITEMS):] + ITEMS[: r % len(ITEMS)]
        b0, c_all, t_all = machine_busy_seconds(), cpu_seconds(), time.perf_counter()
        for item in order:
            c0 = cpu_seconds()
            wall = calls[item](iters)
            seconds[item].append(wall)
            cores[item].append((cpu_seconds() - c0) / wall)
        elapsed = time.perf_counter() - t_all
        other = machine_busy_seconds() - b0 - (cpu_seconds() - c_all)
        load.append(max(0.0, other) / (elapsed * (os.cpu_count() or 1)))
    med = {item: statistics.median(v) for item, v in seconds.items()}
    per_round = lambda a, b: statistics.median(x / y for x, y in zip(seconds[a], seconds[b]))  # noqa: E731
    return {
        "generator": name, "size": size, "options": generator_options(name, shape),
        "parameters_per_run": n1.parameter_count, "iters": iters, "repeats": repeats,
        "seconds": seconds, "cores": {item: statistics.median(v) for item, v in cores.items()},
        "load_per_round": load,
        "dipcert_s_per_iter": med[ITEMS[0]] / iters,
        "plain_s_per_iter": med[ITEMS[1]] / iters,
        "dipcert_batch_run_iters_per_s": BATCH * iters / med[ITEMS[2]],
        "plain_singles_run_iters_per_s": BATCH * iters / med[ITEMS[3]],
        # throughput ratios (> 1: dipcert faster) = plain time / dipcert time, per round
        "batch1_ratio": per_round(ITEMS[1], ITEMS[0]),
        "batch_ratio": per_round(ITEMS[3], ITEMS[2]),
        "bare_ratio": per_round(ITEMS[1], ITEMS[4]),  # dipcert's network and Adam alone vs plain
        "loop_ratio": per_round(ITEMS[4], ITEMS[0]),  # train() vs the same without it
    }


def fmt_seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="image sides (default 64 256)")
    parser.add_argument("--generators", default=",".join(GENERATORS),
                        help=f"comma-separated (default {','.join(GENERATORS)})")
    parser.add_argument("--iters", type=int, default=10, help="N, Adam iterations per timed call (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the five items (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    args = parser.parse_args()
    names = [g.strip() for g in args.generators.split(",") if g.strip()]
    unknown = [g for g in names if g not in GENERATORS]
    if unknown:
        parser.error(f"unknown generator(s) {', '.join(unknown)}; allowed: {', '.join(GENERATORS)}")
    if args.iters < 1 or args.repeats < 1 or args.threads < 1 or any(s < 16 for s in args.sizes):
        parser.error("--iters, --repeats and --threads must be >= 1, --sizes >= 16")
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    machine = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
               "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
    machine_line = (f"{machine['cpu']} ({machine['logical_cpus']} logical CPUs), torch {machine['torch']}, "
                    f"{machine['torch_threads']} thread{'s' if machine['torch_threads'] > 1 else ''}, "
                    f"Python {machine['python']}")
    print(f"CPU: {machine_line}")
    print(f"{IMAGE} S×S, GaussianBlur(σ = {BLUR:g}), noise 0, float32, Adam(lr = {LR:g}), N = {args.iters} "
          f"iterations per call, {args.repeats} rounds; batch of {BATCH} = seeds 0..{BATCH - 1}\n")
    torch.set_num_threads(1)  # small tensors: faster on one thread (and immune to a loaded machine)
    passed = check(names)
    torch.set_num_threads(args.threads)
    if not passed:
        sys.exit("check FAILED: dipcert's loop and the plain loop do not compute the same iterates")
    print()

    rows = []
    for size in args.sizes:
        for name in names:
            t0 = time.perf_counter()
            row = measure(name, size, args.iters, args.repeats)
            rows.append(row)
            options = "".join(f", {k}={v}" for k, v in row["options"].items())
            print(f"{name}{options} {size}x{size} ({row['parameters_per_run']:,} parameters/run; "
                  f"{time.perf_counter() - t0:.0f} s)")
            for item in ITEMS:
                runs = RUNS[item]
                med = statistics.median(row["seconds"][item])
                print(f"  {item:24s} {med:8.3f} s per call = {fmt_seconds(med / args.iters):>9s} per iteration, "
                      f"{runs * args.iters / med:7.2f} run-iterations/s, cores {row['cores'][item]:.2f}")
            print(f"  throughput dipcert ÷ plain: batch 1 {row['batch1_ratio']:.2f} (network and Adam without "
                  f"train() {row['bare_ratio']:.2f}; train() ÷ without {row['loop_ratio']:.2f}), batch of {BATCH} "
                  f"vs {BATCH} single runs {row['batch_ratio']:.2f}; load from other processes per round: "
                  + " ".join(f"{b:.0%}" for b in row["load_per_round"]), flush=True)

    loads = [b for row in rows for b in row["load_per_round"]]
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n### Convolutional generators: seconds per iteration, batch of {BATCH} vs {BATCH} single runs "
          f"({date})\n")
    print(f"Machine: {machine_line}; load from other processes: median {statistics.median(loads):.0%}, "
          f"max {max(loads):.0%} of the machine over the rounds. **Command**: `.venv/bin/python "
          f"benchmarks/bench_generators.py {' '.join(sys.argv[1:])}`".rstrip() + f" (N = {args.iters} Adam "
          f"iterations per call, median of {args.repeats} rounds; camera S×S, blur σ = {BLUR:g}, noise 0, "
          f"float32, lr {LR:g}). Plain: deepinv's DIP loop on `net.module` with the same θ₀, z and loss, "
          f"`torch.optim.Adam`. Ratios: throughput dipcert ÷ plain (> 1: dipcert faster), median over "
          f"rounds; \"no train()\": dipcert's network and Adam in a bare loop, without the "
          f"bookkeeping of `train` (history, stopping tracker, divergence rules).\n")
    print(f"| generator | image | parameters / run | dipcert s / iteration (batch 1) | plain s / iteration "
          f"| dipcert ÷ plain, batch 1 | idem, no train() | dipcert batch of {BATCH}: run-iterations / s "
          f"| plain {BATCH} single runs: run-iterations / s | batch of {BATCH} ÷ {BATCH} single runs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        options = "".join(f", {k} = {v}" for k, v in row["options"].items())
        print(f"| {row['generator']}{options} | {row['size']}×{row['size']} | {row['parameters_per_run']:,} "
              f"| {row['dipcert_s_per_iter']:.3g} | {row['plain_s_per_iter']:.3g} | {row['batch1_ratio']:.2f} "
              f"| {row['bare_ratio']:.2f} | {row['dipcert_batch_run_iters_per_s']:.3g} "
              f"| {row['plain_singles_run_iters_per_s']:.3g} "
              f"| **{row['batch_ratio']:.2f}** |")
    if max(loads) > MAX_BACKGROUND:
        why = (f" With {args.threads} threads on {os.cpu_count()} CPUs, every parallel region then waits for a core "
               "(iterations measured 10-100x slower on a loaded 2-core VM)." if args.threads >= (os.cpu_count() or 1)
               else "")
        print(f"\nWARNING: other processes used up to {max(loads):.0%} of the machine during the rounds.{why} "
              "The times are unreliable: rerun on an idle machine.")
    print(f"\ntotal time {time.perf_counter() - started:.0f} s")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": date, "machine": machine, "argv": sys.argv[1:],
                       "settings": {"lr": LR, "blur": BLUR, "image": IMAGE, "batch": BATCH, "iters": args.iters,
                                    "repeats": args.repeats, "dtype": "float32", "noise": 0.0},
                       "measurements": rows}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
