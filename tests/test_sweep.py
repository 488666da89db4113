"""dipcert sweep: the file format, its checks before any work, rows against solve, seeds, resume."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dipcert.cli import main
from dipcert.config import ConfigError, RunConfig
from dipcert.experiments.sweep import OUTPUTS, Sweep, finished_results, run_sweep
from dipcert.solve import solve

BASE = {"problem": {"signal": "gaussian", "n": 5}, "training": {"iters": 300, "loss_tol": 1e-10}}


def _sweep(**changes) -> Sweep:
    data = {"sweep": {"name": "s", "trials": 3, "record": ["converged", "iterations", "final_loss", "error"]},
            "base": BASE, "grid": {"operator.m": [1, 3], "network.width": [20, 200]}}
    for key, value in changes.items():
        table, _, name = key.partition("__")
        if not name:  # a whole table
            data[table] = value
        elif value is None:
            data[table].pop(name)
        else:
            data.setdefault(table, {})[name] = value
    return Sweep.from_dict(data)


def _table(path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def test_rows_are_solve_metrics_of_each_cells_configuration(tmp_path):
    sweep = _sweep()
    paths = run_sweep(sweep, tmp_path)
    rows = _table(paths["table"])
    assert len(rows) == 4 * 3
    expected = solve(RunConfig.build({**BASE, "operator": {"m": 3}, "network": {"width": 200},
                                      "run": {"seed": 0, "runs": 3}})).metrics["runs"]
    mine = [r for r in rows if r["operator.m"] == "3" and r["network.width"] == "200"]
    for row, run in zip(mine, expected, strict=True):
        assert int(row["seed"]) == run["seed"]
        assert int(row["iterations"]) == run["iterations"]
        assert float(row["final_loss"]) == pytest.approx(run["final_loss"], rel=1e-12)
        assert float(row["error"]) == pytest.approx(run["error"], rel=1e-12)
        assert row["converged"] == str(run["status"] == "converged")
    summary = _table(paths["summary"])
    assert len(summary) == 4 and all(r["trials"] == "3" for r in summary)
    cell = [r for r in rows if r["operator.m"] == "1" and r["network.width"] == "20"]
    assert float(next(s for s in summary if s["operator.m"] == "1" and s["network.width"] == "20")["iterations_mean"]) \
        == pytest.approx(np.mean([int(r["iterations"]) for r in cell]))
    manifest = json.loads(paths["manifest"].read_text())
    assert manifest["configurations"]["operator.m=3_network.width=200"]["network"]["width"] == 200
    assert manifest["executor"] == "in-process" and "seed 0 + t" in manifest["seed_rule"]


def test_seed_rules_shared_and_per_cell(tmp_path):
    shared = _table(run_sweep(_sweep(), tmp_path / "a")["table"])
    assert [int(r["seed"]) for r in shared] == [0, 1, 2] * 4
    per_cell = _table(run_sweep(_sweep(sweep__seeds="per-cell"), tmp_path / "b")["table"])
    assert [int(r["seed"]) for r in per_cell] == list(range(12))


def test_an_interrupted_sweep_resumes_to_the_same_table(tmp_path):
    sweep = _sweep()
    first = _table(run_sweep(sweep, tmp_path)["table"])
    cells = tmp_path / "s.cells"
    (cells / "operator.m=3_network.width=20.meta.json").unlink()  # killed while writing that cell
    ran = []
    again = _table(run_sweep(sweep, tmp_path, on_group=lambda group, s: ran.extend(c.key for c in group))["table"])
    assert ran == ["operator.m=3_network.width=20"]
    assert again == first


def test_a_cells_trials_give_the_same_rows_in_smaller_batches(tmp_path):
    """Seeds, steps (one per run) and certificates do not depend on the batch a trial is trained in:
    only the last bits of batched arithmetic may move."""
    record = ["status", "iterations", "final_loss", "error", "step", "condition_4", "R_prime"]
    base = {**BASE, "method": {"step": "certified"}, "certificate": {"certify": True, "hessian_iters": 1}}
    whole = _sweep(sweep__record=record, sweep__trials=5, base=base)
    split = _sweep(sweep__record=record, sweep__trials=5, sweep__batch=2, base=base)
    assert split.batches() == [(0, 2), (2, 2), (4, 1)]
    a, b = _table(run_sweep(whole, tmp_path / "a")["table"]), _table(run_sweep(split, tmp_path / "b")["table"])
    assert len(a) == len(b) == 20
    for x, y in zip(a, b, strict=True):
        for key in ("operator.m", "network.width", "trial", "seed", "status", "iterations", "condition_4",
                    "condition_4_kind"):
            assert x[key] == y[key], key
        for key in ("final_loss", "error", "step", "R_prime"):
            assert float(x[key]) == pytest.approx(float(y[key]), rel=1e-6, abs=1e-14), key


def test_grid_blocks_concatenate_their_products_and_scales_overlay_the_file(tmp_path):
    data = {"sweep": {"name": "b", "trials": 2, "record": ["iterations"]}, "base": BASE,
            "grid": [{"operator.m": [1, 3], "network.width": [20], "training.iters": [300]},
                     {"operator.m": [1], "network.width": [200, 2000], "training.iters": [1]}],
            "scales": {"quick": {"sweep": {"trials": 1}, "base": {"network": {"d": 8}},
                                 "grid": {"operator.m": [2], "network.width": [20], "training.iters": [5]}}}}
    sweep = Sweep.from_dict(data)
    assert [c.key for c in sweep.cells()] == [
        "operator.m=1_network.width=20_training.iters=300", "operator.m=3_network.width=20_training.iters=300",
        "operator.m=1_network.width=200_training.iters=1", "operator.m=1_network.width=2000_training.iters=1"]
    assert dict(sweep.axes) == {"operator.m": (1, 3), "network.width": (20, 200, 2000), "training.iters": (300, 1)}
    rows = _table(run_sweep(sweep, tmp_path / "full")["table"])
    assert [int(r["iterations"]) <= 1 for r in rows] == [False] * 4 + [True] * 4
    quick = Sweep.from_dict(data, scale="quick")
    assert quick.trials == 1 and len(quick.cells()) == 1
    assert quick.base["network"] == {"d": 8} and quick.base["problem"] == BASE["problem"]
    assert quick.stamp() != sweep.stamp()
    with pytest.raises(ConfigError, match="has no scale 'paper'; it has: quick"):
        Sweep.from_dict(data, scale="paper")
    with pytest.raises(ConfigError, match="blocks overlap: the cell operator.m=1_network.width=20_training.iters=300"):
        Sweep.from_dict({**data, "grid": [data["grid"][0], data["grid"][0]]})


def test_blocks_may_set_different_options_and_share_one_table(tmp_path):
    """Methods with different options in one sweep: a column per axis of any block, empty where a
    cell's block does not set it; each cell's rows and summary are its own (a cell whose axes are a
    subset of another's does not take that one's rows); identical configurations are refused."""
    base = {**BASE, "network": {"width": 50}, "training": {"iters": 200, "loss_tol": 1e-10}}
    data = {"sweep": {"name": "methods", "trials": 2, "record": ["iterations", "step"]}, "base": base,
            "grid": [{"method.method": ["gd"], "method.step": [0.5, 1.0]},
                     {"method.method": ["gd", "heavy-ball"]},
                     {"method.method": ["heavy-ball"], "method.momentum": [0.5]}]}
    sweep = Sweep.from_dict(data)
    assert dict(sweep.axes) == {"method.method": ("gd", "heavy-ball"), "method.step": (0.5, 1.0, ""),
                                "method.momentum": (0.5, "")}
    paths = run_sweep(sweep, tmp_path)
    rows = _table(paths["table"])
    assert list(rows[0])[:5] == ["method.method", "method.step", "method.momentum", "trial", "seed"]
    assert [(r["method.method"], r["method.step"], r["method.momentum"]) for r in rows[::2]] == [
        ("gd", "0.5", ""), ("gd", "1.0", ""), ("gd", "", ""), ("heavy-ball", "", ""), ("heavy-ball", "", "0.5")]
    expected = solve(RunConfig.build({**base, "method": {"method": "heavy-ball", "momentum": 0.5},
                                      "run": {"seed": 0, "runs": 2}})).metrics["runs"]
    assert [int(r["iterations"]) for r in rows[8:]] == [run["iterations"] for run in expected]
    summary = _table(paths["summary"])
    assert [int(r["trials"]) for r in summary] == [2] * 5
    auto_gd = next(r for r in summary if r["method.method"] == "gd" and r["method.step"] == "")
    assert float(auto_gd["iterations_mean"]) == pytest.approx(np.mean([int(r["iterations"]) for r in rows[4:6]]))
    assert float(auto_gd["step_mean"]) != 0.5 and float(auto_gd["step_mean"]) != 1.0
    read_rows, arrays = finished_results(sweep, tmp_path)
    assert [(r["method.step"], r["iterations"]) for r in read_rows] == [
        (float(r["method.step"]) if r["method.step"] else "", int(r["iterations"])) for r in rows] and arrays == {}
    with pytest.raises(ValueError, match=r"unfinished cell\(s\) method.method=gd"):
        finished_results(sweep, tmp_path / "elsewhere")
    twice = {**data, "grid": [{"method.method": ["gd"], "method.step": ["auto"]}, {"method.method": ["gd"]}]}
    with pytest.raises(ConfigError, match="cells method.method = gd, method.step = auto and method.method = gd have "
                                          "the same configuration"):
        run_sweep(Sweep.from_dict(twice), tmp_path / "twice")
    with pytest.raises(ConfigError, match=r"\[plot\] x must be an axis of every \[\[grid\]\] block \(method.method\)"):
        Sweep.from_dict({**data, "plot": {"x": "method.step", "y": "method.method", "value": "iterations"}})


def test_a_changed_sweep_is_refused_in_the_same_folder_but_the_plot_may_change(tmp_path):
    run_sweep(_sweep(), tmp_path)
    with pytest.raises(ValueError, match="another configuration"):
        run_sweep(_sweep(sweep__trials=4), tmp_path)
    plotted = _sweep(plot__kind="curves", plot__x="network.width", plot__y="operator.m", plot__value="converged")
    paths = run_sweep(plotted, tmp_path)
    assert paths["figure"].stat().st_size > 0


@pytest.mark.parametrize("changes, message", [
    ({"sweep__trials": 0}, r"trials must be an integer from 1"),
    ({"sweep__seeds": "random"}, r"seeds must be one of shared, per-cell"),
    ({"sweep__batch": 4}, r"batch \(trials trained at once\) must be an integer from 1 to trials = 3, got 4"),
    ({"sweep__batch": 0}, r"batch .* from 1 to trials"),
    ({"sweep__record": ["psnr2"]}, r"unknown output\(s\) psnr2; allowed: status"),
    ({"sweep__colour": 1}, r"\[sweep\]: unknown key\(s\) colour"),
    ({"sweep__name": "../x"}, r"name must be a file name"),
    ({"grid__width": [1]}, r"keys are section.option"),
    ({"grid__run.seed": [1, 2]}, r"seeds and trials belong to \[sweep\]"),
    ({"grid__network.d": []}, r"non-empty list"),
    ({"grid__operator.m": None, "grid__network.width": None}, r"\[grid\] is empty: a sweep needs at least one axis"),
    ({"grid__network.d": [4, 4]}, r"lists a value twice"),
    ({"plot__x": "network.width", "plot__y": "operator.n", "plot__value": "converged"}, r"\[plot\] y must be an axis of every \[\[grid\]\] block"),
    ({"plot__x": "network.width", "plot__y": "operator.m", "plot__value": "psnr"}, r"value must be a recorded output"),
    ({"plot__x": "network.width", "plot__y": "operator.m", "plot__value": "converged", "plot__statistic": "mode"},
     r"statistic must be one of mean"),
])
def test_bad_sweep_files_are_refused_with_what_is_allowed(changes, message):
    with pytest.raises(ConfigError, match=message):
        _sweep(**changes)


def test_every_cell_is_checked_before_any_work(tmp_path):
    bad = _sweep(**{"grid__network.width": [20, 0]})
    with pytest.raises(ConfigError, match=r"cell operator.m = 1, network.width = 0: --width: expected an integer >= 1"):
        run_sweep(bad, tmp_path)
    assert not (tmp_path / "s.cells").exists()
    with pytest.raises(ConfigError, match=r"condition_4 is a certificate quantity: set \[base.certificate\] certify"):
        run_sweep(_sweep(sweep__record=["condition_4"]), tmp_path)
    with pytest.raises(ConfigError, match=r"psnr needs an image problem"):
        run_sweep(_sweep(sweep__record=["psnr"]), tmp_path)
    with pytest.raises(ConfigError, match=r"--width does not apply to --network mlp"):
        run_sweep(_sweep(**{"grid__network.network": ["two-layer", "mlp"]}), tmp_path)
    huge = _sweep(**{"grid__network.width": [2_000_000_000]}, sweep__trials=1000)
    with pytest.raises(ConfigError, match=r"cell operator.m = 1, network.width = 2000000000: .*memory"):
        run_sweep(huge, tmp_path)


def test_certificate_outputs_say_their_kind_and_images_record_psnr(tmp_path):
    sweep = Sweep.from_dict({
        "sweep": {"name": "c", "trials": 2, "record": ["condition_4", "sigma_min_J0", "step_max"]},
        "base": {**BASE, "certificate": {"certify": True}}, "grid": {"network.width": [50]}})
    rows = _table(run_sweep(sweep, tmp_path)["table"])
    assert {r["sigma_min_J0_kind"] for r in rows} == {"exact"} and {r["step_max_kind"] for r in rows} == {"upper bound"}
    assert all(r["condition_4"] in ("True", "False", "") for r in rows)
    image = Sweep.from_dict({
        "sweep": {"name": "i", "trials": 1, "record": ["psnr", "stop_tau"]},
        "base": {"problem": {"signal": "image", "image": "builtin:camera", "size": "16"},
                 "network": {"network": "two-layer", "width": 50}, "training": {"iters": 20}},
        "grid": {"noise.noise_std": [0.0, 10.0]}})
    rows = _table(run_sweep(image, tmp_path)["table"])
    assert len(rows) == 2 and all(np.isfinite(float(r["psnr"])) for r in rows)


def test_condition_4_by_form_is_the_certificate_of_each_trial_at_theta_0(tmp_path):
    """The per-form outputs are Fig. 1 (a)'s quantity: condition (4) of each trial's own problem and
    initialization under each Lipschitz form (built here directly), whatever the training did."""
    from dipcert.certify import LIPSCHITZ_FORMS, certify_forms
    from dipcert.networks import TwoLayerDIP
    from dipcert.problems import gaussian_problem
    from dipcert.seeding import derive_seed

    names = [f"condition_4_{form.replace('-', '_')}" for form in LIPSCHITZ_FORMS]
    sweep = Sweep.from_dict({"sweep": {"name": "f", "trials": 6, "batch": 4, "record": names},
                             "base": {**BASE, "training": {"iters": 50}},
                             "grid": {"operator.m": [1, 3], "network.width": [3000]}})
    rows = _table(run_sweep(sweep, tmp_path)["table"])
    held = 0
    for m in (1, 3):
        seeds = list(range(6))
        network = TwoLayerDIP(5, 3000, seeds=[derive_seed(s, "network") for s in seeds])
        expected = certify_forms(gaussian_problem(5, m, seeds), network, LIPSCHITZ_FORMS, hessian_iters=0)
        mine = [r for r in rows if r["operator.m"] == str(m)]
        for t, row in enumerate(mine):
            assert [row[n] for n in names] == [str(bool(c.holds[t])) for c in expected]
            held += sum(bool(c.holds[t]) for c in expected)
    assert 0 < held < 2 * 6 * 3  # the case decides both ways
    with pytest.raises(ConfigError, match="needs the two-layer network and the MSE loss; cell network.network = mlp"):
        Sweep.from_dict({"sweep": {"record": names[:1]}, "base": BASE, "grid": {"network.network": ["mlp"]}}).check()


def test_cli_sweep_runs_a_file_and_lists_outputs(tmp_path):
    text = """
[sweep]
name = "cli"
trials = 2
[base]
problem = { signal = "gaussian", n = 4 }
training = { iters = 100 }
[grid]
"network.width" = [10, 100]
"operator.m" = [1, 2]
[plot]
kind = "curves"
x = "network.width"
y = "operator.m"
value = "converged"
"""
    path = tmp_path / "cli.toml"
    path.write_text(text)
    runner = CliRunner()
    result = runner.invoke(main, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "4 cell(s) x 2 trial(s), in-process" in result.output
    assert len(_table(tmp_path / "out" / "cli.csv")) == 8 and (tmp_path / "out" / "cli.png").exists()
    listing = runner.invoke(main, ["sweep", "--list"])
    assert listing.exit_code == 0 and all(name in listing.output for name in OUTPUTS)
    assert runner.invoke(main, ["sweep"]).exit_code == 2
    clash = runner.invoke(main, ["sweep", str(path), "--cluster", "local:2", "--scheduler", "tcp://x:1"])
    assert clash.exit_code == 1 and "exclude each other" in clash.output
    bad = runner.invoke(main, ["sweep", str(path), "--cluster", "local:0"])
    assert bad.exit_code == 1 and "local:N with N from 1" in bad.output
    missing = runner.invoke(main, ["sweep", str(tmp_path / "none.toml")])
    assert missing.exit_code == 1 and "cannot read sweep file" in missing.output


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_every_example_sweep_file_is_valid(path):
    import tomllib

    for scale in (None, *tomllib.loads(path.read_text()).get("scales", {})):
        sweep = Sweep.load(path, scale)
        assert len(sweep.check()) == len(sweep.cells()) > 1 and sweep.plot is not None
