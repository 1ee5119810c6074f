"""The device's peak FLOP/s at a precision, with the assumptions printed beside the figure.

The share of peak a benchmark reports is only as honest as this model, so every figure carries
the sentence it was computed from. FLOPs count 2 per multiply-add, as the model's FLOP counter
(bench_train.count_flops) does.

Per core and cycle:
  fp32  AVX2 + FMA: 32 (two 256-bit FMA pipes x 8 lanes x 2)
        AVX-512 on Intel: 64 (two 512-bit FMA units assumed; some Xeon Silver/Bronze have one)
        AVX-512 on AMD Zen 4 (family 25): 32 (each 512-bit FMA runs as two 256-bit halves)
        AVX-512 on AMD Zen 5 and later (family >= 26): 64 (a full 512-bit datapath)
  bf16  AMX-BF16: 1024 (Intel's figure for the tile unit)
        AVX512_BF16: twice the fp32 rate (VDPBF16PS multiplies two bf16 pairs per fp32 lane)
        neither: the fp32 rate (bf16 is converted to fp32 and computed there)
  fp16  AMX-FP16: 1024; AVX512_FP16: twice the fp32 rate (32 fp16 lanes per 512-bit register);
        neither: the fp32 rate
Cores are the usable cores divided by the hardware threads per core (SMT siblings share the
FMA units); the clock is what /proc/cpuinfo reports, which under a hypervisor is the nominal
clock: a CPU boosting higher has a higher peak, so the share is then overstated by that ratio.
GPUs: TensorFlow reports neither the SM count nor the clock, so the peak is unknown unless
given (--train_peak_gflops).
"""

from __future__ import annotations

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from toolkit.common import machine  # noqa: E402


@functools.lru_cache(maxsize=1)
def cpu_topology() -> dict:
    """vendor, family, mean clock in MHz and hardware threads per core, from /proc/cpuinfo (None where absent)."""
    fields = {"vendor_id": None, "cpu family": None, "siblings": None, "cpu cores": None}
    mhz = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "cpu MHz":
                    mhz.append(float(value))
                elif key in fields and fields[key] is None:
                    fields[key] = value
    except (OSError, ValueError):
        pass
    siblings, cores = (int(fields[k]) if (fields[k] or "").isdigit() else 0 for k in ("siblings", "cpu cores"))
    return {
        "vendor": fields["vendor_id"],
        "family": int(fields["cpu family"]) if (fields["cpu family"] or "").isdigit() else None,
        "mhz": sum(mhz) / len(mhz) if mhz else None,
        "threads_per_core": max(1, siblings // cores) if siblings and cores else 1,
    }


def fp32_per_cycle(features: set, vendor: str | None, family: int | None) -> tuple:
    """(fp32 FLOPs per cycle per core, the unit's description); (None, why) without FMA."""
    if "avx512f" in features:
        if vendor == "AuthenticAMD" and (family or 0) < 26:
            return 32, "AVX-512 FMA run as 2x256-bit on AMD Zen 4: 32 fp32 FLOP/cycle/core"
        if vendor == "AuthenticAMD":
            return 64, "AVX-512 FMA on a full 512-bit AMD datapath (Zen 5+): 64 fp32 FLOP/cycle/core"
        return 64, "AVX-512 FMA, 2 units assumed (1 on some Xeon Silver/Bronze): 64 fp32 FLOP/cycle/core"
    if "fma" in features and "avx2" in features:
        return 32, "AVX2 FMA, 2 pipes: 32 fp32 FLOP/cycle/core"
    return None, "no FMA units recognised"


def per_cycle(precision: str, features: set, vendor: str | None, family: int | None) -> tuple:
    """(FLOPs per cycle per core at `precision`, the unit's description) on this CPU."""
    fp32, unit = fp32_per_cycle(features, vendor, family)
    if fp32 is None or precision == "fp32":
        return fp32, unit
    amx, vector = {"bf16": ("amx_bf16", "avx512_bf16"), "fp16": ("amx_fp16", "avx512_fp16")}[precision]
    if amx in features:
        return 1024, f"AMX-{precision.upper()} tiles: 1024 {precision} FLOP/cycle/core"
    if vector in features:
        return 2 * fp32, f"{vector.upper()} (2x the fp32 rate; {unit}): {2 * fp32} {precision} FLOP/cycle/core"
    return fp32, f"no {precision} units: computed in fp32 ({unit})"


def cpu_peak(precision: str) -> dict:
    """{"gflops", "assumptions"} of this CPU at `precision` (gflops None when unknown)."""
    topo = cpu_topology()
    features = set(f for f in (*machine.CPU_FEATURES, "amx_fp16") if machine.has_cpu_feature(f))
    flops, unit = per_cycle(precision, features, topo["vendor"], topo["family"])
    cores = max(1, machine.usable_cores() // topo["threads_per_core"])
    if flops is None or not topo["mhz"]:
        return {"gflops": None, "assumptions": f"unknown: {unit if flops is None else 'no clock in /proc/cpuinfo'}"}
    ghz = topo["mhz"] / 1000
    gflops = cores * ghz * flops
    smt = f" ({topo['threads_per_core']} hardware threads per core)" if topo["threads_per_core"] > 1 else ""
    return {"gflops": round(gflops, 1),
            "assumptions": (f"{cores} cores{smt} x {ghz:.2f} GHz (/proc/cpuinfo; a boost clock above it lowers the share) "
                            f"x {flops} FLOP/cycle [{unit}] = {gflops:.1f} GFLOP/s")}


def device_peak(precision: str, device_kind: str, given_gflops: float = 0.0) -> dict:
    """The peak of the device the benchmark trains on, at `precision`: given, the CPU model's, or unknown (GPU)."""
    if given_gflops:
        return {"gflops": given_gflops, "assumptions": f"given: --train_peak_gflops {given_gflops}"}
    if device_kind == "GPU":
        return {"gflops": None, "assumptions": "unknown: TensorFlow reports no SM count or clock for the GPU; "
                                               "pass --train_peak_gflops (its datasheet's dense tensor-core figure)"}
    return cpu_peak(precision)
