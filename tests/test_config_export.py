"""toolkit.config.validate_export: every bad export setting is refused in one line naming
its flag, before TensorFlow or tf2onnx is imported."""

import os
import subprocess
import sys

import pytest

from toolkit import config
from toolkit.config import ConfigError, ExportConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "values, flag, words",
    [
        ({"opset": 99}, "--opset", "between 13 and 18"),
        ({"opset": 12}, "--opset", "got 12"),
        ({"parity_images": -1}, "--parity_images", "got -1"),
        ({"parity_atol": -1.0}, "--parity_atol", "positive"),
        ({"parity_atol": 0.0}, "--parity_atol", "positive"),
        ({"parity_atol": float("nan")}, "--parity_atol", "nan"),
        ({"parity_atol": float("inf")}, "--parity_atol", "finite"),
        ({"onnx_layout": "chwn"}, "--onnx_layout", "nhwc, nchw"),
        ({"triton_repo": "/srv/triton"}, "--triton_repo", "relative path inside the export dir"),
        ({"triton_repo": "../triton"}, "--triton_repo", "'../triton'"),
        ({"triton_repo": "a/../../b"}, "--triton_repo", "relative"),
        ({"triton_repo": "saved_model"}, "--triton_repo", "new relative path"),
        ({"triton_repo": "model.onnx/x"}, "--triton_repo", "'model.onnx/x'"),
        ({"triton_repo": "."}, "--triton_repo", "new"),
        ({"triton_max_batch_size": 0}, "--triton_max_batch_size", "at least 1, got 0"),
    ],
)
def test_bad_values_raise_a_config_error_naming_the_flag(values, flag, words):
    with pytest.raises(ConfigError) as info:
        config.validate_export(ExportConfig(**values))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.startswith(flag + ":") and words in message and "\n" not in message


def test_an_export_dir_that_is_or_lies_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", tmp_path / "file" / "export", tmp_path / "file" / "a" / "b"):
        with pytest.raises(ConfigError, match=r"^--export_dir: .*file exists and is not a directory"):
            config.validate_export(ExportConfig(export_dir=str(path)))
    for path in (tmp_path, tmp_path / "new" / "export", ""):  # an existing dir, a dir to create, the default
        config.validate_export(ExportConfig(export_dir=str(path)))


def test_the_defaults_and_the_edges_of_the_range_pass():
    config.validate_export(ExportConfig())
    for repo in ("triton", "deploy/triton", "models.triton"):
        config.validate_export(ExportConfig(triton_repo=repo, triton_max_batch_size=1, tflite=True, tflite_int8=True))
    for opset in (config.MIN_OPSET, config.MAX_OPSET):
        config.validate_export(ExportConfig(opset=opset, onnx_layout="nchw", parity_images=0, parity_atol=1e-6))


def test_the_opset_range_is_what_the_installed_tf2onnx_writes():
    from tf2onnx import constants

    assert config.MAX_OPSET == max(constants.OPSET_TO_IR_VERSION)
    assert config.MIN_OPSET in constants.OPSET_TO_IR_VERSION


def test_the_check_imports_neither_tensorflow_nor_tf2onnx():
    code = (
        "import sys; from toolkit import config; from toolkit.config import ExportConfig\n"
        "config.validate_export(ExportConfig())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf2onnx', 'onnx', 'onnxruntime', 'keras')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
