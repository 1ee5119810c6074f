"""toolkit.data.convert / folder / images / writer: real files in, shards read back out."""

import collections
import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import data_helpers as dh
from toolkit import cli
from toolkit.data import convert, folder, images, schema, shards, writer

JPEG_TOLERANCE = 4.0  # mean absolute difference in 0-255 levels between two decoders / a re-encode


def mean_abs(a, b) -> float:
    return float(np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def tf_decode(data: bytes) -> np.ndarray:
    return tf.io.decode_jpeg(data, channels=3).numpy()


# ------------------------------------------------------------------ images: one file at a time


@pytest.mark.parametrize("kind", dh.ODD_KINDS)
def test_odd_formats_become_rgb_jpeg(kind):
    data = dh.odd_image(kind, seed=3)
    prepared = images.prepare_image(data)
    assert prepared.action == "reencoded"
    assert prepared.data[:3] == b"\xff\xd8\xff"  # a JPEG now
    decoded = tf_decode(prepared.data)
    assert decoded.shape == (24, 32, 3) == (prepared.height, prepared.width, 3)
    assert mean_abs(decoded, dh.reference_rgb(data)) < JPEG_TOLERANCE


def test_transparent_pixels_become_white_not_black():
    prepared = images.prepare_image(dh.odd_image("rgba_png", seed=4))
    left = tf_decode(prepared.data)[:, :12]  # fully transparent half
    assert left.min() > 240


def test_rgb_jpeg_is_stored_byte_for_byte():
    data = dh.odd_image("jpeg", seed=5)
    prepared = images.prepare_image(data)
    assert (prepared.action, prepared.data, prepared.height, prepared.width) == ("kept", data, 24, 32)


@pytest.mark.parametrize(
    "size, max_side, expected",
    [((200, 100), 50, (100, 50)), ((100, 200), 50, (50, 100)), ((60, 40), 50, (60, 40)), ((64, 64), 32, (32, 32)), ((300, 99), 0, (300, 99))],
)
def test_max_side_bounds_the_shorter_side(size, max_side, expected):
    assert images.bounded_size(*size, max_side) == expected
    data = dh.encode(Image.fromarray(dh.pixels(size[1], size[0], 6)), "JPEG", quality=92)
    prepared = images.prepare_image(data, max_side=max_side)
    assert (prepared.width, prepared.height) == expected == Image.open(io.BytesIO(prepared.data)).size
    assert prepared.action == ("kept" if expected == size else "resized")
    if expected != size:  # downscaled content still matches the original, downscaled by PIL
        reference = Image.open(io.BytesIO(data)).convert("RGB").resize(expected, Image.Resampling.BILINEAR)
        assert mean_abs(tf_decode(prepared.data), np.asarray(reference)) < 2 * JPEG_TOLERANCE


@pytest.mark.parametrize("name", ["empty.jpg", "truncated.jpg", "corrupt.jpg", "notes.txt", "fake.png"])
def test_bad_inputs_raise_with_a_reason(name):
    data, word = dh.bad_files(dh.odd_image("jpeg", 64, 64, seed=7))[name]
    with pytest.raises(images.BadImage, match=word):
        images.prepare_image(data)
    assert isinstance(images.prepare_task((data, 0, 90)), str)  # the worker form never raises


def test_jpeg_that_only_pil_accepts_is_caught_by_the_tensorflow_check():
    good = dh.odd_image("jpeg", 64, 64, seed=7)
    data, _ = dh.bad_files(good)["scrambled.jpg"]
    assert images.prepare_image(data).action == "kept"  # PIL alone would have stored it
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_jpeg(data)  # ...and training would have died on it
    assert "TensorFlow" in writer.tf_decode_error(data)
    assert writer.tf_decode_error(good) is None


# ------------------------------------------------------------------ folders


def test_stratified_split_is_exact_per_class_and_deterministic():
    items = [(f"a/{i}.jpg", 0) for i in range(10)] + [(f"b/{i}.jpg", 1) for i in range(20)] + [("c/0.jpg", 2)]
    train, val = folder.stratified_split(items, 0.2, seed=0)
    assert collections.Counter(l for _, l in val) == {0: 2, 1: 4}  # a one-image class stays in train
    assert sorted(train + val) == sorted(items)
    again = folder.stratified_split(list(reversed(items)), 0.2, seed=0)
    assert sorted(again[1]) == sorted(val)  # input order does not matter
    other = folder.stratified_split(items, 0.2, seed=1)
    assert sorted(other[1]) != sorted(val)  # the seed does


def test_convert_then_read_back(tmp_path):
    src = tmp_path / "photos"
    written = dh.write_folder(str(src), {"cat": 6, "dog": 5, "emu": 4})
    with open(src / "dog" / "drawing.png", "wb") as f:
        f.write(dh.odd_image("png", seed=11))
    with open(src / "README.txt", "w") as f:
        f.write("not in a class folder\n")
    conversion = folder.convert_folder(str(src), str(tmp_path / "out"), val_fraction=0.25, shard_size=3, workers=1, progress=False)
    m = conversion.manifest

    assert m["class_names"] == ["cat", "dog", "emu"]
    assert open(tmp_path / "out" / shards.LABELS).read().split("\n")[:3] == ["cat", "dog", "emu"]
    assert m["splits"]["val"]["per_class"] == {"cat": 2, "dog": 2, "emu": 1}  # round(0.25 n), >= 1
    assert m["splits"]["train"]["per_class"] == {"cat": 4, "dog": 4, "emu": 3}
    assert m["skipped"] == [{"file": "README.txt", "reason": "not inside a class folder"}]
    assert m["source"] == str(src) and m["layout"] == "classes"
    for split in ("train", "val"):
        entry = m["splits"][split]
        assert len(entry["shards"]) == len(entry["shard_counts"]) and sum(entry["shard_counts"]) == entry["count"]
        assert max(entry["shard_counts"]) <= 3
    info = shards.read_dataset_info(str(tmp_path / "out"))
    assert info.counts == {"train": 11, "val": 5} and info.class_names == ("cat", "dog", "emu")

    records = dh.read_records(str(tmp_path / "out"))
    assert len(records) == 16
    assert sorted(r["filename"] for r in records) == sorted(list(written) + [os.path.join("dog", "drawing.png")])
    for r in records:
        source = (src / r["filename"]).read_bytes()
        assert r["text"] == r["filename"].split(os.sep)[0] == m["class_names"][r["label"]]
        assert r["format"] == "JPEG"
        with Image.open(io.BytesIO(source)) as original:
            assert (r["width"], r["height"]) == original.size
        assert mean_abs(tf_decode(r["encoded"]), dh.reference_rgb(source)) < JPEG_TOLERANCE
        if r["filename"].endswith(".jpg"):
            assert r["encoded"] == source  # stored as-is
    # shards hold a mix of classes, not one class after another
    train_shards = collections.defaultdict(set)
    for r in records:
        if r["split"] == "train":
            train_shards[r["shard"]].add(r["label"])
    assert max(len(labels) for labels in train_shards.values()) > 1


def test_train_val_and_test_folders_are_kept_and_other_folders_reported(tmp_path):
    src = tmp_path / "src"
    dh.write_folder(str(src), None, split_dirs={"train": {"x": 3, "y": 2}, "val": {"x": 1, "y": 2}, "test": {"x": 1, "y": 3},
                                               "extra": {"x": 1}})
    out = tmp_path / "out"
    m = folder.convert_folder(str(src), str(out), workers=1, progress=False).manifest
    assert m["layout"] == "splits" and m["options"]["val_fraction"] is None and m["val_source"] == "val folder"
    assert m["splits"]["train"]["per_class"] == {"x": 3, "y": 2}
    assert m["splits"]["val"]["per_class"] == {"x": 1, "y": 2}
    assert m["splits"]["test"]["per_class"] == {"x": 1, "y": 3}
    assert m["split_dirs"] == {"train": str(src / "train"), "val": str(src / "val"), "test": str(src / "test")}
    assert m["skipped"] == [{"file": "extra/", "reason": "folder not used: only train/, val/ and test/ are read"}]
    for split in ("val", "test"):
        assert {r["filename"].split(os.sep)[0] for r in dh.read_records(str(out), split)} == {split}
    info = shards.read_dataset_info(str(out))  # what the trainer and toolkit.evaluate read
    assert info.counts == {"train": 5, "val": 3, "test": 4}
    assert [os.path.basename(p) for p in info.split_files("test")] == [f"test-0000{i}-of-00004.tfrecord" for i in range(4)]


def test_shards_without_val_are_named_with_the_splits_they_have_and_the_way_to_make_val(tmp_path):
    src = tmp_path / "src"
    dh.write_folder(str(src), None, split_dirs={"train": {"x": 3, "y": 2}, "test": {"x": 1, "y": 1}})
    out = tmp_path / "out"
    folder.convert_folder(str(src), str(out), val_fraction=0.0, workers=1, progress=False)
    with pytest.raises(ValueError) as raised:
        shards.read_dataset_info(str(out)).split_files("val")
    assert str(raised.value) == (f"--data_dir: {out} has no 'val' shards (it has test, train); "
                                 "python -m toolkit.data.convert --val_fraction 0.1 holds a share of train out as val")


def test_without_val_folder_val_is_drawn_from_train_never_from_test(tmp_path):
    src = tmp_path / "src"
    written = dh.write_folder(str(src), None, split_dirs={"train": {"x": 8, "y": 4}, "test": {"x": 2, "y": 2}})
    out = tmp_path / "out"
    m = folder.convert_folder(str(src), str(out), val_fraction=0.25, workers=1, progress=False).manifest
    assert m["splits"]["val"]["per_class"] == {"x": 2, "y": 1} and m["splits"]["train"]["per_class"] == {"x": 6, "y": 3}
    assert m["options"]["val_fraction"] == 0.25 and m["val_source"] == "0.25 of train, per class"
    by_split = {split: {r["filename"] for r in dh.read_records(str(out), split)} for split in ("train", "val", "test")}
    assert {f.split(os.sep)[0] for f in by_split["val"]} == {"train"}
    assert by_split["test"] == {rel for rel in written if rel.startswith("test" + os.sep)}
    assert by_split["train"] | by_split["val"] == {rel for rel in written if rel.startswith("train" + os.sep)}


def test_flat_folder_has_no_test_split_and_split_folders_need_train(tmp_path):
    dh.write_folder(str(tmp_path / "flat"), {"x": 3, "y": 3})
    m = folder.convert_folder(str(tmp_path / "flat"), str(tmp_path / "out"), workers=1, progress=False).manifest
    assert set(m["splits"]) == {"train", "val"}
    dh.write_folder(str(tmp_path / "no_train"), None, split_dirs={"val": {"x": 1}, "test": {"x": 1}})
    with pytest.raises(writer.ConversionError, match="has test/, val/ but no train/"):
        folder.convert_folder(str(tmp_path / "no_train"), str(tmp_path / "out2"), workers=1, progress=False)


def test_bad_files_are_skipped_and_reported(tmp_path):
    src = tmp_path / "src"
    dh.write_folder(str(src), {"a": 3, "b": 3})
    bad = dh.bad_files(dh.odd_image("jpeg", 64, 64, seed=8))
    for name, (data, _) in bad.items():
        (src / "a" / name).write_bytes(data)
    (src / "b" / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: ignored, not reported
    conversion = folder.convert_folder(str(src), str(tmp_path / "out"), val_fraction=0.0, workers=2, progress=False)
    reasons = {os.path.basename(s["file"]): s["reason"] for s in conversion.manifest["skipped"]}
    assert set(reasons) == set(bad)
    for name, (_, word) in bad.items():
        assert word in reasons[name], (name, reasons[name])
    assert conversion.manifest["splits"]["train"]["count"] == 6
    assert len(dh.read_records(str(tmp_path / "out"))) == 6
    assert f"skipped {len(bad)}" in writer.format_summary(conversion)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


def test_odd_formats_convert_through_the_folder(tmp_path):
    src = tmp_path / "src"
    os.makedirs(src / "mixed")
    for i, kind in enumerate(dh.ODD_KINDS):
        (src / "mixed" / f"{i}_{kind}.img").write_bytes(dh.odd_image(kind, seed=20 + i))
    m = folder.convert_folder(str(src), str(tmp_path / "out"), val_fraction=0.0, workers=1, progress=False).manifest
    assert m["skipped"] == [] and m["stats"]["reencoded"] == len(dh.ODD_KINDS)
    for r in dh.read_records(str(tmp_path / "out")):
        assert tf_decode(r["encoded"]).shape == (24, 32, 3)
        assert mean_abs(tf_decode(r["encoded"]), dh.reference_rgb((src / r["filename"]).read_bytes())) < JPEG_TOLERANCE


def test_output_does_not_depend_on_the_number_of_workers(tmp_path):
    src = tmp_path / "src"
    dh.write_folder(str(src), {"a": 7, "b": 6})
    (src / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nothing more")
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        folder.convert_folder(str(src), str(out), shard_size=4, workers=workers, progress=False)
        outs.append({os.path.basename(p): open(p, "rb").read() for p in glob.glob(str(out / "*"))})
    assert outs[0] == outs[1]


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    src = tmp_path / "src"
    dh.write_folder(str(src), {"a": 2, "b": 2})
    out = tmp_path / "out"
    folder.convert_folder(str(src), str(out), workers=1, progress=False)
    (out / "stale.txt").write_text("from an older run")
    with pytest.raises(writer.ConversionError, match="--overwrite"):
        folder.convert_folder(str(src), str(out), workers=1, progress=False)
    assert (out / "stale.txt").exists()
    folder.convert_folder(str(src), str(out), workers=1, progress=False, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / shards.MANIFEST).exists()

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(writer.ConversionError, match="not a shard directory"):
        folder.convert_folder(str(src), str(precious), workers=1, progress=False, overwrite=True)
    assert (precious / "thesis.tex").exists()
    with pytest.raises(writer.ConversionError, match="overlaps"):
        folder.convert_folder(str(src), str(src / "shards"), workers=1, progress=False)
    with pytest.raises(writer.ConversionError, match="overlaps"):
        folder.convert_folder(str(src), str(tmp_path), workers=1, progress=False, overwrite=True)


def test_a_failed_run_leaves_the_previous_output_untouched(tmp_path, monkeypatch):
    src = tmp_path / "src"
    dh.write_folder(str(src), {"a": 4, "b": 4})
    out = tmp_path / "out"
    folder.convert_folder(str(src), str(out), workers=1, progress=False)
    before = {p: open(p, "rb").read() for p in glob.glob(str(out / "*"))}

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt  # the user pressing ^C mid-run
        return schema.encode_example(*args, **kwargs)

    monkeypatch.setattr(writer.schema, "encode_example", failing)
    with pytest.raises(KeyboardInterrupt):
        folder.convert_folder(str(src), str(out), workers=1, progress=False, overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        folder.convert_folder(str(src), str(tmp_path / "fresh"), workers=1, progress=False)
    assert {p: open(p, "rb").read() for p in glob.glob(str(out / "*"))} == before
    assert not (tmp_path / "fresh").exists()
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]  # no temporary directories left


def test_flags_drive_the_same_conversion(tmp_path):
    src = tmp_path / "src"
    dh.write_folder(str(src), {"a": 5, "b": 5})
    (c,), _ = cli.parse_args(convert.SECTIONS, [f"--src={src}", f"--out={tmp_path / 'out'}", "--val_fraction=0.2", "--max_side=16",
                                                "--workers=1", "--noprogress"])
    m = convert.convert(c).manifest
    assert m["options"]["max_side"] == 16 and m["splits"]["val"]["count"] == 2
    assert all(min(r["height"], r["width"]) == 16 for r in dh.read_records(str(tmp_path / "out")))
    (c,), _ = cli.parse_args(convert.SECTIONS, [f"--src={src}", "--tfds_name=mnist", f"--out={tmp_path / 'x'}"])
    with pytest.raises(writer.ConversionError, match="exactly one"):
        convert.convert(c)


def test_cli_refuses_an_existing_output_with_one_line(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "something").write_text("x")
    env = dict(os.environ, PYTHONPATH=dh.ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run(
        [sys.executable, "-m", "toolkit.data.convert", f"--src={tmp_path / 'src'}", f"--out={tmp_path / 'out'}"],
        capture_output=True, text=True, env=env, cwd=dh.ROOT, timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == f"error: --out: {tmp_path / 'out'} already exists; pass --overwrite to replace it"
    assert "Traceback" not in run.stderr


# ------------------------------------------------------------------ the real photos

NEEDS_DATA = """
import sys
sys.path.insert(0, {tests!r})
from conftest import require_data

def test_needs_the_photos():
    require_data({missing!r}, "the hymenoptera photos")
"""


@pytest.mark.parametrize("ci, outcome", [("true", "1 failed"), (None, "1 skipped"), ("0", "1 skipped")])
def test_missing_data_fails_under_ci_and_skips_elsewhere(tmp_path, ci, outcome):
    """The suite cannot pass by skipping in CI: a real pytest run of a test whose data is missing."""
    missing = str(tmp_path / "no_such" / "hymenoptera")
    (tmp_path / "test_needs_data.py").write_text(NEEDS_DATA.format(tests=os.path.dirname(os.path.abspath(__file__)), missing=missing))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # keep the repository's options out of the inner run
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    if ci is not None:
        env["CI"] = ci
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", "-p", "no:xdist", "test_needs_data.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    summary = run.stdout.strip().splitlines()[-1]
    assert outcome in summary, run.stdout + run.stderr
    assert run.returncode == (1 if outcome == "1 failed" else 0)
    assert f"the hymenoptera photos not found at {missing}" in run.stdout  # the reason is reported either way
    assert "TOOLKIT_SHARED_DATA" in run.stdout
    assert dh.require_data(str(tmp_path), "a folder that exists") == str(tmp_path)


@pytest.fixture(scope="module")
def hymenoptera(tmp_path_factory):
    dh.require_data(dh.HYMENOPTERA, "the hymenoptera photos")
    out = tmp_path_factory.mktemp("hymenoptera") / "shards"
    return folder.convert_folder(dh.HYMENOPTERA, str(out), max_side=48, shard_size=64, workers=2, progress=False)


def test_hymenoptera_converts_completely(hymenoptera):
    m = hymenoptera.manifest
    assert m["skipped"] == []
    assert m["splits"]["train"]["per_class"] == {"ants": 124, "bees": 121}
    assert m["splits"]["val"]["per_class"] == {"ants": 70, "bees": 83}
    records = dh.read_records(hymenoptera.out_dir)
    assert len(records) == 398
    names = {r["filename"] for r in records}
    assert os.path.join("train", "ants", "imageNotFound.gif") in names  # the GIF placeholder
    assert os.path.join("train", "ants", "ant photos.jpg") in names  # the name with a space
    assert all(min(r["height"], r["width"]) <= 48 for r in records)
    assert all(r["text"] == r["filename"].split(os.sep)[1] for r in records)
    with open(os.path.join(hymenoptera.out_dir, shards.MANIFEST)) as f:
        assert json.load(f) == m
