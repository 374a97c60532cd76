"""Backend-neutral training batches: a ``keras.utils.PyDataset`` over uint8 arrays.

TensorFlow runs use the tf.data pipeline in ``train.py``; JAX and PyTorch backends (a
rented GPU, say) have no tf.data, so their batches are shuffled, augmented with NumPy and
OpenCV (which release the GIL) in a few worker threads, and handed to ``model.fit``.
"""

from __future__ import annotations

import numpy as np

from fer_pipeline.trainer.augment import AugmentParams, augment_numpy


def make_batches(images: np.ndarray, targets: np.ndarray, weights: np.ndarray, *, batch_size: int, seed: int,
                 augment: bool, start_epoch: int = 0, workers: int = 4):
    """Shuffled (and optionally augmented) training batches of ``(x[..., None], y, w)``.

    Each (epoch, batch) draws from its own seeded generator, so a run is reproducible
    whichever worker thread builds which batch; the second tag keeps the shuffle's stream
    apart from the augmentation's (NumPy drops trailing zeros in seed tuples).
    """
    import keras

    class ArrayBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=16)
            self.epoch = start_epoch  # a resumed run continues the shuffle sequence
            self.params = AugmentParams()
            self._shuffle()

        def _shuffle(self) -> None:
            self.order = np.random.default_rng((seed, 0, self.epoch)).permutation(len(images))

        def __len__(self) -> int:
            return len(images) // batch_size  # drop the remainder, as the tf.data path does

        def __getitem__(self, i: int):
            idx = np.sort(self.order[i * batch_size:(i + 1) * batch_size])
            x = images[idx].astype(np.float32)
            if augment:
                x = augment_numpy(x, np.random.default_rng((seed, 1, self.epoch, i)), self.params)
            return x[..., None], targets[idx], weights[idx]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._shuffle()

    return ArrayBatches()
