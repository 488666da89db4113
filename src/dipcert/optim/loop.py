"""The training loop shared by every method: records history, stops each run on its own.

Each run of the batch stops independently with status
- ``converged``: the loss reached ``loss_tol``;
- ``diverged``: the loss became NaN/inf, exceeded ``divergence_factor`` × its initial value
  L(θ_0), or stayed above L(θ_0) for ``stall_patience`` consecutive iterations (a too-large step
  that saturates a bounded network: the loss jumps up and freezes there);
- ``stopped``: the stopping rule (:mod:`dipcert.stopping`) chose its iterate and stopped the run;
- ``max_iterations``: the iteration limit was reached;
- ``failed``: the method could not go on (an ODE solver whose step size underflowed);
- ``interrupted``: the caller asked to stop: ``callback`` returned True (every run still running
  stops at that iteration) or a boolean mask over the batch (the runs it marks stop).
A stopped run's parameters are frozen; its history is kept up to the point it stopped. Each run
returns the iterate its stopping rule chose (``TrainResult.x``; the last one is ``x_last``), with
the rule's report in ``TrainResult.stop``.
``TrainResult.config["divergence"]`` is a list with one entry per run: ``None``, or for a diverged
run why it stopped, one of ``"loss not finite"``, ``"loss above 1e+06 x its initial value"``
(the factor as given) and ``"loss above its initial value for 100 consecutive iterations"``
(the patience as given).

A method sees the gradient at the current iterate (``update``); a method that needs gradients
elsewhere (the ODE integrators) sets ``uses_gradient = False`` and receives an *oracle*
θ ↦ ∇_θ L_y(A g(u, θ)) through ``bind``. Every gradient is counted per run (``evaluations``);
a method with a notion of time t (the ODEs; Σ h for the inertial schemes C1, C2) exposes ``time``.
A method object holds the state of one training run: use a fresh one for each call.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from ..losses import Loss, MSELoss
from ..networks import Network, Params, RankOne
from ..problems import Problem
from ..stopping import NoStop, StopReport, StopRule, StopTracker

STATUSES = ("converged", "diverged", "stopped", "max_iterations", "failed", "interrupted")


Gradients = dict[str, "Tensor | RankOne"]
Oracle = Callable[[Params], Gradients]


class MethodFailure(RuntimeError):
    """Raised by a method that cannot make another step; the running runs stop as ``failed``."""


class Method(Protocol):
    """A training method. Optional attributes: ``uses_gradient`` (default True; False means
    ``update`` gets ``grads=None`` and uses the oracle given to ``bind(oracle)``), ``time`` (a
    tensor with the time t of each working run), ``commutes_with_reduction`` (True when the
    update is a linear combination of gradients and iterates, so that the z = W u reduction of
    theory.md §6 is exact), ``descent_steps(active, dtype)`` (the update is θ ← θ + steps[b]·∇θ:
    the loop may then fuse it with the next forward pass, see ``Network.descend``)."""

    name: str

    def update(self, params: Params, grads: Gradients | None, active: Tensor) -> None: ...

    def select(self, indices: Tensor) -> None:
        """Keep only the state of the runs at ``indices`` (the working batch shrank)."""

    def describe(self) -> dict: ...


@dataclass
class History:
    """Recorded iterations: ``iteration`` and ``seconds`` have shape (T,), the others (T, batch).

    ``error`` is ‖x_τ − x̄‖ (None when x̄ is unknown); ``param_dist`` is ‖θ_τ − θ_0‖;
    ``stopped_at`` (batch,) is the iteration at which each run stopped (later rows repeat its state).
    """

    iteration: np.ndarray
    seconds: np.ndarray
    loss: np.ndarray
    error: np.ndarray | None
    param_dist: np.ndarray
    stopped_at: np.ndarray
    evaluations: np.ndarray  # (T, batch) gradient evaluations so far
    time: np.ndarray | None = None  # (T, batch) time t, for methods that have one

    def columns(self, run: int = 0) -> dict[str, np.ndarray]:
        """One run's history, up to the iteration where it stopped, as named columns (for CSV)."""
        keep = self.iteration <= self.stopped_at[run]
        cols = {"iteration": self.iteration[keep], "seconds": self.seconds[keep], "loss": self.loss[keep, run]}
        if self.error is not None:
            cols["error"] = self.error[keep, run]
        cols["param_dist"] = self.param_dist[keep, run]
        cols["evaluations"] = self.evaluations[keep, run]
        if self.time is not None:
            cols["time"] = self.time[keep, run]
        return cols


@dataclass
class TrainResult:
    x: Tensor  # (batch, n) the iterates the stopping rule returns
    params: Params  # θ at each run's last iteration
    history: History
    status: list[str]
    iterations: np.ndarray  # (batch,) updates made by each run
    final_loss: np.ndarray  # (batch,)
    seconds: float
    config: dict = field(default_factory=dict)
    snapshots: dict[int, Tensor] = field(default_factory=dict)  # τ → x_τ (batch, n), when asked for
    x_last: Tensor | None = None  # (batch, n) the last iterates
    stop: StopReport | None = None


class _Recorder:
    def __init__(self, track_error: bool, track_time: bool) -> None:
        self.rows: dict[str, list] = {"iteration": [], "seconds": [], "loss": [], "param_dist": [], "evaluations": []}
        if track_error:
            self.rows["error"] = []
        if track_time:
            self.rows["time"] = []

    def add(self, **values) -> None:
        for key, value in values.items():
            if key in self.rows:
                self.rows[key].append(value.detach().cpu().numpy().copy() if isinstance(value, Tensor) else value)

    def history(self, stopped_at: np.ndarray) -> History:
        integer = ("iteration", "evaluations")
        arr = {k: np.asarray(v, dtype=np.int64 if k in integer else np.float64) for k, v in self.rows.items()}
        return History(arr["iteration"], arr["seconds"], arr["loss"], arr.get("error"), arr["param_dist"], stopped_at,
                       arr["evaluations"], arr.get("time"))


def _check_settings(max_iters: int, loss_tol: float, record_every: int, divergence_factor: float,
                    stall_patience: int) -> None:
    if not isinstance(max_iters, int) or max_iters <= 0:
        raise ValueError(f"iteration limit must be a positive integer, got {max_iters!r}")
    if not isinstance(record_every, int) or record_every <= 0:
        raise ValueError(f"record_every must be a positive integer, got {record_every!r}")
    if not (math.isfinite(loss_tol) and loss_tol >= 0):
        raise ValueError(f"loss tolerance must be a finite number >= 0, got {loss_tol!r}")
    if not divergence_factor > 1:
        raise ValueError(f"divergence_factor must be > 1, got {divergence_factor!r}")
    if not isinstance(stall_patience, int) or stall_patience < 0:
        raise ValueError(f"stall_patience must be an integer >= 0 (0 disables it), got {stall_patience!r}")


def train(
    problem: Problem,
    network: Network,
    method: Method,
    *,
    loss: Loss | None = None,
    max_iters: int = 1000,
    loss_tol: float = 0.0,
    record_every: int = 1,
    divergence_factor: float = 1e6,
    stall_patience: int = 100,
    compact_below: float = 0.5,
    snapshot_at: Sequence[int] = (),
    callback: Callable[[int, Tensor], bool | None] | None = None,
    stop: StopRule | None = None,
    average: float = 0.0,
    run_past_stop: bool = False,
) -> TrainResult:
    """Fit ``network`` to ``problem.y`` with ``method``; every run of the batch stops on its own.

    The loss, ‖x_τ − x̄‖ and ‖θ_τ − θ_0‖ are recorded every ``record_every`` iterations and when a
    run stops. When the running runs fall below ``compact_below`` of the working batch, the stopped
    ones are dropped from it, so a batch costs what its running runs cost (0 disables this).
    ``snapshot_at`` lists iterations τ at which x_τ is kept (``TrainResult.snapshots``).
    ``stall_patience`` > 0 stops as diverged a run whose loss stayed above its initial value that
    many consecutive iterations (0 disables this rule).
    ``callback(τ, loss)`` is called after each evaluation with the latest loss of every run; when it
    returns True, every running run stops at τ as ``interrupted`` (τ is recorded) and ``train``
    returns normally; when it returns a boolean tensor of shape (batch,), the running runs it marks
    stop at τ as ``interrupted`` and the others go on.
    ``stop`` is the stopping rule (default: none, the last iterate), applied to the iterates or,
    with ``average`` > 0, to their exponential moving average; a run it stops ends as ``stopped``
    unless ``run_past_stop`` (then it trains on, and its chosen iterate stays the one returned).
    """
    _check_settings(max_iters, loss_tol, record_every, divergence_factor, stall_patience)
    loss = loss or MSELoss()
    if problem.batch != network.batch or problem.n != network.n:
        raise ValueError(
            f"network (batch {network.batch}, n {network.n}) does not match problem "
            f"(batch {problem.batch}, n {problem.n})"
        )
    if problem.y.dtype != network.dtype or problem.y.device != network.device:
        raise ValueError(
            f"problem is {problem.y.dtype} on {problem.y.device} but network is {network.dtype} on {network.device}"
        )
    loss.check_data(problem.y)
    tracker = StopTracker(stop or NoStop(), network.batch, average=average, run_past_stop=run_past_stop,
                          track_truth=problem.x_true is not None)
    run = _WorkingSet(problem, network, method)
    fused_at_start = run.fused
    batch, device = network.batch, problem.y.device
    track_time = hasattr(method, "time")
    names = ("loss", "error", "param_dist") + (("time",) if track_time else ())
    latest = {name: torch.zeros(batch, dtype=torch.float64, device=device) for name in names}
    evaluations = torch.zeros(batch, dtype=torch.int64, device=device)
    status = ["running"] * batch
    iterations = np.zeros(batch, dtype=np.int64)
    recorder = _Recorder(problem.x_true is not None, track_time)
    snapshots: dict[int, Tensor] = {}
    wanted = set(snapshot_at)
    uses_gradient = getattr(method, "uses_gradient", True)
    failure: str | None = None
    divergence: list[str | None] = [None] * batch
    reasons = ("loss not finite", f"loss above {divergence_factor:g} x its initial value",
               f"loss above its initial value for {stall_patience} consecutive iterations")

    def cotangent(v: Tensor) -> Tensor:
        """Aᵀ ∇ℓ(v) for the working runs: one gradient evaluation, counted for the running ones."""
        evaluations.index_add_(0, run.index, run.active.long())
        return run.problem.operator.adjoint_flat(loss.grad(v, run.problem.y))

    def gradient(params: Params, x: Tensor | None = None, pullback=None, v: Tensor | None = None) -> Gradients:
        """∇_θ L_y(A g(u, θ)) for the working runs."""
        if pullback is None:
            x, pullback = run.network.forward(params)
            v = run.problem.operator.forward_flat(x)
        return pullback(cotangent(v))

    if hasattr(method, "bind"):
        method.bind(gradient)
    start = time.perf_counter()

    def record(tau: int, x: Tensor) -> None:
        if run.problem.x_true is not None:
            latest["error"].index_copy_(0, run.index, (x - run.problem.x_true).norm(dim=-1).double())
        if tau > 0:  # (θ_0 − θ_0 = 0: a pass over the weights saved)
            latest["param_dist"].index_copy_(0, run.index, run.network.param_sqdist(run.params, run.initial).sqrt())
        if track_time and method.time is not None:
            latest["time"].index_copy_(0, run.index, method.time.double())
        recorder.add(iteration=tau, seconds=time.perf_counter() - start, evaluations=evaluations, **latest)

    def stop_running(label: str, tau: int) -> None:
        """Stop every running run at iteration τ with status ``label``."""
        for b in torch.nonzero(run.active).flatten().tolist():
            status[run.index[b]], iterations[run.index[b]] = label, tau
        run.active = torch.zeros_like(run.active)

    x_next: Tensor | None = None  # x at the new θ, when the step computed it (fused descent)
    for tau in range(max_iters + 1):
        if x_next is None:
            x, pullback = run.network.forward(run.params)
        else:
            x, x_next = x_next, None
        v = run.problem.operator.forward_flat(x)
        value = loss.value(v, run.problem.y)
        if run.initial_loss is None:  # L(θ_0): the reference of the divergence rules
            run.initial_loss = value
            run.limit = divergence_factor * value.clamp_min(torch.finfo(value.dtype).tiny)
            run.above = torch.zeros_like(value, dtype=torch.int64)
        active = run.active
        not_finite, too_large = ~torch.isfinite(value), value > run.limit
        diverged = not_finite | too_large
        if stall_patience:  # consecutive iterations above L(θ_0)
            run.above.add_(1).mul_(value > run.initial_loss)
            diverged |= run.above >= stall_patience
        diverged &= active
        converged = active & ~diverged & (value <= loss_tol)
        clock = None
        if track_time:  # (t = 0 until the method's first step)
            clock = method.time if method.time is not None else value.new_zeros(value.shape, dtype=torch.float64)
        ruled = tracker.observe(tau, run.index, active & ~diverged, x, v, run.problem.y, value, run.problem.x_true,
                                clock) & ~converged
        stopping = diverged | converged | ruled
        latest["loss"].index_copy_(0, run.index, value.double())
        answer = None if callback is None else callback(tau, latest["loss"])
        interrupt = answer is not None and not isinstance(answer, Tensor) and bool(answer)
        asked = torch.zeros_like(stopping)
        if isinstance(answer, Tensor):  # a mask over the batch: those runs stop
            asked = answer.to(device=stopping.device, dtype=torch.bool)[run.index] & active & ~stopping
            stopping = stopping | asked
        last = tau == max_iters
        any_stop = bool(stopping.any())
        recording = tau % record_every == 0 or last or any_stop or interrupt
        if recording:
            record(tau, x)
        if tau in wanted:
            snapshots[tau] = run.full_x(x)
        if any_stop:  # (run.active keeps its identity otherwise: methods cache per-mask data)
            flags, by_rule, by_caller = diverged.tolist(), ruled.tolist(), asked.tolist()
            reason = torch.where(not_finite, 0, torch.where(too_large, 1, 2)).tolist()
            for b in torch.nonzero(stopping).flatten().tolist():
                i = int(run.index[b])
                label = ("diverged" if flags[b] else "stopped" if by_rule[b] else
                         "interrupted" if by_caller[b] else "converged")
                status[i], iterations[i] = label, tau
                if flags[b]:
                    divergence[i] = reasons[reason[b]]
            run.active = active & ~stopping
            running = int(run.active.sum())
            if running == 0:
                break
            if running < compact_below * len(run.index) and not (last or interrupt):
                run.compact(x)  # the working set changed: evaluate it again (same θ, fewer runs)
                x, pullback = run.network.forward(run.params)
                v = run.problem.operator.forward_flat(x)
        if interrupt:
            stop_running("interrupted", tau)
            break
        if last:
            break
        if run.fused:
            x_next = run.network.descend(run.params, cotangent(v), method.descent_steps(run.active, x.dtype))
            continue
        grads = gradient(run.params, x, pullback, v) if uses_gradient else None
        try:
            method.update(run.params, grads, run.active)
        except MethodFailure as exc:  # θ is unchanged: this iteration's record is the run's last
            failure = str(exc)
            if not recording:
                record(tau, x)
            stop_running("failed", tau)
            break

    stop_running("max_iterations", max_iters)
    seconds = time.perf_counter() - start
    if hasattr(method, "bind"):
        method.bind(None)  # let the method free its solver state now, not at the next garbage collection
    history = recorder.history(iterations.copy())
    x_last, params_final = run.finish(x)
    x_returned, report = tracker.finish(x_last, iterations)
    return TrainResult(
        x=x_returned,
        params=params_final,
        history=history,
        status=status,
        iterations=iterations,
        final_loss=history.loss[-1].copy(),
        seconds=seconds,
        snapshots=snapshots,
        x_last=x_last,
        stop=report,
        config={
            "method": method.describe(),
            "loss": loss.describe(),
            "max_iters": max_iters,
            "loss_tol": loss_tol,
            "record_every": record_every,
            "divergence_factor": divergence_factor,
            "stall_patience": stall_patience,
            "divergence": divergence,
            "fused_descent": fused_at_start,
            "stopping": report.settings,
            **({"failure": failure} if failure else {}),
        },
    )


class _WorkingSet:
    """The runs still being computed: a sub-batch of the problem, network, parameters and method
    state, with ``index`` mapping its rows to the full batch. Stopped runs leave it on
    :meth:`compact`; their final reconstruction and parameters are kept aside."""

    def __init__(self, problem: Problem, network: Network, method: Method) -> None:
        self.problem, self.network, self.method = problem, network, method
        self.fused = self._fuses()
        self.initial = self._initial_state()  # θ_0, for ‖θ − θ_0‖: the network's own, not a copy
        self.params = {name: p.clone() for name, p in self.initial.items()}  # (clone keeps the layout)
        self.size = network.batch
        self.index = torch.arange(self.size, device=problem.y.device)
        self.active = torch.ones(self.size, dtype=torch.bool, device=problem.y.device)
        self.initial_loss: Tensor | None = None  # L(θ_0) per working run, set at the first evaluation
        self.limit: Tensor | None = None  # divergence threshold per working run
        self.above: Tensor | None = None  # consecutive iterations above L(θ_0), per working run
        self._x: Tensor | None = None  # full-batch results, allocated at the first compaction
        self._params: Params = {}

    def _fuses(self) -> bool:
        """Steps go through ``network.descend``: asked again when the working batch shrinks, since
        a network may take the fused path only from some size on (a trained V then keeps its layout,
        which the other path also reads)."""
        return hasattr(self.method, "descent_steps") and self.network.fused_descent

    def _initial_state(self) -> Params:
        return self.network.descent_state() if self.fused else self.network.initial_state()

    def _store(self, rows: Tensor, x: Tensor) -> None:
        """Copy the final state of working rows ``rows`` into the full-batch results."""
        if self._x is None:
            self._x = x.new_empty((self.size, x.shape[-1]))
            self._params = {name: p.new_empty((self.size, *p.shape[1:])) for name, p in self.params.items()}
        target = self.index[rows]
        self._x[target] = x[rows].detach()
        for name, p in self.params.items():
            self._params[name][target] = p[rows]

    def compact(self, x: Tensor) -> None:
        keep, drop = torch.nonzero(self.active).flatten(), torch.nonzero(~self.active).flatten()
        self._store(drop, x)
        self.problem, self.network = self.problem.select(keep), self.network.select(keep)
        self.params = {name: p[keep] for name, p in self.params.items()}
        self.fused = self.fused and self._fuses()
        self.initial = self._initial_state()
        self.index, self.active = self.index[keep], self.active[keep]
        self.initial_loss, self.limit, self.above = self.initial_loss[keep], self.limit[keep], self.above[keep]
        self.method.select(keep)  # last: a method may evaluate gradients of the new working set

    def full_x(self, x: Tensor) -> Tensor:
        """x for the whole batch: the working rows from ``x``, the others as they stopped."""
        if self._x is None:
            return x.detach().clone()
        full = self._x.clone()
        full[self.index] = x.detach()
        return full

    def finish(self, x: Tensor) -> tuple[Tensor, Params]:
        if self._x is None:  # never compacted: the working set is the full batch
            return x.detach(), self.params
        self._store(torch.arange(len(self.index), device=self.index.device), x)
        return self._x, self._params
