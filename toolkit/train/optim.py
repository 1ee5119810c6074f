"""The optimizer and its learning-rate schedule: linear warmup then cosine decay; sgd (momentum),
adam or adamw; weight decay on kernels only; a LossScaleOptimizer under fp16."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from toolkit.common.errors import BadInput
from toolkit.config import TrainConfig


@keras.saving.register_keras_serializable(package="toolkit")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `base` over `warmup_steps`, then cosine decay to 0 at `total_steps`."""

    def __init__(self, base: float, warmup_steps: int, total_steps: int):
        self.base = float(base)
        self.warmup_steps = self.asked_warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), self.warmup_steps + 1)
        # read by the compiled step, so that --time_budget can set the end once it has measured the speed
        self._warmup = tf.Variable(float(self.warmup_steps), trainable=False, name="schedule_warmup_steps")
        self._total = tf.Variable(float(self.total_steps), trainable=False, name="schedule_total_steps")

    def set_total_steps(self, total_steps: int) -> None:
        """End the cosine decay at `total_steps` (from the host, between steps). A warmup longer than
        a fifth of the new schedule is shortened to that fifth: the decay must have room."""
        self.warmup_steps = min(self.asked_warmup_steps, int(total_steps) // 5)
        self.total_steps = max(int(total_steps), self.warmup_steps + 1)
        self._warmup.assign(float(self.warmup_steps))
        self._total.assign(float(self.total_steps))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.cast(self._warmup, tf.float32)
        decay_steps = tf.cast(self._total, tf.float32) - warmup
        progress = tf.clip_by_value((step - warmup) / decay_steps, 0.0, 1.0)
        cosine = 0.5 * self.base * (1.0 + tf.cos(math.pi * progress))
        warm = self.base * (step + 1.0) / tf.maximum(warmup, 1.0)
        return tf.where(step < warmup, warm, cosine)

    def get_config(self):
        return {"base": self.base, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def make_optimizer(config: TrainConfig, steps_per_epoch: int, precision: str) -> keras.optimizers.Optimizer:
    """The optimizer with its warmup-cosine schedule; wrapped in a LossScaleOptimizer under fp16.

    Weight decay: decoupled for sgd and adamw (Keras applies it to the weights); adam gets none
    from the optimizer (the loop adds it as an L2 term instead, the textbook difference).
    """
    schedule = WarmupCosine(
        config.learning_rate,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        total_steps=config.epochs * steps_per_epoch,
    )
    wd = config.weight_decay or None
    if config.optimizer == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=config.momentum, weight_decay=wd)
    elif config.optimizer == "adam":
        opt = keras.optimizers.Adam(schedule)
    elif config.optimizer == "adamw":
        opt = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    else:
        raise BadInput(f"--optimizer: unknown optimizer {config.optimizer!r}")
    if precision == "fp16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def schedule_of(optimizer) -> WarmupCosine:
    """The learning-rate schedule of an optimizer made by make_optimizer (a LossScaleOptimizer's inner one's)."""
    return getattr(optimizer, "inner_optimizer", optimizer)._learning_rate  # Keras keeps the schedule object there


def decayed_variables(model: keras.Model) -> list:
    """Convolution and dense kernels; BatchNorm parameters and biases are not decayed."""
    return [v for v in model.trainable_variables if len(v.shape) > 1]


def build_optimizer_state(optimizer: keras.optimizers.Optimizer, model: keras.Model) -> None:
    """Create slot variables now (needed before XLA compiles a step and before restoring)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if inner.weight_decay:
        decayed = {id(v) for v in decayed_variables(model)}
        inner.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if id(v) not in decayed])
    optimizer.build(model.trainable_variables)
