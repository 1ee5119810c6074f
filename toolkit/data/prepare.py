"""--data_dir as the user has it: shards are used where they are, an image folder is converted once.

  shards_for(data_dir, work_dir, log)  the shard directory to train on: data_dir itself when it
                                       holds shards, else work_dir, (re)written from the image
                                       folder only when the folder changed since the last time

"Changed" is decided by a digest of the folder's file list with each file's size and mtime (not
its bytes: hashing hundreds of MB of photos at every start would cost more than it saves), stored
in the converted manifest with the conversion options that shape the shards. The conversion goes
through toolkit.data.folder, which builds the directory aside and renames it into place, so a
crash mid-way leaves the previous conversion or nothing, and a stale conversion is never reused.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

from toolkit.data.listing import holds_shards, visible_files  # noqa: F401 - holds_shards: prepare's callers ask it too
from toolkit import layout
from toolkit.common import storage
from toolkit.common.errors import BadInput

DIGEST_KEY = "source_digest"


class PrepareError(BadInput):
    """--data_dir cannot be used or converted; one line naming the flag."""


def folder_digest(src: str) -> str:
    """sha256 of every visible file's relative path, size and mtime below `src` (hidden entries left out)."""
    digest = hashlib.sha256()
    for path in visible_files(src):
        st = os.stat(path)
        digest.update(f"{os.path.relpath(path, src)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _reusable(work_dir: str, src: str, digest: str, max_side: int) -> bool:
    """Whether work_dir holds a finished conversion of `src` as it is now, with the same options."""
    manifest = layout.read_json(os.path.join(work_dir, layout.MANIFEST))
    if not isinstance(manifest, dict):
        return False
    return (manifest.get(DIGEST_KEY) == digest and manifest.get("source") == src
            and manifest.get("options", {}).get("max_side") == max_side)


def shards_for(data_dir: str, work_dir: str, log: Callable[[str], None], *, max_side: int = 0, workers: int = 0) -> str:
    """The shard directory to train on for --data_dir.

    Args:
      data_dir: shards (returned as they are) or an image folder (SRC/<class>/..., or SRC/train/,
        SRC/val/, SRC/test/ with class folders; see toolkit.data.folder).
      work_dir: where an image folder is converted (e.g. <model_dir>/data); replaced when the
        folder changed, never anything but an earlier conversion (it must hold a manifest.json
        or be empty).
      log: called with each line to show (the reuse, or the converter's report).
      max_side: downscale images whose shorter side exceeds this (0: keep); a change re-converts.
      workers: conversion worker processes (0: every core).

    Returns:
      data_dir or work_dir.

    Raises:
      PrepareError: data_dir is neither, or the conversion cannot be written (one line).
    """
    if not data_dir or not storage.isdir(data_dir):
        raise PrepareError(f"--data_dir: {data_dir!r} is not a directory")
    if holds_shards(data_dir):
        return data_dir
    _refuse_remote_folder(data_dir)
    from toolkit.data import folder, writer  # TensorFlow only when there is something to convert

    src, work_dir = os.path.abspath(data_dir), storage.absolute(work_dir)
    digest = folder_digest(src)
    if _reusable(work_dir, src, digest, max_side):
        log(f"--data_dir: {data_dir} is unchanged since its conversion into {work_dir}; reusing it")
        return work_dir
    log(f"--data_dir: {data_dir} is an image folder; converting it into {work_dir}")
    try:
        conversion = folder.convert_folder(src, work_dir, max_side=max_side, workers=workers, overwrite=True,
                                           progress=False, extra={DIGEST_KEY: digest})
    except writer.ConversionError as e:
        raise PrepareError(_as_data_dir_error(str(e), work_dir)) from None
    for line in writer.format_summary(conversion).splitlines():
        log(line)
    return work_dir


def peek(data_dir: str) -> tuple:
    """(class names, training images) of --data_dir from a look at its listing or manifest, before
    anything is converted: shards give their manifest's figures (None for an unknown count); an
    image folder gives its class folders and every file of its training part (an upper bound: the
    validation share is drawn from it when it has no val/ folder).

    Raises:
      PrepareError: data_dir is not a directory, or an image folder the converter would refuse.
    """
    if not data_dir or not storage.isdir(data_dir):
        raise PrepareError(f"--data_dir: {data_dir!r} is not a directory")
    if holds_shards(data_dir):
        from toolkit.data import shards

        info = shards.read_dataset_info(data_dir)
        return tuple(info.class_names), info.counts.get("train") or None
    _refuse_remote_folder(data_dir)
    from toolkit.data import folder, writer

    try:
        scan = folder.scan_folder(data_dir)
    except writer.ConversionError as e:
        raise PrepareError(_as_data_dir_error(str(e), data_dir)) from None
    return scan.class_names, len(scan.files["train"])


def _refuse_remote_folder(data_dir: str) -> None:
    """Shards may be anywhere tf.io.gfile reads; an image folder is converted from a local copy."""
    if not storage.is_local(data_dir):
        raise PrepareError(f"--data_dir: {data_dir} holds no shards ({layout.MANIFEST}, train-*, val-*); an image folder on "
                           f"{storage.scheme(data_dir)}:// is not converted in place: convert a local copy with "
                           f"python -m toolkit.data.convert --src <folder> --out {data_dir}")


def _as_data_dir_error(message: str, work_dir: str) -> str:
    """The converter names its own flags (--src, --out); the trainer's user gave --data_dir and --model_dir."""
    if message.startswith("--out:"):
        return f"--model_dir: cannot convert into {work_dir}:" + message[len("--out:"):]
    return message.replace("--src:", "--data_dir:", 1)
