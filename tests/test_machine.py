"""toolkit.common.machine: the CPU quota of a container, read from cgroup files written here (v1 and v2), and the CPU's widest unit."""

import pytest

from toolkit.common import machine


@pytest.mark.parametrize("version, files, quota", [
    ("v2", {"cpu.max": "150000 100000\n"}, 1.5),
    ("v2", {"cpu.max": "max 100000\n"}, None),
    ("v1", {"cpu.cfs_quota_us": "200000\n", "cpu.cfs_period_us": "100000\n"}, 2.0),
    ("v1", {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"}, None),
])
def test_cpu_quota_reads_the_processs_own_cgroup(tmp_path, monkeypatch, version, files, quota):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(machine, "_cgroup_dirs", lambda: [(str(tmp_path / "missing"), "v2"), (str(tmp_path), version)])
    assert machine.cpu_quota() == quota


def test_usable_cores_is_the_affinity_capped_by_the_quota_rounded_up(monkeypatch):
    monkeypatch.setattr(machine, "schedulable_cores", lambda: 8)
    monkeypatch.setattr(machine, "cpu_quota", lambda: 2.5)
    assert machine.usable_cores() == 3
    monkeypatch.setattr(machine, "cpu_quota", lambda: None)
    assert machine.usable_cores() == 8
    monkeypatch.setattr(machine, "cpu_quota", lambda: 64.0)
    assert machine.usable_cores() == 8


@pytest.mark.parametrize("features, unit", [
    (["avx2", "fma"], "AVX2"),                                       # Zen 3
    (["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"], "AVX-512 BF16"),  # Zen 4
    (["avx2", "avx512f"], "AVX-512"),                                # Skylake-SP
    (["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8"], "AMX"),  # Sapphire Rapids
])
def test_widest_unit_names_what_sets_a_cpus_speed(features, unit):
    assert machine.widest_unit(features) == unit


@pytest.mark.parametrize("device, onednn, features, compiled, words", [
    ("GPU", False, ["avx2"], True, "GPU"),
    ("CPU", True, ["avx2", "avx512f", "amx_bf16"], False, "oneDNN runs"),
    ("CPU", False, ["avx2", "fma", "avx512f"], False, "AVX-512"),  # oneDNN forced off on an AVX-512 CPU
    ("CPU", False, ["avx2", "fma"], True, "AVX2"),  # where TensorFlow leaves oneDNN off by default
])
def test_xla_auto_follows_the_measured_table_for_the_device_onednn_and_the_cpu(monkeypatch, device, onednn, features, compiled, words):
    """--xla auto on one replica: GPU yes; CPU with oneDNN no; oneDNN off: no on AVX-512 (TensorFlow's
    own kernels won there, 5.53 against 4.40 img/s), yes on AVX2 (XLA won, 1.67x); on/off always obeyed."""
    from toolkit.train import distribute

    class OneReplica:
        num_replicas_in_sync = 1

    monkeypatch.setattr(machine, "onednn_enabled", lambda: onednn)
    monkeypatch.setattr(machine, "cpu_features", lambda: features)
    got, why = distribute.xla_decision("auto", OneReplica(), device)
    assert got is compiled and why.startswith("auto") and words in why, why
    assert distribute.xla_decision("on", OneReplica(), device)[0] is True
    assert distribute.xla_decision("off", OneReplica(), device)[0] is False
