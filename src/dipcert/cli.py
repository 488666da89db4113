"""Command-line interface: ``dipcert solve`` (more commands arrive with the certificate module)."""
from __future__ import annotations

import sys

import click

from .images import BUILTIN_IMAGES

EXIT_DIVERGED = 3


def _parse_size(_ctx, _param, value: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in value.lower().split("x")]
    except ValueError:
        raise click.BadParameter(f"expected N or HxW with positive integers, got {value!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise click.BadParameter(f"expected N or HxW with positive integers, got {value!r}")
    return parts[0], parts[1]


def _positive(_ctx, _param, value):
    if value is not None and not value > 0:
        raise click.BadParameter(f"must be > 0, got {value}")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dipcert")
def main() -> None:
    """Deep Inverse Prior reconstructions with the certificates of Buskulic, Fadili and Quéau."""


@main.command()
@click.option("--signal", type=click.Choice(["image", "gaussian"]), default="image", show_default=True,
              help="An image, or the paper's synthetic problem (A and x̄ iid N(0,1), Fig. 1-2).")
@click.option("--image", default="builtin:camera", show_default=True,
              help=f"Image file, .npy array, or builtin:NAME ({', '.join(BUILTIN_IMAGES)}).")
@click.option("--size", default="64", show_default=True, callback=_parse_size, help="Resize to N×N or H×W (e.g. 64x48).")
@click.option("--n", "n", type=int, default=5, show_default=True, callback=_positive, help="Signal size (--signal gaussian).")
@click.option("--m", "m", type=int, default=None, callback=_positive, help="Number of measurements (gaussian signal or operator; default n).")
@click.option("--operator", type=click.Choice(["blur", "well-conditioned", "gaussian", "inpainting"]), default="blur", show_default=True)
@click.option("--blur-sigma", type=float, default=1.0, show_default=True, callback=_positive, help="Std of the Gaussian blur kernel, in pixels.")
@click.option("--boundary", type=click.Choice(["circular", "zero", "reflect", "replicate"]), default="circular", show_default=True, help="Blur boundary condition.")
@click.option("--keep-fraction", type=float, default=0.5, show_default=True, help="Fraction of pixels observed (inpainting).")
@click.option("--noise-std", type=click.FloatRange(min=0), default=0.0, show_default=True, help="White Gaussian noise std, on the [0, 255] scale for images.")
@click.option("--width", type=int, default=10_000, show_default=True, callback=_positive, help="Hidden width k of the two-layer DIP (9).")
@click.option("--d", "d", type=int, default=32, show_default=True, callback=_positive, help="Input size d (the W-only dynamics do not depend on it).")
@click.option("--train", "train_layers", type=click.Choice(["W", "WV"]), default=None, help="Trained layers [default: WV for images, W for gaussian].")
@click.option("--activation", type=click.Choice(["sigmoid", "tanh", "softplus"]), default="sigmoid", show_default=True)
@click.option("--v-law", type=click.Choice(["rademacher", "uniform", "gaussian"]), default="rademacher", show_default=True, help="Law of the entries of V_0 (A-8).")
@click.option("--step", type=float, default=None, callback=_positive, help="Step size γ [default: 1/||A J(θ0)||², a heuristic].")
@click.option("--iters", type=int, default=None, callback=_positive, help="Iteration limit [default: 500 for images, 1e5 for gaussian].")
@click.option("--loss-tol", type=click.FloatRange(min=0), default=None, help="Stop when the loss reaches this [default: 0 for images, 1e-14 for gaussian].")
@click.option("--runs", type=int, default=1, show_default=True, callback=_positive, help="Independent runs (seeds seed, seed+1, …), trained as one batch.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None, help="[default: float32 for images, float64 for gaussian]")
@click.option("--out", "out_dir", default="dipcert-out", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def solve(signal, image, size, n, m, operator, blur_sigma, boundary, keep_fraction, noise_std, width, d,
          train_layers, activation, v_law, step, iters, loss_tol, runs, seed, device, dtype, out_dir, quiet) -> None:
    """Reconstruct a signal with a two-layer Deep Inverse Prior trained by gradient descent (2).

    Writes OUT/metrics.json, OUT/history.csv, OUT/summary.png and, for images,
    OUT/observation.png and OUT/reconstruction.png.
    """
    from .solve import SolveConfig, solve as run_solve, write_outputs

    try:
        config = SolveConfig(
            signal=signal, image=image, size=size, n=n, m=m, operator=operator, blur_sigma=blur_sigma,
            boundary=boundary, keep_fraction=keep_fraction, noise_std=noise_std, width=width, d=d,
            train=train_layers, activation=activation, v_law=v_law, step=step, iters=iters,
            loss_tol=loss_tol, seed=seed, runs=runs, device=device, dtype=dtype,
        )
        with _progress(config.iters, quiet) as callback:
            outcome = run_solve(config, callback=callback)
        paths = write_outputs(outcome, out_dir)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None

    m = outcome.metrics
    line = f"{m['status']} after {m['iterations']} iterations in {m['seconds']:.1f} s; final loss {m['final_loss']:.3g}"
    if "psnr" in m:
        line += f"; PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}"
    elif "relative_error" in m:
        line += f"; relative error {m['relative_error']:.3g}"
    click.echo(line)
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
    if any(status == "diverged" for status in outcome.result.status):
        click.echo(
            f"error: training diverged (step {outcome.step:.3g}); the history up to divergence is in "
            f"{paths['history']}. Try a smaller --step.",
            err=True,
        )
        sys.exit(EXIT_DIVERGED)


class _progress:
    """A tqdm progress bar fed by the training callback, showing the current loss."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet, self.bar = total, quiet, None

    def __enter__(self):
        if self.quiet:
            return None
        from tqdm import tqdm

        # disable=None: a bar on a terminal, nothing in logs and pipes.
        self.bar = tqdm(total=self.total, unit="it", dynamic_ncols=True, file=sys.stderr, disable=None, mininterval=0.25)
        refresh = max(1, self.total // 200)

        def callback(tau: int, loss) -> None:
            if tau == 0:
                return
            self.bar.update(1)
            if tau % refresh == 0:
                self.bar.set_postfix(loss=f"{float(loss[0]):.3e}", refresh=False)

        return callback

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
