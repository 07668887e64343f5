"""serkit.training.precision: which arithmetic a run uses, decided from the device's bf16 units."""
from __future__ import annotations

import pytest

from serkit.training.precision import PrecisionError, cpu_bf16_units, resolve_precision

X86_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr avx2 avx512f avx512bw avx512_vnni"


def cpuinfo(tmp_path, flags_line: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\n{flags_line}\n\nprocessor\t: 1\n{flags_line}\n")
    return path


@pytest.mark.parametrize("line,units", [
    (f"flags\t\t: {X86_FLAGS} avx512_bf16", "avx512_bf16"),      # AMD Zen 4, Intel Cooper Lake
    (f"flags\t\t: {X86_FLAGS} amx_bf16 amx_tile", "amx_bf16"),    # Intel Sapphire Rapids
    ("Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16 i8mm", "bf16"),  # Arm Neoverse V1
    (f"flags\t\t: {X86_FLAGS}", None),                           # AVX-512 alone: bf16 would be emulated
])
def test_bf16_units_are_read_from_cpuinfo(tmp_path, line, units):
    assert cpu_bf16_units(cpuinfo(tmp_path, line)) == units


def test_unreadable_cpuinfo_means_no_units(tmp_path):
    assert cpu_bf16_units(tmp_path / "missing") is None


def test_auto_is_bf16_only_with_units(tmp_path):
    with_units = cpuinfo(tmp_path, f"flags\t: {X86_FLAGS} avx512_bf16")
    chosen = resolve_precision("auto", "cpu", with_units)
    assert chosen.name == "bf16" and "avx512_bf16" in chosen.reason
    without = tmp_path / "plain"
    without.write_text(f"flags\t: {X86_FLAGS}\n")
    assert resolve_precision("auto", "cpu", without).name == "fp32"


def test_explicit_choices_on_a_cpu(tmp_path, caplog):
    without = cpuinfo(tmp_path, f"flags\t: {X86_FLAGS}")
    assert resolve_precision("fp32", "cpu", without).name == "fp32"
    assert resolve_precision("FP16", "cpu", without).name == "fp32"  # no fp16 kernels on CPUs
    emulated = resolve_precision("bf16", "cpu", without)
    assert emulated.name == "bf16" and "emulated" in emulated.reason
    assert "no bf16 units" in caplog.text


def test_unknown_precision_is_refused():
    with pytest.raises(PrecisionError, match="precision must be one of auto, fp32, bf16, fp16, got 'half'"):
        resolve_precision("half", "cpu")
