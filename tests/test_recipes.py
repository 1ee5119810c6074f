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
