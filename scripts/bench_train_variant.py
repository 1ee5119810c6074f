"""One `train` benchmark variant, measured in this process (scripts/bench_train.py runs each in its own).

A dtype policy and XLA are process-wide, so every variant gets a fresh interpreter:
  notebook              keras.applications.ResNet50V2(weights=None) + model.fit, fp32, Keras'
                        default compile (jit_compile="auto": off on a CPU-only machine), fed by
                        image_dataset_from_directory on the photo folder (scaled to [-1, 1])
  keras_fit_P[_jit]     the same under Keras' mixed policy for precision P, jit_compile off / on
  toolkit_P[_xla]       toolkit.train.steps.Trainer set up as `python -m toolkit.train` does on one device
                        (distribute.make_runtime: threads, precision policy, XLA, steps per loop),
                        fed by pipeline.make_train_dataset from the shards, called in chunks of
                        steps_per_loop as training.fit calls it
Both sides use Adam at 1e-3; neither input is cached. After the warm-up steps each timed step
prints a progress line, so a variant stopped at its time limit still yields a rate.

  python scripts/bench_train_variant.py --variant toolkit_bf16 --data_dir SHARDS --folder PHOTOS/train --image_size 224
"""


from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_clock import cpu_seconds  # noqa: E402

PRECISIONS = ("fp32", "bf16", "fp16")
KERAS_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # notebook | keras_fit | toolkit
    precision: str
    compiled: bool | None  # XLA (toolkit) or jit_compile (Keras); None: Keras' own default


def parse_variant(name: str) -> Variant:
    """notebook, keras_fit_<precision>[_jit] or toolkit_<precision>[_xla]; ValueError otherwise."""
    if name == "notebook":
        return Variant(name, "notebook", "fp32", None)
    match = re.fullmatch(r"(keras_fit|toolkit)_(fp32|bf16|fp16)(_jit|_xla)?", name)
    if not match or (match[3] and match[3] != {"keras_fit": "_jit", "toolkit": "_xla"}[match[1]]):
        raise ValueError(f"unknown train variant {name!r}: notebook, keras_fit_<fp32|bf16|fp16>[_jit] or toolkit_<fp32|bf16|fp16>[_xla]")
    return Variant(name, match[1], match[2], bool(match[3]))


def variant_name(kind: str, precision: str, compiled: bool) -> str:
    return f"{kind}_{precision}" + (("_jit" if kind == "keras_fit" else "_xla") if compiled else "")


PROFILE_ENV = "TOOLKIT_BENCH_PROFILE"  # a folder: TensorFlow's profiler traces the timed steps into it (bench_profile.py)


def _profiler(start: bool) -> None:
    folder = os.environ.get(PROFILE_ENV)
    if folder:
        import tensorflow as tf

        tf.profiler.experimental.start(folder) if start else tf.profiler.experimental.stop()


def _progress(done: int, seconds: float, cpu: float) -> None:
    """One line per timed step: the parent computes a rate from them if the variant runs out of time."""
    print(json.dumps({"timed_steps": done, "seconds": seconds, "cpu_seconds": cpu}), flush=True)


def measure_toolkit(v: Variant, data_dir: str, batch: int, size: int, warmup: int, steps: int, auto: bool = False) -> dict:
    from toolkit.train import distribute
    from toolkit.train import steps as loop
    from toolkit.train import optim
    from toolkit.config import DataConfig, TrainConfig
    from toolkit.data import pipeline, shards
    from toolkit.models import resnet_v2

    # first: it sizes TensorFlow's thread pools, which only works before anything starts the runtime.
    # auto: the toolkit default, set up as a user without flags gets it, must come out as v
    rt = distribute.make_runtime(distribution="one_device", precision="auto" if auto else v.precision,
                                 xla="auto" if auto else "on" if v.compiled else "off")
    if auto and (rt.precision, rt.xla) != (v.precision, v.compiled):
        raise SystemExit(f"the toolkit default is {variant_name('toolkit', rt.precision, rt.xla)} in this process, not {v.name}")
    info = shards.read_dataset_info(data_dir)
    config = TrainConfig(optimizer="adam", learning_rate=1e-3, warmup_epochs=0, epochs=1)
    with rt.strategy.scope():
        model = resnet_v2.build_model(info.num_classes, size)
        optimizer = optim.make_optimizer(config, steps_per_epoch=1000, precision=rt.precision)
        optim.build_optimizer_state(optimizer, model)
    trainer = loop.Trainer(model, optimizer, rt.strategy, batch, info.num_classes, xla=rt.xla)
    data = DataConfig(data_dir=data_dir, image_size=size, batch_size=batch, cache=False)
    per_epoch = max(1, (info.counts.get("train") or batch) // batch)
    iterator = iter(rt.strategy.experimental_distribute_dataset(pipeline.make_train_dataset(data, info.split_files("train"), per_epoch)))
    for _ in range(warmup):  # tracing, the XLA compile, first allocations
        trainer.train_steps(iterator, 1)["loss"].numpy()
    _profiler(start=True)
    start, cpu, done = time.perf_counter(), cpu_seconds(), 0
    while done < steps:  # in chunks of steps_per_loop, as training.fit calls it
        n = min(rt.steps_per_loop, steps - done)
        trainer.train_steps(iterator, n)["loss"].numpy()
        done += n
        _progress(done, time.perf_counter() - start, cpu_seconds() - cpu)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    _profiler(start=False)
    return {"seconds": seconds, "cpu_seconds": cpu, "settings": {
        "precision": rt.precision, "precision_why": rt.precision_note, "xla": rt.xla, "xla_why": rt.xla_note, "steps_per_loop": rt.steps_per_loop, "threads": rt.threads}}


def measure_keras_fit(v: Variant, folder: str, batch: int, size: int, warmup: int, steps: int) -> dict:
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(KERAS_POLICIES[v.precision])
    ds = keras.utils.image_dataset_from_directory(folder, image_size=(size, size), batch_size=batch, shuffle=True, seed=0, verbose=False)
    classes = len(ds.class_names)
    ds = ds.map(lambda x, y: (x / 127.5 - 1.0, y), num_parallel_calls=tf.data.AUTOTUNE).repeat().prefetch(tf.data.AUTOTUNE)
    model = keras.applications.ResNet50V2(weights=None, input_shape=(size, size, 3), classes=classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile="auto" if v.compiled is None else v.compiled)  # fp16: compile adds the loss scaling

    clock = {}

    class Clock(keras.callbacks.Callback):  # the timed steps are those after the warm-up, as for the toolkit
        def on_train_batch_end(self, index, logs=None):
            if index + 1 == warmup:
                _profiler(start=True)
                clock.update(start=time.perf_counter(), cpu=cpu_seconds())
            elif index + 1 > warmup:
                clock.update(seconds=time.perf_counter() - clock["start"], cpu_seconds=cpu_seconds() - clock["cpu"])
                _progress(index + 1 - warmup, clock["seconds"], clock["cpu_seconds"])

    model.fit(ds, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[Clock()])
    _profiler(start=False)
    return {"seconds": clock["seconds"], "cpu_seconds": clock["cpu_seconds"],
            "settings": {"precision": v.precision, "policy": keras.mixed_precision.global_policy().name, "jit_compile": bool(model.jit_compile)}}


def measure(variant: str, data_dir: str, folder: str, batch: int, size: int, warmup: int, steps: int, auto: bool = False) -> dict:
    """{"images_per_sec", "cpu_ms_per_image", "settings"} of one variant in this process; auto: a
    toolkit variant set up with --precision auto --xla auto (SystemExit if that is not `variant`)."""
    v = parse_variant(variant)
    warmup = max(1, warmup)
    if v.kind == "toolkit":
        got = measure_toolkit(v, data_dir, batch, size, warmup, steps, auto)
    else:
        got = measure_keras_fit(v, folder, batch, size, warmup, steps)
    return {"images_per_sec": batch * steps / got["seconds"], "cpu_ms_per_image": 1000 * got["cpu_seconds"] / (batch * steps),
            "settings": got["settings"]}


def run_variant_subprocess(variant: str, data_dir: str, folder: str, batch: int, size: int, warmup: int, steps: int,
                           timeout: float | None = None, auto: bool = False, env: dict | None = None) -> dict:
    """Run one variant in a fresh interpreter: its measure() dict, or {"error": ...}; past the timeout,
    the rate of the timed steps it finished (marked "partial") when there were any."""
    cmd = [sys.executable, os.path.abspath(__file__), "--variant", variant, "--data_dir", data_dir, "--folder", folder,
           "--batch_size", str(batch), "--image_size", str(size), "--warmup", str(warmup), "--steps", str(steps)] + (["--auto"] * auto)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        progress = [json.loads(line) for line in out.splitlines() if line.startswith('{"timed_steps"')]
        if not progress:
            return {"error": f"did not finish {max(1, warmup)} warm-up + 1 timed step in {timeout:.0f} s"}
        last = progress[-1]
        return {"images_per_sec": batch * last["timed_steps"] / last["seconds"],
                "cpu_ms_per_image": 1000 * last["cpu_seconds"] / (batch * last["timed_steps"]),
                "partial": f"{last['timed_steps']} of {steps} timed steps within the {timeout:.0f} s limit"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"variant"')]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    got = json.loads(lines[-1])
    got.pop("variant")
    return got


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", required=True, help="notebook, keras_fit_<precision>[_jit] or toolkit_<precision>[_xla]")
    parser.add_argument("--data_dir", required=True, help="TFRecord shards from toolkit.data.convert (toolkit variants)")
    parser.add_argument("--folder", required=True, help="the photo folder with one subfolder per class (notebook, keras_fit)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--auto", action="store_true", help="toolkit variants: set up with --precision auto --xla auto, "
                                                            "as a user without flags gets it; fail unless that is --variant")
    args = parser.parse_args()
    try:
        parse_variant(args.variant)
    except ValueError as e:
        parser.error(f"--variant: {e}")
    got = measure(args.variant, args.data_dir, args.folder, args.batch_size, args.image_size, args.warmup, args.steps, args.auto)
    print(json.dumps({"variant": args.variant, **got}))


if __name__ == "__main__":
    main()
