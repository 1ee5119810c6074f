"""Image folders: find the classes and files, split them, convert them to shards.

Two layouts are recognised:
  SRC/<class>/...                          one folder per class; a stratified validation split
                                           of `val_fraction` is drawn from each class
  SRC/train/<class>/...  SRC/val/<class>/...  SRC/test/<class>/...
                                           the splits given by the folders (`validation/` is also
                                           accepted; test/ is optional and always the test split;
                                           without val/, a stratified val is drawn from train,
                                           never taken from test)
Every non-hidden file inside a class folder (subfolders included) is a candidate: whatever fails to
decode is skipped and reported, never guessed from its extension. Files outside class folders and
unused top-level folders are reported as skipped too. Hidden files and folders (".name") are
ignored.

The split and the storage order are deterministic: files are ranked by a hash of (seed, relative
path), so the same folder always gives the same shards, and adding a file moves at most one other
file across the train/val boundary of its class.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

from toolkit.data import splits, writer
from toolkit.data.listing import plain_files, subdirs, visible_files

class FolderScan(NamedTuple):
    layout: str  # "classes" or "splits"
    class_names: tuple
    files: dict  # split -> [(relative path, label)]; "val" is empty when it must be drawn
    split_dirs: dict  # split -> absolute folder it was read from
    skipped: list  # [{"file", "reason"}]


def _files_under(root: str, top: str) -> list:
    """Every visible file below root/top, as paths relative to root, sorted."""
    return sorted(os.path.relpath(path, root) for path in visible_files(os.path.join(root, top)))


def _split_folder(src: str, split: str):
    for name in splits.SPLITS[split]:
        path = os.path.join(src, name)
        if os.path.isdir(path) and subdirs(path):
            return name
    return None


def _split_tops(src: str, skipped: list) -> dict:
    """{split: top folder name or None} of a SRC/train/... layout, unused folders reported."""
    tops = {split: _split_folder(src, split) for split in splits.SPLITS}
    used = {d for d in tops.values() if d}
    for name in subdirs(src):
        if name not in used:
            skipped.append({"file": name + "/", "reason": "folder not used: only train/, val/ and test/ are read"})
    return tops


def scan_folder(src: str) -> FolderScan:
    """Classes, files and layout of an image folder (see the module docstring)."""
    if not os.path.isdir(src):
        raise writer.ConversionError(f"--src: {src} is not a directory")
    src = os.path.abspath(src)
    skipped = [{"file": name, "reason": "not inside a class folder"} for name in plain_files(src)]
    if _split_folder(src, "train"):
        tops = _split_tops(src, skipped)
        class_names = sorted({c for d in tops.values() if d for c in subdirs(os.path.join(src, d))})
        layout = "splits"
    else:
        named = [d for d in subdirs(src) if d in splits.ALL_NAMES]
        if named:  # val/ or test/ without train/: taking them for classes would train on the wrong thing
            raise writer.ConversionError(f"--src: {src} has {'/, '.join(named)}/ but no train/ with class folders")
        tops = {"train": "", "val": None, "test": None}
        class_names = subdirs(src)
        layout = "classes"
    if not class_names:
        raise writer.ConversionError(f"--src: {src} has no class folders (expected SRC/<class>/ or SRC/train/<class>/)")

    label_of = {name: i for i, name in enumerate(class_names)}
    files, split_dirs = {}, {}
    for split, top in tops.items():
        files[split] = []
        if top is None:
            continue
        base = os.path.join(src, top) if top else src
        split_dirs[split] = base
        for name in plain_files(base) if top else ():
            skipped.append({"file": os.path.join(top, name), "reason": "not inside a class folder"})
        for class_name in subdirs(base):
            rel_class = os.path.join(top, class_name) if top else class_name
            files[split].extend((rel, label_of[class_name]) for rel in _files_under(src, rel_class))
    return FolderScan(layout, tuple(class_names), files, split_dirs, skipped)


def _rank(seed: int, purpose: str, key: str) -> str:
    return hashlib.sha1(f"{seed}:{purpose}:{key}".encode()).hexdigest()


def stratified_split(items: list, fraction: float, seed: int = 0) -> tuple:
    """Split [(key, label)] into (train, val) with round(fraction * n) of each class in val.

    A class with at least two items keeps at least one on each side when 0 < fraction < 1.
    Deterministic: items are ranked by a hash of (seed, key), not by their order.
    """
    by_label = {}
    for key, label in items:
        by_label.setdefault(label, []).append((key, label))
    train, val = [], []
    for label in sorted(by_label):
        ranked = sorted(by_label[label], key=lambda item: _rank(seed, "split", item[0]))
        n = len(ranked)
        n_val = round(n * fraction)
        if 0 < fraction < 1 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        n_val = min(max(n_val, 0), n)
        val.extend(ranked[:n_val])
        train.extend(ranked[n_val:])
    return train, val


def storage_order(items: list, seed: int = 0) -> list:
    """A deterministic shuffle, so each shard holds a mix of classes."""
    return sorted(items, key=lambda item: _rank(seed, "order", item[0]))


def convert_folder(
    src: str,
    out: str,
    *,
    val_fraction: float = 0.1,
    shard_size: int = 1024,
    min_shards: int = 8,
    workers: int = 0,
    max_side: int = 0,
    quality: int = 90,
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = True,
    extra: dict | None = None,
) -> writer.Conversion:
    """Convert an image folder (either layout, see the module doc) into shards.

    Args:
      src: the image folder.
      out: the shard directory to write (shards, labels.txt, manifest.json).
      val_fraction: the share of each class drawn from train for validation when the folder has
        no val/ (test/, when present, is written as the test split and never drawn from).
      shard_size, min_shards: at most shard_size records per shard, at least min_shards shards.
      seed: the seed of the drawn validation split and of the storage order.
      workers, max_side, quality, overwrite, progress: as for `writer.write_dataset`.
      extra: more manifest keys (toolkit.data.prepare records the folder's digest).

    Returns:
      The writer.Conversion.
    """
    if not 0 <= val_fraction < 1:
        raise writer.ConversionError(f"--val_fraction: must be in [0, 1), got {val_fraction}")
    scan = scan_folder(src)
    src = os.path.abspath(src)
    items = dict(scan.files)
    drawn = "val" not in scan.split_dirs
    if drawn:
        items["train"], items["val"] = stratified_split(items["train"], val_fraction, seed)
    if "test" not in scan.split_dirs:
        del items["test"]  # no test/ folder: no test split (rather than an empty one)
    plans = {}
    for split, found in items.items():
        found = storage_order(found, seed)
        candidates = (writer.Candidate(os.path.join(src, rel), label, rel) for rel, label in found)
        plans[split] = writer.SplitPlan(candidates, len(found), writer.num_shards_for(len(found), shard_size, min_shards))
    options = {
        "val_fraction": val_fraction if drawn else None,
        "shard_size": shard_size,
        "min_shards": min_shards,
        "max_side": max_side,
        "jpeg_quality": quality,
        "seed": seed,
    }
    manifest_extra = {"source_kind": "image_folder", "layout": scan.layout, "split_dirs": scan.split_dirs,
                      "val_source": f"{val_fraction:g} of train, per class" if drawn else "val folder", **(extra or {})}
    return writer.write_dataset(
        out,
        plans,
        scan.class_names,
        src,
        options,
        max_side=max_side,
        quality=quality,
        workers=workers,
        overwrite=overwrite,
        progress=progress,
        skipped=scan.skipped,
        extra=manifest_extra,
        protect=[src],
    )
