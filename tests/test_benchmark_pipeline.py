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


def test_train_section_quick_measures_each_variant_against_keras_fit(tmp_path):
    benchmark = load_benchmark()
    out = tmp_path / "train.json"
    returned = benchmark.main(["--sections", "train", "--quick", "--json", str(out),
                               "--train_variants", "toolkit_fp32,keras_fit"])
    t = json.loads(out.read_text())["train"]
    assert t == json.loads(json.dumps(returned["train"]))
    assert t["toolkit_fp32_images_per_sec"] > 0 and t["keras_fit_images_per_sec"] > 0
    assert t["toolkit_fp32_vs_keras_fit"] == pytest.approx(t["toolkit_fp32_images_per_sec"] / t["keras_fit_images_per_sec"], rel=0.02)
    assert t["image_size"] == 32
    # ResNet50V2 forward FLOPs at 224 px are ~7 GFLOPs (2 per multiply-add); at 32 px about 1/49 of that
    assert 0.08e9 < t["model_forward_flops_per_image"] < 0.25e9


def test_flop_counter_on_a_model_counted_by_hand():
    import keras

    benchmark = load_benchmark()
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3)(inputs)  # 8x8 outputs x 8 filters x (3*3*3) multiply-adds
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))  # 8 x 5 multiply-adds
    assert benchmark.bench_train.count_flops(model) == 2 * (8 * 8 * 8 * 27 + 8 * 5)
