"""The DIPs as reconstruction methods: one entry per image generator of the network registry.

An entry trains the generator as ``dipcert solve`` would on the same observation (the network's
default method, step and iteration budget; for the two-layer network the certificate of
``--certify``), keeps every iterate,
and applies each asked stopping rule to that one trajectory after the fact
(:func:`dipcert.stopping.replay`, the code the training loop runs), so ``auto`` and ``oracle`` see the
same iterates. A rule's seconds are those training would have taken to reach the iteration where the
rule stops it (the whole budget when it never does).
"""
from __future__ import annotations

import math

import torch

from ..components import NETWORK
from ..config import ConfigError, RunConfig
from ..optim import train
from ..problems import Problem
from ..solve import build_loss, build_network, choose_method, choose_stop
from ..stopping import STOPPING, replay
from .case import Case, NotApplicable, Reconstruction
from .entry import Reconstructor

#: the iterates of one run are kept in memory to serve every rule; refuse beyond this many bytes
SNAPSHOT_BUDGET_BYTES = 4 << 30
#: the a-priori certificate of the two-layer network forms and diagonalizes the n x n Jacobian Gram
#: (O(n^2 k + n^3)): 20 s at 64x64, 10-20 min at 128x128 on 2 cores, longer than the training; a DIP
#: entry asks for it up to this many pixels and says so beyond
CERTIFY_MAX_PIXELS = 64 * 64


def run_config(case: Case, network: str, rule: str) -> RunConfig:
    """``solve``'s configuration of ``case`` (its ``task["config"]``) with ``network``, the stopping rule,
    the case's noise level for the rules that take one, and the certificate asked for where the
    method has a theorem (gd, the gradient flow) and the image has at most :data:`CERTIFY_MAX_PIXELS`
    pixels. ConfigError when the rule does not fit the method."""
    values = {name: dict(section) for name, section in case.task.get("config", {}).items()}
    values.setdefault("problem", {})["size"] = case.shape
    values["network"] = {"network": network}
    stopping = {"stop": rule}
    if STOPPING.components[rule].can("noise_level") or rule == "auto":
        stopping["noise_level"] = case.sigma if case.sigma is not None else "auto"
    values["stopping"] = stopping
    values["training"] = {**values.get("training", {}), "record_every": 1}
    values.setdefault("run", {})["seed"] = case.seed
    config = RunConfig.build(values)
    if not config.method.can("certifiable") or config.signal_size > CERTIFY_MAX_PIXELS:
        return config  # the a-posteriori bound only (certificate_summary)
    return RunConfig.build({**values, "certificate": {"certify": True}})


def _as_dtype(problem: Problem, dtype: torch.dtype) -> Problem:
    """The same observation in ``dtype`` (the network's), operator included."""
    cast = lambda t: None if t is None else t.to(dtype)
    return Problem(problem.operator.to(dtype=dtype), cast(problem.y), cast(problem.x_true), cast(problem.noise),
                   problem.image_shape, problem.description)


def certificate_summary(config: RunConfig, certificate, no_certificate: str | None, problem: Problem,
                        x: torch.Tensor) -> dict:
    """What the certificate says of the returned iterate x: for a method with a theorem (gd, the
    gradient flow) its verdict on Theorem III.1 (or why there is none); for every method, where A is
    injective, the a-posteriori bound ‖x − x̄‖ ≤ (‖A x − y‖ + ‖ε‖)/σ_min(A) (a bound, with the
    simulation's true ‖ε‖) and the PSNR it guarantees."""
    if certificate is not None:
        out = {"certificate": certificate.verdict_text(0)}
    elif no_certificate is not None:
        out = {"certificate": f"none: {no_certificate}"}
    elif config.method.can("certifiable"):
        out = {"certificate": f"a-priori certificate not computed at {problem.n} pixels (its n x n Jacobian Gram "
                              f"takes minutes beyond {CERTIFY_MAX_PIXELS}; dipcert certify computes it): "
                              "a-posteriori bound only"}
    else:
        out = {"certificate": f"no a-priori theorem for {config.method.name}: a-posteriori bound only"}
    op = problem.operator
    if op.injective():
        residual = float((op.forward_flat(x[None].to(problem.y.dtype)) - problem.y).norm())
        bound = (residual + float(problem.noise[0].norm())) / float(op.sigma_min().max())
        out["error_bound"] = bound
        out["psnr_lower_bound"] = 20 * math.log10(255 * math.sqrt(problem.n) / bound) if bound > 0 else math.inf
    else:
        out["certificate"] += "; A is not injective: no recovery bound"
    return out


def _run(network: str, case: Case, rules: tuple[str, ...]) -> dict[str, Reconstruction | NotApplicable]:
    config = run_config(case, network, "none")
    problem = _as_dtype(case.problem, config.torch_dtype)
    net = build_network(config, problem)
    loss = build_loss(config)
    iters = config.training.iters
    memory = 2 * (iters + 1) * problem.n * config.torch_dtype.itemsize  # the snapshots, then their stack
    if memory > SNAPSHOT_BUDGET_BYTES:
        raise NotApplicable(f"keeping {iters + 1} iterates of {problem.n} pixels needs {memory / 2**30:.1f} GiB")
    method, _, certificate, no_certificate = choose_method(config, problem, net, loss)
    resolved: dict[str, tuple | NotApplicable] = {}
    for name in rules:  # every rule resolved (or refused) before any training
        notes: list[str] = []
        try:
            rule_config = run_config(case, network, name)
            resolved[name] = (rule_config, *choose_stop(rule_config, problem, certificate, no_certificate, notes),
                              notes)
        except ConfigError as exc:
            resolved[name] = NotApplicable(str(exc))
    if all(isinstance(r, NotApplicable) for r in resolved.values()):
        raise NotApplicable("; ".join(f"{name}: {r}" for name, r in resolved.items()))
    result = train(problem, net, method, loss=loss, max_iters=iters, record_every=1, snapshot_at=range(iters + 1))
    history = result.history
    taus = sorted(result.snapshots)
    iterates = torch.stack([result.snapshots.pop(t)[0] for t in taus])
    out: dict[str, Reconstruction | NotApplicable] = {}
    for name, entry in resolved.items():
        if isinstance(entry, NotApplicable):
            out[name] = entry
            continue
        rule_config, rule, chosen, level, notes = entry
        if case.task.get("quantized") and chosen == "least-loss":
            notes.append(f"the 8-bit rounding (sigma = {case.sigma:.3g}) is the only noise: least-loss, as on "
                         "noiseless data")
        x, report = replay(rule, iterates, problem.y[0], history.loss[:, 0], problem.operator.forward_flat,
                           problem.x_true[0], rule_config.stopping.values.get("average", 0.0))
        end = report["stopped_at"] if report["stopped_at"] is not None else taus[-1]
        needs = ("ground truth",) if chosen == "oracle" else \
            ("noise level",) if level is not None and STOPPING.components[chosen].can("noise_level") else None
        details = {"iterations_run": int(taus[-1]), "stopped_at": report["stopped_at"], "reason": report["reason"],
                   "parameters": net.parameter_count, "method": config.method.name,
                   **certificate_summary(config, certificate, no_certificate, problem, x)}
        out[name] = Reconstruction(x.double().cpu().numpy().reshape(case.shape), float(history.seconds[end]),
                                   name if chosen == name else f"{name}: {chosen}", "iteration", float(report["tau"]),
                                   needs, tuple(notes), details)
    return out


def _entry(network: str) -> Reconstructor:
    component = NETWORK.components[network]
    return Reconstructor(f"dip-{network}", f"the DIP with {component.help}", tuple(STOPPING.components),
                         lambda case, rules: _run(network, case, rules), family="dip")


#: a DIP entry per generator that reconstructs images (the MLP is the synthetic problems' network)
ENTRIES = tuple(_entry(name) for name in NETWORK.components if name != "mlp")
