"""Checkpoints, exact resume, and the run record (`run.json`) that export and evaluate read.

Layout of a model_dir:
  run.json          the resolved configuration and dataset facts (class names, image size, ...)
  checkpoints/      tf.train.Checkpoint files: model, optimizer (incl. loss scale), step, epoch
  metrics.jsonl     one JSON object per log interval and per evaluation
  tensorboard/      summaries
  summary.json      the final figures
  model.weights.h5  the final float32 weights

TensorFlow writes a checkpoint's data under temporary names and updates the `checkpoint` index
file last, with an atomic rename: a crash mid-save leaves the previous checkpoint as the latest.
Under MultiWorkerMirroredStrategy every worker must take part in a save; only the chief writes
to model_dir, the others write to a scratch directory that is deleted afterwards.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import time
from typing import Optional

import tensorflow as tf

from toolkit.common import atomic

RUN_RECORD = "run.json"
CHECKPOINTS = "checkpoints"


def save_run_record(model_dir: str, record: dict) -> None:
    """Write `record` as model_dir/run.json (atomically): what export and resume read back."""
    atomic.write_json(os.path.join(model_dir, RUN_RECORD), record)


def load_run_record(model_dir: str) -> dict:
    """model_dir/run.json; ValueError naming --model_dir when it is missing or unreadable."""
    path = os.path.join(model_dir, RUN_RECORD)
    if not os.path.exists(path):
        raise ValueError(f"--model_dir: {model_dir} holds no {RUN_RECORD}; is it a toolkit training directory?")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--model_dir: cannot read {path}: {e}") from e


def set_aside_previous_run(model_dir: str) -> Optional[str]:
    """For --fresh: move an earlier run's checkpoints and logs into previous-<time>/ (never delete)."""
    names = [n for n in (CHECKPOINTS, "metrics.jsonl", "tensorboard", "summary.json", RUN_RECORD)
             if os.path.exists(os.path.join(model_dir, n))]
    if not names:
        return None
    dest = os.path.join(model_dir, time.strftime("previous-%Y%m%d-%H%M%S"))
    os.makedirs(dest, exist_ok=True)
    for n in names:
        os.replace(os.path.join(model_dir, n), os.path.join(dest, n))
    return dest


def make_scratch_dir(prefix: str) -> str:
    """A new temporary directory `<prefix><pid>-XXXX`, removed when this process exits.

    A process killed with SIGKILL never runs its exit handlers, so first remove the directories
    of this prefix whose process is gone: a worker killed and started again leaves nothing behind.
    """
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    path = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root)
    if not _SCRATCH:
        atexit.register(remove_scratch_dirs)
    _SCRATCH.append(path)
    return path


_SCRATCH = []  # this process's scratch directories


def remove_scratch_dirs() -> None:
    """Remove this process's scratch directories now (before an os._exit, which runs no exit handlers)."""
    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class Checkpointer:
    """Saves and restores model, optimizer, global step and epoch; chief-only writes."""

    def __init__(self, model_dir: str, is_chief: bool, keep: int, **trackables):
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(step=self.step, epoch=self.epoch, **trackables)
        self.is_chief = is_chief
        self.directory = os.path.join(model_dir, CHECKPOINTS)
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
