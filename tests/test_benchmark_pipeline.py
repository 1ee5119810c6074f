"""scripts/benchmark.py --sections pipeline --quick on a tiny converted folder."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import data_helpers as dh
from toolkit.common import machine
from toolkit.data import folder

MACHINE_KEYS = {"cpu", "cpu_features", "onednn", "gpus", "tensorflow", "keras", "onnxruntime", "usable_cores", "load_average_at_start"}


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(dh.ROOT, "scripts", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def assert_names_its_machine(m: dict, markdown_first_line: str) -> None:
    """The JSON's `machine` object describes this process's machine, and the markdown's first line names it."""
    import keras
    import onnxruntime
    import tensorflow as tf

    assert MACHINE_KEYS <= set(m), MACHINE_KEYS - set(m)
    assert isinstance(m["cpu"], str) and m["cpu"] and m["cpu"] == machine.cpu_name()
    assert m["cpu_features"] == machine.cpu_features() and set(m["cpu_features"]) <= set(machine.CPU_FEATURES)
    assert m["onednn"] == ("on" if machine.onednn_enabled() else "off")  # as TensorFlow runs it in this process
    assert all(set(g) == {"name", "compute_capability"} and g["name"] for g in m["gpus"])
    assert (m["tensorflow"], m["keras"], m["onnxruntime"]) == (tf.__version__, keras.__version__, onnxruntime.__version__)
    assert 1 <= m["usable_cores"] <= m["cores"] and len(m["load_average_at_start"]) == 3
    assert markdown_first_line.startswith(f"Machine: {m['cpu']} [")
    assert f"oneDNN {m['onednn']}" in markdown_first_line and f"TensorFlow {m['tensorflow']}" in markdown_first_line
    assert all(f in markdown_first_line for f in m["cpu_features"])


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
    # the ratio is rounded to 2 decimals: up to 0.005 off, which is 3% of a ratio of 0.17
    assert p["ratio"] == pytest.approx(p["toolkit_images_per_sec"] / p["baseline_images_per_sec"], abs=0.0051)
    assert p["toolkit_cpu_ms_per_image"] > 0 and p["baseline_cpu_ms_per_image"] > 0
    assert p["baseline_dir"] == str(src / "train")  # found through the manifest
    assert p["image_size"] == 64 and p["train_records"] == 24 and written["quick"] is True
    assert_names_its_machine(written["machine"], benchmark.report(written).splitlines()[0])
    assert not [f for f in os.listdir(out.parent) if ".tmp-" in f]


def test_machine_onednn_follows_tensorflows_switch():
    """A fresh process with TF_ENABLE_ONEDNN_OPTS forced the other way from this one reports the other
    value: the field is what TensorFlow runs, not a guess from the CPU (both ways covered across machines)."""
    here = load_benchmark().machine_description()["onednn"]
    other = "off" if here == "on" else "on"
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import benchmark; "
            "print(json.dumps(benchmark.machine_description()))")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0" if other == "off" else "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", code, os.path.join(dh.ROOT, "scripts")], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["onednn"] == other


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
        "machine": {"cpu": "Test CPU", "cpu_features": ["avx2", "fma", "avx512f"], "onednn": "on", "usable_cores": 2,
                    "gpus": [{"name": "Test GPU", "compute_capability": "8.9"}], "python": "3.11", "tensorflow": "2.21",
                    "keras": "3.15", "onnxruntime": "1.32"}, "quick": False,
        "pipeline": {"toolkit_images_per_sec": 300.0, "baseline_images_per_sec": 100.0, "ratio": 3.0,
                     "toolkit_cpu_ms_per_image": 1.5, "baseline_cpu_ms_per_image": 3.0, "load_average": [0.5, 0.4, 0.3]},
        "train": {"notebook_images_per_sec": 2.0, "keras_best_images_per_sec": 2.0, "keras_best_variant": "keras_fit_fp32",
                  "toolkit_default_variant": "toolkit_fp32_xla", "toolkit_default_images_per_sec": 3.0,
                  "variants": {"notebook": {"images_per_sec": 2.0, "cpu_ms_per_image": 900.0, "achieved_gflops": 6.0, "share_of_peak": None},
                               "toolkit_fp32_xla": {"images_per_sec": 3.0, "cpu_ms_per_image": 600.0, "achieved_gflops": 9.0, "share_of_peak": 0.05},
                               "toolkit_bf16_xla": {"images_per_sec": 3.0, "cpu_ms_per_image": 600.0, "achieved_gflops": 9.0, "share_of_peak": 0.000631},
                               "toolkit_fp32": {"error": "did not finish 2 warm-up + 1 timed step in 900 s"}},
                  "skipped": {"toolkit_bf16": "emulated: this CPU has no bf16 arithmetic (amx_bf16 or avx512_bf16)"},
                  "goals": {"toolkit_default_at_least_2x_notebook": {"target": 2.0, "ratio": 1.5, "met": False}}},
        "inference": {"onnx_fp32_images_per_sec": 8.0, "savedmodel_images_per_sec": 4.0, "keras_one_by_one_images_per_sec": 2.0,
                      "onnx_fp32_end_to_end_images_per_sec": 7.0, "int8_top1_agreement": 0.995, "cpu_ms_per_image": {"onnx_fp32": 100.0}},
    }
    text = benchmark.report(results)
    lines = text.splitlines()
    assert lines[0] == ("Machine: Test CPU [avx2, fma, avx512f], oneDNN on, GPUs: Test GPU (compute 8.9), 2 usable cores, "
                        "Python 3.11, TensorFlow 2.21, Keras 3.15, onnxruntime 1.32")
    assert "| toolkit make_train_dataset (shards) | 300.0 | 1.5 | 3.0x |" in lines
    assert "| toolkit_fp32_xla (toolkit default) | 3.0 | 1.50x | 1.50x | 600.0 | 9.0 | 5.0% |" in lines
    assert "| toolkit_bf16_xla | 3.0 | 1.50x | 1.50x | 600.0 | 9.0 | 0.063% |" in lines  # an AMX peak's tiny share keeps its digits
    assert "| notebook | 2.0 | 1.00x | 1.00x | 900.0 | 6.0 | unknown |" in lines
    assert "| toolkit_fp32 | - | - | - | - | - | failed: did not finish 2 warm-up + 1 timed step in 900 s |" in lines
    assert "| toolkit_bf16 | - | - | - | - | - | skipped: emulated: this CPU has no bf16 arithmetic (amx_bf16 or avx512_bf16) |" in lines
    assert "- goal toolkit default at least 2x notebook: FAIL (measured 1.50x, target 2x)" in lines  # a note under the table
    assert "| ONNX float32 (onnxruntime) | 8.0 | 100.0 | 2.00x |" in lines
    assert "| int8 top-1 agreement with float32 | 99.5% | - | - |" in lines
    assert not [line for line in lines if "toolkit_fp16" in line]  # variants neither run nor skipped are not listed


def test_a_train_variant_out_of_time_is_reported_not_fatal(tmp_path):
    load_benchmark()  # puts scripts/ on sys.path
    import bench_train_variant

    got = bench_train_variant.run_variant_subprocess("toolkit_fp32", str(tmp_path), str(tmp_path), 4, 32, 1, 2, timeout=2)
    assert got == {"error": "did not finish 1 warm-up + 1 timed step in 2 s"}
