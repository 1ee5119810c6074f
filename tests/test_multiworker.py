"""Multi-worker training: real worker processes on localhost ports, TF_CONFIG, MultiWorkerMirroredStrategy.

Starting a worker costs tens of seconds on 2 CPU cores (TensorFlow, ResNet50V2, tracing), so the
tests share one job, run as a user would run it:

1. scripts/launch_workers.sh starts 2 workers (ResNet50V2, 32 px, global batch 8, 4 steps, a
   checkpoint every 2 steps); as soon as the chief has written the step-2 checkpoint, worker 1
   gets SIGKILL. The launcher must notice, stop the chief and fail with a message naming worker 1.
2. The same command again must resume BOTH workers at the last checkpoint's step and finish.
3. Meanwhile, one process on one device (tests/helpers/multiworker_reference.py) trains on the
   same global batches, split the same way (BatchNorm statistics per worker's half): the workers
   must end with identical weights (same digest) that equal the reference's within 1e-5. The
   multi-worker side went through a kill and a resume, so this also checks that a resumed
   multi-worker run continues exactly.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "scripts", "launch_workers.sh")
REFERENCE = os.path.join(ROOT, "tests", "helpers", "multiworker_reference.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
ENV.pop("TF_CONFIG", None)
# the shared job runs with oneDNN forced on (an uneven evaluation share crashed there), the
# chief-death job with it forced off: multi-worker training is proven on both kinds of kernels
ONEDNN_ON, ONEDNN_OFF = {**ENV, "TF_ENABLE_ONEDNN_OPTS": "1"}, {**ENV, "TF_ENABLE_ONEDNN_OPTS": "0"}
STEPS = 4
FLAGS = ["--recipe=default", "--image_size=32", "--batch_size=8", f"--steps_per_epoch={STEPS}", "--epochs=1", "--checkpoint_every=2",
         "--log_every=1", "--noexport", "--xla=off", "--precision=fp32", "--learning_rate=0.02", "--warmup_epochs=0",
         "--deterministic", "--seed=3"]
STEP_LINE = re.compile(r"step (\d+)/\d+ loss ([0-9.]+)")
TIMINGS = {}


def _wait_for(predicate, timeout, proc, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the job ended (exit {proc.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _read(path):
    return open(path, errors="replace").read() if os.path.exists(path) else ""


def _latest_checkpoint_step(model_dir):
    index = _read(os.path.join(model_dir, "checkpoints", "checkpoint"))
    m = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', index, re.M)
    return int(m.group(1)) if m else None


def _launch(base, name, model_dir, common):
    logs = base / f"logs-{name}"
    out, err = open(base / f"launcher-{name}.out", "w"), open(base / f"launcher-{name}.err", "w")
    env = {**ONEDNN_ON, "PYTHON": sys.executable, "LOG_DIR": str(logs), "TMPDIR": str(base / "tmp"), "GRACE": "3"}
    proc = subprocess.Popen([LAUNCH, "2", *common, f"--model_dir={model_dir}"], stdout=out, stderr=err, env=env,
                            cwd=ROOT, start_new_session=True)
    return proc, logs


def _steps_and_losses(log_text):
    return {int(s): float(loss) for s, loss in STEP_LINE.findall(log_text)}


def _digest(log_text):
    found = re.findall(r"final weights sha256 ([0-9a-f]+)", log_text)
    return found[-1] if found else None


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from toolkit.data import sources

    base = tmp_path_factory.mktemp("multiworker")
    (base / "tmp").mkdir()
    data = sources.write_demo_dataset(str(base / "data"), train_count=64, val_count=25, image_size=40, num_shards=4)
    common = [f"--data_dir={data}", *FLAGS]
    model_dir = base / "run"
    started = time.time()

    # the single-process reference runs alongside (it shares nothing with the job)
    reference_log = open(base / "reference.log", "w")
    reference = subprocess.Popen([sys.executable, REFERENCE, str(base / "reference.weights.h5"), *common],
                                 stdout=reference_log, stderr=subprocess.STDOUT, env=ONEDNN_ON, cwd=ROOT)
    try:
        # 1. start, SIGKILL worker 1 once the chief has checkpointed step 2
        first, first_logs = _launch(base, "first", model_dir, common)
        out = base / "launcher-first.out"
        _wait_for(lambda: "worker 1 pid" in _read(out), 120, first, "the launcher started the workers")
        worker1_pid = int(re.search(r"worker 1 pid (\d+)", _read(out)).group(1))
        chief_pid = int(re.search(r"worker 0 \(chief\) pid (\d+)", _read(out)).group(1))
        _wait_for(lambda: _latest_checkpoint_step(model_dir) == 2, 600, first, "the step-2 checkpoint")
        scratch_during_run = sorted(glob.glob(str(base / "tmp" / "toolkit-worker-ckpt-*")))
        os.kill(worker1_pid, signal.SIGKILL)
        first.wait(timeout=120)
        killed = {
            "returncode": first.returncode,
            "stderr": _read(base / "launcher-first.err"),
            "chief_alive": _alive(chief_pid),
            "checkpoint_step": _latest_checkpoint_step(model_dir),
            "summary_written": (model_dir / "summary.json").exists(),
            "scratch_during_run": scratch_during_run,
            "chief_log": _read(first_logs / "worker-0.log"),
        }
        TIMINGS["until_killed"] = time.time() - started

        # 2. the same command again
        t = time.time()
        second, second_logs = _launch(base, "second", model_dir, common)
        second.wait(timeout=900)
        TIMINGS["restarted_job"] = time.time() - t
        resumed = {
            "returncode": second.returncode,
            "stderr": _read(base / "launcher-second.err"),
            "logs": [_read(second_logs / f"worker-{i}.log") for i in range(2)],
            "scratch_after": sorted(glob.glob(str(base / "tmp" / "toolkit-worker-*"))),
        }

        reference.wait(timeout=900)
        TIMINGS["total"] = time.time() - started
        print(f"\nmulti-worker job timings (s): {', '.join(f'{k} {v:.0f}' for k, v in TIMINGS.items())}")
    finally:
        for proc in (reference,):
            if proc.poll() is None:
                proc.kill()
        reference_log.close()
    return {"base": base, "model_dir": model_dir, "killed": killed, "resumed": resumed,
            "reference_returncode": reference.returncode, "reference_log": _read(base / "reference.log")}


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by the launcher's shell) counts as stopped
    return _read(f"/proc/{pid}/stat").split(") ")[-1][:1] not in ("Z", "")


@pytest.mark.slow
def test_a_killed_worker_stops_the_whole_job_with_a_clear_message(job):
    k = job["killed"]
    assert k["returncode"] != 0
    assert "FAILED: worker 1" in k["stderr"] and "killed by signal KILL" in k["stderr"], k["stderr"]
    assert "run the same command again" in k["stderr"]
    assert not k["chief_alive"], "the launcher left the chief running"
    assert not k["summary_written"]
    assert k["checkpoint_step"] == 2  # killed mid-run: the next checkpoint (step 4) is the end
    # the non-chief worker checkpoints into a scratch directory of its own, not into model_dir
    assert len(k["scratch_during_run"]) == 1


@pytest.mark.slow
def test_the_same_command_resumes_every_worker_at_the_last_checkpoint_and_finishes(job):
    r, k = job["resumed"], job["killed"]
    assert r["returncode"] == 0, r["stderr"][-3000:] + r["logs"][0][-3000:]
    step = k["checkpoint_step"]
    for i, log in enumerate(r["logs"]):
        assert re.search(rf"resuming from \S+ckpt-{step} at step {step}\b", log), f"worker {i} did not resume at step {step}"
        assert sorted(_steps_and_losses(log)) == list(range(step + 1, STEPS + 1)), f"worker {i} trained other steps"
    summary = json.loads((job["model_dir"] / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["workers"] == 2 and summary["replicas"] == 2
    assert summary["distribution"] == "multi_worker"
    # the restarted worker removed the scratch directory its SIGKILLed predecessor left, and its own at exit
    assert r["scratch_after"] == []


@pytest.mark.slow
def test_workers_end_identical_and_equal_to_one_process_on_the_same_global_batches(job):
    r = job["resumed"]
    assert job["reference_returncode"] == 0, job["reference_log"][-3000:]
    digests = [_digest(log) for log in r["logs"]]
    assert digests[0] and digests[0] == digests[1], f"the workers' final weights differ: {digests}"

    # same global batch at every step: the same losses (first steps before the kill, the rest after)
    result = json.loads([line for line in job["reference_log"].splitlines() if line.startswith("{")][-1])
    reference_losses = {i + 1: loss for i, loss in enumerate(result["losses"])}
    worker_losses = {**_steps_and_losses(job["killed"]["chief_log"]), **_steps_and_losses(r["logs"][0])}
    assert sorted(worker_losses) == sorted(reference_losses) == list(range(1, STEPS + 1))
    for s in reference_losses:
        assert worker_losses[s] == pytest.approx(reference_losses[s], abs=1e-4), f"step {s}"

    def weights(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if hasattr(obj, "shape") else None)
        return out

    workers = weights(job["model_dir"] / "model.weights.h5")
    single = weights(job["base"] / "reference.weights.h5")
    assert workers.keys() == single.keys() and len(workers) > 250  # 272 arrays in ResNet50V2
    # within 1e-5, relative for large values (BatchNorm moving variances reach the thousands here)
    off = {n: float(np.max(np.abs(workers[n] - single[n]) / (1 + np.abs(single[n])))) for n in workers}
    worst = max(off, key=off.get)
    assert off[worst] < 1e-5, f"largest difference from the single-process reference: {off[worst]} in {worst}"
    moved = max(float(np.max(np.abs(workers[n] - single[n]))) for n in workers)
    print(f"\nworkers vs single-process reference: largest difference {moved:.2e} (relative {off[worst]:.2e})")


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


@pytest.mark.slow
def test_when_the_chief_dies_the_other_worker_exits_within_seconds_and_cleans_up(tmp_path):
    from toolkit.data import sources

    data = sources.write_demo_dataset(str(tmp_path / "data"), train_count=64, val_count=8, image_size=40, num_shards=4)
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    (tmp_path / "tmp").mkdir()
    flags = [f"--data_dir={data}", f"--model_dir={tmp_path / 'run'}", *FLAGS, "--steps_per_epoch=200"]
    procs, logs = [], []
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        logs.append(open(tmp_path / f"worker-{i}.log", "w"))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "toolkit.train", *flags], stdout=logs[i], stderr=subprocess.STDOUT, cwd=ROOT,
            env={**ONEDNN_OFF, "TF_CONFIG": tf_config, "TMPDIR": str(tmp_path / "tmp")}))
    try:
        log1 = tmp_path / "worker-1.log"
        _wait_for(lambda: re.search(r"step 2/", _read(log1)), 600, procs[1], "worker 1 trained two steps")
        scratch = glob.glob(str(tmp_path / "tmp" / "toolkit-worker-*"))
        os.kill(procs[0].pid, signal.SIGKILL)
        killed_at = time.time()
        procs[1].wait(timeout=120)
        took = time.time() - killed_at
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for f in logs:
            f.close()
    text = _read(log1)
    assert procs[1].returncode == 5, text[-3000:]
    assert took < 10, f"worker 1 took {took:.1f} s to notice"
    # TensorFlow's own error, or the toolkit's watch of the chief's port, whichever comes first
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: a worker of the multi-worker job was lost ("), text[-3000:]
    assert "run the same command on each again" in lines[0]
    assert len(scratch) == 1 and not glob.glob(str(tmp_path / "tmp" / "toolkit-worker-*"))
    assert "oneDNN off" in text  # the start line names the kernels it ran on


def test_the_chief_watch_reports_a_closed_port_within_seconds_and_not_before():
    import socket
    import threading

    from toolkit.train import distribute

    server = socket.socket()
    server.bind(("localhost", 0))
    server.listen()
    port = server.getsockname()[1]
    lost, reasons = threading.Event(), []
    watch = distribute.ChiefWatch(("localhost", port), lambda r: (reasons.append(r), lost.set()), interval=0.2)
    try:
        assert not lost.wait(1.5), reasons  # the chief is there: no alarm
        server.close()
        closed = time.time()
        assert lost.wait(5), "the watch did not notice the closed port"
        assert 0.4 < time.time() - closed < 2.5  # three misses, 0.2 s apart
        assert reasons == [f"the chief at localhost:{port} is gone (Connection refused)"]
    finally:
        watch.stop()


@pytest.mark.slow
def test_a_worker_whose_peers_never_start_gives_up_after_cluster_timeout(tmp_path):
    import json
    import socket

    socks = [socket.socket() for _ in range(2)]
    for sock in socks:
        sock.bind(("localhost", 0))
    workers = [f"localhost:{sock.getsockname()[1]}" for sock in socks]
    for sock in socks:
        sock.close()
    # worker 0 alone: it hosts TensorFlow's coordination service, which waits for worker 1 forever
    tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}})
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit.train", f"--model_dir={tmp_path / 'run'}", "--cluster_timeout=5", *FLAGS],
        capture_output=True, text=True, timeout=300, env={**ENV, "TF_CONFIG": tf_config}, cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "waiting for every worker to join (at most 5 s, --cluster_timeout)" in proc.stdout
    assert "--cluster_timeout" in proc.stderr and "Timeout (0:00:05)!" in proc.stderr, proc.stderr[-2000:]
    assert time.time() - start < 240
    assert not (tmp_path / "run").exists()  # gave up before writing anything


def test_launcher_gives_each_worker_its_task_and_stops_all_when_one_fails(tmp_path):
    """scripts/launch_workers.sh alone, with a stand-in for the trainer (no TensorFlow: seconds)."""
    fake = tmp_path / "python"
    fake.write_text(f"""#!/bin/bash
# a stand-in interpreter: `-m toolkit.train` is a fake worker, anything else the real python
if [[ $1 != -m ]]; then exec {sys.executable} "$@"; fi
echo "TF_CONFIG=$TF_CONFIG"
exec {sys.executable} -c '
import json, os, signal, sys, time
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
if index == 1:
    time.sleep(1)
    sys.exit(3)
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a worker blocked inside TensorFlow may
time.sleep(120)
'
""")
    fake.chmod(0o755)
    start = time.time()
    proc = subprocess.run([LAUNCH, "3", "--model_dir=unused"], capture_output=True, text=True, timeout=120,
                          env={**ENV, "PYTHON": str(fake), "LOG_DIR": str(tmp_path / "logs"), "GRACE": "1"})
    assert proc.returncode == 3, proc.stderr  # the failed worker's exit code
    assert "FAILED: worker 1" in proc.stderr and "exited with code 3" in proc.stderr
    assert time.time() - start < 60
    configs = [json.loads(_read(tmp_path / "logs" / f"worker-{i}.log").split("TF_CONFIG=", 1)[1].splitlines()[0])
               for i in range(3)]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    cluster = configs[0]["cluster"]["worker"]
    assert all(c["cluster"]["worker"] == cluster for c in configs) and len(set(cluster)) == 3
    pids = [int(p) for p in re.findall(r"pid (\d+)", proc.stdout)]
    assert len(pids) == 3 and not any(_alive(p) for p in pids), "a worker outlived the launcher"


def test_launcher_names_the_killed_worker_even_when_the_one_that_lost_it_exits_first(tmp_path):
    """Worker 0 ends first with the trainer's lost-a-peer code (5), worker 1 is SIGKILLed a moment
    later (the order a loaded machine produced): the launcher names worker 1 and the signal."""
    fake = tmp_path / "python"
    fake.write_text(f"""#!/bin/bash
if [[ $1 != -m ]]; then exec {sys.executable} "$@"; fi
exec {sys.executable} -c '
import json, os, signal, sys, time
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
if index == 0:
    time.sleep(1)
    sys.exit(5)
time.sleep(1.5)
os.kill(os.getpid(), signal.SIGKILL)
'
""")
    fake.chmod(0o755)
    proc = subprocess.run([LAUNCH, "2", "--model_dir=unused"], capture_output=True, text=True, timeout=120,
                          env={**ENV, "PYTHON": str(fake), "LOG_DIR": str(tmp_path / "logs"), "GRACE": "1"})
    assert proc.returncode == 1, proc.stderr
    assert "FAILED: worker 1" in proc.stderr and "killed by signal KILL" in proc.stderr, proc.stderr
    assert "FAILED: worker 0" not in proc.stderr


def _two_workers(tmp_path, name, flags, env):
    """Start the two workers of a localhost job; returns (processes, log paths)."""
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    procs, paths = [], []
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        paths.append(tmp_path / f"{name}-worker-{i}.log")
        with open(paths[-1], "w") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "toolkit.train", *flags], stdout=log, stderr=subprocess.STDOUT,
                                          cwd=ROOT, env={**env, "TF_CONFIG": tf_config, "TMPDIR": str(tmp_path / "tmp")}))
    return procs, paths


def _finish(procs, timeout=600):
    try:
        for proc in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return [proc.returncode for proc in procs]


@pytest.mark.slow
def test_sigterm_to_one_worker_saves_the_same_step_on_both_and_the_job_resumes_bit_identical(tmp_path):
    """A scheduler preempts worker 1 only: both workers save the same step together and exit 8; the
    same command on both resumes there and ends with the weights of a job never stopped."""
    from toolkit.data import sources

    data = sources.write_demo_dataset(str(tmp_path / "data"), train_count=96, val_count=8, image_size=40, num_shards=4)
    (tmp_path / "tmp").mkdir()
    common = [f"--data_dir={data}", *FLAGS, "--steps_per_epoch=8", "--checkpoint_every=100", "--depth=26"]
    straight, straight_logs = _two_workers(tmp_path, "straight", [*common, f"--model_dir={tmp_path / 'straight'}"], ONEDNN_ON)
    assert _finish(straight) == [0, 0], _read(straight_logs[0])[-3000:]
    expected = _digest(_read(straight_logs[0]))

    flags = [*common, f"--model_dir={tmp_path / 'stopped'}"]
    procs, logs = _two_workers(tmp_path, "stopped", flags, ONEDNN_ON)
    _wait_for(lambda: re.search(r"step 3/", _read(logs[1])), 600, procs[1], "worker 1 trained three steps")
    procs[1].send_signal(signal.SIGTERM)
    assert _finish(procs, timeout=120) == [8, 8], _read(logs[0])[-3000:] + _read(logs[1])[-3000:]
    saved = []
    for path in logs:
        lines = [line for line in _read(path).splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and lines[0].startswith("error: SIGTERM: saved checkpoint ckpt-"), _read(path)[-3000:]
        saved.append(int(lines[0].split("ckpt-")[1].split()[0]))
    assert saved[0] == saved[1] and 3 <= saved[0] < 8 and _latest_checkpoint_step(tmp_path / "stopped") == saved[0]

    again, again_logs = _two_workers(tmp_path, "resumed", flags, ONEDNN_ON)
    assert _finish(again) == [0, 0], _read(again_logs[0])[-3000:]
    assert f"at step {saved[0]}" in _read(again_logs[0])
    assert _digest(_read(again_logs[0])) == _digest(_read(again_logs[1])) == expected
