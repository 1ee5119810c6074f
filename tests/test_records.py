"""toolkit.data.records: the one TFRecord reader, on files written by TensorFlow's own writer."""

import numpy as np
import pytest
import tensorflow as tf

from toolkit.data import records


def example(**features) -> bytes:
    """A tf.train.Example built by hand (not through toolkit.data.schema)."""
    def feature(value):
        if isinstance(value, int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature={k.replace("_", "/"): feature(v) for k, v in features.items()})).SerializeToString()


def write(path, serialized) -> str:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for data in serialized:
            writer.write(data)
    return str(path)


def test_fields_and_bad_records(tmp_path):
    path = write(tmp_path / "a.tfrecord", [
        example(image_encoded=b"JPEG", image_class_label=7, image_class_text="ants".encode(), image_filename="é.jpg".encode()),
        b"not an Example",
        example(image_class_label=3),
    ])
    first, second, third = records.read_records(path)
    assert (first.index, first.encoded, first.label, first.text, first.filename, first.error) == (0, b"JPEG", 7, "ants", "é.jpg", None)
    assert second.index == 1 and second.error.startswith("not a tf.train.Example") and not second.corrupt
    assert (third.encoded, third.label, third.text, third.error) == (None, 3, None, None)


def test_a_truncated_file_ends_with_one_corrupt_record(tmp_path):
    path = write(tmp_path / "a.tfrecord", [example(image_encoded=b"x" * 100, image_class_label=i) for i in range(3)])
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) - 50])  # the third record is cut short
    read = list(records.read_records(path))
    assert [r.label for r in read[:2]] == [0, 1]
    assert len(read) == 3 and read[2].corrupt and read[2].index == 2 and read[2].error and "\n" not in read[2].error


@pytest.mark.parametrize("cycle", [2, 16])
def test_interleaved_is_the_order_of_tf_data_interleave(tmp_path, monkeypatch, cycle):
    monkeypatch.setattr(records, "CYCLE_LENGTH", cycle)
    sizes = [3, 1, 0, 4, 2, 1]
    files = [write(tmp_path / f"s{k}.tfrecord", [example(image_class_label=100 * k + i) for i in range(n)]) for k, n in enumerate(sizes)]
    ours = [r.label for r in records.interleaved(files[::-1])]  # given in any order, read sorted
    theirs = tf.data.Dataset.from_tensor_slices(files).interleave(tf.data.TFRecordDataset, cycle_length=min(cycle, len(files)), block_length=1)
    expected = [tf.train.Example.FromString(x).features.feature["image/class/label"].int64_list.value[0] for x in theirs.as_numpy_iterator()]
    assert ours == expected and len(ours) == sum(sizes)
    assert [r.label for r in records.interleaved(files, limit=4)] == expected[:4]


def test_image_batches_stop_at_an_unusable_record(tmp_path):
    path = write(tmp_path / "a.tfrecord", [b"not an Example"])
    with pytest.raises(ValueError, match="not a tf.train.Example"):
        list(records.image_batches([path], 8))


def test_gate_images_are_the_evaluation_pipeline_before_normalization(tmp_path):
    import tensorflow as tf

    from toolkit.config import DataConfig
    from toolkit.data import pipeline, preprocess, shards, sources

    data_dir = sources.write_demo_dataset(str(tmp_path), train_count=8, val_count=12, image_size=40, num_shards=4)
    files = shards.read_dataset_info(data_dir).split_files("val")
    assert len(files) == 2  # the pipeline interleaves them: the same order is part of the contract
    ours = list(records.image_batches(files, 32, limit=10, batch_size=4))
    assert [len(b[0]) for b in ours] == [4, 4, 2]
    images = np.concatenate([b[0] for b in ours])
    labels = np.concatenate([b[2] for b in ours])
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 255
    theirs = next(iter(pipeline.make_eval_dataset(DataConfig(data_dir=data_dir, image_size=32, batch_size=10), files)))
    np.testing.assert_array_equal(preprocess.normalize(tf.constant(images)).numpy(), theirs[0].numpy())
    np.testing.assert_array_equal(labels, theirs[1].numpy())
    assert all(isinstance(e, bytes) and e[:2] == b"\xff\xd8" for b in ours for e in b[1])  # the JPEGs themselves


