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
