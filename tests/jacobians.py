"""Dense Jacobians by autograd, the independent reference for the Jacobian products under test."""
from __future__ import annotations

import torch


def dense_jacobian(net, params, run: int = 0) -> torch.Tensor:
    """J_g(θ) of run ``run`` of ``net`` (n × p), float64, columns in the order of ``params``."""
    params = {k: p.detach().double() for k, p in params.items()}

    def f(*tensors):
        p = {k: params[k].clone() for k in params}
        for k, t in zip(params, tensors):
            p[k][run] = t
        return net.function(p)[run]

    jac = torch.autograd.functional.jacobian(f, tuple(params[k][run] for k in params))
    return torch.cat([j.reshape(net.n, -1) for j in jac], dim=1)
