import csv
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial

import numpy as np
import pytest
from click.testing import CliRunner

from dipcert.cli import main
from conftest import tiny_fig1
from dipcert.experiments import fig1
from dipcert.experiments.engine import ConfigMismatch, ResultStore, run_grid
from dipcert.experiments.sweep import run_group as run_cells

TINY = tiny_fig1()


def _table(path):
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def _run(out, sweep=TINY, order=None, fresh=False, on_group=None):
    store = ResultStore(out, "fig1", sweep.stamp(), fresh=fresh)
    cells = sweep.cells()
    run_grid(store, order(cells) if order else cells, partial(fig1.run_group, sweep), fig1.group_of, on_group)
    return store.assemble(cells)


def _same_rows(rows, reference, rel=1e-6):
    """Equal but for floats, which batching may change in their last bits."""
    assert len(rows) == len(reference)
    for a, b in zip(rows, reference):
        assert list(a) == list(b)
        for key in a:
            if key == "seconds":
                continue
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-14, nan_ok=True), key
            else:
                assert a[key] == b[key], key


def test_fig1s_batched_groups_give_the_sweeps_own_rows(one_thread):
    """Every m of a width in one padded batch (fig1.run_group) against each cell solved alone, as any
    sweep runs (the generic runner: solve, per-run steps, per-form certificates)."""
    for group in ([c for c in TINY.cells() if c["network.width"] == 100], [c for c in TINY.cells() if c["training.iters"] == 1]):
        batched, alone = fig1.run_group(TINY, group), run_cells(TINY, group)
        for cell in group:
            _same_rows(batched[cell.key].rows, alone[cell.key].rows)
    assert {r["status"] for r in batched[group[0].key].rows} == {"max_iterations"}  # the certificate-only block


def test_results_do_not_depend_on_cell_order_or_batching(tmp_path):
    forward = _run(tmp_path / "a")
    backward = _run(tmp_path / "b", order=lambda cells: cells[::-1])
    _same_rows(backward, forward, rel=1e-9)  # the same trials; batch order only changes rounding
    # one cell alone (m = 3 without m = 1 in its batch) gives the same trials
    alone = fig1.run_group(TINY, [c for c in TINY.cells() if c["operator.m"] == 3 and c["network.width"] == 10])
    key = next(iter(alone))
    batched = [r for r in forward if r["operator.m"] == 3 and r["network.width"] == 10]
    for a, b in zip(alone[key].rows, batched):
        assert a["status"] == b["status"] and a["iterations"] == b["iterations"]
        assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-6, abs=1e-14)


def test_interrupted_run_resumes_to_the_same_table(tmp_path):
    reference = _run(tmp_path / "ref")

    class Stop(Exception):
        pass

    def stop_after_first(cells, seconds):
        raise Stop

    with pytest.raises(Stop):
        _run(tmp_path / "run", on_group=stop_after_first)
    finished = list((tmp_path / "run" / "fig1.cells").glob("*.csv"))
    assert 0 < len(finished) < len(TINY.cells())
    ran = []
    resumed = _run(tmp_path / "run", on_group=lambda cells, s: ran.extend(cells))
    assert len(ran) == len(TINY.cells()) - len(finished)  # finished cells were skipped
    strip = lambda rows: [{k: repr(v) for k, v in r.items() if k != "seconds"} for r in rows]  # nan == nan
    assert strip(resumed) == strip(reference)


def test_a_group_killed_between_two_of_its_cells_runs_again_whole(tmp_path):
    """Its batch, and so the last bits of its rows, are those of an uninterrupted run."""
    reference = _run(tmp_path)
    group = [c for c in TINY.cells() if c["network.width"] == 10]
    assert len(group) == 2
    (tmp_path / "fig1.cells" / f"{group[1].key}.meta.json").unlink()  # killed after writing the first
    ran = []
    again = _run(tmp_path, on_group=lambda cells, s: ran.extend(cells))
    assert ran == group
    strip = lambda rows: [{k: repr(v) for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(again) == strip(reference)


def test_killed_cli_run_resumes_to_the_same_table(tmp_path):
    """A real SIGKILL in the middle of `dipcert reproduce`; the rerun completes the same table."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "dipcert", "reproduce", "fig1", "--scale", "quick"]
    ref = subprocess.run([*cmd, "--out", str(tmp_path / "ref")], env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "fig1.cells").glob("training.iters=*.csv"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / "fig1.cells").glob("training.iters=*.csv")))
    assert 0 < done < len(fig1.load("quick").cells())
    assert not (out / "fig1.csv").exists()
    again = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert _table(out / "fig1.csv") == _table(tmp_path / "ref" / "fig1.csv")


def test_other_configuration_is_refused(tmp_path):
    _run(tmp_path)
    with pytest.raises(ConfigMismatch, match="another configuration"):
        _run(tmp_path, sweep=tiny_fig1(trials=5))
    rows = _run(tmp_path, sweep=tiny_fig1(trials=5), fresh=True)
    assert len(rows) == 5 * len(TINY.cells())


def test_reproduce_fig1_quick_shape(tmp_path):
    result = CliRunner().invoke(main, ["reproduce", "fig1", "--scale", "quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("fig1.png", "fig1.csv", "fig1.json"):
        assert (tmp_path / name).stat().st_size > 0
    sweep = fig1.load("quick")
    rows = _table(tmp_path / "fig1.csv")
    assert len(rows) == sweep.trials * len(sweep.cells()) == 8 * 5 * 4
    summary = json.loads((tmp_path / "fig1.json").read_text())["summary"]
    conv = summary["probability"]["converged"]
    for m in (1, 2, 3, 5, 8):
        trained = [float(p) for p in conv[str(m)] if p != "nan"]
        assert len(trained) == 3  # k = 10, 100, 1000 (10^4: certificate only)
        assert trained[-1] >= trained[0]  # convergence becomes likelier with width
    cond = [float(p) for p in summary["probability"]["condition_4_radius_free"]["1"]]
    assert cond[-1] >= cond[0] and cond[-1] > 0  # (4) starts to hold as k grows (m = 1)


def test_reproduce_image_figures_quick(tmp_path):
    from dipcert.experiments import reproduce

    ran = []
    paths = reproduce("fig3a", "quick", tmp_path, on_group=lambda cells, s: ran.extend(cells))
    rows = {r["noise.noise_std"]: r for r in csv.DictReader(open(paths["table"]))}
    clean, noisy = rows["0.0"], rows["2.5"]
    assert float(clean["psnr_last"]) > float(clean["psnr_observation"]) + 3  # deblurring helps
    assert float(clean["psnr_last"]) > float(noisy["psnr_last"])  # noise degrades the reconstruction
    assert float(noisy["psnr"]) > float(noisy["psnr_last"])  # the stopping rule's iterate beats the last
    paths4 = reproduce("fig4", "quick", tmp_path, on_group=lambda cells, s: ran.extend(cells))
    (row,) = list(csv.DictReader(open(paths4["table"])))
    assert row["operator.operator"] == "well-conditioned" and row["condition_4"] in ("True", "False")
    cell = "operator.operator=well-conditioned_noise.noise_std=50.0_training.iters=100"
    data = np.load(tmp_path / "images.cells" / f"{cell}.npz")
    error = data["error"]
    assert error.min() < 0.5 * error[0]  # the error falls …
    assert error[-1] <= 1.5 * error.min()  # … then levels off
    assert np.all(np.isfinite(data["error_bound"])) and np.all(np.diff(data["error_bound"]) <= 0)
    count = len(ran)
    reproduce("fig3b", "quick", tmp_path, on_group=lambda cells, s: ran.extend(cells))
    assert len(ran) == count  # fig3b reuses fig4's run
    for name in ("fig3a", "fig3b", "fig4"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_folding_A_into_the_output_layer_is_exact():
    from dipcert.experiments.fig2 import folded
    from dipcert.networks import TwoLayerDIP
    from dipcert.optim import GradientDescent, train
    from dipcert.problems import gaussian_problem

    problem = gaussian_problem(12, 2, [0, 1])
    net = TwoLayerDIP(12, 300, seeds=[5, 6])
    plain = train(problem, net, GradientDescent(0.05), max_iters=500)
    fproblem, fnet = folded(problem, net)
    fold = train(fproblem, fnet, GradientDescent(0.05), max_iters=500)
    np.testing.assert_allclose(fold.history.loss, plain.history.loss, rtol=1e-10, atol=1e-16)
    np.testing.assert_allclose(fold.history.param_dist, plain.history.param_dist, rtol=1e-10, atol=1e-13)


def test_fig2s_folded_batches_give_the_sweeps_own_rows(one_thread):
    """Every step of one (n, k) in one folded batch (fig2.run_group) against each cell solved alone
    without folding, as any sweep runs."""
    from dipcert.experiments import fig2

    sweep = fig2.load("quick")
    group = [c for c in sweep.cells() if c["network.width"] == 100]
    batched, alone = fig2.run_group(sweep, group), run_cells(sweep, group)
    for cell in group:
        _same_rows(batched[cell.key].rows, alone[cell.key].rows)
    statuses = {r["status"] for cell in group for r in batched[cell.key].rows}
    assert {"converged", "max_iterations"} <= statuses  # the steps span the threshold; a stalled trial
    # is not cut (stall_patience = 0) but runs its iterations


def test_the_image_figures_rows_are_the_sweeps_own(one_thread):
    """The image figures' runner keeps arrays beside the rows the sweep's own runner gives."""
    from dipcert.experiments import images

    sweep = images.load("quick")
    cell = sweep.cells()[1]  # blur with noise
    mine, generic = images.run_group(sweep, [cell])[cell.key], run_cells(sweep, [cell])[cell.key]
    _same_rows(mine.rows, generic.rows, rel=1e-9)
    assert {"truth", "observation", "reconstruction", "stopped", "error_bound", "snapshot_100"} <= set(mine.arrays)
    assert not generic.arrays


def test_reproduce_fig2_quick(tmp_path):
    from dipcert.experiments import reproduce

    paths = reproduce("fig2", "quick", tmp_path)
    summary = json.loads(paths["manifest"].read_text())["summary"]
    assert set(summary["by_k"]) == {"100", "1000"}  # k = 10^3 comes from the n = 5 group of the main panel
    for key in ("by_n", "by_k"):
        for entry in summary[key].values():
            probs = entry["probability"]
            assert float(probs["2.0"]) <= float(probs["0.0"])  # too large a step stops converging


@pytest.mark.parametrize("name", ["fig1", "fig2"])
def test_the_figures_converge_in_the_papers_sense_without_the_stall_cut(name):
    """Fig. 1 and 2 count a trial converged when its loss reaches the tolerance within the budget
    (the paper's test): the training loop's default stall rule, which stops a run whose loss stays
    above its initial value, is off in every cell at every scale, and says so in the manifest."""
    import importlib

    module = importlib.import_module(f"dipcert.experiments.{name}")
    for scale in ("quick", "paper"):
        sweep = module.load(scale)
        for index, cell in enumerate(sweep.cells()):
            assert sweep.run_config(cell, index).to_dict()["training"]["stall_patience"] == 0


def test_reproduce_inertia_quick(tmp_path):
    """The quick inertia comparison, from its two sweep files: every method reaches the loss
    tolerance on the Gaussian problem, the tuned inertial schemes need fewer gradient evaluations than
    gradient descent with its certified step, a well-chosen α beats a large one, and the image
    problem's error curves fall."""
    from dipcert.experiments import reproduce
    from dipcert.experiments.inertia import ROSTER

    paths = reproduce("inertia", "quick", tmp_path)
    summary = json.loads(paths["manifest"].read_text())["summary"]
    gaussian = summary["gaussian"]
    assert set(ROSTER) <= set(gaussian) and len(gaussian) == len(ROSTER) + 6  # six (α, β) of the DIN ODE
    for label, entry in gaussian.items():
        assert entry["reached"] == "3/3", (label, entry)
    speedup = summary["gaussian_speedup_over_gd_certified"]
    for label in ("C1", "C1 adaptive", "C2 adaptive", "heavy ball", "nesterov"):
        assert speedup[label] >= 3, (label, speedup[label])
    # the companion paper's observation: α matters (here α = 0.3 against α = 3, β = 0, in time t)
    assert gaussian["DIN alpha=0.3 beta=0"]["median_time"] < gaussian["DIN alpha=3 beta=0"]["median_time"]
    image = summary["image"]
    assert set(image) == set(ROSTER)
    for label in ("gd 1/L", "C1", "C2", "nesterov"):  # tuned steps go further than the certified one
        assert image[label]["min_error"] < 0.5 * image["gd certified"]["min_error"], label
    rows = list(csv.DictReader(paths["table"].open()))
    assert len(rows) == 3 * (len(ROSTER) + 6)
    assert {r["method.momentum"] for r in rows if r["method.method"] in ("heavy-ball", "nesterov")} == {"auto"}
    assert {r["method.momentum"] for r in rows if r["method.method"] not in ("heavy-ball", "nesterov")} == {""}
    image_rows = list(csv.DictReader((tmp_path / "inertia-image.csv").open()))
    assert len(image_rows) == len(ROSTER)
    assert paths["figure"].stat().st_size > 10_000


def test_the_inertia_rows_are_the_sweeps_own(one_thread):
    """The inertia runner keeps each trial's curves beside the rows the sweep's own runner gives; its
    time axis for gradient descent is τγ, the step in the row."""
    from dipcert.experiments import inertia

    image, gaussian = inertia.load("quick")
    cell = next(c for c in gaussian.cells() if dict(c.coords).get("method.step") == "auto")
    mine, generic = inertia.run_group(gaussian, [cell])[cell.key], run_cells(gaussian, [cell])[cell.key]
    _same_rows(mine.rows, generic.rows, rel=1e-9)
    for t, row in enumerate(mine.rows):
        loss, time_axis = mine.arrays[f"{t}|loss"], mine.arrays[f"{t}|time"]
        assert len(loss) == row["iterations"] + 1 and loss[-1] == pytest.approx(row["final_loss"], rel=1e-12)
        assert time_axis[-1] == pytest.approx(row["iterations"] * row["step"], rel=1e-12)
    assert inertia.method_label(dict(cell.coords)) == "gd 1/L"
    assert [inertia.method_label(dict(c.coords)) for c in image.cells()] == list(inertia.ROSTER)
