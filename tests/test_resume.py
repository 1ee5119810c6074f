"""A run killed with SIGKILL and resumed ends with the same weights as one that never stopped.

It runs with the precision and XLA settings a user gets by default (`--precision auto`, XLA asked
for), which --deterministic must cope with, and with oneDNN forced on (the default of AVX-512 CPUs).
"""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_training import ENV, ROOT, TINY, read_weights

# the user's defaults: no --xla, no --precision
FLAGS = [f for f in TINY if not f.startswith(("--xla", "--precision"))]
ONEDNN_ON = {**ENV, "TF_ENABLE_ONEDNN_OPTS": "1"}

pytestmark = pytest.mark.slow  # end-to-end: subprocesses that train


ONEDNN_OFF = {**ENV, "TF_ENABLE_ONEDNN_OPTS": "0"}


def train(model_dir, *flags, env=ONEDNN_ON):
    return subprocess.run([sys.executable, "-m", "toolkit.train", f"--model_dir={model_dir}", *FLAGS, *flags],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path, demo_data):
    flags = [f"--data_dir={demo_data}", "--epochs=2", "--steps_per_epoch=6", "--checkpoint_every=2", "--deterministic",
             "--seed=7"]
    straight = train(tmp_path / "straight", *flags)
    assert straight.returncode == 0, straight.stderr[-3000:]
    # XLA refuses op determinism: it is turned off with the reason, not a traceback
    assert "XLA off (--deterministic needs op determinism" in straight.stdout and "xla=off" in straight.stdout

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit.train", f"--model_dir={killed_dir}", *FLAGS, *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ONEDNN_ON, cwd=ROOT,
    )
    # kill it hard once it has written the step-8 checkpoint (mid second epoch), before it ends
    deadline = time.time() + 400
    index = killed_dir / "checkpoints" / "checkpoint"
    while time.time() < deadline and proc.poll() is None:
        if index.exists() and "ckpt-8" in index.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "summary.json").exists()

    resumed = train(killed_dir, *flags)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 8" in resumed.stdout
    a = read_weights(tmp_path / "straight" / "model.weights.h5")
    b = read_weights(killed_dir / "model.weights.h5")
    assert a.keys() == b.keys() and len(a) > 100
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


STOP_FLAGS = ["--epochs=2", "--steps_per_epoch=6", "--checkpoint_every=100", "--deterministic", "--seed=7", "--log_every=1"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, demo_data):
    """The final weights of a run never stopped, per oneDNN setting (computed once each)."""
    done = {}

    def weights(env):
        key = env["TF_ENABLE_ONEDNN_OPTS"]
        if key not in done:
            model_dir = tmp_path_factory.mktemp(f"straight-onednn{key}")
            proc = train(model_dir, f"--data_dir={demo_data}", *STOP_FLAGS, env=env)
            assert proc.returncode == 0, proc.stderr[-3000:]
            done[key] = read_weights(model_dir / "model.weights.h5")
        return done[key]

    return weights


def _train_steps_logged(model_dir):
    import json

    path = model_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if '"train"' in line]
    return max(steps, default=0)


# each signal on one side of oneDNN: the save-and-resume path is proven with both kinds of kernels
@pytest.mark.parametrize("sig, env", [(signal.SIGTERM, ONEDNN_ON), (signal.SIGINT, ONEDNN_OFF)],
                         ids=["SIGTERM-onednn-on", "SIGINT-onednn-off"])
def test_a_signal_saves_the_step_exits_8_and_the_same_command_ends_bit_identical(tmp_path, demo_data, uninterrupted, sig, env):
    """Preemption (SIGTERM) or Ctrl-C (SIGINT) mid-epoch: the step finishes, its checkpoint is written,
    one line says so, exit code 8; the same command resumes there and ends as if never stopped."""
    from toolkit.common.errors import ExitCode

    model_dir = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "toolkit.train", f"--model_dir={model_dir}", *FLAGS, f"--data_dir={demo_data}",
                             *STOP_FLAGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and _train_steps_logged(model_dir) < 2:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == ExitCode.STOPPED, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {signal.Signals(sig).name}: saved checkpoint ckpt-"), err[-3000:]
    saved = int(lines[0].split("ckpt-")[1].split()[0])
    assert 2 <= saved < 12 and saved != 6 and "Traceback" not in err  # mid-epoch, not an epoch-end checkpoint
    assert (model_dir / "checkpoints" / f"ckpt-{saved}.index").exists()

    resumed = train(model_dir, f"--data_dir={demo_data}", *STOP_FLAGS, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {saved}" in resumed.stdout
    a, b = uninterrupted(env), read_weights(model_dir / "model.weights.h5")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
