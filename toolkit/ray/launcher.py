"""The trainer on Ray Train's workers: Ray places and restarts them, the trainer does the rest.

Ray Train's `TensorflowTrainer` starts one worker actor per requested worker, gives each a TF_CONFIG
naming all of them (a free port on each worker's node) and runs `_worker` in each. `_worker` runs
the ordinary trainer, `python -m toolkit.train --cluster=tf_config ARGS`, as a child process of
the actor: the same code, flags, checkpoints and exit codes as on any other engine, and none of the
trainer's process-wide settings (signal handlers, TensorFlow's thread pools, the precision policy)
inside Ray's actor. The child ends with the actor (PR_SET_PDEATHSIG: SIGTERM, on which the trainer
checkpoints and exits 8).

Failures are Ray's to handle, resumption is the trainer's:
  - a child that exits 5 (it lost another worker), 8 (stopped), 1 (crashed, or the cluster did not
    form) or by a signal raises in its worker: Ray Train stops the whole group and starts it again,
    up to --max_failures times (FailureConfig), and every new child resumes from the last checkpoint
    of --model_dir, which every worker must see (a shared path or gs://);
  - an exit that another try cannot fix (2 bad input, 3 diverged, 4 parity failed, 6 nothing scored,
    7 disk full) is reported, not raised: Ray ends the run, and this launcher exits with that code.
At the end, worker 0 reports the run's summary and a Ray Checkpoint that points to the trainer's
(layout.RAY_POINTER: the model_dir and its latest checkpoint; the checkpoints stay where they are).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

from toolkit import layout
from toolkit.common.errors import BadInput, ExitCode, ToolkitError
from toolkit.common.logs import log
from toolkit.jobs import RayConfig

PERMANENT = (ExitCode.BAD_INPUT, ExitCode.DIVERGED, ExitCode.PARITY_FAILED, ExitCode.NOTHING_SCORED, ExitCode.DISK_FULL)


class RayRunFailed(ToolkitError):
    """The Ray run ended without the trainer finishing; `exit_code` is the trainer's where it gave one."""

    def __init__(self, message: str, exit_code: int = ExitCode.CRASHED):
        super().__init__(message)
        self.exit_code = exit_code


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _worker(loop_config: dict) -> None:
    """One Ray Train worker: the trainer as a child process, its exit code turned into Ray's terms."""
    import ray.train

    context = ray.train.get_context()
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}  # Ray sets it for tf.keras 2; we use Keras 3
    env.update(loop_config["env"])
    command = [sys.executable, "-m", "toolkit.train", "--cluster=tf_config", *loop_config["args"]]
    code = subprocess.call(command, env=env, preexec_fn=_die_with_parent)
    rank = context.get_world_rank()
    if code in PERMANENT:
        ray.train.report({"exit_code": code, "rank": rank})
        return
    if code != 0:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        raise RuntimeError(f"toolkit.train on Ray worker {rank} ended with {how}; Ray restarts the workers, "
                           "which resume from the last checkpoint")
    metrics = {"exit_code": 0, "rank": rank}
    checkpoint = None
    if rank == 0:
        metrics.update(_summary(loop_config["model_dir"]))
        checkpoint = _pointer(loop_config["model_dir"])
    ray.train.report(metrics, checkpoint=checkpoint)


def _summary(model_dir: str) -> dict:
    path = os.path.join(model_dir, layout.SUMMARY)
    try:
        summary = layout.read_json(path)
    except (OSError, ValueError, BadInput):
        return {}
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}


def _pointer(model_dir: str):
    """A Ray Checkpoint of one small file that names the trainer's run and its latest checkpoint."""
    import ray.train
    import tensorflow as tf

    folder = tempfile.mkdtemp(prefix="toolkit-ray-checkpoint-")
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, layout.CHECKPOINTS))
    with open(os.path.join(folder, layout.RAY_POINTER), "w") as f:
        json.dump({"model_dir": os.path.abspath(model_dir) if "://" not in model_dir else model_dir,
                   "checkpoint": latest}, f)
    return ray.train.Checkpoint.from_directory(folder)


def launch(config: RayConfig, train_args: list, model_dir: str) -> dict:
    """Run the trainer with `train_args` on config.workers Ray workers; returns worker 0's final metrics."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    if not ray.is_initialized():
        if config.address:
            ray.init(address=config.address, log_to_driver=True)
        else:  # a Ray of our own on this machine, as big as the workers need
            # on the loopback address: every worker is on this machine, and nothing else should reach them
            ray.init(num_cpus=config.workers * config.cpus_per_worker, num_gpus=config.workers * config.gpus_per_worker,
                     object_store_memory=256 << 20, include_dashboard=False, log_to_driver=True,
                     _node_ip_address="127.0.0.1")
    storage = config.storage_path or (f"{model_dir.rstrip('/')}/{layout.RAY_RESULTS}" if "://" in model_dir
                                      else os.path.abspath(os.path.join(model_dir, layout.RAY_RESULTS)))
    resources = {"CPU": config.cpus_per_worker, **({"GPU": config.gpus_per_worker} if config.gpus_per_worker else {})}
    trainer = TensorflowTrainer(
        train_loop_per_worker=_worker,
        train_loop_config={"args": list(train_args), "model_dir": model_dir, "env": {}},
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=bool(config.gpus_per_worker),
                                     resources_per_worker=resources),
        run_config=RunConfig(name=config.name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=config.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    log(f"ray: {config.workers} workers ({resources}), at most {config.max_failures} restarts, Ray's records in {storage}")
    try:
        result = trainer.fit()
    except Exception as e:  # Ray's TrainingFailedError after the last restart
        raise RayRunFailed(f"the Ray run failed after {config.max_failures} restarts: {str(e).splitlines()[0][:300]}") from e
    metrics = dict(result.metrics or {})
    code = int(metrics.get("exit_code", ExitCode.CRASHED))
    if code != 0:
        raise RayRunFailed(f"toolkit.train on Ray worker {metrics.get('rank')} ended with exit code {code} "
                           f"({ExitCode(code).name.lower()}), which another try cannot fix: see its lines above", code)
    return metrics
