"""Scoring an exported model on labelled images: the library behind `python -m toolkit.evaluate`.

read_labelled() finds the labelled images of a folder or of TFRecord shards, label_mapping() matches
the data's classes to the model's by name, and evaluate() runs the model over them (through
toolkit.infer.predict, the shared evaluation preprocessing) and writes metrics.json, the confusion
matrix, predictions.png and predictions.csv. See toolkit/evaluate.py for the command line.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from toolkit.common import atomic, storage
from toolkit.infer import predict as inference
from toolkit.infer import prediction_files
from toolkit.infer import loaders as runtimes
from toolkit.config import GRID_IMAGES, MAX_PIXELS
from toolkit.data import splits
from toolkit.data.listing import holds_shards, subdirs, visible_files
from toolkit import layout
from toolkit.common.errors import NothingScored

TOP_K = 5



@dataclasses.dataclass(frozen=True)
class LabelledData:
    inputs: inference.Inputs
    class_names: tuple  # the data's own class names (empty: labels are model indices)
    source: str  # "folder" or "tfrecord"
    directory: str


def read_labelled(data_dir: str, split: str = "val") -> LabelledData:
    """The labelled images of a folder (DIR/<class>/..., or DIR/<split>/<class>/...) or of TFRecord
    shards (the `split` shards), as toolkit.evaluate's --data describes."""
    if not data_dir or not storage.isdir(data_dir, "data"):
        raise runtimes.InferenceError(f"--data: {data_dir!r} is not a directory")
    if holds_shards(data_dir):
        from toolkit.data import shards

        try:
            info = shards.read_dataset_info(data_dir)
        except ValueError as e:
            raise runtimes.InferenceError(str(e).replace("--data_dir", "--data").splitlines()[0]) from e
        split = splits.canonical(split)  # read_dataset_info's names for the splits
        if split not in info.files:
            raise runtimes.InferenceError(f"--split: {data_dir} has no {split!r} shards (it has {', '.join(sorted(info.files))})")
        files = info.split_files(split)
        inputs = inference.Inputs(tuple(files), tfrecord=True, count=info.counts.get(split) or None)
        return LabelledData(inputs, tuple(info.class_names), "tfrecord", data_dir)

    root, classes = data_dir, subdirs(data_dir)
    if classes and set(classes) <= set(splits.ALL_NAMES):
        names = splits.SPLITS.get(splits.canonical(split), (split,))  # --split val also finds validation/
        found = next((name for name in names if name in classes), None)
        if found is None:
            raise runtimes.InferenceError(f"--split: {data_dir} has no {split}/ folder (it has {', '.join(classes)})")
        root = os.path.join(data_dir, found)
        classes = subdirs(root)
    if not classes:
        raise runtimes.InferenceError(f"--data: {data_dir} holds neither TFRecord shards nor class subfolders")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = visible_files(os.path.join(root, name))
        files += found
        labels += [label] * len(found)
    if not files:
        raise runtimes.InferenceError(f"--data: the class folders of {root} hold no files")
    inputs = inference.Inputs(tuple(files), labels=tuple(labels), count=len(files))
    return LabelledData(inputs, tuple(classes), "folder", root)


def label_mapping(data_names, model_names, label_offset: int = 0):
    """A function from a stored label to the model's class index (-1: not one of the model's)."""
    model_index = {n: i for i, n in enumerate(model_names)}
    if data_names:
        unknown = [n for n in data_names if n not in model_index]
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise runtimes.InferenceError(f"--data: classes {shown} are not among the model's {len(model_names)} classes")
        table = [model_index[n] for n in data_names]
    else:
        table = list(range(len(model_names)))

    def to_model(label: int) -> int:
        i = label - label_offset
        return table[i] if 0 <= i < len(table) else -1

    return to_model


class Sample:
    """A uniform random sample of at most `size` items from a stream (reservoir sampling), seeded:
    the prediction grid shows images from the whole set, not its first class folder."""

    def __init__(self, size: int, seed: int):
        self.size, self.seen, self.items = size, 0, []
        self._rng = np.random.default_rng(seed)

    def offer(self, make_item) -> None:
        """Count one item; `make_item()` builds it only when it is kept."""
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(make_item())
        elif self.size:
            slot = int(self._rng.integers(self.seen))
            if slot < self.size:
                self.items[slot] = make_item()


def _grid(right: list, wrong: list, size: int) -> list:
    """Up to `size` examples in input order, wrong ones taking up to half the grid."""
    wrong_shown = sorted(wrong, key=lambda r: r["index"])[: max(size // 2, size - len(right))]
    chosen = wrong_shown + right[: size - len(wrong_shown)]
    return sorted(chosen, key=lambda r: r["index"])


def evaluate(model: runtimes.Model, data: LabelledData, out_dir: str, batch_size: int = 32, label_offset: int = 0,
             grid: int = GRID_IMAGES, max_pixels: int = MAX_PIXELS, log=print) -> dict:
    """Score every labelled image and write the reports.

    Args:
      model: the runtimes.Model to evaluate.
      data: what `read_labelled` found.
      out_dir: where metrics.json, confusion_matrix.png/.json, predictions.png/.csv go.
      batch_size: images per model call.
      label_offset: subtracted from labels stored in TFRecords.
      grid: images in predictions.png (0: none).
      max_pixels: larger images are refused before decoding.
      log: called with each summary line.

    Returns:
      The metrics (what metrics.json holds): top-1, top-k, per class, confusion matrix, failures.
    """
    from toolkit.common import reports

    names = list(model.class_names)
    to_model = label_mapping(data.class_names, names, label_offset if data.source == "tfrecord" else 0)
    k = min(TOP_K, len(names))
    storage.makedirs(out_dir, "out")
    labels, top1, topk_hits, failures = [], [], [], []
    right, wrong = Sample(grid, seed=0), Sample(grid, seed=1)
    start = time.perf_counter()
    with prediction_files.PredictionWriter(os.path.join(out_dir, layout.PREDICTIONS_CSV), names, k, with_labels=True) as writer:
        for r in inference.predict(model, data.inputs, batch_size, max_pixels, keep_images=grid > 0):
            label = to_model(r.label)
            if r.ok and label < 0:
                r = dataclasses.replace(r, probabilities=None, error=f"label {r.label} is not one of the model's classes")
            r = dataclasses.replace(r, label=label)
            writer.write(r)
            if not r.ok:
                failures.append({"input": r.input, "reason": r.error})
                continue
            ranked = [i for i, _ in r.top_k(k)]
            labels.append(label)
            top1.append(ranked[0])
            topk_hits.append(label in ranked)
            sample = wrong if ranked[0] != label else right
            sample.offer(lambda: {"index": r.index, "image": np.clip(r.image, 0, 255).astype(np.uint8), "label": label,
                                  "prediction": ranked[0], "probability": float(r.probabilities[ranked[0]])})
    seconds = time.perf_counter() - start
    if not labels:
        raise NothingScored(f"none of the {len(failures)} images of {data.directory} could be scored (reasons in {os.path.join(out_dir, layout.PREDICTIONS_CSV)})")

    labels, top1 = np.array(labels), np.array(top1)
    counts = reports.confusion_matrix(labels, top1, len(names))
    reports.write_confusion(counts, names, os.path.join(out_dir, layout.CONFUSION_PNG), os.path.join(out_dir, layout.CONFUSION_JSON))
    shown = _grid(right.items, wrong.items, grid)
    if shown:
        reports.plot_predictions(np.stack([s["image"] for s in shown]), [s["label"] for s in shown],
                                 [s["prediction"] for s in shown], names, os.path.join(out_dir, layout.PREDICTIONS_PNG),
                                 probabilities=[s["probability"] for s in shown])
    metrics = {
        "model": storage.absolute(model.path),
        "backend": model.backend,
        "data": storage.absolute(data.directory),
        "data_format": data.source,
        "images": int(len(labels)),
        "failed": len(failures),
        "top1": float(np.mean(top1 == labels)),
        f"top{TOP_K}": float(np.mean(topk_hits)),
        "top_k": k,
        "correct": int(np.sum(top1 == labels)),
        "per_class": reports.per_class_metrics(counts, names),
        "confusion_matrix": counts.tolist(),
        "class_names": names,
        "image_size": model.image_size,
        "seconds": round(seconds, 2),
        "images_per_sec": round(len(labels) / seconds, 2) if seconds > 0 else None,
        "failures": failures,
        "files": {n: os.path.join(out_dir, n) for n in (layout.EVAL_METRICS, layout.CONFUSION_PNG, layout.CONFUSION_JSON, layout.PREDICTIONS_CSV)
                  + ((layout.PREDICTIONS_PNG,) if shown else ())},
    }
    atomic.write_json(os.path.join(out_dir, layout.EVAL_METRICS), metrics)
    for line in summary_lines(metrics):
        log(line)
    return metrics


def summary_lines(metrics: dict) -> list:
    """The lines printed at the end: the overall figures, then precision and recall per class."""
    lines = [f"evaluate: {metrics['images']} images ({metrics['failed']} could not be scored): top-1 {metrics['top1']:.4f}, "
             f"top-{metrics['top_k']} {metrics[f'top{TOP_K}']:.4f} ({metrics['backend']}, {metrics['images_per_sec']} images/s)"]
    width = max(len(r["class"]) for r in metrics["per_class"])
    lines += [f"  {r['class']:<{width}}  precision {r['precision']:.3f}  recall {r['recall']:.3f}  ({r['support']} images)"
              for r in metrics["per_class"]]
    return lines


def evaluate_config(config, log=None) -> dict:
    """Evaluate as a toolkit.config.EvaluateConfig says (python -m toolkit.evaluate); returns the metrics.

    Raises InferenceError for a bad flag or input (before TensorFlow loads, for --model, --data,
    --out) and NothingScored when not one image could be scored.
    """
    from toolkit.common.logs import log as log_line

    if not config.out:
        raise runtimes.InferenceError("--out: must be set")
    backend, _ = runtimes.resolve_model(config.model, config.backend)
    data = read_labelled(config.data, config.split)
    model = runtimes.load_model(config.model, backend, config.threads)
    return evaluate(model, data, config.out, config.batch_size, config.label_offset, config.grid_images, config.max_pixels,
                    log=log or log_line)
