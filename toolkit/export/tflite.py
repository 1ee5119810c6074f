"""TFLite (LiteRT) artifacts: converted from the exported SavedModel, run in the LiteRT interpreter.

Keras 3 models do not convert through `TFLiteConverter.from_keras_model` (keras-team/keras#18430,
tensorflow/tensorflow#63867); the export converts its own SavedModel's serving_default signature
instead, so the .tflite file starts where the SavedModel and ONNX graphs start: float32 NHWC images
in [0, 255] (any batch), the [-1, 1] scaling, the network and the softmax inside, outputs
`probabilities` and `logits` under the signature `serving_default`.
The int8 model keeps float32 input and outputs (clients change nothing); weights and activations
inside are int8, calibrated on the same training images as the ONNX int8 model.
The interpreter is the `ai_edge_litert` package's (TensorFlow's own tf.lite.Interpreter is
deprecated), started by toolkit.infer.loaders.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Iterable

import numpy as np

from toolkit.common.batches import nonempty_batches
from toolkit.common import atomic
from toolkit.infer import loaders as runtimes

SIGNATURE = runtimes.SERVING_SIGNATURE
INPUT_NAME = "images"


def convert(saved_model_dir: str, out_path: str, calibration_batches: Iterable[np.ndarray] | None = None) -> int:
    """Write the .tflite model of a SavedModel's serving_default signature; returns its size in bytes.

    Args:
      saved_model_dir: the export's SavedModel (serving_default: images -> probabilities, logits).
      out_path: the .tflite file to write (atomically).
      calibration_batches: float32 NHWC [0, 255] images (training images through eval_image): given,
        the model is quantized to int8 (float32 input and outputs); None: float32.

    Raises:
      ValueError: calibration was asked for with no images to calibrate on.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE])
    if calibration_batches is not None:
        batches = nonempty_batches(calibration_batches)
        first = next(batches, None)
        if first is None:  # the converter would quantize with ranges from nothing
            raise ValueError("int8 calibration: no images to calibrate on")

        def representative():
            for batch in itertools.chain([first], batches):
                yield {INPUT_NAME: np.asarray(batch, np.float32)}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
    with warnings.catch_warnings():  # the converter calibrates in tf.lite.Interpreter, which warns that it is deprecated
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        data = converter.convert()
    atomic.write_bytes(out_path, data)
    return len(data)
