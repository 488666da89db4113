"""Command-line interface: ``dipcert solve`` and ``dipcert certify``."""
from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import click

from .images import BUILTIN_IMAGES
from .methods import METHODS as METHOD_NAMES

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


def _parse_auto(_ctx, param, value: str | None) -> float | str | None:
    if value is None or value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        raise click.BadParameter(f"expected a number >= 0 or 'auto', got {value!r}") from None
    if not 0 <= number < float("inf"):
        raise click.BadParameter(f"must be a finite number >= 0, got {value}")
    return number


def _parse_step(_ctx, _param, value: str | None) -> float | str | None:
    if value is None or value in ("auto", "certified"):
        return value
    try:
        step = float(value)
    except ValueError:
        raise click.BadParameter(f"expected a number > 0, 'auto' or 'certified', got {value!r}") from None
    if not step > 0 or step == float("inf"):
        raise click.BadParameter(f"must be a finite number > 0, got {value}")
    return step


PROBLEM_OPTIONS = [
    click.option("--signal", type=click.Choice(["image", "gaussian"]), default="image", show_default=True,
                 help="An image, or the paper's synthetic problem (A and x̄ iid N(0,1), Fig. 1-2)."),
    click.option("--image", default="builtin:camera", show_default=True,
                 help=f"Image file, .npy array, or builtin:NAME ({', '.join(BUILTIN_IMAGES)})."),
    click.option("--size", default="64", show_default=True, callback=_parse_size, help="Resize to N×N or H×W (e.g. 64x48)."),
    click.option("--n", "n", type=int, default=5, show_default=True, callback=_positive, help="Signal size (--signal gaussian)."),
    click.option("--m", "m", type=int, default=None, callback=_positive, help="Number of measurements (gaussian signal or operator; default n)."),
    click.option("--operator", type=click.Choice(["blur", "well-conditioned", "gaussian", "inpainting"]), default="blur", show_default=True),
    click.option("--blur-sigma", type=float, default=1.0, show_default=True, callback=_positive, help="Std of the Gaussian blur kernel, in pixels."),
    click.option("--boundary", type=click.Choice(["circular", "zero", "reflect", "replicate"]), default="circular", show_default=True, help="Blur boundary condition."),
    click.option("--keep-fraction", type=float, default=0.5, show_default=True, help="Fraction of pixels observed (inpainting)."),
    click.option("--noise-std", type=click.FloatRange(min=0), default=0.0, show_default=True, help="White Gaussian noise std, on the [0, 255] scale for images."),
    click.option("--width", "--k", "width", type=int, default=10_000, show_default=True, callback=_positive, help="Hidden width k of the two-layer DIP (9)."),
    click.option("--d", "d", type=int, default=32, show_default=True, callback=_positive, help="Input size d (the W-only dynamics do not depend on it)."),
    click.option("--train", type=click.Choice(["W", "WV", "V"]), default=None, help="Trained layers [default: WV for images, W for gaussian]."),
    click.option("--activation", type=click.Choice(["sigmoid", "tanh", "softplus"]), default="sigmoid", show_default=True),
    click.option("--v-law", type=click.Choice(["rademacher", "uniform", "gaussian"]), default="rademacher", show_default=True, help="Law of the entries of V_0 (A-8)."),
    click.option("--step", default=None, callback=_parse_step,
                 help="Step γ (h for the inertial schemes, the learning rate for adam): a number, 'auto' (a "
                      "heuristic: 1/||A J(θ0)||² for gd) or 'certified' (gd: 1/(2L), L a proven bound) "
                      "[default: auto for solve, certified for certify]."),
    click.option("--lipschitz-form", type=click.Choice(["radius-free", "radius-dependent", "jmiv"]), default=None,
                 help="Bound on Lip(J_g) [default: radius-free when only W trains, else radius-dependent]."),
    click.option("--runs", type=int, default=1, show_default=True, callback=_positive, help="Independent runs (seeds seed, seed+1, …), as one batch."),
    click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
    click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
    click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None, help="[default: float32 for images, float64 for gaussian]"),
]


METHOD_OPTIONS = [
    click.option("--method", type=click.Choice(list(METHOD_NAMES)), default="gd", show_default=True,
                 help="Training method: " + "; ".join(f"{k}: {v}" for k, v in METHOD_NAMES.items()) + "."),
    click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True,
                 help="Momentum of heavy-ball and nesterov."),
    click.option("--alpha", default="auto", show_default=True, callback=_parse_auto,
                 help="Viscous damping α of the inertial methods; auto = 2√μ, μ = λ_min(A J Jᵀ Aᵀ) at θ0."),
    click.option("--beta", default=None, callback=_parse_auto,
                 help="Hessian damping β [default: 0, except inna (needs β > 0): auto = 1/√L, L = λ_max(A J Jᵀ Aᵀ)]."),
    click.option("--adaptive-step", is_flag=True, help="Adaptive step for gradient-difference and inna (our rule, not the paper's)."),
    click.option("--ode-solver", type=click.Choice(["RK45", "RK23", "DOP853"]), default="RK45", show_default=True,
                 help="SciPy solver of gradient-flow and inertial-flow."),
    click.option("--rtol", type=float, default=1e-8, show_default=True, callback=_positive,
                 help="ODE relative tolerance (the loss cannot go far below (rtol ||theta|| ||A J||)^2/2)."),
    click.option("--atol", type=float, default=1e-12, show_default=True, callback=_positive, help="ODE absolute tolerance."),
]


def problem_options(fn: Callable) -> Callable:
    for option in reversed(PROBLEM_OPTIONS):
        fn = option(fn)
    return fn


def method_options(fn: Callable) -> Callable:
    for option in reversed(METHOD_OPTIONS):
        fn = option(fn)
    return fn


def _config(**options):
    from .solve import SolveConfig

    names = {f.name for f in dataclasses.fields(SolveConfig)}
    return SolveConfig(**{k: v for k, v in options.items() if k in names})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dipcert")
def main() -> None:
    """Deep Inverse Prior reconstructions with the certificates of Buskulic, Fadili and Quéau."""


@main.command()
@problem_options
@method_options
@click.option("--iters", type=int, default=None, callback=_positive, help="Iteration limit [default: 500 for images, 1e5 for gaussian].")
@click.option("--loss-tol", type=click.FloatRange(min=0), default=None, help="Stop when the loss reaches this [default: 0 for images, 1e-14 for gaussian].")
@click.option("--certify", is_flag=True, help="Attach the certificate of Theorem III.1 and draw its bounds.")
@click.option("--out", "out_dir", default="dipcert-out", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def solve(out_dir: str, quiet: bool, **options) -> None:
    """Reconstruct a signal with a two-layer Deep Inverse Prior trained by gradient descent (2),
    or by another --method (inertial schemes, gradient flow, momentum, Adam).

    Writes OUT/metrics.json, OUT/history.csv, OUT/summary.png and, for images,
    OUT/observation.png and OUT/reconstruction.png.
    """
    from .solve import solve as run_solve
    from .solve import write_outputs

    try:
        config = _config(**{**options, "step": options["step"] or "auto"})
        with _progress(config.iters, quiet) as callback:
            outcome = run_solve(config, callback=callback)
        paths = write_outputs(outcome, out_dir)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None

    m = outcome.metrics
    line = (f"{m['method']}: {m['status']} after {m['iterations']} iterations ({m['gradient_evaluations']} gradient "
            f"evaluations) in {m['seconds']:.1f} s; final loss {m['final_loss']:.3g}")
    if "psnr" in m:
        line += f"; PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}"
    elif "relative_error" in m:
        line += f"; relative error {m['relative_error']:.3g}"
    click.echo(line)
    if outcome.certificate is not None:
        click.echo(outcome.certificate.verdict_text(0))
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
    if any(status in ("diverged", "failed") for status in outcome.result.status):
        if "failure" in outcome.result.config:
            reason = f"the ODE solver failed ({outcome.result.config['failure']})"
            advice = "Try other --rtol/--atol or another --ode-solver."
        else:
            reason = "training diverged" + (f" (step {outcome.step:.3g})" if outcome.step is not None else "")
            advice = "Try a smaller --step."
        click.echo(f"error: {reason}; the history up to that point is in {paths['history']}. {advice}", err=True)
        sys.exit(EXIT_DIVERGED)


@main.command()
@problem_options
@click.option("--dist", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Assumed dist(x̄, Σ') in the recovery bound (8).")
@click.option("--hessian-iters", type=int, default=10, show_default=True, callback=_positive, help="Power iterations for the Hessian estimate of L.")
@click.option("--paper-constant", type=float, default=1.0, show_default=True, callback=_positive, help="The unknown constant of the paper's estimate (10) of L.")
@click.option("--corollary-constants", type=float, nargs=2, default=(1.0, 1.0), show_default=True, help="C and C' of Corollary III.2.")
@click.option("--method", type=click.Choice(["gd", "gradient-flow"]), default="gd", show_default=True,
              help="Certify gradient descent with its step, or the gradient flow (ν1 = 1, time t, no step).")
@click.option("--json", "as_json", is_flag=True, help="Print the certificate as JSON.")
@click.option("--save-instance", type=click.Path(dir_okay=False), default=None, help="Save A (when dense), y, x_true, u, z0, W0, V0 to an .npz file.")
def certify(dist, hessian_iters, paper_constant, corollary_constants, as_json, save_instance, **options) -> None:
    """Check condition (4) of Theorem III.1 before training, and print what the theorem promises.

    Every number says whether it is exact, a bound or an estimate; the verdict uses exact values and
    bounds only.
    """
    from .certify import certify as run_certify
    from .report import dumps
    from .solve import build_network, build_problem
    from .steps import auto_step

    try:
        config = _config(**{**options, "step": options["step"] or "certified"})
        problem, _ = build_problem(config)
        network = build_network(config, problem)
        step = auto_step(problem, network) if config.step == "auto" else config.step
        certificate = run_certify(
            problem, network, step=None if step == "certified" else step, lipschitz_form=config.lipschitz_form,
            hessian_iters=hessian_iters, paper_constant=paper_constant,
            corollary_constants=tuple(corollary_constants), dist=dist,
            dynamics="flow" if config.method == "gradient-flow" else "gd",
        )
        if save_instance:
            from .instance import save_instance as write_instance

            write_instance(save_instance, problem, network)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        runs = [certificate.to_json(b) for b in range(problem.batch)]
        click.echo(dumps(runs[0] if len(runs) == 1 else runs))
        return
    for b, seed in enumerate(config.seeds):
        if problem.batch > 1:
            click.echo(f"\nrun {b} (seed {seed})")
        click.echo(certificate.report(b))
    if save_instance:
        click.echo(f"wrote {save_instance}")


@main.command()
@click.argument("name", required=False)
@click.option("--scale", type=click.Choice(["quick", "paper"]), default="quick", show_default=True,
              help="quick: minutes, for CI; paper: the paper's grid and trial counts.")
@click.option("--out", "out_dir", default="reproduce-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--fresh", is_flag=True, help="Discard finished cells in OUT and start over.")
@click.option("--workers", type=int, default=1, show_default=True, callback=_positive,
              help="Processes running groups of cells side by side (each gets cores/workers threads).")
@click.option("--list", "list_only", is_flag=True, help="List the experiments.")
def reproduce(name, scale, out_dir, fresh, workers, list_only) -> None:
    """Regenerate a figure of the paper: OUT/NAME.png, OUT/NAME.csv (one row per trial) and
    OUT/NAME.json (configuration, versions, seeds, wall time, summary).

    Finished cells are kept in OUT/NAME.cells/: rerunning the same command after an interruption
    resumes where it stopped.
    """
    from .experiments import describe
    from .experiments import reproduce as run_reproduce

    if list_only or name is None:
        for key, title in describe().items():
            click.echo(f"{key:8} {title}")
        return

    def progress(cells, seconds: float) -> None:
        click.echo(f"  {len(cells)} cell(s) at {cells[0].key}: {seconds:.1f} s", err=True)

    try:
        paths = run_reproduce(name, scale, out_dir, fresh=fresh, workers=workers, on_group=progress)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


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
