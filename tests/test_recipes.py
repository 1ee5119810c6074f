"""The recipes in configs/ parse into the configurations they promise."""

import glob
import os

import pytest
from absl.testing import flagsaver

from toolkit import flags as flags_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags")))


def _config(recipe, *extra):
    with flagsaver.flagsaver():
        flags_lib.FLAGS(["toolkit.train", f"--flagfile={recipe}", "--data_dir=/tmp", *extra])
        return flags_lib.to_config()


def test_the_three_recipes_exist():
    assert {os.path.basename(p) for p in RECIPES} >= {"notebook.flags", "small_data.flags", "imagenet.flags"}


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_recipe_parses_into_a_valid_config(recipe):
    assert _config(recipe).data.data_dir == "/tmp"


def test_notebook_recipe_is_the_notebook_experiment():
    c = _config(os.path.join(ROOT, "configs", "notebook.flags"))
    assert (c.data.image_size, c.data.batch_size, c.train.optimizer, c.train.learning_rate, c.train.epochs) == (224, 8, "adam", 1e-3, 10)


def test_imagenet_recipe_scales_the_learning_rate_with_the_batch():
    c = _config(os.path.join(ROOT, "configs", "imagenet.flags"))
    assert c.train.learning_rate == pytest.approx(0.1 * c.data.batch_size / 256)
    assert (c.train.optimizer, c.train.epochs, c.train.label_smoothing, c.train.warmup_epochs) == ("sgd", 90, 0.1, 5)


# Each recipe starts: `python -m toolkit.train --flagfile RECIPE` trains its first step on the demo
# shards. Only the sizes are shrunk on the command line (later flags win over the flagfile); the
# optimizer, schedule, regularization and data options are the recipe's own.
SHRINK = ["--image_size=32", "--batch_size=4", "--epochs=1", "--steps_per_epoch=1", "--noexport", "--precision=fp32", "--xla=off"]


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_recipe_starts_training(recipe, tmp_path, demo_data):
    import json
    import subprocess
    import sys

    model_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "toolkit.train", f"--flagfile={recipe}", f"--data_dir={demo_data}",
                           f"--model_dir={model_dir}", *SHRINK], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["epochs"] == 1 and summary["num_classes"] == 4
    trained = json.loads((model_dir / "run.json").read_text())["config"]["train"]
    expected = _config(recipe).train
    for key in ("optimizer", "learning_rate", "weight_decay", "label_smoothing", "warmup_epochs"):
        assert trained[key] == getattr(expected, key), key
