"""Other sources: a TFDS dataset prepared locally (offline) and other tools' ImageNet-style shards."""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import data_helpers as dh
from toolkit import cli
from toolkit.config import DataConfig
from toolkit.data import convert, external, pipeline, schema, shards, writer


def batches_from(data_dir: str, image_size: int = 32, batch_size: int = 4, steps: int = 2, label_offset: int = 0):
    """A few training batches through the real pipeline, as numpy."""
    info = shards.read_dataset_info(data_dir)
    config = DataConfig(data_dir=data_dir, image_size=image_size, batch_size=batch_size, label_offset=label_offset, shuffle_buffer=8, deterministic=True)
    ds = pipeline.make_train_dataset(config, info.split_files("train"), steps_per_epoch=steps)
    return [(x.numpy(), y.numpy()) for x, y in ds.take(steps)]


def assert_trainable_batches(data_dir: str, num_classes: int, **kwargs):
    for images, labels in batches_from(data_dir, **kwargs):
        assert images.shape == (4, 32, 32, 3) and images.dtype == np.float32
        assert -1.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.01
        assert labels.dtype == np.int32 and 0 <= labels.min() and labels.max() < num_classes


# ------------------------------------------------------------------ TFDS


@pytest.fixture
def tfds_dir(tmp_path):
    data_dir = tmp_path / "tfds"
    dh.write_tfds_dataset(str(data_dir), "tiny_gray", {"train": 12, "test": 6})
    return data_dir


def test_tfds_dataset_converts_with_its_labels(tfds_dir, tmp_path):
    import tensorflow_datasets as tfds

    conversion = external.convert_tfds("tiny_gray", str(tmp_path / "out"), data_dir=str(tfds_dir), val_split="test",
                                       workers=1, progress=False)
    m = conversion.manifest
    assert m["class_names"] == ["a", "b", "c"] and m["source_kind"] == "tfds"
    assert m["options"]["val_split"] == "test" and m["options"]["test_split"] is None  # named as val: not also test
    assert (m["splits"]["train"]["count"], m["splits"]["val"]["count"]) == (12, 6) and "test" not in m["splits"]

    builder = tfds.builder("tiny_gray", data_dir=str(tfds_dir))
    expected = [(ex["image"], int(ex["label"])) for ex in builder.as_dataset(split="train", shuffle_files=False).as_numpy_iterator()]
    records = dh.read_records(str(tmp_path / "out"), "train")
    assert [r["label"] for r in records] == [label for _, label in expected]
    for r, (image, label) in zip(records, expected):
        assert r["text"] == "abc"[label] and (r["height"], r["width"]) == (28, 28)
        decoded = tf.io.decode_jpeg(r["encoded"]).numpy()
        assert decoded.shape == (28, 28, 3)  # grayscale became RGB
        assert np.abs(decoded.astype(float) - image.astype(float)).mean() < 4.0
    assert_trainable_batches(str(tmp_path / "out"), 3)


def test_tfds_test_split_stays_test_and_val_is_drawn_from_train(tfds_dir, tmp_path):
    out = tmp_path / "out"
    m = external.convert_tfds("tiny_gray", str(out), data_dir=str(tfds_dir), val_fraction=0.25, workers=1, progress=False).manifest
    assert m["options"]["test_split"] == "test" and m["options"]["val_split"] == "0.25 of train"
    assert (m["splits"]["train"]["count"], m["splits"]["val"]["count"], m["splits"]["test"]["count"]) == (9, 3, 6)
    names = {split: [r["filename"] for r in dh.read_records(str(out), split)] for split in ("train", "val", "test")}
    assert names["test"] == [f"test[{i}]" for i in range(6)]
    assert sorted(names["train"] + names["val"]) == sorted(f"train[{i}]" for i in range(12))
    assert shards.read_dataset_info(str(out)).counts == {"train": 9, "val": 3, "test": 6}


def test_tfds_without_validation_split_draws_a_stratified_one(tmp_path):
    data_dir = tmp_path / "tfds"
    dh.write_tfds_dataset(str(data_dir), "train_only", {"train": 30}, shape=(20, 24, 3))
    m = external.convert_tfds("train_only", str(tmp_path / "out"), data_dir=str(data_dir), val_fraction=0.2, workers=1, progress=False).manifest
    assert m["splits"]["val"]["per_class"] == {"a": 2, "b": 2, "c": 2}
    assert m["splits"]["train"]["per_class"] == {"a": 8, "b": 8, "c": 8}
    names = [r["filename"] for r in dh.read_records(str(tmp_path / "out"))]
    assert len(set(names)) == 30  # every example once, in one split


def test_tfds_errors_are_one_line_and_name_the_flag(tfds_dir, tmp_path):
    with pytest.raises(writer.ConversionError, match="--tfds_name: cannot load 'no_such_set'"):
        external.convert_tfds("no_such_set", str(tmp_path / "out"), data_dir=str(tfds_dir), progress=False)
    with pytest.raises(writer.ConversionError, match="--tfds_val_split"):
        external.convert_tfds("tiny_gray", str(tmp_path / "out"), data_dir=str(tfds_dir), val_split="nope", progress=False)
    with pytest.raises(writer.ConversionError, match="--tfds_label_key"):
        external.convert_tfds("tiny_gray", str(tmp_path / "out"), data_dir=str(tfds_dir), label_key="image", progress=False)
    assert not (tmp_path / "out").exists()


def test_tfds_through_the_command_line_flags(tfds_dir, tmp_path):
    (c,), _ = cli.parse_args(convert.SECTIONS, ["--tfds_name=tiny_gray", f"--tfds_data_dir={tfds_dir}", f"--out={tmp_path / 'out'}",
                                                "--workers=2", "--noprogress"])
    m = convert.convert(c).manifest
    assert (m["splits"]["train"]["count"] + m["splits"]["val"]["count"], m["splits"]["test"]["count"]) == (12, 6)


# ------------------------------------------------------------------ other tools' TFRecords


def write_imagenet_style(root, with_bad: bool) -> dict:
    """Shards as other converters write them: labels counted from 1, synset-like texts, a PNG
    among the JPEGs, extra features we don't use; with_bad adds unusable records."""
    os.makedirs(root)
    synsets = {1: "n01440764", 2: "n01443537", 3: "n01484850"}
    expected = collections.Counter()
    k = 0
    layout = {"train-00000-of-00002": 6, "train-00001-of-00002": 6, "validation-00000-of-00001": 3}
    for name, count in layout.items():
        with tf.io.TFRecordWriter(os.path.join(root, name)) as w:
            for i in range(count):
                k += 1
                label = 1 + i % 3
                fmt = "PNG" if k == 4 else "JPEG"
                data = dh.encode(Image.fromarray(dh.pixels(30, 40, k)), fmt)
                example = tf.train.Example.FromString(schema.encode_example(data, label, synsets[label], 30, 40, f"{name}/{i}.JPEG", fmt))
                example.features.feature["image/object/bbox/xmin"].float_list.value.append(0.1)
                w.write(example.SerializeToString())
                expected[(name.split("-")[0], label - 1)] += 1
            if with_bad and name.startswith("train-00001"):
                w.write(schema.encode_example(b"\xff\xd8\xff garbage", 2, synsets[2], 1, 1, "bad.JPEG"))
                w.write(schema.encode_example(dh.odd_image("jpeg"), 0, "background", 24, 32, "background.JPEG"))
                w.write(b"not a tf.train.Example")
    return expected


def test_imagenet_style_shards_convert_with_a_label_offset(tmp_path):
    expected = write_imagenet_style(tmp_path / "imagenet", with_bad=True)
    conversion = external.convert_tfrecords(str(tmp_path / "imagenet"), str(tmp_path / "out"), label_offset=1, workers=1, progress=False)
    m = conversion.manifest
    assert m["class_names"] == ["n01440764", "n01443537", "n01484850"]
    assert m["splits"]["train"]["shards"] == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]  # 1:1
    assert m["splits"]["val"]["shards"] == ["val-00000-of-00001.tfrecord"]
    reasons = {s["file"]: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"bad.JPEG", "train-00001-of-00002[7]", "train-00001-of-00002[8]"}
    assert "corrupt" in reasons["bad.JPEG"] and "offset" in reasons["train-00001-of-00002[7]"]
    records = dh.read_records(str(tmp_path / "out"))
    got = collections.Counter(("validation" if r["split"] == "val" else "train", r["label"]) for r in records)
    assert got == expected
    assert all(r["text"] == m["class_names"][r["label"]] and r["format"] == "JPEG" for r in records)
    assert sum(r["encoded"].startswith(b"\xff\xd8") for r in records) == 15  # the PNG became a JPEG
    assert_trainable_batches(str(tmp_path / "out"), 3)


def test_imagenet_style_shards_are_also_readable_directly_with_the_offset(tmp_path):
    write_imagenet_style(tmp_path / "imagenet", with_bad=False)
    info = shards.read_dataset_info(str(tmp_path / "imagenet"))
    assert set(info.files) == {"train", "val"} and len(info.split_files("train")) == 2
    assert_trainable_batches(str(tmp_path / "imagenet"), 3, label_offset=1)
    labels = np.concatenate([y for _, y in batches_from(str(tmp_path / "imagenet"), steps=3, label_offset=1)])
    assert set(labels.tolist()) == {0, 1, 2}  # 1..3 stored, 0..2 seen


def test_src_format_is_detected_from_the_files(tmp_path):
    write_imagenet_style(tmp_path / "imagenet", with_bad=False)
    (c,), _ = cli.parse_args(convert.SECTIONS, [f"--src={tmp_path / 'imagenet'}", f"--out={tmp_path / 'out'}", "--label_offset=1",
                                                "--max_side=20", "--workers=1", "--noprogress"])
    m = convert.convert(c).manifest
    assert m["source_kind"] == "tfrecord" and m["stats"]["resized"] == 15
    assert all(min(r["height"], r["width"]) == 20 for r in dh.read_records(str(tmp_path / "out")))


# ------------------------------------------------------------------ a few real training steps


@pytest.mark.slow  # a build and trace of the network
@pytest.mark.parametrize("source", ["tfds", "imagenet_shards"])
def test_sources_train_a_few_steps(source, tmp_path, monkeypatch):
    from toolkit.train import run as training
    from toolkit.models import resnet_v2

    monkeypatch.setitem(resnet_v2.STAGES, 50, (1, 1, 1, 1))  # the data path is under test, not the depth
    from toolkit.config import Config, ExportConfig, ModelConfig, TrainConfig

    if source == "tfds":
        dh.write_tfds_dataset(str(tmp_path / "tfds"), "tiny_gray", {"train": 12, "test": 6})
        data_dir = external.convert_tfds("tiny_gray", str(tmp_path / "shards"), data_dir=str(tmp_path / "tfds"), workers=1, progress=False).out_dir
        data, num_classes = DataConfig(data_dir=data_dir, image_size=32, batch_size=4), 0  # classes from labels.txt
    else:  # read as other tools wrote them: no manifest, labels from 1
        write_imagenet_style(tmp_path / "imagenet", with_bad=False)
        data, num_classes = DataConfig(data_dir=str(tmp_path / "imagenet"), image_size=32, batch_size=4, label_offset=1), 3
    config = Config(
        data=data,
        model=ModelConfig(num_classes=num_classes),
        train=TrainConfig(model_dir=str(tmp_path / "run"), epochs=1, steps_per_epoch=2, learning_rate=0.01, warmup_epochs=0, log_every=1,
                          xla="off"),
        export=ExportConfig(export=False),  # the data path is under test here; test_export covers exporting
    )
    summary = training.run(config)
    assert summary["steps"] == 2 and summary["num_classes"] == 3
    assert np.isfinite(summary["val_loss"]) and 0.0 <= summary["val_top1"] <= 1.0
    assert summary["history"][-1]["val_images"] == 3  # tfds: one per class drawn from train (its test split is not val)
