"""--time_budget: how many epochs fit in the minutes the user has, from the speed measured on this machine.

The plan is made once the first steps are timed (the tracing and the pipeline's fill left out),
while the learning rate is still warming up, and made again at each evaluation (its time measured,
the recent steps' too) while the cosine decay has gone less than REPLAN_UNTIL of its way: the
learning rate then moves by a few percent at most where the end is moved, and the decay ends on
time. --epochs stays the most: a budget only ever shortens the schedule. What the budget covers is
the whole run from the trainer's start: set-up and data conversion (already spent when the plan is
made), the training steps, every evaluation, and a reserve for the final reports and the export.
"""

from __future__ import annotations

import dataclasses
import math

EXPORT_RESERVE_SECONDS = 60.0  # the float32 rebuild, SavedModel, ONNX and the parity gate: 24-51 s measured (ResNet50V2, 2-core CPUs)
REPORTS_RESERVE_SECONDS = 15.0  # the final weights and plots (besides the pass over the validation images they make)
CHECKPOINT_SECONDS = 4.0  # the checkpoint written with each evaluation (ResNet50V2 with its optimizer state: ~300 MB)
TIMED_STEPS = 10  # steps timed (after --speed_warmup_steps) before the first plan
RECENT_STEPS = 50  # the steps whose median time a plan uses
REPLAN_UNTIL = 0.25  # evaluations plan again until the cosine decay is this far along
EVAL_TO_STEP = 1 / 3  # an evaluation image costs about a third of a training image (forward only), before it is measured


@dataclasses.dataclass(frozen=True)
class Plan:
    epochs: int  # the epochs the run will train (at most --epochs)
    seconds_per_step: float
    seconds_per_eval: float  # one evaluation (both weights with --ema_decay)
    eval_measured: bool  # seconds_per_eval measured, not estimated
    expected_seconds: float  # the whole run, as planned

    def line(self, budget_minutes: float, most: int) -> str:
        evaluation = "measured" if self.eval_measured else "estimated"
        return (f"time budget {budget_minutes:g} min: {self.epochs} of {most} epochs fit ({self.seconds_per_step:.2f} s a step "
                f"measured here, {self.seconds_per_eval:.1f} s an evaluation {evaluation}; the run should end after about "
                f"{self.expected_seconds / 60:.1f} min)")


def decay_progress(step: int, warmup_steps: int, total_steps: int) -> float:
    """How far along its cosine decay a schedule is at `step` (0 within the warmup, 1 at the end)."""
    return min(max(step - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)


def evaluations_between(done_epochs: int, epochs: int, eval_every: int) -> int:
    """How many evaluations epochs done_epochs+1 .. epochs hold (every eval_every-th, and the last)."""
    return sum(1 for e in range(done_epochs + 1, epochs + 1) if e % eval_every == 0 or e == epochs)


def plan(budget_seconds: float, elapsed: float, step: int, steps_per_epoch: int, most_epochs: int, eval_every: int,
         seconds_per_step: float, seconds_per_eval: float, reserve: float, eval_measured: bool = False) -> Plan:
    """The most epochs (at most `most_epochs`, at least the one in progress) whose remaining steps,
    evaluations and `reserve` fit in what is left of `budget_seconds` after `elapsed`.

    Args:
      budget_seconds: the whole run's budget.
      elapsed: seconds spent since the run started.
      step: steps done.
      steps_per_epoch: steps in an epoch.
      most_epochs: --epochs.
      eval_every: epochs between evaluations (the last epoch is always evaluated).
      seconds_per_step: a training step's time, measured.
      seconds_per_eval: one evaluation's time, measured or estimated.
      reserve: seconds kept for what follows training (reports, export).
      eval_measured: whether seconds_per_eval was measured (for the plan's line).
    """
    done = step // steps_per_epoch  # epochs finished (the evaluation of the last one is behind too)
    least = min(most_epochs, done + 1)

    def seconds(epochs: int) -> float:
        return (elapsed + (epochs * steps_per_epoch - step) * seconds_per_step
                + evaluations_between(done, epochs, eval_every) * seconds_per_eval + reserve)

    epochs = next((e for e in range(most_epochs, least - 1, -1) if seconds(e) <= budget_seconds), least)
    return Plan(epochs, seconds_per_step, seconds_per_eval, eval_measured, seconds(epochs))


def reserve_seconds(seconds_per_eval: float, export: bool) -> float:
    """What follows the last step: the reports (one more pass over the validation images) and the export."""
    return REPORTS_RESERVE_SECONDS + seconds_per_eval + (EXPORT_RESERVE_SECONDS if export else 0.0)


def estimated_eval_seconds(val_images: int, batch_size: int, seconds_per_step: float, models: int) -> float:
    """An evaluation's time before one was measured: its batches at EVAL_TO_STEP of a training step, per model."""
    return math.ceil(val_images / batch_size) * seconds_per_step * EVAL_TO_STEP * models
