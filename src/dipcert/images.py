"""Images: built-in test images, files, PNG output, and PSNR/SSIM (scikit-image).

Images are float64 NumPy arrays of shape (H, W) on the paper's [0, 255] scale, each side at least
:data:`MIN_IMAGE_SIDE` pixels.

How :func:`load_image` brings pixel values to [0, 255] (nothing is ever clipped):

- ``uint8`` and ``uint16`` data (8- and 16-bit image files, or such arrays) are pixel codes,
  scaled by their type's range: ×255/255 (unchanged) and ×255/65535;
- any other data (float, other integer types) is taken by value:
  values within [0, 1] are scaled ×255;
  values within [0, 255] with a maximum above 1 are used as they are, and the loader says so in a
  note (a [0, 1] image that overshoots 1 would otherwise pass for a dark [0, 255] one);
  values below 0 or above 255 are refused, with the range found and how to rescale.

RGB(A) images are then converted to grayscale (alpha composited over white); ``.npy`` and ``.npz``
files must hold one 2-D numeric array.
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
#: Smallest image side: SSIM uses a 7×7 window, and smaller images have nothing to measure with it.
MIN_IMAGE_SIDE = 7
#: Integer types holding pixel codes (scaled by their range); other data is taken by value.
PIXEL_CODES = (np.uint8, np.uint16)


class ImageError(ValueError):
    """An image that cannot be read or used; the message says why and what is allowed."""


def check_image_size(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` as (H, W) if both sides are integers >= :data:`MIN_IMAGE_SIDE`; ImageError otherwise."""
    try:
        h, w = (int(s) for s in size)
        ok = all(int(s) == s for s in size)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ImageError(f"image size must be two integers (height, width), got {size!r}")
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ImageError(f"image size {h}x{w} is too small: each side must be at least {MIN_IMAGE_SIDE} pixels "
                         f"(the {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} SSIM window)")
    return h, w


def _white(data: np.ndarray, spec: str, notes: list[str] | None) -> float:
    """The value of white in ``data`` under the rules of the module docstring."""
    if data.dtype in PIXEL_CODES:
        return float(np.iinfo(data.dtype).max)
    lo, hi = float(data.min()), float(data.max())
    if lo < 0 or hi > 255:
        raise ImageError(f"image {spec} has values in [{lo:g}, {hi:g}] ({data.dtype}), outside [0, 255]: rescale it "
                         "to [0, 1] or [0, 255] first, e.g. 255 * (a - a.min()) / (a.max() - a.min())")
    if hi <= 1:
        return 1.0
    if notes is not None:
        notes.append(f"image {spec}: values in [{lo:g}, {hi:g}] ({data.dtype}) used on the [0, 255] scale as they are")
    return 255.0


def _to_gray_255(data: np.ndarray, white: float) -> np.ndarray:
    """Grayscale on [0, 255] from data whose white is ``white`` (2-D, RGB or RGBA)."""
    if data.ndim == 2:
        return data.astype(np.float64) * (255.0 / white)
    from skimage.color import rgb2gray, rgba2rgb

    unit = data.astype(np.float64) / white
    if unit.ndim == 3 and unit.shape[-1] == 4:
        unit = rgba2rgb(unit)
    if unit.ndim == 3 and unit.shape[-1] == 3:
        return rgb2gray(unit) * 255.0
    raise ImageError(f"expected a grayscale or RGB(A) image, got an array of shape {data.shape}")


def load_image(spec: str, size: tuple[int, int] | None = (64, 64), notes: list[str] | None = None) -> np.ndarray:
    """Load ``builtin:NAME``, an image file, or a ``.npy``/``.npz`` array, as grayscale float64 on [0, 255].

    Values are brought to [0, 255] by the rules of the module docstring; what the loader decided on
    its own (data used on its own scale) is appended to ``notes``, for the caller to show. Resizing
    to ``size`` uses anti-aliased interpolation; ``size=None`` keeps the original size. Either way
    each side must be at least :data:`MIN_IMAGE_SIDE` pixels.
    """
    from skimage.transform import resize

    if size is not None:
        size = check_image_size(size)
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX):]
        if name not in BUILTIN_IMAGES:
            raise ImageError(f"unknown built-in image {name!r}; allowed: {', '.join(BUILTIN_IMAGES)}")
        import skimage.data

        raw = getattr(skimage.data, name)()
    else:
        path = Path(spec)
        if not path.is_file():
            raise ImageError(f"image file not found: {spec} (give a readable image file, a .npy/.npz array "
                             "or builtin:NAME)")
        raw = _read_file(path)
    if not np.all(np.isfinite(raw)):
        raise ImageError(f"image {spec} contains NaN or inf values")
    img = _to_gray_255(raw, _white(raw, spec, notes))
    if size is None:
        check_image_size(img.shape)
    else:
        img = resize(img, size, anti_aliasing=True, preserve_range=True)
    return img.astype(np.float64)


def _read_array(path: Path) -> np.ndarray:
    """The 2-D numeric array of a ``.npy`` file, or of a ``.npz`` file holding exactly one array."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if len(names) != 1:
                held = f"{len(names)} arrays ({', '.join(names)})" if names else "no array"
                raise ImageError(f"{path} holds {held}; save the image alone, e.g. np.savez(path, image=a)")
            raw = archive[names[0]]
    else:
        raw = np.load(path, allow_pickle=False)
    if raw.ndim != 2 or raw.size == 0 or raw.dtype.kind not in "uif":
        raise ImageError(f"{path} must hold a non-empty 2-D numeric array, got shape {raw.shape} of {raw.dtype}")
    return raw


def _read_file(path: Path) -> np.ndarray:
    try:
        if path.suffix in (".npy", ".npz"):
            return _read_array(path)
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


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 arrays, checked to have the same shape."""
    ref, est = np.asarray(reference, dtype=np.float64), np.asarray(estimate, dtype=np.float64)
    if ref.shape != est.shape:
        raise ImageError(f"images to compare must have the same shape, got {ref.shape} and {est.shape}")
    return ref, est


def _finite(*images: np.ndarray) -> bool:
    return all(np.all(np.isfinite(img)) for img in images)


def psnr(reference: np.ndarray, estimate: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB for the fixed ``data_range`` (so constant and all-zero images
    are fine): ``inf`` for identical images, NaN when either image holds NaN or inf (a diverged run)."""
    from skimage.metrics import peak_signal_noise_ratio

    ref, est = _pair(reference, estimate)
    if not _finite(ref, est):
        return float("nan")
    if np.array_equal(ref, est):
        return float("inf")
    return float(peak_signal_noise_ratio(ref, est, data_range=data_range))


def ssim(reference: np.ndarray, estimate: np.ndarray, data_range: float = 255.0) -> float:
    """Structural similarity of two (H, W) images (scikit-image, 7×7 uniform window), NaN when either
    holds NaN or inf. Sides below :data:`MIN_IMAGE_SIDE` raise ImageError. With the fixed
    ``data_range`` (C1 = (0.01 data_range)², C2 = (0.03 data_range)²) constant images give finite
    values: 1 for identical images, (2ab + C1)/(a² + b² + C1) for constants a and b."""
    from skimage.metrics import structural_similarity

    ref, est = _pair(reference, estimate)
    if ref.ndim != 2:
        raise ImageError(f"SSIM compares 2-D images, got shape {ref.shape}")
    check_image_size(ref.shape)
    if not _finite(ref, est):
        return float("nan")
    return float(structural_similarity(ref, est, data_range=data_range, win_size=MIN_IMAGE_SIDE))
