"""Which floating-point precision a run trains and evaluates in, and why (one place decides).

``precision`` (training) and ``eval_precision`` (validation and test) take SpeechBrain's names plus
``auto``:

- ``fp32``: plain float32 everywhere;
- ``bf16``: ``torch.autocast`` with bfloat16 (matrix products and convolutions in bf16, reductions and
  losses in fp32; weights and optimizer states stay fp32, so no loss scaling is needed);
- ``fp16``: autocast with float16 and SpeechBrain's gradient scaler (GPU only);
- ``auto``: bf16 where the device has bf16 arithmetic units, fp32 elsewhere.

bf16 pays off only on hardware that computes in it: GPUs from Ampere on, and CPUs with AVX512-BF16 or
AMX (Intel Cooper Lake / Sapphire Rapids on, AMD Zen 4 on) or Arm's BF16 extension. Elsewhere PyTorch
emulates it, slower than fp32, so ``auto`` keeps fp32 there and an explicit ``bf16`` is honoured
with a warning. fp16 has no fast CPU kernels (SpeechBrain refuses it): on a CPU it falls back to fp32.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from serkit.errors import SerkitError

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 (AVX512-BF16, AMX) and aarch64 ("bf16") cpuinfo flags


class PrecisionError(SerkitError):
    """A precision option serkit does not know."""


@dataclass(frozen=True)
class Precision:
    """The precision chosen for one stage of a run, with the reason (logged and kept in RESULTS.md)."""

    name: str  # fp32 | bf16 | fp16
    reason: str


def cpu_bf16_units(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The CPU's bf16 instruction-set flag (e.g. ``avx512_bf16``), or None when it has none (or it is unknown)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return next((flag for flag in CPU_BF16_FLAGS if flag in flags), None)


def device_bf16_units(device: str, cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """What gives ``device`` fast bf16 (a CPU flag or the GPU's name), or None."""
    if str(device).startswith("cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return torch.cuda.get_device_name(torch.device(device))
        return None
    return cpu_bf16_units(cpuinfo)


def resolve_precision(requested: str, device: str, cpuinfo: str | Path = "/proc/cpuinfo") -> Precision:
    """The precision ``requested`` (one of :data:`PRECISIONS`) becomes on ``device``."""
    requested = str(requested).lower()
    if requested not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    on_cpu = not str(device).startswith("cuda")
    units = device_bf16_units(device, cpuinfo)
    if requested == "auto":
        if units:
            return Precision("bf16", f"auto: {device} has bf16 units ({units})")
        return Precision("fp32", f"auto: {device} has no bf16 units")
    if requested == "fp16" and on_cpu:
        logger.warning("precision fp16 has no CPU kernels: %s runs in fp32 (use bf16 on CPUs with bf16 units)", device)
        return Precision("fp32", "fp16 asked for, but fp16 does not run on a CPU")
    if requested == "bf16" and not units:
        logger.warning("precision bf16 asked for, but %s has no bf16 units: PyTorch emulates bf16 there, "
                       "usually slower than fp32", device)
        return Precision("bf16", f"asked for (emulated: {device} has no bf16 units)")
    return Precision(requested, "asked for")
