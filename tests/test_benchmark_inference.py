"""scripts/benchmark.py --quick with every section at once, on real photos and the tiny 32 px export plus an int8 model;
the inference section's export cache keyed by the photo folder, and a model served at the size it was trained at."""

import json
import os
import shutil

import numpy as np
import pytest

import inference_helpers as ih
from test_benchmark_pipeline import assert_names_its_machine, load_benchmark


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


def test_quick_runs_every_section_in_one_command(export_with_int8, tmp_path):
    """`--quick` with all three sections on real photos: one JSON with pipeline, train and inference."""
    from toolkit.data import folder

    photos = tmp_path / "photos"
    for c in ih.CLASSES:
        ih.copy_into(str(photos / "train" / c), ih.photos(c, 6))
        ih.copy_into(str(photos / "val" / c), ih.photos(c, 5, start=50))
    shards = tmp_path / "shards"
    folder.convert_folder(str(photos), str(shards), workers=1, progress=False)
    out = tmp_path / "bench.json"
    returned = load_benchmark().main(["--sections", "pipeline,train,inference", "--quick", "--json", str(out),
                                      "--data_dir", str(shards), "--batch_size", "4", "--image_size", "32",
                                      "--inference_export_dir", export_with_int8, "--inference_photos", str(photos),
                                      "--inference_batch_size", "4", "--markdown", str(tmp_path / "bench.md")])
    written = json.loads(out.read_text())
    tables = (tmp_path / "bench.md").read_text()
    for row in ("| toolkit make_train_dataset (shards) |", "| notebook |", "| ONNX int8 (static QDQ) |"):
        assert row in tables, row
    assert written == json.loads(json.dumps(returned))
    assert {"machine", "pipeline", "train", "inference"} <= set(written) and written["quick"] is True
    assert_names_its_machine(written["machine"], tables.splitlines()[0])

    p = written["pipeline"]
    assert p["toolkit_images_per_sec"] > 0 and p["baseline_images_per_sec"] > 0 and p["train_records"] == 12

    t = written["train"]  # the notebook and keras fit from the photo folder, the toolkit's default from the shards
    default = t["toolkit_default_variant"]
    assert t["notebook_images_per_sec"] > 0 and t["keras_best_images_per_sec"] > 0 and t["toolkit_default_images_per_sec"] > 0, t
    assert t["keras_best_variant"].startswith("keras_fit_") and t["keras_best_variant"] in t["variants"]
    assert t["toolkit_default_vs_notebook"] == pytest.approx(t["toolkit_default_images_per_sec"] / t["notebook_images_per_sec"], abs=0.01)
    assert t["toolkit_default_vs_keras_best"] == pytest.approx(t["toolkit_default_images_per_sec"] / t["keras_best_images_per_sec"], abs=0.01)
    assert set(t["goals"]) == {"toolkit_default_at_least_2x_notebook", "toolkit_default_at_least_1.15x_keras_best"}
    # the default ran as a user without flags gets it (--precision auto --xla auto in its own process) and came out as named
    settings = t["variants"][default]["settings"]
    assert default == f"toolkit_{settings['precision']}" + ("_xla" if settings["xla"] else "") and settings["steps_per_loop"] >= 1
    assert settings["precision_why"].startswith("auto") and settings["xla_why"].startswith("auto")
    assert t["variants"]["notebook"]["settings"]["precision"] == "fp32" and t["variants"]["notebook"]["settings"]["policy"] == "float32"
    assert t["skipped"] and all(why for why in t["skipped"].values())  # --quick skips, each with its reason
    assert f"| {default} (toolkit default" in tables and "- goal toolkit default at least 2x notebook: " in tables
    assert t["baseline_dir"] == str(photos / "train") and t["image_size"] == 32
    # ResNet50V2 forward FLOPs at 224 px are ~7 GFLOPs (2 per multiply-add); at 32 px about 1/49 of that
    assert 0.08e9 < t["model_forward_flops_per_image"] < 0.25e9
    d = t["variants"][default]
    assert d["achieved_gflops"] == pytest.approx(3 * t["model_forward_flops_per_image"] * d["images_per_sec"] / 1e9, rel=0.01)
    peak = t["peak"][settings["precision"]]
    assert peak["assumptions"] and (peak["gflops"] is None or d["share_of_peak"] == pytest.approx(d["achieved_gflops"] / peak["gflops"], rel=0.01))

    r = written["inference"]
    for key in ("onnx_fp32_images_per_sec", "onnx_int8_images_per_sec", "savedmodel_images_per_sec",
                "keras_one_by_one_images_per_sec", "onnx_fp32_end_to_end_images_per_sec"):
        assert r[key] > 0, key
    assert 0 <= r["int8_top1_agreement"] <= 1 and r["images"] == 10 and r["keras_images"] == 2 and r["image_size"] == ih.SIZE
    assert r["fp32_max_abs_diff_probabilities"] <= 1e-4  # the same model in two runtimes
    assert set(r["targets"]) == {"onnx_fp32_at_least_savedmodel", "onnx_int8_at_least_2x_savedmodel", "int8_top1_agreement_at_least_0.99"}
    assert sum(r["fp32_predicted_class_counts"]) == 10 and np.isclose(r["onnx_fp32_vs_savedmodel"],
                                                                       r["onnx_fp32_images_per_sec"] / r["savedmodel_images_per_sec"], rtol=0.02)


def _bench_inference():
    load_benchmark()  # puts scripts/ on sys.path
    import bench_inference

    return bench_inference


def test_the_photo_cache_key_follows_the_folder_and_its_contents(tmp_path):
    """A second run with other photos, or the same folder changed, must not reuse the first run's shards."""
    bi = _bench_inference()
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        ih.copy_into(str(folder / "val" / "ants"), ih.photos("ants", 2))
    key = bi.folder_digest(str(a))
    assert key == bi.folder_digest(str(a)) and len(key) == 12
    assert bi.folder_digest(str(b)) != key  # the same files in another folder
    ih.copy_into(str(a / "val" / "bees"), ih.photos("bees", 1))
    assert bi.folder_digest(str(a)) != key  # a photo added
    key = bi.folder_digest(str(a))
    photo = next((a / "val" / "ants").iterdir())
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    assert bi.folder_digest(str(a)) != key  # a photo replaced in place


def test_a_built_export_is_reused_only_for_the_same_photos_and_calibration(tmp_path, monkeypatch):
    from toolkit import layout
    from toolkit.data import folder
    from toolkit.export import extras

    bi = _bench_inference()
    a, b, work = tmp_path / "a", tmp_path / "b", tmp_path / "work"
    for photos in (a, b):
        ih.copy_into(str(photos / "train" / "ants"), ih.photos("ants", 1))
    done = work / f"resnet50v2_32px_random_photos-{bi.folder_digest(str(a))}_calibration-{extras.CALIBRATION_IMAGES}" / "export"
    done.mkdir(parents=True)
    for name in (layout.ONNX_FILES["onnx_int8"], layout.ONNX_FILES["onnx_fp16"], layout.EXPORT_RECORD):
        (done / name).write_text("{}")
    logged = []
    assert bi.build_export(str(work), str(a), 32, log=logged.append) == str(done) and "reusing" in logged[0]

    def converting(*args, **kwargs):
        raise RuntimeError(f"converting {args[0]}")

    monkeypatch.setattr(folder, "convert_folder", converting)
    with pytest.raises(RuntimeError, match=f"converting {b}"):  # other photos: converted afresh, not the cache of a
        bi.build_export(str(work), str(b), 32, log=logged.append)
    monkeypatch.setattr(extras, "CALIBRATION_IMAGES", extras.CALIBRATION_IMAGES // 4)
    with pytest.raises(RuntimeError, match=f"converting {a}"):  # int8 models calibrated otherwise: built afresh
        bi.build_export(str(work), str(a), 32, log=logged.append)


def test_a_model_is_served_at_the_size_it_was_trained_at(tmp_path, export_with_int8):
    import argparse

    bi = _bench_inference()
    run = tmp_path / "run"
    run.mkdir()
    weights = run / "model.weights.h5"
    weights.write_bytes(b"")
    assert bi.serving_size(0, "", quick=False)[:2] == (224, 50) and bi.serving_size(0, "", quick=True)[0] == 32
    with pytest.raises(SystemExit, match="trained at is unknown"):
        bi.serving_size(0, str(weights))
    assert bi.serving_size(64, str(weights))[0] == 64  # no run.json: the size given is taken
    (run / "run.json").write_text(json.dumps({"image_size": 96, "depth": 101}))
    assert bi.serving_size(0, str(weights)) == (96, 101, f"run.json beside {weights}")
    assert bi.serving_size(96, str(weights))[0] == 96
    with pytest.raises(SystemExit, match="trained at 96 px"):
        bi.serving_size(224, str(weights))
    args = argparse.Namespace(inference_export_dir=export_with_int8, inference_image_size=ih.SIZE * 2)
    with pytest.raises(SystemExit, match=f"serves {ih.SIZE} px"):  # an export is served at its own size
        bi.run(args)
