"""Model architectures. Each builder returns a Keras model mapping raw 48x48x1 gray
pixels in [0, 255] (float32) to 7 logits; preprocessing lives inside the model.

- ``seed``: the tutorial's CNN, kept exactly as the reproducible baseline (~218 M MAC/face).
- ``compact``: our default, a small residual net sized for accuracy per CPU FLOP
  (at most a quarter of the seed's MACs; ``macs()`` checks it).
"""

from __future__ import annotations

from fer_pipeline.labels import NUM_CLASSES

INPUT_SHAPE = (48, 48, 1)
ARCHS = ("compact", "seed")


def build(arch: str, *, dropout: float = 0.3):
    if arch == "seed":
        return _seed()
    if arch == "compact":
        return _compact(dropout=dropout)
    msg = f"unknown architecture {arch!r} (choose from {', '.join(ARCHS)})"
    raise ValueError(msg)


def _seed():
    """The tutorial's Sequential CNN: 4 x (Conv 3x3 + MaxPool 2 + Dropout 0.4), Dense 512/256."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE, name="pixels"),
            layers.Rescaling(1.0 / 255.0, name="rescale"),
            layers.Conv2D(128, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.4),
            layers.Conv2D(256, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.4),
            layers.Conv2D(512, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.4),
            layers.Conv2D(512, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.4),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.4),
            layers.Dense(256, activation="relu"),
            layers.Dropout(0.3),
            # Logits: the tutorial's softmax is applied by the serving wrapper (export.py).
            layers.Dense(NUM_CLASSES, name="logits"),
        ],
        name="seed",
    )


def _conv_bn(x, filters: int, *, stride: int = 1, name: str, relu: bool = True):
    from keras import layers

    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _res_block(x, filters: int, *, stride: int, name: str):
    """ResNet basic block; a 1x1 projection when the shape changes."""
    from keras import layers

    shortcut = x
    y = _conv_bn(x, filters, stride=stride, name=f"{name}a")
    y = _conv_bn(y, filters, name=f"{name}b", relu=False)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def _compact(*, dropout: float):
    """Residual net: 48 -> 24 -> 12 -> 6 -> 3, widths 24/64/128/256, ~52 M MAC per face.

    Full resolution gets only the stem (the costliest pixels); capacity goes to the coarse
    stages, where a 3x3 conv is 16-64x cheaper per channel pair.
    """
    import keras
    from keras import layers

    inputs = keras.Input(INPUT_SHAPE, name="pixels")
    # (x/255 - 0.5)/0.25 in one affine layer: roughly zero-mean, unit-variance input.
    x = layers.Rescaling(1.0 / 63.75, offset=-2.0, name="normalize")(inputs)
    x = _conv_bn(x, 24, name="stem")                      # 48x48
    x = layers.MaxPooling2D(2, name="stem_pool")(x)       # 24x24
    x = _res_block(x, 24, stride=1, name="s1b1")
    x = _res_block(x, 64, stride=2, name="s2b1")          # 12x12
    x = _res_block(x, 64, stride=1, name="s2b2")
    x = _res_block(x, 128, stride=2, name="s3b1")         # 6x6
    x = _res_block(x, 128, stride=1, name="s3b2")
    x = _res_block(x, 256, stride=2, name="s4b1")         # 3x3
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="compact")


def macs(model) -> int:
    """Multiply-accumulates per face for conv/dense layers (what dominates CPU cost)."""
    from keras import layers

    total = 0
    for layer in _walk(model):
        if isinstance(layer, layers.DepthwiseConv2D):
            oh, ow, oc = layer.output.shape[1:]
            kh, kw = layer.kernel_size
            total += oh * ow * oc * kh * kw
        elif isinstance(layer, layers.Conv2D):
            oh, ow, oc = layer.output.shape[1:]
            kh, kw = layer.kernel_size
            ic = layer.input.shape[-1]
            total += oh * ow * oc * kh * kw * ic // layer.groups
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def _walk(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _walk(layer)
        else:
            yield layer
