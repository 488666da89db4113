"""Parameter-choice rules over a one-parameter family x_λ (or an iteration path x_k).

- Morozov's discrepancy principle: the λ with ‖A x_λ − y‖ = τ‖ε‖ (Morozov 1966; Engl, Hanke &
  Neubauer, *Regularization of Inverse Problems*, 1996, ch. 4), τ = :data:`DISCREPANCY_FACTOR`;
  for an iteration, the first k with ‖A x_k − y‖ ≤ τ‖ε‖ (ibid., ch. 6).
- Generalized cross-validation: the minimizer of G(λ) = m‖A x_λ − y‖² / trace(I − A R_λ)²,
  R_λ the linear map y ↦ x_λ (Golub, Heath & Wahba, *Technometrics* 21, 1979).
- Oracle: the λ (or k) nearest the truth, ‖x_λ − x̄‖ least; for reference only.

λ is searched on a log scale over [lo, hi]; the rules return a :class:`Choice` whose notes say when the
answer sits at an end of that range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import brentq, minimize_scalar

#: τ of the discrepancy principle ‖A x − y‖ = τ‖ε‖. The convergence proofs for iterations take τ > 1
#: (Engl et al., ch. 6); τ = 1 stops where the residual equals the noise norm, the common practice.
DISCREPANCY_FACTOR = 1.0
#: log-grid points per decade of λ, for bracketing and for the first pass of the minimizations
POINTS_PER_DECADE = 3
#: tolerance on log λ of the final refinement (a relative tolerance on λ)
LOG_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Choice:
    """The λ a rule chose, with what the caller should know about it."""

    value: float
    notes: tuple[str, ...] = ()


def _log_grid(lo: float, hi: float) -> np.ndarray:
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
    points = max(3, math.ceil(POINTS_PER_DECADE * math.log10(hi / lo)) + 1)
    return np.linspace(math.log(lo), math.log(hi), points)


def discrepancy(residual_norm: Callable[[float], float], target: float, lo: float, hi: float) -> Choice:
    """The λ in [lo, hi] with ``residual_norm(λ) = target`` (τ‖ε‖), the residual increasing in λ.

    Brackets the crossing on a log grid from ``hi`` down (large λ first: the well-conditioned end),
    then solves on log λ with Brent's bracketing root finder (:func:`scipy.optimize.brentq`, bisection
    safeguarded). A target above the residual at ``hi`` gives ``hi``; one below the residual at ``lo``
    (the least attainable in the range) gives ``lo``; a note says so either way.
    """
    gap = lambda t: residual_norm(math.exp(t)) - target
    grid = _log_grid(lo, hi)[::-1]
    above = grid[0]
    if gap(above) < 0:
        return Choice(hi, (f"discrepancy target {target:.4g} is above the residual at the largest lambda "
                           f"searched ({hi:.3g}): largest lambda returned",))
    for t in grid[1:]:
        if gap(t) <= 0:
            return Choice(math.exp(brentq(gap, t, above, xtol=1e-12)))
        above = t
    return Choice(lo, (f"discrepancy target {target:.4g} is below the least residual in reach "
                       f"(lambda = {lo:.3g}, the smallest searched): smallest lambda returned",))


def _log_minimize(f: Callable[[float], float], lo: float, hi: float, what: str) -> Choice:
    """Minimizer of f over [lo, hi]: a log grid, then Brent's bounded search (golden section with
    parabolic steps, :func:`scipy.optimize.minimize_scalar`) on log λ between the grid neighbours of
    the grid's best point."""
    grid = _log_grid(lo, hi)
    values = [f(math.exp(t)) for t in grid[::-1]][::-1]  # large λ first: the well-conditioned end
    i = int(np.nanargmin(values))
    bounds = (grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)])
    refined = minimize_scalar(lambda t: f(math.exp(t)), bounds=bounds, method="bounded",
                              options={"xatol": LOG_TOLERANCE})
    t = refined.x if refined.fun <= values[i] else grid[i]
    notes = ()
    if i in (0, len(grid) - 1):
        end, side = ("smallest", "below") if i == 0 else ("largest", "above")
        notes = (f"on the grid, {what} is least at the {end} lambda searched ({math.exp(grid[i]):.3g}): "
                 f"the minimum may lie {side} the range",)
    return Choice(math.exp(t), notes)


def gcv_minimize(gcv: Callable[[float], float], lo: float, hi: float) -> Choice:
    """The λ in [lo, hi] minimizing the GCV function ``gcv(λ)`` = m‖A x_λ − y‖² / trace(I − A R_λ)²."""
    return _log_minimize(gcv, lo, hi, "GCV")


def oracle_minimize(error: Callable[[float], float], lo: float, hi: float) -> Choice:
    """The λ in [lo, hi] minimizing ``error(λ)`` = ‖x_λ − x̄‖ (oracle: reads the truth)."""
    return _log_minimize(error, lo, hi, "the error")


def discrepancy_stop(residuals: Sequence[float], target: float) -> int | None:
    """First iteration k whose residual ‖A x_k − y‖ ≤ ``target``; None when the path never gets there."""
    hits = np.flatnonzero(np.asarray(residuals) <= target)
    return int(hits[0]) if hits.size else None


def oracle_stop(errors: Sequence[float]) -> int:
    """Iteration of least error ‖x_k − x̄‖ along the path (the first, on ties)."""
    return int(np.argmin(errors))
