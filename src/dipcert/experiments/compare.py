"""``dipcert compare``: every reconstruction method on the same observations, in one table.

A *case* is an image at a size observed through a *task* (operator and noise) with a seed; every
method of :data:`dipcert.reconstruct.registry.RECONSTRUCTORS` asked for reconstructs it, once per
parameter-choice or stopping rule asked (one computation serves all of a method's rules). One cell
of the engine is (size, task, image, seed, method), so an interrupted comparison resumes method by
method. Rows: PSNR and SSIM against the truth (scikit-image), seconds, the parameter or stop each
rule chose, what the rule needed, and for the DIPs what the certificate says of the returned iterate.

Our choices (the issue leaves them open):
- The noise level given to the rules that need one (discrepancy, the DIPs' ``auto``) is the simulated
  σ, as a user who knows the sensor would give it; with 8-bit quantized observations (noiseless blur)
  it is the rounding's 1/√12 (``--noise-level estimated`` takes scikit-image's estimate where one is
  sound, and leaves the discrepancy rules inapplicable elsewhere).
- Compressed sensing is noiseless; the dense tasks (well-conditioned, compressed sensing) run at sides
  up to 64 only: at 128×128 the well-conditioned operator is three dense 16384² matrices (6 GB in
  float64) and the two-layer network's V alone 164 M parameters.
- The default DIPs are the paper's two-layer network and the deep decoder (dipcert's default image
  generator, the best of the three generators in docs/generators.md); the conv-decoder and the skip
  network (2 to 5 times its seconds per iteration) are one ``--methods`` away.
- Oracle choices (the parameter or iterate nearest x̄) are kept as references, labelled, and never
  count as a method a user could apply.
"""
from __future__ import annotations

import math
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

import numpy as np

from ..components import DEVICE, COMPARE_IMAGES, COMPARE_METHODS, COMPARE_NOISE_LEVEL, COMPARE_SEEDS, COMPARE_SIZES, DIP_ITERS
from ..images import BUILTIN_IMAGES, psnr, ssim
from ..reconstruct.case import NOISE_LEVELS
from ..report import save_figure
from .engine import Cell, CellResult, ResultStore, run_grid, settings_and_choices
from .executors import DaskExecutor, InProcess

TITLE = "Comparison: the DIPs and the classical methods on the same observations"


@dataclass(frozen=True)
class Task:
    """An operator and a noise: ``operator`` gives solve's operator options for an image of n pixels."""

    help: str
    operator: Callable[[int], dict]
    noise_std: float
    quantize: bool = False
    max_side: int | None = None  # dense operators: the largest image side the default grid runs them at


TASKS: dict[str, Task] = {
    "blur-8bit": Task("Gaussian blur sigma 1, noiseless, observation quantized to 8 bits",
                      lambda n: {"operator": "blur", "blur_sigma": 1.0}, 0.0, quantize=True),
    "blur-2.5": Task("Gaussian blur sigma 1, noise 2.5", lambda n: {"operator": "blur", "blur_sigma": 1.0}, 2.5),
    "blur-10": Task("Gaussian blur sigma 1, noise 10", lambda n: {"operator": "blur", "blur_sigma": 1.0}, 10.0),
    "inpainting-0": Task("50% of the pixels, noiseless",
                         lambda n: {"operator": "inpainting", "keep_fraction": 0.5}, 0.0),
    "inpainting-10": Task("50% of the pixels, noise 10",
                          lambda n: {"operator": "inpainting", "keep_fraction": 0.5}, 10.0),
    "well-conditioned-50": Task("the paper's U diag(s) V^T, s in [1, 2], noise 50",
                                lambda n: {"operator": "well-conditioned"}, 50.0, max_side=64),
    "cs-0": Task("compressed sensing, Gaussian A with m = n/4, noiseless",
                 lambda n: {"operator": "gaussian", "m": n // 4}, 0.0, max_side=64),
}
QUICK_METHODS = (*(m for m in COMPARE_METHODS.default if not m.startswith("dip-")), "dip-deep-decoder:auto+oracle")


def parse_methods(specs: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``NAME`` (every rule of the method) or ``NAME:RULE+RULE`` → method → rules; a clear error for
    an unknown method or rule."""
    from ..reconstruct.registry import RECONSTRUCTORS

    out: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        name, _, rules = spec.partition(":")
        if name not in RECONSTRUCTORS:
            raise ValueError(f"unknown method {name!r}; allowed: {', '.join(RECONSTRUCTORS)}")
        entry = RECONSTRUCTORS[name]
        asked = tuple(rules.split("+")) if rules else entry.rules
        unknown = [r for r in asked if r not in entry.rules]
        if unknown:
            raise ValueError(f"method {name}: unknown rule {unknown[0]!r}; allowed: {', '.join(entry.rules)}")
        out[name] = tuple(dict.fromkeys(out.get(name, ()) + asked))
    return out


@dataclass(frozen=True)
class Config:
    images: tuple[str, ...] = COMPARE_IMAGES.default
    sizes: tuple[int, ...] = COMPARE_SIZES.default
    tasks: tuple[str, ...] = tuple(TASKS)
    methods: tuple[str, ...] = COMPARE_METHODS.default
    seeds: tuple[int, ...] = COMPARE_SEEDS.default
    noise_level: str = COMPARE_NOISE_LEVEL.default
    dip_iters: int | None = DIP_ITERS.default  # None: each generator's own budget (solve's default)
    device: str = DEVICE.default

    def __post_init__(self) -> None:
        for kind, names, allowed in (("task", self.tasks, TASKS), ("image", self.images, BUILTIN_IMAGES)):
            unknown = [name for name in names if name not in allowed]
            if unknown:
                raise ValueError(f"unknown {kind} {unknown[0]!r}; allowed: {', '.join(allowed)}")
        if not self.sizes or not self.seeds:
            raise ValueError("a comparison needs at least one size and one seed")
        if self.noise_level not in NOISE_LEVELS:
            raise ValueError(f"noise level must be one of {', '.join(NOISE_LEVELS)}, got {self.noise_level!r}")
        parse_methods(self.methods)
        if not cells(self):
            raise ValueError("no case to run: the dense tasks (" + ", ".join(
                f"{name} up to {task.max_side}" for name, task in TASKS.items() if task.max_side)
                + " pixels a side) are the only ones asked, at larger sizes only")

    @classmethod
    def quick(cls) -> "Config":
        """Two 32×32 images, two tasks, every classical method and the deep decoder on 300 iterations:
        the test suite's comparison (28 s on the 2-core machine)."""
        return cls(images=("camera", "coins"), sizes=(32,), tasks=("blur-2.5", "inpainting-0"), methods=QUICK_METHODS,
                   dip_iters=300)


def cells(config: Config) -> list[Cell]:
    methods = parse_methods(config.methods)
    return [Cell.of(size=size, task=task, image=image, seed=seed, method=method)
            for size in config.sizes for task in config.tasks
            if TASKS[task].max_side is None or size <= TASKS[task].max_side
            for image in config.images for seed in config.seeds for method in methods]


def group_of(cell: Cell) -> str:
    return cell.key


def cost(cell: Cell) -> float:
    """DIP cells first (they take minutes), larger images first."""
    return cell["size"] ** 2 * (100.0 if cell["method"].startswith("dip-") else 1.0)


def case_values(config: Config, size: int, task: str, image: str, seed: int) -> dict:
    """The case as ``solve``'s nested options."""
    spec = TASKS[task]
    values = {"problem": {"image": f"builtin:{image}", "size": (size, size)}, "operator": spec.operator(size * size),
              "noise": {"noise_std": spec.noise_std}, "run": {"seed": seed, "device": config.device}}
    if config.dip_iters is not None:
        values["training"] = {"iters": config.dip_iters}
    return values


@lru_cache(maxsize=2)
def _case(config: Config, size: int, task: str, image: str, seed: int):
    from ..reconstruct import build_case

    return build_case(case_values(config, size, task, image, seed), TASKS[task].quantize, config.noise_level)


def run_group(config: Config, group: list[Cell]) -> dict[str, CellResult]:
    (cell,) = group
    from ..reconstruct.registry import RECONSTRUCTORS

    start = time.perf_counter()
    case = _case(config, cell["size"], cell["task"], cell["image"], cell["seed"])
    entry = RECONSTRUCTORS[cell["method"]]
    rules = parse_methods(config.methods)[cell["method"]]
    outcomes = _reconstruct(entry, case, rules)
    cell_seconds = time.perf_counter() - start
    rows, arrays = [], {}
    for rule in rules:
        outcome = outcomes[rule]
        row = {"size": cell["size"], "task": cell["task"], "image": cell["image"], "seed": cell["seed"],
               "method": entry.name, "family": entry.family, "rule": rule, "cell_seconds": cell_seconds}
        if isinstance(outcome, str):
            rows.append({**row, **_EMPTY, "status": outcome})
            continue
        x = outcome.x
        details = outcome.details
        rows.append({**row, "applied": outcome.rule, "psnr": psnr(case.truth, x), "ssim": ssim(case.truth, x),
                     "seconds": outcome.seconds, "parameter": outcome.parameter, "value": outcome.value,
                     "needs": "+".join(outcome.needs) or "-", "certificate": details.get("certificate", ""),
                     "psnr_lower_bound": details.get("psnr_lower_bound", math.nan),
                     "notes": " | ".join(outcome.notes), "status": "ok"})
        arrays[f"x_{rule}"] = x.astype(np.float32)
    return {cell.key: CellResult(rows, arrays)}


_EMPTY = {"applied": "", "psnr": math.nan, "ssim": math.nan, "seconds": math.nan, "parameter": "",
          "value": math.nan, "needs": "", "certificate": "", "psnr_lower_bound": math.nan, "notes": ""}


def _reconstruct(entry, case, rules: tuple[str, ...]) -> dict:
    """Rule → Reconstruction, or the reason it could not be had ("not applicable: …", "failed: …");
    a rule that cannot apply does not cost the others their result."""
    from ..reconstruct import NotApplicable

    reason = entry.applies(case)
    if reason is not None:
        return {rule: f"not applicable: {reason}" for rule in rules}
    try:
        results = entry.reconstruct(case, rules)
    except NotApplicable as exc:
        if len(rules) == 1:
            return {rules[0]: f"not applicable: {exc}"}
        return {rule: _reconstruct(entry, case, (rule,))[rule] for rule in rules}
    except Exception as exc:  # noqa: BLE001 (one method failing must not cost the others their rows)
        return {rule: f"failed: {type(exc).__name__}: {exc}" for rule in rules}
    return {rule: f"not applicable: {r}" if isinstance(r, NotApplicable) else r for rule, r in results.items()}


# --------------------------------------------------------------------------------------- tables
def usable(row: dict) -> bool:
    """A result a user could have: computed, and not chosen by oracle."""
    return row["status"] == "ok" and row["rule"] != "oracle"


def method_label(row: dict) -> str:
    label = f"{row['method']} ({row['rule']})"
    return label + " [oracle: reference]" if row["rule"] == "oracle" else label


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def summary(config: Config, rows: list[dict]) -> dict:
    """Per (size, task): every method-rule's mean PSNR/SSIM/seconds over images and seeds, best first;
    the winner among usable methods; each DIP's mean gap to the best usable classical method per case."""
    out = {}
    for (size, task), group in sorted(_by(rows, ("size", "task")).items(), key=lambda item: _task_order(*item[0])):
        table = []
        for label, results in _by([r for r in group if r["status"] == "ok"], lambda r: (method_label(r),)).items():
            table.append({"method": label[0], "psnr": _mean([r["psnr"] for r in results]),
                          "ssim": _mean([r["ssim"] for r in results]), "seconds": _mean([r["seconds"] for r in results]),
                          "cases": len(results), "oracle": results[0]["rule"] == "oracle",
                          "family": results[0]["family"]})
        table.sort(key=lambda t: -t["psnr"])
        winner = next((t["method"] for t in table if not t["oracle"]), None)
        out[f"{size}/{task}"] = {"table": table, "winner": winner, "dip_gaps": dip_gaps(group)}
    return out


def _task_order(size, task: str) -> tuple[int, int]:
    """Smaller images first, then the tasks in the order of :data:`TASKS`."""
    return int(size), list(TASKS).index(task)


def dip_gaps(rows: list[dict]) -> dict[str, float]:
    """Each usable DIP result's mean PSNR gap (DIP − best usable classical) over the cases of ``rows``."""
    gaps: dict[str, list[float]] = {}
    for _, case_rows in _by(rows, ("size", "task", "image", "seed")).items():
        classical = [r["psnr"] for r in case_rows if usable(r) and r["family"] == "classical"]
        if not classical:
            continue
        for r in case_rows:
            if usable(r) and r["family"] == "dip":
                gaps.setdefault(method_label(r), []).append(r["psnr"] - max(classical))
    return {label: _mean(values) for label, values in gaps.items()}


def _by(rows: list[dict], key: tuple[str, ...] | Callable[[dict], tuple]) -> dict[tuple, list[dict]]:
    """``rows`` grouped by the values of the columns ``key``, or by what ``key(row)`` returns, in
    order of first appearance."""
    of = key if callable(key) else lambda r: tuple(r[k] for k in key)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(of(r), []).append(r)
    return groups


def markdown(config: Config, rows: list[dict]) -> str:
    """The summary tables: per (size, task), methods by mean PSNR over images and seeds."""
    lines = []
    computed = sum({(r["size"], r["task"], r["image"], r["seed"], r["method"]): r["cell_seconds"] for r in rows}.values())
    lines += [f"{len(rows)} rows; compute time summed over cells: {computed:.0f} s (the wall time of each invocation "
              "is in compare.json).", ""]
    summaries = summary(config, rows)
    lines += overview(summaries) + certificates(rows)
    lines += ["## Per task", "", "Mean over images and seeds, best first. Oracle rows choose with the truth: references, "
              f"not methods a user could apply. The rules that need a noise level get the {config.noise_level} one.", ""]
    for key, entry in summaries.items():
        size, task = key.split("/")
        lines += [f"### {TASKS[task].help}, {size}x{size}", "", f"Best usable: **{entry['winner']}**.", "",
                  "| method (rule) | PSNR | SSIM | seconds | cases |", "|---|---|---|---|---|"]
        lines += [f"| {t['method']} | {t['psnr']:.2f} | {t['ssim']:.3f} | {_seconds(t['seconds'])} | {t['cases']} |"
                  for t in entry["table"]]
        if entry["dip_gaps"]:
            gaps = ", ".join(f"{label} {gap:+.2f} dB" for label, gap in entry["dip_gaps"].items())
            lines += ["", f"DIP gap to the best usable classical method, mean over cases: {gaps}."]
        lines.append("")
    return "\n".join(lines)


def overview(summaries: dict) -> list[str]:
    """Markdown lines: per (size, task), the best method a user can apply (mean PSNR) and each usable
    DIP result's mean PSNR with its mean gap to the best usable classical method of each case."""
    dips = list(dict.fromkeys(label for entry in summaries.values() for label in entry["dip_gaps"]))
    lines = ["## Winners and the DIPs' gap", "",
             "Best method a user can apply (mean PSNR over images and seeds); each DIP's mean PSNR and its mean gap "
             "to the best usable classical method of each case (positive: the DIP wins).", "",
             "| " + " | ".join(("task", "size", "best usable (mean PSNR)", *dips)) + " |", "|---" * (3 + len(dips)) + "|"]
    for key, entry in summaries.items():
        size, task = key.split("/")
        psnrs = {t["method"]: t["psnr"] for t in entry["table"]}
        best = entry["winner"]
        cells_ = [f"{psnrs[label]:.2f} dB, {entry['dip_gaps'][label]:+.2f}" if label in entry["dip_gaps"] else "-"
                  for label in dips]
        best_text = f"{best} ({psnrs[best]:.2f})" if best is not None else "-"
        if best is not None and _is_dip(entry, best):
            best_text = f"**{best_text}**"
        lines.append("| " + " | ".join((TASKS[task].help, size, best_text, *cells_)) + " |")
    return lines + [""]


def _is_dip(entry: dict, label: str) -> bool:
    return any(t["method"] == label and t["family"] == "dip" for t in entry["table"])


def certificates(rows: list[dict]) -> list[str]:
    """Markdown lines: per (size, task) and usable DIP result, how many runs got each a-priori verdict,
    and the PSNR the a-posteriori recovery bound guarantees against the PSNR measured."""
    dip_rows = [r for r in rows if usable(r) and r["family"] == "dip"]
    if not dip_rows:
        return []
    lines = ["## What the certificates said", "",
             "Per DIP result: the a-priori verdict (runs with it), and where A is injective the PSNR guaranteed by "
             "the a-posteriori bound (||A x - y|| + ||eps||)/sigma_min(A), with the simulation's true ||eps|| "
             "(a lower bound on the PSNR), beside the PSNR measured.", "",
             "| task | size | method (rule) | a-priori verdict (runs) | a-posteriori guarantee | measured PSNR |",
             "|---|---|---|---|---|---|"]
    groups = _by(dip_rows, lambda r: (r["size"], r["task"], method_label(r)))
    for size, task, label in sorted(groups, key=lambda key: (*_task_order(key[0], key[1]), key[2])):
        group = groups[size, task, label]
        verdicts = Counter(verdict_head(r["certificate"]) for r in group)
        verdict_text = "; ".join(f"{head} ({count}/{len(group)})" for head, count in verdicts.items())
        ratios = [float(a) / float(b) for r in group for a, b in _STEP_OVER_1_L.findall(r["certificate"])]
        if ratios:
            verdict_text += f"; the step was {_span(ratios, _ratio)} times 1/L"
        bounds = [float(r["psnr_lower_bound"]) for r in group]
        guaranteed = [b for b in bounds if math.isfinite(b) and b > 0]
        if "not injective" in group[0]["certificate"]:
            guarantee = "none: A is not injective"
        elif not guaranteed:
            guarantee = "vacuous (below 0 dB)"
        else:
            guarantee = f">= {_span(guaranteed)} dB" + (f" ({len(bounds) - len(guaranteed)} of {len(bounds)} vacuous)"
                                                      if len(guaranteed) < len(bounds) else "")
        measured = [float(r["psnr"]) for r in group]
        lines.append(f"| {TASKS[task].help} | {size} | {label} | {verdict_text.replace('|', '/')} | {guarantee} | "
                     f"{_span(measured)} |")
    return lines + [""]


def markdown_cases(rows: list[dict]) -> str:
    """One table per case, methods by PSNR, with what each chose and needed and, for the DIPs, what
    the certificate said; then the methods that did not run there, and why."""
    lines = []
    for (size, task, image, seed), case_rows in _by(rows, ("size", "task", "image", "seed")).items():
        lines += [f"### {task}, {image} {size}x{size}, seed {seed}", "",
                  "| method (rule) | PSNR | SSIM | seconds | chose | needs | certificate |", "|---|---|---|---|---|---|---|"]
        done = sorted((r for r in case_rows if r["status"] == "ok"), key=lambda r: -r["psnr"])
        for r in done:
            chose = f"{r['parameter']} = {r['value']:.4g}" if r["parameter"] else "-"
            applied = "" if r["applied"] == r["rule"] else f" -> {r['applied'].split(': ', 1)[-1]}"
            lines.append(f"| {method_label(r)}{applied} | {r['psnr']:.2f} | {r['ssim']:.3f} | {_seconds(r['seconds'])} | "
                         f"{chose} | {r['needs']} | {certificate_cell(r)} |")
        skipped = [r for r in case_rows if r["status"] != "ok"]
        if skipped:
            lines += ["", "Not run: " + "; ".join(f"{r['method']} ({r['rule']}): {r['status']}" for r in skipped) + "."]
        lines.append("")
    return "\n".join(lines)


_VERDICTS = ("Condition (4) holds", "Condition (4): undecided", "Condition (4) does not hold")
_STEP_OVER_1_L = re.compile(r"step ([0-9.e+-]+) >= 1/L = ([0-9.e+-]+)")
_FAILURE_REASONS = {"step ": "step >= 1/L", "R' >= R": "R' >= R", "sigma_min(J_g(0)) = 0": "sigma_min(J_g(0)) = 0"}


def verdict_head(certificate: str) -> str:
    """A DIP run's a-priori verdict without its numbers (the same for runs with the same verdict):
    Theorem III.1's condition (4) holds / is undecided / does not hold (and why), or why there is none."""
    for head in _VERDICTS:
        if certificate.startswith(head):
            if head.endswith("does not hold"):
                why = certificate.split(":", 1)[1]
                head += ": " + ", ".join(reason for key, reason in _FAILURE_REASONS.items() if key in why)
            return head
    return re.sub(r"\s*\([^()]*\)", "", certificate.split(":")[0])


def _span(values: list[float], text: Callable[[float], str] = "{:.1f}".format) -> str:
    low, high = text(min(values)), text(max(values))
    return low if low == high else f"{low}-{high}"


def _ratio(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _seconds(value: float) -> str:
    return f"{value:.3g}" if value >= 0.001 else "< 0.001"


def certificate_cell(row: dict) -> str:
    """What the certificate said of a DIP run, in a table cell: the verdict's first clause and the
    PSNR the a-posteriori recovery bound guarantees (where A is injective)."""
    if not row["certificate"]:
        return ""
    verdict = verdict_head(row["certificate"])
    bound = row["psnr_lower_bound"]
    if isinstance(bound, float) and math.isfinite(bound):
        verdict += (f"; a-posteriori bound (true ||eps||): PSNR >= {bound:.1f} dB" if bound > 0
                    else "; a-posteriori recovery bound vacuous (below 0 dB)")
    elif "not injective" in row["certificate"]:
        verdict += "; A not injective: no recovery bound"
    return verdict.replace("|", "/")


def failures(table: Path) -> list[str]:
    """The results of ``compare.csv`` that failed (an exception, not a method that does not apply), described."""
    import csv

    with open(table, newline="") as fh:
        return [f"{r['method']} ({r['rule']}) on {r['task']}, {r['image']} {r['size']}: {r['status']}"
                for r in csv.DictReader(fh) if r["status"].startswith("failed")]


# --------------------------------------------------------------------------------------- figure
def plot(config: Config, rows: list[dict], arrays: dict[str, dict], path: Path) -> None:
    """For the first image and seed of each (size, task): the truth, the observation and each method's
    reconstruction by its first usable rule, with its PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..solve import observation_image

    image, seed = config.images[0], config.seeds[0]
    shown = [r for r in rows if r["image"] == image and r["seed"] == seed]
    cases = list(dict.fromkeys((r["size"], r["task"]) for r in shown))
    methods = [m for m in parse_methods(config.methods) if any(r["method"] == m and usable(r) for r in shown)]
    missing = [m for m in parse_methods(config.methods) if m not in methods]
    columns = 2 + len(methods)
    fig, axes = plt.subplots(len(cases), columns, figsize=(1.5 * columns, 1.95 * len(cases) + 0.6), squeeze=False,
                             layout="constrained")
    for ax_row, (size, task) in zip(axes, cases):
        case = _case(config, size, task, image, seed)
        _panel(ax_row[0], case.truth, f"{task}, {size}x{size}\ntruth")
        _panel(ax_row[1], observation_image(case.problem), "observation y" if case.problem.m == case.problem.n
               else "A^T y")
        for ax, method in zip(ax_row[2:], methods):
            found = [r for r in shown if (r["size"], r["task"], r["method"]) == (size, task, method) and usable(r)]
            key = Cell.of(size=size, task=task, image=image, seed=seed, method=method).key
            if not found or key not in arrays:
                _panel(ax, None, f"{method}\nnot applicable")
                continue
            r = found[0]
            _panel(ax, arrays[key][f"x_{r['rule']}"], f"{method}\n{r['rule']}: {r['psnr']:.1f} dB")
    title = f"{TITLE}: {image}, seed {seed}; each method by its first rule that a user can apply"
    if missing:
        title += f"\nnot shown (no result on these cases): {', '.join(missing)}"
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def _panel(ax, img, title: str) -> None:
    if img is not None:
        ax.imshow(np.clip(img, 0, 255), cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


# --------------------------------------------------------------------------------------- running
def manifest(config: Config) -> dict:
    return settings_and_choices(config, __doc__)


def compare(config: Config, out_dir: str | Path, *, fresh: bool = False,
            executor: InProcess | DaskExecutor | None = None, on_group: Callable[[list[Cell], float], None] | None = None,
            on_notice: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Run (or resume) the comparison of ``config`` in ``out_dir``: ``compare.csv`` (one row per case,
    method and rule), ``compare.md`` (the winners, the DIPs' gaps and certificates, then per task, best
    first), ``compare-cases.md`` (per case),
    ``compare.png`` and the manifest ``compare.json``. ``executor`` runs the cells (in this process
    by default, see :mod:`.executors`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out, "compare", manifest(config), fresh=fresh)
    start = time.perf_counter()
    grid = cells(config)
    rows = run_grid(store, grid, partial(run_group, config), group_of, on_group, executor=executor, cost=cost,
                    on_notice=on_notice)
    seconds = time.perf_counter() - start
    arrays = {cell.key: store.read_arrays(cell) for cell in grid if store.has_arrays(cell)}
    figure = out / "compare.png"
    plot(config, rows, arrays, figure)
    from ..fileio import atomic_write_text

    table, cases = out / "compare.md", out / "compare-cases.md"
    atomic_write_text(table, markdown(config, rows) + "\n")
    atomic_write_text(cases, markdown_cases(rows) + "\n")
    path = store.write_manifest(len(grid), len(rows), seconds, {"summary": summary(config, rows)})
    return {"table": store.table_path(), "markdown": table, "cases": cases, "figure": figure, "manifest": path}

