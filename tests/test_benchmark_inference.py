"""scripts/benchmark.py --sections inference --quick on the tiny 32 px export, given an int8 model."""

import json
import shutil

import numpy as np
import pytest

import inference_helpers as ih
from test_benchmark_pipeline import load_benchmark


@pytest.fixture(scope="module")
def export_with_int8(tmp_path_factory):
    """The tiny export plus a model_int8.onnx (dynamic quantization: the section measures whatever int8
    model the export holds, and this one needs no calibration)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exported = ih.tiny_export(tmp_path_factory)
    copy = tmp_path_factory.mktemp("bench") / "export"
    shutil.copytree(exported.dir, copy)
    quantize_dynamic(str(copy / "model.onnx"), str(copy / "model_int8.onnx"), weight_type=QuantType.QUInt8)
    return str(copy)


def test_inference_section_measures_every_format(export_with_int8, tmp_path):
    photos = tmp_path / "photos"
    for c in ih.CLASSES:
        ih.copy_into(str(photos / "val" / c), ih.photos(c, 5, start=50))
    out = tmp_path / "bench.json"
    returned = load_benchmark().main(["--sections", "inference", "--quick", "--json", str(out), "--inference_export_dir", export_with_int8,
                                      "--inference_photos", str(photos), "--inference_batch_size", "4"])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    r = written["inference"]
    for key in ("onnx_fp32_images_per_sec", "onnx_int8_images_per_sec", "savedmodel_images_per_sec",
                "keras_one_by_one_images_per_sec", "onnx_fp32_end_to_end_images_per_sec"):
        assert r[key] > 0, key
    assert 0 <= r["int8_top1_agreement"] <= 1 and r["images"] == 10 and r["keras_images"] == 2 and r["image_size"] == ih.SIZE
    assert r["fp32_max_abs_diff_probabilities"] <= 1e-4  # the same model in two runtimes
    assert set(r["targets"]) == {"onnx_fp32_at_least_savedmodel", "onnx_int8_at_least_2x_savedmodel", "int8_top1_agreement_at_least_0.99"}
    assert sum(r["fp32_predicted_class_counts"]) == 10 and np.isclose(r["onnx_fp32_vs_savedmodel"],
                                                                       r["onnx_fp32_images_per_sec"] / r["savedmodel_images_per_sec"], rtol=0.02)
