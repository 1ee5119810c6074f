"""The `inference` benchmark section: images/s of each exported format on real photos.

  python scripts/benchmark.py --sections inference --json bench.json

Measured in one process on the same images (the hymenoptera validation photos through the shared
`preprocess.eval_image`, decoded once, in memory), batch after batch:
  onnx_fp32    model.onnx in onnxruntime              onnx_int8   model_int8.onnx (static QDQ int8)
  savedmodel   saved_model/ serving_default in TF     keras_one_by_one   Keras model.predict on one
                                                      image per call, as our users' notebooks do
Rounds alternate between the formats so that a neighbour's load hits all alike; the best round
counts. int8_top1_agreement compares the int8 and float32 ONNX answers on every photo.
onnx_fp32_end_to_end_images_per_sec is toolkit.infer.predict.predict from the photo files (decoding
in parallel with the model), what python -m toolkit.infer achieves: the photos listed again until
there are --inference_end_to_end_images inputs, best of the rounds; the seconds to its first result
(the pipeline's start) are reported beside it.

Without --inference_export_dir an export is built once (and kept in --inference_workdir, keyed by
the image size, the weights' digest and the photo folder: its path and a digest of its listing
with sizes and mtimes, so other or changed photos are converted afresh): the photo folder
converted to shards, a ResNet50V2, toolkit.export.run.export_model with --onnx_int8 (calibrated on
the training photos). A model is served at the size it was trained at: the export's own, or the
image_size in the run.json beside --inference_weights (a trained run's model.weights.h5, e.g. the
hymenoptera small-data run of RECIPES.md, trained at 96 px); --inference_image_size may only
repeat it. With random weights the size is --inference_image_size (224; 32 under --quick), and
the 2-class head is rescaled so that about half the photos go to each class (a fresh
network gives every photo the same class, which would make the int8 agreement trivially 100%), but
many photos sit near the decision boundary, so int8 agreement is best judged with trained weights.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np
from bench_clock import cpu_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("TOOLKIT_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
PHOTOS = os.path.join(SHARED_DATA, "hymenoptera")
FORMATS = ("onnx_fp32", "onnx_fp16", "onnx_int8", "savedmodel", "tflite_fp32", "tflite_int8")
TFLITE = {"tflite_fp32": "model.tflite", "tflite_int8": "model_int8.tflite"}  # timed when the export holds them (LiteRT)


def add_arguments(group) -> None:
    group.add_argument("--inference_export_dir", default="", help="export to measure (model.onnx, model_int8.onnx, saved_model/); empty: build one")
    group.add_argument("--inference_weights", default="", help="weights (.weights.h5) for the built export; empty: random")
    group.add_argument("--inference_workdir", default=os.path.join(tempfile.gettempdir(), "toolkit-bench-inference"),
                       help="where the built export is kept and reused")
    group.add_argument("--inference_photos", default=PHOTOS, help="photo folder with train/ (int8 calibration) and val/ (measured)")
    group.add_argument("--inference_image_size", type=int, default=0,
                       help="0: the size the model was trained at (the export's, or run.json beside --inference_weights); "
                            "224 for random weights (32 under --quick)")
    group.add_argument("--inference_batch_size", type=int, default=32)
    group.add_argument("--inference_images", type=int, default=0, help="validation photos measured; 0: all")
    group.add_argument("--inference_rounds", type=int, default=2)
    group.add_argument("--inference_end_to_end_images", type=int, default=1000,
                       help="inputs of each batch-inference run (the photos listed again until there are as many)")
    group.add_argument("--inference_keras_images", type=int, default=16, help="images given to model.predict one at a time")
    group.add_argument("--inference_threads", type=int, default=0, help="threads of onnxruntime; 0: its default (every core)")


def spread_head(model, images: np.ndarray) -> None:
    """Rescale a random 2-class head so that the logit margin over `images` is centred with std 2."""
    import keras

    from toolkit.data import preprocess

    features = keras.Model(model.input, model.get_layer("predictions").input).predict(preprocess.normalize(images), batch_size=16, verbose=0)
    dense = model.get_layer("predictions")
    kernel, _ = (w.numpy() for w in dense.weights)
    margin = features @ (kernel[:, 1] - kernel[:, 0])
    scale = 2.0 / max(float(margin.std()), 1e-12)
    dense.set_weights([kernel * scale, np.array([float(np.median(margin)) * scale, 0.0], np.float32)])


def folder_digest(photos: str) -> str:
    """12 hex digits naming a photo folder as it is now: its absolute path and every file under it
    (relative path, size, mtime). Other photos, or the same folder changed, give another digest."""
    import hashlib

    root = os.path.abspath(photos)
    h = hashlib.sha256(root.encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            h.update(f"\0{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def trained_run(weights: str) -> dict:
    """The run.json beside a weights file (what the weights were trained as: image_size, depth); {} when absent."""
    from toolkit import layout

    try:
        record = layout.load_run_record(os.path.dirname(os.path.abspath(weights)))
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def serving_size(asked: int, weights: str, quick: bool = False) -> tuple:
    """(image size, depth, where the size came from) for a built export: the size the weights were
    trained at. SystemExit when --inference_image_size contradicts it, or when trained weights come
    without a run.json and no size is given."""
    if not weights:
        return asked or (32 if quick else 224), 50, "--inference_image_size" if asked else "the default for random weights"
    run = trained_run(weights)
    trained = run.get("image_size")
    if trained is None:
        if not asked:
            raise SystemExit(f"benchmark: --inference_image_size: no run.json with image_size beside {weights}, so the size "
                             "the weights were trained at is unknown; pass it")
        return asked, run.get("depth", 50), "--inference_image_size (no run.json beside the weights)"
    if asked and asked != trained:
        raise SystemExit(f"benchmark: --inference_image_size: {weights} was trained at {trained} px "
                         f"({os.path.dirname(os.path.abspath(weights))}/run.json); a model is served at its training size, not {asked}")
    return int(trained), run.get("depth", 50), f"run.json beside {weights}"


def build_export(workdir: str, photos: str, size: int, weights: str = "", log=print, depth: int = 50) -> str:
    """An export with model.onnx, model_int8.onnx and saved_model/ at `size` px, reused when one was
    built before from the same weights, the same photos (folder_digest) and int8 calibration size."""
    import hashlib

    import keras

    from toolkit import layout
    from toolkit.export import extras
    from toolkit.export import run as exporting
    from toolkit.config import Config, ExportConfig
    from toolkit.data import folder, shards
    from toolkit.models import resnet_v2

    if weights and not os.path.isfile(weights):
        raise SystemExit(f"benchmark: --inference_weights: no such file {weights}")
    tag = hashlib.sha256(open(weights, "rb").read()).hexdigest()[:12] if weights else "random"
    base = os.path.join(workdir, f"resnet50v2_{size}px_{tag}_photos-{folder_digest(photos)}_calibration-{extras.CALIBRATION_IMAGES}")
    target = os.path.join(base, "export")
    if all(os.path.exists(os.path.join(target, f)) for f in (layout.ONNX_FILES["onnx_int8"], layout.ONNX_FILES["onnx_fp16"], layout.EXPORT_RECORD)):
        log(f"inference: reusing the export in {target}")
        return target
    data_dir, model_dir = os.path.join(base, "shards"), os.path.join(base, "run")
    if not os.path.exists(os.path.join(data_dir, shards.MANIFEST)):
        folder.convert_folder(photos, data_dir, min_shards=1, progress=False, overwrite=False)
    info = shards.read_dataset_info(data_dir)
    keras.utils.set_random_seed(0)
    model = resnet_v2.build_model(info.num_classes, size, depth)
    if weights:
        model.load_weights(weights)
    elif info.num_classes == 2:
        spread_head(model, np.concatenate([b[0] for b in _batches(info.split_files("train"), size, 64)]))
    os.makedirs(model_dir, exist_ok=True)
    model.save_weights(os.path.join(model_dir, layout.WEIGHTS))
    layout.save_run_record(model_dir, {
        "toolkit_version": "bench", "num_classes": info.num_classes, "class_names": list(info.class_names), "image_size": size,
        "depth": depth, "data_dir": data_dir, "precision": "fp32", "config": Config().to_dict(),
    })
    start = time.time()
    try:
        exporting.export_model(model_dir, ExportConfig(export_dir=target, onnx_fp16=True, onnx_int8=True, tflite=True, tflite_int8=True,
                                                          parity_images=32), log=log)
    except exporting.ParityError as e:  # the artifacts are in place; the benchmark still measures them
        log(f"inference: {e}")
    log(f"inference: export built in {time.time() - start:.0f} s")
    return target


def _batches(files, size, limit):
    from toolkit.data import records

    return records.image_batches(files, size, limit)


def load_images(folder: str, size: int, limit: int) -> tuple:
    """(float32 [n, size, size, 3] images in [0, 255], their paths) through toolkit.infer.predict."""
    from toolkit.infer import predict as inference
    from toolkit.infer import loaders as runtimes

    inputs = inference.list_inputs([folder])
    if limit:
        inputs = inference.Inputs(inputs.files[:limit], count=min(limit, len(inputs.files)))
    # the inference pipeline (file checks, eval_image) with a stand-in model: only the images are wanted
    stand_in = runtimes.Model("none", "", ("-",), size, lambda x: np.ones((len(x), 1), np.float32))
    kept = [(r.input, r.image) for r in inference.predict(stand_in, inputs, 64, keep_images=True) if r.ok]
    return np.stack([image for _, image in kept]), [p for p, _ in kept]


def _keras_model(export_dir: str, record: dict):
    from toolkit.export import rebuild
    from toolkit.models import resnet_v2

    try:
        model, _ = rebuild.rebuild_float32(record["model_dir"], rebuild.read_run(record["model_dir"]))
        return model
    except (KeyError, ValueError, OSError):
        return resnet_v2.build_model(record["num_classes"], record["image_size"], record.get("depth", 50))  # same speed


def end_to_end_count(paths, args) -> int:
    """Inputs of the batch-inference runs: the photos listed over and over up to --inference_end_to_end_images."""
    return len(paths) * max(1, -(-args.inference_end_to_end_images // len(paths)))


def batch_inference(model, paths, batch: int, args) -> tuple:
    """(best images/s over --inference_rounds, seconds to the first result) of toolkit.infer.predict.

    A batch job scores a folder, not 150 photos: over the validation photos alone, the pipeline's
    start (building and tracing it, filling the first batch: about 0.5 s) would weigh as much as a
    third of the run. One short call first pays the process's one-time TensorFlow start.
    """
    from toolkit.infer import predict as inference

    files = tuple(paths) * (end_to_end_count(paths, args) // len(paths))
    list(inference.predict(model, inference.Inputs(tuple(paths[:batch]), count=min(batch, len(paths))), batch))
    rates, firsts = [], []
    for _ in range(args.inference_rounds):
        start = time.perf_counter()
        scored, first = 0, None
        for result in inference.predict(model, inference.Inputs(files, count=len(files)), batch):
            first = first or time.perf_counter() - start
            scored += result.ok
        rates.append(scored / (time.perf_counter() - start))
        firsts.append(first)
    return max(rates), min(firsts)


def timed(run, images: np.ndarray, batch: int) -> tuple:
    """(images/s, CPU ms per image, outputs) of one pass over images."""
    outputs = []
    cpu, start = cpu_seconds(), time.perf_counter()
    for s in range(0, len(images), batch):
        outputs.append(np.asarray(run(images[s: s + batch])))
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return len(images) / elapsed, 1000.0 * cpu / len(images), np.concatenate(outputs)


def run(args) -> dict:
    from toolkit import layout
    from toolkit.infer import predict as inference
    from toolkit.infer import loaders as runtimes
    from toolkit.data import preprocess

    if args.inference_export_dir:
        export_dir, size_from = args.inference_export_dir, "the export's export.json"
    else:
        size, depth, size_from = serving_size(args.inference_image_size, args.inference_weights, getattr(args, "quick", False))
        export_dir = build_export(args.inference_workdir, args.inference_photos, size, args.inference_weights, depth=depth)
    with open(os.path.join(export_dir, "export.json")) as f:
        record = json.load(f)
    size = record["image_size"]
    if args.inference_image_size and args.inference_image_size != size:
        raise SystemExit(f"benchmark: --inference_image_size: {export_dir} serves {size} px, the size it was trained at; "
                         f"not {args.inference_image_size}")
    val = os.path.join(args.inference_photos, "val")
    images, paths = load_images(val if os.path.isdir(val) else args.inference_photos, size, args.inference_images)

    threads = args.inference_threads
    models = {
        "onnx_fp32": runtimes.load_model(os.path.join(export_dir, "model.onnx"), "onnx", threads),
        "savedmodel": runtimes.load_model(os.path.join(export_dir, "saved_model"), "savedmodel", threads),
    }
    for name in ("onnx_fp16", "onnx_int8"):
        if os.path.exists(os.path.join(export_dir, layout.ONNX_FILES[name])):
            models[name] = runtimes.load_model(os.path.join(export_dir, layout.ONNX_FILES[name]), "onnx", threads)
    models.update({name: runtimes.load_model(os.path.join(export_dir, f), "tflite", threads)
                   for name, f in TFLITE.items() if os.path.exists(os.path.join(export_dir, f))})
    batch = args.inference_batch_size
    for model in models.values():
        model(images[:batch])  # warm-up: graph optimization, thread pools, first allocations
    rounds = {name: [] for name in models}
    outputs = {}
    for _ in range(args.inference_rounds):
        for name, model in models.items():
            rate, cpu_ms, outputs[name] = timed(model, images, batch)
            rounds[name].append((rate, cpu_ms))

    keras_model = _keras_model(export_dir, record)
    one = [preprocess.normalize(image[None]).numpy() for image in images[: max(1, args.inference_keras_images)]]
    for x in one[:2]:
        keras_model.predict(x, verbose=0)
    keras_rate, keras_cpu, _ = timed(lambda x: keras_model.predict(preprocess.normalize(x).numpy(), verbose=0), images[: len(one)], 1)

    end_to_end, first_result = batch_inference(models["onnx_fp32"], paths, batch, args)

    best = {name: max(rate for rate, _ in rs) for name, rs in rounds.items()}
    results = {f"{name}_images_per_sec": round(best[name], 2) for name in FORMATS if name in best}
    results["keras_one_by_one_images_per_sec"] = round(keras_rate, 2)
    if "onnx_int8" in outputs:
        results["int8_top1_agreement"] = float(np.mean(outputs["onnx_int8"].argmax(1) == outputs["onnx_fp32"].argmax(1)))
        results["int8_max_abs_diff_probabilities"] = float(np.abs(outputs["onnx_int8"] - outputs["onnx_fp32"]).max())
    if "onnx_fp16" in outputs:
        results["fp16_top1_agreement"] = float(np.mean(outputs["onnx_fp16"].argmax(1) == outputs["onnx_fp32"].argmax(1)))
    results["onnx_fp32_end_to_end_images_per_sec"] = round(end_to_end, 2)
    results["end_to_end_images"] = end_to_end_count(paths, args)
    results["end_to_end_first_result_seconds"] = round(first_result, 3)
    results["end_to_end_share_of_onnx_fp32"] = round(end_to_end / best["onnx_fp32"], 3)
    sm = best["savedmodel"]
    results.update({f"{name}_vs_savedmodel": round(best[name] / sm, 2) for name in ("onnx_fp32", "onnx_fp16", "onnx_int8", *TFLITE) if name in best})
    if "tflite_int8" in outputs:
        results["tflite_int8_top1_agreement"] = float(np.mean(outputs["tflite_int8"].argmax(1) == outputs["onnx_fp32"].argmax(1)))
    results["keras_one_by_one_vs_savedmodel"] = round(keras_rate / sm, 3)
    results["fp32_max_abs_diff_probabilities"] = float(np.abs(outputs["onnx_fp32"] - outputs["savedmodel"]).max())
    results["targets"] = {
        "onnx_fp32_at_least_savedmodel": best["onnx_fp32"] >= sm,
        "onnx_int8_at_least_2x_savedmodel": best.get("onnx_int8", 0) >= 2 * sm,
        "int8_top1_agreement_at_least_0.99": results.get("int8_top1_agreement", 0) >= 0.99,
    }
    predicted = outputs["onnx_fp32"].argmax(1)
    results.update({
        "cpu_ms_per_image": {name: round(min(ms for _, ms in rs), 2) for name, rs in rounds.items()} | {"keras_one_by_one": round(keras_cpu, 2)},
        "rounds_images_per_sec": {name: [round(rate, 2) for rate, _ in rs] for name, rs in rounds.items()},
        "images": int(len(images)),
        "keras_images": len(one),
        "fp32_predicted_class_counts": np.bincount(predicted, minlength=len(record["class_names"])).tolist(),
        "image_size": size,
        "image_size_from": size_from,
        "batch_size": batch,
        "threads": threads or "default",
        "export_dir": os.path.abspath(export_dir),
        "weights": "the given export's" if args.inference_export_dir else os.path.abspath(args.inference_weights) if args.inference_weights else "random",
        "photos": os.path.abspath(args.inference_photos),
        "photos_digest": folder_digest(args.inference_photos),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "data": "validation photos through preprocess.eval_image, decoded once and held in memory (the model, not the decode, is measured)",
    })
    return results


def table(r: dict) -> tuple:
    """(header, rows) of the printed benchmark table."""
    header = ("inference", "images/s", "CPU ms / image", "vs SavedModel")
    cpu = r.get("cpu_ms_per_image", {})
    names = {"onnx_fp32": "ONNX float32 (onnxruntime)", "onnx_fp16": "ONNX float16 (onnxruntime)",
             "onnx_int8": "ONNX int8 (static QDQ)",
             "savedmodel": "TF SavedModel", "tflite_fp32": "TFLite float32 (LiteRT)", "tflite_int8": "TFLite int8 (LiteRT)",
             "keras_one_by_one": "Keras model.predict, one image per call"}
    rows = [(label, r[f"{key}_images_per_sec"], cpu.get(key, "-"), f"{r[f'{key}_images_per_sec'] / r['savedmodel_images_per_sec']:.2f}x")
            for key, label in names.items() if f"{key}_images_per_sec" in r]
    share = r.get("end_to_end_share_of_onnx_fp32")
    first = r.get("end_to_end_first_result_seconds")
    rows.append(("python -m toolkit.infer from the photo files, ONNX float32" + (f" ({100 * share:.0f}% of the model's speed)" if share else "")
                 + (f"; first result after {first:.2f} s" if first is not None else ""),
                 r["onnx_fp32_end_to_end_images_per_sec"], "-", "-"))
    for key, label in (("fp16_top1_agreement", "fp16"), ("int8_top1_agreement", "int8"), ("tflite_int8_top1_agreement", "TFLite int8")):
        if key in r:
            rows.append((f"{label} top-1 agreement with float32", f"{100 * r[key]:.1f}%", "-", "-"))
    return header, rows
