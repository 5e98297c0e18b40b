"""CPU feature detection from /proc/cpuinfo text: the flags that pick the fast path."""

from __future__ import annotations

import pytest

import ner_cpu
from bench import benchmark

# Abridged /proc/cpuinfo of three machine classes (two processors each; only the first counts).
ZEN3_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2
"""
ZEN4_VNNI_BF16 = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni avx512_bitalg
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu avx avx2 avx512f avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8
"""
ICELAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu avx avx2 avx512f avx512_vnni
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16
"""


@pytest.mark.parametrize(
    "text, expected, bf16",
    [
        (ZEN3_AVX2, dict(avx2=True, avx512=False, vnni=False, avx512_bf16=False, amx=False), False),
        (ZEN4_VNNI_BF16, dict(avx2=True, avx512=True, vnni=True, avx512_bf16=True, amx=False), True),
        (SAPPHIRE_RAPIDS, dict(avx2=True, avx512=True, vnni=True, avx512_bf16=True, amx=True), True),
        (ICELAKE, dict(avx2=True, avx512=True, vnni=True, avx512_bf16=False, amx=False), False),
        (ARM, dict(avx2=False, avx512=False, vnni=False, avx512_bf16=False, amx=False), False),
        ("", dict(avx2=False, avx512=False, vnni=False, avx512_bf16=False, amx=False), False),
    ],
)
def test_features_and_bf16_come_from_the_first_processors_flags(text, expected, bf16):
    flags = ner_cpu.cpu_flags(text)
    assert ner_cpu.cpu_features(flags) == expected
    assert ner_cpu.bf16_supported(flags) is bf16


def test_flags_are_whole_words_of_the_first_processor():
    flags = ner_cpu.cpu_flags(ZEN3_AVX2)
    assert "sha_ni" in flags and "avx" in flags and "avx5" not in flags
    # avx512f alone is not VNNI, and an "avx512_vnni"-like prefix is not AVX512-BF16
    assert ner_cpu.cpu_features({"avx512f", "avx512_vnni"}) == dict(
        avx2=False, avx512=True, vnni=True, avx512_bf16=False, amx=False
    )


def test_model_name_and_the_benchmarks_machine_line():
    assert ner_cpu.cpu_model(SAPPHIRE_RAPIDS) == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    m = benchmark.machine(ZEN4_VNNI_BF16)
    assert m["cpu"] == "AMD EPYC 9B14" and m["features"]["avx512_bf16"] and not m["features"]["amx"]
    assert m["libraries"]["torch"].startswith("2.") and "onnxruntime" in m["libraries"]
    line = benchmark.describe_machine(m)
    assert line.startswith("AMD EPYC 9B14 (AVX2, AVX-512, VNNI, AVX512-BF16; no AMX), ")
    assert f"torch {m['libraries']['torch']}" in line


def test_a_report_from_before_features_were_recorded_still_names_its_machine():
    old = {"cpu": "AMD EPYC", "cores": 2, "memory_gib": 7.8, "torch": "2.13.0", "transformers": "5.23.0"}
    assert benchmark.describe_machine(old) == "AMD EPYC, 2 cores, 7.8 GiB; torch 2.13.0, transformers 5.23.0"
