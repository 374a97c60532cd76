"""Training-time augmentation as TensorFlow ops on uint8-range float batches (B, 48, 48, 1).

Flip, shift/scale/rotation (one random affine per image), brightness/contrast jitter and
cutout: the variations a face crop from a live detector actually shows.
"""

from __future__ import annotations

import math


def make_augment(*, shift: float = 0.1, zoom: float = 0.1, rotate_deg: float = 12.0,
                 brightness: float = 0.25, contrast: float = 0.3, cutout: int = 12, seed: int = 0):
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed)

    def augment(x, y, w):
        b = tf.shape(x)[0]
        x = tf.where(rng.uniform([b, 1, 1, 1]) < 0.5, tf.reverse(x, axis=[2]), x)
        # One affine per image: rotation, isotropic zoom, translation, about the centre.
        ang = rng.uniform([b], -1.0, 1.0) * (rotate_deg * math.pi / 180.0)
        scale = 1.0 + rng.uniform([b], -zoom, zoom)
        tx = rng.uniform([b], -shift, shift) * 48.0
        ty = rng.uniform([b], -shift, shift) * 48.0
        cos, sin = tf.cos(ang) / scale, tf.sin(ang) / scale
        c = 23.5
        # Output->input map: p_in = A @ (p_out - c) + c - t.
        a0, a1 = cos, -sin
        b0, b1 = sin, cos
        a2 = c - a0 * c - a1 * c - tx
        b2 = c - b0 * c - b1 * c - ty
        zeros = tf.zeros([b])
        transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transforms, output_shape=[48, 48], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT")
        # Contrast about each image's mean, then brightness.
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        k = 1.0 + rng.uniform([b, 1, 1, 1], -contrast, contrast)
        x = (x - mean) * k + mean + rng.uniform([b, 1, 1, 1], -brightness, brightness) * 255.0 * 0.5
        if cutout:
            cy = rng.uniform([b, 1, 1], 0, 48)
            cx = rng.uniform([b, 1, 1], 0, 48)
            yy = tf.cast(tf.range(48), tf.float32)[None, :, None]
            xx = tf.cast(tf.range(48), tf.float32)[None, None, :]
            hole = (tf.abs(yy - cy) < cutout / 2) & (tf.abs(xx - cx) < cutout / 2)
            keep = rng.uniform([b, 1, 1]) < 0.5
            hole = hole & tf.logical_not(keep)
            x = tf.where(hole[..., None], mean * tf.ones_like(x), x)
        return tf.clip_by_value(x, 0.0, 255.0), y, w

    return augment
