"""Listing a folder the way every reader of image folders does: hidden entries (".name") left out,
names sorted. No TensorFlow import (the command lines check their input before the heavy imports).
"""

from __future__ import annotations

import os


def visible(name: str) -> bool:
    """Whether a file or folder name is not hidden."""
    return not name.startswith(".")


def subdirs(path: str) -> list:
    """The names of the visible folders directly in `path`, sorted."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and visible(e.name))


def plain_files(path: str) -> list:
    """The names of the visible non-folders directly in `path`, sorted."""
    return sorted(e.name for e in os.scandir(path) if not e.is_dir() and visible(e.name))
