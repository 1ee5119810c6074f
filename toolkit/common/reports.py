"""Pictures and summaries of a run: curves.png, confusion_matrix.png/.json, predictions.png, summary.md.

Pure functions of plain data (metrics records, labels, predictions, images), so they can be
called by the trainer, by toolkit.infer.evaluate (python -m toolkit.evaluate), or on an old run's metrics.jsonl.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from toolkit.common import atomic, storage  # noqa: E402
from toolkit.common import markdown


def _save(fig, path: str) -> str:
    try:
        atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)
    return path


def read_metrics(path: str) -> list:
    """The records of a metrics.jsonl file, in order."""
    with storage.open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def epoch_curves(records: Sequence[dict]) -> dict:
    """Per epoch: mean logged training loss and top-1, validation loss and top-1 (the last record wins on repeats)."""
    train, train_top1 = defaultdict(list), defaultdict(list)
    val = {}
    for r in records:
        if r.get("kind") == "train":
            train[r["epoch"]].append(r["loss"])
            if "top1" in r:
                train_top1[r["epoch"]].append(r["top1"])
        elif r.get("kind") == "val":
            val[r["epoch"]] = r
    epochs = sorted(set(train) | set(val))
    return {
        "epoch": epochs,
        "train_loss": [float(np.mean(train[e])) if train.get(e) else None for e in epochs],
        "val_loss": [val[e]["val_loss"] if e in val else None for e in epochs],
        "val_top1": [val[e]["val_top1"] if e in val else None for e in epochs],
        "train_top1": [float(np.mean(train_top1[e])) if train_top1.get(e) else None for e in epochs],
    }


def plot_curves(records: Sequence[dict], path: str) -> str:
    """Loss and top-1 per epoch, training (mean of the logged intervals) and validation."""
    c = epoch_curves(records)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))

    def line(ax, key, label, marker):
        pts = [(e, v) for e, v in zip(c["epoch"], c[key]) if v is not None]
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=label)

    line(ax_loss, "train_loss", "training loss", "o")
    line(ax_loss, "val_loss", "validation loss", "s")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    if any(v is not None and v > 0 for v in c["val_loss"] + c["train_loss"]):
        ax_loss.set_yscale("log")
    line(ax_acc, "train_top1", "training top-1 (augmented)", "o")
    line(ax_acc, "val_top1", "validation top-1", "s")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted] over num_classes x num_classes (int64) of label / prediction pairs."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predictions)), 1)
    return counts


def per_class_metrics(counts: np.ndarray, class_names: Sequence[str]) -> list:
    """[{class, support, precision, recall}] per class of a confusion matrix (0.0 where undefined)."""
    rows = []
    for i, name in enumerate(class_names):
        tp = int(counts[i, i])
        support = int(counts[i].sum())
        predicted = int(counts[:, i].sum())
        rows.append({
            "class": name,
            "support": support,
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / support if support else 0.0,
        })
    return rows


def write_confusion(counts: np.ndarray, class_names: Sequence[str], png_path: str, json_path: str | None = None) -> str:
    """Draw a confusion matrix (rows normalized) and optionally write it as JSON.

    Args:
      counts: counts[true, predicted], as `confusion_matrix` makes.
      class_names: the names of the rows and columns.
      png_path: the picture to write.
      json_path: if given, also the matrix, the names and `per_class_metrics` as JSON.

    Returns:
      png_path.
    """
    if json_path:
        atomic.write_json(json_path, {
            "class_names": list(class_names),
            "matrix": counts.tolist(),  # rows: true class, columns: predicted class
            "per_class": per_class_metrics(counts, class_names),
        })
    n = len(class_names)
    size = min(2 + 0.5 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    normalized = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), class_names, rotation=60, ha="right")
        ax.set_yticks(range(n), class_names)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                        color="white" if normalized[i, j] > 0.5 else "black", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix ({int(counts.sum())} images)")
    return _save(fig, png_path)


def plot_predictions(images: np.ndarray, labels, predictions, class_names, path: str, probabilities=None, columns: int = 6) -> str:
    """A grid of images titled true/predicted; wrong ones in red.

    Args:
      images: uint8 or float images in [0, 255].
      labels, predictions: class indices, one per image.
      class_names: the names of the classes.
      path: the PNG to write.
      probabilities: optional top probability per image, added to the titles.
      columns: images per row.

    Returns:
      path.
    """
    n = len(images)
    rows = max(1, int(np.ceil(n / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(np.clip(images[k], 0, 255).astype(np.uint8))
        right = labels[k] == predictions[k]
        conf = f" {probabilities[k]:.2f}" if probabilities is not None else ""
        ax.set_title(f"true: {class_names[labels[k]]}\npred: {class_names[predictions[k]]}{conf}",
                     fontsize=8, color="green" if right else "red")
        if not right:
            for side in ("top", "bottom", "left", "right"):
                ax.spines[side].set_visible(True)
                ax.spines[side].set_color("red")
                ax.spines[side].set_linewidth(3)
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("validation predictions (wrong ones in red)")
    return _save(fig, path)


def summary_markdown(summary: dict) -> str:
    """summary.md: the figures a person looks for first, then the artifacts."""
    lines = ["# Training run summary", ""]
    table = [
        ("validation top-1", f"{summary.get('val_top1', float('nan')):.4f}"),
        ("validation top-5", f"{summary.get('val_top5', float('nan')):.4f}"),
        ("validation loss", f"{summary.get('val_loss', float('nan')):.4f}"),
        ("best validation top-1", f"{summary.get('best_val_top1', float('nan')):.4f} (epoch {summary.get('best_epoch', '?')})"),
        *([("EMA weights: validation top-1 (exported)", f"{summary['ema_val_top1']:.4f}"),
           ("EMA weights: best validation top-1",
            f"{summary.get('best_ema_val_top1', float('nan')):.4f} (epoch {summary.get('best_ema_epoch', '?')})")]
          if "ema_val_top1" in summary else []),
        ("epochs / steps", f"{summary.get('epochs')} / {summary.get('steps')}"),
        ("training images/s", f"{summary.get('train_images_per_sec', 0):.1f}"),
        *([("training time (with evaluations)", f"{summary['train_seconds'] / 60:.1f} min")]
          if "train_seconds" in summary else []),
        ("precision / XLA", f"{summary.get('precision')} / {summary.get('xla')}"),
        ("strategy", f"{summary.get('distribution')} x{summary.get('replicas')} replicas, {summary.get('workers', 1)} worker(s)"),
        ("model", f"ResNetV2, {summary.get('params', 0):,} parameters, {summary.get('image_size')} px, {summary.get('num_classes')} classes"),
        ("data", f"{summary.get('data_dir')} ({summary.get('train_images', '?')} training, {summary.get('val_images', '?')} validation images)"),
    ]
    if "export" in summary:
        export = summary["export"]
        table.append(("export parity", "passed" if export.get("parity_passed") else "FAILED"))
    lines += markdown.table(("", ""), table) + [""]
    artifacts = summary.get("artifacts", {})
    if artifacts:
        lines += ["## Artifacts", ""] + [f"- {k}: `{v}`" for k, v in artifacts.items()] + [""]
    config = summary.get("config")
    if config:
        lines += ["## Configuration", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)
