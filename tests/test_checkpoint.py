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
