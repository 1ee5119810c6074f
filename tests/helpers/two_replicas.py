"""Run in a subprocess (logical CPU devices must be set before TensorFlow starts).

Prints one JSON line comparing a 2-replica MirroredStrategy step with a 1-replica step on the
same global batch, and checking fp16 overflow handling across replicas.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from toolkit.train import distribute  # noqa: E402
from toolkit.train import steps as loop
from toolkit.train import optim
from toolkit.config import TrainConfig  # noqa: E402
from toolkit.models import resnet_v2  # noqa: E402

GLOBAL_BATCH = 8
# one bottleneck block per stage: every layer kind of ResNet50V2 (the equivalence does not depend on
# the depth) at a fraction of its trace time, which on an AVX2 CPU was 2.5 minutes of CI
resnet_v2.STAGES[50] = (1, 1, 1, 1)


def make(strategy, precision, weights=None, freeze_bn=True):
    config = TrainConfig(optimizer="sgd", learning_rate=0.05, momentum=0.9, warmup_epochs=0, weight_decay=0, epochs=1)
    with strategy.scope():
        model = resnet_v2.build_model(4, 32)
        # BN-free check: frozen BatchNorm is a fixed affine map, so per-replica batch statistics
        # cannot differ between the runs (synchronized BN traces too slowly on 2 CPU cores)
        for layer in model.layers:
            if freeze_bn and isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        if weights is not None:
            model.set_weights(weights)
        optimizer = optim.make_optimizer(config, steps_per_epoch=100, precision=precision)
        optim.build_optimizer_state(optimizer, model)
    return model, optimizer, loop.Trainer(model, optimizer, strategy, GLOBAL_BATCH, num_classes=4)


def batches(images, labels, strategy):
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH).repeat(2)
    return iter(strategy.experimental_distribute_dataset(ds))


def main():
    distribute.setup_devices(cpu_replicas=2)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (GLOBAL_BATCH, 32, 32, 3)).astype("float32")
    labels = (np.arange(GLOBAL_BATCH) % 4).astype("int32")

    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    model2, _, trainer2 = make(two, "fp32")
    initial = model2.get_weights()
    model1, _, trainer1 = make(one, "fp32", initial)

    it2, it1 = batches(images, labels, two), batches(images, labels, one)
    losses2 = [float(trainer2.train_step(next(it2))["loss"]) for _ in range(2)]
    losses1 = [float(trainer1.train_step(next(it1))["loss"]) for _ in range(2)]
    w2, w1 = model2.get_weights(), model1.get_weights()
    moved = max(float(np.abs(a - b).max()) for a, b in zip(w1, initial))
    weight_diff = max(float(np.abs(a - b).max()) for a, b in zip(w1, w2))

    # trainable BatchNorm: each replica normalizes its own half of the global batch (no sync), so
    # the first loss is the one-device loss computed half by half, not over the whole batch. Only
    # the first step is compared: a fresh ResNet trained on 4 images per replica is chaotic, and
    # float rounding (a different summation order) grows to visible differences from step 2 on.
    _, _, trainer_bn = make(two, "fp32", initial, freeze_bn=False)
    first_bn = float(trainer_bn.train_step(next(batches(images, labels, two)))["loss"])
    reference = resnet_v2.build_model(4, 32)
    reference.set_weights(initial)
    per_example = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    halves = [float(tf.reduce_sum(per_example(labels[s], reference(images[s], training=True)))) for s in (slice(0, 4), slice(4, 8))]
    whole = float(tf.reduce_mean(per_example(labels, reference(images, training=True))))

    # fp16: one replica's half of the batch overflows; both replicas must skip the step together
    keras.mixed_precision.set_global_policy("mixed_float16")
    model16, opt16, trainer16 = make(two, "fp16", initial)
    bad = images.copy()
    bad[-1] = np.inf  # the last example lands on replica 1
    scale_before = float(opt16.dynamic_scale.numpy())
    trainer16.train_step(next(batches(bad, labels, two)))
    after = model16.get_weights()
    per_replica = [v.values for v in model16.get_layer("conv1_conv").weights if hasattr(v, "values")]
    print(json.dumps({
        "losses_two": losses2,
        "losses_one": losses1,
        "weight_diff": weight_diff,
        "weights_moved": moved,
        "replicas": two.num_replicas_in_sync,
        "bn_first_loss_two": first_bn,
        "bn_first_loss_halves": sum(halves) / GLOBAL_BATCH,
        "bn_first_loss_whole_batch": whole,
        "fp16_scale_before": scale_before,
        "fp16_scale_after": float(opt16.dynamic_scale.numpy()),
        "fp16_weights_finite": bool(all(np.isfinite(w).all() for w in after)),
        "fp16_weights_unchanged": bool(all(np.array_equal(a, b) for a, b in zip(after, initial))),
        "fp16_replica_copies_equal": bool(all(np.array_equal(c[0].numpy(), c[1].numpy()) for c in per_replica)),
    }))


if __name__ == "__main__":
    main()
