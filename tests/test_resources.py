from pathlib import Path

import pytest

from dipcert.resources import (
    ALLOWANCE,
    METHODS,
    ODE_STAGES,
    OPERATORS,
    ResourceError,
    _cgroup_headroom,
    available_bytes,
    check_fits,
    estimate_run_bytes,
    history_rows,
)

# 2 runs of a 4×4 image, k = 100, float32, both layers trained, gradient descent
SMALL = dict(n=16, m=16, batch=2, itemsize=4, operator="blur", method="gd", k=100, train="WV", history_rows=10)
E = 2 * 16 * 100  # entries of V0 over the batch


def _training(breakdown: dict) -> int:
    return sum(v for name, v in breakdown.items()
               if not name.startswith("setup") and name not in ("total", "allowance"))


def test_small_run_by_hand():
    b = estimate_run_bytes(**SMALL)
    assert b["V0"] == E * 4 + 2 * 100 * 4  # V0 and z0
    assert b["operator"] == 16 * 16  # the blur's transfer function
    assert b["trained parameters"] == (2 * 100 + E) * 4  # z and V
    assert b["gradients and activations"] == 8 * (2 * 100 + 2 * (16 + 16)) * 4
    assert b["stopped runs"] == b["trained parameters"] + b["V0"] // 2
    assert b["history"] == 10 * (2 * 400 + 1000)
    assert b["stopping rule"] == 1 * 2 * 16 * 4  # the chosen iterate of each run
    assert "method state" not in b and "V0 transposed (fused kernel)" not in b  # gd; n < 64, V0 small
    assert b["setup: V0 drawn in float64"] == E * 16  # the float64 draws and their stack
    assert b["allowance"] == ALLOWANCE
    training = 256 + 13_600 + 13_600 + 8_448 + 20_400 + 18_000 + 128
    assert _training(b) == training
    assert b["total"] == training + ALLOWANCE  # training outweighs the draw of V0 (65 056 bytes)


def test_64x64_blur_peaks_at_the_float64_draw_of_v0():
    k, n = 10_000, 4096
    b = estimate_run_bytes(n=n, m=n, batch=1, itemsize=4, operator="blur", method="gd", k=k, train="WV",
                           history_rows=0)
    assert b["V0 transposed (fused kernel)"] == n * k * 4  # n >= 64: the fused kernel's copy
    assert b["total"] == 20 * n * k + 4 * k + 16 * n + ALLOWANCE  # V0 in float64, stacked, then cast
    # measured by benchmarks/bench_memory.py: 0.82 GB of peak RSS above the baseline
    assert 1.0 <= b["total"] / 0.819e9 <= 1.1


def test_float64_draw_is_its_own_stack():
    b = estimate_run_bytes(**{**SMALL, "itemsize": 8})
    assert b["setup: V0 drawn in float64"] == E * 8


@pytest.mark.parametrize("method, copies", [("heavy-ball", 1), ("nesterov", 1), ("gradient-difference", 1)])
def test_velocity_methods_keep_one_copy(method, copies):
    gd, other = estimate_run_bytes(**SMALL), estimate_run_bytes(**{**SMALL, "method": method})
    assert other["method state"] == copies * gd["trained parameters"]


def test_inna_keeps_psi_and_three_temporaries():
    b = estimate_run_bytes(**{**SMALL, "method": "inna"})
    assert b["method state"] == ((2 * 100 + E) + 3 * E) * 4


def test_adam_trains_the_full_w_with_two_moments():
    d = 32
    b = estimate_run_bytes(**{**SMALL, "method": "adam", "d": d})
    trained = 2 * 100 * d + E  # W (k×d) and V
    assert b["W0"] == 2 * 100 * d * 4
    assert b["trained parameters"] == trained * 4
    assert b["method state"] == (2 * trained + 2 * 2 * 100 * d) * 4  # m, v; two temporaries of W, the largest
    assert b["gradients and activations"] == 8 * (2 * 100 + 2 * 32) * 4 + trained * 4  # autograd: dense
    v_only = estimate_run_bytes(**{**SMALL, "method": "adam", "train": "V"})
    assert v_only["method state"] == (2 * E + 2 * E + E) * 4  # … and the rank-one V-gradient made dense
    assert "W0" not in v_only


@pytest.mark.parametrize("solver", list(ODE_STAGES))
def test_ode_solver_state_in_float64(solver):
    b = estimate_run_bytes(**{**SMALL, "method": "gradient-flow", "ode_solver": solver})
    trained = 2 * 100 + E
    assert b["ODE solver (float64)"] == (ODE_STAGES[solver] + 10) * trained * 8 + 2 * E * 4
    inertial = estimate_run_bytes(**{**SMALL, "method": "inertial-flow", "ode_solver": solver})
    assert inertial["ODE solver (float64)"] == (ODE_STAGES[solver] + 10) * 2 * trained * 8 + 2 * E * 4


def test_fused_copy_only_for_gd_on_the_cpu():
    big = {**SMALL, "n": 64, "m": 64}
    assert estimate_run_bytes(**big)["V0 transposed (fused kernel)"] == 2 * 64 * 100 * 4
    assert "V0 transposed (fused kernel)" not in estimate_run_bytes(**big, device="cuda:0")
    assert "V0 transposed (fused kernel)" not in estimate_run_bytes(**{**big, "method": "heavy-ball"})
    wide = {**SMALL, "k": 2_200_000}  # n < 64 but V0 over 128 MiB
    assert estimate_run_bytes(**wide)["V0 transposed (fused kernel)"] == 2 * 16 * 2_200_000 * 4


def test_certificate_phase_can_be_the_peak():
    n, k = 1024, 100
    b = estimate_run_bytes(n=n, m=n, batch=1, itemsize=8, operator="blur", method="gd", k=k, train="W",
                           history_rows=0, certify=True)
    v0 = (n * k + k) * 8
    gram = 2 * n * n * 8 + 2 * (n * k + k) * 8  # Gram matrix, eigensolver's copy, V0 in float64 blocks
    assert b["setup: certificate"] == gram
    assert b["total"] == 16 * n + v0 + gram + ALLOWANCE


def test_damping_gram_of_inertial_methods():
    n = 1024
    args = dict(n=n, m=n, batch=1, itemsize=4, operator="well-conditioned", k=10, history_rows=0)
    b = estimate_run_bytes(**args, method="gradient-difference")
    assert b["operator"] == 3 * n * n * 4 + 8 * n * n  # U, V, U diag(s) Vᵀ, and a float64 n×n kept
    assert b["setup: operator built in float64"] == 64 * n * n - b["operator"]
    assert b["setup: automatic damping (Gram matrices)"] == 3 * n * n * 8 + 6 * n * n * 8
    assert "setup: automatic damping (Gram matrices)" not in estimate_run_bytes(**args, method="gd")
    given = estimate_run_bytes(**args, method="gradient-difference", auto_damping=False)  # numbers for α, β
    assert "setup: automatic damping (Gram matrices)" not in given and given["total"] < b["total"]


def test_gaussian_signal_holds_one_matrix_per_run():
    b = estimate_run_bytes(n=5, m=2, batch=100, itemsize=8, operator="gaussian", method="gd", signal="gaussian",
                           k=10_000, history_rows=0)
    assert b["operator"] == 100 * 2 * 5 * 8
    image = estimate_run_bytes(n=5, m=2, batch=100, itemsize=8, operator="gaussian", method="gd", k=10_000,
                               history_rows=0)
    assert image["operator"] == 2 * 5 * 8  # an image's operator is shared by its runs


def test_mlp_weights():
    b = estimate_run_bytes(n=16, m=16, batch=2, itemsize=4, operator="blur", method="gd", network="mlp",
                           widths=(10, 20), d=8, history_rows=0)
    entries = 2 * (8 * 10 + 10 * 20 + 20 * 16)
    assert b["network weights"] == b["trained parameters"] == entries * 4
    assert b["gradients and activations"] == 8 * (2 * 30 + 2 * 32) * 4 + entries * 4


@pytest.mark.parametrize("change, message", [
    ({"method": "sgd"}, "unknown method 'sgd'; allowed: gd, heavy-ball"),
    ({"operator": "radon"}, "unknown operator 'radon'; allowed: " + ", ".join(OPERATORS)),
    ({"itemsize": 2}, "itemsize must be 4 (float32) or 8 (float64), got 2"),
    ({"n": 0}, "n must be a positive integer, got 0"),
    ({"k": 2.5}, "k must be a positive integer, got 2.5"),
    ({"train": "X"}, "unknown trained layers 'X'; allowed: W, WV, V"),
    ({"history_rows": -1}, "history_rows must be an integer >= 0, got -1"),
    ({"network": "mlp"}, "an MLP needs at least one hidden width"),
    ({"ode_solver": "Euler"}, "unknown ODE solver 'Euler'; allowed: RK45, RK23, DOP853"),
])
def test_bad_arguments(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        estimate_run_bytes(**{**SMALL, **change})


def test_tables_match_the_registries():
    from dipcert.components import NETWORK, OPERATOR
    from dipcert.methods import METHOD, ODE_SOLVER

    assert set(METHODS) == set(METHOD.components)
    for name, component in METHOD.components.items():
        assert (METHODS[name].ode_systems > 0) == component.can("ode"), name
    assert set(OPERATORS) == set(OPERATOR.components)
    from dipcert.generators import GENERATORS

    assert set(NETWORK.components) == {"two-layer", "mlp", *GENERATORS}
    assert {name for name, c in NETWORK.components.items() if c.can("convolutional")} == set(GENERATORS)
    assert set(ODE_STAGES) == set(ODE_SOLVER.choices)


def test_huge_run_is_refused_with_the_estimate_and_what_to_lower():
    b = estimate_run_bytes(n=512 * 512, m=512 * 512, batch=1, itemsize=4, operator="blur", method="gd", k=100_000,
                           train="WV", history_rows=502)
    assert b["total"] > 195 * 2**30
    with pytest.raises(ResourceError) as info:
        check_fits(b, "cpu", available=64 * 10**9)
    message = str(info.value)
    assert "\n" not in message
    assert f"needs about {b['total'] / 1e9:.2f} GB" in message and "64.00 GB is available on cpu" in message
    assert "setup: V0 drawn in float64 419.43 GB" in message and "lower --width, --size or --runs" in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(ResourceError):  # and on this machine too
        check_fits(b)


def test_refusal_names_every_way_out():
    b = estimate_run_bytes(n=4096, m=4096, batch=1, itemsize=4, operator="well-conditioned", method="inna", k=10_000,
                           train="WV", history_rows=502, certify=True)
    with pytest.raises(ResourceError) as info:
        check_fits(b, available=10**9)
    assert str(info.value).endswith(
        "(largest: setup: automatic damping (Gram matrices) 1.21 GB, setup: certificate 0.98 GB, setup: operator "
        "built in float64 0.74 GB); lower --size or --runs, or give numbers for --alpha and --beta, or drop "
        "--certify and --step certified, or use --operator blur or inpainting")


def test_a_run_that_fits():
    b = estimate_run_bytes(**SMALL)
    check_fits(b, "cpu", available=10**9)
    check_fits(b)  # a few hundred kB: fits anywhere this test runs
    check_fits({"total": 10**15}, "mps")  # available memory unknown: nothing checked


def test_fraction_of_available():
    b = {"V0": 95, "total": 95}
    check_fits(b, available=100, fraction=1.0)
    with pytest.raises(ResourceError, match="V0 0.00 GB"):
        check_fits(b, available=100, fraction=0.9)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        check_fits(b, available=100, fraction=0)


def test_available_bytes_on_this_machine():
    available = available_bytes("cpu")
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("no /proc/meminfo")
    fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in meminfo.read_text().splitlines()}
    assert 0 < available <= fields["MemTotal"]
    headroom = _cgroup_headroom()
    expected = fields["MemAvailable"] if headroom is None else min(fields["MemAvailable"], headroom)
    assert available == pytest.approx(expected, rel=0.1)
    assert available_bytes("mps") is None


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_headroom(tmp_path):
    v2 = _write(tmp_path / "v2", {"memory.max": "8000\n", "memory.current": "5000\n",
                                  "memory.stat": "anon 3000\ninactive_file 1000\n"})
    assert _cgroup_headroom(v2) == 8000 - (5000 - 1000)
    unlimited = _write(tmp_path / "max", {"memory.max": "max\n", "memory.current": "5000\n", "memory.stat": ""})
    assert _cgroup_headroom(unlimited) is None
    v1 = _write(tmp_path / "v1", {"memory/memory.limit_in_bytes": "6000\n", "memory/memory.usage_in_bytes": "7000\n",
                                  "memory/memory.stat": "cache 10\ntotal_inactive_file 500\n"})
    assert _cgroup_headroom(v1) == 0  # over the limit already
    v1_unlimited = _write(tmp_path / "v1u", {"memory/memory.limit_in_bytes": "9223372036854771712\n",
                                             "memory/memory.usage_in_bytes": "7000\n", "memory/memory.stat": ""})
    assert _cgroup_headroom(v1_unlimited) is None
    assert _cgroup_headroom(tmp_path / "none") is None


def test_history_rows():
    assert history_rows(500, 1) == 502
    assert history_rows(100_000, 50) == 2002
    with pytest.raises(ValueError, match="record_every must be a positive integer"):
        history_rows(10, 0)


def test_convolutional_generator_counts_its_parameters_and_activations():
    """A generator's share: its parameters (trained, gradients, Adam's two moments) and 8 saved
    tensors of its block outputs per run, from ConvGenerator.sizes."""
    from dipcert.generators import ConvDecoder

    parameters, activations = ConvDecoder.sizes((64, 64))
    b = estimate_run_bytes(n=4096, m=4096, batch=2, itemsize=4, operator="blur", method="adam",
                           network="conv-decoder", generator=(parameters, activations), history_rows=0)
    assert b["trained parameters"] == 2 * parameters * 4
    assert b["gradients and activations"] == 8 * (2 * activations + 2 * (4096 + 4096)) * 4 + 2 * parameters * 4
    assert "V0" not in b


def test_convolutional_certificate_budgets_the_matrix_free_path():
    """No n×n Gram matrix for a convolutional generator: the Lanczos basis (EIGEN_MAX_ITER + 1
    vectors per run) and float64 Jacobian products, linear in n (at 256×256 the dense Gram would
    need 2·n²·8 = 69 GB; this, 1.8 GB)."""
    from dipcert.certify import EIGEN_MAX_ITER
    from dipcert.generators import ConvDecoder

    n = 256 * 256
    parameters, activations = ConvDecoder.sizes((256, 256))
    b = estimate_run_bytes(n=n, m=n, batch=1, itemsize=4, operator="blur", method="adam", network="conv-decoder",
                           generator=(parameters, activations), history_rows=0, certify=True)
    lanczos = (EIGEN_MAX_ITER + 1) * n * 8
    assert b["setup: certificate"] == lanczos + 3 * parameters * 8 + 32 * (activations + 2 * n) * 8
    assert b["setup: certificate"] < 2 * n * n * 8 / 30
