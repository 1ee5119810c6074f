"""toolkit.infer.loaders: the one onnxruntime session builder (optimization level, layout) and the
empty-batch guard, on a small ONNX classifier written here with onnx.helper."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolkit.common.batches import batch_rows, nonempty_batches
from toolkit.infer import loaders as runtimes

SIZE, CLASSES = 8, 3


def tiny_classifier(path, layout="nhwc", seed=0):
    """images [batch, 8, 8, 3] (or [batch, 3, 8, 8]) -> two convolutions -> probabilities, logits."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.1, (4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4, 4, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.5, (4, CLASSES)).astype(np.float32), "fc"),
    ]
    nhwc = layout == "nhwc"
    nodes = [helper.make_node("Transpose", ["images"], ["x"], perm=[0, 3, 1, 2])] if nhwc else []
    nodes += [
        helper.make_node("Conv", ["x" if nhwc else "images", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    shape = ["batch", SIZE, SIZE, 3] if nhwc else ["batch", 3, SIZE, SIZE]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", CLASSES]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"input_layout": layout.upper(), "image_size": str(SIZE), "class_names": '["a", "b", "c"]'})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def images(n, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize("level", runtimes.OPTIMIZATION_LEVELS)
def test_the_session_runs_at_the_optimization_level_asked_for(tmp_path, level):
    session, run = runtimes.onnx_session(tiny_classifier(tmp_path / "m.onnx"), optimization=level)
    assert session.get_session_options().graph_optimization_level == getattr(ort.GraphOptimizationLevel, level)
    probabilities, logits = run(images(5), ["probabilities", "logits"])
    assert probabilities.shape == logits.shape == (5, CLASSES)


def test_the_default_level_is_onnxruntimes_own_and_a_bad_name_is_refused(tmp_path):
    path = tiny_classifier(tmp_path / "m.onnx")
    session, _ = runtimes.onnx_session(path)
    assert session.get_session_options().graph_optimization_level == ort.SessionOptions().graph_optimization_level
    with pytest.raises(ValueError, match="ORT_DISABLE_ALL"):
        runtimes.onnx_session(path, optimization="none")


def test_nchw_models_get_nhwc_images_transposed_from_their_metadata_or_the_argument(tmp_path):
    x = images(4)
    _, nhwc = runtimes.onnx_session(tiny_classifier(tmp_path / "nhwc.onnx", "nhwc"))
    _, nchw = runtimes.onnx_session(tiny_classifier(tmp_path / "nchw.onnx", "nchw"))
    _, told = runtimes.onnx_session(str(tmp_path / "nchw.onnx"), layout="nchw", optimization="ORT_DISABLE_ALL")
    expected = nhwc(x, ["logits"])[0]
    np.testing.assert_allclose(nchw(x, ["logits"])[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(told(x, ["logits"])[0], expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected - expected[::-1]).max() > 1e-3  # the images really differ


def test_load_model_uses_the_same_builder_and_reads_the_metadata(tmp_path, monkeypatch):
    path = tiny_classifier(tmp_path / "m.onnx", "nchw")
    calls = []
    real = runtimes.onnx_session
    monkeypatch.setattr(runtimes, "onnx_session", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    model = runtimes.load_model(path, "onnx", threads=1)
    assert len(calls) == 1 and model.class_names == ("a", "b", "c") and model.image_size == SIZE
    _, run = real(path)
    np.testing.assert_array_equal(model(images(3)), run(images(3), ["probabilities"])[0])


def test_an_unloadable_file_is_one_line_naming_the_flag(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(runtimes.InferenceError, match=r"^--model: cannot load"):
        runtimes.load_model(str(tmp_path / "bad.onnx"))


def test_nonempty_batches_drops_exactly_the_empty_ones():
    empty = np.zeros((0, SIZE, SIZE, 3), np.float32)
    batches = [images(2), empty, (empty, []), (images(1), [b"x"]), [np.zeros((0,)), np.zeros((0, 2))], images(3)]
    kept = list(nonempty_batches(iter(batches)))
    assert [batch_rows(b) for b in kept] == [2, 1, 3]
    assert list(nonempty_batches([])) == []
