"""Devices, strategies, precision policies and the XLA rules.

Everything that depends on the hardware is decided here once, at start-up, and handed to the
rest of the code as a `Runtime`: the strategy, the resolved precision and whether the train step
is XLA-compiled (with the reason when it was turned off).
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import json
import os
import socket
import sys
import threading
from typing import Callable, Optional

import tensorflow as tf

from toolkit.common import machine
from toolkit.common.errors import BadInput
from toolkit import layout

PRECISION_POLICIES = {"fp32": "float32", "fp16": "mixed_float16", "bf16": "mixed_bfloat16"}


@dataclasses.dataclass(frozen=True)
class Runtime:
    strategy: tf.distribute.Strategy
    distribution: str  # resolved: mirrored | multi_worker | one_device
    precision: str  # resolved: fp32 | fp16 | bf16
    xla: bool
    xla_note: str  # why XLA is on or off
    precision_note: str  # why this precision
    steps_per_loop: int  # train steps per call into TensorFlow (fewer at a log or checkpoint boundary)
    threads: dict  # TensorFlow's thread pools: intra_op, inter_op (0: TensorFlow's default), usable_cores
    num_workers: int
    worker_index: int
    is_chief: bool
    device_kind: str  # "GPU" or "CPU"

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e


def tf_config_cluster() -> tuple[int, int, bool]:
    """(workers in TF_CONFIG, this task's index, whether this task is the chief)."""
    tf_config = _tf_config()
    if not tf_config:
        return 1, 0, True
    cluster = tf_config.get("cluster", {})
    task = tf_config.get("task", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    has_chief_task = bool(cluster.get("chief"))
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief_task)
    global_index = index + (1 if has_chief_task and kind == "worker" else 0)
    return max(workers, 1), global_index, is_chief


def setup_devices(cpu_replicas: int = 1, gpu_memory_growth: bool = True) -> None:
    """Split the CPU into logical devices and set GPU memory growth. Must run before any TF op."""
    if gpu_memory_growth:
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass  # already initialized (e.g. a second call in one process)
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        current = tf.config.get_logical_device_configuration(cpu)
        if current is None or len(current) != cpu_replicas:
            try:
                tf.config.set_logical_device_configuration(
                    cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_replicas)]
                )
            except RuntimeError as e:
                raise RuntimeError(
                    f"--cpu_replicas: cannot split the CPU into {cpu_replicas} devices after "
                    f"TensorFlow has started ({e})"
                ) from e


def configure_threads(intra_op: int = 0, inter_op: int = 0) -> dict:
    """Size TensorFlow's thread pools; 0 keeps TensorFlow's own choice except under a CPU quota.

    TensorFlow sizes both pools from the CPUs the process may be scheduled on (its affinity), which
    ignores a container's CPU quota (docker --cpus, Kubernetes limits): on a 64-core host limited
    to 4 CPUs it would run 64 threads. Under a quota, auto uses the quota's cores for the op
    pool and at most 2 threads between ops. Must run before TensorFlow's runtime starts.
    Returns {"intra_op", "inter_op", "usable_cores"} as they will be in effect (0: TensorFlow's default).
    """
    cores = machine.usable_cores()
    quota_limited = cores < machine.schedulable_cores()
    intra = intra_op or (cores if quota_limited else 0)
    inter = inter_op or (min(2, cores) if quota_limited else 0)
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    return {"intra_op": intra, "inter_op": inter, "usable_cores": cores}


def gpu_compute_capabilities() -> list:
    caps = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        caps.append(tuple(details.get("compute_capability", (0, 0))))
    return caps


# Which path trains fastest on a CPU, measured per CPU class (BENCHMARKS.md, ResNet50V2, batch 16):
#   Xeon with AMX, oneDNN on: bf16 without XLA (18.46 img/s at 224 px with the fused BatchNorm and the default
#       strategy; bf16+XLA 4.71; fp32 9.54)
#   EPYC Zen 4 (AVX512_BF16), oneDNN on: bf16 without XLA (8.04 img/s at 224 px, 29.8 at 96;
#       fp32 6.34; fp32+XLA 4.65 and 18.5; bf16+XLA 4.51)
#   EPYC Zen 3 (AVX2), oneDNN off: fp32 with XLA (3.24 vs 1.94 img/s at 224 px, under OneDeviceStrategy,
#       which slowed the step without XLA more: not measured again since)
#   Xeon with AMX, oneDNN forced off: fp32 without XLA (5.53 vs 4.40 img/s at 224 px)
# XLA's CPU code does not use oneDNN's kernels: with oneDNN on, XLA is the slower path.
BF16_CPU_FEATURES = ("amx_bf16", "avx512_bf16")


def _onednn_bf16() -> bool:
    return machine.onednn_enabled() and machine.has_cpu_feature(*BF16_CPU_FEATURES)


def resolve_precision(precision: str) -> tuple[str, str]:
    """(precision, why) for --precision; auto: fp16 on GPUs of compute capability >= 7.0, bf16 on
    CPUs with bf16 units (AMX, AVX512_BF16) when oneDNN is on, else fp32."""
    if precision != "auto":
        return precision, f"--precision={precision}"
    caps = gpu_compute_capabilities()
    if caps:
        if min(caps) >= (7, 0):
            return "fp16", "auto: GPUs with tensor cores"
        return "fp32", "auto: GPUs older than compute capability 7.0"
    if _onednn_bf16():
        return "bf16", "auto: oneDNN runs bf16 on this CPU's bf16 units, 1.3x fp32"
    return "fp32", "auto: bf16 would be emulated here (no AMX or AVX512_BF16, or oneDNN off)"


def set_precision_policy(precision: str) -> None:
    import keras

    keras.mixed_precision.set_global_policy(PRECISION_POLICIES[precision])


def worker_lost_message(reason: str, model_dir: str) -> str:
    """The one line a worker prints when the multi-worker job lost one of its workers."""
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, layout.CHECKPOINTS)) or "none yet: starts over"
    return (f"a worker of the multi-worker job was lost ({reason}); stop every worker and run the same command on "
            f"each again to resume from the last checkpoint ({latest})")


@contextlib.contextmanager
def _deadline(seconds: int, message: str):
    """End the process (exit code 1) if the block has not finished within `seconds` (0: never).

    Joining a cluster blocks inside TensorFlow's C++ runtime, holding the GIL, and the chief's
    coordination service waits for missing workers without a limit: no Python exception, signal
    handler or thread can run then. faulthandler's watchdog is a C thread that needs no GIL: it
    prints "Timeout" and where the process was stuck, then exits.
    """
    if not seconds:
        yield
        return
    print(f"({message})", file=sys.stderr, flush=True)
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def make_strategy(distribution: str, cluster_timeout: int = 0) -> tuple[tf.distribute.Strategy, str]:
    """Build the strategy. auto: several TF_CONFIG workers -> multi_worker; GPUs or logical CPU
    devices -> mirrored over all of them; else one_device (TensorFlow's default strategy on a CPU).

    multi_worker blocks until every worker in TF_CONFIG has started; after `cluster_timeout`
    seconds (0: never) the process ends with exit code 1 ("Timeout" and a stack dump on stderr).
    """
    num_workers, _, _ = tf_config_cluster()
    if distribution == "auto" and num_workers > 1:
        distribution = "multi_worker"
    if distribution == "multi_worker":
        # before anything lists logical devices: that starts TensorFlow's runtime, and collective
        # ops can only be configured before it starts
        if not os.environ.get("TF_CONFIG"):
            raise BadInput("--distribution: multi_worker needs TF_CONFIG naming the workers")
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.NCCL
            if tf.config.list_physical_devices("GPU")
            else tf.distribute.experimental.CommunicationImplementation.RING
        )
        workers = resolver.cluster_spec().as_dict()
        message = (
            f"--cluster_timeout: if not every worker of TF_CONFIG {json.dumps(workers)} has joined within "
            f"{cluster_timeout} s, this process ends; start them all (same flags, each its own TF_CONFIG task) "
            "or raise --cluster_timeout"
        )
        with _deadline(cluster_timeout, message):
            strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
        return strategy, distribution

    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if distribution == "auto":
        if gpus or len(cpus) > 1:
            distribution = "mirrored"
        else:
            distribution = "one_device"
    if distribution == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in cpus]
        cross_device = None if gpus else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device), distribution
    if distribution == "one_device":
        if gpus:
            return tf.distribute.OneDeviceStrategy(gpus[0].name), distribution
        # One CPU: TensorFlow's default strategy, which has the same API with one replica. Under
        # OneDeviceStrategy the same step ran 1.10x slower with oneDNN on (bf16) and 1.40x slower
        # with it off (fp32) on a 2-core Xeon (BENCHMARKS.md, "Measurements behind code choices").
        return tf.distribute.get_strategy(), distribution
    raise BadInput(f"--distribution: unknown value {distribution!r}")


GPU_STEPS_PER_LOOP = 1000  # in practice bounded by --log_every and --checkpoint_every


def xla_decision(mode: str, strategy: tf.distribute.Strategy, device_kind: str,
                 deterministic: bool = False) -> tuple[bool, str]:
    """(whether to XLA-compile the train step, why) for --xla auto|on|off on this device."""
    if mode == "off":
        return False, "--xla=off"
    if deterministic:
        # enable_op_determinism makes XLA refuse the step ("GPU MaxPool gradient ops do not yet
        # have a deterministic XLA implementation"), on a CPU too
        return False, "--deterministic needs op determinism, which XLA does not provide (MaxPool gradient)"
    if device_kind == "CPU" and strategy.num_replicas_in_sync > 1:
        return False, "several CPU replicas cannot share an XLA-compiled step (CPU:1's resources from CPU:0)"
    if mode == "on":
        return True, "--xla=on"
    if device_kind == "GPU":
        return True, "auto: GPU"
    if machine.onednn_enabled():
        return False, "auto: oneDNN runs this CPU's kernels and XLA's CPU code does not use them (1.4-2x slower with XLA); --xla=on forces it"
    if "avx512f" in machine.cpu_features():
        return False, ("auto: oneDNN is off, and on AVX-512 TensorFlow's own kernels beat the XLA-compiled step "
                       "(1.26x on a Xeon with oneDNN forced off); --xla=on forces it")
    return True, "auto: with oneDNN off, the XLA-compiled step beats TensorFlow's CPU kernels (1.67x on an AVX2 EPYC)"


def make_runtime(
    distribution: str = "auto",
    precision: str = "auto",
    xla: str = "auto",
    cpu_replicas: int = 1,
    cluster_timeout: int = 0,
    deterministic: bool = False,
    steps_per_loop: int = 0,
    threads: tuple = (0, 0),
) -> Runtime:
    """Threads, devices, strategy, precision policy, XLA and steps per loop decided once, in that order."""
    thread_counts = configure_threads(*threads)
    setup_devices(cpu_replicas)
    strategy, resolved = make_strategy(distribution, cluster_timeout)
    resolved_precision, precision_note = resolve_precision(precision)
    set_precision_policy(resolved_precision)
    device_kind = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    use_xla, note = xla_decision(xla, strategy, device_kind, deterministic)
    # a CPU step takes long enough that one host sync per step costs nothing measurable; a GPU
    # step does not, so GPUs run up to the next progress line (log_every) per call
    loop_steps = steps_per_loop or (1 if device_kind == "CPU" else GPU_STEPS_PER_LOOP)
    # one reading of TF_CONFIG and one chief rule (the resolver read the same TF_CONFIG)
    num_workers, worker_index, is_chief = tf_config_cluster() if resolved == "multi_worker" else (1, 0, True)
    return Runtime(
        strategy=strategy,
        distribution=resolved,
        precision=resolved_precision,
        xla=use_xla,
        xla_note=note,
        precision_note=precision_note,
        steps_per_loop=loop_steps,
        threads=thread_counts,
        num_workers=num_workers,
        worker_index=worker_index,
        is_chief=is_chief,
        device_kind=device_kind,
    )


def chief_address() -> Optional[tuple]:
    """(host, port) of the chief task named by TF_CONFIG, or None without a cluster."""
    cluster = _tf_config().get("cluster", {})
    tasks = cluster.get("chief") or cluster.get("worker") or []
    if not tasks:
        return None
    host, _, port = tasks[0].rpartition(":")
    return host.strip("[]"), int(port)


class ChiefWatch:
    """On a non-chief worker: end the process soon after the chief is gone.

    When the chief dies, TensorFlow's coordination service (which the chief hosts) is gone too, and
    the other workers learn of it only when a heartbeat times out, about a minute later. A
    connection to the chief's port is refused at once when its process has died: after `misses`
    failed connections `interval` seconds apart, `on_lost(reason)` runs (it must end the process).
    Stop it before the chief may leave normally (after the last collective of the run).
    """

    def __init__(self, address: tuple, on_lost: Callable[[str], None], interval: float = 1.0, misses: int = 3):
        self.address, self.on_lost, self.interval, self.misses = address, on_lost, interval, misses
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="toolkit-chief-watch", daemon=True)
        self._thread.start()

    def _watch(self):
        failed = 0
        while not self._stop.wait(self.interval):
            try:
                socket.create_connection(self.address, timeout=max(self.interval, 1.0)).close()
                failed = 0
            except OSError as e:
                failed += 1
                if failed >= self.misses and not self._stop.is_set():
                    host, port = self.address
                    self.on_lost(f"the chief at {host}:{port} is gone ({e.strerror or e})")
                    return

    def stop(self) -> None:
        self._stop.set()


def gather_from_workers(strategy: tf.distribute.Strategy, value: int) -> list:
    """`value` as every replica of every worker holds it (one all-gather; all workers get the list)."""
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant([value], tf.int64)
    )
    return [int(v) for v in strategy.gather(per_replica, axis=0).numpy()]
