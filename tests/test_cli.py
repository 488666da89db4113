import json

import numpy as np
import pytest
from click.testing import CliRunner

from dipcert.cli import EXIT_DIVERGED, main

SMALL = ["--size", "16", "--network", "two-layer", "--width", "300", "--iters", "30", "--quiet"]


def _run(args, tmp_path):
    return CliRunner().invoke(main, ["solve", *args, "--out", str(tmp_path / "out")])


def _assert_clean_error(result, *fragments):
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_solve_image_writes_everything(tmp_path):
    result = _run(["--image", "builtin:camera", "--operator", "blur", "--seed", "3", *SMALL], tmp_path)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    for name in ("metrics.json", "history.csv", "observation.png", "reconstruction.png", "summary.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("psnr", "ssim", "final_loss", "iterations", "status", "seconds", "config", "versions", "step"):
        assert key in metrics
    assert metrics["config"]["run"]["seed"] == 3 and metrics["config"]["network"]["train"] == "WV"
    assert metrics["versions"]["torch"].startswith("2.")
    assert metrics["iterations"] == 30 and metrics["status"] == "max_iterations"
    assert metrics["psnr"] > metrics["psnr_observation"]  # the reconstruction deblurs
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["run", "iteration", "seconds", "loss", "error"]
    history = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    assert len(history) == 31 and history["loss"][-1] < history["loss"][0]
    assert "PSNR" in result.output and "summary.png" in result.output


@pytest.mark.parametrize("operator", ["well-conditioned", "gaussian", "inpainting"])
def test_solve_other_operators(tmp_path, operator):
    result = _run(["--operator", operator, "--noise-std", "5", *SMALL], tmp_path)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["details"]["operator"]["type"]
    assert np.isfinite(metrics["psnr"]) and metrics["noise_norm"] > 0


def test_solve_synthetic_gaussian(tmp_path):
    result = _run(["--signal", "gaussian", "--n", "5", "--m", "2", "--width", "200", "--iters", "20000", "--quiet"], tmp_path)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "converged" and metrics["final_loss"] <= 1e-14
    assert metrics["config"]["network"]["train"] == "W" and metrics["config"]["run"]["dtype"] == "float64"
    assert (out / "summary.png").exists() and not (out / "reconstruction.png").exists()


def test_same_seed_same_result(tmp_path):
    args = ["--signal", "gaussian", "--n", "4", "--m", "3", "--width", "50", "--iters", "200", "--quiet"]
    _run(args, tmp_path / "a")
    _run(args, tmp_path / "b")
    a = (tmp_path / "a" / "out" / "history.csv").read_text().splitlines()
    b = (tmp_path / "b" / "out" / "history.csv").read_text().splitlines()
    drop_seconds = lambda rows: [",".join(r.split(",")[:2] + r.split(",")[3:]) for r in rows]
    assert drop_seconds(a) == drop_seconds(b)


def test_several_runs(tmp_path):
    result = _run(["--runs", "3", *SMALL], tmp_path)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [r["seed"] for r in metrics["runs"]] == [0, 1, 2]
    history = np.genfromtxt(tmp_path / "out" / "history.csv", delimiter=",", names=True)
    assert sorted(set(history["run"].astype(int))) == [0, 1, 2]


def test_divergence_exits_with_code_and_keeps_history(tmp_path):
    result = _run(["--step", "1e6", *SMALL], tmp_path)
    assert result.exit_code == EXIT_DIVERGED
    assert "diverged" in result.output and "smaller --step" in result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["status"] == "diverged"
    assert (tmp_path / "out" / "history.csv").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--image", "builtin:nope"], ["unknown built-in image 'nope'", "camera"]),
        (["--image", "missing.png"], ["image file not found"]),
        (["--operator", "radon"], ["Invalid value for '--operator'", "blur"]),
        (["--width", "0"], ["--width", "expected an integer >= 1"]),
        (["--step", "-1"], ["--step", "expected a number > 0"]),
        (["--step", "fast"], ["--step", "auto", "certified"]),
        (["--iters", "0"], ["--iters", "expected an integer >= 1"]),
        (["--size", "0"], ["--size"]),
        (["--blur-sigma", "0"], ["--blur-sigma"]),
        (["--keep-fraction", "1.5", "--operator", "inpainting"], ["--keep-fraction", "expected a number > 0 and <= 1"]),
        (["--device", "tpu"], ["--device", "'tpu'"]),
    ],
)
def test_bad_input_one_line_error(tmp_path, args, fragments):
    result = _run([*SMALL, *args], tmp_path)  # later options win
    _assert_clean_error(result, *fragments)


def test_unreadable_and_nan_files(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    _assert_clean_error(_run(["--image", str(bad), *SMALL], tmp_path), "cannot read image")
    nan = tmp_path / "nan.npy"
    arr = np.full((16, 16), 100.0)
    arr[3, 4] = np.nan
    np.save(nan, arr)
    _assert_clean_error(_run(["--image", str(nan), *SMALL], tmp_path), "NaN")


def test_npy_image_is_used_as_is(tmp_path):
    arr = np.linspace(0, 255, 256).reshape(16, 16)
    path = tmp_path / "ramp.npy"
    np.save(path, arr)
    result = _run(["--image", str(path), *SMALL], tmp_path)
    assert result.exit_code == 0, result.output


def test_certify_report_and_json(tmp_path):
    runner = CliRunner()
    args = ["certify", "--signal", "gaussian", "--n", "5", "--m", "2", "--k", "100000"]
    text = runner.invoke(main, args)
    assert text.exit_code == 0, text.output
    assert "upper bound" in text.output and "Theorem III.1 applies" in text.output
    result = runner.invoke(main, [*args, "--json"])
    data = json.loads(result.output)
    for key in ("sigma_A", "norm_A", "sigma_min_J0", "lip_J", "R", "R_prime", "nu1", "nu2", "L", "step",
                "condition_4", "margin", "k_bound"):
        assert key in data
    assert data["condition_4"] is True and data["margin"] > 0
    assert data["step"] == pytest.approx(1 / (2 * data["L"]))  # certify defaults to the certified step


def test_certify_save_instance_recomputes_independently(tmp_path):
    path = tmp_path / "inst.npz"
    args = ["certify", "--signal", "gaussian", "--n", "4", "--m", "3", "--k", "500", "--json", "--save-instance", str(path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[: result.output.rindex("}") + 1])
    inst = np.load(path)
    A, y, x, u, W0, V0 = (inst[k][0] for k in ("A", "y", "x_true", "u", "W0", "V0"))
    assert np.allclose(A @ x, y)
    sv = np.linalg.svd(A, compute_uv=False)
    assert data["sigma_A"] == pytest.approx(sv[-1], rel=1e-12) and data["norm_A"] == pytest.approx(sv[0], rel=1e-12)
    z = W0 @ u
    np.testing.assert_allclose(z, inst["z0"][0], atol=1e-12)
    sig = 1 / (1 + np.exp(-z))
    k = V0.shape[1]
    jac = V0 * (sig * (1 - sig)) / np.sqrt(k)  # J_W for ‖u‖ = 1, reduced to z
    assert data["sigma_min_J0"] == pytest.approx(np.linalg.svd(jac, compute_uv=False)[-1], rel=1e-10)
    y0 = A @ (V0 @ sig) / np.sqrt(k)
    assert data["loss0"] == pytest.approx(0.5 * np.sum((y0 - y) ** 2), rel=1e-12)


def test_solve_with_certificate_writes_bounds(tmp_path):
    result = _run(["--signal", "gaussian", "--n", "5", "--m", "2", "--width", "100000", "--iters", "300",
                   "--step", "certified", "--certify", "--quiet"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "Theorem III.1 applies" in result.output
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["certificate"]["condition_4"] is True
    history = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    assert {"loss_bound", "param_bound"} <= set(history.dtype.names)
    assert np.all(history["loss"] <= history["loss_bound"] * (1 + 1e-9))
    assert np.all(history["param_dist"] <= history["param_bound"])


def test_certify_image_problem_runs(tmp_path):
    result = CliRunner().invoke(main, ["certify", "--size", "12", "--k", "2000", "--operator", "well-conditioned",
                                       "--noise-std", "50"])
    assert result.exit_code == 0, result.output
    assert "sigma_min(A): A injective" in result.output


def test_certify_bad_input(tmp_path):
    result = CliRunner().invoke(main, ["certify", "--signal", "gaussian", "--train", "WV", "--lipschitz-form", "radius-free"])
    _assert_clean_error(result, "radius-free Lipschitz bound holds only when V is fixed")
    result = CliRunner().invoke(main, ["certify", "--step", "fast"])
    _assert_clean_error(result, "--step")


GAUSSIAN = ["--signal", "gaussian", "--n", "5", "--m", "2", "--width", "1000", "--loss-tol", "1e-10", "--quiet"]


@pytest.mark.parametrize("method", ["gd", "heavy-ball", "nesterov", "adam", "gradient-difference", "inna",
                                    "gradient-flow", "inertial-flow"])
def test_solve_every_method(tmp_path, method):
    result = _run([*GAUSSIAN, "--method", method], tmp_path)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["status"] == "converged"
    assert metrics["details"]["training"]["method"]["name"] == method
    assert metrics["details"]["network"]["parametrization"] == ("full" if method == "adam" else "reduced")
    history = np.genfromtxt(tmp_path / "out" / "history.csv", delimiter=",", names=True)
    assert history["evaluations"][-1] == metrics["gradient_evaluations"] >= metrics["iterations"]
    assert ("time" in history.dtype.names) == (method in ("gradient-difference", "inna", "gradient-flow", "inertial-flow"))
    for name, entry in metrics["hyperparameters"].items():
        assert "rule" in entry or name == "solver", name


def test_solve_inertial_options_and_a_posteriori_bound(tmp_path):
    result = _run(["--signal", "gaussian", "--n", "4", "--width", "2000", "--noise-std", "0.3", "--quiet",
                   "--method", "gradient-difference", "--alpha", "0.5", "--beta", "0.1", "--adaptive-step",
                   "--step", "0.5", "--iters", "300", "--certify"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "no a-priori certificate" in result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    hyper = metrics["hyperparameters"]
    assert hyper["alpha"] == {"value": 0.5, "rule": "user"} and hyper["beta"]["value"] == 0.1
    assert "adaptive" in hyper["step"]["rule"]
    history = np.genfromtxt(tmp_path / "out" / "history.csv", delimiter=",", names=True)
    assert np.all(history["error"] <= history["error_bound_a_posteriori"] * (1 + 1e-9))


def test_solve_gradient_flow_certificate_in_time(tmp_path):
    result = _run(["--signal", "gaussian", "--n", "5", "--m", "2", "--width", "100000", "--iters", "200",
                   "--method", "gradient-flow", "--certify", "--quiet"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "gradient-flow version of Theorem III.1 (as reconstructed" in result.output
    history = np.genfromtxt(tmp_path / "out" / "history.csv", delimiter=",", names=True)
    assert np.all(history["loss"] <= history["loss_bound"] * (1 + 1e-7))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["certificate"]["settings"]["dynamics"] == "flow" and metrics["step"] is None


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--method", "newton"], ["Invalid value for '--method'"]),
        (["--method", "gradient-flow", "--step", "0.1"], ["--step does not apply to --method gradient-flow"]),
        (["--method", "heavy-ball", "--step", "certified"], ["certified exists for gd"]),
        (["--method", "gd", "--adaptive-step"], ["--adaptive-step does not apply to --method gd"]),
        (["--method", "gd", "--alpha", "1"], ["--alpha does not apply"]),
        (["--method", "inna", "--momentum", "0.5"], ["--momentum does not apply"]),
        (["--method", "nesterov", "--rtol", "1e-3"], ["--rtol does not apply to --method nesterov"]),
        (["--method", "inna", "--beta", "0"], ["INNA needs beta > 0"]),
        (["--method", "inertial-flow", "--alpha", "-1"], ["--alpha", "expected a number >= 0"]),
        (["--method", "heavy-ball", "--momentum", "1"], ["--momentum"]),
        (["--method", "gradient-flow", "--rtol", "0"], ["--rtol", "expected a number > 0"]),
    ],
)
def test_method_bad_input(tmp_path, args, fragments):
    _assert_clean_error(_run([*GAUSSIAN, *args], tmp_path), *fragments)


def test_inertial_divergence_exits_with_code(tmp_path):
    result = _run([*SMALL, "--method", "heavy-ball", "--step", "1e6"], tmp_path)  # W and V trained: unbounded
    assert result.exit_code == EXIT_DIVERGED, result.output
    assert "diverged" in result.output


def test_certify_gradient_flow(tmp_path):
    result = CliRunner().invoke(main, ["certify", "--signal", "gaussian", "--n", "5", "--m", "2", "--k", "100000",
                                       "--method", "gradient-flow", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["nu1"] == 1 and data["kinds"]["nu1"] == "exact" and data["settings"]["dynamics"] == "flow"
    assert data["condition_4"] is True and "step_max" not in data
