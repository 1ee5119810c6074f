"""The parity gate's arithmetic: do the exported formats compute what the trained model does?

Every format is a function from float32 NHWC images in [0, 255] to (probabilities, logits). They
run on real validation images (through the shared evaluation preprocessing) and on random images
at several batch sizes (which also proves the dynamic batch axis). Each pair of formats gets the
max and mean absolute difference of probabilities and of logits, and top-1 / top-5 agreement;
the gate passes when every pair stays within `atol` on probabilities, agrees on every top-1 and
keeps logits within LOGITS_RTOL of their scale.
The float32 ONNX model runs twice, at onnxruntime's default graph optimization level and with
optimizations disabled (the export names them "onnx" and "onnx_unoptimized"): graph optimizations
change the arithmetic, and both must pass; `format_verdicts` gives each format's own verdict.
No runner is ever called on an empty batch (nonempty_batches).
The float16 and int8 variants are not gated (they are not meant to be exact): the report gives
their top-1 agreement with the float32 ONNX model and their validation accuracy.

Pure functions of outputs: the formats are given as runners, the images as batches
(toolkit.data.records.image_batches reads the validation images); toolkit.export.run runs it.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from toolkit.common.batches import nonempty_batches

RANDOM_BATCH_SIZES = (1, 7, 32)
TOP_K = 5
# Logits are gated too, relative to their scale: a confident model's softmax saturates (a logit
# gap above ~17 gives probabilities of exactly 1 and 0 in float32), which would hide any logit
# difference from the probability criterion. Float32 formats differ by 2e-7 to 1e-5 of the
# scale (a trained 32 px model; a 224 px one with random convolutions); a wrong weight or op by
# far more than 1e-3.
LOGITS_RTOL = 1e-3

Runner = Callable[[np.ndarray], tuple]  # images -> (probabilities, logits)


def random_images(image_size: int, batch_sizes: Sequence[int] = RANDOM_BATCH_SIZES, seed: int = 0) -> list:
    """Uniform noise in [0, 255], one float32 NHWC batch of image_size x image_size per batch size.

    Args:
      image_size: the side of the square images.
      batch_sizes: one batch of each size (several sizes prove the dynamic batch axis).
      seed: the numpy seed (the same images every run).
    """
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 255, (n, image_size, image_size, 3)).astype(np.float32) for n in batch_sizes]


def collect(runners: dict[str, Runner], batches: Iterable[np.ndarray]) -> dict:
    """Run every runner on every batch: {name: (probabilities, logits)} concatenated over batches."""
    parts = {name: ([], []) for name in runners}
    for batch in nonempty_batches(batches):
        for name, run in runners.items():
            probabilities, logits = run(batch)
            parts[name][0].append(np.asarray(probabilities, np.float32))
            parts[name][1].append(np.asarray(logits, np.float32))
    return {name: (np.concatenate(p), np.concatenate(l)) for name, (p, l) in parts.items() if p}


def _top_k_sets(x: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.argsort(-x, axis=1, kind="stable")[:, :k], axis=1)


def compare(reference: tuple, other: tuple, atol: float) -> dict:
    """Differences between two formats' (probabilities, logits) on the same images.

    top5_agreement is the fraction of images whose five best classes (fewer with fewer classes)
    are the same set in both. logits_diff_relative is the max abs logit difference over the
    reference's largest |logit| (at least 1). Passing: probabilities within `atol`, the same top-1
    everywhere, logits_diff_relative within LOGITS_RTOL.
    """
    (p_ref, l_ref), (p, l) = reference, other
    if p_ref.shape != p.shape:
        raise ValueError(f"output shapes differ: {p_ref.shape} vs {p.shape}")
    k = min(TOP_K, p.shape[1])
    dp, dl = np.abs(p_ref - p), np.abs(l_ref - l)
    result = {
        "images": int(p.shape[0]),
        "max_abs_diff_probabilities": float(dp.max()),
        "mean_abs_diff_probabilities": float(dp.mean()),
        "max_abs_diff_logits": float(dl.max()),
        "mean_abs_diff_logits": float(dl.mean()),
        "logits_diff_relative": float(dl.max() / max(1.0, float(np.abs(l_ref).max()))),
        "top1_agreement": float(np.mean(p_ref.argmax(1) == p.argmax(1))),
        "top5_agreement": float(np.mean(np.all(_top_k_sets(p_ref, k) == _top_k_sets(p, k), axis=1))),
    }
    result["passed"] = bool(
        result["max_abs_diff_probabilities"] <= atol
        and result["top1_agreement"] == 1.0
        and result["logits_diff_relative"] <= LOGITS_RTOL
    )
    return result


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of rows whose most probable class is the label (nan for no rows)."""
    return float(np.mean(probabilities.argmax(1) == labels)) if len(labels) else float("nan")


def parity_report(
    runners: dict[str, Runner],
    validation: Iterable[tuple],
    random: Sequence[np.ndarray],
    atol: float,
    bytes_runner: Optional[tuple] = None,
    variants: Optional[dict[str, Runner]] = None,
    variant_reference: str = "onnx",
    unpaired: Iterable[tuple] = (),
) -> dict:
    """The parity report (what parity.json holds).

    runners: {format name: Runner}, every pair is compared and gated except those in `unpaired`
    (two runs of one file, each gated against the others, need no verdict of their own). bytes_runner: optional
    (name, reference, fn(list of encoded bytes) -> outputs), compared with `reference` on the
    validation images only (the bytes path's preprocessing against the shared pipeline's).
    variants: {name: Runner} compared with `variant_reference` but not gated.
    """
    variants = variants or {}
    names = list(runners)
    val_outputs = {name: ([], []) for name in [*names, *variants] + ([bytes_runner[0]] if bytes_runner else [])}
    labels = []
    for images, encoded, batch_labels in nonempty_batches(validation):
        labels.append(batch_labels)
        for name, run in {**runners, **variants}.items():
            _append(val_outputs[name], run(images))
        if bytes_runner:
            _append(val_outputs[bytes_runner[0]], bytes_runner[2](encoded))
    labels = np.concatenate(labels) if labels else np.zeros([0], np.int32)
    val = {name: (np.concatenate(p), np.concatenate(l)) for name, (p, l) in val_outputs.items() if p}
    rand = collect(runners, random)

    pairs = {}
    skipped = {frozenset(pair) for pair in unpaired}
    for a, b in itertools.combinations(names, 2):
        if frozenset((a, b)) in skipped:
            continue
        sets = {}
        if val:
            sets["validation"] = compare(val[a], val[b], atol)
        sets["random"] = compare(rand[a], rand[b], atol)
        pairs[f"{a} vs {b}"] = {**sets, "passed": all(s["passed"] for s in sets.values())}
    if bytes_runner and val:
        name, reference, _ = bytes_runner
        sets = {"validation": compare(val[reference], val[name], atol)}
        pairs[f"{reference} vs {name}"] = {**sets, "passed": sets["validation"]["passed"]}

    report = {
        "passed": False,
        "criteria": {"max_abs_diff_probabilities": atol, "top1_agreement": 1.0, "logits_diff_relative": LOGITS_RTOL},
        "images": {
            "validation": int(len(labels)),
            "random": int(sum(len(r) for r in random)),
            "random_batch_sizes": [int(len(r)) for r in random],
        },
        "pairs": pairs,
        "validation_accuracy": {name: accuracy(val[name][0], labels) for name in [*names, *variants] if name in val},
        "variants": {},
    }
    for name in variants:
        if name in val and variant_reference in val:
            agreement = compare(val[variant_reference], val[name], atol)
            report["variants"][name] = {
                "compared_with": variant_reference,
                "images": agreement["images"],
                "top1_agreement": agreement["top1_agreement"],
                "top5_agreement": agreement["top5_agreement"],
                "max_abs_diff_probabilities": agreement["max_abs_diff_probabilities"],
                "validation_accuracy": report["validation_accuracy"][name],
            }
    report["failures"] = failures(report)
    report["passed"] = not report["failures"]
    return report


def _append(parts: tuple, outputs: tuple) -> None:
    parts[0].append(np.asarray(outputs[0], np.float32))
    parts[1].append(np.asarray(outputs[1], np.float32))


def failures(report: dict) -> list:
    """One line per gated pair and image set that broke the criteria."""
    atol = report["criteria"]["max_abs_diff_probabilities"]
    lines = []
    for pair, sets in report["pairs"].items():
        for set_name, r in sets.items():
            if set_name == "passed" or r["passed"]:
                continue
            lines.append(
                f"{pair} on {r['images']} {set_name} images: max abs diff of probabilities "
                f"{r['max_abs_diff_probabilities']:.3g} (limit {atol:g}), of logits {r['max_abs_diff_logits']:.3g} "
                f"({r['logits_diff_relative']:.2g} of their scale, limit {LOGITS_RTOL:g}), top-1 agreement {r['top1_agreement']:.2%}"
            )
    if not report["pairs"]:
        lines.append("no formats were compared")
    if not report["images"]["validation"]:
        lines.append("no validation images were read: the gate needs real images")
    return lines


def summary_lines(report: dict) -> list:
    """A few lines for the progress log."""
    lines = []
    for pair, sets in report["pairs"].items():
        worst = max((r for k, r in sets.items() if k != "passed"), key=lambda r: r["max_abs_diff_probabilities"])
        lines.append(
            f"  {pair}: max |dp| {worst['max_abs_diff_probabilities']:.2e}, max |dlogit| {worst['max_abs_diff_logits']:.2e}, "
            f"top-1 {min(r['top1_agreement'] for k, r in sets.items() if k != 'passed'):.2%} "
            f"{'ok' if sets['passed'] else 'FAILED'}"
        )
    for name, v in report["variants"].items():
        lines.append(
            f"  {name}: top-1 agreement with {v['compared_with']} {v['top1_agreement']:.2%}, "
            f"validation accuracy {v['validation_accuracy']:.4f} (float32: {report['validation_accuracy'].get(v['compared_with'], float('nan')):.4f})"
        )
    levels = report.get("onnxruntime_optimization_levels")
    if levels:
        verdicts = ", ".join(f"{level} {'ok' if v['passed'] else 'FAILED'}" for level, v in levels.items())
        lines.append(f"  onnxruntime {report.get('onnxruntime', '?')}: {verdicts}")
    return lines


def format_verdicts(report: dict, names: Iterable[str]) -> dict:
    """{format name: whether every gated pair it is part of passed} (False when it is in none)."""
    verdicts = {}
    for name in names:
        mine = [sets["passed"] for pair, sets in report["pairs"].items() if name in pair.split(" vs ")]
        verdicts[name] = bool(mine) and all(mine)
    return verdicts
