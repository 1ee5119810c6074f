"""THE preprocessing: one set of pure functions shared by training, evaluation, export and inference.

Every path from encoded bytes to model input goes through here:
  eval / export bytes signature / batch inference:  eval_image(bytes) -> normalize
  training:                                          augment.train_image(bytes) -> normalize
(the training crop differs, the decode, resize and normalization are these functions).

Images between steps are float32 HxWx3 in [0, 255]; `normalize` maps them to the model's
[-1, 1] range. All functions are graph-safe (usable inside tf.data and tf.function) and
deterministic.
"""

from __future__ import annotations

import tensorflow as tf

# Evaluation keeps the central 87.5% of the shorter side (the classic ImageNet eval crop,
# 224 out of 256), so that training crops and evaluation views see objects at similar scales.
CENTER_CROP_FRACTION = 0.875
RESIZE_METHOD = "bilinear"  # named in the ONNX metadata, which tells clients how to resize


def normalize(images: tf.Tensor) -> tf.Tensor:
    """[0, 255] pixels (any real dtype) to float32 in [-1, 1], the ResNetV2 input range."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Resize to image_size x image_size, float32 [0, 255] out.

    Bilinear output is a convex combination of input pixels, so it never leaves [0, 255]: no clip.
    """
    # Cast first: TF's bilinear kernel is faster on float32 input than on uint8, with identical
    # output (BENCHMARKS.md, "Measurements behind code choices").
    return tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size], method=RESIZE_METHOD)


def center_crop_window(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """[offset_y, offset_x, size, size] of the central square evaluation crop."""
    shorter = tf.minimum(height, width)
    side = tf.maximum(1, tf.cast(tf.cast(shorter, tf.float32) * CENTER_CROP_FRACTION, tf.int32))
    return tf.stack([(height - side) // 2, (width - side) // 2, side, side])


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """Decode JPEG/PNG/GIF/BMP bytes to uint8 HxWx3 (first frame of an animation, RGB always)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_crop(encoded: tf.Tensor, window: tf.Tensor | None = None, window_fn=None) -> tf.Tensor:
    """Decode only the crop window where the format allows it (JPEG), else decode then crop.

    Give either a fixed `window` [y, x, h, w] or `window_fn(height, width) -> window`.
    """

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        w = window if window is not None else window_fn(shape[0], shape[1])
        return tf.image.decode_and_crop_jpeg(encoded, w, channels=3)

    def other():
        image = decode_rgb(encoded)
        shape = tf.shape(image)
        w = window if window is not None else window_fn(shape[0], shape[1])
        return tf.image.crop_to_bounding_box(image, w[0], w[1], w[2], w[3])

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image.set_shape([None, None, 3])
    return image


# A JPEG whose evaluation crop is much larger than the target is decoded at 1/2, 1/4 or 1/8 of its
# size (libjpeg's DCT scaling: less work than a full decode), the largest that still leaves the crop
# SCALED_DECODE_MARGIN times the target side, so the bilinear resize still shrinks it as it shrinks
# a photo of that size. Smaller ones decode in full, exactly as before.
SCALED_DECODE_RATIOS = (2, 4, 8)
SCALED_DECODE_MARGIN = 2


def scaled_decode_ratio(crop_side: tf.Tensor, image_size: int) -> tf.Tensor:
    """0, 1, 2 or 3: decode at 1/1, 1/2, 1/4 or 1/8 (the largest keeping crop_side / ratio >= margin * image_size)."""
    return tf.add_n([tf.cast(crop_side >= r * SCALED_DECODE_MARGIN * image_size, tf.int32) for r in SCALED_DECODE_RATIOS])


def _decode_crop_scaled(encoded: tf.Tensor, ratio: int) -> tf.Tensor:
    """The central evaluation crop of a JPEG decoded at 1/ratio of its size (its window on the smaller image)."""
    image = tf.io.decode_jpeg(encoded, channels=3, ratio=ratio)
    shape = tf.shape(image)
    w = center_crop_window(shape[0], shape[1])
    return tf.image.crop_to_bounding_box(image, w[0], w[1], w[2], w[3])


def eval_image(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded image bytes -> float32 [0, 255] image_size^2 x 3: center crop, then resize.

    The evaluation view, used by the eval pipeline, the SavedModel's bytes signature and batch
    inference alike. A JPEG much larger than the target is decoded at a reduced scale first
    (SCALED_DECODE_RATIOS): the crop then covers the same part of the photo, averaged down by the
    decoder instead of sampled by the resize (BENCHMARKS.md: speed and accuracy of both).
    """

    def jpeg():  # one level of branches: each tf.cond / switch_case level costs tf.data about 0.1 ms an image
        shape = tf.image.extract_jpeg_shape(encoded)
        window = center_crop_window(shape[0], shape[1])
        branches = [lambda: tf.image.decode_and_crop_jpeg(encoded, window, channels=3)]  # decode_crop's JPEG path
        branches += [lambda r=r: _decode_crop_scaled(encoded, r) for r in SCALED_DECODE_RATIOS]
        return tf.switch_case(scaled_decode_ratio(window[2], image_size), branches)

    def other():
        return decode_crop(encoded, window_fn=center_crop_window)

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image.set_shape([None, None, 3])
    return resize(image, image_size)


def eval_input(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """eval_image, normalized for the model: what the network sees at evaluation."""
    return normalize(eval_image(encoded, image_size))
