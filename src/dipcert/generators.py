"""Convolutional DIP generators, each holding a batch of independent runs (issue 12, first part).

The paper's two-layer network (9) has no image prior (theory.md §8); the DIP that users know is
convolutional. A :class:`ConvGenerator` holds one architecture (a ``torch.nn.Module``) and, per run,
its own seeded parameters and its own fixed seeded input z; x = g(z, θ) for all runs at once is
``torch.func.vmap`` over ``torch.func.functional_call``, so runs share no computation and no
statistics (the normalization is per run and per channel, over the image's pixels), and every
training method, stopping rule and Jacobian product of :class:`~dipcert.networks.Network` applies
unchanged (gradients by autograd).

- :class:`ConvDecoder` (Darestani and Heckel, 2021): repeated [upsample → 3×3 convolution → ReLU →
  channel normalization] from a small input to the image size, then a 1×1 convolution to one channel.
- :class:`DeepDecoder` (Heckel and Hand, 2019): repeated [1×1 convolution → upsample ×2 → ReLU →
  channel normalization], then a 1×1 convolution to one channel and a sigmoid; under-parametrized by
  design (fewer parameters than pixels).

Initialization: PyTorch's default for convolutions, weights and biases uniform on ±1/√fan_in (drawn
from each run's own generator), normalization scale 1 and shift 0. The output is multiplied by
``output_scale`` (255: the [0, 255] range of dipcert's images).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .networks import Network, Params, _generators


def _channel_norm(channels: int) -> nn.Module:
    """Per-channel normalization over the pixels of one image, with a learned scale and shift (the
    Deep Decoder's "channel normalization"; batch normalization with a batch of one image)."""
    return nn.GroupNorm(channels, channels)


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
        memory check): the activations are the outputs of every block, channels × pixels."""
        with torch.device("meta"):
            module, input_shape = cls.build_module(tuple(image_shape), **options)
        parameters = sum(p.numel() for p in module.parameters())
        channels = input_shape[0]
        return parameters, channels * sum(h * w for h, w in module.sizes) + image_shape[0] * image_shape[1]

    def __init__(self, module: nn.Module, input_shape: tuple[int, int, int], image_shape: tuple[int, int], *,
                 seeds: Sequence[int], output_scale: float, input_scale: float, dtype: torch.dtype,
                 device: str | torch.device | None, settings: dict) -> None:
        self.image_shape = tuple(int(s) for s in image_shape)
        self.n = self.image_shape[0] * self.image_shape[1]
        self.seeds = [int(s) for s in seeds]
        self.batch = len(self.seeds)
        self.dtype, self.device = dtype, torch.empty(0, device=device).device
        self.output_scale, self.settings = float(output_scale), settings
        self.module = module.to(dtype=dtype, device=self.device)
        shapes = {name: p.shape for name, p in module.named_parameters()}
        per_run, inputs = {name: [] for name in shapes}, []
        for gen in _generators(self.seeds):
            for name, shape in shapes.items():
                per_run[name].append(self._draw(name, shape, gen))
            inputs.append(torch.rand(input_shape, generator=gen, dtype=torch.float64) * input_scale)
        to = dict(dtype=dtype, device=self.device)
        self._initial = {name: torch.stack(values).to(**to) for name, values in per_run.items()}
        self.z = torch.stack(inputs).to(**to)

    def _draw(self, name: str, shape: torch.Size, gen: torch.Generator) -> Tensor:
        layer = self.module.get_submodule(name.rsplit(".", 1)[0])
        if isinstance(layer, nn.GroupNorm):  # scale 1, shift 0
            return (torch.ones if name.endswith("weight") else torch.zeros)(shape, dtype=torch.float64)
        fan_in = layer.in_channels * math.prod(layer.kernel_size)
        bound = 1 / math.sqrt(fan_in)
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound

    @property
    def parameter_count(self) -> int:
        """Trained parameters of one run."""
        return sum(p[0].numel() for p in self._initial.values())

    def initial_state(self) -> Params:
        return self._initial

    def _select(self, indices: Tensor) -> None:
        self.z = self.z[indices]
        self._initial = {name: p[indices] for name, p in self._initial.items()}

    def function(self, params: Params) -> Tensor:
        def one_run(p: Params, z: Tensor) -> Tensor:
            return torch.func.functional_call(self.module, p, (z.unsqueeze(0),))

        x = torch.func.vmap(one_run)(params, self.z.to(next(iter(params.values())).dtype))
        return x.reshape(x.shape[0], self.n) * self.output_scale

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
                 input_size: int = 8, seeds: Sequence[int] = (0,), output_scale: float = 255.0,
                 dtype: torch.dtype = torch.float32, device: str | torch.device | None = None) -> None:
        module, input_shape = self.build_module(image_shape, channels=channels, layers=layers, kernel=kernel,
                                                input_size=input_size)
        super().__init__(module, input_shape, image_shape, seeds=seeds, output_scale=output_scale,
                         input_scale=0.1, dtype=dtype, device=device,
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
    layers (the input is the image size / 2⁵, at least 1 pixel), input entries uniform on [0, 1]."""

    type_name = "deep-decoder"

    def __init__(self, image_shape: tuple[int, int], *, channels: int = 64, layers: int = 5,
                 seeds: Sequence[int] = (0,), output_scale: float = 255.0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device | None = None) -> None:
        module, input_shape = self.build_module(image_shape, channels=channels, layers=layers)
        super().__init__(module, input_shape, image_shape, seeds=seeds, output_scale=output_scale, input_scale=1.0,
                         dtype=dtype, device=device, settings={"channels": channels, "layers": layers})

    @staticmethod
    def build_module(image_shape: tuple[int, int], *, channels: int = 64,
                     layers: int = 5) -> tuple[nn.Module, tuple[int, int, int]]:
        start = tuple(max(1, s // 2**layers) for s in image_shape)
        sizes = [tuple(min(e, s * 2 ** (i + 1)) for s, e in zip(start, image_shape)) for i in range(layers)]
        sizes[-1] = tuple(image_shape)
        return _DeepDecoderModule(channels, sizes), (channels, *start)


#: the generators by registry name
GENERATORS: dict[str, type[ConvGenerator]] = {cls.type_name: cls for cls in (ConvDecoder, DeepDecoder)}
