"""The jobs python -m toolkit.deploy renders for each cluster engine, parsed and checked against what
the engine requires: worker counts, the host names the engine gives its pods (computed here from
each engine's documented rule, not from the renderer's helpers), the restart policy under which a
lost worker (exit 5) restarts the workers and bad input (exit 2) does not; Kubernetes' core objects
and pod templates validated against Kubernetes' own JSON schemas (kubernetes-validate, offline);
the sbatch script run by bash with a fake srun. No TensorFlow, no cluster."""

import os
import re
import shlex
import stat
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from toolkit import jobs
from toolkit.deploy import render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [(3, 2), (1, 0)]  # (workers, GPUs per worker)
TRAIN_ARGS = ["--epochs", "30", "--batch_size=256", "--recipe", "it's $(HOME) \"quoted\" ${x}"]
K8S_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())  # backoffLimitPerIndex is GA from 1.33


def deploy_config(engine, workers, gpus, **overrides):
    values = dict(name="mw-run", workers=workers, gpus_per_worker=gpus, max_restarts=3, data_dir="gs://bucket/shards",
                  model_dir="gs://bucket/runs/mw", image="" if engine == "slurm" else "registry.example.com/toolkit:gpu")
    if engine == "slurm":
        values.update(model_dir="/shared/runs/my run", data_dir="/shared/shards")
    values.update(overrides)
    return jobs.DeployConfig(**values)


def documents(engine, workers, gpus, train_args=TRAIN_ARGS, **overrides):
    text = render.render(engine, deploy_config(engine, workers, gpus, **overrides), train_args)
    return [d for d in yaml.safe_load_all(text) if d is not None]


def validate(obj):
    """kubernetes-validate's strict schema check at the oldest and newest Kubernetes we target."""
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']} invalid for Kubernetes {version} at {list(e.path)}: {e.message[:300]}")


def as_job(name, job_spec):
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": job_spec}


def only_container(pod_spec):
    assert len(pod_spec["containers"]) == 1
    return pod_spec["containers"][0]


def env_of(container):
    return {e["name"]: e["value"] for e in container.get("env", [])}


def kubernetes_expand(arg, env):
    """What the kubelet makes of an argument: $(VAR) from the environment, '$$' a literal '$'."""
    return re.sub(r"\$\$|\$\((\w+)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), arg)


def expected_args(cluster, c):
    return [*cluster, f"--model_dir={c.model_dir}", f"--data_dir={c.data_dir}", *TRAIN_ARGS]


def pod_failure_action(job_spec, exit_code, container_name):
    """The podFailurePolicy's verdict on a pod whose container exited with `exit_code`, by the rules of
    Kubernetes' docs: the first rule that matches wins; none matching counts towards the backoff limit."""
    for rule in job_spec.get("podFailurePolicy", {}).get("rules", []):
        on_codes = rule.get("onExitCodes")
        if on_codes and on_codes.get("containerName", container_name) == container_name:
            inside = exit_code in on_codes["values"]
            if inside == (on_codes["operator"] == "In"):
                return rule["action"]
    return "Count"


def check_pod_failure_policy(job_spec, container_name):
    rules = job_spec["podFailurePolicy"]["rules"]
    assert job_spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it
    for rule in rules:
        if "onExitCodes" in rule:
            values = rule["onExitCodes"]["values"]
            assert values == sorted(set(values)) and 0 not in values  # the API's rules for the list
    for code in (2, 3, 4, 6, 7):
        assert pod_failure_action(job_spec, code, container_name) == "FailJob", code
    for code in (1, 5, 8, 137, 143):
        assert pod_failure_action(job_spec, code, container_name) == "Count", code


def check_trainer_container(container, c, gpus):
    assert container["image"] == c.image
    assert container["command"] == ["python3", "-m", "toolkit.train"]
    limits = container.get("resources", {}).get("limits", {})
    assert limits.get("nvidia.com/gpu") == (gpus or None)


@pytest.mark.parametrize("workers,gpus", SHAPES)
def test_indexed_job_and_its_headless_service(workers, gpus):
    c = deploy_config("indexed_job", workers, gpus)
    service, job = documents("indexed_job", workers, gpus)
    assert (service["kind"], job["kind"]) == ("Service", "Job")
    validate(service)
    validate(job)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == workers
    assert service["spec"]["clusterIP"] == "None"
    selector, pod_labels = service["spec"]["selector"], job["spec"]["template"]["metadata"]["labels"]
    assert selector and selector.items() <= pod_labels.items()
    assert pod["subdomain"] == service["metadata"]["name"]
    assert pod["terminationGracePeriodSeconds"] == 30
    container = only_container(pod)
    check_trainer_container(container, c, gpus)
    port = service["spec"]["ports"][0]["port"]
    assert port == 2222 and container["ports"][0]["containerPort"] == port
    env = env_of(container)
    assert env["TOOLKIT_CLUSTER_WORKERS"] == str(workers)
    # Kubernetes: an Indexed Job's pod host name is <job name>-<index>; with a subdomain it is
    # <host name>.<subdomain>
    expected = [f"{job['metadata']['name']}-{i}.{pod['subdomain']}:{port}" for i in range(workers)]
    assert [env["TOOLKIT_CLUSTER_HOSTS"].format(index=i) for i in range(workers)] == expected
    assert [kubernetes_expand(a, env) for a in container["args"]] == expected_args(["--cluster=kubernetes"], c)
    check_pod_failure_policy(spec, container["name"])
    assert spec["backoffLimitPerIndex"] == 3 and spec["maxFailedIndexes"] == 0
    # an evicted (preempted) pod does not count against the limit
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in \
        spec["podFailurePolicy"]["rules"]


def jobset_action(jobset, exit_code):
    """What the JobSet does when one worker's container exits with `exit_code`: its Job fails with reason
    PodFailurePolicy (a FailJob rule matched) or BackoffLimitExceeded (counted past backoffLimit); the
    first failurePolicy rule whose onJobFailureReasons holds the reason acts, else RestartJobSet."""
    job_spec = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    container = only_container(job_spec["template"]["spec"])["name"]
    verdict = pod_failure_action(job_spec, exit_code, container)
    if verdict == "FailJob":
        reason = "PodFailurePolicy"
    else:
        assert verdict == "Count" and job_spec["backoffLimit"] == 0  # one failed pod fails the Job
        reason = "BackoffLimitExceeded"
    for rule in jobset["spec"]["failurePolicy"].get("rules", []):
        if not rule.get("onJobFailureReasons") or reason in rule["onJobFailureReasons"]:
            return rule["action"]
    return "RestartJobSet"


@pytest.mark.parametrize("workers,gpus", SHAPES)
def test_jobset(workers, gpus):
    c = deploy_config("jobset", workers, gpus)
    (jobset,) = documents("jobset", workers, gpus)
    assert (jobset["apiVersion"], jobset["kind"]) == ("jobset.x-k8s.io/v1alpha2", "JobSet")
    name, network = jobset["metadata"]["name"], jobset["spec"]["network"]
    assert network["enableDNSHostnames"] is True
    (replicated,) = jobset["spec"]["replicatedJobs"]
    assert replicated["replicas"] == 1
    job_spec = replicated["template"]["spec"]
    validate(as_job(f"{name}-{replicated['name']}-0", job_spec))
    assert job_spec["completionMode"] == "Indexed" and job_spec["completions"] == job_spec["parallelism"] == workers
    pod = job_spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30 and "subdomain" not in pod  # JobSet sets it
    container = only_container(pod)
    check_trainer_container(container, c, gpus)
    env = env_of(container)
    assert env["TOOLKIT_CLUSTER_WORKERS"] == str(workers)
    # JobSet's docs: with enableDNSHostnames, pods are <jobset>-<replicated job>-<job index>-<pod index>.<subdomain>,
    # the subdomain defaulting to the JobSet's name (the name of the headless Service it creates)
    subdomain = network.get("subdomain") or name
    assert subdomain == name
    expected = [f"{name}-{replicated['name']}-0-{i}.{subdomain}:2222" for i in range(workers)]
    assert [env["TOOLKIT_CLUSTER_HOSTS"].format(index=i) for i in range(workers)] == expected
    assert [kubernetes_expand(a, env) for a in container["args"]] == expected_args(["--cluster=kubernetes"], c)
    check_pod_failure_policy(job_spec, container["name"])
    assert jobset["spec"]["failurePolicy"]["maxRestarts"] == 3
    for code in (2, 3, 4, 6, 7):
        assert jobset_action(jobset, code) == "FailJobSet", code
    for code in (1, 5, 8, 137):
        assert jobset_action(jobset, code) == "RestartJobSet", code


@pytest.mark.parametrize("workers,gpus", SHAPES)
def test_tfjob(workers, gpus):
    c = deploy_config("tfjob", workers, gpus)
    (tfjob,) = documents("tfjob", workers, gpus)
    assert (tfjob["apiVersion"], tfjob["kind"]) == ("kubeflow.org/v1", "TFJob")
    replicas = tfjob["spec"]["tfReplicaSpecs"]
    assert list(replicas) == ["Worker"]  # no Chief replica: the operator makes worker 0 the chief
    worker = replicas["Worker"]
    assert worker["replicas"] == workers
    # OnFailure restarts a trainer that exits 5; the operator's ExitCode policy would not (1-127: permanent)
    assert worker["restartPolicy"] == "OnFailure"
    assert tfjob["spec"]["runPolicy"]["backoffLimit"] == 3 * workers
    pod = worker["template"]["spec"]
    validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{c.name}-worker-0"}, "spec": pod})
    container = only_container(pod)
    assert container["name"] == "tensorflow"
    check_trainer_container(container, c, gpus)
    assert container["ports"] == [{"name": "tfjob-port", "containerPort": 2222}]
    assert "env" not in container  # TF_CONFIG is the operator's
    cluster = ["--cluster=tf_config", f"--cluster_workers={workers}"]
    assert [kubernetes_expand(a, {}) for a in container["args"]] == expected_args(cluster, c)


@pytest.mark.parametrize("workers,gpus", SHAPES)
def test_vertex_custom_job_spec(workers, gpus):
    c = deploy_config("vertex", workers, gpus)
    (job,) = documents("vertex", workers, gpus)
    pools = job["workerPoolSpecs"]
    assert [p["replicaCount"] for p in pools] == ([1, workers - 1] if workers > 1 else [1])  # pool 0: the chief
    for pool in pools:
        machine = pool["machineSpec"]
        assert machine["machineType"] == "n1-standard-8"
        assert machine.get("acceleratorCount") == (gpus or None) and ("acceleratorType" in machine) == bool(gpus)
        assert pool["containerSpec"]["imageUri"] == c.image
        assert pool["containerSpec"]["command"] == ["python3", "-m", "toolkit.train"]
        assert pool["containerSpec"]["args"] == expected_args(["--cluster=tf_config", f"--cluster_workers={workers}"], c)
    assert job["scheduling"]["restartJobOnWorkerRestart"] is True
    assert job["baseOutputDirectory"]["outputUriPrefix"] == c.model_dir


def sbatch_options(script):
    options = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = line[len("#SBATCH "):].partition("=")
            options[key] = value
    return options


def fake_srun(tmp_path, codes):
    """An `srun` on PATH that records its arguments (NUL-separated, one file per call) and exits with the next of `codes`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "codes").write_text("\n".join(str(c) for c in codes) + "\n")
    srun = bin_dir / "srun"
    srun.write_text('#!/bin/bash\nn=$(ls "$CALLS" | wc -l)\nprintf "%s\\0" "$@" > "$CALLS/$n"\n'
                    'exit "$(sed -n "$((n + 1))p" "$CODES")"\n')
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "calls").mkdir()
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls"),
            "CODES": str(tmp_path / "codes"), "SLURM_CPUS_ON_NODE": "48"}


def run_sbatch(tmp_path, script, codes, **env):
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    environ = {**fake_srun(tmp_path, codes), **env}
    done = subprocess.run(["bash", str(path)], env=environ, capture_output=True, text=True, timeout=60)
    calls = [(tmp_path / "calls" / str(i)).read_text().split("\0")[:-1] for i in range(len(os.listdir(tmp_path / "calls")))]
    return done.returncode, calls, done.stderr


@pytest.mark.parametrize("workers,gpus", SHAPES)
def test_sbatch_script(tmp_path, workers, gpus):
    c = deploy_config("slurm", workers, gpus)
    script = render.render("slurm", c, TRAIN_ARGS)
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    options = sbatch_options(script)
    assert options["--nodes"] == str(workers) and options["--ntasks-per-node"] == "1"
    assert options.get("--gpus-per-node") == (str(gpus) if gpus else None)
    assert "--exclusive" in options and "--requeue" in options  # the whole node's CPUs; SLURM requeues on node failure
    srun = next(line.strip() for line in script.splitlines() if line.strip().startswith("srun "))
    assert "--kill-on-bad-exit=1" in shlex.split(srun)
    flags = expected_args(["--cluster=slurm", f"--cluster_workers={workers}", "--cluster_port=8888"], c)
    block = script.split("train_args=(\n", 1)[1].split("\n)\n", 1)[0]
    assert [shlex.split(line) for line in block.splitlines()] == [[f] for f in flags]  # one shell-quoted flag a line
    code, calls, _ = run_sbatch(tmp_path, script, [0])  # and bash itself reads them back unchanged
    assert code == 0 and len(calls) == 1
    assert calls[0][calls[0].index("python3"):] == ["python3", "-m", "toolkit.train", *flags]
    assert "--cpus-per-task=48" in calls[0] and ("--gpus-per-node=2" in calls[0]) == bool(gpus)


@pytest.mark.parametrize("codes,exit_code,runs", [
    ([5, 0], 0, 2),  # a lost worker: run again, resumed
    ([8, 137, 0], 0, 3),  # a preemption, a killed task: run again
    ([2], 2, 1), ([3], 3, 1), ([7], 7, 1),  # bad input, diverged, disk full: at once
    ([5, 5, 5, 5, 5], 5, 4),  # --max_restarts 3: four runs in all
])
def test_sbatch_restart_loop(tmp_path, codes, exit_code, runs):
    script = render.render("slurm", deploy_config("slurm", 2, 1), ["--epochs", "3"])
    code, calls, _ = run_sbatch(tmp_path, script, codes)
    assert (code, len(calls)) == (exit_code, runs)


def test_sbatch_counts_slurms_own_requeues(tmp_path):
    script = render.render("slurm", deploy_config("slurm", 2, 1), [])
    code, calls, err = run_sbatch(tmp_path, script, [5, 0], SLURM_RESTART_COUNT="3")
    assert (code, len(calls)) == (5, 1) and "giving up" in err


def test_sbatch_with_a_cpu_count_instead_of_whole_nodes(tmp_path):
    script = render.render("slurm", deploy_config("slurm", 2, 0, cpus_per_worker=16), [])
    options = sbatch_options(script)
    assert options["--cpus-per-task"] == "16" and "--exclusive" not in options
    code, calls, _ = run_sbatch(tmp_path, script, [0], SLURM_CPUS_ON_NODE="96")
    assert code == 0 and "--cpus-per-task=16" in calls[0]


def test_kubernetes_passes_dollar_signs_through(tmp_path):
    (_, job) = documents("indexed_job", 2, 0, train_args=["--recipe", "$(HOME)$$"])
    container = only_container(job["spec"]["template"]["spec"])
    assert container["args"][-1] == "$$(HOME)$$$$"
    assert kubernetes_expand(container["args"][-1], {"HOME": "/root"}) == "$(HOME)$$"


def test_volumes_and_cpus_on_kubernetes():
    c = dict(volume=("toolkit-runs:/runs", "shards:/data:ro"), model_dir="/runs/mw", data_dir="/data/shards",
             cpus_per_worker=16, service_account="trainer")
    (_, job) = documents("indexed_job", 2, 1, **c)
    validate(job)
    pod = job["spec"]["template"]["spec"]
    container = only_container(pod)
    assert container["resources"]["requests"] == {"cpu": "16"} and pod["serviceAccountName"] == "trainer"
    mounts = {m["name"]: (m["mountPath"], m.get("readOnly", False)) for m in container["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert {claims[n]: mounts[n] for n in claims} == {"toolkit-runs": ("/runs", False), "shards": ("/data", True)}


def deploy(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "toolkit.deploy", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


K8S = ["--image", "r/t:gpu", "--model_dir", "gs://b/run", "--data_dir", "gs://b/data"]


@pytest.mark.parametrize("args,flag", [
    (["indexed_job", "--workers", "0", *K8S], "--workers"),
    (["kubeflow", *K8S], "ENGINE"),
    ([*K8S], "ENGINE"),
    (["jobset", "--model_dir", "gs://b/run", "--data_dir", "gs://b/data"], "--image"),
    (["jobset", "--frobnicate", "1", *K8S], "frobnicate"),
    (["jobset", *K8S, "--", "--epoch", "3"], "--epoch"),
    (["jobset", *K8S, "--", "--model_dir=gs://other"], "--model_dir"),
    (["jobset", *K8S, "--", "--fresh"], "--fresh"),
    (["jobset", *K8S, "extra"], "unexpected arguments"),
    (["indexed_job", "--image", "r/t:gpu", "--model_dir", "/runs/x", "--data_dir", "/data"], "--model_dir"),
    (["indexed_job", "--volume", "runs", *K8S], "--volume"),
    (["indexed_job", "--volume", "a:/runs", "--volume", "b:/runs/", *K8S], "--volume"),
    (["indexed_job", "--image", "r/t", "--volume", "runs:/runs", "--volume", "old:/runs/old:ro", "--model_dir",
      "/runs/old/mw", "--data_dir", "/data"], "--model_dir"),  # the deepest mount decides: read-only
    (["jobset", "--name", "a" * 50, "--workers", "16", *K8S], "--name"),
    (["jobset", "--name", "Big_Name", *K8S], "--name"),
    (["slurm", *K8S], "--image"),
    (["vertex", "--image", "r/t", "--model_dir", "/local/run", "--data_dir", "gs://b/d"], "--model_dir"),
    (["vertex", "--port", "2222", *K8S], "--port"),
    (["tfjob", "--machine_type", "n1-standard-4", *K8S], "--machine_type"),
    (["tfjob", *K8S, "--output", "/no/such/dir/job.yaml"], "--output"),
])
def test_a_bad_flag_exits_2_with_one_line_naming_it(args, flag):
    done = deploy(*args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0], done.stderr
    assert done.stdout == ""


def test_the_command_writes_the_file_atomically_without_tensorflow(tmp_path):
    out = tmp_path / "job.yaml"
    code = ("import atexit, sys; atexit.register(lambda: print('tensorflow' in sys.modules, file=sys.stderr)); "
            "from toolkit.deploy.__main__ import run_main; sys.argv[0] = 'toolkit.deploy'; run_main()")
    args = ["jobset", "--workers", "3", "--gpus_per_worker", "2", *K8S, "--output", str(out), "--", *TRAIN_ARGS]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stderr.strip() == "False", done.stderr
    assert done.stdout == "" and os.listdir(tmp_path) == ["job.yaml"]
    text = out.read_text()
    assert text.startswith("# a Kubernetes JobSet") and "\n# python -m toolkit.deploy jobset --workers 3 " in text
    c = jobs.DeployConfig(name="toolkit-train", image="r/t:gpu", workers=3, gpus_per_worker=2, model_dir="gs://b/run",
                            data_dir="gs://b/data", output=str(out))
    assert list(yaml.safe_load_all(text)) == list(yaml.safe_load_all(render.render("jobset", c, TRAIN_ARGS)))


def test_the_command_prints_to_stdout_and_help_lists_engines_and_exit_codes():
    done = deploy("vertex", *K8S, "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert [p["replicaCount"] for p in yaml.safe_load(done.stdout)["workerPoolSpecs"]] == [1, 1]
    helped = deploy("--help")
    assert helped.returncode == 0
    assert all(word in helped.stdout for word in (*jobs.DEPLOY_ENGINES, "Exit codes:", "--gpus_per_worker"))
