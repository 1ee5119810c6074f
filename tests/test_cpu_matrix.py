"""The CPU-sensitive paths with oneDNN forced on and forced off, whatever CPU runs the suite.

TensorFlow turns oneDNN on by default only on AVX-512-class x86 CPUs, and results differ between
its kernels and Eigen's (a zero-size batch through a oneDNN convolution comes back as its input).
tests/helpers/cpu_matrix.py runs every precision's train step, two replicas with an empty one, a
bf16 run with export and parity gate, and batch inference, once per setting; the XLA-compiled steps
and the device-loop equivalence, which do not depend on oneDNN, once, in the oneDNN-off process
(the setting under which `--xla auto` picks XLA on an AVX2 CPU).
"""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.slow  # end-to-end: subprocesses that train


@functools.cache
def run_matrix(onednn: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": onednn}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "helpers", "cpu_matrix.py")], capture_output=True,
                          text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["asked"] = onednn == "1"
    return result


@pytest.fixture(scope="module", params=["1", "0"], ids=["onednn-on", "onednn-off"])
def matrix(request):
    return run_matrix(request.param)


@pytest.fixture(scope="module")
def once():
    """The process with oneDNN off, which also ran the parts that do not depend on oneDNN."""
    return run_matrix("0")


def test_the_setting_asked_for_is_the_one_tensorflow_ran(matrix):
    assert matrix["onednn"] == matrix["asked"]


def assert_trains(got, precision):
    losses = got["losses"]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0] * 0.8, losses
    assert got["stem_dtype"] == {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_precision_trains_with_finite_falling_loss(matrix, precision):
    assert_trains(matrix["loop"][f"{precision}-graph"], precision)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # fp16: the two-size test below
def test_each_precision_trains_with_finite_falling_loss_under_xla(once, precision):
    assert_trains(once["loop"][f"{precision}-xla"], precision)


def test_batches_of_two_sizes_train_one_model_in_fp16_with_xla(once):
    """--train_sizes on a GPU's defaults: the model built for any size, XLA compiling each size."""
    got = once["loop_two_sizes"]
    losses = got["losses"]
    assert all(np.isfinite(losses)), losses
    assert losses[-2] < losses[0] * 0.8 and losses[-1] < losses[1] * 0.8, losses  # each size's loss falls
    assert got["stem_dtype"] == "float16"


def test_a_replica_with_an_empty_batch_leaves_evaluation_exact(matrix):
    two, one = matrix["empty_replica"]["two"], matrix["empty_replica"]["one"]
    assert two["val_images"] == one["val_images"] == 9
    assert (two["val_top1"], two["val_top5"]) == (one["val_top1"], one["val_top5"])
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)


@pytest.mark.parametrize("replicas", ["one", "two"])
def test_steps_in_one_device_loop_equal_as_many_single_steps(once, replicas):
    got = once["steps_per_loop"][replicas]
    assert got["weights_moved"] > 1e-3  # the steps really trained
    assert got["losses_loop"] == pytest.approx(got["losses_single"], abs=1e-6)
    assert got["max_weight_diff"] < 1e-6


def test_a_bf16_two_replica_run_with_ema_evaluates_every_image_and_exports_the_average(matrix):
    run = matrix["run"]
    assert (run["replicas"], run["precision"], run["xla"]) == (2, "bf16", False)  # XLA is off on CPU replicas
    assert run["val_images"] == 25  # 3 full batches of 8, then 1 image: replica 1 gets none
    assert run["export"]["parity_passed"] is True
    # --ema_decay: evaluated beside the raw weights, and the EMA weights are the ones written and exported
    assert run["exported_weights"] == "ema" and 0 <= run["ema_val_top1"] <= 1
    assert run["exported_equals"]["ema"] == 0 and run["exported_equals"]["raw"] > 1e-4
    # --train_sizes 40@1,48@2: two epochs of other sizes trained, evaluated each time and exported at 32 px
    assert run["steps"] == 4 and run["history_epochs"] == [1, 2] and run["image_size"] == 32
    assert run["export_image_size"] == 32


def test_batch_inference_scores_every_image_alike_in_both_formats(matrix):
    infer = matrix["infer"]
    assert infer["scored"] == {"onnx": 25, "savedmodel": 25}
    assert infer["errors"] == {"onnx": [], "savedmodel": []}
    assert infer["max_abs_diff"] < 1e-4
