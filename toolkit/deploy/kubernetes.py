"""Kubernetes objects as Python dicts: an Indexed Job + headless Service, a JobSet, a Kubeflow TFJob.

Host names, from the engines' documentation and source:
- Indexed Job J: each pod's host name is J-<index> (the Job controller sets it); with `subdomain: S`
  and a headless Service S selecting the pods, J-<index>.S resolves to the pod.
- JobSet J with a replicated job R (replicas 1): its Job is J-R-0 and, with
  `network.enableDNSHostnames`, the pods are J-R-0-<index>.<subdomain>, the subdomain being
  `network.subdomain` (set to J here, the default), whose headless Service JobSet creates itself.
- TFJob: the Training Operator creates a Service per pod (J-worker-<i>) and writes TF_CONFIG itself.

The trainer (--cluster kubernetes) reads its index from JOB_COMPLETION_INDEX, which Kubernetes sets in
the pods of an Indexed Job (and so of a JobSet's), and the workers from TOOLKIT_CLUSTER_WORKERS and
TOOLKIT_CLUSTER_HOSTS ('{index}' replaced by 0..N-1), which these manifests set.
"""

from __future__ import annotations

from typing import Optional, Sequence

from toolkit import jobs
from toolkit.deploy import spec

JOBSET_API = "jobset.x-k8s.io/v1alpha2"
TFJOB_API = "kubeflow.org/v1"
REPLICATED_JOB = "workers"  # JobSet's replicated job: pods <jobset>-workers-0-<index>
CONTAINER = "trainer"
TFJOB_CONTAINER = "tensorflow"  # the container the Training Operator gives TF_CONFIG and the port to
TFJOB_PORT_NAME = "tfjob-port"  # the port name the operator reads TF_CONFIG's port from (else 2222)
WORKERS_ENV, HOSTS_ENV = "TOOLKIT_CLUSTER_WORKERS", "TOOLKIT_CLUSTER_HOSTS"


def labels(c: jobs.DeployConfig) -> dict:
    return {"app.kubernetes.io/name": "toolkit-train", "app.kubernetes.io/instance": c.name}


def literal(arg: str) -> str:
    """An argument Kubernetes passes through unchanged: it expands $(VAR) in command and args, and '$$' is a '$'."""
    return arg.replace("$", "$$")


def hosts_pattern(engine: str, c: jobs.DeployConfig) -> str:
    """TOOLKIT_CLUSTER_HOSTS: every worker's address, '{index}' standing for its index."""
    port = spec.port(engine, c)
    if engine == "indexed_job":
        return f"{c.name}-{{index}}.{c.name}:{port}"
    return f"{c.name}-{REPLICATED_JOB}-0-{{index}}.{c.name}:{port}"


def _volumes(c: jobs.DeployConfig) -> tuple:
    volumes = [spec.parse_volume(v) for v in c.volume]
    mounts = [{"name": f"storage-{i}", "mountPath": v.path, **({"readOnly": True} if v.read_only else {})}
              for i, v in enumerate(volumes)]
    claims = [{"name": f"storage-{i}", "persistentVolumeClaim": {"claimName": v.claim, **({"readOnly": True} if
               v.read_only else {})}} for i, v in enumerate(volumes)]
    return mounts, claims


def container(engine: str, c: jobs.DeployConfig, train_args: Sequence[str], name: str = CONTAINER,
              env: Optional[dict] = None, port_name: str = "worker") -> dict:
    """The one container of a worker: the trainer, its flags, its port, GPUs, CPUs and volumes."""
    out = {"name": name, "image": c.image, "command": [literal(a) for a in spec.TRAINER],
           "args": [literal(a) for a in spec.train_command(engine, c, train_args)]}
    if env:
        out["env"] = [{"name": k, "value": v} for k, v in env.items()]
    out["ports"] = [{"name": port_name, "containerPort": spec.port(engine, c)}]
    resources = {}
    if c.gpus_per_worker:
        resources["limits"] = {"nvidia.com/gpu": c.gpus_per_worker}
    if c.cpus_per_worker:
        resources["requests"] = {"cpu": str(c.cpus_per_worker)}
    if resources:
        out["resources"] = resources
    mounts, _ = _volumes(c)
    if mounts:
        out["volumeMounts"] = mounts
    return out


def pod_template(c: jobs.DeployConfig, worker: dict, restart_policy: Optional[str] = None,
                 subdomain: Optional[str] = None) -> dict:
    pod = {}
    if restart_policy:
        pod["restartPolicy"] = restart_policy
    if subdomain:
        pod["subdomain"] = subdomain
    pod["terminationGracePeriodSeconds"] = spec.GRACE_SECONDS
    if c.service_account:
        pod["serviceAccountName"] = c.service_account
    pod["containers"] = [worker]
    _, claims = _volumes(c)
    if claims:
        pod["volumes"] = claims
    return {"metadata": {"labels": labels(c)}, "spec": pod}


def fail_on_permanent_codes(container_name: str) -> dict:
    """podFailurePolicy rule: a permanent exit code (bad input, diverged, ...) fails the Job without a retry."""
    return {"action": "FailJob", "onExitCodes": {"containerName": container_name, "operator": "In",
                                                  "values": sorted(spec.PERMANENT)}}


def cluster_env(engine: str, c: jobs.DeployConfig) -> dict:
    return {WORKERS_ENV: str(c.workers), HOSTS_ENV: hosts_pattern(engine, c)}


def indexed_job(c: jobs.DeployConfig, train_args: Sequence[str]) -> list:
    """[headless Service, Indexed Job]: one pod per worker, J-<index>.J."""
    port = spec.port("indexed_job", c)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": c.name, "labels": labels(c)},
               "spec": {"clusterIP": "None", "selector": labels(c), "publishNotReadyAddresses": True,
                        "ports": [{"name": "worker", "port": port, "targetPort": port}]}}
    worker = container("indexed_job", c, train_args, env=cluster_env("indexed_job", c))
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": c.name, "labels": labels(c)},
           "spec": {"completionMode": "Indexed", "completions": c.workers, "parallelism": c.workers,
                    # a lost worker makes every worker exit 5, one failure per index: a limit per index
                    # counts restarts of the group, where backoffLimit would count pods
                    "backoffLimitPerIndex": c.max_restarts, "maxFailedIndexes": 0,
                    "podFailurePolicy": {"rules": [
                        fail_on_permanent_codes(CONTAINER),
                        # an evicted or preempted pod (it saved a checkpoint and exited 8) is replaced uncounted
                        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]},
                    "template": pod_template(c, worker, restart_policy="Never", subdomain=c.name)}}
    return [service, job]


def jobset(c: jobs.DeployConfig, train_args: Sequence[str]) -> list:
    """[JobSet]: one replicated job of one Indexed Job; any failed pod restarts the whole set."""
    worker = container("jobset", c, train_args, env=cluster_env("jobset", c))
    job_spec = {"completionMode": "Indexed", "completions": c.workers, "parallelism": c.workers,
                "backoffLimit": 0,  # a failed pod fails the Job, and JobSet restarts every worker together
                "podFailurePolicy": {"rules": [fail_on_permanent_codes(CONTAINER)]},
                "template": pod_template(c, worker, restart_policy="Never")}  # JobSet sets the subdomain
    return [{"apiVersion": JOBSET_API, "kind": "JobSet", "metadata": {"name": c.name, "labels": labels(c)},
             "spec": {"network": {"enableDNSHostnames": True, "subdomain": c.name, "publishNotReadyAddresses": True},
                      "failurePolicy": {"maxRestarts": c.max_restarts, "rules": [
                          {"name": "permanentExitCode", "action": "FailJobSet",
                           "onJobFailureReasons": ["PodFailurePolicy"]}]},
                      "replicatedJobs": [{"name": REPLICATED_JOB, "replicas": 1, "template": {"spec": job_spec}}]}}]


def tfjob(c: jobs.DeployConfig, train_args: Sequence[str]) -> list:
    """[TFJob] (Kubeflow Training Operator v1): N Worker replicas, worker 0 the chief, TF_CONFIG by the operator."""
    worker = container("tfjob", c, train_args, name=TFJOB_CONTAINER, port_name=TFJOB_PORT_NAME)
    return [{"apiVersion": TFJOB_API, "kind": "TFJob", "metadata": {"name": c.name, "labels": labels(c)},
             "spec": {"runPolicy": {"backoffLimit": c.max_restarts * c.workers},
                      "tfReplicaSpecs": {"Worker": {"replicas": c.workers, "restartPolicy": "OnFailure",
                                                    "template": pod_template(c, worker)}}}}]


BUILDERS = {"indexed_job": indexed_job, "jobset": jobset, "tfjob": tfjob}


def notes(engine: str, c: jobs.DeployConfig) -> list:
    """The comment lines above the manifest: how to start it, the host names, the restart policy."""
    lines = [f"Start: kubectl apply -f FILE; the workers: kubectl get pods -l app.kubernetes.io/instance={c.name}; "
             "stop: kubectl delete -f FILE",
             spec.storage_note(engine)]
    permanent = ", ".join(str(code) for code in spec.PERMANENT)
    if engine == "indexed_job":
        lines += [f"Workers: pods {c.name}-<index>.{c.name} (headless Service {c.name}); the trainer reads "
                  f"JOB_COMPLETION_INDEX, {WORKERS_ENV} and {HOSTS_ENV}.",
                  f"Restarts: a failed pod is replaced (restartPolicy Never) up to {c.max_restarts} times per index "
                  "(backoffLimitPerIndex; one failed index fails the Job): a lost worker makes every worker exit 5, "
                  "so every index restarts once and resumes from the last checkpoint. Exit codes "
                  f"{permanent} (bad input, diverged, parity, nothing scored, disk full) fail the Job at once "
                  "(podFailurePolicy FailJob); an evicted pod is replaced without counting (Ignore DisruptionTarget).",
                  "Needs Kubernetes 1.33+ (backoffLimitPerIndex GA; podFailurePolicy GA since 1.31)."]
    elif engine == "jobset":
        lines += [f"Workers: pods {c.name}-{REPLICATED_JOB}-0-<index>.{c.name} (JobSet creates the headless Service "
                  f"{c.name}); the trainer reads JOB_COMPLETION_INDEX, {WORKERS_ENV} and {HOSTS_ENV}.",
                  f"Restarts: any failed pod fails its Job (backoffLimit 0) and JobSet recreates every worker "
                  f"(failurePolicy, up to maxRestarts {c.max_restarts}): a lost worker (5) or a preemption (8) resumes "
                  f"from the last checkpoint. Exit codes {permanent} fail the Job through its podFailurePolicy, and "
                  "the rule on reason PodFailurePolicy fails the JobSet at once, unrestarted.",
                  "Needs the JobSet controller (kubernetes-sigs/jobset) installed in the cluster."]
    else:
        lines += ["Kubeflow Training Operator v1 TFJob: legacy (its successor, Trainer v2, has no TensorFlow "
                  "runtime); the operator writes TF_CONFIG (worker 0 is the chief: there is no Chief replica) into "
                  f"the container named {TFJOB_CONTAINER}, with the port named {TFJOB_PORT_NAME}.",
                  "Restarts: restartPolicy OnFailure restarts a worker whose trainer exits non-zero in place; the "
                  "operator's ExitCode policy would not do: it treats exit codes 1-127 as permanent, and a lost worker "
                  f"makes the others exit 5. runPolicy.backoffLimit {c.max_restarts * c.workers} = --max_restarts "
                  f"{c.max_restarts} x {c.workers} workers, as the operator counts the restarts of all containers "
                  f"together and a lost worker restarts every one. TFJob cannot tell codes {permanent} apart: "
                  "bad input is retried too, until that limit."]
    return lines
