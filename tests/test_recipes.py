"""The recipes shipped in toolkit/recipes parse into the configurations they promise, --recipe auto
picks by the data, flags given always win, and the built wheel carries the recipes and the commands."""

import glob
import os

import pytest
from absl.testing import flagsaver

from toolkit import flags as flags_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "toolkit", "recipes", "*.flags")))


def name(recipe):
    return os.path.basename(recipe)[: -len(".flags")]


HERE = os.path.dirname(os.path.abspath(__file__))  # a directory that exists; an explicit --recipe does not look into it


def _config(recipe, *extra, data_dir=HERE):
    with flagsaver.flagsaver():
        flags_lib.FLAGS(["toolkit.train", f"--recipe={name(recipe)}", f"--data_dir={data_dir}", *extra])
        return flags_lib.to_config()


def test_every_recipe_the_flag_offers_is_shipped():
    from toolkit.config import RECIPES as OFFERED

    assert {name(p) for p in RECIPES} == set(OFFERED) - {"auto"}


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_recipe_parses_into_a_valid_config(recipe):
    config = _config(recipe)
    assert config.data.data_dir == HERE and config.train.recipe == name(recipe) and config.recipe_reason == "--recipe"


def test_notebook_recipe_is_the_notebook_experiment():
    c = _config(os.path.join(ROOT, "toolkit", "recipes", "notebook.flags"))
    assert (c.data.image_size, c.data.batch_size, c.train.optimizer, c.train.learning_rate, c.train.epochs) == (224, 8, "adam", 1e-3, 10)


def test_imagenet_recipe_scales_the_learning_rate_with_the_batch():
    c = _config(os.path.join(ROOT, "toolkit", "recipes", "imagenet.flags"))
    assert c.train.learning_rate == pytest.approx(0.1 * c.data.batch_size / 256)
    assert (c.train.optimizer, c.train.epochs, c.train.label_smoothing, c.train.warmup_epochs) == ("sgd", 90, 0.1, 5)


# Each recipe starts: `python -m toolkit.train --recipe NAME` trains its first step on the demo
# shards. Only the sizes are shrunk on the command line (flags given win over the recipe); the
# optimizer, schedule, regularization and data options are the recipe's own.
SHRINK = ["--image_size=32", "--batch_size=4", "--epochs=1", "--steps_per_epoch=1", "--noexport", "--precision=fp32", "--xla=off"]


# A recipe with --init_weights=imagenet runs the trainer with Keras' cache in a temporary KERAS_HOME
# holding a generated weights file (see test_pretrained): its md5 is put in the expected-hash table
# of the child process before the trainer starts, and the origin is a missing local file, so no
# download can reach the network.
IMAGENET_TRAIN = ("import sys; from toolkit.models import pretrained; pretrained.NOTOP_MD5[50] = sys.argv.pop(1); "
                  "pretrained.BASE_URL = sys.argv.pop(1); from toolkit.train import __main__ as train; sys.argv[0] = 'toolkit.train'; "
                  "train.run_main()")


# The other recipes train ResNetV2 with one block per stage (every layer kind of ResNet50V2): what
# is under test is that the recipe's flags start a run, not the depth, and the full network's trace
# is a minute of CI on an AVX2 CPU. The ImageNet recipe keeps the full trunk its weights are for.
SHALLOW_TRAIN = ("import sys; from toolkit.models import resnet_v2; resnet_v2.STAGES[50] = (1, 1, 1, 1); "
                 "from toolkit.train import __main__ as train; sys.argv[0] = 'toolkit.train'; train.run_main()")


@pytest.fixture(scope="module")
def keras_home(tmp_path_factory):
    """(KERAS_HOME holding a generated notop file of ResNet50V2, its md5)."""
    import data_helpers as dh
    from toolkit.models import pretrained

    home = tmp_path_factory.mktemp("keras_home")
    os.makedirs(home / "models")
    path = str(home / "models" / pretrained.file_name(50))
    dh.write_notop_file(path)
    return str(home), pretrained.md5_of(path)


def _train(recipe, demo_data, model_dir, keras_home, md5, *extra):
    import subprocess
    import sys

    uses_imagenet = _config(recipe).model.init_weights == "imagenet"
    nowhere = (model_dir.parent / "nowhere").as_uri() + "/"
    command = ["-c", IMAGENET_TRAIN, md5, nowhere] if uses_imagenet else ["-c", SHALLOW_TRAIN]
    return subprocess.run([sys.executable, *command, f"--recipe={name(recipe)}", f"--data_dir={demo_data}",
                           f"--model_dir={model_dir}", *SHRINK, *extra], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, "KERAS_HOME": keras_home})


# Starting a recipe costs a trace of ResNet50V2 (about a minute of CI on an AVX2 CPU). The recipes
# that only set values the trainer's own tests already run with other values (the optimizer and
# its schedule, sizes, crops) are checked by parsing above; the ones that turn on a path of their
# own (the small-data techniques, the cache, ImageNet weights) are started.
VALUE_FLAGS = {"image_size", "batch_size", "optimizer", "learning_rate", "momentum", "warmup_epochs", "weight_decay",
               "epochs", "label_smoothing", "crop_min_scale", "shuffle_buffer"}


def recipe_flags(recipe):
    with open(recipe) as f:
        return {line.strip()[2:].split("=")[0] for line in f if line.strip().startswith("--")}


STARTED = [r for r in RECIPES if not recipe_flags(r) <= VALUE_FLAGS]


def test_the_recipes_not_started_set_only_values():
    assert {os.path.basename(r) for r in STARTED} >= {"small_data.flags", "finetune.flags"}
    for recipe in sorted(set(RECIPES) - set(STARTED)):
        assert recipe_flags(recipe) <= VALUE_FLAGS, recipe
        assert recipe_flags(recipe) or name(recipe) == "default", recipe  # default: the library's own values
    assert recipe_flags(os.path.join(ROOT, "toolkit", "recipes", "small_data.flags")) - VALUE_FLAGS >= {"cache", "cutmix_alpha", "ema_decay"}


@pytest.mark.parametrize("recipe", STARTED, ids=os.path.basename)
def test_recipe_starts_training(recipe, tmp_path, demo_data, keras_home):
    import json

    model_dir = tmp_path / "run"
    proc = _train(recipe, demo_data, model_dir, *keras_home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["epochs"] == 1 and summary["num_classes"] == 4
    trained = json.loads((model_dir / "run.json").read_text())["config"]["train"]
    expected = _config(recipe).train
    for key in ("optimizer", "learning_rate", "weight_decay", "label_smoothing", "warmup_epochs"):
        assert trained[key] == getattr(expected, key), key
    if _config(recipe).model.init_weights == "imagenet":
        assert "--init_weights: copied 102 layers from imagenet" in proc.stdout + proc.stderr  # the whole trunk


def test_finetune_recipe_offline_without_the_weights_stops_with_one_line(tmp_path, demo_data):
    from toolkit.models import pretrained

    recipe = os.path.join(ROOT, "toolkit", "recipes", "finetune.flags")
    proc = _train(recipe, demo_data, tmp_path / "run", str(tmp_path / "empty_home"), pretrained.NOTOP_MD5[50])
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "--init_weights" in line]
    where = os.path.join(str(tmp_path / "empty_home"), "models", pretrained.file_name(50))
    assert len(errors) == 1 and errors[0].endswith(f"offline, put that file at {where}"), proc.stderr[-3000:]


def test_finetune_recipe_starts_from_imagenet_at_a_tenth_of_the_scratch_rate():
    c = _config(os.path.join(ROOT, "toolkit", "recipes", "finetune.flags"))
    assert c.model.init_weights == "imagenet" and not c.model.freeze_backbone
    from toolkit.config import TrainConfig

    assert c.train.learning_rate == pytest.approx(TrainConfig().learning_rate / 10)  # SGD's 0.1 from scratch


# ------------------------------------------------------------------------------- --recipe auto
def _auto(*argv):
    with flagsaver.flagsaver():
        flags_lib.FLAGS(["toolkit.train", *argv])
        return flags_lib.to_config()


def test_auto_picks_the_recipe_from_the_data_and_says_why(tmp_path):
    import data_helpers as dh

    small = tmp_path / "photos"
    dh.write_folder(str(small), {"ants": 6, "bees": 5})
    (small / ".hidden.jpg").write_bytes(b"x")  # hidden files are not photos
    c = _auto(f"--data_dir={small}")
    assert (c.train.recipe, c.recipe_reason) == ("small_data", "11 training images (fewer than 5000)")
    assert (c.data.image_size, c.data.batch_size, c.train.optimizer, c.train.ema_decay) == (96, 16, "adamw", 0.995)
    assert _auto().train.recipe == "demo" and _auto().data.image_size == 32
    assert _auto(f"--data_dir={small}", "--init_weights=imagenet").train.recipe == "finetune"
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text('{"splits": {"train": {"count": 120000}}}')
    big = _auto(f"--data_dir={shards}")
    assert (big.train.recipe, big.recipe_reason) == ("default", "120000 training images: the library's defaults")
    assert (big.data.image_size, big.data.batch_size, big.train.epochs) == (224, 64, 90)


def test_flags_given_on_the_command_line_or_in_the_users_flagfile_win_over_the_recipe(tmp_path):
    import data_helpers as dh

    dh.write_folder(str(tmp_path / "photos"), {"ants": 3, "bees": 3})
    own = tmp_path / "mine.flags"
    own.write_text("--epochs=7\n--nocache\n")
    c = _auto(f"--data_dir={tmp_path / 'photos'}", f"--flagfile={own}", "--image_size=64")
    assert c.train.recipe == "small_data"
    assert (c.data.image_size, c.train.epochs, c.data.cache) == (64, 7, False)  # mine
    assert (c.train.optimizer, c.data.cutmix_alpha) == ("adamw", 1.0)  # the recipe's


def test_a_large_folder_is_not_walked_to_its_end(tmp_path, monkeypatch):
    from toolkit import recipes

    for i in range(3):
        (tmp_path / f"c{i}").mkdir()
        for j in range(4):
            (tmp_path / f"c{i}" / f"{j}.jpg").write_bytes(b"x")
    monkeypatch.setattr(recipes, "SMALL_DATA_IMAGES", 5)
    assert recipes.training_images(str(tmp_path)) == 5  # stopped at the limit, not 12


def test_the_built_wheel_carries_the_recipes_and_every_command(tmp_path):
    """The wheel a user installs (not this checkout): the recipes inside the package, the six
    console scripts, and the package data that --recipe reads."""
    import subprocess
    import sys
    import zipfile

    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                           ROOT], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = glob.glob(str(tmp_path / "toolkit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"toolkit/recipes/{name(r)}.flags" for r in RECIPES} <= set(names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script in ("toolkit-train", "toolkit-export", "toolkit-parity", "toolkit-evaluate", "toolkit-infer", "toolkit-convert"):
        assert f"{script} = " in entry_points
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "configs/"))]
