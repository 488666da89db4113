import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture
def one_thread():
    """For tiny problems: a second thread only waits for the other (often busy) core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_fig1(trials: int = 4):
    """The Fig. 1 sweep file on a tiny grid: m ∈ {1, 3}, k ∈ {10, 100} trained for 2000 iterations,
    k = 1000 certified only."""
    import tomllib

    from dipcert.experiments import fig1
    from dipcert.experiments.sweep import Sweep

    data = tomllib.loads(fig1.SWEEP_FILE.read_text(encoding="utf-8"))
    data.pop("scales")
    data["sweep"]["trials"] = trials
    data["base"]["training"]["loss_tol"] = 1e-10
    data["grid"] = [{"training.iters": [2000], "network.width": [10, 100], "operator.m": [1, 3]},
                    {"training.iters": [1], "network.width": [1000], "operator.m": [1, 3]}]
    return Sweep.from_dict(data)
