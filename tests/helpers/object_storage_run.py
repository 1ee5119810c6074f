"""Run in a subprocess: ram:// lives in one process, so everything happens here, in-process.

  python object_storage_run.py PHOTOS LOCAL_DIR [ROOT [quick]]

PHOTOS holds train/<class>/ and val/<class>/ JPEGs (a few real photos). Converts them to shards
under ROOT (default ram://objects; gs://... against tests/helpers/gcs_emulator.py), trains on them
with the run directory and the export there, checks the export again (toolkit.parity), resumes from
the checkpoint there, runs batch inference from the export into a prediction file there and again
from a local copy of the export, evaluates, and prints one JSON line of what it found. `quick` leaves
out the TFLite model, the second check, the evaluation and all but the ONNX predictions.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import tensorflow as tf  # noqa: E402

from toolkit.common import storage  # noqa: E402
from toolkit.config import (Config, ConvertConfig, DataConfig, EvaluateConfig, ExportConfig, InferConfig,  # noqa: E402
                            ModelConfig, TrainConfig)
from toolkit.data import convert  # noqa: E402
from toolkit.export import verify  # noqa: E402
from toolkit.infer import evaluate, predict  # noqa: E402
from toolkit.train import run as train_run  # noqa: E402

ROOT = sys.argv[3] if len(sys.argv) > 3 else "ram://objects"
QUICK = sys.argv[4:] == ["quick"]
SHARDS, MODEL, EXPORT = f"{ROOT}/shards", f"{ROOT}/model", f"{ROOT}/exported"


def config(epochs: int, export: bool) -> Config:
    return Config(
        data=DataConfig(data_dir=SHARDS, image_size=32, batch_size=4, shuffle_buffer=16),
        model=ModelConfig(depth=26),
        train=TrainConfig(recipe="default", model_dir=MODEL, epochs=epochs, steps_per_epoch=2, log_every=1, learning_rate=0.01,
                          warmup_epochs=0, precision="fp32", xla="off", speed_warmup_steps=0),
        export=ExportConfig(export=export, export_dir=EXPORT, parity_images=8, tflite=not QUICK),
    )


def tree(root: str) -> list:
    return sorted(f"{d}/{n}"[len(root) + 1:] for d, _, names in storage.walk(root) for n in names)


def main(photos: str, local_dir: str) -> None:
    found, began = {}, time.monotonic()
    lap = lambda phase: found.setdefault("seconds", {}).update({phase: round(time.monotonic() - began, 1)})  # noqa: E731
    conversion = convert.convert(ConvertConfig(src=photos, out=SHARDS, max_side=48, workers=1, progress=False))
    found["shards"] = tree(SHARDS)
    found["converted"] = {k: v["count"] for k, v in conversion.manifest["splits"].items()}
    lap("converted")

    first = train_run.run(config(epochs=1, export=True))
    found["first"] = {"steps": first["steps"], "export": first["export"]}
    found["model_files"] = tree(MODEL)
    found["export_files"] = tree(EXPORT)
    found["export_record"] = json.loads(storage.read_bytes(f"{EXPORT}/export.json"))["status"]
    found["metrics_after_first"] = len(storage.read_bytes(f"{MODEL}/metrics.jsonl").splitlines())
    lap("trained and exported")
    if not QUICK:  # python -m toolkit.parity on the export (before the resume changes the run's weights)
        checked = verify.verify_export(EXPORT, MODEL, parity_images=8, log=lambda line: None)
        found["verified"] = {"passed": checked["passed"], "export_dir": checked["export_dir"]}

    second = train_run.run(config(epochs=2, export=False))
    found["second"] = {"steps": second["steps"], "history": [h["epoch"] for h in second["history"]]}
    found["metrics"] = [json.loads(line) for line in storage.read_bytes(f"{MODEL}/metrics.jsonl").splitlines()]
    found["checkpoints"] = sorted(n for n in tf.io.gfile.listdir(f"{MODEL}/checkpoints") if n.endswith(".index"))
    lap("resumed")

    inputs = (os.path.join(photos, "val"),)
    local_export = os.path.join(local_dir, "exported")
    storage.copy_tree(EXPORT, local_export)
    for backend in ("onnx",) if QUICK else ("onnx", "savedmodel", "tflite"):
        remote_out, local_out = f"{ROOT}/predictions/{backend}.csv", os.path.join(local_dir, f"{backend}.csv")
        predict.predict_to_file(InferConfig(model=EXPORT, inputs=inputs, output=remote_out, backend=backend, progress="off"),
                                log=lambda line: None)
        predict.predict_to_file(InferConfig(model=local_export, inputs=inputs, output=local_out, backend=backend, progress="off"),
                                log=lambda line: None)
        found[f"predictions_{backend}"] = {"remote": storage.read_bytes(remote_out).decode(),
                                           "local": open(local_out, newline="").read()}
    if not QUICK:
        metrics = evaluate.evaluate_config(EvaluateConfig(model=EXPORT, data=SHARDS, out=f"{ROOT}/evaluation"),
                                           log=lambda line: None)
        found["evaluation"] = {"images": metrics["images"], "files": sorted(storage.listdir(f"{ROOT}/evaluation"))}
    lap("predicted")
    found["leftovers"] = [p for p in tree(ROOT) if "/.tmp-" in "/" + p or "/.rename-probe" in "/" + p]
    found["renames"] = storage.can_rename(ROOT)
    print("RESULT " + json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
