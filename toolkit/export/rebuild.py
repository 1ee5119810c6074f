"""The trained model an export starts from: the run's record, its newest weights, rebuilt in float32."""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from toolkit import layout
from toolkit.common import storage
from toolkit.common.errors import BadInput
from toolkit.common.messages import one_line
from toolkit.data import shards
from toolkit.export.record import ExportError
from toolkit.models import resnet_v2


def read_run(model_dir: str) -> dict:
    """run.json of a training directory, checked for what the export needs."""
    if not model_dir or not storage.isdir(model_dir, "model_dir"):
        raise ExportError(f"--model_dir: {model_dir!r} is not a directory")
    try:
        record = layout.load_run_record(model_dir)
    except BadInput as e:
        raise ExportError(one_line(e)) from e
    missing = [k for k in ("num_classes", "image_size", "depth") if k not in record]
    if missing:
        raise ExportError(f"--model_dir: {model_dir}/{layout.RUN_RECORD} lacks {', '.join(missing)}")
    names = record.get("class_names")
    if not names:
        raise ExportError(f"--model_dir: {model_dir}/{layout.RUN_RECORD} names no classes (class_names); the export needs them")
    if len(names) != record["num_classes"]:
        raise ExportError(f"--model_dir: {len(names)} class names for {record['num_classes']} classes in {model_dir}/{layout.RUN_RECORD}")
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
    if not storage.exists(weights):
        return latest
    try:
        final_step = int(layout.read_json(os.path.join(model_dir, layout.SUMMARY))["steps"])
    except (ValueError, KeyError, TypeError):
        return weights if storage.mtime(weights) >= storage.mtime(latest + ".index") else latest
    return latest if int(latest.rsplit("-", 1)[-1]) > final_step else weights


def rebuild_float32(model_dir: str, record: dict) -> tuple:
    """(float32 Keras model with the run's final weights, the weights file or checkpoint used).

    The run may have trained under mixed_float16 / mixed_bfloat16, and the trainer's process still
    has that policy set: the network is rebuilt under float32 (variables are float32 under every
    policy, so the weights copy exactly) and the caller's policy is restored afterwards.
    """
    weights = os.path.join(model_dir, layout.WEIGHTS)
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, layout.CHECKPOINTS))
    if not storage.exists(weights) and not latest:
        raise ExportError(f"--model_dir: {model_dir} holds neither {layout.WEIGHTS} nor a checkpoint; has training finished?")
    source = newest_weights(model_dir, weights, latest)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = resnet_v2.build_model(record["num_classes"], record["image_size"], record["depth"])
        try:
            if source == weights:
                with storage.local_copy(weights) as local:  # Keras reads a local .weights.h5 only
                    model.load_weights(local)
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


def run_data(record: dict, data_dir: str | None) -> shards.DatasetInfo:
    directory = data_dir or record.get("data_dir") or ""
    try:
        info = shards.read_dataset_info(directory)
        info.split_files("val")
    except ValueError as e:
        raise ExportError(f"{one_line(e)} (the parity gate needs the run's validation images; pass --data_dir)") from e
    return info
