"""Pre-activation ResNet (ResNetV2, He et al. 2016) built from a stage spec.

Layer for layer the network of `keras.applications.ResNet{50,101,152}V2`, with the same layer
names, so weights move between the two by name. The model takes images already scaled to
[-1, 1] (`toolkit.data.preprocess.normalize`) and returns float32 logits: the softmax belongs to
the loss (from_logits=True) and to the exported serving signature, never to training.
"""

from __future__ import annotations

import keras
from keras import layers

from toolkit.models import batchnorm

# blocks per stage; filters per stage are (64, 128, 256, 512) with a 4x bottleneck expansion
# 26 (two blocks per stage, as timm's resnet26) is ours: about 1.7x fewer FLOPs than 50, for small datasets
# on a small budget; it has no published ImageNet weights.
STAGES = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGE_FILTERS = (64, 128, 256, 512)
BN_EPSILON = 1.001e-5
BACKBONE_OUTPUT = "post_relu"


# Keras' default moving-average momentum is 0.99; 0.9 (TF Model Garden's and timm's choice) lets
# the evaluation statistics catch up within tens of steps instead of hundreds, which short and
# small-data runs need. It changes training only: inference with given weights is the same.
BN_MOMENTUM = 0.9


def _batch_norm(name: str, synchronized: bool) -> layers.Layer:
    # Keras' layer, with the training step through TensorFlow's fused kernel (toolkit.models.batchnorm)
    return batchnorm.BatchNormalization(
        axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=synchronized, name=name
    )


def _bottleneck(x, filters: int, stride: int, projection: bool, name: str, sync_bn: bool):
    """One pre-activation bottleneck block: BN-ReLU, then 1x1, 3x3 (strided), 1x1 convs."""
    preact = _batch_norm(f"{name}_preact_bn", sync_bn)(x)
    preact = layers.Activation("relu", name=f"{name}_preact_relu")(preact)

    if projection:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(preact)
    elif stride > 1:
        # identity shortcut of a strided block: subsample the raw input, as Keras does
        shortcut = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_pool")(x)
    else:
        shortcut = x

    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_1_conv")(preact)
    y = _batch_norm(f"{name}_1_bn", sync_bn)(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = layers.ZeroPadding2D(1, name=f"{name}_2_pad")(y)
    y = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{name}_2_conv")(y)
    y = _batch_norm(f"{name}_2_bn", sync_bn)(y)
    y = layers.Activation("relu", name=f"{name}_2_relu")(y)
    y = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(y)
    return layers.Add(name=f"{name}_out")([shortcut, y])


def _stage(x, filters: int, blocks: int, stride: int, name: str, sync_bn: bool):
    """A stage: projection shortcut in the first block, the stride on the last one."""
    for i in range(1, blocks + 1):
        x = _bottleneck(
            x,
            filters,
            stride=stride if i == blocks else 1,
            projection=i == 1,
            name=f"{name}_block{i}",
            sync_bn=sync_bn,
        )
    return x


def build_backbone(inputs, depth: int = 50, sync_batchnorm: bool = False):
    """The ResNetV2 trunk up to the final BN-ReLU (before pooling)."""
    if depth not in STAGES:
        raise ValueError(f"depth must be one of {sorted(STAGES)}, got {depth}")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)  # with bias; no BN/ReLU in a v2 stem
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    last = len(STAGE_FILTERS) - 1
    for i, (filters, blocks) in enumerate(zip(STAGE_FILTERS, STAGES[depth])):
        x = _stage(x, filters, blocks, stride=1 if i == last else 2, name=f"conv{i + 2}", sync_bn=sync_batchnorm)
    x = _batch_norm("post_bn", sync_batchnorm)(x)
    return layers.Activation("relu", name=BACKBONE_OUTPUT)(x)


def build_model(
    num_classes: int,
    image_size: int | None,
    depth: int = 50,
    sync_batchnorm: bool = False,
    freeze_backbone: bool = False,
    name: str | None = None,
) -> keras.Model:
    """ResNetV2 classifier returning float32 logits for [-1, 1]-scaled NHWC images.

    Built under whatever dtype policy is global (mixed_float16 / mixed_bfloat16 included); the
    head's output is always float32 so the loss and the softmax are computed at full precision.

    Args:
      num_classes: outputs of the dense head.
      image_size: the side of the square input; None: any height and width (progressive resizing).
      depth: 26, 50, 101 or 152 (STAGES).
      sync_batchnorm: BatchNorm statistics across replicas.
      freeze_backbone: train only the head.
      name: the model's name (default resnet{depth}v2).

    Returns:
      An uncompiled keras.Model.
    """
    inputs = keras.Input((image_size, image_size, 3), name="images")
    features = build_backbone(inputs, depth, sync_batchnorm)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(features)
    logits = layers.Dense(num_classes, name="predictions")(x)
    logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
    model = keras.Model(inputs, logits, name=name or f"resnet{depth}v2")
    if freeze_backbone:
        set_backbone_trainable(model, False)
    return model


def set_backbone_trainable(model: keras.Model, trainable: bool) -> None:
    """Freeze or unfreeze everything but the classification head.

    Frozen BatchNormalization layers also run in inference mode (Keras semantics), which is what
    fine-tuning on a small dataset wants.
    """
    for layer in model.layers:
        if layer.name not in ("predictions", "logits"):
            layer.trainable = trainable


def load_initial_weights(model: keras.Model, path: str) -> int:
    """Copy weights into `model`, layer by layer, by name.

    Args:
      model: a network of build_model.
      path: "imagenet" (Keras' published ImageNet weights of the same depth, fetched and cached by
        toolkit.models.pretrained), or a `.keras` or `.weights.h5` file.

    Returns:
      The number of layers copied. Layers whose shapes differ (typically the classification head
      when the class count changes) keep their fresh initialization.

    Raises:
      toolkit.config.ConfigError (a ValueError; one line starting "--init_weights:") when the
      weights cannot be had or read, or nothing in them matches.
    """
    from toolkit.config import ConfigError

    if path == "imagenet":
        from toolkit.models import pretrained

        try:
            source = pretrained.imagenet_backbone(_depth_of(model))
        except pretrained.WeightsUnavailable as e:
            raise ConfigError(f"--init_weights: {e}") from None
    elif path.endswith(".weights.h5"):
        # Keras 3 weight files are keyed by layer order, not name: rebuild the network that wrote
        # the file (same depth, its own head size), load it strictly, then copy by name.
        try:
            source = build_model(_head_size_in_weights_file(path), model.input_shape[1], _depth_of(model))
            source.load_weights(path)
        except Exception as e:  # noqa: BLE001 - any load failure is a bad --init_weights
            raise ConfigError(f"--init_weights: cannot load {path}: {e}") from e
    elif path.endswith(".keras"):
        try:
            source = keras.saving.load_model(path, compile=False)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"--init_weights: cannot load {path}: {e}") from e
    else:
        raise ConfigError(f"--init_weights: {path} must be imagenet or end in .keras or .weights.h5")
    copied = _copy_by_name(source, model)
    if copied == 0:
        raise ConfigError(f"--init_weights: no layer of {path} matches the model by name and shape")
    return copied


def _copy_by_name(source: keras.Model, model: keras.Model) -> int:
    """Copy each layer's weights from the source layer of the same name and shapes; returns the count."""
    by_name = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in model.layers:
        src = by_name.get(layer.name)
        if src is None or not layer.weights:
            continue
        src_weights = src.get_weights()
        if [tuple(w.shape) for w in src_weights] != [tuple(w.shape) for w in layer.weights]:
            continue
        layer.set_weights(src_weights)
        copied += 1
    return copied


def _depth_of(model: keras.Model) -> int:
    blocks = sum(1 for layer in model.layers if layer.name.endswith("_out"))
    return next(depth for depth, spec in STAGES.items() if sum(spec) == blocks)


def _head_size_in_weights_file(path: str) -> int:
    import h5py  # a Keras dependency

    with h5py.File(path, "r") as f:
        dense = [name for name in f.get("layers", {}) if name.startswith("dense")]
        if len(dense) != 1:
            raise ValueError("not a ResNetV2 weights file (expected one dense layer)")
        return int(f["layers"][dense[0]]["vars"]["0"].shape[-1])
