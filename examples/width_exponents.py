"""The widths of studies 1 and 2 (docs/studies.md): k_1/2, the width at which a fraction 1/2 of the
trials converge (and at which condition (4) holds), per combination of the sweep's other grid axes;
where those are n, m and kappa, the exponents of a power-law fit k_1/2 ~ n^a m^b kappa^c, to set
beside Corollary III.2's k >~ kappa(A) n^2 m.

k_1/2 is interpolated linearly in log10 k between the two grid widths where the fraction crosses
1/2; a cell whose fraction is already >= 1/2 at the smallest width, or never reaches it, gives no
k_1/2 (it is reported as "<= k_min" or "> k_max" and left out of the fit).
Usage: ``python examples/width_exponents.py out/widths/widths.csv [--figure out/widths/k_half.png]``.
"""
from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict

import numpy as np

KEYS = ("problem.n", "operator.m", "operator.condition")  # the axes of the power-law fit


def _value(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def fractions(rows: list[dict], column: str, keys: list[str]) -> dict[tuple, list[tuple[float, float]]]:
    """Values of ``keys`` -> [(k, fraction of trials with ``column`` true)], k ascending."""
    counts: dict[tuple, dict[float, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        key = tuple(_value(row[k]) for k in keys)
        if row[column] in ("True", "False"):
            counts[key][float(row["network.width"])].append(row[column] == "True")
    return {key: sorted((k, float(np.mean(v))) for k, v in by_k.items()) for key, by_k in counts.items()}


def k_half(curve: list[tuple[float, float]]) -> tuple[float | None, str]:
    """The interpolated width where the fraction first reaches 1/2, and a label for the table."""
    if curve[0][1] >= 0.5:
        return None, f"<= {curve[0][0]:g}"
    for (k0, p0), (k1, p1) in zip(curve, curve[1:]):
        if p1 >= 0.5:
            t = (0.5 - p0) / (p1 - p0)
            value = 10 ** (math.log10(k0) + t * (math.log10(k1) - math.log10(k0)))
            return value, f"{value:.3g}"
    return None, f"> {curve[-1][0]:g}"


def fit(points: list[tuple[tuple, float]]) -> tuple[np.ndarray, float, int] | None:
    """Least squares of log10 k_1/2 on [1, log10 n, log10 m, log10 kappa] (the variables that vary):
    coefficients (NaN for a constant variable), RMS residual (decades) and the number of points;
    None with fewer points than unknowns + 1."""
    columns = [0] + ([1] if len({p[0][0] for p in points}) > 1 else []) + \
              ([2] if len({p[0][1] for p in points}) > 1 else []) + ([3] if len({p[0][2] for p in points}) > 1 else [])
    if len(points) <= len(columns):
        return None
    X = np.array([[1.0, *(math.log10(v) for v in key)] for key, _ in points])[:, columns]
    y = np.array([math.log10(value) for _, value in points])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    full = np.full(4, np.nan)
    full[columns] = coef
    return full, float(np.sqrt(np.mean((X @ coef - y) ** 2))), len(points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table")
    parser.add_argument("--figure", default=None)
    args = parser.parse_args()
    with open(args.table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keys = [c for c in rows[0] if "." in c and c != "network.width"]  # the other grid axes
    fitted_axes = tuple(keys) == KEYS
    results = {}
    recorded = [(c, w) for c, w in (("converged", "converges"), ("condition_4", "condition (4) holds"))
                if rows and c in rows[0]]
    for column, what in recorded:
        curves = fractions(rows, column, keys)
        print(f"\nk_1/2 where training {what} with probability 1/2" if column == "converged" else
              f"\nk_1/2 where {what} with probability 1/2")
        print("  ".join(keys) + "  k_1/2" + ("   kappa n^2 m" if fitted_axes else ""))
        points = []
        for key in sorted(curves):
            value, label = k_half(curves[key])
            extra = f"   {key[2] * key[0] ** 2 * key[1]:g}" if fitted_axes else ""
            print("  ".join(f"{v:g}" if isinstance(v, float) else v for v in key) + f"  {label}{extra}")
            if value is not None:
                points.append((key, value))
        fitted = fit(points) if fitted_axes else None
        results[column] = (curves, points, fitted)
        if not fitted_axes:
            continue
        if fitted is None:
            print("too few finite k_1/2 to fit exponents")
        else:
            coef, rms, count = fitted
            terms = ", ".join(f"{name} {c:+.2f}" for name, c in zip(("n", "m", "kappa"), coef[1:]) if np.isfinite(c))
            print(f"fit log10 k_1/2 = {coef[0]:.2f} + exponents ({terms}); RMS residual {rms:.2f} decades over "
                  f"{count} cells (Corollary III.2: n +2, m +1, kappa +1)")
    if args.figure and fitted_axes:
        draw(results, args.figure)
    elif args.figure:
        print(f"no figure: the grid's other axes are {', '.join(keys)}, not n, m and kappa")


def draw(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results) + 0.5, 4), layout="constrained",
                             sharey=True, squeeze=False)
    axes = axes[0]
    titles = {"converged": "training converges (P = 1/2)", "condition_4": "condition (4) holds (P = 1/2)"}
    for ax, (column, (curves, points, fitted)) in zip(axes, results.items()):
        kappas = sorted({key[2] for key in curves})
        ms = sorted({key[1] for key in curves})
        for (n, m, kappa), value in sorted(points):
            ax.scatter(n * (1 + 0.04 * (ms.index(m) - (len(ms) - 1) / 2)), value, s=32,
                       marker="os^Dv"[kappas.index(kappa) % 5], color=f"C{ms.index(m)}",
                       label=f"m = {m:g}, kappa = {kappa:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ns = sorted({key[0] for key in curves})
        ax.set_xticks(ns, [f"{n:g}" for n in ns])
        ax.minorticks_off()
        ax.set_xlim(min(ns) / 1.3, max(ns) * 1.3)
        ax.set_xlabel("n")
        ax.set_title(titles[column], fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if not points:
            ax.text(0.5, 0.5, "no cell reached 1/2 in the grid", transform=ax.transAxes, ha="center")
    axes[0].set_ylabel("k_1/2 (interpolated)")
    handles, labels = [], []
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
