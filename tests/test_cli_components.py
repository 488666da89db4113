"""Every registered component is reachable from the command line, and a run repeats from its
metrics.json bit for bit (issue 10)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from dipcert.cli import main

DEMO = ["--image", "builtin:camera", "--operator", "blur", "--blur-sigma", "1", "--noise-std", "0", "--network", "two-layer", "--width", "10000",
        "--train", "WV", "--iters", "40", "--seed", "0"]  # the paper's network on its Fig. 3a blur
GAUSSIAN = ["--signal", "gaussian", "--n", "5", "--m", "2", "--width", "300", "--iters", "3000", "--seed", "4"]
MLP = ["--size", "16", "--network", "mlp", "--widths", "64,32", "--iters", "60", "--method", "adam", "--runs", "2"]
KL = ["--size", "16", "--network", "two-layer", "--width", "500", "--noise", "poisson", "--photons", "30", "--loss", "kl", "--iters", "60"]
TIMES = ("seconds",)


def _solve(args, out):
    result = CliRunner().invoke(main, ["solve", *args, "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text()), result.output


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _history_without_seconds(path):
    rows = [line.split(",") for line in path.read_text().splitlines()]
    drop = rows[0].index("seconds")
    return [row[:drop] + row[drop + 1:] for row in rows]


@pytest.mark.parametrize("args", [DEMO, GAUSSIAN, MLP, KL], ids=["image-demo", "gaussian", "mlp", "kl-poisson"])
def test_a_run_repeats_from_its_metrics_bit_for_bit(tmp_path, args):
    first, _ = _solve(args, tmp_path / "a")
    again, _ = _solve(["--config", str(tmp_path / "a" / "metrics.json")], tmp_path / "b")
    assert _without_times(again) == _without_times(first)
    assert _history_without_seconds(tmp_path / "b" / "history.csv") == \
        _history_without_seconds(tmp_path / "a" / "history.csv")
    from_toml, _ = _solve(["--config", str(tmp_path / "a" / "config.toml")], tmp_path / "c")
    assert _without_times(from_toml) == _without_times(first)


def test_command_line_options_override_the_config_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[problem]\nsize = 16\n\n[network]\nnetwork = "two-layer"\nwidth = 300\n\n[training]\niters = 10\n')
    metrics, _ = _solve(["--config", str(path), "--iters", "12"], tmp_path / "out")
    assert metrics["iterations"] == 12 and metrics["config"]["network"]["width"] == 300
    assert metrics["config"]["problem"]["size"] == [16, 16]


def test_kl_loss_with_poisson_noise_trains_and_states_its_certificate(tmp_path):
    metrics, output = _solve([*KL, "--certify"], tmp_path / "out")
    assert metrics["config"]["noise"] == {"noise": "poisson", "photons": 30.0}
    assert metrics["details"]["training"]["loss"]["name"] == "kl"
    assert metrics["psnr"] > metrics["psnr_observation"]
    certificate = metrics["certificate"]
    assert "domain" in json.dumps(certificate)


def test_logistic_loss_with_one_bit_data_says_it_has_no_certificate(tmp_path):
    metrics, output = _solve(["--signal", "gaussian", "--n", "8", "--m", "40", "--width", "300", "--iters", "200",
                              "--noise", "one-bit", "--noise-std", "0.1", "--loss", "logistic", "--certify"],
                             tmp_path / "out")
    assert metrics["certificate"]["available"] is False
    assert "no certificate" in output and "infimum" in metrics["certificate"]["reason"]
    assert metrics["final_loss"] < metrics["runs"][0]["final_loss"] + 1  # trained, finite
    history = np.genfromtxt(tmp_path / "out" / "history.csv", delimiter=",", names=True)
    assert history["loss"][-1] < history["loss"][0]


def test_mlp_trains_and_is_certified_through_jacobian_products(tmp_path):
    metrics, output = _solve(["--size", "16", "--network", "mlp", "--widths", "128", "--iters", "50", "--certify"],
                             tmp_path / "out")
    assert metrics["details"]["network"]["type"] == "mlp" and metrics["details"]["network"]["widths"] == [128]
    kinds = metrics["certificate"]["kinds"]
    assert kinds["sigma_min_J0"] == "exact" and kinds["lip_J"] == "estimate"
    assert "estimate" in output
    history = np.genfromtxt(tmp_path / "out" / "history.csv", delimiter=",", names=True)
    assert history["loss"][-1] < history["loss"][0]


def test_certify_takes_the_mlp_and_the_kl_loss():
    runner = CliRunner()
    mlp = runner.invoke(main, ["certify", "--size", "16", "--network", "mlp", "--widths", "64", "--json"])
    assert mlp.exit_code == 0, mlp.output
    assert json.loads(mlp.output)["kinds"]["sigma_min_J0"] == "exact"
    kl = runner.invoke(main, ["certify", "--size", "16", "--width", "500", "--noise", "poisson", "--loss", "kl"])
    assert kl.exit_code == 0, kl.output
    logistic = runner.invoke(main, ["certify", "--signal", "gaussian", "--noise", "one-bit", "--loss", "logistic"])
    assert logistic.exit_code == 1 and "no certificate" in logistic.output
