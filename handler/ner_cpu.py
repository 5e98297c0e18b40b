"""What the CPU can do, read from ``/proc/cpuinfo``: plain functions, no TorchServe import.

The instruction sets that decide which CPU path is fast: AVX2 (every x86 server of the last
decade), AVX-512, VNNI (int8 dot products: what int8 GEMMs are built on), AVX512-BF16 and
AMX (bfloat16 matrix instructions: without them bf16 is emulated and slower than fp32). The
parsing is a pure function of the file's text so it is testable with any CPU's text.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# Feature -> the /proc/cpuinfo flags any one of which means the CPU has it.
FEATURES: Mapping[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "vnni": ("avx512_vnni", "avx_vnni"),  # AVX512-VNNI, or the VEX-encoded AVX-VNNI
    "avx512_bf16": ("avx512_bf16",),
    "amx": ("amx_bf16", "amx_int8", "amx_tile"),
}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # bfloat16 arithmetic in hardware


def cpuinfo_text() -> str:
    """This machine's /proc/cpuinfo ('' where there is none: not Linux)."""
    try:
        return CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor listed (``flags`` on x86, ``Features`` on ARM)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: str) -> str:
    """The first ``model name`` line, else what the platform says."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return value.strip()
    return platform.processor() or platform.machine()


def cpu_features(flags: Iterable[str]) -> dict[str, bool]:
    """Which of FEATURES the flags show, in FEATURES' order."""
    flags = frozenset(flags)
    return {name: any(f in flags for f in wanted) for name, wanted in FEATURES.items()}


def bf16_supported(flags: Iterable[str]) -> bool:
    """bfloat16 in hardware (AVX512-BF16 or AMX-BF16): where ``dtype: bfloat16`` on the CPU pays."""
    flags = frozenset(flags)
    return any(f in flags for f in BF16_FLAGS)


def has_bf16() -> bool:
    """Whether this machine's CPU has bfloat16 in hardware."""
    return bf16_supported(cpu_flags(cpuinfo_text()))


def describe(features: Mapping[str, bool]) -> str:
    """``AVX2, AVX-512, VNNI, AVX512-BF16; no AMX`` for a features dict."""
    names = {"avx2": "AVX2", "avx512": "AVX-512", "vnni": "VNNI", "avx512_bf16": "AVX512-BF16", "amx": "AMX"}
    have = [names[k] for k, v in features.items() if v]
    lack = [names[k] for k, v in features.items() if not v]
    return ", ".join(have) + (f"; no {', '.join(lack)}" if lack else "")
