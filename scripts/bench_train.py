"""The `train` benchmark section: training images/s of the toolkit's loop against Keras model.fit.

Every variant runs in its own subprocess (a dtype policy and XLA are process-wide) and is fed from
disk the way it would be in real use, so the figures are end to end (input pipeline + step):

  toolkit_fp32, toolkit_bf16, toolkit_fp16 (+ _xla): toolkit.loop.Trainer under a OneDevice strategy,
      fed by toolkit.data.pipeline.make_train_dataset from the TFRecord shards in --data_dir
  keras_fit: keras.applications.ResNet50V2(weights=None) compiled with Adam and
      sparse_categorical_crossentropy, model.fit fed by keras.utils.image_dataset_from_directory on
      the photo folder behind the shards (--folder), the way our users' notebooks do it

Neither input is cached. Run one variant by hand:
  python scripts/bench_train.py --variant toolkit_fp32 --data_dir SHARDS --folder PHOTOS/train --image_size 224
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = ("toolkit_fp32", "toolkit_fp32_xla", "toolkit_bf16", "toolkit_bf16_xla", "toolkit_fp16", "toolkit_fp16_xla", "keras_fit")


def _time_steps(step, warmup: int, steps: int) -> float:
    """Seconds for `steps` calls after `warmup` calls. A progress line after each timed step lets
    the parent compute a rate from the steps done when a slow variant runs out of time."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for done in range(1, steps + 1):
        step()
        print(json.dumps({"timed_steps": done, "seconds": time.perf_counter() - start}), flush=True)
    return time.perf_counter() - start


def measure_toolkit(precision: str, xla: bool, data_dir: str, batch: int, size: int, warmup: int, steps: int) -> float:
    import tensorflow as tf

    from toolkit import distribute, loop
    from toolkit.config import DataConfig, TrainConfig
    from toolkit.data import pipeline, shards
    from toolkit.models import resnet_v2

    info = shards.read_dataset_info(data_dir)
    distribute.set_precision_policy(precision)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0" if not tf.config.list_logical_devices("GPU") else "/gpu:0")
    config = TrainConfig(optimizer="adam", learning_rate=1e-3, warmup_epochs=0, epochs=1)
    with strategy.scope():
        model = resnet_v2.build_model(info.num_classes, size)
        optimizer = loop.make_optimizer(config, steps_per_epoch=1000, precision=precision)
        loop.build_optimizer_state(optimizer, model)
    trainer = loop.Trainer(model, optimizer, strategy, batch, info.num_classes, xla=xla)
    data = DataConfig(data_dir=data_dir, image_size=size, batch_size=batch, cache=False)
    per_epoch = max(1, (info.counts.get("train") or batch) // batch)
    ds = pipeline.make_train_dataset(data, info.split_files("train"), steps_per_epoch=per_epoch)
    it = iter(strategy.experimental_distribute_dataset(ds))
    seconds = _time_steps(lambda: trainer.train_step(next(it))["loss"].numpy(), warmup, steps)
    return batch * steps / seconds


def measure_keras_fit(folder: str, batch: int, size: int, warmup: int, steps: int) -> float:
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(folder, image_size=(size, size), batch_size=batch, shuffle=True, seed=0, verbose=False)
    classes = len(ds.class_names)
    ds = ds.map(lambda x, y: (x / 127.5 - 1.0, y), num_parallel_calls=tf.data.AUTOTUNE).repeat().prefetch(tf.data.AUTOTUNE)
    model = keras.applications.ResNet50V2(weights=None, input_shape=(size, size, 3), classes=classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(ds, steps_per_epoch=warmup, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return batch * steps / (time.perf_counter() - start)


def measure(variant: str, data_dir: str, folder: str, batch: int, size: int, warmup: int, steps: int) -> float:
    if variant == "keras_fit":
        return measure_keras_fit(folder, batch, size, warmup, steps)
    _, precision, *rest = variant.split("_")
    return measure_toolkit(precision, bool(rest), data_dir, batch, size, warmup, steps)


def run_variant_subprocess(variant: str, data_dir: str, folder: str, batch: int, size: int, warmup: int, steps: int,
                           timeout: float | None = None) -> dict:
    """Run one variant in a fresh interpreter; returns {"images_per_sec": ...} or {"error": ...}."""
    cmd = [sys.executable, os.path.abspath(__file__), "--variant", variant, "--data_dir", data_dir, "--folder", folder,
           "--batch_size", str(batch), "--image_size", str(size), "--warmup", str(warmup), "--steps", str(steps)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        progress = [json.loads(line) for line in out.splitlines() if line.startswith('{"timed_steps"')]
        if not progress:
            return {"error": f"did not finish {warmup} warm-up + 1 timed step in {timeout:.0f} s"}
        last = progress[-1]
        return {"images_per_sec": batch * last["timed_steps"] / last["seconds"],
                "partial": f"{last['timed_steps']} of {steps} timed steps within the {timeout:.0f} s limit"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"variant"')]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def count_flops(model) -> float:
    """Forward FLOPs per image of the convolutions and dense layers (2 per multiply-add)."""
    flops = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            flops += 2 * h * w * c_out * kh * kw * layer.input.shape[-1]
        elif kind == "Dense":
            flops += 2 * layer.input.shape[-1] * layer.units
    return float(flops)


def model_flops_per_image(size: int) -> float:
    """Forward FLOPs of ResNet50V2 (1000 classes) at `size`."""
    from toolkit.models import resnet_v2

    return count_flops(resnet_v2.build_model(1000, size))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--data_dir", required=True, help="TFRecord shards from toolkit.data.convert (toolkit variants)")
    parser.add_argument("--folder", required=True, help="the photo folder with one subfolder per class (keras_fit)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    rate = measure(args.variant, args.data_dir, args.folder, args.batch_size, args.image_size, args.warmup, args.steps)
    print(json.dumps({"variant": args.variant, "images_per_sec": rate}))


if __name__ == "__main__":
    main()
