"""--cluster: each engine's environment, as the engine sets it, read into the same cluster.

The fast tests feed the resolver the variables of a Kubernetes Indexed Job / JobSet, a SLURM srun
step and Vertex AI's TF_CONFIG, and its refusals; the SLURM layout for CPU nodes is checked against
TensorFlow's own SlurmClusterResolver. The slow test starts two real workers on localhost under
each engine's environment and checks that each job ends with the weights of the plain TF_CONFIG job.
"""

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from toolkit.common.errors import BadInput
from toolkit.train import cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def k8s(index, workers=None, hosts=None, **more):
    env = {"JOB_COMPLETION_INDEX": str(index), "HOSTNAME": f"train-{index}", **more}
    if workers is not None:
        env[cluster.WORKERS_ENV] = str(workers)
    if hosts is not None:
        env[cluster.HOSTS_ENV] = hosts
    return env


def srun_step(rank, nodelist, tasks_per_node, ntasks):
    """What srun sets in each task of a step (the part the resolver reads, and some it must ignore)."""
    return {"SLURM_JOB_ID": "4242", "SLURM_PROCID": str(rank), "SLURM_STEP_NUM_TASKS": str(ntasks),
            "SLURM_NTASKS": str(ntasks), "SLURM_STEP_NODELIST": nodelist, "SLURM_JOB_NODELIST": nodelist,
            "SLURM_STEP_TASKS_PER_NODE": tasks_per_node, "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}


def vertex_tf_config(task_type, index, chief, workers):
    """TF_CONFIG as Vertex AI writes it: a chief pool, a worker pool, and fields of its own."""
    job = {"worker_pool_specs": [{"machine_spec": {"machine_type": "n1-standard-8"}, "replica_count": 1},
                                 {"machine_spec": {"machine_type": "n1-standard-8"}, "replica_count": len(workers)}]}
    return json.dumps({"cluster": {"chief": chief, "worker": workers}, "environment": "cloud",
                       "task": {"type": task_type, "index": index, "trial": ""}, "job": json.dumps(job)})


# --- Kubernetes -------------------------------------------------------------------------------------------

def test_kubernetes_reads_the_index_count_and_hosts_the_manifest_sets():
    for index in range(3):
        found = cluster.resolve("auto", environ=k8s(index, 3, "train-{index}.train"))
        assert found.engine == "kubernetes" and found.index == index
        assert found.workers == ("train-0.train:2222", "train-1.train:2222", "train-2.train:2222")
        assert found.tf_config == {"cluster": {"worker": list(found.workers)}, "task": {"type": "worker", "index": index}}
    described = cluster.resolve("kubernetes", environ=k8s(0, 3, "train-{index}.train")).describe()
    assert "the chief of 3 workers" in described and "JOB_COMPLETION_INDEX=0" in described


def test_kubernetes_flags_win_over_the_environment_and_a_port_in_the_pattern_is_kept():
    found = cluster.resolve("kubernetes", workers=2, hosts="w{index}.svc:5000", port=7000,
                            environ=k8s(1, 4, "ignored-{index}"))
    assert found.workers == ("w0.svc:5000", "w1.svc:5000") and found.index == 1
    assert cluster.resolve("kubernetes", workers=2, hosts="w{index}.svc", port=7000, environ=k8s(0)).workers == (
        "w0.svc:7000", "w1.svc:7000")


@pytest.mark.parametrize("fqdn,index,expected", [
    # an Indexed Job's pod (hostname <job>-<index>, subdomain the headless Service)
    ("train-1.train-svc.default.svc.cluster.local", 1, "train-{index}.train-svc.default.svc.cluster.local"),
    # a JobSet's pod (<jobset>-<replicated job>-<job index>-<index>, subdomain the JobSet's name)
    ("run7-workers-0-12.run7.ml.svc.cluster.local", 12, "run7-workers-0-{index}.run7.ml.svc.cluster.local"),
])
def test_kubernetes_without_a_pattern_reads_it_from_the_pods_name(monkeypatch, fqdn, index, expected):
    monkeypatch.setattr(socket, "getfqdn", lambda: fqdn)
    found = cluster.resolve("kubernetes", environ=k8s(index, 16))
    assert found.workers[index] == fqdn + ":2222"
    assert found.workers[0] == expected.replace("{index}", "0") + ":2222"
    assert "hosts from the pod's name" in found.source


@pytest.mark.parametrize("env,flags,flag,words", [
    (k8s(1), {}, "--cluster_workers", "not how many"),
    (k8s(2, 2, "w-{index}"), {}, "--cluster_workers", "not below the 2 workers"),
    (k8s(0, 2, "w-0.svc"), {}, "--cluster_hosts", "no {index}"),
    (k8s(0, 2, "w.svc:2{index}000"), {"port": 1}, None, None),  # fine: the index may be in the port
    (k8s("x", 2, "w-{index}"), {}, "JOB_COMPLETION_INDEX", "not a whole number"),
    (k8s(0, 0, "w-{index}"), {}, cluster.WORKERS_ENV, "at least 1"),
    (k8s(0, 3, "w-{index}"), {"workers": 2}, None, None),  # the flag wins over the environment
])
def test_kubernetes_refuses_an_inconsistent_description_in_one_line(env, flags, flag, words):
    if flag is None:
        cluster.resolve("kubernetes", environ=env, **flags)
        return
    with pytest.raises(BadInput) as e:
        cluster.resolve("kubernetes", environ=env, **flags)
    assert str(e.value).startswith(flag) and words in str(e.value) and "\n" not in str(e.value)


def test_kubernetes_refuses_a_pod_name_that_is_not_an_indexed_pod(monkeypatch):
    monkeypatch.setattr(socket, "getfqdn", lambda: "laptop")
    with pytest.raises(BadInput, match=r"^--cluster_hosts: this pod's name 'laptop'"):
        cluster.resolve("kubernetes", environ=k8s(0, 2))


# --- SLURM ------------------------------------------------------------------------------------------------

def test_slurm_lays_out_cpu_nodes_as_tensorflows_resolver_lays_out_gpu_nodes(monkeypatch):
    """Our layout (nodes without GPUs) against SlurmClusterResolver's (given GPUs), same step."""
    step = srun_step(2, "gpu[01-02],cpu7", "2(x2),1", 5)
    ours = cluster.resolve("auto", environ=step)  # a dict: never TensorFlow's resolver
    assert ours.engine == "slurm" and ours.index == 2 and "laid out as SlurmClusterResolver would" in ours.source
    for name in list(os.environ):
        if name.startswith("SLURM_"):
            monkeypatch.delenv(name)
    for name, value in {**step, "CUDA_VISIBLE_DEVICES": "0,1"}.items():
        monkeypatch.setenv(name, value)
    theirs = cluster.resolve("slurm")
    assert "TensorFlow's SlurmClusterResolver" in theirs.source
    assert theirs.workers == ours.workers == ("cpu7:8888", "gpu01:8888", "gpu01:8889", "gpu02:8888", "gpu02:8889")
    assert theirs.index == ours.index == 2
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"  # gpu01's second task: its second GPU


def test_slurm_port_flag_and_refusals():
    assert cluster.resolve("slurm", port=9000, environ=srun_step(1, "n1", "2", 2)).workers == ("n1:9000", "n1:9001")
    # a batch script without srun: no step, so one machine under auto, refused when asked for
    batch = {k: v for k, v in srun_step(0, "n[1-4]", "1(x4)", 4).items() if not k.startswith("SLURM_STEP")}
    assert cluster.resolve("auto", environ=batch).engine == "none"
    with pytest.raises(BadInput, match=r"^--cluster=slurm: SLURM_STEP_NUM_TASKS, .* run the trainer under srun"):
        cluster.resolve("slurm", environ=batch)
    with pytest.raises(BadInput, match=r"^--cluster=slurm: the step's 3 tasks"):
        cluster.resolve("slurm", environ=srun_step(0, "n[1-2]", "1(x2)", 3))
    with pytest.raises(BadInput, match=r"^--cluster_workers: 4 workers, but slurm describes 2"):
        cluster.resolve("slurm", workers=4, environ=srun_step(0, "n[1-2]", "1(x2)", 2))


# --- TF_CONFIG (user, TFJob, Vertex AI, Ray) ---------------------------------------------------------------

def test_vertex_ai_tf_config_with_its_extra_fields_and_a_chief_pool():
    env = {"TF_CONFIG": vertex_tf_config("worker", 1, ["cmle-workerpool0-a:2222"],
                                         ["cmle-workerpool1-b:2222", "cmle-workerpool1-c:2222"]),
           "CLUSTER_SPEC": "{}", "AIP_MODEL_DIR": "gs://bucket/model", "JOB_COMPLETION_INDEX": "0"}
    found = cluster.resolve("auto", environ=env)  # TF_CONFIG is read first
    assert found.engine == "tf_config" and found.index == 2 and found.size == 3
    assert found.workers[0] == "cmle-workerpool0-a:2222"
    assert found.tf_config == json.loads(env["TF_CONFIG"])  # kept whole for TensorFlow's resolver
    assert "with environment, job" in found.source
    chief = cluster.resolve("tf_config", environ={"TF_CONFIG": vertex_tf_config("chief", 0, ["a:1"], ["b:1"])})
    assert chief.index == 0 and "the chief" in chief.describe()


@pytest.mark.parametrize("tf_config,words", [
    ("{not json", "not valid JSON"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}), "is not one of its cluster's tasks"),
    (json.dumps({"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {"type": "worker", "index": 0}}), "task types ['ps']"),
    (json.dumps({"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}), "an address twice"),
])
def test_tf_config_refusals(tf_config, words):
    with pytest.raises(BadInput) as e:
        cluster.resolve("auto", environ={"TF_CONFIG": tf_config})
    assert str(e.value).startswith("--cluster=tf_config: ") and words in str(e.value)


def test_none_ignores_the_environment_and_install_follows_the_cluster():
    env = {"TF_CONFIG": vertex_tf_config("chief", 0, ["a:1"], ["b:1"])}
    assert cluster.resolve("none", environ=env).size == 1
    cluster.install(cluster.resolve("none", environ=env), env)
    assert "TF_CONFIG" not in env
    cluster.install(cluster.resolve("kubernetes", environ=k8s(1, 2, "w{index}")), env)
    assert json.loads(env["TF_CONFIG"]) == {"cluster": {"worker": ["w0:2222", "w1:2222"]},
                                            "task": {"type": "worker", "index": 1}}
    with pytest.raises(BadInput, match="^--cluster: unknown engine 'k8s'"):
        cluster.resolve("k8s", environ={})


def test_the_trainer_refuses_an_inconsistent_cluster_with_exit_2_before_joining(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, **k8s(3, 2, "localhost:1{index}")}
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "toolkit.train", f"--model_dir={tmp_path / 'run'}", "--noexport"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --cluster_workers: JOB_COMPLETION_INDEX=3 is not below the 2 workers of "
                      "TOOLKIT_CLUSTER_WORKERS"], proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()


# --- real workers under each engine's environment --------------------------------------------------------

# ResNet26 (--depth=26): what is tested is how the workers find each other, and the smaller graph
# traces in about half the time of ResNet50V2's in each of the eight worker processes
FLAGS = ["--recipe=default", "--depth=26", "--image_size=32", "--batch_size=8", "--steps_per_epoch=3", "--epochs=1",
         "--checkpoint_every=100", "--log_every=1", "--noexport", "--xla=off", "--precision=fp32",
         "--learning_rate=0.02", "--warmup_epochs=0", "--deterministic", "--seed=5"]


def _ports_in_a_row(n, start=23450):
    """n free consecutive localhost ports starting at a multiple of 10 (a pattern may say 'localhost:P{index}')."""
    for base in range(start, 60000, 10):
        socks = []
        try:
            for port in range(base, base + n):
                sock = socket.socket()
                sock.bind(("localhost", port))
                socks.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free ports")


def _job(tmp_path, name, data, worker_env, flags=()):
    """Two workers, worker i with the environment worker_env(i); returns the chief's log."""
    procs, logs = [], []
    for i in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, "TMPDIR": str(tmp_path)}
        env.pop("TF_CONFIG", None)
        env.update(worker_env(i))
        logs.append(tmp_path / f"{name}-{i}.log")
        with open(logs[-1], "w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "toolkit.train", f"--data_dir={data}", f"--model_dir={tmp_path / name}", *FLAGS,
                 *flags], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env))
    try:
        codes = [proc.wait(timeout=600) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    texts = [open(path).read() for path in logs]
    assert codes == [0, 0], f"{name}: exit codes {codes}\n" + "\n".join(t[-2500:] for t in texts)
    digests = [re.findall(r"final weights sha256 ([0-9a-f]+)", t) for t in texts]
    assert digests[0] and digests[0] == digests[1], f"{name}: the workers differ: {digests}"
    return texts[0], digests[0][-1]


@pytest.fixture(scope="module")
def tf_config_job(tmp_path_factory):
    """The plain TF_CONFIG job every engine's job must match: (data, its final weights' digest)."""
    from toolkit.data import sources

    tmp_path = tmp_path_factory.mktemp("tf_config_job")
    data = sources.write_demo_dataset(str(tmp_path / "data"), train_count=48, val_count=8, image_size=40, num_shards=4)
    first = _ports_in_a_row(2, start=24450)
    addresses = [f"localhost:{first}", f"localhost:{first + 1}"]

    def tf_config(i):
        return {"TF_CONFIG": json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}})}

    log, digest = _job(tmp_path, "tf_config", data, tf_config)
    assert "cluster tf_config: the chief of 2 workers (auto: TF_CONFIG)" in log
    return data, digest


@pytest.mark.slow
def test_two_workers_under_each_engine_end_with_the_weights_of_the_tf_config_job(tmp_path, tf_config_job):
    data, expected = tf_config_job
    base = _ports_in_a_row(2)
    addresses = [f"localhost:{base}", f"localhost:{base + 1}"]

    def indexed_job(i):  # an Indexed Job's variables; the host pattern resolves to localhost
        return {"JOB_COMPLETION_INDEX": str(i), cluster.WORKERS_ENV: "2",
                cluster.HOSTS_ENV: f"localhost:{base // 10}{{index}}", "HOSTNAME": f"train-{i}"}

    def slurm(i):  # one node (localhost), two tasks: consecutive ports from --cluster_port
        return srun_step(i, "localhost", "2", 2)

    def vertex(i):  # the chief pool and one worker, with Vertex AI's extra fields
        task = ("chief", 0) if i == 0 else ("worker", 0)
        return {"TF_CONFIG": vertex_tf_config(*task, [addresses[0]], [addresses[1]]), "CLUSTER_SPEC": "{}",
                "AIP_MODEL_DIR": str(tmp_path / "aip")}

    lines = {}
    for name, env, flags in (("kubernetes", indexed_job, ()), ("slurm", slurm, (f"--cluster_port={base}", "--cluster=slurm")),
                             ("vertex", vertex, ())):
        log, digest = _job(tmp_path, name, data, env, flags)
        lines[name] = next(line for line in log.splitlines() if " cluster " in line)
        assert digest == expected, f"{name}: {lines[name]}"
    assert "cluster kubernetes: the chief of 2 workers (auto: JOB_COMPLETION_INDEX=0" in lines["kubernetes"]
    assert f"localhost:{base}, localhost:{base + 1}" in lines["kubernetes"]
    assert "cluster slurm: the chief of 2 workers (SLURM_PROCID=0 of SLURM_STEP_NUM_TASKS=2" in lines["slurm"]
    assert "cluster tf_config: the chief of 2 workers (auto: TF_CONFIG, with environment, job)" in lines["vertex"]


def _ray():
    """Ray, an optional extra (pip install .[ray]); CI installs it, so there its absence is a failure."""
    if os.environ.get("CI"):
        import ray
        return ray
    return pytest.importorskip("ray")


def _child_of_worker(model_dir, index):
    """The pid of the toolkit.train process whose TF_CONFIG makes it worker `index` of the run in model_dir."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0")
            environ = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "toolkit.train" in cmdline and f"--model_dir={model_dir}" in cmdline:
            tf_config = next((e[len("TF_CONFIG="):] for e in environ if e.startswith("TF_CONFIG=")), "{}")
            if json.loads(tf_config).get("task", {}).get("index") == index:
                return int(pid)
    return None


@pytest.mark.slow
def test_ray_runs_the_trainer_restarts_it_after_a_lost_worker_and_ends_with_the_tf_config_jobs_weights(
        tmp_path, tf_config_job):
    """python -m toolkit.ray on a Ray of its own (2 workers on this machine). Worker 1's trainer is
    killed after the step-1 checkpoint: Ray restarts both, they resume there, and the weights are
    those of the TF_CONFIG job that ran straight through."""
    import signal
    import time

    _ray()
    data, expected = tf_config_job
    model_dir = tmp_path / "run"
    # (Ray keeps its sockets in its temporary folder: a pytest tmp_path there would be too long a path)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, "RAY_DEDUP_LOGS": "0"}
    env.pop("TF_CONFIG", None)
    log_path = tmp_path / "ray.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "toolkit.ray", "--workers=2", "--max_failures=1", "--",
                                 f"--data_dir={data}", f"--model_dir={model_dir}", *FLAGS, "--checkpoint_every=1"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    killed = None
    try:
        deadline = time.time() + 600
        while killed is None and time.time() < deadline and proc.poll() is None:
            if "ckpt-1" in (open(model_dir / "checkpoints" / "checkpoint").read()
                            if (model_dir / "checkpoints" / "checkpoint").exists() else ""):
                killed = _child_of_worker(model_dir, 1)
                if killed:
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = open(log_path).read()
    assert killed, "worker 1's trainer was never found to kill:\n" + log[-3000:]
    assert code == 0, log[-4000:]
    assert "toolkit.train on Ray worker 1 ended with killed by signal 9" in log, log[-4000:]
    resumed = re.findall(r"resum\w* .*at step (\d+)", log)
    assert resumed and all(int(step) >= 1 for step in resumed), log[-4000:]
    digests = set(re.findall(r"final weights sha256 ([0-9a-f]+)", log))
    assert digests == {expected}, f"Ray's workers ended with {digests}, the TF_CONFIG job with {expected}"
    pointer = json.load(open(next(model_dir.glob("ray/toolkit/checkpoint_*/toolkit_run.json"))))
    assert pointer["model_dir"] == str(model_dir) and pointer["checkpoint"].endswith("ckpt-3")
