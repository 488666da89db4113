"""Writing results: atomic JSON/CSV files and the summary figure (matplotlib, Agg backend)."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .fileio import atomic_output, atomic_write_text


def versions() -> dict:
    """Versions of dipcert and of what its numbers depend on (the optional packages of the classical
    baselines included, or "not installed"), for manifests and metrics."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from . import __version__

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return {"dipcert": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "numba": version("numba"), "python": platform.python_version(),
            **{package: installed(package) for package in ("scipy", "scikit-image", "pyproximal", "pylops", "bm3d")}}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def _finite_or_str(value):
    """JSON has no inf/NaN: write them as the strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_or_str(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_str(v) for v in value]
    return value


def dumps(data) -> str:
    """JSON text with inf/NaN written as strings and NumPy values converted."""
    return json.dumps(_finite_or_str(data), indent=2, default=_json_default)


def write_json(path: str | Path, data: Mapping) -> None:
    atomic_write_text(path, dumps(dict(data)) + "\n")


def write_csv(path: str | Path, columns: Mapping[str, np.ndarray]) -> None:
    """Columns of equal length as a CSV table with a header row."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(columns))
    for row in zip(*(np.asarray(c).tolist() for c in columns.values())):
        writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
    atomic_write_text(path, buf.getvalue())


def summary_figure(
    path: str | Path,
    curves: Mapping[str, np.ndarray],
    images: Mapping[str, np.ndarray] | None = None,
    title: str = "",
    bound_label: str = "bound",
    marks: Mapping[str, int] | None = None,
) -> None:
    """Images in a top row (truth, observation, reconstruction…), loss and error curves below.

    ``marks`` (label → iteration τ) are drawn as vertical lines on every curve, e.g. where the
    stopping rule stopped and which iterate it returned.

    ``curves`` holds ``iteration`` and any of ``loss``, ``error``, ``param_dist``; keys ending in
    ``_bound`` are drawn dashed on the panel of the curve they bound, labelled ``bound_label``. Short histories (a run that
    stopped at τ = 0) are drawn with markers, on a linear iteration axis below 10 iterations. NaN
    and inf values are left out and named in the panel's title; the value axis is logarithmic only
    when the finite values are positive. Non-finite pixels are shown in red.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = dict(images or {})
    panels = [name for name in ("loss", "error", "param_dist") if name in curves]
    ncols = max(len(images), len(panels), 1)
    nrows = 2 if images else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.2 * nrows + 0.5), squeeze=False,
                             layout="constrained")
    gray = plt.get_cmap("gray").with_extremes(bad="red")
    for ax, (label, img) in zip(axes[0], images.items()):
        ax.imshow(img, cmap=gray, vmin=0, vmax=255)
        if not np.all(np.isfinite(img)):
            label += "\n(non-finite pixels in red)"
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    for ax in axes[0][len(images):] if images else []:
        ax.axis("off")
    row = axes[-1]
    it = np.asarray(curves["iteration"])
    labels = {
        "loss": "loss $L_y(y_\\tau)$",
        "error": "error $\\|x_\\tau - \\bar x\\|$",
        "param_dist": "parameters $\\|\\theta_\\tau - \\theta_0\\|$",
    }
    marker = "o" if len(it) <= 20 else None
    for ax, name in zip(row, panels):
        series = {"measured": np.asarray(curves[name], dtype=np.float64)}
        if f"{name}_bound" in curves:
            series[bound_label] = np.asarray(curves[f"{name}_bound"], dtype=np.float64)
        note = _not_drawn(it, series["measured"])
        ax.set_title(labels[name] + (f"\n{note}" if note else ""), fontsize=9)
        if not any(np.isfinite(values).any() for values in series.values()):
            ax.text(0.5, 0.5, "no finite value", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for (kind, values), style in zip(series.items(), ("-", "--")):
            ax.plot(it + 1, values, style, marker=marker, markersize=3, label=kind)
        for (label, tau), color in zip((marks or {}).items(), ("tab:red", "tab:green", "tab:purple")):
            ax.axvline(tau + 1, color=color, linestyle=":", linewidth=1.5, label=label)
        if it[-1] + 1 >= 10:
            ax.set_xscale("log")
        else:  # a short history: a log axis would show decades that hold no iteration
            ax.set_xlim(0.5, it[-1] + 1.5)
            ax.set_xticks(np.arange(1, it[-1] + 2))
        if _log_scale_fits(series.values()):
            ax.set_yscale("log")
        ax.set_xlabel("iteration $\\tau + 1$")
        ax.grid(True, which="both", alpha=0.3)
    for ax in row[len(panels):]:
        ax.axis("off")
    # one legend for every curve panel, below them: the panels share their styles, and a legend
    # inside a panel covers its curve (and, wider than the panel, the tick labels beside it)
    handles: dict = {}
    for ax in row[:len(panels)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if len(handles) > 1:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=min(len(handles), 4),
                   fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def _not_drawn(iteration: np.ndarray, values: np.ndarray) -> str:
    """Which NaN/inf values a curve leaves out, e.g. "not drawn: inf at τ = 0" ("" if none)."""
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size == 0:
        return ""
    more = f" and {bad.size - 1} more" if bad.size > 1 else ""
    return f"not drawn: {values[bad[0]]} at $\\tau$ = {iteration[bad[0]]}{more}"


def _log_scale_fits(series: Iterable[np.ndarray]) -> bool:
    """A log value axis fits when some finite value is positive and none after the first row is
    zero or negative (the first may be 0: ‖θ_0 − θ_0‖)."""
    finite = [values[np.isfinite(values)] for values in series]
    later = [values[1:][np.isfinite(values[1:])] for values in series]
    return any(np.any(v > 0) for v in finite) and all(np.all(v > 0) for v in later)


def save_figure(fig, path: str | Path, *, tight: bool = True) -> None:
    """Lay out, write atomically (a reader never sees a half-written picture) and close ``fig``."""
    import matplotlib.pyplot as plt

    if tight and fig.get_layout_engine() is None:  # a figure with its own layout (constrained) keeps it
        fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
