"""Stopping rules: when each run of a batch stops and which of its iterates it returns.

On noisy data the DIP ends up fitting the noise (the paper, Fig. 3a), so a run must return an
early iterate. A rule watches the *candidate* iterates — x_τ, or their exponential moving average
when ``average`` > 0 (the original DIP's smoothing) — and per run decides which candidate to keep
and when to stop:

- ``discrepancy`` (Morozov): the first τ with ‖A x_τ − y‖ ≤ δ ‖ε‖, ‖ε‖ = σ√m given or estimated
  (:mod:`dipcert.noise_level`); until then the candidate with the smallest residual is kept;
- ``certified``: the time τ_ε of the certificate (theory.md §3.2), after which Theorem III.1 bounds
  ‖y_τ − ȳ‖ by 2‖ε‖; used only where condition (4) holds;
- ``variance`` (ES-WMV, Wang et al., "Early stopping for deep image prior"): the variance of the
  last W candidates, VAR_τ = (1/W) Σ_w ‖x_{τ−w} − mean‖²; the first iterate of the window of least
  variance is kept, and the run stops when that minimum has not improved for P windows;
- ``patience``: the candidate of least loss is kept; the run stops when the loss has not improved
  by a relative ``min_improvement`` for P iterations;
- ``least-loss``: the candidate of least loss (the best fit of y; never stops early);
- ``oracle``: the candidate nearest x̄ (studies only: needs x̄; never stops early);
- ``none``: the last candidate.

Every rule keeps its state for the whole batch, indexed by the run's position in it, so it is
unaffected when the training loop drops stopped runs from its working batch. The loop feeds
:class:`StopTracker` once per iteration; the tracker owns the averaging, the kept iterates and the
oracle record (the candidate nearest x̄ among those computed, whatever the rule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .registry import Component, Option, Section, choice


@dataclass
class Observation:
    """What a rule sees at iteration τ, for the working runs it decides (rows of ``index``)."""

    tau: int
    index: Tensor  # (r,) positions in the full batch
    x: Tensor  # (r, n) candidate iterates
    residual: Tensor  # (r,) ‖A x − y‖ of the candidates, float64
    loss: Tensor  # (r,) L_y(A x_τ) of the raw iterates, float64
    error: Tensor | None  # (r,) ‖x − x̄‖ of the candidates, float64, when x̄ is known
    time: Tensor | None  # (r,) the method's time t, for methods that have one


@dataclass
class Decision:
    """Per observed run: ``keep`` the rule's new choice of iterate (``kept``, at iterations
    ``kept_tau``; the observed candidates at τ when None), ``stop`` the rule is done."""

    keep: Tensor
    stop: Tensor
    kept: Tensor | None = None
    kept_tau: Tensor | None = None


class StopRule:
    """A stopping rule; subclasses implement :meth:`decide` and :meth:`explain`."""

    name = ""
    needs_truth = False  # the rule reads ‖x − x̄‖ (refused when x̄ is unknown)
    returns_last = False  # the kept iterate is the last candidate (no copies needed)
    never_stops = False  # neither stops nor keeps anything: the tracker only records the oracle
    last_unless_stopped = False  # a run the rule did not stop returns its last candidate

    def start(self, batch: int) -> None:
        """Allocate the per-run state for a batch of ``batch`` runs."""

    def decide(self, obs: Observation) -> Decision:
        raise NotImplementedError

    def explain(self, run: int, fired: bool, kept_tau: int) -> str:
        """Why run ``run`` returns the iterate at ``kept_tau`` (``fired``: the rule stopped it)."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"rule": self.name}


class NoStop(StopRule):
    name = "none"
    returns_last = True
    never_stops = True

    def decide(self, obs: Observation) -> Decision:
        none = torch.zeros_like(obs.residual, dtype=torch.bool)
        return Decision(none, none)

    def explain(self, run: int, fired: bool, kept_tau: int) -> str:
        return "no stopping rule: the last iterate"


class Discrepancy(StopRule):
    """Morozov's discrepancy principle: the first τ with ‖A x_τ − y‖ ≤ δ ‖ε‖, ‖ε‖ per run given or
    estimated (σ√m for white Gaussian noise of std σ)."""

    name = "discrepancy"

    def __init__(self, noise_norm: np.ndarray, delta: float) -> None:
        self.noise_norm = np.asarray(noise_norm, dtype=np.float64).reshape(-1)
        if not (self.noise_norm.size and np.all(np.isfinite(self.noise_norm)) and np.all(self.noise_norm >= 0)):
            raise ValueError(f"the noise norm must be finite and >= 0, got {noise_norm!r}")
        if not (math.isfinite(delta) and delta > 0):
            raise ValueError(f"delta must be a finite number > 0, got {delta!r}")
        self.delta = delta
        self.threshold = torch.as_tensor(delta * self.noise_norm)

    def start(self, batch: int) -> None:
        if self.threshold.numel() == 1:
            self.threshold = self.threshold.expand(batch).clone()
        if self.threshold.numel() != batch:
            raise ValueError(f"{self.threshold.numel()} noise levels for a batch of {batch} runs")
        self.best = torch.full((batch,), math.inf, dtype=torch.float64)
        self.last = torch.full((batch,), math.nan, dtype=torch.float64)

    def decide(self, obs: Observation) -> Decision:
        index = obs.index.cpu()
        residual = obs.residual.cpu()
        keep = residual < self.best[index]
        self.best[index] = torch.minimum(self.best[index], residual)
        self.last[index] = residual
        stop = residual <= self.threshold[index]
        return Decision(keep.to(obs.residual.device), stop.to(obs.residual.device))

    def explain(self, run: int, fired: bool, kept_tau: int) -> str:
        norm = self.noise_norm[run if self.noise_norm.size > 1 else 0]
        target = f"delta ||eps|| = {self.delta:g} x {norm:.4g} = {float(self.threshold[run]):.4g}"
        if fired:
            return f"||A x - y|| = {float(self.last[run]):.4g} <= {target} at tau = {kept_tau}"
        return (f"||A x - y|| never reached {target}: the iterate of least residual "
                f"({float(self.best[run]):.4g}, tau = {kept_tau})")

    def describe(self) -> dict:
        return {"rule": self.name, "delta": self.delta}


class Certified(StopRule):
    """Stop at the certificate's τ_ε (in iterations, or in the time t of a gradient flow)."""

    name = "certified"
    last_unless_stopped = True

    def __init__(self, tau_eps: np.ndarray, clock: str = "iteration") -> None:
        if clock not in ("iteration", "time"):
            raise ValueError(f"clock must be 'iteration' or 'time', got {clock!r}")
        self.tau_eps = torch.as_tensor(np.asarray(tau_eps, dtype=np.float64).reshape(-1))
        if not bool(torch.all(self.tau_eps >= 0)):
            raise ValueError(f"tau_eps must be >= 0, got {tau_eps!r}")
        self.clock = clock

    def start(self, batch: int) -> None:
        if self.tau_eps.numel() == 1:
            self.tau_eps = self.tau_eps.expand(batch).clone()
        if self.tau_eps.numel() != batch:
            raise ValueError(f"{self.tau_eps.numel()} stopping times for a batch of {batch} runs")

    def decide(self, obs: Observation) -> Decision:
        if self.clock == "time":
            if obs.time is None:
                raise ValueError("a stopping time in t needs a method with a time (an ODE)")
            now = obs.time.double().cpu()
        else:
            now = torch.full(obs.index.shape, float(obs.tau), dtype=torch.float64)
        stop = (now >= self.tau_eps[obs.index.cpu()]).to(obs.residual.device)
        return Decision(stop, stop)

    def explain(self, run: int, fired: bool, kept_tau: int) -> str:
        unit = "t" if self.clock == "time" else "tau"
        value = float(self.tau_eps[run])
        if fired:
            return (f"certified stopping {unit}_eps = {value:.4g} (Theorem III.1, condition (4) holds): "
                    f"beyond it ||A x - A x_true|| <= 2 ||eps||")
        return f"certified stopping {unit}_eps = {value:.4g} lies beyond the end of the run: the last iterate"

    def describe(self) -> dict:
        return {"rule": self.name, "clock": self.clock}


class Variance(StopRule):
    """ES-WMV: the window of W candidates of least variance; stop after P windows without a new minimum."""

    name = "variance"

    def __init__(self, window: int, patience: int) -> None:
        if not (isinstance(window, int) and window >= 2):
            raise ValueError(f"window must be an integer >= 2, got {window!r}")
        if not (isinstance(patience, int) and patience >= 1):
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        self.window, self.patience = window, patience
        self.buffer: Tensor | None = None

    def start(self, batch: int) -> None:
        self.batch = batch
        self.best = torch.full((batch,), math.inf, dtype=torch.float64)
        self.since = torch.zeros(batch, dtype=torch.int64)
        self.buffer = None

    def decide(self, obs: Observation) -> Decision:
        if self.buffer is None:  # float64: the variance of nearly equal iterates needs the digits
            self.buffer = obs.x.new_zeros((self.window, self.batch, obs.x.shape[-1]), dtype=torch.float64)
        self.buffer[obs.tau % self.window].index_copy_(0, obs.index, obs.x.double())
        none = torch.zeros(obs.index.shape, dtype=torch.bool, device=obs.x.device)
        if obs.tau < self.window - 1:
            return Decision(none, none)
        whole = len(obs.index) == self.batch and bool((obs.index == torch.arange(self.batch, device=obs.index.device)).all())
        window = self.buffer if whole else self.buffer.index_select(1, obs.index)
        if window.device.type == "cpu":  # (NumPy: torch's small parallel kernels stall on a busy CPU)
            w = window.numpy()
            variance = torch.from_numpy(((w - w.mean(0)) ** 2).sum((0, 2)) / self.window)
        else:
            variance = ((window - window.mean(0)) ** 2).sum((0, 2)).cpu() / self.window
        index = obs.index.cpu()
        keep = variance < self.best[index]
        self.best[index] = torch.where(keep, variance, self.best[index])
        self.since[index] = torch.where(keep, 0, self.since[index] + 1)
        stop = self.since[index] >= self.patience
        start = obs.tau - self.window + 1
        kept_tau = torch.full(obs.index.shape, start, dtype=torch.int64)
        kept = window[start % self.window].to(obs.x.dtype)
        return Decision(keep.to(obs.x.device), stop.to(obs.x.device), kept, kept_tau)

    def explain(self, run: int, fired: bool, kept_tau: int) -> str:
        what = (f"the window of {self.window} iterates starting at tau = {kept_tau} has the least variance "
                f"({float(self.best[run]):.4g})")
        if fired:
            return f"{what}, not improved for {self.patience} windows"
        return f"{what} among those computed (the run ended before {self.patience} windows without improvement)"

    def describe(self) -> dict:
        return {"rule": self.name, "window": self.window, "patience": self.patience}


class Patience(StopRule):
    """The iterate of least loss; stop when the loss has not improved by ``min_improvement`` (relative)
    for ``patience`` iterations."""

    name = "patience"

    def __init__(self, patience: int, min_improvement: float) -> None:
        if not (isinstance(patience, int) and patience >= 1):
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        if not (math.isfinite(min_improvement) and 0 <= min_improvement < 1):
            raise ValueError(f"min_improvement must be in [0, 1), got {min_improvement!r}")
        self.patience, self.min_improvement = patience, min_improvement

    def start(self, batch: int) -> None:
        self.best = torch.full((batch,), math.inf, dtype=torch.float64)
        self.since = torch.zeros(batch, dtype=torch.int64)

    def decide(self, obs: Observation) -> Decision:
        index, loss = obs.index.cpu(), obs.loss.cpu()
        best = self.best[index]
        keep = torch.where(torch.isinf(best), loss < best, loss < best - self.min_improvement * best.abs())
        self.best[index] = torch.where(keep, loss, best)
        self.since[index] = torch.where(keep, 0, self.since[index] + 1)
        stop = self.since[index] >= self.patience
        return Decision(keep.to(obs.loss.device), stop.to(obs.loss.device))

    def explain(self, run: int, fired: bool, kept_tau: int) -> str:
        what = f"the iterate of least loss ({float(self.best[run]):.4g}, tau = {kept_tau})"
        if fired:
            return f"{what}: the loss did not improve by {self.min_improvement:g} (relative) for {self.patience} iterations"
        return f"{what} among those computed"

    def describe(self) -> dict:
        return {"rule": self.name, "patience": self.patience, "min_improvement": self.min_improvement}


class _LeastOf(StopRule):
    """The candidate of least ``watched`` value among those computed; never stops a run early."""

    def watched(self, obs: Observation) -> Tensor:
        raise NotImplementedError

    def start(self, batch: int) -> None:
        self.best = torch.full((batch,), math.inf, dtype=torch.float64)

    def decide(self, obs: Observation) -> Decision:
        value = self.watched(obs)
        index, cpu = obs.index.cpu(), value.cpu()
        keep = cpu < self.best[index]
        self.best[index] = torch.minimum(self.best[index], cpu)
        return Decision(keep.to(value.device), torch.zeros_like(keep).to(value.device))


class LeastLoss(_LeastOf):
    """The candidate of least loss (the best fit of y; ``auto``'s rule on noiseless data). Like
    ``patience`` it reads the loss of the raw iterate x_τ, also when the candidate is an average."""

    name = "least-loss"

    def watched(self, obs: Observation) -> Tensor:
        return obs.loss

    def explain(self, run: int, fired: bool, kept_tau: int) -> str:
        return f"the iterate of least loss among those computed ({float(self.best[run]):.4g}, tau = {kept_tau})"


class Oracle(_LeastOf):
    """The candidate nearest x̄ (studies only)."""

    name = "oracle"
    needs_truth = True

    def watched(self, obs: Observation) -> Tensor:
        if obs.error is None:
            raise ValueError("the oracle rule needs the true signal x_true")
        return obs.error

    def explain(self, run: int, fired: bool, kept_tau: int) -> str:
        return f"the iterate nearest x_true among those computed (||x - x_true|| = {float(self.best[run]):.4g})"


@dataclass
class StopReport:
    """Per run: the rule, the iteration of the returned iterate (``tau``), the iteration at which
    the rule stopped the run (``stopped_at``, None when it did not) and why; with x̄ known, the
    ``oracle_tau``/``oracle_error`` of the candidate nearest x̄ among those computed."""

    rule: str
    tau: list[int]
    stopped_at: list[int | None]
    reason: list[str]
    oracle_tau: list[int] | None = None
    oracle_error: list[float] | None = None
    settings: dict | None = None

    def run(self, b: int) -> dict:
        out = {"rule": self.rule, "tau": self.tau[b], "stopped_at": self.stopped_at[b], "reason": self.reason[b]}
        if self.oracle_tau is not None:
            out["oracle_tau"], out["oracle_error"] = self.oracle_tau[b], self.oracle_error[b]
        return out


class StopTracker:
    """Runs a :class:`StopRule` inside the training loop: averages the iterates, keeps each run's
    chosen iterate, records the oracle, and tells the loop which runs stop (all state full-batch)."""

    def __init__(self, rule: StopRule, batch: int, *, average: float = 0.0, run_past_stop: bool = False,
                 track_truth: bool = False) -> None:
        if not (math.isfinite(average) and 0 <= average < 1):
            raise ValueError(f"average (the EMA weight) must be in [0, 1), got {average!r}")
        if rule.needs_truth and not track_truth:
            raise ValueError(f"the {rule.name} rule needs the true signal x_true, which this problem does not have")
        self.rule, self.batch, self.average, self.run_past_stop = rule, batch, average, run_past_stop
        self.track_truth = track_truth
        rule.start(batch)
        self.fired = torch.zeros(batch, dtype=torch.bool)
        self.stopped_at = np.full(batch, -1, dtype=np.int64)
        self.kept_tau = np.zeros(batch, dtype=np.int64)
        self.kept: Tensor | None = None  # (batch, n) the chosen iterates
        self.ema_x: Tensor | None = None
        self.ema_v: Tensor | None = None
        self.oracle_error = np.full(batch, math.inf)
        self.oracle_tau = np.zeros(batch, dtype=np.int64)

    def _candidates(self, tau_first: bool, index: Tensor, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.average == 0:
            return x, v
        if self.ema_x is None:
            self.ema_x = x.new_zeros((self.batch, x.shape[-1]))
            self.ema_v = v.new_zeros((self.batch, v.shape[-1]))
        if tau_first:
            self.ema_x.index_copy_(0, index, x.detach())
            self.ema_v.index_copy_(0, index, v.detach())
        else:
            a = self.average
            self.ema_x.index_copy_(0, index, a * self.ema_x.index_select(0, index) + (1 - a) * x.detach())
            self.ema_v.index_copy_(0, index, a * self.ema_v.index_select(0, index) + (1 - a) * v.detach())
        return self.ema_x.index_select(0, index), self.ema_v.index_select(0, index)

    def observe(self, tau: int, index: Tensor, observed: Tensor, x: Tensor, v: Tensor, y: Tensor, loss: Tensor,
                x_true: Tensor | None, time: Tensor | None) -> Tensor:
        """Feed iteration τ of the working runs (``observed`` marks those still running and finite);
        returns the working runs that the rule stops now (none when running past the stop)."""
        stop_now = torch.zeros_like(observed)
        if not bool(observed.any()):
            return stop_now
        every = bool(observed.all())  # the usual case: no row selection (each would be a parallel copy)
        rows = torch.nonzero(observed).flatten()
        pick = (lambda t: t) if every else (lambda t: None if t is None else t.index_select(0, rows))
        index_rows = pick(index)
        x, v, y, loss, x_true, time = pick(x), pick(v), pick(y), pick(loss), pick(x_true), pick(time)
        cx, cv = self._candidates(tau == 0, index_rows, x, v)
        error = (cx - x_true).norm(dim=-1).double() if self.track_truth and x_true is not None else None
        positions = index_rows.cpu().numpy()
        if error is not None:
            e = error.cpu().numpy()
            better = e < self.oracle_error[positions]
            self.oracle_error[positions[better]] = e[better]
            self.oracle_tau[positions[better]] = tau
        if self.rule.never_stops:
            return stop_now
        if self.kept is None and not self.rule.returns_last:
            self.kept = cx.new_zeros((self.batch, cx.shape[-1]))
        deciding = ~self.fired[index_rows.cpu()].to(x.device)
        if not bool(deciding.any()):
            return stop_now
        sel = torch.nonzero(deciding).flatten()
        choose = (lambda t: t) if bool(deciding.all()) else (lambda t: None if t is None else t.index_select(0, sel))
        obs = Observation(tau, choose(index_rows), choose(cx), (choose(cv) - choose(y)).norm(dim=-1).double(),
                          choose(loss).double(), choose(error), choose(time))
        decision = self.rule.decide(obs)
        keep = decision.keep if tau > 0 else torch.ones_like(decision.keep)  # always something to return
        if self.kept is not None and bool(keep.any()):
            chosen = obs.x if decision.kept is None or tau == 0 else decision.kept
            k = torch.nonzero(keep).flatten()
            self.kept.index_copy_(0, obs.index.index_select(0, k), chosen.detach().index_select(0, k))
            taus = np.full(len(k), tau) if decision.kept_tau is None or tau == 0 else decision.kept_tau[k.cpu()].numpy()
            self.kept_tau[obs.index[k].cpu().numpy()] = taus
        fired = torch.nonzero(decision.stop).flatten()
        if len(fired):
            where = obs.index[fired].cpu()
            self.fired[where] = True
            self.stopped_at[where.numpy()] = tau
            if not self.run_past_stop:
                stop_now[rows[sel[fired]]] = True
        return stop_now

    def finish(self, x_last: Tensor, iterations: np.ndarray) -> tuple[Tensor, StopReport]:
        """The returned iterates (batch, n) and the report, given the loop's last iterates and the
        iteration at which each run ended."""
        last = self.ema_x if self.ema_x is not None else x_last
        returned = last.detach().clone() if self.kept is None else self.kept.clone()
        unfired_last = ~self.fired if self.rule.last_unless_stopped else torch.zeros_like(self.fired)
        if self.kept is not None and bool(unfired_last.any()):
            rows = torch.nonzero(unfired_last).flatten().to(returned.device)
            returned[rows] = last[rows].detach()
        taus = np.where(unfired_last.numpy() | self.rule.returns_last, iterations, self.kept_tau)
        fired = self.fired.tolist()
        stopped = [int(s) if f else None for s, f in zip(self.stopped_at, fired)]
        reasons = [self.rule.explain(b, fired[b], int(taus[b])) for b in range(self.batch)]
        if self.average:
            reasons = [r + f" (iterates averaged: EMA weight {self.average:g})" for r in reasons]
        settings = {**self.rule.describe(), "average": self.average, "run_past_stop": self.run_past_stop}
        report = StopReport(self.rule.name, [int(t) for t in taus], stopped, reasons,
                            self.oracle_tau.tolist() if self.track_truth else None,
                            self.oracle_error.tolist() if self.track_truth else None, settings)
        return returned, report


def replay(rule: StopRule, iterates: Tensor, y: Tensor, losses: np.ndarray, forward: Callable[[Tensor], Tensor],
           x_true: Tensor | None = None, average: float = 0.0) -> tuple[Tensor, dict]:
    """Apply ``rule`` after the fact to one run's stored iterates x_0..x_T (``iterates`` (T+1, n), with
    ``losses`` their loss values and ``forward`` the operator on flat tensors), exactly as the training
    loop would have: the returned iterate (n,) and the report (``tau``, ``stopped_at``…, and the
    oracle when ``x_true`` is given). One trajectory can so serve every rule."""
    tracker = StopTracker(rule, 1, average=average, track_truth=x_true is not None)
    device = iterates.device
    index, on = torch.zeros(1, dtype=torch.long, device=device), torch.ones(1, dtype=torch.bool, device=device)
    y, truth = y.reshape(1, -1), None if x_true is None else x_true.reshape(1, -1)
    end = len(iterates) - 1
    for tau in range(len(iterates)):
        x = iterates[tau][None]
        loss = torch.as_tensor([float(losses[tau])], dtype=torch.float64, device=device)
        if bool(tracker.observe(tau, index, on, x, forward(x), y, loss, truth, None)[0]):
            end = tau
            break
    returned, report = tracker.finish(iterates[end][None], np.array([end]))
    return returned[0], report.run(0)


# ------------------------------------------------------------------------------------ registry
NOISE_LEVEL = Option("noise_level", float, "auto", "Noise std σ for the discrepancy and certified rules, on the "
                     "data's scale: a number, or 'auto' (estimated from y, see docs/stopping.md).", low=0,
                     words=("auto",))
DELTA = Option("delta", float, 1.0, "The discrepancy rule stops at the first ||A x - y|| <= delta ||eps|| "
               "(||eps|| = sigma sqrt(m) for Gaussian noise).",
               low=0, open_low=True, high=100, default_text="1 (0.95 for conv-decoder and deep-decoder, 0.97 for skip)")
WINDOW = Option("window", int, 10, "Iterates per window of the variance rule (ES-WMV).", low=2, high=10**6,
                default_text="10 (100 for the convolutional generators)")
VARIANCE_PATIENCE = Option("variance_patience", int, 20, "The variance rule stops after this many windows "
                           "without a new least variance.", low=1, high=10**9,
                           default_text="20 (1000 for the convolutional generators)")
PATIENCE = Option("patience", int, 100, "The patience rule stops after this many iterations without a relative "
                  "loss improvement of --min-improvement.", low=1, high=10**9)
MIN_IMPROVEMENT = Option("min_improvement", float, 1e-3, "Relative loss decrease that counts as an improvement "
                         "for the patience rule.", low=0, high=1, open_high=True)
AVERAGE = Option("average", float, 0.0, "Weight a of the exponential moving average of the iterates, "
                 "x̃_τ = a x̃_τ-1 + (1 - a) x_τ, which the rule watches and returns (0: no averaging).",
                 low=0, high=1, open_high=True)
RUN_PAST_STOP = Option("run_past_stop", bool, False, "Keep training after the rule stops (the chosen iterate "
                       "is still the one returned), so the history shows what stopping avoided.")
_TUNING = (AVERAGE, RUN_PAST_STOP)
STOP, _rules = choice("stop", [
    Component("auto", "least-loss on noiseless data, patience (train to convergence) when A is well-conditioned, "
              "else discrepancy with sigma given or estimated, else variance; see docs/stopping.md",
              (NOISE_LEVEL, DELTA, PATIENCE, MIN_IMPROVEMENT, WINDOW, VARIANCE_PATIENCE, *_TUNING)),
    Component("discrepancy", "first ||A x - y|| <= delta sigma sqrt(m) (Morozov)", (NOISE_LEVEL, DELTA, *_TUNING),
              frozenset({"noise_level"})),
    Component("certified", "the certificate's tau_eps, where condition (4) holds", (NOISE_LEVEL, *_TUNING),
              frozenset({"noise_level", "certificate"})),
    Component("variance", "least windowed variance of the iterates (ES-WMV)", (WINDOW, VARIANCE_PATIENCE, *_TUNING)),
    Component("patience", "least loss; stop when it stalls", (PATIENCE, MIN_IMPROVEMENT, *_TUNING)),
    Component("least-loss", "the iterate of least loss (the best fit of y); never early", (AVERAGE,)),
    Component("oracle", "the iterate nearest x_true (studies only)", (AVERAGE,), frozenset({"truth"})),
    Component("none", "the last iterate", (AVERAGE,)),
], "auto", "Stopping rule")
STOPPING = Section("stopping", "when a run stops and which iterate it returns", _rules, STOP)
