"""Shared test setup: quiet TensorFlow, the repository on sys.path, real data location."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# ../shared/data beside the repository (the layout of our machines and CI)
SHARED_DATA = os.environ.get("TOOLKIT_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """A tiny demo dataset (96 training, 24 validation images of 40 px) written as real shards."""
    from toolkit.data import sources

    return sources.write_demo_dataset(str(tmp_path_factory.mktemp("demo")), train_count=96, val_count=24, image_size=40)
