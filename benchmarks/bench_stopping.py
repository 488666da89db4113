"""Cost of the stopping machinery in a gradient-descent iteration, against the code without it (issue 11).

Setting: the 64×64 "camera" image (n = m = 4096) blurred by GaussianBlur((64, 64), 1.0), white
Gaussian noise σ = 10 (seed 0), so x̄ is known; two-layer DIP, k = 10⁴, W and V trained
(``TwoLayerDIP(4096, 10_000, train="WV", seeds=[0], dtype=torch.float32)``, the fused kernel),
``GradientDescent(0.3)`` (a tenth of ``dipcert.steps.auto_step``, 3.01 here: no run stops or
diverges within the timed iterations), ``train(..., max_iters=N, record_every=N)``.

Since issue 11, ``dipcert.optim.train`` feeds a ``StopTracker`` (dipcert/stopping.py) every
iteration: the EMA of the iterates when ``average`` > 0, ‖x − x̄‖ when x̄ is known (the oracle
record, whatever the rule), the residual ‖A x − y‖ and the rule's decision. Acceptance criterion
measured: "stopping adds no more than 5% to the cost of an iteration at n = 4096, k = 10⁴", i.e.
for every rule, iteration(current code, rule) ≤ 1.05 × iteration(previous commit).

Items, one training configuration each:
  baseline      the previous commit (BASE_COMMIT, no stopping machinery), ``train`` as above;
  baseline, 2nd process   the same in a second process: the A/A control, i.e. the spread between
                two processes running identical code (the resolution of the comparison);
  none          the current code, ``stop=None`` (NoStop; the tracker still computes ‖x − x̄‖);
  discrepancy   ``Discrepancy(noise_norm=1e-6, delta=1)``: the residual norm each iteration; the
                threshold is tiny so that the rule never fires (with ‖ε‖ = σ√m = 640 it fires at
                τ = 15, after which it no longer decides), and since the residual decreases, the
                kept iterate is copied every iteration (the rule's costliest path);
  variance      ``Variance(window=10, patience=10**9)``: ring buffer of 10 iterates, windowed
                variance in float64, never fires;
  patience      ``Patience(patience=10**9, min_improvement=1e-3)``: never fires;
  oracle        ``Oracle()`` (never fires by design);
  discrepancy + EMA       the discrepancy rule with ``average=0.9`` (EMA of x and of A x).
All rule items use ``run_past_stop=True``; every call checks that the status is
``max_iterations`` and that no rule fired (a rule that fired would stop deciding: see
``StopTracker.observe``).

The previous commit's ``src`` is extracted with ``git archive`` into a temporary directory (or
given with --baseline-src). Each code version runs in worker processes of its own (this script with
``--worker``, PYTHONPATH pointing at that version's src), so that both are timed alike; the driver
sends the workers one item at a time. Each round times every item once, in an order rotated from
round to round: one call with N iterations and one with ``max_iters=1`` (t_1, the whole call).
A process can run a few percent faster or slower than another running the same code, for as long
as it lives (up to 6% between the two baseline processes here), so the workers are restarted every
3 rounds (an "epoch": 10 in a full run, 2 with --quick); confidence intervals are bootstrapped over
epochs.
Three per-iteration costs come out of a call:
  median    the median of the N intervals between consecutive iterations, taken by a ``callback``
            (both versions call it each iteration; it costs microseconds). This is the verdict's
            measure. On this VM single iterations take 2× now and then, and the typical iteration
            of a call differs by about 7% from one call to the next, independently of the calls
            before it (each call copies V into fresh memory): hence the median, robust to the former,
            and many short calls (30 rounds of N = 10), which average the latter out;
  mean      wall time / N;
  marginal  (N·mean − t_1)/(N − 1), the cost of one more iteration free of train()'s fixed cost
            (the copy of V, the tracker's set-up and its final copy), as in bench_gd.py.
Ratios are medians over rounds of per-round ratios to the baseline, so that drifts of a shared
machine hit numerator and denominator alike; the A/A control gives their resolution.

The time spent inside ``StopTracker.observe`` is also measured directly, after the rounds, by one
instrumented call of 40 iterations per rule (time.perf_counter around ``observe``, around the EMA
(``_candidates``) and around the rule's ``decide``): the overhead with less noise than a difference
of two iteration times, and where it goes.

"cores" is process CPU time / wall time. The load put on the machine by other processes is
measured per round; rounds where it exceeds 5% of the machine are left out of the statistics (when
at least 3 rounds remain; otherwise a warning). On an idle machine the full run takes about 5 min,
--quick about 40 s (each several times that when other processes load the machine).

    .venv/bin/python benchmarks/bench_stopping.py [--quick] [--rounds R] [--rounds-per-epoch E]
        [--iters N] [--threads 2] [--baseline-src PATH] [--json PATH]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model, cpu_seconds, machine_busy_seconds  # benchmarks/machine.py

BASE_COMMIT = "395dc75"  # the commit before the stopping rules (issue 11)
SHAPE, K, BLUR, NOISE, STEP = (64, 64), 10_000, 1.0, 10.0, 0.3
TARGET = 1.05
INSTRUMENTED_ITERS = 40  # iterations of the instrumented call per rule
MAX_BACKGROUND = 0.05  # rounds where other processes used more of the machine are left out
BASELINE, CONTROL = "baseline (previous commit)", "baseline, 2nd process"
RULES = ("none", "discrepancy", "variance", "patience", "oracle", "discrepancy + EMA 0.9")
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ worker
def _stop_settings(item: str) -> dict:
    """The ``train`` keywords of a rule item (current code only)."""
    import numpy as np

    from dipcert.stopping import Discrepancy, Oracle, Patience, Variance

    tiny = np.array([1e-6])  # a noise norm the residual never reaches: the rule never fires
    return {
        "none": {},
        "discrepancy": {"stop": Discrepancy(tiny, 1.0), "run_past_stop": True},
        "variance": {"stop": Variance(10, 10**9), "run_past_stop": True},
        "patience": {"stop": Patience(10**9, 1e-3), "run_past_stop": True},
        "oracle": {"stop": Oracle(), "run_past_stop": True},
        "discrepancy + EMA 0.9": {"stop": Discrepancy(tiny, 1.0), "average": 0.9, "run_past_stop": True},
    }[item]


class _Timer:
    """Accumulated perf_counter time of calls to a method, installed on its class."""

    def __init__(self, cls: type, name: str) -> None:
        self.cls, self.name, self.original, self.calls = cls, name, getattr(cls, name), []

    def __enter__(self) -> "_Timer":
        original = self.original

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.calls.append(time.perf_counter() - t0)

        setattr(self.cls, self.name, timed)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.cls, self.name, self.original)


def worker(code: str, threads: int) -> None:
    """Serve timing requests, one JSON line each on stdin, one JSON line per answer on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the protocol's stream
    import torch

    torch.set_num_threads(threads)
    import dipcert
    from dipcert.images import load_image
    from dipcert.networks import TwoLayerDIP
    from dipcert.operators import GaussianBlur
    from dipcert.optim import GradientDescent, train
    from dipcert.problems import image_problem

    op = GaussianBlur(SHAPE, BLUR, dtype=torch.float32)
    problem = image_problem(load_image("builtin:camera", SHAPE), op, [0], NOISE)
    network = TwoLayerDIP(op.in_size, K, train="WV", seeds=[0], dtype=torch.float32)

    def answer(**fields) -> None:
        out.write(json.dumps({**fields, "cpu_total": cpu_seconds()}) + "\n")
        out.flush()

    answer(ready=True, dipcert=dipcert.__file__, torch=torch.__version__, threads=torch.get_num_threads(),
           fused=bool(network.fused_descent))
    for line in sys.stdin:
        request = json.loads(line)
        item, iters = request["item"], request["iters"]
        settings = {} if code == "baseline" else _stop_settings(item)
        timers = []
        if request.get("instrument"):
            from dipcert.stopping import StopTracker

            rule = settings.get("stop")
            timers = [_Timer(StopTracker, "observe"), _Timer(StopTracker, "_candidates")]
            if rule is not None:
                timers.append(_Timer(type(rule), "decide"))
            for t in timers:
                t.__enter__()
        try:
            stamps: list[float] = []  # when each iteration τ = 0..N was evaluated
            c0, t0 = cpu_seconds(), time.perf_counter()
            result = train(problem, network, GradientDescent(STEP), max_iters=iters, record_every=iters,
                           callback=lambda tau, loss: stamps.append(time.perf_counter()), **settings)
            wall = time.perf_counter() - t0
            c1 = cpu_seconds()
        finally:
            for t in reversed(timers):
                t.__exit__()
        report = getattr(result, "stop", None)  # (the previous commit has no stopping report)
        stopped = None if report is None else report.stopped_at
        if result.status != ["max_iterations"] or (stopped is not None and any(s is not None for s in stopped)):
            answer(error=f"{item}: status {result.status}, rule stopped at {stopped}: the timing is meaningless")
            continue
        steps = [b - a for a, b in zip(stamps, stamps[1:])]
        answer(seconds=wall, cores=(c1 - c0) / wall, step_median=statistics.median(steps) if steps else None,
               **{t.name: t.calls for t in timers})


# ------------------------------------------------------------------------------------ driver
class Worker:
    """A worker process running one version of the code."""

    def __init__(self, code: str, src: Path, threads: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(src)}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", code, "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir())
        self.cpu = 0.0  # the worker's CPU seconds at its last answer
        self.info: dict = {}

    def wait_ready(self) -> None:
        self.info = self.read()

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited (code {self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        self.cpu = reply["cpu_total"]
        return reply

    def ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def extract_baseline(commit: str, into: Path) -> Path:
    """The ``src`` tree of ``commit`` (git archive: reads the repository, changes nothing in it)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def ratio(times: dict, a: str, b: str) -> float:
    """Median over rounds of times[a][r] / times[b][r]."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def ratio_interval(times: dict, a: str, b: str, epoch_of: list[int], draws: int = 2000) -> tuple[float, float]:
    """A 95% bootstrap interval of :func:`ratio`, drawing whole epochs (each with its own processes)."""
    by_epoch: dict[int, list[float]] = {}
    for x, y, e in zip(times[a], times[b], epoch_of):
        by_epoch.setdefault(e, []).append(x / y)
    groups, rng = list(by_epoch.values()), random.Random(0)
    medians = sorted(statistics.median([v for g in rng.choices(groups, k=len(groups)) for v in g])
                     for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 rounds in 2 epochs, N = 8 (about 40 s on an "
                        "idle machine, instead of about 5 min)")
    parser.add_argument("--rounds", type=int, help="rounds of measurements (default 4 with --quick, else 30)")
    parser.add_argument("--rounds-per-epoch", type=int, help="rounds between restarts of the worker processes "
                        "(default 2 with --quick, else 3)")
    parser.add_argument("--iters", type=int, help="N, iterations per timed call (default 8 with --quick, else 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in the workers (default 2)")
    parser.add_argument("--baseline-src", metavar="PATH", help=f"src directory of the code to compare against "
                        f"(default: commit {BASE_COMMIT}, extracted with git archive)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    parser.add_argument("--worker", choices=("baseline", "current"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads)
        return
    rounds, iters = (4, 8) if args.quick else (30, 10)
    rounds, iters = args.rounds or rounds, args.iters or iters
    args.rounds_per_epoch = args.rounds_per_epoch or (2 if args.quick else 3)
    if iters < 2:
        parser.error("--iters must be >= 2")

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-stopping-"))
    workers: list[Worker] = []
    epochs = -(-rounds // args.rounds_per_epoch)
    try:
        base_src = Path(args.baseline_src) if args.baseline_src else extract_baseline(BASE_COMMIT, tmp)
        sources = {"baseline": base_src, "current": ROOT / "src"}
        names = [BASELINE, CONTROL, *RULES]
        per_iter = {name: [] for name in names}  # t_N (per iteration)
        whole_1 = {name: [] for name in names}  # t_1 (whole call)
        typical = {name: [] for name in names}  # median of the N iteration intervals of a call
        cores = {name: [] for name in names}
        background, epoch_of = [], []  # per round
        instrumented = {}
        for epoch in range(epochs):
            # fresh processes each epoch (started in a rotated order): a process can be a few percent
            # faster or slower than another running the same code, for as long as it lives
            roles = [("baseline", BASELINE), ("baseline", CONTROL), ("current", "current")]
            roles = roles[epoch % 3:] + roles[:epoch % 3]
            workers, started_workers = [], {}
            for code, role in roles:
                started_workers[role] = Worker(code, sources[code], args.threads)
                workers.append(started_workers[role])
            for w in workers:
                w.wait_ready()
            base, control, current = (started_workers[k] for k in (BASELINE, CONTROL, "current"))
            if epoch == 0:
                machine = {
                    "cpu": cpu_model(),
                    "logical_cpus": os.cpu_count(),
                    "torch": current.info["torch"],
                    "torch_threads": current.info["threads"],
                    "python": platform.python_version(),
                }
                print(f"CPU: {machine['cpu']} ({machine['logical_cpus']} logical CPUs); torch {machine['torch']}, "
                      f"{machine['torch_threads']} threads per worker")
                print(f"baseline: {base.info['dipcert']} (commit {BASE_COMMIT if not args.baseline_src else '?'}); "
                      f"current: {current.info['dipcert']}; fused kernel: {current.info['fused']}")
                print(f"n = m = {SHAPE[0] * SHAPE[1]}, k = {K}, W and V trained, float32, GaussianBlur({SHAPE}, "
                      f"{BLUR}), noise σ = {NOISE:g}, GradientDescent({STEP}); {rounds} rounds in {epochs} "
                      f"epochs of fresh worker processes, N = {iters}")
            items = [(BASELINE, base), (CONTROL, control)] + [(name, current) for name in RULES]
            for name, w in items:  # warm-up: JIT compilation, allocator, FFT plans, page faults
                w.ask(item=name, iters=min(iters, 5))
                w.ask(item=name, iters=1)
            for r in range(epoch * args.rounds_per_epoch, min(rounds, (epoch + 1) * args.rounds_per_epoch)):
                shift = r % len(items)
                order = items[shift:] + items[:shift]
                b0, c0, t0 = machine_busy_seconds(), cpu_seconds(), time.perf_counter()
                w0 = sum(w.cpu for w in workers)
                for name, w in order:
                    reply = w.ask(item=name, iters=iters)
                    per_iter[name].append(reply["seconds"] / iters)
                    typical[name].append(reply["step_median"])
                    cores[name].append(reply["cores"])
                    whole_1[name].append(w.ask(item=name, iters=1)["seconds"])
                ours = cpu_seconds() - c0 + sum(w.cpu for w in workers) - w0
                other = machine_busy_seconds() - b0 - ours
                background.append(max(0.0, other) / ((time.perf_counter() - t0) * (os.cpu_count() or 1)))
                epoch_of.append(epoch)
                if rounds <= 10 or (r + 1) % 5 == 0:
                    print(f"  round {r + 1}/{rounds}: baseline {typical[BASELINE][-1] * 1e3:.2f} ms/iteration "
                          f"(median), load from other processes {background[-1]:.0%}", flush=True)
            if epoch == epochs - 1:
                for name in RULES:  # observe() timed from inside (not part of the statistics)
                    reply = current.ask(item=name, iters=INSTRUMENTED_ITERS, instrument=True)
                    instrumented[name] = {key: {"mean_s": statistics.mean(reply[key]),
                                                "median_s": statistics.median(reply[key])}
                                          for key in ("observe", "_candidates", "decide") if key in reply}
            for w in workers:
                w.close()
    finally:
        for w in workers:
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)

    clean = [r for r, b in enumerate(background) if b <= MAX_BACKGROUND]
    used = clean if len(clean) >= 3 else list(range(rounds))
    pick = lambda d: {name: [v[r] for r in used] for name, v in d.items()}  # noqa: E731
    per_iter, whole_1, typical, cores = pick(per_iter), pick(whole_1), pick(typical), pick(cores)
    epoch_of = [epoch_of[r] for r in used]
    marginal = {name: [(iters * a - b) / (iters - 1) for a, b in zip(per_iter[name], whole_1[name])]
                for name in per_iter}
    base_typical = statistics.median(typical[BASELINE])

    rows = {}
    print(f"\n{'ms per iteration':24s} {'median':>6s} {'mean':>6s} {'marginal':>8s} {'t_1':>6s} {'cores':>5s} "
          f"{'median ÷base [95% CI]':>22s} {'marginal ÷base':>14s} {'observe':>7s} {'÷base':>6s}  verdict")
    for name, _ in items:
        row = {
            "median_iteration_s": statistics.median(typical[name]),
            "per_iteration_s": statistics.median(per_iter[name]),
            "marginal_s": statistics.median(marginal[name]),
            "max_iters_1_s": statistics.median(whole_1[name]),
            "cores": statistics.median(cores[name]),
            "median_ratio": ratio(typical, name, BASELINE),
            "median_ratio_95": ratio_interval(typical, name, BASELINE, epoch_of),
            "per_iteration_ratio": ratio(per_iter, name, BASELINE),
            "marginal_ratio": ratio(marginal, name, BASELINE),
            "rounds_median_iteration_s": typical[name],
            "rounds_per_iteration_s": per_iter[name],
            "rounds_marginal_s": marginal[name],
        }
        if name in instrumented:
            row["observe_mean_s"] = instrumented[name]["observe"]["mean_s"]
            row["observe_median_s"] = instrumented[name]["observe"]["median_s"]
            row["observe_share"] = row["observe_median_s"] / base_typical
        if name != BASELINE:
            row["verdict"] = "PASS" if row["median_ratio"] <= TARGET else "FAIL"
        rows[name] = row
        obs = (f"{row['observe_median_s'] * 1e3:7.3f} {row['observe_share']:6.1%}" if name in instrumented
               else f"{'-':>7s} {'-':>6s}")
        print(f"{name:24s} {row['median_iteration_s'] * 1e3:6.2f} {row['per_iteration_s'] * 1e3:6.2f} "
              f"{row['marginal_s'] * 1e3:8.2f} {row['max_iters_1_s'] * 1e3:6.1f} {row['cores']:5.2f} "
              f"{row['median_ratio']:6.3f} [{row['median_ratio_95'][0]:.3f}, {row['median_ratio_95'][1]:.3f}] "
              f"{row['marginal_ratio']:14.3f} {obs}  {row.get('verdict', '')}")
    print("median: median of the N intervals between consecutive iterations of a call (the verdict's measure,\n"
          "robust to this VM's occasional 2x iterations); mean: wall time / N; marginal: (N·mean − t_1)/(N − 1);\n"
          "t_1: a whole call with max_iters=1; ÷base: median over rounds of per-round ratios to the baseline\n"
          "(CI: bootstrap over epochs).\n"
          "observe: median time inside StopTracker.observe per iteration (one instrumented call of 40 iterations\n"
          "after the rounds), and its share of the baseline's median iteration.")
    print("\nobserve, mean per call (ms): EMA (_candidates) / rule.decide / rest (row selections, masks,"
          "\n‖x − x̄‖, residual, kept copy) = total")
    for name in RULES:
        p = {key: v["mean_s"] for key, v in instrumented[name].items()}
        rest = p["observe"] - p["_candidates"] - p.get("decide", 0.0)
        print(f"  {name:24s} {p['_candidates'] * 1e3:.3f} / {p.get('decide', 0.0) * 1e3:.3f} / {rest * 1e3:.3f}"
              f" = {p['observe'] * 1e3:.3f}")

    worst = max(RULES, key=lambda n: rows[n]["median_ratio"])
    ok = all(rows[n]["verdict"] == "PASS" for n in RULES)
    verdict = (f"stopping adds at most {rows[worst]['median_ratio'] - 1:+.1%} to an iteration ({worst}; target "
               f"≤ {TARGET - 1:+.0%}): " + ("met" if ok else "NOT met"))
    costly = max(RULES, key=lambda n: rows[n]["observe_share"])
    direct = (f"time inside StopTracker.observe: at most {rows[costly]['observe_share']:.1%} of an iteration "
              f"({costly}; {rows[costly]['observe_median_s'] * 1e3:.2f} ms): "
              + ("within" if rows[costly]["observe_share"] <= TARGET - 1 else "above") + f" {TARGET - 1:.0%}")
    control_note = (f"A/A control (2nd baseline process): {rows[CONTROL]['median_ratio'] - 1:+.1%} median, "
                    f"{rows[CONTROL]['marginal_ratio'] - 1:+.1%} marginal")
    print(f"\nverdict (end to end, median iteration): {verdict}\ndirect measurement: {direct}\n{control_note}")
    print("load from other processes (share of all CPUs), per round: " + " ".join(f"{b:.0%}" for b in background)
          + f"; statistics over rounds {', '.join(str(r + 1) for r in used)}")
    if len(clean) < 3:
        print(f"WARNING: fewer than 3 rounds with load from other processes ≤ {MAX_BACKGROUND:.0%}; "
              "the numbers are unreliable (rerun on an idle machine, or with more --rounds).")
    print(f"total time {time.perf_counter() - started:.0f} s")

    if args.json:
        out = {
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": machine,
            "settings": {"n": SHAPE[0] * SHAPE[1], "k": K, "blur": BLUR, "noise": NOISE, "step": STEP,
                         "dtype": "float32", "train": "WV", "rounds": rounds, "iters": iters,
                         "rounds_per_epoch": args.rounds_per_epoch, "epoch_of_round": epoch_of,
                         "quick": args.quick, "baseline": args.baseline_src or BASE_COMMIT},
            "measurements": rows,
            "instrumented_observe_s": instrumented,
            "verdict": verdict,
            "direct": direct,
            "control": control_note,
            "background_load_per_round": background,
            "rounds_used": [r + 1 for r in used],
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
