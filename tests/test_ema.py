"""toolkit.train.ema: the moving average of the weights, against hand-computed values."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from toolkit.train import ema


def _dense(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    x = keras.layers.BatchNormalization()(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


@pytest.mark.parametrize("step, decay, expected", [(0, 0.999, 0.1), (10, 0.999, 0.55), (10_000, 0.999, 0.999),
                                                   (90, 0.5, 0.5)])
def test_the_decay_warms_up_as_one_plus_step_over_ten_plus_step(step, decay, expected):
    assert float(ema.warmed_up_decay(decay, step)) == pytest.approx(expected)


def test_update_blends_every_weight_batchnorm_statistics_included():
    model, average_model = _dense(0), _dense(1)
    average = ema.WeightAverage(model, average_model, decay=0.9)
    start = [w.copy() for w in model.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(average_model.get_weights(), start))  # starts at the weights
    moved = [w + 1.0 for w in start]  # kernels, biases, gamma, beta, moving mean and variance
    model.set_weights(moved)
    tf.function(lambda: average.update(tf.constant(50, tf.int64)))()
    d = min(0.9, 51 / 60)
    for got, old, new in zip(average_model.get_weights(), start, moved):
        np.testing.assert_allclose(got, d * old + (1 - d) * new, rtol=1e-6)
    assert len(average_model.get_weights()) == 6  # moving_mean and moving_variance were averaged too


def test_a_model_of_another_shape_is_refused():
    inputs = keras.Input((3,))
    other = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="built like"):
        ema.WeightAverage(_dense(0), other, 0.9)
