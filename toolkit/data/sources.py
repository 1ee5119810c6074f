"""Datasets the toolkit makes itself: the built-in demo dataset.

The demo dataset is generated (nothing is downloaded): textures of four kinds with random
colours, frequencies, phases and noise, rendered to JPEG and written through the same shard
writer as real data, so a default run exercises the exact path a user's photos take. The classes
survive the training augmentation (crops, aspect changes, horizontal flips) by construction.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from toolkit.common import atomic, storage
from toolkit.data import schema, shards

DEMO_CLASSES = ("horizontal_stripes", "vertical_stripes", "checkerboard", "dots")
DEMO_VERSION = 2


def _texture(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(size / 6, size / 3)
    phase_y, phase_x = rng.uniform(0, 2 * np.pi, 2)
    wave_y = np.sin(2 * np.pi * yy / period + phase_y)
    wave_x = np.sin(2 * np.pi * xx / period + phase_x)
    tilt = rng.uniform(-0.1, 0.1)  # a slight rotation so stripes are not pixel-aligned
    if kind == 0:
        pattern = np.sin(2 * np.pi * (yy + tilt * xx) / period + phase_y)
    elif kind == 1:
        pattern = np.sin(2 * np.pi * (xx + tilt * yy) / period + phase_x)
    elif kind == 2:
        pattern = wave_y * wave_x
    else:
        pattern = np.maximum(wave_y, 0) * np.maximum(wave_x, 0) - 0.25
    mask = (pattern > 0).astype(np.float32)[..., None]
    # light pattern on a dark ground, each tinted at random: the class is in the shape, not the colour
    fg = rng.uniform(170, 255, 3).astype(np.float32)
    bg = rng.uniform(0, 85, 3).astype(np.float32)
    image = mask * fg + (1 - mask) * bg + rng.normal(0, 8, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _records(count: int, size: int, seed: int, split: str):
    rng = np.random.default_rng(seed)
    per_class = {name: 0 for name in DEMO_CLASSES}
    records = []
    for i in range(count):
        label = i % len(DEMO_CLASSES)
        name = DEMO_CLASSES[label]
        per_class[name] += 1
        encoded = _jpeg(_texture(label, size, rng))
        records.append(schema.encode_example(encoded, label, name, size, size, f"{split}/{name}/{i:05d}.jpg"))
    order = rng.permutation(count)  # shards hold mixed classes, as converted real data does
    return [records[j] for j in order], per_class


def write_demo_dataset(
    out_dir: str,
    train_count: int = 1200,
    val_count: int = 400,
    image_size: int = 40,
    num_shards: int = 4,
    seed: int = 2016,
) -> str:
    """Generate the demo dataset into `out_dir` (shards, labels.txt, manifest.json).

    Reuses an existing complete copy with the same options instead of regenerating it.

    Args:
      out_dir: the shard directory.
      train_count, val_count: images per split.
      image_size: the side of the square images.
      num_shards: shards per split.
      seed: the generator's seed (the same images every time).

    Returns:
      out_dir.
    """
    options = {
        "version": DEMO_VERSION,
        "train_count": train_count,
        "val_count": val_count,
        "image_size": image_size,
        "num_shards": num_shards,
        "seed": seed,
    }
    manifest_path = os.path.join(out_dir, shards.MANIFEST)
    if storage.exists(manifest_path):
        try:
            info = shards.read_dataset_info(out_dir)
            if info.manifest.get("options") == options:
                return out_dir
        except ValueError:
            pass  # an unreadable earlier copy: write a fresh one
    storage.makedirs(out_dir)

    splits = {}
    for split, count, split_seed in (("train", train_count, seed), ("val", val_count, seed + 1)):
        records, per_class = _records(count, image_size, split_seed, split)
        n = num_shards if split == "train" else max(1, num_shards // 2)
        names = []
        for k in range(n):
            name = shards.shard_name(split, k, n)
            shards.write_shard(os.path.join(out_dir, name), records[k::n])
            names.append(name)
        splits[split] = {"count": count, "per_class": per_class, "shards": names}

    shards.write_labels(out_dir, DEMO_CLASSES)
    atomic.write_json(
        manifest_path,
        {
            "format": shards.MANIFEST_FORMAT,
            "source": "toolkit built-in demo dataset (generated textures)",
            "class_names": list(DEMO_CLASSES),
            "splits": splits,
            "options": options,
            "skipped": [],
        },
    )
    return out_dir
