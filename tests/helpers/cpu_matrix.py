"""The CPU-sensitive paths in one process, for the oneDNN setting the caller put in the environment.

tests/test_cpu_matrix.py runs this twice, with TF_ENABLE_ONEDNN_OPTS=1 and =0, so every check
here runs on both kinds of CPU kernels whatever CPU the suite lands on. It prints one JSON line:

- `loop`: the train step for fp32, bf16 and fp16 on one device: losses of a few steps on a fixed
  batch, and the compute dtype of the stem. As a graph always; XLA-compiled (fp32 and bf16 at one
  size, fp16 in the two-size run) only with oneDNN off, the setting under which `--xla auto` picks XLA on an AVX2 CPU: XLA
  compiles its own kernels, and its losses came out bit-identical with oneDNN on and off (Zen 3,
  2026-12-02), so a second pass cost three minutes of CI and checked nothing new.
- `empty_replica`: evaluation over two replicas of a set whose last batch leaves replica 1 with
  nothing, beside the same evaluation on one device.
- `steps_per_loop`: three steps in one device-side loop against three single steps, on one
  device and on two replicas (oneDNN off only: both sides of the comparison run the same kernels).
- `run`: toolkit.train.run.run end to end on two CPU replicas in bf16 with the small-data
  techniques on (RandAugment, mixup/CutMix soft labels, EMA of the weights, two steps per call):
  train, evaluate with a partial last batch, summary, export with the parity gate.
- `infer`: batch inference over the validation shards with the exported ONNX model and the
  SavedModel (a batch size that leaves a partial last batch).

The network is ResNetV2 with one bottleneck block per stage: the same layer kinds as ResNet50V2
(every kernel the matrix is about) at a fraction of the compile time on 2 cores.
"""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from toolkit.train import distribute  # noqa: E402
from toolkit.train import steps as loop
from toolkit.train import optim
from toolkit.common import machine
from toolkit.train import run as training
from toolkit.config import Config, DataConfig, ExportConfig, TrainConfig  # noqa: E402
from toolkit.models import resnet_v2  # noqa: E402

resnet_v2.STAGES[50] = (1, 1, 1, 1)
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def fixed_batch(n=8, size=32, classes=4):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    images = rng.uniform(-1, 1, (n, size, size, 3)).astype("float32")
    images[..., 0] += labels[:, None, None] * 0.5  # a learnable signal
    return tf.constant(images), tf.constant(labels, tf.int32)


def train_steps(precision, xla, sizes=(32,)):
    """Losses of steps on fixed batches; several sizes (--train_sizes) take turns on a model built for any size."""
    keras.mixed_precision.set_global_policy(POLICIES[precision])
    try:
        keras.utils.set_random_seed(0)
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        config = TrainConfig(optimizer="adam", learning_rate=1e-3, warmup_epochs=0, epochs=1, weight_decay=0)
        with strategy.scope():
            model = resnet_v2.build_model(4, 32 if sizes == (32,) else None)
            optimizer = optim.make_optimizer(config, steps_per_epoch=100, precision=precision)
            optim.build_optimizer_state(optimizer, model)
        trainer = loop.Trainer(model, optimizer, strategy, global_batch_size=8, num_classes=4, xla=xla)
        batches = [fixed_batch(size=size) for size in sizes]
        # fp16 starts at a loss scale of 2^15 that overflows: the first steps are skipped while it halves
        steps = 14 if precision == "fp16" else 6
        losses = [float(trainer.train_step(batches[i % len(batches)])["loss"]) for i in range(steps)]
        return {"losses": losses, "stem_dtype": model.get_layer("conv1_conv").compute_dtype}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def empty_replica_evaluation():
    keras.utils.set_random_seed(1)
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    with two.scope():
        model2 = resnet_v2.build_model(4, 32)
    with one.scope():
        model1 = resnet_v2.build_model(4, 32)
    model1.set_weights(model2.get_weights())
    images, labels = fixed_batch(n=9)
    # global batch 8 over 2 replicas: 4 + 4, then 1 + 0 (replica 1 gets an empty batch)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    out = {}
    for name, strategy, model in (("two", two, model2), ("one", one, model1)):
        trainer = loop.Trainer(model, keras.optimizers.SGD(), strategy, global_batch_size=8, num_classes=4)
        out[name] = trainer.evaluate(strategy.experimental_distribute_dataset(ds))
    return out


def steps_per_loop_equivalence():
    """Three steps in one `train_steps` call against three `train_step` calls on the same batches,
    from the same weights, on one device and on two replicas."""
    images, labels = fixed_batch(n=24)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    config = TrainConfig(optimizer="sgd", learning_rate=0.05, momentum=0.9, warmup_epochs=0, epochs=1, weight_decay=0)
    strategies = {"one": tf.distribute.OneDeviceStrategy("/cpu:0"),
                  "two": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                                        cross_device_ops=tf.distribute.ReductionToOneDevice())}
    out = {}
    for name, strategy in strategies.items():
        keras.utils.set_random_seed(2)
        runs, initial = {}, None
        for mode in ("loop", "single"):
            with strategy.scope():
                model = resnet_v2.build_model(4, 32)
                if initial is None:
                    initial = model.get_weights()
                model.set_weights(initial)
                optimizer = optim.make_optimizer(config, steps_per_epoch=100, precision="fp32")
                optim.build_optimizer_state(optimizer, model)
            trainer = loop.Trainer(model, optimizer, strategy, global_batch_size=8, num_classes=4)
            batches = iter(strategy.experimental_distribute_dataset(ds))
            if mode == "loop":
                losses = [float(x) for x in trainer.train_steps(batches, 3)["loss"].numpy()]
            else:
                losses = [float(trainer.train_step(next(batches))["loss"]) for _ in range(3)]
            runs[mode] = (losses, model.get_weights())
        (loop_losses, loop_weights), (single_losses, single_weights) = runs["loop"], runs["single"]
        out[name] = {
            "losses_loop": loop_losses,
            "losses_single": single_losses,
            # relative for large values (BatchNorm's moving variances reach the tens here: one float32 ulp is 4e-6)
            "max_weight_diff": max(float(np.max(np.abs(a - b) / (1 + np.abs(b)))) for a, b in zip(loop_weights, single_weights)),
            "weights_moved": max(float(np.max(np.abs(a - b))) for a, b in zip(loop_weights, initial)),
        }
    return out


def end_to_end(base):
    from toolkit.data import sources

    data = sources.write_demo_dataset(os.path.join(base, "data"), train_count=32, val_count=25, image_size=40,
                                      num_shards=2)
    config = Config(
        # progressive resizing: epoch 1 at 40 px, epoch 2 at 48, evaluated and exported at 32
        data=DataConfig(data_dir=data, image_size=32, batch_size=8, seed=5, randaugment="2,9", mixup_alpha=0.2,
                        cutmix_alpha=1.0, train_sizes="40@1,48@2"),
        train=TrainConfig(model_dir=os.path.join(base, "run"), epochs=2, steps_per_epoch=2, optimizer="sgd",
                          learning_rate=0.01, warmup_epochs=0, precision="bf16", cpu_replicas=2, log_every=2,
                          steps_per_loop=2, ema_decay=0.9),
        export=ExportConfig(parity_images=0),
    )
    summary = training.run(config)
    result = {k: summary.get(k) for k in ("val_images", "val_top1", "ema_val_top1", "exported_weights", "replicas",
                                          "precision", "xla", "export", "machine", "image_size", "steps")}
    result["history_epochs"] = [row["epoch"] for row in summary["history"]]
    with open(os.path.join(summary["export"]["export_dir"], "export.json")) as f:
        result["export_image_size"] = json.load(f)["image_size"]
    result["exported_equals"] = exported_weights_equal(os.path.join(base, "run"))
    return data, result


def exported_weights_equal(model_dir):
    """Largest difference of model.weights.h5 from the last checkpoint's raw and EMA weights."""
    keras.mixed_precision.set_global_policy("float32")
    raw, averaged, written = (resnet_v2.build_model(4, 32) for _ in range(3))
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    tf.train.Checkpoint(model=raw, ema_model=averaged).restore(latest).expect_partial()
    written.load_weights(os.path.join(model_dir, "model.weights.h5"))
    diff = lambda a, b: max(float(np.max(np.abs(x - y))) for x, y in zip(a.get_weights(), b.get_weights()))  # noqa: E731
    return {"ema": diff(written, averaged), "raw": diff(written, raw)}


def batch_inference(export_dir, data):
    import glob

    from toolkit.infer import predict as inference
    from toolkit.infer import loaders as runtimes

    files = sorted(glob.glob(os.path.join(data, "val-*")))
    probs, errors = {}, {}
    for backend in ("onnx", "savedmodel"):
        model = runtimes.load_model(export_dir, backend)
        results = list(inference.predict(model, inference.list_inputs(files), batch_size=8))
        errors[backend] = [r.error for r in results if not r.ok]
        probs[backend] = np.stack([r.probabilities for r in results if r.ok])
    return {
        "scored": {k: len(v) for k, v in probs.items()},
        "errors": errors,
        "max_abs_diff": float(np.max(np.abs(probs["onnx"] - probs["savedmodel"]))),
    }


def main():
    distribute.setup_devices(cpu_replicas=2)
    result = {"onednn": machine.onednn_enabled(), "seconds": {}}

    def timed(name, fn, *args, **kwargs):  # seconds per part: what the suite's time goes to on this CPU
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        result["seconds"][name] = round(time.perf_counter() - start, 1)
        return value

    once = not result["onednn"]  # the parts that do not depend on oneDNN run in one of the two processes
    # fp16 under XLA is the two-size run below (a GPU's default, with progressive resizing)
    result["loop"] = {f"{p}-{'xla' if x else 'graph'}": timed(f"loop-{p}-{'xla' if x else 'graph'}", train_steps, p, x)
                      for p in POLICIES for x in ((False, True) if once and p != "fp16" else (False,))}
    if once:
        result["loop_two_sizes"] = timed("loop_two_sizes", train_steps, "fp16", True, sizes=(32, 64))
    result["empty_replica"] = timed("empty_replica", empty_replica_evaluation)
    if once:
        result["steps_per_loop"] = timed("steps_per_loop", steps_per_loop_equivalence)
    with tempfile.TemporaryDirectory() as base:
        data, result["run"] = timed("run", end_to_end, base)
        export = result["run"]["export"] or {}
        if export.get("export_dir"):
            result["infer"] = timed("infer", batch_inference, export["export_dir"], data)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
