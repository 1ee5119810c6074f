"""The parity gate's arithmetic (toolkit.export.compare) on synthetic outputs with hand-computed figures."""

import numpy as np
import pytest

from toolkit.export import compare as parity

NUM_CLASSES = 10


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def linear_model(images, shift=0.0):
    """A deterministic stand-in for a format: logits from the first pixels of each image."""
    flat = np.asarray(images, np.float32).reshape(len(images), -1)
    logits = flat[:, :NUM_CLASSES] / 25.0 + shift
    return softmax(logits), logits


def batches(n, size=8, batch=4, seed=1):
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        k = min(batch, n - start)
        images = rng.uniform(0, 255, (k, size, size, 3)).astype(np.float32)
        yield images, [b"x"] * k, rng.integers(0, NUM_CLASSES, k)


def test_compare_gives_the_hand_computed_figures():
    reference = (np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32), np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0]], np.float32))
    other = (np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]], np.float32), np.array([[2.0, 1.0, 0.5], [0.0, 1.0, 3.0]], np.float32))
    r = parity.compare(reference, other, atol=0.2)
    assert r["images"] == 2
    assert r["max_abs_diff_probabilities"] == pytest.approx(0.1) and r["mean_abs_diff_probabilities"] == pytest.approx(0.2 / 6)
    assert r["max_abs_diff_logits"] == 0.5 and r["mean_abs_diff_logits"] == pytest.approx(0.5 / 6)
    assert r["logits_diff_relative"] == pytest.approx(0.5 / 3.0)  # over the reference's largest |logit|
    assert r["top1_agreement"] == 1.0 and r["top5_agreement"] == 1.0
    assert not r["passed"]  # probabilities within 0.2, top-1 the same, but logits 17% of their scale apart
    same = parity.compare(reference, reference, atol=0.0)
    assert same["passed"] and same["max_abs_diff_probabilities"] == 0 and same["logits_diff_relative"] == 0


def test_a_difference_above_the_limit_fails_and_one_below_passes():
    p, l = linear_model(np.random.default_rng(0).uniform(0, 255, (6, 8, 8, 3)))
    nudged = p.copy()
    nudged[2, 3] += 5e-5
    assert parity.compare((p, l), (nudged, l), atol=1e-4)["passed"]
    nudged[2, 3] += 1e-4
    r = parity.compare((p, l), (nudged, l), atol=1e-4)
    assert not r["passed"] and r["max_abs_diff_probabilities"] == pytest.approx(1.5e-4, rel=1e-3)


def test_top1_and_top5_agreement_count_what_they_say():
    logits = np.tile(np.arange(NUM_CLASSES, dtype=np.float32)[::-1], (4, 1))  # class 0 best, 9 worst
    swapped_top1 = logits.copy()
    swapped_top1[0, [0, 1]] = swapped_top1[0, [1, 0]]  # image 0: top-1 changes, top-5 set does not
    swapped_fifth = logits.copy()
    swapped_fifth[1, [4, 5]] = swapped_fifth[1, [5, 4]]  # image 1: top-1 same, top-5 set changes
    ref = (softmax(logits), logits)
    r1 = parity.compare(ref, (softmax(swapped_top1), swapped_top1), atol=1.0)
    r5 = parity.compare(ref, (softmax(swapped_fifth), swapped_fifth), atol=1.0)
    assert r1["top1_agreement"] == 0.75 and r1["top5_agreement"] == 1.0 and not r1["passed"]
    assert r5["top1_agreement"] == 1.0 and r5["top5_agreement"] == 0.75


def test_logit_differences_hidden_by_a_saturated_softmax_still_fail():
    logits = np.array([[40.0, 0.0, -3.0], [-5.0, 60.0, 1.0]], np.float32)
    shifted = logits.copy()
    shifted[0, 2] += 2.0  # a real difference, invisible after the softmax
    p, q = softmax(logits), softmax(shifted)
    assert np.abs(p - q).max() < 1e-12
    r = parity.compare((p, logits), (q, shifted), atol=1e-4)
    assert not r["passed"] and r["max_abs_diff_probabilities"] < 1e-4 and r["top1_agreement"] == 1.0
    assert r["logits_diff_relative"] == pytest.approx(2.0 / 60.0)
    tiny = logits + np.float32(1e-5) * logits  # float32-rounding-sized differences pass
    assert parity.compare((p, logits), (softmax(tiny), tiny), atol=1e-4)["passed"]


def test_top5_with_fewer_than_five_classes_compares_every_class():
    logits = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)
    swapped = logits[:, ::-1].copy()  # every top-1 differs; the set of both classes is the same
    r = parity.compare((softmax(logits), logits), (softmax(swapped), swapped), 1.0)
    assert r["top1_agreement"] == 0.0 and r["top5_agreement"] == 1.0


def test_measure_finds_a_format_wrong_only_at_one_batch_size():
    def breaks_at_seven(images):
        return linear_model(images, shift=np.float32(3.0) * (np.arange(NUM_CLASSES) == 0)) if len(images) == 7 else linear_model(images)

    report = parity.parity_report(
        {"ref": linear_model, "other": breaks_at_seven},
        batches(10),
        parity.random_images(8, seed=3),
        atol=1e-4,
    )
    pair = report["pairs"]["ref vs other"]
    assert pair["validation"]["passed"] and not pair["random"]["passed"] and not report["passed"]
    assert report["images"] == {"validation": 10, "random": 40, "random_batch_sizes": [1, 7, 32]}
    assert len(report["failures"]) == 1
    assert "ref vs other" in report["failures"][0] and "random" in report["failures"][0]


def test_every_pair_is_compared_and_the_bytes_path_on_validation_only():
    report = parity.parity_report(
        {"a": linear_model, "b": linear_model, "c": linear_model},
        batches(6),
        parity.random_images(8, batch_sizes=(1, 2)),
        atol=1e-4,
        bytes_runner=("a_bytes", "a", lambda encoded: linear_model(np.zeros((len(encoded), 8, 8, 3)))),
    )
    assert set(report["pairs"]) == {"a vs b", "a vs c", "b vs c", "a vs a_bytes"}
    assert set(report["pairs"]["a vs a_bytes"]) == {"validation", "passed"}
    assert not report["pairs"]["a vs a_bytes"]["passed"]  # zeros instead of the images
    assert all(report["pairs"][p]["passed"] for p in ("a vs b", "a vs c", "b vs c"))


def test_no_validation_images_fails_the_gate():
    report = parity.parity_report({"a": linear_model, "b": linear_model}, iter(()), parity.random_images(8), 1e-4)
    assert not report["passed"] and report["images"]["validation"] == 0
    assert any("no validation images" in line for line in report["failures"])


def test_variants_are_reported_but_not_gated():
    rng = np.random.default_rng(7)

    def noisy(images):
        logits = rng.normal(0, 5, (len(images), NUM_CLASSES)).astype(np.float32)
        return softmax(logits), logits

    report = parity.parity_report(
        {"keras": linear_model, "onnx": linear_model}, batches(12), parity.random_images(8), 1e-4, variants={"onnx_int8": noisy}
    )
    assert report["passed"]
    v = report["variants"]["onnx_int8"]
    assert v["compared_with"] == "onnx" and v["images"] == 12 and 0 <= v["top1_agreement"] < 1
    assert 0 <= v["validation_accuracy"] <= 1 and "onnx" in report["validation_accuracy"]


def test_two_runs_of_one_model_are_each_judged_against_the_references_only():
    """The ONNX model at two onnxruntime optimization levels: one level off fails itself, not the other."""

    def off(images):
        return linear_model(images, shift=np.float32(0.5) * (np.arange(NUM_CLASSES) == 0))

    report = parity.parity_report(
        {"keras": linear_model, "saved_model": linear_model, "onnx": linear_model, "onnx_unoptimized": off},
        batches(8), parity.random_images(8, batch_sizes=(1, 3)), 1e-4, unpaired=[("onnx", "onnx_unoptimized")],
    )
    assert "onnx vs onnx_unoptimized" not in report["pairs"] and "keras vs onnx_unoptimized" in report["pairs"]
    assert not report["passed"] and all("onnx_unoptimized" in line for line in report["failures"])
    assert parity.format_verdicts(report, ["onnx", "onnx_unoptimized", "keras", "absent"]) == {
        "onnx": True, "onnx_unoptimized": False, "keras": False, "absent": False,
    }
    report["onnxruntime"] = "1.32.0"
    report["onnxruntime_optimization_levels"] = {"ORT_ENABLE_ALL": {"format": "onnx", "passed": True},
                                                 "ORT_DISABLE_ALL": {"format": "onnx_unoptimized", "passed": False}}
    assert parity.summary_lines(report)[-1] == "  onnxruntime 1.32.0: ORT_ENABLE_ALL ok, ORT_DISABLE_ALL FAILED"
