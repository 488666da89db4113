"""Total-variation deconvolution: x_μ = argmin_x ½‖Ax − y‖² + μ TV(x), μ by rule; for noiseless data
(‖ε‖ = 0) its limit μ → 0, argmin TV(x) subject to Ax = y, reported as μ = 0.

TV is the isotropic total variation Σ_pixels √((∂₁x)² + (∂₂x)²) with forward differences and a zero
difference across the last row and column (:class:`pylops.Gradient`, ``kind="forward"``,
``edge=False``). Everything is on the image's own scale ([0, 255]) and μ is reported for the objective
as written, with A and y as the case gives them: nothing is rescaled, so μ is in gray levels × ‖A‖²
(it scales like y and like ‖A‖²).

Solver: the Chambolle–Pock primal–dual algorithm (:func:`pyproximal.optimization.primaldual.PrimalDual`,
θ = 1; its functional API, the same since pyproximal 0.8, stopped through its callback) on min_x g(Kx) with K = [A; c∇] and g(u, v) = ½‖u − y‖² + (μ/c)‖v‖₂,₁ (both proximal maps are
closed-form: no inner solve, so any operator works: blur, inpainting, Gaussian matrix, spectral).
c = ‖A‖/√8 gives both blocks the same norm (‖∇‖² ≤ 8), so ‖K‖ ≤ √2‖A‖ and the steps τ = ρ/L,
σ = 1/(ρL), L = √2‖A‖, satisfy τσ‖K‖² < 1. The step ratio ρ = :data:`STEP_RATIO` · rms(x₀)·c/μ,
x₀ = Aᵀy/‖A‖², balances the primal scale (the image) against the dual one (μ/c) and is invariant
under rescaling the image or the operator; measured (iterations to reach 1e-3 of the optimal
objective, noise σ = 10) on 64×64 camera with blur σ = 1 and 2 and 50% inpainting and on 32×32 with
a Gaussian matrix, μ over a 30-100× range each, it is within a factor 2 of the best of
ρ/STEP_RATIO ∈ {0.02, 0.04, …, 0.32}.
Each solve stops when ‖x_k − x_{k−10}‖ ≤ :data:`TOLERANCE`·‖x_k‖ (checked every
:data:`CHECK_EVERY` iterations) or after :data:`MAX_ITERATIONS`; successive solves of a search are
warm-started, primal and dual, from the solved μ nearest on the log scale (the dual of the TV block
rescaled by μ_new/μ_old, which keeps it feasible).

Constrained solve (μ = 0): the same algorithm with g₁ the indicator of {y}, whose conjugate's proximal
map is v − σy (still closed-form, any operator), and TV weight 1 (the minimizer does not depend on it;
the dual scales with it), from x₀: one solve of at most :data:`CONSTRAINED_MAX_ITERATIONS` (5000)
iterations, stopped when, over the last 10, ‖Ax − y‖ ≤ :data:`CONSTRAINT_RTOL`·‖y‖ (1e-5), TV(x)
changed by ≤ :data:`TV_RTOL` (2e-6) and x by ≤ :data:`CONSTRAINED_TOLERANCE` (5e-5), relative. Step
ratio ρ = :data:`CONSTRAINED_STEP_RATIO` (0.2) · rms(x₀)·c (the dual scale is now 1/c; invariant as
above): measured on 10 noiseless cases (inpainting 20, 50, 80% of 32×32 camera, 50% of 64×64 camera,
50% of 32×32 astronaut and Shepp–Logan, 30% of 64×64 coins; Gaussian matrices m = n/4 and n/2 on 32×32
camera, n/4 on a 24×24 phantom), 0.2 stops within 2× the fewest iterations of {0.1, 0.2, 0.3, 0.4} on
each and fewest in total (510–1190 iterations), and the result is within 5e-5 in TV and 1.3e-3 in x
(relative) of a 20 000-iteration run (coins: 2.5e-3 in x, TV 1e-5: a nearly flat minimum). With an
invertible A (circular blur) the only feasible point is x̄ itself, approached slowly (condition
number 4.8e3 for σ = 1): the cap is reached, at 42.0 dB on 32×32 camera (24.6 observed), 42.6 on 64×64.

Rules (on log μ):

- ``discrepancy``: ‖A x_μ − y‖ = ‖ε‖ (Morozov, τ = 1; the residual increases with μ). Steps of ×4 from
  μ₀ = ½‖A‖·‖ε‖/√m until the crossing is bracketed, then the Illinois (safeguarded false-position)
  method on log‖A x_μ − y‖ until it is within :data:`DISCREPANCY_RTOL` of ‖ε‖ relative. With
  ‖ε‖ = 0 no μ > 0 fits (the residual only reaches 0 as μ → 0): the constrained solve, μ = 0.
- ``oracle``: the least ‖x_μ − x̄‖ (reference only). From the best point solved so far (the
  discrepancy search's points count when both rules are asked, so oracle ≤ discrepancy in error),
  steps of ×4 downhill until the error rises, then Brent's bounded minimization on log μ between the
  neighbours (:func:`scipy.optimize.minimize_scalar`, xatol = :data:`ORACLE_XATOL`); the best point
  solved is returned. Without a noise level the walk starts at μ₀ = ½‖A‖·1 gray level. With ‖ε‖ = 0
  the constrained solution is a candidate too (solved first: the walk's first solve starts from it,
  its dual ×μ), so oracle ≤ discrepancy in error there as well.

Seconds: discrepancy, the setup and its search (or the constrained solve); oracle, everything done in
the run (it reuses the discrepancy search's solves as candidates and warm starts when both are asked).

Measured on ``builtin:camera``, circular blur σ = 1, noise σ = 10 (2 CPU cores shared with other
jobs, so times vary with their load): 64×64, discrepancy 0.2–0.4 s (3 solves, 380 iterations; PSNR
28.5 dB from 24.1 observed), both rules 0.65–1.2 s (12 solves; oracle 28.6 dB); 128×128, discrepancy
0.2–1.3 s (1 solve, 170 iterations), both rules 1–6 s (9 solves; 27.9 and 28.2 dB from 24.6). The solves returned are within 1e-3 (relative) of the optimal objective
of a 5000-iteration run, x within 2e-3, on blur, inpainting and Gaussian-matrix cases.
Noiseless inpainting of 50% of camera (seed 0): 32×32, discrepancy (constrained) 27.9 dB in 0.2–0.3 s
(730 iterations), both rules 0.5–0.8 s (oracle 27.9 dB), biharmonic 29.7 dB; 64×64, 29.4 dB in
0.2–0.3 s (650 iterations), both 0.6–0.9 s, biharmonic 31.0 dB; zero-filling gives 7.9 dB.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch

from ..operators import LinearOperator
from .case import QUANTIZATION_STD, Case, NotApplicable, Reconstruction
from .entry import Reconstructor

MISSING = "needs the optional package pyproximal: pip install 'dipcert[compare]'"
RULES = ("discrepancy", "oracle")

#: iteration cap of one solve
MAX_ITERATIONS = 400
#: one solve stops when ‖x_k − x_{k−CHECK_EVERY}‖ ≤ TOLERANCE·‖x_k‖
TOLERANCE = 2e-4
CHECK_EVERY = 10
#: ρ = STEP_RATIO · rms(x₀) · c / μ (see the module docstring)
STEP_RATIO = 0.1
#: bracketing step on log μ (×4), and how many such steps at most either way
LOG_STEP = math.log(4.0)
MAX_BRACKET_STEPS = 8
#: the discrepancy search stops at |‖A x − y‖/‖ε‖ − 1| ≤ DISCREPANCY_RTOL
DISCREPANCY_RTOL = 5e-3
#: Brent's tolerance on log μ for the oracle (≈ 10% on μ; the error is flat near its minimum)
ORACLE_XATOL = 0.1
#: all solves of one run, at most
MAX_SOLVES = 40
#: the constrained solve (‖ε‖ = 0, μ = 0): iteration cap, and its stop, checked every CHECK_EVERY
#: iterations: ‖Ax − y‖ ≤ CONSTRAINT_RTOL·‖y‖, |TV(x_k) − TV(x_{k−10})| ≤ TV_RTOL·TV(x_k) and
#: ‖x_k − x_{k−10}‖ ≤ CONSTRAINED_TOLERANCE·‖x_k‖
CONSTRAINED_MAX_ITERATIONS = 5000
CONSTRAINT_RTOL = 1e-5
TV_RTOL = 2e-6
CONSTRAINED_TOLERANCE = 5e-5
#: ρ = CONSTRAINED_STEP_RATIO · rms(x₀) · c for the constrained solve (see the module docstring)
CONSTRAINED_STEP_RATIO = 0.2

SOLVER_NOTE = (f"Chambolle-Pock primal-dual (pyproximal.PrimalDual) on [A; c grad], at most {MAX_ITERATIONS} "
               f"iterations per solve, stopped at relative change <= {TOLERANCE:g} over {CHECK_EVERY} iterations, "
               "warm-started along the search")
CONSTRAINED_NOTE = (f"Chambolle-Pock primal-dual (pyproximal.PrimalDual) on [A; c grad] with the A-block the "
                    f"indicator of {{y}}, at most {CONSTRAINED_MAX_ITERATIONS} iterations, stopped at "
                    f"||Ax - y|| <= {CONSTRAINT_RTOL:g} ||y||, relative change of TV(x) <= {TV_RTOL:g} and of x "
                    f"<= {CONSTRAINED_TOLERANCE:g} over {CHECK_EVERY} iterations")


def missing_package() -> str | None:
    """Why TV cannot run here (pyproximal or pylops not importable), None when it can."""
    try:
        import pylops  # noqa: F401
        import pyproximal  # noqa: F401
    except ImportError:
        return MISSING
    return None


def pylops_operator(op: LinearOperator):
    """dipcert's operator as a float64 :class:`pylops.LinearOperator` on flat NumPy vectors, through
    ``forward_flat``/``adjoint_flat`` on CPU."""
    import pylops

    if op.dtype != torch.float64 or op.device.type != "cpu":
        op = op.to(device="cpu", dtype=torch.float64)

    def tensor(v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.require(v, np.float64, ["C", "W"]))

    class DipcertOperator(pylops.LinearOperator):
        def __init__(self) -> None:
            super().__init__(dtype=np.dtype(np.float64), shape=(op.out_size, op.in_size))

        def _matvec(self, x: np.ndarray) -> np.ndarray:
            return op.forward_flat(tensor(x)).reshape(-1).numpy()

        def _rmatvec(self, y: np.ndarray) -> np.ndarray:
            return op.adjoint_flat(tensor(y)).reshape(-1).numpy()

    return DipcertOperator()


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread meanwhile (restored after): the operator is applied to one small image at a
    time, where a second thread only waits for the other core (measured: a 64×64 rfft2 takes 0.04 ms
    on one thread and 20 ms on two while the other core is busy)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _stacked(A, gradient, c: float):
    """K = [A; c∇] as one pylops operator (what :class:`pylops.VStack` gives, with less overhead per call)."""
    import pylops

    m, n = A.shape

    class Stacked(pylops.LinearOperator):
        def __init__(self) -> None:
            super().__init__(dtype=np.dtype(np.float64), shape=(m + 2 * n, n))

        def _matvec(self, x: np.ndarray) -> np.ndarray:
            return np.concatenate([A.matvec(x), c * gradient.matvec(x)])

        def _rmatvec(self, y: np.ndarray) -> np.ndarray:
            return A.rmatvec(y[:m]) + c * gradient.rmatvec(y[m:])

    return Stacked()


class TVSolver:
    """x_μ for one case, every solve cached by log μ and warm-started from the nearest one solved."""

    def __init__(self, case: Case) -> None:
        import pylops
        import pyproximal

        self.case = case
        op = case.operator
        self.y = case.y.detach().cpu().numpy().astype(np.float64)
        self.m, self.n = op.out_size, op.in_size
        self.norm = float(op.norm().reshape(-1)[0])
        if not self.norm > 0:
            raise NotApplicable("TV needs a nonzero operator")
        self.A = pylops_operator(op)
        self.gradient = pylops.Gradient(dims=case.shape, kind="forward", edge=False, dtype=np.float64)
        self.c = self.norm / math.sqrt(8.0)
        self.K = _stacked(self.A, self.gradient, self.c)
        self.lipschitz = math.sqrt(2.0) * self.norm
        self.zero = pyproximal.Quadratic()  # f = 0: TV and the data term both sit in g(Kx)
        self.data_term = pyproximal.L2(b=self.y)
        self.x0 = self.A.rmatvec(self.y) / self.norm**2
        self.scale = max(float(np.sqrt(np.mean(self.x0**2))), 1e-12)
        self.y_norm = float(np.linalg.norm(self.y))
        self.solved: dict[float, tuple[np.ndarray, np.ndarray, float]] = {}  # t = log μ -> (x, dual, residual)
        self.constrained: tuple[np.ndarray, np.ndarray, float] | None = None  # μ = 0 (t = −∞): (x, dual, residual)
        self.constrained_converged = False
        self.iterations = 0

    def residual(self, x: np.ndarray) -> float:
        return float(np.linalg.norm(self.A.matvec(x) - self.y))

    def tv(self, x: np.ndarray) -> float:
        d = self.gradient.matvec(x).reshape(2, -1)
        return float(np.sqrt((d**2).sum(0)).sum())

    def objective(self, x: np.ndarray, mu: float) -> float:
        return 0.5 * self.residual(x) ** 2 + mu * self.tv(x)

    def _start(self, t: float) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.solved and self.constrained is not None:
            # x_μ → the constrained solution as μ → 0, its dual ≈ μ times that one's (TV weight 1)
            x, dual, _ = self.constrained
            return x, math.exp(t) * dual
        if not self.solved:
            return self.x0, None
        near = min(self.solved, key=lambda s: abs(s - t))
        x, dual, _ = self.solved[near]
        dual = dual.copy()
        dual[self.m:] *= math.exp(t - near)
        return x, dual

    def solve(self, t: float) -> tuple[np.ndarray, float]:
        """(x_μ, ‖A x_μ − y‖) at μ = e^t; t = −∞ (μ = 0): :meth:`solve_constrained`."""
        if t == -math.inf:
            return self.solve_constrained()
        if t in self.solved:
            x, _, r = self.solved[t]
            return x, r
        if len(self.solved) >= MAX_SOLVES:
            raise _Budget()
        import pyproximal
        from pyproximal.optimization.primaldual import PrimalDual

        mu = math.exp(t)
        g = pyproximal.VStack([self.data_term, pyproximal.L21(ndim=2, sigma=mu / self.c)], nn=[self.m, 2 * self.n])
        ratio = STEP_RATIO * self.scale * self.c / mu
        tau, sigma = 0.99 * ratio / self.lipschitz, 0.99 / (ratio * self.lipschitz)
        x0, dual0 = self._start(t)
        monitor = _Monitor(x0)
        try:
            x, dual = PrimalDual(self.zero, g, self.K, x0, tau, sigma, y0=dual0, niter=MAX_ITERATIONS,
                                 callback=monitor, callbacky=True, returny=True)
        except _Converged:
            x, dual = monitor.x, monitor.dual
        self.iterations += monitor.iterations
        r = self.residual(x)
        self.solved[t] = (x, dual, r)
        return x, r

    def solve_constrained(self) -> tuple[np.ndarray, float]:
        """(x, ‖Ax − y‖) for min TV(x) subject to Ax = y, the limit μ → 0 of x_μ: the same algorithm with
        the A-block of g the indicator of {y} (prox_{σg₁*}(v) = v − σy) and TV weight 1 (the minimizer
        does not depend on it), from x₀, at most :data:`CONSTRAINED_MAX_ITERATIONS` iterations."""
        if self.constrained is not None:
            x, _, r = self.constrained
            return x, r
        import pyproximal
        from pyproximal.optimization.primaldual import PrimalDual

        g = pyproximal.VStack([_point(self.y), pyproximal.L21(ndim=2, sigma=1.0 / self.c)],
                              nn=[self.m, 2 * self.n])
        ratio = CONSTRAINED_STEP_RATIO * self.scale * self.c
        tau, sigma = 0.99 * ratio / self.lipschitz, 0.99 / (ratio * self.lipschitz)
        monitor = _ConstrainedMonitor(self, self.x0)
        try:
            x, dual = PrimalDual(self.zero, g, self.K, self.x0, tau, sigma, niter=CONSTRAINED_MAX_ITERATIONS,
                                 callback=monitor, callbacky=True, returny=True)
        except _Converged:
            x, dual = monitor.x, monitor.dual
            self.constrained_converged = True
        self.iterations += monitor.iterations
        r = self.residual(x)
        self.constrained = (x, dual, r)
        return x, r


def _point(b: np.ndarray):
    """The indicator of {b} as a pyproximal operator: prox = b, so the dual prox (by Moreau, which
    pyproximal's VStack applies) is v − σb."""
    import pyproximal

    class Point(pyproximal.ProxOperator):
        def __init__(self) -> None:
            super().__init__(None, False)

        def __call__(self, u: np.ndarray) -> float:
            return 0.0 if np.array_equal(u, b) else math.inf

        def prox(self, u: np.ndarray, tau: float) -> np.ndarray:
            return b.copy()

    return Point()


class _Converged(Exception):
    """Raised by the callback to end a PrimalDual run (its functional API has no custom stop)."""


class _Monitor:
    """PrimalDual callback: counts iterations and stops the run (raising :class:`_Converged`, the
    iterate kept here) once ‖x_k − x_{k−CHECK_EVERY}‖ ≤ TOLERANCE·‖x_k‖."""

    def __init__(self, x0: np.ndarray) -> None:
        self.previous = x0.copy()
        self.iterations = 0

    def __call__(self, x: np.ndarray, dual: np.ndarray) -> None:
        self.iterations += 1
        if self.iterations % CHECK_EVERY:
            return
        if np.linalg.norm(x - self.previous) <= TOLERANCE * max(float(np.linalg.norm(x)), 1e-300):
            self.x, self.dual = x.copy(), dual.copy()
            raise _Converged()
        self.previous = x.copy()


class _ConstrainedMonitor(_Monitor):
    """The constrained solve's callback: stops once, over the last CHECK_EVERY iterations, x changed by
    at most CONSTRAINED_TOLERANCE and TV(x) by at most TV_RTOL (relative), and ‖Ax − y‖ ≤
    CONSTRAINT_RTOL·‖y‖."""

    def __init__(self, solver: TVSolver, x0: np.ndarray) -> None:
        super().__init__(x0)
        self.solver = solver
        self.previous_tv = solver.tv(x0)

    def __call__(self, x: np.ndarray, dual: np.ndarray) -> None:
        self.iterations += 1
        if self.iterations % CHECK_EVERY:
            return
        s, tv = self.solver, self.solver.tv(x)
        if (s.residual(x) <= CONSTRAINT_RTOL * s.y_norm and abs(tv - self.previous_tv) <= TV_RTOL * tv
                and np.linalg.norm(x - self.previous) <= CONSTRAINED_TOLERANCE * max(float(np.linalg.norm(x)), 1e-300)):
            self.x, self.dual = x.copy(), dual.copy()
            raise _Converged()
        self.previous, self.previous_tv = x.copy(), tv


class _Budget(Exception):
    """MAX_SOLVES reached."""


def _discrepancy(solver: TVSolver, delta: float, t0: float) -> tuple[float, tuple[str, ...]]:
    """log μ with ‖A x_μ − y‖ ≈ δ (see the module docstring), and notes."""
    if delta <= 0:
        solver.solve_constrained()
        return -math.inf, ("noise norm 0: the discrepancy principle's limit mu -> 0 solved directly, "
                           "min TV(x) subject to Ax = y (mu = 0)",)
    f = lambda t: math.log(solver.solve(t)[1] / delta)  # noqa: E731
    tol = math.log1p(DISCREPANCY_RTOL)
    a, fa = t0, f(t0)
    step = LOG_STEP if fa < 0 else -LOG_STEP
    b, fb = a, fa
    try:
        for _ in range(MAX_BRACKET_STEPS):
            if abs(fb) <= tol or fa * fb < 0:
                break
            a, fa = b, fb
            b, fb = a + step, f(a + step)
        else:
            if abs(fb) > tol and fa * fb > 0:
                end = "smallest" if step < 0 else "largest"
                return b, (f"residual {solver.solve(b)[1]:.4g} never crossed the noise norm {delta:.4g} within "
                           f"{MAX_BRACKET_STEPS} steps of x4 from mu = {math.exp(t0):.3g}: {end} mu tried returned",)
        best = min(((a, fa), (b, fb)), key=lambda p: abs(p[1]))
        for _ in range(MAX_SOLVES):  # Illinois on the bracket [a, b]
            if abs(best[1]) <= tol:
                break
            c = b - fb * (b - a) / (fb - fa)
            fc = f(c)
            if fc * fb < 0:
                a, fa = b, fb
            else:
                fa /= 2  # halve the retained end's value, so that it cannot stall
            b, fb = c, fc
            best = min((best, (c, fc)), key=lambda p: abs(p[1]))
    except _Budget:
        best = min(((s, f(s)) for s in solver.solved), key=lambda p: abs(p[1]))
        return best[0], (f"solve budget ({MAX_SOLVES}) reached: residual {solver.solve(best[0])[1]:.4g} "
                         f"vs noise norm {delta:.4g}",)
    return best[0], ()


def _oracle(solver: TVSolver, t0: float, noiseless: bool) -> tuple[float, tuple[str, ...]]:
    """log μ of the least ‖x_μ − x̄‖ among the points solved (see the module docstring), and notes;
    ``noiseless``: the constrained solution (μ = 0, t = −∞) is a candidate too."""
    from scipy.optimize import minimize_scalar

    errors: dict[float, float] = {}

    def error(t: float) -> float:
        if t not in errors:
            errors[t] = solver.case.error(solver.solve(t)[0])
        return errors[t]

    notes: tuple[str, ...] = ()
    if noiseless:
        error(-math.inf)  # first: it warm-starts the walk's first solve
    try:
        for t in list(solver.solved) or [t0]:
            error(t)
        anchor = min((t for t in errors if t > -math.inf), key=errors.get)
        grid = lambda k: anchor + k * LOG_STEP  # noqa: E731 - the same float for the same k
        k = 0
        for _ in range(2 * MAX_BRACKET_STEPS):
            lower, upper = error(grid(k - 1)), error(grid(k + 1))
            if errors[grid(k)] <= min(lower, upper):
                break
            k += -1 if lower < upper else 1
        else:
            notes = (f"the error kept decreasing for {2 * MAX_BRACKET_STEPS} steps of x4: "
                     f"best mu found (mu = {math.exp(grid(k)):.3g}) returned",)
        if not notes:
            minimize_scalar(error, bounds=(grid(k - 1), grid(k + 1)), method="bounded",
                            options={"xatol": ORACLE_XATOL})
    except _Budget:
        notes = (f"solve budget ({MAX_SOLVES}) reached: best mu found returned",)
    best = min(errors, key=errors.get)
    if best == -math.inf:
        notes = ("noise norm 0: the constrained solution, min TV(x) subject to Ax = y (mu = 0), is the nearest "
                 "of the candidates",)
    return best, notes


def run_tv(case: Case, rules: tuple[str, ...]) -> dict[str, Reconstruction]:
    """x̂ by each rule asked (see the module docstring)."""
    reason = missing_package()
    if reason:
        raise NotApplicable(reason)
    delta = case.noise_norm if "discrepancy" in rules else None  # NotApplicable without a noise level
    with one_torch_thread():
        return _run(case, rules, delta)


def _run(case: Case, rules: tuple[str, ...], delta: float | None) -> dict[str, Reconstruction]:
    start = time.perf_counter()
    solver = TVSolver(case)
    if delta is None and case.noise is not None and case.noise.known:
        delta = case.noise_norm
    sigma = 1.0 if delta is None else max(delta / math.sqrt(solver.m), QUANTIZATION_STD)
    t0 = math.log(0.5 * solver.norm * sigma)
    choosers: dict[str, Callable[[], tuple[float, tuple[str, ...]]]] = {
        "discrepancy": lambda: _discrepancy(solver, delta, t0),
        "oracle": lambda: _oracle(solver, t0, delta == 0),
    }
    out = {}
    for rule in sorted(rules, key=RULES.index):  # the oracle reuses the discrepancy's solves
        t, notes = choosers[rule]()
        x, r = solver.solve(t)
        mu = math.exp(t)
        searched = sorted([math.exp(s) for s in solver.solved] + ([0.0] if solver.constrained is not None else []))
        if mu == 0:
            notes += (CONSTRAINED_NOTE,) if solver.constrained_converged else (
                f"iteration cap ({CONSTRAINED_MAX_ITERATIONS}) reached before the stop: ||Ax - y|| = "
                f"{r / max(solver.y_norm, 1e-300):.2g} ||y||", CONSTRAINED_NOTE)
        else:
            notes += (SOLVER_NOTE,)
        out[rule] = Reconstruction(
            x.reshape(case.shape).copy(), time.perf_counter() - start, rule, "mu", mu, notes=notes,
            details={"residual_norm": r, "objective": solver.objective(x, mu), "tv": solver.tv(x),
                     "solves": len(searched), "iterations": solver.iterations, "mu_searched": searched})
    return {rule: out[rule] for rule in rules}


tv_entry = Reconstructor(
    "tv", "total-variation deconvolution, min ½‖Ax − y‖² + μ TV(x) (isotropic), Chambolle–Pock via pyproximal, "
    "μ by rule", RULES, run_tv, lambda case: missing_package())

ENTRIES: tuple[Reconstructor, ...] = (tv_entry,)
