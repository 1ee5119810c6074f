"""Checkpoints carry everything a resume needs: step, epoch, weights, optimizer slots, loss scale."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from toolkit import layout
from toolkit.train import checkpoint
from toolkit.train import optim
from toolkit.config import TrainConfig


def _setup(tmp_path, precision):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(5)(inputs)))
    config = TrainConfig(optimizer="sgd", learning_rate=0.1, warmup_epochs=1, epochs=3)
    optimizer = optim.make_optimizer(config, steps_per_epoch=10, precision=precision)
    optim.build_optimizer_state(optimizer, model)
    ckpt = checkpoint.Checkpointer(str(tmp_path), is_chief=True, keep=2, model=model, optimizer=optimizer)
    return model, optimizer, ckpt


def test_restore_brings_back_step_slots_schedule_and_loss_scale(tmp_path):
    model, optimizer, ckpt = _setup(tmp_path, "fp16")
    x, y = np.ones((2, 4), "float32"), np.array([0, 2])
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True)
            scaled = optimizer.scale_loss(loss)
        optimizer.apply(tape.gradient(scaled, model.trainable_variables), model.trainable_variables)
    optimizer.dynamic_scale.assign(1234.0)
    ckpt.step.assign(3)
    ckpt.epoch.assign(1)
    path = ckpt.save()
    saved = [(v.path, v.numpy().copy()) for v in optimizer.variables]
    saved_weights = model.get_weights()

    model2, optimizer2, ckpt2 = _setup(tmp_path, "fp16")
    assert ckpt2.restore_latest() == path
    assert int(ckpt2.step.numpy()) == 3 and int(ckpt2.epoch.numpy()) == 1
    assert float(optimizer2.dynamic_scale.numpy()) == 1234.0
    assert int(optimizer2.iterations.numpy()) == 3  # the schedule's position
    restored = [v.numpy() for v in optimizer2.variables]  # the same order; names differ by a counter
    assert len(restored) == len(saved) and any(np.abs(v).sum() > 0 for k, v in saved if "momentum" in k)
    for (name, a), b in zip(saved, restored):
        np.testing.assert_array_equal(a, b, err_msg=name)
    for a, b in zip(saved_weights, model2.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_only_the_last_k_checkpoints_are_kept(tmp_path):
    _, _, ckpt = _setup(tmp_path, "fp32")
    for step in (2, 4, 6, 8):
        ckpt.step.assign(step)
        ckpt.save()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".index"))
    assert names == ["ckpt-6.index", "ckpt-8.index"]


def test_fresh_sets_the_old_run_aside_without_deleting_it(tmp_path):
    assert checkpoint.set_aside_previous_run(str(tmp_path)) is None  # nothing to set aside
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint").write_text("x")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "run.json").write_text('{"num_classes": 3}')
    (tmp_path / "notes.txt").write_text("mine")  # not the toolkit's: stays where it is
    moved = checkpoint.set_aside_previous_run(str(tmp_path))
    assert re.fullmatch(r"previous-\d{8}-\d{6}", os.path.basename(moved)) and os.path.dirname(moved) == str(tmp_path)
    assert (tmp_path / moved / "checkpoints" / "checkpoint").read_text() == "x"
    assert (tmp_path / moved / "metrics.jsonl").read_text() == "{}\n"
    assert layout.load_run_record(moved) == {"num_classes": 3}  # the old run.json, whole
    assert sorted(os.listdir(tmp_path)) == sorted(["notes.txt", os.path.basename(moved)])
    with pytest.raises(ValueError, match="--model_dir"):
        layout.load_run_record(str(tmp_path))  # it had one before the set-aside


def _truncate_data_of(prefix):
    """Cut a checkpoint's data file to half, as a node that died mid-write can leave it."""
    (data,) = tf.io.gfile.glob(str(prefix) + ".data-*")
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.truncate(size // 2)


def test_a_damaged_newest_checkpoint_is_passed_over_set_aside_and_the_run_goes_on(tmp_path, capsys):
    model, _, ckpt = _setup(tmp_path, "fp32")
    ckpt.step.assign(3)
    good = ckpt.save()
    good_weights = model.get_weights()
    model.set_weights([w + 1.0 for w in good_weights])
    ckpt.step.assign(6)
    damaged = ckpt.save()
    _truncate_data_of(damaged)

    model2, _, ckpt2 = _setup(tmp_path, "fp32")
    assert ckpt2.restore_latest() == good and int(ckpt2.step.numpy()) == 3
    for a, b in zip(good_weights, model2.get_weights()):
        np.testing.assert_array_equal(a, b)
    lines = [line for line in capsys.readouterr().out.splitlines() if "cannot be read" in line]
    assert len(lines) == 1 and "ckpt-6" in lines[0] and "trying the one before it" in lines[0]
    aside = ckpt2.set_aside_damaged()
    assert os.path.dirname(aside) == str(tmp_path / "checkpoints") and re.fullmatch(r"damaged-\d{8}-\d{6}", os.path.basename(aside))
    assert sorted(os.listdir(aside)) == sorted(os.path.basename(p) for p in tf.io.gfile.glob(os.path.join(aside, "ckpt-6.*")))
    assert {"ckpt-6.index"} <= set(os.listdir(aside)) and not tf.io.gfile.glob(damaged + ".*")
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")) == good  # the index forgot it
    ckpt2.step.assign(4)  # the run goes on from step 3
    assert ckpt2.save().endswith("ckpt-4")
    model3, _, ckpt3 = _setup(tmp_path, "fp32")
    assert ckpt3.restore_latest().endswith("ckpt-4") and ckpt3.damaged == []


def test_with_no_readable_checkpoint_one_line_names_the_folder_and_fresh(tmp_path):
    from toolkit.common.errors import BadInput

    _, _, ckpt = _setup(tmp_path, "fp32")
    for step in (2, 4):
        ckpt.step.assign(step)
        _truncate_data_of(ckpt.save())
    _, _, ckpt2 = _setup(tmp_path, "fp32")
    with pytest.raises(BadInput) as info:
        ckpt2.restore_latest()
    message = str(info.value)
    assert message.startswith(f"--model_dir: not one checkpoint in {tmp_path / 'checkpoints'} can be read (ckpt-4, ckpt-2)")
    assert message.endswith("--fresh starts anew") and "\n" not in message
