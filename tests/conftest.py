"""Shared test setup: quiet TensorFlow, the repository on sys.path, real data location."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# ../shared/data beside the repository (the layout of our machines and CI)
SHARED_DATA = os.environ.get("TOOLKIT_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
HYMENOPTERA = os.path.join(SHARED_DATA, "hymenoptera")


import pytest  # noqa: E402


def under_ci() -> bool:
    """True when the CI variable is set to anything but empty, 0, false, no or off."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def require_data(path: str, what: str) -> str:
    """`path` if it exists; otherwise the test stops with the reason: a failure under CI (a suite
    that passes by skipping proves nothing there), a skip elsewhere."""
    if os.path.exists(path):
        return path
    reason = (f"{what} not found at {path}: the real photos are ../shared/data/hymenoptera beside the "
              f"repository; set TOOLKIT_SHARED_DATA to the folder that holds hymenoptera/ (see README.md)")
    if under_ci():
        pytest.fail(f"{reason} [CI is set: missing data fails]", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """A tiny demo dataset (96 training, 24 validation images of 40 px) written as real shards."""
    from toolkit.data import sources

    return sources.write_demo_dataset(str(tmp_path_factory.mktemp("demo")), train_count=96, val_count=24, image_size=40)


# The longest files first. With `--dist loadfile` each file runs whole on one worker; xdist's
# default order (most tests first) started files with few but long tests (kill-and-resume, the
# all-sections benchmark) last, and one worker trained alone while the other sat idle: on an AVX2
# CPU the suite kept 1.7 of 2 cores busy. Longest-first needs `--no-loadscope-reorder` (pyproject's
# addopts), so that xdist hands out files in this order.
LONGEST_FIRST = ("test_cpu_matrix.py", "test_training.py", "test_multiworker.py", "test_cluster.py", "test_benchmark_inference.py",
                 "test_object_storage.py", "test_resume.py", "test_export.py", "test_recipes.py", "test_faults.py",
                 "test_budget.py", "test_evaluate.py", "test_batch_infer.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: the rest keep their order
