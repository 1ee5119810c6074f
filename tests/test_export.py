"""toolkit.export.run end to end on a 32 px ResNet50V2: artifacts, parity gate, dtypes, layouts, failures;
its command lines (python -m toolkit.export, python -m toolkit.parity): flags and exit codes.

One export (weights trained a step under mixed_bfloat16, exported while that policy is still set,
as the trainer leaves it) is shared by most tests; a second one covers mixed_float16, a model_dir
holding only checkpoints, the NCHW layout and replacing an earlier export. tf2onnx runs twice.
"""

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import types

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf

from toolkit import layout
from toolkit.export import rebuild
from toolkit.export import verify
from toolkit.train import checkpoint as ckpt_lib
from toolkit.export import run as exporting
from toolkit.export import onnx as onnx_tools
from toolkit.config import Config, DataConfig, ExportConfig
from toolkit.data import pipeline, preprocess, shards, sources
from toolkit.models import resnet_v2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
SIZE = 32
CLASSES = list(sources.DEMO_CLASSES)


@contextlib.contextmanager
def global_policy(name):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def train_one_step(model, policy, seed=0):
    """One real SGD step (BN statistics move too), with loss scaling under mixed_float16.

    The learning rate is small: gradients of a fresh ResNet50V2 are huge (norm ~4e4) and a larger
    step leaves logits of 1e30 in inference mode.
    """
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.uniform(-1, 1, (4, SIZE, SIZE, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, len(CLASSES), 4))
    optimizer = keras.optimizers.SGD(1e-3)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        scaled = optimizer.scale_loss(loss)
    optimizer.apply(tape.gradient(scaled, model.trainable_variables), model.trainable_variables)
    return optimizer


def write_run(model_dir, data_dir, precision, **overrides):
    record = {
        "toolkit_version": "0.1.0",
        "num_classes": len(CLASSES),
        "class_names": CLASSES,
        "image_size": SIZE,
        "depth": 50,
        "data_dir": data_dir,
        "precision": precision,
        "config": Config().to_dict(),
        **overrides,
    }
    os.makedirs(model_dir, exist_ok=True)
    layout.save_run_record(model_dir, {k: v for k, v in record.items() if v is not None})


def make_run(model_dir, data_dir, policy, save="weights"):
    """A model_dir as the trainer leaves it, trained one step under `policy`; returns the weights."""
    with global_policy(policy):
        keras.utils.set_random_seed(1)
        model = resnet_v2.build_model(len(CLASSES), SIZE, 50)
        optimizer = train_one_step(model, policy)
        assert model.layers[5].compute_dtype != "float32"  # really mixed
        if save == "weights":
            model.save_weights(os.path.join(model_dir, "model.weights.h5"))
        else:
            checkpointer = ckpt_lib.Checkpointer(model_dir, True, 1, model=model, optimizer=optimizer)
            checkpointer.step.assign(1)
            checkpointer.save()
    write_run(model_dir, data_dir, {"mixed_bfloat16": "bf16", "mixed_float16": "fp16"}[policy])
    return [v.numpy() for v in model.weights]


def assert_same_weights(model_dir, original):
    rebuilt, _ = rebuild.rebuild_float32(model_dir, rebuild.read_run(model_dir))
    assert len(rebuilt.weights) == len(original)
    for v, w in zip(rebuilt.weights, original):
        assert v.dtype == "float32"
        np.testing.assert_array_equal(v.numpy(), w, err_msg=v.path)


def assert_float32_artifacts(export_dir):
    loaded = tf.saved_model.load(os.path.join(export_dir, "saved_model"))
    for name in ("serving_default", "serving_bytes"):
        outputs = loaded.signatures[name].structured_outputs
        assert set(outputs) == {"probabilities", "logits"}
        assert {spec.dtype for spec in outputs.values()} == {tf.float32}, name
    assert loaded.signatures["serving_default"].structured_input_signature[1]["images"].dtype == tf.float32
    assert {v.dtype for v in loaded.model_variables} == {tf.float32}
    path = os.path.join(export_dir, "model.onnx")
    assert onnx_tools.float_initializer_types(path) == {"FLOAT"}
    graph = onnx.load(path).graph
    half = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    assert not [n.name for n in graph.node if n.op_type == "Cast" and any(a.name == "to" and a.i in half for a in n.attribute)]


def onnx_shape(path):
    dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


@pytest.fixture(scope="module", autouse=True)
def one_block_per_stage():
    """ResNetV2 with one bottleneck block per stage in this module: every layer kind of ResNet50V2,
    so every op the converters and the gate meet, at a fraction of the build, trace and conversion
    time (about 2.5 minutes of CI on an AVX2 CPU). The full ResNet50V2 is exported, gated and served
    by tests/inference_helpers.py:tiny_export (test_evaluate, test_batch_infer, test_deploy)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(resnet_v2.STAGES, 50, (1, 1, 1, 1))
        yield


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return sources.write_demo_dataset(str(tmp_path_factory.mktemp("demo")), train_count=32, val_count=24, image_size=40, num_shards=2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, demo):
    model_dir = str(tmp_path_factory.mktemp("bf16_run"))
    weights = make_run(model_dir, demo, "mixed_bfloat16")
    lines = []
    with global_policy("mixed_bfloat16"):  # the trainer's process still has its policy set
        result = exporting.export_model(model_dir, ExportConfig(onnx_fp16=True, onnx_int8=True, tflite=True, tflite_int8=True),
                                        log=lines.append)
        policy_after = keras.mixed_precision.global_policy().name
    return types.SimpleNamespace(result=result, dir=result["export_dir"], model_dir=model_dir, weights=weights,
                                 lines=lines, policy_after=policy_after)


@pytest.mark.slow
def test_export_writes_every_artifact_and_passes(exported):
    r = exported.result
    assert r["passed"] and r["failures"] == []
    assert r["export_dir"] == os.path.join(exported.model_dir, "export")  # the default place
    assert sorted(os.listdir(r["export_dir"])) == sorted(
        ["saved_model", "model.onnx", "model_fp16.onnx", "model_int8.onnx", "model.tflite", "model_int8.tflite",
         "labels.txt", "parity.json", "export.json", "MODEL_CARD.md"]
    )
    assert not [n for n in os.listdir(exported.model_dir) if ".tmp-" in n or ".old-" in n]
    umask = os.umask(0)
    os.umask(umask)
    for directory, dirs, files in os.walk(r["export_dir"]):  # readable by a serving user, as the umask says
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o777 & ~umask, directory
        for f in files:
            assert stat.S_IMODE(os.stat(os.path.join(directory, f)).st_mode) == 0o666 & ~umask, f
    record = json.load(open(r["paths"]["export_record"]))
    assert record["status"] == "passed" and record["class_names"] == CLASSES and record["trained_precision"] == "bf16"
    assert record["exported_dtype"] == "float32" and record["weights"].endswith("model.weights.h5")
    assert open(r["paths"]["labels"]).read().split() == CLASSES
    assert any(line.startswith("export: passed") for line in exported.lines)


def test_an_export_names_the_run_and_data_by_folder_name_and_the_paths_stay_with_the_run(exported):
    """Nothing that travels with the model names the training machine's folders; provenance.json,
    in the run directory, keeps them for the owner."""
    model_dir = os.path.abspath(exported.model_dir)
    machine_paths = {model_dir.encode(), os.path.dirname(model_dir).encode()}
    for directory, _, files in os.walk(exported.result["export_dir"]):
        for f in files:
            data = open(os.path.join(directory, f), "rb").read()
            assert not [p for p in machine_paths if p in data], os.path.join(directory, f)
    record = json.load(open(exported.result["paths"]["export_record"]))
    assert record["model_dir"] == os.path.basename(model_dir) and record["weights"] == "model.weights.h5"
    assert "/" not in record["data"]["data_dir"] and record["data"]["splits"]["val"]["count"] > 0
    provenance = json.load(open(os.path.join(model_dir, "provenance.json")))["exports"][exported.result["export_dir"]]
    assert provenance["model_dir"] == model_dir and provenance["weights"] == os.path.join(model_dir, "model.weights.h5")
    assert os.path.isabs(provenance["data_dir"])


def test_a_copied_export_is_checked_again_with_model_dir_named(exported, tmp_path):
    copy = tmp_path / "elsewhere" / "export"
    _copy_without_variants(exported, copy)
    with pytest.raises(exporting.ExportError, match=r"^--model_dir: .* pass --model_dir$"):
        verify.verify_export(str(copy), parity_images=4, log=lambda _: None)


@pytest.mark.slow
def test_parity_report_covers_every_pair_on_validation_and_random_batches(exported):
    report = json.load(open(exported.result["paths"]["parity"]))
    assert report["passed"] and report["images"] == {"validation": 24, "random": 40, "random_batch_sizes": [1, 7, 32]}
    assert set(report["pairs"]) == {
        "keras vs saved_model", "keras vs onnx", "saved_model vs onnx", "keras vs saved_model_bytes",
        "keras vs onnx_unoptimized", "saved_model vs onnx_unoptimized",
        "keras vs tflite", "saved_model vs tflite", "onnx vs tflite", "onnx_unoptimized vs tflite",
    }
    for name, pair in report["pairs"].items():
        for set_name in ("validation", "random") if "bytes" not in name else ("validation",):
            r = pair[set_name]
            assert r["max_abs_diff_probabilities"] <= 1e-4 and r["top1_agreement"] == 1.0, (name, set_name, r)
            assert r["max_abs_diff_logits"] <= 1e-4 and 0 <= r["mean_abs_diff_logits"] <= r["max_abs_diff_logits"]
            assert r["logits_diff_relative"] <= 1e-5
            assert r["top5_agreement"] == 1.0


@pytest.mark.slow
def test_onnx_is_gated_at_both_optimization_levels_on_a_recorded_machine_and_onnxruntime(exported):
    report = json.load(open(exported.result["paths"]["parity"]))
    assert report["onnxruntime"] == ort.__version__
    assert report["onnxruntime_optimization_levels"] == {
        "ORT_ENABLE_ALL": {"format": "onnx", "passed": True},
        "ORT_DISABLE_ALL": {"format": "onnx_unoptimized", "passed": True},
    }
    for name in ("onnx", "onnx_unoptimized"):  # each level against the Keras model and the SavedModel
        for reference in ("keras", "saved_model"):
            pair = report["pairs"][f"{reference} vs {name}"]
            assert pair["passed"] and pair["validation"]["images"] == 24 and pair["random"]["images"] == 40
    machine = report["machine"]
    assert machine["cpu"] and machine["onednn"] in ("on", "off") and machine["onnxruntime"] == ort.__version__
    assert machine["tensorflow"] == tf.__version__ and isinstance(machine["cpu_features"], list)
    record = json.load(open(exported.result["paths"]["export_record"]))
    assert record["onnxruntime"] == ort.__version__ and record["machine"] == machine
    assert any(line.strip() == f"onnxruntime {ort.__version__}: ORT_ENABLE_ALL ok, ORT_DISABLE_ALL ok" for line in exported.lines)


@pytest.mark.slow
def test_the_onnx_file_says_which_onnxruntime_and_machine_proved_it(exported):
    meta = onnx_tools.read_metadata(exported.result["paths"]["onnx"])
    assert meta["toolkit_parity_onnxruntime"] == ort.__version__ and meta["toolkit_parity_passed"] == "true"
    assert json.loads(meta["toolkit_parity_optimization_levels"]) == {"ORT_ENABLE_ALL": True, "ORT_DISABLE_ALL": True}
    assert json.loads(meta["toolkit_parity_machine"]) == json.load(open(exported.result["paths"]["parity"]))["machine"]
    assert json.loads(meta["class_names"]) == CLASSES  # the earlier metadata is kept
    for variant in ("onnx_fp16", "onnx_int8"):  # not gated: they claim no proof
        assert not [k for k in onnx_tools.read_metadata(exported.result["paths"][variant]) if k.startswith("toolkit_parity")]
    assert not [n for n in os.listdir(exported.dir) if n.startswith(".")]  # no temporary file left beside it


def _copy_without_variants(exported, copy):
    """A copy of the shared export without its float16 and int8 models (quicker to re-check)."""
    shutil.copytree(exported.dir, copy, ignore=shutil.ignore_patterns("model_fp16.onnx", "model_int8.onnx", "model_int8.tflite"))
    record = json.load(open(copy / "export.json"))
    record["artifacts"] = {k: v for k, v in record["artifacts"].items() if k not in ("onnx_fp16", "onnx_int8", "tflite_int8")}
    (copy / "export.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_the_gate_fails_when_only_the_unoptimized_session_disagrees(exported, tmp_path, monkeypatch):
    """As onnxruntime 1.30 did, the other way round: one optimization level computes the logits
    4.5e-2 off. The session builder is patched for ORT_DISABLE_ALL only; the gate must fail, name
    that level, and say so in the ONNX file."""
    from toolkit.infer import loaders as runtimes

    copy = tmp_path / "export"
    _copy_without_variants(exported, copy)
    real = runtimes.onnx_session
    levels = []

    def builder(path, threads=0, optimization=runtimes.DEFAULT_OPTIMIZATION, layout=None):
        levels.append(optimization)
        session, run = real(path, threads, optimization, layout)
        if optimization != "ORT_DISABLE_ALL":
            return session, run

        def off(images, names):
            outputs = dict(zip(names, run(images, ["probabilities", "logits"])))
            logits = outputs["logits"] + np.float32(4.5e-2) * (np.arange(len(CLASSES)) == 0)
            e = np.exp(logits - logits.max(1, keepdims=True))
            shifted = {"logits": logits, "probabilities": e / e.sum(1, keepdims=True)}
            return [shifted[n] for n in names]

        return session, off

    monkeypatch.setattr(runtimes, "onnx_session", builder)
    result = verify.verify_export(str(copy), model_dir=exported.model_dir, parity_images=8, log=lambda _: None)
    assert sorted(levels) == ["ORT_DISABLE_ALL", "ORT_ENABLE_ALL"]
    report = result["parity"]
    assert not result["passed"] and not report["passed"]
    assert report["onnxruntime_optimization_levels"]["ORT_ENABLE_ALL"]["passed"]
    assert not report["onnxruntime_optimization_levels"]["ORT_DISABLE_ALL"]["passed"]
    assert report["pairs"]["keras vs onnx"]["passed"] and report["pairs"]["saved_model vs onnx"]["passed"]
    assert not report["pairs"]["keras vs onnx_unoptimized"]["passed"] and not report["pairs"]["saved_model vs onnx_unoptimized"]["passed"]
    assert report["failures"] and all("onnx_unoptimized" in line for line in report["failures"])
    meta = onnx_tools.read_metadata(str(copy / "model.onnx"))
    assert meta["toolkit_parity_passed"] == "false" and meta["toolkit_parity_onnxruntime"] == ort.__version__
    assert json.loads(meta["toolkit_parity_optimization_levels"]) == {"ORT_ENABLE_ALL": True, "ORT_DISABLE_ALL": False}
    assert json.load(open(copy / "export.json"))["status"] == "failed"
    assert json.load(open(copy / "parity.json"))["onnxruntime_optimization_levels"]["ORT_DISABLE_ALL"]["passed"] is False
    assert onnx_tools.read_metadata(exported.result["paths"]["onnx"])["toolkit_parity_passed"] == "true"  # the original is untouched


@pytest.mark.slow
def test_float16_and_int8_models_are_written_beside_with_agreement_and_accuracy(exported):
    paths, report = exported.result["paths"], exported.result["parity"]
    assert onnx_tools.float_initializer_types(paths["onnx_fp16"]) == {"FLOAT16"}
    int8 = onnx.load(paths["onnx_int8"])
    assert any(t.data_type == onnx.TensorProto.INT8 for t in int8.graph.initializer)
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)
    # the stem convolution reads the image and stays float32 (its weight is not dequantized int8)
    dequantized = {o for n in int8.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in int8.graph.node if n.op_type == "Conv"]
    assert convs[0].input[1] not in dequantized and all(c.input[1] in dequantized for c in convs[1:])
    assert os.path.getsize(paths["onnx_int8"]) < os.path.getsize(paths["onnx_fp16"]) < os.path.getsize(paths["onnx"])
    for name in ("onnx_fp16", "onnx_int8"):
        assert onnx_shape(paths[name]) == ["batch", SIZE, SIZE, 3]  # float32 input: clients change nothing
        v = report["variants"][name]
        assert v["compared_with"] == "onnx" and v["images"] == 24
        assert 0 <= v["top1_agreement"] <= 1 and 0 <= v["validation_accuracy"] <= 1
    assert report["variants"]["onnx_fp16"]["top1_agreement"] >= 0.9
    assert onnx_tools.read_metadata(paths["onnx_int8"])["weights_precision"].startswith("int8")


@pytest.mark.slow
def test_int8_tflite_is_calibrated_quantized_and_reported_beside_the_int8_onnx(exported):
    from ai_edge_litert.interpreter import Interpreter

    paths, report = exported.result["paths"], exported.result["parity"]
    interpreter = Interpreter(model_path=paths["tflite_int8"])
    types = {d["dtype"] for d in interpreter.get_tensor_details()}
    assert np.int8 in types  # quantized weights and activations inside
    runner = interpreter.get_signature_runner("serving_default")
    assert runner.get_input_details()["images"]["dtype"] == np.float32  # float32 input: clients change nothing
    assert os.path.getsize(paths["tflite_int8"]) < os.path.getsize(paths["tflite"]) / 3
    v = report["variants"]["tflite_int8"]
    assert v["compared_with"] == "onnx" and v["images"] == 24 and 0 <= v["top1_agreement"] <= 1
    assert "tflite_int8" not in {name for pair in report["pairs"] for name in pair.split(" vs ")}  # reported, not gated
    record = json.load(open(paths["export_record"]))
    assert record["formats"]["tflite_int8"] == {"file": "model_int8.tflite", "gated": False, "compared_with": "onnx",
                                                "top1_agreement": v["top1_agreement"], "validation_accuracy": v["validation_accuracy"]}
    assert record["formats"]["tflite"]["passed"] and record["seconds"]["tflite_int8"] > 0
    assert any(line.startswith("export: model_int8.tflite written") for line in exported.lines)
    card = open(paths["model_card"]).read()
    assert "| tflite_int8 | model_int8.tflite | reported (vs onnx) |" in card and "| val | 24 | 6 | 6 | 6 | 6 |" in card


@pytest.mark.slow
def test_bf16_trained_model_exports_float32_and_the_policy_is_restored(exported):
    assert exported.policy_after == "mixed_bfloat16"
    assert_float32_artifacts(exported.dir)
    assert_same_weights(exported.model_dir, exported.weights)


@pytest.mark.slow
def test_onnx_has_a_dynamic_batch_and_says_what_to_feed_it(exported):
    path = exported.result["paths"]["onnx"]
    assert onnx_shape(path) == ["batch", SIZE, SIZE, 3]
    meta = onnx_tools.read_metadata(path)
    assert json.loads(meta["class_names"]) == CLASSES and meta["image_size"] == str(SIZE)
    assert meta["input_range"] == "[0, 255]" and meta["input_layout"] == "NHWC" and meta["toolkit_version"]
    assert "eval_image" in meta["preprocessing"] and "0.875" in meta["preprocessing"]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert {o.name for o in session.get_outputs()} == {"probabilities", "logits"}
    for n in (1, 3, 17):
        probabilities, logits = session.run(["probabilities", "logits"], {"images": np.full((n, SIZE, SIZE, 3), 128, np.float32)})
        assert probabilities.shape == logits.shape == (n, len(CLASSES))
        np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_bytes_signature_matches_the_evaluation_pipeline(exported, demo):
    files = shards.read_dataset_info(demo).split_files("val")  # one shard: file order is pipeline order
    images, labels = next(iter(pipeline.make_eval_dataset(DataConfig(data_dir=demo, image_size=SIZE, batch_size=6), files)))
    encoded = [ex.numpy() for ex, _ in zip(tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(
        r, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})["image/encoded"]), range(6))]
    png = tf.io.encode_png(tf.io.decode_jpeg(encoded[0])).numpy()
    model, _ = rebuild.rebuild_float32(exported.model_dir, rebuild.read_run(exported.model_dir))
    expected = model(tf.concat([images, preprocess.eval_input(png, SIZE)[None]], 0), training=False).numpy()

    loaded = tf.saved_model.load(os.path.join(exported.dir, "saved_model"))
    got = loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded + [png]))
    np.testing.assert_allclose(got["logits"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(got["probabilities"].numpy(), tf.nn.softmax(expected).numpy(), atol=1e-6)
    assert len(set(labels.numpy())) > 1  # real, varied records


@pytest.mark.slow
def test_saved_model_runs_in_a_fresh_process_without_toolkit(exported, demo, tmp_path):
    jpeg = next(iter(tf.data.TFRecordDataset(shards.read_dataset_info(demo).split_files("val")))).numpy()
    record = tf.train.Example.FromString(jpeg).features.feature["image/encoded"].bytes_list.value[0]
    (tmp_path / "x.jpg").write_bytes(record)
    code = f"""
import sys, numpy as np, tensorflow as tf
m = tf.saved_model.load({os.path.join(exported.dir, 'saved_model')!r})
print(sorted(m.signatures))
a = m.signatures["serving_default"](images=tf.zeros([3, {SIZE}, {SIZE}, 3]))
b = m.signatures["serving_bytes"](image_bytes=tf.constant([open("x.jpg", "rb").read()] * 2))
print(a["probabilities"].shape, b["logits"].shape, a["probabilities"].dtype.name)
print(open(m.labels.asset_path.numpy().decode()).read().split())
assert "toolkit" not in sys.modules
"""
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-3:] == ["['serving_bytes', 'serving_default']", "(3, 4) (2, 4) float32", str(CLASSES)]


@pytest.mark.slow
def test_a_corrupted_onnx_weight_fails_the_gate_with_exit_4(exported, tmp_path):
    copy = tmp_path / "export"
    _copy_without_variants(exported, copy)
    model = onnx.load(str(copy / "model.onnx"))
    heads = [t for t in model.graph.initializer if list(t.dims) == [len(CLASSES)] and t.data_type == onnx.TensorProto.FLOAT]
    assert len(heads) == 1  # the classifier's bias
    bias = onnx.numpy_helper.to_array(heads[0]).copy()
    bias[0] += 1.0
    heads[0].CopyFrom(onnx.numpy_helper.from_array(bias, heads[0].name))
    onnx.save(model, str(copy / "model.onnx"))

    # the command itself, on the shallow network the `exported` fixture trained (one block per stage)
    code = ("import sys; from toolkit.models import resnet_v2; resnet_v2.STAGES[50] = (1, 1, 1, 1); "
            "from toolkit import parity; sys.argv[0] = 'toolkit.parity'; parity.run_main()")
    proc = subprocess.run([sys.executable, "-c", code, f"--export_dir={copy}", f"--model_dir={exported.model_dir}", "--parity_images=8"],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert proc.returncode == 4, proc.stderr[-2000:]  # the trainer's code for a failed gate too
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: parity gate FAILED for {copy}: ")
    report = json.load(open(copy / "parity.json"))
    assert not report["passed"] and report["pairs"]["keras vs saved_model"]["passed"]
    assert not report["pairs"]["keras vs onnx"]["passed"] and not report["pairs"]["saved_model vs onnx"]["passed"]
    assert report["failures"] and all("onnx" in line for line in report["failures"])
    assert json.load(open(copy / "export.json"))["status"] == "failed"
    assert json.load(open(os.path.join(exported.dir, "export.json")))["status"] == "passed"  # the original is untouched


@pytest.mark.slow
def test_fp16_trained_checkpoint_exports_float32_with_an_nchw_onnx_over_an_earlier_export(tmp_path, demo):
    model_dir, target = str(tmp_path / "run"), tmp_path / "deploy"
    weights = make_run(model_dir, demo, "mixed_float16", save="checkpoint")
    assert not os.path.exists(os.path.join(model_dir, "model.weights.h5"))
    target.mkdir()
    (target / "export.json").write_text('{"status": "passed"}')
    (target / "stale.onnx").write_text("from an earlier export")
    with global_policy("mixed_float16"):
        result = exporting.export_model(
            model_dir, ExportConfig(export_dir=str(target), onnx_layout="nchw", opset=15, parity_images=8), log=lambda _: None
        )
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert result["passed"] and result["parity"]["images"]["validation"] == 8
    assert not (target / "stale.onnx").exists() and (target / "model.onnx").exists()
    record = json.load(open(target / "export.json"))
    assert "checkpoints" in record["weights"] and record["onnx"]["layout"] == "nchw" and record["trained_precision"] == "fp16"
    path = str(target / "model.onnx")
    assert onnx_shape(path) == ["batch", 3, SIZE, SIZE] and onnx_tools.read_metadata(path)["input_layout"] == "NCHW"
    assert onnx.load(path).opset_import[0].version == 15
    assert_float32_artifacts(str(target))
    assert_same_weights(model_dir, weights)


@pytest.mark.slow
def test_a_crash_mid_export_leaves_the_earlier_export_alone(exported, tmp_path, monkeypatch):
    target = tmp_path / "deploy"
    target.mkdir()
    (target / "export.json").write_text('{"status": "passed"}')

    def crash(self, path):
        os.makedirs(path)
        open(os.path.join(path, "saved_model.pb"), "w").write("half")
        raise OSError("No space left on device")

    monkeypatch.setattr(exporting.serving.ServingModule, "save", crash)
    from toolkit.common.errors import DiskFull

    with pytest.raises(DiskFull, match=f"^no space left on the disk while writing {target};"):  # the export names itself
        exporting.export_model(exported.model_dir, ExportConfig(export_dir=str(target)), log=lambda _: None)
    assert os.listdir(tmp_path) == ["deploy"] and os.listdir(target) == ["export.json"]


def _bad_inputs(tmp_path, demo, case):
    """(model_dir, ExportConfig) for one failure case."""
    run = str(tmp_path / "run")
    config = ExportConfig(export_dir=str(tmp_path / "out" / "export"))
    if case == "missing model_dir":
        return str(tmp_path / "nowhere"), config
    write_run(run, demo, "fp32")
    open(os.path.join(run, "model.weights.h5"), "wb").write(b"\x89HDF\r\n\x1a\n truncated")
    if case == "corrupt run.json":
        open(os.path.join(run, "run.json"), "w").write('{"num_classes": 4, ')
    elif case == "no class names":
        write_run(run, demo, "fp32", class_names=None)
    elif case == "no weights":
        os.remove(os.path.join(run, "model.weights.h5"))
    elif case == "data gone":
        write_run(run, str(tmp_path / "moved"), "fp32")
    elif case == "export_dir under a file":
        open(tmp_path / "file", "w").write("x")
        config = ExportConfig(export_dir=str(tmp_path / "file" / "export"))
    elif case == "export_dir holds other things":
        os.makedirs(config.export_dir)
        open(os.path.join(config.export_dir, "notes.txt"), "w").write("mine")
    elif case == "bad layout":
        config = ExportConfig(onnx_layout="chwn")
    elif case == "bad opset":
        config = ExportConfig(opset=99)
    elif case == "negative parity_images":
        config = ExportConfig(parity_images=-1)
    elif case == "negative parity_atol":
        config = ExportConfig(parity_atol=-1.0)
    return run, config


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, flag, words",
    [
        ("missing model_dir", "--model_dir", "not a directory"),
        ("corrupt run.json", "--model_dir", "cannot read"),
        ("no class names", "--model_dir", "names no classes"),
        ("no weights", "--model_dir", "neither model.weights.h5 nor a checkpoint"),
        ("corrupt weights", "--model_dir", "cannot load the weights"),
        ("data gone", "--data_dir", "not a directory"),
        ("export_dir under a file", "--export_dir", "not a directory"),
        ("export_dir holds other things", "--export_dir", "not empty"),
        ("bad layout", "--onnx_layout", "nhwc"),
        ("bad opset", "--opset", "99"),
        ("negative parity_images", "--parity_images", "-1"),
        ("negative parity_atol", "--parity_atol", "-1"),
    ],
)
def test_bad_inputs_fail_in_one_line_naming_the_flag(tmp_path, demo, case, flag, words):
    model_dir, config = _bad_inputs(tmp_path, demo, case)
    with pytest.raises(exporting.ExportError) as info:
        exporting.export_model(model_dir, config, log=lambda _: None)
    message = str(info.value)
    assert message.startswith(flag + ":") and words in message and "\n" not in message
    leftovers = [os.path.join(d, n) for d, dirs, files in os.walk(tmp_path) for n in dirs + files if ".tmp-" in n]
    assert not leftovers and not os.path.exists(os.path.join(model_dir, "export"))


def test_cli_exits_2_with_one_line_for_a_bad_model_dir(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit.export", f"--model_dir={tmp_path / 'nowhere'}", f"--export_dir={tmp_path / 'e'}"],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --model_dir:") and "Traceback" not in proc.stderr


def test_parity_cli_exits_2_with_one_line_for_a_missing_export(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit.parity", f"--export_dir={tmp_path / 'nowhere'}"],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --export_dir: cannot read") and "Traceback" not in proc.stderr


def test_flags_given_override_the_runs_recorded_export_settings():
    from absl import flags

    from toolkit import cli
    from toolkit.export import __main__ as export

    recorded = {"config": {"export": {"onnx_int8": True, "opset": 13, "export_dir": "/srv/models/x"}}}
    fv = flags.FlagValues()
    cli.define_flags(export.SECTIONS, fv, omit=export.OMITTED)
    fv(["toolkit.export", "--opset=15", "--onnx_layout=nchw"])
    assert "export" not in fv and "model_dir" in fv  # no --export flag on the export command itself
    config = export.config_from_flags(fv, recorded)
    assert (config.opset, config.onnx_layout, config.onnx_int8, config.export_dir) == (15, "nchw", True, "/srv/models/x")
    assert config.parity_atol == 1e-4 and not config.onnx_fp16


@pytest.mark.slow
def test_a_checkpoint_newer_than_the_final_weights_is_what_gets_exported(tmp_path, demo):
    """A run resumed for more epochs that stopped early: model.weights.h5 is the earlier run's end
    (step 4 in summary.json), the checkpoints went on to step 6. The export must take step 6."""
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    keras.utils.set_random_seed(1)
    model = resnet_v2.build_model(len(CLASSES), SIZE, 50)
    model.save_weights(str(model_dir / "model.weights.h5"))
    final = [v.numpy() for v in model.weights]
    for v in model.trainable_weights:
        v.assign(v * 0.5 + 0.01)
    checkpointer = ckpt_lib.Checkpointer(str(model_dir), True, 2, model=model, optimizer=keras.optimizers.SGD())
    checkpointer.step.assign(6)
    checkpointer.save()
    later = [v.numpy() for v in model.weights]
    write_run(str(model_dir), demo, "fp32")

    (model_dir / "summary.json").write_text(json.dumps({"steps": 4}))
    _, source = rebuild.rebuild_float32(str(model_dir), rebuild.read_run(str(model_dir)))
    assert source.endswith("ckpt-6")
    assert_same_weights(str(model_dir), later)

    (model_dir / "summary.json").write_text(json.dumps({"steps": 6}))  # the run finished at step 6
    assert_same_weights(str(model_dir), final)
