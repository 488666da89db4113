"""Robustness of the resumable engine: damaged cells, version stamps, file modes (the executors'
robustness is in test_executors.py).

A tiny fake experiment stands in for the paper's figures: three cells of ten rows and one array each.
"""
import json
import os
import stat
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from dipcert import experiments
from dipcert.experiments import engine
from dipcert.experiments.engine import Cell, CellResult, ConfigMismatch, ResultStore, run_grid
from dipcert.report import versions

TRIALS = 10
CELLS = [Cell.of(x=x) for x in (1, 2, 3)]
DAMAGED = CELLS[1]


def fake_group(group: list[Cell]) -> dict[str, CellResult]:
    """Deterministic rows and a curve per cell."""
    return {
        cell.key: CellResult(
            rows=[{"x": cell["x"], "trial": t, "value": cell["x"] / 3 + t} for t in range(TRIALS)],
            arrays={"curve": np.linspace(0.0, 1.0, 7) * cell["x"]},
        )
        for cell in group
    }


def _grid(out: Path) -> tuple[list, list[Cell], list[str]]:
    """Run (or resume) the fake grid in ``out``; return its rows, the cells computed and the notices."""
    ran, notices = [], []
    rows = run_grid(ResultStore(out, "fake", {"n": 1}), CELLS, fake_group,
                    on_group=lambda cells, s: ran.extend(cells), on_notice=notices.append)
    return rows, ran, notices


def _cut_rows(path: Path, keep: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: 1 + keep]))


def _cut_mid_row(path: Path, keep: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: 1 + keep]) + lines[1 + keep][:3])


def _change_value(path: Path) -> None:
    path.write_text(path.read_text().replace("0.6666666666666666", "0.6666666666666667", 1))


DAMAGE = {  # damage done to the middle cell's files → the reason the rerun gives
    "empty": (".csv", lambda p: p.write_bytes(b""), "empty CSV"),
    "truncated": (".csv", lambda p: _cut_rows(p, 3), "truncated: 3 rows of 10"),
    "cut mid-row": (".csv", lambda p: _cut_mid_row(p, 3), "truncated: 3 rows of 10"),
    "header only": (".csv", lambda p: _cut_rows(p, 0), "truncated: 0 rows of 10"),
    "wrong header": (".csv", lambda p: p.write_text(p.read_text().replace("value", "valeur", 1)),
                     "wrong CSV header"),
    "garbage": (".csv", lambda p: p.write_bytes(b"\xff\xfe\x00\x13garbage"), "CSV unparseable"),
    "extra row": (".csv", lambda p: p.write_text(p.read_text() + "2,10,10.5\n"), "11 rows where 10 were written"),
    "changed value": (".csv", _change_value, "CSV checksum mismatch"),
    "csv deleted": (".csv", Path.unlink, "CSV missing"),
    "npz garbage": (".npz", lambda p: p.write_bytes(b"PK\x03\x04 not a zip"), "arrays (.npz) checksum mismatch"),
    "npz deleted": (".npz", Path.unlink, "arrays (.npz) missing"),
    "record deleted": (".meta.json", Path.unlink, "no record: its writing was interrupted"),
    "record garbage": (".meta.json", lambda p: p.write_text("{"), "unreadable record"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cell_is_recomputed_and_reported(tmp_path, damage):
    suffix, spoil, reason = DAMAGE[damage]
    reference, ran, notices = _grid(tmp_path)
    assert ran == CELLS and notices == []
    path = tmp_path / "fake.cells" / f"{DAMAGED.key}{suffix}"
    spoil(path)
    resumed, ran, notices = _grid(tmp_path)
    assert ran == [DAMAGED]  # only the damaged cell ran again
    assert notices == [f"cell x=2: damaged ({reason}), recomputing it"]
    assert resumed == reference
    store = ResultStore(tmp_path, "fake", {"n": 1})
    np.testing.assert_array_equal(store.read_arrays(DAMAGED)["curve"], np.linspace(0.0, 1.0, 7) * 2)
    assert all(store.check(cell) is None for cell in CELLS)
    assert _grid(tmp_path)[1:] == ([], [])  # now intact: nothing runs, nothing is said


def test_cells_not_started_run_silently(tmp_path):
    store = ResultStore(tmp_path, "fake", {"n": 1})
    assert store.check(CELLS[0]) == engine.NOT_STARTED
    rows, ran, notices = _grid(tmp_path)
    assert ran == CELLS and notices == [] and len(rows) == 3 * TRIALS
    assert json.loads((tmp_path / "fake.cells" / "x=1.meta.json").read_text())["rows"] == TRIALS


def _fake_module() -> types.ModuleType:
    """A stand-in for a figure module, as :func:`dipcert.experiments.reproduce` expects one: a sweep
    of three cells whose runner writes deterministic rows without training."""
    from dipcert.experiments.sweep import Sweep

    sweep = Sweep.from_dict({"sweep": {"name": "fake", "trials": TRIALS, "record": ["iterations"]},
                             "base": {"problem": {"signal": "gaussian", "n": 5}}, "grid": {"operator.m": [1, 2, 3]}})

    def run_group(sweep, group):
        return {cell.key: CellResult([{"operator.m": cell["operator.m"], "trial": t, "seed": t, "iterations": t,
                                       "seconds": 0.0} for t in range(TRIALS)]) for cell in group}

    module = types.ModuleType("fake")
    module.load = lambda scale: sweep
    module.group_of = lambda cell: cell.key
    module.run_group = run_group
    return module


def test_reproduce_passes_notices_on(tmp_path, monkeypatch):
    def plot(sweep, rows, arrays, path):
        path.write_bytes(b"png")
        return {"rows": len(rows)}

    monkeypatch.setitem(experiments.EXPERIMENTS, "fake", experiments.Experiment(_fake_module(), "Fake", plot))
    first = experiments.reproduce("fake", "quick", tmp_path)
    table = first["table"].read_text()
    _cut_rows(tmp_path / "fake.cells" / "operator.m=2.csv", 4)
    notices = []
    again = experiments.reproduce("fake", "quick", tmp_path, on_notice=notices.append)
    assert notices == ["cell operator.m=2: damaged (truncated: 4 rows of 10), recomputing it"]
    assert again["table"].read_text() == table
    assert json.loads(again["manifest"].read_text())["summary"] == {"rows": 3 * TRIALS}


def test_stamp_records_versions(tmp_path):
    ResultStore(tmp_path, "fake", {"n": 1})
    stamp = json.loads((tmp_path / "fake.cells" / "config.json").read_text())
    assert stamp == {"config": {"n": 1}, "versions": versions()}


def test_other_versions_are_refused(tmp_path, monkeypatch):
    _grid(tmp_path)
    installed = versions()
    monkeypatch.setattr(engine, "versions", lambda: {**installed, "torch": "9.9.9", "numpy": "0.1"})
    with pytest.raises(ConfigMismatch) as info:
        ResultStore(tmp_path, "fake", {"n": 1})
    message = str(info.value)
    assert "\n" not in message
    assert f"numpy {installed['numpy']} -> 0.1, torch {installed['torch']} -> 9.9.9" in message
    assert "--fresh" in message and "--out" in message and "python" not in message
    ResultStore(tmp_path, "fake", {"n": 1}, fresh=True)  # --fresh discards them and starts over
    assert not (tmp_path / "fake.cells" / "x=1.csv").exists()
    assert json.loads((tmp_path / "fake.cells" / "config.json").read_text())["versions"]["torch"] == "9.9.9"


def test_stamp_without_versions_is_refused(tmp_path):
    (tmp_path / "fake.cells").mkdir()
    (tmp_path / "fake.cells" / "config.json").write_text(json.dumps({"n": 1}))  # an older dipcert's stamp
    with pytest.raises(ConfigMismatch, match=r"older dipcert that did not record package versions; use --fresh"):
        ResultStore(tmp_path, "fake", {"n": 1})


def test_unreadable_stamp_is_refused(tmp_path):
    (tmp_path / "fake.cells").mkdir()
    (tmp_path / "fake.cells" / "config.json").write_text("{not json")
    with pytest.raises(ConfigMismatch, match=r"config.json is unreadable .*; use --fresh"):
        ResultStore(tmp_path, "fake", {"n": 1})


WRITE_UNDER_UMASK = textwrap.dedent('''
    import os, sys
    os.umask(int(sys.argv[1], 8))
    from dipcert.fileio import atomic_output, atomic_write_text
    atomic_write_text(sys.argv[2] + "/text.json", "{}")
    with atomic_output(sys.argv[2] + "/binary.npz") as tmp:
        tmp.write_bytes(b"x")
    print(oct(os.umask(0)))
''')


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=oct)
def test_output_files_follow_the_umask(tmp_path, umask, mode):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", WRITE_UNDER_UMASK, oct(umask)[2:], str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == oct(umask)  # reading the umask left it as it was
    for name in ("text.json", "binary.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["binary.npz", "text.json"]  # no temporary left
