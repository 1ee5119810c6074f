"""BatchNormalization whose training step runs TensorFlow's fused kernel.

Keras 3's BatchNormalization computes a training step from separate ops: an upcast to float32,
the moments (Mean, SquaredDifference), then Sub/Mul/Add, and each of their gradients. On a CPU that
is more time than the convolutions of ResNet50V2's step (BENCHMARKS.md, "Where a training step's
time goes"). TensorFlow's FusedBatchNormV3 does the same arithmetic in one kernel each way
(oneDNN's where it is on), takes bf16/fp16 inputs with float32 statistics, and is what Keras 2 used.

Same layer, same variables, same checkpoints: only `call` in training mode on NHWC inputs changes.
Inference (evaluation, every export) is Keras' own code. The moving statistics follow Keras'
rule: the moving variance averages the batch's biased variance (the fused kernel returns the
unbiased one, n/(n-1) times larger, so it is scaled back). Anything unusual (a mask, renorm,
synchronized statistics, another axis or rank) goes to Keras' own call.
"""

from __future__ import annotations

import keras
import tensorflow as tf

FUSED_DTYPES = (tf.float32, tf.bfloat16, tf.float16)


@keras.saving.register_keras_serializable(package="toolkit")
class BatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization, with the training step through tf.compat.v1.nn.fused_batch_norm.

    The class keeps Keras' name: a `.weights.h5` file keys each layer by its class name (snake case,
    numbered), so weights saved with Keras' layer (earlier runs, --init_weights files) load into
    this one and the other way round.
    """

    def _fusable(self, inputs, training, mask) -> bool:
        return (bool(training) and self.trainable and mask is None and not self.renorm and not self.synchronized
                and self.scale and self.center and len(inputs.shape) == 4 and self.axis in (-1, 3, [3])
                and tf.as_dtype(inputs.dtype) in FUSED_DTYPES)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
            inputs, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32), epsilon=self.epsilon,
            data_format="NHWC", is_training=True)
        shape = tf.shape(inputs)
        count = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
        variance = unbiased * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + tf.cast(mean, self.moving_mean.dtype) * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum
                                    + tf.cast(variance, self.moving_variance.dtype) * (1.0 - momentum))
        return tf.cast(outputs, self.compute_dtype)
