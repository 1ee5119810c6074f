"""No batch loop outside training calls a model on an empty batch: the parity gate (validation and
random images), the end-of-run reports (outputs.collect_predictions), int8 calibration and batch
inference / evaluation (inference.predict).

With oneDNN on, TensorFlow's conv2d returns a zero-size batch unchanged, so a Keras model fails on
one (the last test shows it in a process with oneDNN forced on). The other tests feed empty
batches to each loop with a model that fails the test when it sees one, on any CPU.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from toolkit.export import compare as parity
from toolkit.infer import loaders as runtimes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, CLASSES = 8, 3


class NeverEmpty:
    """A stand-in model: linear logits of the first pixels; fails the test on a zero-row call."""

    def __init__(self):
        self.rows = []

    def __call__(self, images):
        images = np.asarray(images, np.float32)
        self.rows.append(len(images))
        assert len(images) > 0, "the model was called on an empty batch"
        logits = images.reshape(len(images), -1)[:, :CLASSES] / 50.0
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True), logits


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def empty():
    return np.zeros((0, SIZE, SIZE, 3), np.float32)


def test_the_parity_gate_skips_empty_validation_and_random_batches():
    """A dataset whose first or last batch is empty (or one in the middle), and an empty random batch."""
    first, second = images(4), images(3, 1)
    # the "encoded" images are the arrays themselves: the bytes runner decodes by stacking them
    validation = [(empty(), [], np.zeros(0, int)), (first, list(first), np.arange(4) % CLASSES),
                  (empty(), [], np.zeros(0, int)), (second, list(second), np.arange(3) % CLASSES),
                  (empty(), [], np.zeros(0, int))]
    a, b = NeverEmpty(), NeverEmpty()
    bytes_calls = []
    report = parity.parity_report({"a": a, "b": b}, iter(validation), [images(2, 2), empty(), images(1, 3)], atol=1e-4,
                            bytes_runner=("a_bytes", "a", lambda encoded: bytes_calls.append(len(encoded)) or a(np.stack(encoded))))
    assert report["passed"], report["failures"]
    assert report["images"]["validation"] == 7 and report["pairs"]["a vs b"]["random"]["images"] == 3
    assert 0 not in a.rows + b.rows + bytes_calls and sorted(set(bytes_calls)) == [3, 4]


def test_the_gate_with_only_empty_batches_fails_without_calling_a_model():
    a = NeverEmpty()
    report = parity.parity_report({"a": a, "b": NeverEmpty()}, iter([(empty(), [], np.zeros(0, int))]), [images(2)], 1e-4)
    assert not report["passed"] and any("no validation images" in line for line in report["failures"])
    assert a.rows == [2]  # the random batch only


def test_the_end_of_run_reports_skip_an_empty_batch():
    import tensorflow as tf

    from toolkit.train import outputs

    calls = []

    def model(x, training=False):
        calls.append(int(x.shape[0]))
        assert x.shape[0] > 0, "the model was called on an empty batch"
        return tf.reshape(x, [x.shape[0], -1])[:, :CLASSES]

    normalized = lambda n, seed: tf.constant(images(n, seed) / 127.5 - 1.0)  # noqa: E731
    dataset = [(normalized(3, 0), tf.constant([0, 1, 2])), (tf.zeros([0, SIZE, SIZE, 3]), tf.zeros([0], tf.int32)),
               (normalized(2, 1), tf.constant([1, 1]))]
    got = outputs.collect_predictions(model, dataset, limit=100, keep_images=4)
    assert calls == [3, 2] and got["labels"].tolist() == [0, 1, 2, 1, 1] and len(got["images"]) == 4


def _jpeg(seed, size=48):
    import io

    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_batch_inference_never_calls_the_model_when_every_file_of_a_batch_fails_to_decode(tmp_path):
    """Files that pass the cheap header check and fail in TensorFlow's decoder: with a batch of 2,
    whole batches of them. tf.data's batch does not emit empty batches either; the guard in the
    loop keeps it so should that change."""
    from toolkit.infer import predict as inference

    names = []
    for i, kind in enumerate(["bad", "bad", "good", "bad", "bad", "bad", "good", "bad", "bad"]):
        data = _jpeg(i)
        path = tmp_path / f"{i}-{kind}.jpg"
        path.write_bytes(data if kind == "good" else data[: len(data) // 3])
        names.append(str(path))
    stand_in = NeverEmpty()
    model = runtimes.Model("none", "", ("a", "b", "c"), SIZE, lambda x: stand_in(x)[0])
    results = list(inference.predict(model, inference.Inputs(tuple(names), count=len(names)), batch_size=2))
    assert [r.input for r in results] == names
    assert [r.ok for r in results] == ["good" in n for n in names], [r.error for r in results]
    assert all("cannot decode" in r.error for r in results if not r.ok)
    assert stand_in.rows and 0 not in stand_in.rows


def test_int8_calibration_skips_empty_batches_and_refuses_to_calibrate_on_nothing(tmp_path, monkeypatch):
    import onnxruntime as ort
    from test_runtimes import tiny_classifier

    from toolkit.export import onnx as onnx_tools

    path = tiny_classifier(tmp_path / "m.onnx")
    fed = []
    real_run = ort.InferenceSession.run

    def run(self, output_names, feed, *args, **kwargs):  # the calibrator's own session runs here
        fed.extend(len(v) for v in feed.values())
        return real_run(self, output_names, feed, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run", run)
    onnx_tools.quantize_int8(path, str(tmp_path / "int8.onnx"), iter([empty(), images(4), empty(), images(2, 1), empty()]), "nhwc")
    assert fed and 0 not in fed and sum(fed) >= 6
    assert os.path.getsize(tmp_path / "int8.onnx") > 0
    with pytest.raises(ValueError, match="no images"):
        onnx_tools.quantize_int8(path, str(tmp_path / "none.onnx"), iter([empty(), empty()]), "nhwc")


def test_with_onednn_on_a_keras_model_fails_on_an_empty_batch_and_the_loops_never_give_it_one():
    """In a process with TF_ENABLE_ONEDNN_OPTS=1: the model itself fails on zero rows (the hazard
    is real here), the gate's Keras runner and the end-of-run reports go through batches that hold one."""
    code = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf, keras
        from toolkit.common import machine
        from toolkit.train import outputs
        from toolkit.export import compare as parity
        from toolkit.export import gate
        model = keras.Sequential([keras.Input(({SIZE}, {SIZE}, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Dense({CLASSES})])
        empty = np.zeros((0, {SIZE}, {SIZE}, 3), np.float32)
        x = np.random.default_rng(0).uniform(0, 255, (5, {SIZE}, {SIZE}, 3)).astype(np.float32)
        try:
            model(empty, training=False)
            direct = "ran"
        except Exception as e:
            direct = type(e).__name__
        run = gate.keras_runner(model)
        validation = [(empty, [], np.zeros(0, int)), (x, [b"x"] * 5, np.arange(5) % {CLASSES}), (empty, [], np.zeros(0, int))]
        report = parity.parity_report({{"keras": run, "again": run}}, iter(validation), [x[:2], empty], 1e-4)
        batches = [(tf.constant(x / 127.5 - 1), tf.constant(np.arange(5) % {CLASSES})), (tf.constant(empty), tf.zeros([0], tf.int64))]
        got = outputs.collect_predictions(model, batches, 100, 2)
        print(json.dumps({{"onednn": machine.onednn_enabled(), "direct": direct, "passed": report["passed"],
                           "validation": report["images"]["validation"], "predicted": len(got["predictions"])}}))
    """)
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["passed"] and result["validation"] == 5 and result["predicted"] == 5
    if not result["onednn"]:
        pytest.skip("this TensorFlow could not turn oneDNN on: the loops passed, the hazard is not shown")
    assert result["direct"] != "ran"  # oneDNN's conv2d hands the empty input back: the model cannot run on it
