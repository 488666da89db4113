"""Study 3 of docs/studies.md: tables and figure of `dipcert sweep examples/fig1a-wide.toml`.

Reads OUT/fig1a-wide.summary.csv and prints, per Lipschitz form, P[(4) holds] for each m and width
and the smallest width where it reaches 1/2 (Markdown), and draws the three forms side by side.
Usage: python examples/fig1a_wide.py OUT/fig1a-wide.summary.csv [--figure OUT/fig1a-wide-forms.png]
"""
from __future__ import annotations

import argparse
import csv
import math

import numpy as np

FORMS = {"condition_4_radius_free": "radius-free", "condition_4_radius_dependent": "radius-dependent",
         "condition_4_jmiv": "JMIV"}


def read(path: str) -> tuple[list[int], list[int], dict[str, np.ndarray], int]:
    """m values, widths, P[(4) holds] per form as an (m, width) array, and the trials per cell."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    ms = sorted({int(r["operator.m"]) for r in rows})
    ks = sorted({int(r["network.width"]) for r in rows})
    table = {form: np.full((len(ms), len(ks)), np.nan) for form in FORMS}
    for r in rows:
        for form in FORMS:
            table[form][ms.index(int(r["operator.m"])), ks.index(int(r["network.width"]))] = float(r[f"{form}_mean"])
    return ms, ks, table, min(int(r["trials"]) for r in rows)


def markdown(ms: list[int], ks: list[int], table: dict[str, np.ndarray]) -> str:
    logs = [f"{math.log10(k):.1f}" for k in ks]
    lines = ["Smallest log10 k with P[(4) holds] >= 1/2:", "",
             "| m | " + " | ".join(FORMS.values()) + " |", "|---" * (1 + len(FORMS)) + "|"]
    for i, m in enumerate(ms):
        first = [next((log for log, p in zip(logs, table[form][i]) if p >= 0.5), "—") for form in FORMS]
        lines.append(f"| {m} | " + " | ".join(first) + " |")
    for form, name in FORMS.items():
        lines += ["", f"P[(4) holds], {name} bound (rows m, columns log10 k):", "",
                  "| m | " + " | ".join(logs) + " |", "|---" * (1 + len(ks)) + "|"]
        lines += [f"| {m} | " + " | ".join(f"{p:.2f}" for p in table[form][i]) + " |" for i, m in enumerate(ms)]
    return "\n".join(lines)


def draw(ms: list[int], ks: list[int], table: dict[str, np.ndarray], trials: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FORMS), figsize=(15, 4.6), layout="constrained", sharey=True)
    for ax, (form, name) in zip(axes, FORMS.items()):
        image = ax.imshow(table[form], origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1)
        for (i, j), p in np.ndenumerate(table[form]):
            ax.text(j, i, f"{p:.2f}", ha="center", va="center", fontsize=7, color="w" if p < 0.6 else "k")
        ax.set_xticks(range(len(ks)), [f"{math.log10(k):.1f}" for k in ks], fontsize=8)
        ax.set_yticks(range(len(ms)), [str(m) for m in ms], fontsize=8)
        ax.set_xlabel("log10 k")
        ax.set_title(f"{name} Lipschitz bound", fontsize=10)
    axes[0].set_ylabel("m")
    fig.colorbar(image, ax=axes, fraction=0.02, pad=0.01).set_label(f"P[(4) holds] ({trials} trials per cell)")
    fig.suptitle("Condition (4) at the certified step 1/(2L): n = 5, sigmoid, V0 Rademacher, W trained "
                 "(the paper's bound for m = 2: k = 10^6.8)", fontsize=11)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary")
    parser.add_argument("--figure")
    args = parser.parse_args()
    ms, ks, table, trials = read(args.summary)
    print(markdown(ms, ks, table))
    if args.figure:
        draw(ms, ks, table, trials, args.figure)


if __name__ == "__main__":
    main()
