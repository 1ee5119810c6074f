"""The export library: float32 rebuild -> SavedModel -> ONNX (+ float16 / int8) -> parity gate.

`export_model(model_dir, ExportConfig)` writes an export (the trainer calls it after training;
`python -m toolkit.export` is its command line); `verify_export(export_dir)` re-runs the parity
gate on an existing one (`python -m toolkit.parity`). Plain arguments only: no flags here.
An export dir:
  saved_model/      serving_default: float32 NHWC images in [0, 255] at the model's size, any
                    batch -> {probabilities, logits}; serving_bytes: encoded JPEG/PNG strings ->
                    the same, through the shared evaluation preprocessing
  model.onnx        input `images` (dynamic batch), outputs probabilities and logits; metadata_props
                    hold the class names and the preprocessing that stays outside the graph, and
                    (toolkit_parity_*) the onnxruntime version and machine the parity gate ran on,
                    its verdict and each graph optimization level's: the oldest onnxruntime proven
  model_fp16.onnx, model_int8.onnx   with onnx_fp16 / onnx_int8
  model.tflite, model_int8.tflite    with tflite / tflite_int8 (toolkit.export.tflite; float32 gated in LiteRT)
  saved_model/assets.extra/tf_serving_warmup_requests, the Triton repository (triton_repo) and
                    MODEL_CARD.md: toolkit.export.extras
  labels.txt, parity.json, export.json (status "passed" or "failed"; both record the onnxruntime
                    version and the machine of the gate; export.json each format's result)

Everything is written into a temporary directory beside the export dir and renamed into place
at the end (toolkit.common.atomic.directory), so a crash never leaves a half export; a failed parity gate
still puts the artifacts in place (for inspection), marked failed in export.json, and then raises
ParityError.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

import keras
import tensorflow as tf

import toolkit
from toolkit.common import atomic
from toolkit.export import extras as deploy
from toolkit.export import gate as export_gate
from toolkit.export import onnx as onnx_tools
from toolkit.export import compare as parity_gate
from toolkit.export import savedmodel as serving
from toolkit.train import checkpoint as ckpt_lib
from toolkit import config as config_lib
from toolkit.config import ConfigError, ExportConfig
from toolkit.data import shards
from toolkit.common.messages import one_line
from toolkit.models import resnet_v2

EXPORT_RECORD = "export.json"
PARITY_REPORT = "parity.json"
LABELS = "labels.txt"
SAVED_MODEL = "saved_model"
ONNX_FILES = {"onnx": "model.onnx", "onnx_fp16": "model_fp16.onnx", "onnx_int8": "model_int8.onnx"}
WEIGHTS = "model.weights.h5"
CALIBRATION_IMAGES = deploy.CALIBRATION_IMAGES


class ExportError(ValueError):
    """Bad input to the export (model_dir, export_dir, a setting); one line naming the flag."""


class ParityError(RuntimeError):
    """The exported formats disagree beyond the limits; `result` holds paths and the report."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def read_run(model_dir: str) -> dict:
    """run.json of a training directory, checked for what the export needs."""
    if not model_dir or not os.path.isdir(model_dir):
        raise ExportError(f"--model_dir: {model_dir!r} is not a directory")
    try:
        record = ckpt_lib.load_run_record(model_dir)
    except ValueError as e:
        raise ExportError(one_line(e)) from e
    if not isinstance(record, dict):
        raise ExportError(f"--model_dir: {model_dir}/{ckpt_lib.RUN_RECORD} is not a JSON object")
    missing = [k for k in ("num_classes", "image_size", "depth") if k not in record]
    if missing:
        raise ExportError(f"--model_dir: {model_dir}/{ckpt_lib.RUN_RECORD} lacks {', '.join(missing)}")
    names = record.get("class_names")
    if not names:
        raise ExportError(f"--model_dir: {model_dir}/{ckpt_lib.RUN_RECORD} names no classes (class_names); the export needs them")
    if len(names) != record["num_classes"]:
        raise ExportError(f"--model_dir: {len(names)} class names for {record['num_classes']} classes in {model_dir}/{ckpt_lib.RUN_RECORD}")
    return record


def newest_weights(model_dir: str, weights: str, latest: str | None) -> str:
    """The final weights file, unless a checkpoint of a later step exists.

    A run resumed for more epochs that stopped early leaves the earlier run's final weights beside
    newer checkpoints. The final weights' step is the `steps` of summary.json (written with them);
    checkpoints are numbered by step.

    Args:
      model_dir: the training directory (its summary.json dates the weights).
      weights: the path of the final weights file (it may not exist).
      latest: the newest checkpoint's prefix, or None.

    Returns:
      `weights` or `latest`, whichever holds the later step.
    """
    if not latest:
        return weights
    if not os.path.exists(weights):
        return latest
    try:
        with open(os.path.join(model_dir, "summary.json")) as f:
            final_step = int(json.load(f)["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return weights if os.path.getmtime(weights) >= os.path.getmtime(latest + ".index") else latest
    return latest if int(latest.rsplit("-", 1)[-1]) > final_step else weights


def rebuild_float32(model_dir: str, record: dict) -> tuple:
    """(float32 Keras model with the run's final weights, the weights file or checkpoint used).

    The run may have trained under mixed_float16 / mixed_bfloat16, and the trainer's process still
    has that policy set: the network is rebuilt under float32 (variables are float32 under every
    policy, so the weights copy exactly) and the caller's policy is restored afterwards.
    """
    weights = os.path.join(model_dir, WEIGHTS)
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, ckpt_lib.CHECKPOINTS))
    if not os.path.exists(weights) and not latest:
        raise ExportError(f"--model_dir: {model_dir} holds neither {WEIGHTS} nor a checkpoint; has training finished?")
    source = newest_weights(model_dir, weights, latest)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = resnet_v2.build_model(record["num_classes"], record["image_size"], record["depth"])
        try:
            if source == weights:
                model.load_weights(weights)
            else:
                # a run with --ema_decay exports the weights' moving average (what model.weights.h5 holds)
                key = "ema_model" if record.get("ema") else "model"
                tf.train.Checkpoint(**{key: model}).restore(latest).expect_partial().assert_existing_objects_matched()
        except Exception as e:  # noqa: BLE001 - any unreadable weights are a bad model_dir
            raise ExportError(f"--model_dir: cannot load the weights in {source}: {one_line(e)}") from e
    finally:
        keras.mixed_precision.set_global_policy(previous)
    wrong = sorted(({v.dtype for v in model.weights} | {layer.compute_dtype for layer in model.layers}) - {"float32"})
    if wrong:
        raise RuntimeError(f"the rebuilt model is not float32 (found {wrong})")
    return model, source


def export_model(model_dir: str, config: ExportConfig, log=print, data_dir: str | None = None) -> dict:
    """Write the export of a training directory (see the module doc) and return what was written.

    Call it outside any distribution strategy scope.

    Args:
      model_dir: a training directory (run.json and model.weights.h5 or checkpoints).
      config: the ExportConfig (export_dir empty: model_dir/export).
      log: called with each progress line.
      data_dir: overrides the run's data (the validation images of the gate, the training images
        of the int8 calibration).

    Returns:
      {passed, failures, export_dir, paths (absolute, by artifact), seconds (per phase), parity
      (the report)}.

    Raises:
      ExportError: bad input, before any heavy work.
      ParityError: the formats disagree; raised after everything is in place.
    """
    start = time.time()
    _check_settings(config)
    record = read_run(model_dir)
    target = os.path.abspath(config.export_dir or os.path.join(model_dir, "export"))
    _check_target(target)
    info = _dataset(record, data_dir)
    int8 = [f for f in ("onnx_int8", "tflite_int8") if getattr(config, f)]
    if int8 and "train" not in info.files:
        raise ExportError(f"--{int8[0]}: {info.data_dir} has no training shards to calibrate on")
    seconds = {}
    with atomic.directory(target) as tmp:
        model, source = _timed(seconds, "rebuild", rebuild_float32, model_dir, record)
        log(f"export: rebuilt ResNet{record['depth']}V2 {record['image_size']}px in float32 from {source} "
            f"(trained as {record.get('precision', '?')})")
        paths = _write_formats(tmp, model, record, info, config, seconds, log)
        try:
            extras = deploy.write_before_gate(tmp, os.path.join(tmp, SAVED_MODEL), record, info, config, seconds, log)
        except ValueError as e:
            raise ExportError(one_line(e)) from e
        paths.update({k: os.path.join(tmp, v) for k, v in extras.items() if k != "serving_warmup"})
        report = _timed(seconds, "parity", export_gate.gate, model, os.path.join(tmp, SAVED_MODEL), paths, config.onnx_layout,
                        record, info, config.parity_images, config.parity_atol)
        atomic.write_json(os.path.join(tmp, PARITY_REPORT), report)
        export_record = _export_record(model_dir, source, record, config, paths, report, seconds)
        export_record.update(data=deploy.data_facts(info), artifacts={**export_record["artifacts"], **extras})
        deploy.write_after_gate(tmp, export_record, config, model_dir)
        seconds["total"] = _lap(start)
        atomic.write_json(os.path.join(tmp, EXPORT_RECORD), export_record)
    result = _result(target, export_record, report)
    for line in parity_gate.summary_lines(report):
        log(line)
    log(f"export: {export_record['status']} in {seconds['total']:.0f} s -> {target}")
    if not report["passed"]:
        raise ParityError(f"parity gate failed ({target}/{PARITY_REPORT}): " + "; ".join(report["failures"]), result)
    return result


def _write_formats(tmp: str, model, record: dict, info: shards.DatasetInfo, config: ExportConfig, seconds: dict, log) -> dict:
    """labels.txt, the SavedModel and the ONNX files in `tmp`; returns {ONNX format: path}."""
    size, names, layout = record["image_size"], list(record["class_names"]), config.onnx_layout
    shards.write_labels(tmp, names)
    module = serving.ServingModule(model, size, os.path.join(tmp, LABELS))
    _timed(seconds, "saved_model", module.save, os.path.join(tmp, SAVED_MODEL))
    log(f"export: SavedModel written ({seconds['saved_model']:.0f} s)")

    phase = time.time()
    proto = onnx_tools.convert(module.serve_images, config.opset, layout)
    onnx_tools.set_metadata(proto, onnx_tools.model_metadata(names, size, layout, toolkit.__version__))
    onnx_tools.save(proto, os.path.join(tmp, ONNX_FILES["onnx"]))
    seconds["onnx"] = _lap(phase)
    log(f"export: ONNX opset {config.opset} {layout.upper()} written ({seconds['onnx']:.0f} s)")
    if config.onnx_fp16:
        phase = time.time()
        onnx_tools.save(onnx_tools.to_float16(proto), os.path.join(tmp, ONNX_FILES["onnx_fp16"]))
        seconds["onnx_fp16"] = _lap(phase)
    del proto
    if config.onnx_int8:
        _timed(seconds, "onnx_int8", _quantize, tmp, record, info, layout)
        log(f"export: int8 ONNX calibrated on {CALIBRATION_IMAGES} training images ({seconds['onnx_int8']:.0f} s)")
    return {k: os.path.join(tmp, f) for k, f in ONNX_FILES.items() if os.path.exists(os.path.join(tmp, f))}


def _quantize(tmp: str, record: dict, info: shards.DatasetInfo, layout: str) -> None:
    """model_int8.onnx in `tmp`, calibrated on the first CALIBRATION_IMAGES training images."""
    try:
        onnx_tools.quantize_int8(os.path.join(tmp, ONNX_FILES["onnx"]), os.path.join(tmp, ONNX_FILES["onnx_int8"]),
                                 deploy.calibration_batches(record, info), layout)
    except ValueError as e:  # no calibration images: the training shards are empty
        raise ExportError(f"--onnx_int8: {one_line(e)} in {info.data_dir}") from e


def _export_record(model_dir: str, source: str, record: dict, config: ExportConfig, paths: dict, report: dict, seconds: dict) -> dict:
    """What export.json holds: status, provenance, the model's interface and the artifacts."""
    size, names = record["image_size"], list(record["class_names"])
    return {
        "status": "passed" if report["passed"] else "failed",
        "failures": report["failures"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model_dir": os.path.abspath(model_dir),
        "weights": os.path.abspath(source),
        "weights_kind": "ema" if record.get("ema") else "raw",  # the moving average (--ema_decay) or the raw weights
        "toolkit_version": toolkit.__version__,
        "trained_with_toolkit_version": record.get("toolkit_version"),
        "trained_precision": record.get("precision"),
        "exported_dtype": "float32",
        "depth": record["depth"],
        "num_classes": len(names),
        "class_names": names,
        "image_size": size,
        "input": {"dtype": "float32", "range": [0, 255], "preprocessing": onnx_tools.preprocessing_text(size, "nhwc")},
        "saved_model": {"dir": SAVED_MODEL, "signatures": {"serving_default": "images -> probabilities, logits", serving.BYTES_SIGNATURE: "image_bytes -> probabilities, logits"}},
        "onnx": {"opset": config.opset, "layout": config.onnx_layout, "input": onnx_tools.INPUT_NAME, "outputs": list(onnx_tools.OUTPUT_NAMES)},
        "tflite": {"signature": "serving_default", "input": "images", "outputs": ["probabilities", "logits"]} if config.tflite or config.tflite_int8 else None,
        "artifacts": {"saved_model": SAVED_MODEL, **{k: os.path.basename(p) for k, p in paths.items()}, "labels": LABELS, "parity": PARITY_REPORT},
        "formats": export_gate.format_results(report, deploy.format_files(paths)),
        "config": dataclasses.asdict(config),
        "seconds": seconds,
        "onnxruntime": report["onnxruntime"],
        "litert": report["litert"],
        "machine": report["machine"],
    }


def verify_export(export_dir: str, model_dir: str | None = None, parity_images: int = 0, atol: float = 1e-4,
                  data_dir: str | None = None, log=print) -> dict:
    """Re-run the parity gate on an existing export; rewrites its parity.json and export.json status.

    Args:
      export_dir: an export written by `export_model` (possibly copied elsewhere since).
      model_dir: the training directory to compare with; None: the one export.json names.
      parity_images: validation images compared (0: all).
      atol: the largest absolute difference of probabilities allowed.
      data_dir: overrides the run's data (where the validation images are).
      log: called with each progress line.

    Returns:
      As `export_model`; `passed` False when the gate fails (no ParityError here).

    Raises:
      ExportError: bad input (an incomplete export, a missing training directory).
    """
    _check_settings(ExportConfig(parity_images=parity_images, parity_atol=atol))
    path = os.path.join(export_dir, EXPORT_RECORD)
    try:
        with open(path) as f:
            export_record = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"--export_dir: cannot read {path}: {one_line(e)}") from e
    paths = export_gate.model_files(export_dir, export_record.get("artifacts", {}))
    paths.setdefault("onnx", os.path.join(export_dir, ONNX_FILES["onnx"]))
    for needed in (os.path.join(export_dir, SAVED_MODEL), *paths.values()):
        if not os.path.exists(needed):
            raise ExportError(f"--export_dir: {needed} is missing; is {export_dir} a complete export?")
    model_dir = model_dir or export_record.get("model_dir", "")
    record = read_run(model_dir)
    info = _dataset(record, data_dir)
    model, _ = rebuild_float32(model_dir, record)
    layout = export_record.get("onnx", {}).get("layout", "nhwc")
    report = export_gate.gate(model, os.path.join(export_dir, SAVED_MODEL), paths, layout, record, info, parity_images, atol)
    atomic.write_json(os.path.join(export_dir, PARITY_REPORT), report)
    deploy.refresh_triton(export_dir, export_record, paths["onnx"])
    export_record.update(status="passed" if report["passed"] else "failed", failures=report["failures"], verified=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                         onnxruntime=report["onnxruntime"], litert=report["litert"], machine=report["machine"],
                         formats=export_gate.format_results(report, deploy.format_files(paths)))
    if "model_card" in export_record.get("artifacts", {}):
        deploy.write_model_card(export_dir, export_record, model_dir)
    atomic.write_json(path, export_record)
    for line in parity_gate.summary_lines(report):
        log(line)
    log(f"parity: {export_record['status']} for {export_dir}")
    return _result(os.path.abspath(export_dir), export_record, report)


def _result(target: str, export_record: dict, report: dict) -> dict:
    paths = {k: os.path.join(target, v) for k, v in export_record["artifacts"].items()}
    paths["export_record"] = os.path.join(target, EXPORT_RECORD)
    return {
        "passed": export_record["status"] == "passed",
        "failures": export_record["failures"],
        "export_dir": target,
        "paths": paths,
        "seconds": export_record.get("seconds", {}),
        "parity": report,
    }


def _check_settings(config: ExportConfig) -> None:
    """config_lib.validate_export's verdict as an ExportError (the export's own error type)."""
    try:
        config_lib.validate_export(config)
    except ConfigError as e:
        raise ExportError(str(e)) from e


def _check_target(target: str) -> None:
    """Create the export dir's parent if needed; fail early when the export cannot be written."""
    parent = os.path.dirname(target)
    for path in (target, parent):
        if os.path.exists(path) and not os.path.isdir(path):
            raise ExportError(f"--export_dir: {path} exists and is not a directory")
    if os.path.isdir(target) and os.listdir(target) and not os.path.exists(os.path.join(target, EXPORT_RECORD)):
        raise ExportError(f"--export_dir: {target} is not empty and holds no earlier export; choose a new directory")
    try:
        os.makedirs(parent, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=".export-probe-", dir=parent)
        os.rmdir(probe)
    except OSError as e:
        raise ExportError(f"--export_dir: cannot write in {parent}: {e.strerror or e}") from e


def _dataset(record: dict, data_dir: str | None) -> shards.DatasetInfo:
    directory = data_dir or record.get("data_dir") or ""
    try:
        info = shards.read_dataset_info(directory)
        info.split_files("val")
    except ValueError as e:
        raise ExportError(f"{one_line(e)} (the parity gate needs the run's validation images; pass --data_dir)") from e
    return info


def _lap(start: float) -> float:
    return round(time.time() - start, 2)


def _timed(seconds: dict, phase: str, fn, *args):
    """fn(*args), its wall time recorded as seconds[phase]."""
    start = time.time()
    result = fn(*args)
    seconds[phase] = _lap(start)
    return result
