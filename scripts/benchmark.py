"""Benchmarks of the toolkit on this machine, by section, written to one JSON file.

  python scripts/benchmark.py --sections pipeline,train,inference --data_dir SHARDS --json bench.json [--quick]

Sections live in the SECTIONS registry: a name, a description, a function adding the section's own
command-line arguments and a function returning a dict of results. To add one (`train`,
`inference`, ...), write those two functions and call `register(Section(...))`; the JSON file
gets a top-level key per section run, plus `machine` (toolkit.common.machine.describe(): CPU model and
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
(scripts/bench_train.py): the notebook way (keras.applications.ResNet50V2 + model.fit, fp32,
Keras' default compile, image_dataset_from_directory), keras fit at the toolkit default's
precision with jit_compile off and on (the best is the baseline), the toolkit default and the
alternatives this device computes natively (the rest skipped, with the reason); ratios, the goals
of issue 13 as pass/fail lines, and each figure's share of an ISA-aware peak (scripts/bench_peak.py).

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

from toolkit.common import atomic  # noqa: E402
from toolkit.common import machine
from toolkit.common import markdown


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    description: str
    run: Callable[[argparse.Namespace], dict]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda group: None
    table: Callable[[dict], tuple] = lambda results: ((), [])  # (header, rows[, notes]) of the printed table


SECTIONS: dict = {}


def register(section: Section) -> Section:
    SECTIONS[section.name] = section
    return section


def machine_description() -> dict:
    """toolkit.common.machine.describe() (CPU model and features, oneDNN on/off, GPUs, core counts, library
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
    folder = args.baseline_dir or bench_train.baseline_folder(info.manifest)
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

register(Section("train", "training images/s: the notebook way, keras fit at the default's precision, the toolkit's "
                          "default and its alternatives", bench_train.run, bench_train.add_arguments, bench_train.table))

# ---------------------------------------------------------------------------------- inference

register(Section("inference", "inference images/s: ONNX fp32 / int8, SavedModel, Keras one image at a time",
                 bench_inference.run, bench_inference.add_arguments, bench_inference.table))


def report(results: dict) -> str:
    """The results as markdown: the machine, then a table per section that has one, with its notes."""
    parts = ["Machine: " + machine.summary_line(results["machine"]) + (" (--quick: a smoke test, not a measurement)" if results.get("quick") else "")]
    for name, section in SECTIONS.items():
        if name in results:
            header, rows, *notes = section.table(results[name])  # notes: lines printed under the table, if any
            if rows:
                load = results[name].get("load_average")
                text = f"{name}" + (f" (load average {load[0]} at the end)" if load else "") + "\n\n" + "\n".join(markdown.table(header, rows))
                if notes and notes[0]:
                    text += "\n\n" + "\n".join(f"- {line}" for line in notes[0])
                parts.append(text)
    return "\n\n".join(parts) + "\n"

QUICK = {"seconds": 1.0, "rounds": 1, "warmup_batches": 1,
         "train_image_size": 32, "train_batch_size": 4, "train_warmup": 1, "train_steps": 2, "train_timeout": 300.0,
         "inference_images": 16, "inference_rounds": 1, "inference_keras_images": 2, "inference_end_to_end_images": 32}


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
