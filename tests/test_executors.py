"""Executors: the same table in-process, on a Dask LocalCluster and through a scheduler whose workers
are separate processes, one of them killed mid-sweep; resume after a client killed on a cluster;
no worker outlives its client; a clear error without Dask."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import torch

from conftest import tiny_fig1
from dipcert.experiments import executors, fig1
from dipcert.experiments.engine import ResultStore, run_grid
from dipcert.experiments.executors import MissingExtra, open_executor
from dipcert.experiments.sweep import Sweep, run_sweep

pytest.importorskip("distributed")

TINY = tiny_fig1()
SWEEP = """
[sweep]
name = "slow"
trials = 4
record = ["converged", "iterations", "final_loss", "error"]
[base]
problem = {{ signal = "gaussian", n = 5 }}
training = {{ iters = {iters}, loss_tol = 0.0 }}
[grid]
"operator.m" = [1, 2, 3]
"network.width" = [300, 1000]
"""


def _table(path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def _strip(rows) -> list[dict]:
    return [{k: repr(v) for k, v in r.items() if k != "seconds"} for r in rows]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


@contextmanager
def _torch_threads(count: int):
    """Run the in-process reference with the workers' thread count: BLAS reductions (hence the last
    bits of a loss near 1e-14) depend on it; seeds and everything else do not."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _finished(cells: Path) -> int:
    return len(list(cells.glob("*.meta.json"))) if cells.exists() else 0


def test_a_local_cluster_gives_the_in_process_table(tmp_path, monkeypatch):
    serial = run_grid(ResultStore(tmp_path / "serial", "fig1", TINY.stamp()), TINY.cells(),
                      partial(fig1.run_group, TINY), fig1.group_of)
    environment = dict(os.environ)
    monkeypatch.setattr(executors, "available_cores", lambda: 2 * torch.get_num_threads())  # as many threads
    # per worker as this process has (the in-process reference's), so that the tables agree bit for bit
    with open_executor(cluster="local:2") as executor:
        threads = torch.get_num_threads()
        assert executor.description == f"local cluster of 2 worker processes, {threads} torch thread(s) each"
        on_workers = [result for _, result, _ in executor.run(lambda group: torch.get_num_threads(), [[1], [2]])]
        assert on_workers == [threads, threads]  # set in each worker's environment, read there
        cluster = run_grid(ResultStore(tmp_path / "cluster", "fig1", TINY.stamp()), TINY.cells(),
                           partial(fig1.run_group, TINY), fig1.group_of, executor=executor)
        sweep = Sweep.from_dict(_sweep_dict(iters=200))
        on_cluster = _table(run_sweep(sweep, tmp_path / "sweep-cluster", executor=executor)["table"])
    assert dict(os.environ) == environment  # Dask's OMP_NUM_THREADS=1 for its workers does not stay here
    assert _strip(cluster) == _strip(serial)
    assert on_cluster == _table(run_sweep(sweep, tmp_path / "sweep-serial")["table"])


def _sweep_dict(iters: int) -> dict:
    import tomllib

    return tomllib.loads(SWEEP.format(iters=iters))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_sweep_through_a_scheduler_survives_a_killed_worker(tmp_path):
    file = tmp_path / "slow.toml"
    file.write_text(SWEEP.format(iters=6000))
    scheduler_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    processes = [subprocess.Popen([*dask, "--scheduler-file", str(scheduler_file), "--port", "0", "--no-dashboard"],
                                  env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_for(scheduler_file.exists, 60, "the scheduler")
        address = json.loads(scheduler_file.read_text())["address"]
        worker = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
                  "--no-dashboard"]
        workers = [subprocess.Popen(worker, env={**_env(), executors.THREADS_VARIABLE: "1"},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        processes += workers
        client = subprocess.Popen([sys.executable, "-m", "dipcert", "sweep", str(file), "--out", str(tmp_path / "out"),
                                   "--scheduler", address], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        processes.append(client)
        _wait_for(lambda: _finished(tmp_path / "out" / "slow.cells") >= 1 or client.poll() is not None, 240,
                  "the first cell")
        assert client.poll() is None, client.communicate()
        workers[0].send_signal(signal.SIGKILL)  # lost mid-sweep, with a task in hand
        out, err = client.communicate(timeout=400)
        assert client.returncode == 0, err
        assert "scheduler " + address in err
        assert _finished(tmp_path / "out" / "slow.cells") == 6
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    rows = _table(tmp_path / "out" / "slow.csv")
    keys = [(r["operator.m"], r["network.width"], r["trial"]) for r in rows]
    assert len(keys) == 6 * 4 == len(set(keys))  # no row lost, none twice
    with _torch_threads(1):  # the workers' DIPCERT_THREADS
        assert rows == _table(run_sweep(Sweep.load(file), tmp_path / "serial")["table"])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_client_killed_on_a_local_cluster_leaves_no_worker_and_resumes_to_the_same_table(tmp_path):
    file = tmp_path / "slow.toml"
    file.write_text(SWEEP.format(iters=6000))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dipcert", "sweep", str(file), "--out", str(out), "--cluster", "local:2"]
    client = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _finished(out / "slow.cells") >= 1 or client.poll() is not None, 240, "the first cell")
        assert client.poll() is None
        workers = _children(client.pid)
        assert len(workers) >= 2
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
        _wait_for(lambda: not any(map(_alive, workers)), 15, "the workers to exit with their client")
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        client.stderr.close()
    done = _finished(out / "slow.cells")
    assert 1 <= done < 6
    resumed = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr
    progress = [line for line in resumed.stderr.splitlines() if line.startswith("  ") and line.endswith(" s")]
    assert len(progress) == 6 - done  # only the unfinished cells ran
    with _torch_threads(max(1, executors.available_cores() // 2)):  # what local:2 gives each worker
        assert _table(out / "slow.csv") == _table(run_sweep(Sweep.load(file), tmp_path / "serial")["table"])


def test_without_dask_the_cluster_options_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingExtra, match=r"pip install 'dipcert\[dask\]'"):
        with open_executor(cluster="local:2"):
            pass
    with open_executor() as executor:  # in-process needs nothing
        assert executor.description == "in-process"


def test_a_worker_with_other_versions_refuses_the_task():
    from dipcert.report import versions

    expected = {**versions(), "torch": "0.0.1"}
    with pytest.raises(executors.WorkerMismatch, match=r"\(torch 0.0.1 here, .* there\); install the client's versions"):
        executors._on_worker(lambda group: group, [1], expected)
    assert executors._on_worker(lambda group: group, [1], versions())[0] == [1]


def test_an_unreachable_scheduler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", "2s")
    with pytest.raises(OSError, match=r"no Dask scheduler answered at tcp://127.0.0.1:9"):
        with open_executor(scheduler="tcp://127.0.0.1:9"):
            pass
