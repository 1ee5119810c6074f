"""Where a training step's time goes: the toolkit's step against keras `fit`'s at one precision, op by op.

  python scripts/bench_profile.py --data_dir SHARDS --folder PHOTOS/train [--precision bf16] [--image_size 224]

Each variant runs in its own process as in the `train` benchmark (scripts/bench_train_variant.py:
the toolkit's loop fed from the shards, keras `fit` fed by image_dataset_from_directory), with
TensorFlow's profiler tracing the timed steps. The traces are read back with TensorFlow's own
converter (framework_op_stats) and summed per op type and per category: convolutions, BatchNorm,
ReLU and other elementwise ops, the optimizer's updates, the input pipeline's ops, the rest. The
table gives milliseconds per step of each; ops run side by side on several threads, so their sum
can exceed the step's wall time. Prints markdown tables (for BENCHMARKS.md) and, with --json, the
figures.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_train_variant import PROFILE_ENV, run_variant_subprocess  # noqa: E402

CATEGORIES = (  # first match wins, on TensorFlow's op type (oneDNN's _Mkl* names included)
    ("convolution", r"Conv"),
    ("batchnorm", r"BatchNorm"),
    ("matmul", r"MatMul"),
    ("optimizer / variables", r"ResourceApply|Variable|Assign|ReadVariable"),
    ("input pipeline", r"Iterator|Dataset|Decode|Jpeg|ResizeBilinear|ResizeBicubic|ParseExample|Crop"),
    ("relu / elementwise / pooling", r"Relu|Add|Mul|Sub|Cast|Square|Sqrt|Rsqrt|Div|Neg|Maximum|Minimum|Pad|Pool|Mean|Sum|"
                                     r"Softmax|Select|Equal|Greater|Less|Exp|Log|Tile|BroadcastTo|Fill|Sign|Abs"),
)


def category(op_type: str) -> str:
    for name, pattern in CATEGORIES:
        if re.search(pattern, op_type):
            return name
    return "other"


def op_times(trace_dir: str) -> dict:
    """{op type: [total self time in ms, occurrences]} of the host ops in a profiler trace folder."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    if not paths:
        raise RuntimeError(f"no profiler trace in {trace_dir}")
    data, ok = plugin.xspace_to_tools_data(paths, "framework_op_stats", {})
    if not ok:
        raise RuntimeError(f"cannot read the trace in {trace_dir}: {data[:200]!r}")
    table = json.loads(data)[-1]  # the last table leaves out IDLE
    cols = [c["id"] for c in table["cols"]]
    kind, count, self_us = cols.index("type"), cols.index("occurrences"), cols.index("total_self_time")
    out = {}
    for row in table["rows"]:
        values = [c.get("v") for c in row["c"]]
        total = out.setdefault(values[kind], [0.0, 0])
        total[0] += values[self_us] / 1000
        total[1] += int(values[count])
    return out


def profile(variant: str, args) -> dict:
    trace_dir = tempfile.mkdtemp(prefix=f"toolkit-profile-{variant}-")
    got = run_variant_subprocess(variant, args.data_dir, args.folder, args.batch_size, args.image_size, args.warmup,
                                 args.steps, timeout=args.timeout, env={PROFILE_ENV: trace_dir})
    if "error" in got or "partial" in got:
        raise SystemExit(f"{variant}: {got.get('error') or got.get('partial')}")
    ops = {k: [ms / args.steps, n / args.steps] for k, (ms, n) in op_times(trace_dir).items()}
    by_category = {}
    for op_type, (ms, _) in ops.items():
        by_category[category(op_type)] = by_category.get(category(op_type), 0.0) + ms
    return {"images_per_sec": got["images_per_sec"], "step_ms": 1000 * args.batch_size / got["images_per_sec"],
            "cpu_ms_per_image": got["cpu_ms_per_image"], "ops": ops, "categories": by_category}


def tables(results: dict, top: int = 20) -> str:
    names = list(results)
    head = "| | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names) + "\n"
    rows = [("images/s", [f"{results[n]['images_per_sec']:.2f}" for n in names]),
            ("wall ms per step", [f"{results[n]['step_ms']:.0f}" for n in names]),
            ("CPU ms per image", [f"{results[n]['cpu_ms_per_image']:.0f}" for n in names])]
    kinds = [c for c, _ in CATEGORIES] + ["other"]
    rows += [(f"{c} (ms/step)", [f"{results[n]['categories'].get(c, 0.0):.1f}" for n in names]) for c in kinds]
    rows.append(("all ops (ms/step)", [f"{sum(results[n]['categories'].values()):.1f}" for n in names]))
    first = head + "".join(f"| {label} | " + " | ".join(v) + " |\n" for label, v in rows)
    every = set().union(*(results[n]["ops"] for n in names))
    spread = sorted(every, key=lambda t: -max(results[n]["ops"].get(t, [0, 0])[0] for n in names))[:top]
    second = ("| op type (ms/step, calls/step) | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names) + "\n" +
              "".join(f"| {t} | " + " | ".join(f"{results[n]['ops'].get(t, [0, 0])[0]:.1f} ({results[n]['ops'].get(t, [0, 0])[1]:.0f})"
                                               for n in names) + " |\n" for t in spread))
    return first + "\n" + second


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="TFRecord shards from toolkit.data.convert (the toolkit's side)")
    parser.add_argument("--folder", required=True, help="photos, one subfolder per class (keras fit's side)")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--variants", default="", help="comma-separated bench_train_variant names; default: "
                                                       "keras_fit_P,toolkit_P at --precision")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v] or [f"keras_fit_{args.precision}", f"toolkit_{args.precision}"]
    results = {v: profile(v, args) for v in variants}
    print(tables(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
