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
from toolkit.common import storage
from toolkit.common.errors import BadInput, disk_full
from toolkit.common.logs import log
from toolkit.common.messages import one_line
from toolkit.common.scratch import make_scratch_dir


def set_aside_previous_run(model_dir: str) -> Optional[str]:
    """For --fresh: move an earlier run's checkpoints and logs into previous-<time>/ (never delete).
    On object storage a folder is copied, then deleted (toolkit.common.storage.move): a crash midway
    leaves both copies."""
    names = [n for n in layout.RUN_STATE if storage.exists(os.path.join(model_dir, n))]
    if not names:
        return None
    dest = os.path.join(model_dir, time.strftime(layout.PREVIOUS_RUN))
    storage.makedirs(dest)
    for n in names:
        storage.move(os.path.join(model_dir, n), os.path.join(dest, n))
    return dest


class Checkpointer:
    """Saves and restores model, optimizer, global step and epoch; chief-only writes."""

    def __init__(self, model_dir: str, is_chief: bool, keep: int, **trackables):
        self.keep = keep
        self.damaged = []  # checkpoints restore_latest passed over because they cannot be read
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
        """Restore the newest checkpoint that can be read; returns its path (None: there is none).

        A checkpoint that cannot be read (a node that died mid-write, a disk error) is passed over
        with one line and the one before it is tried, so a damaged checkpoint never ends a run that
        has a good one; every worker reads the same files and so makes the same choice, and
        `set_aside_damaged` moves the passed-over ones out of the way once they agreed.

        Raises:
          BadInput: checkpoints exist and not one can be read (one line naming the folder and --fresh).
        """
        candidates = [p for p in reversed(self._read_manager.checkpoints) if storage.exists(p + ".index")]
        self.damaged = []
        for path in candidates:
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
                return path
            except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways (IndexError, DataLossError, ...)
                self.damaged.append(path)
                log(f"checkpoint {os.path.basename(path)} in {self.directory} cannot be read ({one_line(e)[:200]}); "
                    "trying the one before it")
        if candidates:
            raise BadInput(f"--model_dir: not one checkpoint in {self.directory} can be read "
                           f"({', '.join(os.path.basename(p) for p in self.damaged)}); --fresh starts anew")
        return None

    def set_aside_damaged(self) -> Optional[str]:
        """The chief moves the checkpoints restore_latest passed over into checkpoints/damaged-<time>/
        (never deleted) and rewrites the checkpoint index without them; returns that folder."""
        if not self.damaged or not self.is_chief:
            return None
        dest = os.path.join(self.directory, time.strftime(layout.DAMAGED_CHECKPOINTS))
        storage.makedirs(dest)
        for prefix in self.damaged:
            for path in tf.io.gfile.glob(prefix + ".*"):
                storage.move(path, os.path.join(dest, os.path.basename(path)))
        kept = [os.path.basename(p) for p in self.manager.checkpoints if p not in self.damaged]  # relative, as the manager writes them
        if not storage.is_local(self.directory):  # TensorFlow makes names relative to a URL itself, and would take these as the cwd's
            kept = [f"{self.directory}/{name}" for name in kept]
        tf.compat.v1.train.update_checkpoint_state(self.directory, kept[-1] if kept else "", all_model_checkpoint_paths=kept)
        self.manager = self._read_manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=self.keep)
        log(f"set the unreadable checkpoints aside in {dest}")
        self.damaged = []
        return dest

    def save(self) -> str:
        """Write a checkpoint of the current step; on a full disk the half-written one is removed and
        DiskFull says how much space a checkpoint takes (the earlier checkpoints are intact)."""
        number = int(self.step.numpy())
        try:
            return self.manager.save(checkpoint_number=number)
        except (tf.errors.ResourceExhaustedError, OSError) as e:
            self._remove_partial(number)
            full = disk_full(e, f"checkpoint ckpt-{number} in {self.directory}{self._size_hint()}")
            if full is None:
                raise
            raise full from e

    def _remove_partial(self, number: int) -> None:
        """What a failed save left: TensorFlow writes ckpt-N's files under a ckpt-N_temp folder first."""
        directory = self.directory if self.is_chief else self._scratch
        for path in tf.io.gfile.glob(os.path.join(directory, f"ckpt-{number}_temp*")):
            storage.rmtree(path) if storage.isdir(path) else storage.remove(path)

    def _size_hint(self) -> str:
        """", about N MB a checkpoint" from the newest complete one, or "" when there is none."""
        latest = self._read_manager.latest_checkpoint
        if not latest:
            return ""
        size = sum(storage.size(p) for p in tf.io.gfile.glob(latest + ".*"))
        return f" (about {size / 1e6:.0f} MB a checkpoint)"

    def close(self) -> None:
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
