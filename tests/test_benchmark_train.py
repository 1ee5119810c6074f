"""The train benchmark's plan, peak model, headline figures and goal lines, without training anything
(the quick run of every section, tests/test_benchmark_inference.py, trains for real)."""

import os
import sys

import pytest

import data_helpers as dh

sys.path.insert(0, os.path.join(dh.ROOT, "scripts"))

import bench_peak  # noqa: E402
import bench_train  # noqa: E402
import bench_train_variant as btv  # noqa: E402
from toolkit.common import machine  # noqa: E402

ZEN3 = {"avx2", "fma"}
ZEN4 = {"avx2", "fma", "avx512f", "avx512_bf16"}
SAPPHIRE_RAPIDS = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16"}


def cpu(features, onednn=True):
    """native_precision's view of a CPU with these flags."""
    return lambda precision: bench_train.native_precision(
        precision, "CPU", has_feature=lambda *names: bool(features & set(names)), onednn=onednn)


def default(precision, xla, device_kind="CPU"):
    return {"variant": btv.variant_name("toolkit", precision, xla), "precision": precision, "xla": xla,
            "precision_why": "auto: test", "xla_why": "auto: test", "device_kind": device_kind, "gpu_capabilities": []}


@pytest.mark.parametrize("name, kind, precision, compiled", [
    ("notebook", "notebook", "fp32", None), ("keras_fit_bf16", "keras_fit", "bf16", False),
    ("keras_fit_fp16_jit", "keras_fit", "fp16", True), ("toolkit_fp32", "toolkit", "fp32", False),
    ("toolkit_bf16_xla", "toolkit", "bf16", True)])
def test_variant_names_round_trip(name, kind, precision, compiled):
    v = btv.parse_variant(name)
    assert (v.kind, v.precision, v.compiled) == (kind, precision, compiled)
    if kind != "notebook":
        assert btv.variant_name(kind, precision, compiled) == name


@pytest.mark.parametrize("name", ["keras_fit", "toolkit_fp32_jit", "keras_fit_bf16_xla", "toolkit_int8", "notebook_fp32"])
def test_unknown_variant_names_are_refused(name):
    with pytest.raises(ValueError, match="unknown train variant"):
        btv.parse_variant(name)


def test_only_precisions_the_device_computes_natively_are_run():
    assert [bool(cpu(ZEN3)(p)) for p in ("fp32", "bf16", "fp16")] == [False, True, True]
    assert [bool(cpu(ZEN4)(p)) for p in ("fp32", "bf16", "fp16")] == [False, False, True]
    assert [bool(cpu(SAPPHIRE_RAPIDS)(p)) for p in ("fp32", "bf16", "fp16")] == [False, False, False]
    assert "oneDNN is off" in cpu(SAPPHIRE_RAPIDS, onednn=False)("bf16")  # the units are there, the kernels are not
    assert "no fp16 arithmetic" in cpu(ZEN4)("fp16")

    def gpu(precision, cc):
        return bench_train.native_precision(precision, "GPU", [cc])

    assert (gpu("fp16", (7, 5)), bool(gpu("bf16", (7, 5))), gpu("bf16", (8, 0))) == ("", True, "")


def test_the_plan_on_a_zen4_with_onednn():
    plan = bench_train.make_plan(default("bf16", False), native=cpu(ZEN4))
    assert [v.name for v in plan.variants] == ["notebook", "keras_fit_bf16", "keras_fit_bf16_jit", "toolkit_bf16",
                                               "toolkit_fp32", "toolkit_fp32_xla", "toolkit_bf16_xla"]
    assert plan.default == "toolkit_bf16" and plan.keras == ["keras_fit_bf16", "keras_fit_bf16_jit"]
    assert set(plan.skipped) == {"toolkit_fp16", "toolkit_fp16_xla"} and all("emulated" in why for why in plan.skipped.values())


def test_the_plan_on_an_avx2_cpu_and_its_quick_form():
    plan = bench_train.make_plan(default("fp32", True), native=cpu(ZEN3))
    assert [v.name for v in plan.variants] == ["notebook", "keras_fit_fp32", "keras_fit_fp32_jit", "toolkit_fp32_xla", "toolkit_fp32"]
    assert set(plan.skipped) == {"toolkit_bf16", "toolkit_bf16_xla", "toolkit_fp16", "toolkit_fp16_xla"}
    quick = bench_train.make_plan(default("fp32", True), quick=True, native=cpu(ZEN3))
    assert [v.name for v in quick.variants] == ["notebook", "keras_fit_fp32", "toolkit_fp32_xla"]
    assert quick.skipped["keras_fit_fp32_jit"].startswith("--quick") and quick.skipped["toolkit_fp32"].startswith("--quick")
    assert "emulated" in quick.skipped["toolkit_bf16"]  # the device's reason wins over --quick's


def test_keras_fit_with_the_notebooks_resolved_compile_is_the_notebook_run():
    measured = {"notebook": {"images_per_sec": 3.0, "settings": {"jit_compile": False}}}
    assert bench_train._same_run(btv.parse_variant("keras_fit_fp32"), measured) == "notebook"
    assert bench_train._same_run(btv.parse_variant("keras_fit_fp32_jit"), measured) == ""
    assert bench_train._same_run(btv.parse_variant("keras_fit_bf16"), measured) == ""


@pytest.mark.parametrize("features, vendor, family, precision, expected", [
    (ZEN3, "AuthenticAMD", 25, "fp32", 32),
    (ZEN3, "AuthenticAMD", 25, "bf16", 32),  # emulated: the fp32 rate
    (ZEN4, "AuthenticAMD", 25, "fp32", 32),  # AVX-512 as 2x256
    (ZEN4, "AuthenticAMD", 25, "bf16", 64),
    (ZEN4, "AuthenticAMD", 26, "fp32", 64),  # Zen 5: a full 512-bit datapath
    (SAPPHIRE_RAPIDS, "GenuineIntel", 6, "fp32", 64),
    (SAPPHIRE_RAPIDS, "GenuineIntel", 6, "bf16", 1024),
    (SAPPHIRE_RAPIDS, "GenuineIntel", 6, "fp16", 128),
    (set(), "GenuineIntel", 6, "fp32", None),
])
def test_peak_flops_per_cycle_follow_the_isa(features, vendor, family, precision, expected):
    flops, unit = bench_peak.per_cycle(precision, features, vendor, family)
    assert flops == expected and unit


def test_this_cpus_peak_states_its_arithmetic():
    topo = bench_peak.cpu_topology()
    features = {f for f in (*machine.CPU_FEATURES, "amx_fp16") if machine.has_cpu_feature(f)}
    flops, _ = bench_peak.per_cycle("fp32", features, topo["vendor"], topo["family"])
    peak = bench_peak.cpu_peak("fp32")
    if flops is None or not topo["mhz"]:
        assert peak["gflops"] is None and peak["assumptions"].startswith("unknown")
        return
    cores = machine.usable_cores() // topo["threads_per_core"]
    assert peak["gflops"] == pytest.approx(cores * topo["mhz"] / 1000 * flops, abs=0.1)
    assert f"{cores} cores" in peak["assumptions"] and f"x {flops} FLOP/cycle" in peak["assumptions"]
    assert bench_peak.device_peak("fp32", "GPU")["gflops"] is None
    assert bench_peak.device_peak("bf16", "GPU", 312000.0) == {"gflops": 312000.0, "assumptions": "given: --train_peak_gflops 312000.0"}


def summary(rates: dict, plan_default="toolkit_bf16"):
    plan = bench_train.Plan([btv.parse_variant(n) for n in rates], plan_default, ["keras_fit_bf16", "keras_fit_bf16_jit"], {})
    variants = {n: {"images_per_sec": r, "share_of_peak": 0.1} for n, r in rates.items()}
    return bench_train.summarize(variants, plan, default("bf16", False)), variants


def test_headline_figures_and_goals():
    s, _ = summary({"notebook": 4.0, "keras_fit_bf16": 9.0, "keras_fit_bf16_jit": 5.0, "toolkit_bf16": 10.8, "toolkit_fp32": 8.0})
    assert (s["notebook_images_per_sec"], s["keras_best_images_per_sec"], s["keras_best_variant"]) == (4.0, 9.0, "keras_fit_bf16")
    assert (s["toolkit_default_variant"], s["toolkit_default_images_per_sec"]) == ("toolkit_bf16", 10.8)
    assert (s["toolkit_default_vs_notebook"], s["toolkit_default_vs_keras_best"]) == (2.7, 1.2)
    assert s["goals"] == {"toolkit_default_at_least_2x_notebook": {"target": 2.0, "ratio": 2.7, "met": True},
                          "toolkit_default_at_least_1.15x_keras_best": {"target": 1.15, "ratio": 1.2, "met": True}}
    assert s["toolkit_fastest_variant"] == "toolkit_bf16" and s["toolkit_default_share_of_peak"] == 0.1
    missed, _ = summary({"notebook": 4.0, "keras_fit_bf16": 9.0, "toolkit_bf16": 10.0})
    assert missed["goals"]["toolkit_default_at_least_1.15x_keras_best"] == {"target": 1.15, "ratio": 1.11, "met": False}
    unmeasured, _ = summary({"notebook": 4.0, "toolkit_bf16": 10.0})
    assert unmeasured["keras_best_variant"] is None and unmeasured["goals"]["toolkit_default_at_least_1.15x_keras_best"]["met"] is None


def test_table_marks_the_default_the_baseline_the_skipped_and_the_goals():
    s, variants = summary({"notebook": 4.0, "keras_fit_bf16": 9.0, "toolkit_bf16": 10.0})
    variants["toolkit_bf16_xla"] = {"error": "did not finish 1 warm-up + 1 timed step in 2 s", "precision": "bf16"}
    r = {**s, "variants": variants, "skipped": {"toolkit_fp16": "emulated: no fp16"},
         "peak": {"bf16": {"gflops": 332.3, "assumptions": "2 cores x ..."}}}
    header, rows, notes = bench_train.table(r)
    assert len(header) == 7
    assert ("toolkit_bf16 (toolkit default)", 10.0, "2.50x", "1.11x", "-", "-", "10.0%") in rows
    assert ("keras_fit_bf16 (keras best)", 9.0, "2.25x", "1.00x", "-", "-", "10.0%") in rows
    assert ("toolkit_bf16_xla", "-", "-", "-", "-", "-", "failed: did not finish 1 warm-up + 1 timed step in 2 s") in rows
    assert ("toolkit_fp16", "-", "-", "-", "-", "-", "skipped: emulated: no fp16") in rows
    assert "goal toolkit default at least 2x notebook: PASS (measured 2.50x, target 2x)" in notes
    assert "goal toolkit default at least 1.15x keras best: FAIL (measured 1.11x, target 1.15x)" in notes
    assert "peak bf16: 332.3 GFLOP/s; 2 cores x ..." in notes


def test_explicit_variants_and_unknown_ones():
    import argparse

    args = argparse.Namespace(train_variants="notebook, keras_fit_bf16_jit,toolkit_fp32", quick=False)
    plan = bench_train.plan_from_arguments(args, default("bf16", False))
    assert [v.name for v in plan.variants] == ["notebook", "keras_fit_bf16_jit", "toolkit_fp32"] and plan.keras == ["keras_fit_bf16_jit"]
    with pytest.raises(SystemExit, match="--train_variants"):
        bench_train.plan_from_arguments(argparse.Namespace(train_variants="keras_fit", quick=False), default("bf16", False))


def test_the_profile_reads_a_real_trace_back_per_op_type_and_category(tmp_path):
    """scripts/bench_profile.py: a trace of 4 convolutions and 4 BatchNorm steps, read back with
    TensorFlow's converter: every op counted, each in its category."""
    import tensorflow as tf

    import bench_profile

    x, kernel = tf.ones([4, 32, 32, 8]), tf.ones([3, 3, 8, 8])

    @tf.function
    def step(x):
        y = tf.nn.conv2d(x, kernel, 1, "SAME")
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(y, tf.ones([8]), tf.zeros([8]), is_training=True)
        return tf.nn.relu(y)

    step(x)
    tf.profiler.experimental.start(str(tmp_path))
    for _ in range(4):
        step(x).numpy()
    tf.profiler.experimental.stop()
    ops = bench_profile.op_times(str(tmp_path))
    convs = {k: v for k, v in ops.items() if "Conv2D" in k}
    norms = {k: v for k, v in ops.items() if "BatchNorm" in k}
    assert sum(n for _, n in convs.values()) == 4 and sum(n for _, n in norms.values()) == 4, ops
    assert all(ms > 0 for ms, _ in ops.values())
    assert {bench_profile.category(k) for k in convs} == {"convolution"}
    assert {bench_profile.category(k) for k in norms} == {"batchnorm"}
    assert bench_profile.category("_MklNativeConv2DBackpropFilter") == "convolution"
    assert bench_profile.category("ResourceApplyAdam") == "optimizer / variables"
    assert bench_profile.category("ReluGrad") == "relu / elementwise / pooling"
    assert bench_profile.category("IteratorGetNext") == "input pipeline"
    assert bench_profile.category("NoSuchOp") == "other"
