"""The deployment artifacts of an export (toolkit.export.extras): the TFLite model in LiteRT and in the
parity gate, the Triton repository parsed with Triton's own model-config protobuf (tritonclient),
the TF Serving warm-up requests read back with tensorflow-serving-api and replayed, the model card.

Uses the shared tiny export of inference_helpers (32 px, model.tflite, triton/); the int8 TFLite
model is covered with the other int8 model in test_export.py.
"""

import filecmp
import dataclasses
import json
import os
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
from google.protobuf import text_format

import inference_helpers as ih
from toolkit import layout
from toolkit.export import verify
from toolkit.export import run as exporting
from toolkit.export import model_card
from toolkit.infer import loaders as runtimes
from toolkit.export import warmup as serving_warmup
from toolkit.config import ExportConfig

ONNX_TYPES = {"tensor(float)": "TYPE_FP32"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return ih.tiny_export(tmp_path_factory)


def model_config_proto():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


@pytest.mark.slow
def test_the_triton_configs_parse_and_match_the_model_files(model):
    mc = model_config_proto()
    repo = os.path.join(model.dir, "triton")
    assert sorted(os.listdir(repo)) == ["resnet50v2", "resnet50v2_savedmodel"]
    session = ort.InferenceSession(os.path.join(repo, "resnet50v2", "1", "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_io = {"input": [(i.name, ONNX_TYPES[i.type], i.shape[1:]) for i in session.get_inputs()],
               "output": sorted((o.name, ONNX_TYPES[o.type], o.shape[1:]) for o in session.get_outputs())}
    expected = {  # the SavedModel: hand-set, what ServingModule declares
        "input": [("images", "TYPE_FP32", [ih.SIZE, ih.SIZE, 3])],
        "output": [("logits", "TYPE_FP32", [2]), ("probabilities", "TYPE_FP32", [2])],
    }
    assert onnx_io == expected
    for name, platform in (("resnet50v2", "onnxruntime_onnx"), ("resnet50v2_savedmodel", "tensorflow_savedmodel")):
        text = open(os.path.join(repo, name, "config.pbtxt")).read()
        config = text_format.Parse(text, mc.ModelConfig())
        assert (config.name, config.platform, config.max_batch_size) == (name, platform, 32)
        assert config.HasField("dynamic_batching")
        got = {
            "input": [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in config.input],
            "output": sorted((o.name, mc.DataType.Name(o.data_type), list(o.dims)) for o in config.output),
        }
        assert got == expected, name
        labelled = {o.name: o.label_filename for o in config.output}
        assert labelled == {"probabilities": "labels.txt", "logits": ""}
        assert open(os.path.join(repo, name, "labels.txt")).read().split() == ih.CLASSES
    assert filecmp.cmp(os.path.join(repo, "resnet50v2", "1", "model.onnx"), model.onnx, shallow=False)
    loaded = tf.saved_model.load(os.path.join(repo, "resnet50v2_savedmodel", "1", "model.savedmodel"))
    fn = loaded.signatures["serving_default"]
    assert sorted(fn.structured_outputs) == ["logits", "probabilities"]
    assert fn.structured_input_signature[1]["images"].shape.as_list() == [None, ih.SIZE, ih.SIZE, 3]
    record = json.load(open(os.path.join(model.dir, "export.json")))
    assert record["artifacts"]["triton_repo"] == "triton"
    assert set(record["triton"]["models"]) == {"resnet50v2", "resnet50v2_savedmodel"}


def test_the_triton_repository_leads_with_onnx_and_holds_the_savedmodel_only_when_asked(model, tmp_path):
    """Triton's TensorFlow backend is deprecated (25.03): by default the repository is the ONNX model alone."""
    from toolkit.config import ExportConfig
    from toolkit.export import triton

    assert ExportConfig().triton_savedmodel is False and "deprecated" in ExportConfig.__dataclass_fields__["triton_savedmodel"].metadata["help"]
    labels = os.path.join(model.dir, "labels.txt")
    only_onnx = triton.write_repository(str(tmp_path / "a"), "resnet50v2", model.onnx, None, labels, 8)
    assert sorted(os.listdir(tmp_path / "a")) == ["resnet50v2"] and only_onnx["resnet50v2"]["platform"] == "onnxruntime_onnx"
    both = triton.write_repository(str(tmp_path / "b"), "resnet50v2", model.onnx, model.saved_model, labels, 8)
    assert sorted(both) == ["resnet50v2", "resnet50v2_savedmodel"]


def test_a_broken_config_is_refused_by_the_triton_proto():
    mc = model_config_proto()
    with pytest.raises(text_format.ParseError):
        text_format.Parse('name: "m" input [ { name: "images" data_type: TYPE_FLOAT32 dims: [ 3 ] } ]', mc.ModelConfig())


@pytest.mark.slow
def test_warmup_requests_read_back_and_replay_through_the_saved_model(model):
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(model.saved_model, "assets.extra", "tf_serving_warmup_requests")
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert len(logs) == serving_warmup.WARMUP_IMAGES + 1
    requests = [entry.predict_log.request for entry in logs]
    assert [r.model_spec.signature_name for r in requests] == ["serving_bytes"] * 4 + ["serving_default"]
    shard = os.path.join(model.data_dir, "val-00000-of-00001.tfrecord")  # the first real validation photos, as stored
    stored = [tf.train.Example.FromString(r.numpy()).features.feature["image/encoded"].bytes_list.value[0]
              for r in tf.data.TFRecordDataset(shard).take(4)]
    assert [tf.make_ndarray(r.inputs["image_bytes"]).tolist() for r in requests[:4]] == [[b] for b in stored]
    batch = tf.make_ndarray(requests[4].inputs["images"])
    assert batch.shape == (4, ih.SIZE, ih.SIZE, 3) and batch.dtype == np.float32

    loaded = tf.saved_model.load(model.saved_model)
    replies = [loaded.signatures[r.model_spec.signature_name](**{k: tf.constant(tf.make_ndarray(v)) for k, v in r.inputs.items()})
               for r in requests]
    from_bytes = np.concatenate([reply["probabilities"].numpy() for reply in replies[:4]])
    np.testing.assert_allclose(replies[4]["probabilities"].numpy(), from_bytes, atol=1e-5)
    np.testing.assert_allclose(from_bytes, ih.saved_model_probabilities(model.saved_model, ih.photos("ants", 4)), atol=1e-5)
    assert json.load(open(os.path.join(model.dir, "export.json")))["artifacts"]["serving_warmup"] == layout.WARMUP


@pytest.mark.slow
def test_the_tflite_model_runs_in_litert_like_the_saved_model(model):
    loaded = runtimes.load_model(model.tflite)
    assert (loaded.backend, loaded.class_names, loaded.image_size) == ("tflite", tuple(ih.CLASSES), ih.SIZE)
    paths = ih.photos("ants", 3) + ih.photos("bees", 3)
    from toolkit.data import preprocess

    images = np.stack([preprocess.eval_image(open(p, "rb").read(), ih.SIZE).numpy() for p in paths])
    np.testing.assert_allclose(loaded(images), ih.saved_model_probabilities(model.saved_model, paths), atol=1e-4)
    assert loaded(images[:1]).shape == (1, 2)  # the batch axis follows each call
    report = model.result["parity"]
    for other in ("keras", "saved_model", "onnx", "onnx_unoptimized"):
        pair = report["pairs"][f"{other} vs tflite"]
        assert pair["passed"] and pair["validation"]["images"] == 8 and pair["random"]["images"] == 40
    assert report["litert"] and json.load(open(os.path.join(model.dir, "export.json")))["formats"]["tflite"]["passed"]


@pytest.mark.slow
def test_the_gate_fails_when_the_tflite_model_disagrees(model, tmp_path, monkeypatch):
    copy = tmp_path / "export"
    shutil.copytree(model.dir, copy)
    real = runtimes._load_tflite  # every .tflite file the gate runs is loaded here

    def shifted(path, threads):
        loaded = real(path, threads)

        def off(images):
            probabilities, logits = loaded.outputs(images)
            logits = logits + np.float32(0.05) * (np.arange(logits.shape[1]) == 0)
            e = np.exp(logits - logits.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True), logits

        return dataclasses.replace(loaded, outputs=off)

    monkeypatch.setattr(runtimes, "_load_tflite", shifted)
    result = verify.verify_export(str(copy), model_dir=model.model_dir, parity_images=8, log=lambda _: None)
    report = result["parity"]
    assert not result["passed"] and report["failures"] and all("tflite" in line for line in report["failures"])
    assert report["pairs"]["keras vs onnx"]["passed"] and not report["pairs"]["keras vs tflite"]["passed"]
    record = json.load(open(copy / "export.json"))
    assert record["status"] == "failed" and not record["formats"]["tflite"]["passed"] and record["formats"]["onnx"]["passed"]
    card = open(copy / "MODEL_CARD.md").read()
    assert "Parity gate: **failed**" in card and "| tflite | model.tflite | FAILED |" in card
    # the Triton repository serves the re-verified model.onnx, whose metadata now says the gate failed
    served = ort.InferenceSession(str(copy / "triton" / "resnet50v2" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert served.get_modelmeta().custom_metadata_map["toolkit_parity_passed"] == "false"
    assert filecmp.cmp(copy / "triton" / "resnet50v2" / "1" / "model.onnx", copy / "model.onnx", shallow=False)


def test_tflite_int8_without_training_images_stops_before_any_work(model, tmp_path):
    target = tmp_path / "export"
    with pytest.raises(exporting.ExportError, match=r"^--tflite_int8: .* no training shards"):
        exporting.export_model(model.model_dir, ExportConfig(export_dir=str(target), tflite_int8=True), log=lambda _: None)
    assert not target.exists() and os.listdir(tmp_path) == []


def test_the_model_card_says_what_a_reviewer_needs():
    record = {
        "status": "passed", "failures": [], "created": "2026-01-02T03:04:05+0000", "toolkit_version": "0.1.0",
        "weights": "/runs/a/model.weights.h5", "depth": 50, "class_names": ["ants", "bees"], "image_size": 224,
        "trained_precision": "bf16", "exported_dtype": "float32",
        "input": {"dtype": "float32", "range": [0, 255], "preprocessing": "decode; crop 0.875; resize bilinear"},
        "onnx": {"layout": "nchw"}, "config": {"parity_atol": 1e-4}, "onnxruntime": "1.32.0", "litert": "2.3.0",
        "machine": {"cpu": "Xeon", "cpu_features": ["amx_bf16"], "onednn": "on", "tensorflow": "2.21.0",
                    "gpus": [{"name": "NVIDIA L4", "compute_capability": "8.9"}]},  # as machine.gpus() records them
        "data": {"source": "photos/", "splits": {"train": {"count": 245, "per_class": {"ants": 124, "bees": 121}},
                                                 "val": {"count": 153, "per_class": {"ants": 70, "bees": 83}}}},
        "formats": {"tflite": {"file": "model.tflite", "gated": True, "passed": True, "max_abs_diff_probabilities": 3e-7,
                               "validation_accuracy": 0.9},
                    "tflite_int8": {"file": "model_int8.tflite", "gated": False, "compared_with": "onnx",
                                    "top1_agreement": 0.98, "validation_accuracy": 0.89}},
    }
    summary = {"val_top1": 0.9, "val_top5": 1.0, "val_loss": 0.31, "val_images": 153, "best_val_top1": 0.91, "best_epoch": 7,
               "epochs": 10, "train_images": 245, "machine": {"cpu": "EPYC", "onednn": "off"}}
    confusion = {"per_class": [{"class": "ants", "support": 70, "precision": 0.95, "recall": 0.85},
                               {"class": "bees", "support": 83, "precision": 0.88, "recall": 0.96}]}
    card = model_card.render(record, summary, confusion)
    for line in ("| train | 245 | 124 | 121 |", "| val | 153 | 70 | 83 |", "| validation | 153 | 0.9000 | 1.0000 | 0.3100 |",
                 "| ants | 70 | 0.9500 | 0.8500 |", "| bees | 83 | 0.8800 | 0.9600 |",
                 "| tflite | model.tflite | ok | 3.00e-07 | - | 0.9000 |",
                 "| tflite_int8 | model_int8.tflite | reported (vs onnx) | - | 0.9800 | 0.8900 |"):
        assert line in card.splitlines(), line
    for words in ("`ants`, `bees`", "Trained as bf16", "float32 [batch, 224, 224, 3]", "model.onnx: NCHW",
                  "decode; crop 0.875; resize bilinear", "exported and gated on: Xeon [amx_bf16], oneDNN on, GPUs: NVIDIA L4 (compute 8.9), TensorFlow 2.21.0",
                  "trained on: EPYC", "LiteRT 2.3.0", "No test split was evaluated", "## Intended use", "## Known limits"):
        assert words in card, words
    bare = model_card.render({**record, "data": {}}, None, None)
    assert "metrics of training are unknown" in bare and "Counts per split were not recorded" in bare


def test_the_model_card_and_summary_report_the_ema_weights_when_those_were_exported(tmp_path):
    from toolkit.train import outputs
    from toolkit.common import reports
    summary = {"val_top1": 0.70, "val_top5": 1.0, "val_loss": 0.60, "ema_val_top1": 0.75, "ema_val_top5": 1.0,
               "ema_val_loss": 0.55, "val_images": 153, "exported_weights": "ema", "best_val_top1": 0.73, "best_epoch": 24,
               "best_ema_val_top1": 0.77, "best_ema_epoch": 40, "epochs": 50, "train_images": 245}
    record = {"class_names": ["ants", "bees"], "image_size": 96, "depth": 50, "data": {}, "onnx": {"layout": "nhwc"},
              "input": {"dtype": "float32", "range": [0, 255], "preprocessing": "decode; resize"}}
    card = model_card.render(record, summary, None)
    assert "| validation | 153 | 0.7500 | 1.0000 | 0.5500 |" in card.splitlines()
    assert "raw weights scored 0.7000" in card and "Best validation top-1 0.7700 at epoch 40" in card
    raw = model_card.render(record, {**summary, "exported_weights": "raw"}, None)
    assert "| validation | 153 | 0.7000 | 1.0000 | 0.6000 |" in raw.splitlines() and "at epoch 24" in raw
    md = reports.summary_markdown(summary)
    assert "| EMA weights: validation top-1 (exported) | 0.7500 |" in md
    assert "| EMA weights: best validation top-1 | 0.7700 (epoch 40) |" in md
    assert "training time" not in md  # a summary without train_seconds gets no made-up row
    assert "| training time (with evaluations) | 21.5 min |" in reports.summary_markdown({**summary, "train_seconds": 1290.0})
    # best_epoch ranks by the key asked for, over the evaluations metrics.jsonl holds that have it
    lines = [{"kind": "val", "epoch": 1, "val_top1": 0.6, "ema_val_top1": 0.5},
             {"kind": "train", "epoch": 2, "top1": 0.99},
             {"kind": "val", "epoch": 2, "val_top1": 0.5, "ema_val_top1": 0.7},
             {"kind": "val", "epoch": 3, "val_top1": 0.55}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    history = outputs.validation_history(str(tmp_path))
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert outputs.best_epoch(history) == (0.6, 1)
    assert outputs.best_epoch(history, "ema_val_top1") == (0.7, 2)
    assert outputs.best_epoch([{"epoch": 1, "val_top1": 0.6}], "ema_val_top1")[1] is None
