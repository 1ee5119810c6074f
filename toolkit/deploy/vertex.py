"""A Vertex AI CustomJobSpec, the file `gcloud ai custom-jobs create --config` reads.

workerPoolSpecs[0] is the chief (one replica), workerPoolSpecs[1] the other workers (left out for a
single worker). Vertex AI writes TF_CONFIG itself (a "chief" task for pool 0, "worker" tasks for
pool 1, extra fields the trainer ignores), so the trainer runs with --cluster tf_config.
"""

from __future__ import annotations

from typing import Sequence

from toolkit import jobs
from toolkit.deploy import spec


def pool(c: jobs.DeployConfig, train_args: Sequence[str], replicas: int) -> dict:
    machine = {"machineType": c.machine_type or spec.DEFAULT_MACHINE}
    if c.gpus_per_worker:
        machine["acceleratorType"] = c.accelerator_type or spec.DEFAULT_ACCELERATOR
        machine["acceleratorCount"] = c.gpus_per_worker
    return {"machineSpec": machine, "replicaCount": replicas,
            "containerSpec": {"imageUri": c.image, "command": list(spec.TRAINER),
                              "args": spec.train_command("vertex", c, train_args)}}


def custom_job_spec(c: jobs.DeployConfig, train_args: Sequence[str]) -> dict:
    pools = [pool(c, train_args, 1)] + ([pool(c, train_args, c.workers - 1)] if c.workers > 1 else [])
    job = {"workerPoolSpecs": pools,
           # a restarted worker restarts every worker: the others would otherwise wait on a peer that
           # came back without their state (they exit 5, and come back too, resuming from the checkpoint)
           "scheduling": {"restartJobOnWorkerRestart": True}}
    if c.model_dir.startswith("gs://"):
        job["baseOutputDirectory"] = {"outputUriPrefix": c.model_dir}  # AIP_MODEL_DIR etc. point under it
    if c.service_account:
        job["serviceAccount"] = c.service_account
    return job


def notes(c: jobs.DeployConfig) -> list:
    return [f"Start: gcloud ai custom-jobs create --region=REGION --display-name={c.name} --config=FILE",
            spec.storage_note("vertex"),
            f"Workers: pool 0 the chief (1 replica), pool 1 the other {c.workers - 1}; Vertex AI writes TF_CONFIG.",
            "Restarts (Vertex AI's rules, not configurable here): a worker that exits non-zero is restarted on its "
            "VM, a few times, before Vertex AI retries the whole job; errors it classes as permanent end the job. It "
            "does not read the exit code, so bad input (2) is retried too. scheduling.restartJobOnWorkerRestart "
            "restarts every worker when one restarts, which a lost worker (exit 5) needs; --max_restarts has no "
            "effect here."]
