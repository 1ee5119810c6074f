"""Mixup and CutMix of whole per-replica batches, with soft labels, stateless.

Per batch, as timm's Mixup does in its "batch" mode: with probability `prob` the batch is mixed,
else left alone (its labels still become one-hot floats); with both alphas set, CutMix is chosen
with probability `switch_prob`, else mixup. Each image is mixed with its partner in the batch
reversed (timm's `flip(0)`: image i with image b-1-i; in an odd batch the middle image meets
itself), one weight `lam` for the whole batch:

  mixup:  lam ~ Beta(a, a) (two stateless gammas), images = lam x + (1 - lam) x[::-1]
  CutMix: lam ~ Beta(a, a); a box of area (1 - lam) H W (sides floor(H sqrt(1 - lam)) and
          floor(W sqrt(1 - lam))) centred at a uniform pixel, clipped to the image, is pasted
          from the partner; lam becomes 1 - (clipped box area) / (H W)
  labels = lam y + (1 - lam) y[::-1], y the one-hot labels (label smoothing is the loss's job)

Where this differs from timm: the box keeps its full side before clipping (timm's
`cy +- cut_h // 2` loses a pixel on odd sides). The seed of a batch is folded from (seed, epoch,
batch index in the epoch, input pipeline), so a resumed run that skips batches mixes the rest
exactly as the uninterrupted run did.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import tensorflow as tf

from toolkit.common.errors import BadInput

MIX_SALT = 0x6D6978  # "mix": keeps batch seeds apart from the shuffle and per-image seeds


@dataclasses.dataclass(frozen=True)
class MixSettings:
    """What mixing a batch needs; `from_config` builds it from a DataConfig."""

    num_classes: int
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5


def from_config(config, num_classes: int) -> Optional[MixSettings]:
    """MixSettings from a DataConfig, or None when both alphas are 0 (mixing off).

    Raises ValueError when mixing is on and num_classes is not positive (soft labels need it).
    """
    if not (config.mixup_alpha > 0 or config.cutmix_alpha > 0):
        return None
    if num_classes <= 0:
        raise BadInput(f"--mixup_alpha/--cutmix_alpha: mixing makes soft labels and needs the number of classes, "
                         f"got num_classes={num_classes}")
    return MixSettings(num_classes, float(config.mixup_alpha), float(config.cutmix_alpha),
                       float(config.mix_prob), float(config.mix_switch_prob))


def batch_seed(seed, epoch, batch_index, pipeline_id) -> tf.Tensor:
    """The shape-[2] stateless seed of one batch: a pure function of its four coordinates."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.constant(MIX_SALT, tf.int64)])
    for data in (epoch, batch_index, pipeline_id):
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(data, tf.int64))
    return key


def sample_beta(seed: tf.Tensor, alpha: float) -> tf.Tensor:
    """lam ~ Beta(alpha, alpha) as g1 / (g1 + g2) of two stateless Gamma(alpha) draws."""
    g = tf.random.stateless_gamma([2], seed, alpha=alpha, dtype=tf.float32)
    total = g[0] + g[1]
    # both gammas can underflow to 0 for a tiny alpha, where Beta sits at 0 or 1 anyway
    return tf.where(total > 0, g[0] / tf.maximum(total, 1e-30), 1.0)


def _mix_labels(labels: tf.Tensor, lam) -> tf.Tensor:
    return lam * labels + (1.0 - lam) * tf.reverse(labels, [0])


def mixup(images: tf.Tensor, labels: tf.Tensor, lam) -> tuple:
    """Blend each image and one-hot label with its partner (the batch reversed) by weight lam."""
    lam = tf.cast(lam, images.dtype)
    return lam * images + (1.0 - lam) * tf.reverse(images, [0]), _mix_labels(labels, lam)


def cutmix_box(height, width, lam, center_y, center_x) -> tf.Tensor:
    """[top, bottom, left, right) of the CutMix box of area (1 - lam), clipped to the image."""
    ratio = tf.sqrt(1.0 - tf.cast(lam, tf.float32))
    cut_h = tf.cast(tf.cast(height, tf.float32) * ratio, tf.int32)
    cut_w = tf.cast(tf.cast(width, tf.float32) * ratio, tf.int32)
    top, left = center_y - cut_h // 2, center_x - cut_w // 2
    return tf.stack([tf.clip_by_value(top, 0, height), tf.clip_by_value(top + cut_h, 0, height),
                     tf.clip_by_value(left, 0, width), tf.clip_by_value(left + cut_w, 0, width)])


def cutmix(images: tf.Tensor, labels: tf.Tensor, box: tf.Tensor) -> tuple:
    """Paste box [top, bottom, left, right) of each partner image; labels weighted by area share.

    Returns:
      (images, labels, lam) with lam = 1 - box area / image area, the weight of the own label.
    """
    shape = tf.shape(images)
    rows, cols = tf.range(shape[1]), tf.range(shape[2])
    in_rows = (rows >= box[0]) & (rows < box[1])
    in_cols = (cols >= box[2]) & (cols < box[3])
    mask = in_rows[:, None] & in_cols[None, :]
    mixed = tf.where(mask[None, :, :, None], tf.reverse(images, [0]), images)
    area = tf.cast((box[1] - box[0]) * (box[3] - box[2]), tf.float32)
    lam = 1.0 - area / tf.cast(shape[1] * shape[2], tf.float32)
    return mixed, _mix_labels(labels, lam), lam


def mix_batch(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, settings: MixSettings) -> tuple:
    """Mixup, CutMix or neither for one batch, drawn from `seed`.

    Args:
      images: float [b, h, w, c].
      labels: integer class ids [b].
      seed: shape-[2] stateless seed of this batch (`batch_seed`).
      settings: the alphas and probabilities.

    Returns:
      (images, float32 soft labels [b, num_classes]) whose label rows sum to 1.
    """
    onehot = tf.one_hot(labels, settings.num_classes, dtype=tf.float32)
    apply_seed, switch_seed, beta_seed, y_seed, x_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5))
    applies = tf.random.stateless_uniform([], apply_seed) < settings.prob
    if settings.mixup_alpha > 0 and settings.cutmix_alpha > 0:
        use_cutmix = tf.random.stateless_uniform([], switch_seed) < settings.switch_prob
    else:
        use_cutmix = tf.constant(settings.cutmix_alpha > 0)
    branch = tf.where(applies, tf.where(use_cutmix, 2, 1), 0)

    def do_mixup():
        return mixup(images, onehot, sample_beta(beta_seed, settings.mixup_alpha or 1.0))

    def do_cutmix():
        shape = tf.shape(images)
        center_y = tf.random.stateless_uniform([], y_seed, minval=0, maxval=shape[1], dtype=tf.int32)
        center_x = tf.random.stateless_uniform([], x_seed, minval=0, maxval=shape[2], dtype=tf.int32)
        lam = sample_beta(beta_seed, settings.cutmix_alpha or 1.0)
        return cutmix(images, onehot, cutmix_box(shape[1], shape[2], lam, center_y, center_x))[:2]

    mixed, soft = tf.switch_case(branch, [lambda: (images, onehot), do_mixup, do_cutmix])
    mixed.set_shape(images.shape)
    soft.set_shape(onehot.shape)
    return mixed, soft
