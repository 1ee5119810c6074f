"""What machine a figure came from: CPU model and features, oneDNN on or off, GPUs, library versions.

`describe()` is recorded in summary.json, run.json, export.json, parity.json and the benchmark JSON;
`cpu_class()` is the short form the start line of a run prints. TensorFlow's speed and even its
results depend on these (oneDNN's kernels differ from Eigen's; a zero-size batch behaves
differently under oneDNN), so a number without them cannot be compared with another.
"""

from __future__ import annotations

import functools
import math
import os
import platform

# the CPU flags (as /proc/cpuinfo names them) that decide which kernels TensorFlow and
# onnxruntime use: FMA width, bf16 and fp16 arithmetic, AMX tiles
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple:
    """(model name, set of flags) from /proc/cpuinfo; ("unknown", empty) where there is none."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return name or platform.processor() or platform.machine() or "unknown", frozenset(flags)


def cpu_name() -> str:
    return _cpuinfo()[0]


def cpu_features() -> list:
    """The flags of CPU_FEATURES this CPU has, in that order."""
    flags = _cpuinfo()[1]
    return [f for f in CPU_FEATURES if f in flags]


def has_cpu_feature(*names: str) -> bool:
    """True when the CPU has any of these /proc/cpuinfo flags."""
    return bool(_cpuinfo()[1] & set(names))


def _cgroup_dirs() -> list:
    """Where this process's cgroup CPU settings are: its own cgroup's directory (from
    /proc/self/cgroup, v2 then v1), then the mount root (inside a container, its own cgroup)."""
    found = []
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "":
                    found.append(("/sys/fs/cgroup" + path, "v2"))
                elif "cpu" in controllers.split(","):
                    found.append(("/sys/fs/cgroup/cpu" + path, "v1"))
    except (OSError, ValueError):
        pass
    return found + [("/sys/fs/cgroup", "v2"), ("/sys/fs/cgroup/cpu", "v1")]


def cpu_quota() -> float | None:
    """CPUs' worth of time the cgroup allows this process per period (a container's --cpus), or None."""
    for directory, version in _cgroup_dirs():
        try:
            if version == "v2":
                with open(os.path.join(directory, "cpu.max")) as f:
                    quota, period = (f.read().split() + ["100000"])[:2]
            else:
                with open(os.path.join(directory, "cpu.cfs_quota_us")) as f:
                    quota = f.read().strip()
                with open(os.path.join(directory, "cpu.cfs_period_us")) as f:
                    period = f.read().strip()
        except OSError:
            continue
        if quota in ("max", "-1") or int(period) <= 0:
            return None
        return int(quota) / int(period)
    return None


def schedulable_cores() -> int:
    """The CPUs this process may be scheduled on (its affinity): what TensorFlow sizes its pools by."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    cores = schedulable_cores()
    quota = cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process (TF_ENABLE_ONEDNN_OPTS, else
    TensorFlow's own default for this CPU: on for AVX-512-class x86 CPUs)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # a TensorFlow without the probe: read the switch
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in ("1", "true")


def gpus() -> list:
    """[{"name", "compute_capability"}] of the GPUs TensorFlow sees (empty on a CPU-only machine)."""
    import tensorflow as tf

    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        cc = details.get("compute_capability")
        found.append({"name": details.get("device_name", gpu.name), "compute_capability": ".".join(map(str, cc)) if cc else None})
    return found


def widest_unit(features) -> str:
    """The widest vector or matrix unit among `cpu_features()`-style names: AMX, AVX-512 (BF16), AVX2."""
    if "amx_bf16" in features:
        return "AMX"
    if "avx512f" in features:
        return "AVX-512" + (" BF16" if "avx512_bf16" in features else "")
    if "avx2" in features:
        return "AVX2"
    return platform.machine() or "unknown ISA"


def cpu_class() -> str:
    """A few words for the start line: the CPU model, its widest vector unit, oneDNN on or off."""
    return f"{cpu_name()} ({widest_unit(cpu_features())}), oneDNN {'on' if onednn_enabled() else 'off'}"


def _version(module: str):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def summary_line(m: dict) -> str:
    """One line naming the machine of a `describe()` record: CPU and its features, oneDNN, GPUs,
    usable cores, library versions. Keys missing from an older record are left out or shown as ?."""
    features = ", ".join(m.get("cpu_features") or []) or "no AVX2, AVX-512 or AMX"
    gpus = "; ".join(
        f"{g['name']} (compute {g.get('compute_capability') or '?'})" if isinstance(g, dict) else str(g)
        for g in m.get("gpus") or []
    ) or "none"
    versions = [
        f"{label} {m[key]}"
        for key, label in (("python", "Python"), ("tensorflow", "TensorFlow"), ("keras", "Keras"), ("onnxruntime", "onnxruntime"))
        if m.get(key)
    ]
    cores = [f"{m['usable_cores']} usable cores"] if m.get("usable_cores") else []
    return ", ".join([f"{m.get('cpu', '?')} [{features}]", f"oneDNN {m.get('onednn', '?')}", f"GPUs: {gpus}", *cores, *versions])


def describe() -> dict:
    """The `machine` object of every JSON record the toolkit writes."""
    import tensorflow as tf

    return {
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "onednn": "on" if onednn_enabled() else "off",
        "gpus": gpus(),
        "tensorflow": tf.__version__,
        "keras": _version("keras"),
        "onnxruntime": _version("onnxruntime"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
