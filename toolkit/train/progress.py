"""What a run reports while it trains: images/s, the progress line every `log_every` steps, and the
records of metrics.jsonl and TensorBoard."""

from __future__ import annotations

import json
import os
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from toolkit import layout
from toolkit.common import atomic, storage
from toolkit.common.logs import log


class Speedometer:
    """Images per second over train steps only (evaluation and checkpoints excluded), leaving out
    the first `warmup_steps` steps (tracing, compilation, pipeline fill); a run too short for that
    leaves out only its first step."""

    def __init__(self, global_batch: int, warmup_steps: int):
        self.batch, self.warmup = global_batch, warmup_steps
        self.durations = []
        self._interval_start = 0
        self._t0 = 0.0

    def start_step(self):
        self._t0 = time.perf_counter()

    def end_step(self, steps: int = 1):
        """The call since start_step ran `steps` steps (each gets an equal share of its time)."""
        elapsed = time.perf_counter() - self._t0
        self.durations.extend([elapsed / steps] * steps)

    def interval_rate(self) -> float:
        """Rate over the steps since the previous call (compilation included: it is what happened)."""
        window = self.durations[self._interval_start:]
        self._interval_start = len(self.durations)
        return self.batch * len(window) / max(sum(window), 1e-9)

    def _timed(self) -> list:
        skip = self.warmup if len(self.durations) > self.warmup else min(1, len(self.durations) - 1)
        return self.durations[max(skip, 0):]

    def rate(self) -> float:
        timed = self._timed()
        return self.batch * len(timed) / sum(timed) if timed else 0.0

    def timed_steps(self) -> int:
        """How many steps the rate is measured over (the warmup steps left out)."""
        return len(self.durations) - self.warmup if len(self.durations) > self.warmup else 0

    def seconds_per_step(self, recent: int = 0) -> float:
        """The median time of the timed steps (the `recent` last ones, when given): what a step costs
        now (a first epoch that fills a cache, or a slow moment, pulls a mean away from it)."""
        timed = self._timed()[-recent:] if recent else self._timed()
        return float(np.median(timed)) if timed else 0.0


class ProgressLine:
    """Collects each step's loss and training hits; `report` logs their means since the last line.

    Means over the interval, not the noisy value of one step. The training top-1 is measured on
    augmented images in training mode.
    """

    def __init__(self, global_batch: int, epochs: int, total_steps: int, speed: Speedometer, metrics: MetricsLog,
                 mixed: bool = False):
        self.batch, self.epochs, self.total_steps = global_batch, epochs, total_steps
        self.speed, self.metrics = speed, metrics
        # on mixup / CutMix batches a hit is the argmax of the mixed label: say so
        self._top1_name = "top-1 (mixed batches)" if mixed else "top-1"
        self._interval = []

    def add(self, loss: float, correct: float) -> None:
        self._interval.append((loss, correct))

    def report(self, step: int, epoch: int, learning_rate: float) -> None:
        """One progress line and one metrics record for the steps since the previous report."""
        rate = self.speed.interval_rate()
        mean_loss = float(np.mean([x[0] for x in self._interval]))
        top1 = sum(x[1] for x in self._interval) / (len(self._interval) * self.batch)
        self._interval.clear()
        log(f"epoch {epoch + 1}/{self.epochs} step {step}/{self.total_steps} loss {mean_loss:.4f} {self._top1_name} {top1:.3f} "
            f"lr {learning_rate:.5f} {rate:.1f} img/s")
        self.metrics.write({"step": step, "epoch": epoch + 1, "loss": mean_loss, "top1": top1,
                            "learning_rate": learning_rate, "images_per_sec": rate}, "train")


class RewrittenFile:
    """A small text file on object storage that grows by lines. Appending is impossible there, so each
    line rewrites the whole file (toolkit.common.atomic, from the text kept here): a progress interval's
    line is a few hundred bytes, and a reader, or a crash, finds every line written so far. (Keeping
    the file local and copying it up at each checkpoint would lose the lines of a crashed process.)"""

    def __init__(self, path: str):
        self.path = path
        self.text = storage.read_bytes(path).decode("utf-8") if storage.exists(path) else ""
        if not self.text:  # a new run's file exists from its start, as a local one does
            atomic.write_text(self.path, self.text)

    def append(self, line: str) -> None:
        self.text += line
        atomic.write_text(self.path, self.text)


class MetricsLog:
    """Appends JSON lines to model_dir/metrics.jsonl and scalars to model_dir/tensorboard/{train,val}.

    With model_dir None (a non-chief worker) it writes nothing. On object storage (gs://) the lines
    go through a RewrittenFile; TensorBoard's writers write there themselves (tf.io.gfile).
    """

    def __init__(self, model_dir: Optional[str]):
        self._file = self._remote = None
        self._writers = {}
        if model_dir is None:
            return
        self._path = os.path.join(model_dir, layout.METRICS)
        if storage.is_local(self._path):
            self._file = open(self._path, "a", buffering=1)
        else:
            self._remote = RewrittenFile(self._path)
        self._tb_root = os.path.join(model_dir, layout.TENSORBOARD)

    def write(self, record: dict, kind: str) -> None:
        if self._remote is not None:
            self._remote.append(json.dumps({"kind": kind, "time": time.time(), **record}) + "\n")
        elif self._file is None:
            return
        else:
            self._append(record, kind)
        self._summarize(record, kind)

    def _append(self, record: dict, kind: str) -> None:
        end = os.fstat(self._file.fileno()).st_size
        try:
            self._file.write(json.dumps({"kind": kind, "time": time.time(), **record}) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:  # a full disk: no half line may stay for the next reader
            failed, self._file = self._file, None
            try:
                failed.close()  # the flush fails again, the descriptor is closed all the same
            except OSError:
                pass
            os.truncate(self._path, end)
            self._file = open(self._path, "a", buffering=1)
            raise

    def _summarize(self, record: dict, kind: str) -> None:
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
        self._remote = None
        for writer in self._writers.values():
            writer.close()
