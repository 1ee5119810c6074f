"""The `train` benchmark section: is the toolkit's default the fastest way to train on this device?

Training images/s of ResNet50V2, end to end from disk, each variant in its own process
(scripts/bench_train_variant.py), one after another in one run:

  notebook              keras.applications.ResNet50V2 + model.fit, fp32, Keras' default compile,
                        fed by image_dataset_from_directory: the way our users came
  keras_fit_P[_jit]     the same at the toolkit default's precision P, jit_compile off and on: the
                        faster is keras_best, the baseline that counts
  toolkit_P[_xla]       the toolkit's loop, fed from the shards; the toolkit default is what
                        `python -m toolkit.train` picks here without flags
                        (distribute.resolve_precision("auto"), distribute.xla_decision("auto", ...)),
                        the alternatives the other precisions this device computes natively, XLA
                        off and on. A precision it would only emulate is skipped, with the reason.

The JSON (`train`): notebook_images_per_sec, keras_best_images_per_sec / keras_best_variant,
toolkit_default_images_per_sec / toolkit_default_variant (and why it is the default), the ratios
toolkit_default_vs_notebook and toolkit_default_vs_keras_best, goals (issue 13: >= 2x the notebook,
>= 1.15x keras_best; met or not, with the measured ratio), variants (each figure with its CPU ms
per image, settings, achieved GFLOP/s and share of peak), skipped, and peak: per precision the
device's peak GFLOP/s with the assumptions it was computed from (scripts/bench_peak.py).
"""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_peak  # noqa: E402
from bench_train_variant import PRECISIONS, parse_variant, run_variant_subprocess, variant_name  # noqa: E402

GOALS = {"vs_notebook": 2.0, "vs_keras_best": 1.15}  # issue 13, item 5: the toolkit default against each baseline
def native_precision(precision: str, device_kind: str, gpu_capabilities=(), has_feature=None, onednn=None) -> str:
    """"" when this device computes `precision` in hardware, else why it would be emulated (a skip reason)."""
    from toolkit.common import machine

    has_feature = has_feature or machine.has_cpu_feature
    onednn = machine.onednn_enabled() if onednn is None else onednn
    if precision == "fp32":
        return ""
    if device_kind == "GPU":
        need = (7, 0) if precision == "fp16" else (8, 0)
        if gpu_capabilities and min(gpu_capabilities) >= need:
            return ""
        return f"{precision} needs compute capability {need[0]}.{need[1]} (tensor cores for it); these GPUs have less"
    units = {"bf16": ("amx_bf16", "avx512_bf16"), "fp16": ("amx_fp16", "avx512_fp16")}[precision]
    if not has_feature(*units):
        return f"emulated: this CPU has no {precision} arithmetic ({' or '.join(units)})"
    if not onednn:
        return f"emulated: oneDNN is off, and only oneDNN's kernels use the CPU's {precision} units"
    return ""


def toolkit_default() -> dict:
    """What `python -m toolkit.train` picks here without flags: precision, XLA, the reasons, the device kind."""
    import tensorflow as tf

    from toolkit.train import distribute

    device_kind = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    precision, precision_why = distribute.resolve_precision("auto")
    xla, xla_why = distribute.xla_decision("auto", tf.distribute.get_strategy(), device_kind)
    caps = distribute.gpu_compute_capabilities() if device_kind == "GPU" else []
    return {"variant": variant_name("toolkit", precision, xla), "precision": precision, "xla": xla,
            "precision_why": precision_why, "xla_why": xla_why, "device_kind": device_kind, "gpu_capabilities": caps}


@dataclasses.dataclass
class Plan:
    variants: list  # of Variant, in the order they run
    default: str  # the toolkit default's name
    keras: list  # keras fit at the default's precision (the baseline that counts is the best of these)
    skipped: dict  # name -> why it was not run


def make_plan(default: dict, quick: bool = False, native=None) -> Plan:
    """The notebook, keras fit at the default's precision (jit off and on), the toolkit default, and
    the toolkit alternatives this device runs natively. --quick keeps the first of each kind."""
    native = native or (lambda p: native_precision(p, default["device_kind"], default["gpu_capabilities"]))
    precision, name = default["precision"], default["variant"]
    skipped = {}
    keras = [variant_name("keras_fit", precision, False), variant_name("keras_fit", precision, True)]
    if quick:
        skipped[keras.pop()] = "--quick: a smoke test; the XLA compile alone would take most of its budget"
    alternatives = []
    for p in PRECISIONS:
        for xla in (False, True):
            other = variant_name("toolkit", p, xla)
            if other == name:
                continue
            why = native(p) or ("--quick: only the toolkit default is run" if quick else "")
            if why:
                skipped[other] = why
            else:
                alternatives.append(other)
    names = ["notebook", *keras, name, *alternatives]
    return Plan([parse_variant(n) for n in names], name, keras, skipped)


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




# ---------------------------------------------------------------------------------- the section


def add_arguments(group) -> None:
    group.add_argument("--train_variants", default="auto",
                       help="auto: the plan above; or a comma-separated list of notebook, keras_fit_<fp32|bf16|fp16>[_jit], "
                            "toolkit_<fp32|bf16|fp16>[_xla]")
    group.add_argument("--train_image_size", type=int, default=224)
    group.add_argument("--train_batch_size", type=int, default=16)
    group.add_argument("--train_warmup", type=int, default=2, help="untimed steps (tracing, compilation)")
    group.add_argument("--train_steps", type=int, default=6, help="timed steps per variant")
    group.add_argument("--train_timeout", type=float, default=900.0,
                       help="seconds before a variant is stopped (the rate of its finished timed steps is kept, marked partial)")
    group.add_argument("--train_peak_gflops", type=float, default=0.0,
                       help="the device's peak GFLOP/s, for every precision (a GPU's datasheet figure); 0: bench_peak's CPU model")


def baseline_folder(manifest: dict) -> str:
    """The photo folder behind the shards' training split, from the manifest."""
    split_dirs = manifest.get("split_dirs") or {}
    folder = split_dirs.get("train") or manifest.get("source", "")
    if not folder or not os.path.isdir(folder):
        raise SystemExit(f"benchmark: --baseline_dir: the manifest names no readable source folder ({folder!r}); pass --baseline_dir")
    return folder


def plan_from_arguments(args, default: dict) -> Plan:
    if args.train_variants == "auto":
        return make_plan(default, quick=getattr(args, "quick", False))
    try:
        chosen = [parse_variant(n.strip()) for n in args.train_variants.split(",") if n.strip()]
    except ValueError as e:
        raise SystemExit(f"benchmark: --train_variants: {e}")
    keras = [v.name for v in chosen if v.kind == "keras_fit" and v.precision == default["precision"]]
    return Plan(chosen, default["variant"], keras, {})


def _same_run(v, measured: dict) -> str:
    """The name of a variant already measured whose settings are v's ("" if none): keras fit at fp32
    with the jit_compile that Keras' default resolved to for the notebook is the notebook run."""
    notebook = (measured.get("notebook") or {}).get("settings") or {}
    if v.kind == "keras_fit" and v.precision == "fp32" and notebook.get("jit_compile") == v.compiled:
        return "notebook"
    return ""


def run(args) -> dict:
    """The section: every planned variant in its own process, then the figures issue 13 asks for."""
    from toolkit.data import shards

    if not args.data_dir:
        raise SystemExit("benchmark: --data_dir: required by the train section")
    folder = args.baseline_dir or baseline_folder(shards.read_dataset_info(args.data_dir).manifest)
    default = toolkit_default()
    plan = plan_from_arguments(args, default)
    size, batch = args.train_image_size, args.train_batch_size
    forward = model_flops_per_image(size)
    used = {v.precision for v in plan.variants}
    peak = {p: bench_peak.device_peak(p, default["device_kind"], args.train_peak_gflops) for p in PRECISIONS if p in used}
    variants = {}
    for v in plan.variants:
        same = _same_run(v, variants)
        if same:
            variants[v.name] = {**variants[same], "same_run_as": same}
            continue
        got = run_variant_subprocess(v.name, args.data_dir, folder, batch, size, args.train_warmup, args.train_steps,
                                     timeout=args.train_timeout, auto=v.name == plan.default)
        got["precision"] = v.precision
        if "images_per_sec" in got:
            achieved = 3 * forward * got["images_per_sec"]  # forward + backward ~ 3x the forward FLOPs
            gflops = peak[v.precision]["gflops"]
            got.update(images_per_sec=round(got["images_per_sec"], 2), cpu_ms_per_image=round(got["cpu_ms_per_image"], 1),
                       achieved_gflops=round(achieved / 1e9, 2), share_of_peak=float(f"{achieved / (gflops * 1e9):.3g}") if gflops else None)
        variants[v.name] = got
    return {**summarize(variants, plan, default), "variants": variants, "skipped": plan.skipped, "peak": peak,
            "image_size": size, "batch_size": batch, "warmup_steps": args.train_warmup, "timed_steps": args.train_steps,
            "model_forward_flops_per_image": forward, "data_dir": os.path.abspath(args.data_dir), "baseline_dir": os.path.abspath(folder),
            "data": "toolkit: make_train_dataset on the shards; notebook and keras_fit: image_dataset_from_directory on the photos; "
                    "neither cached; Adam 1e-3 on both sides",
            "flops": "2 per multiply-add of the convolutions and dense layers; a training step taken as 3x the forward pass",
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


def summarize(variants: dict, plan: Plan, default: dict) -> dict:
    """The headline figures: notebook, keras best, toolkit default, their ratios and the goals."""
    def rate(name):
        return (variants.get(name) or {}).get("images_per_sec")

    notebook, toolkit = rate("notebook"), rate(plan.default)
    keras = {n: rate(n) for n in plan.keras if rate(n)}
    best = max(keras, key=keras.get) if keras else None
    toolkits = {n: rate(n) for n in variants if n.startswith("toolkit_") and rate(n)}
    fastest = max(toolkits, key=toolkits.get) if toolkits else None
    out = {
        "notebook_images_per_sec": notebook,
        "keras_best_images_per_sec": keras.get(best),
        "keras_best_variant": best,
        "toolkit_default_variant": plan.default,
        "toolkit_default_images_per_sec": toolkit,
        "toolkit_default_why": f"precision {default['precision']} ({default['precision_why']}); "
                               f"XLA {'on' if default['xla'] else 'off'} ({default['xla_why']})",
        "toolkit_default_vs_notebook": _ratio(toolkit, notebook),
        "toolkit_default_vs_keras_best": _ratio(toolkit, keras.get(best)),
        "toolkit_default_share_of_peak": (variants.get(plan.default) or {}).get("share_of_peak"),
        "toolkit_fastest_variant": fastest,
        "device_kind": default["device_kind"],
    }
    out["goals"] = {}
    for key, base in (("vs_notebook", "notebook"), ("vs_keras_best", "keras_best")):
        target, ratio = GOALS[key], out[f"toolkit_default_{key}"]
        out["goals"][f"toolkit_default_at_least_{target:g}x_{base}"] = {
            "target": target, "ratio": ratio, "met": None if ratio is None else ratio >= target}
    return out


def _cell(value, suffix=""):
    return "-" if value is None else f"{value}{suffix}"


def _percent(share) -> str:
    """A share of peak in percent; below 1% with two significant digits (AMX peaks make it 0.06%)."""
    if share is None:
        return "unknown"
    return f"{100 * share:.1f}%" if share >= 0.01 else f"{100 * share:.2g}%"


def _times(rate, base) -> str:
    return f"{rate / base:.2f}x" if rate and base else "-"


def table(r: dict) -> tuple:
    """(header, rows, notes) of the printed table: every variant, what was skipped and why, the goals, the peaks."""
    header = ("training (ResNet50V2)", "images/s", "vs notebook", "vs keras best", "CPU ms / image", "GFLOP/s", "share of peak")
    notebook, best = r.get("notebook_images_per_sec"), r.get("keras_best_images_per_sec")
    rows = []
    for name, v in r.get("variants", {}).items():
        marks = [m for m, on in (("toolkit default", name == r.get("toolkit_default_variant")),
                                 ("keras best", name == r.get("keras_best_variant")),
                                 (f"same run as {v.get('same_run_as')}", v.get("same_run_as")), (v.get("partial"), v.get("partial"))) if on]
        label = name + (f" ({'; '.join(marks)})" if marks else "")
        if "error" in v:
            rows.append((label, "-", "-", "-", "-", "-", f"failed: {v['error']}"))
            continue
        rate, share = v["images_per_sec"], v.get("share_of_peak")
        rows.append((label, rate, _times(rate, notebook), _times(rate, best), v.get("cpu_ms_per_image", "-"),
                     v.get("achieved_gflops", "-"), _percent(share)))
    rows += [(name, "-", "-", "-", "-", "-", f"skipped: {why}") for name, why in r.get("skipped", {}).items()]
    notes = [f"toolkit default: {r.get('toolkit_default_variant')}: {r.get('toolkit_default_why')}"] if "toolkit_default_why" in r else []
    for name, goal in r.get("goals", {}).items():
        verdict = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[goal["met"]]
        measured = "-" if goal["ratio"] is None else f"{goal['ratio']:.2f}x"
        notes.append(f"goal {name.replace('_', ' ')}: {verdict} (measured {measured}, target {goal['target']:g}x)")
    notes += [f"peak {p}: {_cell(v['gflops'], ' GFLOP/s')}; {v['assumptions']}" for p, v in r.get("peak", {}).items()]
    return header, rows, notes
