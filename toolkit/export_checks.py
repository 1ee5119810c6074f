"""The checks of the export settings (ExportConfig), cheap and free of TensorFlow and tf2onnx.

`validate_export(config)` raises `toolkit.config.ConfigError` ("--flag: ...", one line) for a value
the export would only refuse after training: the trainer checks them with its other flags before
the first step, and the export itself before any heavy work.
"""

from __future__ import annotations

import math
import os

from toolkit.config import ConfigError, ExportConfig

LAYOUTS = ("nhwc", "nchw")
# The oldest opset tf2onnx converts ResNetV2 to without workarounds.
MIN_OPSET = 13
# The newest opset tf2onnx 1.17 writes: max(tf2onnx.constants.OPSET_TO_IR_VERSION) == 18. Kept
# as a number so that checking a flag does not import tf2onnx (which imports TensorFlow); a test
# compares it with the installed tf2onnx.
MAX_OPSET = 18


def validate_export(config: ExportConfig) -> None:
    """Raise ConfigError for an ExportConfig value the export cannot work with."""

    def need(cond, flag, msg):
        if not cond:
            raise ConfigError(f"--{flag}: {msg}")

    need(config.onnx_layout in LAYOUTS, "onnx_layout", f"must be one of {', '.join(LAYOUTS)}, got {config.onnx_layout!r}")
    need(isinstance(config.opset, int) and not isinstance(config.opset, bool) and MIN_OPSET <= config.opset <= MAX_OPSET,
         "opset", f"must be between {MIN_OPSET} and {MAX_OPSET} (what tf2onnx converts ResNetV2 to), got {config.opset}")
    need(isinstance(config.parity_images, int) and config.parity_images >= 0,
         "parity_images", f"must be 0 (every validation image) or positive, got {config.parity_images}")
    # 0 would demand bit-identical formats, which float32 kernels of different libraries never are
    need(isinstance(config.parity_atol, (int, float)) and 0 < config.parity_atol < math.inf,
         "parity_atol", f"must be positive and finite, got {config.parity_atol}")
    if config.export_dir:
        blocker = _file_in_the_way(config.export_dir)
        need(blocker is None, "export_dir", f"{blocker} exists and is not a directory")


def _file_in_the_way(path: str):
    """The nearest existing ancestor of `path` (itself included) when it is not a directory, else None."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return None if os.path.isdir(path) else path
