"""The SavedModel: what it holds and its two serving signatures (toolkit.infer.loaders runs it).

  serving_default   images: float32 [batch, S, S, 3] in [0, 255]  -> probabilities, logits
  serving_bytes     image_bytes: string [batch] (encoded JPEG/PNG) -> probabilities, logits
                    (decoded, centre-cropped and resized by `preprocess.eval_image`, the same
                    function the evaluation pipeline uses, so TF Serving clients send files as is)

The [-1, 1] scaling and the softmax are inside both. The graph needs nothing from this package to
load and run (`tf.saved_model.load` in a process that never imports toolkit).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from toolkit.data import preprocess
from toolkit.infer.loaders import BYTES_SIGNATURE, SERVING_SIGNATURE



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
        tf.saved_model.save(self, path, signatures={SERVING_SIGNATURE: self.serve_images, BYTES_SIGNATURE: self.serve_bytes})
