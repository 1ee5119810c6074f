"""`run(config)`: one training run from a Config, start to finish (the library side of toolkit.train).

    session = setup(config)          # toolkit.train.session: runtime, data facts, model, optimizer, restore
    history = fit(session)           # the step loop; the cadences of logging, checkpoints, evaluation
    return finish(session, history)  # summary, reports, export

Every write goes to model_dir (the chief's) and is atomic; the other workers of a multi-worker run
write nothing there.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Optional

import numpy as np

from toolkit.train import budget, distribute
from toolkit.train import stop as stop_lib
from toolkit.common import machine
from toolkit.train import outputs
from toolkit.config import Config, parse_train_sizes
from toolkit.data import pipeline
from toolkit.common.logs import error, log
from toolkit.train.progress import MetricsLog, ProgressLine, Speedometer
from toolkit.train.session import Session, setup
from toolkit import layout
from toolkit.common.errors import Diverged, ExitCode
from toolkit.common.scratch import exit_now


class TrainingDiverged(Diverged):
    """The loss became NaN or infinite (exit code 3)."""


def run(config: Config) -> dict:
    """Train as `config` says and return the summary (also written to model_dir/summary.json)."""
    began = time.time()
    session = setup(config)
    session.began = began
    if session.finished:
        return _already_finished(session)
    _log_start(session)
    history = fit(session)
    return finish(session, history)


# ------------------------------------------------------------------------------------------ fit
def fit(session: Session) -> dict:
    """Train from session.start_step to the last step; returns the history of this process.

    The cadences live here: a progress line every `log_every` steps, a checkpoint every
    `checkpoint_every` steps and at each evaluation, an evaluation every `eval_every` epochs and
    after the last, and the stop at the first non-finite loss (TrainingDiverged).
    Returns {"evaluations": [...], "last": the last evaluation, "steps": the final step,
    "images_per_sec": training images/s of this process, "seconds": wall time of this call}.
    """
    started = time.time()
    t, s = session.config.train, session
    speed = Speedometer(s.data.batch_size, t.speed_warmup_steps)
    metrics = MetricsLog(s.model_dir if s.runtime.is_chief else None)
    progress = ProgressLine(s.data.batch_size, s.epochs, s.total_steps, speed, metrics,
                            mixed=bool(s.data.mixup_alpha or s.data.cutmix_alpha))
    iterator = iter(s.train_dataset)
    evaluations, last = [], {}
    step = s.start_step
    watch = _watch_chief(s)
    planning = bool(t.time_budget) and s.plan is None  # --time_budget, not yet planned (a resume keeps its plan)
    epoch = step // s.steps_per_epoch
    stop = stop_lib.StopRequest().__enter__()  # SIGTERM / SIGINT: recorded, honoured between steps
    # --deterministic on several replicas: BatchNorm's statistics agree after every call, so that a stop
    # at any step (its checkpoint synchronizes them) changes no bit of the run; one small all-reduce a call
    sync_every_call = s.config.data.deterministic and s.runtime.num_replicas > 1
    try:
        while epoch < s.epochs:
            s.checkpointer.epoch.assign(epoch)
            epoch_end = (epoch + 1) * s.steps_per_epoch
            while step < epoch_end:
                n = _steps_until_the_host_is_needed(step, epoch_end, t, s.runtime.steps_per_loop)
                speed.start_step()
                out = s.trainer.train_steps(iterator, n)
                losses, hits = out["loss"].numpy(), out["correct"].numpy()
                speed.end_step(n)
                _stop_if_diverged(s, losses, step, epoch)
                for loss, hit in zip(losses, hits):
                    progress.add(float(loss), float(hit))
                step += n
                s.checkpointer.step.assign(step)
                if sync_every_call:
                    s.trainer.sync_batchnorm_statistics()
                _stop_if_asked(s, stop, step)
                if planning and (speed.timed_steps() >= budget.TIMED_STEPS or step == epoch_end):
                    planning = False
                    _plan_the_budget(s, step, speed, progress)
                    epoch_end = min(epoch_end, s.total_steps)
                if step % t.log_every == 0 or step == s.total_steps:
                    progress.report(step, epoch, _learning_rate(s.optimizer))
                if step % t.checkpoint_every == 0 and step != epoch_end:
                    s.trainer.sync_batchnorm_statistics()
                    s.checkpointer.save()
            s.trainer.sync_batchnorm_statistics()  # every replica evaluates, and the chief saves, the same statistics
            evaluated = (epoch + 1) % t.eval_every == 0 or epoch + 1 == s.epochs
            if evaluated:
                last = _evaluate(s, step, epoch, metrics)
                evaluations.append(last)
                if s.plan and budget.decay_progress(step, s.warmup_steps, s.total_steps) < budget.REPLAN_UNTIL:
                    _plan_the_budget(s, step, speed, progress, last["eval_seconds"])  # measured: plan again
            # with the evaluations, not every epoch: an epoch of a small dataset can take less time than
            # writing ResNet50's checkpoint (weights, EMA and optimizer state: 377 MB)
            if evaluated or step % t.checkpoint_every == 0:
                s.checkpointer.epoch.assign(epoch + 1)
                s.checkpointer.save()
            epoch += 1
        if not last:  # resumed a run that ended before its summary: evaluate once to complete it
            last = _evaluate(s, step, s.epochs - 1, metrics)
    finally:
        stop.__exit__()
        metrics.close()
        if watch:
            watch.stop()  # the last collective is done: the chief may now leave
    return {"evaluations": evaluations, "last": last, "steps": step, "images_per_sec": speed.rate(),
            "seconds": time.time() - started}


def _stop_if_asked(s: Session, stop: stop_lib.StopRequest, step: int) -> None:
    """After a signal (on any worker): every worker saves this step's checkpoint, then Stopped."""
    signum = stop.agreed(s.runtime)
    if not signum:
        return
    s.trainer.sync_batchnorm_statistics()
    path = s.checkpointer.save()
    raise stop_lib.Stopped(f"{stop_lib.name(signum)}: saved checkpoint {os.path.basename(path)} at step {step} of "
                           f"{s.total_steps} in {s.checkpointer.directory}; the same command resumes from it")


def _plan_the_budget(s: Session, step: int, speed: Speedometer, progress: ProgressLine,
                     eval_seconds: Optional[float] = None) -> None:
    """--time_budget: cut the epochs to what fits, from the speed measured here (every worker agrees:
    each plans, and the fewest epochs win)."""
    t = s.config.train
    per_step = speed.seconds_per_step(budget.RECENT_STEPS)
    measured = eval_seconds is not None
    if eval_seconds is None:
        eval_seconds = budget.estimated_eval_seconds(s.info.counts.get("val", 0), s.data.batch_size, per_step,
                                                     2 if s.ema_model is not None else 1)
    reserve = budget.reserve_seconds(eval_seconds, s.config.export.export)
    eval_seconds += budget.CHECKPOINT_SECONDS  # each evaluation also writes a checkpoint
    plan = budget.plan(t.time_budget * 60, time.time() - s.began, step, s.steps_per_epoch, t.epochs, t.eval_every,
                       per_step, eval_seconds, reserve, eval_measured=measured)
    epochs = plan.epochs
    if s.runtime.num_workers > 1:
        epochs = min(distribute.gather_from_workers(s.runtime.strategy, epochs))
    s.set_epochs(epochs, {"epochs": epochs, "most_epochs": t.epochs, "budget_minutes": t.time_budget,
                          "seconds_per_step": round(per_step, 4), "seconds_per_eval": round(eval_seconds, 2),
                          "eval_measured": plan.eval_measured, "expected_seconds": round(plan.expected_seconds, 1)})
    progress.epochs, progress.total_steps = s.epochs, s.total_steps
    log(plan.line(t.time_budget, t.epochs) if epochs == plan.epochs else
        f"time budget {t.time_budget:g} min: {epochs} of {t.epochs} epochs fit on the slowest worker")


def _steps_until_the_host_is_needed(step: int, epoch_end: int, t, steps_per_loop: int) -> int:
    """How many steps the next call may run on the device: at most steps_per_loop, and never past
    the end of the epoch, the next progress line or the next checkpoint (the cadences stay exact)."""
    return min(steps_per_loop, epoch_end - step, t.log_every - step % t.log_every,
               t.checkpoint_every - step % t.checkpoint_every)


def _stop_if_diverged(s: Session, losses: np.ndarray, step: int, epoch: int) -> None:
    """Raise TrainingDiverged naming the first step (after `step`) whose loss is not finite."""
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        raise TrainingDiverged(
            f"loss became {losses[bad[0]]} at step {step + bad[0] + 1} (epoch {epoch + 1}); last checkpoint: "
            f"{s.checkpointer.latest}. Lower --learning_rate, raise --warmup_epochs or check the data"
        )


def _learning_rate(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(lr(optimizer.iterations)) if callable(lr) else float(lr)


def _evaluate(s: Session, step: int, epoch: int, metrics: MetricsLog) -> dict:
    """Evaluate on the validation split; log it and record it in metrics.jsonl."""
    start = time.time()
    result = s.trainer.evaluate(s.eval_dataset)
    line = (f"epoch {epoch + 1}/{s.epochs} validation: loss {result['val_loss']:.4f} "
            f"top-1 {result['val_top1']:.4f} top-5 {result['val_top5']:.4f} ({result['val_images']} images)")
    if s.ema_model is not None:  # the weights' moving average, beside the raw weights
        averaged = s.trainer.evaluate(s.eval_dataset, s.ema_model)
        result.update({f"ema_{k}": v for k, v in averaged.items() if k != "val_images"})
        line += f"; EMA weights: loss {averaged['val_loss']:.4f} top-1 {averaged['val_top1']:.4f}"
    entry = {"step": step, "epoch": epoch + 1, **result, "eval_seconds": time.time() - start}
    metrics.write(entry, "val")
    log(line)
    return entry


def _watch_chief(s: Session):
    """On a non-chief worker of a multi-worker run: exit (code 5) within seconds of the chief's death."""
    rt = s.runtime
    address = distribute.chief_address() if rt.num_workers > 1 and not rt.is_chief else None
    if address is None:
        return None

    def lost(reason: str) -> None:
        error(distribute.worker_lost_message(reason, s.model_dir))
        exit_now(ExitCode.WORKER_LOST)  # the main thread is blocked inside a collective

    return distribute.ChiefWatch(address, lost)


# --------------------------------------------------------------------------------------- finish
def finish(session: Session, history: dict) -> dict:
    """Write the summary, the reports and the final weights, then export (the chief); returns the summary."""
    s, rt = session, session.runtime
    last = history["last"]
    summary = {
        **{k: v for k, v in last.items() if k.startswith(("val_", "ema_val_")) and k != "val_images"},
        "exported_weights": "ema" if s.ema_model is not None else "raw",
        "epochs": s.epochs,
        "steps": history["steps"],
        "train_images_per_sec": history["images_per_sec"],
        # training and evaluations, in this process (a resumed run: its last part only)
        "train_seconds": round(history["seconds"], 1),
        "recipe": s.facts["recipe"],
        "precision": rt.precision,
        "xla": rt.xla,
        "replicas": rt.num_replicas,
        "workers": rt.num_workers,
        "distribution": rt.distribution,
        "num_classes": s.facts["num_classes"],
        "class_names": s.facts["class_names"],
        "image_size": s.data.image_size,
        "params": int(s.model.count_params()),
        "data_dir": s.data.data_dir,
        "model_dir": s.model_dir,
        "history": history["evaluations"],
        "steps_per_loop": rt.steps_per_loop,
        "threads": rt.threads,
        "machine": s.facts["machine"],
    }
    if rt.is_chief:
        _write_outputs(s, summary, last)
    # the same on every worker of a multi-worker run: a one-line check that they stayed in sync
    log(f"final weights sha256 {_weights_digest(s.model)}")
    s.checkpointer.close()
    return summary


def _write_outputs(s: Session, summary: dict, last: dict) -> None:
    """The chief's end of a run: the figures, the final weights and pictures, the summary, the export."""
    final = s.ema_model if s.ema_model is not None else s.model  # what gets exported
    summary.update(_whole_run_figures(s, summary["history"], last))
    summary.update(_test_split(s, final))
    summary["artifacts"] = {"weights": outputs.save_weights(final, s.model_dir), **outputs.write_reports(
        final, pipeline.make_eval_dataset(s.data, s.info.split_files("val")), s.facts["class_names"], s.model_dir)}
    outputs.write_summary(summary, s.model_dir)
    if s.config.export.export:
        _export(s.model_dir, s.config, summary)
    if s.config.train.time_budget:
        _report_the_budget(s, summary)
    ema = (f"; EMA weights (exported) {summary['ema_val_top1']:.4f} (best {summary['best_ema_val_top1']:.4f})"
           if "ema_val_top1" in summary else "")
    log(f"done: val top-1 {summary['val_top1']:.4f} (best {summary['best_val_top1']:.4f}){ema}, "
        f"{summary['train_images_per_sec']:.1f} img/s")
    log(f"wrote {s.model_dir}/: {', '.join(layout.RUN_FILES)}")


def _report_the_budget(s: Session, summary: dict) -> None:
    """summary.json's time_budget: the plan, the whole run's seconds (this process: a resumed run its
    last part), and whether it held (within the budget, or at most 10% over it)."""
    t, seconds = s.config.train, round(time.time() - s.began, 1)
    held = seconds <= t.time_budget * 60
    summary["time_budget"] = {"minutes": t.time_budget, "plan": s.plan, "seconds": seconds, "held": held,
                              "within_10_percent": seconds <= 1.1 * t.time_budget * 60}
    outputs.write_summary(summary, s.model_dir)
    log(f"time budget {t.time_budget:g} min {'held' if held else 'EXCEEDED'}: the run took {seconds / 60:.1f} min "
        f"({s.epochs} of {t.epochs} epochs)")


def _whole_run_figures(s: Session, history: list, last: dict) -> dict:
    """The figures of the whole run, the parts before a resume included: its validation history, the
    best epoch (of the EMA weights too), the image counts and the configuration."""
    history = outputs.validation_history(s.model_dir) or history
    figures = dict(history=history, train_images=s.info.counts.get("train", 0), val_images=last.get("val_images"),
                   config=s.config.to_dict())
    figures["best_val_top1"], figures["best_epoch"] = outputs.best_epoch(history)
    if s.ema_model is not None:
        figures["best_ema_val_top1"], figures["best_ema_epoch"] = outputs.best_epoch(history, "ema_val_top1")
    return figures


def _test_split(s: Session, model) -> dict:
    """test_top1, test_top5, test_loss, test_images of the final (exported) weights, once, when the
    data has a test split; training and model selection never look at it."""
    files = s.info.split_files("test") if "test" in s.info.files else []
    if not files:
        return {}
    result = s.trainer.evaluate_here(pipeline.make_eval_dataset(s.data, files), model)
    log(f"test split ({result['val_images']} images, evaluated once, with the exported weights): "
        f"top-1 {result['val_top1']:.4f} top-5 {result['val_top5']:.4f}")
    return {f"test_{k[4:]}": v for k, v in result.items()}


def _export(model_dir: str, config: Config, summary: dict) -> None:
    """Export with the parity gate; the summary records the outcome either way."""
    from toolkit.export import run as export_lib

    log("exporting SavedModel and ONNX, then checking that they agree (--noexport skips this)")
    try:
        result = export_lib.export_model(model_dir, config.export, log=log)
    except export_lib.ParityError as e:
        summary["export"] = {"parity_passed": False, "failures": e.result.get("failures"), "export_dir": e.result.get("export_dir")}
        outputs.write_summary(summary, model_dir)
        raise
    summary["export"] = {"parity_passed": result["passed"], "export_dir": result["export_dir"], "paths": result["paths"],
                         "seconds": result["seconds"]}
    summary["artifacts"].update({k: v for k, v in result["paths"].items()})
    outputs.write_summary(summary, model_dir)
    log(f"export: parity {'passed' if result['passed'] else 'FAILED'}; artifacts in {result['export_dir']}")


def _already_finished(s: Session) -> dict:
    """A finished run's command again: say so and keep its record (every worker reads the same model_dir)."""
    log(f"{s.model_dir} holds a finished run ({s.start_step} of {s.total_steps} steps): nothing to do, its "
        f"summary.json and export are kept. More --epochs continue it, --fresh starts anew, and "
        f"python -m toolkit.export --model_dir {s.model_dir} exports it again")
    s.checkpointer.close()
    return outputs.read_summary(s.model_dir)


def _log_start(s: Session) -> None:
    rt, d, m, t = s.runtime, s.data, s.config.model, s.config.train
    where = f"resuming from {s.restored} at step {s.start_step}" if s.restored else "starting"
    sizes = ""
    if d.train_sizes:
        stages = [f"{size}px from {'epoch ' if i == 0 else ''}{first}" for i, (first, size) in enumerate(parse_train_sizes(d.train_sizes))]
        sizes = f" (training at {', '.join(stages)})"
    budget_note = ""
    if t.time_budget:
        budget_note = (f" (planned for the {t.time_budget:g} min budget)" if s.plan else
                       f" at most (a {t.time_budget:g} min budget: planned once the first steps are timed)")
    log(f"{where}: ResNet{m.depth}V2 {d.image_size}px{sizes}, {s.facts['num_classes']} classes, {s.model.count_params():,} "
        f"params | {rt.distribution} x{rt.num_replicas} {rt.device_kind} replicas, {rt.precision}, "
        f"xla={'on' if rt.xla else 'off'} | global batch {d.batch_size}, {s.steps_per_epoch} steps/epoch, "
        f"{s.epochs} epochs{budget_note} | {_device_line(rt)}")


def _device_line(rt: distribute.Runtime) -> str:
    """What the run computes on, for the start line: the GPUs, or the CPU class and oneDNN."""
    if rt.device_kind == "GPU":
        gpus = machine.gpus()
        return ", ".join(f"{g['name']} (compute {g['compute_capability']})" for g in gpus) or "GPU"
    return machine.cpu_class()


def _weights_digest(model) -> str:
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:16]
