"""Writing TFRecord shards safely, and reading back what a shard directory holds.

A shard directory (what `toolkit.data.convert` and the demo dataset write):
  train-00000-of-00004.tfrecord ...   val-00000-of-00001.tfrecord ...
  labels.txt      one class name per line, line i is label i
  manifest.json   counts per class and split, shard list, source, options, skipped files

Every file is written through toolkit.common.atomic, so a crash never leaves a half-written shard or
manifest behind that a reader would take as complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Sequence

import tensorflow as tf

from toolkit.common import atomic, storage
from toolkit.data import splits
from toolkit import layout
from toolkit.common.errors import BadInput

MANIFEST = layout.MANIFEST
LABELS = layout.LABELS
MANIFEST_FORMAT = "toolkit-tfrecord-v1"


def shard_name(split: str, index: int, total: int) -> str:
    """The file name of shard `index` of `total` of a split: train-00000-of-00004.tfrecord."""
    return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


def write_shard(path: str, records: Iterable[bytes]) -> int:
    """Write serialized records to `path` atomically; returns the number written."""

    def write(tmp: str) -> int:
        n = 0
        with tf.io.TFRecordWriter(tmp) as writer:
            for record in records:
                writer.write(record)
                n += 1
        return n

    return atomic.write_with(path, write)


def write_labels(directory: str, class_names: Sequence[str]) -> None:
    """labels.txt in `directory`: one class name per line, line i is label i."""
    atomic.write_text(os.path.join(directory, LABELS), "".join(f"{n}\n" for n in class_names))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a shard directory holds: class names, files and counts per split."""

    data_dir: str
    class_names: tuple
    files: dict  # split -> tuple of shard paths
    counts: dict  # split -> number of records (0 when unknown)
    manifest: dict

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_files(self, split: str) -> tuple:
        files = self.files.get(split, ())
        if not files:
            have = ", ".join(sorted(self.files)) or "none"
            hint = ("; python -m toolkit.data.convert --val_fraction 0.1 holds a share of train out as val"
                    if split == "val" else "")
            raise BadInput(f"--data_dir: {self.data_dir} has no {split!r} shards (it has {have}){hint}")
        return files


def read_dataset_info(data_dir: str) -> DatasetInfo:
    """Read a shard directory's manifest and labels (or infer them from file names).

    Directories written by other tools (ImageNet-style `train-*` / `validation-*` shards without a
    manifest) are accepted: counts are then unknown (0) and class names come from labels.txt when
    present.
    """
    if not data_dir or not storage.isdir(data_dir):
        raise BadInput(f"--data_dir: {data_dir!r} is not a directory")
    manifest_path = os.path.join(data_dir, MANIFEST)
    manifest = {}
    if storage.exists(manifest_path):
        try:
            with storage.open(manifest_path) as f:
                manifest = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise BadInput(f"--data_dir: cannot read {manifest_path}: {e}") from e

    class_names = tuple(manifest.get("class_names", ()))
    labels_path = os.path.join(data_dir, LABELS)
    if not class_names and storage.exists(labels_path):
        with storage.open(labels_path) as f:
            class_names = tuple(line.rstrip("\n") for line in f if line.strip())

    files, counts = {}, {}
    for split, aliases in splits.SPLITS.items():
        listed = manifest.get("splits", {}).get(split, {})
        if listed.get("shards"):
            files[split] = tuple(os.path.join(data_dir, s) for s in listed["shards"])
            counts[split] = int(listed.get("count", 0))
            continue
        for alias in aliases:
            found = sorted(
                p for p in storage.glob(os.path.join(data_dir, f"{alias}-*")) if ".tmp-" not in p
            )
            if found:
                files[split], counts[split] = tuple(found), 0
                break
    if not files:
        raise BadInput(f"--data_dir: no TFRecord shards (train-*, val-*) in {data_dir}")
    missing = [p for paths in files.values() for p in paths if not storage.exists(p)]
    if missing:
        raise BadInput(f"--data_dir: shard listed in {MANIFEST} is missing: {missing[0]}")
    return DatasetInfo(data_dir, class_names, files, counts, manifest)
