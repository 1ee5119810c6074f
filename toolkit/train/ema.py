"""An exponential moving average (EMA) of a model's weights, kept in a second model of the same shape.

Every weight is averaged, BatchNorm's moving statistics included (as timm's ModelEmaV2 does), so
the averaged model evaluates with statistics that belong to its own weights. The decay warms up as
min(decay, (1 + step) / (10 + step)) (timm and TF Model Garden): early in training the average
follows the weights closely instead of staying near the random start.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def warmed_up_decay(decay: float, step) -> tf.Tensor:
    """The decay used after optimizer step `step` (0-based count of applied steps)."""
    step = tf.cast(step, tf.float32)
    return tf.minimum(tf.constant(decay, tf.float32), (1.0 + step) / (10.0 + step))


class WeightAverage:
    """`model`'s weights averaged into `average` (a model built like it, in the same strategy scope).

    `update(step)` runs in cross-replica context (outside strategy.run, inside the distributed
    step): every replica's copy of the average gets the same value, computed from the first
    replica's weights, which all replicas share after the all-reduced update. BatchNorm's moving
    statistics differ per replica until synchronized: average them with the model's (see
    loop.Trainer.sync_batchnorm_statistics), which include the average's.
    """

    def __init__(self, model: keras.Model, average: keras.Model, decay: float):
        if len(model.weights) != len(average.weights):
            raise ValueError("the EMA model must be built like the model it averages")
        self.model, self.average, self.decay = model, average, float(decay)
        average.set_weights(model.get_weights())

    def update(self, step) -> None:
        decay = warmed_up_decay(self.decay, step)
        for avg, w in zip(self.average.weights, self.model.weights):
            value = tf.cast(w.value if hasattr(w, "value") else w, avg.dtype)
            avg.assign(decay * avg + (1.0 - decay) * value)
