"""Progress lines, the JSON-lines metrics file and TensorBoard summaries."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional

import tensorflow as tf


def log(message: str) -> None:
    """One progress line on stdout, time-stamped, flushed at once (logs are read live)."""
    print(f"[toolkit {time.strftime('%H:%M:%S')}] {message}", flush=True)


def quiet_tensorflow_logs(verbosity_given: bool) -> None:
    """Keep TensorFlow's INFO lines (every SavedModel tensor, each checkpoint write, each collective
    of a multi-worker run) out of the progress log, unless --verbosity was given to bring them back."""
    from absl import logging as absl_logging

    if not verbosity_given:
        absl_logging.set_verbosity(absl_logging.WARNING)


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


class MetricsLog:
    """Appends JSON lines to model_dir/metrics.jsonl and scalars to model_dir/tensorboard/{train,val}.

    With model_dir None (a non-chief worker) it writes nothing.
    """

    def __init__(self, model_dir: Optional[str]):
        self._file = None
        self._writers = {}
        if model_dir is None:
            return
        self._path = os.path.join(model_dir, "metrics.jsonl")
        self._file = open(self._path, "a", buffering=1)
        self._tb_root = os.path.join(model_dir, "tensorboard")

    def write(self, record: dict, kind: str) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps({"kind": kind, "time": time.time(), **record}) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        writer = self._writers.get(kind)
        if writer is None:
            writer = self._writers[kind] = tf.summary.create_file_writer(os.path.join(self._tb_root, kind))
        with writer.as_default(step=int(record["step"])):
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    tf.summary.scalar(key, value)
        writer.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for writer in self._writers.values():
            writer.close()
