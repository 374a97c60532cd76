"""Training-time augmentation on uint8-range float batches (B, 48, 48, 1).

Flip, shift/scale/rotation (one random affine per image), brightness/contrast jitter and
cutout: the variations a face crop from a live detector actually shows.

Two appliers share one parameter set and one geometry (``affine_coefficients``):
``make_augment`` is TensorFlow ops for the tf.data pipeline (the CPU default), and
``augment_numpy`` is NumPy + OpenCV for the other Keras backends (JAX/PyTorch on a GPU),
where the batches come from a ``keras.utils.PyDataset`` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SIZE = 48
CENTRE = (SIZE - 1) / 2.0


@dataclass(frozen=True)
class AugmentParams:
    """How strong each augmentation is; shared by the TensorFlow and NumPy appliers."""

    shift: float = 0.1          # translation, fraction of the side
    zoom: float = 0.1           # isotropic scale jitter
    rotate_deg: float = 12.0
    brightness: float = 0.25    # offset, fraction of half the range
    contrast: float = 0.3       # gain jitter about each image's mean
    cutout: int = 12            # square side in pixels, applied to half the images; 0 = off


def affine_coefficients(ang, scale, tx, ty, cos, sin):
    """Output->input pixel map ``p_in = A @ (p_out - c) + c - t`` as (a0, a1, a2, b0, b1, b2).

    Pure arithmetic on whatever array type is passed (tf tensors or NumPy arrays);
    ``cos``/``sin`` are that library's functions.
    """
    c = CENTRE
    a0, a1 = cos(ang) / scale, -sin(ang) / scale
    b0, b1 = sin(ang) / scale, cos(ang) / scale
    a2 = c - a0 * c - a1 * c - tx
    b2 = c - b0 * c - b1 * c - ty
    return a0, a1, a2, b0, b1, b2


def make_augment(params: AugmentParams | None = None, *, seed: int = 0):
    """A tf.data map function ``(x, y, w) -> (x', y, w)``."""
    import tensorflow as tf

    p = params or AugmentParams()
    # from_seed(s) only moves the counter of one fixed-key stream, so seeds s and s+1 would
    # draw the same numbers shifted by one; a scrambled seed lands far away in the stream.
    rng = tf.random.Generator.from_seed(int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0] >> 1))

    def augment(x, y, w):
        b = tf.shape(x)[0]
        x = tf.where(rng.uniform([b, 1, 1, 1]) < 0.5, tf.reverse(x, axis=[2]), x)
        ang = rng.uniform([b], -1.0, 1.0) * (p.rotate_deg * math.pi / 180.0)
        scale = 1.0 + rng.uniform([b], -p.zoom, p.zoom)
        tx = rng.uniform([b], -p.shift, p.shift) * SIZE
        ty = rng.uniform([b], -p.shift, p.shift) * SIZE
        zeros = tf.zeros([b])
        transforms = tf.stack([*affine_coefficients(ang, scale, tx, ty, tf.cos, tf.sin), zeros, zeros], axis=1)
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transforms, output_shape=[SIZE, SIZE], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT")
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        k = 1.0 + rng.uniform([b, 1, 1, 1], -p.contrast, p.contrast)
        x = (x - mean) * k + mean + rng.uniform([b, 1, 1, 1], -p.brightness, p.brightness) * 255.0 * 0.5
        if p.cutout:
            cy = rng.uniform([b, 1, 1], 0, SIZE)
            cx = rng.uniform([b, 1, 1], 0, SIZE)
            yy = tf.cast(tf.range(SIZE), tf.float32)[None, :, None]
            xx = tf.cast(tf.range(SIZE), tf.float32)[None, None, :]
            hole = (tf.abs(yy - cy) < p.cutout / 2) & (tf.abs(xx - cx) < p.cutout / 2)
            hole = hole & tf.logical_not(rng.uniform([b, 1, 1]) < 0.5)
            x = tf.where(hole[..., None], mean * tf.ones_like(x), x)
        return tf.clip_by_value(x, 0.0, 255.0), y, w

    return augment


def warp_numpy(x: np.ndarray, coeffs) -> np.ndarray:
    """Apply per-image affine maps to (B, 48, 48) float32 with bilinear sampling and
    reflected borders, as TF's ImageProjectiveTransformV3(BILINEAR, REFLECT) does."""
    import cv2

    a0, a1, a2, b0, b1, b2 = (np.broadcast_to(np.asarray(c, np.float64), (len(x),)) for c in coeffs)
    out = np.empty_like(x)
    for i in range(len(x)):
        m = np.array([[a0[i], a1[i], a2[i]], [b0[i], b1[i], b2[i]]])
        # WARP_INVERSE_MAP: m maps output pixels to input pixels, like TF's transforms.
        out[i] = cv2.warpAffine(x[i], m, (SIZE, SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REFLECT)
    return out


def augment_numpy(x: np.ndarray, rng: np.random.Generator, params: AugmentParams | None = None) -> np.ndarray:
    """Augment a (B, 48, 48) float32 batch in [0, 255]; same distributions as ``make_augment``."""
    p = params or AugmentParams()
    b = len(x)
    x = np.where(rng.uniform(size=(b, 1, 1)) < 0.5, x[:, :, ::-1], x).astype(np.float32)
    ang = rng.uniform(-1.0, 1.0, b) * (p.rotate_deg * math.pi / 180.0)
    scale = 1.0 + rng.uniform(-p.zoom, p.zoom, b)
    tx = rng.uniform(-p.shift, p.shift, b) * SIZE
    ty = rng.uniform(-p.shift, p.shift, b) * SIZE
    x = warp_numpy(x, affine_coefficients(ang, scale, tx, ty, np.cos, np.sin))
    mean = x.mean(axis=(1, 2), keepdims=True)
    k = 1.0 + rng.uniform(-p.contrast, p.contrast, (b, 1, 1))
    x = (x - mean) * k + mean + rng.uniform(-p.brightness, p.brightness, (b, 1, 1)) * 255.0 * 0.5
    if p.cutout:
        cy = rng.uniform(0, SIZE, (b, 1, 1))
        cx = rng.uniform(0, SIZE, (b, 1, 1))
        yy = np.arange(SIZE, dtype=np.float32)[None, :, None]
        xx = np.arange(SIZE, dtype=np.float32)[None, None, :]
        hole = (np.abs(yy - cy) < p.cutout / 2) & (np.abs(xx - cx) < p.cutout / 2)
        hole &= ~(rng.uniform(size=(b, 1, 1)) < 0.5)
        x = np.where(hole, mean, x)
    return np.clip(x, 0.0, 255.0).astype(np.float32)
