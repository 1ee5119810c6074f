"""The export library: float32 rebuild -> SavedModel -> ONNX (+ float16 / int8) -> parity gate.

`export_model(model_dir, ExportConfig)` writes an export (the trainer calls it after training;
`python -m toolkit.export` is its command line); toolkit.export.verify re-runs the parity gate on
an existing one (`python -m toolkit.parity`). Plain arguments only: no flags here.
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
ParityError. An export dir on object storage (gs://, ram://) is built in local scratch, because
tf2onnx, the LiteRT converter, onnxruntime's quantizer and the warm-up writer need local paths, and
copied up file by file at the end, export.json last (a folder without it is an interrupted copy,
which the next export replaces). The run it reads may be there too (toolkit.common.storage).
"""

from __future__ import annotations

import os
import tempfile
import time

import toolkit
from toolkit import layout
from toolkit.common import atomic, storage
from toolkit.common.messages import one_line
from toolkit.config import ExportConfig
from toolkit.data import shards
from toolkit.export import compare as parity_gate
from toolkit.export import extras as deploy
from toolkit.export import gate as export_gate
from toolkit.export import onnx as onnx_tools
from toolkit.export import savedmodel as serving
from toolkit.export.rebuild import read_run, rebuild_float32, run_data
from toolkit.export.record import ExportError, ParityError, check_settings
from toolkit.export.record import export_record as export_record_of
from toolkit.export.record import result as result_of

__all__ = ["export_model", "ExportError", "ParityError"]


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
    check_settings(config)
    record = read_run(model_dir)
    target = storage.absolute(config.export_dir or os.path.join(model_dir, layout.EXPORT))
    _check_target(target)
    info = run_data(record, data_dir)
    int8 = [f for f in ("onnx_int8", "tflite_int8") if getattr(config, f)]
    if int8 and "train" not in info.files:
        raise ExportError(f"--{int8[0]}: {info.data_dir} has no training shards to calibrate on")
    seconds = {}
    with atomic.directory(target, last=layout.EXPORT_RECORD) as tmp:
        model, source = _timed(seconds, "rebuild", rebuild_float32, model_dir, record)
        log(f"export: rebuilt ResNet{record['depth']}V2 {record['image_size']}px in float32 from {source} "
            f"(trained as {record.get('precision', '?')})")
        paths = _write_formats(tmp, model, record, info, config, seconds, log)
        try:
            extras = deploy.write_before_gate(tmp, os.path.join(tmp, layout.SAVED_MODEL), record, info, config, seconds, log)
        except ValueError as e:
            raise ExportError(one_line(e)) from e
        paths.update({k: os.path.join(tmp, v) for k, v in extras.items() if k != "serving_warmup"})
        report = _timed(seconds, "parity", export_gate.gate, model, os.path.join(tmp, layout.SAVED_MODEL), paths, config.onnx_layout,
                        record, info, config.parity_images, config.parity_atol)
        atomic.write_json(os.path.join(tmp, layout.PARITY_REPORT), report)
        export_record = export_record_of(model_dir, source, record, config, paths, report, seconds)
        export_record.update(data=deploy.data_facts(info), artifacts={**export_record["artifacts"], **extras})
        deploy.write_after_gate(tmp, export_record, config, model_dir)
        seconds["total"] = _lap(start)
        atomic.write_json(os.path.join(tmp, layout.EXPORT_RECORD), export_record)
    deploy.write_provenance(model_dir, target, source, info.data_dir, log)
    result = result_of(target, export_record, report)
    for line in parity_gate.summary_lines(report):
        log(line)
    staged = "" if storage.is_local(target) else " (built in local scratch for tf2onnx and LiteRT, then copied up)"
    log(f"export: {export_record['status']} in {seconds['total']:.0f} s -> {target}{staged}")
    if not report["passed"]:
        raise ParityError(f"parity gate failed ({target}/{layout.PARITY_REPORT}): " + "; ".join(report["failures"]), result)
    return result


def _write_formats(tmp: str, model, record: dict, info: shards.DatasetInfo, config: ExportConfig, seconds: dict, log) -> dict:
    """labels.txt, the SavedModel and the ONNX files in `tmp`; returns {ONNX format: path}."""
    size, names, onnx_layout = record["image_size"], list(record["class_names"]), config.onnx_layout
    shards.write_labels(tmp, names)
    module = serving.ServingModule(model, size, os.path.join(tmp, layout.LABELS))
    _timed(seconds, "saved_model", module.save, os.path.join(tmp, layout.SAVED_MODEL))
    log(f"export: SavedModel written ({seconds['saved_model']:.0f} s)")

    phase = time.time()
    proto = onnx_tools.convert(module.serve_images, config.opset, onnx_layout)
    onnx_tools.set_metadata(proto, onnx_tools.model_metadata(names, size, onnx_layout, toolkit.__version__))
    onnx_tools.save(proto, os.path.join(tmp, layout.ONNX))
    seconds["onnx"] = _lap(phase)
    log(f"export: ONNX opset {config.opset} {onnx_layout.upper()} written ({seconds['onnx']:.0f} s)")
    if config.onnx_fp16:
        phase = time.time()
        onnx_tools.save(onnx_tools.to_float16(proto), os.path.join(tmp, layout.ONNX_FILES["onnx_fp16"]))
        seconds["onnx_fp16"] = _lap(phase)
    del proto
    if config.onnx_int8:
        _timed(seconds, "onnx_int8", _quantize, tmp, record, info, onnx_layout)
        log(f"export: int8 ONNX calibrated on {deploy.CALIBRATION_IMAGES} training images ({seconds['onnx_int8']:.0f} s)")
    return {k: os.path.join(tmp, f) for k, f in layout.ONNX_FILES.items() if os.path.exists(os.path.join(tmp, f))}


def _quantize(tmp: str, record: dict, info: shards.DatasetInfo, onnx_layout: str) -> None:
    """model_int8.onnx in `tmp`, calibrated on the first deploy.CALIBRATION_IMAGES training images."""
    try:
        onnx_tools.quantize_int8(os.path.join(tmp, layout.ONNX), os.path.join(tmp, layout.ONNX_FILES["onnx_int8"]),
                                 deploy.calibration_batches(record, info), onnx_layout)
    except ValueError as e:  # no calibration images: the training shards are empty
        raise ExportError(f"--onnx_int8: {one_line(e)} in {info.data_dir}") from e


def _check_target(target: str) -> None:
    """Create the export dir's parent if needed; fail early when the export cannot be written."""
    if not storage.is_local(target):
        _check_remote_target(target)
        return
    parent = os.path.dirname(target)
    for path in (target, parent):
        if os.path.exists(path) and not os.path.isdir(path):
            raise ExportError(f"--export_dir: {path} exists and is not a directory")
    if os.path.isdir(target) and os.listdir(target) and not os.path.exists(os.path.join(target, layout.EXPORT_RECORD)):
        raise ExportError(f"--export_dir: {target} is not empty and holds no earlier export; choose a new directory")
    try:
        os.makedirs(parent, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=".export-probe-", dir=parent)
        os.rmdir(probe)
    except OSError as e:
        raise ExportError(f"--export_dir: cannot write in {parent}: {e.strerror or e}") from e


def _check_remote_target(target: str) -> None:
    """_check_target for object storage: an earlier export (or one whose copy-up a crash interrupted:
    only export names, no export.json yet) may be replaced, nothing else; the folder must be creatable."""
    if storage.exists(target, "export_dir") and not storage.isdir(target):
        raise ExportError(f"--export_dir: {target} exists and is not a directory")
    names = set(storage.listdir(target)) if storage.isdir(target) else set()
    if names and layout.EXPORT_RECORD not in names and not names <= set(layout.EXPORT_FILES):
        raise ExportError(f"--export_dir: {target} is not empty and holds no earlier export; choose a new directory")
    storage.makedirs(target, "export_dir")


def _lap(start: float) -> float:
    return round(time.time() - start, 2)


def _timed(seconds: dict, phase: str, fn, *args):
    """fn(*args), its wall time recorded as seconds[phase]."""
    start = time.time()
    result = fn(*args)
    seconds[phase] = _lap(start)
    return result
