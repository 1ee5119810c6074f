"""export.json: what it records (provenance, the model's interface, the artifacts, each format's
verdict), its status (set in one place), what an export call returns, and the export's errors."""

from __future__ import annotations

import dataclasses
import os
import time

import toolkit
from toolkit import config as config_lib
from toolkit import layout
from toolkit.common.errors import BadInput, ParityFailed
from toolkit.config import ConfigError, ExportConfig
from toolkit.export import extras as deploy
from toolkit.export import gate as export_gate
from toolkit.export import onnx as onnx_tools
from toolkit.infer import loaders


class ExportError(BadInput):
    """Bad input to the export (model_dir, export_dir, a setting); one line naming the flag."""


class ParityError(ParityFailed):
    """The exported formats disagree beyond the limits; `result` holds paths and the report."""


def set_status(export_record: dict, report: dict) -> dict:
    """Record the parity gate's verdict in an export record (the one place export.json's status is set)."""
    export_record.update(status="passed" if report["passed"] else "failed", failures=report["failures"],
                         onnxruntime=report["onnxruntime"], litert=report["litert"], machine=report["machine"])
    return export_record


def export_record(model_dir: str, source: str, record: dict, config: ExportConfig, paths: dict, report: dict, seconds: dict) -> dict:
    """What export.json holds: status, provenance, the model's interface and the artifacts."""
    size, names = record["image_size"], list(record["class_names"])
    return set_status({
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # names, not the training machine's paths (the export travels); the paths: <model_dir>/provenance.json
        "model_dir": os.path.basename(os.path.abspath(model_dir)),
        "weights": os.path.relpath(os.path.abspath(source), os.path.abspath(model_dir)),
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
        "saved_model": {"dir": layout.SAVED_MODEL, "signatures": {"serving_default": "images -> probabilities, logits", loaders.BYTES_SIGNATURE: "image_bytes -> probabilities, logits"}},
        "onnx": {"opset": config.opset, "layout": config.onnx_layout, "input": onnx_tools.INPUT_NAME, "outputs": list(onnx_tools.OUTPUT_NAMES)},
        "tflite": {"signature": "serving_default", "input": "images", "outputs": ["probabilities", "logits"]} if config.tflite or config.tflite_int8 else None,
        "artifacts": {"saved_model": layout.SAVED_MODEL, **{k: os.path.basename(p) for k, p in paths.items()}, "labels": layout.LABELS, "parity": layout.PARITY_REPORT},
        "formats": export_gate.format_results(report, deploy.format_files(paths)),
        "config": {**dataclasses.asdict(config), "export_dir": os.path.basename(os.path.normpath(config.export_dir))
                   if config.export_dir else ""},
        "seconds": seconds,
    }, report)


def result(target: str, export_record: dict, report: dict) -> dict:
    paths = {k: os.path.join(target, v) for k, v in export_record["artifacts"].items()}
    paths["export_record"] = os.path.join(target, layout.EXPORT_RECORD)
    return {
        "passed": export_record["status"] == "passed",
        "failures": export_record["failures"],
        "export_dir": target,
        "paths": paths,
        "seconds": export_record.get("seconds", {}),
        "parity": report,
    }


def check_settings(config: ExportConfig) -> None:
    """config_lib.validate_export's verdict as an ExportError (the export's own error type)."""
    try:
        config_lib.validate_export(config)
    except ConfigError as e:
        raise ExportError(str(e)) from e
