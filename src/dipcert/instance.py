"""Save a problem and a network's initialization to ``.npz``, so that every certificate number can
be recomputed independently (e.g. with NumPy alone)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .fileio import atomic_output
from .networks import TwoLayerDIP
from .operators import Matrix
from .problems import Problem

#: W_0 is k×d per run; above this many entries only z_0 = W_0 u is stored (it determines the
#: W-only dynamics and σ_min(J_g(0)); W_0 itself can be redrawn from the seeds).
MAX_W0_ENTRIES = 50_000_000


def save_instance(path: str | Path, problem: Problem, network: TwoLayerDIP) -> Path:
    """Write y, x_true, noise, A (when dense), u, z0, V0, W0 (when not too large) and a JSON
    description of the operator and network; every array has a leading run dimension."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"instance files end in .npz, got {path}")
    if not path.parent.is_dir():
        raise ValueError(f"folder does not exist: {path.parent}")

    def arr(t):
        return t.detach().cpu().double().numpy()

    data = {"y": arr(problem.y), "u": arr(network.u), "z0": arr(network.z0), "V0": arr(network.V0)}
    if problem.x_true is not None:
        data["x_true"] = arr(problem.x_true)
    if problem.noise is not None:
        data["noise"] = arr(problem.noise)
    if isinstance(problem.operator, Matrix):
        data["A"] = arr(problem.operator.to_dense())
    if network.batch * network.k * network.d <= MAX_W0_ENTRIES:
        data["W0"] = arr(network.W0)
    meta = {"operator": problem.operator.describe(), "network": network.describe()}
    data["description"] = np.array(json.dumps(meta))
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **data)
    return path
