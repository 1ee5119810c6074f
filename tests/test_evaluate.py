"""toolkit.evaluate on a tiny labelled set of real photos: accuracy and confusion counted by hand.

The hand count uses the SavedModel's own serving_bytes signature on each file (an independent path
from the evaluator's pipeline and ONNX model) and the true class taken from the file's folder.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import inference_helpers as ih
from toolkit.infer import loaders as runtimes
from toolkit.infer import evaluate as scoring


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return ih.tiny_export(tmp_path_factory)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """3 ants and 6 bees (unequal, so a swap of the classes changes the accuracy), plus a broken file."""
    root = tmp_path_factory.mktemp("labelled")
    ants = ih.copy_into(str(root / "ants"), ih.photos("ants", 3, start=30))
    bees = ih.copy_into(str(root / "bees"), ih.photos("bees", 6, start=30))
    (root / "bees" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    return str(root), [(p, 0) for p in ants] + [(p, 1) for p in bees]


def by_hand(model, labelled):
    """(correct, confusion counts[true][predicted]) from the SavedModel, one file at a time."""
    counts = np.zeros((2, 2), int)
    for path, label in labelled:
        predicted = int(ih.saved_model_probabilities(model.saved_model, [path])[0].argmax())
        counts[label][predicted] += 1
    return int(np.trace(counts)), counts


def check_reports(out, metrics, model, labelled):
    correct, counts = by_hand(model, labelled)
    assert metrics["images"] == len(labelled) == 9 and metrics["correct"] == correct
    assert metrics["top1"] == correct / 9
    assert metrics["confusion_matrix"] == counts.tolist()
    assert 0 < counts[0, 0] + counts[1, 0] < 9  # both classes are predicted: the count is not trivial
    assert metrics["top5"] == 1.0 and metrics["top_k"] == 2  # two classes: the top-2 always holds the truth
    rows = {r["class"]: r for r in metrics["per_class"]}
    assert rows["ants"]["support"] == 3 and rows["bees"]["support"] == 6
    assert rows["ants"]["recall"] == counts[0, 0] / 3 and rows["bees"]["recall"] == counts[1, 1] / 6
    assert rows["ants"]["precision"] == (counts[0, 0] / counts[:, 0].sum() if counts[:, 0].sum() else 0.0)
    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert saved["top1"] == metrics["top1"] and saved["failures"] == metrics["failures"]
    assert json.load(open(os.path.join(out, "confusion_matrix.json")))["matrix"] == counts.tolist()
    for name in ("confusion_matrix.png", "predictions.png"):
        with Image.open(os.path.join(out, name)) as image:
            assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 200
    lines = open(os.path.join(out, "predictions.csv")).read().splitlines()
    assert lines[0].startswith("input,status,label,class_1") and len(lines) == 1 + len(labelled) + len(metrics["failures"])


@pytest.mark.slow
def test_folder_accuracy_equals_the_hand_count(model, labelled, tmp_path):
    root, files = labelled
    data = scoring.read_labelled(root)
    out = str(tmp_path / "eval")
    metrics = scoring.evaluate(runtimes.load_model(model.dir), data, out, batch_size=4, log=lambda _: None)
    check_reports(out, metrics, model, files)
    assert metrics["backend"] == "onnx" and metrics["data_format"] == "folder"
    assert [f["input"] for f in metrics["failures"]] == [os.path.join(root, "bees", "broken.jpg")]
    assert "corrupt image" in metrics["failures"][0]["reason"]


@pytest.mark.slow
def test_shards_with_other_label_numbers_and_the_savedmodel_give_the_same(model, labelled, tmp_path):
    _, files = labelled
    shards_dir = tmp_path / "shards"
    shards_dir.mkdir()
    # the shards' class order is reversed and labels count from 1: matched to the model by name
    ih.write_shard(str(shards_dir / "val-00000-of-00001.tfrecord"), [(p, 2 - label) for p, label in files])
    (shards_dir / "labels.txt").write_text("bees\nants\n")
    data = scoring.read_labelled(str(shards_dir))
    assert data.source == "tfrecord" and data.class_names == ("bees", "ants")
    out = str(tmp_path / "eval")
    metrics = scoring.evaluate(runtimes.load_model(model.dir, "savedmodel"), data, out, label_offset=1, grid=6, log=lambda _: None)
    check_reports(out, metrics, model, files)
    assert metrics["failures"] == []


def test_classes_the_model_does_not_know_are_refused():
    with pytest.raises(runtimes.InferenceError, match="--data: classes wasps are not among"):
        scoring.label_mapping(("ants", "wasps"), ("ants", "bees"))


@pytest.mark.slow
def test_the_command_line_writes_every_report(model, labelled, tmp_path):
    root, _ = labelled
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "toolkit.evaluate", f"--model={model.onnx}", f"--data={root}", f"--out={out}"],
                          capture_output=True, text=True, env=ih.ENV, cwd=ih.ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["confusion_matrix.json", "confusion_matrix.png", "metrics.json", "predictions.csv", "predictions.png"]
    assert "evaluate: 9 images (1 could not be scored): top-1" in proc.stdout


@pytest.mark.slow
def test_the_command_line_refuses_a_folder_without_classes_in_one_line(model, tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.jpg").write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-m", "toolkit.evaluate", f"--model={model.onnx}", f"--data={tmp_path / 'flat'}",
                           f"--out={tmp_path / 'eval'}"], capture_output=True, text=True, env=ih.ENV, cwd=ih.ROOT, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error")]
    assert lines == [f"error: --data: {tmp_path / 'flat'} holds neither TFRecord shards nor class subfolders"]


# ------------------------------------------------------------------ the test split, by name


def test_the_test_split_is_read_by_name_from_folders_and_shards(tmp_path):
    import data_helpers as dh
    from toolkit.data import folder, shards

    src = tmp_path / "photos"
    written = dh.write_folder(str(src), None, split_dirs={"train": {"ants": 4, "bees": 4}, "validation": {"ants": 1, "bees": 1},
                                                         "test": {"ants": 2, "bees": 3}})
    data = scoring.read_labelled(str(src), "test")
    assert data.source == "folder" and data.directory == str(src / "test") and data.class_names == ("ants", "bees")
    expected = sorted((str(src / rel), ("ants", "bees").index(rel.split(os.sep)[1])) for rel in written if rel.startswith("test"))
    assert sorted(zip(data.inputs.files, data.inputs.labels)) == expected
    assert scoring.read_labelled(str(src), "val").directory == str(src / "validation")  # --split val finds validation/

    out = tmp_path / "shards"
    folder.convert_folder(str(src), str(out), workers=1, progress=False)
    data = scoring.read_labelled(str(out), "test")
    assert data.source == "tfrecord" and data.inputs.count == 5
    assert data.inputs.files == shards.read_dataset_info(str(out)).split_files("test")
    assert all(os.path.basename(f).startswith("test-") for f in data.inputs.files)

    flat = tmp_path / "flat_shards"
    dh.write_folder(str(tmp_path / "flat"), {"ants": 3, "bees": 3})
    folder.convert_folder(str(tmp_path / "flat"), str(flat), workers=1, progress=False)
    with pytest.raises(runtimes.InferenceError, match=r"--split: .* has no 'test' shards \(it has train, val\)"):
        scoring.read_labelled(str(flat), "test")


@pytest.mark.slow
def test_test_split_scores_the_same_as_shards_and_as_a_folder(model, tmp_path):
    from toolkit.data import folder

    src = tmp_path / "photos"
    for split, start in (("train", 40), ("val", 44), ("test", 46)):
        ih.copy_into(str(src / split / "ants"), ih.photos("ants", 2, start=start))
        ih.copy_into(str(src / split / "bees"), ih.photos("bees", 2, start=start))
    folder.convert_folder(str(src), str(tmp_path / "shards"), workers=1, progress=False)
    loaded = runtimes.load_model(model.dir)
    by_folder = scoring.evaluate(loaded, scoring.read_labelled(str(src), "test"), str(tmp_path / "a"), grid=0, log=lambda _: None)
    by_shards = scoring.evaluate(loaded, scoring.read_labelled(str(tmp_path / "shards"), "test"), str(tmp_path / "b"), grid=0,
                                  log=lambda _: None)
    assert by_folder["images"] == by_shards["images"] == 4
    assert by_folder["confusion_matrix"] == by_shards["confusion_matrix"]
