from __future__ import annotations

import numpy as np
import pytest

from fer_pipeline.labels import NUM_CLASSES
from fer_pipeline.trainer.batches import make_batches

N = 303
BATCH = 16  # 18 full batches; the last 15 images of each epoch's order are dropped


@pytest.fixture(autouse=True)
def _one_tf_thread(tf_one_thread):
    """Importing Keras brings TensorFlow in; pin its pools before anything runs an op."""


def indexed_set(n: int = N, textured: bool = False):
    """Images, targets and weights that all name their own index: image i is filled with
    i % 256 (plus a fixed texture if asked), targets row i holds i in column 0 and i % 7 in
    column 1, weight i is i + 0.5."""
    idx = np.arange(n)
    images = np.broadcast_to((idx % 256).astype(np.uint8)[:, None, None], (n, 48, 48)).copy()
    if textured:
        images = np.random.default_rng(0).integers(0, 256, (n, 48, 48)).astype(np.uint8)
    targets = np.zeros((n, NUM_CLASSES), np.float32)
    targets[:, 0], targets[:, 1] = idx, idx % 7
    weights = (idx + 0.5).astype(np.float32)
    return images, targets, weights


def batches(ds) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [ds[i] for i in range(len(ds))]


def epoch_indices(ds) -> np.ndarray:
    return np.concatenate([y[:, 0] for _, y, _ in batches(ds)]).astype(int)


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya, wa), (xb, yb, wb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(wa, wb)


def test_length_shapes_and_alignment():
    images, targets, weights = indexed_set()
    ds = make_batches(images, targets, weights, batch_size=BATCH, seed=3, augment=False)
    assert len(ds) == N // BATCH == 18
    for x, y, w in batches(ds):
        assert x.shape == (BATCH, 48, 48, 1) and x.dtype == np.float32
        assert y.shape == (BATCH, NUM_CLASSES) and y.dtype == np.float32
        assert w.shape == (BATCH,) and w.dtype == np.float32
        i = y[:, 0].astype(int)
        np.testing.assert_array_equal(x, images[i][..., None].astype(np.float32))  # unaugmented pixels
        np.testing.assert_array_equal(y, targets[i])
        np.testing.assert_array_equal(w, weights[i])


def test_an_epoch_draws_each_image_at_most_once():
    images, targets, weights = indexed_set()
    ds = make_batches(images, targets, weights, batch_size=BATCH, seed=3, augment=False)
    for _ in range(3):
        seen = epoch_indices(ds)
        assert len(seen) == len(set(seen)) == len(ds) * BATCH
        assert set(seen) <= set(range(N))
        ds.on_epoch_end()


def test_each_epoch_reshuffles():
    images, targets, weights = indexed_set()
    ds = make_batches(images, targets, weights, batch_size=BATCH, seed=3, augment=False)
    first = epoch_indices(ds)
    ds.on_epoch_end()
    second = epoch_indices(ds)
    assert not np.array_equal(first, second)
    # Different batches, not just a different order of the same batches.
    assert {frozenset(first[i:i + BATCH]) for i in range(0, len(first), BATCH)}.isdisjoint(
        {frozenset(second[i:i + BATCH]) for i in range(0, len(second), BATCH)})
    # And a different set of dropped remainder images, over a few epochs.
    dropped = set()
    for _ in range(4):
        ds.on_epoch_end()
        dropped |= set(range(N)) - set(epoch_indices(ds))
    assert len(dropped) > N % BATCH


@pytest.mark.parametrize("augment", [False, True])
def test_same_seed_same_batches(augment):
    data = indexed_set(textured=True)
    a = make_batches(*data, batch_size=BATCH, seed=11, augment=augment)
    b = make_batches(*data, batch_size=BATCH, seed=11, augment=augment)
    for _ in range(2):
        assert_same_batches(batches(a), batches(b))
        a.on_epoch_end()
        b.on_epoch_end()
    other = make_batches(*data, batch_size=BATCH, seed=12, augment=augment)
    assert not np.array_equal(epoch_indices(other), epoch_indices(make_batches(*data, batch_size=BATCH, seed=11,
                                                                                  augment=augment)))


def test_start_epoch_resumes_the_sequence():
    data = indexed_set(textured=True)
    k = 3
    resumed = make_batches(*data, batch_size=BATCH, seed=7, augment=True, start_epoch=k)
    fresh = make_batches(*data, batch_size=BATCH, seed=7, augment=True)
    first_epoch = batches(fresh)
    for _ in range(k):
        fresh.on_epoch_end()
    assert_same_batches(batches(resumed), batches(fresh))
    assert not np.array_equal(batches(resumed)[0][1], first_epoch[0][1])
    # ...and both carry on identically.
    resumed.on_epoch_end()
    fresh.on_epoch_end()
    assert_same_batches(batches(resumed), batches(fresh))


def test_augmentation_changes_pixels_and_keeps_labels_aligned():
    # A constant image stays constant under flips, warps (reflected borders) and contrast; the
    # brightness offset moves it by at most 0.25 * 127.5 grey levels, and cutout paints a square
    # of the (pre-offset) mean, i.e. of the source value. So every pixel stays within that offset.
    images, targets, weights = indexed_set()
    plain = make_batches(images, targets, weights, batch_size=BATCH, seed=5, augment=False)
    augmented = make_batches(images, targets, weights, batch_size=BATCH, seed=5, augment=True)
    changed = 0
    for (xp, yp, wp), (xa, ya, wa) in zip(batches(plain), batches(augmented)):
        # Same images in the same slots: augmentation does not touch the shuffle.
        np.testing.assert_array_equal(ya, yp)
        np.testing.assert_array_equal(wa, wp)
        assert xa.shape == xp.shape and xa.dtype == np.float32
        assert xa.min() >= 0.0 and xa.max() <= 255.0
        i = ya[:, 0].astype(int)
        np.testing.assert_array_equal(wa, weights[i])
        np.testing.assert_array_equal(ya, targets[i])
        source = (i % 256).astype(np.float32)
        offset = np.abs(xa[..., 0] - source[:, None, None])
        assert np.all(offset <= 0.25 * 127.5 + 1e-3)
        changed += int(np.sum(offset.max(axis=(1, 2)) > 0.5))
    assert changed > 0.9 * len(plain) * BATCH

    # Textured images: every augmented image differs from its source.
    data = indexed_set(textured=True)
    for x, y, _ in batches(make_batches(*data, batch_size=BATCH, seed=5, augment=True))[:4]:
        src = data[0][y[:, 0].astype(int)].astype(np.float32)[..., None]
        assert np.all(np.abs(x - src).mean(axis=(1, 2, 3)) > 1.0)


def test_keras_fit_consumes_the_batches(tmp_path):
    """The PyDataset path end to end through model.fit (here on TensorFlow; on JAX/PyTorch
    it is the only input path)."""
    import keras

    images, targets, weights = indexed_set()
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[np.arange(N) % NUM_CLASSES]
    model = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Rescaling(1 / 255.0),
                              keras.layers.Flatten(), keras.layers.Dense(NUM_CLASSES)])
    model.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True))
    ds = make_batches(images, onehot, weights, batch_size=BATCH, seed=0, augment=True, workers=2)
    history = model.fit(ds, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert ds.epoch >= 1  # on_epoch_end ran between the epochs: a fresh order each epoch
