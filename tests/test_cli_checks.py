"""Bad input is refused before any work, with one line; nothing is lost or mixed (issue 10)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import dipcert.solve
from dipcert.cli import EXIT_DIVERGED, main

SMALL = ["--size", "16", "--network", "two-layer", "--width", "300", "--iters", "30", "--quiet"]


def _invoke(args):
    return CliRunner().invoke(main, args)


def _assert_one_line_error(result, *fragments):
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 or lines[0].startswith("Usage:"), result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if anything is built or trained: refusals must come first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the input was refused")

    for name in ("build_problem", "build_network", "train"):
        monkeypatch.setattr(dipcert.solve, name, forbidden)


@pytest.mark.parametrize("args, fragments", [
    (["--size", "512", "--width", "100000"], ["GB", "--width"]),
    (["--size", "128", "--width", "100000"], ["GB"]),
    (["--runs", "1000000", "--width", "100000"], ["GB", "--runs"]),
    (["--width", "1e12"], ["--width", "expected an integer"]),
    (["--runs", "1e9"], ["--runs", "expected an integer"]),
    (["--blur-sigma", "1e300"], ["--blur-sigma"]),
    (["--blur-sigma", "1e5", "--boundary", "reflect"], ["--blur-sigma", "8192"]),
    (["--blur-sigma", "100", "--boundary", "reflect"], ["--blur-sigma", "wider than the image"]),
    (["--device", "meta"], ["--device"]),
    (["--device", "hpu"], ["--device"]),
    (["--method", "gradient-flow", "--rtol", "inf"], ["--rtol", "not finite"]),
    (["--n", "7"], ["--n does not apply to --signal image"]),
    (["--size", "2"], ["at least 7 pixels"]),
    (["--size", "1x64"], ["at least 7 pixels"]),
    (["--loss", "kl", "--noise-std", "5"], ["--noise poisson"]),
    (["--loss", "logistic"], ["--noise one-bit"]),
    (["--operator", "gaussian", "--noise", "poisson"], ["A x̄ >= 0"]),
    (["--config", "missing.toml"], ["cannot read config file"]),
])
def test_solve_refuses_before_any_work(tmp_path, no_work, args, fragments):
    result = _invoke(["solve", *SMALL, "--iters", "1000000000", *args, "--out", str(tmp_path / "out")])
    _assert_one_line_error(result, *fragments)


@pytest.mark.parametrize("args, fragments", [
    (["--k", "100000000"], ["GB"]),
    (["--dist", "nan"], ["--dist", "not finite"]),
    (["--corollary-constants", "-1,1"], ["--corollary-constants"]),
    (["--method", "adam"], ["--method"]),
])
def test_certify_refuses_before_any_work(no_work, args, fragments):
    _assert_one_line_error(_invoke(["certify", *args]), *fragments)


def test_unwritable_output_is_refused_before_training(tmp_path, no_work):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _invoke(["solve", *SMALL, "--out", str(blocker / "out")])
    _assert_one_line_error(result, "not writable", "--out")


def test_a_reused_output_folder_holds_only_the_new_run(tmp_path):
    out = tmp_path / "out"
    assert _invoke(["solve", *SMALL, "--out", str(out)]).exit_code == 0
    (out / "notes.txt").write_text("mine")
    result = _invoke(["solve", "--signal", "gaussian", "--n", "4", "--m", "3", "--width", "50", "--iters", "20",
                      "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / "reconstruction.png").exists() and not (out / "observation.png").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "metrics.json").read_text())["config"]["problem"]["signal"] == "gaussian"


def test_float_images_on_the_0_255_scale_are_not_clipped(tmp_path):
    ramp = np.linspace(0, 255, 16 * 16).reshape(16, 16)
    np.savez(tmp_path / "ramp.npz", image=ramp)
    result = _invoke(["solve", *SMALL, "--image", str(tmp_path / "ramp.npz"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "note:" in result.output and "[0, 255]" in result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["notes"] and 15 < metrics["psnr_observation"] < 60  # an all-white truth would give 5 dB


def test_constant_images_work(tmp_path):
    np.save(tmp_path / "zero.npy", np.zeros((16, 16)))
    result = _invoke(["solve", *SMALL, "--image", str(tmp_path / "zero.npy"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["relative_error"] is None and np.isfinite(metrics["error"])
    assert (tmp_path / "out" / "summary.png").stat().st_size > 0


def test_divergence_at_iteration_zero_exits_3_with_every_output(tmp_path, monkeypatch):
    from dipcert.losses import MSELoss

    monkeypatch.setattr(MSELoss, "value", lambda self, v, y: torch_full_inf(v))
    result = _invoke(["solve", *SMALL, "--out", str(tmp_path / "out")])
    assert result.exit_code == EXIT_DIVERGED, result.output
    assert "diverged" in result.output
    for name in ("metrics.json", "config.toml", "history.csv", "summary.png", "observation.png", "reconstruction.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["iterations"] == 0


def torch_full_inf(v):
    import torch

    return torch.full(v.shape[:-1], float("inf"), dtype=v.dtype, device=v.device)


def test_a_stalled_loss_is_reported_not_max_iterations(tmp_path):
    # W trained with a step far above 2/L: the sigmoids saturate, the loss jumps and freezes (it used to
    # end as max_iterations, exit 0)
    result = _invoke(["solve", "--signal", "gaussian", "--n", "5", "--m", "2", "--width", "200", "--step", "100",
                      "--iters", "1000", "--stall-patience", "50", "--quiet", "--out", str(tmp_path / "out")])
    assert result.exit_code == EXIT_DIVERGED, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["iterations"] == 50
    assert "above its initial value for 50 consecutive iterations" in result.output
    history = np.genfromtxt(tmp_path / "out" / "history.csv", delimiter=",", names=True)
    assert np.all(history["loss"][1:] > history["loss"][0])


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_and_keeps_every_output(tmp_path, signum, code):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dipcert", "solve", "--size", "16", "--network", "two-layer", "--width", "300", "--iters", "100000000",
         "--quiet", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    try:
        time.sleep(10)  # past start-up and into training
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=max(1, deadline - time.monotonic()))
    finally:
        proc.kill()
    assert proc.returncode == code, output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["iterations"] > 0
    assert (out / "summary.png").stat().st_size > 0 and "Traceback" not in output


def test_outputs_follow_the_umask(tmp_path):
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "dipcert", "solve", *SMALL, "--out", str(out)], check=True,
                   capture_output=True, preexec_fn=lambda: os.umask(0o027), timeout=300)
    files = list(out.iterdir())
    assert len(files) == 6
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o640, path
