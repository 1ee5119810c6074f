"""Checkpoints and exact resume; --fresh setting an earlier run aside.

TensorFlow writes a checkpoint's data under temporary names and updates the `checkpoint` index
file last, with an atomic rename: a crash mid-save leaves the previous checkpoint as the latest.
Under MultiWorkerMirroredStrategy every worker must take part in a save; only the chief writes
to model_dir, the others write to a scratch directory that is deleted afterwards. The names of
what a training directory holds, and run.json, are toolkit.layout's.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Optional

import tensorflow as tf

from toolkit import layout
from toolkit.common.scratch import make_scratch_dir


def set_aside_previous_run(model_dir: str) -> Optional[str]:
    """For --fresh: move an earlier run's checkpoints and logs into previous-<time>/ (never delete)."""
    names = [n for n in layout.RUN_STATE if os.path.exists(os.path.join(model_dir, n))]
    if not names:
        return None
    dest = os.path.join(model_dir, time.strftime(layout.PREVIOUS_RUN))
    os.makedirs(dest, exist_ok=True)
    for n in names:
        os.replace(os.path.join(model_dir, n), os.path.join(dest, n))
    return dest


class Checkpointer:
    """Saves and restores model, optimizer, global step and epoch; chief-only writes."""

    def __init__(self, model_dir: str, is_chief: bool, keep: int, **trackables):
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(step=self.step, epoch=self.epoch, **trackables)
        self.is_chief = is_chief
        self.directory = os.path.join(model_dir, layout.CHECKPOINTS)
        self._scratch = None
        if not is_chief:
            self._scratch = make_scratch_dir("toolkit-worker-ckpt-")  # removed at exit, even after an error
        write_dir = self.directory if is_chief else self._scratch
        self.manager = tf.train.CheckpointManager(self.checkpoint, write_dir, max_to_keep=keep)
        # every worker restores from the chief's directory
        self._read_manager = (
            self.manager if is_chief else tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=keep)
        )

    @property
    def latest(self) -> Optional[str]:
        return self._read_manager.latest_checkpoint

    def restore_latest(self) -> Optional[str]:
        """Restore the newest checkpoint if there is one; returns its path."""
        path = self.latest
        if path:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def save(self) -> str:
        return self.manager.save(checkpoint_number=int(self.step.numpy()))

    def close(self) -> None:
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
