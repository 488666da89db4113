"""The ``solve`` pipeline: check a :class:`~dipcert.config.RunConfig`, build the problem, network,
loss and method from the registries, train, report.

This is what ``dipcert solve`` runs; it is usable from Python as well::

    from dipcert.config import RunConfig
    from dipcert.solve import prepare_output, solve, write_outputs
    config = RunConfig.build({"problem": {"image": "builtin:camera"}, "training": {"iters": 200}})
    outcome = solve(config)
    write_outputs(outcome, "out/camera")
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .certify import Certificate, NoCertificate, certify, check_domain
from .config import ConfigError, RunConfig
from .images import check_image_size, load_image, psnr, save_png, ssim
from .losses import KLLoss, Loss, LogisticLoss, MSELoss
from .methods import build_method, per_run_value
from .generators import GENERATORS
from .networks import MLP, Network, TwoLayerDIP
from .noise_level import NoiseLevel, estimate_noise_level, given_noise_level
from .operators import GaussianBlur, GaussianMatrix, Inpainting, LinearOperator, Spectral
from .optim import Method, TrainResult, train
from .problems import GaussianNoise, OneBitNoise, PoissonNoise, Problem, gaussian_problem, image_problem
from .report import summary_figure, versions, write_csv, write_json
from .resources import check_fits, estimate_run_bytes, history_rows, stop_vector_count
from .seeding import derive_seed
from .stopping import STOPPING, Certified, Discrepancy, LeastLoss, NoStop, Oracle, Patience, StopRule, Variance

#: the files ``solve`` writes; a reused output folder loses these (and only these) first
OUTPUT_FILES = ("metrics.json", "config.toml", "history.csv", "summary.png", "observation.png", "reconstruction.png")


@dataclass
class SolveOutcome:
    config: RunConfig
    problem: Problem
    network: Network
    loss: Loss
    result: TrainResult
    step: float | list[float] | None  # one per run when the runs have their own; None for the ODE methods
    hyperparameters: dict  # name → {"value", "rule"}: what the method got and how it was chosen
    truth_image: np.ndarray | None = None
    certificate: Certificate | None = None
    no_certificate: str | None = None  # why there is none, when one was asked for and none exists
    stop_rule: str = "none"  # the rule applied (what ``auto`` resolved to)
    noise_level: NoiseLevel | None = None  # σ as the stopping rule had it
    notes: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    wall_seconds: float = math.nan  # the whole solve: building, spectra, certificate, training


# ------------------------------------------------------------------------------- before any work
def measurements(config: RunConfig) -> int:
    """m, known before anything is built."""
    n, op = config.signal_size, config.operator
    if op.name == "gaussian":
        return op.m
    return Inpainting.kept_count(n, op.keep_fraction) if op.name == "inpainting" else n


def check_before_work(config: RunConfig) -> None:
    """Refuse, before anything is allocated, an image too small to measure and a run that does not
    fit in the memory available (:mod:`dipcert.resources`)."""
    if config.problem.name == "image":
        check_image_size(config.problem.size)
    net, training, cert = config.network, config.sections.get("training"), config.certificate
    stop = config.sections.get("stopping")
    breakdown = estimate_run_bytes(
        n=config.signal_size, m=measurements(config), batch=config.run.runs, itemsize=config.torch_dtype.itemsize,
        operator=config.operator.name, method=config.method.name, signal=config.problem.name, network=net.name,
        k=net.values.get("width", 1), d=net.values.get("d", 32), train=net.values.get("train") or "W",
        widths=net.values.get("widths", ()),
        ode_solver=config.method.values.get("ode_solver", "RK45"),
        history_rows=history_rows(training.iters, training.record_every) if training else 0,
        certify=cert.certify or config.method.values.get("step") == "certified", device=config.run.device,
        auto_damping="auto" in (config.method.values.get("alpha"), config.method.values.get("beta")),
        stop_vectors=stop_vector_count(stop.name, stop.values.get("window", 0), stop.average > 0) if stop else 0,
        generator=GENERATORS[net.name].sizes(config.problem.size, **net.values) if net.can("convolutional") else None)
    check_fits(breakdown, config.run.device)


# ------------------------------------------------------------------------------------ building
def build_noise(config: RunConfig):
    noise = config.noise
    if noise.name == "poisson":
        return PoissonNoise(noise.photons)
    if noise.name == "one-bit":
        return OneBitNoise(noise.noise_std)
    return GaussianNoise(noise.noise_std)


def build_image_operator(config: RunConfig, shape: tuple[int, int]) -> LinearOperator:
    dtype, device, op = config.torch_dtype, config.run.device, config.operator
    seed = derive_seed(config.run.seed, "operator")
    n = shape[0] * shape[1]
    if op.name == "blur":
        return GaussianBlur(shape, op.blur_sigma, boundary=op.boundary, dtype=dtype, device=device)
    if op.name == "well-conditioned":
        return Spectral.well_conditioned(n, seed=seed, dtype=dtype, device=device, in_shape=shape)
    if op.name == "inpainting":
        return Inpainting.random(shape, op.keep_fraction, seed=seed).to(device=device, dtype=dtype)
    return GaussianMatrix(op.m, n, seed=seed, dtype=dtype, device=device)


def build_problem(config: RunConfig, notes: list[str] | None = None) -> tuple[Problem, np.ndarray | None]:
    """The problem of ``config`` and, for images, the true image (H, W). What the image loader had
    to decide (e.g. a float image taken on its own scale) is appended to ``notes``."""
    noise = build_noise(config)
    if config.problem.name == "gaussian":
        problem = gaussian_problem(config.problem.n, config.operator.m, config.seeds, noise, config.torch_dtype,
                                   config.run.device, condition=config.operator.condition)
        return problem, None
    image = load_image(config.problem.image, config.problem.size, notes=notes)
    operator = build_image_operator(config, image.shape)
    return image_problem(image, operator, config.seeds, noise), image


def build_loss(config: RunConfig) -> Loss:
    name = config.loss.name
    if name == "kl":
        return KLLoss(v_max=config.loss.kl_vmax, eps=config.loss.kl_eps)
    if name == "logistic":
        return LogisticLoss()
    return MSELoss()


def build_network(config: RunConfig, problem: Problem) -> Network:
    """The generator of ``config``, one initialization per run seed. The two-layer net's hidden
    layer is trained through z = W u (exact, theory.md §6) unless the method does not commute with
    that reduction (Adam): then through the full W."""
    net, seeds = config.network, [derive_seed(s, "network") for s in config.seeds]
    if net.can("convolutional"):
        return GENERATORS[net.name](problem.image_shape, **net.values, seeds=seeds, dtype=config.torch_dtype,
                                    device=config.run.device)
    common = dict(d=net.d, activation=net.activation, seeds=seeds, dtype=config.torch_dtype, device=config.run.device)
    if net.name == "mlp":
        return MLP(problem.n, net.widths, **common)
    reduced = config.method.can("reduction")
    return TwoLayerDIP(problem.n, net.width, train=net.train, v_law=net.v_law,
                       parametrization="reduced" if reduced else "full", **common)


def choose_method(config: RunConfig, problem: Problem, network: Network, loss: Loss
                  ) -> tuple[Method, dict, Certificate | None, str | None]:
    """The training method with its hyperparameters (and how each was chosen), and the certificate
    when ``config`` asks for one: Theorem III.1 for gd, its gradient-flow version for the flow, and
    for the other methods the quantities of the a-posteriori recovery bound. When the loss has no
    certificate, the last item says why (a certified step then cannot be had: an error)."""
    method, cert = config.method, config.certificate
    stop_certified = "stopping" in config.sections and config.stopping.name == "certified"
    options = dict(loss=loss, lipschitz_form=cert.lipschitz_form, hessian_iters=cert.hessian_iters,
                   paper_constant=cert.paper_constant, corollary_constants=cert.corollary_constants, dist=cert.dist)
    certificate, step, no_certificate = None, None, None
    if method.values.get("step") == "certified":
        certificate = certify(problem, network, **options)
        step = per_run_value(certificate["step"].value)
    built, chosen = build_method(dict(method.values, method=method.name), problem, network, step)
    if (cert.certify or stop_certified) and certificate is None:
        dynamics = "gd" if method.name == "gd" else "flow" if method.name == "gradient-flow" else "a-posteriori"
        step_option = {"step": chosen["step"]["value"]} if dynamics == "gd" else {}
        try:
            certificate = certify(problem, network, dynamics=dynamics, **step_option, **options)
        except NoCertificate as exc:
            no_certificate = str(exc)
    return built, chosen, certificate, no_certificate


def noise_level(config: RunConfig, problem: Problem) -> NoiseLevel | None:
    """σ for the stopping rule: given, estimated from y (:mod:`dipcert.noise_level`), or None when
    the rule takes none."""
    given = config.stopping.values.get("noise_level")
    if given is None:
        return None
    return estimate_noise_level(problem) if given == "auto" else given_noise_level(given, problem.m)


#: ``--stop auto`` trains to convergence (the patience rule) when A is injective with a condition number at most this
WELL_CONDITIONED = 10.0


def condition_number(problem: Problem) -> float:
    """κ(A) = ‖A‖/σ_min(A) when A is injective (the worst over a batch of operators), else inf."""
    op = problem.operator
    if not op.injective():
        return float("inf")
    return float((op.norm() / op.sigma_min()).max())


def choose_stop(config: RunConfig, problem: Problem, certificate: Certificate | None, no_certificate: str | None,
                notes: list[str]) -> tuple[StopRule, str, NoiseLevel | None]:
    """The stopping rule of ``config`` (``auto`` resolved, the choice appended to ``notes``), its
    name and the noise level it uses; a rule that cannot apply is refused with the reason."""
    stop = config.stopping
    level = noise_level(config, problem)
    name = stop.name
    if name == "auto":
        noise, kappa = config.noise, condition_number(problem)
        if noise.name == "gaussian" and noise.noise_std == 0:
            name, why = "least-loss", ("the data are noiseless, so the best fit of y is wanted (the last "
                                       "iterate can sit on a spike of the loss where it oscillates, as Adam's does)")
        elif kappa <= WELL_CONDITIONED:
            name, why = "patience", (f"A is injective and well-conditioned (condition number {kappa:.3g} <= "
                                     f"{WELL_CONDITIONED:g}): the fit of y has error ||A^-1 eps|| <= "
                                     f"{kappa:.3g} ||eps||/||A||, and stopping earlier measured worse (docs/stopping.md)")
        elif level is not None and level.known:
            name, why = "discrepancy", f"noise level {level.source} ({level.method})"
        else:
            name, why = "variance", f"no noise level: {level.method}"
        notes.append(f"--stop auto chose {name}: {why}")
    if STOPPING.components[name].can("noise_level") and (level is None or not level.known):
        raise ConfigError(f"--stop {name} needs a noise level and none can be estimated here "
                          f"({level.method if level else 'none'}): give --noise-level")
    if name == "discrepancy":
        return Discrepancy(level.norm, stop.delta), name, level
    if name == "certified":
        return _certified_rule(config, problem, certificate, no_certificate, level), name, level
    if name == "variance":
        return Variance(stop.window, stop.variance_patience), name, level
    if name == "patience":
        return Patience(stop.patience, stop.min_improvement), name, level
    if name == "least-loss":
        return LeastLoss(), name, level
    if name == "oracle":
        return Oracle(), name, level
    return NoStop(), name, level


def _certified_rule(config: RunConfig, problem: Problem, certificate: Certificate | None, no_certificate: str | None,
                    level: NoiseLevel) -> Certified:
    """τ_ε of the certificate for the given or estimated ‖ε‖, refused unless condition (4) holds for
    every run."""
    if certificate is None:
        raise ConfigError(f"--stop certified: no certificate here ({no_certificate})")
    if not bool(certificate.holds.all()):
        verdict = certificate["condition_4"]
        why = verdict.note if np.isnan(verdict.value).any() else "condition (4) fails" + (
            "" if certificate.holds.any() else " for every run")
        if config.method.name == "gd" and config.method.values.get("step") != "certified":
            why += " with this step (--step certified takes 1/(2L), the paper's best)"
        raise ConfigError(f"--stop certified needs condition (4) proven for every run, and here {why}; "
                          "use --stop discrepancy or variance")
    clock = "time" if config.method.can("ode") else "iteration"
    return Certified(certificate.stopping_time(np.resize(level.norm, problem.batch)), clock)


def solve(config: RunConfig, callback: Callable[[int, torch.Tensor], bool | None] | None = None,
          snapshot_at: Sequence[int] = ()) -> SolveOutcome:
    """Build and train the run of ``config``; ``callback(τ, loss)`` may return True to interrupt;
    the iterates at the iterations ``snapshot_at`` are kept (``outcome.result.snapshots``)."""
    check_before_work(config)
    start = time.perf_counter()
    notes: list[str] = []
    problem, truth = build_problem(config, notes)
    loss = build_loss(config)
    network = build_network(config, problem)
    method, chosen, certificate, no_certificate = choose_method(config, problem, network, loss)
    rule, rule_name, level = choose_stop(config, problem, certificate, no_certificate, notes)
    training, stop = config.training, config.stopping
    result = train(problem, network, method, loss=loss, max_iters=training.iters, loss_tol=training.loss_tol,
                   record_every=training.record_every, stall_patience=training.stall_patience, callback=callback,
                   stop=rule, average=stop.average, run_past_stop=stop.values.get("run_past_stop", False),
                   snapshot_at=snapshot_at)
    step = chosen["step"]["value"] if "step" in chosen else None
    if certificate is not None and isinstance(loss, KLLoss) and not isinstance(loss.v_max, str):
        domain = check_domain(certificate, problem.operator.forward_flat(result.x))
        notes.append(domain.text() + " (an assumed v_max, checked at the returned iterate only)")
    outcome = SolveOutcome(config, problem, network, loss, result, step, chosen, truth, certificate, no_certificate,
                           rule_name, level, notes)
    outcome.metrics = compute_metrics(outcome)
    outcome.wall_seconds = time.perf_counter() - start
    return outcome


# ------------------------------------------------------------------------------------- outputs
def prepare_output(out_dir: str | Path) -> Path:
    """Create ``out_dir``, prove it writable (a probe file) and remove an earlier run's outputs
    (:data:`OUTPUT_FILES`; other files are left alone), before any work."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".dipcert-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    except OSError as exc:
        raise OSError(f"output folder {out} is not writable ({exc.strerror or exc}); choose another --out") from None
    return out


def observation_image(problem: Problem, run: int = 0) -> np.ndarray | None:
    """The observation as a picture: y itself when it has the image's shape, else Aᵀy (zero-filled)."""
    if problem.image_shape is None:
        return None
    op, y = problem.operator, problem.y[run]
    flat = y if op.out_size == op.in_size else op.adjoint_flat(y)
    return flat.detach().cpu().double().numpy().reshape(problem.image_shape)


def compute_metrics(outcome: SolveOutcome) -> dict:
    problem, result, config = outcome.problem, outcome.result, outcome.config
    runs = []
    for b, seed in enumerate(config.seeds):
        x = result.x[b].detach().cpu().double().numpy()
        run = {
            "seed": seed,
            "status": result.status[b],
            "iterations": int(result.iterations[b]),
            "gradient_evaluations": int(result.history.evaluations[-1, b]),
            "final_loss": float(result.final_loss[b]),
        }
        if outcome.step is not None:
            run["step"] = outcome.step if isinstance(outcome.step, float) else outcome.step[b]
        if result.history.time is not None:
            run["time"] = float(result.history.time[-1, b])
        if problem.x_true is not None:
            x_true = problem.x_true[b].detach().cpu().double().numpy()
            run["error"] = float(np.linalg.norm(x - x_true))
            run["error_last"] = float(np.linalg.norm(result.x_last[b].detach().cpu().double().numpy() - x_true))
            truth_norm = float(np.linalg.norm(x_true))
            run["relative_error"] = run["error"] / truth_norm if truth_norm > 0 else None
        run["stop"] = stop_metrics(outcome, b)
        if outcome.noise_level is not None:
            run["noise_level"] = {**outcome.noise_level.to_json(b, true_noise_std(config)),
                                  "used": STOPPING.components[outcome.stop_rule].can("noise_level")}
        if outcome.truth_image is not None:
            recon = x.reshape(outcome.truth_image.shape)
            run["psnr"] = psnr(outcome.truth_image, recon)
            run["ssim"] = ssim(outcome.truth_image, recon)
            last = result.x_last[b].detach().cpu().double().numpy().reshape(outcome.truth_image.shape)
            run["psnr_last"] = psnr(outcome.truth_image, last)
            run["ssim_last"] = ssim(outcome.truth_image, last)
            if problem.operator.out_size == problem.operator.in_size:
                run["psnr_observation"] = psnr(outcome.truth_image, observation_image(problem, b))
        if problem.noise is not None:
            run["noise_norm"] = float(problem.noise[b].norm())
        if outcome.certificate is not None:
            run["certificate"] = outcome.certificate.to_json(b)
        elif outcome.no_certificate is not None:
            run["certificate"] = {"available": False, "reason": outcome.no_certificate}
        runs.append(run)
    return {
        **runs[0],
        "seconds": result.seconds,
        "method": config.method.name,
        "step": outcome.step,
        "hyperparameters": outcome.hyperparameters,
        "runs": runs,
        "notes": outcome.notes,
        "config": config.to_dict(),
        "details": {
            "seeds": config.seeds,
            "network": outcome.network.describe(),
            "operator": problem.operator.describe(),
            "noise": problem.description.get("noise"),
            "training": result.config,
        },
        "versions": versions(),
    }


def true_noise_std(config: RunConfig) -> float | None:
    """The σ of the simulated Gaussian noise, the truth a noise estimate is compared with."""
    noise = config.noise
    return float(noise.noise_std) if noise.name == "gaussian" else None


def stop_metrics(outcome: SolveOutcome, run: int) -> dict:
    """The rule, the τ of the returned iterate, where the rule stopped the run and why; with x̄
    known, the oracle (the iterate nearest x̄ among those computed) as τ, error and PSNR."""
    report = outcome.result.stop.run(run)
    out = {key: report[key] for key in ("rule", "tau", "stopped_at", "reason")}
    out["rule"] = outcome.stop_rule
    if "oracle_tau" in report:
        oracle = {"tau": report["oracle_tau"], "error": report["oracle_error"],
                  "over": f"iterations 0 to {int(outcome.result.iterations[run])} (those computed)"}
        if outcome.truth_image is not None:
            mse = report["oracle_error"] ** 2 / outcome.truth_image.size
            oracle["psnr"] = float(10 * np.log10(255.0**2 / mse)) if 0 < mse < np.inf else \
                float("inf") if mse == 0 else float("nan")
        out["oracle"] = oracle
    return out


def stop_marks(stop: dict) -> dict[str, int]:
    """The iterations summary.png marks: the returned iterate, the rule's stop when later, the oracle."""
    same = "oracle" in stop and stop["oracle"]["tau"] == stop["tau"]
    marks = {f"returned, tau = {stop['tau']} ({stop['rule']}{', = oracle' if same else ''})": stop["tau"]}
    if stop["stopped_at"] is not None and stop["stopped_at"] != stop["tau"]:
        marks[f"stopped, tau = {stop['stopped_at']}"] = stop["stopped_at"]
    if "oracle" in stop and stop["oracle"]["tau"] != stop["tau"]:
        marks[f"oracle, tau = {stop['oracle']['tau']}"] = stop["oracle"]["tau"]
    return marks


def history_columns(outcome: SolveOutcome, run: int) -> dict[str, np.ndarray]:
    """One run's history, with the certificate's bound curves (``*_bound``) when there is one:
    (6)-(8) in τ for gd, in t for the gradient flow; for every method with the MSE and an
    injective A, the a-posteriori recovery bound ``error_bound_a_posteriori``."""
    cols = outcome.result.history.columns(run)
    certificate, method = outcome.certificate, outcome.config.method
    if certificate is None:
        return cols
    if method.can("certifiable"):  # an a-priori theorem, in t for an ODE, in τ otherwise
        clock = cols["time"] if method.can("ode") else cols["iteration"]
        for name, values in certificate.bounds_at(clock).items():
            cols[name] = values[:, run]
    if isinstance(certificate.loss, MSELoss) and np.isfinite(certificate["lambda"].value[run]):
        cols["error_bound_a_posteriori"] = certificate.a_posteriori_error_bound(cols["loss"][:, None])[:, run]
    return cols


def write_outputs(outcome: SolveOutcome, out_dir: str | Path) -> dict[str, Path]:
    """Write metrics.json, config.toml, history.csv and the pictures; return the written paths by name."""
    from .config import dump_toml
    from .fileio import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json", "config": out / "config.toml", "history": out / "history.csv",
             "summary": out / "summary.png"}
    columns: dict[str, list] = {}
    for b in range(outcome.problem.batch):
        cols = history_columns(outcome, b)
        columns.setdefault("run", []).extend([b] * len(cols["iteration"]))
        for name, values in cols.items():
            columns.setdefault(name, []).extend(np.asarray(values).tolist())
    write_csv(paths["history"], columns)
    write_json(paths["metrics"], outcome.metrics)
    atomic_write_text(paths["config"], "# dipcert solve --config config.toml repeats this run\n"
                      + dump_toml(outcome.config.to_dict()))
    curves = history_columns(outcome, 0)
    images = {}
    m = outcome.metrics
    if outcome.truth_image is not None:
        shape = outcome.truth_image.shape
        observation = observation_image(outcome.problem)
        recon = outcome.result.x[0].detach().cpu().double().numpy().reshape(shape)
        paths["observation"], paths["reconstruction"] = out / "observation.png", out / "reconstruction.png"
        save_png(observation, paths["observation"])
        save_png(recon, paths["reconstruction"])
        obs_label = "observation y" if outcome.problem.m == outcome.problem.n else "observation A^T y"
        if "psnr_observation" in m:
            obs_label += f" ({m['psnr_observation']:.1f} dB)"
        images = {"truth": outcome.truth_image, obs_label: observation, f"reconstruction ({m['psnr']:.1f} dB)": recon}
    c = outcome.config
    if c.network.name == "two-layer":
        width = f"k={c.network.width}, train {c.network.train}"
    elif c.network.name == "mlp":
        width = f"MLP widths {','.join(map(str, c.network.widths))}"
    else:
        width = f"{c.network.name}, {outcome.network.parameter_count:,} parameters"
    first = outcome.step[0] if isinstance(outcome.step, list) else outcome.step  # run 0's, drawn here
    step = f", step {first:.3g}" if first is not None else ""
    status = m["status"]
    reason = outcome.result.config.get("divergence", [None])[0]
    status += f" ({reason})" if status == "diverged" and reason else ""
    title = f"{c.problem.name} / {c.operator.name}, {c.loss.name} loss, {width}, {c.method.name}{step}: {status}"
    certificate = outcome.certificate
    proven = certificate is None or certificate.dynamics == "a-posteriori" or bool(certificate.holds[0])
    summary_figure(paths["summary"], curves, images, title=title,
                   bound_label="bound" if proven else "bound (not guaranteed: (4) fails)", marks=stop_marks(m["stop"]))
    return paths
