"""Run directories on object storage: the writer on ram:// (TensorFlow's in-memory filesystem), atomic
where it renames and written-then-verified where it cannot; checkpoints set aside there; and a
train + resume + export + batch inference + evaluation whose every file lives on ram://."""

import json
import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest
import tensorflow as tf

from conftest import HYMENOPTERA, require_data, under_ci
from toolkit.common import atomic, storage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(ROOT, "tests", "helpers", "object_storage_run.py")


@pytest.fixture
def ram():
    """A fresh folder on ram:// (the filesystem lives as long as this process: one per test)."""
    return f"ram://t{uuid.uuid4().hex[:10]}"


def names(directory: str) -> list:
    return sorted(tf.io.gfile.listdir(directory))


def test_a_file_on_ram_appears_whole_at_commit_and_a_failed_write_leaves_the_old_one(ram, monkeypatch):
    path = f"{ram}/run.json"
    atomic.write_json(path, {"old": True})
    with pytest.raises(RuntimeError):
        with atomic.AtomicFile(path) as f:
            f.write("half of the new")
            assert storage.read_bytes(path) == b'{\n  "old": true\n}\n' and names(ram) == ["run.json"]
            raise RuntimeError("crash")
    assert json.loads(storage.read_bytes(path)) == {"old": True} and names(ram) == ["run.json"]

    renames = []
    real_move = storage.move

    def seen(src, dst):  # the moment of the commit: the new bytes sit under a hidden name beside the target
        renames.append((src, dst, storage.read_bytes(src), storage.read_bytes(dst)))
        real_move(src, dst)

    monkeypatch.setattr(storage, "move", seen)
    atomic.write_json(path, {"new": 1})
    (src, dst, new, old), = renames
    assert dst == path and src.startswith(f"{ram}/.tmp-") and src.endswith("-run.json")
    assert json.loads(new) == {"new": 1} and json.loads(old) == {"old": True}
    assert json.loads(storage.read_bytes(path)) == {"new": 1} and names(ram) == ["run.json"]


def test_tools_that_write_by_name_and_whole_directories_go_up_too(ram, monkeypatch):
    atomic.write_with(f"{ram}/a.npy", lambda tmp: np.save(tmp, np.arange(3)))  # np.save insists on a local name
    with storage.local_copy(f"{ram}/a.npy") as local:
        assert np.load(local).tolist() == [0, 1, 2]
    assert not os.path.exists(local)  # the scratch copy is gone with the block

    order = []
    real_upload = atomic.upload
    monkeypatch.setattr(atomic, "upload", lambda src, dst: (order.append(dst[len(ram) + 1:]), real_upload(src, dst)))
    for version in ("one", "two"):
        with atomic.directory(f"{ram}/export", last="export.json") as built:
            assert not built.startswith("ram://")  # built locally, for the tools that need local paths
            os.makedirs(os.path.join(built, "saved_model", "assets"))
            os.makedirs(os.path.join(built, "saved_model", "assets.extra"))
            for name in ("export.json", f"{version}.txt", "saved_model/assets/labels.txt", "saved_model/assets.extra/warmup"):
                with open(os.path.join(built, name), "w") as f:
                    f.write(version)
    assert order[-1] == "export/export.json" and order[3] == "export/export.json"  # the record goes up last
    tree = sorted(f"{d}/{n}"[len(ram) + 1:] for d, _, files in storage.walk(ram) for n in files)
    assert tree == ["a.npy", "export/export.json", "export/saved_model/assets.extra/warmup",
                    "export/saved_model/assets/labels.txt", "export/two.txt"]  # the old one replaced whole
    # ram:// lists by prefix: its raw listing of assets/ shows a phantom ".extra"; storage's does not
    assert ".extra" in tf.io.gfile.listdir(f"{ram}/export/saved_model/assets")
    assert storage.listdir(f"{ram}/export/saved_model/assets") == ["labels.txt"]

    with pytest.raises(KeyError):
        with atomic.directory(f"{ram}/export", last="export.json") as built:
            open(os.path.join(built, "export.json"), "w").close()
            raise KeyError("crash")
    assert storage.read_bytes(f"{ram}/export/two.txt") == b"two"  # untouched


def test_where_rename_is_not_used_the_file_is_written_then_read_back(ram, monkeypatch):
    monkeypatch.setitem(storage.RENAMES, "ram", False)  # as on gs://
    monkeypatch.setattr(storage, "move", lambda *a: pytest.fail("renamed on a filesystem the writer must not rename on"))
    read_back = []
    real_digest = storage.digest
    monkeypatch.setattr(storage, "digest", lambda path: (read_back.append(path), real_digest(path))[1])
    with atomic.AtomicFile(f"{ram}/predictions.csv", newline="") as f:
        f.write("input,status\r\n")
    assert storage.read_bytes(f"{ram}/predictions.csv") == b"input,status\r\n"
    assert f"{ram}/predictions.csv" in read_back and names(ram) == ["predictions.csv"]
    with pytest.raises(ValueError):
        with atomic.AtomicFile(f"{ram}/predictions.csv") as f:
            f.write("half")
            raise ValueError("crash")
    assert storage.read_bytes(f"{ram}/predictions.csv") == b"input,status\r\n"  # spooled locally: never sent


def test_a_file_read_back_other_than_written_is_a_one_line_error_naming_it(ram, monkeypatch):
    monkeypatch.setitem(storage.RENAMES, "ram", False)

    def lossy(src, dst):  # a transfer that drops the last byte
        with tf.io.gfile.GFile(dst, "wb") as f:
            f.write(open(src, "rb").read()[:-1])

    monkeypatch.setattr(storage, "copy_file", lossy)
    with pytest.raises(atomic.NotVerified) as raised:
        atomic.write_text(f"{ram}/summary.json", "0123456789")
    message = str(raised.value)
    assert f"{ram}/summary.json" in message and "10 bytes were written but 9 bytes" in message and "\n" not in message


def test_renames_are_tried_where_unknown_and_bad_paths_are_one_line_naming_them(ram):
    storage.makedirs(ram)
    assert storage._rename_works(ram) and names(ram) == []  # the probe leaves nothing behind
    assert storage.can_rename("ram://x/y") and not storage.can_rename("gs://bucket/y") and storage.can_rename("/tmp/y")
    with pytest.raises(storage.StorageError) as raised:
        storage.makedirs("nosuch://bucket/run", "model_dir")
    assert str(raised.value).startswith("--model_dir: cannot create nosuch://bucket/run: File system scheme 'nosuch'")
    with pytest.raises(storage.StorageError, match=r"^gs://: GCS path doesn't contain a bucket name"):
        storage.exists("gs://")


def test_checkpoints_on_ram_are_set_aside_when_damaged_and_by_fresh(ram):
    from toolkit.train import checkpoint

    model_dir = f"{ram}/model"
    weights = tf.Variable([1.0, 2.0])
    first = checkpoint.Checkpointer(model_dir, True, 3, weights=weights)
    for step in (1, 2):
        first.step.assign(step)
        weights.assign_add([1.0, 1.0])
        first.save()
    data = tf.io.gfile.glob(f"{model_dir}/checkpoints/ckpt-2.data*")[0]
    tf.io.gfile.remove(data)  # (a write over an existing ram:// name would append)
    with tf.io.gfile.GFile(data, "wb") as f:
        f.write(b"not a checkpoint")  # a node that died mid-write
    again = checkpoint.Checkpointer(model_dir, True, 3, weights=tf.Variable([0.0, 0.0]))
    assert again.restore_latest() == f"{model_dir}/checkpoints/ckpt-1" and int(again.step.numpy()) == 1
    damaged = again.set_aside_damaged()
    assert damaged.startswith(f"{model_dir}/checkpoints/damaged-")
    assert sorted(storage.listdir(damaged)) == ["ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    assert tf.train.latest_checkpoint(f"{model_dir}/checkpoints") == f"{model_dir}/checkpoints/ckpt-1"

    atomic.write_text(f"{model_dir}/metrics.jsonl", "{}\n")
    atomic.write_json(f"{model_dir}/run.json", {})
    moved = checkpoint.set_aside_previous_run(model_dir)
    assert moved.startswith(f"{model_dir}/previous-")
    assert sorted(storage.listdir(model_dir)) == [moved.rsplit("/", 1)[1]]  # nothing of the old run left in place
    assert sorted(storage.listdir(moved)) == ["checkpoints", "metrics.jsonl", "run.json"]
    assert "ckpt-1.index" in storage.listdir(f"{moved}/checkpoints")


def run_helper(tmp_path, *args, env=None) -> dict:
    """tests/helpers/object_storage_run.py on a few real photos (8 + 4 per class): what it found."""
    require_data(HYMENOPTERA, "the hymenoptera photos")
    photos = tmp_path / "photos"
    for split, count in (("train", 8), ("val", 4)):
        for name in ("ants", "bees"):
            (photos / split / name).mkdir(parents=True)
            for source in sorted(os.listdir(os.path.join(HYMENOPTERA, split, name)))[:count]:
                shutil.copy(os.path.join(HYMENOPTERA, split, name, source), photos / split / name)
    out = subprocess.run([sys.executable, HELPER, str(photos), str(tmp_path), *args], capture_output=True, text=True,
                         timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}, cwd=ROOT)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])


@pytest.mark.slow
def test_train_resume_export_and_infer_with_every_file_on_ram(tmp_path):
    found = run_helper(tmp_path)

    # real photos converted to shards on ram://, trained on from there
    assert found["converted"] == {"train": 16, "val": 8}
    assert {"manifest.json", "labels.txt"} <= set(found["shards"]) and any(n.startswith("train-") for n in found["shards"])
    # the run directory: checkpoints, run.json, the summary, metrics, TensorBoard, weights and plots
    files = set(found["model_files"])
    assert {"run.json", "summary.json", "summary.md", "metrics.jsonl", "model.weights.h5", "curves.png",
            "confusion_matrix.json", "checkpoints/checkpoint", "checkpoints/ckpt-2.index", "provenance.json"} <= files
    assert any(n.startswith("tensorboard/train/events.out.tfevents") for n in files)
    # the export, gated: SavedModel, ONNX and TFLite side by side, built locally and copied up
    assert found["first"]["steps"] == 2 and found["first"]["export"]["parity_passed"] is True
    assert found["first"]["export"]["export_dir"] == "ram://objects/exported"
    assert {"saved_model/saved_model.pb", "saved_model/variables/variables.index", "model.onnx", "model.tflite", "labels.txt",
            "parity.json", "export.json", "saved_model/assets.extra/tf_serving_warmup_requests"} <= set(found["export_files"])
    assert found["export_record"] == "passed" and found["verified"] == {"passed": True, "export_dir": "ram://objects/exported"}
    # the resume read the ram:// checkpoint: steps 3-4 only, and metrics.jsonl kept the first run's lines
    assert found["second"] == {"steps": 4, "history": [1, 2]} and found["checkpoints"] == ["ckpt-2.index", "ckpt-4.index"]
    assert [(m["kind"], m["step"]) for m in found["metrics"]] == [("train", 1), ("train", 2), ("val", 2), ("train", 3),
                                                                   ("train", 4), ("val", 4)]
    # batch inference from the ram:// export into ram:// equals the same export copied out and read locally
    for backend in ("onnx", "savedmodel", "tflite"):
        predicted = found[f"predictions_{backend}"]
        assert predicted["remote"] == predicted["local"], backend
        assert predicted["remote"].count("\r\n") == 9 and predicted["remote"].count(",ok,") == 8, backend
    assert found["evaluation"]["images"] == 8 and found["evaluation"]["files"] == ["confusion_matrix.json", "confusion_matrix.png",
                                                                                   "metrics.json", "predictions.csv", "predictions.png"]
    assert found["leftovers"] == [] and found["renames"] is True  # atomic by rename; no hidden temporary names left


@pytest.fixture
def gcs(tmp_path):
    """Cloud Storage on 127.0.0.1 for TensorFlow's own gs:// client (tests/helpers/gcs_emulator.py)."""
    try:
        import gcp_storage_emulator  # noqa: F401
    except ImportError:
        if under_ci():
            pytest.fail("gcp-storage-emulator is not installed (pip install -e .[test])", pytrace=False)
        pytest.skip("gcp-storage-emulator is not installed (pip install -e .[test])")
    sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))
    from gcs_emulator import BUCKET, Emulator

    emulator = Emulator(str(tmp_path))
    yield f"gs://{BUCKET}", emulator.env
    emulator.close()


@pytest.mark.slow
def test_the_same_on_gs_against_a_local_cloud_storage(tmp_path, gcs):
    bucket, env = gcs
    found = run_helper(tmp_path, f"{bucket}/objects", "quick", env=env)
    assert found["renames"] is False  # gs://: every file written once, then read back and compared
    assert found["converted"] == {"train": 16, "val": 8} and "manifest.json" in found["shards"]
    assert {"run.json", "summary.json", "metrics.jsonl", "model.weights.h5", "checkpoints/ckpt-2.index"} <= set(found["model_files"])
    assert found["first"]["export"]["parity_passed"] is True and found["export_record"] == "passed"
    assert {"saved_model/saved_model.pb", "model.onnx", "export.json"} <= set(found["export_files"])
    assert found["second"] == {"steps": 4, "history": [1, 2]} and found["checkpoints"] == ["ckpt-2.index", "ckpt-4.index"]
    assert [(m["kind"], m["step"]) for m in found["metrics"]][-3:] == [("train", 3), ("train", 4), ("val", 4)]
    assert found["predictions_onnx"]["remote"] == found["predictions_onnx"]["local"]
    assert found["leftovers"] == []
