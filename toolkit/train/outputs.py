"""What the chief leaves in model_dir at the end of a run: weights, plots, summary.json and summary.md."""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from toolkit.common import atomic, storage
from toolkit.common import reports
from toolkit.common.batches import nonempty_batches
from toolkit import layout

PREDICTION_GRID = 24
CONFUSION_LIMIT = 20000  # validation images used for the confusion matrix of a very large set


def save_weights(model, model_dir: str) -> str:
    """Write the model's weights to model_dir/model.weights.h5 (atomically); returns the path."""
    path = os.path.join(model_dir, layout.WEIGHTS)
    atomic.write_with(path, model.save_weights)
    return path


def collect_predictions(model, dataset: tf.data.Dataset, limit: int, keep_images: int) -> dict:
    """Run a Keras model over a validation set, for the end-of-run reports.

    Empty batches are skipped (a Keras model fails on one with oneDNN on).

    Args:
      model: the Keras model (logits out).
      dataset: (normalized images, labels) batches.
      limit: stop after about this many images.
      keep_images: how many images to keep, back in [0, 255], for display.

    Returns:
      {labels, predictions, confidence (top probability), images}, numpy arrays.
    """
    labels, predictions, confidence, images = [], [], [], []
    seen = 0
    for batch_images, batch_labels in nonempty_batches(dataset):
        probs = tf.nn.softmax(tf.cast(model(batch_images, training=False), tf.float32)).numpy()
        labels.append(batch_labels.numpy())
        predictions.append(probs.argmax(axis=1))
        confidence.append(probs.max(axis=1))
        if sum(len(x) for x in images) < keep_images:
            images.append(((batch_images.numpy() + 1.0) * 127.5)[: keep_images])
        seen += len(probs)
        if seen >= limit:
            break
    cat = lambda xs: np.concatenate(xs)[:limit] if xs else np.zeros((0,))  # noqa: E731
    return {
        "labels": cat(labels).astype(int),
        "predictions": cat(predictions).astype(int),
        "confidence": cat(confidence),
        "images": np.concatenate(images)[:keep_images] if images else np.zeros((0, 1, 1, 3)),
    }


def write_reports(model, eval_dataset: tf.data.Dataset, class_names, model_dir: str) -> dict:
    """The end-of-run pictures of a training directory.

    Args:
      model: the trained Keras model.
      eval_dataset: the validation (normalized images, labels) batches.
      class_names: the names of the classes.
      model_dir: where metrics.jsonl is and the pictures go.

    Returns:
      {name: path} of curves.png, predictions.png and confusion_matrix.png/.json.
    """
    paths = {}
    metrics_path = os.path.join(model_dir, layout.METRICS)
    if storage.exists(metrics_path):
        paths["curves"] = reports.plot_curves(reports.read_metrics(metrics_path), os.path.join(model_dir, layout.CURVES))
    got = collect_predictions(model, eval_dataset, CONFUSION_LIMIT, PREDICTION_GRID)
    n = len(got["images"])
    paths["predictions"] = reports.plot_predictions(
        got["images"], got["labels"][:n], got["predictions"][:n], class_names,
        os.path.join(model_dir, layout.PREDICTIONS_PNG), probabilities=got["confidence"][:n],
    )
    counts = reports.confusion_matrix(got["labels"], got["predictions"], len(class_names))
    paths["confusion_matrix"] = reports.write_confusion(
        counts, class_names, os.path.join(model_dir, layout.CONFUSION_PNG), os.path.join(model_dir, layout.CONFUSION_JSON)
    )
    return paths


def best_epoch(evaluations: list, key: str = "val_top1") -> tuple:
    """(best value of `key`, its epoch) among `evaluations` (validation_history's records); key
    "ema_val_top1" ranks the EMA weights. (nan, None) when no evaluation has it."""
    vals = [r for r in evaluations if key in r]
    if not vals:
        return float("nan"), None
    best = max(vals, key=lambda r: r[key])
    return best[key], best["epoch"]


def validation_history(model_dir: str) -> list:
    """Every evaluation of the run in metrics.jsonl (the parts before a resume included), in order."""
    path = os.path.join(model_dir, layout.METRICS)
    records = reports.read_metrics(path) if storage.exists(path) else []
    return [{k: v for k, v in r.items() if k not in ("kind", "time")} for r in records if r.get("kind") == "val"]


def read_summary(model_dir: str) -> dict:
    """model_dir/summary.json."""
    with storage.open(os.path.join(model_dir, layout.SUMMARY)) as f:
        return json.load(f)


def write_summary(summary: dict, model_dir: str) -> None:
    """summary.json and summary.md (the same figures for people) in model_dir, atomically."""
    atomic.write_json(os.path.join(model_dir, layout.SUMMARY), summary)
    atomic.write_text(os.path.join(model_dir, layout.SUMMARY_MD), reports.summary_markdown(summary))
