"""python -m toolkit.train end to end: summary, resume, kill-and-resume equality, bad flags, NaN stop."""

import json
import os
import re
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
# small and quick: 32 px demo images, 8 per global batch
TINY = ["--recipe=default", "--image_size=32", "--batch_size=8", "--steps_per_epoch=4", "--log_every=2", "--noexport", "--xla=off",
        "--precision=fp32", "--learning_rate=0.01"]


def train(model_dir, *flags, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "toolkit.train", f"--model_dir={model_dir}", *TINY, *flags],
        capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT,
    )


def read_weights(path):
    out = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.append((name, obj[()])) if hasattr(obj, "shape") else None)
    return dict(out)


@pytest.mark.slow
def test_run_writes_summary_metrics_and_resumes_at_the_right_step(tmp_path, demo_data):
    model_dir = tmp_path / "run"
    started = time.time()
    first = train(model_dir, f"--data_dir={demo_data}", "--epochs=1")
    wall = time.time() - started
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((model_dir / "summary.json").read_text())
    for key in ("val_top1", "val_top5", "val_loss", "epochs", "steps", "train_images_per_sec", "precision", "xla",
                "replicas", "distribution", "num_classes", "image_size", "params"):
        assert key in summary, key
    assert summary["steps"] == 4 and summary["epochs"] == 1
    assert summary["num_classes"] == 4 and summary["image_size"] == 32 and summary["replicas"] == 1
    assert summary["precision"] == "fp32" and summary["xla"] is False
    assert summary["params"] == 23_572_996  # ResNet50V2 with a 4-class head
    recorded = {"name": "default", "why": "--recipe"}
    assert summary["recipe"] == recorded == json.loads((model_dir / "run.json").read_text())["recipe"]
    assert "recipe default (--recipe): the flags you did not give come from it" in first.stdout
    assert 0 <= summary["val_top1"] <= summary["val_top5"] <= 1 and np.isfinite(summary["val_loss"])
    assert summary["train_images_per_sec"] > 0
    # training time: within the process's wall time, and at least the time between the first and last metrics lines
    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["time"] - records[0]["time"] <= summary["train_seconds"] + 0.1 < wall + 0.1
    # TensorFlow's own INFO lines (checkpoint writes, ...) stay out of the console unless --verbosity is given
    assert not re.search(r"^I\d{4} .*\.py:\d+\]", first.stdout + first.stderr, re.M), first.stderr[-2000:]
    run_record = json.loads((model_dir / "run.json").read_text())
    for record in (summary, run_record):  # every figure names the machine it came from
        m = record["machine"]
        assert m["cpu"] and m["onednn"] in ("on", "off") and m["tensorflow"] and m["keras"] and m["onnxruntime"]
        assert isinstance(m["cpu_features"], list) and isinstance(m["gpus"], list)
    start_line = next(line for line in first.stdout.splitlines() if "starting: ResNet50V2" in line)
    assert start_line.endswith("oneDNN " + summary["machine"]["onednn"])  # and the start line says it
    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4]
    assert any(r["kind"] == "val" and r["val_images"] == 24 for r in records)
    assert os.listdir(model_dir / "tensorboard" / "train")
    for name in ("curves.png", "predictions.png", "confusion_matrix.png", "summary.md", "model.weights.h5"):
        assert (model_dir / name).stat().st_size > 1000, name
    confusion = json.loads((model_dir / "confusion_matrix.json").read_text())
    assert sum(map(sum, confusion["matrix"])) == 24
    assert np.trace(confusion["matrix"]) / 24 == pytest.approx(summary["val_top1"])  # same model, same images

    # the same command again: the run is finished; it says so and leaves its record alone
    summary_bytes = (model_dir / "summary.json").read_bytes()
    again = train(model_dir, f"--data_dir={demo_data}", "--epochs=1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "holds a finished run (4 of 4 steps)" in again.stdout
    assert (model_dir / "summary.json").read_bytes() == summary_bytes

    # the same command with more epochs continues from step 4, it does not start over
    # (evaluating every 3rd epoch: epoch 2 is skipped, epoch 3 is the last and always evaluated)
    second = train(model_dir, f"--data_dir={demo_data}", "--epochs=3", "--eval_every=3")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout and "at step 4" in second.stdout
    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 6, 8, 10, 12]
    resumed_summary = json.loads((model_dir / "summary.json").read_text())
    assert resumed_summary["steps"] == 12
    assert [h["epoch"] for h in resumed_summary["history"]] == [1, 3]  # the part before the resume kept
    # checkpoints come with the evaluations (and every --checkpoint_every steps): none at epoch 2's end
    saved = sorted(int(n.split("-")[1].split(".")[0]) for n in os.listdir(model_dir / "checkpoints") if n.endswith(".index"))
    assert saved == [4, 12]

    # --fresh starts anew and keeps the old run aside
    third = train(model_dir, f"--data_dir={demo_data}", "--epochs=1", "--fresh")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "resuming" not in third.stdout
    assert json.loads((model_dir / "summary.json").read_text())["steps"] == 4
    assert any(name.startswith("previous-") for name in os.listdir(model_dir))


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, named",
    [
        (["--precision=fp64"], "--precision"),  # rejected by the config, before TensorFlow starts work
        (["--batch_size=9", "--cpu_replicas=2"], "--batch_size"),  # rejected once the replicas are known
        (["--opset=99"], "--opset"),  # an export flag: refused before training, not after it
    ],
)
def test_bad_flags_stop_the_cli_with_one_line_naming_the_flag(tmp_path, flags, named):
    model_dir = tmp_path / "bad"
    proc = train(model_dir, *flags, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and named in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (model_dir / "checkpoints").exists()  # stopped before any work


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--precision=fp64"], "--precision"),
        (["--learning_rate=-0.1"], "--learning_rate"),
        (["--batch_size=0"], "--batch_size"),
        (["--data_dir=/nonexistent/shards"], "--data_dir"),
        (["--distribution=everywhere"], "--distribution"),
        (["--image_size=16"], "--image_size"),
        (["--warmup_epochs=-1"], "--warmup_epochs"),
        (["--label_smoothing=1.5"], "--label_smoothing"),
        (["--init_weights=/nonexistent/w.keras"], "--init_weights"),
        (["--opset=99"], "--opset"),
        (["--parity_atol=-1"], "--parity_atol"),
        (["--parity_images=-1"], "--parity_images"),
        (["--train_sizes=64@2"], "--train_sizes"),  # the first entry must start at epoch 1
        (["--train_sizes=64@1,96@1"], "--train_sizes"),
        (["--train_sizes=16@1"], "--train_sizes"),
        (["--train_sizes=64"], "--train_sizes"),
    ],
)
def test_bad_flag_values_are_refused_by_the_config(argv, named):
    from absl.testing import flagsaver

    from toolkit import flags as flags_lib
    from toolkit.config import ConfigError

    with flagsaver.flagsaver():
        flags_lib.FLAGS(["toolkit.train", *argv])
        with pytest.raises(ConfigError) as info:
            flags_lib.to_config()
    message = str(info.value)
    assert message.startswith(named + ":") and "\n" not in message


def test_the_demo_recipe_applies_only_to_flags_left_alone():
    from absl.testing import flagsaver

    from toolkit import flags as flags_lib

    with flagsaver.flagsaver():
        flags_lib.FLAGS(["toolkit.train", "--epochs=2"])
        demo = flags_lib.to_config()
    assert demo.train.recipe == "demo" and demo.data.image_size == 32 and demo.train.epochs == 2


def test_the_command_line_and_the_library_share_one_set_of_defaults():
    """No flag given but --data_dir: the Config equals the library's own Config() field for field."""
    import dataclasses

    from absl.testing import flagsaver

    from toolkit import flags as flags_lib
    from toolkit.config import Config

    with flagsaver.flagsaver():
        flags_lib.FLAGS(["toolkit.train", "--data_dir=/tmp", "--recipe=default"])
        from_flags = flags_lib.to_config()
    library = Config()
    assert from_flags == dataclasses.replace(library, data=dataclasses.replace(library.data, data_dir="/tmp"),
                                             train=dataclasses.replace(library.train, recipe="default"), recipe_reason="--recipe")
    # every field is a flag, and every flag of the trainer is a field
    fields = {f.name for section in (library.data, library.model, library.train, library.export)
              for f in dataclasses.fields(section)}
    assert fields == {f.name for f in flags_lib.FLAGS.get_flags_for_module(flags_lib)}


@pytest.mark.slow
def test_diverging_loss_stops_with_the_step_number(tmp_path, demo_data):
    proc = train(tmp_path / "nan", f"--data_dir={demo_data}", "--learning_rate=1e12", "--epochs=3",
                 "--warmup_epochs=0", "--optimizer=sgd")
    assert proc.returncode == 3, proc.stderr[-2000:]
    line = [l for l in proc.stderr.splitlines() if l.startswith("error:")][0]
    assert "loss became" in line and "at step" in line


def test_flagfile_sets_flags_and_every_flag_has_help(tmp_path):
    from absl.testing import flagsaver

    from toolkit import flags as flags_lib

    flagfile = tmp_path / "run.flags"
    flagfile.write_text(f"--data_dir={tmp_path}\n--epochs=3\n--optimizer=adamw\n--precision=bf16\n")
    with flagsaver.flagsaver():
        flags_lib.FLAGS(["toolkit.train", f"--flagfile={flagfile}", "--epochs=4"])
        config = flags_lib.to_config()
    assert (config.train.epochs, config.train.optimizer, config.train.precision) == (4, "adamw", "bf16")
    ours = [f for f in flags_lib.FLAGS.get_flags_for_module(flags_lib)]
    assert len(ours) >= 30
    assert all(f.help and len(f.help) > 15 for f in ours), [f.name for f in ours if not f.help]


@pytest.mark.slow
def test_an_image_folder_trains_after_one_conversion_and_its_test_split_is_scored_once_at_the_end(tmp_path):
    import data_helpers as dh

    folder = tmp_path / "photos"
    counts = {"train": {"cat": 12, "dog": 12}, "val": {"cat": 4, "dog": 4}, "test": {"cat": 3, "dog": 2}}
    dh.write_folder(str(folder), {}, split_dirs=counts, size=(40, 48))
    model_dir = tmp_path / "run"
    first = train(model_dir, f"--data_dir={folder}", "--epochs=1", "--steps_per_epoch=2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"--data_dir: {folder} is an image folder; converting it into" in first.stdout
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["test_images"] == 5 and summary["val_images"] == 8  # test: 3 + 2 images, scored once
    assert 0 <= summary["test_top1"] <= summary["test_top5"] <= 1
    val_lines = [line for line in first.stdout.splitlines() if "validation:" in line]
    assert len(val_lines) == 1 and "(8 images)" in val_lines[0]  # training evaluated val, never test
    # the same folder again: the conversion is reused
    second = train(model_dir, f"--data_dir={folder}", "--epochs=2", "--steps_per_epoch=2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "is unchanged since its conversion" in second.stdout and "converting it" not in second.stdout


@pytest.mark.parametrize("case, flags, named", [
    ("depth 26 has no ImageNet weights", ["--init_weights=imagenet", "--depth=26"], "--init_weights"),
    ("a batch larger than the photos", ["--batch_size=64", "--steps_per_epoch=0"], "--batch_size"),
    ("fewer classes than the folder has", ["--num_classes=1"], "--num_classes"),
])
def test_a_refused_run_leaves_the_model_dir_as_it_was(tmp_path, case, flags, named):
    """--fresh with a refusal the flags and the photos decide: nothing converted, nothing set aside."""
    import data_helpers as dh

    photos = tmp_path / "photos"
    dh.write_folder(str(photos), {"ants": 4, "bees": 4})
    model_dir = tmp_path / "run"
    (model_dir / "checkpoints").mkdir(parents=True)
    (model_dir / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-4"\n')
    (model_dir / "run.json").write_text('{"num_classes": 2}\n')
    (model_dir / "metrics.jsonl").write_text('{"kind": "val"}\n')

    def snapshot():
        return {str(p.relative_to(model_dir)): p.read_bytes() if p.is_file() else None for p in sorted(model_dir.rglob("*"))}

    before = snapshot()
    proc = train(model_dir, f"--data_dir={photos}", "--fresh", "--epochs=1", *flags, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {named}:"), proc.stderr[-2000:]
    assert snapshot() == before  # not converted into run/data, not moved to run/previous-*
