"""Convolutional DIP generators, each holding a batch of independent runs (issue 12, first part).

The paper's two-layer network (9) has no image prior (theory.md §8); the DIP that users know is
convolutional. A :class:`ConvGenerator` holds one architecture (a ``torch.nn.Module``) and, per run,
its own seeded parameters and its own fixed seeded input z; x = g(z, θ) is
``torch.func.functional_call`` per run, vmapped over the runs of a batch on images of at most
:data:`VMAP_MAX_PIXELS` pixels (one call per run otherwise: see there), so runs share no computation
and no statistics (the normalization is per run and per channel, over the image's pixels), and every
training method, stopping rule and Jacobian product of :class:`~dipcert.networks.Network` applies
unchanged (gradients by autograd).

- :class:`ConvDecoder` (Darestani and Heckel, 2021): repeated [upsample → 3×3 convolution → ReLU →
  channel normalization] from a small input to the image size, then a 1×1 convolution to one channel.
- :class:`DeepDecoder` (Heckel and Hand, 2019): repeated [1×1 convolution → upsample ×2 → ReLU →
  channel normalization], then a 1×1 convolution to one channel and a sigmoid; under-parametrized by
  design (fewer parameters than pixels).
- :class:`Skip` (Ulyanov, Vedaldi and Lempitsky, 2018): the encoder–decoder with skip connections of
  the Deep Image Prior paper, from a noise image of the image's size.

Input noise perturbation (``reg_noise_std`` σ, Ulyanov et al.'s regularizer, off by default): each
training pass (:meth:`ConvGenerator.forward`) evaluates the network at z + σ ε with a fresh ε ~ N(0, I)
drawn from the run's own generator; :meth:`~ConvGenerator.function` (evaluation, Jacobian products,
certificates) stays g(z, θ). See :meth:`ConvGenerator.forward` for what the loop then returns.

Initialization: PyTorch's default for convolutions, weights and biases uniform on ±1/√fan_in (drawn
from each run's own generator), normalization scale 1 and shift 0. The output is multiplied by
``output_scale`` (255: the [0, 255] range of dipcert's images).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .networks import Network, Params, Pullback, _generators

#: A batch of runs is vmapped up to this many pixels and evaluated one run at a time beyond. Measured
#: (benchmarks/RESULTS.md, 2 cores), a vmapped batch of 8 had 1.12-1.19x the throughput of 8 plain single
#: runs at 64x64, 0.40-0.65x at 128x128 and 0.38-0.54x at 256x256.
VMAP_MAX_PIXELS = 64 * 64


def _channel_norm(channels: int) -> nn.Module:
    """Per-channel normalization over the pixels of one image, with a learned scale and shift (the
    Deep Decoder's "channel normalization"; batch normalization with a batch of one image)."""
    return nn.GroupNorm(channels, channels)


def _copy_generator(gen: torch.Generator) -> torch.Generator:
    """An independent generator in the same state."""
    return torch.Generator().set_state(gen.get_state())


def _sizes(start: tuple[int, int], end: tuple[int, int], steps: int) -> list[tuple[int, int]]:
    """``steps`` sizes growing geometrically from ``start`` (exclusive) to ``end`` (inclusive)."""
    return [tuple(max(1, round(s * (e / s) ** ((i + 1) / steps))) for s, e in zip(start, end)) for i in range(steps)]


class ConvGenerator(Network):
    """A convolutional architecture with one parameter set and one input z per run (seeded)."""

    type_name = ""

    @staticmethod
    def build_module(image_shape: tuple[int, int], **options) -> tuple[nn.Module, tuple[int, int, int]]:
        """The architecture and the shape of its input z."""
        raise NotImplementedError

    @classmethod
    def sizes(cls, image_shape: tuple[int, int], **options) -> tuple[int, int]:
        """(trained parameters, activation entries) of one run, without allocating anything (for the
        memory check): the activations are the outputs of every block, channels × pixels (a module
        with an ``activation_entries`` attribute counts its own)."""
        options.pop("reg_noise_std", None)  # (a training option: the architecture does not depend on it)
        with torch.device("meta"):
            module, input_shape = cls.build_module(tuple(image_shape), **options)
        parameters = sum(p.numel() for p in module.parameters())
        if hasattr(module, "activation_entries"):
            return parameters, int(module.activation_entries)
        channels = input_shape[0]
        return parameters, channels * sum(h * w for h, w in module.sizes) + image_shape[0] * image_shape[1]

    def __init__(self, module: nn.Module, input_shape: tuple[int, int, int], image_shape: tuple[int, int], *,
                 seeds: Sequence[int], output_scale: float, input_scale: float, dtype: torch.dtype,
                 device: str | torch.device | None, settings: dict, reg_noise_std: float = 0.0) -> None:
        if not (math.isfinite(reg_noise_std) and reg_noise_std >= 0):
            raise ValueError(f"reg_noise_std must be a finite number >= 0, got {reg_noise_std!r}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.n = self.image_shape[0] * self.image_shape[1]
        self.seeds = [int(s) for s in seeds]
        self.batch = len(self.seeds)
        self.dtype, self.device = dtype, torch.empty(0, device=device).device
        self.reg_noise_std = float(reg_noise_std)
        self.output_scale, self.settings = float(output_scale), {**settings, "reg_noise_std": self.reg_noise_std}
        self.module = module.to(dtype=dtype, device=self.device)
        shapes = {name: p.shape for name, p in module.named_parameters()}
        per_run, inputs = {name: [] for name in shapes}, []
        generators = _generators(self.seeds)
        for gen in generators:
            for name, shape in shapes.items():
                per_run[name].append(self._draw(name, shape, gen))
            inputs.append(torch.rand(input_shape, generator=gen, dtype=torch.float64) * input_scale)
        to = dict(dtype=dtype, device=self.device)
        self._initial = {name: torch.stack(values).to(**to) for name, values in per_run.items()}
        self.z = torch.stack(inputs).to(**to)
        # the perturbations continue each run's own stream, after its θ_0 and z
        self._noise_start = [gen.get_state() for gen in generators]
        self._noise_generators = generators
        self._last_noise: Tensor | None = None  # ε of the last training pass, (batch, *z shape)
        self._repeat_noise = False  # the next training pass reuses it (set by select)

    def _draw(self, name: str, shape: torch.Size, gen: torch.Generator) -> Tensor:
        layer = self.module.get_submodule(name.rsplit(".", 1)[0])
        if isinstance(layer, nn.GroupNorm):  # scale 1, shift 0
            return (torch.ones if name.endswith("weight") else torch.zeros)(shape, dtype=torch.float64)
        fan_in = layer.in_channels * math.prod(layer.kernel_size)
        bound = 1 / math.sqrt(fan_in)
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound

    def initial_state(self) -> Params:
        return self._initial

    def _select(self, indices: Tensor) -> None:
        self.z = self.z[indices]
        self._initial = {name: p[indices] for name, p in self._initial.items()}
        rows = indices.tolist()
        self._noise_start = [self._noise_start[i] for i in rows]
        self._noise_generators = [_copy_generator(self._noise_generators[i]) for i in rows]
        if self._last_noise is not None:
            self._last_noise = self._last_noise[indices]
            self._repeat_noise = True

    @property
    def last_perturbation(self) -> Tensor | None:
        """ε of the last training pass, (batch, *z shape) (None before the first one, or with σ = 0)."""
        return self._last_noise

    def reset_noise(self) -> None:
        """Restart every run's perturbation stream where construction left it (to train again)."""
        self._noise_generators = [torch.Generator().set_state(state) for state in self._noise_start]
        self._last_noise, self._repeat_noise = None, False

    def _apply(self, params: Params, z: Tensor) -> Tensor:
        def one_run(p: Params, z1: Tensor) -> Tensor:
            return torch.func.functional_call(self.module, p, (z1.unsqueeze(0),))

        runs = z.shape[0]
        if runs > 1 and self.n <= VMAP_MAX_PIXELS:
            x = torch.func.vmap(one_run)(params, z)
        else:  # one run, or large images: one call per run
            x = torch.stack([one_run({name: p[b] for name, p in params.items()}, z[b]) for b in range(runs)])
        return x.reshape(runs, self.n) * self.output_scale

    def function(self, params: Params) -> Tensor:
        """x = g(z, θ) with the fixed inputs z (deterministic; evaluation, Jacobian products)."""
        return self._apply(params, self.z.to(next(iter(params.values())).dtype))

    def _perturbation(self) -> Tensor:
        """ε of this training pass, one N(0, I) draw per run from its own generator (in float64, so
        that float32 and float64 runs see the same numbers to rounding)."""
        if not self._repeat_noise or self._last_noise is None:
            shape = tuple(self.z.shape[1:])
            draws = [torch.randn(shape, generator=gen, dtype=torch.float64) for gen in self._noise_generators]
            self._last_noise = torch.stack(draws).to(dtype=self.dtype, device=self.device)
        self._repeat_noise = False
        return self._last_noise

    def forward(self, params: Params) -> tuple[Tensor, Pullback]:
        """A training pass: x = g(z + σ ε, θ) and its pullback, with σ = ``reg_noise_std`` and a fresh
        ε ~ N(0, I) per run and per pass (σ = 0: g(z, θ), the default).

        With σ > 0 this is Ulyanov et al.'s input perturbation: every gradient step fits the data
        from a slightly different input, which smooths the fitted map around z. The x returned is the
        *perturbed* output, so the loss, the history, the stopping rules and the reconstruction the
        training loop returns all see g(z + σ ε_τ, θ_τ): the one forward pass of an iteration
        serves both the loss and the gradient, as in the original code, which displays this
        output and averages it over iterations (exponential weight 0.99) for its result. dipcert's
        ``--average`` is that average; the unperturbed g(z, θ) of the final θ is
        ``function(result.params)``. A method that evaluates several gradients per step (the ODE
        solvers) would see a different ε at each evaluation, a randomized vector field and not an
        ODE: the configuration refuses ``--reg-noise-std`` with them.

        ε is drawn from the run's own generator (which also drew its θ_0 and z), so a run's passes
        do not depend on the other runs of its batch and the same seed gives the same bits. A network
        made by :meth:`select` keeps each run's stream, and its first pass reuses the ε of the pass
        before (the training loop re-evaluates the same iterate after dropping stopped runs; a
        second draw there would make a run's sequence depend on when others stopped).
        """
        if self.reg_noise_std == 0:
            return super().forward(params)
        dtype = next(iter(params.values())).dtype
        z = self.z.to(dtype) + self.reg_noise_std * self._perturbation().to(dtype)
        x, vjp = torch.func.vjp(lambda p: self._apply(p, z), params)
        return x, lambda w: vjp(w)[0]

    def describe(self) -> dict:
        return {"type": self.type_name, "n": self.n, "image_shape": list(self.image_shape),
                "parameters_per_run": self.parameter_count, "input_shape": list(self.z.shape[1:]),
                "output_scale": self.output_scale, **self.settings, "seeds": self.seeds}


class _ConvDecoderModule(nn.Module):
    def __init__(self, channels: int, sizes: list[tuple[int, int]], kernel: int) -> None:
        super().__init__()
        self.sizes = sizes
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, kernel, padding=kernel // 2, padding_mode="reflect")
                                   for _ in sizes)
        self.norms = nn.ModuleList(_channel_norm(channels) for _ in sizes)
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, h: Tensor) -> Tensor:
        for size, conv, norm in zip(self.sizes, self.convs, self.norms):
            h = norm(torch.relu(conv(nn.functional.interpolate(h, size=size, mode="nearest"))))
        return self.out(h)


class ConvDecoder(ConvGenerator):
    """ConvDecoder (Darestani and Heckel, 2021): ``layers`` blocks [nearest upsampling → k×k
    convolution → ReLU → channel normalization] growing geometrically from ``input_size`` to the image,
    then a 1×1 convolution. Defaults: 64 channels, 6 blocks, 3×3 kernels, an 8×8 input with entries
    uniform on [0, 0.1] (the DIP's input noise scale) — a smaller version of the 256-channel, 7-block
    network of the paper, sized for 64×64 to 256×256 images on a CPU (our choice)."""

    type_name = "conv-decoder"

    def __init__(self, image_shape: tuple[int, int], *, channels: int = 64, layers: int = 6, kernel: int = 3,
                 input_size: int = 8, reg_noise_std: float = 0.0, seeds: Sequence[int] = (0,),
                 output_scale: float = 255.0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device | None = None) -> None:
        module, input_shape = self.build_module(image_shape, channels=channels, layers=layers, kernel=kernel,
                                                input_size=input_size)
        super().__init__(module, input_shape, image_shape, seeds=seeds, output_scale=output_scale,
                         input_scale=0.1, dtype=dtype, device=device, reg_noise_std=reg_noise_std,
                         settings={"channels": channels, "layers": layers, "kernel": kernel, "input_size": input_size})

    @staticmethod
    def build_module(image_shape: tuple[int, int], *, channels: int = 64, layers: int = 6, kernel: int = 3,
                     input_size: int = 8) -> tuple[nn.Module, tuple[int, int, int]]:
        start = (min(input_size, image_shape[0]), min(input_size, image_shape[1]))
        return _ConvDecoderModule(channels, _sizes(start, tuple(image_shape), layers), kernel), (channels, *start)


class _DeepDecoderModule(nn.Module):
    def __init__(self, channels: int, sizes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.sizes = sizes
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(len(sizes) + 1))
        self.norms = nn.ModuleList(_channel_norm(channels) for _ in range(len(sizes) + 1))
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, h: Tensor) -> Tensor:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = conv(h)
            if i < len(self.sizes):
                h = nn.functional.interpolate(h, size=self.sizes[i], mode="bilinear", align_corners=False)
            h = norm(torch.relu(h))
        return torch.sigmoid(self.out(h))


class DeepDecoder(ConvGenerator):
    """Deep Decoder (Heckel and Hand, 2019): ``layers`` blocks [1×1 convolution → bilinear upsampling
    ×2 → ReLU → channel normalization], one more block without upsampling, then a 1×1 convolution to
    one channel and a sigmoid. Defaults from the paper's image experiments: 64 channels, 5 upsampling
    layers (the input is the image size / 2⁵, at least 2 pixels a side: the channel normalization of a
    single pixel is zero, which left images under 64 pixels a side unfitted), input entries uniform on [0, 1]."""

    type_name = "deep-decoder"

    def __init__(self, image_shape: tuple[int, int], *, channels: int = 64, layers: int = 5,
                 reg_noise_std: float = 0.0, seeds: Sequence[int] = (0,), output_scale: float = 255.0,
                 dtype: torch.dtype = torch.float32, device: str | torch.device | None = None) -> None:
        module, input_shape = self.build_module(image_shape, channels=channels, layers=layers)
        super().__init__(module, input_shape, image_shape, seeds=seeds, output_scale=output_scale, input_scale=1.0,
                         dtype=dtype, device=device, reg_noise_std=reg_noise_std,
                         settings={"channels": channels, "layers": layers})

    @staticmethod
    def build_module(image_shape: tuple[int, int], *, channels: int = 64,
                     layers: int = 5) -> tuple[nn.Module, tuple[int, int, int]]:
        start = tuple(min(s, max(2, s // 2**layers)) for s in image_shape)
        sizes = [tuple(min(e, s * 2 ** (i + 1)) for s, e in zip(start, image_shape)) for i in range(layers)]
        sizes[-1] = tuple(image_shape)
        return _DeepDecoderModule(channels, sizes), (channels, *start)


class _SkipModule(nn.Module):
    """The skip encoder–decoder; ``sizes[i]`` is the (H, W) that level i receives (sizes[0]: the
    image), each the ceiling of half the one before (a stride-2 convolution with padding 1)."""

    def __init__(self, input_channels: int, channels: int, skip_channels: int, sizes: list[tuple[int, int]],
                 upsample: str) -> None:
        super().__init__()
        levels = len(sizes) - 1
        self.sizes, self.upsample, self.skip_channels = sizes, upsample, skip_channels
        inputs = [input_channels] + [channels] * (levels - 1)

        def conv(c_in: int, c_out: int, kernel: int, size: tuple[int, int], stride: int = 1) -> nn.Conv2d:
            # reflection padding (as in the paper's experiments); a side of one pixel has nothing to
            # reflect: it is replicated
            mode = "reflect" if min(size) > kernel // 2 else "replicate"
            return nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, padding_mode=mode)

        def stage(*layers: nn.Module) -> nn.Sequential:
            return nn.Sequential(*layers)

        act = nn.LeakyReLU(0.2)
        self.down = nn.ModuleList(stage(conv(inputs[i], channels, 3, sizes[i], 2), _channel_norm(channels), act,
                                        conv(channels, channels, 3, sizes[i + 1]), _channel_norm(channels), act)
                                  for i in range(levels))
        self.skip = nn.ModuleList(stage(conv(inputs[i], skip_channels, 1, sizes[i]), _channel_norm(skip_channels),
                                        act) for i in range(levels)) if skip_channels else None
        both = skip_channels + channels
        self.up = nn.ModuleList(stage(_channel_norm(both), conv(both, channels, 3, sizes[i]), _channel_norm(channels),
                                      act, conv(channels, channels, 1, sizes[i]), _channel_norm(channels), act)
                                for i in range(levels))
        self.out = nn.Conv2d(channels, 1, 1)
        # every tensor a pass makes is at most a few times the outputs of its convolutions and
        # concatenations: count those (the memory check multiplies them)
        pixels = [h * w for h, w in sizes]
        self.activation_entries = 2 * input_channels * pixels[0] + pixels[0] + sum(
            2 * channels * pixels[i + 1] + skip_channels * pixels[i] + 2 * both * pixels[i] + 2 * channels * pixels[i]
            for i in range(levels))

    def _level(self, i: int, h: Tensor) -> Tensor:
        deeper = self.down[i](h)
        if i + 1 < len(self.down):
            deeper = self._level(i + 1, deeper)
        size = self.sizes[i]
        mode = dict(mode="nearest") if self.upsample == "nearest" else dict(mode="bilinear", align_corners=False)
        deeper = nn.functional.interpolate(deeper, scale_factor=2, **mode)[..., : size[0], : size[1]]
        if self.skip is not None:
            deeper = torch.cat([self.skip[i](h), deeper], dim=1)
        return self.up[i](deeper)

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.out(self._level(0, z)))


class Skip(ConvGenerator):
    """The encoder–decoder with skip connections of the Deep Image Prior (Ulyanov, Vedaldi and
    Lempitsky, 2018; ``skip`` in their code). From a noise image z with ``input_channels`` channels,
    ``layers`` levels, each

    - encoder: stride-2 3×3 convolution → norm → LeakyReLU(0.2) → 3×3 convolution → norm → LeakyReLU;
    - skip branch, from the level's input: 1×1 convolution to ``skip_channels`` → norm → LeakyReLU;
    - decoder: [skip branch, upsampled ×2 output of the level below] concatenated → norm → 3×3
      convolution → norm → LeakyReLU → 1×1 convolution → norm → LeakyReLU;

    then a 1×1 convolution to one channel and a sigmoid (× ``output_scale``). Convolutions have
    biases and reflection padding. An odd side is halved to its ceiling and the upsampled map is
    cropped back to the level's size (the original crops the larger map of a concatenation too).

    From the paper's code (its denoising and super-resolution settings): the structure, 5 levels,
    3×3 and 1×1 kernels, 4 skip channels, LeakyReLU(0.2), reflection padding, bilinear upsampling
    (``nearest`` is its function's default and its inpainting setting), 32 input channels of noise
    uniform on [0, 0.1] at the image's size, a sigmoid output. Ours: 64 channels on every level
    instead of 128 (572,325 parameters per run instead of 2.2 million), so that an Adam step at
    64×64 costs about twice a ConvDecoder step on a CPU instead of four times; per-run channel
    normalization (GroupNorm with one group per channel, over the image's pixels) where the original
    uses batch normalization — with its batch of one image the same statistics, here computed for
    each run alone; ``reg_noise_std`` (the input perturbation, see :meth:`ConvGenerator.forward`) 0
    by default, so that training follows the gradient of a fixed loss like every other dipcert
    network (the paper: 1/30 for denoising, 0.03 for inpainting and super-resolution). The deepest
    map must keep two pixels: 5 levels need an image of more than 32 pixels on one side
    (:meth:`max_layers`).
    """

    type_name = "skip"

    def __init__(self, image_shape: tuple[int, int], *, channels: int = 64, layers: int = 5, skip_channels: int = 4,
                 input_channels: int = 32, upsample: str = "bilinear", reg_noise_std: float = 0.0,
                 seeds: Sequence[int] = (0,), output_scale: float = 255.0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device | None = None) -> None:
        module, input_shape = self.build_module(image_shape, channels=channels, layers=layers,
                                                skip_channels=skip_channels, input_channels=input_channels,
                                                upsample=upsample)
        super().__init__(module, input_shape, image_shape, seeds=seeds, output_scale=output_scale, input_scale=0.1,
                         dtype=dtype, device=device, reg_noise_std=reg_noise_std,
                         settings={"channels": channels, "layers": layers, "skip_channels": skip_channels,
                                   "input_channels": input_channels, "upsample": upsample})

    @staticmethod
    def max_layers(image_shape: tuple[int, int]) -> int:
        """The most levels for this image: its deepest map must keep 2 pixels or more (0: none fit)."""
        size, levels = tuple(image_shape), 0
        while math.prod(size := tuple((s + 1) // 2 for s in size)) >= 2:
            levels += 1
        return levels

    @staticmethod
    def build_module(image_shape: tuple[int, int], *, channels: int = 64, layers: int = 5, skip_channels: int = 4,
                     input_channels: int = 32, upsample: str = "bilinear") -> tuple[nn.Module, tuple[int, int, int]]:
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLING)}, got {upsample!r}")
        for name, value, low in (("channels", channels, 1), ("layers", layers, 1), ("skip_channels", skip_channels, 0),
                                 ("input_channels", input_channels, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        sizes = [tuple(int(s) for s in image_shape)]
        for _ in range(layers):
            sizes.append(tuple((s + 1) // 2 for s in sizes[-1]))
        if math.prod(sizes[-1]) < 2:
            raise ValueError(f"the skip network's {layers} levels halve a {sizes[0][0]}x{sizes[0][1]} image to "
                             f"{sizes[-1][0]}x{sizes[-1][1]}, where a per-channel normalization has one value: use "
                             f"at most {Skip.max_layers(sizes[0])} levels (--layers) or a larger image")
        return _SkipModule(input_channels, channels, skip_channels, sizes, upsample), (input_channels, *sizes[0])


#: the upsampling modes of :class:`Skip`
UPSAMPLING = ("bilinear", "nearest")


#: the generators by registry name
GENERATORS: dict[str, type[ConvGenerator]] = {cls.type_name: cls for cls in (ConvDecoder, DeepDecoder, Skip)}
