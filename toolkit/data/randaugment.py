"""RandAugment (Cubuk et al. 2020) in TensorFlow ops, for training images inside tf.data.

The op set and magnitude mapping are timm's "increasing" RandAugment (`rand-mM-nN-inc1`): every
op gets stronger as M grows on the 0-10 scale.

  op                      argument at magnitude M (random sign where marked +-)
  AutoContrast, Equalize, Invert   none
  Rotate                  +- 30 * M/10 degrees, about the image centre
  Posterize               keep 4 - int(4 * M/10) bits
  Solarize                invert pixels >= 256 - int(256 * M/10)
  SolarizeAdd             add int(110 * M/10) to pixels < 128
  Color, Contrast, Brightness, Sharpness   blend factor 1 +- 0.9 * M/10
  ShearX, ShearY          +- 0.3 * M/10
  TranslateX, TranslateY  +- 0.45 * M/10 of the image side

Each of the N ops is drawn uniformly (with replacement) and applied with probability 0.5, as
timm does. Where this differs from timm: no magnitude noise (timm's mstd), bilinear resampling
only (timm picks bilinear or bicubic at random), and geometric ops fill with grey 128 (TF Model
Garden's value; timm fills with the ImageNet mean). Ops take and return float32 [0, 255] HxWx3
images; pixel conventions follow PIL (ImageOps, ImageEnhance, Image.transform) so the tests can
compare with it. Randomness is stateless: the result is a pure function of (image, seed).
"""

from __future__ import annotations

import math

import tensorflow as tf

FILL = 128.0  # what geometric ops show where no source pixel exists
APPLY_PROB = 0.5
MAX_LEVEL = 10.0
# PIL's "L" conversion (ITU-R 601-2 luma), the grey of Color and Contrast
LUMA = (0.299, 0.587, 0.114)


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
    """PIL's ImageEnhance: degenerate + factor * (image - degenerate), clipped to [0, 255]."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _gray(image: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(image * tf.constant(LUMA, tf.float32), axis=-1, keepdims=True)


def _bytes(image: tf.Tensor) -> tf.Tensor:
    """Integer pixel values 0-255 (int32) of a float image, as a uint8 PIL image would hold."""
    return tf.cast(tf.clip_by_value(tf.floor(image), 0.0, 255.0), tf.int32)


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
    """Stretch each channel so its darkest pixel becomes 0 and its brightest 255."""
    lo = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    stretched = (image - lo) * (255.0 / tf.maximum(hi - lo, 1e-6))
    return tf.clip_by_value(tf.where(hi > lo, stretched, image), 0.0, 255.0)


def equalize(image: tf.Tensor) -> tf.Tensor:
    """PIL's ImageOps.equalize per channel: a lookup table from the cumulative histogram."""
    pixels = _bytes(image)
    channels = tf.range(3, dtype=tf.int32)
    hist = tf.math.bincount(tf.reshape(pixels + channels * 256, [-1]), minlength=768, maxlength=768)
    hist = tf.reshape(hist, [3, 256])
    # the count of each channel's last non-empty bin, which PIL leaves out of the step
    last = tf.reduce_max(tf.where(hist > 0, tf.range(256)[None, :], -1), axis=1)
    last_count = tf.gather(hist, last, batch_dims=1)
    step = (tf.reduce_sum(hist, axis=1) - last_count) // 255
    safe_step = tf.maximum(step, 1)[:, None]
    lut = (tf.cumsum(hist, axis=1, exclusive=True) + safe_step // 2) // safe_step
    lut = tf.where(step[:, None] > 0, tf.minimum(lut, 255), tf.range(256)[None, :])
    lut_per_pixel = tf.gather(tf.transpose(lut), pixels)  # [h, w, 3 (pixel's channel), 3 (lut channel)]
    return tf.cast(tf.linalg.diag_part(lut_per_pixel), tf.float32)


def invert(image: tf.Tensor) -> tf.Tensor:
    return 255.0 - image


def posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
    """Keep the `bits` most significant bits of each (integer) pixel value."""
    shift = 8 - int(bits)
    if shift <= 0:
        return image
    return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(_bytes(image), shift), shift), tf.float32)


def solarize(image: tf.Tensor, threshold) -> tf.Tensor:
    """Invert every pixel value at or above `threshold`."""
    return tf.where(image < threshold, image, 255.0 - image)


def solarize_add(image: tf.Tensor, addition, threshold=128.0) -> tf.Tensor:
    """Add `addition` to every pixel value below `threshold` (saturating at 255)."""
    return tf.where(image < threshold, tf.minimum(image + addition, 255.0), image)


def color(image: tf.Tensor, factor) -> tf.Tensor:
    """Saturation: 0 gives the grey image, 1 the image, more oversaturates."""
    return _blend(tf.tile(_gray(image), [1, 1, 3]), image, factor)


def contrast(image: tf.Tensor, factor) -> tf.Tensor:
    """0 gives a uniform image at the mean grey level, 1 the image."""
    return _blend(tf.reduce_mean(_gray(image)), image, factor)


def brightness(image: tf.Tensor, factor) -> tf.Tensor:
    """0 gives black, 1 the image."""
    return _blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor) -> tf.Tensor:
    """Blend with PIL's SMOOTH filter (3x3, centre weight 5 of 13); border pixels stay as they are."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, strides=[1, 1, 1, 1], padding="VALID")[0]
    inside = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(inside > 0, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return _blend(degenerate, image, factor)


def affine(image: tf.Tensor, matrix) -> tf.Tensor:
    """PIL's Image.transform(size, AFFINE, matrix, BILINEAR, fillcolor=128) in TensorFlow.

    `matrix` (a, b, c, d, e, f) maps an output point (x, y) to the input point (a x + b y + c,
    d x + e y + f) in PIL's coordinates, where pixel i spans [i, i + 1). TensorFlow's projective
    transform samples at pixel centres i, so the offsets move by half a pixel.
    """
    a, b, c, d, e, f = [tf.cast(v, tf.float32) for v in matrix]
    transform = tf.stack([a, b, c + 0.5 * (a + b - 1.0), d, e, f + 0.5 * (d + e - 1.0), 0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
        fill_value=FILL, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    out.set_shape(image.shape)
    return out


def rotate(image: tf.Tensor, degrees) -> tf.Tensor:
    """PIL's Image.rotate: counter-clockwise about the image centre, same size, grey fill."""
    angle = -tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    size = tf.cast(tf.shape(image), tf.float32)
    cy, cx = size[0] / 2.0, size[1] / 2.0
    return affine(image, (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy))


def shear_x(image: tf.Tensor, factor) -> tf.Tensor:
    return affine(image, (1.0, factor, 0.0, 0.0, 1.0, 0.0))


def shear_y(image: tf.Tensor, factor) -> tf.Tensor:
    return affine(image, (1.0, 0.0, 0.0, factor, 1.0, 0.0))


def translate_x(image: tf.Tensor, pixels) -> tf.Tensor:
    return affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0))


def translate_y(image: tf.Tensor, pixels) -> tf.Tensor:
    return affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels))


def _side(image: tf.Tensor, axis: int) -> tf.Tensor:
    return tf.cast(tf.shape(image)[axis], tf.float32)


# name -> fn(image, level, sign): level is M / 10 (a Python float), sign a float tensor +-1
OPS = (
    ("AutoContrast", lambda x, level, sign: auto_contrast(x)),
    ("Equalize", lambda x, level, sign: equalize(x)),
    ("Invert", lambda x, level, sign: invert(x)),
    ("Rotate", lambda x, level, sign: rotate(x, sign * 30.0 * level)),
    ("Posterize", lambda x, level, sign: posterize(x, 4 - int(4 * level))),
    ("Solarize", lambda x, level, sign: solarize(x, float(256 - int(256 * level)))),
    ("SolarizeAdd", lambda x, level, sign: solarize_add(x, float(int(110 * level)))),
    ("Color", lambda x, level, sign: color(x, 1.0 + sign * 0.9 * level)),
    ("Contrast", lambda x, level, sign: contrast(x, 1.0 + sign * 0.9 * level)),
    ("Brightness", lambda x, level, sign: brightness(x, 1.0 + sign * 0.9 * level)),
    ("Sharpness", lambda x, level, sign: sharpness(x, 1.0 + sign * 0.9 * level)),
    ("ShearX", lambda x, level, sign: shear_x(x, sign * 0.3 * level)),
    ("ShearY", lambda x, level, sign: shear_y(x, sign * 0.3 * level)),
    ("TranslateX", lambda x, level, sign: translate_x(x, sign * 0.45 * level * _side(x, 1))),
    ("TranslateY", lambda x, level, sign: translate_y(x, sign * 0.45 * level * _side(x, 0))),
)
OP_NAMES = tuple(name for name, _ in OPS)


def apply_op(image: tf.Tensor, name: str, magnitude: float, sign=1.0) -> tf.Tensor:
    """One named op of OPS at `magnitude` (0-10) with the given sign (+1 or -1)."""
    fn = dict(OPS)[name]
    return fn(tf.cast(image, tf.float32), float(magnitude) / MAX_LEVEL, tf.constant(sign, tf.float32))


def rand_augment(image: tf.Tensor, seed: tf.Tensor, num_ops: int, magnitude: float) -> tf.Tensor:
    """N random ops of OPS at magnitude M, each applied with probability APPLY_PROB.

    Args:
      image: float32 [0, 255] HxWx3.
      seed: shape-[2] integer tensor; the ops, whether each applies and its sign follow from it.
      num_ops: N, the ops drawn per image (uniformly, with replacement).
      magnitude: M on the 0-10 scale.

    Returns:
      The augmented float32 [0, 255] image, same shape.
    """
    image = tf.cast(image, tf.float32)
    shape = image.shape
    level = float(magnitude) / MAX_LEVEL
    for op_seed in tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num_ops)):
        choice_seed, apply_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(op_seed, num=3))
        index = tf.random.stateless_uniform([], choice_seed, minval=0, maxval=len(OPS), dtype=tf.int32)
        applies = tf.random.stateless_uniform([], apply_seed) < APPLY_PROB
        sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
        index = tf.where(applies, index, len(OPS))  # the last branch: leave the image as it is
        branches = [lambda fn=fn, x=image: fn(x, level, sign) for _, fn in OPS] + [lambda x=image: x]
        image = tf.switch_case(index, branches)
        image.set_shape(shape)
    return image
