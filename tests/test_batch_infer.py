"""python -m toolkit.infer and toolkit.infer.predict on a real 32 px export and real photos.

The reference is the SavedModel's own serving_bytes signature on the raw file bytes (decoding,
cropping and resizing inside the exported graph): batch inference must give the same classes and
probabilities from its own parallel pipeline, through onnxruntime and through TensorFlow.
"""

import csv
import io
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import inference_helpers as ih
from toolkit.infer import predict as inference
from toolkit.infer import loaders as runtimes

from toolkit import cli as toolkit_cli
from toolkit.common.errors import ToolkitError
from toolkit.infer import __main__ as batch_infer
from toolkit.infer.predict import predict_to_file


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return ih.tiny_export(tmp_path_factory)


@pytest.fixture(scope="module")
def good_photos(tmp_path_factory):
    """Seven real photos (one of them named with a space) in a temp folder, with a subfolder."""
    folder = tmp_path_factory.mktemp("good")
    paths = ih.copy_into(str(folder), ih.photos("ants", 3, start=10), ["a 1.jpg", "a2.jpg", "a3.jpg"])
    paths += ih.copy_into(str(folder / "more"), ih.photos("bees", 4, start=10))
    return str(folder), sorted(paths)


def infer(argv):
    """python -m toolkit.infer's work in this process: its flags parsed, inputs after the flags included."""
    (settings,), rest = toolkit_cli.parse_args(batch_infer.SECTIONS, argv)
    return predict_to_file(dataclasses.replace(settings, inputs=settings.inputs + tuple(rest)), log=print)


def run(argv, capsys):
    """(exit code, stdout, stderr) as the command would give them (toolkit.cli maps typed errors)."""
    try:
        infer(argv)
        code = 0
    except ToolkitError as e:
        print(f"error: {e}", file=sys.stderr)
        code = int(e.exit_code)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def csv_probabilities(rows, class_names):
    """[images, classes] from rows holding every class (top_k >= classes)."""
    out = np.zeros((len(rows), len(class_names)), np.float32)
    for n, row in enumerate(rows):
        for k in range(1, len(class_names) + 1):
            out[n, class_names.index(row[f"class_{k}"])] = float(row[f"probability_{k}"])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "savedmodel", "tflite"])
def test_predictions_equal_the_saved_models_on_real_photos(model, good_photos, tmp_path, capsys, backend):
    folder, paths = good_photos
    out = tmp_path / "p.csv"
    code, stdout, _ = run(["--model", model.dir, "--inputs", folder, "--output", str(out), "--backend", backend,
                           "--batch_size", "3", "--top_k", "5"], capsys)
    assert code == 0
    rows = read_csv(out)
    assert [r["input"] for r in rows] == paths  # every photo, in input order, across partial batches
    assert {r["status"] for r in rows} == {"ok"} and {r["error"] for r in rows} == {""}
    assert list(rows[0]) == ["input", "status", "class_1", "probability_1", "class_2", "probability_2", "error"]  # k capped at 2
    got = csv_probabilities(rows, ih.CLASSES)
    expected = ih.saved_model_probabilities(model.saved_model, paths)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert [r["class_1"] for r in rows] == [ih.CLASSES[i] for i in expected.argmax(1)]
    assert len(set(expected.argmax(1))) == 2  # the photos really get different answers
    assert f"infer: {len(paths)} images scored, 0 failed" in stdout and "images/s" in stdout
    assert (backend + " ") in stdout


@pytest.mark.slow
def test_jsonl_output_and_tfrecord_input_agree_with_the_folder(model, good_photos, tmp_path, capsys):
    folder, paths = good_photos
    shard = ih.write_shard(str(tmp_path / "photos.tfrecord"), [(p, 0) for p in paths])
    out = tmp_path / "p.jsonl"
    code, _, _ = run(["--model", model.onnx, "--inputs", shard, "--output", str(out), "--top_k", "1"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input"] for r in rows] == [f"{shard}#{i}" for i in range(len(paths))]
    expected = ih.saved_model_probabilities(model.saved_model, paths)
    for row, probabilities in zip(rows, expected):
        assert row["status"] == "ok" and len(row["top_k"]) == 1 and set(row["top_k"][0]) == {"class", "index", "probability"}
        best = int(probabilities.argmax())
        assert row["top_k"][0]["index"] == best and row["top_k"][0]["class"] == ih.CLASSES[best]
        assert abs(row["top_k"][0]["probability"] - probabilities[best]) <= 1e-4


def bad_files(folder):
    """{file name: words its reason must hold}, written into folder."""
    photo = open(ih.photos("bees", 1)[0], "rb").read()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not a picture\n")
    (folder / "truncated.jpg").write_bytes(photo[: len(photo) // 3])
    (folder / "header.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    (folder / "page.tiff").write_bytes(_encode(Image.new("RGB", (20, 10)), "TIFF"))  # PIL reads it, TensorFlow does not
    (folder / "huge.png").write_bytes(_encode(Image.new("RGB", (1000, 800)), "PNG"))
    (folder / ".hidden.jpg").write_bytes(b"ignored")
    return {"empty.jpg": "empty file", "notes.txt": "not an image", "truncated.jpg": "cannot decode",
            "header.jpg": "corrupt image", "page.tiff": "cannot decode", "huge.png": "too many pixels"}


def _encode(image, fmt):
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.slow
def test_a_mixed_folder_scores_the_good_files_and_reports_the_rest(model, tmp_path, capsys):
    folder = tmp_path / "mixed"
    good = ih.copy_into(str(folder), ih.photos("ants", 2, start=20))
    (folder / "small.png").write_bytes(_encode(Image.open(good[0]).resize((50, 40)), "PNG"))  # other formats are fine
    (folder / "small.gif").write_bytes(_encode(Image.open(good[1]).resize((40, 50)).convert("P"), "GIF"))
    bad = bad_files(folder)
    out = tmp_path / "p.csv"
    code, stdout, _ = run(["--model", model.dir, "--inputs", str(folder), "--output", str(out), "--max_pixels", "700000",
                           "--batch_size", "2"], capsys)
    assert code == 0
    rows = {os.path.basename(r["input"]): r for r in read_csv(out)}
    assert sorted(rows) == sorted([os.path.basename(p) for p in good] + ["small.png", "small.gif"] + list(bad))
    for name, words in bad.items():
        assert rows[name]["status"] == "failed" and words in rows[name]["error"] and not rows[name]["class_1"], rows[name]
    scored = [r for r in rows.values() if r["status"] == "ok"]
    assert len(scored) == 4 and all(r["class_1"] in ih.CLASSES for r in scored)
    assert "\n" not in "".join(r["error"] for r in rows.values())
    assert "4 images scored, 6 failed" in stdout
    png = ih.saved_model_probabilities(model.saved_model, [str(folder / "small.png")])[0]
    assert abs(float(rows["small.png"]["probability_1"]) - png.max()) <= 1e-4


@pytest.mark.slow
def test_failures_on_both_sides_of_the_readers_chunks_keep_every_result_in_place(model, good_photos, tmp_path):
    """The reader hands tf.data CHUNK inputs at a time: failures checked in Python (empty, not an
    image) and failures of TensorFlow's decode (truncated) at a chunk's first and last places, and
    a last chunk holding only failures, still come back one result per input, in input order."""
    _, photos = good_photos
    size = 3 * inference.CHUNK + 2
    bad = {0: ("empty.jpg", b"", "empty file"), inference.CHUNK - 1: ("notes.txt", b"text", "not an image"),
           inference.CHUNK: ("cut.jpg", open(photos[0], "rb").read()[:900], "cannot decode"),
           size - 2: ("late.jpg", b"", "empty file"), size - 1: ("last.jpg", b"\xff\xd8\xff\xe0 x", "corrupt image")}
    paths = []
    for i in range(size):
        name, data, _ = bad.get(i, (f"{i:03d}.jpg", open(photos[i % len(photos)], "rb").read(), ""))
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    loaded = runtimes.load_model(model.onnx, "onnx")
    results = list(inference.predict(loaded, inference.Inputs(tuple(paths), count=size), batch_size=5))
    assert [r.index for r in results] == list(range(size)) and [r.input for r in results] == paths
    for r in results:
        if r.index in bad:
            assert not r.ok and bad[r.index][2] in r.error, (r.index, r.error)
        else:
            assert r.ok, (r.index, r.error)
    good = [r for r in results if r.ok]
    expected = ih.saved_model_probabilities(model.saved_model, [r.input for r in good])
    np.testing.assert_allclose(np.stack([r.probabilities for r in good]), expected, atol=1e-4)


@pytest.mark.slow
def test_an_object_storage_input_gone_after_listing_is_one_failed_row(model, good_photos):
    """Inputs listed on object storage (ram://), one of them deleted before it is read: that one
    becomes a failed row naming the reason, the others are scored as from local files."""
    import tensorflow as tf

    _, photos = good_photos
    remote = [f"ram://gone-after-listing/{i}.jpg" for i in range(3)]
    for path, photo in zip(remote, photos):
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(open(photo, "rb").read())
    inputs = inference.list_inputs(["ram://gone-after-listing/"])
    assert list(inputs.files) == remote
    tf.io.gfile.remove(remote[1])
    loaded = runtimes.load_model(model.onnx, "onnx")
    results = list(inference.predict(loaded, inputs, batch_size=2))
    assert [r.input for r in results] == remote
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error.startswith("unreadable file: ") and "\n" not in results[1].error, results[1].error
    expected = ih.saved_model_probabilities(model.saved_model, [photos[0], photos[2]])
    np.testing.assert_allclose(np.stack([results[0].probabilities, results[2].probabilities]), expected, atol=1e-4)


@pytest.mark.slow
def test_nothing_scored_exits_6_but_still_writes_the_reasons(model, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    bad = bad_files(folder)
    out = tmp_path / "p.jsonl"
    code, _, err = run(["--model", model.onnx, "--inputs", str(folder / "*"), "--output", str(out), "--max_pixels", "700000"], capsys)
    assert code == 6 and "none of the 6 inputs could be scored" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(os.path.basename(r["input"]) for r in rows) == sorted(bad)
    assert all(r["status"] == "failed" and r["error"] for r in rows)


@pytest.mark.slow
def test_a_crash_mid_run_leaves_an_earlier_output_untouched(model, good_photos, tmp_path, monkeypatch):
    folder, _ = good_photos
    out = tmp_path / "p.csv"
    out.write_text("earlier results\n")
    loaded = runtimes.load_model(model.onnx)

    def crash(images):
        raise MemoryError("out of memory")

    monkeypatch.setattr(runtimes, "load_model", lambda *a, **k: runtimes.Model("onnx", model.onnx, loaded.class_names, ih.SIZE, crash))
    with pytest.raises(MemoryError):
        infer(["--model", model.onnx, "--inputs", folder, "--output", str(out)])
    assert out.read_text() == "earlier results\n" and os.listdir(tmp_path) == ["p.csv"]


def cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "toolkit.infer", *args], capture_output=True, text=True, env=ih.ENV, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_the_command_line_end_to_end(model, good_photos, tmp_path):
    folder, paths = good_photos
    out = tmp_path / "deep" / "p.csv"
    proc = cli(["--model", model.dir, "--inputs", os.path.join(folder, "**", "*.jpg"), "--output", str(out), "--threads", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["input"] for r in read_csv(out)] == paths
    assert proc.stdout.strip().splitlines()[-1].startswith(f"infer: {len(paths)} images scored")


@pytest.mark.slow
@pytest.mark.parametrize("case, words", [
    ("empty folder", "--inputs: no files in"),
    ("no such input", "--inputs: "),
    ("missing model", "--model: "),
    ("not a model", "is neither an .onnx or .tflite file"),
    ("bad output", "--output: "),
    ("no onnx for the backend", "--backend: "),
])
def test_bad_arguments_give_one_line_and_exit_2(model, good_photos, tmp_path, case, words):
    folder, _ = good_photos
    (tmp_path / "empty").mkdir()
    args = {"--model": model.dir, "--inputs": folder, "--output": str(tmp_path / "p.csv")}
    if case == "empty folder":
        args["--inputs"] = str(tmp_path / "empty")
    elif case == "no such input":
        args["--inputs"] = str(tmp_path / "nowhere")
    elif case == "missing model":
        args["--model"] = str(tmp_path / "no_model.onnx")
    elif case == "not a model":
        args["--model"] = ih.photos("ants", 1)[0]
    elif case == "bad output":
        args["--output"] = str(tmp_path / "p.txt")
    elif case == "no onnx for the backend":
        args["--model"] = model.saved_model
        args["--backend"] = "onnx"
    proc = cli([x for kv in args.items() for x in kv], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr
    assert not os.path.exists(tmp_path / "p.csv")


def test_list_inputs_reads_folders_globs_and_shard_directories(tmp_path):
    (tmp_path / "a" / ".git").mkdir(parents=True)
    for name in ("a/1.jpg", "a/b.png", "a/.x.jpg", "a/.git/c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert inference.list_inputs([str(tmp_path / "a")]).files == (str(tmp_path / "a" / "1.jpg"), str(tmp_path / "a" / "b.png"))
    assert inference.list_inputs([str(tmp_path / "a" / "*.png")]).files == (str(tmp_path / "a" / "b.png"),)
    shards_dir = tmp_path / "shards"
    shards_dir.mkdir()
    for name in ("train-00000-of-00002", "val-00000-of-00001.tfrecord", "labels.txt", "manifest.json"):
        (shards_dir / name).write_bytes(b"")
    listed = inference.list_inputs([str(shards_dir)])
    assert listed.tfrecord and [os.path.basename(f) for f in listed.files] == ["train-00000-of-00002", "val-00000-of-00001.tfrecord"]
    with pytest.raises(runtimes.InferenceError, match="mixes TFRecord"):
        inference.list_inputs([str(tmp_path / "a"), str(shards_dir / "train-00000-of-00002")])


def test_check_image_caps_pixels_from_the_header_alone():
    png = _encode(Image.new("L", (3000, 2000)), "PNG")
    assert inference.check_image(png, max_pixels=6_000_000) is None
    reason = inference.check_image(png, max_pixels=5_999_999)
    assert reason.startswith("too many pixels: 3000x2000 = 6.0 megapixels")
