"""Convolutional generators (dipcert.generators): independent seeded runs, exact Jacobian products,
training by the shared loop with its stopping rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dipcert.generators import ConvDecoder, DeepDecoder
from dipcert.images import load_image
from dipcert.operators import GaussianBlur, Inpainting
from dipcert.optim import Adam, GradientDescent, train
from dipcert.problems import image_problem
from dipcert.stopping import Discrepancy

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: a second thread only waits

SHAPE = (16, 16)
SMALL = {ConvDecoder: dict(channels=8, layers=3, input_size=4), DeepDecoder: dict(channels=8, layers=3)}


def _net(cls, seeds, dtype=torch.float64):
    return cls(SHAPE, seeds=seeds, dtype=dtype, **SMALL[cls])


@pytest.mark.parametrize("cls", [ConvDecoder, DeepDecoder])
def test_runs_of_a_batch_are_independent_and_seeded(cls):
    """Run b of a batch is the run of seed b alone: to rounding in float64, and to 1e-5 relative in
    float32 (batched convolutions sum in another order than single ones)."""
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        batch = _net(cls, [3, 7, 11], dtype)
        x = batch.function(batch.initial_params())
        for b, seed in enumerate([3, 7, 11]):
            alone = _net(cls, [seed], dtype)
            x1 = alone.function(alone.initial_params())[0]
            scale = float(x1.abs().max())
            assert float((x[b] - x1).abs().max()) <= rtol * scale
            np.testing.assert_array_equal(alone.z[0].numpy(), batch.z[b].numpy())
    again = _net(cls, [3, 7, 11])
    np.testing.assert_array_equal(again.function(again.initial_params()).numpy(),
                                  _net(cls, [3, 7, 11]).function(_net(cls, [3, 7, 11]).initial_params()).numpy())
    assert not torch.equal(x[0], x[1])  # different seeds, different runs


@pytest.mark.parametrize("cls", [ConvDecoder, DeepDecoder])
def test_pullback_is_the_gradient_of_the_plain_module(cls):
    """J_gᵀ w of the batched network, per run, against autograd through the nn.Module itself with
    that run's parameters loaded (float64)."""
    net = _net(cls, [0, 1])
    params = net.initial_params()
    w = torch.randn(2, net.n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    _, pullback = net.forward(params)
    grads = pullback(w)
    for b in range(2):
        module = net.module
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(params[name][b])
        module.zero_grad()
        x = module(net.z[b : b + 1]).reshape(-1) * net.output_scale
        (x @ w[b]).backward()
        scale = max(float(p.grad.abs().max()) for p in module.parameters())
        for name, p in module.named_parameters():  # (a bias before a normalization has gradient 0: atol)
            np.testing.assert_allclose(grads[name][b].numpy(), p.grad.numpy(), rtol=1e-9, atol=1e-12 * scale)


def test_deep_decoder_is_under_parametrized_with_its_closed_form_count():
    """(L + 1) 1×1 convolutions c→c with biases, L + 1 normalizations (scale, shift), one c→1 output."""
    c, layers = 64, 5
    net = DeepDecoder((64, 64), channels=c, layers=layers)
    assert net.parameter_count == (layers + 1) * (c * c + c) + (layers + 1) * 2 * c + (c + 1)
    assert net.parameter_count < net.n * 10  # 25,793 parameters for 4,096 pixels: no room to fit noise freely
    assert net.describe()["parameters_per_run"] == net.parameter_count
    assert tuple(net.z.shape[2:]) == (2, 2)  # 64 / 2⁵


@pytest.mark.parametrize("cls", [ConvDecoder, DeepDecoder])
def test_adam_trains_a_batch_and_the_stopping_rules_apply(cls):
    """Inpainting of a 16×16 image: Adam decreases the loss of every run; with noise, the
    discrepancy rule stops each run on its own."""
    image = load_image("builtin:camera", SHAPE)
    op = Inpainting.random(SHAPE, 0.5, seed=0, dtype=torch.float32)
    problem = image_problem(image, op, [0, 1], noise=0.0)
    net = _net(cls, [0, 1], torch.float32)
    result = train(problem, net, Adam(1e-2), max_iters=60)
    assert (result.history.loss[-1] < 0.5 * result.history.loss[0]).all()

    noisy = image_problem(image, GaussianBlur(SHAPE, 1.0, dtype=torch.float32), [0, 1], noise=10.0)
    rule = Discrepancy(noisy.noise.double().norm(dim=-1).numpy(), delta=1.5)
    stopped = train(noisy, _net(cls, [0, 1], torch.float32), Adam(5e-2), max_iters=400, stop=rule,
                    compact_below=0.9)  # the first run to stop leaves the working batch
    assert set(stopped.status) == {"stopped"}
    residual = (noisy.operator.forward_flat(stopped.x) - noisy.y).norm(dim=-1)
    assert (residual <= torch.as_tensor(rule.threshold, dtype=residual.dtype) * (1 + 1e-6)).all()


def test_gradient_descent_with_the_auto_step_trains_the_generators():
    """The step 1/‖A J_g(θ₀)‖² comes from Jacobian products (power iteration), as for any network."""
    from dipcert.steps import auto_step

    net = _net(ConvDecoder, [0])
    image = load_image("builtin:coins", SHAPE)
    problem = image_problem(image, GaussianBlur(SHAPE, 1.0), [0], noise=0.0)
    result = train(problem, net, GradientDescent(auto_step(problem, net)), max_iters=20)
    assert result.history.loss[-1, 0] < result.history.loss[0, 0]


@pytest.mark.parametrize("name, cls", [("conv-decoder", ConvDecoder), ("deep-decoder", DeepDecoder)])
def test_generators_are_reachable_from_the_configuration(name, cls, tmp_path):
    """--network conv-decoder|deep-decoder: Adam by default, options from the registry, the memory
    check counts their parameters, and solve writes every output."""
    from dipcert.config import ConfigError, RunConfig
    from dipcert.solve import solve, write_outputs

    config = RunConfig.build({"problem": {"size": "16x16"}, "network": {"network": name, "channels": 8, "layers": 3},
                              "training": {"iters": 5}})
    assert config.method.name == "adam"
    outcome = solve(config)
    assert isinstance(outcome.network, cls) and outcome.network.parameter_count == cls.sizes((16, 16), **config.network.values)[0]
    assert outcome.metrics["details"]["network"]["parameters_per_run"] == outcome.network.parameter_count
    paths = write_outputs(outcome, tmp_path)
    assert paths["summary"].exists()
    with pytest.raises(ConfigError, match="convolutional image generator"):
        RunConfig.build({"problem": {"signal": "gaussian"}, "network": {"network": name}})
    with pytest.raises(ConfigError, match="--width does not apply"):
        RunConfig.build({"network": {"network": name, "width": 10}})
