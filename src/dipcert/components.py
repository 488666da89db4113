"""The registries of dipcert: every component a user can choose, with its options.

Sections of a run (see :mod:`dipcert.config`): ``problem`` (the signal), ``operator``, ``noise``,
``loss``, ``network``, ``method`` (in :mod:`dipcert.methods`, with its ``auto`` rules), ``run``
(seeds, device, dtype), ``training`` (iteration budget, tolerances) and ``certificate``. The
command-only sections ``output``, ``report`` and ``reproduce`` hold the options of ``solve``,
``certify`` and ``reproduce`` that are not part of a run.

A builder takes the run's section values and returns the object; the pipeline that calls the
builders is :mod:`dipcert.solve`.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import torch

from .activations import ACTIVATIONS
from .certify import LIPSCHITZ_FORMS
from .generators import UPSAMPLING, ConvDecoder, DeepDecoder, Skip
from .images import BUILTIN_IMAGES, MIN_IMAGE_SIDE
from .methods import METHOD
from .networks import TRAINABLE, V_LAWS
from .reconstruct.case import NOISE_LEVELS
from .operators import BOUNDARIES
from .registry import Component, Option, Section, choice
from .stopping import STOPPING

DTYPES = {"float32": torch.float32, "float64": torch.float64}
MAX_SIDE = 8192  # pixels per image side
MAX_SIZE = 1 << 26  # entries of a signal


def _parse_size(value: Any) -> tuple[int, int]:
    """``N``, ``HxW`` or a two-element list."""
    if isinstance(value, int) and not isinstance(value, bool):
        parts = [value]
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*([xX,]\s*\d+\s*)?", value):
        parts = [int(p) for p in re.split(r"[xX,]", value)]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        parts = list(value)
    else:
        raise ValueError("expected N or HxW")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(1 <= p <= MAX_SIDE for p in parts):
        raise ValueError(f"each side must be an integer from 1 to {MAX_SIDE}")
    return parts[0], parts[1]


def _parse_device(value: Any) -> str:
    """cpu, cuda or cuda:N, available on this machine."""
    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps", value):
        raise ValueError("allowed: cpu, cuda, cuda:N, mps")
    if value.startswith("cuda"):
        index = int(value.split(":")[1]) if ":" in value else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ValueError(f"not available here ({torch.cuda.device_count()} CUDA device(s)); use cpu")
    if value == "mps" and not torch.backends.mps.is_available():
        raise ValueError("not available here; use cpu")
    return value


def cluster_workers(value: Any) -> int:
    """The worker count N of ``local:N`` (N >= 1)."""
    match = re.fullmatch(r"local:(\d+)", value.strip()) if isinstance(value, str) else None
    if not match or not 1 <= int(match.group(1)) <= 1024:
        raise ValueError("expected local:N with N from 1 to 1024 worker processes (e.g. local:2)")
    return int(match.group(1))


def _parse_cluster(value: Any) -> str:
    return f"local:{cluster_workers(value)}"


# ---------------------------------------------------------------------------------- problem
IMAGE = Option("image", str, "builtin:camera",
               f"Image file (PNG, TIFF, …), .npy/.npz array, or builtin:NAME ({', '.join(BUILTIN_IMAGES)}).")
SIZE = Option("size", tuple, (64, 64), "Resize the image to N×N or H×W (e.g. 64x48).", item=int, length=2,
              unit="pixels", parser=_parse_size, allowed_text=f"N or HxW, sides from 1 to {MAX_SIDE}")
N = Option("n", int, 5, "Signal size of the synthetic problem.", low=1, high=MAX_SIZE)

_SYNTHETIC_DEFAULTS = {"operator.operator": "gaussian", "run.dtype": "float64", "network.train": "W",
                       "training.iters": 100_000, "training.loss_tol": 1e-14}
#: Images default to the Deep Decoder: with automatic stopping it measured best of the generators on the table of
#: docs/generators.md (deblurring and inpainting, four images). The paper's network keeps WV and 500 iterations.
_IMAGE_DEFAULTS = {"run.dtype": "float32", "network.network": DeepDecoder.type_name, "network.train": "WV",
                   "training.iters": 500, "training.loss_tol": 0.0}
SIGNAL, _signals = choice("signal", [
    Component("image", "an image observed through --operator", (IMAGE, SIZE), frozenset({"image"}), _IMAGE_DEFAULTS),
    Component("gaussian", "the paper's synthetic problem, A and x̄ iid N(0,1) (Fig. 1-2)", (N,), frozenset(),
              _SYNTHETIC_DEFAULTS),
], "image", "What is reconstructed")
PROBLEM = Section("problem", "the signal to reconstruct", _signals, SIGNAL)

# --------------------------------------------------------------------------------- operator
BLUR_SIGMA = Option("blur_sigma", float, 1.0, "Std of the Gaussian blur kernel (at most the image's larger side).",
                    low=0, open_low=True, high=MAX_SIDE, unit="pixels")
BOUNDARY = Option("boundary", str, "circular", "Blur boundary condition.", choices=BOUNDARIES)
KEEP_FRACTION = Option("keep_fraction", float, 0.5, "Fraction of pixels observed.", low=0, open_low=True, high=1)
M = Option("m", int, None, "Number of measurements.", low=1, high=MAX_SIZE, default_text="n")
CONDITION = Option("condition", float, None, "Condition number of the synthetic A: U diag(s) Vᵀ with Haar U, V and s "
                   "geometric from √m+√n down to (√m+√n)/κ (our construction; --signal gaussian only).", low=1,
                   default_text="none: iid N(0,1) entries")
OPERATOR_NAME, _operators = choice("operator", [
    Component("blur", "Gaussian blur (FFT, exact spectrum)", (BLUR_SIGMA, BOUNDARY), frozenset({"image", "square"})),
    Component("well-conditioned", "U diag(s) Vᵀ, s from 1 to 2 (Fig. 3b)", (), frozenset({"image", "square"})),
    Component("gaussian", "iid N(0,1) matrix, m × n", (M, CONDITION), frozenset({"image", "synthetic"})),
    Component("inpainting", "keeps a random fraction of the pixels", (KEEP_FRACTION,), frozenset({"image"})),
], "blur", "Forward operator A", default_text="blur; gaussian for --signal gaussian")
OPERATOR = Section("operator", "the forward operator A", _operators, OPERATOR_NAME)

# ------------------------------------------------------------------------------------ noise
NOISE_STD = Option("noise_std", float, 0.0, "White Gaussian noise std, on the image's [0, 255] scale for images.",
                   low=0, high=1e6)
PHOTONS = Option("photons", float, 100.0, "Expected photon count at the image's peak value 255: y = (255/N)·Poisson(N·Ax̄/255).",
                 low=0, open_low=True, high=1e12, unit="photons")
NOISE_NAME, _noises = choice("noise", [
    Component("gaussian", "y = A x̄ + σ ε", (NOISE_STD,)),
    Component("poisson", "counts scaled to the image range (needs A x̄ >= 0)", (PHOTONS,), frozenset({"nonnegative"})),
    Component("one-bit", "y = sign(A x̄ + σ ε) in {-1, +1}, for the logistic loss", (NOISE_STD,), frozenset({"labels"})),
], "gaussian", "Noise model")
NOISE = Section("noise", "the noise model", _noises, NOISE_NAME)

# ------------------------------------------------------------------------------------- loss
_NO_CERTIFIED_STEP = {"method.step": "auto"}  # no proven bound on L: certify checks the auto step
KL_EPS = Option("kl_eps", float, 5.0, "KL terms continued by a quadratic below v = ε, so that training can start "
                "where A g(u, θ0) < 0 (our choice; 0: the exact KL).", low=0, high=1e6, unit="data scale")
KL_VMAX = Option("kl_vmax", float, "sublevel", "v_max of the KL desingularizer ψ(s) = 2√(v_max s): 'sublevel' (a "
                 "proven bound on the sublevel set of L_y(y_0)) or a number (an assumption, checked at the "
                 "returned iterate).", low=0, open_low=True, words=("sublevel",), unit="data scale")
LOSS_NAME, _losses = choice("loss", [
    Component("mse", "½‖v − y‖², certified (Theorem III.1)"),
    Component("kl", "Kullback-Leibler (Poisson); certified where its desingularizer holds", (KL_EPS, KL_VMAX),
              frozenset({"needs_nonnegative"})),
    Component("logistic", "logistic loss on labels y = ±1; no certificate (its infimum is not attained)", (),
              frozenset({"needs_labels"}), _NO_CERTIFIED_STEP),
], "mse", "Data-fidelity loss L_y")
LOSS = Section("loss", "the data-fidelity loss", _losses, LOSS_NAME)

# ---------------------------------------------------------------------------------- network
WIDTH = Option("width", int, 10_000, "Hidden width k of the two-layer DIP (9).", low=1, high=1 << 31, aliases=("--k",))
D = Option("d", int, 32, "Input size d (the W-only dynamics do not depend on it).", low=1, high=1 << 20)
TRAIN = Option("train", str, None, "Trained layers.", choices=TRAINABLE, default_text="WV for images, W for gaussian")
ACTIVATION = Option("activation", str, "sigmoid", "Activation φ.", choices=tuple(ACTIVATIONS))
V_LAW = Option("v_law", str, "rademacher", "Law of the entries of V_0 (A-8).", choices=V_LAWS)
WIDTHS = Option("widths", tuple, (256,), "Hidden widths N_1,…,N_{L-1} of the MLP (Definition II.1); depth L = count + 1.",
                item=int, low=1, high=1 << 20)
CHANNELS = Option("channels", int, 64, "Channels of every layer of a convolutional generator.", low=1, high=4096)
LAYERS = Option("layers", int, None, "Upsampling blocks (levels of the skip network) of a convolutional generator.",
                low=1, high=16, default_text="6 for conv-decoder, 5 for deep-decoder and skip")
KERNEL = Option("kernel", int, 3, "Convolution kernel size of the ConvDecoder (odd).", low=1, high=15)
INPUT_SIZE = Option("input_size", int, 8, "Side of the ConvDecoder's fixed random input z.", low=1, high=1024,
                    unit="pixels")
SKIP_CHANNELS = Option("skip_channels", int, 4, "Channels of each skip connection of the skip network (0: none).",
                       low=0, high=4096)
INPUT_CHANNELS = Option("input_channels", int, 32, "Channels of the skip network's random input z (image-sized).",
                        low=1, high=4096)
UPSAMPLE = Option("upsample", str, "bilinear", "Upsampling of the skip network's decoder.", choices=UPSAMPLING)
REG_NOISE_STD = Option("reg_noise_std", float, 0.0, "Std of the Gaussian perturbation of the input z redrawn at "
                       "every training pass (Ulyanov et al. 2018: 1/30 denoising, 0.03 inpainting; 0: off). The "
                       "loss, stopping and reconstruction see the perturbed output (their result averages it: --average 0.99).",
                       low=0, high=1e3)
_CONVOLUTIONAL = frozenset({"needs_image", "convolutional"})
#: What every convolutional generator implies (measured in docs/generators.md): Adam, as in the DIP literature;
#: 3000 iterations (the best iterates of the σ = 2.5 blur lie at 2300-3000); the variance rule with the window
#: and patience of the ES-WMV code for the DIP (100, 1000), where the two-layer network's 10 and 20 stop far too early.
_GENERATOR_DEFAULTS = {"method.method": "adam", **_NO_CERTIFIED_STEP, "training.iters": 3000, "stopping.window": 100,
                       "stopping.variance_patience": 1000}
#: The generators keep improving after ||A x - y|| first reaches ||eps||, so the discrepancy rule's delta is below 1,
#: chosen on images the table does not use (docs/stopping.md): 0.95 for the decoders, which fit the noise slowly
#: (0.13-0.25 dB from the oracle on average, against 0.78-1.40 with delta = 1); 0.97 for the skip network, which
#: fits it within a few hundred iterations (0.14 dB, against 0.44 with 0.95 and 0.46 with 1).
_DECODER_DEFAULTS = {**_GENERATOR_DEFAULTS, "stopping.delta": 0.95}
_SKIP_DEFAULTS = {**_GENERATOR_DEFAULTS, "stopping.delta": 0.97}
NETWORK_NAME, _networks = choice("network", [
    Component("two-layer", "the two-layer DIP (9), trained through z = W u where exact",
              (WIDTH, D, TRAIN, ACTIVATION, V_LAW), frozenset({"certified_lipschitz", "reduction"})),
    Component("mlp", "the deep network of Definition II.1 (no biases, all layers trained)", (WIDTHS, D, ACTIVATION),
              frozenset(), _NO_CERTIFIED_STEP),
    Component(ConvDecoder.type_name, "ConvDecoder (Darestani and Heckel, 2021): upsampling, 3x3 convolutions, ReLU, "
              "channel normalization; trained by adam unless --method says otherwise",
              (CHANNELS, LAYERS, KERNEL, INPUT_SIZE, REG_NOISE_STD), _CONVOLUTIONAL,
              {"network.layers": 6, **_DECODER_DEFAULTS}),
    Component(DeepDecoder.type_name, "Deep Decoder (Heckel and Hand, 2019): 1x1 convolutions, upsampling, ReLU, channel "
              "normalization, under-parametrized; trained by adam unless --method says otherwise",
              (CHANNELS, LAYERS, REG_NOISE_STD), _CONVOLUTIONAL,
              {"network.layers": 5, **_DECODER_DEFAULTS}),
    Component(Skip.type_name, "the Deep Image Prior's encoder-decoder with skip connections (Ulyanov, Vedaldi and "
              "Lempitsky, 2018): stride-2 and 3x3 convolutions, 1x1 skip branches, upsampling, LeakyReLU, "
              "channel normalization; defaults from their code (5 levels, 4 skip and 32 input channels, "
              "bilinear upsampling) but 64 channels instead of 128, to run on a CPU; trained by adam unless "
              "--method says otherwise",
              (CHANNELS, LAYERS, SKIP_CHANNELS, INPUT_CHANNELS, UPSAMPLE, REG_NOISE_STD), _CONVOLUTIONAL,
              {"network.layers": 5, **_SKIP_DEFAULTS}),
], "two-layer", "Generator g(u, θ)",
   default_text=f"{DeepDecoder.type_name} for images; two-layer for --signal gaussian and for certify")
NETWORK = Section("network", "the generator", _networks, NETWORK_NAME)

# ------------------------------------------------------------------------------ run, training
SEED = Option("seed", int, 0, "Seed of the first run; run r uses seed + r.", low=0, high=2**62)
RUNS = Option("runs", int, 1, "Independent runs (seeds seed, seed+1, …), as one batch.", low=1, high=1 << 20)
DEVICE = Option("device", str, "cpu", "Torch device.", parser=_parse_device,
                allowed_text="cpu, cuda, cuda:N or mps, available here")
DTYPE = Option("dtype", str, None, "Floating-point type.", choices=tuple(DTYPES),
               default_text="float32 for images, float64 for gaussian")
RUN = Section("run", "seeds, batch, device", {"run": Component("run", "", (SEED, RUNS, DEVICE, DTYPE))})

ITERS = Option("iters", int, None, "Iteration limit.", low=1, high=10**9,
               default_text="500 for images (3000 for the convolutional generators), 1e5 for gaussian")
LOSS_TOL = Option("loss_tol", float, None, "Stop a run when its loss reaches this.", low=0,
                  default_text="0 for images, 1e-14 for gaussian")
RECORD_EVERY = Option("record_every", int, None, "Record the history every this many iterations.", low=1,
                      high=10**9, default_text="iters/2000, at least 1")
STALL_PATIENCE = Option("stall_patience", int, 100,
                        "A run whose loss stays above its initial value this many consecutive iterations is "
                        "reported diverged (0: never).", low=0, high=10**9)
TRAINING = Section("training", "iteration budget and stops",
                   {"training": Component("training", "", (ITERS, LOSS_TOL, RECORD_EVERY, STALL_PATIENCE))})

CERTIFY = Option("certify", bool, False, "Attach the certificate of Theorem III.1 and draw its bounds.")
LIPSCHITZ_FORM = Option("lipschitz_form", str, None, "Bound on Lip(J_g).", choices=LIPSCHITZ_FORMS,
                        default_text="radius-free when only W trains, else radius-dependent")
DIST = Option("dist", float, 0.0, "Assumed dist(x̄, Σ') in the recovery bound (8).", low=0)
HESSIAN_ITERS = Option("hessian_iters", int, 10, "Power iterations for the Hessian estimate of L.", low=1, high=10**4)
PAPER_CONSTANT = Option("paper_constant", float, 1.0, "The unknown constant of the paper's estimate (10) of L.",
                        low=0, open_low=True)
COROLLARY_CONSTANTS = Option("corollary_constants", tuple, (1.0, 1.0), "C,C' of Corollary III.2.", length=2,
                             low=0, open_low=True)
CERTIFICATE = Section("certificate", "the certificate of Theorem III.1", {"certificate": Component(
    "certificate", "", (CERTIFY, LIPSCHITZ_FORM, DIST, HESSIAN_ITERS, PAPER_CONSTANT, COROLLARY_CONSTANTS))})

#: the sections of a run, in the order they are built; their values make a RunConfig
RUN_SECTIONS: tuple[Section, ...] = (PROBLEM, OPERATOR, NOISE, LOSS, NETWORK, METHOD, RUN, TRAINING, STOPPING,
                                     CERTIFICATE)

# ------------------------------------------------------------------------ command-only options
OUT = Option("out", str, "dipcert-out", "Output folder (see 'Output folders' in the README).")
QUIET = Option("quiet", bool, False, "No progress bar.")
OUTPUT = Section("output", "where solve writes", {"output": Component("output", "", (OUT, QUIET))})

AS_JSON = Option("json", bool, False, "Print the certificate as JSON.")
SAVE_INSTANCE = Option("save_instance", str, None, "Save A (when dense), y, x_true, u, z0, W0, V0 to an .npz file.",
                       default_text="none")
REPORT = Section("report", "what certify prints", {"report": Component("report", "", (AS_JSON, SAVE_INSTANCE))})

SCALE = Option("scale", str, "quick", "quick: minutes, for CI; paper: the paper's grid and trial counts.",
               choices=("quick", "paper"))
REPRODUCE_OUT = Option("out", str, "reproduce-out", "Output folder.")
FRESH = Option("fresh", bool, False, "Discard finished cells in OUT and start over.")
CLUSTER = Option("cluster", str, None, "Run groups of cells on a Dask LocalCluster of N worker processes started here, "
                 "each with cores/N torch threads (needs the extra dipcert[dask]).", parser=_parse_cluster,
                 allowed_text="local:N, N from 1 to 1024", default_text="in this process")
SCHEDULER = Option("scheduler", str, None, "Send groups of cells to the Dask distributed scheduler at this address "
                   "(e.g. tcp://10.0.0.5:8786); see docs/cluster.md.", default_text="none")
LIST = Option("list", bool, False, "List the experiments.")
REPRODUCE = Section("reproduce", "how reproduce runs", {"reproduce": Component(
    "reproduce", "", (SCALE, REPRODUCE_OUT, FRESH, CLUSTER, SCHEDULER, LIST))})



def _names(value: Any) -> tuple[str, ...]:
    """Comma-separated names (or a list of them from a config file), each non-empty."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise ValueError("expected comma-separated names")
    return tuple(i.strip() for i in items)


_COMPARE_IMAGES = ("camera", "astronaut", "coins", "brick", "rocket", "text")
COMPARE_IMAGES = Option("images", str, _COMPARE_IMAGES, "Built-in images (scikit-image's bundled data).", parser=_names,
                        allowed_text="comma-separated built-in image names", default_text=",".join(_COMPARE_IMAGES))
COMPARE_SIZES = Option("sizes", tuple, (64, 128), "Image sides N (N x N); the dense tasks run at sides up to 64 only.",
                       item=int, low=MIN_IMAGE_SIDE, high=4096)
COMPARE_TASKS = Option("tasks", str, None, "Operators and noise (see --list).", parser=_names,
                       allowed_text="comma-separated task names (see --list)", default_text="all")
COMPARE_METHODS = Option("methods", str, (
    "wiener", "wiener-unsupervised", "tikhonov-identity", "tikhonov-laplacian", "landweber", "cgls", "richardson-lucy",
    "tv", "bm3d", "biharmonic", "dip-two-layer:auto+oracle", "dip-deep-decoder:auto+oracle"),
    "Methods, each NAME (every rule it offers) or NAME:RULE+RULE (see --list).", parser=_names,
    allowed_text="comma-separated NAME or NAME:RULE+RULE (see --list)",
    default_text="every classical method with all its rules; dip-two-layer and dip-deep-decoder with auto and oracle")
COMPARE_SEEDS = Option("seeds", tuple, (0,), "Seeds: each gives its own noise draw, mask, operator and network.",
                       item=int, low=0, high=2**62)
COMPARE_NOISE_LEVEL = Option("noise_level", str, "given", "Noise level of the rules that need one: the simulated "
                             "sigma (1/sqrt(12) for 8-bit rounding), or estimated from y where that is sound.",
                             choices=NOISE_LEVELS)
DIP_ITERS = Option("dip_iters", int, None, "Iteration budget of every DIP.", low=1, high=10**7,
                   default_text="each generator's own (as solve)")
QUICK = Option("quick", bool, False, "A comparison of about 30 s: 2 images at 32x32, 2 tasks, the classical methods "
               "and the deep decoder on 300 iterations (the other options then only choose the output).")
COMPARE_OUT = Option("out", str, "compare-out", "Output folder.")
COMPARE_LIST = Option("list", bool, False, "List the tasks and methods (with their rules).")
COMPARE = Section("compare", "what compare runs", {"compare": Component(
    "compare", "", (COMPARE_IMAGES, COMPARE_SIZES, COMPARE_TASKS, COMPARE_METHODS, COMPARE_SEEDS, COMPARE_NOISE_LEVEL,
                    DIP_ITERS, replace(DEVICE, section=""), QUICK, COMPARE_OUT, replace(FRESH, section=""),
                    replace(CLUSTER, section=""), replace(SCHEDULER, section=""), COMPARE_LIST))})

SWEEP_OUT = Option("out", str, "sweep-out", "Output folder.")
SWEEP_LIST = Option("list", bool, False, "List the outputs a sweep file can record.")
SWEEP_SCALE = Option("scale", str, None, "Apply the file's [scales.NAME] (e.g. quick) over its tables.",
                     allowed_text="a NAME of the file's [scales.NAME] tables", default_text="the file as written")
SWEEP = Section("sweep", "how sweep runs", {"sweep": Component(
    "sweep", "", (SWEEP_OUT, SWEEP_SCALE, replace(FRESH, section=""), replace(CLUSTER, section=""),
                  replace(SCHEDULER, section=""), SWEEP_LIST))})

ALL_SECTIONS: tuple[Section, ...] = (*RUN_SECTIONS, OUTPUT, REPORT, REPRODUCE, COMPARE, SWEEP)
