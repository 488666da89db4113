"""Baselines that other packages implement, as registry entries: scikit-image's unsupervised
Wiener–Hunt deconvolution and biharmonic inpainting, and BM3D deblurring (the optional ``bm3d``
package, used only where it runs).

- ``wiener-unsupervised``: :func:`skimage.restoration.unsupervised_wiener` (Orieux, Giovannelli &
  Rodet, JOSA A 27, 2010), a Gibbs sampler that estimates the noise and prior precisions itself
  (rule ``self-tuned``), for a circular Gaussian blur, with the operator's 2-D kernel (outer product
  of its 1-D taps), scikit-image's default periodic Laplacian prior and settings, on y/255 (so its
  default clipping to [−1, 1] keeps x̂ within [−255, 255]), seeded by ``rng =
  np.random.default_rng(case.seed)``; x̂ is returned ×255.
- ``biharmonic``: :func:`skimage.restoration.inpaint_biharmonic` for inpainting: the observed pixels
  are kept as they are (noisy or not) and the missing ones filled by the biharmonic equation (rule
  ``none``). On the [0, 255] scale (the method is linear in the image).
- ``bm3d``: ``bm3d.bm3d_deblurring(y/255, σ/255, psf)`` (Mäkinen, Azzari & Foi 2019/2020; regularized
  inverse, then BM3D with the exact noise PSD) for a circular Gaussian blur, with the noise std σ of
  the case's noise level (rule ``given-noise``); x̂ ×255. y goes in as an (H, W, 1) array: bm3d
  4.0.3 fails on a 2-D one (its hard-thresholding pilot comes back 2-D against a 3-D z). The package is not a dependency: ``applies`` says why it
  cannot run (not installed, or installed but failing, e.g. bm3d 4.0.3 calls ``np.trapz``, which
  NumPy 2.4 removed), from one tiny trial call made once per process.
"""
from __future__ import annotations

import functools
import importlib.metadata
import time

import numpy as np

from ..operators import GaussianBlur, Inpainting, LinearOperator
from .case import Case, NotApplicable, Reconstruction
from .entry import Reconstructor

#: the packages' image scale: y is divided by this (and x̂ multiplied) for the [0, 1] methods
IMAGE_PEAK = 255.0


def _not_a(op: LinearOperator) -> str:
    return f"not {'an' if op.label[0] in 'aeiou' else 'a'} {op.label}"


def _flat_image(case: Case) -> np.ndarray:
    return case.y.detach().cpu().numpy().reshape(case.shape)


def _circular_blur(case: Case) -> str | None:
    op = case.operator
    if not isinstance(op, GaussianBlur) or op.boundary != "circular":
        return f"needs a circular Gaussian blur (a periodic convolution), {_not_a(op)}" + (
            f" with {op.boundary} boundary" if isinstance(op, GaussianBlur) else "")
    if 2 * op.radius + 1 > min(case.shape):
        return f"the {2 * op.radius + 1}-tap kernel is wider than the {case.shape} image"
    return None


# --------------------------------------------------------------------------- unsupervised Wiener


def skimage_blur_reason(case: Case) -> str | None:
    """Why scikit-image's deconvolutions (periodic, given the kernel) cannot take ``case``; None if they can."""
    reason = _circular_blur(case)
    if reason is None:
        h, w = case.shape
        if (2 * case.operator.radius + 1,) * 2 == (h, w // 2 + 1):
            # scikit-image would take a kernel of this shape for a transfer function
            return f"scikit-image would read the {h}×{w // 2 + 1} kernel as a transfer function on a {case.shape} image"
    return reason


def _unsupervised_wiener_run(case: Case, rules: tuple[str, ...]) -> dict[str, Reconstruction]:
    from skimage.restoration import unsupervised_wiener

    reason = skimage_blur_reason(case)
    if reason:
        raise NotApplicable(reason)
    start = time.perf_counter()
    x, chains = unsupervised_wiener(_flat_image(case) / IMAGE_PEAK, case.operator.kernel_2d().numpy(),
                                    rng=np.random.default_rng(case.seed))
    seconds = time.perf_counter() - start
    noise_precision, prior_precision = float(chains["noise"][-1]), float(chains["prior"][-1])
    details = {"samples": len(chains["noise"]) - 1, "noise_precision": noise_precision,
               "prior_precision": prior_precision,
               # the last sample of the noise precision, as a std on the [0, 255] scale
               "noise_std": float(IMAGE_PEAK / np.sqrt(noise_precision))}
    rec = Reconstruction(IMAGE_PEAK * np.asarray(x, dtype=np.float64), seconds, "self-tuned",
                         notes=(f"skimage.restoration.unsupervised_wiener on y/255 with rng seed {case.seed}: "
                                "noise and prior precisions estimated by its Gibbs sampler",),
                         details=details)
    return {rule: rec for rule in rules}


wiener_unsupervised_entry = Reconstructor(
    "wiener-unsupervised", "scikit-image's unsupervised Wiener–Hunt deconvolution (Gibbs sampler: noise and "
    "prior precisions estimated), circular blur only", ("self-tuned",), _unsupervised_wiener_run, skimage_blur_reason)


# --------------------------------------------------------------------------- biharmonic inpainting


def _biharmonic_applies(case: Case) -> str | None:
    op = case.operator
    return None if isinstance(op, Inpainting) else f"needs inpainting (a pixel mask), {_not_a(op)}"


def _biharmonic_run(case: Case, rules: tuple[str, ...]) -> dict[str, Reconstruction]:
    from skimage.restoration import inpaint_biharmonic

    reason = _biharmonic_applies(case)
    if reason:
        raise NotApplicable(reason)
    start = time.perf_counter()
    image, missing = observed_image(case)
    x = inpaint_biharmonic(image, missing)
    rec = Reconstruction(np.asarray(x, dtype=np.float64), time.perf_counter() - start, "none",
                         notes=("skimage.restoration.inpaint_biharmonic: observed pixels kept as observed",),
                         details={"missing": int(missing.sum())})
    return {rule: rec for rule in rules}


def observed_image(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """(image, missing) of an inpainting case: the observed pixels in place (zeros elsewhere, Aᵀy) and
    the boolean mask of the missing ones, as :func:`skimage.restoration.inpaint_biharmonic` takes them."""
    op = case.operator
    image = op.adjoint_flat(case.y.to(device=op.device, dtype=op.dtype)).detach().cpu().numpy()
    image = image.astype(np.float64).reshape(case.shape)
    missing = ~op.mask.detach().cpu().numpy().reshape(case.shape)
    return image, missing


biharmonic_entry = Reconstructor(
    "biharmonic", "scikit-image's biharmonic inpainting (observed pixels kept, missing ones filled), inpainting only",
    ("none",), _biharmonic_run, _biharmonic_applies)


# --------------------------------------------------------------------------- BM3D


@functools.lru_cache(maxsize=1)
def bm3d_problem() -> str | None:
    """Why ``bm3d`` cannot run here (None when it can): not installed, or failing on a tiny trial
    deblurring (16×16×1, 3×3 box PSF), made once per process."""
    try:
        import bm3d
    except ImportError:
        return "needs the optional package bm3d (pip install bm3d), which is not installed"
    except Exception as err:  # noqa: BLE001 - a broken install is a reason too
        return f"bm3d does not import with NumPy {np.__version__}: {type(err).__name__}: {err}"
    try:
        trial = np.random.default_rng(0).uniform(0.2, 0.8, (16, 16, 1))
        out = np.asarray(bm3d.bm3d_deblurring(trial, 0.05, np.full((3, 3), 1 / 9)))
        if out.shape[:2] != trial.shape[:2] or not np.all(np.isfinite(out)):
            raise ValueError(f"trial deblurring returned shape {out.shape} or non-finite values")
    except Exception as err:  # noqa: BLE001 - whatever breaks it is the reason
        try:
            version = importlib.metadata.version("bm3d")
        except importlib.metadata.PackageNotFoundError:
            version = getattr(bm3d, "__version__", "(version unknown)")
        return f"bm3d {version} does not run with NumPy {np.__version__}: {type(err).__name__}: {err}"
    return None


def _bm3d_applies(case: Case) -> str | None:
    reason = _circular_blur(case)
    if reason:
        return reason
    sigma = case.sigma
    if sigma is None or not sigma > 0:
        return "needs the std σ > 0 of white Gaussian noise (a noise level), and none is known here"
    return bm3d_problem()


def _bm3d_run(case: Case, rules: tuple[str, ...]) -> dict[str, Reconstruction]:
    reason = _bm3d_applies(case)
    if reason:
        raise NotApplicable(reason)
    import bm3d

    sigma = case.sigma
    start = time.perf_counter()
    # z as (H, W, 1): bm3d 4.0.3 deblurs a 2-D z into a pilot of the wrong shape and fails
    z = _flat_image(case)[:, :, None] / IMAGE_PEAK
    x = bm3d.bm3d_deblurring(z, sigma / IMAGE_PEAK, case.operator.kernel_2d().numpy())
    x = IMAGE_PEAK * np.asarray(x, dtype=np.float64).reshape(case.shape)
    rec = Reconstruction(x, time.perf_counter() - start, "given-noise", "sigma", sigma,
                         needs=("noise level",),
                         notes=(f"bm3d.bm3d_deblurring on y/255 with sigma {sigma:.4g}/255 (profile 'np')",))
    return {rule: rec for rule in rules}


bm3d_entry = Reconstructor(
    "bm3d", "BM3D deblurring (package bm3d: regularized inverse, then BM3D with the exact noise PSD), "
    "circular blur, noise std given", ("given-noise",), _bm3d_run, _bm3d_applies)


ENTRIES: tuple[Reconstructor, ...] = (wiener_unsupervised_entry, biharmonic_entry, bm3d_entry)
