"""Continuous-time training, integrated by SciPy's adaptive Runge–Kutta solvers.

- :class:`GradientFlow`: θ̇ = −∇L(θ), the dynamics of the JMIV paper (theory.md §3.1);
- :class:`InertialFlow`: the DIN system of the companion paper (theory.md §4.1),
  θ̈ + α θ̇ + β (d/dt)∇L(θ) + ∇L(θ) = 0 with θ̇(0) = 0, integrated through its first-order form
  (β > 0; no Hessian is ever formed)

      θ̇ = −[(α − 1/β) θ + ψ/β] − β ∇L(θ),    ψ̇ = −[(α − 1/β) θ + ψ/β],
      ψ(0) = (1 − αβ) θ_0 − β² ∇L(θ_0),

  and, for β = 0, as θ̇ = v, v̇ = −α v − ∇L(θ), v(0) = 0.

One loop iteration is one accepted solver step; ``time`` is t. All runs of a batch form one ODE
system sharing the solver's adaptive step (runs that stopped have a zero derivative), so a run's
trajectory agrees with its solo trajectory to the solver tolerance, not bit for bit. SciPy's error
norm is an RMS over the whole state, which would let one run's error reach √B times the tolerance
in a batch of B runs: the solver therefore runs with rtol/√B and atol/√B, B the running runs when
it (re)starts, so that each run's RMS error stays within (rtol, atol). The state is
kept in float64 on the CPU (SciPy), whatever the network's dtype and device: on CUDA every
right-hand side costs a copy to and from the device.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.integrate import DOP853, RK23, RK45
from torch import Tensor

from ..networks import Params
from .loop import Gradients, MethodFailure, Oracle
from .state import check_nonnegative, dense

SOLVERS = {"RK45": RK45, "RK23": RK23, "DOP853": DOP853}


class _Layout:
    """Packs a dict of batched parameters into one float64 array of shape (batch, size) and back."""

    def __init__(self, params: Params) -> None:
        self.names = list(params)
        self.shapes = {name: tuple(p.shape[1:]) for name, p in params.items()}
        self.sizes = {name: int(np.prod(self.shapes[name], dtype=np.int64)) for name in self.names}
        like = next(iter(params.values()))
        self.dtype, self.device = like.dtype, like.device
        self.size = sum(self.sizes.values())

    def pack(self, tree: dict[str, Tensor]) -> np.ndarray:
        blocks = [dense(tree[name]).detach() for name in self.names]
        return np.concatenate([b.reshape(len(b), -1).to("cpu", torch.float64).numpy() for b in blocks], axis=1)

    def unpack(self, flat: np.ndarray) -> Params:
        out, start = {}, 0
        values = torch.from_numpy(np.ascontiguousarray(flat))
        for name in self.names:
            block = values[:, start : start + self.sizes[name]]
            out[name] = block.reshape(len(flat), *self.shapes[name]).to(device=self.device, dtype=self.dtype)
            start += self.sizes[name]
        return out


class _Flow:
    """An ODE method: each update is one accepted step of a SciPy ``OdeSolver``."""

    name = ""
    uses_gradient = False
    commutes_with_reduction = True

    def __init__(self, *, solver: str = "RK45", rtol: float = 1e-8, atol: float = 1e-12,
                 max_step: float = np.inf, first_step: float | None = None) -> None:
        if solver not in SOLVERS:
            raise ValueError(f"unknown ODE solver {solver!r}; allowed: {', '.join(SOLVERS)}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be > 0, got {rtol!r}, {atol!r}")
        if not max_step > 0:
            raise ValueError(f"max_step must be > 0, got {max_step!r}")
        self.solver_name, self.rtol, self.atol, self.max_step = solver, float(rtol), float(atol), float(max_step)
        self.first_step = first_step
        self.time: Tensor | None = None
        self._oracle: Oracle | None = None
        self._solver = None
        self._layout: _Layout | None = None
        self._active: np.ndarray | None = None

    def bind(self, oracle: Oracle | None) -> None:
        """Start a new integration with ``oracle`` (``None``: release the solver and its stages,
        several copies of the state, when training ends)."""
        self._drop_solver()
        self._oracle, self._layout, self._active = oracle, None, None

    def _drop_solver(self) -> None:
        """Free the solver's arrays now. A SciPy solver is in a reference cycle (its wrapped ``fun``
        refers back to it), so it would otherwise hold several copies of the state until the next
        garbage collection."""
        if self._solver is not None:
            vars(self._solver).clear()
        self._solver = None

    # -- the ODE right-hand side, on the (batch, size) state: θ, or θ and ψ (or v) side by side
    def _gradient(self, theta: np.ndarray) -> np.ndarray:
        return self._layout.pack(self._oracle(self._layout.unpack(theta)))

    def _initial_state(self, theta: np.ndarray) -> np.ndarray:
        return theta

    def _derivative(self, state: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _fun(self, t: float, flat: np.ndarray) -> np.ndarray:
        state = flat.reshape(len(self._active), -1)
        derivative = self._derivative(state)
        derivative[~self._active] = 0.0  # stopped runs stay where they are
        return derivative.ravel()

    def _start(self, state: np.ndarray, t0: float, first_step: float | None) -> None:
        share = 1 / np.sqrt(max(1, int(self._active.sum())))  # per-run RMS error within (rtol, atol)
        self._solver = SOLVERS[self.solver_name](
            self._fun, t0, state.ravel(), np.inf, rtol=self.rtol * share, atol=self.atol * share,
            max_step=self.max_step, first_step=first_step,
        )

    def update(self, params: Params, grads: Gradients | None, active: Tensor) -> None:
        previous, self._active = self._active, active.cpu().numpy()
        if self._solver is not None and not np.array_equal(previous, self._active):
            # the solvers reuse the last derivative as the first stage of the next step: stopped runs
            # must not move with it
            self._solver.f.reshape(len(self._active), -1)[~self._active] = 0.0
        if self._solver is None:
            self._layout = _Layout(params)
            theta = self._layout.pack(params)
            self._start(self._initial_state(theta), 0.0, self.first_step)
            self.time = torch.zeros(len(theta), dtype=torch.float64, device=active.device)
        message = self._solver.step()
        if self._solver.status == "failed":
            raise MethodFailure(f"{self.solver_name} failed at t = {self._solver.t:.6g}: {message}")
        state = self._solver.y.reshape(len(self._active), -1)
        new = self._layout.unpack(state[:, : self._layout.size])
        for name, p in params.items():
            p.copy_(new[name])
        t = torch.tensor(self._solver.t, dtype=torch.float64, device=active.device)
        self.time = torch.where(active, t, self.time)

    def select(self, indices: Tensor) -> None:
        """Restart the solver on the kept runs from their current state and step size."""
        if self._solver is None:
            return
        keep = indices.cpu().numpy()
        state = self._solver.y.reshape(len(self._active), -1)[keep]
        t, step = self._solver.t, self._solver.step_size
        self._drop_solver()
        self._active = self._active[keep]
        self.time = self.time[indices.to(self.time.device)]
        self._start(state, t, step)

    def describe(self) -> dict:
        return {"name": self.name, "solver": self.solver_name, "rtol": self.rtol, "atol": self.atol,
                "max_step": self.max_step}


class GradientFlow(_Flow):
    """θ̇ = −∇L(θ) (theory.md §3.1), integrated with a SciPy adaptive solver."""

    name = "gradient-flow"

    def _derivative(self, state: np.ndarray) -> np.ndarray:
        return -self._gradient(state)


class InertialFlow(_Flow):
    """The DIN system θ̈ + α θ̇ + β (d/dt)∇L + ∇L = 0, θ̇(0) = 0 (theory.md §4.1)."""

    name = "inertial-flow"

    def __init__(self, alpha: float = 1.0, beta: float = 0.0, **solver) -> None:
        super().__init__(**solver)
        self.alpha, self.beta = check_nonnegative("alpha", alpha), check_nonnegative("beta", beta)

    def _initial_state(self, theta: np.ndarray) -> np.ndarray:
        if self.beta == 0:  # (θ, v) with v(0) = 0
            return np.concatenate([theta, np.zeros_like(theta)], axis=1)
        a, b = self.alpha, self.beta
        psi = (1 - a * b) * theta - b * b * self._gradient(theta)
        return np.concatenate([theta, psi], axis=1)

    def _derivative(self, state: np.ndarray) -> np.ndarray:
        size = self._layout.size
        theta, other = state[:, :size], state[:, size:]
        grad = self._gradient(theta)
        if self.beta == 0:
            return np.concatenate([other, -self.alpha * other - grad], axis=1)
        a, b = self.alpha, self.beta
        phi = (a - 1 / b) * theta + other / b
        return np.concatenate([-phi - b * grad, -phi], axis=1)

    def describe(self) -> dict:
        return {**super().describe(), "alpha": self.alpha, "beta": self.beta}
