"""Small real files for the data tests: images in every format and mode, folders, TFDS and TFRecord
datasets, all written into pytest temp dirs. Images are random noise plus a gradient, so no two
are alike and JPEG artefacts stay moderate."""

from __future__ import annotations

import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from conftest import HYMENOPTERA, ROOT, SHARED_DATA, require_data  # noqa: F401  (one definition, in conftest)
from toolkit.data import schema, shards


def pixels(height: int, width: int, seed: int, channels: int = 3) -> np.ndarray:
    """A smooth gradient with a little noise: distinct per seed, friendly to JPEG."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, channels)
    slope = rng.uniform(-2, 2, (2, channels))
    image = base + yy[..., None] * slope[0] + xx[..., None] * slope[1] + rng.normal(0, 3, (height, width, channels))
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def odd_image(kind: str, height: int = 24, width: int = 32, seed: int = 0) -> bytes:
    """Encoded bytes of one of the kinds the converter must turn into RGB JPEG (or keep)."""
    rgb = Image.fromarray(pixels(height, width, seed))
    if kind == "jpeg":
        return encode(rgb, "JPEG", quality=92)
    if kind == "png":
        return encode(rgb, "PNG")
    if kind == "gif":
        return encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "GIF")
    if kind == "bmp":
        return encode(rgb, "BMP")
    if kind == "webp":
        return encode(rgb, "WEBP", quality=95)
    if kind == "gray_jpeg":
        return encode(rgb.convert("L"), "JPEG", quality=92)
    if kind == "cmyk_jpeg":
        return encode(rgb.convert("CMYK"), "JPEG", quality=92)
    if kind == "rgba_png":
        rgba = rgb.convert("RGBA")
        alpha = np.full((height, width), 255, np.uint8)
        alpha[:, : width // 2] = 0  # left half fully transparent: must come out white
        rgba.putalpha(Image.fromarray(alpha))
        return encode(rgba, "PNG")
    if kind == "gray16_png":
        wide = (pixels(height, width, seed, 1)[..., 0].astype(np.uint16) * 257)
        return encode(Image.fromarray(wide), "PNG")
    raise ValueError(kind)


ODD_KINDS = ("png", "gif", "bmp", "webp", "gray_jpeg", "cmyk_jpeg", "rgba_png", "gray16_png")


def reference_rgb(data: bytes) -> np.ndarray:
    """What the stored image should look like, by PIL: RGB, transparency over white, 16-bit scaled."""
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode.startswith("I"):
        return np.repeat((np.asarray(image, np.float64) / 257).round().astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), np.float64)
        alpha = rgba[..., 3:] / 255
        return (rgba[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return np.asarray(image.convert("RGB"))


def bad_files(good_jpeg: bytes) -> dict:
    """name -> bytes of files that must be skipped, and the word their reason must contain."""
    half = len(good_jpeg) // 2
    return {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (good_jpeg[:half], "truncated"),
        "corrupt.jpg": (good_jpeg[:200] + bytes(np.random.default_rng(1).integers(0, 256, half, dtype=np.uint8)), "corrupt"),
        # a valid header, then noise: PIL decodes it without a word, TensorFlow refuses it
        "scrambled.jpg": (good_jpeg[:700] + bytes(np.random.default_rng(1).integers(0, 256, len(good_jpeg) - 700, dtype=np.uint8)), "TensorFlow"),
        "notes.txt": (b"these are notes, not a picture\n", "not an image"),
        "fake.png": (b"<html>an error page saved as .png</html>", "not an image"),
    }


def write_folder(root: str, classes: dict, split_dirs=None, size=(24, 32), seed: int = 0) -> dict:
    """Write JPEGs: classes = {name: count}; split_dirs=None -> root/<class>/, else
    {"train": {name: count}, "val": {...}} under root/<split>/<class>/. Returns {relpath: bytes}."""
    written = {}
    layout = {"": classes} if split_dirs is None else split_dirs
    k = seed
    for top, counts in layout.items():
        for name, count in counts.items():
            os.makedirs(os.path.join(root, top, name), exist_ok=True)
            for i in range(count):
                k += 1
                h, w = size[0] + (k % 5) * 4, size[1] + (k % 3) * 4  # assorted sizes and aspects
                data = encode(Image.fromarray(pixels(h, w, k)), "JPEG", quality=92)
                rel = os.path.join(top, name, f"img_{i:03d}.jpg")
                with open(os.path.join(root, rel), "wb") as f:
                    f.write(data)
                written[rel] = data
    return written


def read_records(data_dir: str, split: str = None) -> list:
    """Every record of a shard directory (or of one split), parsed to python values."""
    info = shards.read_dataset_info(data_dir)
    out = []
    for name in [split] if split else sorted(info.files):
        for path in info.split_files(name):
            for record in tf.data.TFRecordDataset(path):
                ex = schema.parse_example(record)
                out.append(
                    {
                        "split": name,
                        "shard": os.path.basename(path),
                        "encoded": ex[schema.ENCODED].numpy(),
                        "format": ex[schema.FORMAT].numpy().decode(),
                        "label": int(ex[schema.LABEL]),
                        "text": ex[schema.TEXT].numpy().decode(),
                        "height": int(ex[schema.HEIGHT]),
                        "width": int(ex[schema.WIDTH]),
                        "filename": ex[schema.FILENAME].numpy().decode(),
                    }
                )
    return out


def write_tfds_dataset(data_dir: str, name: str, splits: dict, class_names=("a", "b", "c"), shape=(28, 28, 1)) -> None:
    """A real TFDS dataset on disk, loadable offline with tfds.builder(name, data_dir=data_dir):
    records written with the features' own serializer, metadata by tfds.folder_dataset.write_metadata
    (TFDS's API for datasets generated outside a builder). splits = {split: count}."""
    import tensorflow_datasets as tfds
    from etils import epath

    features = tfds.features.FeaturesDict(
        {"image": tfds.features.Image(shape=shape), "label": tfds.features.ClassLabel(names=list(class_names))}
    )
    version_dir = os.path.join(data_dir, name, "1.0.0")
    os.makedirs(version_dir)
    seed = 100
    for split, count in splits.items():
        path = os.path.join(version_dir, f"{name}-{split}.tfrecord-00000-of-00001")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(count):
                seed += 1
                image = pixels(shape[0], shape[1], seed, shape[2])
                writer.write(features.serialize_example({"image": image, "label": i % len(class_names)}))
    template = tfds.core.ShardedFileTemplate(
        data_dir=epath.Path(version_dir), template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", dataset_name=name, filetype_suffix="tfrecord"
    )
    split_infos = tfds.folder_dataset.compute_split_info(filename_template=template)
    tfds.folder_dataset.write_metadata(data_dir=version_dir, features=features, split_infos=split_infos, filename_template=template)


def write_notop_file(path: str, seed: int = 0) -> dict:
    """For toolkit.models.pretrained: a weights file in the published notop layout (Keras legacy h5) of a
    randomized keras.applications.ResNet50V2 trunk, written with h5py; returns {layer name: [arrays]}."""
    import h5py
    import keras

    source = keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(None, None, 3))
    rng = np.random.default_rng(seed)
    expected = {}
    with h5py.File(path, "w") as f:
        with_weights = [layer for layer in source.layers if layer.weights]
        f.attrs["layer_names"] = [layer.name.encode() for layer in source.layers]
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.2.4"
        for layer in source.layers:
            group = f.create_group(layer.name)
            weights = layer.trainable_weights + layer.non_trainable_weights  # the legacy order
            names = [f"{layer.name}/{w.name}:0".encode() for w in weights]
            group.attrs["weight_names"] = names
            arrays = [rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in weights]  # > 0: valid variances
            for name, array in zip(names, arrays):
                group.create_dataset(name.decode(), data=array)
            if layer in with_weights:
                expected[layer.name] = arrays
    return expected
