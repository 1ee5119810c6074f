"""toolkit.models.batchnorm: Keras' BatchNormalization with TensorFlow's fused kernel for training.

Against Keras' own layer with the same weights, on the same batch: the outputs, the gradients of
the input, gamma and beta, and the moving statistics after a step agree; inference is Keras' code.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from toolkit.models import batchnorm

POLICIES = {"fp32": ("float32", 2e-5), "bf16": ("mixed_bfloat16", 3e-2), "fp16": ("mixed_float16", 4e-3)}


def _pair(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        layers = [cls(momentum=0.9, epsilon=1.001e-5) for cls in (keras.layers.BatchNormalization, batchnorm.BatchNormalization)]
        for layer in layers:
            layer.build((None, 6, 5, 8))
        rng = np.random.default_rng(0)
        for v in ("gamma", "beta", "moving_mean", "moving_variance"):
            value = rng.uniform(0.5, 1.5, 8) if v in ("gamma", "moving_variance") else rng.normal(size=8)
            for layer in layers:
                getattr(layer, v).assign(value.astype(np.float32))
        return layers
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("precision", sorted(POLICIES))
def test_a_training_step_matches_keras_batchnormalization(precision):
    policy, tol = POLICIES[precision]
    keras_bn, fused_bn = _pair(policy)
    x = tf.constant(np.random.default_rng(1).normal(3.0, 2.0, (4, 6, 5, 8)), tf.float32)
    weights = tf.constant(np.random.default_rng(3).normal(size=(4, 6, 5, 8)), tf.float32)  # a loss with real gradients
    before = fused_bn.moving_mean.numpy().copy()
    results = []
    for layer in (keras_bn, fused_bn):
        xc = tf.cast(x, layer.compute_dtype)
        with tf.GradientTape() as tape:
            tape.watch(xc)
            y = layer(xc, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
        grads = tape.gradient(loss, [xc, layer.gamma, layer.beta])
        results.append([tf.cast(t, tf.float32).numpy() for t in (y, *grads, layer.moving_mean, layer.moving_variance)])
    assert results[1][0].dtype == np.float32 and fused_bn(tf.cast(x, fused_bn.compute_dtype), training=True).dtype == fused_bn.compute_dtype
    names = ("output", "input gradient", "gamma gradient", "beta gradient", "moving mean", "moving variance")
    for name, a, b in zip(names, *results):
        scale = max(1.0, float(np.abs(a).max()))
        assert np.abs(a - b).max() <= tol * scale, f"{precision} {name}: {np.abs(a - b).max()}"
    # the moving statistics moved (so the comparison above is not of untouched variables)
    assert np.abs(results[1][4] - before).min() > 0.01


def test_inference_is_keras_own_code_and_the_variables_are_keras_own():
    keras_bn, fused_bn = _pair("float32")
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 6, 5, 8)), tf.float32)
    np.testing.assert_array_equal(keras_bn(x, training=False).numpy(), fused_bn(x, training=False).numpy())
    assert [v.path.split("/")[-1] for v in fused_bn.weights] == [v.path.split("/")[-1] for v in keras_bn.weights]
    rebuilt = keras.layers.deserialize(keras.layers.serialize(fused_bn))
    assert type(rebuilt) is batchnorm.BatchNormalization and rebuilt.momentum == 0.9


def test_weights_files_of_keras_own_layer_and_of_this_one_load_into_each_other(tmp_path):
    """A .weights.h5 names each layer after its class: earlier runs' files (Keras' BatchNormalization)
    must load into today's model, and today's into a model built with Keras' layer."""

    def tiny(bn_class):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        x = bn_class(name="bn_a")(x)
        x = keras.layers.Conv2D(4, 3, name="conv2")(x)
        x = bn_class(name="bn_b")(x)
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))

    rng = np.random.default_rng(4)
    for source, target in ((keras.layers.BatchNormalization, batchnorm.BatchNormalization),
                           (batchnorm.BatchNormalization, keras.layers.BatchNormalization)):
        saved = tiny(source)
        saved.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in saved.get_weights()])
        path = str(tmp_path / f"{source.__module__.split('.')[0]}.weights.h5")
        saved.save_weights(path)
        loaded = tiny(target)
        loaded.load_weights(path)
        for a, b in zip(saved.get_weights(), loaded.get_weights()):
            np.testing.assert_array_equal(a, b)
