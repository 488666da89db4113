"""Command-line interface: ``dipcert solve``, ``certify``, ``reproduce``, ``compare`` and ``sweep``.

Every option is generated from the registries (:mod:`dipcert.components`): a command lists the
sections it takes (:data:`COMMANDS`), and each option of those sections becomes ``--flag`` with the
option's help, choices and default. Values are parsed by the registry, so the command line and
config files accept and refuse the same things with the same messages.
"""
from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import click
from click.core import ParameterSource

from .components import COMPARE, OUTPUT, REPORT, REPRODUCE, RUN_SECTIONS, SWEEP
from .registry import Option, Section
from .stopping import STOPPING

EXIT_DIVERGED = 3
CONFIG_HELP = "Options from a TOML file or a metrics.json of an earlier run; options given here override it."


@dataclass(frozen=True)
class Command:
    """The sections whose options a command takes, minus ``exclude`` (``"section.option"``), with
    the command's own defaults (``"section.option"`` → value) and the components it allows
    (section → capability they must have)."""

    sections: tuple[Section, ...]
    exclude: frozenset[str] = frozenset()
    defaults: dict[str, Any] = field(default_factory=dict)
    requires: dict[str, str] = field(default_factory=dict)

    def options(self) -> list[Option]:
        """The options of the sections, less the excluded ones and those that only components the
        command does not allow take."""
        return [o for s in self.sections for o in s.options() if o.key not in self.exclude and self._reachable(s, o)]

    def components(self, section: Section) -> list[str]:
        """The components of ``section`` the command allows."""
        capability = self.requires.get(section.name)
        return [n for n, c in section.components.items() if capability is None or c.can(capability)]

    def _reachable(self, section: Section, option: Option) -> bool:
        return option is section.selector or section.selector is None or \
            any(name in self.components(section) for name in section.users(option))


COMMANDS: dict[str, Command] = {
    "solve": Command((*RUN_SECTIONS, OUTPUT)),
    "certify": Command((*(s for s in RUN_SECTIONS if s is not STOPPING), REPORT), exclude=frozenset({"training.iters", "training.loss_tol",
                                                                    "training.record_every",
                                                                    "training.stall_patience",
                                                                    "certificate.certify"}),
                       defaults={"network.network": "two-layer", "method.method": "gd", "method.step": "certified",
                                 "certificate.certify": True}, requires={"method": "certifiable"}),
    "reproduce": Command((REPRODUCE,)),
    "compare": Command((COMPARE,)),
    "sweep": Command((SWEEP,)),
}


def _dest(option: Option) -> str:
    return f"{option.section}__{option.name}"


class _Value(click.ParamType):
    """Hands the raw string to the registry; shows the choices in --help."""

    def __init__(self, option: Option) -> None:
        self.option = option
        kind = option.name if option.parser else option.kind.__name__.replace("tuple", "list")
        self.name = "|".join(option.choices) if option.choices else kind.upper()

    def get_metavar(self, param, ctx=None) -> str:  # noqa: ARG002 (click's signature)
        return f"[{self.name}]" if self.option.choices else self.name


def _click_option(option: Option, command: Command) -> Callable:
    default = command.defaults.get(option.key, option.default)
    shown = option.default_text or (option.show_default() if default == option.default else str(default))
    unit = f" ({option.unit})" if option.unit else ""
    text = option.help + unit + (f" [default: {shown}]" if shown and option.kind is not bool else "")
    if option.kind is bool:
        return click.option(option.cli_flag, *option.aliases, _dest(option), is_flag=True, default=None, help=text)
    choices = option.choices
    if option.section in command.requires and option.name == option.section:
        choices = tuple(command.components(next(s for s in command.sections if s.name == option.section)))
    kind = click.Choice(choices) if choices else _Value(option)
    return click.option(option.cli_flag, *option.aliases, _dest(option), type=kind, default=None, help=text)


def registry_options(name: str) -> Callable:
    """Decorate a click command with the options of COMMANDS[name]."""
    def decorate(fn: Callable) -> Callable:
        for option in reversed(COMMANDS[name].options()):
            fn = _click_option(option, COMMANDS[name])(fn)
        return fn
    return decorate


def _given(ctx: click.Context, options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The options given on the command line, by section."""
    by_section: dict[str, dict[str, Any]] = {}
    for dest, value in options.items():
        if ctx.get_parameter_source(dest) == ParameterSource.COMMANDLINE and value is not None:
            section, name = dest.split("__")
            by_section.setdefault(section, {})[name] = value
    return by_section


def _settings(section: Section, given: dict[str, dict[str, Any]], command: Command) -> dict[str, Any]:
    """The values of a command-only settings section."""
    values = given.get(section.name, {})
    return {o.name: o.parse(values[o.name]) if o.name in values else command.defaults.get(o.key, o.default)
            for o in section.options()}


def _run_config(name: str, given: dict[str, dict[str, Any]], config_file: str | None):
    from .config import RunConfig, load_config_file

    command = COMMANDS[name]
    nested = load_config_file(config_file) if config_file else {}
    run_names = {s.name for s in RUN_SECTIONS}
    for section, values in given.items():
        if section in run_names:
            nested.setdefault(section, {}).update(values)
    nested = {s: {k: v for k, v in vals.items() if f"{s}.{k}" not in command.exclude} for s, vals in nested.items()}
    config = RunConfig.build(nested, RUN_SECTIONS, command.defaults)
    for section, capability in command.requires.items():
        component = getattr(config, section)
        if not component.can(capability):
            raise click.BadParameter(f"{name} takes --{section} with {capability} components, got {component.name}")
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dipcert")
def main() -> None:
    """Deep Inverse Prior reconstructions with the certificates of Buskulic, Fadili and Quéau."""


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)
@registry_options("solve")
@click.pass_context
def solve(ctx: click.Context, config_file: str | None, **options) -> None:
    """Reconstruct a signal with a Deep Inverse Prior: for images the Deep Decoder trained by Adam,
    for --signal gaussian the paper's two-layer network (9) by gradient descent (2); any --network
    and --method (inertial schemes, gradient flow, momentum, Adam) can be chosen.

    Writes OUT/metrics.json (with the whole configuration), OUT/config.toml, OUT/history.csv,
    OUT/summary.png and, for images, OUT/observation.png and OUT/reconstruction.png. Ctrl-C (or
    SIGTERM) stops at the current iteration and writes everything, with status 'interrupted'.
    """
    from .solve import check_before_work, prepare_output, solve as run_solve, write_outputs

    given = _given(ctx, options)
    try:
        output = _settings(OUTPUT, given, COMMANDS["solve"])
        config = _run_config("solve", given, config_file)
        check_before_work(config)
        out = prepare_output(output["out"])
        with _progress(config.training.iters, output["quiet"]) as progress, _interruptible() as interrupted:
            def callback(tau: int, loss) -> bool:
                progress(tau, loss)
                return bool(interrupted)
            outcome = run_solve(config, callback=callback)
        paths = write_outputs(outcome, out)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    _report_solve(outcome, paths)
    if interrupted:
        click.echo(f"interrupted by {signal.Signals(interrupted[0]).name}: every output holds the iterations done",
                   err=True)
        sys.exit(128 + interrupted[0])
    if any(status in ("diverged", "failed") for status in outcome.result.status):
        sys.exit(EXIT_DIVERGED)


def _report_solve(outcome, paths) -> None:
    from .methods import value_text

    m = outcome.metrics
    for note in outcome.notes:
        click.echo(f"note: {note}", err=True)
    network = m["details"]["network"]
    count = network.get("parameters_per_run")
    generator = m["config"]["network"]["network"] + (f" ({count:,} parameters)" if count else "")
    line = (f"{generator}, {m['method']}: {m['status']} after {m['iterations']} iterations ({m['gradient_evaluations']} gradient "
            f"evaluations) in {m['seconds']:.1f} s; final loss {m['final_loss']:.3g}")
    if "psnr" in m:
        line += f"; PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}"
    elif m.get("relative_error") is not None:
        line += f"; relative error {m['relative_error']:.3g}"
    click.echo(line)
    stop = m["stop"]
    returned = (f"returned iterate: the last, tau = {stop['tau']} (no stopping rule)" if stop["rule"] == "none" else
                f"returned iterate: tau = {stop['tau']} by the {stop['rule']} rule: {stop['reason']}")
    oracle = stop.get("oracle", {})
    if "psnr" in oracle and stop["rule"] != "none":
        returned += (f" (oracle over the {m['iterations'] + 1} iterates computed: tau = {oracle['tau']}, "
                     f"{oracle['psnr']:.2f} dB; last iterate {m['psnr_last']:.2f} dB)")
    click.echo(returned)
    if outcome.certificate is not None:
        click.echo(outcome.certificate.verdict_text(0))
    if outcome.no_certificate is not None:
        click.echo(outcome.no_certificate)
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
    result = outcome.result
    if any(status in ("diverged", "failed") for status in result.status):
        if "failure" in result.config:
            reason = f"the ODE solver failed ({result.config['failure']})"
            advice = "Try other --rtol/--atol or another --ode-solver."
        else:
            why = sorted({reason for reason in result.config.get("divergence", []) if reason})
            reason = "training diverged" + (f" (step {value_text(outcome.step)})" if outcome.step is not None else "")
            reason += (": " + "; ".join(why)) if why else ""
            advice = "Try a smaller --step."
        click.echo(f"error: {reason}; the history up to that point is in {paths['history']}. {advice}", err=True)


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)
@registry_options("certify")
@click.pass_context
def certify(ctx: click.Context, config_file: str | None, **options) -> None:
    """Check condition (4) of Theorem III.1 before training, and print what the theorem promises.

    Every number says whether it is exact, a bound or an estimate; the verdict uses exact values and
    bounds only.
    """
    from .report import dumps
    from .solve import build_loss, build_network, build_problem, check_before_work, choose_method

    given = _given(ctx, options)
    try:
        report = _settings(REPORT, given, COMMANDS["certify"])
        config = _run_config("certify", given, config_file)
        check_before_work(config)
        problem, _ = build_problem(config)
        network = build_network(config, problem)
        _, _, certificate, no_certificate = choose_method(config, problem, network, build_loss(config))
        if certificate is None:
            raise ValueError(no_certificate)
        if report["save_instance"]:
            from .instance import save_instance

            save_instance(report["save_instance"], problem, network)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if report["json"]:
        runs = [certificate.to_json(b) for b in range(problem.batch)]
        click.echo(dumps(runs[0] if len(runs) == 1 else runs))
        return
    for b, seed in enumerate(config.seeds):
        if problem.batch > 1:
            click.echo(f"\nrun {b} (seed {seed})")
        click.echo(certificate.report(b))
    if report["save_instance"]:
        click.echo(f"wrote {report['save_instance']}")


@main.command()
@click.argument("name", required=False)
@registry_options("reproduce")
@click.pass_context
def reproduce(ctx: click.Context, name: str | None, **options) -> None:
    """Regenerate a figure of the paper: OUT/NAME.png, OUT/NAME.csv (one row per trial) and
    OUT/NAME.json (configuration, versions, seeds, wall time, summary).

    Finished cells are kept in OUT/NAME.cells/: rerunning the same command after an interruption
    resumes where it stopped; damaged cells are recomputed.
    """
    from .experiments import describe
    from .experiments import reproduce as run_reproduce
    from .experiments.executors import MissingExtra, open_executor

    try:
        settings = _settings(REPRODUCE, _given(ctx, options), COMMANDS["reproduce"])
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if settings["list"] or name is None:
        for key, title in describe().items():
            click.echo(f"{key:8} {title}")
        return

    def progress(cells, seconds: float) -> None:
        click.echo(f"  {len(cells)} cell(s) at {cells[0].key}: {seconds:.1f} s", err=True)

    try:
        with open_executor(settings["cluster"], settings["scheduler"]) as executor:
            paths = run_reproduce(name, settings["scale"], settings["out"], fresh=settings["fresh"],
                                  executor=executor, on_group=progress,
                                  on_notice=lambda text: click.echo(text, err=True))
    except (ValueError, OSError, MissingExtra) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@main.command()
@registry_options("compare")
@click.pass_context
def compare(ctx: click.Context, **options) -> None:
    """Every reconstruction method on the same observations: OUT/compare.csv (one row per case,
    method and rule), OUT/compare.md (tables, best first), OUT/compare.png (reconstructions) and
    OUT/compare.json (configuration, versions, wall time, summary).

    Finished cells (one method on one case) are kept in OUT/compare.cells/: rerunning the same command
    after an interruption resumes where it stopped. See docs/comparison.md.
    """
    from .experiments.compare import TASKS, Config, failures
    from .experiments.compare import compare as run_compare
    from .experiments.executors import MissingExtra, open_executor
    from .reconstruct.registry import RECONSTRUCTORS

    try:
        settings = _settings(COMPARE, _given(ctx, options), COMMANDS["compare"])
        if settings["list"]:
            click.echo("tasks:")
            for name, task in TASKS.items():
                click.echo(f"  {name:20} {task.help}")
            click.echo("methods (rules, the default first):")
            for name, entry in RECONSTRUCTORS.items():
                click.echo(f"  {name:20} {', '.join(entry.rules)}")
            return
        fields = ("images", "sizes", "tasks", "methods", "seeds", "noise_level", "dip_iters", "device")
        given = _given(ctx, options).get("compare", {})
        if settings["quick"]:
            clash = [f"--{name.replace('_', '-')}" for name in fields if name in given]
            if clash:
                raise ValueError(f"--quick runs its own grid; it does not take {', '.join(clash)}")
            config = Config.quick()
        else:
            config = Config(**{name: settings[name] for name in fields if settings[name] is not None})
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    def progress(cells, seconds: float) -> None:
        click.echo(f"  {cells[0].key}: {seconds:.1f} s", err=True)

    try:
        with open_executor(settings["cluster"], settings["scheduler"]) as executor:
            paths = run_compare(config, settings["out"], fresh=settings["fresh"], executor=executor,
                                on_group=progress, on_notice=lambda text: click.echo(text, err=True))
    except (ValueError, OSError, MissingExtra) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
    failed = failures(paths["table"])
    if failed:
        raise click.ClickException(f"{len(failed)} result(s) failed (status 'failed' in {paths['table']}), the "
                                   f"first: {failed[0]}")


@main.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@registry_options("sweep")
@click.pass_context
def sweep(ctx: click.Context, file: str | None, **options) -> None:
    """Run the grid of run configurations of a sweep FILE (TOML): OUT/NAME.csv (one row per trial),
    OUT/NAME.summary.csv (one row per cell), OUT/NAME.png (its [plot]) and OUT/NAME.json (the
    configuration of every cell, versions, seeds, wall time).

    Every cell is checked before any work. Finished cells are kept in OUT/NAME.cells/: rerunning
    the same command after an interruption resumes where it stopped. With --cluster local:N or
    --scheduler ADDRESS the cells run on Dask; the table is the same row for row. See
    docs/cluster.md and the files in examples/.
    """
    from .experiments.executors import MissingExtra, open_executor
    from .experiments.sweep import OUTPUTS, Sweep, run_sweep

    try:
        settings = _settings(SWEEP, _given(ctx, options), COMMANDS["sweep"])
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if settings["list"]:
        for name, output in OUTPUTS.items():
            click.echo(f"{name:22} {output.help}")
        return
    if file is None:
        raise click.UsageError("give a sweep FILE (see examples/ and docs/cluster.md), or --list")

    def progress(cells, seconds: float) -> None:
        click.echo(f"  {cells[0].key}: {seconds:.1f} s", err=True)

    try:
        plan = Sweep.load(file, settings["scale"])
        configs = plan.check()  # before a cluster starts
        with open_executor(settings["cluster"], settings["scheduler"]) as executor:
            click.echo(f"{plan.name}: {len(plan.cells())} cell(s) x {plan.trials} trial(s), {executor.description}",
                       err=True)
            paths = run_sweep(plan, settings["out"], fresh=settings["fresh"], executor=executor, on_group=progress,
                              on_notice=lambda text: click.echo(text, err=True), configs=configs)
    except (ValueError, OSError, MissingExtra) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@contextmanager
def _interruptible() -> Iterator[list[int]]:
    """SIGINT and SIGTERM set a flag (the signal number) instead of killing the run; restored after."""
    received: list[int] = []
    handler = lambda signum, _frame: received.append(signum)  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _progress(total: int, quiet: bool) -> Iterator[Callable[[int, Any], None]]:
    """A tqdm progress bar fed by the training callback, showing the current loss."""
    if quiet:
        yield lambda tau, loss: None
        return
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing in logs and pipes.
    bar = tqdm(total=total, unit="it", dynamic_ncols=True, file=sys.stderr, disable=None, mininterval=0.25)
    refresh = max(1, total // 200)

    def update(tau: int, loss) -> None:
        if tau == 0:
            return
        bar.update(1)
        if tau % refresh == 0:
            bar.set_postfix(loss=f"{float(loss[0]):.3e}", refresh=False)

    try:
        yield update
    finally:
        bar.close()


def option_reference() -> str:
    """The README's option reference (Markdown), generated from the registries."""
    lines = []
    for name, command in COMMANDS.items():
        lines += [f"#### `dipcert {name}`", "", "| option | section | allowed | default | help |", "|---|---|---|---|---|"]
        for option in command.options():
            default = command.defaults.get(option.key)
            shown = option.show_default() if default is None else str(default)
            flags = ", ".join(f"`{f}`" for f in (option.cli_flag, *option.aliases))
            allowed = option.allowed()
            if option.section in command.requires and option.name == option.section:
                allowed = "one of " + ", ".join(command.components(next(s for s in command.sections
                                                                         if s.name == option.section)))
            lines.append(f"| {flags} | {option.section} | {allowed} | {shown} | {option.help}"
                         + (f" ({option.unit})" if option.unit else "") + " |")
        lines.append("")
    return "\n".join(lines)


def write_option_reference(readme: str) -> None:
    """Replace the option reference between the README's markers with :func:`option_reference`."""
    from pathlib import Path

    from .fileio import atomic_write_text

    text = Path(readme).read_text(encoding="utf-8")
    start, end = "<!-- options:start -->", "<!-- options:end -->"
    head, rest = text.split(start, 1)
    atomic_write_text(readme, f"{head}{start}\n{option_reference()}\n{end}{rest.split(end, 1)[1]}")


__all__ = ["COMMANDS", "EXIT_DIVERGED", "main", "option_reference", "write_option_reference"]
