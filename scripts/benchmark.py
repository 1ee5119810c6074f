"""Benchmarks of the toolkit on this machine, by section, written to one JSON file.

  python scripts/benchmark.py --sections pipeline,train,inference --data_dir SHARDS --json bench.json [--quick]

Sections live in the SECTIONS registry: a name, a description, a function adding the section's own
command-line arguments and a function returning a dict of results. To add one (`train`,
`inference`, ...), write those two functions and call `register(Section(...))`; the JSON file
gets a top-level key per section run, plus `machine` (toolkit.machine.describe(): CPU model and
features, oneDNN on/off, GPUs, library versions; every figure names its machine).

pipeline: images/s of `toolkit.data.pipeline.make_train_dataset` (random-resized crop decoded from
the shards, flip, resize, normalize, batch) against `keras.utils.image_dataset_from_directory` on
the photo folder the shards' manifest names as its source (decode, resize, normalize, batch), at
the same image and batch size, neither cached. Rounds alternate between the two so a neighbour's
load hits both alike; each round builds a fresh iterator, discards warm-up batches, then counts
images for a fixed time. The best round of each is reported (and every round), with the CPU time
per image (process CPU seconds / images: the per-core cost, steadier than images/s on a shared
machine) and the load average, so a reader can tell a quiet measurement from a busy one.

train: training images/s of ResNet50V2, end to end from disk, each variant in its own process
(scripts/bench_train.py): the toolkit loop at fp32, bf16 and fp16, XLA off and on, fed from the
shards, against keras.applications.ResNet50V2 + model.fit fed by image_dataset_from_directory on
the same photos. With the model's forward FLOPs per image (counted from its layers) it reports
the achieved FLOP/s (training ~ 3x forward) and their share of the CPU's estimated peak.

inference: images/s of ONNX fp32 / int8, the SavedModel and Keras one image at a time
(scripts/bench_inference.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Callable

# scripts/ is not a package: make `toolkit` importable when run from anywhere
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_inference  # noqa: E402  (scripts/bench_inference.py: the inference section)
from bench_clock import cpu_seconds  # noqa: E402
import bench_train  # noqa: E402  (scripts/bench_train.py: each train variant in its own process)

from toolkit import atomic, machine  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    description: str
    run: Callable[[argparse.Namespace], dict]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda group: None
    table: Callable[[dict], tuple] = lambda results: ((), [])  # (header, rows) of the printed table


SECTIONS: dict = {}


def register(section: Section) -> Section:
    SECTIONS[section.name] = section
    return section


def machine_description() -> dict:
    """toolkit.machine.describe() (CPU model and features, oneDNN on/off, GPUs, core counts, library
    versions) plus the load average when the run starts: what a reader needs to compare figures."""
    return {**machine.describe(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def images_per_second(make_dataset: Callable, seconds: float, warmup_batches: int) -> tuple:
    """(images/s, CPU ms per image) of a fresh iterator over make_dataset(), after warm-up, over
    `seconds`. CPU time per image is the per-core cost: it hardly moves when other processes
    share the cores, where images/s does."""
    iterator = iter(make_dataset())
    for _ in range(warmup_batches):
        next(iterator)
    count, start, cpu = 0, time.perf_counter(), cpu_seconds()
    while (elapsed := time.perf_counter() - start) < seconds:
        images, _ = next(iterator)
        count += int(images.shape[0])
    cpu = cpu_seconds() - cpu
    del iterator
    return count / elapsed, 1000.0 * cpu / max(count, 1)


# ----------------------------------------------------------------------------------- pipeline


def _pipeline_arguments(group) -> None:
    group.add_argument("--data_dir", help="shards written by toolkit.data.convert (pipeline and train sections)")
    group.add_argument("--baseline_dir", default="", help="photo folder for the baselines (default: the manifest's train source)")
    group.add_argument("--image_size", type=int, default=224)
    group.add_argument("--batch_size", type=int, default=64)
    group.add_argument("--seconds", type=float, default=10.0, help="measured time per round and pipeline")
    group.add_argument("--rounds", type=int, default=3)
    group.add_argument("--warmup_batches", type=int, default=5)


def baseline_folder(manifest: dict) -> str:
    """The photo folder behind the shards' training split, from the manifest."""
    split_dirs = manifest.get("split_dirs") or {}
    folder = split_dirs.get("train") or manifest.get("source", "")
    if not folder or not os.path.isdir(folder):
        raise SystemExit(f"benchmark: --baseline_dir: the manifest names no readable source folder ({folder!r}); pass --baseline_dir")
    return folder


def run_pipeline(args: argparse.Namespace) -> dict:
    import keras
    import tensorflow as tf

    from toolkit.config import DataConfig
    from toolkit.data import pipeline, shards

    if not args.data_dir:
        raise SystemExit("benchmark: --data_dir: required by the pipeline section")
    info = shards.read_dataset_info(args.data_dir)
    files = info.split_files("train")
    count = info.counts.get("train") or 0
    config = DataConfig(data_dir=args.data_dir, image_size=args.image_size, batch_size=args.batch_size, cache=False)
    steps = max(1, count // args.batch_size) if count else 100
    folder = args.baseline_dir or baseline_folder(info.manifest)
    size = args.image_size

    def toolkit_dataset():
        return pipeline.make_train_dataset(config, files, steps_per_epoch=steps)

    def baseline_dataset():
        ds = keras.utils.image_dataset_from_directory(
            folder, image_size=(size, size), batch_size=args.batch_size, shuffle=True, seed=0, verbose=False
        )
        ds = ds.map(lambda x, y: (x / 127.5 - 1.0, y), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.repeat().prefetch(tf.data.AUTOTUNE)

    rounds = {"toolkit": [], "baseline": []}
    for _ in range(args.rounds):
        rounds["toolkit"].append(images_per_second(toolkit_dataset, args.seconds, args.warmup_batches))
        rounds["baseline"].append(images_per_second(baseline_dataset, args.seconds, args.warmup_batches))
    toolkit, baseline = (max(rate for rate, _ in rounds[k]) for k in ("toolkit", "baseline"))
    toolkit_cpu, baseline_cpu = (min(ms for _, ms in rounds[k]) for k in ("toolkit", "baseline"))
    return {
        "toolkit_images_per_sec": round(toolkit, 1),
        "baseline_images_per_sec": round(baseline, 1),
        "ratio": round(toolkit / baseline, 2),
        "toolkit_cpu_ms_per_image": round(toolkit_cpu, 3),
        "baseline_cpu_ms_per_image": round(baseline_cpu, 3),
        "cpu_ratio": round(baseline_cpu / toolkit_cpu, 2),
        "rounds_images_per_sec": {k: [round(rate, 1) for rate, _ in vs] for k, vs in rounds.items()},
        "rounds_cpu_ms_per_image": {k: [round(ms, 3) for _, ms in vs] for k, vs in rounds.items()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "image_size": size,
        "batch_size": args.batch_size,
        "seconds_per_round": args.seconds,
        "data_dir": os.path.abspath(args.data_dir),
        "train_records": count,
        "stored_max_side": (info.manifest.get("options") or {}).get("max_side"),
        "baseline_dir": os.path.abspath(folder),
        "baseline": "keras.utils.image_dataset_from_directory, /127.5-1, repeat, prefetch; no cache",
        "toolkit": "pipeline.make_train_dataset (decode_and_crop_jpeg, flip, resize, normalize); no cache",
    }


def _pipeline_table(r: dict) -> tuple:
    header = ("input pipeline", "images/s", "CPU ms / image", "vs baseline")
    return header, [
        ("toolkit make_train_dataset (shards)", r["toolkit_images_per_sec"], r["toolkit_cpu_ms_per_image"], f"{r['ratio']}x"),
        ("keras image_dataset_from_directory", r["baseline_images_per_sec"], r["baseline_cpu_ms_per_image"], "1.00x"),
    ]


register(Section("pipeline", "input pipeline images/s: toolkit shards vs image_dataset_from_directory", run_pipeline,
                 _pipeline_arguments, _pipeline_table))

# -------------------------------------------------------------------------------------- train


def _train_arguments(group) -> None:
    group.add_argument("--train_variants", default=",".join(bench_train.VARIANTS),
                       help="comma-separated, from: " + ", ".join(bench_train.VARIANTS))
    group.add_argument("--train_image_size", type=int, default=224)
    group.add_argument("--train_batch_size", type=int, default=16)
    group.add_argument("--train_warmup", type=int, default=2, help="untimed steps (tracing, compilation)")
    group.add_argument("--train_steps", type=int, default=6, help="timed steps per variant")
    group.add_argument("--train_timeout", type=float, default=900.0, help="seconds before a variant is given up (reported as an error)")


def peak_flops_estimate() -> float | None:
    """cores x clock x fp32 FLOPs per cycle (2 FMA units: 32 with AVX2, 64 with AVX-512); None if unknown."""
    if not machine.has_cpu_feature("fma"):
        return None
    try:  # the clock of every logical CPU (toolkit.machine records the model and flags, not the clock)
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":", 1)[1]) for line in f if line.startswith("cpu MHz")]
    except OSError:
        return None
    if not mhz:
        return None
    per_cycle = 64 if machine.has_cpu_feature("avx512f") else 32
    return len(mhz) * (sum(mhz) / len(mhz)) * 1e6 * per_cycle


def run_train(args: argparse.Namespace) -> dict:
    from toolkit.data import shards

    variants = [v.strip() for v in args.train_variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in bench_train.VARIANTS]
    if unknown:
        raise SystemExit(f"benchmark: --train_variants: unknown {', '.join(unknown)}")
    if not args.data_dir:
        raise SystemExit("benchmark: --data_dir: required by the train section")
    folder = args.baseline_dir or baseline_folder(shards.read_dataset_info(args.data_dir).manifest)
    size, batch = args.train_image_size, args.train_batch_size
    forward = bench_train.model_flops_per_image(size)
    peak = peak_flops_estimate()
    results = {"image_size": size, "batch_size": batch, "steps": args.train_steps,
               "model_forward_flops_per_image": forward, "peak_flops_estimate": peak,
               "data_dir": os.path.abspath(args.data_dir), "baseline_dir": os.path.abspath(folder),
               "data": "toolkit: make_train_dataset on the shards; keras_fit: image_dataset_from_directory on the photos; neither cached"}
    for variant in variants:
        got = bench_train.run_variant_subprocess(variant, args.data_dir, folder, batch, size, args.train_warmup, args.train_steps,
                                                 timeout=args.train_timeout)
        if "error" in got:
            results[f"{variant}_error"] = got["error"]
            continue
        rate = got["images_per_sec"]
        results[f"{variant}_images_per_sec"] = round(rate, 2)
        if "partial" in got:
            results[f"{variant}_partial"] = got["partial"]
        achieved = 3 * forward * rate  # forward + backward ~ 3x the forward FLOPs
        results[f"{variant}_flops_per_sec"] = achieved
        if peak:
            results[f"{variant}_share_of_peak"] = round(achieved / peak, 4)
    base = results.get("keras_fit_images_per_sec")
    if base:
        results.update({f"{v}_vs_keras_fit": round(results[f"{v}_images_per_sec"] / base, 2)
                        for v in variants if v != "keras_fit" and f"{v}_images_per_sec" in results})
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return results


def _train_table(r: dict) -> tuple:
    header = ("training (ResNet50V2)", "images/s", "vs keras fit", "achieved GFLOP/s", "share of peak")
    base = r.get("keras_fit_images_per_sec")
    rows = []
    for variant in bench_train.VARIANTS:
        if f"{variant}_error" in r:
            rows.append((variant, "-", "-", "-", r[f"{variant}_error"]))
        elif f"{variant}_images_per_sec" in r:
            rate = r[f"{variant}_images_per_sec"]
            share = r.get(f"{variant}_share_of_peak")
            partial = r.get(f"{variant}_partial")
            rows.append((f"{variant} ({partial})" if partial else variant, rate, f"{rate / base:.2f}x" if base else "-", round(r[f"{variant}_flops_per_sec"] / 1e9, 1),
                         f"{100 * share:.1f}%" if share is not None else "unknown"))
    return header, rows


register(Section("train", "training images/s: toolkit loop (fp32/bf16/fp16, XLA) vs keras model.fit", run_train,
                 _train_arguments, _train_table))

# ---------------------------------------------------------------------------------- inference

register(Section("inference", "inference images/s: ONNX fp32 / int8, SavedModel, Keras one image at a time",
                 bench_inference.run, bench_inference.add_arguments, bench_inference.table))


def markdown_table(header: tuple, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def machine_line(m: dict) -> str:
    """One line naming the machine: CPU and its features, oneDNN on/off, GPUs, cores, versions."""
    features = ", ".join(m.get("cpu_features") or []) or "no AVX2, AVX-512 or AMX"
    gpus = "; ".join(f"{g['name']} (compute {g.get('compute_capability') or '?'})" for g in m.get("gpus") or []) or "none"
    versions = ", ".join(f"{label} {m[key]}" for key, label in (("python", "Python"), ("tensorflow", "TensorFlow"),
                                                                 ("keras", "Keras"), ("onnxruntime", "onnxruntime")) if m.get(key))
    return (f"Machine: {m['cpu']} [{features}], oneDNN {m.get('onednn', 'unknown')}, GPUs: {gpus}, "
            f"{m['usable_cores']} usable cores, {versions}")


def report(results: dict) -> str:
    """The results as markdown: the machine, then a table per section that has one."""
    parts = [machine_line(results["machine"]) + (" (--quick: a smoke test, not a measurement)" if results.get("quick") else "")]
    for name, section in SECTIONS.items():
        if name in results:
            header, rows = section.table(results[name])
            if rows:
                load = results[name].get("load_average")
                parts.append(f"{name}" + (f" (load average {load[0]} at the end)" if load else "") + "\n\n" + markdown_table(header, rows))
    return "\n\n".join(parts) + "\n"

QUICK = {"seconds": 1.0, "rounds": 1, "warmup_batches": 1,
         "train_image_size": 32, "train_batch_size": 4, "train_warmup": 1, "train_steps": 2, "train_variants": "toolkit_fp32,keras_fit",
         "inference_image_size": 32, "inference_images": 16, "inference_rounds": 1, "inference_keras_images": 2}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from: {', '.join(SECTIONS)}")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--markdown", default="", help="also write the printed tables here (markdown)")
    parser.add_argument("--quick", action="store_true", help="a few seconds per section: a smoke test, not a measurement")
    for section in SECTIONS.values():
        section.add_arguments(parser.add_argument_group(f"{section.name}: {section.description}"))
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.quick:  # small settings for what the command line left at its default
        for key, value in QUICK.items():
            if hasattr(args, key) and getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = {"machine": machine_description(), "quick": args.quick}
    for name in args.sections:
        results[name] = SECTIONS[name].run(args)
        figures = {k: v for k, v in results[name].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    text = report(results)
    print("\n" + text, flush=True)
    if args.json:
        _write(args.json, json.dumps(results, indent=2) + "\n")
    if args.markdown:
        _write(args.markdown, text)
    return results


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write_text(path, text)


if __name__ == "__main__":
    main()
