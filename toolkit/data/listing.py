"""Listing a folder the way every reader of image folders does: hidden entries (".name") left out,
names sorted. No TensorFlow import for a local folder (the command lines check their input before
the heavy imports); a folder on another filesystem (gs://, ram://) is listed through tf.io.gfile.
"""

from __future__ import annotations

import os

from toolkit.common import storage
from toolkit.data import splits
from toolkit import layout


def visible(name: str) -> bool:
    """Whether a file or folder name is not hidden."""
    return not name.startswith(".")


def subdirs(path: str) -> list:
    """The names of the visible folders directly in `path`, sorted."""
    if not storage.is_local(path):
        return sorted(n for n in storage.listdir(path) if visible(n) and storage.isdir(f"{path.rstrip('/')}/{n}"))
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and visible(e.name))


def plain_files(path: str) -> list:
    """The names of the visible non-folders directly in `path`, sorted."""
    if not storage.is_local(path):
        return sorted(n for n in storage.listdir(path) if visible(n) and not storage.isdir(f"{path.rstrip('/')}/{n}"))
    return sorted(e.name for e in os.scandir(path) if not e.is_dir() and visible(e.name))


def visible_files(root: str) -> list:
    """Every file below root, hidden files and folders left out, as paths under root, sorted per folder."""
    found = []
    for directory, dirs, files in storage.walk(root):
        dirs[:] = sorted(d for d in dirs if visible(d))
        found.extend(os.path.join(directory, f) for f in sorted(files) if visible(f))
    return found


def holds_shards(path: str) -> bool:
    """Whether a directory holds TFRecord shards: a manifest.json, or files named like a split's
    shards (train-*, val-*, validation-*, test-*). False for a path that is not a directory."""
    if not storage.isdir(path):
        return False
    # (a remote folder's names unchecked: a stat per name would cost a request each on gs://)
    names = [e.name for e in os.scandir(path) if e.is_file()] if storage.is_local(path) else storage.listdir(path)
    return layout.MANIFEST in names or any(n.startswith(f"{s}-") for n in names for s in splits.ALL_NAMES)
