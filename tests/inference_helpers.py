"""A tiny real export (ResNet50V2, 32 px, classes ants and bees) and real photos for the inference tests.

The export is built once per test process (tf2onnx takes 20-60 s here) and shared by
test_batch_infer.py and test_evaluate.py: module-scoped fixtures in both call `tiny_export`,
which caches its result for the session. The photos are read from ../shared/data/hymenoptera in
place; tests that need a folder of them write copies into pytest temp dirs, never into the repo.
"""

from __future__ import annotations

import os
import shutil
import types

import keras
import numpy as np
import tensorflow as tf

from conftest import HYMENOPTERA, ROOT, SHARED_DATA, require_data  # noqa: F401  (one definition, in conftest)
from toolkit import layout
from toolkit.export import run as exporting
from toolkit.config import Config, ExportConfig
from toolkit.data import preprocess, schema, shards
from toolkit.models import resnet_v2

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
VAL = os.path.join(HYMENOPTERA, "val")
CLASSES = ["ants", "bees"]
SIZE = 32

_CACHE: dict = {}


def photos(class_name: str, count: int, start: int = 0) -> list:
    """`count` real validation photos of a class, in name order (skips if the data is absent, fails under CI)."""
    folder = require_data(os.path.join(VAL, class_name), f"real photos of {class_name}")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".jpg"))
    return [os.path.join(folder, n) for n in names[start : start + count]]


def copy_into(folder: str, paths: list, names: list | None = None) -> list:
    os.makedirs(folder, exist_ok=True)
    out = []
    for i, p in enumerate(paths):
        target = os.path.join(folder, names[i] if names else os.path.basename(p))
        shutil.copyfile(p, target)
        out.append(target)
    return out


def write_shard(path: str, labelled: list) -> str:
    """A TFRecord file in the toolkit schema from [(photo path, label)]."""
    records = []
    for p, label in labelled:
        data = open(p, "rb").read()
        h, w = tf.image.extract_jpeg_shape(data).numpy()[:2]
        records.append(schema.encode_example(data, label, "", int(h), int(w), os.path.basename(p)))
    shards.write_shard(path, records)
    return path


def spread_predictions(model, paths: list) -> None:
    """Rescale the random head so that predictions on real photos vary (about half each class, probabilities
    far from 0.5): a fresh network gives every photo nearly the same output, which would let a test
    pass with images mixed up."""
    images = tf.stack([preprocess.eval_input(open(p, "rb").read(), SIZE) for p in paths])
    features = keras.Model(model.input, model.get_layer("predictions").input)(images, training=False).numpy()
    dense = model.get_layer("predictions")
    kernel, bias = (w.numpy() for w in dense.weights)
    margin = features @ (kernel[:, 1] - kernel[:, 0])
    scale = 2.0 / max(float(margin.std()), 1e-12)
    kernel = kernel * scale
    bias = np.array([float(np.median(margin)) * scale, 0.0], np.float32)  # logit(1) - logit(0) centred on 0
    dense.set_weights([kernel, bias])


def tiny_export(tmp_path_factory) -> types.SimpleNamespace:
    """model_dir + export (with model.tflite and a Triton repository in triton/) of a random-weight
    ResNet50V2 at 32 px over CLASSES, built once per session."""
    if "export" in _CACHE:
        return _CACHE["export"]
    root = tmp_path_factory.mktemp("tiny_export")
    data_dir, model_dir = str(root / "shards"), str(root / "run")
    os.makedirs(data_dir)
    labelled = [(p, 0) for p in photos("ants", 4)] + [(p, 1) for p in photos("bees", 4)]
    write_shard(os.path.join(data_dir, "val-00000-of-00001.tfrecord"), labelled)
    shards.write_labels(data_dir, CLASSES)

    keras.utils.set_random_seed(3)
    model = resnet_v2.build_model(len(CLASSES), SIZE, 50)
    spread_predictions(model, photos("ants", 10) + photos("bees", 10))
    os.makedirs(model_dir)
    model.save_weights(os.path.join(model_dir, "model.weights.h5"))
    layout.save_run_record(model_dir, {
        "toolkit_version": "0.1.0", "num_classes": len(CLASSES), "class_names": CLASSES, "image_size": SIZE,
        "depth": 50, "data_dir": data_dir, "precision": "fp32", "config": Config().to_dict(),
    })
    result = exporting.export_model(model_dir, ExportConfig(parity_images=8, tflite=True, triton_repo="triton",
                                                                triton_savedmodel=True), log=lambda _: None)
    assert result["passed"], result["failures"]
    _CACHE["export"] = types.SimpleNamespace(
        dir=result["export_dir"], onnx=result["paths"]["onnx"], saved_model=os.path.join(result["export_dir"], "saved_model"),
        tflite=result["paths"]["tflite"], model_dir=model_dir, data_dir=data_dir, result=result,
    )
    return _CACHE["export"]


def saved_model_probabilities(saved_model_dir: str, paths: list) -> np.ndarray:
    """The SavedModel's own answer for image files: its serving_bytes signature on the raw bytes."""
    key = ("loaded", saved_model_dir)
    if key not in _CACHE:
        _CACHE[key] = tf.saved_model.load(saved_model_dir)
    loaded = _CACHE[key]
    encoded = [open(p, "rb").read() for p in paths]
    return loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded))["probabilities"].numpy()
