"""Generators g(u, θ) for a batch of independent runs.

Every network holds ``batch`` independent runs (a leading batch dimension on every tensor), each
initialized from its own seed, so that a run's θ_0 does not depend on how runs are batched.
Parameters live in a ``dict[str, Tensor]``; :meth:`Network.forward` returns ``x = g(u, θ)`` of shape
``(batch, n)`` and a pullback that maps a cotangent ``w`` to ``J_g(θ)ᵀ w`` (one gradient per
parameter).
"""
from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from .activations import Activation, get_activation

Params = dict[str, Tensor]
Pullback = Callable[[Tensor], "dict[str, Tensor | RankOne]"]

TRAINABLE = ("W", "WV", "V")
V_LAWS = ("rademacher", "uniform", "gaussian")


@dataclass(frozen=True)
class RankOne:
    """A batch of rank-one matrices ``left[b] ⊗ right[b]``, kept factored.

    The V-gradient of the two-layer net is rank one; applying it with one in-place ``baddbmm`` reads
    and writes V once instead of materializing an n×k matrix each step.
    """

    left: Tensor  # (batch, n)
    right: Tensor  # (batch, k)

    def dense(self) -> Tensor:
        return self.left.unsqueeze(-1) * self.right.unsqueeze(-2)

    def sqnorm(self) -> Tensor:
        """Squared Frobenius norm per run."""
        return self.left.pow(2).sum(-1) * self.right.pow(2).sum(-1)


#: Batches up to this size apply rank-one updates run by run (see :func:`add_scaled_`).
_PER_RUN_UPDATES = 4


def add_scaled_(param: Tensor, grad: Tensor | RankOne, scale: Tensor) -> None:
    """In place ``param += scale[b] * grad[b]`` for every run b (``scale`` has shape (batch,))."""
    if isinstance(grad, RankOne):
        left = grad.left * scale.unsqueeze(-1)
        if len(left) <= _PER_RUN_UPDATES:  # addr_ uses every core, one batched baddbmm_ only one
            for b in range(len(left)):
                param[b].addr_(left[b], grad.right[b])
        else:
            param.baddbmm_(left.unsqueeze(-1), grad.right.unsqueeze(-2))
    else:
        param.addcmul_(grad, scale.view(-1, *([1] * (grad.dim() - 1))))


#: With ``TwoLayerDIP(fused=None)``, gradient descent uses the fused kernel from this signal size n …
FUSED_FROM_N = 64
#: … or from this size of V_0 in bytes (the whole batch), whatever n.
FUSED_FROM_BYTES = 128 << 20

#: Row blocks a product with a large V is split into (see :func:`_blocks`).
ROW_BLOCKS = 8
#: Entries per run of V from which the products use row blocks.
BLOCKED_FROM = 1 << 20


def _blocks(M: Tensor) -> int:
    """How many row blocks to view M (batch, n, k) as: MKL computes a single matrix-vector product
    on one core, a batch of them on all cores; viewing each V as ``ROW_BLOCKS`` row blocks (a free
    view) makes the products of a small batch use every core (measured in benchmarks/RESULTS.md)."""
    n, k = M.shape[1], M.shape[2]
    return ROW_BLOCKS if n * k >= BLOCKED_FROM and n % ROW_BLOCKS == 0 and M.is_contiguous() else 1


def _matvec(M: Tensor, v: Tensor) -> Tensor:
    """M[b] @ v[b] for M (batch, n, k), v (batch, k), computed as vᵀMᵀ: PyTorch's batched
    matrix-vector product is several times slower than this row-vector form on CPU."""
    c = _blocks(M)
    b, n, k = M.shape
    rows = torch.bmm(v.repeat_interleave(c, 0).unsqueeze(1), M.view(b * c, n // c, k).transpose(1, 2))
    return rows.view(b, n)


def _rmatvec(M: Tensor, w: Tensor) -> Tensor:
    """M[b]ᵀ @ w[b] for M (batch, n, k), w (batch, n), over the same row blocks (partial sums added)."""
    c = _blocks(M)
    b, n, k = M.shape
    parts = torch.bmm(w.reshape(b * c, 1, n // c), M.view(b * c, n // c, k))
    return parts.view(b, c, k).sum(1)


def _check_positive_int(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    if len(seeds) == 0:
        raise ValueError("at least one seed is needed (one per run)")
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def random_sphere(d: int, generator: torch.Generator) -> Tensor:
    """u uniform on the unit sphere S^{d−1} (assumption A-6), in float64 on the CPU."""
    u = torch.randn(d, generator=generator, dtype=torch.float64)
    return u / u.norm()


def _draw_v(law: str, n: int, k: int, generator: torch.Generator) -> Tensor:
    """V_0 with iid centered entries of unit variance (A-8 holds for bounded laws, D = 1 or √3)."""
    if law == "rademacher":
        return torch.randint(0, 2, (n, k), generator=generator).to(torch.float64) * 2 - 1
    if law == "uniform":
        return (torch.rand(n, k, generator=generator, dtype=torch.float64) * 2 - 1) * math.sqrt(3.0)
    if law == "gaussian":
        return torch.randn(n, k, generator=generator, dtype=torch.float64)
    raise ValueError(f"unknown V0 law {law!r}; allowed: {', '.join(V_LAWS)}")


class Network(ABC):
    """g(u, ·) for ``batch`` independent runs."""

    n: int
    batch: int

    @abstractmethod
    def initial_state(self) -> Params:
        """The trainable parameters θ_0 as the network holds them (not a copy: do not modify)."""

    @property
    def parameter_count(self) -> int:
        """Trained parameters p of one run (rank J_g ≤ min(n, p))."""
        return sum(p[0].numel() for p in self.initial_state().values())

    def initial_params(self) -> Params:
        """A fresh copy of θ_0, to train."""
        return {name: p.clone() for name, p in self.initial_state().items()}

    @abstractmethod
    def function(self, params: Params) -> Tensor:
        """x = g(u, θ) of shape (batch, n), differentiable by autograd."""

    def forward(self, params: Params) -> tuple[Tensor, Pullback]:
        """x = g(u, θ) and the pullback w ↦ J_g(θ)ᵀ w (autograd unless a subclass knows better)."""
        x, vjp = torch.func.vjp(self.function, params)
        return x, lambda w: vjp(w)[0]

    #: Whether :meth:`descend` is available (a gradient step fused with the next forward pass).
    fused_descent: bool = False

    def ntk_matvec(self, params: Params, w: Tensor) -> Tensor:
        """J_g(θ) J_g(θ)ᵀ w for w of shape (batch, n) (the NTK Gram matrix applied to w)."""
        _, vjp = torch.func.vjp(self.function, params)
        return torch.func.jvp(self.function, (params,), vjp(w))[1]

    @abstractmethod
    def describe(self) -> dict:
        """JSON-able configuration."""

    def select(self, indices: Tensor) -> "Network":
        """The runs at ``indices`` (1-D index tensor) as a network of their own."""
        new = copy.copy(self)
        new.seeds = [self.seeds[i] for i in indices.tolist()]
        new.batch = len(new.seeds)
        new._select(indices.to(self.device))
        return new

    @abstractmethod
    def _select(self, indices: Tensor) -> None:
        """Slice this (freshly copied) network's per-run state."""

    def param_sqdist(self, params: Params, initial: Params) -> Tensor:
        """‖θ − θ_0‖² per run (Frobenius over all trainable tensors), in float64."""
        return sum(_sqdist(p, initial[name]) for name, p in params.items())


_CHUNK_ELEMENTS = 1 << 20


def _sqdist(a: Tensor, b: Tensor) -> Tensor:
    """‖a[i] − b[i]‖² per run, in float64, without a temporary as large as ``a`` (a full-size
    difference of V costs more than a training step): on the CPU by one pass of a compiled kernel,
    elsewhere in cache-sized chunks."""
    if a.dim() == 3 and a.transpose(1, 2).is_contiguous() and b.transpose(1, 2).is_contiguous():
        a, b = a.transpose(1, 2), b.transpose(1, 2)  # V laid out for descend: the same sum, in memory order
    a, b = a.flatten(1), b.flatten(1)
    if a.device.type == "cpu" and a.dtype == b.dtype and a.is_contiguous() and b.is_contiguous():
        from .kernels import sqdist

        return sqdist(a, b)
    step = max(1, _CHUNK_ELEMENTS // a.shape[0])
    total = torch.zeros(a.shape[0], dtype=torch.float64, device=a.device)
    for start in range(0, a.shape[1], step):
        diff = a[:, start : start + step] - b[:, start : start + step]
        total += torch.linalg.vector_norm(diff, dim=-1).double() ** 2
    return total


class TwoLayerDIP(Network):
    """The two-layer DIP network of eq. (9): g(u, θ) = V φ(W u)/√k.

    Initialization follows A-6..A-8: u uniform on S^{d−1}, W_0 iid N(0, 1), V_0 with iid centered
    unit-variance entries (Rademacher by default, D = 1). ``train`` picks the trained layers: "W"
    (the hidden layer only, V = V_0 fixed, as in the paper's experiments), "WV", or "V" (the output
    layer only: a linear model in V, whose Jacobian does not depend on θ).

    With ``parametrization="reduced"`` (default) W is represented by z = W u ∈ R^k: every
    W-gradient is r uᵀ, so gradient methods keep W(I − u uᵀ) = W_0(I − u uᵀ) and the dynamics of z
    are exactly those of W (theory.md §6); W is recovered by ``W_0 + (z − z_0) uᵀ``. The "full"
    parametrization trains W ∈ R^{k×d} through autograd and exists to check the reduction.

    Gradient descent on the CPU can take its steps through :meth:`descend`, which reads V from
    memory once per step instead of two or four times (kernels.py): always with ``fused=True``,
    never with ``fused=False``, and with ``fused=None`` (default) where that was measured to be
    faster (see :attr:`fused_descent`). Both paths give the same results up to rounding. Once used,
    the kernel keeps a transposed copy of V_0 (the size of V_0), and a trained V is then a
    non-contiguous (batch, n, k) view of a contiguous Vᵀ.
    """

    def __init__(
        self,
        n: int,
        k: int,
        *,
        d: int = 32,
        activation: str | Activation = "sigmoid",
        train: str = "W",
        v_law: str = "rademacher",
        seeds: Sequence[int] = (0,),
        parametrization: str = "reduced",
        dtype: torch.dtype = torch.float64,
        device: str | torch.device | None = None,
        fused: bool | None = None,
    ) -> None:
        self.n = _check_positive_int("n (signal size)", n)
        self.k = _check_positive_int("k (width)", k)
        self.d = _check_positive_int("d (input size)", d)
        self.activation = get_activation(activation) if isinstance(activation, str) else activation
        if train not in TRAINABLE:
            raise ValueError(f"train must be one of {', '.join(TRAINABLE)}, got {train!r}")
        if parametrization not in ("reduced", "full"):
            raise ValueError(f"parametrization must be 'reduced' or 'full', got {parametrization!r}")
        if v_law not in V_LAWS:
            raise ValueError(f"unknown V0 law {v_law!r}; allowed: {', '.join(V_LAWS)}")
        self.train, self.v_law, self.parametrization = train, v_law, parametrization
        self.seeds = [int(s) for s in seeds]
        self.batch = len(self.seeds)
        self.dtype, self.device = dtype, torch.empty(0, device=device).device

        # W_0 = z_0 uᵀ + G (I − u uᵀ) with z_0 ~ N(0, I_k) and G iid N(0, 1) independent: exactly the
        # law of an iid N(0, 1) matrix (rotation invariance), with W_0 u = z_0. Only the reduced
        # state z_0 is drawn up front; G (k×d) is drawn when W_0 is first needed.
        u, z0, v0, self._perp_states = [], [], [], []
        for gen in _generators(self.seeds):
            u.append(random_sphere(d, gen))
            z0.append(torch.randn(k, generator=gen, dtype=torch.float64))
            v0.append(_draw_v(v_law, n, k, gen))
            self._perp_states.append(gen.get_state())
        to = dict(dtype=dtype, device=self.device)
        self.u = torch.stack(u).to(**to)  # (b, d)
        self.z0 = torch.stack(z0).to(**to)  # (b, k), z_0 = W_0 u
        self.V0 = torch.stack(v0).to(**to)  # (b, n, k)
        self._W0: Tensor | None = None
        self._scale = 1.0 / math.sqrt(k)
        self.fused = fused
        self._v0_columns: tuple[Tensor, Tensor] | None = None  # (V0, V0ᵀ contiguous), for descend

    @property
    def W0(self) -> Tensor:
        """The initial hidden weights W_0 (batch, k, d), drawn on first use."""
        if self._W0 is None:
            blocks = []
            for b, state in enumerate(self._perp_states):
                gen = torch.Generator()
                gen.set_state(state)
                u = self.u[b].to(dtype=torch.float64, device="cpu")
                G = torch.randn(self.k, self.d, generator=gen, dtype=torch.float64)
                z0 = self.z0[b].to(dtype=torch.float64, device="cpu")
                blocks.append(torch.outer(z0, u) + G - torch.outer(G @ u, u))
            self._W0 = torch.stack(blocks).to(dtype=self.dtype, device=self.device)
        return self._W0

    def _select(self, indices: Tensor) -> None:
        self.u, self.z0, self.V0 = self.u[indices], self.z0[indices], self.V0[indices]
        self._W0 = None if self._W0 is None else self._W0[indices]
        self._perp_states = [self._perp_states[i] for i in indices.tolist()]

    @property
    def trains_v(self) -> bool:
        return "V" in self.train

    @property
    def trains_w(self) -> bool:
        return "W" in self.train

    def initial_state(self) -> Params:
        params = {}
        if self.trains_w:
            params = {"z": self.z0} if self.parametrization == "reduced" else {"W": self.W0}
        if self.trains_v:
            params["V"] = self.V0
        return params

    def hidden(self, params: Params) -> Tensor:
        """z = W u, shape (batch, k)."""
        if "z" in params:
            return params["z"]
        if "W" in params:
            return torch.einsum("bkd,bd->bk", params["W"], self.u)
        return self.z0

    def weights(self, params: Params) -> tuple[Tensor, Tensor]:
        """(W, V) in the original parametrization of eq. (9)."""
        V = params.get("V", self.V0)
        if "W" in params:
            return params["W"], V
        if "z" not in params:
            return self.W0, V
        W = self.W0 + (params["z"] - self.z0).unsqueeze(-1) * self.u.unsqueeze(-2) / self.u.pow(2).sum(-1)[:, None, None]
        return W, V

    def function(self, params: Params) -> Tensor:
        h = self.activation(self.hidden(params))
        return _matvec(params.get("V", self.V0), h) * self._scale

    def forward(self, params: Params) -> tuple[Tensor, Pullback]:
        if self.parametrization == "full" and self.trains_w:
            return super().forward(params)
        z = self.hidden(params)
        V = params.get("V", self.V0)
        h = self.activation(z)
        x = _matvec(V, h) * self._scale

        def pullback(w: Tensor) -> dict[str, Tensor | RankOne]:
            grads: dict[str, Tensor | RankOne] = {}
            if self.trains_w:
                vt_w = _rmatvec(V, w) * self._scale  # Vᵀw/√k, (b, k)
                grads["z"] = vt_w * self.activation.derivative_at(z, h)
            if self.trains_v:
                grads["V"] = RankOne(w * self._scale, h)
            return grads

        return x, pullback

    @property
    def fused_descent(self) -> bool:
        """:meth:`descend` is available and wanted: W reduced (or not trained), a built-in activation,
        the CPU, and ``fused`` True, or None with n ≥ ``FUSED_FROM_N`` or V_0 (the whole batch) of at
        least ``FUSED_FROM_BYTES``. Below both, the kernel is bound by its scalar activations and the
        matrix-vector path is faster (measured in benchmarks/RESULTS.md)."""
        if self.fused is False or self.device.type != "cpu":
            return False
        if self.fused is None and self.n < FUSED_FROM_N and self.V0.numel() * self.V0.element_size() < FUSED_FROM_BYTES:
            return False
        if self.trains_w and self.parametrization != "reduced":
            return False
        from .kernels import ACTIVATION_CODES

        return self.activation.name in ACTIVATION_CODES and self.activation is get_activation(self.activation.name)

    def _v0_transposed(self) -> Tensor:
        """V_0ᵀ (batch, k, n), contiguous: a copy kept while V_0 stays the same tensor."""
        if self._v0_columns is None or self._v0_columns[0] is not self.V0:
            self._v0_columns = (self.V0, self.V0.transpose(1, 2).contiguous())
        return self._v0_columns[1]

    def descent_state(self) -> Params:
        """θ_0 laid out for :meth:`descend` (not a copy: do not modify): as :meth:`initial_state`, but a
        trained V is the (batch, n, k) view of a contiguous Vᵀ, so that its columns are contiguous."""
        params = self.initial_state()
        if self.trains_v:
            params["V"] = self._v0_transposed().transpose(1, 2)
        return params

    def descend(self, params: Params, w: Tensor, steps: Tensor) -> Tensor:
        """One gradient step θ ← θ + steps[b] · J_gᵀ w in place (steps: −γ, or 0 for a frozen run), and
        x = g(u, θ) at the new θ, in one pass over V (kernels.py). Needs :attr:`fused_descent`; a
        trained V should be laid out as in :meth:`descent_state` (it is moved there otherwise)."""
        from .kernels import fused_descent

        if self.trains_v:
            Vt = params["V"].transpose(1, 2)
            if not Vt.is_contiguous():
                Vt = Vt.contiguous()
                params["V"] = Vt.transpose(1, 2)
        else:
            Vt = self._v0_transposed()
        z = params["z"] if self.trains_w else self.z0.clone()  # (a fixed z is read, never written)
        return fused_descent(Vt, z, w, steps, self.activation.name, train_w=self.trains_w, train_v=self.trains_v)

    def ntk_matvec(self, params: Params, w: Tensor) -> Tensor:
        """Closed form (theory.md §2.3): J Jᵀ = V D² Vᵀ/k when W trains, plus (‖φ(z)‖²/k) I when V
        trains."""
        z = self.hidden(params)
        V = params.get("V", self.V0)
        out = torch.zeros_like(w)
        if self.trains_w:
            dphi2 = self.activation.derivative(z) ** 2
            out = _matvec(V, dphi2 * _rmatvec(V, w)) / self.k
        if self.trains_v:
            out = out + self.activation(z).pow(2).sum(-1, keepdim=True) / self.k * w
        return out

    def describe(self) -> dict:
        return {
            "type": "two-layer",
            "n": self.n,
            "k": self.k,
            "d": self.d,
            "activation": self.activation.name,
            "train": self.train,
            "v_law": self.v_law,
            "parametrization": self.parametrization,
            "seeds": self.seeds,
        }


class MLP(Network):
    """The L-layer network of Definition II.1: g⁽⁰⁾ = u, g⁽ˡ⁾ = φ(W⁽ˡ⁾g⁽ˡ⁻¹⁾), g = W⁽ᴸ⁾g⁽ᴸ⁻¹⁾.

    No biases, linear last layer, all layers trained. ``widths`` = (N_1, …, N_{L−1}); N_0 = d and
    N_L = n. The paper does not fix an initialization for deep nets: we draw W⁽ˡ⁾ iid
    N(0, 1/N_{l−1}) (variance-preserving; our choice), u uniform on the sphere.
    """

    def __init__(
        self,
        n: int,
        widths: Sequence[int],
        *,
        d: int = 32,
        activation: str | Activation = "sigmoid",
        seeds: Sequence[int] = (0,),
        dtype: torch.dtype = torch.float64,
        device: str | torch.device | None = None,
    ) -> None:
        self.n = _check_positive_int("n (signal size)", n)
        self.d = _check_positive_int("d (input size)", d)
        self.widths = [_check_positive_int("layer width", w) for w in widths]
        self.activation = get_activation(activation) if isinstance(activation, str) else activation
        self.seeds = [int(s) for s in seeds]
        self.batch = len(self.seeds)
        self.dtype, self.device = dtype, torch.empty(0, device=device).device
        sizes = [d, *self.widths, n]
        u, layers = [], [[] for _ in range(len(sizes) - 1)]
        for gen in _generators(self.seeds):
            u.append(random_sphere(d, gen))
            for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                layers[i].append(torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64) / math.sqrt(fan_in))
        to = dict(dtype=dtype, device=self.device)
        self.u = torch.stack(u).to(**to)
        self._initial = {f"W{i + 1}": torch.stack(ws).to(**to) for i, ws in enumerate(layers)}

    def initial_state(self) -> Params:
        return self._initial

    def _select(self, indices: Tensor) -> None:
        self.u = self.u[indices]
        self._initial = {name: w[indices] for name, w in self._initial.items()}

    def function(self, params: Params) -> Tensor:
        names = list(params)
        h = self.u.to(params[names[0]].dtype)  # (float64 parameters: the certificate's Gram matrix)
        for name in names[:-1]:
            h = self.activation(torch.einsum("bij,bj->bi", params[name], h))
        return torch.einsum("bij,bj->bi", params[names[-1]], h)

    def forward(self, params: Params) -> tuple[Tensor, Pullback]:
        """x = g(u, θ) and its pullback by backpropagation: with a_l = W⁽ˡ⁾g⁽ˡ⁻¹⁾, the gradient in
        W⁽ˡ⁾ is δ_l g⁽ˡ⁻¹⁾ᵀ, δ_L = w and δ_l = φ'(a_l) ⊙ W⁽ˡ⁺¹⁾ᵀδ_{l+1} (row-vector products: several
        times faster than autograd at n = 4096)."""
        names = list(params)
        acts, pre = [self.u], []  # g⁽⁰⁾, …, g⁽ᴸ⁻¹⁾ and a_1, …, a_{L−1}
        for name in names[:-1]:
            pre.append(_matvec(params[name], acts[-1]))
            acts.append(self.activation(pre[-1]))
        x = _matvec(params[names[-1]], acts[-1])

        def pullback(w: Tensor) -> dict[str, Tensor | RankOne]:
            grads, delta = {}, w
            for l in range(len(names) - 1, -1, -1):
                grads[names[l]] = delta.unsqueeze(-1) * acts[l].unsqueeze(-2)
                if l > 0:
                    delta = _rmatvec(params[names[l]], delta) * self.activation.derivative_at(pre[l - 1], acts[l])
            return {name: grads[name] for name in names}

        return x, pullback

    def describe(self) -> dict:
        return {
            "type": "mlp",
            "n": self.n,
            "d": self.d,
            "widths": self.widths,
            "activation": self.activation.name,
            "seeds": self.seeds,
        }


class LinearNetwork(Network):
    """A linear model g(θ) = M θ with θ ∈ R^p: the sanity model of theory.md §6.4, on which
    gradient descent, the inertial schemes and the ODEs are linear recurrences with exact solutions
    (matrix powers and exponentials). θ_0 is given, or drawn iid N(0, 1) per seed."""

    def __init__(
        self,
        M: Tensor,
        *,
        theta0: Tensor | None = None,
        seeds: Sequence[int] = (0,),
        dtype: torch.dtype = torch.float64,
        device: str | torch.device | None = None,
    ) -> None:
        if M.dim() != 2:
            raise ValueError(f"M must be a matrix (n, p), got shape {tuple(M.shape)}")
        self.seeds = [int(s) for s in seeds]
        self.batch, (self.n, self.p) = len(self.seeds), M.shape
        self.dtype, self.device = dtype, torch.empty(0, device=device).device
        self.M = M.to(dtype=dtype, device=self.device)
        if theta0 is None:
            theta0 = torch.stack([torch.randn(self.p, generator=g, dtype=torch.float64) for g in _generators(self.seeds)])
        if theta0.shape != (self.batch, self.p):
            raise ValueError(f"theta0 must have shape ({self.batch}, {self.p}), got {tuple(theta0.shape)}")
        self.theta0 = theta0.to(dtype=dtype, device=self.device)

    def initial_state(self) -> Params:
        return {"theta": self.theta0}

    def _select(self, indices: Tensor) -> None:
        self.theta0 = self.theta0[indices]

    def function(self, params: Params) -> Tensor:
        return params["theta"] @ self.M.T.to(params["theta"].dtype)

    def forward(self, params: Params) -> tuple[Tensor, Pullback]:
        return self.function(params), lambda w: {"theta": w @ self.M}

    def describe(self) -> dict:
        return {"type": "linear", "n": self.n, "p": self.p, "seeds": self.seeds}
