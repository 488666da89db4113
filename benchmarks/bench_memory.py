"""Check dipcert.resources.estimate_run_bytes against the peak memory of real ``dipcert solve`` runs.

Each case runs in a fresh process: a tiny run of the same kind first (so that libraries, the
compiled kernel and plotting are loaded), then the real one; the measured memory is the growth
of the peak resident set size (``getrusage`` maxrss) over the tiny run's. Prints one row per
case: estimate, measured, estimate/measured and the item of the estimate that dominates.

    python benchmarks/bench_memory.py            # every case (about 20 minutes on 2 cores)
    python benchmarks/bench_memory.py adam flow  # the cases whose name contains a word
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

# name, CLI options of `dipcert solve` (iterations kept low: memory peaks in the first steps)
CASES = {
    "blur 64², k=1e3, WV, gd": "--size 64 --width 1000 --iters 100",
    "blur 64², k=1e4, WV, gd": "--size 64 --width 10000 --iters 100",
    "blur 64², k=1e4, 4 runs, WV, gd": "--size 64 --width 10000 --iters 50 --runs 4",
    "blur 128², k=1e4, WV, gd": "--size 128 --width 10000 --iters 20",
    "blur 64², k=1e4, W, gd": "--size 64 --width 10000 --iters 100 --train W",
    "blur 64², k=1e4, V, gd": "--size 64 --width 10000 --iters 100 --train V",
    "blur 64², k=1e4, WV, gd, float64": "--size 64 --width 10000 --iters 50 --dtype float64",
    "blur 64², k=1e4, WV, adam": "--size 64 --width 10000 --iters 50 --method adam",
    "blur 64², k=1e4, 2 runs, W, adam": "--size 64 --width 10000 --iters 50 --method adam --train W --runs 2",
    "blur 64², k=1e4, V, adam": "--size 64 --width 10000 --iters 50 --method adam --train V",
    "blur 64², k=1e4, WV, heavy-ball": "--size 64 --width 10000 --iters 50 --method heavy-ball",
    "blur 64², k=1e4, 4 runs, V, heavy-ball":
        "--size 64 --width 10000 --iters 50 --method heavy-ball --train V --runs 4",
    "blur 64², k=1e4, WV, inna": "--size 64 --width 10000 --iters 50 --method inna",
    "blur 64², k=1e4, WV, gradient-difference": "--size 64 --width 10000 --iters 50 --method gradient-difference",
    "blur 64², k=1e3, WV, gradient-flow": "--size 64 --width 1000 --iters 5 --method gradient-flow",
    "blur 64², k=1e4, W, gradient-flow": "--size 64 --width 10000 --iters 20 --method gradient-flow --train W",
    "blur 64², k=1e4, WV, gradient-flow": "--size 64 --width 10000 --iters 3 --method gradient-flow",
    "blur 64², k=1e4, WV, gd, certify": "--size 64 --width 10000 --iters 50 --certify",
    "blur 64², k=1e4, W, gd, certify": "--size 64 --width 10000 --iters 50 --certify --train W",
    "well-conditioned 64², k=1e4, WV, gd": "--size 64 --width 10000 --iters 50 --operator well-conditioned",
    "gaussian A 64², k=1e4, WV, gd": "--size 64 --width 10000 --iters 50 --operator gaussian",
    "inpainting 64², k=1e4, WV, gd": "--size 64 --width 10000 --iters 50 --operator inpainting",
    "gaussian n=5 m=2, k=1e4, 100 runs, gd": "--signal gaussian --n 5 --m 2 --width 10000 --runs 100 --iters 20000",
    "gaussian n=5 m=2, k=1e4, 100 runs, nesterov":
        "--signal gaussian --n 5 --m 2 --width 10000 --runs 100 --iters 2000 --method nesterov",
    "gaussian n=5 m=2, k=1e4, 100 runs, adam":
        "--signal gaussian --n 5 --m 2 --width 10000 --runs 100 --iters 300 --method adam",
    "gaussian n=5 m=2, k=1e4, 100 runs, gradient-flow":
        "--signal gaussian --n 5 --m 2 --width 10000 --runs 100 --iters 300 --method gradient-flow",
    "gaussian n=5 m=2, k=1e4, 100 runs, gradient-flow DOP853":
        "--signal gaussian --n 5 --m 2 --width 10000 --runs 100 --iters 300 --method gradient-flow --ode-solver DOP853",
    "gaussian n=5 m=2, k=1e4, 10 runs, inertial-flow":
        "--signal gaussian --n 5 --m 2 --width 10000 --runs 10 --iters 300 --method inertial-flow",
    "gaussian n=5 m=2, k=1e5, gd, certified step":
        "--signal gaussian --n 5 --m 2 --width 100000 --iters 300 --step certified --certify",
    "blur 64², MLP 1000-1000, 4 runs, gd": "--size 64 --network mlp --widths 1000,1000 --runs 4 --iters 50",
    "blur 64², MLP 1000-1000, 4 runs, adam":
        "--size 64 --network mlp --widths 1000,1000 --runs 4 --iters 50 --method adam",
}
TINY = {"--size": "8", "--width": "16", "--widths": "16,16", "--iters": "3", "--runs": "1", "--n": "2", "--m": "1"}


def options(args: list[str]) -> dict[str, str | bool]:
    out, i = {}, 0
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[args[i]], i = args[i + 1], i + 2
        else:
            out[args[i]], i = True, i + 1
    return out


def estimate(args: list[str]) -> dict[str, int]:
    """The estimate for the CLI options ``args``, with the CLI's defaults."""
    from dipcert.resources import estimate_run_bytes, history_rows

    o = options(args)
    gaussian = o.get("--signal") == "gaussian"
    side = int(o.get("--size", 64))
    n = int(o["--n"]) if gaussian else side * side
    iters = int(o.get("--iters", 100_000 if gaussian else 500))
    return estimate_run_bytes(
        n=n, m=int(o.get("--m", n)), batch=int(o.get("--runs", 1)),
        itemsize={"float32": 4, "float64": 8}[str(o.get("--dtype", "float64" if gaussian else "float32"))],
        operator="gaussian" if gaussian else str(o.get("--operator", "blur")),
        method=str(o.get("--method", "gd")), signal="gaussian" if gaussian else "image",
        network=str(o.get("--network", "two-layer")),
        widths=[int(w) for w in str(o.get("--widths", "")).split(",") if w],
        k=int(o.get("--width", 10_000)), d=int(o.get("--d", 32)),
        train=str(o.get("--train", "W" if gaussian else "WV")),
        ode_solver=str(o.get("--ode-solver", "RK45")), history_rows=history_rows(iters, max(1, iters // 2000)),
        certify=bool(o.get("--certify")) or o.get("--step") == "certified",
    )


def child(args: list[str]) -> None:
    """Run a tiny version of ``args``, then ``args``; print the growth of the peak RSS as JSON."""
    import matplotlib

    matplotlib.use("Agg")
    from dipcert.cli import main

    def run(argv: list[str]) -> None:
        with tempfile.TemporaryDirectory() as out:
            try:
                main(["solve", *argv, "--quiet", "--out", out], standalone_mode=False)
            except SystemExit:  # a diverged run exits with its own code: its memory still counts
                pass

    tiny = [TINY.get(previous, arg) for previous, arg in zip([""] + args[:-1], args)]
    run(tiny)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    run(args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"measured": peak - base}))


def main(words: list[str]) -> None:
    print(f"{'case':<58}{'estimate':>10}{'measured':>10}{'ratio':>7}  largest item")
    for name, line in CASES.items():
        if words and not any(word in name for word in words):
            continue
        args = line.split()
        start = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))
        if done.returncode != 0:
            print(f"{name:<58} failed: {done.stderr.strip().splitlines()[-1]}")
            continue
        measured = json.loads(done.stdout.strip().splitlines()[-1])["measured"]
        est = estimate(args)
        top = max((v, k) for k, v in est.items() if k != "total")[1]
        print(f"{name:<58}{est['total'] / 1e9:>9.3f}G{measured / 1e9:>9.3f}G{est['total'] / measured:>7.2f}  {top}"
              f"  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main(sys.argv[1:])
