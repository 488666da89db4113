"""Classical linear baselines as registry entries: Wiener (scikit-image), Tikhonov with L = I or the
Laplacian, and the Landweber, CGLS and Richardson–Lucy iterations stopped by the discrepancy principle.

λ is searched over [LAMBDA_RANGE]·‖A‖²; the rules are those of :mod:`.parameter`. Rules asked together
share one computation: one Tikhonov solver (its λ ↦ x_λ cached where it is iterative), one iteration
path. A rule's seconds are the shared setup plus its own search and solve; an iteration's are those
taken to reach the iterate it returns (the whole path for the oracle, which must see it all).
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from ..operators import GaussianBlur, LinearOperator
from .case import Case, Reconstruction
from .entry import Reconstructor
from .linear import (HUTCHINSON_PROBES, RL_FLOOR, Tikhonov, cgls_steps, follow, fourier_tikhonov, landweber_steps,
                     richardson_lucy_steps, tikhonov)
from .packages import IMAGE_PEAK, skimage_blur_reason
from .parameter import (DISCREPANCY_FACTOR, Choice, discrepancy, discrepancy_stop, gcv_minimize, oracle_minimize,
                        oracle_stop)

#: λ is searched over ‖A‖² times this range
LAMBDA_RANGE = (1e-7, 1e1)
#: iteration caps: the last iterate is returned, with a note, when the discrepancy is not reached by then
LANDWEBER_MAX_ITERATIONS = 2000
CGLS_MAX_ITERATIONS = 300
RL_MAX_ITERATIONS = 2000

TIKHONOV_RULES = ("discrepancy", "gcv", "oracle")
ITERATIVE_RULES = ("discrepancy", "oracle")


def _operator(case: Case) -> LinearOperator:
    op = case.operator
    return op if op.dtype == torch.float64 else op.to(dtype=torch.float64)


def _target(case: Case, rules: tuple[str, ...]) -> float | None:
    """τ‖ε‖ when the discrepancy rule is asked (NotApplicable without a noise level), else None."""
    return DISCREPANCY_FACTOR * case.noise_norm if "discrepancy" in rules else None


def _choose(solver: Tikhonov, case: Case, rule: str, target: float | None) -> Choice:
    norm2 = float(solver.op.norm().max()) ** 2
    lo, hi = LAMBDA_RANGE[0] * norm2, LAMBDA_RANGE[1] * norm2
    if rule == "discrepancy":
        return discrepancy(solver.residual_norm, target, lo, hi)
    if rule == "gcv":
        return gcv_minimize(solver.gcv, lo, hi)
    return oracle_minimize(lambda lam: case.error(solver.solve(lam)), lo, hi)


def _by_lambda(case: Case, rules: tuple[str, ...], build: Callable[[], Tikhonov], parameter: str,
               finish: Callable[[Tikhonov, float], np.ndarray],
               notes: tuple[str, ...] | None = None) -> dict[str, Reconstruction]:
    """One solver for every rule asked; ``finish(solver, λ)`` gives x̂ (H, W); ``notes`` say how
    (default: the solver's own)."""
    target = _target(case, rules)
    start = time.perf_counter()
    solver = build()
    setup = time.perf_counter() - start
    out = {}
    for rule in rules:
        start, mark = time.perf_counter(), len(solver.capped)
        choice = _choose(solver, case, rule, target)
        x = finish(solver, choice.value)
        seconds = setup + time.perf_counter() - start
        extra = ()
        if rule == "gcv" and not solver.exact_trace:
            extra += (f"GCV trace is a Hutchinson estimate ({HUTCHINSON_PROBES} Rademacher probes)",)
        if solver.capped[mark:]:
            capped = solver.capped[mark:]
            extra += (f"CG stopped at its iteration cap for {len(capped)} lambda value(s), the smallest "
                      f"{min(capped):.3g}",)
        details = {"solver": solver.solver, "residual_norm": solver.residual_norm(choice.value)}
        out[rule] = Reconstruction(x, seconds, rule, parameter, choice.value, details=details,
                                   notes=choice.notes + extra + (solver.notes if notes is None else notes))
    return out


def _image(x: Tensor, case: Case) -> np.ndarray:
    return x.detach().cpu().numpy().reshape(case.shape)


def _tikhonov_run(regularizer: str) -> Callable[[Case, tuple[str, ...]], dict[str, Reconstruction]]:
    def run(case: Case, rules: tuple[str, ...]) -> dict[str, Reconstruction]:
        build = lambda: tikhonov(_operator(case), case.y, regularizer, case.shape)
        return _by_lambda(case, rules, build, "lambda", lambda solver, lam: _image(solver.solve(lam), case))
    return run


# --------------------------------------------------------------------------- Wiener (scikit-image)


def skimage_wiener(op: GaussianBlur, y: Tensor, balance: float) -> np.ndarray:
    """``skimage.restoration.wiener`` of y (flat, [0, 255]) with the blur's 2-D kernel, on [0, 1], unclipped.

    For a circular blur it is Tikhonov with the periodic Laplacian and λ = balance: the filter
    conj(H)/(|H|² + balance·|L̂|²) (Orieux, Giovannelli & Rodet, JOSA A 27, 2010)."""
    from skimage.restoration import wiener

    image = y.detach().cpu().numpy().reshape(op.in_shape) / IMAGE_PEAK
    return IMAGE_PEAK * wiener(image, op.kernel_2d().numpy(), balance, clip=False)


def _wiener_run(case: Case, rules: tuple[str, ...]) -> dict[str, Reconstruction]:
    """The balance is chosen on the Fourier form of the same filter, then scikit-image deconvolves."""
    op = _operator(case)
    build = lambda: fourier_tikhonov(op, case.y, "laplacian")
    return _by_lambda(case, rules, build, "balance", lambda solver, lam: skimage_wiener(op, case.y, lam),
                      ("balance chosen on the Fourier form of the same filter; x by skimage.restoration.wiener",))


# --------------------------------------------------------------------------- iterations


def _iterative_run(steps: Callable[[LinearOperator, Tensor], Iterator[tuple[Tensor, float]]], cap: Callable[[], int],
                   notes: tuple[str, ...] = ()) -> Callable[[Case, tuple[str, ...]], dict[str, Reconstruction]]:
    """One path of ``steps`` for every rule asked, to the first residual ≤ τ‖ε‖ or, for the oracle,
    to the cap ``cap()`` (read at run time)."""
    def run(case: Case, rules: tuple[str, ...]) -> dict[str, Reconstruction]:
        target = _target(case, rules)
        op = _operator(case)
        truth = None
        if "oracle" in rules:
            truth = torch.as_tensor(case.truth.reshape(-1), dtype=torch.float64, device=op.device)
        path = follow(steps(op, case.y), cap(), target, truth)
        out = {}
        for rule in rules:
            k = oracle_stop(path.errors) if rule == "oracle" else discrepancy_stop(path.residuals, target)
            budget = ()
            if k is None:
                k = path.last
                why = "budget reached" if k == cap() else "the iteration ended (Aᵀr = 0)"
                budget = (f"{why}: residual {path.residuals[k]:.4g} > target {target:.4g} after {k} iterations; "
                          "last iterate returned",)
            seconds = path.seconds[-1 if rule == "oracle" else k]
            out[rule] = Reconstruction(_image(path.kept[k], case), seconds, rule, "iterations", float(k),
                                       notes=budget + notes, details={"residual_norm": path.residuals[k]})
        return out
    return run


def _blur(case: Case) -> str | None:
    op = case.operator
    return None if isinstance(op, GaussianBlur) else f"needs a blur (a nonnegative A with Aᵀ1 > 0), got: {op.label}"


ENTRIES: tuple[Reconstructor, ...] = (
    Reconstructor("wiener", "scikit-image's Wiener–Hunt deconvolution (periodic Laplacian prior), balance by rule",
                  TIKHONOV_RULES, _wiener_run, skimage_blur_reason),
    Reconstructor("tikhonov-identity", "Tikhonov, min ‖Ax − y‖² + λ‖x‖², λ by rule", TIKHONOV_RULES,
                  _tikhonov_run("identity")),
    Reconstructor("tikhonov-laplacian", "Tikhonov, min ‖Ax − y‖² + λ‖Lx‖², L the periodic 5-point Laplacian",
                  TIKHONOV_RULES, _tikhonov_run("laplacian")),
    Reconstructor("landweber", "Landweber iteration, step 1/‖A‖², stopped by rule", ITERATIVE_RULES,
                  _iterative_run(landweber_steps, lambda: LANDWEBER_MAX_ITERATIONS)),
    Reconstructor("cgls", "CGLS (conjugate gradients on the normal equations), stopped by rule", ITERATIVE_RULES,
                  _iterative_run(cgls_steps, lambda: CGLS_MAX_ITERATIONS)),
    Reconstructor("richardson-lucy", "Richardson–Lucy (EM) deconvolution, stopped by rule", ITERATIVE_RULES,
                  _iterative_run(richardson_lucy_steps, lambda: RL_MAX_ITERATIONS,
                                 (f"EM on y raised to {RL_FLOOR:g}·max(y) where below (it divides by the data); "
                                  "residuals are to the y given",)), _blur),
)
