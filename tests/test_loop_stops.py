"""How the training loop stops runs: interruption by the caller, stalls above L(θ_0), divergence at
τ = 0, and the summary figure of such short or non-finite histories."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dipcert.networks import TwoLayerDIP
from dipcert.optim import (
    INNA,
    Adam,
    GradientDescent,
    GradientDifference,
    GradientFlow,
    HeavyBall,
    InertialFlow,
    Nesterov,
    train,
)
from dipcert.optim.inertial import c1_stable_step, c2_stable_step
from dipcert.optim.loop import STATUSES
from dipcert.problems import Problem, gaussian_problem
from dipcert import report
from dipcert.report import summary_figure
from dipcert.seeding import derive_seed
from dipcert.steps import auto_step, gauss_newton_extremes

STALL = "loss above its initial value for {} consecutive iterations"
METHODS = ("gd", "heavy-ball", "nesterov", "adam", "gradient-difference", "inna", "gradient-flow", "inertial-flow")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: a second thread only waits


def _setup(seeds: list[int], k: int = 100, train_layers: str = "W", **kwargs) -> tuple[Problem, TwoLayerDIP]:
    problem = gaussian_problem(5, 2, seeds)
    return problem, TwoLayerDIP(5, k, seeds=[derive_seed(s, "network") for s in seeds], train=train_layers, **kwargs)


def _streaks(loss: np.ndarray) -> np.ndarray:
    """For each τ, how many consecutive iterations up to τ had L(θ_τ) > L(θ_0)."""
    streak = np.zeros(len(loss), dtype=np.int64)
    for tau in range(1, len(loss)):
        streak[tau] = streak[tau - 1] + 1 if loss[tau] > loss[0] else 0
    return streak


# ---------------------------------------------------------------------------------------------
# Interruption


def test_callback_interrupts_every_running_run():
    """Runs 0-2 are interrupted at τ = 37 (between records); run 3 converged at its own τ first."""
    seeds, stop, tol = [0, 1, 2, 3], 37, 1e-3
    reference = train(*_setup(seeds), GradientDescent(0.5), max_iters=300, loss_tol=tol, snapshot_at=[stop])
    converged_at = int(reference.iterations[3])
    assert reference.status[3] == "converged" and converged_at < stop  # (measured 36)
    assert np.all(reference.iterations[:3] > stop)

    seen = []

    def interrupt(tau: int, loss: torch.Tensor) -> bool | None:
        seen.append(tau)
        return True if tau == stop else None

    result = train(*_setup(seeds), GradientDescent(0.5), max_iters=300, loss_tol=tol, record_every=10,
                   callback=interrupt)
    assert "interrupted" in STATUSES
    assert seen == list(range(stop + 1))
    assert result.status == ["interrupted"] * 3 + ["converged"]
    assert result.iterations.tolist() == [stop] * 3 + [converged_at]
    assert result.history.iteration.tolist() == [0, 10, 20, 30, converged_at, stop]  # τ = 37 is recorded
    # the returned iterate and the last row are those of τ = 37 (τ = 36 for the converged run)
    torch.testing.assert_close(result.x[:3], reference.snapshots[stop][:3], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(result.x[3], reference.x[3], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(result.final_loss, reference.history.loss[[stop] * 3 + [converged_at], range(4)],
                               rtol=1e-12)
    for b in range(4):
        assert result.history.columns(b)["iteration"][-1] == result.iterations[b]


def test_interruption_at_the_first_iteration_keeps_one_row():
    result = train(*_setup([0, 1]), GradientDescent(0.5), max_iters=50, callback=lambda tau, loss: True)
    assert result.status == ["interrupted", "interrupted"]
    assert result.iterations.tolist() == [0, 0] and result.history.iteration.tolist() == [0]
    assert np.all(result.history.param_dist == 0) and np.all(result.history.evaluations == 0)


# ---------------------------------------------------------------------------------------------
# Stalls


def test_too_large_step_that_freezes_the_loss_is_a_divergence():
    """With V fixed and a bounded φ, γ = 1e3 saturates the sigmoid: the loss jumps 2-21x above
    L(θ_0) at τ = 1 and stays there. The stall rule stops each run where its streak above L(θ_0)
    reaches the patience, measured on the same runs with the rule off."""
    seeds, patience = [0, 1, 2], 60
    free = train(*_setup(seeds), GradientDescent(1e3), max_iters=200, stall_patience=0, snapshot_at=range(201))
    assert free.status == ["max_iterations"] * 3 and free.config["divergence"] == [None] * 3
    loss = free.history.loss
    assert np.all(loss[-1] > 1.5 * loss[0])  # (measured 2.15 to 21.2)
    expected = [int(np.argmax(_streaks(loss[:, b]) >= patience)) for b in range(3)]
    assert expected == [patience] * 3  # above from τ = 1 on

    result = train(*_setup(seeds), GradientDescent(1e3), max_iters=200, stall_patience=patience)
    assert result.status == ["diverged"] * 3
    assert result.iterations.tolist() == expected
    assert result.config["stall_patience"] == patience
    assert result.config["divergence"] == [STALL.format(patience)] * 3
    np.testing.assert_array_equal(result.history.loss, loss[: patience + 1])
    for b in range(3):
        torch.testing.assert_close(result.x[b], free.snapshots[expected[b]][b], rtol=0, atol=0)


@pytest.mark.parametrize("compact_below", [0.0, 0.9])
def test_stall_counters_follow_compaction(compact_below):
    """Run 3 converges at τ = 36 and, with compact_below = 0.9, leaves the working set while run 1
    (γ = 1e3) is 36 iterations into its stall (run 2 leaves at τ = 82): run 1 must still stop at
    τ = 100, and no other run."""
    steps = torch.tensor([0.5, 1e3, 0.5, 0.5], dtype=torch.float64)
    result = train(*_setup([0, 1, 2, 3]), GradientDescent(steps), max_iters=300, loss_tol=1e-3,
                   compact_below=compact_below)
    assert result.status == ["converged", "diverged", "converged", "converged"]
    assert result.iterations[1] == 100 and result.iterations[3] < 50 < result.iterations[[0, 2]].min()
    assert result.config["divergence"] == [None, STALL.format(100), None, None]


def test_divergence_reasons_and_patience_validation():
    problem, net = _setup([0, 1], train_layers="WV")  # V trained: a huge step makes the loss explode
    result = train(problem, net, GradientDescent(1e4), max_iters=1000)
    assert result.status == ["diverged", "diverged"]
    for b in range(2):
        loss = result.history.columns(b)["loss"]
        expected = "loss not finite" if not np.isfinite(loss[-1]) else "loss above 1e+06 x its initial value"
        assert result.config["divergence"][b] == expected
    for bad in (-1, 2.5, None):
        with pytest.raises(ValueError, match="stall_patience must be an integer >= 0"):
            train(*_setup([0]), GradientDescent(0.1), max_iters=10, stall_patience=bad)


def _auto(name: str, problem: Problem, net: TwoLayerDIP):
    """``name`` with the ``auto`` hyperparameters ``dipcert solve --runs N`` gives a batch
    (dipcert.methods): γ = 1/L_GN, momentum 0.9, Adam's 1e-2, α = 2√μ, β = 1/√L for inna (0 else),
    h = ½ h_stab(L), μ the smallest and L the largest over the batch; the ODEs at rtol 1e-8."""
    gamma = auto_step(problem, net)
    mu, L = (float(f(t)) for f, t in zip((torch.min, torch.max), gauss_newton_extremes(problem, net)))
    alpha, beta, curvature = 2 * math.sqrt(mu), 1 / math.sqrt(L), torch.tensor([L], dtype=torch.float64)
    ode = dict(rtol=1e-8, atol=1e-12)
    return {
        "gd": lambda: GradientDescent(gamma),
        "heavy-ball": lambda: HeavyBall(gamma, 0.9),
        "nesterov": lambda: Nesterov(gamma, 0.9),
        "adam": lambda: Adam(1e-2),
        "gradient-difference": lambda: GradientDifference(
            0.5 * float(c1_stable_step(curvature, alpha, 0.0)[0]), alpha, 0.0),
        "inna": lambda: INNA(0.5 * float(c2_stable_step(curvature, alpha, beta)[0]), alpha, beta),
        "gradient-flow": lambda: GradientFlow(**ode),
        "inertial-flow": lambda: InertialFlow(alpha, 0.0, **ode),
    }[name]()


@pytest.mark.parametrize("name", METHODS)
def test_healthy_runs_are_not_stalls(name):
    """The problem of tests/test_cli.py (n = 5, m = 2, k = 1000, W trained, float64, to a loss of
    1e-10) on 11 seeds. Adam's first steps overshoot (measured: up to 8.2 L(θ_0), 12 iterations
    above it, then it converges); the other methods stay below L(θ_0) (up to one iteration above
    by rounding, C2's θ_1 = θ_0)."""
    seeds = list(range(11))
    problem, net = _setup(seeds, k=1000, parametrization="full" if name == "adam" else "reduced")
    result = train(problem, net, _auto(name, problem, net), max_iters=20_000, loss_tol=1e-10)
    assert result.status == ["converged"] * len(seeds), result.config["divergence"]
    assert result.config["divergence"] == [None] * len(seeds)
    longest = max(int(_streaks(result.history.columns(b)["loss"]).max()) for b in range(len(seeds)))
    assert longest <= (20 if name == "adam" else 1), longest  # the default patience is 100


# ---------------------------------------------------------------------------------------------
# Divergence at τ = 0 and the summary figure


def _drawn_panels(monkeypatch) -> list[list[tuple]]:
    """Record, for each figure summary_figure saves, (title, x scale, y scale, texts) per axes."""
    saved, original = [], report.save_figure

    def keep(fig, path, **kwargs):
        saved.append([(ax.get_title(), ax.get_xscale(), ax.get_yscale(), [t.get_text() for t in ax.texts])
                      for ax in fig.axes])
        original(fig, path, **kwargs)

    monkeypatch.setattr(report, "save_figure", keep)
    return saved


def test_divergence_at_the_first_iteration_leaves_one_row_and_a_figure(tmp_path, monkeypatch):
    """y = 1e200: the loss overflows to inf at θ_0 (NaN data is refused when the problem is built)."""
    problem = gaussian_problem(5, 2, [0])
    problem = Problem(problem.operator, torch.full_like(problem.y, 1e200), problem.x_true)
    net = TwoLayerDIP(5, 50, seeds=[derive_seed(0, "network")])
    result = train(problem, net, GradientDescent(0.5), max_iters=100)
    assert result.status == ["diverged"] and result.iterations.tolist() == [0]
    assert result.config["divergence"] == ["loss not finite"]
    cols = result.history.columns(0)
    assert cols["iteration"].tolist() == [0] and cols["loss"][0] == np.inf and cols["param_dist"][0] == 0

    saved = _drawn_panels(monkeypatch)
    images = {"truth": np.zeros((4, 4)), "reconstruction": np.full((4, 4), np.nan)}
    summary_figure(tmp_path / "summary.png", cols, images, title="diverged at 0")
    _assert_png(tmp_path / "summary.png")
    _, recon, _, loss, error, param_dist = saved[0]
    assert recon[0] == "reconstruction\n(non-finite pixels in red)"
    assert loss[0].endswith("not drawn: inf at $\\tau$ = 0") and loss[3] == ["no finite value"]
    assert error[3] == [] and error[2] == "log"  # ‖x_0 − x̄‖ > 0 is drawn
    assert param_dist[1:3] == ("linear", "linear")  # one point at 0: no log axis


def test_summary_figure_with_nan_and_inf_values(tmp_path, monkeypatch):
    saved = _drawn_panels(monkeypatch)
    curves = {"iteration": np.arange(6), "loss": np.array([1.0, 0.5, 2.0, 1e3, 1e9, np.nan]),
              "loss_bound": np.array([1.0, 0.9, 0.8, 0.7, 0.6, np.inf]),
              "error": np.array([3.0, 2.9, 3.5, 40.0, np.inf, np.nan]),
              "param_dist": np.array([0.0, 1.0, 2.0, -1.0, np.nan, np.nan])}
    summary_figure(tmp_path / "nan.png", curves, title="gd: diverged")
    _assert_png(tmp_path / "nan.png")
    loss, error, param_dist = saved[0]
    assert loss[0].endswith("not drawn: nan at $\\tau$ = 5") and loss[1:3] == ("linear", "log")
    assert error[0].endswith("not drawn: inf at $\\tau$ = 4 and 1 more") and error[2] == "log"
    assert param_dist[2] == "linear"  # a value ≤ 0 after τ = 0


def _assert_png(path) -> None:
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 300
