from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from fer_pipeline.trainer.augment import (
    SIZE,
    AugmentParams,
    affine_coefficients,
    augment_numpy,
    make_augment,
    warp_numpy,
)

FLIP_ONLY = AugmentParams(shift=0, zoom=0, rotate_deg=0, brightness=0, contrast=0, cutout=0)


def smooth_image(seed: int = 0) -> np.ndarray:
    """(48, 48) float32 in [0, 255]: a diagonal gradient plus blurred noise. Smooth, so bilinear
    sampling differences stay tiny, and not mirror-symmetric, so a flip is visible."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (SIZE, SIZE)).astype(np.float32), (0, 0), 3)
    return np.clip(xx + 1.5 * yy + 2 * (noise - noise.mean()) + 80, 0, 255).astype(np.float32)


def tf_warp(x: np.ndarray, coeffs) -> np.ndarray:
    """TensorFlow's warp of (B, 48, 48) with the op and settings ``make_augment`` uses."""
    import tensorflow as tf

    b = len(x)
    cols = [np.broadcast_to(np.asarray(c, np.float32), (b,)) for c in coeffs]
    transforms = np.stack([*cols, np.zeros(b, np.float32), np.zeros(b, np.float32)], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=x[..., None], transforms=transforms, output_shape=[SIZE, SIZE], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")
    return out.numpy()[..., 0]


def per_image_stats(x: np.ndarray) -> np.ndarray:
    """Mean and spread of the per-image means and standard deviations of a batch."""
    means, stds = x.mean(axis=(1, 2)), x.std(axis=(1, 2))
    return np.array([means.mean(), stds.mean(), means.std(), stds.std()])


@pytest.mark.parametrize("deg, scale, tx, ty", [
    (0.0, 1.0, 2.5, -1.25),   # sub-pixel shift
    (12.0, 1.0, 0.0, 0.0),    # the largest rotation AugmentParams draws
    (-7.0, 0.9, 4.8, 3.0),    # zoom out: samples well past the border (reflection)
    (20.0, 1.15, -6.0, 5.0),  # beyond the default ranges
])
def test_warp_numpy_matches_tensorflow(tf_one_thread, deg, scale, tx, ty):
    img = smooth_image()
    x = np.stack([img, img[::-1]])
    coeffs = affine_coefficients(np.float64(math.radians(deg)), np.float64(scale), tx, ty, np.cos, np.sin)
    ours, theirs = warp_numpy(x, coeffs), tf_warp(x, coeffs)
    assert ours.shape == theirs.shape == x.shape and ours.dtype == np.float32
    diff = np.abs(ours - theirs)
    # Measured on these images, whole frame borders included: mean |diff| ~0.03 and max ~0.2 grey
    # levels (OpenCV samples at 1/32 pixel). BORDER_REFLECT_101 or REPLICATE instead, or a half-pixel
    # offset, measured mean 0.6-1.8 and max 7-45.
    assert diff.mean() < 0.15
    assert diff.max() < 1.0
    # The warp actually moved something.
    assert np.abs(ours - x).mean() > 1.0


def test_identity_coefficients_leave_the_image_unchanged(tf_one_thread):
    x = np.stack([smooth_image(0), smooth_image(1)])
    identity = affine_coefficients(0.0, 1.0, 0.0, 0.0, np.cos, np.sin)
    assert np.allclose(identity, (1, 0, 0, 0, 1, 0))
    np.testing.assert_allclose(warp_numpy(x, identity), x, atol=1e-3)
    np.testing.assert_allclose(tf_warp(x, identity), x, atol=1e-3)


def test_positive_shift_moves_the_content_right_and_down():
    img = smooth_image()
    out = warp_numpy(img[None], affine_coefficients(0.0, 1.0, 3.0, 2.0, np.cos, np.sin))[0]
    # Output pixel (r, c) samples input (r - 2, c - 3); compare away from the reflected border.
    np.testing.assert_allclose(out[5:45, 5:45], img[3:43, 2:42], atol=1e-3)


def test_augment_numpy_shape_range_and_determinism():
    img = smooth_image()
    img[:10, :10], img[-10:, -10:] = 0.0, 255.0  # extremes, so contrast/brightness must clip
    x = np.repeat(img[None], 64, axis=0)
    out = augment_numpy(x, np.random.default_rng(5))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert out.min() == 0.0 and out.max() == 255.0  # clipping happened, rather than rescaling
    np.testing.assert_array_equal(x, np.repeat(img[None], 64, axis=0))  # input untouched
    np.testing.assert_array_equal(out, augment_numpy(x, np.random.default_rng(5)))
    other = augment_numpy(x, np.random.default_rng(6))
    assert np.abs(other - out).mean() > 5.0
    # Every image in a batch draws its own transform.
    assert len({o.tobytes() for o in out}) == len(out)


def test_flip_only_gives_the_image_or_its_mirror_about_half_each():
    img = smooth_image()
    x = np.repeat(img[None], 200, axis=0)
    out = augment_numpy(x, np.random.default_rng(0), FLIP_ONLY)
    same = np.all(np.isclose(out, img, atol=1e-3), axis=(1, 2))
    mirrored = np.all(np.isclose(out, img[:, ::-1], atol=1e-3), axis=(1, 2))
    assert not np.any(same & mirrored)  # the image is not mirror-symmetric
    assert np.all(same | mirrored)
    assert 70 <= mirrored.sum() <= 130  # Binomial(200, 0.5): mean 100, sd ~7


def test_tensorflow_and_numpy_appliers_have_matching_statistics(tf_one_thread):
    import tensorflow as tf

    b = 2048
    x = np.repeat(smooth_image()[None], b, axis=0)
    ours = augment_numpy(x, np.random.default_rng(0))
    theirs, y, w = make_augment(seed=0)(tf.constant(x[..., None]), tf.zeros([b, 7]), tf.ones([b]))
    theirs = theirs.numpy()[..., 0]
    assert theirs.shape == ours.shape and y.shape == (b, 7) and w.shape == (b,)
    assert theirs.min() >= 0.0 and theirs.max() <= 255.0

    mean_of_means, mean_of_stds, sd_of_means, sd_of_stds = per_image_stats(ours)
    t_mean_of_means, t_mean_of_stds, t_sd_of_means, t_sd_of_stds = per_image_stats(theirs)
    # Measured over 8 seed pairs at b=2048: |diff| at most 1.3, 0.11, 0.26 and 0.06 for these four
    # (expected levels ~138.5, 20.5, 18.1, 3.7); tolerances leave ~2-5x margin. Doubling the
    # brightness or contrast jitter in one applier moves sd_of_means or sd_of_stds by far more.
    assert abs(mean_of_means - t_mean_of_means) < 3.0
    assert abs(mean_of_stds - t_mean_of_stds) < 0.5
    assert abs(sd_of_means - t_sd_of_means) < 1.0
    assert abs(sd_of_stds - t_sd_of_stds) < 0.3
    # The jitter is really there in both (one image in, a spread of images out).
    assert sd_of_means > 10 and t_sd_of_means > 10
