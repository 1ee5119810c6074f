"""scripts/benchmark.py --sections pipeline --quick on a tiny converted folder."""

import importlib.util
import json
import os
import sys

import pytest

import data_helpers as dh
from toolkit.data import folder


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(dh.ROOT, "scripts", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_pipeline_section_writes_both_rates(tmp_path):
    src = tmp_path / "photos"
    dh.write_folder(str(src), None, split_dirs={"train": {"a": 12, "b": 12}, "val": {"a": 2, "b": 2}}, size=(40, 48))
    folder.convert_folder(str(src), str(tmp_path / "shards"), workers=1, progress=False)
    benchmark = load_benchmark()
    out = tmp_path / "bench" / "result.json"
    args = ["--sections", "pipeline", "--data_dir", str(tmp_path / "shards"), "--json", str(out), "--quick", "--batch_size", "8", "--image_size", "64"]
    returned = benchmark.main(args)

    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    p = written["pipeline"]
    assert p["toolkit_images_per_sec"] > 0 and p["baseline_images_per_sec"] > 0
    assert p["ratio"] == pytest.approx(p["toolkit_images_per_sec"] / p["baseline_images_per_sec"], rel=0.02)
    assert p["toolkit_cpu_ms_per_image"] > 0 and p["baseline_cpu_ms_per_image"] > 0
    assert p["baseline_dir"] == str(src / "train")  # found through the manifest
    assert p["image_size"] == 64 and p["train_records"] == 24 and written["quick"] is True
    assert written["machine"]["cores"] >= 1 and written["machine"]["cpu"]
    assert not [f for f in os.listdir(out.parent) if ".tmp-" in f]


def test_sections_are_a_registry(tmp_path):
    benchmark = load_benchmark()
    assert "pipeline" in benchmark.SECTIONS
    calls = []
    benchmark.register(benchmark.Section("noop", "does nothing", lambda args: calls.append(args.noop_value) or {"value": 1.5},
                                         lambda group: group.add_argument("--noop_value", type=int, default=7)))
    result = benchmark.main(["--sections", "noop", "--json", str(tmp_path / "r.json")])
    assert result["noop"] == {"value": 1.5} and calls == [7]
    with pytest.raises(SystemExit):
        benchmark.main(["--sections", "pipeline,nonsense"])


def test_flop_counter_on_a_model_counted_by_hand():
    import keras

    benchmark = load_benchmark()
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3)(inputs)  # 8x8 outputs x 8 filters x (3*3*3) multiply-adds
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))  # 8 x 5 multiply-adds
    assert benchmark.bench_train.count_flops(model) == 2 * (8 * 8 * 8 * 27 + 8 * 5)


def test_report_tables_every_section_and_marks_failed_variants():
    benchmark = load_benchmark()
    results = {
        "machine": {"cpu": "Test CPU", "usable_cores": 2, "python": "3.11", "tensorflow": "2.21"}, "quick": False,
        "pipeline": {"toolkit_images_per_sec": 300.0, "baseline_images_per_sec": 100.0, "ratio": 3.0,
                     "toolkit_cpu_ms_per_image": 1.5, "baseline_cpu_ms_per_image": 3.0, "load_average": [0.5, 0.4, 0.3]},
        "train": {"keras_fit_images_per_sec": 2.0, "keras_fit_flops_per_sec": 6e9, "toolkit_fp32_images_per_sec": 3.0,
                  "toolkit_fp32_flops_per_sec": 9e9, "toolkit_fp32_share_of_peak": 0.05, "toolkit_bf16_error": "did not finish 2 + 6 steps in 900 s"},
        "inference": {"onnx_fp32_images_per_sec": 8.0, "savedmodel_images_per_sec": 4.0, "keras_one_by_one_images_per_sec": 2.0,
                      "onnx_fp32_end_to_end_images_per_sec": 7.0, "int8_top1_agreement": 0.995, "cpu_ms_per_image": {"onnx_fp32": 100.0}},
    }
    text = benchmark.report(results)
    lines = text.splitlines()
    assert lines[0].startswith("Machine: Test CPU, 2 usable cores")
    assert "| toolkit make_train_dataset (shards) | 300.0 | 1.5 | 3.0x |" in lines
    assert "| toolkit_fp32 | 3.0 | 1.50x | 9.0 | 5.0% |" in lines
    assert "| keras_fit | 2.0 | 1.00x | 6.0 | unknown |" in lines
    assert "| toolkit_bf16 | - | - | - | did not finish 2 + 6 steps in 900 s |" in lines
    assert "| ONNX float32 (onnxruntime) | 8.0 | 100.0 | 2.00x |" in lines
    assert "| int8 top-1 agreement with float32 | 99.5% | - | - |" in lines
    assert not [line for line in lines if "toolkit_fp16" in line]  # variants not run are not listed


def test_a_train_variant_out_of_time_is_reported_not_fatal(tmp_path):
    benchmark = load_benchmark()
    got = benchmark.bench_train.run_variant_subprocess("toolkit_fp32", str(tmp_path), str(tmp_path), 4, 32, 1, 2, timeout=2)
    assert got == {"error": "did not finish 1 warm-up + 1 timed step in 2 s"}
