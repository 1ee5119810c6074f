"""The SavedModel: what it holds, its two serving signatures, and functions that run it.

  serving_default   images: float32 [batch, S, S, 3] in [0, 255]  -> probabilities, logits
  serving_bytes     image_bytes: string [batch] (encoded JPEG/PNG) -> probabilities, logits
                    (decoded, centre-cropped and resized by `preprocess.eval_image`, the same
                    function the evaluation pipeline uses, so TF Serving clients send files as is)

The [-1, 1] scaling and the softmax are inside both. The graph needs nothing from this package to
load and run (`tf.saved_model.load` in a process that never imports toolkit).
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from toolkit.data import preprocess

BYTES_SIGNATURE = "serving_bytes"


class ServingModule(tf.Module):
    """What the SavedModel holds: the model's variables, the two serving functions, labels.txt.

    The Keras model itself is deliberately not an attribute: tracking it makes tf.saved_model.save
    walk and trace every layer (much slower; BENCHMARKS.md); the functions only need its variables.
    """

    def __init__(self, model: keras.Model, image_size: int, labels_path: str):
        super().__init__()
        self.model_variables = [v.value for v in model.variables]  # the tf.Variables the functions capture
        self.labels = tf.saved_model.Asset(labels_path)
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")

        @tf.function(input_signature=[spec])
        def serve_images(images):
            logits = model(preprocess.normalize(images), training=False)
            return {"probabilities": tf.nn.softmax(logits), "logits": logits}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(image_bytes):
            images = tf.map_fn(
                lambda b: preprocess.eval_image(b, image_size),
                image_bytes,
                fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
            )
            return serve_images(images)

        self.serve_images, self.serve_bytes = serve_images, serve_bytes

    def save(self, path: str) -> None:
        tf.saved_model.save(self, path, signatures={"serving_default": self.serve_images, BYTES_SIGNATURE: self.serve_bytes})


def keras_runner(model: keras.Model) -> Callable[[np.ndarray], tuple]:
    """(probabilities, logits) of the Keras model itself, run eagerly: the reference of the gate."""

    def run(images: np.ndarray) -> tuple:
        logits = model(preprocess.normalize(images), training=False)
        return tf.nn.softmax(logits).numpy(), logits.numpy()

    return run


def saved_model_runners(path: str) -> tuple:
    """(images -> outputs, list of encoded bytes -> outputs) through the reloaded SavedModel's signatures."""
    loaded = tf.saved_model.load(path)

    # both closures hold `loaded`: its signatures stop working once the restored object is collected
    def run_images(images: np.ndarray) -> tuple:
        return _outputs(loaded.signatures["serving_default"](images=tf.constant(images, tf.float32)))

    def run_bytes(encoded: list) -> tuple:
        return _outputs(loaded.signatures[BYTES_SIGNATURE](image_bytes=tf.constant(encoded, tf.string)))

    return run_images, run_bytes


def _outputs(result: dict) -> tuple:
    return result["probabilities"].numpy(), result["logits"].numpy()
