"""Activation functions φ with the constants the theory needs (theory.md §1.4).

For each activation we store
- ``B1 = sup|φ'|`` and ``B2 = Lip(φ') = sup|φ''|`` (assumption A-3 asks for one ``B ≥ max(B1, B2)``),
- ``sup_abs = sup|φ|`` (``inf`` when φ is unbounded),
- ``C_phi = sqrt(E φ(X)²)`` and ``C_dphi = sqrt(E φ'(X)²)`` for ``X ~ N(0, 1)`` (assumption A-7),
  computed by Gauss–Hermite quadrature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

_QUADRATURE_NODES = 200


def _gaussian_rms(f: Callable[[np.ndarray], np.ndarray]) -> float:
    """sqrt(E f(X)²) for X ~ N(0, 1), by Gauss–Hermite quadrature (probabilists' weights)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(_QUADRATURE_NODES)
    return float(math.sqrt(np.sum(weights * f(nodes) ** 2) / math.sqrt(2 * math.pi)))


@dataclass(frozen=True)
class Activation:
    """A C¹ activation with bounded, Lipschitz derivative (assumption A-3)."""

    name: str
    fn: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor], Tensor]
    B1: float
    B2: float
    sup_abs: float
    _numpy_fn: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    _numpy_derivative: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    #: φ' as a function of (x, φ(x)), cheaper when φ(x) is at hand (sigmoid, tanh).
    derivative_given_value: Callable[[Tensor, Tensor], Tensor] | None = field(default=None, repr=False)

    def derivative_at(self, x: Tensor, value: Tensor) -> Tensor:
        """φ'(x), reusing ``value`` = φ(x) when that is cheaper."""
        if self.derivative_given_value is None:
            return self.derivative(x)
        return self.derivative_given_value(x, value)

    @property
    def B(self) -> float:
        """The single constant of A-3: ``max(B1, B2)``."""
        return max(self.B1, self.B2)

    @property
    def C_phi(self) -> float:
        return _gaussian_rms(self._numpy_fn)

    @property
    def C_dphi(self) -> float:
        return _gaussian_rms(self._numpy_derivative)

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)


def _sigmoid_derivative(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


SIGMOID = Activation(
    name="sigmoid",
    fn=torch.sigmoid,
    derivative=_sigmoid_derivative,
    B1=0.25,
    B2=1.0 / (6.0 * math.sqrt(3.0)),
    sup_abs=1.0,
    _numpy_fn=_np_sigmoid,
    _numpy_derivative=lambda x: _np_sigmoid(x) * (1 - _np_sigmoid(x)),
    derivative_given_value=lambda x, s: s * (1 - s),
)

TANH = Activation(
    name="tanh",
    fn=torch.tanh,
    derivative=lambda x: 1 - torch.tanh(x) ** 2,
    B1=1.0,
    B2=4.0 / (3.0 * math.sqrt(3.0)),
    sup_abs=1.0,
    _numpy_fn=np.tanh,
    _numpy_derivative=lambda x: 1 - np.tanh(x) ** 2,
    derivative_given_value=lambda x, t: 1 - t * t,
)

SOFTPLUS = Activation(
    name="softplus",
    fn=torch.nn.functional.softplus,
    derivative=torch.sigmoid,
    B1=1.0,
    B2=0.25,
    sup_abs=math.inf,
    _numpy_fn=lambda x: np.logaddexp(0.0, x),
    _numpy_derivative=_np_sigmoid,
)

ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (SIGMOID, TANH, SOFTPLUS)}


def get_activation(name: str) -> Activation:
    """Look an activation up by name, with an error that lists the allowed names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; allowed: {', '.join(sorted(ACTIVATIONS))}"
        ) from None
