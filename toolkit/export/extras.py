"""The export's deployment artifacts beyond the SavedModel and ONNX: TFLite, TF Serving warm-up, a
Triton model repository and the model card. toolkit.export.run calls these inside its temporary
export directory, so they are placed atomically with the rest:
  before the parity gate   model.tflite, model_int8.tflite (--tflite, --tflite_int8),
                           saved_model/assets.extra/tf_serving_warmup_requests (always)
  after it                 the Triton repository (--triton_repo; model.onnx holds its proof by then),
                           MODEL_CARD.md (from export.json, summary.json and confusion_matrix.json)
"""

from __future__ import annotations

import os
import time

from toolkit.common import atomic, storage
from toolkit.export import gate as export_gate
from toolkit.export import model_card
from toolkit.export import warmup as serving_warmup
from toolkit.export import tflite as tflite_tools
from toolkit.export import triton
from toolkit.config import ExportConfig
from toolkit.data import records
from toolkit import layout
from toolkit.common.errors import BadInput

CALIBRATION_IMAGES = 256  # training images for int8 calibration, ONNX and TFLite alike (64 -> 256: BENCHMARKS.md)
CALIBRATION_BATCH = 8


def calibration_batches(record: dict, info):
    """The int8 calibration images: the first CALIBRATION_IMAGES training images, float32 NHWC [0, 255]."""
    batches = records.image_batches(info.split_files("train"), record["image_size"], CALIBRATION_IMAGES, CALIBRATION_BATCH,
                                    export_gate.label_offset(record))
    return (b[0] for b in batches)


def write_before_gate(tmp: str, saved_model_dir: str, record: dict, info, config: ExportConfig, seconds: dict, log) -> dict:
    """The TFLite models and the warm-up requests in `tmp`; returns {artifact key: path relative to tmp}.

    Raises:
      ValueError: no images to calibrate on or to warm up with (one line naming the flag).
    """
    written = {}
    for key, wanted in (("tflite", config.tflite), ("tflite_int8", config.tflite_int8)):
        if not wanted:
            continue
        start = time.time()
        calibration = calibration_batches(record, info) if key == "tflite_int8" else None
        try:
            size = tflite_tools.convert(saved_model_dir, os.path.join(tmp, layout.TFLITE_FILES[key]), calibration)
        except ValueError as e:
            raise BadInput(f"--{key}: {e} in {info.data_dir}") from e
        seconds[key] = round(time.time() - start, 2)
        log(f"export: {layout.TFLITE_FILES[key]} written ({size / 1e6:.1f} MB, {seconds[key]:.0f} s)")
        written[key] = layout.TFLITE_FILES[key]
    start = time.time()
    batch = next(records.image_batches(info.split_files("val"), record["image_size"], serving_warmup.WARMUP_IMAGES,
                                       serving_warmup.WARMUP_IMAGES, export_gate.label_offset(record)), None)
    if batch is None:
        raise BadInput(f"--data_dir: {info.data_dir} has no validation images for the TF Serving warm-up requests")
    serving_warmup.write(saved_model_dir, batch[0], batch[1])
    seconds["serving_warmup"] = round(time.time() - start, 2)
    written["serving_warmup"] = layout.WARMUP
    return written


def write_after_gate(tmp: str, export_record: dict, config: ExportConfig, model_dir: str) -> None:
    """The Triton repository (when asked) and MODEL_CARD.md in `tmp`; export_record gains their entries.

    Call it with the export record complete but for these two; write export.json afterwards.
    """
    artifacts = export_record["artifacts"]
    if config.triton_repo:
        name = f"resnet{export_record['depth']}v2"
        saved_model = os.path.join(tmp, artifacts["saved_model"]) if config.triton_savedmodel else None
        models = triton.write_repository(os.path.join(tmp, config.triton_repo), name, os.path.join(tmp, artifacts["onnx"]),
                                         saved_model, os.path.join(tmp, artifacts["labels"]), config.triton_max_batch_size)
        artifacts["triton_repo"] = config.triton_repo
        export_record["triton"] = {"repository": config.triton_repo, "max_batch_size": config.triton_max_batch_size,
                                   "dynamic_batching": True, "models": models}
    artifacts["model_card"] = layout.MODEL_CARD
    write_model_card(tmp, export_record, model_dir)


def refresh_triton(export_dir: str, export_record: dict, onnx_path: str) -> None:
    """After a re-run of the gate: the Triton repository's ONNX models are the re-verified model.onnx
    (the gate renamed a new file over the one the repository was linked to)."""
    triton_record = export_record.get("triton") or {}
    if triton_record.get("models"):
        triton.refresh_onnx(os.path.join(export_dir, triton_record["repository"]), triton_record["models"], onnx_path)


def write_model_card(export_dir: str, export_record: dict, model_dir: str) -> None:
    """MODEL_CARD.md in `export_dir`, from the export record and the run's summary.json and confusion_matrix.json."""
    summary, confusion = (layout.read_json(os.path.join(model_dir, name)) for name in (layout.SUMMARY, layout.CONFUSION_JSON))
    atomic.write_text(os.path.join(export_dir, layout.MODEL_CARD), model_card.render(export_record, summary, confusion))


def data_facts(info) -> dict:
    """The dataset of the run for export.json: its folder's name, its source's, and counts per split
    and class (from its manifest). Names, not the training machine's paths: the export travels."""
    splits = info.manifest.get("splits", {})
    source = info.manifest.get("source")
    return {
        "data_dir": folder_name(info.data_dir),
        "source": folder_name(source) if isinstance(source, str) and os.sep in source else source,
        "splits": {split: {"count": s.get("count", 0), "per_class": s.get("per_class", {})} for split, s in splits.items()},
    }


def folder_name(path: str) -> str:
    """The last part of a path: how a file that travels with the model names a folder of the training machine."""
    return os.path.basename(os.path.normpath(path)) if path else path


def write_provenance(model_dir: str, export_dir: str, source: str, data_dir: str, log) -> None:
    """<model_dir>/provenance.json gains this export's absolute paths (export dir, run, weights, data):
    the full record stays with the run, on the owner's side."""
    path = os.path.join(model_dir, layout.PROVENANCE)
    known = layout.read_json(path) or {}
    exports = known.get("exports", {}) if isinstance(known, dict) else {}
    exports[storage.absolute(export_dir)] = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model_dir": storage.absolute(model_dir),
                                             "weights": storage.absolute(source), "data_dir": storage.absolute(data_dir)}
    try:
        atomic.write_json(path, {"exports": exports})
    except (OSError, storage.StorageError) as e:  # a run directory the exporter may only read: the export itself is complete
        log(f"export: could not record the export's paths in {path} ({getattr(e, 'strerror', None) or e})")


def format_files(paths: dict) -> dict:
    """{format: its file, relative to the export dir} of every format the gate compares."""
    files = {"keras": "(the trained weights, rebuilt in float32)", "saved_model": "saved_model (serving_default)",
             "saved_model_bytes": "saved_model (serving_bytes)", "onnx": "model.onnx (ORT_ENABLE_ALL)",
             "onnx_unoptimized": "model.onnx (ORT_DISABLE_ALL)"}
    files.update({k: os.path.basename(p) for k, p in paths.items() if k != "onnx"})
    return files
