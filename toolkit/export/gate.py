"""The parity gate run on an export's files: every format as a runner, measured, the proof recorded.

Gated (every pair within the limits of toolkit.export.compare): the Keras model, the SavedModel
(serving_default, and serving_bytes on the encoded validation files), model.onnx at two onnxruntime
graph optimization levels, and model.tflite in the LiteRT interpreter when the export has one.
Reported, not gated (top-1 agreement with the float32 ONNX model, and validation accuracy):
model_fp16.onnx, model_int8.onnx, model_int8.tflite.
toolkit.export.run calls `gate` after writing the files and again from verify_export.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from toolkit.common import machine
from toolkit.export import onnx as onnx_tools
from toolkit.export import compare as parity_gate
from toolkit.infer import loaders
from toolkit.data import preprocess, records

# The float32 ONNX model is gated at onnxruntime's default graph optimization level and with
# optimizations off: onnxruntime 1.30 computed a trained model ~4.5e-2 off in logits only with them on.
ONNX_LEVELS = {"onnx": "ORT_ENABLE_ALL", "onnx_unoptimized": "ORT_DISABLE_ALL"}
GATED_TFLITE = ("tflite",)  # float32 TFLite: held to the same limits as the others
VARIANTS = ("onnx_fp16", "onnx_int8", "tflite_int8")  # reported against the float32 ONNX model
REFERENCES = ("keras", "saved_model")  # each format's own verdict is its pairs with these


def label_offset(record: dict) -> int:
    """The run's label offset (ImageNet-style shards number classes from 1)."""
    return int(record.get("config", {}).get("data", {}).get("label_offset", 0))


def gate(model, saved_model_dir: str, paths: dict, layout: str, record: dict, info, parity_images: int, atol: float) -> dict:
    """The parity report of the model files in `paths` ({artifact key: path}), also recorded in model.onnx's metadata."""
    report = measure(model, saved_model_dir, paths, layout, record, info, parity_images, atol)
    record_proof(paths["onnx"], report)
    return report


def _runner(key: str, path: str, layout: str, level: str | None = None):
    """The gate's function of an exported model file, through the one loader of every format:
    float32 NHWC [0, 255] images -> (probabilities, logits)."""
    if key.startswith("tflite"):
        return loaders.load_model(path, "tflite").outputs
    return loaders.load_model(path, "onnx", optimization=level, layout=layout).outputs


def keras_runner(model: keras.Model) -> Callable[[np.ndarray], tuple]:
    """(probabilities, logits) of the Keras model itself, run eagerly: the reference of the gate."""

    def run(images: np.ndarray) -> tuple:
        logits = model(preprocess.normalize(images), training=False)
        return tf.nn.softmax(logits).numpy(), logits.numpy()

    return run


def measure(model, saved_model_dir, paths, layout, record, info, parity_images, atol) -> dict:
    """The parity report, with the onnxruntime version, each optimization level's verdict and the machine."""
    size = record["image_size"]
    saved_model = loaders.load_model(saved_model_dir, "savedmodel")
    runners = {"keras": keras_runner(model), "saved_model": saved_model.outputs}
    for name, level in ONNX_LEVELS.items():
        runners[name] = _runner(name, paths["onnx"], layout, level)
    runners.update({k: _runner(k, paths[k], layout) for k in GATED_TFLITE if k in paths})
    variants = {k: _runner(k, paths[k], layout) for k in VARIANTS if k in paths}
    validation = records.image_batches(info.split_files("val"), size, parity_images, label_offset=label_offset(record))
    report = parity_gate.parity_report(runners, validation, parity_gate.random_images(size), atol,
                                       ("saved_model_bytes", "keras", saved_model.run_bytes), variants,
                                 unpaired=[tuple(ONNX_LEVELS)])  # each level is judged against Keras and the SavedModel
    verdicts = parity_gate.format_verdicts(report, ONNX_LEVELS)
    report["onnxruntime"] = onnx_tools.onnxruntime_version()
    report["onnxruntime_optimization_levels"] = {level: {"format": name, "passed": verdicts[name]} for name, level in ONNX_LEVELS.items()}
    report["litert"] = litert_version() if any(k.startswith("tflite") for k in paths) else None
    report["machine"] = machine.describe()
    return report


def litert_version() -> str:
    from importlib.metadata import version

    return version("ai-edge-litert")


def record_proof(onnx_path: str, report: dict) -> None:
    """Write into model.onnx which onnxruntime (the oldest version it is proven on) and machine the gate ran on."""
    onnx_tools.update_metadata(onnx_path, {
        "toolkit_parity_onnxruntime": report["onnxruntime"],
        "toolkit_parity_passed": "true" if report["passed"] else "false",
        "toolkit_parity_optimization_levels": json.dumps({k: v["passed"] for k, v in report["onnxruntime_optimization_levels"].items()}),
        "toolkit_parity_machine": json.dumps(report["machine"]),
    })


def format_results(report: dict, files: dict) -> dict:
    """Each format's result for export.json and the model card.

    Args:
      report: the parity report.
      files: {format: the file or directory it lives in, relative to the export dir}.

    Returns:
      {format: {file, gated, passed, worst max abs difference of probabilities}} for the gated
      formats, each judged by its pairs with the Keras model and the SavedModel; {format: {file, gated False, compared_with, top1_agreement,
      validation_accuracy}} for the variants.
    """
    results = {}
    for name in (n for n in files if n not in VARIANTS):
        # judged against the references only: one wrong format must not mark the right ones failed too
        pairs = [sets for pair, sets in report["pairs"].items()
                 if name in pair.split(" vs ") and set(pair.split(" vs ")) - {name} <= set(REFERENCES)]
        mine = [r for sets in pairs for key, r in sets.items() if key != "passed"]
        results[name] = {"file": files[name], "gated": True, "passed": bool(pairs) and all(p["passed"] for p in pairs),
                         "max_abs_diff_probabilities": max((r["max_abs_diff_probabilities"] for r in mine), default=None),
                         "validation_accuracy": report["validation_accuracy"].get(name)}
    for name, v in report["variants"].items():
        results[name] = {"file": files.get(name), "gated": False, "compared_with": v["compared_with"],
                         "top1_agreement": v["top1_agreement"], "validation_accuracy": v["validation_accuracy"]}
    return results


def model_files(export_dir: str, artifacts: dict) -> dict:
    """{artifact key: absolute path} of the model files an export's artifacts list names (ONNX and TFLite)."""
    keys = ("onnx", *GATED_TFLITE, *VARIANTS)
    return {k: os.path.join(export_dir, artifacts[k]) for k in keys if k in artifacts}
