"""The tf.data pipelines on converted shards: eval equals the inference path, agrees with PIL,
shards split cleanly across input pipelines, ops behave the same eagerly and inside tf.data."""

import collections
import glob
import hashlib
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import data_helpers as dh
from toolkit.common import machine
from toolkit.config import DataConfig
from toolkit.data import augment, folder, pipeline, preprocess, schema, shards


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of distinct JPEGs (plus one PNG) converted into one train and one val shard."""
    root = tmp_path_factory.mktemp("pipeline")
    src = root / "src"
    dh.write_folder(str(src), {"a": 6, "b": 6}, size=(40, 52))
    (src / "b" / "drawing.png").write_bytes(dh.odd_image("png", 44, 36, seed=9))
    folder.convert_folder(str(src), str(root / "one_shard"), val_fraction=0.25, min_shards=1, workers=1, progress=False)
    return src, root / "one_shard"


def eval_elements(data_dir, split, image_size, context=None, batch_size=4):
    info = shards.read_dataset_info(str(data_dir))
    config = DataConfig(data_dir=str(data_dir), image_size=image_size, batch_size=batch_size)
    ds = pipeline.make_eval_dataset(config, info.split_files(split), context)
    return [(x, int(y)) for xs, ys in ds for x, y in zip(xs.numpy(), ys.numpy())]


def test_eval_view_and_labels_agree_with_pil_and_the_class_folders(photos):
    """The eval pipeline against an independent reference: PIL decodes the original file, numpy
    takes the central 87.5% square, a bilinear resize follows (what differs is only the JPEG
    decoder); the label is the index of the file's class folder."""
    src, data_dir = photos
    for split in ("train", "val"):
        records = dh.read_records(str(data_dir), split)  # one shard: the eval order is the file order
        elements = eval_elements(data_dir, split, image_size=32)
        assert len(elements) == len(records) > 0
        for (image, label), r in zip(elements, records):
            pil = np.asarray(Image.open(io.BytesIO((src / r["filename"]).read_bytes())).convert("RGB"), np.float32)
            h, w = pil.shape[:2]
            side = int(min(h, w) * 0.875)
            top, left = (h - side) // 2, (w - side) // 2
            crop = pil[top : top + side, left : left + side]
            reference = tf.image.resize(crop, [32, 32]).numpy() / 127.5 - 1.0
            assert np.abs(image - reference).mean() < 3.0 / 127.5, r["filename"]
            assert label == ["a", "b"].index(r["filename"].split("/")[0]), r["filename"]


def test_preprocessing_is_the_same_eagerly_and_inside_tf_data(photos):
    src, _ = photos
    data = [(src / "a" / f"img_{i:03d}.jpg").read_bytes() for i in range(3)] + [(src / "b" / "drawing.png").read_bytes()]
    seed = tf.constant([3, 4], tf.int64)
    eager_eval = [preprocess.eval_image(tf.constant(d), 40).numpy() for d in data]
    eager_train = [augment.train_image(tf.constant(d), 40, seed).numpy() for d in data]
    ds = tf.data.Dataset.from_tensor_slices(data)
    graph_eval = list(ds.map(lambda e: preprocess.eval_image(e, 40)).as_numpy_iterator())
    graph_train = list(ds.map(lambda e: augment.train_image(e, 40, seed)).as_numpy_iterator())
    for a, b in zip(eager_eval + eager_train, graph_eval + graph_train):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert not np.allclose(eager_train[0], eager_eval[0], atol=1.0)  # training really crops


def test_resize_gives_hand_computed_bilinear_values_for_uint8_and_float_input():
    # Halving with half-pixel centres samples each output pixel at the centre of a 2x2 block: the
    # block's mean. A 4x6 -> 2x2 resize samples columns 1 and 4 exactly and averages row pairs.
    image = np.random.default_rng(0).integers(0, 256, (4, 6, 3)).astype(np.uint8)
    rows = image.astype(np.float64).reshape(2, 2, 6, 3).mean(axis=1)
    expected = rows[:, [1, 4]]
    for given in (image, image.astype(np.float32)):
        out = preprocess.resize(tf.constant(given), 2)
        assert out.dtype == tf.float32
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)


def test_bilinear_upscaling_never_leaves_the_pixel_range():
    checkerboard = ((np.indices((5, 5)).sum(axis=0) % 2) * 255).astype(np.uint8)
    out = preprocess.resize(tf.constant(np.repeat(checkerboard[..., None], 3, axis=2)), 23).numpy()
    assert 0.0 <= out.min() and out.max() <= 255.0 and out.max() - out.min() > 200  # no overshoot, no clip needed


def fingerprint(image: np.ndarray) -> str:
    return hashlib.sha1(np.round(image, 3).tobytes()).hexdigest()


def contexts(n=2):
    return [tf.distribute.InputContext(num_input_pipelines=n, input_pipeline_id=i, num_replicas_in_sync=n) for i in range(n)]


def test_two_input_pipelines_split_the_eval_data_disjointly_and_completely(tmp_path):
    src = tmp_path / "src"
    dh.write_folder(str(src), {"a": 9, "b": 8}, size=(16, 16))
    folder.convert_folder(str(src), str(tmp_path / "out"), val_fraction=0.0, shard_size=3, workers=1, progress=False)
    everything = collections.Counter(fingerprint(x) for x, _ in eval_elements(tmp_path / "out", "train", 16))
    assert sum(everything.values()) == 17 and len(everything) == 17
    parts = [collections.Counter(fingerprint(x) for x, _ in eval_elements(tmp_path / "out", "train", 16, c)) for c in contexts()]
    assert parts[0] and parts[1]
    assert not set(parts[0]) & set(parts[1])
    assert parts[0] + parts[1] == everything


def test_two_input_pipelines_train_on_their_own_files(tmp_path):
    """One label per shard file: what each training pipeline yields tells which files it reads."""
    os.makedirs(tmp_path / "shards")
    for k in range(4):
        data = dh.odd_image("jpeg", 20, 20, seed=k)
        shards.write_shard(str(tmp_path / "shards" / shards.shard_name("train", k, 4)), [schema.encode_example(data, k, str(k), 20, 20)] * 5)
    info = shards.read_dataset_info(str(tmp_path / "shards"))
    config = DataConfig(data_dir=str(tmp_path / "shards"), image_size=32, batch_size=4, shuffle_buffer=4)
    seen = []
    for context in contexts():
        ds = pipeline.make_train_dataset(config, info.split_files("train"), steps_per_epoch=5, input_context=context)
        batches = list(ds.take(10).as_numpy_iterator())
        assert all(x.shape == (2, 32, 32, 3) for x, _ in batches)  # per-replica batch, drop_remainder
        seen.append(set(np.concatenate([y for _, y in batches]).tolist()))
    assert seen[0] and seen[1] and not seen[0] & seen[1] and seen[0] | seen[1] == {0, 1, 2, 3}


@pytest.fixture(scope="module")
def hymenoptera_shards(tmp_path_factory):
    dh.require_data(dh.HYMENOPTERA, "the hymenoptera photos")
    out = tmp_path_factory.mktemp("hym") / "shards"
    folder.convert_folder(dh.HYMENOPTERA, str(out), max_side=32, shard_size=40, workers=2, progress=False)
    return out


def test_real_photos_split_across_two_pipelines_cover_every_file(hymenoptera_shards):
    for split, count in (("train", 245), ("val", 153)):
        everything = collections.Counter(fingerprint(x) for x, _ in eval_elements(hymenoptera_shards, split, 32, batch_size=32))
        assert sum(everything.values()) == count
        parts = [collections.Counter(fingerprint(x) for x, _ in eval_elements(hymenoptera_shards, split, 32, c, 32)) for c in contexts()]
        assert not set(parts[0]) & set(parts[1])
        assert parts[0] + parts[1] == everything


def test_deterministic_training_batches_repeat_exactly(photos):
    _, data_dir = photos
    info = shards.read_dataset_info(str(data_dir))
    config = DataConfig(data_dir=str(data_dir), image_size=32, batch_size=3, deterministic=True, shuffle_buffer=4, seed=5)

    def first_batches():
        ds = pipeline.make_train_dataset(config, info.split_files("train"), steps_per_epoch=3)
        return list(ds.take(4).as_numpy_iterator())  # crosses an epoch boundary

    a, b = first_batches(), first_batches()
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], a[3][0])  # and epochs differ


def train_batches(data_dir, count, **kw):
    """`count` training batches of the photos fixture (3 per epoch), deterministic, as numpy."""
    info = shards.read_dataset_info(str(data_dir))
    options = {"start_epoch": kw.pop("start_epoch", 0), "skip_steps": kw.pop("skip_steps", 0),
               "num_classes": kw.pop("num_classes", 0)}
    config = DataConfig(data_dir=str(data_dir), batch_size=3, deterministic=True, shuffle_buffer=4,
                        **{"seed": 5, "image_size": 32, **kw})
    ds = pipeline.make_train_dataset(config, info.split_files("train"), steps_per_epoch=3, **options)
    return ds, list(ds.take(count).as_numpy_iterator())


MIX = {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "mix_prob": 0.8, "num_classes": 2}


def test_without_mixing_labels_stay_int32_class_ids(photos):
    ds, batches = train_batches(photos[1], 1, num_classes=2)
    assert ds.element_spec == (tf.TensorSpec([3, 32, 32, 3], tf.float32), tf.TensorSpec([3], tf.int32))


def test_mixing_gives_soft_labels_and_needs_the_class_count(photos):
    ds, batches = train_batches(photos[1], 6, **MIX)
    assert ds.element_spec == (tf.TensorSpec([3, 32, 32, 3], tf.float32), tf.TensorSpec([3, 2], tf.float32))
    plain = train_batches(photos[1], 6)[1]
    for (x, y), (px, py) in zip(batches, plain):
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
        assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6
    assert any(not np.array_equal(x, px) for (x, _), (px, _) in zip(batches, plain))  # some batch was mixed
    assert any(((y > 0) & (y < 1)).any() for _, y in batches)
    with pytest.raises(ValueError, match="--mixup_alpha/--cutmix_alpha"):
        train_batches(photos[1], 1, mixup_alpha=0.2)


@pytest.mark.parametrize("start_epoch, skip_steps", [(0, 2), (1, 1)])
def test_a_resumed_run_sees_the_same_mixed_and_augmented_batches(photos, start_epoch, skip_steps):
    """Skipping the first steps (a resume) yields the tail of the uninterrupted batches, bit for bit."""
    settings = {**MIX, "randaugment": "2,9"}
    full = train_batches(photos[1], 7, **settings)[1]
    resumed = train_batches(photos[1], 7 - 3 * start_epoch - skip_steps, start_epoch=start_epoch,
                            skip_steps=skip_steps, **settings)[1]
    tail = full[3 * start_epoch + skip_steps:]
    assert len(resumed) == len(tail) > 0
    for (x, y), (tx, ty) in zip(resumed, tail):
        np.testing.assert_array_equal(x, tx)
        np.testing.assert_array_equal(y, ty)
    if start_epoch == 0:
        other_seed = train_batches(photos[1], 7, **{**settings, "seed": 6})[1]
        assert not np.array_equal(full[-1][0], other_seed[-1][0])


def test_randaugment_changes_pixels_and_follows_the_seed(photos):
    plain = train_batches(photos[1], 3)[1]
    augmented = train_batches(photos[1], 3, randaugment="2,9")[1]
    again = train_batches(photos[1], 3, randaugment="2,9")[1]
    reseeded = train_batches(photos[1], 3, randaugment="2,9", seed=6)[1]
    for (x, y), (ax, ay), (gx, gy) in zip(plain, augmented, again):
        np.testing.assert_array_equal(y, ay)  # same records in the same order: labels unchanged
        np.testing.assert_array_equal(ax, gx)
        np.testing.assert_array_equal(ay, gy)
    changed = [not np.array_equal(x[i], ax[i]) for (x, _), (ax, _) in zip(plain, augmented) for i in range(3)]
    assert sum(changed) >= 5  # of 9 images; each is left alone with probability 1/4
    assert not np.array_equal(augmented[0][0], reseeded[0][0])


def test_randaugment_keeps_the_crop_and_flip_seeds():
    """train_image splits the element seed in three with RandAugment, in two without; the first
    two must be the same so that turning RandAugment on changes nothing else."""
    for seed in ((0, 0), (5, 123), (-7, 1 << 40)):
        s = tf.constant(seed, tf.int64)
        three = tf.random.experimental.stateless_split(s, num=3).numpy()
        np.testing.assert_array_equal(three[:2], tf.random.experimental.stateless_split(s, num=2).numpy())


def test_train_sizes_change_the_batch_size_at_their_epochs_and_nothing_else(photos):
    """Progressive resizing: each epoch's batches come at its --train_sizes size, with the crops
    and flips of a run at that size throughout (same seeds); a resume mid-schedule sees the same."""
    ds, batches = train_batches(photos[1], 9, train_sizes="32@1,40@2,48@3", image_size=48)
    assert ds.element_spec[0].shape.as_list() == [3, None, None, 3]
    assert [x.shape[1:3] for x, _ in batches] == [(32, 32)] * 3 + [(40, 40)] * 3 + [(48, 48)] * 3
    at_32, at_40 = train_batches(photos[1], 6)[1], train_batches(photos[1], 6, image_size=40)[1]
    for (x, y), (px, py) in zip(batches[:3] + batches[3:6], at_32[:3] + at_40[3:6]):
        np.testing.assert_array_equal(x, px)
        np.testing.assert_array_equal(y, py)
    resumed = train_batches(photos[1], 4, train_sizes="32@1,40@2,48@3", image_size=48, start_epoch=1, skip_steps=1)[1]
    for (x, y), (tx, ty) in zip(resumed, batches[4:]):
        np.testing.assert_array_equal(x, tx)
        np.testing.assert_array_equal(y, ty)


def test_one_train_size_keeps_the_batches_static_and_apart_from_the_eval_size(photos):
    ds, batches = train_batches(photos[1], 4, train_sizes="40@1", image_size=64)
    assert ds.element_spec[0].shape.as_list() == [3, 40, 40, 3]
    assert all(x.shape == (3, 40, 40, 3) for x, _ in batches)


@pytest.mark.parametrize("crop_side, image_size, ratio", [
    (191, 96, 1), (383, 96, 1), (384, 96, 2), (767, 96, 2), (768, 96, 4), (1536, 96, 8), (20000, 96, 8),
    (447, 224, 1), (448, 224, 1), (896, 224, 2), (63, 32, 1), (64, 32, 1), (128, 32, 2), (512, 32, 8),
])
def test_a_jpeg_is_decoded_at_reduced_scale_only_when_its_crop_stays_twice_the_target(crop_side, image_size, ratio):
    index = int(preprocess.scaled_decode_ratio(tf.constant(crop_side), image_size))
    assert (1, 2, 4, 8)[index] == ratio


def _full_decode_view(data: bytes, size: int) -> np.ndarray:
    """The evaluation view without scaled decoding, computed here: the whole JPEG, numpy's crop, a resize."""
    image = tf.io.decode_jpeg(data, channels=3).numpy().astype(np.float32)
    h, w = image.shape[:2]
    side = int(min(h, w) * 0.875)
    top, left = (h - side) // 2, (w - side) // 2
    return tf.image.resize(image[top:top + side, left:left + side], [size, size]).numpy()


def _antialiased_view(data: bytes, size: int) -> np.ndarray:
    """The same crop shrunk with an anti-aliasing filter (PIL's box filter over the full decode)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    side = int(min(h, w) * 0.875)
    top, left = (h - side) // 2, (w - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)).resize((size, size), Image.BOX), np.float32)


def test_scaled_decoding_leaves_small_photos_exact_and_large_ones_closer_to_an_antialiased_shrink():
    """Real photos (shorter side ~300-500 px): at 224 px none is decoded at reduced scale and the view
    is the full decode's bit for bit; at 32 px every one is, and the view moves towards an
    anti-aliased shrink of the crop (the full decode's bilinear resize samples it: aliasing)."""
    hymenoptera = dh.require_data(dh.HYMENOPTERA, "the hymenoptera photos")
    files = sorted(glob.glob(os.path.join(hymenoptera, "val", "*", "*.jpg")))[:24]
    assert len(files) == 24
    scaled_off, off_before = [], []
    for path in files:
        data = open(path, "rb").read()
        np.testing.assert_array_equal(preprocess.eval_image(tf.constant(data), 224).numpy(), _full_decode_view(data, 224))
        view, before, smooth = (preprocess.eval_image(tf.constant(data), 32).numpy(), _full_decode_view(data, 32),
                                _antialiased_view(data, 32))
        assert view.shape == (32, 32, 3) and not np.array_equal(view, before), path
        scaled_off.append(np.abs(view - smooth).mean())
        off_before.append(np.abs(before - smooth).mean())
    # measured on these photos: 6.4 against 12.1 (mean absolute difference, pixel values 0-255)
    assert np.mean(scaled_off) < 8.0 and np.mean(scaled_off) < 0.7 * np.mean(off_before), (scaled_off, off_before)


def test_a_split_with_fewer_shards_than_workers_is_refused_in_one_line_naming_the_flag(photos):
    """(one val shard, two workers: a BadInput, exit code 2, not a traceback)"""
    from toolkit.common.errors import BadInput

    _, data_dir = photos
    info = shards.read_dataset_info(str(data_dir))
    config = DataConfig(data_dir=str(data_dir), image_size=16, batch_size=4)
    assert len(info.split_files("val")) == 1
    with pytest.raises(BadInput, match=r"^--data_dir: 1 shard file\(s\) of a split cannot be split across 2 workers"):
        pipeline.make_eval_dataset(config, info.split_files("val"), contexts()[1])


def test_one_pass_pipelines_run_without_the_autotuner_and_with_explicit_parallelism(photos, monkeypatch):
    """Dropping an autotuned iterator waits for the autotuner's thread, which in TF 2.21 can sleep
    out its period first (seconds at the end of every evaluation): the eval pipeline has no autotuner,
    and its decode threads (the usable cores, a container's quota included) are given explicitly."""
    _, data_dir = photos
    info = shards.read_dataset_info(str(data_dir))
    ds = pipeline.make_eval_dataset(DataConfig(data_dir=str(data_dir), image_size=32, batch_size=4), info.split_files("val"))
    assert ds.options().autotune.enabled is False
    assert ds.options().deterministic is True  # the eval options are kept beside it
    assert pipeline.decode_threads() == min(len(os.sched_getaffinity(0)), machine.usable_cores())
    monkeypatch.setattr(machine, "cpu_quota", lambda: 1.0)  # a container allowed one CPU decodes on one thread
    assert pipeline.decode_threads() == 1
