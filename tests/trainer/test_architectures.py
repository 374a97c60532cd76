from __future__ import annotations

import pytest

from fer_pipeline.labels import NUM_CLASSES

pytestmark = pytest.mark.slow  # builds Keras models


@pytest.fixture(scope="module")
def models(tf_one_thread):
    from fer_pipeline.trainer.architectures import build

    return {arch: build(arch) for arch in ("seed", "compact")}


def test_seed_is_the_tutorial_cnn(models):
    from keras import layers

    seed = models["seed"]
    kinds = [type(layer).__name__ for layer in seed.layers]
    assert kinds == ["Rescaling"] + ["Conv2D", "MaxPooling2D", "Dropout"] * 4 + [
        "Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense"]
    convs = [layer for layer in seed.layers if isinstance(layer, layers.Conv2D)]
    assert [c.filters for c in convs] == [128, 256, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.activation.__name__ == "relu" for c in convs)
    pools = [layer for layer in seed.layers if isinstance(layer, layers.MaxPooling2D)]
    assert all(p.pool_size == (2, 2) for p in pools)
    drops = [layer.rate for layer in seed.layers if isinstance(layer, layers.Dropout)]
    assert drops[:4] == [0.4] * 4
    dense = [layer.units for layer in seed.layers if isinstance(layer, layers.Dense)]
    assert dense == [512, 256, NUM_CLASSES]
    assert tuple(seed.input_shape) == (None, 48, 48, 1) and tuple(seed.output_shape) == (None, NUM_CLASSES)


def test_compact_costs_at_most_a_quarter_of_the_seed(models):
    from fer_pipeline.trainer.architectures import macs

    seed, compact = macs(models["seed"]), macs(models["compact"])
    # The seed's first conv alone: 46x46 outputs x 128 filters x 3x3x1 weights.
    assert seed > 46 * 46 * 128 * 9
    assert 0 < compact * 4 <= seed
    assert tuple(models["compact"].output_shape) == (None, NUM_CLASSES)


def test_unknown_architecture_is_refused():
    from fer_pipeline.trainer.architectures import build

    with pytest.raises(ValueError, match="unknown architecture 'resnet50'"):
        build("resnet50")
