"""Which cluster this process is part of, read from the engine that started it (--cluster).

One resolver turns each engine's environment into the same thing: the worker addresses (the
chief first), this process's index among them, and the TF_CONFIG that MultiWorkerMirroredStrategy
reads. `install` puts that TF_CONFIG into the environment, so the rest of the trainer (the strategy,
the chief rule, the chief watch) reads one source whatever the engine.

  tf_config   TF_CONFIG as written by the user, Kubeflow's TFJob, Vertex AI (with its extra fields:
              "job", "environment", the task's "trial") or Ray Train.
  kubernetes  an Indexed Job or a JobSet: JOB_COMPLETION_INDEX is this worker's index; the worker
              count and the address pattern come from --cluster_workers / --cluster_hosts or the
              environment (TOOLKIT_CLUSTER_WORKERS / TOOLKIT_CLUSTER_HOSTS, which the manifests of
              toolkit.deploy set), the pattern's "{index}" replaced by 0..N-1. Without a pattern it is
              read from the pod's own name: an Indexed Job's pod is <job>-<index>.<service>, a
              JobSet's <jobset>-<job>-<job index>-<index>.<subdomain>, so the first label's trailing
              "-<index>" becomes "-{index}".
  slurm       inside an srun step: SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST and
              SLURM_STEP_TASKS_PER_NODE, through TensorFlow's SlurmClusterResolver where the nodes
              have GPUs. It cannot resolve CPU-only nodes (it allocates GPUs to tasks with a
              step of gpus-per-task, which is 0 there, and asks nvidia-smi without catching its
              absence), so there the same layout is built here with TensorFlow's own host-list
              parsing: hosts sorted, tasks of a node on consecutive ports from --cluster_port (8888).
  none        one machine: the environment is ignored (a TF_CONFIG in it too).
  auto        the first of tf_config, kubernetes, slurm that the environment describes, else none.

An inconsistent description (an index outside the workers, a count that disagrees with the
engine's, a pattern without "{index}", JSON that does not parse) is refused in one line (BadInput,
exit code 2) before any worker waits for the others.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
from typing import Mapping, Optional

from toolkit.common.errors import BadInput
from toolkit.config import CLUSTERS as ENGINES
KUBERNETES_PORT = 2222  # the port TFJob gives its workers; any free port works
SLURM_PORT = 8888  # SlurmClusterResolver's first port
WORKERS_ENV, HOSTS_ENV = "TOOLKIT_CLUSTER_WORKERS", "TOOLKIT_CLUSTER_HOSTS"


@dataclasses.dataclass(frozen=True)
class Cluster:
    engine: str  # tf_config | kubernetes | slurm | none
    workers: tuple  # every task's address, in TensorFlow's task order (the chief first)
    index: int  # this process among them
    tf_config: dict  # what TF_CONFIG holds for this process ({} for one machine)
    source: str  # where it was read from, for the start line

    @property
    def size(self) -> int:
        return max(len(self.workers), 1)

    def describe(self) -> str:
        if self.size < 2:
            return f"cluster {self.engine}: one machine ({self.source})"
        role = "the chief" if self.index == 0 else f"worker {self.index}"
        return (f"cluster {self.engine}: {role} of {self.size} workers ({self.source}): "
                f"{', '.join(self.workers)}")


def resolve(engine: str = "auto", workers: int = 0, hosts: str = "", port: int = 0,
            environ: Optional[Mapping[str, str]] = None) -> Cluster:
    """The cluster the environment describes for --cluster `engine` (see the module's doc)."""
    env = os.environ if environ is None else environ
    if engine not in ENGINES:
        raise BadInput(f"--cluster: unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    chosen = _detect(env) if engine == "auto" else engine
    reader = {"tf_config": _from_tf_config, "kubernetes": _from_kubernetes, "slurm": _from_slurm}.get(chosen)
    if reader is None:
        source = "--cluster=none" if engine == "none" else "auto: no TF_CONFIG, JOB_COMPLETION_INDEX or srun step"
        cluster = Cluster("none", (), 0, {}, source)
    else:
        cluster = reader(env, workers=workers, hosts=hosts, port=port)
    if engine == "auto" and reader is not None:
        cluster = dataclasses.replace(cluster, source=f"auto: {cluster.source}")
    if workers and cluster.size != workers:
        raise BadInput(f"--cluster_workers: {workers} workers, but {cluster.engine} describes {cluster.size} "
                       f"({cluster.source})")
    return cluster


def install(cluster: Cluster, environ: Optional[dict] = None) -> None:
    """Make TF_CONFIG say `cluster` (removed for --cluster=none), for TensorFlow and the trainer to read."""
    env = os.environ if environ is None else environ
    if cluster.engine == "none":
        env.pop("TF_CONFIG", None)
    else:
        env["TF_CONFIG"] = json.dumps(cluster.tf_config)


def _detect(env: Mapping[str, str]) -> str:
    if env.get("TF_CONFIG", "").strip():
        return "tf_config"
    if "JOB_COMPLETION_INDEX" in env:
        return "kubernetes"
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        return "slurm"
    return "none"


def _canonical(workers: list, index: int) -> dict:
    return {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}}


def _from_tf_config(env, **_) -> Cluster:
    raw = env.get("TF_CONFIG", "").strip()
    if not raw:
        raise BadInput("--cluster=tf_config: TF_CONFIG is not set")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadInput(f"--cluster=tf_config: TF_CONFIG is not valid JSON ({e})") from e
    spec = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task", {}) if isinstance(config, dict) else {}
    if not isinstance(spec, dict) or not isinstance(task, dict):
        raise BadInput("--cluster=tf_config: TF_CONFIG needs a \"cluster\" object and a \"task\" object")
    chiefs, others = list(spec.get("chief") or []), list(spec.get("worker") or [])
    unknown = sorted(set(spec) - {"chief", "worker", "evaluator"})
    if unknown or len(chiefs) > 1:
        why = f"task types {unknown}" if unknown else f"{len(chiefs)} chiefs"
        raise BadInput(f"--cluster=tf_config: TF_CONFIG names {why}; MultiWorkerMirroredStrategy takes at most one "
                       "chief and any number of workers")
    kind, index = task.get("type", "worker"), task.get("index", 0)
    if kind not in ("chief", "worker") or not isinstance(index, int) or not 0 <= index < len(spec.get(kind) or []):
        raise BadInput(f"--cluster=tf_config: TF_CONFIG's task {json.dumps(task)} is not one of its cluster's tasks "
                       f"({json.dumps({k: v for k, v in spec.items() if k in ('chief', 'worker')})})")
    addresses = chiefs + others
    if len(set(addresses)) != len(addresses):
        raise BadInput(f"--cluster=tf_config: TF_CONFIG names an address twice: {addresses}")
    position = index + (len(chiefs) if kind == "worker" else 0)
    extras = sorted(set(config) - {"cluster", "task"})
    source = "TF_CONFIG" + (f", with {', '.join(extras)}" if extras else "")
    # kept as given (Vertex AI's extra fields included): TensorFlow's resolver reads what it needs
    return Cluster("tf_config", tuple(addresses), position, config, source)


def _count(value, name: str, least: int = 1) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise BadInput(f"{name}: not a whole number: {value!r}") from None
    if count < least:
        raise BadInput(f"{name}: must be at least {least}, got {count}")
    return count


def _from_kubernetes(env, workers=0, hosts="", port=0, **_) -> Cluster:
    raw_index = env.get("JOB_COMPLETION_INDEX")
    if raw_index is None:
        raise BadInput("--cluster=kubernetes: JOB_COMPLETION_INDEX is not set (an Indexed Job or a JobSet sets it)")
    index = _count(raw_index, "JOB_COMPLETION_INDEX", least=0)
    if workers:
        count, count_from = workers, "--cluster_workers"
    elif env.get(WORKERS_ENV):
        count, count_from = _count(env[WORKERS_ENV], WORKERS_ENV), WORKERS_ENV
    else:
        raise BadInput(f"--cluster_workers: JOB_COMPLETION_INDEX={index} says this is a Kubernetes worker, but not how "
                       f"many there are: pass --cluster_workers or set {WORKERS_ENV} (--cluster=none ignores it)")
    if index >= count:
        raise BadInput(f"--cluster_workers: JOB_COMPLETION_INDEX={index} is not below the {count} workers "
                       f"of {count_from}")
    pattern, pattern_from = (hosts, "--cluster_hosts") if hosts else (env.get(HOSTS_ENV, ""), HOSTS_ENV)
    if not pattern:
        pattern, pattern_from = _pattern_from_hostname(index), "the pod's name"
    if "{index}" not in pattern:
        raise BadInput(f"--cluster_hosts: the pattern {pattern!r} ({pattern_from}) has no {{index}} to tell the "
                       "workers apart")
    try:
        addresses = [pattern.replace("{index}", str(i)) for i in range(count)]
    except ValueError as e:
        raise BadInput(f"--cluster_hosts: {pattern!r}: {e}") from None
    addresses = [a if _has_port(a) else f"{a}:{port or KUBERNETES_PORT}" for a in addresses]
    if len(set(addresses)) != count:
        raise BadInput(f"--cluster_hosts: the pattern {pattern!r} gives the same address to two workers")
    source = f"JOB_COMPLETION_INDEX={index}, {count_from}={count}, hosts from {pattern_from}"
    return Cluster("kubernetes", tuple(addresses), index, _canonical(addresses, index), source)


def _has_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep) and port.isdigit() and not host.endswith(":")


def _pattern_from_hostname(index: int) -> str:
    """<name>-{index}.<subdomain...> from this pod's fully qualified name <name>-<index>.<subdomain...>."""
    fqdn = socket.getfqdn()
    first, dot, rest = fqdn.partition(".")
    suffix = f"-{index}"
    if not first.endswith(suffix) or not rest:
        raise BadInput(f"--cluster_hosts: this pod's name {fqdn!r} is not <name>-{index}.<subdomain> (a pod of an "
                       f"Indexed Job or JobSet with a subdomain): pass the pattern, e.g. "
                       f"--cluster_hosts='myjob-{{index}}.myservice:{KUBERNETES_PORT}'")
    return f"{first[:-len(suffix)]}-{{index}}{dot}{rest}"


def _slurm_gpus(env) -> int:
    if env.get("CUDA_VISIBLE_DEVICES", "").strip():
        return len(env["CUDA_VISIBLE_DEVICES"].split(","))
    if shutil.which("nvidia-smi"):
        from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver as slurm

        try:
            return slurm.get_num_gpus()
        except (RuntimeError, OSError):
            return 0
    return 0


def _from_slurm(env, port=0, **_) -> Cluster:
    from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver as slurm

    missing = [n for n in ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE")
               if not env.get(n)]
    if missing:
        raise BadInput(f"--cluster=slurm: {', '.join(missing)} not set: run the trainer under srun (one task per "
                       "worker), not in the batch script itself")
    rank = _count(env["SLURM_PROCID"], "SLURM_PROCID", least=0)
    ntasks = _count(env["SLURM_STEP_NUM_TASKS"], "SLURM_STEP_NUM_TASKS")
    try:
        hosts = slurm.expand_hostlist(env["SLURM_STEP_NODELIST"])
        per_node = slurm.expand_tasks_per_node(env["SLURM_STEP_TASKS_PER_NODE"])
    except (ValueError, IndexError) as e:
        raise BadInput(f"--cluster=slurm: cannot read SLURM_STEP_NODELIST/SLURM_STEP_TASKS_PER_NODE ({e})") from None
    if len(hosts) != len(per_node) or sum(per_node) != ntasks or rank >= ntasks:
        raise BadInput(f"--cluster=slurm: the step's {ntasks} tasks (rank {rank}) do not match its nodes {hosts} "
                       f"with {per_node} tasks each")
    base = port or SLURM_PORT
    gpus = _slurm_gpus(env)
    if gpus >= max(per_node) and env is os.environ:  # TensorFlow's resolver reads os.environ itself
        resolver = slurm.SlurmClusterResolver(port_base=base, gpus_per_node=gpus)
        addresses = resolver.cluster_spec().as_dict()["worker"]
        how = "TensorFlow's SlurmClusterResolver"
    else:  # see the module's doc: TensorFlow's resolver needs GPUs on every node
        layout = sorted(zip(hosts, per_node))
        addresses = [f"{host}:{base + offset}" for host, tasks in layout for offset in range(tasks)]
        how = "nodes without GPUs: laid out as SlurmClusterResolver would"
    source = f"SLURM_PROCID={rank} of SLURM_STEP_NUM_TASKS={ntasks} on {len(hosts)} nodes, {how}"
    return Cluster("slurm", tuple(addresses), rank, _canonical(addresses, rank), source)

