"""TF Serving warm-up requests: saved_model/assets.extra/tf_serving_warmup_requests.

TF Serving replays the PredictionLog records of this TFRecord file when it loads the model, so the
first user does not pay for the graph's first run (thread pools, oneDNN primitive caches, the
image decoder). Written with the `tensorflow-serving-api` protos:
  one PredictRequest per real validation image through serving_bytes (the encoded file, as a
  client sends it: batch 1, the commonest request), then
  one PredictRequest through serving_default with the same images decoded (one batch).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from toolkit.common import atomic
from toolkit import layout

WARMUP_IMAGES = 4  # real validation images in the requests


def warmup_path(saved_model_dir: str) -> str:
    return os.path.join(saved_model_dir, layout.WARMUP_DIR, layout.WARMUP_FILE)


def requests(images: np.ndarray, encoded: Sequence[bytes], model_name: str = "model") -> list:
    """The PredictionLog protos: one serving_bytes request per encoded image, one serving_default batch.

    Args:
      images: float32 NHWC [0, 255] images (the encoded ones through the evaluation preprocessing).
      encoded: the encoded JPEG/PNG files.
      model_name: the model_spec name (TF Serving ignores it during warm-up).
    """
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    from toolkit.infer.loaders import BYTES_SIGNATURE

    def log(signature: str, name: str, tensor) -> prediction_log_pb2.PredictionLog:
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
        request.inputs[name].CopyFrom(tensor)
        return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))

    logs = [log(BYTES_SIGNATURE, "image_bytes", tf.make_tensor_proto([data], dtype=tf.string)) for data in encoded]
    if len(images):
        logs.append(log("serving_default", "images", tf.make_tensor_proto(np.asarray(images, np.float32))))
    return logs


def write(saved_model_dir: str, images: np.ndarray, encoded: Sequence[bytes], model_name: str = "model") -> str:
    """Write the warm-up file into the SavedModel (atomically); returns its path.

    Raises:
      ValueError: no images (warm-up requests must be real ones).
    """
    import tensorflow as tf

    if not len(encoded):
        raise ValueError("TF Serving warm-up: no validation images to build requests from")
    logs = requests(images, encoded, model_name)
    path = warmup_path(saved_model_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def write_records(tmp: str) -> None:
        with tf.io.TFRecordWriter(tmp) as writer:
            for entry in logs:
                writer.write(entry.SerializeToString())

    atomic.write_with(path, write_records)
    return path


def read(path: str) -> list:
    """The PredictionLog protos of a warm-up file, in order."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
