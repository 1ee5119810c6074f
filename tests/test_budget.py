"""--time_budget: the plan's arithmetic against hand-computed figures, the schedule cut to the plan,
and a run that trains the planned epochs, ends its cosine on the last step and keeps its plan on a
resume. The plan's speed is a measurement; the end-to-end test fixes it so that nothing here is timed."""

import json
import os
import subprocess
import sys

import pytest

from toolkit.train import budget

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_evaluations_are_counted_every_eval_every_epochs_and_at_the_last():
    assert budget.evaluations_between(0, 10, 5) == 2  # epochs 5 and 10
    assert budget.evaluations_between(0, 7, 5) == 2  # 5, and 7 (the last)
    assert budget.evaluations_between(5, 7, 5) == 1  # 7
    assert budget.evaluations_between(0, 3, 1) == 3


def test_the_plan_takes_the_most_epochs_that_fit():
    # 10 steps an epoch at 1 s, an evaluation every 2 epochs at 5 s, 30 s reserved, 20 s spent, 2 steps done:
    # E epochs cost 20 + (10E - 2) + 5 * evaluations + 30; E = 10: 20 + 98 + 25 + 30 = 173 s
    args = dict(elapsed=20, step=2, steps_per_epoch=10, most_epochs=10, eval_every=2, seconds_per_step=1.0,
                seconds_per_eval=5.0, reserve=30)
    assert budget.plan(173, **args).epochs == 10 and budget.plan(173, **args).expected_seconds == 173
    # E = 9: 20 + 88 + 5 * 5 + 30 = 163; E = 8: 20 + 78 + 20 + 30 = 148
    assert budget.plan(172.9, **args).epochs == 9
    assert budget.plan(162.9, **args).epochs == 8
    assert budget.plan(1000, **args).epochs == 10  # --epochs stays the most
    assert budget.plan(1, **args).epochs == 1  # at least the epoch in progress
    assert budget.plan(1, **{**args, "step": 35}).epochs == 4  # three epochs done: the fourth is finished


def test_plans_are_made_again_only_early_in_the_decay():
    assert budget.decay_progress(10, 20, 120) == 0.0  # warming up
    assert budget.decay_progress(45, 20, 120) == pytest.approx(0.25)
    assert budget.decay_progress(500, 20, 120) == 1.0


def test_a_plan_uses_the_median_of_the_recent_steps():
    from toolkit.train.progress import Speedometer

    speed = Speedometer(16, warmup_steps=2)
    speed.durations = [9.0, 9.0] + [2.0] * 10 + [0.5] * 7  # traced, then a first epoch filling a cache, then the rest
    assert speed.seconds_per_step() == pytest.approx(2.0)  # all 17 timed steps: the slow ones still the majority
    assert speed.seconds_per_step(recent=7) == pytest.approx(0.5)


def test_an_evaluation_is_estimated_from_the_step_until_one_is_measured():
    # 400 images in batches of 32: 13 batches at a third of 0.3 s, for two models (the EMA's too)
    assert budget.estimated_eval_seconds(400, 32, 0.3, 2) == pytest.approx(13 * 0.1 * 2)


def test_the_schedule_cut_short_ends_its_cosine_there_with_a_shorter_warmup():
    from toolkit.train.optim import WarmupCosine

    schedule = WarmupCosine(0.1, warmup_steps=50, total_steps=1000)
    schedule.set_total_steps(100)
    assert (schedule.warmup_steps, schedule.total_steps) == (20, 100)  # the warmup: a fifth of the run at most
    assert float(schedule(19)) == pytest.approx(0.1)  # the top, at the end of the warmup
    assert float(schedule(60)) == pytest.approx(0.05)  # halfway down the cosine (20 .. 100)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)
    schedule.set_total_steps(1000)  # again longer: the warmup asked for comes back
    assert schedule.warmup_steps == 50 and float(schedule(49)) == pytest.approx(0.1)


# The plan fixed at 2 of 6 epochs (its speed would be a measurement, which a test must not depend on)
FIXED_PLAN = ("import sys; from toolkit.train import budget; "
              "budget.plan = lambda *a, **k: budget.Plan(2, 0.1, 1.0, False, 60.0); "
              "from toolkit.train import __main__ as train; sys.argv[0] = 'toolkit.train'; train.run_main()")


@pytest.mark.slow
def test_a_run_trains_the_planned_epochs_ends_its_schedule_there_and_keeps_the_plan_on_resume(tmp_path, demo_data):
    flags = ["--recipe=default", f"--data_dir={demo_data}", f"--model_dir={tmp_path / 'run'}", "--time_budget=30",
             "--epochs=6", "--steps_per_epoch=4", "--image_size=32", "--batch_size=8", "--log_every=2", "--noexport",
             "--xla=off", "--precision=fp32"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}

    def train():
        return subprocess.run([sys.executable, "-c", FIXED_PLAN, *flags], capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=600)

    first = train()
    assert first.returncode == 0, first.stderr[-3000:]
    assert "time budget 30 min: 2 of 6 epochs fit" in first.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["epochs"], summary["steps"]) == (2, 8)
    assert summary["time_budget"]["plan"]["epochs"] == 2 and summary["time_budget"]["held"] is True
    assert json.loads((tmp_path / "run" / "run.json").read_text())["plan"]["epochs"] == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["kind"] == "train"][-1]
    assert last["step"] == 8 and last["learning_rate"] == pytest.approx(0.0, abs=1e-9)  # the cosine ended on the last step
    again = train()  # the same command: the run is finished under its plan (not 2 of 6 epochs to go on with)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "holds a finished run (8 of 8 steps)" in again.stdout
