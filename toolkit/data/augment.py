"""Training-only augmentation: random-resized crop (decoded crop only), horizontal flip and,
when asked, RandAugment (toolkit.data.randaugment) on the resized image.

Randomness is stateless and seeded per element, so an epoch's images are a pure function of
(seed, epoch, position): the same on every run, whatever the thread scheduling, and reproducible
after a resume that skips the batches already trained on.
"""

from __future__ import annotations

import tensorflow as tf

from typing import Optional, Tuple

from toolkit.data import preprocess, randaugment as randaugment_lib

ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)


def random_crop_window(height, width, seed, min_scale: float) -> tf.Tensor:
    """[offset_y, offset_x, h, w] of an Inception-style random crop (area and aspect jittered)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_size=tf.stack([height, width, 3]),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=(min_scale, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def train_image(
    encoded: tf.Tensor,
    image_size: int,
    seed: tf.Tensor,
    min_scale: float = 0.08,
    randaugment: Optional[Tuple[int, int]] = None,
) -> tf.Tensor:
    """Encoded bytes -> augmented float32 [0, 255] image_size^2 x 3.

    Args:
      encoded: the image file's bytes (JPEG crops are decoded without the rest).
      image_size: the square output side.
      seed: shape-[2] integer tensor; independent seeds are split from it for the crop, the flip
        and RandAugment (the crop and flip seeds are the same with or without RandAugment).
      min_scale: smallest area fraction of the random-resized crop.
      randaugment: (N ops, magnitude M) as `toolkit.config.parse_randaugment` returns it, applied
        after the resize; None: off.

    Returns:
      The float32 [0, 255] image, not yet normalized.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3 if randaugment else 2)
    image = preprocess.decode_crop(
        encoded,
        window_fn=lambda h, w: random_crop_window(h, w, seeds[0], min_scale),
    )
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    image = preprocess.resize(image, image_size)
    if randaugment:
        num_ops, magnitude = randaugment
        image = randaugment_lib.rand_augment(image, seeds[2], num_ops, magnitude)
    return image
