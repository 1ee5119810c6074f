"""Shared test setup: quiet TensorFlow, the repository on sys.path, real data location."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# ../shared/data beside the repository (the layout of our machines and CI)
SHARED_DATA = os.environ.get("TOOLKIT_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
