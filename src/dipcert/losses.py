"""Data-fidelity losses L_y and their Kurdyka–Łojasiewicz desingularizers (Definition II.2).

A loss acts on flat observations ``v`` of shape ``(*batch, m)`` and reduces over the last axis.
Its KL desingularizer ψ satisfies ψ'(L_y(v))‖∇L_y(v)‖ ≥ 1 (3) on a stated region; Ψ is a
primitive of −(ψ')², so that the loss bound (6) reads ``L_y(y_τ) ≤ Ψ⁻¹(ξ_τ)``.

| loss | ψ | where (3) holds | source |
|---|---|---|---|
| MSE ½‖v − y‖² | c√s, c = √2 | everywhere | theory.md §2.2 [D] |
| Kullback–Leibler (Poisson) | 2√(v_max s) | v_i ≤ v_max (and v_i > 0 when ε = 0) | our derivation [D], below |
| logistic | none | inf L = 0 is not attained | Definition II.2 fails |
"""
from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from typing import Sequence

import torch
from torch import Tensor


class DesingularizerUnavailable(ValueError):
    """The loss has no known KL desingularizer (so no certificate); the message says why."""


class Loss(ABC):
    """Interface every loss implements; ``psi``/``Psi``/``Psi_inv`` act elementwise on tensors."""

    name: str
    #: Where the desingularizer is valid, or why there is none.
    desingularizer_domain: str = ""

    @abstractmethod
    def value(self, v: Tensor, y: Tensor) -> Tensor:
        """L_y(v), reduced over the last axis."""

    @abstractmethod
    def grad(self, v: Tensor, y: Tensor) -> Tensor:
        """∇_v L_y(v), same shape as v."""

    def check_data(self, y: Tensor) -> None:
        """Raise ValueError when y is outside the loss's data domain."""

    def minimizer(self, y: Tensor) -> Tensor:
        """The unique minimizer of L_y (y itself unless a subclass says otherwise)."""
        return y

    def grad_lipschitz(self, y: Tensor) -> Tensor:
        """A Lipschitz constant of ∇L_y on all of R^m, per run, float64 (inf: none known)."""
        return torch.full(y.shape[:-1], math.inf, dtype=torch.float64, device=y.device)

    def psi(self, s: Tensor) -> Tensor:
        """KL desingularizer ψ (3)."""
        raise DesingularizerUnavailable(self.desingularizer_domain)

    def psi_inv(self, r: Tensor) -> Tensor:
        """Inverse of ψ."""
        raise DesingularizerUnavailable(self.desingularizer_domain)

    def Psi(self, s: Tensor) -> Tensor:
        """A primitive of −(ψ')², decreasing."""
        raise DesingularizerUnavailable(self.desingularizer_domain)

    def Psi_inv(self, xi: Tensor) -> Tensor:
        """Inverse of Ψ."""
        raise DesingularizerUnavailable(self.desingularizer_domain)

    def describe(self) -> dict:
        return {"name": self.name, "desingularizer_domain": self.desingularizer_domain}


class _SqrtDesingularized(Loss):
    """Losses with ψ(s) = c√s: Ψ(s) = −(c²/4)·ln s, Ψ⁻¹(ξ) = exp(−4ξ/c²) (constants cancel)."""

    c: float

    def psi(self, s: Tensor) -> Tensor:
        return self.c * torch.sqrt(s)

    def psi_inv(self, r: Tensor) -> Tensor:
        return (r / self.c) ** 2

    def Psi(self, s: Tensor) -> Tensor:
        return -(self.c**2 / 4.0) * torch.log(s)

    def Psi_inv(self, xi: Tensor) -> Tensor:
        return torch.exp(-4.0 * xi / self.c**2)


class MSELoss(_SqrtDesingularized):
    """L_y(v) = ½‖v − y‖² with ψ(s) = c·√s (theory.md §2.2).

    ψ satisfies (3) on all of ]0, ∞[ iff c ≥ √2, since ψ'(L)‖∇L‖ = c/√2; the default c = √2 is the
    tightest choice and gives ψ(L_y(v)) = ‖v − y‖ exactly. The paper writes only ψ(s) = c s^{1/2};
    the value of c is ours.
    """

    name = "mse"
    desingularizer_domain = "everywhere"

    def __init__(self, c: float = math.sqrt(2.0)) -> None:
        if not c >= math.sqrt(2.0) - 1e-15:
            raise ValueError(f"MSE desingularizer constant c must be >= sqrt(2) for (3) to hold, got {c}")
        self.c = float(c)

    def value(self, v: Tensor, y: Tensor) -> Tensor:
        return 0.5 * torch.sum((v - y) ** 2, dim=-1)

    def grad(self, v: Tensor, y: Tensor) -> Tensor:
        return v - y

    def grad_lipschitz(self, y: Tensor) -> Tensor:
        """∇L_y(v) = v − y is 1-Lipschitz."""
        return torch.ones(y.shape[:-1], dtype=torch.float64, device=y.device)

    def describe(self) -> dict:
        return {**super().describe(), "c": self.c}


def _s_minus_log1p(s: Tensor) -> Tensor:
    """s − ln(1 + s) for s > −1, accurate near 0 (its Taylor series Σ_{j≥2} (−s)^j/j below |s| = 0.01)."""
    small = s.abs() < 1e-2
    near = torch.where(small, s, torch.zeros_like(s))
    series = sum((-near) ** j / j for j in range(2, 10))
    far = torch.where(small, torch.ones_like(s), s)
    return torch.where(small, series, far - torch.log1p(far))


def _kl_terms(v: Tensor, y: Tensor) -> Tensor:
    """h_y(v) = v − y − y ln(v/y) = y·((v/y − 1) − ln(v/y)) entrywise (h_0(v) = v), for v > 0."""
    pos = y > 0
    y_safe = torch.where(pos, y, torch.ones_like(y))
    s = torch.where(pos, v / y_safe - 1, torch.zeros_like(v))  # (finite in the unused branch: autograd)
    return torch.where(pos, y_safe * _s_minus_log1p(s), v)


class KLLoss(_SqrtDesingularized):
    """Kullback–Leibler (Poisson) loss L_y(v) = Σ_i h_{y_i}(v_i), h_y(v) = v − y − y ln(v/y) (0 ln 0 = 0),
    for counts y ≥ 0 (scaled counts, as :class:`~dipcert.problems.PoissonNoise` gives, are fine).

    **Continuation below ε (our choice; the paper only names the KL loss).** With ``eps = 0`` the
    loss is the exact KL, finite only for v > 0: at the usual initialization A g(u, θ_0) has entries
    of both signs, so L_y(y_0) = inf and training stops at iteration 0. With ``eps > 0`` every term is
    continued below v = ε by a quadratic ``h(ε) + h'(ε)(v − ε) + ½ c (v − ε)²`` matching h to first
    order at ε (a C¹ loss on all of R^m, so A-1 holds), with curvature
    c = y/ε² when y ≥ ε (h matched to second order) and c = h'(ε)²/(2h(ε)) when y < ε (the quadratic
    then has minimum 0, at v* = ε − 2h(ε)/h'(ε); v* = −ε for y = 0).
    Every term is convex with minimum 0 and a c-Lipschitz derivative, so L_y ≥ 0 has the unique
    minimizer v* (v*_i = y_i where y_i ≥ ε) and a gradient that is ℓ₂-Lipschitz, ℓ₂ = max_i c_i
    (:meth:`grad_lipschitz`). The default ε = 0 is the exact loss; to train from the usual
    initialization take ε > 0, below the data's typical values: for data on the [0, 255] scale,
    ε = 5 trained best of ε ∈ {0.1, 1, 5, 16} (64×64 blurred camera, Poisson, two-layer net, step
    1/‖A J‖²; ε = 0.1 overshoots at the first step and stalls). A larger ε moves v* further from y
    where y < ε (v* = −ε for y = 0).

    **Desingularizer [D, ours].** ln t ≥ 1 − 1/t gives h(v) ≤ v·h'(v)² for v > 0; below ε the
    continued term q satisfies q ≤ ε q'² (for y ≥ ε: h(ε) ≤ ε h'(ε)² and 2εc = 2y/ε ≥ 1; for y < ε:
    q = q'²/(2c) and 1/(2c) = h(ε)/h'(ε)² ≤ ε). Hence L_y(v) ≤ v_max‖∇L_y(v)‖² and ψ(s) = 2√(v_max·s)
    satisfies (3) wherever every v_i ≤ v_max, provided v_max ≥ ε; with ε = 0 also every v_i > 0.
    ``v_max`` is either a number (one, or one per run), an *assumption* to be checked on the run
    (:func:`dipcert.certify.check_domain`), or ``"sublevel"``: the certificate then uses
    :meth:`sublevel_v_max`, a proven bound on every v_i over the whole sublevel set of A-2, so that
    (3) holds there with no assumption. ``None``: no certificate.
    """

    name = "kl"

    def __init__(self, v_max: float | str | Sequence[float] | Tensor | None = None, eps: float = 0.0) -> None:
        if isinstance(eps, bool) or not (isinstance(eps, numbers.Real) and math.isfinite(eps) and eps >= 0):
            raise ValueError(f"KL continuation threshold eps must be a finite number >= 0, got {eps!r}")
        self.eps = float(eps)
        if isinstance(v_max, str) and v_max != "sublevel":
            raise ValueError(f"v_max must be a number, one number per run, 'sublevel' or None, got {v_max!r}")
        if v_max is not None and not isinstance(v_max, str):
            v_max = torch.as_tensor(v_max, dtype=torch.float64).flatten()
            if v_max.numel() == 0 or not bool((torch.isfinite(v_max) & (v_max > 0) & (v_max >= self.eps)).all()):
                raise ValueError(f"v_max must be finite, > 0 and >= eps = {self.eps}, got {v_max.tolist()}")
        self.v_max = v_max
        where = "every v_i <= v_max" if self.eps > 0 else "0 < v_i <= v_max for every i"
        if v_max is None:
            self.desingularizer_domain = ("unknown: give v_max (a number, assumed to bound every entry of "
                                          "A g(u, theta) along the run) or v_max='sublevel' (a proven bound)")
        elif isinstance(v_max, str):
            self.desingularizer_domain = f"{where}, v_max bounding v on the sublevel set {{L_y < L_y(y_0) + eta}}"
        else:
            self.desingularizer_domain = f"{where} = {_as_text(v_max)}, for every observation v = A g(u, theta)"

    @property
    def c(self) -> Tensor:  # type: ignore[override]
        """2√v_max, shape (1,) or (batch,)."""
        if self.v_max is None:
            raise DesingularizerUnavailable(self.desingularizer_domain)
        if isinstance(self.v_max, str):
            raise DesingularizerUnavailable("v_max='sublevel' is computed by certify from y and L_y(y_0) "
                                            "(KLLoss.sublevel_v_max); psi needs a number")
        return 2.0 * torch.sqrt(self.v_max)

    def check_data(self, y: Tensor) -> None:
        if bool((y < 0).any()):
            raise ValueError("the Kullback-Leibler loss needs non-negative data y (counts)")

    def _continuation(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h_y(ε), h_y'(ε) and the curvature c of the quadratic below ε, entrywise, float64."""
        eps = self.eps
        h_eps = _kl_terms(torch.full_like(y, eps), y)
        dh_eps = 1 - y / eps
        above = y >= eps
        c = torch.where(above, y / eps**2, dh_eps**2 / (2 * torch.where(above, torch.ones_like(h_eps), h_eps)))
        return h_eps, dh_eps, c

    def value(self, v: Tensor, y: Tensor) -> Tensor:
        v64, y64 = v.double(), y.double()
        if self.eps == 0:
            inside = (v64 > 0) | ((y64 == 0) & (v64 == 0))
            terms = torch.where(inside, _kl_terms(torch.where(inside, v64, torch.ones_like(v64)), y64), math.inf)
        else:
            h_eps, dh_eps, c = self._continuation(y64)
            d = (v64 - self.eps).clamp_max(0)
            terms = torch.where(v64 >= self.eps, _kl_terms(v64.clamp_min(self.eps), y64), h_eps + dh_eps * d + 0.5 * c * d**2)
        return terms.sum(-1).to(v.dtype)

    def grad(self, v: Tensor, y: Tensor) -> Tensor:
        if self.eps == 0:
            return 1.0 - y / v
        v64, y64 = v.double(), y.double()
        _, dh_eps, c = self._continuation(y64)
        return torch.where(v64 >= self.eps, 1 - y64 / v64.clamp_min(self.eps), dh_eps + c * (v64 - self.eps)).to(v.dtype)

    def minimizer(self, y: Tensor) -> Tensor:
        """The unique minimizer v* of L_y: y, except where y < ε: there the continuation moves it
        to ε − 2h(ε)/h'(ε) < ε."""
        if self.eps == 0:
            return y
        y64 = y.double()
        h_eps, dh_eps, _ = self._continuation(y64)
        below = y64 < self.eps
        moved = self.eps - 2 * h_eps / torch.where(below, dh_eps, torch.ones_like(dh_eps))
        return torch.where(below, moved, y64).to(y.dtype)

    def grad_lipschitz(self, y: Tensor) -> Tensor:
        """ℓ₂ = max_i c_i, a Lipschitz constant of ∇L_y on all of R^m (inf when ε = 0), per run."""
        if self.eps == 0:
            return torch.full(y.shape[:-1], math.inf, dtype=torch.float64, device=y.device)
        return self._continuation(y.double())[2].amax(-1)

    def sublevel_v_max(self, y: Tensor, level: Tensor) -> Tensor:
        """An upper bound on sup{v_i : L_y(v) ≤ level} (every i), per run, float64.

        Every term is ≥ 0, so each is ≤ level on that set, and h_y increases on [max(y, ε), ∞[:
        v_i ≤ max(ε, y_i t) with t ≥ 1 the root of t − 1 − ln t = level/y_i (v_i ≤ level when y_i = 0).
        The root is found by Newton's method from t = 2(a + 1) ≥ root (f convex increasing: the
        iterates decrease to the root and stay above it), then raised by 1e-12 against rounding.
        """
        y64, level = y.double(), torch.as_tensor(level, dtype=torch.float64, device=y.device).reshape(-1, 1)
        pos = y64 > 0
        a = level / torch.where(pos, y64, torch.ones_like(y64))
        t = 2 * (a + 1)
        for _ in range(100):
            step = (t - 1 - torch.log(t) - a) / (1 - 1 / t)
            t = t - step
            if bool((step <= 1e-15 * t).all()):
                break
        bound = torch.where(pos, y64 * t, level.expand_as(y64)) * (1 + 1e-12)
        return bound.amax(-1).clamp_min(self.eps)

    def describe(self) -> dict:
        v_max = self.v_max.tolist() if isinstance(self.v_max, Tensor) else self.v_max
        return {**super().describe(), "v_max": v_max, "eps": self.eps}


def _as_text(values: Tensor) -> str:
    return f"{values.item():.6g}" if values.numel() == 1 else "[" + ", ".join(f"{v:.6g}" for v in values.tolist()) + "]"


class LogisticLoss(Loss):
    """Logistic loss L_y(v) = Σ_i ln(1 + exp(−y_i v_i)) for labels y_i ∈ {−1, +1}.

    Its infimum 0 is not attained, so Definition II.2 (min f = 0) fails; moreover
    ‖∇L‖ ≤ Σ_i (1 − e^{−s_i}) ≤ L for the per-sample losses s_i, so ψ' ≥ 1/L near 0 and ψ cannot
    vanish at 0. It can be trained, but it carries no certificate.
    """

    name = "logistic"
    desingularizer_domain = "none: the infimum 0 is not attained, so no psi with psi(0) = 0 satisfies (3)"

    def check_data(self, y: Tensor) -> None:
        if not bool(((y == 1) | (y == -1)).all()):
            raise ValueError("the logistic loss needs labels y in {-1, +1}")

    def value(self, v: Tensor, y: Tensor) -> Tensor:
        return torch.nn.functional.softplus(-y * v).sum(-1)

    def grad(self, v: Tensor, y: Tensor) -> Tensor:
        return -y * torch.sigmoid(-y * v)

    def minimizer(self, y: Tensor) -> Tensor:
        raise DesingularizerUnavailable(self.desingularizer_domain)


LOSSES: dict[str, type[Loss]] = {"mse": MSELoss, "kl": KLLoss, "logistic": LogisticLoss}


def get_loss(name: str, **params) -> Loss:
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(sorted(LOSSES))}") from None
    return cls(**params)
