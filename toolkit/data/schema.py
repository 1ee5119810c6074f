"""The TFRecord schema: the ImageNet-style feature names used across the TensorFlow ecosystem.

One `tf.train.Example` per image:
  image/encoded      bytes   the encoded image (JPEG)
  image/format       bytes   b"JPEG"
  image/class/label  int64   the class index (0-based in our shards; other tools' shards may
                             start at 1, see DataConfig.label_offset)
  image/class/text   bytes   the class name
  image/height       int64
  image/width        int64
  image/filename     bytes   the source file, relative to the source root
"""

from __future__ import annotations

import tensorflow as tf

ENCODED = "image/encoded"
FORMAT = "image/format"
LABEL = "image/class/label"
TEXT = "image/class/text"
HEIGHT = "image/height"
WIDTH = "image/width"
FILENAME = "image/filename"

FEATURES = {
    ENCODED: tf.io.FixedLenFeature([], tf.string),
    FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="JPEG"),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    TEXT: tf.io.FixedLenFeature([], tf.string, default_value=""),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def _bytes(v: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


def encode_example(
    encoded: bytes,
    label: int,
    text: str,
    height: int,
    width: int,
    filename: str = "",
    image_format: str = "JPEG",
) -> bytes:
    """One serialized tf.train.Example in the schema above.

    Args:
      encoded: the encoded image bytes.
      label: the class index; text its name.
      height, width: the image's size in pixels.
      filename: where the image came from.
      image_format: "JPEG", "PNG", ...

    Returns:
      The serialized Example.
    """
    feature = {
        ENCODED: _bytes(encoded),
        FORMAT: _bytes(image_format.encode()),
        LABEL: _int(label),
        TEXT: _bytes(text.encode()),
        HEIGHT: _int(height),
        WIDTH: _int(width),
        FILENAME: _bytes(filename.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_example(serialized: tf.Tensor) -> dict:
    """Parse one serialized Example (graph-safe, for tf.data) into a dict of tensors."""
    return tf.io.parse_single_example(serialized, FEATURES)
