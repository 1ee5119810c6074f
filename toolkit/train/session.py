"""`setup(config) -> Session`: everything a training run needs before its first step.

In order: the runtime (devices, strategy, precision, XLA), the data facts (classes, counts, steps
per epoch), the model, optimizer and checkpointer in the strategy's scope, the restore of the
latest checkpoint, the workers' agreement on where to resume, the run record (run.json) and the
input pipelines positioned at the resume point. toolkit.train.run's `fit` and `finish` take it
from there.
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from toolkit import __version__, layout
from toolkit.common.scratch import make_scratch_dir
from toolkit.train import checkpoint as ckpt_lib
from toolkit.train import cluster, distribute
from toolkit.train import ema
from toolkit.train import steps as loop
from toolkit.train import optim
from toolkit.common import machine, storage
from toolkit.config import Config, ConfigError, DataConfig, validate
from toolkit.data import pipeline, prepare, shards, sources
from toolkit.common.logs import log
from toolkit.models import resnet_v2

# the record fields that must match for a resume to make sense
_SHAPING_FIELDS = ("num_classes", "image_size", "depth", "ema")
_FLAG_OF = {"num_classes": "num_classes", "image_size": "image_size", "depth": "depth", "ema": "ema_decay"}


@dataclasses.dataclass
class Session:
    """One run's parts, as `setup` made them."""

    config: Config
    runtime: distribute.Runtime
    data: DataConfig  # config.data with data_dir resolved (the demo dataset's, when none was given)
    info: shards.DatasetInfo
    facts: dict  # the run record written to run.json: classes, image size, precision, machine, config
    steps_per_epoch: int
    start_step: int
    restored: Optional[str]  # the checkpoint resumed from, if any
    model: keras.Model
    optimizer: object
    checkpointer: ckpt_lib.Checkpointer
    trainer: loop.Trainer
    ema_model: Optional[keras.Model] = None  # the weights' moving average (--ema_decay), or None
    train_dataset: object = None  # distributed, positioned at start_step
    eval_dataset: object = None  # distributed, the validation split
    epochs: int = 0  # the epochs to train: --epochs, or fewer planned for --time_budget
    plan: Optional[dict] = None  # --time_budget's plan (run.json keeps it for a resume), None before it is made
    began: float = 0.0  # time.time() when the run started (what --time_budget counts from)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def set_epochs(self, epochs: int, plan: dict) -> None:
        """Train `epochs` epochs as --time_budget planned: the schedule's cosine ends with them."""
        self.epochs, self.plan = epochs, plan
        optim.schedule_of(self.optimizer).set_total_steps(self.total_steps)
        self.facts["plan"] = plan
        if self.runtime.is_chief:
            layout.save_run_record(self.model_dir, self.facts)

    @property
    def warmup_steps(self) -> int:
        """The learning rate's warmup, in steps (shortened when --time_budget cut the schedule short)."""
        return optim.schedule_of(self.optimizer).warmup_steps

    @property
    def model_dir(self) -> str:
        return self.config.train.model_dir

    @property
    def finished(self) -> bool:
        """The checkpoint is at the last step and the run's summary was written: nothing left to do."""
        return self.start_step >= self.total_steps and storage.exists(os.path.join(self.model_dir, layout.SUMMARY))


def setup(config: Config) -> Session:
    """Build everything for a run of `config`, restored from model_dir's latest checkpoint when there is one.

    Raises ConfigError (one line naming the flag) for settings that cannot work here.
    """
    rt = _runtime(config)
    data, info, steps_per_epoch = _data_facts(config, rt)
    facts = _run_record(config, rt, data, info)
    _refuse_another_shape(config, facts)
    model, optimizer, checkpointer, trainer = _build(config, rt, facts["num_classes"], steps_per_epoch)
    ema_model = trainer.ema.average if trainer.ema else None
    restored = None if config.train.fresh else checkpointer.restore_latest()
    start_step = _agreed_start(rt, checkpointer, config.train.model_dir)
    checkpointer.set_aside_damaged()  # the chief, once every worker agreed on where to resume
    recorded_plan = _recorded_plan(config, restored)
    if rt.is_chief:
        layout.save_run_record(config.train.model_dir, facts)
    session = Session(config, rt, data, info, facts, steps_per_epoch, start_step, restored, model, optimizer,
                      checkpointer, trainer, ema_model, epochs=config.train.epochs)
    if recorded_plan:  # a resumed run keeps the plan it made (its schedule was cut to it)
        session.set_epochs(recorded_plan["epochs"], recorded_plan)
    if not session.finished:
        start_epoch, skip = divmod(start_step, steps_per_epoch)
        # mixup / CutMix batches carry soft labels over every class
        mixing = {"num_classes": facts["num_classes"]} if data.mixup_alpha or data.cutmix_alpha else {}
        session.train_dataset = rt.strategy.distribute_datasets_from_function(
            lambda ctx: pipeline.make_train_dataset(data, info.split_files("train"), steps_per_epoch, ctx, start_epoch, skip,
                                                    **mixing))
        session.eval_dataset = rt.strategy.distribute_datasets_from_function(
            lambda ctx: pipeline.make_eval_dataset(data, info.split_files("val"), ctx))
    return session


def _runtime(config: Config) -> distribute.Runtime:
    """Validate, join the cluster (multi-worker), decide strategy, precision and XLA, seed everything."""
    validate(config)
    refuse_early(config)
    t, d = config.train, config.data
    if config.recipe_reason:  # chosen on the command line (a library caller's Config is used as given)
        log(f"recipe {t.recipe} ({config.recipe_reason}): the flags you did not give come from it "
            f"(toolkit/recipes/{t.recipe}.flags; --recipe picks another)")
    found = cluster.resolve(t.cluster, t.cluster_workers, t.cluster_hosts, t.cluster_port)
    cluster.install(found)  # TF_CONFIG, which TensorFlow's resolver and the chief rule read, says the same
    log(found.describe())
    if found.size > 1 and t.distribution in ("auto", "multi_worker"):
        limit = f"at most {t.cluster_timeout} s, --cluster_timeout" if t.cluster_timeout else "no time limit"
        log(f"worker {found.index} of {found.size}: waiting for every worker to join ({limit})")
    rt = distribute.make_runtime(t.distribution, t.precision, t.xla, t.cpu_replicas, t.cluster_timeout, d.deterministic,
                                 t.steps_per_loop, (t.intra_op_threads, t.inter_op_threads))
    validate(config, num_replicas=rt.num_replicas)
    log(f"precision {rt.precision} ({rt.precision_note}); XLA {'on' if rt.xla else 'off'} ({rt.xla_note})")
    seed_everything(d.seed, d.deterministic)
    return rt


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy, TensorFlow and Keras; with `deterministic`, turn on TF's op determinism."""
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def resolve_data_dir(config: Config, is_chief: bool = True) -> str:
    """The shard directory to train on: --data_dir's shards, its image folder converted once into
    model_dir/data (reused while the folder is unchanged), or the generated demo dataset.

    Only the chief writes into model_dir. Other workers convert or generate their own copy in a
    temporary directory deleted when they exit: both are deterministic, so every copy is
    byte-identical and the per-worker file shares line up, and no worker waits on files another
    one writes (which would hang when model_dir is not shared).
    """
    if config.data.data_dir:
        if prepare.holds_shards(config.data.data_dir):
            return config.data.data_dir
        work_dir = (os.path.join(config.train.model_dir, layout.CONVERTED_DATA) if is_chief
                    else make_scratch_dir("toolkit-worker-data-"))
        return prepare.shards_for(config.data.data_dir, work_dir, log)
    if is_chief:
        storage.makedirs(config.train.model_dir, "model_dir")
        demo_dir = os.path.join(config.train.model_dir, layout.DEMO_DATA)
    else:
        demo_dir = make_scratch_dir("toolkit-worker-demo-")
    log(f"no --data_dir: generating the built-in demo dataset in {demo_dir}")
    return sources.write_demo_dataset(demo_dir)


def refuse_early(config: Config) -> None:
    """The refusals that the flags and a look at --data_dir decide, made before anything is converted,
    generated, built or set aside: a refused run leaves model_dir as it was. (Settings alone are
    checked by config.validate; the exact figures are checked again after a conversion.)"""
    d, m, t = config.data, config.model, config.train
    if not d.data_dir:
        return  # the demo dataset is generated to fit
    names, train = prepare.peek(d.data_dir)
    if names and m.num_classes and m.num_classes < len(names):
        raise ConfigError(f"--num_classes: {m.num_classes} is fewer than the {len(names)} classes in {d.data_dir}")
    if train is not None and not t.steps_per_epoch and train < d.batch_size:
        raise ConfigError(f"--batch_size: {d.batch_size} leaves no full batch per epoch (only {train} training images "
                          f"in {d.data_dir})")


def _data_facts(config: Config, rt: distribute.Runtime) -> tuple:
    """(DataConfig with data_dir resolved, DatasetInfo, steps per epoch)."""
    d, m, t = config.data, config.model, config.train
    if rt.is_chief:  # the other workers only read model_dir (the chief's checkpoints)
        storage.makedirs(t.model_dir, "model_dir")
    data_dir = resolve_data_dir(config, rt.is_chief)
    info = shards.read_dataset_info(data_dir)
    if not (m.num_classes or info.num_classes):
        raise ConfigError(f"--num_classes: {data_dir} names no classes (no labels.txt); set --num_classes")
    if info.num_classes and m.num_classes and m.num_classes < info.num_classes:
        raise ConfigError(f"--num_classes: {m.num_classes} is fewer than the {info.num_classes} classes in {data_dir}")
    train_count = info.counts.get("train", 0)
    steps_per_epoch = t.steps_per_epoch or train_count // d.batch_size
    if steps_per_epoch == 0:
        hint = "set --steps_per_epoch (shards without a manifest)" if not train_count else f"only {train_count} training images"
        raise ConfigError(f"--batch_size: {d.batch_size} leaves no full batch per epoch ({hint})")
    return dataclasses.replace(d, data_dir=data_dir), info, steps_per_epoch


def _run_record(config: Config, rt: distribute.Runtime, data: DataConfig, info: shards.DatasetInfo) -> dict:
    num_classes = config.model.num_classes or info.num_classes
    return {
        "toolkit_version": __version__,
        "recipe": {"name": config.train.recipe, "why": config.recipe_reason},
        "num_classes": num_classes,
        "class_names": list(info.class_names) or [str(i) for i in range(num_classes)],
        "image_size": data.image_size,
        "depth": config.model.depth,
        "data_dir": data.data_dir,
        "precision": rt.precision,
        "distribution": rt.distribution,
        "replicas": rt.num_replicas,
        "xla": rt.xla,
        "ema": config.train.ema_decay > 0,
        "steps_per_loop": rt.steps_per_loop,
        "threads": rt.threads,
        "config": config.to_dict(),
        "machine": machine.describe(),
    }


def _recorded_plan(config: Config, restored: Optional[str]) -> Optional[dict]:
    """The --time_budget plan of the run being resumed, when it was made for the same budget and --epochs."""
    if not restored or not config.train.time_budget:
        return None
    plan = layout.load_run_record(config.train.model_dir).get("plan") or {}
    same = plan.get("budget_minutes") == config.train.time_budget and plan.get("most_epochs") == config.train.epochs
    return plan if same and plan.get("epochs") else None


def _refuse_another_shape(config: Config, facts: dict) -> None:
    """Without --fresh: refuse to resume a run of another shape (classes, image size, depth, EMA)."""
    model_dir = config.train.model_dir
    if config.train.fresh or not layout.has_run_record(model_dir):
        return
    record = layout.load_run_record(model_dir)
    for key in _SHAPING_FIELDS:
        if key in record and record[key] != facts[key]:
            raise ConfigError(
                f"--{_FLAG_OF[key]}: {model_dir} holds a run with {key}={record[key]}, this run has {facts[key]}; "
                "use --fresh or another --model_dir"
            )


def _set_aside_for_fresh(config: Config, rt: distribute.Runtime) -> None:
    """--fresh: the chief moves an earlier run aside (the other workers leave model_dir to it)."""
    moved = ckpt_lib.set_aside_previous_run(config.train.model_dir) if config.train.fresh and rt.is_chief else None
    if moved:
        log(f"--fresh: the previous run was moved to {moved}")


def _build(config: Config, rt: distribute.Runtime, num_classes: int, steps_per_epoch: int) -> tuple:
    """(model, optimizer, checkpointer, trainer), their variables created in the strategy's scope."""
    d, m, t = config.data, config.model, config.train
    # --train_sizes: batches of other sizes than the evaluation's, so a model for any size
    size = None if d.train_sizes else d.image_size
    with rt.strategy.scope():
        model = resnet_v2.build_model(num_classes, size, m.depth, m.sync_batchnorm, m.freeze_backbone)
        if m.init_weights:
            copied = resnet_v2.load_initial_weights(model, m.init_weights)
            log(f"--init_weights: copied {copied} layers from {m.init_weights}")
        optimizer = optim.make_optimizer(t, steps_per_epoch, rt.precision)
        optim.build_optimizer_state(optimizer, model)
        trackables = {"model": model, "optimizer": optimizer}
        average = None
        if t.ema_decay:
            ema_model = resnet_v2.build_model(num_classes, size, m.depth, m.sync_batchnorm, m.freeze_backbone)
            average = ema.WeightAverage(model, ema_model, t.ema_decay)
            trackables["ema_model"] = ema_model
        _set_aside_for_fresh(config, rt)  # the last moment: every refusal (weights too) came before
        checkpointer = ckpt_lib.Checkpointer(t.model_dir, rt.is_chief, t.keep_checkpoints, **trackables)
    l2 = t.weight_decay if t.optimizer == "adam" else 0.0
    trainer = loop.Trainer(model, optimizer, rt.strategy, d.batch_size, num_classes, t.label_smoothing, l2, rt.xla,
                           ema=average)
    return model, optimizer, checkpointer, trainer


def _agreed_start(rt: distribute.Runtime, checkpointer: ckpt_lib.Checkpointer, model_dir: str) -> int:
    """The restored step, checked equal on every worker (all of them raise otherwise, so all stop)."""
    step = int(checkpointer.step.numpy())
    if rt.num_workers > 1:
        steps = distribute.gather_from_workers(rt.strategy, step)
        if len(set(steps)) > 1:
            raise ConfigError(
                f"--model_dir: the workers restored different steps {steps}; every worker must read the chief's "
                f"{model_dir} (one shared directory: NFS, GCS, a ReadWriteMany volume) and get the same flags"
            )
    return step
