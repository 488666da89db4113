import math

import numpy as np
import pytest
import skimage.data
import skimage.io

from dipcert.images import MIN_IMAGE_SIDE, ImageError, check_image_size, load_image, psnr, ssim

RAMP = np.linspace(0.0, 1.0, 16 * 16).reshape(16, 16)  # a float image on [0, 1]
C1 = (0.01 * 255) ** 2  # SSIM's constant for data_range 255


def _npy(tmp_path, array, name="image.npy"):
    path = tmp_path / name
    np.save(path, array)
    return str(path)


def test_float_unit_range_is_scaled_by_255_without_note(tmp_path):
    notes = []
    img = load_image(_npy(tmp_path, RAMP), None, notes)
    np.testing.assert_allclose(img, RAMP * 255, rtol=0, atol=1e-12)
    assert notes == []


def test_float_255_range_is_used_as_is_with_a_note(tmp_path):
    notes = []
    img = load_image(_npy(tmp_path, RAMP * 200 + 0.5), None, notes)
    np.testing.assert_array_equal(img, RAMP * 200 + 0.5)
    assert len(notes) == 1 and "[0.5, 200.5]" in notes[0] and "as they are" in notes[0]


def test_float_tiff_on_255_scale_is_not_clipped_to_white(tmp_path):
    path = tmp_path / "ramp.tif"
    skimage.io.imsave(path, (RAMP * 255).astype(np.float32), check_contrast=False)
    img = load_image(str(path), None, [])
    np.testing.assert_allclose(img, (RAMP * 255).astype(np.float32), rtol=0, atol=1e-12)
    assert img.min() == 0 and img.max() == 255  # (the old loader clipped it: all 255 but the first pixel)


@pytest.mark.parametrize("low, high", [(-1.0, 100.0), (0.0, 255.5), (-300.0, 300.0)])
def test_values_outside_0_255_are_refused(tmp_path, low, high):
    array = np.linspace(low, high, 100).reshape(10, 10)
    with pytest.raises(ImageError, match=r"values in \[.+\].*outside \[0, 255\]: rescale it to \[0, 1\] or \[0, 255\]"):
        load_image(_npy(tmp_path, array))
    with pytest.raises(ImageError, match=f"{low:g}, {high:g}"):
        load_image(_npy(tmp_path, array))


def test_pixel_codes_are_scaled_by_their_range(tmp_path):
    codes = np.arange(256).reshape(16, 16)
    np.testing.assert_array_equal(load_image(_npy(tmp_path, codes.astype(np.uint8)), None), codes)
    png = tmp_path / "deep.png"
    skimage.io.imsave(png, (codes * 257).astype(np.uint16), check_contrast=False)  # 257 = 65535/255
    np.testing.assert_allclose(load_image(str(png), None), codes, rtol=0, atol=1e-9)


def test_other_integer_arrays_are_taken_by_value(tmp_path):
    codes = np.arange(256, dtype=np.int64).reshape(16, 16)  # what np.save(np.arange(...)) gives
    notes = []
    np.testing.assert_array_equal(load_image(_npy(tmp_path, codes), None, notes), codes)
    assert "int64" in notes[0]
    with pytest.raises(ImageError, match=r"\[0, 4095\] \(int32\)"):
        load_image(_npy(tmp_path, np.arange(4096, dtype=np.int32).reshape(64, 64)))


def test_builtin_images_keep_their_values():
    np.testing.assert_array_equal(load_image("builtin:camera", None), skimage.data.camera())
    phantom = load_image("builtin:shepp_logan_phantom", None)  # float on [0, 1]
    np.testing.assert_allclose(phantom, skimage.data.shepp_logan_phantom() * 255, rtol=0, atol=1e-9)


def test_npz_with_one_array_works_like_npy(tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, whatever=RAMP * 255)
    notes = []
    np.testing.assert_array_equal(load_image(str(path), None, notes), load_image(_npy(tmp_path, RAMP * 255), None))
    assert "one.npz" in notes[0]


def test_npz_with_several_or_no_arrays_is_refused_with_the_names(tmp_path):
    several, empty = tmp_path / "two.npz", tmp_path / "none.npz"
    np.savez(several, truth=RAMP, mask=RAMP > 0.5)
    np.savez(empty)
    with pytest.raises(ImageError, match=r"holds 2 arrays \(truth, mask\); save the image alone"):
        load_image(str(several))
    with pytest.raises(ImageError, match="holds no array"):
        load_image(str(empty))


def test_npz_array_must_be_2d(tmp_path):
    path = tmp_path / "rgb.npz"
    np.savez(path, image=np.zeros((8, 8, 3)))
    with pytest.raises(ImageError, match=r"2-D numeric array, got shape \(8, 8, 3\)"):
        load_image(str(path))
    with pytest.raises(ImageError, match=r"non-empty 2-D numeric array, got shape \(0, 5\)"):
        load_image(_npy(tmp_path, np.zeros((0, 5))))


def test_rgb_and_rgba_to_gray(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0] = [255, 0, 0, 255]  # opaque red: 0.2125 · 255
    rgba[0, 1] = [0, 0, 0, 0]  # transparent: composited over white
    skimage.io.imsave(tmp_path / "rgba.png", rgba, check_contrast=False)
    img = load_image(str(tmp_path / "rgba.png"), None)
    assert img[0, 0] == pytest.approx(0.2125 * 255, abs=1e-9)
    assert img[0, 1] == pytest.approx(255, abs=1e-9) and img[1, 1] == pytest.approx(0, abs=1e-9)
    rgb = np.zeros((8, 8, 3), np.float32)
    rgb[..., 1] = 200  # float RGB on the [0, 255] scale: pure green, 0.7154 · 200
    skimage.io.imsave(tmp_path / "rgb.tif", rgb, check_contrast=False)
    notes = []
    np.testing.assert_allclose(load_image(str(tmp_path / "rgb.tif"), None, notes), 0.7154 * 200, rtol=1e-12)
    assert len(notes) == 1


def test_resize_keeps_the_scale(tmp_path):
    img = load_image(_npy(tmp_path, np.full((32, 32), 200.0)), (8, 12))
    assert img.shape == (8, 12)
    np.testing.assert_allclose(img, 200.0, rtol=1e-12)


def test_nan_is_refused(tmp_path):
    array = RAMP.copy()
    array[2, 3] = np.nan
    with pytest.raises(ImageError, match="NaN or inf"):
        load_image(_npy(tmp_path, array))


def test_check_image_size():
    assert check_image_size((MIN_IMAGE_SIDE, 64)) == (7, 64)
    assert check_image_size(np.array([8, 9])) == (8, 9)
    for size in [(6, 64), (64, 2), (1, 1)]:
        with pytest.raises(ImageError, match=f"too small: each side must be at least {MIN_IMAGE_SIDE} pixels"):
            check_image_size(size)
    for size in [(7,), (7, 7, 7), ("a", 8), (7.5, 8), (float("inf"), 8), None]:
        with pytest.raises(ImageError, match="two integers"):
            check_image_size(size)


def test_tiny_images_are_refused_before_resizing_or_after_loading(tmp_path):
    with pytest.raises(ImageError, match="2x2 is too small"):
        load_image("builtin:camera", (2, 2))
    small = _npy(tmp_path, np.full((5, 5), 100.0))
    with pytest.raises(ImageError, match="5x5 is too small"):
        load_image(small, None)
    assert load_image(small, (7, 7)).shape == (7, 7)  # resized to an allowed size: fine


def test_constant_and_zero_images_load_and_compare(tmp_path):
    zero = load_image(_npy(tmp_path, np.zeros((16, 16))), None)
    np.testing.assert_array_equal(zero, 0.0)
    ten = np.full((16, 16), 10.0)
    assert psnr(zero, zero) == math.inf
    assert psnr(zero, ten) == pytest.approx(10 * math.log10(255**2 / 100), rel=1e-12)
    assert ssim(zero, zero) == pytest.approx(1.0, abs=1e-12)
    a, b = 10.0, 200.0
    expected = (2 * a * b + C1) / (a * a + b * b + C1)  # constant images: the luminance term only
    assert ssim(np.full((9, 9), a), np.full((9, 9), b)) == pytest.approx(expected, rel=1e-9)
    assert ssim(ten, zero) == pytest.approx(C1 / (100 + C1), rel=1e-9)


def test_metrics_of_non_finite_estimates_are_nan():
    truth = RAMP * 255
    for bad in (np.nan, np.inf):
        estimate = truth.copy()
        estimate[0, 0] = bad
        assert math.isnan(psnr(truth, estimate)) and math.isnan(ssim(truth, estimate))


def test_metrics_refuse_mismatched_or_tiny_images():
    with pytest.raises(ImageError, match="same shape"):
        psnr(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ImageError, match="at least 7 pixels"):
        ssim(np.zeros((6, 6)), np.zeros((6, 6)))
    assert psnr(np.zeros((2, 2)), np.ones((2, 2))) == pytest.approx(20 * math.log10(255), rel=1e-12)


def test_ssim_matches_scikit_image_default():
    from skimage.metrics import structural_similarity

    truth = load_image("builtin:camera", (32, 32))
    noisy = truth + np.random.default_rng(0).normal(0, 10, truth.shape)
    assert ssim(truth, noisy) == pytest.approx(structural_similarity(truth, noisy, data_range=255), rel=1e-12)
