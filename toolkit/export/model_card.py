"""MODEL_CARD.md: what a reviewer or a serving team needs to know about an export, in one page.

Rendered from export.json (the model's interface, data, parity results per format, precision,
machine), the run's summary.json (validation metrics, training machine) and confusion_matrix.json
(per-class precision and recall); a missing summary leaves its sections saying so.
"""

from __future__ import annotations

from typing import Optional

from toolkit.common import machine
from toolkit.common import markdown


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _data(record: dict) -> list:
    data = record.get("data") or {}
    lines = ["## Data", "", f"Source: {data.get('source') or data.get('data_dir') or 'not recorded'}.", ""]
    splits = data.get("splits") or {}
    if not splits:
        return lines + ["Counts per split were not recorded (the shards have no manifest).", ""]
    names = record["class_names"]
    rows = [(split, s.get("count"), *[s.get("per_class", {}).get(n, "-") for n in names]) for split, s in splits.items()]
    return lines + markdown.table(("split", "images", *names), rows, _fmt) + [""]


def _metrics(summary: Optional[dict], confusion: Optional[dict]) -> list:
    lines = ["## Metrics", ""]
    if not summary:
        return lines + ["No summary.json was found beside the weights: the metrics of training are unknown.", ""]
    ema = summary.get("exported_weights") == "ema" and "ema_val_top1" in summary
    val = "ema_val_" if ema else "val_"  # the figures of the weights this export holds
    rows = [("validation", summary.get("val_images"), summary.get(val + "top1"), summary.get(val + "top5"),
             summary.get(val + "loss"))]
    if "test_top1" in summary:
        rows.append(("test", summary.get("test_images"), summary.get("test_top1"), summary.get("test_top5"), summary.get("test_loss")))
    lines += markdown.table(("split", "images", "top-1", "top-5", "loss"), rows, _fmt)
    best = ("best_ema_val_top1", "best_ema_epoch") if ema else ("best_val_top1", "best_epoch")
    lines += ["", ("These are the exponential moving average (EMA) of the weights, which this export holds; "
                   f"the raw weights scored {_fmt(summary.get('val_top1'))} on validation. " if ema else "")
              + f"Best validation top-1 {_fmt(summary.get(best[0]))} at epoch {_fmt(summary.get(best[1]))} "
              f"of {_fmt(summary.get('epochs'))}; trained on {_fmt(summary.get('train_images'))} images."]
    if "test_top1" not in summary:
        lines.append("No test split was evaluated: `python -m toolkit.evaluate --model EXPORT --data DIR` measures one.")
    if confusion and confusion.get("per_class"):
        lines += ["", "Per class, on the validation split:", ""]
        lines += markdown.table(("class", "images", "precision", "recall"),
                                [(r["class"], r["support"], r["precision"], r["recall"]) for r in confusion["per_class"]], _fmt)
    return lines + [""]


def _formats(record: dict) -> list:
    lines = ["## Formats and parity", "",
             f"Parity gate: **{record.get('status', '?')}** (limit: max |difference| of probabilities "
             f"{_fmt(record.get('config', {}).get('parity_atol'))}, the same top-1 on every image, logits within 1e-3 of their scale).", ""]
    rows = []
    for name, r in (record.get("formats") or {}).items():
        if r["gated"]:
            rows.append((name, r["file"], "ok" if r["passed"] else "FAILED", r.get("max_abs_diff_probabilities"), "-", r.get("validation_accuracy")))
        else:
            rows.append((name, r["file"], f"reported (vs {r['compared_with']})", "-", r.get("top1_agreement"), r.get("validation_accuracy")))
    lines += markdown.table(("format", "file", "gate", "max abs diff (probabilities)", "top-1 agreement", "validation accuracy"), rows, _fmt)
    for failure in record.get("failures") or []:
        lines.append(f"- {failure}")
    versions = [f"onnxruntime {record.get('onnxruntime')}"] + ([f"LiteRT {record['litert']}"] if record.get("litert") else [])
    return lines + ["", f"Proven with {', '.join(versions)}.", ""]


def _machine(title: str, m: Optional[dict]) -> str:
    if not m:
        return f"- {title}: not recorded"
    return f"- {title}: {machine.summary_line(m)}"


def render(record: dict, summary: Optional[dict] = None, confusion: Optional[dict] = None) -> str:
    """The markdown of MODEL_CARD.md."""
    names, size = record["class_names"], record["image_size"]
    lines = [
        f"# Model card: ResNet{record['depth']}V2 image classifier, {len(names)} classes, {size}x{size} px", "",
        f"Exported {record.get('created', '?')} by toolkit {record.get('toolkit_version', '?')} from `{record.get('weights', '?')}`.", "",
        "## What it classifies", "",
        f"One of {len(names)} classes per image: " + ", ".join(f"`{n}`" for n in names) + " (output order; labels.txt).", "",
        *_data(record), *_metrics(summary, confusion), *_formats(record),
        "## Precision", "",
        f"Trained as {record.get('trained_precision') or 'unknown'}; every exported model is rebuilt and written in "
        f"{record.get('exported_dtype', 'float32')} unless its name says otherwise (model_fp16.onnx: float16 weights; "
        "model_int8.onnx and model_int8.tflite: int8 weights and activations calibrated on training images, float32 input and outputs).", "",
        "## Input preprocessing", "",
        f"Input `images`: {record['input']['dtype']} [batch, {size}, {size}, 3] (NHWC; model.onnx: {record['onnx']['layout'].upper()}), "
        f"RGB values in [{record['input']['range'][0]}, {record['input']['range'][1]}].", "",
        record["input"]["preprocessing"], "",
        "The SavedModel's `serving_bytes` signature takes the encoded JPEG/PNG files and does all of it in the graph.", "",
        "## Machine", "",
        _machine("exported and gated on", record.get("machine")),
        _machine("trained on", (summary or {}).get("machine")), "",
        "## Intended use", "",
        f"Sorting images into the {len(names)} classes above, for images like the training data (same kind of camera, "
        "framing and subject). Serve the SavedModel (TF Serving; warm-up requests included), model.onnx (onnxruntime, "
        "Triton) or model.tflite (LiteRT on phones and edge devices); all of them compute the same within the limits above.", "",
        "## Known limits", "",
        f"- It always answers one of its {len(names)} classes, also for images of none of them; use the probability as a "
        "confidence signal and set a threshold on your own data.",
        "- The figures above come from the validation split of the training data; they hold only for images like it.",
        f"- Images are reduced to {size}x{size} px: details smaller than that scale are lost.",
        "- Preprocessing outside the graph must follow the recipe above exactly: another crop or resize method changes the answers.",
        "- int8 and float16 models are not held to the parity limits: their top-1 agreement with float32 is in the table.",
        "- Not for decisions about people's health, safety, rights or access to services without human review.", "",
    ]
    return "\n".join(lines)
