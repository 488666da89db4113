"""Images: built-in test images, files, PNG output, and PSNR/SSIM (scikit-image).

Images are float64 NumPy arrays of shape (H, W) on the paper's [0, 255] scale.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .fileio import atomic_output

# scikit-image images shipped inside the package (no download needed).
BUILTIN_IMAGES = (
    "astronaut", "brick", "camera", "cat", "checkerboard", "clock", "coffee", "coins", "grass",
    "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "moon", "page", "rocket",
    "shepp_logan_phantom", "text",
)
BUILTIN_PREFIX = "builtin:"


class ImageError(ValueError):
    """An image that cannot be read or used; the message says why and what is allowed."""


def _to_gray_255(array: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2gray, rgba2rgb
    from skimage.util import img_as_float

    img = img_as_float(np.asarray(array))  # [0, 1]
    if img.ndim == 3 and img.shape[-1] == 4:
        img = rgba2rgb(img)
    if img.ndim == 3 and img.shape[-1] == 3:
        img = rgb2gray(img)
    if img.ndim != 2:
        raise ImageError(f"expected a grayscale or RGB(A) image, got an array of shape {array.shape}")
    return np.clip(img, 0.0, 1.0) * 255.0


def load_image(spec: str, size: tuple[int, int] | None = (64, 64)) -> np.ndarray:
    """Load ``builtin:NAME``, an image file, or a ``.npy`` array, as grayscale float64 on [0, 255].

    Image files are converted to grayscale and scaled to [0, 255]; a ``.npy`` array is taken as is
    (2-D, values on the [0, 255] scale). Resizing to ``size`` uses anti-aliased interpolation;
    ``size=None`` keeps the original size.
    """
    from skimage.transform import resize

    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX):]
        if name not in BUILTIN_IMAGES:
            raise ImageError(f"unknown built-in image {name!r}; allowed: {', '.join(BUILTIN_IMAGES)}")
        import skimage.data

        raw = getattr(skimage.data, name)()
    else:
        path = Path(spec)
        if not path.is_file():
            raise ImageError(f"image file not found: {spec} (give a readable image file, a .npy array or builtin:NAME)")
        raw = _read_file(path)
    img = raw.astype(np.float64) if spec.endswith(".npy") else _to_gray_255(raw)
    if not np.all(np.isfinite(img)):
        raise ImageError(f"image {spec} contains NaN or inf values")
    if size is not None:
        if len(size) != 2 or min(size) <= 0:
            raise ImageError(f"image size must be two positive integers, got {size}")
        img = resize(img, size, anti_aliasing=True, preserve_range=True)
    return img.astype(np.float64)


def _read_file(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            raw = np.load(path, allow_pickle=False)
            if raw.ndim != 2 or raw.dtype.kind not in "uif":
                raise ImageError(f"{path} must hold a 2-D numeric array, got shape {raw.shape} of {raw.dtype}")
            return raw
        import skimage.io

        return skimage.io.imread(path)
    except ImageError:
        raise
    except Exception as exc:  # imageio/numpy raise many types for unreadable files
        raise ImageError(f"cannot read image {path}: {exc.__class__.__name__}: {exc}") from None


def save_png(image: np.ndarray, path: str | Path, vmin: float = 0.0, vmax: float = 255.0) -> None:
    """Write a (H, W) array as an 8-bit grayscale PNG, clipping to [vmin, vmax]; atomic."""
    import skimage.io

    img = np.clip((np.asarray(image, dtype=np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)
    with atomic_output(path) as tmp:
        skimage.io.imsave(tmp, np.round(img * 255).astype(np.uint8), check_contrast=False)


def psnr(reference: np.ndarray, estimate: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for a perfect match)."""
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(reference, estimate):
        return float("inf")
    return float(peak_signal_noise_ratio(reference, estimate, data_range=data_range))


def ssim(reference: np.ndarray, estimate: np.ndarray, data_range: float = 255.0) -> float:
    """Structural similarity (scikit-image defaults, 7×7 window; smaller images use a smaller odd window)."""
    from skimage.metrics import structural_similarity

    win = min(7, *reference.shape)
    win -= 1 - win % 2
    return float(structural_similarity(reference, estimate, data_range=data_range, win_size=win))
