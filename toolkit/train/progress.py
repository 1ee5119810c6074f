"""What a run reports while it trains: images/s, and the progress line every `log_every` steps."""

from __future__ import annotations

import time

import numpy as np

from toolkit.common.logs import MetricsLog, log


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

    def rate(self) -> float:
        skip = self.warmup if len(self.durations) > self.warmup else min(1, len(self.durations) - 1)
        timed = self.durations[skip:]
        return self.batch * len(timed) / sum(timed) if timed else 0.0


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
