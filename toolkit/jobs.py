"""The configs of the commands that start training jobs elsewhere: toolkit.deploy renders one for a
cluster engine (DeployConfig), toolkit.ray runs one on Ray Train's workers (RayConfig). Like
toolkit.config's sections, each field is a flag of its command (toolkit.cli)."""

from __future__ import annotations

import dataclasses

from toolkit.config import _opt

DEPLOY_ENGINES = ("jobset", "indexed_job", "tfjob", "slurm", "vertex")  # python -m toolkit.deploy ENGINE (toolkit/deploy/)


@dataclasses.dataclass(frozen=True)
class DeployConfig:
    """What `python -m toolkit.deploy ENGINE` renders: one training job of N workers for a cluster engine."""

    name: str = _opt("toolkit-train", "The job's name: lowercase letters, digits and '-', starting with a letter (the "
                                      "workers' host names are made from it).")
    image: str = _opt("", "The container image holding the toolkit (Dockerfile.gpu); required for every engine but "
                          "slurm, which runs the toolkit installed on the nodes.")
    workers: int = _opt(1, "Worker machines (pods, nodes, Vertex AI replicas); worker 0 is the chief.", lower_bound=1)
    gpus_per_worker: int = _opt(0, "GPUs of each worker (0: CPUs only); the trainer uses all of a worker's GPUs.",
                                lower_bound=0)
    cpus_per_worker: int = _opt(0, "CPUs of each worker: Kubernetes' CPU request, SLURM's --cpus-per-task; 0: no request "
                                   "(Kubernetes), whole nodes (SLURM --exclusive).", lower_bound=0)
    model_dir: str = _opt("", "The run directory, passed to the trainer: storage every worker sees at the same path "
                              "(gs://..., or a path on a shared --volume / a shared filesystem).")
    data_dir: str = _opt("", "The training data (shards or an image folder), passed to the trainer; every worker must "
                             "see it.")
    port: int = _opt(0, "The port the workers talk on; 0: 2222 on Kubernetes, 8888 (and up) on SLURM. Vertex AI picks "
                        "its own.", lower_bound=0)
    max_restarts: int = _opt(3, "How many times the workers are restarted after a lost worker (exit code 5), a preemption "
                                "(8) or a crash before the job fails; bad input (2), divergence (3) and the other "
                                "permanent codes fail it at once where the engine can tell them apart (not TFJob, not "
                                "Vertex AI, which keeps its own count).", lower_bound=0)
    volume: tuple = _opt((), "Kubernetes: a PersistentVolumeClaim mounted in every worker, as CLAIM:PATH or "
                             "CLAIM:PATH:ro (repeat the flag); a shared --model_dir on a path must be on one "
                             "(ReadWriteMany).", kind="multi")
    service_account: str = _opt("", "Kubernetes: the pods' service account; Vertex AI: the job's (e.g. for access "
                                    "to gs://).")
    machine_type: str = _opt("", "Vertex AI: each worker's machine type; empty: n1-standard-8.")
    accelerator_type: str = _opt("", "Vertex AI: the GPU type, which must fit --machine_type; empty: NVIDIA_TESLA_T4.")
    output: str = _opt("", "Write the rendered job to this file (a temporary name, then renamed); empty: stdout.")


@dataclasses.dataclass(frozen=True)
class RayConfig:
    """How `python -m toolkit.ray` runs the trainer on Ray Train's workers (toolkit/ray/launcher.py)."""

    workers: int = _opt(2, "Ray workers, each running toolkit.train (worker 0 is the chief).", lower_bound=1)
    cpus_per_worker: int = _opt(1, "CPUs Ray reserves for each worker.", lower_bound=1)
    gpus_per_worker: int = _opt(0, "GPUs Ray gives each worker (the trainer uses all it sees).", lower_bound=0)
    address: str = _opt("", "The Ray cluster to join ('auto': the one `ray start` runs here); empty: start one on "
                            "this machine for this run.")
    max_failures: int = _opt(3, "How many times Ray restarts the workers after one fails (a lost worker, a "
                                "preemption); they resume from --model_dir's last checkpoint. Bad input, divergence "
                                "and the other permanent exits end the run at once.", lower_bound=0)
    name: str = _opt("toolkit", "The Ray Train run's name (its records' folder under --storage_path).")
    storage_path: str = _opt("", "Where Ray keeps its records of the run (local path or a URI Ray supports); empty: "
                                 "<model_dir>/ray.")

