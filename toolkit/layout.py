"""Every file name the toolkit writes, and run.json's writer and reader: the one place for them.

A training directory (--model_dir):
  run.json           the resolved configuration and data facts (classes, image size, ...): what
                     resume, export and evaluation read back
  checkpoints/       tf.train.Checkpoint files (model, optimizer, EMA, step, epoch)
  metrics.jsonl      one JSON line per progress interval and per evaluation
  tensorboard/       summaries (train/, val/)
  summary.json, summary.md    the final figures, for programs and for people
  model.weights.h5   the final float32 weights (the EMA's with --ema_decay)
  curves.png, predictions.png, confusion_matrix.png, confusion_matrix.json
  data/              an image folder given as --data_dir, converted once to shards
  demo_data/         the built-in demo dataset (no --data_dir)
  export/            the export (unless --export_dir says otherwise)
  provenance.json    each export's absolute paths (the export itself names the run and data by folder name only)
  previous-<time>/   an earlier run set aside by --fresh
  checkpoints/damaged-<time>/   checkpoints that could not be read, set aside (a resume used an older one)
An export directory: see EXPORT_FILES; a converted dataset: shards, labels.txt, manifest.json; an
evaluation (--out of python -m toolkit.evaluate): metrics.json, predictions.csv and the plots.

No TensorFlow here: the command lines read these names before TensorFlow loads (a directory on
another filesystem, gs:// or ram://, is read through toolkit.common.storage, which loads it then).
"""

from __future__ import annotations

import json
import os

from toolkit.common import atomic, storage
from toolkit.common.errors import BadInput

# ------------------------------------------------------------------------------ a training directory
RUN_RECORD = "run.json"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
SUMMARY = "summary.json"
SUMMARY_MD = "summary.md"
WEIGHTS = "model.weights.h5"
CURVES = "curves.png"
PREDICTIONS_PNG = "predictions.png"
CONFUSION_PNG = "confusion_matrix.png"
CONFUSION_JSON = "confusion_matrix.json"
CONVERTED_DATA = "data"
DEMO_DATA = "demo_data"
EXPORT = "export"
RAY_RESULTS = "ray"  # python -m toolkit.ray: Ray Train's records of the run (its --storage_path by default)
RAY_POINTER = "toolkit_run.json"  # the Ray Checkpoint's one file: the run directory and its latest checkpoint
PROVENANCE = "provenance.json"  # where each export of the run went, from which files: absolute paths, for the owner
PREVIOUS_RUN = "previous-%Y%m%d-%H%M%S"  # time.strftime pattern
DAMAGED_CHECKPOINTS = "damaged-%Y%m%d-%H%M%S"  # inside checkpoints/: those that could not be read
# what --fresh sets aside: the parts of a run that would make the new one resume or mix with it
RUN_STATE = (CHECKPOINTS, METRICS, TENSORBOARD, SUMMARY, RUN_RECORD)
# what the end of a run lists as written
RUN_FILES = (SUMMARY, SUMMARY_MD, CURVES, PREDICTIONS_PNG, CONFUSION_PNG, METRICS, TENSORBOARD + "/", CHECKPOINTS + "/",
             WEIGHTS, RUN_RECORD)

# -------------------------------------------------------------------------------- an export directory
SAVED_MODEL = "saved_model"
ONNX_FILES = {"onnx": "model.onnx", "onnx_fp16": "model_fp16.onnx", "onnx_int8": "model_int8.onnx"}
ONNX = ONNX_FILES["onnx"]
TFLITE_FILES = {"tflite": "model.tflite", "tflite_int8": "model_int8.tflite"}
TFLITE = TFLITE_FILES["tflite"]
LABELS = "labels.txt"
PARITY_REPORT = "parity.json"
EXPORT_RECORD = "export.json"
MODEL_CARD = "MODEL_CARD.md"
WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"  # the name TF Serving looks for
WARMUP = f"{SAVED_MODEL}/{WARMUP_DIR}/{WARMUP_FILE}"
SAVED_MODEL_PB = "saved_model.pb"
TRITON_CONFIG = "config.pbtxt"
TRITON_VERSION = "1"  # the one version directory of each Triton model
# the names at the top of an export; a Triton repository (--triton_repo) must not take one
EXPORT_FILES = (SAVED_MODEL, *ONNX_FILES.values(), *TFLITE_FILES.values(), LABELS, PARITY_REPORT, EXPORT_RECORD, MODEL_CARD)

# ------------------------------------------------------------------------------- a converted dataset
MANIFEST = "manifest.json"
# LABELS as in an export: one class name per line

# ------------------------------------------------------------------- an evaluation (toolkit.evaluate)
EVAL_METRICS = "metrics.json"
PREDICTIONS_CSV = "predictions.csv"


def save_run_record(model_dir: str, record: dict) -> None:
    """Write `record` as model_dir/run.json (atomically)."""
    atomic.write_json(os.path.join(model_dir, RUN_RECORD), record)


def has_run_record(model_dir: str) -> bool:
    return storage.exists(os.path.join(model_dir, RUN_RECORD))


def load_run_record(model_dir: str) -> dict:
    """model_dir/run.json; BadInput naming --model_dir when it is missing, unreadable or not an object."""
    path = os.path.join(model_dir, RUN_RECORD)
    if not storage.exists(path):
        raise BadInput(f"--model_dir: {model_dir} holds no {RUN_RECORD}; is it a toolkit training directory?")
    try:
        with storage.open(path) as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise BadInput(f"--model_dir: cannot read {path}: {e}") from e
    if not isinstance(record, dict):
        raise BadInput(f"--model_dir: {path} is not a JSON object")
    return record


def read_json(path: str):
    """The JSON document at `path`, or None when it is missing or unreadable (optional inputs: reports, cards)."""
    try:
        with storage.open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
    except Exception as e:  # noqa: BLE001 - gfile's own errors for a file on another filesystem
        if type(e).__module__.startswith("tensorflow"):
            return None
        raise
