"""Faults of the disk, with a real full disk: a small tmpfs mounted for the test, filled with a
ballast file. A run that fills it stops in one line (exit code 7), leaves no half-written checkpoint
or export, keeps what was there, and the same command resumes once the ballast is gone. Mounting
needs root (as CI has); elsewhere these tests skip, and with CI set they fail instead."""

import json
import os
import subprocess
import sys
import uuid

import pytest

from toolkit.common.errors import ExitCode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
CI = os.environ.get("CI", "").lower() not in ("", "0", "false")
# ResNet26V2 (14.0M parameters): a checkpoint with SGD's momentum is about 115 MB, an export about 120 MB
TRAIN = ["--recipe=default", "--depth=26", "--image_size=32", "--batch_size=8", "--steps_per_epoch=2", "--epochs=1",
         "--log_every=1", "--xla=off", "--precision=fp32", "--optimizer=sgd"]


@pytest.fixture
def small_disk(tmp_path):
    """A 200 MB tmpfs at tmp_path/disk, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", f"toolkit-test-{uuid.uuid4().hex[:8]}", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the full-disk tests need root"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk, leave_mb: int) -> str:
    """A ballast file that leaves about `leave_mb` MB free on `disk`."""
    stat = os.statvfs(disk)
    ballast = os.path.join(disk, "ballast")
    with open(ballast, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(stat.f_bavail * stat.f_frsize - leave_mb * 2**20, 0))
    return ballast


def leftovers(directory) -> list:
    """Half-written files: TensorFlow's *_temp checkpoint folders, the toolkit's .tmp- names."""
    return [os.path.join(d, n) for d, dirs, files in os.walk(directory) for n in dirs + files if "_temp" in n or ".tmp-" in n]


def train(model_dir, demo_data, *flags):
    return subprocess.run([sys.executable, "-m", "toolkit.train", f"--data_dir={demo_data}", f"--model_dir={model_dir}", *TRAIN,
                           *flags], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_a_full_disk_stops_training_in_one_line_and_the_same_command_resumes(small_disk, demo_data):
    model_dir = small_disk / "run"
    ballast = fill(small_disk, leave_mb=40)  # the run's small files fit, a checkpoint does not
    first = train(model_dir, demo_data, "--noexport")
    assert first.returncode == ExitCode.DISK_FULL, first.stderr[-3000:]
    errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the disk while writing checkpoint ckpt-2" in errors[0], first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    assert leftovers(model_dir) == []  # the half-written checkpoint is gone
    assert json.loads((model_dir / "run.json").read_text())["depth"] == 26  # what was written before is intact
    records = (model_dir / "metrics.jsonl").read_text().splitlines()
    assert records and all(json.loads(line) for line in records)  # whole lines only
    os.remove(ballast)
    again = train(model_dir, demo_data, "--noexport")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((model_dir / "summary.json").read_text())["steps"] == 2


@pytest.mark.slow
def test_a_full_disk_stops_the_export_in_one_line_and_leaves_nothing_half_written(small_disk, demo_data, tmp_path):
    model_dir = tmp_path / "run"
    trained = train(model_dir, demo_data, "--noexport")
    assert trained.returncode == 0, trained.stderr[-3000:]
    fill(small_disk, leave_mb=30)
    before = sorted(os.listdir(small_disk))
    proc = subprocess.run([sys.executable, "-m", "toolkit.export", f"--model_dir={model_dir}", f"--export_dir={small_disk / 'exp'}"],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert proc.returncode == ExitCode.DISK_FULL, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the disk" in errors[0] and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sorted(os.listdir(small_disk)) == before  # no export, no temporary folder


def test_a_metrics_line_that_does_not_fit_leaves_no_half_line(small_disk):
    from toolkit.train.progress import MetricsLog

    metrics = MetricsLog(str(small_disk))
    metrics.write({"step": 1, "loss": 0.5}, "train")
    fill(small_disk, leave_mb=0)
    with pytest.raises(OSError):
        metrics.write({"step": 2, "loss": 0.25, "note": "x" * 100_000}, "train")
    lines = (small_disk / "metrics.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 1 and lines[0].endswith("\n") and json.loads(lines[0])["step"] == 1
    metrics.close()


@pytest.mark.parametrize("writer", ["write_text", "write_with", "directory"])
def test_every_atomic_writer_names_the_file_on_a_full_disk_and_keeps_the_old_one(small_disk, writer):
    """Summaries, reports, run.json, prediction files (write_text), weights, ONNX, shards
    (write_with) and exports (directory) all go through toolkit.common.atomic."""
    from toolkit.common import atomic
    from toolkit.common.errors import DiskFull

    target = small_disk / "summary.json"
    target.write_text("the earlier one\n")
    (small_disk / "export").mkdir()
    (small_disk / "export" / "model.onnx").write_text("the earlier export\n")
    fill(small_disk, leave_mb=0)
    big = "x" * (4 * 2**20)
    with pytest.raises(DiskFull) as info:
        if writer == "write_text":
            atomic.write_text(str(target), big)
        elif writer == "write_with":
            atomic.write_with(str(target), lambda tmp: open(tmp, "w").write(big))
        else:
            with atomic.directory(str(small_disk / "export")) as tmp:
                open(os.path.join(tmp, "model.onnx"), "w").write(big)
    where = small_disk / ("export" if writer == "directory" else "summary.json")
    assert str(info.value).startswith(f"no space left on the disk while writing {where}") and "\n" not in str(info.value)
    assert target.read_text() == "the earlier one\n" and (small_disk / "export" / "model.onnx").read_text() == "the earlier export\n"
    assert leftovers(small_disk) == []
