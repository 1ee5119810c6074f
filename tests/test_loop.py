"""The custom loop: the schedule, weight decay, exact evaluation. Each precision with and without XLA
trains in tests/test_cpu_matrix.py, with oneDNN on and off."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from toolkit.train import steps as loop
from toolkit.train import optim
from toolkit.models import resnet_v2


def test_warmup_then_cosine_schedule():
    s = optim.WarmupCosine(0.4, warmup_steps=10, total_steps=110)
    assert float(s(0)) == pytest.approx(0.04)
    assert float(s(9)) == pytest.approx(0.4)
    assert float(s(10)) == pytest.approx(0.4)
    assert float(s(60)) == pytest.approx(0.2, rel=1e-5)  # half way through the cosine
    assert float(s(110)) == pytest.approx(0.0, abs=1e-7)
    values = [float(s(i)) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_weight_decay_spares_batchnorm_and_biases():
    model = resnet_v2.build_model(4, 32)
    decayed = {v.path for v in optim.decayed_variables(model)}
    assert "conv1_conv/kernel" in decayed and "predictions/kernel" in decayed
    assert not any(p.endswith(("gamma", "beta", "bias")) for p in decayed)


def test_evaluation_counts_top1_and_top5_exactly():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))  # logits = inputs
    logits = np.array([
        [9, 1, 2, 3, 4, 5],  # label 0: top-1 right
        [1, 9, 8, 7, 6, 0.5],  # label 5: only 6th best -> wrong in top-5
        [1, 2, 9, 8, 7, 6],  # label 4: 3rd best -> top-5 right, top-1 wrong
    ], "float32")
    labels = np.array([0, 5, 4], "int32")
    trainer = loop.Trainer(model, keras.optimizers.SGD(), strategy, global_batch_size=2, num_classes=6)
    ds = tf.data.Dataset.from_tensor_slices((logits, labels)).batch(2)  # a partial last batch
    result = trainer.evaluate(strategy.experimental_distribute_dataset(ds))
    assert result["val_images"] == 3
    assert result["val_top1"] == pytest.approx(1 / 3)
    assert result["val_top5"] == pytest.approx(2 / 3)
    expected_loss = np.mean([-np.log(np.exp(l[y]) / np.exp(l).sum()) for l, y in zip(logits, labels)])
    assert result["val_loss"] == pytest.approx(expected_loss, rel=1e-5)
