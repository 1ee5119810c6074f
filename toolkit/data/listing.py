"""Listing a folder the way every reader of image folders does: hidden entries (".name") left out,
names sorted. No TensorFlow import (the command lines check their input before the heavy imports).
"""

from __future__ import annotations

import os

from toolkit.data import splits
from toolkit import layout


def visible(name: str) -> bool:
    """Whether a file or folder name is not hidden."""
    return not name.startswith(".")


def subdirs(path: str) -> list:
    """The names of the visible folders directly in `path`, sorted."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and visible(e.name))


def plain_files(path: str) -> list:
    """The names of the visible non-folders directly in `path`, sorted."""
    return sorted(e.name for e in os.scandir(path) if not e.is_dir() and visible(e.name))


def visible_files(root: str) -> list:
    """Every file below root, hidden files and folders left out, as paths under root, sorted per folder."""
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if visible(d))
        found.extend(os.path.join(directory, f) for f in sorted(files) if visible(f))
    return found


def holds_shards(path: str) -> bool:
    """Whether a directory holds TFRecord shards: a manifest.json, or files named like a split's
    shards (train-*, val-*, validation-*, test-*). False for a path that is not a directory."""
    if not os.path.isdir(path):
        return False
    names = [e.name for e in os.scandir(path) if e.is_file()]
    return layout.MANIFEST in names or any(n.startswith(f"{s}-") for n in names for s in splits.ALL_NAMES)
