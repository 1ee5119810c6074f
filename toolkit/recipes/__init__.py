"""The recipes that ship inside the package: absl flag files, one per kind of job, and the rule that
picks one when --recipe is auto (the default).

  demo        no --data_dir: the built-in four-class texture dataset, 32 px, 3 epochs (minutes)
  small_data  a few hundred to a few thousand photos, from scratch: 96 px, AdamW, CutMix, EMA, 100 epochs
  finetune    --init_weights given: from pretrained weights, SGD at a tenth of the ImageNet rate
  imagenet    ImageNet on 8 GPUs: batch 1024, SGD 0.4, 90 epochs
  notebook    the experiment our users' notebooks run (224 px, batch 8, Adam 1e-3, 10 epochs), done right
  default     the library's defaults (224 px, batch 64, SGD 0.1, 90 epochs): large datasets

A recipe only supplies values for the flags the user did not give: a flag on the command line, or
in the user's own --flagfile, always wins. No TensorFlow here.
"""

from __future__ import annotations

import os
from typing import Optional

from toolkit import layout
from toolkit.common import storage
from toolkit.common.errors import BadInput
from toolkit.config import RECIPES

CHOICES = RECIPES
# Below this many training images the data is "small": the ImageNet-sized defaults (224 px,
# batch 64, 90 epochs, SGD 0.1) are the wrong recipe for it.
SMALL_DATA_IMAGES = 5000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def path(name: str) -> str:
    """The flag file of a shipped recipe."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.flags")


def training_images(data_dir: str) -> Optional[int]:
    """How many training images --data_dir holds, cheaply (no image is opened): a converted
    dataset's manifest count, or the image files of a folder (its train/ part when it has splits);
    None when it cannot be told (shards without a manifest)."""
    manifest = layout.read_json(os.path.join(data_dir, layout.MANIFEST))
    if isinstance(manifest, dict):
        return int(manifest.get("splits", {}).get("train", {}).get("count", 0)) or None
    from toolkit.data import listing, splits

    if listing.holds_shards(data_dir):
        return None
    root = next((os.path.join(data_dir, n) for n in splits.SPLITS["train"] if os.path.isdir(os.path.join(data_dir, n))),
                data_dir)
    return _count_images(root, SMALL_DATA_IMAGES, listing.visible)


def _count_images(root: str, limit: int, visible) -> int:
    """The image files below `root` (hidden entries left out), counted up to `limit`: past it the
    answer is the same ("not small"), and a large folder is not walked to its end."""
    count = 0
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if visible(d)]
        count += sum(visible(f) and f.lower().endswith(IMAGE_SUFFIXES) for f in files)
        if count >= limit:
            return limit
    return count


def choose(requested: str, data_dir: str, init_weights: str) -> tuple:
    """(recipe name, why in a few words) for --recipe, --data_dir and --init_weights."""
    if requested not in CHOICES:
        raise BadInput(f"--recipe: must be one of {', '.join(CHOICES)}, got {requested!r}")
    if requested != "auto":
        return requested, "--recipe"
    if not data_dir:
        return "demo", "no --data_dir: the built-in demo dataset"
    if init_weights:
        return "finetune", f"--init_weights {init_weights}"
    count = training_images(data_dir) if storage.isdir(data_dir) else None
    if count is not None and count < SMALL_DATA_IMAGES:
        return "small_data", f"{count} training images (fewer than {SMALL_DATA_IMAGES})"
    known = f"{count} training images" if count is not None else "shards without a manifest"
    return "default", f"{known}: the library's defaults"
