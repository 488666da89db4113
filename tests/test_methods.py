"""The training methods of dipcert.optim against independent oracles.

On a linear network g(θ) = M θ with the MSE ½‖A M θ − y‖², ∇L(θ) = H θ − b with H = (AM)ᵀ(AM),
b = (AM)ᵀ y, so every discrete method is an affine recurrence (exact iterate = matrix power of an
augmented matrix, written here from the docstring formulas, not by calling the library) and every
ODE is linear (exact solution = scipy.linalg.expm) (theory.md §6.4). The quadratic used below has
p = 5, n = m = p + 1 (A square invertible, M of rank p), so H is positive definite with spectrum
evenly spaced in [0.1, 1] (λ_max(H) = 1), and y = A M θ* (minimum loss 0).
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from dipcert.networks import LinearNetwork, TwoLayerDIP
from dipcert.operators import Matrix
from dipcert.optim import (
    INNA,
    Adam,
    GradientDescent,
    GradientDifference,
    GradientFlow,
    HeavyBall,
    InertialFlow,
    MethodFailure,
    Nesterov,
    train,
)
from dipcert.optim.inertial import c1_stable_step, c2_stable_step
from dipcert.problems import Problem, gaussian_problem


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: a second thread only waits


# ---------------------------------------------------------------------------------------------
# The quadratic test problem and its exact solutions


class Quadratic:
    """L(θ) = ½‖A M θ − y_r‖² for a batch of runs r (own θ0 and y per run), H = (AM)ᵀ AM with
    eigenvalues evenly spaced in [lam_min, lam_max]."""

    def __init__(self, batch: int = 3, p: int = 5, seed: int = 0, lam: tuple[float, float] = (0.1, 1.0),
                 theta_scale=None) -> None:
        rng = np.random.default_rng(seed)
        n = p + 1
        A = rng.standard_normal((n, n)) + 3 * np.eye(n)  # invertible, moderately conditioned
        U = np.linalg.qr(rng.standard_normal((n, p)))[0]
        V = np.linalg.qr(rng.standard_normal((p, p)))[0]
        K = U @ np.diag(np.sqrt(np.linspace(lam[0], lam[1], p))) @ V.T  # the target A M
        self.A, self.M = A, np.linalg.solve(A, K)
        AM = self.A @ self.M
        self.H = AM.T @ AM
        self.lam_max = float(np.linalg.eigvalsh(self.H).max())
        self.theta0 = rng.standard_normal((batch, p))
        if theta_scale is not None:
            self.theta0 *= np.asarray(theta_scale, dtype=np.float64)[:, None]
        self.theta_star = rng.standard_normal((batch, p))
        self.y = self.theta_star @ AM.T  # y_r = AM θ*_r: the minimum loss is 0
        self.b = self.y @ AM  # row r: (AM)ᵀ y_r
        self.batch, self.p = batch, p

    def problem(self) -> Problem:
        return Problem(Matrix(torch.tensor(self.A)), torch.tensor(self.y))

    def network(self, cls=LinearNetwork, **kwargs) -> LinearNetwork:
        return cls(torch.tensor(self.M), theta0=torch.tensor(self.theta0), seeds=range(self.batch), **kwargs)

    def grad(self, theta: np.ndarray, r: int) -> np.ndarray:
        return self.H @ theta - self.b[r]

    def loss(self, theta: np.ndarray, r: int) -> float:
        return 0.5 * float(np.sum((self.A @ self.M @ theta - self.y[r]) ** 2))


def _affine(rows: list[list[np.ndarray]], const: list[np.ndarray]) -> np.ndarray:
    """The augmented matrix [[blocks, const], [0, 1]] of an affine map on a stacked state."""
    top = np.block([[*row, c[:, None]] for row, c in zip(rows, const)])
    bottom = np.zeros((1, top.shape[1]))
    bottom[0, -1] = 1.0
    return np.vstack([top, bottom])


def _value(hp, r: int) -> float:
    return float(hp[r]) if isinstance(hp, (list, tuple)) else float(hp)


def _arg(hp):
    return torch.tensor(hp, dtype=torch.float64) if isinstance(hp, (list, tuple)) else hp


def _recurrence(kind: str, q: Quadratic, r: int, hp: dict) -> tuple[np.ndarray, np.ndarray]:
    """(augmented matrix, initial augmented state) of method ``kind`` on run r of q; the first p
    entries of the state are the parameters the training loop holds."""
    H, b, th0, p = q.H, q.b[r], q.theta0[r], q.p
    I, Z, z = np.eye(p), np.zeros((p, p)), np.zeros(p)
    v = {name: _value(value, r) for name, value in hp.items()}
    if kind == "gd":  # θ' = θ − γ(Hθ − b)
        g = v["step"]
        return _affine([[I - g * H]], [g * b]), np.r_[th0, 1.0]
    if kind == "heavy-ball":  # θ_{k+1} = θ_k − γ∇L_k + μ(θ_k − θ_{k−1}), θ_{−1} = θ_0; state (θ_k, θ_{k−1})
        g, mu = v["step"], v["momentum"]
        return _affine([[(1 + mu) * I - g * H, -mu * I], [I, Z]], [g * b, z]), np.r_[th0, th0, 1.0]
    if kind == "nesterov":  # θ_{k+1} = p_k − γ∇L(p_k), p_{k+1} = θ_{k+1} + μ(θ_{k+1} − θ_k); state (p_k, θ_k)
        g, mu = v["step"], v["momentum"]
        G = I - g * H
        return _affine([[(1 + mu) * G, -mu * I], [G, Z]], [(1 + mu) * g * b, g * b]), np.r_[th0, th0, 1.0]
    if kind == "c1":
        # θ_{k+1} = θ_k + c(θ_k − θ_{k−1}) − cβh(∇L_k − ∇L_{k−1}) − c h² ∇L_k, c = 1/(1+αh), θ_{−1} = θ_0
        h, a, be = v["step"], v["alpha"], v["beta"]
        c = 1 / (1 + a * h)
        first = (1 + c) * I - c * (be * h + h * h) * H
        return _affine([[first, -c * I + c * be * h * H], [I, Z]], [c * h * h * b, z]), np.r_[th0, th0, 1.0]
    if kind == "c2":
        # φ = (α − 1/β)θ + ψ/β, θ' = θ − h(φ + β∇L), ψ' = ψ − hφ; ψ_0 = (1 − αβ)θ_0 [− β²∇L(θ_0)]
        h, a, be = v["step"], v["alpha"], v["beta"]
        k = a - 1 / be
        rows = [[(1 - h * k) * I - h * be * H, -(h / be) * I], [-h * k * I, (1 - h / be) * I]]
        psi0 = (1 - a * be) * th0
        if hp.get("zero_initial_velocity", True):
            psi0 = psi0 - be * be * q.grad(th0, r)
        return _affine(rows, [h * be * b, z]), np.r_[th0, psi0, 1.0]
    raise ValueError(kind)


def _make(kind: str, hp: dict):
    args = {name: _arg(value) for name, value in hp.items()}
    if kind == "gd":
        return GradientDescent(args["step"])
    if kind == "heavy-ball":
        return HeavyBall(args["step"], args["momentum"])
    if kind == "nesterov":
        return Nesterov(args["step"], args["momentum"])
    if kind == "c1":
        return GradientDifference(args["step"], args["alpha"], args["beta"])
    if kind == "c2":
        return INNA(args["step"], args["alpha"], args["beta"],
                    zero_initial_velocity=hp.get("zero_initial_velocity", True))
    raise ValueError(kind)


def _din_exact(q: Quadratic, r: int, alpha: float, beta: float, t: float) -> np.ndarray:
    """θ(t) of θ̈ + (αI + βH)θ̇ + Hθ − b = 0, θ(0) = θ_0, θ̇(0) = 0, by expm of the first-order
    system z = (θ, θ̇, 1)."""
    p = q.p
    I, Z, z = np.eye(p), np.zeros((p, p)), np.zeros(p)
    G = _affine([[Z, I], [-q.H, -alpha * I - beta * q.H]], [z, q.b[r]])
    G[-1, -1] = 0.0  # generator: the constant 1 does not move
    return (scipy.linalg.expm(G * t) @ np.r_[q.theta0[r], z, 1.0])[:p]


def _flow_exact(q: Quadratic, r: int, t: float) -> np.ndarray:
    """θ(t) = θ* + expm(−Ht)(θ_0 − θ*), the gradient flow."""
    return q.theta_star[r] + scipy.linalg.expm(-q.H * t) @ (q.theta0[r] - q.theta_star[r])


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _theta(result) -> np.ndarray:
    return result.params["theta"].detach().numpy()


# ---------------------------------------------------------------------------------------------
# 1. Discrete methods on a linear network: exact iterates by matrix powers

DISCRETE_CASES = {
    "gd": ("gd", dict(step=0.7)),
    "gd-per-run-step": ("gd", dict(step=[0.3, 0.7, 1.5])),
    "heavy-ball": ("heavy-ball", dict(step=0.4, momentum=0.8)),
    "heavy-ball-per-run": ("heavy-ball", dict(step=[0.2, 0.4, 0.6], momentum=[0.0, 0.5, 0.8])),
    "nesterov": ("nesterov", dict(step=0.4, momentum=0.8)),
    "c1-beta0": ("c1", dict(step=0.5, alpha=1.0, beta=0.0)),
    "c1-beta": ("c1", dict(step=0.5, alpha=1.0, beta=0.7)),
    "c1-per-run-step": ("c1", dict(step=[0.2, 0.5, 0.9], alpha=0.5, beta=0.3)),
    "c2": ("c2", dict(step=0.5, alpha=1.0, beta=0.7)),
    "c2-alpha-beta-above-1": ("c2", dict(step=0.3, alpha=2.0, beta=0.8)),
    "c2-inna-initial-velocity": ("c2", dict(step=0.5, alpha=1.0, beta=0.7, zero_initial_velocity=False)),
}


@pytest.mark.parametrize("case", list(DISCRETE_CASES))
def test_discrete_method_matches_matrix_power_on_linear_network(case):
    kind, hp = DISCRETE_CASES[case]
    q = Quadratic(batch=3, seed=1)
    K = 60
    result = train(q.problem(), q.network(), _make(kind, hp), max_iters=K, record_every=K)
    assert result.status == ["max_iterations"] * 3
    theta = _theta(result)
    for r in range(q.batch):
        T, z0 = _recurrence(kind, q, r, hp)
        exact = (np.linalg.matrix_power(T, K) @ z0)[: q.p]
        assert _rel(theta[r], exact) < 1e-10, (r, _rel(theta[r], exact))
        assert result.final_loss[r] == pytest.approx(q.loss(exact, r), rel=1e-9, abs=1e-15)
    # the recorded loss at τ = 0 is the initial loss of each run
    np.testing.assert_allclose(result.history.loss[0], [q.loss(q.theta0[r], r) for r in range(q.batch)], rtol=1e-12)


def test_inertial_schemes_report_time_as_sum_of_steps():
    q = Quadratic(batch=3, seed=1)
    steps = [0.2, 0.5, 0.9]
    per_run = torch.tensor(steps, dtype=torch.float64)
    for method in (GradientDifference(per_run, 0.5, 0.3), INNA(per_run, 1.0, 0.7)):
        result = train(q.problem(), q.network(), method, max_iters=40, record_every=10)
        np.testing.assert_allclose(result.history.time, np.outer(result.history.iteration, steps), rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# 2. The ODEs against scipy.linalg.expm

FLOW_CASES = {
    "gradient-flow": (None, None),
    "inertial-beta0": (1.0, 0.0),
    "inertial-beta": (1.0, 0.5),
    "inertial-alpha-beta-above-1": (3.0, 0.6),
}


@pytest.mark.parametrize("solver", ["RK45", "DOP853"])
@pytest.mark.parametrize("case", list(FLOW_CASES))
def test_flow_matches_expm(case, solver):
    alpha, beta = FLOW_CASES[case]
    q = Quadratic(batch=2, seed=2)
    tol = dict(solver=solver, rtol=1e-10, atol=1e-12)
    method = GradientFlow(**tol) if alpha is None else InertialFlow(alpha, beta, **tol)
    result = train(q.problem(), q.network(), method, max_iters=40, record_every=5)
    assert result.status == ["max_iterations"] * 2
    times = result.history.time
    assert np.all(np.diff(times, axis=0) > 0) and times[0, 0] == 0.0
    t = times[-1]
    assert t[0] == t[1] > 0.2  # one ODE system for the batch: a common time
    theta = _theta(result)
    for r in range(q.batch):
        exact = _flow_exact(q, r, t[r]) if alpha is None else _din_exact(q, r, alpha, beta, t[r])
        assert _rel(theta[r], exact) < 1e-7, _rel(theta[r], exact)
        assert np.linalg.norm(exact - q.theta0[r]) > 0.05 * np.linalg.norm(q.theta0[r])  # it moved


@pytest.mark.parametrize("solver", ["RK45", "RK23", "DOP853"])
def test_flow_intermediate_records_are_on_the_exact_trajectory(solver):
    """Intermediate records too sit on the exact trajectory at the reported time (looser rtol)."""
    q = Quadratic(batch=1, seed=3)
    method = InertialFlow(1.0, 0.5, solver=solver, rtol=1e-9, atol=1e-12)
    snaps = (3, 10, 20)
    result = train(q.problem(), q.network(), method, max_iters=20, snapshot_at=snaps)
    M = q.M
    for tau in snaps:
        t = result.history.time[tau, 0]
        x_exact = M @ _din_exact(q, 0, 1.0, 0.5, t)
        assert _rel(result.snapshots[tau][0].numpy(), x_exact) < 1e-6


# ---------------------------------------------------------------------------------------------
# 3. Order of accuracy of the discretizations


def _errors(q: Quadratic, make, exact, T: float, steps) -> np.ndarray:
    out = []
    for h in steps:
        K = round(T / h)
        assert abs(K * h - T) < 1e-12
        result = train(q.problem(), q.network(), make(h), max_iters=K, record_every=K)
        theta = _theta(result)
        out.append([np.linalg.norm(theta[r] - exact(r)) for r in range(q.batch)])
    return np.asarray(out)


ORDER_CASES = {
    "gd-vs-gradient-flow": (lambda h: GradientDescent(h), None),
    "c1-beta0": (lambda h: GradientDifference(h, 1.0, 0.0), (1.0, 0.0)),
    "c1-beta": (lambda h: GradientDifference(h, 1.0, 0.5), (1.0, 0.5)),
    "c2": (lambda h: INNA(h, 1.0, 0.5), (1.0, 0.5)),
    "c2-large-alpha": (lambda h: INNA(h, 3.0, 0.6), (3.0, 0.6)),
}


@pytest.mark.parametrize("case", list(ORDER_CASES))
def test_schemes_are_first_order(case):
    make, din = ORDER_CASES[case]
    q = Quadratic(batch=2, seed=4)
    T = 2.0
    if din is None:
        exact = lambda r: _flow_exact(q, r, T)
    else:
        exact = lambda r: _din_exact(q, r, din[0], din[1], T)
    err = _errors(q, make, exact, T, steps=(0.04, 0.02, 0.01, 0.005))
    assert np.all(err > 1e-6)  # far above rounding
    ratios = err[:-1] / err[1:]
    assert np.all((ratios > 1.9) & (ratios < 2.1)), ratios  # measured 2.002-2.024


# ---------------------------------------------------------------------------------------------
# 4. The z = W u reduction (theory.md §6.1)

REDUCTION_METHODS = {
    "gd": lambda: GradientDescent(0.1),
    "heavy-ball": lambda: HeavyBall(0.05, 0.9),
    "nesterov": lambda: Nesterov(0.05, 0.9),
    "c1-beta0": lambda: GradientDifference(0.3, 1.0, 0.0),
    "c1-beta": lambda: GradientDifference(0.3, 1.0, 0.5),
    "c1-adaptive": lambda: GradientDifference(0.3, 1.0, 0.5, adaptive=True),
    "c2": lambda: INNA(0.3, 1.0, 0.5),
    "c2-adaptive": lambda: INNA(0.3, 1.0, 0.5, adaptive=True),
    # With loose tolerances every proposed step of size max_step is accepted: both parametrizations
    # follow the same time grid t = 0.1 τ. With tight tolerances the two would take different
    # steps, since the solver's error norm is an RMS over the state (k entries of z or k·d of W).
    "gradient-flow": lambda: GradientFlow(rtol=1.0, atol=1.0, first_step=0.1, max_step=0.1),
    "gradient-flow-dop853": lambda: GradientFlow(solver="DOP853", rtol=1.0, atol=1.0, first_step=0.1, max_step=0.1),
    "inertial-flow-beta0": lambda: InertialFlow(1.0, 0.0, rtol=1.0, atol=1.0, first_step=0.1, max_step=0.1),
    "inertial-flow": lambda: InertialFlow(1.0, 0.5, rtol=1.0, atol=1.0, first_step=0.1, max_step=0.1),
}


# C1 with the adaptive rule is sensitive to rounding: its steps swing between ~3 and ~10 and a
# 1e-16 difference between the two paths grows ~10x every 20 iterations (6e-11 at 40, 1e-7 at 120,
# O(1) at 200 on this problem), so it is compared over 40 iterations. The flows cost 6 (RK45) or 12
# (DOP853) gradients per step.
REDUCTION_ITERS = {"c1-adaptive": 40, "gradient-flow": 60, "gradient-flow-dop853": 30,
                   "inertial-flow-beta0": 60, "inertial-flow": 60}


def _two_layer_pair(seeds=(0, 1), n=5, m=3, k=50, d=8):
    problem = gaussian_problem(n, m, list(seeds))
    nets = [TwoLayerDIP(n, k, d=d, train="W", seeds=list(seeds), parametrization=kind) for kind in ("reduced", "full")]
    return problem, nets


@pytest.mark.parametrize("name", list(REDUCTION_METHODS))
def test_reduction_is_exact_for_commuting_methods(name):
    make = REDUCTION_METHODS[name]
    if name != "gd":  # (see test_gradient_descent_declares_commutes_with_reduction)
        assert getattr(type(make()), "commutes_with_reduction", None) is True
    problem, nets = _two_layer_pair()
    runs = [train(problem, net, make(), max_iters=REDUCTION_ITERS.get(name, 200)) for net in nets]
    loss0 = runs[0].history.loss[0]
    np.testing.assert_allclose(runs[0].history.loss, runs[1].history.loss, rtol=1e-9, atol=1e-12 * loss0.min())
    np.testing.assert_allclose(runs[0].history.param_dist, runs[1].history.param_dist, rtol=1e-9, atol=1e-12)
    if runs[0].history.time is not None:
        np.testing.assert_allclose(runs[0].history.time, runs[1].history.time, rtol=1e-9)
    W_reduced, _ = nets[0].weights(runs[0].params)
    W_full, _ = nets[1].weights(runs[1].params)
    assert (W_reduced - W_full).abs().max() < 1e-9
    assert np.all(runs[0].history.loss[-1] < 0.5 * loss0)  # it trained


def test_gradient_descent_declares_commutes_with_reduction():
    assert getattr(GradientDescent, "commutes_with_reduction", None) is True


def test_adam_does_not_commute_with_reduction():
    assert Adam.commutes_with_reduction is False
    problem, nets = _two_layer_pair()
    runs = [train(problem, net, Adam(1e-2), max_iters=50) for net in nets]
    gap = np.abs(runs[0].history.loss[-1] - runs[1].history.loss[-1]) / runs[1].history.loss[-1]
    assert np.all(gap > 1e-3), gap
    W_reduced, _ = nets[0].weights(runs[0].params)
    W_full, _ = nets[1].weights(runs[1].params)
    assert (W_reduced - W_full).abs().max() > 1e-2


def test_adam_on_full_W_matches_torch_optim_adam():
    problem = gaussian_problem(5, 3, [7])
    net = TwoLayerDIP(5, 50, d=8, train="W", seeds=[7], parametrization="full")
    result = train(problem, net, Adam(1e-2), max_iters=50)
    W = net.W0.clone().requires_grad_(True)
    opt = torch.optim.Adam([W], lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    losses = []
    for step in range(51):
        loss = 0.5 * ((problem.operator.forward_flat(net.function({"W": W})) - problem.y) ** 2).sum()
        losses.append(loss.item())
        if step < 50:
            opt.zero_grad()
            loss.backward()
            opt.step()
    np.testing.assert_allclose(result.history.loss[:, 0], losses, rtol=1e-12)
    assert (result.params["W"] - W.detach()).abs().max() < 1e-12 * W.detach().abs().max()
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------------------------------------
# 5. Divergence and failure

DIVERGING = {
    "gd": lambda: GradientDescent(5.0),
    "heavy-ball": lambda: HeavyBall(5.0, 0.9),
    "nesterov": lambda: Nesterov(5.0, 0.9),
    "adam": lambda: Adam(1e5),
    "c1-beta0": lambda: GradientDifference(5.0, 1.0, 0.0),
    "c1-beta": lambda: GradientDifference(5.0, 1.0, 0.5),
    "c2": lambda: INNA(5.0, 1.0, 0.5),
}


@pytest.mark.parametrize("name", list(DIVERGING))
def test_too_large_step_diverges_and_keeps_history(name):
    q = Quadratic(batch=2, seed=5)
    result = train(q.problem(), q.network(), DIVERGING[name](), max_iters=500, divergence_factor=1e6)
    assert result.status == ["diverged", "diverged"]
    for r in range(2):
        stop = result.iterations[r]
        assert 0 < stop < 500
        loss = result.history.columns(r)["loss"]
        assert len(loss) == stop + 1
        assert np.all(np.isfinite(loss[:-1])) and np.all(loss[:-1] <= 1e6 * loss[0])
        assert not (loss[-1] <= 1e6 * loss[0])  # NaN, inf or above the limit
        assert result.final_loss[r] == loss[-1] or not np.isfinite(loss[-1])


class _NaNGradientAfter(LinearNetwork):
    """A linear network whose gradients become NaN after ``good`` pullbacks."""

    def __init__(self, *args, good: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.good = good

    def forward(self, params):
        def pullback(w):
            self.good -= 1
            g = w @ self.M
            return {"theta": g if self.good >= 0 else torch.full_like(g, float("nan"))}

        return self.function(params), pullback


STABLE_METHODS = {
    "gd": lambda: GradientDescent(0.9),
    "heavy-ball": lambda: HeavyBall(0.5, 0.5),
    "nesterov": lambda: Nesterov(0.5, 0.5),
    "adam": lambda: Adam(0.05),
    "c1-beta0": lambda: GradientDifference(0.8, 1.0, 0.0),
    "c1-beta": lambda: GradientDifference(0.8, 1.0, 0.5),
    "c1-adaptive": lambda: GradientDifference(torch.tensor([0.8, 0.5, 0.3], dtype=torch.float64), 1.0, 0.5, adaptive=True),
    "c2": lambda: INNA(0.8, 1.0, 0.5),
    "c2-adaptive": lambda: INNA(torch.tensor([0.8, 0.5, 0.3], dtype=torch.float64), 1.0, 0.5, adaptive=True),
}
LOOSE = dict(rtol=1e-6, atol=1e-10)  # enough for these tests, and fewer steps than the defaults
FLOW_METHODS = {
    "gradient-flow": lambda: GradientFlow(**LOOSE),
    "gradient-flow-rk23": lambda: GradientFlow(solver="RK23", **LOOSE),
    "inertial-flow-beta0": lambda: InertialFlow(1.0, 0.0, solver="DOP853", **LOOSE),
    "inertial-flow": lambda: InertialFlow(1.0, 0.5, **LOOSE),
}
ALL_METHODS = {**STABLE_METHODS, **FLOW_METHODS}


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_nan_gradient_stops_the_runs(name):
    """A NaN gradient makes a discrete method's loss NaN (diverged); an ODE solver rejects every
    step until its step size underflows (failed, θ kept finite)."""
    q = Quadratic(batch=3, seed=6)
    result = train(q.problem(), q.network(_NaNGradientAfter, good=20), ALL_METHODS[name](), max_iters=500)
    expected = "failed" if name in FLOW_METHODS else "diverged"
    assert result.status == [expected] * 3
    for r in range(3):
        loss = result.history.columns(r)["loss"]
        assert len(loss) == result.iterations[r] + 1 and result.iterations[r] > 0
        assert np.all(np.isfinite(loss[:-1]))
    if name in FLOW_METHODS:
        assert np.all(np.isfinite(_theta(result))) and np.all(np.isfinite(result.final_loss))
        assert "failed" in result.config["failure"]


class _FailingGD:
    """Gradient descent that raises MethodFailure at its ``fail_at``-th update."""

    name = "failing-gd"

    def __init__(self, step: float, fail_at: int) -> None:
        self.step, self.fail_at, self.calls = step, fail_at, 0

    def update(self, params, grads, active):
        self.calls += 1
        if self.calls == self.fail_at:
            raise MethodFailure("stub gave up")
        params["theta"].add_(grads["theta"] * torch.where(active, -self.step, 0.0)[:, None])

    def select(self, indices):
        pass

    def describe(self):
        return {"name": self.name}


def _failing_run(record_every: int):
    q = Quadratic(batch=3, seed=7)
    q.y[0] = q.A @ q.M @ q.theta0[0]  # run 0 starts at a minimizer: converged at τ = 0
    q.b = q.y @ (q.A @ q.M)
    result = train(q.problem(), q.network(), _FailingGD(0.5, fail_at=6), max_iters=100,
                   record_every=record_every, loss_tol=1e-20)
    exact = {}
    for r in (1, 2):  # five GD steps were made, the sixth update raised and changed nothing
        exact[r] = q.theta0[r]
        for _ in range(5):
            exact[r] = exact[r] - 0.5 * q.grad(exact[r], r)
    return q, result, exact


def test_method_failure_marks_running_runs_failed_and_keeps_history():
    q, result, exact = _failing_run(record_every=1)
    assert result.status == ["converged", "failed", "failed"]
    assert result.iterations.tolist() == [0, 5, 5]
    assert result.config["failure"] == "stub gave up"
    h = result.history
    assert h.iteration.tolist() == [0, 1, 2, 3, 4, 5]
    theta = _theta(result)
    np.testing.assert_array_equal(theta[0], q.theta0[0])
    for r in (1, 2):
        assert _rel(theta[r], exact[r]) < 1e-12
        assert len(h.columns(r)["loss"]) == 6
        assert h.loss[-1, r] == pytest.approx(q.loss(exact[r], r), rel=1e-10)
        assert result.final_loss[r] == h.loss[-1, r]
        assert h.param_dist[-1, r] == pytest.approx(np.linalg.norm(exact[r] - q.theta0[r]), rel=1e-10)


def test_method_failure_records_the_current_loss_between_records():
    q, result, exact = _failing_run(record_every=4)
    assert result.status == ["converged", "failed", "failed"]
    assert result.history.iteration.tolist() == [0, 4, 5]  # the failing iteration is recorded
    theta = _theta(result)
    for r in (1, 2):
        assert _rel(theta[r], exact[r]) < 1e-12  # (this holds)
        assert result.history.param_dist[-1, r] == pytest.approx(np.linalg.norm(exact[r] - q.theta0[r]), rel=1e-10)
        assert result.history.loss[-1, r] == pytest.approx(q.loss(exact[r], r), rel=1e-10)  # (this does not)


# ---------------------------------------------------------------------------------------------
# 6. Per-run independence and compaction

LOSS_TOL = {"adam": 1e-3}  # Adam with a constant rate hovers around the minimizer


@pytest.mark.parametrize("name", list(STABLE_METHODS))
def test_compaction_gives_the_same_runs(name):
    make, tol = STABLE_METHODS[name], LOSS_TOL.get(name, 1e-12)
    q = Quadratic(batch=3, seed=8, theta_scale=[0.01, 1.0, 100.0])
    runs = [train(q.problem(), q.network(), make(), max_iters=400, loss_tol=tol, compact_below=c)
            for c in (0.0, 0.9)]
    assert runs[0].status == runs[1].status
    np.testing.assert_array_equal(runs[0].iterations, runs[1].iterations)
    assert len(set(runs[0].iterations.tolist())) >= 2 and runs[0].status[0] == "converged"
    assert runs[0].iterations[0] < runs[0].iterations.max()  # run 0 stops first: compaction happens
    np.testing.assert_allclose(_theta(runs[1]), _theta(runs[0]), rtol=1e-12, atol=1e-14)
    _assert_losses_close(runs[1].history.loss, runs[0].history.loss)
    # the same run alone: batching does not change it either
    for r in range(3):
        alone = Quadratic(batch=3, seed=8, theta_scale=[0.01, 1.0, 100.0])
        single = train(Problem(Matrix(torch.tensor(alone.A)), torch.tensor(alone.y[r : r + 1])),
                       LinearNetwork(torch.tensor(alone.M), theta0=torch.tensor(alone.theta0[r : r + 1])),
                       _per_run(make(), r), max_iters=400, loss_tol=tol)
        assert single.iterations[0] == runs[0].iterations[r]
        np.testing.assert_allclose(_theta(single)[0], _theta(runs[0])[r], rtol=1e-12, atol=1e-14)


def _assert_losses_close(a: np.ndarray, b: np.ndarray) -> None:
    """Loss histories (T, batch) equal up to the rounding of the residual r: L = ½‖r‖² with r
    rounded at ~eps·‖y‖ ~ eps·√L_0 gives |δL| ≲ eps·√(L·L_0) (batches of different sizes round
    the products differently)."""
    floor = 1e-13 * np.sqrt(np.abs(b) * b[0])
    assert np.all(np.abs(a - b) <= 1e-12 * np.abs(b) + floor), np.max(np.abs(a - b) / (np.abs(b) + floor))


def _per_run(method, r):
    """The method restricted to run r (its per-run hyperparameters)."""
    method.select(torch.tensor([r]))
    return method


@pytest.mark.parametrize("compact_below", [0.9, 0.0])
@pytest.mark.parametrize("name", ["gradient-flow", "inertial-flow-beta0", "inertial-flow"])
def test_flow_runs_stop_on_their_own(name, compact_below):
    """The batch shares the adaptive step, so compare each run with the exact solution at its own
    stopping time (not bit for bit with the other compaction setting)."""
    alpha, beta = {"gradient-flow": (None, None), "inertial-flow-beta0": (1.0, 0.0), "inertial-flow": (1.0, 0.5)}[name]
    tol = dict(rtol=1e-10, atol=1e-13)
    q = Quadratic(batch=3, seed=8, theta_scale=[0.01, 1.0, 100.0])
    method = GradientFlow(**tol) if alpha is None else InertialFlow(alpha, beta, **tol)
    result = train(q.problem(), q.network(), method, max_iters=2000, loss_tol=1e-6, compact_below=compact_below)
    assert result.status == ["converged"] * 3
    assert len(set(result.iterations.tolist())) == 3
    theta = _theta(result)
    for r in range(3):
        cols = result.history.columns(r)
        t = cols["time"][-1]
        exact = _flow_exact(q, r, t) if alpha is None else _din_exact(q, r, alpha, beta, t)
        assert _rel(theta[r], exact) < 1e-6, (r, _rel(theta[r], exact))
        assert result.final_loss[r] == cols["loss"][-1]  # frozen from the stop on


@pytest.mark.parametrize("name", [*STABLE_METHODS, *FLOW_METHODS])
def test_stopped_runs_are_frozen_without_compaction(name):
    """A stopped run's parameters stay as they were when it stopped (later history rows repeat it)."""
    q = Quadratic(batch=3, seed=8, theta_scale=[0.01, 1.0, 100.0])
    result = train(q.problem(), q.network(), ALL_METHODS[name](), max_iters=400 if name in STABLE_METHODS else 4000,
                   loss_tol=LOSS_TOL.get(name, 1e-12 if name in STABLE_METHODS else 1e-6), compact_below=0.0)
    assert result.status[0] == "converged" and result.iterations[0] < result.iterations.max()
    for r in range(3):
        cols = result.history.columns(r)
        later = result.history.loss[result.history.iteration > result.iterations[r], r]
        assert np.all(later == cols["loss"][-1])
        assert result.final_loss[r] == cols["loss"][-1]


# ---------------------------------------------------------------------------------------------
# 7. Adaptive steps


@pytest.mark.parametrize("cls", [GradientDifference, INNA])
def test_adaptive_step_converges_faster_on_the_paper_problem(cls):
    seeds = [0, 1]
    problem = gaussian_problem(5, 2, seeds)
    iterations = {}
    for adaptive in (False, True):
        result = train(problem, TwoLayerDIP(5, 1000, seeds=seeds), cls(0.5, 1.0, 0.5, adaptive=adaptive),
                       max_iters=5000, loss_tol=1e-10, record_every=50)
        assert result.status == ["converged"] * 2
        assert np.all(result.final_loss <= 1e-10)
        iterations[adaptive] = result.iterations
    assert np.all(iterations[True] < iterations[False]), iterations


class _Spy:
    """Wraps a method and records θ_k, ∇L_k before each update and the time after it."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.thetas, self.grads, self.times = [], [], []

    @property
    def time(self):
        return self.inner.time

    def update(self, params, grads, active):
        self.thetas.append(params["theta"].clone().numpy())
        self.grads.append(grads["theta"].clone().numpy())
        self.inner.update(params, grads, active)
        self.times.append(self.inner.time.clone().numpy())

    def select(self, indices):
        raise AssertionError("no compaction expected")

    def describe(self):
        return self.inner.describe()


@pytest.mark.parametrize("cls", [GradientDifference, INNA])
def test_adaptive_rule_on_a_quadratic(cls):
    """Replays the documented rule h_k = min(growth·h_{k−1}, safety·h_stab(L̂_k)) and update formulas
    on the recorded iterates. On a quadratic λ_min(H) ≤ L̂_k ≤ λ_max(H): the secant underestimates
    λ_max, so h_k may exceed safety·h_stab(λ_max) (here up to ~5x for C1, ~2.6x for C2), but never
    safety·h_stab(λ_min). The loss is not monotone (inertia), so only convergence is asserted."""
    q = Quadratic(batch=2, seed=9, lam=(0.01, 4.0))
    alpha, beta, safety, growth = 1.0, 0.5, 0.5, 1.2
    spy = _Spy(cls(0.05, alpha, beta, adaptive=True, safety=safety, growth=growth))
    K = 150
    result = train(q.problem(), q.network(), spy, max_iters=K)
    assert result.status == ["max_iterations"] * 2
    thetas, grads = np.array(spy.thetas), np.array(spy.grads)  # (K, batch, p)
    thetas = np.concatenate([thetas, _theta(result)[None]])
    h = np.diff(np.concatenate([np.zeros((1, 2)), np.array(spy.times)]), axis=0)  # (K, batch)
    stab = c1_stable_step if cls is GradientDifference else c2_stable_step
    for r in range(2):
        assert h[0, r] == pytest.approx(0.05, rel=1e-14)
        start = 1 if cls is GradientDifference else 2
        if cls is INNA:  # θ̇(0) = 0 makes θ_1 = θ_0: the first secant is rounding noise (kept or not)
            assert np.linalg.norm(thetas[1, r] - thetas[0, r]) < 1e-14 * np.linalg.norm(thetas[0, r])
            assert 0 < h[1, r] <= growth * 0.05 * (1 + 1e-12)
        lam_min = float(np.linalg.eigvalsh(q.H).min())
        for k in range(start, K):
            secant = np.linalg.norm(grads[k, r] - grads[k - 1, r]) / np.linalg.norm(thetas[k, r] - thetas[k - 1, r])
            assert lam_min * (1 - 1e-9) <= secant <= q.lam_max * (1 + 1e-9)
            limit = safety * stab(torch.tensor([secant], dtype=torch.float64), alpha, beta).item()
            assert h[k, r] == pytest.approx(min(growth * h[k - 1, r], limit), rel=1e-8), k
        bound = safety * stab(torch.tensor([lam_min], dtype=torch.float64), alpha, beta).item()
        assert np.all(h[:, r] <= bound * (1 + 1e-9))
        # the update formulas with variable steps (docstrings), replayed from the recorded gradients
        if cls is GradientDifference:
            v = np.zeros(q.p)
            for k in range(K):
                ratio = h[k, r] / h[k - 1, r] if k else 1.0
                diff = grads[k, r] - grads[k - 1, r] if k else 0.0
                v = (v - beta * ratio * diff - h[k, r] * grads[k, r]) / (1 + alpha * h[k, r])
                np.testing.assert_allclose(thetas[k, r] + h[k, r] * v, thetas[k + 1, r], rtol=1e-11, atol=1e-13)
        else:
            psi = (1 - alpha * beta) * thetas[0, r] - beta**2 * grads[0, r]
            for k in range(K):
                phi = (alpha - 1 / beta) * thetas[k, r] + psi / beta
                np.testing.assert_allclose(thetas[k, r] - h[k, r] * (phi + beta * grads[k, r]), thetas[k + 1, r],
                                           rtol=1e-11, atol=1e-13)
                psi = psi - h[k, r] * phi
    # the step did adapt: it grew well beyond the initial 0.05
    assert np.all(h[-1] > 5 * 0.05)
    assert np.all(result.final_loss < 1e-5 * result.history.loss[0])  # (measured 2e-7 .. 9e-7)


def _c1_matrix(lam, h, alpha, beta):
    c = 1 / (1 + alpha * h)
    return np.array([[1 + c - c * (beta * h + h * h) * lam, -c + c * beta * h * lam], [1.0, 0.0]])


def _c2_matrix(lam, h, alpha, beta):
    k = alpha - 1 / beta
    return np.array([[1 - h * k - h * beta * lam, -h / beta], [-h * k, 1 - h / beta]])


def _max_radius(matrix, curvatures, h, alpha, beta):
    return max(np.abs(np.linalg.eigvals(matrix(lam, h, alpha, beta))).max() for lam in curvatures)


@pytest.mark.parametrize("L", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("alpha, beta", [(0.5, 0.0), (1.0, 0.5), (2.0, 0.1), (0.1, 2.0)])
def test_c1_stable_step_is_the_spectral_radius_threshold(L, alpha, beta):
    h = c1_stable_step(torch.tensor([L], dtype=torch.float64), alpha, beta).item()
    curvatures = L * np.logspace(-6, 0, 400)
    assert _max_radius(_c1_matrix, curvatures, 0.999 * h, alpha, beta) < 1
    assert _max_radius(_c1_matrix, curvatures, 1.001 * h, alpha, beta) > 1


@pytest.mark.parametrize("L", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.5), (2.0, 0.1), (0.1, 2.0), (3.0, 1.0)])
def test_c2_stable_step_is_the_spectral_radius_threshold(L, alpha, beta):
    h = c2_stable_step(torch.tensor([L], dtype=torch.float64), alpha, beta).item()
    curvatures = L * np.logspace(-8, 0, 2000)
    assert _max_radius(_c2_matrix, curvatures, 0.999 * h, alpha, beta) <= 1 + 1e-12
    assert _max_radius(_c2_matrix, curvatures, 1.001 * h, alpha, beta) > 1


# ---------------------------------------------------------------------------------------------
# 8. Initial velocity


def test_inertial_flow_starts_at_rest():
    """θ̇(0) = 0 and θ̈(0) = −∇L(θ_0): θ(t) − θ_0 = −(t²/2)∇L(θ_0) + O(t³)."""
    q = Quadratic(batch=2, seed=10)
    g0 = np.array([q.grad(q.theta0[r], r) for r in range(2)])
    for steps in (1, 10, 100):
        method = InertialFlow(1.0, 0.5, first_step=1e-6, max_step=1e-6)
        result = train(q.problem(), q.network(), method, max_iters=steps, record_every=steps)
        t = result.history.time[-1]
        np.testing.assert_allclose(t, steps * 1e-6, rtol=1e-9)
        moved = _theta(result) - q.theta0
        for r in range(2):
            # O(t²), not the O(t) of INNA's default start θ̇(0) = −β∇L(θ_0)
            assert np.linalg.norm(moved[r]) / t[r] < 1e-3 * 0.5 * np.linalg.norm(g0[r])
            if steps > 1:  # (one step of 1e-6 moves θ by 1e-12: too close to rounding)
                assert _rel(moved[r], -0.5 * t[r] ** 2 * g0[r]) < 1e-2


def test_inna_zero_initial_velocity_differs_by_the_psi0_term():
    q = Quadratic(batch=2, seed=11)
    alpha, beta, h, K = 1.0, 0.5, 0.3, 25
    results = {flag: train(q.problem(), q.network(), INNA(h, alpha, beta, zero_initial_velocity=flag), max_iters=K)
               for flag in (True, False)}
    hp = dict(step=h, alpha=alpha, beta=beta)
    for r in range(2):
        T, _ = _recurrence("c2", q, r, hp)
        # the two runs differ by ψ_0 − ψ_0' = −β²∇L(θ_0), propagated by the linear part only
        delta = np.r_[np.zeros(q.p), -beta**2 * q.grad(q.theta0[r], r), 0.0]
        expected = (np.linalg.matrix_power(T, K) @ delta)[: q.p]
        got = _theta(results[True])[r] - _theta(results[False])[r]
        assert np.linalg.norm(got - expected) < 1e-10 * np.linalg.norm(expected)
    # one step: θ_1 = θ_0 (θ̇(0) = 0) with the zero initial velocity, θ_1 = θ_0 − hβ∇L(θ_0) without
    one = {flag: train(q.problem(), q.network(), INNA(h, alpha, beta, zero_initial_velocity=flag), max_iters=1)
           for flag in (True, False)}
    for r in range(2):
        g0 = q.grad(q.theta0[r], r)
        np.testing.assert_allclose(_theta(one[True])[r], q.theta0[r], rtol=0, atol=1e-14)
        np.testing.assert_allclose(_theta(one[False])[r], q.theta0[r] - h * beta * g0, rtol=1e-13, atol=1e-14)


def test_inna_first_step_on_two_layer_network():
    """The same on a nonlinear network: θ_1 = θ_0 exactly up to rounding with θ̇(0) = 0."""
    problem = gaussian_problem(5, 3, [0, 1])
    net = TwoLayerDIP(5, 40, d=4, seeds=[0, 1])
    z0 = net.initial_params()["z"]
    _, pullback = net.forward(net.initial_params())
    x = net.function(net.initial_params())
    g0 = pullback(problem.operator.adjoint_flat(problem.operator.forward_flat(x) - problem.y))["z"]
    rest = train(problem, net, INNA(0.4, 1.0, 0.5), max_iters=1)
    kick = train(problem, net, INNA(0.4, 1.0, 0.5, zero_initial_velocity=False), max_iters=1)
    torch.testing.assert_close(rest.params["z"], z0, rtol=0, atol=1e-14)
    torch.testing.assert_close(kick.params["z"], z0 - 0.4 * 0.5 * g0, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", list(FLOW_METHODS))
def test_flow_releases_its_solver_when_training_ends(name):
    """SciPy's solver sits in a reference cycle; the method must free its state copies itself, not
    leave them to the garbage collector (an image run keeps gigabytes in them)."""
    import gc
    import weakref

    method, refs = FLOW_METHODS[name](), []

    def keep_a_weak_reference(tau, loss):
        if method._solver is not None and not refs:
            refs.append(weakref.ref(method._solver))

    gc.disable()
    try:
        train(Quadratic(batch=2, seed=3).problem(), Quadratic(batch=2, seed=3).network(), method, max_iters=5,
              callback=keep_a_weak_reference)
        assert refs and refs[0]() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("name", ["heavy-ball", "nesterov"])
def test_momentum_auto_is_the_textbook_tuning_and_reaches_its_rate_on_a_quadratic(name):
    """``momentum = auto`` (and ``step = auto``) give Polyak's and Nesterov's tunings for the spectrum
    [μ, L] of the Hessian (dense eigenvalues here), and on the quadratic they reach the textbook
    guarantees: heavy ball's loss contracts by ((√κ−1)/(√κ+1))² per step asymptotically; Nesterov's
    obeys L(θ_k) ≤ (1 − √(μ/L))^k (L(θ_0) + μ/2 ‖θ_0 − θ*‖²) at every k."""
    from dipcert.methods import build_method

    rng = np.random.default_rng(3)
    n = 6  # A square with AᵀA's eigenvalues evenly spaced in [0.01, 1] (κ = 100), g(θ) = θ: J = I
    U, V = (np.linalg.qr(rng.standard_normal((n, n)))[0] for _ in range(2))
    A = U @ np.diag(np.sqrt(np.linspace(0.01, 1.0, n))) @ V.T
    theta0, theta_star = rng.standard_normal(n), rng.standard_normal(n)
    problem = Problem(Matrix(torch.tensor(A)), torch.tensor(A @ theta_star)[None])
    net = LinearNetwork(torch.eye(n, dtype=torch.float64), theta0=torch.tensor(theta0)[None])
    eigenvalues = np.linalg.eigvalsh(A.T @ A)
    mu, L = float(eigenvalues.min()), float(eigenvalues.max())
    root = np.sqrt(mu / L)
    expected = ((4 / (np.sqrt(L) + np.sqrt(mu)) ** 2, ((1 - root) / (1 + root)) ** 2) if name == "heavy-ball"
                else (1 / L, (1 - root) / (1 + root)))
    method, chosen = build_method({"method": name, "step": "auto", "momentum": "auto"}, problem, net)
    assert chosen["step"]["value"] == pytest.approx(expected[0], rel=1e-8)
    assert chosen["momentum"]["value"] == pytest.approx(expected[1], rel=1e-8)
    assert chosen["momentum"]["rule"].startswith("auto: Polyak's" if name == "heavy-ball" else "auto: Nesterov's")
    _, default = build_method({"method": name, "step": "auto", "momentum": 0.9}, problem, net)
    assert default["momentum"] == {"value": 0.9, "rule": "default"} and default["step"]["rule"].startswith("auto: 1/||A J")
    T = 100
    loss = train(problem, net, method, max_iters=T, loss_tol=0.0, record_every=1).history.loss[:, 0]
    assert len(loss) == T + 1
    if name == "heavy-ball":
        rho = (np.sqrt(L / mu) - 1) / (np.sqrt(L / mu) + 1)
        measured = (loss[T] / loss[T // 2]) ** (1 / (T - T // 2))
        assert measured <= 1.05 * rho**2  # gradient descent at 1/L: (1 - 1/κ)² = 0.98
    else:
        gap = theta0 - theta_star
        bound = (1 - root) ** np.arange(T + 1) * (loss[0] + mu / 2 * gap @ gap)
        assert np.all(loss <= bound * (1 + 1e-9))


def test_gauss_newton_mu_is_the_smallest_non_zero_eigenvalue_when_the_jacobian_is_rank_deficient():
    """With p < n parameters (an under-parametrized generator), A J_g(θ_0) has rank p < m: μ is
    the smallest non-zero eigenvalue of the dense A M Mᵀ Aᵀ, not its zero, so α = 2√μ keeps its
    damping; L is the largest."""
    from dipcert.steps import gauss_newton_extremes

    q = Quadratic(batch=2)  # n = p + 1 = m: A M has rank p
    eigenvalues = np.linalg.eigvalsh(q.A @ q.M @ q.M.T @ q.A.T)
    assert eigenvalues[0] < 1e-12 * eigenvalues[-1]  # the zero
    mu, L = gauss_newton_extremes(q.problem(), q.network())
    np.testing.assert_allclose(mu.numpy(), eigenvalues[1], rtol=1e-9)
    np.testing.assert_allclose(L.numpy(), eigenvalues[-1], rtol=1e-9)
