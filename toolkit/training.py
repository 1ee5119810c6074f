"""`run(config)`: one training run from a Config, start to finish (the library side of toolkit.train).

Order of work: runtime (devices, strategy, precision, XLA) -> data facts -> model and optimizer in
the strategy's scope -> restore or start -> epochs of train steps with evaluation, metrics,
checkpoints -> summary -> export. Every write goes to model_dir (the chief's) and is atomic.
"""

from __future__ import annotations

import hashlib
import os
import random
import time

import numpy as np
import tensorflow as tf

from toolkit import __version__
from toolkit import checkpoint as ckpt_lib
from toolkit import distribute, loop, machine, outputs
from toolkit.config import Config, ConfigError, validate
from toolkit.data import pipeline, shards, sources
from toolkit.logs import MetricsLog, error, log
from toolkit.models import resnet_v2

# the record fields that must match for a resume to make sense
_SHAPING_FIELDS = ("num_classes", "image_size", "depth")


class TrainingDiverged(RuntimeError):
    pass


def resolve_data_dir(config: Config, is_chief: bool = True) -> str:
    """The shard directory to train on; generates the demo dataset when none is given.

    Only the chief writes into model_dir. Other workers generate their own copy in a temporary
    directory deleted when they exit: the generator is seeded, so every copy is byte-identical and
    the per-worker file shares line up, and no worker waits on files another one writes (which
    would hang when model_dir is not shared).
    """
    if config.data.data_dir:
        return config.data.data_dir
    if is_chief:
        demo_dir = os.path.join(config.train.model_dir, "demo_data")
    else:
        demo_dir = ckpt_lib.make_scratch_dir("toolkit-worker-demo-")
    log(f"no --data_dir: generating the built-in demo dataset in {demo_dir}")
    return sources.write_demo_dataset(demo_dir)


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _check_resume_compatible(record: dict, model_dir: str, facts: dict) -> None:
    for key in _SHAPING_FIELDS:
        if key in record and record[key] != facts[key]:
            raise ConfigError(
                f"--{key}: {model_dir} holds a run with {key}={record[key]}, this run has {facts[key]}; "
                "use --fresh or another --model_dir"
            )


def run(config: Config) -> dict:
    """Train as `config` says and return the summary (also written to model_dir/summary.json)."""
    validate(config)
    t, d, m = config.train, config.data, config.model
    workers, worker_index, _ = distribute.tf_config_cluster()
    if workers > 1 and t.distribution in ("auto", "multi_worker"):
        limit = f"at most {t.cluster_timeout} s, --cluster_timeout" if t.cluster_timeout else "no time limit"
        log(f"worker {worker_index} of {workers} (TF_CONFIG): waiting for every worker to join ({limit})")
    rt = distribute.make_runtime(t.distribution, t.precision, t.xla, t.cpu_replicas, t.cluster_timeout, t.deterministic)
    validate(config, num_replicas=rt.num_replicas)
    if rt.xla_note:
        log(rt.xla_note)
    _seed_everything(t.seed, t.deterministic)

    model_dir = t.model_dir
    if rt.is_chief:  # the other workers only read model_dir (the chief's checkpoints)
        os.makedirs(model_dir, exist_ok=True)
    data_dir = resolve_data_dir(config, rt.is_chief)
    info = shards.read_dataset_info(data_dir)
    num_classes = m.num_classes or info.num_classes
    if not num_classes:
        raise ConfigError(f"--num_classes: {data_dir} names no classes (no labels.txt); set --num_classes")
    if info.num_classes and m.num_classes and m.num_classes < info.num_classes:
        raise ConfigError(f"--num_classes: {m.num_classes} is fewer than the {info.num_classes} classes in {data_dir}")
    train_count = info.counts.get("train", 0)
    steps_per_epoch = t.steps_per_epoch or train_count // d.batch_size
    if steps_per_epoch == 0:
        hint = "set --steps_per_epoch (shards without a manifest)" if not train_count else f"only {train_count} training images"
        raise ConfigError(f"--batch_size: {d.batch_size} leaves no full batch per epoch ({hint})")
    data_cfg = d if d.data_dir else type(d)(**{**d.__dict__, "data_dir": data_dir})

    facts = {
        "toolkit_version": __version__,
        "num_classes": num_classes,
        "class_names": list(info.class_names) or [str(i) for i in range(num_classes)],
        "image_size": d.image_size,
        "depth": m.depth,
        "data_dir": data_dir,
        "precision": rt.precision,
        "distribution": rt.distribution,
        "replicas": rt.num_replicas,
        "xla": rt.xla,
        "config": config.to_dict(),
        "machine": machine.describe(),
    }
    if t.fresh:  # the other workers leave model_dir to the chief (it may be moving the old run aside)
        moved = ckpt_lib.set_aside_previous_run(model_dir) if rt.is_chief else None
        if moved:
            log(f"--fresh: the previous run was moved to {moved}")
    elif os.path.exists(os.path.join(model_dir, ckpt_lib.RUN_RECORD)):
        _check_resume_compatible(ckpt_lib.load_run_record(model_dir), model_dir, facts)

    strategy = rt.strategy
    with strategy.scope():
        model = resnet_v2.build_model(num_classes, d.image_size, m.depth, m.sync_batchnorm, m.freeze_backbone)
        if m.init_weights:
            copied = resnet_v2.load_initial_weights(model, m.init_weights)
            log(f"--init_weights: copied {copied} layers from {m.init_weights}")
        optimizer = loop.make_optimizer(t, steps_per_epoch, rt.precision)
        loop.build_optimizer_state(optimizer, model)
        checkpointer = ckpt_lib.Checkpointer(model_dir, rt.is_chief, t.keep_checkpoints, model=model, optimizer=optimizer)
    restored = None if t.fresh else checkpointer.restore_latest()
    if rt.num_workers > 1:
        steps = distribute.gather_from_workers(strategy, int(checkpointer.step.numpy()))
        if len(set(steps)) > 1:  # every worker raises this, so all of them stop
            raise ConfigError(
                f"--model_dir: the workers restored different steps {steps}; every worker must read the chief's "
                f"{model_dir} (one shared directory: NFS, GCS, a ReadWriteMany volume) and get the same flags"
            )
    if rt.is_chief:
        ckpt_lib.save_run_record(model_dir, facts)

    start_step = int(checkpointer.step.numpy())
    total_steps = t.epochs * steps_per_epoch
    summary_path = os.path.join(model_dir, outputs.SUMMARY)
    if start_step >= total_steps and os.path.exists(summary_path):
        # every worker reads the same model_dir, so all of them stop here together
        log(f"{model_dir} holds a finished run ({start_step} of {total_steps} steps): nothing to do, its "
            f"summary.json and export are kept. More --epochs continue it, --fresh starts anew, and "
            f"python -m toolkit.export --model_dir {model_dir} exports it again")
        checkpointer.close()
        return outputs.read_summary(model_dir)
    start_epoch, skip = divmod(start_step, steps_per_epoch)
    log(
        f"{'resuming from ' + restored + f' at step {start_step}' if restored else 'starting'}: "
        f"ResNet{m.depth}V2 {d.image_size}px, {num_classes} classes, {model.count_params():,} params | "
        f"{rt.distribution} x{rt.num_replicas} {rt.device_kind} replicas, {rt.precision}, xla={'on' if rt.xla else 'off'} | "
        f"global batch {d.batch_size}, {steps_per_epoch} steps/epoch, {t.epochs} epochs | {_device_line(rt)}"
    )

    l2 = t.weight_decay if t.optimizer == "adam" else 0.0
    trainer = loop.Trainer(model, optimizer, strategy, d.batch_size, num_classes, t.label_smoothing, l2, rt.xla)
    train_ds = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.make_train_dataset(data_cfg, info.split_files("train"), steps_per_epoch, ctx, start_epoch, skip)
    )
    eval_ds = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.make_eval_dataset(data_cfg, info.split_files("val"), ctx)
    )

    metrics_log = MetricsLog(model_dir if rt.is_chief else None)
    speed = _Speedometer(d.batch_size, t.warmup_steps_for_speed)
    history, eval_result = [], {}
    iterator = iter(train_ds)
    interval = []  # (loss, correct) of the steps since the last progress line
    step = start_step
    watch = _watch_chief(rt, checkpointer)
    try:
        for epoch in range(start_epoch, t.epochs):
            checkpointer.epoch.assign(epoch)
            first = skip if epoch == start_epoch else 0
            for _ in range(first, steps_per_epoch):
                speed.start_step()
                out = trainer.train_step(next(iterator))
                loss, correct = float(out["loss"]), float(out["correct"])
                speed.end_step()
                interval.append((loss, correct))
                step += 1
                checkpointer.step.assign(step)
                if not np.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss became {loss} at step {step} (epoch {epoch + 1}); last checkpoint: {checkpointer.latest}. "
                        "Lower --learning_rate, raise --warmup_epochs or check the data"
                    )
                if step % t.log_every == 0 or step == total_steps:
                    lr = float(optimizer.learning_rate) if not callable(optimizer.learning_rate) else float(optimizer.learning_rate(optimizer.iterations))
                    rate = speed.interval_rate()
                    # means over the steps since the last line, not the noisy value of one step
                    mean_loss = float(np.mean([x[0] for x in interval]))
                    top1 = sum(x[1] for x in interval) / (len(interval) * d.batch_size)
                    interval.clear()
                    log(f"epoch {epoch + 1}/{t.epochs} step {step}/{total_steps} loss {mean_loss:.4f} top-1 {top1:.3f} "
                        f"lr {lr:.5f} {rate:.1f} img/s")
                    metrics_log.write({"step": step, "epoch": epoch + 1, "loss": mean_loss, "top1": top1,
                                       "learning_rate": lr, "images_per_sec": rate}, "train")
                if step % t.checkpoint_every == 0 and step % steps_per_epoch != 0:
                    trainer.sync_batchnorm_statistics()
                    checkpointer.save()
            trainer.sync_batchnorm_statistics()  # every replica evaluates, and the chief saves, the same statistics
            eval_start = time.time()
            eval_result = trainer.evaluate(eval_ds)
            eval_result["eval_seconds"] = time.time() - eval_start
            entry = {"step": step, "epoch": epoch + 1, **eval_result}
            history.append(entry)
            metrics_log.write(entry, "val")
            log(
                f"epoch {epoch + 1}/{t.epochs} validation: loss {eval_result['val_loss']:.4f} "
                f"top-1 {eval_result['val_top1']:.4f} top-5 {eval_result['val_top5']:.4f} ({eval_result['val_images']} images)"
            )
            checkpointer.epoch.assign(epoch + 1)
            checkpointer.save()
        if not eval_result:  # resumed a run that ended before its summary: evaluate once to complete it
            eval_result = trainer.evaluate(eval_ds)
    finally:
        metrics_log.close()
        if watch:
            watch.stop()  # the last collective is done: the chief may now leave
    summary = {
        **{k: eval_result[k] for k in ("val_top1", "val_top5", "val_loss")},
        "epochs": t.epochs,
        "steps": step,
        "train_images_per_sec": speed.rate(),
        "precision": rt.precision,
        "xla": rt.xla,
        "replicas": rt.num_replicas,
        "workers": rt.num_workers,
        "distribution": rt.distribution,
        "num_classes": num_classes,
        "class_names": facts["class_names"],
        "image_size": d.image_size,
        "params": int(model.count_params()),
        "data_dir": data_dir,
        "model_dir": model_dir,
        "history": history,
        "machine": facts["machine"],
    }
    if rt.is_chief:
        best_top1, best_at = outputs.best_epoch(model_dir)
        # the whole run's evaluations, the parts before a resume included
        summary["history"] = outputs.validation_history(model_dir) or history
        summary.update(best_val_top1=best_top1, best_epoch=best_at, train_images=train_count,
                       val_images=eval_result.get("val_images"), config=config.to_dict())
        artifacts = {"weights": outputs.save_weights(model, model_dir)}
        artifacts.update(outputs.write_reports(
            model, pipeline.make_eval_dataset(data_cfg, info.split_files("val")), facts["class_names"], model_dir))
        summary["artifacts"] = artifacts
        outputs.write_summary(summary, model_dir)
        if config.export.export:
            _export(model_dir, config, summary)
        log(f"done: val top-1 {summary['val_top1']:.4f} (best {best_top1:.4f}), {summary['train_images_per_sec']:.1f} img/s")
        log(f"wrote {model_dir}/: summary.json, summary.md, curves.png, predictions.png, confusion_matrix.png, "
            "metrics.jsonl, tensorboard/, checkpoints/, model.weights.h5, run.json")
    # the same on every worker of a multi-worker run: a one-line check that they stayed in sync
    log(f"final weights sha256 {_weights_digest(model)}")
    checkpointer.close()
    return summary


def _device_line(rt: distribute.Runtime) -> str:
    """What the run computes on, for the start line: the GPUs, or the CPU class and oneDNN."""
    if rt.device_kind == "GPU":
        gpus = machine.gpus()
        return ", ".join(f"{g['name']} (compute {g['compute_capability']})" for g in gpus) or "GPU"
    return machine.cpu_class()


def _watch_chief(rt: distribute.Runtime, checkpointer: ckpt_lib.Checkpointer):
    """On a non-chief worker of a multi-worker run: exit (code 5) within seconds of the chief's death."""
    address = distribute.chief_address() if rt.num_workers > 1 and not rt.is_chief else None
    if address is None:
        return None

    def lost(reason: str) -> None:
        error(f"a worker of the multi-worker job was lost ({reason}); stop every worker and run the same command on "
              f"each again to resume from the last checkpoint ({tf.train.latest_checkpoint(checkpointer.directory) or 'none yet: starts over'})")
        checkpointer.close()  # os._exit runs no exit handlers
        os._exit(distribute.EXIT_CLUSTER)  # the main thread is blocked inside a collective

    return distribute.ChiefWatch(address, lost)


def _weights_digest(model) -> str:
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:16]


def _export(model_dir: str, config: Config, summary: dict) -> None:
    """Export with the parity gate; the summary records the outcome either way."""
    from toolkit import export as export_lib

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


class _Speedometer:
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

    def end_step(self):
        self.durations.append(time.perf_counter() - self._t0)

    def interval_rate(self) -> float:
        """Rate over the steps since the previous call (compilation included: it is what happened)."""
        window = self.durations[self._interval_start:]
        self._interval_start = len(self.durations)
        return self.batch * len(window) / max(sum(window), 1e-9)

    def rate(self) -> float:
        skip = self.warmup if len(self.durations) > self.warmup else min(1, len(self.durations) - 1)
        timed = self.durations[skip:]
        return self.batch * len(timed) / sum(timed) if timed else 0.0
